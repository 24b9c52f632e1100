//! Ingestion: a termly feed (CSV or structured records) → validated rows, or every violation.

mod columns;
mod csv_feed;
mod report;
mod validate;

pub use columns::{COLUMN_COUNT, Column, contract_header};
pub use csv_feed::parse_csv;
pub use report::{MAX_LISTED, Violation, code};
pub use validate::{Cells, RowValidator};

use crate::domain::PupilTerm;
use report::Findings;

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
}

fn finish(rows: Vec<PupilTerm>, f: Findings) -> Result<Feed, Rejected> {
    if f.error_count > 0 {
        return Err(Rejected {
            errors: f.errors,
            error_count: f.error_count,
            warnings: f.warnings,
            warning_count: f.warning_count,
        });
    }
    Ok(Feed {
        rows,
        warnings: f.warnings,
        warning_count: f.warning_count,
    })
}

/// Validates structured records given as cells per column (the gRPC record path).
/// Record `i` (from 0) is reported as line `i + 2`, as if it followed a header row.
pub fn parse_records<'a>(records: impl IntoIterator<Item = Cells<'a>>) -> Result<Feed, Rejected> {
    let mut findings = Findings::default();
    let mut validator = RowValidator::default();
    let mut rows = Vec::new();
    let mut n = 0u64;
    for (i, cells) in records.into_iter().enumerate() {
        n += 1;
        let trimmed = cells.map(|c| c.trim_matches(' '));
        if let Some(row) = validator.validate(i as u64 + 2, &trimmed, &mut findings) {
            rows.push(row);
        }
    }
    if n == 0 {
        findings.error(
            2,
            "",
            code::NO_ROWS,
            "the submission has no pupil records".into(),
        );
    }
    finish(rows, findings)
}

#[cfg(test)]
mod tests;
