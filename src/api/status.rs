//! AppError → tonic::Status, in one place. Internal details go to the log, never the client.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::app::AppError;
use crate::ingest::{Part, Violation};

/// The BadRequest field path of a feed violation: `lines[5].sessions_authorised` for CSV,
/// `records[3].upn` for a record stream (record i is reported as line i + 2).
/// A CTF submission's are `ctf.lines[40].ncyear` (the XML line) or `supplement.lines[3].cin`.
pub fn field_of(v: &Violation, records: bool) -> String {
    let place = match v.part {
        Part::Ctf => format!("ctf.lines[{}]", v.line),
        Part::Supplement => format!("supplement.lines[{}]", v.line),
        Part::Feed if records && v.line >= 2 => format!("records[{}]", v.line - 2),
        Part::Feed => format!("lines[{}]", v.line),
    };
    if v.column.is_empty() { place } else { format!("{place}.{}", v.column) }
}

/// Inverse of [`field_of`], for clients: (line, column), whichever form.
pub fn parse_field(field: &str) -> Option<(u64, String)> {
    let field = field.strip_prefix("ctf.").or_else(|| field.strip_prefix("supplement.")).unwrap_or(field);
    let (place, col) = field.split_once('.').unwrap_or((field, ""));
    let (kind, rest) = place.split_once('[')?;
    let n: u64 = rest.strip_suffix(']')?.parse().ok()?;
    let line = match kind {
        "lines" => n,
        "records" => n.checked_add(2)?,
        _ => return None,
    };
    Some((line, col.to_owned()))
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

/// The ErrorInfo domain of every riskid error.
pub const DOMAIN: &str = "riskid";

/// Every ErrorInfo reason riskid sends: (reason, gRPC code, what it means). The README's
/// error table is checked against this list, and every status is checked to use one.
pub const REASONS: &[(&str, Code, &str)] = &[
    ("INVALID_FIELD", Code::InvalidArgument, "one request field is invalid: BadRequest names it and why"),
    (
        "INVALID_FIELDS",
        Code::InvalidArgument,
        "several request fields are invalid (ScoreRecords): BadRequest lists them",
    ),
    (
        "FEED_REJECTED",
        Code::InvalidArgument,
        "the feed breaks the contract: BadRequest lists the first violations, GetFeedReport the rest",
    ),
    (
        "INVALID_STREAM",
        Code::InvalidArgument,
        "the SubmitFeed stream is out of order: a missing or repeated header, an empty part, mixed CSV and records, or a length that does not match content_length",
    ),
    ("REQUEST_ID_REUSED", Code::InvalidArgument, "the request_id was already used for a different request"),
    ("INVALID_PAGE_TOKEN", Code::InvalidArgument, "the page token is not one this server gave for this query and key"),
    (
        "MALFORMED_MESSAGE",
        Code::InvalidArgument,
        "the request is not a valid protobuf message, or holds too many entries",
    ),
    ("API_KEY_MISSING", Code::Unauthenticated, "no `authorization: Bearer <key>` header"),
    ("API_KEY_INVALID", Code::Unauthenticated, "the key is unknown or revoked"),
    ("ROLE_NOT_ALLOWED", Code::PermissionDenied, "the key's role may not call this method or do this"),
    ("SCHOOL_NOT_IN_SCOPE", Code::PermissionDenied, "the key does not cover that school"),
    ("COHORT_NOT_FOUND", Code::NotFound, "no such cohort (for this key's schools)"),
    ("MEMBER_NOT_FOUND", Code::NotFound, "the child is not in the cohort"),
    ("FEED_NOT_FOUND", Code::NotFound, "no feed has been submitted for that school and term"),
    ("SUBMISSION_NOT_FOUND", Code::NotFound, "no such submission"),
    ("REPORT_NOT_FOUND", Code::NotFound, "no such feed report for this key (kept 15 minutes)"),
    ("MODEL_NOT_FOUND", Code::NotFound, "no such model"),
    ("PUPIL_NOT_FOUND", Code::NotFound, "no scores for that pupil in the key's schools"),
    ("REVIEW_STARTED", Code::FailedPrecondition, "the cohort is in review: a new proposal needs force"),
    ("COHORT_FINALISED", Code::FailedPrecondition, "the cohort is finalised and can no longer change"),
    ("COHORT_REPLACED", Code::FailedPrecondition, "the cohort was replaced by a newer proposal"),
    (
        "COHORT_NOT_READY",
        Code::FailedPrecondition,
        "the cohort cannot be finalised yet (undecided children, or over capacity without a reason)",
    ),
    ("TRAINING_RUNNING", Code::FailedPrecondition, "a training job is already running"),
    ("MODEL_ID_TAKEN", Code::FailedPrecondition, "a model with that id exists"),
    (
        "MODEL_BELOW_BASELINES",
        Code::FailedPrecondition,
        "the model does not beat the baselines: activate with force and a reason",
    ),
    ("MODEL_UNREADABLE", Code::FailedPrecondition, "the stored model cannot be read by this build: retrain it"),
    ("NOT_ENOUGH_DATA", Code::FailedPrecondition, "the store has too little history to train or evaluate"),
    ("AUDIT_CHAIN_EMPTY", Code::FailedPrecondition, "the audit chain has no events yet"),
    (
        "ALREADY_DECIDED",
        Code::Aborted,
        "the child already has a decision (perhaps a colleague's): reload, and undo first to change it",
    ),
    ("OVERLOADED", Code::ResourceExhausted, "the server or this key is busy: retry after RetryInfo's delay"),
    ("FEED_TOO_LARGE", Code::ResourceExhausted, "the feed is over --max-feed-bytes: not retryable"),
    ("FEED_TOO_MANY_ROWS", Code::ResourceExhausted, "the feed is over --max-feed-rows: not retryable"),
    ("MESSAGE_TOO_LARGE", Code::OutOfRange, "one message is over the method's size limit"),
    ("DEADLINE_EXCEEDED", Code::DeadlineExceeded, "the call's own deadline (grpc-timeout) passed"),
    (
        "UPLOAD_TIMED_OUT",
        Code::DeadlineExceeded,
        "the upload sent nothing for --ingest-idle-timeout, or ran past --max-upload-time",
    ),
    (
        "SCORES_PENDING",
        Code::Unavailable,
        "scores are being recomputed after an activation: retry after RetryInfo's delay",
    ),
    ("UNIMPLEMENTED", Code::Unimplemented, "no such method, or a compression this server does not speak"),
    ("CANCELLED", Code::Cancelled, "the caller cancelled the call"),
    ("INTERNAL", Code::Internal, "a fault in the server: its log has details under the reply's x-request-id"),
];

fn known(reason: &str) -> &str {
    debug_assert!(REASONS.iter().any(|(r, _, _)| *r == reason), "ErrorInfo reason {reason} is not in REASONS");
    reason
}

fn error_info(reason: &str, metadata: impl IntoIterator<Item = (String, String)>) -> ErrorDetails {
    let mut details = ErrorDetails::new();
    details.set_error_info(known(reason), DOMAIN, metadata.into_iter().collect::<std::collections::HashMap<_, _>>());
    details
}

/// An INVALID_ARGUMENT for one field: BadRequest (field, reason, description) + ErrorInfo.
pub(crate) fn bad_field(field: impl Into<String>, reason: &str, description: impl Into<String>) -> Status {
    bad_field_as("INVALID_FIELD", field, reason, description)
}

/// [`bad_field`] with its own ErrorInfo reason (e.g. INVALID_PAGE_TOKEN).
pub(crate) fn bad_field_as(
    info_reason: &str,
    field: impl Into<String>,
    reason: &str,
    description: impl Into<String>,
) -> Status {
    let (field, description) = (field.into(), description.into());
    let mut details = error_info(info_reason, [("field".to_string(), cap(&field, 120))]);
    details.set_bad_request(vec![FieldViolation {
        field: cap(&field, 120),
        description: cap(&description, MAX_DESCRIPTION),
        reason: reason.into(),
        localized_message: None,
    }]);
    Status::with_error_details(
        Code::InvalidArgument,
        format!("{field}: {}", cap(&description, MAX_DESCRIPTION)),
        details,
    )
}

/// A status with only an ErrorInfo.
pub(crate) fn with_reason(code: Code, reason: &str, message: impl Into<String>) -> Status {
    Status::with_error_details(code, message, error_info(reason, []))
}

pub(crate) fn to_status(e: AppError) -> Status {
    match e {
        AppError::BadField { field, reason, description } => bad_field(field, reason, description),
        AppError::BadFields { message, fields } => {
            let n = fields.len();
            let violations = fitting(fields.into_iter().map(|f| (f.field, f.reason, f.description)));
            let mut details = error_info("INVALID_FIELDS", [("field_count".to_string(), n.to_string())]);
            details.set_bad_request(violations);
            Status::with_error_details(Code::InvalidArgument, message, details)
        }
        AppError::FeedRejected { report: r, report_id } => {
            let violations = fitting(
                r.errors.iter().map(|v| (field_of(v, r.records), v.code.to_ascii_uppercase(), v.message.clone())),
            );
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
        AppError::Unauthenticated { reason, message } => with_reason(Code::Unauthenticated, reason, message),
        AppError::PermissionDenied(e) => {
            let reason = match e {
                crate::auth::AccessError::Role { .. } => "ROLE_NOT_ALLOWED",
                crate::auth::AccessError::School(_) => "SCHOOL_NOT_IN_SCOPE",
            };
            with_reason(Code::PermissionDenied, reason, e.to_string())
        }
        AppError::NotFound { reason, message } => {
            let mut details = error_info(reason, []);
            let resource = reason.strip_suffix("_NOT_FOUND").unwrap_or(reason).to_ascii_lowercase();
            details.set_resource_info(resource, "", "", message.clone());
            Status::with_error_details(Code::NotFound, message, details)
        }
        AppError::Conflict { reason, message } => {
            let mut details = error_info(reason, []);
            details.set_precondition_failure(vec![tonic_types::PreconditionViolation::new(
                reason,
                "",
                message.clone(),
            )]);
            Status::with_error_details(Code::FailedPrecondition, message, details)
        }
        AppError::Aborted { reason, message } => with_reason(Code::Aborted, reason, message),
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
        AppError::Edge(s) => *s,
    }
}

/// The ErrorInfo reason for a status that left the server without one (made by tonic
/// itself: an oversized or undecodable message, an unknown method or compression).
pub(crate) fn fallback_reason(code: Code) -> &'static str {
    match code {
        Code::OutOfRange | Code::ResourceExhausted => "MESSAGE_TOO_LARGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::InvalidArgument => "MALFORMED_MESSAGE",
        Code::Cancelled => "CANCELLED",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// Encodes an ErrorInfo for the `grpc-status-details-bin` header of a status that had none.
pub(crate) fn fallback_details(code: Code, message: &str) -> Vec<u8> {
    Status::with_error_details(code, message, error_info(fallback_reason(code), [])).details().to_vec()
}

fn internal(e: &dyn std::fmt::Display) -> Status {
    // Store errors never carry pupil values, so they are safe to log; the client sees none.
    tracing::error!(error = %e, "internal error");
    with_reason(
        Code::Internal,
        "INTERNAL",
        "internal error; the server log has details under this request's x-request-id",
    )
}

impl From<AppError> for Status {
    fn from(e: AppError) -> Status {
        to_status(e)
    }
}
