//! Append-only audit rows: each event with its hash and its MAC under the audit key, and the
//! chain's authenticated head in a file beside the database. The chain itself is built and
//! checked in `audit`.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, StoreResult, Tx};
use crate::audit::{AuditEvent, Checkpoint, NewEvent, StoredEvent, chain, event_mac};

/// Events after `after_seq` in sequence order, at most `limit`, as stored.
fn stored_after(conn: &rusqlite::Connection, after_seq: u64, limit: i64) -> StoreResult<Vec<StoredEvent>> {
    let rows = conn
        .prepare_cached("SELECT seq, event_json, hash, mac FROM audit_events WHERE seq > ?1 ORDER BY seq LIMIT ?2")?
        .query_map(params![after_seq as i64, limit], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows
        .into_iter()
        .map(|(seq, json, hash, mac)| StoredEvent {
            seq: seq as u64,
            event: serde_json::from_str::<AuditEvent>(&json).map_err(|e| e.to_string()),
            hash,
            mac,
        })
        .collect())
}

/// Checks that the chain in the database continues the head this process knows (events
/// appended since, by another riskid process, must link and carry valid MACs).
fn check_continues(tx: &Tx, last: Option<(u64, String)>) -> StoreResult<()> {
    let known = tx.known_head.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if known == last {
        return Ok(());
    }
    let (from_seq, from_hash) = known.clone().unwrap_or((0, crate::audit::GENESIS.into()));
    let after = stored_after(tx, from_seq, i64::MAX)?;
    let reaches = last.as_ref().is_some_and(|(s, _)| *s >= from_seq);
    let linked = crate::audit::verify_from(&after, tx.key, from_seq + 1, &from_hash);
    match (reaches, linked) {
        (true, Ok(_)) => Ok(()),
        (_, Err(b)) => Err(StoreError::AuditTampered(b.to_string())),
        (false, _) => Err(StoreError::AuditTampered(format!(
            "the chain ends at event {} but event {from_seq} was written",
            last.map_or(0, |l| l.0)
        ))),
    }
}

/// Appends an event to the chain inside the caller's transaction.
pub(crate) fn append(tx: &Tx, event: NewEvent) -> StoreResult<AuditEvent> {
    let last: Option<(u64, String, String)> = tx
        .prepare_cached("SELECT seq, hash, event_json FROM audit_events ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?)))
        .optional()?;
    // Within one transaction, events appended earlier in it are already the known head.
    if tx.head.borrow().is_none() {
        check_continues(tx, last.as_ref().map(|(s, h, _)| (*s, h.clone())))?;
    }
    let prev: Option<AuditEvent> = last
        .map(|(_, _, j)| {
            serde_json::from_str(&j).map_err(|e| StoreError::Corrupt(format!("the last audit event: {e}")))
        })
        .transpose()?;
    let e = chain(prev.as_ref(), event);
    let json = serde_json::to_string(&e).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    tx.prepare_cached("INSERT INTO audit_events (seq, event_json, hash, mac) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![e.seq as i64, json, e.hash, event_mac(tx.key, &e.hash)])?;
    *tx.head.borrow_mut() = Some(Checkpoint::new(tx.key, e.seq, &e.hash));
    Ok(e)
}

impl Store {
    /// At open: the head file (if any) must be authentic and lie on the chain; then the
    /// database's last event becomes the known head.
    pub(super) fn check_head(&self) -> StoreResult<()> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let last: Option<(u64, String)> = conn
            .query_row("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1", [], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
            })
            .optional()?;
        if let Some(head) = self.head_file().map_err(StoreError::AuditTampered)? {
            if !head.authentic(&self.audit_key) {
                return Err(StoreError::AuditTampered("the head file is not authenticated by the audit key".into()));
            }
            let at: Option<String> = conn
                .query_row("SELECT hash FROM audit_events WHERE seq = ?1", [head.seq as i64], |r| r.get(0))
                .optional()?;
            match at {
                Some(h) if h == head.hash => {}
                Some(_) => {
                    return Err(StoreError::AuditTampered(format!("event {} differs from the head file", head.seq)));
                }
                None => {
                    return Err(StoreError::AuditTampered(format!(
                        "the chain ends at event {} but the head file records event {}",
                        last.as_ref().map_or(0, |l| l.0),
                        head.seq
                    )));
                }
            }
        }
        *self.known_head.lock().unwrap_or_else(|p| p.into_inner()) = last;
        Ok(())
    }

    /// Appends one event in its own transaction (for changes made outside the store, such
    /// as a bundled model's first activation).
    pub fn append_event(&self, event: NewEvent) -> StoreResult<AuditEvent> {
        self.write(|tx| append(tx, event))
    }

    /// Events after `after_seq` in sequence order, at most `limit`, as stored.
    pub fn stored_events(&self, after_seq: u64, limit: usize) -> StoreResult<Vec<StoredEvent>> {
        stored_after(&self.conn(), after_seq, limit as i64)
    }

    /// Every readable event's action and JSON, in order (for tests and tools).
    pub fn audit_log(&self) -> StoreResult<Vec<(crate::audit::Action, String)>> {
        Ok(self
            .all_stored_events()?
            .into_iter()
            .filter_map(|s| s.event.ok())
            .map(|e| (e.event.action, serde_json::to_string(&e).unwrap_or_default()))
            .collect())
    }

    /// Every stored event.
    pub fn all_stored_events(&self) -> StoreResult<Vec<StoredEvent>> {
        let mut out = Vec::new();
        loop {
            let batch = self.stored_events(out.last().map_or(0, |e: &StoredEvent| e.seq), 5_000)?;
            if batch.is_empty() {
                return Ok(out);
            }
            out.extend(batch);
        }
    }

    /// An authenticated checkpoint of the chain as it is now (none while it is empty).
    pub fn checkpoint(&self) -> StoreResult<Option<Checkpoint>> {
        let head: Option<(i64, String)> = self
            .conn()
            .query_row("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        Ok(head.map(|(seq, hash)| Checkpoint::new(&self.audit_key, seq as u64, &hash)))
    }

    /// The head file's checkpoint, if there is one. Read under the lock this store's writes
    /// take, and read again until two reads agree, so a write in progress in another process
    /// (the file is overwritten in place) is not mistaken for tampering.
    pub fn head_file(&self) -> Result<Option<Checkpoint>, String> {
        let _writes = self.head_written.lock().unwrap_or_else(|p| p.into_inner());
        let read = || match std::fs::read(&self.head_path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("the head file cannot be read: {e}")),
        };
        let mut text = read()?;
        for _ in 0..4 {
            let again = read()?;
            if again == text {
                break;
            }
            text = again;
        }
        match text {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b).map(Some).map_err(|e| format!("the head file cannot be read: {e}")),
        }
    }

    /// Writes the head file. Normally it is overwritten in place: the checkpoint's JSON padded
    /// with spaces to a fixed [`HEAD_BYTES`], in one write at the start of the file (one
    /// sector, so a crash leaves the old head or the new one). Replacing the file (write a
    /// copy, then rename) frees the old file's block on every commit, which on a file system
    /// mounted with `discard` waits for the device: 5 ms a feed on this machine, more than
    /// storing the feed. It is replaced that way only when it is missing or not
    /// [`HEAD_BYTES`] long (the first head, or one written by an older release or by hand), so
    /// a crash can never leave a part-written file.
    pub(super) fn write_head(&self, head: &Checkpoint) {
        use std::os::unix::fs::FileExt;
        let mut bytes = serde_json::to_vec(head).expect("checkpoint serialises");
        if bytes.len() < HEAD_BYTES {
            bytes.resize(HEAD_BYTES - 1, b' ');
            bytes.push(b'\n');
        }
        let in_place = || -> std::io::Result<bool> {
            let f = match std::fs::OpenOptions::new().write(true).open(&self.head_path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e),
            };
            if f.metadata()?.len() != bytes.len() as u64 {
                return Ok(false);
            }
            f.write_all_at(&bytes, 0)?;
            Ok(true)
        };
        let written = in_place().and_then(|done| {
            if done {
                return Ok(());
            }
            let tmp = self.head_path.with_extension("head.tmp");
            std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &self.head_path))
        });
        if let Err(e) = written {
            // The chain is committed; a stale head only lags, and verify allows a lag.
            tracing::error!(error = %e, "could not update the audit head file");
        }
    }
}

