//! Ingestion: a termly feed (CSV or structured records) → validated rows, or every violation.

mod columns;
mod csv_feed;
mod report;
mod validate;

pub use columns::{COLUMN_COUNT, Column, contract_header};
pub use csv_feed::parse_csv;
pub use report::{Findings, MAX_LISTED, Violation, code};
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
    Ok(Feed { rows, warnings: f.warnings, warning_count: f.warning_count })
}

#[cfg(test)]
mod tests;
