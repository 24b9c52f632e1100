//! Persistence over domain types. SQLite (embedded, WAL) is the default and only store so far.
//!
//! Every method is synchronous and quick; async callers run them with `spawn_blocking`.

pub mod audit;
mod codec;
pub mod cohorts;
mod history;
mod keys;
mod migrations;
mod models;
mod packed;
mod requests;
mod scores;
mod submissions;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, Transaction};

use crate::audit::{AuditKey, Checkpoint};

pub use cohorts::{CohortFilter, MemberCounts, ReplaceRefused};
pub use keys::{KeyRecord, NewKey};
pub use models::ModelRecord;
pub use requests::{RequestKey, RequestResult};
pub use scores::{EncodedScore, EncodedScores, LiveScores, Ranked, ScoreRecord};
pub use submissions::{
    ActiveModel, FeedSource, NewSubmission, SaveOutcome, SnapshotHistory, SubmissionFilter, SubmissionRecord,
    SubmissionState, Written,
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
    #[error(
        "the audit chain disagrees with its anchor: {0}; run `riskid audit verify --data-dir` and restore from a backup"
    )]
    AuditTampered(String),
    #[error("this request_id was already used for a different {method} request; use a new request_id")]
    RequestReused { method: &'static str },
    #[error("the database schema is version {found}, newer than this build knows ({known}); upgrade riskid")]
    SchemaTooNew { found: i64, known: i64 },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// `query_row` and `execute` with the statement prepared once per connection (the calls of
/// a request's path; one-off statements use the plain forms).
pub(crate) trait CachedStatements {
    fn cached_row<T, P: rusqlite::Params, F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T>;
    fn cached_exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
}

impl CachedStatements for Connection {
    fn cached_row<T, P: rusqlite::Params, F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    fn cached_exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }
}

/// The embedded store: one SQLite database file in the data directory.
pub struct Store {
    /// The one writer.
    conn: Mutex<Connection>,
    /// Readers on WAL snapshots: reads never wait behind a write transaction.
    readers: Vec<Mutex<Connection>>,
    /// Snapshots that feeds are scored on before their write (one per feed ingested at once,
    /// by default), kept apart from `readers` so ingest never holds a connection reads need.
    snapshots: Vec<Mutex<Connection>>,
    next_reader: std::sync::atomic::AtomicUsize,
    /// Wakes the checkpointer after a commit (see [`Checkpointer`]); dropping the store stops it.
    checkpoints: Checkpointer,
    path: PathBuf,
    audit_key: AuditKey,
    head_path: PathBuf,
    /// The chain's head as this process last wrote or checked it: an append refuses to
    /// build on a chain that was cut or rewritten behind its back.
    known_head: Mutex<Option<(u64, String)>>,
    /// The sequence number in the head file as this process last wrote it. Heads are written
    /// after the write lock is released, under this lock instead, and never backwards: of two
    /// commits finishing together, the later head wins whichever writes first.
    head_written: Mutex<u64>,
    /// Every pupil's current rows, for scoring feeds without reading them from disk.
    history: history::HistoryCache,
}

const READERS: usize = 4;
/// Prepared statements kept per connection.
const STATEMENTS: usize = 64;
/// Connections for ingest's snapshots (the default number of feeds ingested at once; a
/// further feed waits for one).
const SNAPSHOTS: usize = 4;

/// The database file is read through a memory map of up to this size. A reader's page cache
/// is emptied whenever another connection has committed, so without the map every read after
/// a commit would copy its pages in again with a system call each. Ingest's snapshots do
/// without it: SQLite unmaps the whole file when a connection finds another's commit, and an
/// unmap takes the process's memory-map lock for writing, so every page fault of every thread
/// waits for it. A snapshot starts right after another feed's commit every time; reading its
/// history by system call made bulk submit about 6% faster (five interleaved pipeline runs).
const MMAP_BYTES: i64 = 1 << 32;

pub const DB_FILE: &str = "riskid.db";
/// The authenticated head of the audit chain, beside the database.
pub const HEAD_FILE: &str = "audit.head";

