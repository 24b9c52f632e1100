//! Unique Pupil Number: 13 characters with a check letter (DfE algorithm).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Letters used by the check-letter table; I, O and S are never used.
const LETTERS: &[u8; 23] = b"ABCDEFGHJKLMNPQRTUVWXYZ";

fn letter_value(c: u8) -> Option<u32> {
    LETTERS.iter().position(|&l| l == c).map(|p| p as u32)
}

/// Why a string is not a valid UPN. Never carries the value itself, so it is safe to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpnError {
    #[error("must be 13 characters")]
    Length,
    #[error("must be a letter then 12 digits, or a letter, 11 digits and a letter")]
    Format,
    #[error("check letter does not match the rest of the number")]
    CheckLetter,
}

/// A pupil's UPN. Holding one means it passed the check-letter test.
///
/// `Debug` is redacted so a UPN cannot reach a log or panic message by accident.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Upn(String);

impl Upn {
    pub fn parse(raw: &str) -> Result<Self, UpnError> {
        let b = raw.as_bytes();
        if b.len() != 13 {
            return Err(UpnError::Length);
        }
        let body_ok =
            b[1..12].iter().all(u8::is_ascii_digit) && (b[12].is_ascii_digit() || letter_value(b[12]).is_some());
        let first = letter_value(b[0]);
        if first.is_none() || !body_ok {
            return Err(UpnError::Format);
        }
        if check_letter(&b[1..]) != b[0] {
            return Err(UpnError::CheckLetter);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Check letter for characters 2..=13 (passed as a 12-byte slice).
pub fn check_letter(rest: &[u8]) -> u8 {
    let sum: u32 = rest
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let v = if c.is_ascii_digit() { (c - b'0') as u32 } else { letter_value(c).unwrap_or(0) };
            v * (i as u32 + 2)
        })
        .sum();
    LETTERS[(sum % 23) as usize]
}

impl fmt::Debug for Upn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Upn(<redacted>)")
    }
}

impl TryFrom<String> for Upn {
    type Error = UpnError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Upn::parse(&s)
    }
}

impl From<Upn> for String {
    fn from(u: Upn) -> String {
        u.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn contract_examples() {
        for ok in ["B801200005001", "P207000016049", "C820123424001", "B82012342401A"] {
            assert!(Upn::parse(ok).is_ok(), "{ok} should be valid");
        }
        assert_eq!(Upn::parse("Q207000016049"), Err(UpnError::CheckLetter));
        assert_eq!(Upn::parse("B80120000500"), Err(UpnError::Length));
        assert_eq!(Upn::parse("I801200005001"), Err(UpnError::Format));
        assert_eq!(Upn::parse("B8012000050O1"), Err(UpnError::Format));
    }

    #[test]
    fn debug_is_redacted() {
        let u = Upn::parse("B801200005001").unwrap();
        assert!(!format!("{u:?}").contains("801200005001"));
    }

    fn valid_upn() -> impl Strategy<Value = String> {
        (proptest::collection::vec(0u8..10, 11), proptest::option::of(0usize..23), 0u8..10).prop_map(
            |(digits, last_letter, last_digit)| {
                let mut rest: Vec<u8> = digits.iter().map(|d| b'0' + d).collect();
                rest.push(match last_letter {
                    Some(i) => LETTERS[i],
                    None => b'0' + last_digit,
                });
                let mut s = vec![check_letter(&rest)];
                s.extend(rest);
                String::from_utf8(s).unwrap()
            },
        )
    }

    proptest! {
        #[test]
        fn valid_upns_are_accepted(s in valid_upn()) {
            prop_assert!(Upn::parse(&s).is_ok());
        }

        #[test]
        fn any_single_character_change_is_rejected(
            s in valid_upn(), pos in 0usize..13, replacement in "[0-9A-Z]"
        ) {
            let mut b = s.clone().into_bytes();
            let r = replacement.as_bytes()[0];
            prop_assume!(b[pos] != r);
            // The last character may be a digit or a letter, and letter A..K (no I) carries the
            // same value as digit 0..9, so that one swap keeps the check letter by design.
            let value = |c: u8| if c.is_ascii_digit() { Some((c - b'0') as u32) } else { letter_value(c) };
            prop_assume!(!(pos == 12 && value(b[pos]) == value(r)));
            b[pos] = r;
            let changed = String::from_utf8(b).unwrap();
            prop_assert!(Upn::parse(&changed).is_err(), "{} accepted", changed);
        }
    }
}
