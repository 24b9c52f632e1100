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

pub(crate) fn to_status(e: AppError) -> Status {
    match e {
        AppError::InvalidArgument(m) => Status::invalid_argument(m),
        AppError::FeedRejected(r) => {
            let mut details = ErrorDetails::new();
            let violations = r
                .errors
                .iter()
                .map(|v| FieldViolation {
                    field: field_of(v),
                    description: v.message.clone(),
                    reason: v.code.to_ascii_uppercase(),
                    localized_message: None,
                })
                .collect::<Vec<_>>();
            details.set_bad_request(violations);
            details.set_error_info(
                "FEED_REJECTED",
                "riskid",
                [
                    ("error_count".to_string(), r.error_count.to_string()),
                    ("warning_count".to_string(), r.warning_count.to_string()),
                ],
            );
            let shown = if r.error_count > r.errors.len() {
                format!(" (the first {} are listed)", r.errors.len())
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
        AppError::ResourceExhausted(m) => Status::resource_exhausted(m),
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
