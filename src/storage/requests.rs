//! One idempotency mechanism for every mutation: (key, method, request id) → the request's
//! fingerprint and its first result, written in the same transaction as the change.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{StoreError, StoreResult, Tx};

/// A mutation's identity for idempotency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    pub key_id: i64,
    pub method: &'static str,
    pub request_id: String,
    /// A digest of the request's content: a repeat must match it.
    pub fingerprint: String,
}

/// What a mutation produced, enough to return the same result again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RequestResult {
    Submission { id: i64, unchanged: bool },
    Cohort { id: i64 },
    Model { model_id: String },
    Activation { model_id: String, schools: usize, pupils: usize },
}

impl Tx<'_> {
    /// The first result of an earlier request with this key, method and id; an error if that
    /// request had other content.
    pub fn prior(&self, rk: Option<&RequestKey>) -> StoreResult<Option<RequestResult>> {
        let Some(rk) = rk else { return Ok(None) };
        let row: Option<(String, String)> = self
            .prepare_cached(
                "SELECT fingerprint, result_json FROM request_results WHERE key_id = ?1 AND method = ?2 AND request_id = ?3",
            )?
            .query_row(params![rk.key_id, rk.method, rk.request_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        match row {
            None => Ok(None),
            Some((fp, _)) if fp != rk.fingerprint => Err(StoreError::RequestReused { method: rk.method }),
            Some((_, json)) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("a stored request result: {e}"))),
        }
    }

    /// Records the result of a request, in the transaction that made the change.
    pub fn remember(&self, rk: Option<&RequestKey>, result: &RequestResult) -> StoreResult<()> {
        let Some(rk) = rk else { return Ok(()) };
        self.prepare_cached(
            "INSERT INTO request_results (key_id, method, request_id, fingerprint, result_json) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![rk.key_id, rk.method, rk.request_id, rk.fingerprint, serde_json::to_string(result).expect("serialises")],
        )?;
        Ok(())
    }
}
