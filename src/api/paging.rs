//! Pagination: page sizes checked, and opaque page tokens bound to the query and key that
//! made them (AIP-158).
//!
//! A token is a position (an offset or a keyset bound) and a MAC over the method, the
//! query's filters, the caller's key and that position, made with a key drawn at start-up:
//! a token edited by hand, made for another query or key, or kept across a restart is
//! refused as INVALID_ARGUMENT, and a position is never trusted without its MAC, so no
//! arithmetic on it can overflow or reach rows the query would not return.

use std::sync::OnceLock;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tonic::Status;

use super::status::bad_field;

fn secret() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(rand::random)
}

/// What a token is bound to: the method, the caller's key and the query's filters.
pub(crate) struct Query(Vec<u8>);

impl Query {
    pub fn new(method: &str, key_id: i64, filters: &impl std::fmt::Debug) -> Self {
        Query(format!("{method}\u{0}{key_id}\u{0}{filters:?}").into_bytes())
    }

    fn mac(&self, position: u64) -> [u8; 16] {
        let mut m = Hmac::<Sha256>::new_from_slice(secret()).expect("any key length");
        m.update(&self.0);
        m.update(&position.to_be_bytes());
        let full = m.finalize().into_bytes();
        full[..16].try_into().expect("16 of 32 bytes")
    }

    /// The token for the page that starts at `position`.
    pub fn token(&self, position: u64) -> String {
        let mut raw = position.to_be_bytes().to_vec();
        raw.extend_from_slice(&self.mac(position));
        hex::encode(raw)
    }

    /// The position a token names; `None` for the first page (an empty token).
    pub fn position(&self, token: &str) -> Result<Option<u64>, Status> {
        if token.is_empty() {
            return Ok(None);
        }
        let invalid = || {
            super::status::bad_field_as(
                "INVALID_PAGE_TOKEN",
                "page_token",
                "INVALID_PAGE_TOKEN",
                "page_token is not one this server gave for this query and key (tokens end when the server \
                 restarts): start again without a token",
            )
        };
        let raw = hex::decode(token).map_err(|_| invalid())?;
        if raw.len() != 24 {
            return Err(invalid());
        }
        let (pos, mac) = raw.split_at(8);
        let position = u64::from_be_bytes(pos.try_into().map_err(|_| invalid())?);
        // Constant-time comparison through the MAC type.
        let mut m = Hmac::<Sha256>::new_from_slice(secret()).expect("any key length");
        m.update(&self.0);
        m.update(&position.to_be_bytes());
        m.verify_truncated_left(mac).map_err(|_| invalid())?;
        Ok(Some(position))
    }
}

/// Default and largest page sizes of a list method.
#[derive(Clone, Copy)]
pub(crate) struct PageSize {
    pub default: usize,
    pub max: usize,
}

pub(crate) const STANDARD: PageSize = PageSize { default: 50, max: 500 };
/// For full views of large messages (models, cohorts with members).
pub(crate) const FULL_VIEW: PageSize = PageSize { default: 10, max: 20 };
/// Cohorts with every member: one a page (a full cohort can reach 2.3 MB).
pub(crate) const ONE: PageSize = PageSize { default: 1, max: 1 };

impl PageSize {
    /// 0 = the default; above the maximum, the maximum; negative is refused.
    pub fn of(self, requested: i32) -> Result<usize, Status> {
        match requested {
            n if n < 0 => Err(bad_field("page_size", "OUT_OF_RANGE", "page_size must be 0 (the default) or more")),
            0 => Ok(self.default),
            n => Ok((n as usize).min(self.max)),
        }
    }
}

/// One page of an in-memory list that is already in order: the items from the token's
/// offset, and the next page's token.
pub(crate) fn page_of<'a, T>(all: &'a [T], q: &Query, token: &str, size: usize) -> Result<(&'a [T], String), Status> {
    let offset = q.position(token)?.unwrap_or(0);
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(all.len());
    let end = start.saturating_add(size).min(all.len());
    let next = if end < all.len() { q.token(end as u64) } else { String::new() };
    Ok((&all[start..end], next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_only_for_their_own_query_and_key() {
        let q = Query::new("/riskid.v1.X/List", 7, &("school", 1));
        let t = q.token(40);
        assert_eq!(q.position(&t).unwrap(), Some(40));
        assert_eq!(q.position("").unwrap(), None);
        for other in
            [Query::new("/riskid.v1.X/List", 8, &("school", 1)), Query::new("/riskid.v1.X/List", 7, &("school", 2))]
        {
            assert!(other.position(&t).is_err());
        }
        // Edited, truncated, plain offsets and the u64 maximum are all refused.
        let mut edited = t.clone().into_bytes();
        edited[15] = if edited[15] == b'0' { b'1' } else { b'0' };
        for bad in [String::from_utf8(edited).unwrap(), t[..20].to_string(), "10".into(), u64::MAX.to_string()] {
            let e = q.position(&bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
        }
    }

    #[test]
    fn page_sizes() {
        assert_eq!(STANDARD.of(0).unwrap(), 50);
        assert_eq!(STANDARD.of(10_000).unwrap(), 500);
        assert_eq!(STANDARD.of(-1).unwrap_err().code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn pages_cover_the_list_once() {
        let all: Vec<u32> = (0..23).collect();
        let q = Query::new("m", 1, &());
        let (mut token, mut seen) = (String::new(), vec![]);
        loop {
            let (page, next) = page_of(&all, &q, &token, 5).unwrap();
            seen.extend_from_slice(page);
            if next.is_empty() {
                break;
            }
            token = next;
        }
        assert_eq!(seen, all);
    }
}
