//! Append-only audit rows. The hash chain itself is built and checked in `audit`.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, StoreResult};

/// The newest event's JSON, to chain the next one onto.
pub fn last_event(tx: &rusqlite::Connection) -> StoreResult<Option<String>> {
    Ok(tx.query_row("SELECT event_json FROM audit_events ORDER BY seq DESC LIMIT 1", [], |r| r.get(0)).optional()?)
}

pub fn insert_event(tx: &rusqlite::Connection, seq: u64, event_json: &str, hash: &str) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO audit_events (seq, event_json, hash) VALUES (?1, ?2, ?3)",
        params![seq as i64, event_json, hash],
    )?;
    Ok(())
}

impl Store {
    /// Runs `f` in a transaction (for audit appends that stand alone).
    pub fn in_transaction<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(StoreError::from)?;
        let out = f(&tx)?;
        tx.commit().map_err(StoreError::from)?;
        Ok(out)
    }

    /// Event JSON in sequence order, after `after_seq`, at most `limit`.
    pub fn audit_events(&self, after_seq: u64, limit: usize) -> StoreResult<Vec<String>> {
        let conn = self.conn();
        let rows = conn
            .prepare("SELECT event_json FROM audit_events WHERE seq > ?1 ORDER BY seq LIMIT ?2")?
            .query_map(params![after_seq as i64, limit as i64], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}