/// A write transaction: every change and its audit events commit together. After the
/// commit, the chain's new head is written to the head file.
pub struct Tx<'a> {
    tx: Transaction<'a>,
    key: &'a AuditKey,
    head: RefCell<Option<Checkpoint>>,
    known_head: &'a Mutex<Option<(u64, String)>>,
    /// The accepted submission this transaction wrote, applied to the history cache once
    /// it commits.
    history: RefCell<Option<history::HistoryDelta>>,
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
        let store = Self::open_unchecked(data_dir, key_file)?;
        store.check_head()?;
        Ok(store)
    }

    /// Opens the store without checking the chain against its head file first: for
    /// `riskid audit verify`, which reports what it finds rather than refusing to open.
    pub fn open_unchecked(data_dir: &Path, key_file: Option<&Path>) -> StoreResult<Self> {
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
        // 8 MiB of page cache: reads of committed pages come from the memory map, and a larger
        // cache costs every commit, which scans the whole page-cache hash table to drop pages
        // past the end of the file (4.5% of ingest CPU at 64 MiB, 0.2% at 8 MiB, all of it
        // inside the write lock).
        conn.pragma_update(None, "cache_size", -8192)?;
        conn.pragma_update(None, "mmap_size", MMAP_BYTES)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // A feed's write alone uses some twenty statements; rusqlite keeps 16 by default, and
        // a statement evicted before its next use is parsed and planned again.
        conn.set_prepared_statement_cache_capacity(STATEMENTS);
        migrations::apply(&mut conn)?;
        rusqlite::vtab::array::load_module(&conn)?;
        // Checkpoints run on their own thread, not inside a writer's commit. The writer's own
        // checkpoint stays as a backstop at 64 MiB of WAL: the WAL restarts from its beginning
        // only when a write begins with every frame copied, which a burst of commits (each
        // ahead of the thread) would otherwise never allow; most frames are copied by then,
        // so the backstop is cheap. The WAL file is reused from its start, not cut back: it is
        // cut only if something (a long-held read) let it grow past 256 MiB. Cutting it at
        // every restart freed blocks inside a commit, which on a file system mounted with
        // `discard` waits for the device (about 4% of ingest throughput here).
        conn.pragma_update(None, "wal_autocheckpoint", 16_384)?;
        conn.pragma_update(None, "journal_size_limit", 256 << 20)?;
        let checkpoints = Checkpointer::start(&path)?;
        let reader = |mmap_bytes: i64| -> StoreResult<Mutex<Connection>> {
            let r = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            r.pragma_update(None, "cache_size", -16384)?;
            r.pragma_update(None, "mmap_size", mmap_bytes)?;
            rusqlite::vtab::array::load_module(&r)?;
            r.busy_timeout(std::time::Duration::from_secs(10))?;
            r.set_prepared_statement_cache_capacity(STATEMENTS);
            Ok(Mutex::new(r))
        };
        let readers = (0..READERS).map(|_| reader(MMAP_BYTES)).collect::<StoreResult<_>>()?;
        let snapshots = (0..SNAPSHOTS).map(|_| reader(0)).collect::<StoreResult<_>>()?;
        let store = Self {
            conn: Mutex::new(conn),
            readers,
            snapshots,
            next_reader: Default::default(),
            checkpoints,
            path,
            audit_key,
            head_path: data_dir.join(HEAD_FILE),
            known_head: Mutex::new(None),
            head_written: Mutex::new(0),
            history: Default::default(),
        };
        Ok(store)
    }

    /// Runs `f` in one write transaction and commits; nothing of it persists if `f` fails.
    pub(crate) fn write<T, E: From<StoreError>>(&self, f: impl FnOnce(&Tx) -> Result<T, E>) -> Result<T, E> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let (out, head, history) = {
            let tx = Tx {
                tx: conn.transaction().map_err(StoreError::from)?,
                key: &self.audit_key,
                head: RefCell::new(None),
                known_head: &self.known_head,
                history: RefCell::new(None),
            };
            let out = f(&tx)?;
            let head = tx.head.take();
            let history = tx.history.take();
            tx.tx.commit().map_err(StoreError::from)?;
            // The history cache is locked in commit order (the next writer cannot commit
            // before this lock is taken) and updated once the write lock is released.
            (out, head, history.map(|d| (self.history.applying(), d)))
        };
        self.checkpoints.wake();
        if let Some(h) = &head {
            *self.known_head.lock().unwrap_or_else(|p| p.into_inner()) = Some((h.seq, h.hash.clone()));
        }
        // The next writer may start now: the head file is written outside the write lock (a
        // file write that every other write used to wait for).
        drop(conn);
        if let Some((cache, d)) = history {
            cache.apply(d);
        }
        if let Some(h) = head {
            self.publish_head(&h);
        }
        Ok(out)
    }

    /// Runs `f` with writes held back: no commit lands while it runs, so what it reads, on any
    /// connection and in any number of statements, is one moment of the store. For checks
    /// that read the whole store (audit verify); a feed arriving meanwhile waits for it.
    pub fn with_writes_paused<T>(&self, f: impl FnOnce() -> T) -> T {
        let _writes = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f()
    }

    /// Runs `f` on a pooled reader inside one read transaction, so every statement of it sees
    /// the same snapshot (a commit between two of them cannot mix two states).
    pub(crate) fn read<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> StoreResult<T>) -> StoreResult<T> {
        let guard = self.conn();
        let tx = guard.unchecked_transaction()?;
        f(&tx)
    }

    /// Writes `h` to the head file unless a later head is already there.
    pub(super) fn publish_head(&self, h: &Checkpoint) {
        let mut written = self.head_written.lock().unwrap_or_else(|p| p.into_inner());
        if h.seq > *written {
            self.write_head(h);
            *written = h.seq;
        }
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

    /// A read connection: a free one if there is one, else the next in turn. A panic while
    /// holding a lock cannot leave a half-applied transaction (SQLite rolls it back), so a
    /// poisoned lock is still safe to use.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.pooled(&self.readers)
    }

    /// A connection for a feed's snapshot, from ingest's own pool.
    fn snapshot_conn(&self) -> MutexGuard<'_, Connection> {
        self.pooled(&self.snapshots)
    }

    fn pooled<'a>(&self, pool: &'a [Mutex<Connection>]) -> MutexGuard<'a, Connection> {
        for r in pool {
            if let Ok(g) = r.try_lock() {
                return g;
            }
        }
        let i = self.next_reader.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % pool.len();
        pool[i].lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Copies committed pages from the WAL into the database file on a thread of its own, so a