/// The head file's size: a checkpoint's JSON is about 180 bytes; one sector holds it.
const HEAD_BYTES: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    /// Heads are written after the write lock is released, so two commits can reach the head
    /// file in either order; the file must end with the later one.
    #[test]
    fn a_head_file_never_goes_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let head = |seq: u64| crate::audit::Checkpoint::new(store.audit_key(), seq, &format!("{seq:064x}"));
        store.publish_head(&head(7));
        store.publish_head(&head(5));
        assert_eq!(store.head_file().unwrap().map(|h| h.seq), Some(7), "an earlier head does not replace a later one");
        store.publish_head(&head(8));
        let h = store.head_file().unwrap().unwrap();
        assert_eq!(h.seq, 8);
        assert!(h.authentic(store.audit_key()));
        assert_eq!(std::fs::metadata(store.head_path()).unwrap().len(), HEAD_BYTES as u64, "overwritten in place");
    }

    /// A head file written by something else (longer, as by hand, or shorter) is replaced
    /// whole by the next head (by a copy and a rename: never part-written), and after that
    /// the file is overwritten in place, always the same length.
    #[test]
    fn a_head_overwrites_any_earlier_text_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let head = |seq: u64| crate::audit::Checkpoint::new(store.audit_key(), seq, &format!("{seq:064x}"));
        for earlier in [format!("{}{}", serde_json::to_string(&head(1)).unwrap(), " ".repeat(600)), "{}".into()] {
            std::fs::write(store.head_path(), format!("{earlier}\n{{\"tail\": true}}")).unwrap();
            *store.head_written.lock().unwrap() = 0;
            store.publish_head(&head(2));
            assert_eq!(store.head_file().unwrap(), Some(head(2)));
            let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(store.head_path()).unwrap());
            store.publish_head(&head(3));
            assert_eq!(store.head_file().unwrap(), Some(head(3)));
            let now = std::fs::metadata(store.head_path()).unwrap();
            assert_eq!(std::os::unix::fs::MetadataExt::ino(&now), inode, "the same file, overwritten in place");
            assert_eq!(now.len(), HEAD_BYTES as u64);
        }
    }
}
