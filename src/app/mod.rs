//! Use cases, free of transport: the gRPC handlers and the CLI call these.

pub(crate) mod audit;
mod cohorts;
mod models;
mod reports;
mod risks;

pub use audit::{Verification, verify_store};
pub use cohorts::{DecisionInput, OverrideRow, ProposeInput};
pub use models::{BUNDLED_MODEL, Progress, ToScore, rfc3339};

use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::audit::{Action, NewEvent};
use crate::auth::{AccessError, Principal, ReadSubmissions, SchoolScope, SubmitPass, hash_key};
use crate::domain::{PupilTerm, SchoolTerm, Term, Urn};
use crate::ingest::{self, Rejected};
use crate::storage::{
    FeedSource, NewSubmission, RequestKey, SaveOutcome, Store, StoreError, SubmissionFilter, SubmissionRecord, now_unix,
};

/// One error type for the use cases; mapped to a gRPC status once, at the edge.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Several fields of the request are invalid.
    #[error("{message}")]
    BadFields { message: String, fields: Vec<FieldError> },
    /// One field of the request is invalid.
    #[error("{field}: {description}")]
    BadField { field: String, reason: &'static str, description: String },
    #[error("the feed has {} error(s)", .report.error_count)]
    FeedRejected { report: Arc<Rejected>, report_id: String },
    #[error("{message}")]
    Unauthenticated { reason: &'static str, message: &'static str },
    #[error(transparent)]
    PermissionDenied(#[from] AccessError),
    /// What was asked for does not exist (or is not visible to this key).
    #[error("{message}")]
    NotFound { reason: &'static str, message: String },
    /// The system is not in the state the request needs (FAILED_PRECONDITION).
    #[error("{message}")]
    Conflict { reason: &'static str, message: String },
    /// A concurrent change won; retrying after a reload may succeed.
    #[error("{message}")]
    Aborted { reason: &'static str, message: String },
    /// What was asked for is being computed (scores after an activation); retry shortly.
    #[error("{0}")]
    NotReady(String),
    /// The server is busy; the same request may succeed shortly (sent with RetryInfo).
    #[error("{0}")]
    Overloaded(String),
    /// The request is larger than this server accepts; retrying it will not help.
    #[error("{message}")]
    TooLarge { reason: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
    /// A refusal made at the API edge, carried through a use case unchanged (the edge's
    /// checks that must run on the blocking pool, such as decoding tensors).
    #[error("{}", .0.message())]
    Edge(Box<tonic::Status>),
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn bad_field(field: impl Into<String>, reason: &'static str, description: impl Into<String>) -> Self {
        AppError::BadField { field: field.into(), reason, description: description.into() }
    }
    pub fn not_found(reason: &'static str, message: impl Into<String>) -> Self {
        AppError::NotFound { reason, message: message.into() }
    }
    pub fn conflict(reason: &'static str, message: impl Into<String>) -> Self {
        AppError::Conflict { reason, message: message.into() }
    }
}

/// (key, method, request id) of a request in progress.
type RequestSlot = (i64, &'static str, String);

/// A stable digest of a request's content, for idempotency.
pub(crate) fn fingerprint(content: &impl serde::Serialize) -> String {
    hex::encode(Sha256::digest(serde_json::to_vec(content).expect("request content serialises")))
}

pub(crate) fn request_key(
    who: &Principal,
    method: &'static str,
    request_id: String,
    content: &impl serde::Serialize,
) -> RequestKey {
    RequestKey { key_id: who.key_id, method, request_id, fingerprint: fingerprint(content) }
}

/// One invalid field of a request: its path (`pupils[3].record.upn`), a stable reason
/// code and a description for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
    pub description: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into(), description: description.into() }
    }
}

/// Limits on what one request may cost.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_feed_bytes: usize,
    /// Most pupil rows in one feed: well above the largest English school (~3,500 pupils).
    pub max_feed_rows: usize,
    pub max_concurrent_ingests: usize,
    /// Most uploads one key may have open at once, so one key cannot hold every slot.
    pub max_ingests_per_key: usize,
    /// An upload that sends nothing for this long is ended and its slot freed.
    pub ingest_idle_timeout: std::time::Duration,
    /// The longest a whole upload may take.
    pub max_upload_time: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_feed_bytes: 64 << 20,
            max_feed_rows: 10_000,
            max_concurrent_ingests: 4,
            max_ingests_per_key: 2,
            ingest_idle_timeout: std::time::Duration::from_secs(15),
            max_upload_time: std::time::Duration::from_secs(300),
        }
    }
}