/// commit seldom waits for a checkpoint (SQLite's automatic checkpoint runs inside the commit
/// that crosses its threshold, which made every few feeds pay for the others' pages; it is
/// kept only as the 64 MiB backstop set in `open_unchecked`).
/// Passive checkpoints never block the writer or readers; WAL frames still needed by a reader
/// wait for the next one. Durability is unchanged: a commit is in the WAL when it returns.
struct Checkpointer {
    wake: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The least time between two checkpoints: commits in between are copied together.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

impl Checkpointer {
    fn start(path: &Path) -> StoreResult<Self> {
        use std::sync::mpsc::RecvTimeoutError;
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let (wake, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("riskid-checkpoint".into())
            .spawn(move || {
                let mut pending = rx.recv().is_ok();
                while pending {
                    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
                        tracing::warn!(error = %e, "WAL checkpoint failed; the next commit retries");
                    }
                    // Gather the commits of the next interval; stop when the store is dropped.
                    pending = false;
                    let until = std::time::Instant::now() + CHECKPOINT_EVERY;
                    loop {
                        match rx.recv_timeout(until.saturating_duration_since(std::time::Instant::now())) {
                            Ok(()) => pending = true,
                            Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    if !pending {
                        pending = rx.recv().is_ok();
                    }
                }
            })
            .map_err(|e| StoreError::Corrupt(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Self { wake: Some(wake), thread: Some(thread) })
    }

    fn wake(&self) {
        // A wake-up already pending covers this commit too.
        if let Some(w) = &self.wake {
            let _ = w.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.wake.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
