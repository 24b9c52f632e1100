//! Limits on untrusted strings at the API edge: ids, tokens and free text. Each refusal is
//! INVALID_ARGUMENT naming the field, never an echo of the value.

use tonic::Status;

use crate::app::AppError;

/// Longest `request_id`; enough for a UUID or a ULID with a prefix.
pub const MAX_REQUEST_ID: usize = 128;
/// Longest free-text note on a decision or an activation.
pub const MAX_NOTE_CHARS: usize = 2_000;
/// Longest model id.
pub const MAX_MODEL_ID: usize = 64;

fn bad(field: &str, description: String) -> Status {
    AppError::BadField { field: field.to_owned(), reason: "INVALID_VALUE", description }.into()
}

/// Whether `v` is 1..=max characters of letters, digits and `. _ : -`.
pub fn is_token(v: &str, max: usize) -> bool {
    !v.is_empty()
        && v.len() <= max
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// An identifier-like value: 1..=max characters of letters, digits and `. _ : -`.
pub fn check_token(field: &str, v: &str, max: usize) -> Result<(), Status> {
    if v.is_empty() || v.len() > max {
        return Err(bad(field, format!("{field} must be 1 to {max} characters")));
    }
    if !is_token(v, max) {
        return Err(bad(field, format!("{field} may contain only letters, digits and . _ : -")));
    }
    Ok(())
}

/// An optional `request_id`: empty means none.
pub fn request_id(v: String) -> Result<Option<String>, Status> {
    if v.is_empty() {
        return Ok(None);
    }
    check_token("request_id", &v, MAX_REQUEST_ID)?;
    Ok(Some(v))
}

/// Free text a person wrote: at most [`MAX_NOTE_CHARS`] characters, no control characters
/// but line breaks and tabs (they would reach terminals and pages).
pub fn check_note(field: &str, v: &str) -> Result<(), Status> {
    if v.chars().count() > MAX_NOTE_CHARS {
        return Err(bad(field, format!("{field} may be at most {MAX_NOTE_CHARS} characters")));
    }
    if v.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\t')) {
        return Err(bad(field, format!("{field} may not contain control characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bounded_and_plain() {
        assert!(check_token("model_id", "m-2026.01_a:b", MAX_MODEL_ID).is_ok());
        assert!(check_token("model_id", "", MAX_MODEL_ID).is_err());
        assert!(check_token("model_id", &"a".repeat(65), MAX_MODEL_ID).is_err());
        assert!(check_token("model_id", "m\u{1b}[31m", MAX_MODEL_ID).is_err());
        assert!(check_token("model_id", "m id", MAX_MODEL_ID).is_err());
        assert_eq!(request_id(String::new()).unwrap(), None);
        assert!(request_id("x".repeat(129)).is_err());
    }

    #[test]
    fn notes_keep_line_breaks_but_not_escapes() {
        assert!(check_note("note", "Family moved.\nSee file.").is_ok());
        assert!(check_note("note", "bad \u{1b}[2J").is_err());
        assert!(check_note("note", &"é".repeat(MAX_NOTE_CHARS)).is_ok());
        assert!(check_note("note", &"é".repeat(MAX_NOTE_CHARS + 1)).is_err());
    }
}
