//! AppError → tonic::Status, in one place. Internal details go to the log, never the client.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::app::AppError;
use crate::ingest::Violation;

/// The BadRequest field name for a feed violation: `line 5: sessions_authorised`.
pub fn field_of(v: &Violation) -> String {
    if v.column.is_empty() { format!("line {}", v.line) } else { format!("line {}: {}", v.line, v.column) }
}

/// Inverse of [`field_of`], for clients: (line, column).
pub fn parse_field(field: &str) -> Option<(u64, String)> {
    let rest = field.strip_prefix("line ")?;
    let (line, col) = rest.split_once(": ").unwrap_or((rest, ""));
    Some((line.parse().ok()?, col.to_owned()))
}

/// Bytes of BadRequest a rejection carries. Details travel base64-encoded in the
/// `grpc-status-details-bin` trailer; 4 KB stays well inside grpcio's default 8 KB of
/// metadata and h2's 16 KB header list, with room for the message and other headers.
const DETAILS_BUDGET: usize = 4_000;
/// Longest description of one violation in the trailer (the full text is in the report).
const MAX_DESCRIPTION: usize = 200;

fn cap(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The first violations that fit the trailer budget.
fn fitting(all: impl IntoIterator<Item = (String, String, String)>) -> Vec<FieldViolation> {
    let mut used = 0;
    let mut out = Vec::new();
    for (field, reason, description) in all {
        let fv = FieldViolation {
            field: cap(&field, 120),
            description: cap(&description, MAX_DESCRIPTION),
            reason,
            localized_message: None,
        };
        // Three strings, their tags and lengths, and the entry's own tag and length.
        let size = fv.field.len() + fv.description.len() + fv.reason.len() + 12;
        if used + size > DETAILS_BUDGET {
            break;
        }
        used += size;
        out.push(fv);
    }
    out
}

fn error_info(reason: &str, metadata: impl IntoIterator<Item = (String, String)>) -> ErrorDetails {
    let mut details = ErrorDetails::new();
    details.set_error_info(reason, DOMAIN, metadata.into_iter().collect::<std::collections::HashMap<_, _>>());
    details
}

/// The ErrorInfo domain of every riskid error.
pub const DOMAIN: &str = "riskid";

pub(crate) fn to_status(e: AppError) -> Status {
    match e {
        AppError::InvalidArgument(m) => Status::invalid_argument(m),
        AppError::BadField { field, reason, description } => {
            let mut details = error_info(reason, []);
            details.set_bad_request(vec![FieldViolation {
                field,
                description: cap(&description, MAX_DESCRIPTION),
                reason: reason.into(),
                localized_message: None,
            }]);
            Status::with_error_details(Code::InvalidArgument, cap(&description, MAX_DESCRIPTION), details)
        }
        AppError::BadFields { message, fields } => {
            let n = fields.len();
            let violations = fitting(fields.into_iter().map(|f| (f.field, f.reason, f.description)));
            let mut details = error_info("INVALID_FIELDS", [("field_count".to_string(), n.to_string())]);
            details.set_bad_request(violations);
            Status::with_error_details(Code::InvalidArgument, message, details)
        }
        AppError::FeedRejected { report: r, report_id } => {
            let violations =
                fitting(r.errors.iter().map(|v| (field_of(v), v.code.to_ascii_uppercase(), v.message.clone())));
            let listed = violations.len();
            let mut details = error_info(
                "FEED_REJECTED",
                [
                    ("error_count".to_string(), r.error_count.to_string()),
                    ("warning_count".to_string(), r.warning_count.to_string()),
                    ("listed_count".to_string(), listed.to_string()),
                    ("report_id".to_string(), report_id.clone()),
                ],
            );
            details.set_bad_request(violations);
            let shown = if r.error_count > listed {
                format!(
                    " (the first {listed} are listed here; GetFeedReport with report_id {report_id} returns the first {})",
                    r.errors.len()
                )
            } else {
                String::new()
            };
            let msg = format!("the feed was rejected with {} error(s){shown}; nothing was stored", r.error_count);
            Status::with_error_details(Code::InvalidArgument, msg, details)
        }
        AppError::Unauthenticated(m) => Status::unauthenticated(m),
        AppError::PermissionDenied(e) => Status::permission_denied(e.to_string()),
        AppError::NotFound(m) => Status::not_found(m),
        AppError::Conflict(m) => Status::failed_precondition(m),
        AppError::Aborted(m) => Status::aborted(m),
        AppError::NotReady(m) => {
            let mut details = error_info("SCORES_PENDING", []);
            details.set_retry_info(Some(std::time::Duration::from_secs(1)));
            Status::with_error_details(Code::Unavailable, m, details)
        }
        AppError::Store(crate::storage::StoreError::RequestReused { method }) => {
            let description =
                format!("this request_id was already used for a different {method} request; use a new request_id");
            let mut details = error_info("REQUEST_ID_REUSED", []);
            details.set_bad_request(vec![FieldViolation {
                field: "request_id".into(),
                description: description.clone(),
                reason: "REQUEST_ID_REUSED".into(),
                localized_message: None,
            }]);
            Status::with_error_details(Code::InvalidArgument, description, details)
        }
        AppError::Overloaded(m) => {
            let mut details = error_info("OVERLOADED", []);
            details.set_retry_info(Some(std::time::Duration::from_secs(1)));
            Status::with_error_details(Code::ResourceExhausted, m, details)
        }
        AppError::TooLarge { reason, message } => {
            Status::with_error_details(Code::ResourceExhausted, message, error_info(reason, []))
        }
        AppError::Store(e) => internal(&e),
        AppError::Internal(m) => internal(&m),
    }
}

fn internal(e: &dyn std::fmt::Display) -> Status {
    // Store errors never carry pupil values, so they are safe to log; the client sees none.
    tracing::error!(error = %e, "internal error");
    Status::internal("internal error; the server log has details under this request's x-request-id")
}

impl From<AppError> for Status {
    fn from(e: AppError) -> Status {
        to_status(e)
    }
}