pub struct App {
    store: Arc<Store>,
    limits: Limits,
    ingest_slots: Arc<Semaphore>,
    scoring_slots: Arc<Semaphore>,
    active: RwLock<Arc<crate::model::ModelArtifact>>,
    training: Arc<tokio::sync::Mutex<()>>,
    reports: Arc<reports::Reports>,
    uploads: Arc<reports::KeySlots>,
    /// Requests in progress by (key, method, request id): a racing repeat waits for the first.
    inflight: std::sync::Mutex<std::collections::HashMap<RequestSlot, Arc<tokio::sync::Mutex<()>>>>,
    metrics: Arc<crate::metrics::Metrics>,
}

/// A submission's body: contract CSV, or structured records as cells in the contract's
/// column order (an unset field is an empty cell).
pub enum FeedBody {
    Csv(Vec<u8>),
    Records(Vec<RecordCells>),
    /// A Common Transfer File and its supplement (`None` if none was sent: an error).
    Ctf {
        xml: Vec<u8>,
        supplement: Option<Vec<u8>>,
    },
}

pub type RecordCells = [String; ingest::COLUMN_COUNT];

impl FeedBody {
    pub fn source(&self) -> FeedSource {
        match self {
            FeedBody::Csv(_) => FeedSource::Csv,
            FeedBody::Records(_) => FeedSource::Records,
            FeedBody::Ctf { .. } => FeedSource::Ctf,
        }
    }

    /// Validates the body. Records follow exactly the CSV rules (trimmed cells, record *i*
    /// on line *i* + 2). Returns the rows and the content hash: for records, the hash of
    /// their rendering as contract CSV, so the same rows hash alike however they came.
    ///
    /// A CTF's hash covers both files (each length-prefixed); its rows are derived for the
    /// school and term, reading the store only for year-to-date attendance without marks.
    fn parse(
        &self,
        max_rows: usize,
        st: SchoolTerm,
        store: &Store,
    ) -> (Result<ingest::Feed, ingest::FeedError>, String) {
        match self {
            FeedBody::Ctf { xml, supplement } => {
                let mut h = Sha256::new();
                h.update(b"riskid ctf\0");
                h.update((xml.len() as u64).to_be_bytes());
                h.update(xml);
                let supp = supplement.as_deref().unwrap_or_default();
                h.update((supp.len() as u64).to_be_bytes());
                h.update(supp);
                let imp = ingest::ctf::Import {
                    ctf: xml,
                    supplement: supplement.as_deref(),
                    urn: st.urn,
                    term: st.term,
                    max_rows,
                };
                // The figures subtracted are part of what was derived: they go into the hash, so
                // the same file after a corrected earlier term is not "unchanged".
                let used = std::cell::RefCell::new(Vec::new());
                let earlier = |upn: &crate::domain::Upn| {
                    let e = earlier_in_year(store, st, upn)?;
                    used.borrow_mut().push((upn.as_str().to_owned(), e));
                    Ok(e)
                };
                let feed = ingest::ctf::parse_ctf(&imp, &earlier);
                let mut used = used.into_inner();
                used.sort_by(|a, b| a.0.cmp(&b.0));
                for (upn, e) in &used {
                    h.update(upn.as_bytes());
                    for v in [e.possible, e.authorised, e.unauthorised] {
                        h.update(v.to_be_bytes());
                    }
                }
                (feed, hex::encode(h.finalize()))
            }
            FeedBody::Csv(bytes) => (ingest::parse_csv_limited(bytes, max_rows), hex::encode(Sha256::digest(bytes))),
            FeedBody::Records(records) => {
                let cells = records.iter().map(|r| std::array::from_fn(|i| r[i].trim_matches(' ')));
                let feed = ingest::parse_records(cells, max_rows);
                (feed, hex::encode(Sha256::digest(ingest::cells_to_csv(records))))
            }
        }
    }
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
        // Finish whatever an interrupted activation queued before serving.
        let queued = store.queued_count()?;
        if queued > 0 {
            tracing::warn!(queued, "scoring submissions left queued by an interrupted activation");
            Self::drain_score_queue(&store)?;
        }
        let metrics = Arc::new(crate::metrics::Metrics::new());
        metrics.set_model(&active.read().unwrap_or_else(|p| p.into_inner()).model_id);
        metrics.ingest_slots.set(limits.max_concurrent_ingests as i64);
        let scoring_slots = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
        metrics.scoring_slots.set(scoring_slots as i64);
        Ok(Self {
            metrics,
            store,
            limits,
            ingest_slots,
            // Scoring is CPU-bound: two batches per core, and refuse the rest rather than queue.
            scoring_slots: Arc::new(Semaphore::new(scoring_slots)),
            active,
            training: Arc::new(tokio::sync::Mutex::new(())),
            reports: Arc::new(reports::Reports::default()),
            uploads: Arc::new(reports::KeySlots::default()),
            inflight: Default::default(),
        })
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// The metrics text, with the gauges read now.
    pub async fn render_metrics(&self) -> String {
        let m = &self.metrics;
        m.ingests_in_flight.set((self.limits.max_concurrent_ingests - self.ingest_slots.available_permits()) as i64);
        m.scoring_in_flight.set(m.scoring_slots.get() - self.scoring_slots.available_permits() as i64);
        if let Ok(n) = self.blocking(|s| Ok(s.queued_count()?)).await {
            m.score_queue.set(n as i64);
        }
        m.render()
    }

