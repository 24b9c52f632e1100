//! Ingestion: a termly feed (CSV or structured records) → validated rows, or every violation.

mod columns;
mod csv_feed;
pub(crate) mod csv_reader;
pub mod ctf;
mod report;
mod validate;

pub use columns::{COLUMN_COUNT, Column, cells_to_csv, contract_header};
pub use csv_feed::{parse_csv, parse_csv_limited};
pub use report::{Findings, MAX_LISTED, Part, Place, Violation, code, quote};
pub use validate::{Cells, RowValidator};

use crate::domain::PupilTerm;

/// An accepted feed: every row valid, perhaps with warnings.
#[derive(Debug, Clone)]
pub struct Feed {
    pub rows: Vec<PupilTerm>,
    pub warnings: Vec<Violation>,
    pub warning_count: usize,
}

/// A rejected feed: nothing of it may be stored.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// At most [`MAX_LISTED`] errors, in file order.
    pub errors: Vec<Violation>,
    /// All errors found, including any beyond the listed ones.
    pub error_count: usize,
    pub warnings: Vec<Violation>,
    pub warning_count: usize,
    /// From a record stream (record i is line i + 2), not CSV.
    pub records: bool,
}

/// Why a feed was not accepted.
#[derive(Debug, Clone)]
pub enum FeedError {
    /// The file breaks the contract: every violation found.
    Rejected(Box<Rejected>),
    /// More pupil rows than this server accepts in one feed (an operator setting, not a
    /// contract rule); the rest of the feed was not read.
    TooManyRows { limit: usize },
}

/// Validates structured records, one per pupil, through the same rules as a CSV row.
/// Record *i* (from 0) is reported as line *i* + 2, as if the header were line 1.
pub fn parse_records<'a, I>(records: I, max_rows: usize) -> Result<Feed, FeedError>
where
    I: IntoIterator<Item = Cells<'a>>,
{
    let mut findings = Findings::default();
    let mut validator = RowValidator::default();
    let mut rows = Vec::new();
    let mut n = 0usize;
    for (i, cells) in records.into_iter().enumerate() {
        n = i + 1;
        if n > max_rows {
            return Err(FeedError::TooManyRows { limit: max_rows });
        }
        if let Some(row) = validator.validate(i as u64 + 2, &cells, &mut findings) {
            rows.push(row);
        }
    }
    if n == 0 {
        findings.error(2, "", code::NO_ROWS, "the submission has no pupil records".into());
    }
    finish(rows, findings, true)
}

pub(crate) fn finish(rows: Vec<PupilTerm>, f: Findings, records: bool) -> Result<Feed, FeedError> {
    if f.error_count > 0 {
        return Err(FeedError::Rejected(Box::new(Rejected {
            errors: f.errors,
            error_count: f.error_count,
            warnings: f.warnings,
            warning_count: f.warning_count,
            records,
        })));
    }
    Ok(Feed { rows, warnings: f.warnings, warning_count: f.warning_count })
}

#[cfg(test)]
mod tests;
