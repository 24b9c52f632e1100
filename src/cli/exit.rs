//! Exit codes, so that a script can tell a rejected feed from an unreachable server.

use tonic::Code;

/// The process exit codes of every client command (listed in `riskid --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Ok = 0,
    /// A fault in riskid or the server (INTERNAL, UNKNOWN, DATA_LOSS), or anything unexpected.
    Internal = 1,
    /// Bad command-line usage (clap's code), including a malformed server address.
    Usage = 2,
    /// The input or the request was refused: a rejected feed, an invalid field, a state that
    /// forbids the change (INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE, ABORTED,
    /// ALREADY_EXISTS, a feed too large).
    Rejected = 3,
    /// No key, an unknown or revoked key, or a role or school the key does not cover.
    Access = 4,
    /// What was asked for does not exist (or is not visible to this key).
    NotFound = 5,
    /// The server could not be reached, was busy or timed out: retrying later may work.
    Unavailable = 6,
    /// `audit verify` found a problem, or `model verify` a figure that does not reproduce.
    AuditFailed = 7,
}

pub const HELP: &str = "\
Exit codes:
  0  success
  1  internal error (in riskid or the server)
  2  usage error (bad arguments, or a server address without http:// or https://)
  3  rejected: invalid input or a refused change (a rejected feed, an invalid field, a finalised cohort)
  4  access refused: no key, an unknown or revoked key, or a role or school the key does not cover
  5  not found
  6  unavailable: the server cannot be reached, is busy, or timed out (retry later)
  7  a check found a problem: audit verify (the chain or state), model verify (a figure)";

/// An error that knows its exit code.
#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

pub fn fail(exit: Exit, message: impl Into<String>) -> anyhow::Error {
    CliError { exit, message: message.into() }.into()
}

/// The exit code for a gRPC status.
pub fn for_code(code: Code) -> Exit {
    match code {
        Code::Ok => Exit::Ok,
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Aborted
        | Code::AlreadyExists
        | Code::ResourceExhausted => Exit::Rejected,
        Code::Unauthenticated | Code::PermissionDenied => Exit::Access,
        Code::NotFound => Exit::NotFound,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => Exit::Unavailable,
        Code::Internal | Code::Unknown | Code::DataLoss | Code::Unimplemented => Exit::Internal,
    }
}

/// A status as an error with its exit code and the server's reason. A busy server
/// (RESOURCE_EXHAUSTED with RetryInfo) is "unavailable", not "rejected".
pub fn status(s: tonic::Status) -> anyhow::Error {
    use tonic_types::StatusExt;
    let mut exit = for_code(s.code());
    if s.code() == Code::ResourceExhausted && s.get_details_retry_info().is_some() {
        exit = Exit::Unavailable;
    }
    let reason = s.get_details_error_info().map(|i| format!(" [{}]", i.reason)).unwrap_or_default();
    let mut message = format!("{}{reason}: {}", s.code().description(), crate::client::safe(s.message()));
    if let Some(bad) = s.get_details_bad_request() {
        for v in bad.field_violations.iter().take(20) {
            message.push_str(&format!(
                "\n  {}: {}",
                crate::client::safe(&v.field),
                crate::client::safe(&v.description)
            ));
        }
    }
    fail(exit, message)
}

/// The exit code of an error from a command.
pub fn of(e: &anyhow::Error) -> Exit {
    e.downcast_ref::<CliError>().map_or(Exit::Internal, |c| c.exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_documented() {
        let all = [
            Exit::Internal,
            Exit::Usage,
            Exit::Rejected,
            Exit::Access,
            Exit::NotFound,
            Exit::Unavailable,
            Exit::AuditFailed,
        ];
        for e in all {
            assert!(HELP.contains(&format!("  {}  ", e as u8)), "{e:?} is not in the help");
        }
        assert_eq!(for_code(Code::InvalidArgument), Exit::Rejected);
        assert_eq!(for_code(Code::PermissionDenied), Exit::Access);
        let busy = tonic::Status::resource_exhausted("busy");
        assert_eq!(of(&status(busy)), Exit::Rejected, "without RetryInfo, retrying cannot help");
    }
}
