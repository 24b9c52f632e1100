//! Use cases, free of transport: the gRPC handlers and the CLI call these.

pub(crate) mod audit;
mod cohorts;
mod models;
mod risks;

pub use cohorts::{DecisionInput, OverrideRow, ProposeInput, capacity_of};
pub use models::{BUNDLED_MODEL, Progress, rfc3339};

use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::auth::{AccessError, Principal, ReadSubmissions, SubmitPass, hash_key};
use crate::domain::{SchoolTerm, Term, Urn};
use crate::ingest::{self, Rejected};
use crate::storage::{
    FeedSource, NewSubmission, SaveOutcome, Store, StoreError, SubmissionFilter, SubmissionRecord, now_unix,
};

/// One error type for the use cases; mapped to a gRPC status once, at the edge.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("the feed has {} error(s)", .0.error_count)]
    FeedRejected(Box<Rejected>),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error(transparent)]
    PermissionDenied(#[from] AccessError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A concurrent change won; retrying after a reload may succeed.
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type AppResult<T> = Result<T, AppError>;

/// Limits on what one request may cost.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_feed_bytes: usize,
    pub max_concurrent_ingests: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_feed_bytes: 64 << 20, max_concurrent_ingests: 4 }
    }
}

pub struct App {
    store: Arc<Store>,
    limits: Limits,
    ingest_slots: Arc<Semaphore>,
    scoring_slots: Arc<Semaphore>,
    active: RwLock<Arc<crate::model::ModelArtifact>>,
    training: Arc<tokio::sync::Mutex<()>>,
}

/// What a submission's body is made of.
pub struct FeedBody {
    pub source: FeedSource,
    /// Contract CSV; record streams are rendered to CSV first so one validator serves both.
    pub csv: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SubmitResult {
    Accepted(SubmissionRecord),
    Unchanged(SubmissionRecord),
    /// Dry run: valid; row count and warnings, nothing stored.
    Validated {
        rows: usize,
        warnings: Vec<ingest::Violation>,
        warning_count: usize,
        content_sha256: String,
    },
}

impl App {
    /// Builds the application; activates the bundled model if the store has none active.
    pub fn new(store: Arc<Store>, limits: Limits) -> AppResult<Self> {
        let ingest_slots = Arc::new(Semaphore::new(limits.max_concurrent_ingests));
        let active = RwLock::new(Self::load_active_model(&store)?);
        Ok(Self {
            store,
            limits,
            ingest_slots,
            // Scoring is CPU-bound: two batches per core, and refuse the rest rather than queue.
            scoring_slots: Arc::new(Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()) * 2)),
            active,
            training: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    pub(crate) fn scoring_permit(&self) -> AppResult<tokio::sync::OwnedSemaphorePermit> {
        self.scoring_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| AppError::ResourceExhausted("the server is busy scoring; retry shortly".into()))
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> AppResult<T> + Send + 'static,
    ) -> AppResult<T> {
        let store = self.store.clone();
        // Keep the request's span (and its request id) on the blocking thread's logs.
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| f(&store)))
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?
    }

    /// Resolves a bearer key to its principal. Unknown and revoked keys look the same.
    pub async fn authenticate(&self, key: &str) -> AppResult<Principal> {
        let hash = hash_key(key);
        let rec = self.blocking(move |s| Ok(s.find_active_key(&hash)?)).await?;
        let rec = rec.ok_or(AppError::Unauthenticated("the API key is not valid or has been revoked"))?;
        Ok(Principal { key_id: rec.id, role: rec.role, schools: rec.schools })
    }

    /// A permit to ingest now, or a refusal if the server is already busy ingesting.
    pub fn ingest_permit(&self) -> AppResult<tokio::sync::OwnedSemaphorePermit> {
        self.ingest_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| AppError::ResourceExhausted("the server is busy ingesting other feeds; retry shortly".into()))
    }

    /// Validates a feed and, unless a dry run, stores it atomically.
    pub async fn submit_feed(
        &self,
        pass: SubmitPass,
        term: Term,
        body: FeedBody,
        request_id: Option<String>,
        dry_run: bool,
    ) -> AppResult<SubmitResult> {
        let school_term = SchoolTerm { urn: pass.urn, term };
        let key_id = pass.key_id;
        let model = self.active_model();
        self.blocking(move |store| {
            let sha = hex::encode(Sha256::digest(&body.csv));
            let feed = ingest::parse_csv(&body.csv).map_err(|r| AppError::FeedRejected(Box::new(r)))?;
            if dry_run {
                return Ok(SubmitResult::Validated {
                    rows: feed.rows.len(),
                    warnings: feed.warnings,
                    warning_count: feed.warning_count,
                    content_sha256: sha,
                });
            }
            let outcome = store.save_submission(&NewSubmission {
                school_term,
                source: body.source,
                content_sha256: &sha,
                rows: &feed.rows,
                warnings: &feed.warnings,
                warning_count: feed.warning_count,
                received_at: now_unix(),
                key_id,
                request_id: request_id.as_deref(),
            })?;
            Ok(match outcome {
                SaveOutcome::Accepted(r) => {
                    tracing::info!(submission = r.id, school = %r.school_term.urn, rows = r.row_count, "feed accepted");
                    // The feed is stored whatever happens here; activation rescores if this fails.
                    match models::score_submission(store, &model, r.id, school_term, Some(&feed.rows)) {
                        Ok(risks) => tracing::info!(submission = r.id, pupils = risks.len(), model = %model.model_id, "feed scored"),
                        Err(e) => tracing::error!(submission = r.id, error = %e, "scoring the accepted feed failed"),
                    }
                    SubmitResult::Accepted(r)
                }
                SaveOutcome::Unchanged(r) => SubmitResult::Unchanged(r),
            })
        })
        .await
    }

    pub async fn get_submission(&self, scope: ReadSubmissions, id: i64) -> AppResult<SubmissionRecord> {
        let rec = self.blocking(move |s| Ok(s.get_submission(id)?)).await?;
        // Out-of-scope submissions are reported as missing, so ids reveal nothing.
        match rec {
            Some(r) if scope.covers(r.school_term.urn) => Ok(redact(&scope, r)),
            _ => Err(AppError::NotFound(format!("no submission {id}"))),
        }
    }

    pub async fn list_submissions(
        &self,
        scope: ReadSubmissions,
        school: Option<Urn>,
        include_superseded: bool,
        before_id: Option<i64>,
        limit: usize,
    ) -> AppResult<Vec<SubmissionRecord>> {
        let schools = match (school, &scope.schools) {
            (Some(u), _) if !scope.covers(u) => return Err(AccessError::School(u).into()),
            (Some(u), _) => Some(vec![u]),
            (None, Some(set)) => Some(set.iter().copied().collect()),
            (None, None) => None,
        };
        let filter = SubmissionFilter { schools, include_superseded, before_id, limit };
        let rows = self.blocking(move |s| Ok(s.list_submissions(&filter)?)).await?;
        Ok(rows.into_iter().map(|r| redact(&scope, r)).collect())
    }
}

fn redact(scope: &ReadSubmissions, mut r: SubmissionRecord) -> SubmissionRecord {
    if scope.counts_only {
        r.warnings.clear();
    }
    r
}
