//! How pupil rows and scores are kept: postcard, a compact and deterministic binary serde
//! format (the same value always gives the same bytes, so digests over stored bytes are
//! stable). Rows and scores written before schema 5 are JSON text; both are read.

use rusqlite::types::ValueRef;
use serde::Serialize;
#[cfg(test)]
use serde::de::DeserializeOwned;

use super::{StoreError, StoreResult};

/// The stored bytes of a row or score.
pub(crate) fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    // Room for a typical score at once, rather than growing from nothing.
    postcard::to_extend(value, Vec::with_capacity(512))
        .map_err(|e| StoreError::Corrupt(format!("cannot encode for the store: {e}")))
}

/// The stored bytes as they are (blob or text), for digests.
pub(crate) fn bytes<'a>(value: ValueRef<'a>, what: &str) -> StoreResult<&'a [u8]> {
    match value {
        ValueRef::Blob(b) | ValueRef::Text(b) => Ok(b),
        other => Err(StoreError::Corrupt(format!("{what}: stored as {:?}", other.data_type()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::{Evidence, Measure};

    /// A stored value, from postcard (a blob) or JSON (text, as releases before schema 5 wrote).
    fn decode<T: DeserializeOwned>(value: ValueRef<'_>, what: &str) -> StoreResult<T> {
        use super::super::packed::{Format, decode};
        match value {
            ValueRef::Blob(b) => decode(Format::Postcard, b, what),
            ValueRef::Text(t) => decode(Format::Json, t, what),
            other => Err(StoreError::Corrupt(format!("{what}: stored as {:?}", other.data_type()))),
        }
    }

    #[test]
    fn rows_and_evidence_round_trip_through_both_formats() {
        let e =
            Evidence::new(Measure::SdqHyperactivity, 7.0).earlier(Some(5.0)).compared_with("school median", Some(3.0));
        let blob = encode(&e).unwrap();
        assert_eq!(decode::<Evidence>(ValueRef::Blob(&blob), "e").unwrap(), e);
        let json = serde_json::to_vec(&e).unwrap();
        assert_eq!(decode::<Evidence>(ValueRef::Text(&json), "e").unwrap(), e);
        // JSON written before the fields were always present still reads.
        let old = br#"{"measure":"sdq_hyperactivity","value":7.0}"#;
        assert_eq!(
            decode::<Evidence>(ValueRef::Text(old), "e").unwrap(),
            Evidence::new(Measure::SdqHyperactivity, 7.0)
        );
        assert_eq!(encode(&e).unwrap(), blob, "deterministic");
        assert!(decode::<Evidence>(ValueRef::Blob(&blob[..3]), "a score").unwrap_err().to_string().contains("a score"));
        assert!(decode::<Evidence>(ValueRef::Integer(3), "a score").is_err());
        // JSON leaves absent values out, as earlier releases wrote it: what cohorts kept as
        // shown re-serialises to the bytes the audit chain hashed.
        let bare = Evidence::new(Measure::SdqHyperactivity, 7.0);
        assert_eq!(serde_json::to_string(&bare).unwrap(), r#"{"measure":"sdq_hyperactivity","value":7.0}"#);
        let blob = encode(&bare).unwrap();
        assert_eq!(decode::<Evidence>(ValueRef::Blob(&blob), "e").unwrap(), bare);
    }
}