    pub(crate) fn scoring_permit(&self) -> AppResult<tokio::sync::OwnedSemaphorePermit> {
        self.scoring_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| AppError::Overloaded("the server is busy scoring; retry shortly".into()))
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
        self.authenticate_hash(hash_key(key)).await
    }

    /// As [`authenticate`](Self::authenticate), from the key's hash (what a web session keeps).
    pub async fn authenticate_hash(&self, hash: String) -> AppResult<Principal> {
        let rec = self.blocking(move |s| Ok(s.find_active_key(&hash)?)).await?;
        let rec = rec.ok_or(AppError::Unauthenticated {
            reason: "API_KEY_INVALID",
            message: "the API key is not valid or has been revoked",
        })?;
        Ok(Principal { key_id: rec.id, role: rec.role, schools: rec.schools })
    }

    /// Every key's label by id (labels name a team or a person's role, never a pupil), for
    /// showing who decided what.
    pub async fn key_labels(&self) -> AppResult<std::collections::HashMap<i64, String>> {
        let keys = self.blocking(|s| Ok(s.list_keys()?)).await?;
        Ok(keys.into_iter().map(|k| (k.id, k.label)).collect())
    }

    /// One key's label.
    pub async fn key_label(&self, key_id: i64) -> Option<String> {
        self.key_labels().await.ok()?.remove(&key_id).filter(|l| !l.is_empty())
    }

    /// Holds the lock of one request (by key, method and request id) while it runs, so a
    /// racing repeat waits and then finds the first one's stored result.
    pub(crate) async fn request_lock(&self, rk: Option<&RequestKey>) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        let rk = rk?;
        let lock = {
            let mut m = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            m.retain(|_, l| Arc::strong_count(l) > 1);
            m.entry((rk.key_id, rk.method, rk.request_id.clone())).or_default().clone()
        };
        Some(lock.lock_owned().await)
    }

    /// A slot for one more open upload by this key, or a refusal if it has its share open.
    pub fn upload_slot(&self, key_id: i64) -> AppResult<reports::KeySlot> {
        self.uploads.take(key_id, self.limits.max_ingests_per_key).ok_or_else(|| {
            AppError::Overloaded(format!(
                "this key already has {} uploads open; wait for one to finish",
                self.limits.max_ingests_per_key
            ))
        })
    }

    /// Uploads open now, across all keys.
    pub fn open_uploads(&self) -> usize {
        self.uploads.open()
    }

    /// The full report of a rejected feed, for the key that submitted it, while it is kept.
    pub fn feed_report(&self, key_id: i64, report_id: &str) -> AppResult<Arc<Rejected>> {
        self.reports.get(key_id, report_id).ok_or_else(|| {
            AppError::not_found(
                "REPORT_NOT_FOUND",
                "no such report for this key: reports are kept in memory for 15 minutes after a rejection",
            )
        })
    }

    /// A permit to ingest now, or a refusal if the server is already busy ingesting.
    pub fn ingest_permit(&self) -> AppResult<tokio::sync::OwnedSemaphorePermit> {
        self.ingest_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| AppError::Overloaded("the server is busy ingesting other feeds; retry shortly".into()))
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
        let metrics = self.metrics.clone();
        let max_rows = self.limits.max_feed_rows;
        let reports = self.reports.clone();
        self.blocking(move |store| {
            // Parsing hashes the content once; the request's fingerprint reuses that hash.
            let (feed, sha) = body.parse(max_rows, school_term, store);
            let rk = request_id.map(|r| RequestKey {
                key_id,
                method: "SubmitFeed",
                request_id: r,
                fingerprint: fingerprint(&(school_term.urn.get(), school_term.term.index(), &sha, dry_run)),
            });
            let feed = feed.map_err(|e| match e {
                ingest::FeedError::Rejected(r) => {
                    let report: Arc<Rejected> = Arc::from(r);
                    let report_id = reports.put(key_id, report.clone());
                    AppError::FeedRejected { report, report_id }
                }
                ingest::FeedError::TooManyRows { limit } => AppError::TooLarge {
                    reason: "FEED_TOO_MANY_ROWS",
                    message: format!(
                        "the feed has more than {limit} pupil rows, the most this server accepts in one feed; \
                         nothing was stored (the operator sets this with --max-feed-rows)"
                    ),
                },
            })?;
            if dry_run {
                return Ok(SubmitResult::Validated {
                    rows: feed.rows.len(),
                    warnings: feed.warnings,
                    warning_count: feed.warning_count,
                    content_sha256: sha,
                });
            }
            let new = NewSubmission {
                school_term,
                source: body.source(),
                content_sha256: &sha,
                rows: &feed.rows,
                warnings: &feed.warnings,
                warning_count: feed.warning_count,
                received_at: now_unix(),
                key_id,
            };
            let outcome = store.accept_submission(
                &new,
                rk.as_ref(),
                |active, history| {
                    let scoring = if active.model_id == model.model_id {
                        model.clone()
                    } else {
                        Arc::new(active.artifact()?)
                    };
                    let _timer = metrics.scoring_seconds.with_label_values(&["feed"]).start_timer();
                    Ok::<_, AppError>(models::score_history(&scoring, school_term, history)?)
                },
                |rec, w| NewEvent {
                    at: rec.received_at,
                    actor_key_id: key_id,
                    actor_role: "school".into(),
                    action: Action::FeedAccept,
                    school_urn: Some(school_term.urn.to_string()),
                    subject: format!("submission {}", rec.id),
                    details: serde_json::json!({
                        "submission_id": rec.id, "term": school_term.term.to_string(), "rows": rec.row_count,
                        "content_sha256": rec.content_sha256, "rows_sha256": w.rows_digest,
                        "model_id": w.model_id, "scores_sha256": w.scores_digest, "supersedes": rec.supersedes,
                    }),
                },
            )?;
            Ok(match outcome {
                SaveOutcome::Accepted(r) => {
                    tracing::info!(submission = r.id, school = %r.school_term.urn, rows = r.row_count, "feed accepted and scored");
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
            _ => Err(AppError::not_found("SUBMISSION_NOT_FOUND", format!("no submission {id}"))),
        }
    }

    /// A submission's stored rows in UPN order, for keys that may read that school's pupils:
    /// `limit` from `offset`.
    pub async fn submission_rows(
        &self,
        scope: SchoolScope,
        id: i64,
        offset: usize,
        limit: usize,
    ) -> AppResult<Vec<PupilTerm>> {
        self.blocking(move |s| {
            match s.get_submission(id)? {
                Some(r) if scope.covers(r.school_term.urn) => {}
                _ => return Err(AppError::not_found("SUBMISSION_NOT_FOUND", format!("no submission {id}"))),
            }
            Ok(s.submission_rows(id, offset, limit)?)
        })
        .await
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

/// What this school has stored for a pupil in the earlier terms of the same academic year
/// (their current submissions). Every earlier term of the year must have a feed stored: else
/// the year-to-date totals cannot be split, and the reason is returned.
fn earlier_in_year(store: &Store, st: SchoolTerm, upn: &crate::domain::Upn) -> Result<ingest::ctf::Earlier, String> {
    let failed = |_| "the earlier terms' figures could not be read; try again".to_string();
    let mut e = ingest::ctf::Earlier::default();
    let mut t = st.term;
    while t.name() != crate::domain::TermName::Autumn {
        t = t.prev();
        let earlier = SchoolTerm { urn: st.urn, term: t };
        if store.current_submission_id(earlier).map_err(failed)?.is_none() {
            return Err(format!("this school has no feed stored for {t}: submit the year's terms in order"));
        }
        if let Some(row) = store.current_row(earlier, upn).map_err(failed)? {
            e.possible += u32::from(row.sessions_possible);
            e.authorised += u32::from(row.sessions_authorised);
            e.unauthorised += u32::from(row.sessions_unauthorised);
        }
    }
    Ok(e)
}

impl App {
    /// Programme outcomes of the finalised cohorts in the caller's scope (or one school), as
    /// published: small counts hidden. The comparison group comes from the whole borough.
    pub async fn programme_outcomes(
        &self,
        who: &Principal,
        school: Option<Urn>,
    ) -> AppResult<crate::outcomes::Published> {
        let e = self.programme_estimate(who, school).await?;
        Ok(crate::outcomes::publish(&e))
    }

    /// The exact estimate behind [`App::programme_outcomes`], for the closed-loop harness and
    /// tools in process. Never served: only published figures leave riskid.
    pub async fn programme_estimate(
        &self,
        who: &Principal,
        school: Option<Urn>,
    ) -> AppResult<crate::outcomes::Estimate> {
        let scope = who.may_read_outcomes()?;
        if let Some(u) = school {
            scope.check(u)?;
        }
        self.blocking(move |s| {
            use std::collections::HashMap;
            // Every finalised cohort takes part in matching (who was supported must not depend
            // on who asks); the report is then narrowed to the caller's schools.
            let cohorts: Vec<_> =
                s.all_cohorts()?.into_iter().filter(|c| c.state == crate::review::CohortState::Finalised).collect();
            let only: Option<std::collections::BTreeSet<Urn>> = match (school, &scope.schools) {
                (Some(u), _) => Some([u].into_iter().collect()),
                (None, Some(set)) => Some(set.iter().copied().collect()),
                (None, None) => None,
            };
            let mut rows: HashMap<(u32, crate::domain::Upn), (Urn, PupilTerm)> = HashMap::new();
            let mut last: Option<Term> = None;
            let mut schools_at: HashMap<u32, std::collections::BTreeSet<Urn>> = HashMap::new();
            for (st, r) in s.all_current_rows()? {
                last = Some(last.map_or(st.term, |l| l.max(st.term)));
                schools_at.entry(st.term.index()).or_default().insert(st.urn);
                rows.entry((st.term.index(), r.upn.clone())).or_insert((st.urn, r));
            }
            // The risk riskid gave every pupil of the borough in each selection term.
            let mut risk = HashMap::new();
            let mut terms: Vec<Term> = cohorts.iter().map(|c| c.school_term.term).collect();
            terms.sort_unstable();
            terms.dedup();
            for t in terms {
                for &urn in schools_at.get(&t.index()).into_iter().flatten() {
                    if let Ok((_, _, ranked)) = s.live_ranking(SchoolTerm { urn, term: t })? {
                        for r in ranked {
                            let none = r.probabilities.iter().map(|p| 1.0 - p).product::<f64>();
                            risk.insert((t.index(), r.upn), 1.0 - none);
                        }
                    }
                }
            }
            let inputs = crate::outcomes::Inputs { cohorts: &cohorts, rows: &rows, risk: &risk, last_term: last };
            Ok(crate::outcomes::estimate_for(&inputs, only.as_ref()))
        })
        .await
    }
}

fn redact(scope: &ReadSubmissions, mut r: SubmissionRecord) -> SubmissionRecord {
    if scope.counts_only {
        r.warnings.clear();
    }
    r
}
