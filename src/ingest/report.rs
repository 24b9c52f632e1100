//! Violations: what a school data manager reads when a feed has problems.

use serde::{Deserialize, Serialize};

/// The contract asks for at least the first 1,000 errors; beyond that we only count.
pub const MAX_LISTED: usize = 1000;

/// One error or warning at a line (the header is line 1) and column.
///
/// Messages may quote the offending cell so the data manager can find it; they go back to
/// the submitter only and must never be logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub line: u64,
    pub column: String,
    pub code: String,
    pub message: String,
    /// Which file of the submission: the feed itself, or a CTF's XML or its supplement.
    #[serde(default, skip_serializing_if = "Part::is_feed")]
    pub part: Part,
    /// For a CTF: the XML element path, `CTfile/CTFpupilData/Pupil[3]/BasicDetails/NCyearActual`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub element: String,
}

/// The file of a submission a violation is in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    /// The contract CSV, or a record stream.
    #[default]
    Feed,
    /// A Common Transfer File's XML (`line` is the XML line).
    Ctf,
    /// The CSV supplement that comes with a CTF.
    Supplement,
}

impl Part {
    pub fn is_feed(&self) -> bool {
        *self == Part::Feed
    }
}

/// Where in a submission's files a violation is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Place {
    pub part: Part,
    pub line: u64,
    pub element: String,
}

/// Collects violations up to [`MAX_LISTED`], counting the rest.
#[derive(Debug, Default)]
pub struct Findings {
    pub errors: Vec<Violation>,
    pub error_count: usize,
    pub warnings: Vec<Violation>,
    pub warning_count: usize,
}

impl Findings {
    pub fn error(&mut self, line: u64, column: &str, code: &str, message: String) {
        self.push(Part::Feed, line, "", column, code, message, true);
    }
    pub fn warning(&mut self, line: u64, column: &str, code: &str, message: String) {
        self.push(Part::Feed, line, "", column, code, message, false);
    }
    /// An error at a place in a CTF or its supplement.
    pub fn error_at(&mut self, place: &Place, column: &str, code: &str, message: String) {
        self.push_at(place, column, code, message, true);
    }
    pub fn warning_at(&mut self, place: &Place, column: &str, code: &str, message: String) {
        self.push_at(place, column, code, message, false);
    }
    /// Moves a violation found elsewhere (e.g. by the row validator) here, at `place`.
    pub fn push_violation(&mut self, v: Violation, error: bool) {
        let (list, count) = if error {
            (&mut self.errors, &mut self.error_count)
        } else {
            (&mut self.warnings, &mut self.warning_count)
        };
        *count += 1;
        if list.len() < MAX_LISTED {
            list.push(v);
        }
    }
    fn push_at(&mut self, place: &Place, column: &str, code: &str, message: String, error: bool) {
        self.push(place.part, place.line, &place.element, column, code, message, error);
    }
    #[allow(clippy::too_many_arguments)]
    fn push(&mut self, part: Part, line: u64, element: &str, column: &str, code: &str, message: String, error: bool) {
        let v = Violation { line, column: column.into(), code: code.into(), message, part, element: element.into() };
        self.push_violation(v, error);
    }
}

/// Longest cell text quoted in a message; longer cells are cut, so one huge cell cannot
/// make a huge report.
const QUOTE_CHARS: usize = 40;

/// A cell's text as a message quotes it: in quotes, control characters escaped, cut to
/// [`QUOTE_CHARS`] characters with the full length said.
pub fn quote(v: &str) -> String {
    let n = v.chars().count();
    if n <= QUOTE_CHARS {
        return format!("{v:?}");
    }
    let head: String = v.chars().take(QUOTE_CHARS).collect();
    format!("{head:?}… ({n} characters)")
}

/// A name from the file (an unknown header) made safe to show: control characters
/// escaped, at most 64 characters.
pub fn short(v: &str) -> std::borrow::Cow<'_, str> {
    if v.len() <= 64 && !v.chars().any(char::is_control) {
        return v.into();
    }
    let escaped: String = v.chars().take(64).flat_map(char::escape_debug).collect();
    if v.chars().count() > 64 { format!("{escaped}…").into() } else { escaped.into() }
}

/// Error and warning codes. Stable: clients may match on them.
pub mod code {
    pub const MALFORMED_CSV: &str = "malformed_csv";
    pub const INVALID_UTF8: &str = "invalid_utf8";
    pub const EMPTY_FILE: &str = "empty_file";
    pub const NO_ROWS: &str = "no_rows";
    pub const MISSING_COLUMN: &str = "missing_column";
    pub const DUPLICATE_COLUMN: &str = "duplicate_column";
    pub const FIELD_COUNT: &str = "field_count";
    pub const REQUIRED: &str = "required";
    pub const INVALID_UPN: &str = "invalid_upn";
    pub const DUPLICATE_UPN: &str = "duplicate_upn";
    pub const INVALID_CODE: &str = "invalid_code";
    pub const INVALID_BOOLEAN: &str = "invalid_boolean";
    pub const INVALID_INTEGER: &str = "invalid_integer";
    pub const OUT_OF_RANGE: &str = "out_of_range";
    pub const INCONSISTENT: &str = "inconsistent";
    // Warnings.
    pub const UNKNOWN_COLUMN: &str = "unknown_column";
    pub const FEW_SESSIONS: &str = "few_sessions";
    pub const STATUTORY_CIN: &str = "statutory_cin";
}
