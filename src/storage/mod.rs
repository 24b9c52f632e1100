//! Persistence over domain types. SQLite (embedded, WAL) is the default and only store so far.
//!
//! Every method is synchronous and quick; async callers run them with `spawn_blocking`.

pub mod audit;
pub mod cohorts;
mod keys;
mod migrations;
mod models;
mod requests;
mod scores;
mod submissions;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, Transaction};

use crate::audit::{AuditKey, Checkpoint};

pub use cohorts::ReplaceRefused;
pub use keys::{KeyRecord, NewKey};
pub use models::ModelRecord;
pub use requests::{RequestKey, RequestResult};
pub use scores::{LiveScores, ScoreRecord};
pub use submissions::{
    ActiveModel, FeedSource, NewSubmission, SaveOutcome, SubmissionFilter, SubmissionRecord, SubmissionState, Written,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot use data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    AuditKey(String),
    #[error("this request_id was already used for a different {method} request; use a new request_id")]
    RequestReused { method: &'static str },
    #[error("the database schema is version {found}, newer than this build knows ({known}); upgrade riskid")]
    SchemaTooNew { found: i64, known: i64 },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The embedded store: one SQLite database file in the data directory.
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
    audit_key: AuditKey,
    head_path: PathBuf,
}

pub const DB_FILE: &str = "riskid.db";
/// The authenticated head of the audit chain, beside the database.
pub const HEAD_FILE: &str = "audit.head";

/// A write transaction: every change and its audit events commit together. After the
/// commit, the chain's new head is written to the head file.
pub struct Tx<'a> {
    tx: Transaction<'a>,
    key: &'a AuditKey,
    head: RefCell<Option<Checkpoint>>,
}

impl<'a> std::ops::Deref for Tx<'a> {
    type Target = Transaction<'a>;
    fn deref(&self) -> &Transaction<'a> {
        &self.tx
    }
}

impl Store {
    /// Opens the store in `data_dir` with the audit key beside it (created on first start).
    pub fn open(data_dir: &Path) -> StoreResult<Self> {
        Self::open_with_key(data_dir, None)
    }

    /// Opens (creating if needed) the store in `data_dir` and applies pending migrations.
    /// `key_file` is the audit key; when not given, `audit.key` in the data directory is
    /// used, and created on first start.
    pub fn open_with_key(data_dir: &Path, key_file: Option<&Path>) -> StoreResult<Self> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir { path: data_dir.into(), source })?;
        let audit_key = match key_file {
            Some(f) => AuditKey::read(f).map_err(StoreError::AuditKey)?,
            None => {
                let path = data_dir.join(crate::audit::key::DEFAULT_FILE);
                let (key, created) = AuditKey::read_or_create(&path).map_err(StoreError::AuditKey)?;
                if created {
                    tracing::warn!(
                        path = %path.display(),
                        "created an audit key beside the database; for production move it elsewhere and pass --audit-key-file"
                    );
                }
                key
            }
        };
        let path = data_dir.join(DB_FILE);
        let mut conn = Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // 64 MiB of page cache keeps the pupil-row indexes in memory during bulk ingest.
        conn.pragma_update(None, "cache_size", -65536)?;
        // Checkpoint every ~40 MiB of WAL rather than every 4 MiB: a scored 2,000-pupil feed
        // writes ~3 MiB, and each checkpoint is a sync.
        conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        migrations::apply(&mut conn)?;
        Ok(Self { conn: Mutex::new(conn), path, audit_key, head_path: data_dir.join(HEAD_FILE) })
    }

    /// Runs `f` in one write transaction and commits; nothing of it persists if `f` fails.
    pub(crate) fn write<T, E: From<StoreError>>(&self, f: impl FnOnce(&Tx) -> Result<T, E>) -> Result<T, E> {
        let mut conn = self.conn();
        let tx =
            Tx { tx: conn.transaction().map_err(StoreError::from)?, key: &self.audit_key, head: RefCell::new(None) };
        let out = f(&tx)?;
        let head = tx.head.take();
        tx.tx.commit().map_err(StoreError::from)?;
        if let Some(h) = head {
            self.write_head(&h);
        }
        Ok(out)
    }

    pub fn audit_key(&self) -> &AuditKey {
        &self.audit_key
    }

    pub fn head_path(&self) -> &Path {
        &self.head_path
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-applied transaction (SQLite
        // rolls it back), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
