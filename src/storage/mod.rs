//! Persistence over domain types. SQLite (embedded, WAL) is the default and only store so far.
//!
//! Every method is synchronous and quick; async callers run them with `spawn_blocking`.

pub mod audit;
pub mod cohorts;
mod keys;
mod migrations;
mod models;
mod scores;
mod submissions;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

pub use cohorts::{CohortRow, MemberRow, ReplaceRefused};
pub use keys::{KeyRecord, NewKey};
pub use models::ModelRecord;
pub use scores::ScoreRecord;
pub use submissions::{FeedSource, NewSubmission, SaveOutcome, SubmissionFilter, SubmissionRecord, SubmissionState};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot use data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the database schema is version {found}, newer than this build knows ({known}); upgrade riskid")]
    SchemaTooNew { found: i64, known: i64 },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The embedded store: one SQLite database file in the data directory.
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

pub const DB_FILE: &str = "riskid.db";

impl Store {
    /// Opens (creating if needed) the store in `data_dir` and applies pending migrations.
    pub fn open(data_dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir { path: data_dir.into(), source })?;
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
        Ok(Self { conn: Mutex::new(conn), path })
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
