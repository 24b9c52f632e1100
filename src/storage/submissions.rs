use rusqlite::{OptionalExtension, Row, Transaction, params};

use super::packed::{Format, Kind, Packed, pack};
use super::scores::EncodedScores;
use super::{CachedStatements, RequestKey, RequestResult, Store, StoreError, StoreResult};
use crate::audit::NewEvent;
use crate::domain::{PupilTerm, SchoolTerm, Term, Upn, Urn};
use crate::ingest::Violation;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmissionState {
    Current,
    Superseded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedSource {
    Csv,
    Records,
    /// A Common Transfer File with its supplement.
    Ctf,
}

impl FeedSource {
    fn as_str(self) -> &'static str {
        match self {
            FeedSource::Csv => "csv",
            FeedSource::Records => "records",
            FeedSource::Ctf => "ctf",
        }
    }
}

pub struct NewSubmission<'a> {
    pub school_term: SchoolTerm,
    pub source: FeedSource,
    pub content_sha256: &'a str,
    pub rows: &'a [PupilTerm],
    pub warnings: &'a [Violation],
    pub warning_count: usize,
    pub received_at: i64,
    pub key_id: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubmissionRecord {
    pub id: i64,
    pub school_term: SchoolTerm,
    pub state: SubmissionState,
    pub source: FeedSource,
    pub content_sha256: String,
    pub row_count: usize,
    pub warning_count: usize,
    pub warnings: Vec<Violation>,
    pub received_at: i64,
    pub key_id: i64,
    pub supersedes: Option<i64>,
    pub superseded_by: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SaveOutcome {
    /// Stored as the current submission (superseding any earlier one).
    Accepted(SubmissionRecord),
    /// Identical to the current submission, or a repeat of the same request: nothing stored.
    Unchanged(SubmissionRecord),
}

#[derive(Debug, Clone, Default)]
pub struct SubmissionFilter {
    /// `None`: every school.
    pub schools: Option<Vec<Urn>>,
    pub include_superseded: bool,
    /// Keyset pagination: only ids below this.
    pub before_id: Option<i64>,
    pub limit: usize,
}

const COLUMNS: &str = "id, urn, term_index, state, source, content_sha256, row_count, warning_count, \
                       warnings_json, received_at, key_id, supersedes, superseded_by";

fn read_record(r: &Row) -> rusqlite::Result<SubmissionRecord> {
    let corrupt =
        |i, msg: String| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, msg.into());
    let urn = Urn::new(r.get(1)?).map_err(|e| corrupt(1, e))?;
    let term = Term::from_index(r.get(2)?);
    let state = match r.get::<_, String>(3)?.as_str() {
        "current" => SubmissionState::Current,
        _ => SubmissionState::Superseded,
    };
    let source = match r.get::<_, String>(4)?.as_str() {
        "csv" => FeedSource::Csv,
        "ctf" => FeedSource::Ctf,
        _ => FeedSource::Records,
    };
    let warnings: Vec<Violation> =
        serde_json::from_str(&r.get::<_, String>(8)?).map_err(|e| corrupt(8, e.to_string()))?;
    Ok(SubmissionRecord {
        id: r.get(0)?,
        school_term: SchoolTerm { urn, term },
        state,
        source,
        content_sha256: r.get(5)?,
        row_count: r.get::<_, i64>(6)? as usize,
        warning_count: r.get::<_, i64>(7)? as usize,
        warnings,
        received_at: r.get(9)?,
        key_id: r.get(10)?,
        supersedes: r.get(11)?,
        superseded_by: r.get(12)?,
    })
}

fn get(tx: &rusqlite::Connection, id: i64) -> StoreResult<Option<SubmissionRecord>> {
    Ok(tx
        .prepare_cached(&format!("SELECT {COLUMNS} FROM submissions WHERE id = ?1"))?
        .query_row([id], read_record)
        .optional()?)
}

/// The model that scores a submission: read from the store when it differs from the one
/// the caller already holds.
pub struct ActiveModel<'a> {
    pub model_id: &'a str,
    conn: &'a rusqlite::Connection,
}

impl ActiveModel<'_> {
    pub fn artifact(&self) -> StoreResult<crate::model::ModelArtifact> {
        let json: String =
            self.conn
                .query_row("SELECT artifact_json FROM models WHERE model_id = ?1", [self.model_id], |r| r.get(0))?;
        crate::model::ModelArtifact::from_json(&json).map_err(StoreError::Corrupt)
    }
}

/// Digests of what an accepted submission wrote, for its audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub rows_digest: String,
    pub model_id: String,
    pub scores_digest: String,
}

/// Scores computed before the write lock, from a read snapshot of the store.
struct Prescored {
    /// The newest submission id the snapshot saw.
    last_id: i64,
    model_id: String,
    encoded: EncodedScores,
}

impl Store {
    /// Stores an accepted feed and its scores atomically: the rows, the supersede, the
    /// scores by the active model (`score` computes them from the pupils' history at every
    /// school and term), the audit event and the request's result, or nothing at all.
    ///
    /// Scoring is done before taking the write lock, on a read snapshot, so feeds in flight
    /// score on every core while another commits. Inside the transaction the snapshot is
    /// checked: if a submission committed since then touched any of these pupils (its rows,
    /// or the rows it superseded), or another model became active, the scores are computed
    /// again there. Either way they are exactly what scoring the committed history gives.
    /// A repeated request or unchanged content is not scored at all.
    pub fn accept_submission<E: From<StoreError>>(
        &self,
        s: &NewSubmission,
        rk: Option<&RequestKey>,
        score: impl Fn(ActiveModel, Vec<(SchoolTerm, PupilTerm)>) -> Result<EncodedScores, E>,
        event: impl FnOnce(&SubmissionRecord, &Written) -> NewEvent,
    ) -> Result<SaveOutcome, E> {
        // Outside the lock: the rows' bytes and digest, and the scores on a snapshot.
        let encoded_rows =
            crate::par::map(s.rows, super::codec::encode).into_iter().collect::<StoreResult<Vec<_>>>()?;
        let rows_digest = rows_digest(s.rows, &encoded_rows);
        let packed_rows = PackedRows::new(s.rows, &encoded_rows)?;
        drop(encoded_rows);
        let prescored = {
            // Snapshots for ingest have connections of their own, so a feed being scored never
            // holds one that API reads wait for.
            let conn = self.snapshot_conn();
            let snap = conn.unchecked_transaction().map_err(StoreError::from)?;
            // A repeated request, or content identical to the current submission's, is answered
            // inside the transaction without scores: none are computed for it.
            let answered = (|| -> rusqlite::Result<bool> {
                let repeat = match rk {
                    Some(rk) => snap
                        .prepare_cached(
                            "SELECT 1 FROM request_results WHERE key_id = ?1 AND method = ?2 AND request_id = ?3",
                        )?
                        .exists(params![rk.key_id, rk.method, rk.request_id])?,
                    None => false,
                };
                Ok(repeat
                    || snap
                        .prepare_cached(
                            "SELECT 1 FROM submissions WHERE urn = ?1 AND term_index = ?2 AND state = 'current' \
                             AND content_sha256 = ?3",
                        )?
                        .exists(params![s.school_term.urn.get(), s.school_term.term.index(), s.content_sha256])?)
            })()
            .map_err(StoreError::from)?;
            if answered {
                None
            } else {
                let last_id = last_submission_id(&snap)?;
                let model_id = active_model_id(&snap)?;
                let mut history = self.earlier_history(&snap, last_id, s.school_term, s.rows)?;
                history.extend(s.rows.iter().map(|r| (s.school_term, r.clone())));
                let encoded = score(ActiveModel { model_id: &model_id, conn: &snap }, history)?;
                Some(Prescored { last_id, model_id, encoded })
            }
        };
        self.write(|tx| {
            let unchanged = |id: i64| -> StoreResult<SaveOutcome> {
                Ok(SaveOutcome::Unchanged(get(tx, id)?.ok_or_else(|| StoreError::Corrupt("lost row".into()))?))
            };
            match tx.prior(rk)? {
                Some(RequestResult::Submission { id, unchanged: true }) => return Ok(unchanged(id)?),
                Some(RequestResult::Submission { id, unchanged: false }) => {
                    return Ok(SaveOutcome::Accepted(get(tx, id)?.ok_or_else(|| StoreError::Corrupt("lost row".into()))?));
                }
                Some(_) => return Err(StoreError::Corrupt("a request result of another kind".into()).into()),
                None => {}
            }
            let (urn, term_index) = (s.school_term.urn.get(), s.school_term.term.index());
            let current: Option<(i64, String)> = tx
                .cached_row(
                    "SELECT id, content_sha256 FROM submissions WHERE urn = ?1 AND term_index = ?2 AND state = 'current'",
                    params![urn, term_index],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(StoreError::from)?;
            let mut superseded = Vec::new();
            if let Some((id, sha)) = &current {
                if sha == s.content_sha256 {
                    tx.remember(rk, &RequestResult::Submission { id: *id, unchanged: true })?;
                    return Ok(unchanged(*id)?);
                }
                tx.execute("UPDATE submissions SET state = 'superseded' WHERE id = ?1", [id]).map_err(StoreError::from)?;
                // The UPN index lists current submissions only: the superseded one's entries
                // go, found by their keys.
                superseded = unindex(tx, *id, term_index)?;
            }
            let previous = last_submission_id(tx)?;
            let warnings = serde_json::to_string(s.warnings).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            tx.cached_exec(
                "INSERT INTO submissions (urn, term_index, state, source, content_sha256, row_count, warning_count, \
                 warnings_json, received_at, key_id, supersedes) \
                 VALUES (?1, ?2, 'current', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    urn,
                    term_index,
                    s.source.as_str(),
                    s.content_sha256,
                    s.rows.len() as i64,
                    s.warning_count as i64,
                    warnings,
                    s.received_at,
                    s.key_id,
                    current.as_ref().map(|c| c.0),
                ],
            )
            .map_err(StoreError::from)?;
            let id = tx.last_insert_rowid();
            if let Some((old, _)) = current {
                tx.execute("UPDATE submissions SET superseded_by = ?1 WHERE id = ?2", params![id, old])
                    .map_err(StoreError::from)?;
            }
            insert_rows(tx, id, urn, term_index, &packed_rows)?;
            // Once committed, the history cache takes the packed rows as they were stored.
            tx.history.replace(Some(super::history::HistoryDelta {
                previous,
                id,
                school_term: s.school_term,
                superseded,
                rows: Packed::new(Kind::Rows, packed_rows.entries, packed_rows.data)?,
            }));
            // The model active now, read in this transaction: an activation cannot slip between.
            let model_id = active_model_id(tx)?;
            let fresh = match &prescored {
                Some(p) if p.model_id == model_id && !touched_since(tx, p.last_id, id, s.rows.iter().map(|r| r.upn.as_str()))? => {
                    Some(&p.encoded)
                }
                _ => None,
            };
            let scores_digest = if let Some(encoded) = fresh {
                super::scores::insert_scores(tx, id, &model_id, encoded)?
            } else {
                let history = super::scores::history_of(tx, id)?;
                let encoded = score(ActiveModel { model_id: &model_id, conn: tx }, history)?;
                super::scores::insert_scores(tx, id, &model_id, &encoded)?
            };
            let rec = get(tx, id)?.ok_or_else(|| StoreError::Corrupt("lost row".into()))?;
            super::audit::append(tx, event(&rec, &Written { rows_digest, model_id, scores_digest }))?;
            tx.remember(rk, &RequestResult::Submission { id, unchanged: false })?;
            Ok(SaveOutcome::Accepted(rec))
        })
    }

    /// A queued submission's pupils' history as a read snapshot holds it, to score outside
    /// the write lock, with the snapshot's latest submission id: `write_queued_scores` stores
    /// scores made from it only if no later submission touched those pupils.
    pub fn queued_history(&self, submission_id: i64) -> StoreResult<SnapshotHistory> {
        let conn = self.snapshot_conn();
        let snap = conn.unchecked_transaction()?;
        let last_id = last_submission_id(&snap)?;
        let upns = upns_of(&snap, submission_id)?;
        let history = match self.history.rows_of(last_id, upns.iter().map(String::as_str), None) {
            Some(h) => h,
            None => pupils_current_rows(&snap, upns.iter().map(String::as_str))?,
        };
        Ok(SnapshotHistory { last_id, history })
    }

    /// Scores a queued submission and records it, in one transaction (activation, recovery).
    /// Scores made on a snapshot (`prescored`: its latest submission id, and the scores) are
    /// stored if they are still what the committed history gives; otherwise, or without
    /// them, `score` computes them inside the transaction.
    pub fn write_queued_scores<E: From<StoreError>>(
        &self,
        submission_id: i64,
        model_id: &str,
        prescored: Option<(i64, EncodedScores)>,
        score: impl FnOnce(Vec<(SchoolTerm, PupilTerm)>) -> Result<EncodedScores, E>,
        event: impl FnOnce(&str) -> NewEvent,
    ) -> Result<usize, E> {
        self.write(|tx| {
            // Taken off the queue first: if another drain already wrote it, there is nothing to do.
            let taken = tx
                .execute(
                    "DELETE FROM score_queue WHERE submission_id = ?1 AND model_id = ?2",
                    params![submission_id, model_id],
                )
                .map_err(StoreError::from)?;
            if taken == 0 {
                return Ok(0);
            }
            // Scores from a snapshot are stored unless a later submission touched these pupils.
            let stale = |last_id| -> StoreResult<bool> {
                touched_since(tx, last_id, submission_id, upns_of(tx, submission_id)?.iter().map(String::as_str))
            };
            let encoded = match prescored {
                Some((last_id, encoded)) if !stale(last_id)? => encoded,
                _ => score(super::scores::history_of(tx, submission_id)?)?,
            };
            let digest = super::scores::insert_scores(tx, submission_id, model_id, &encoded)?;
            super::audit::append(tx, event(&digest))?;
            Ok(encoded.len())
        })
    }

    /// Every submission, current and superseded, for verify.
    pub fn all_submissions(&self) -> StoreResult<Vec<SubmissionRecord>> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM submissions ORDER BY id"))?;
            let rows = stmt.query_map([], read_record)?.collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    /// For every submission: the digest of its stored rows, for verify.
    pub fn row_digests(&self) -> StoreResult<Vec<(i64, String)>> {
        self.read(|conn| {
            let mut stmt = conn.prepare("SELECT submission_id, entries, data FROM feed_rows ORDER BY submission_id")?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let packed = Packed::new(Kind::Rows, r.get(1)?, r.get(2)?)?;
                let mut d = super::scores::PairsDigest::new();
                for e in packed.iter() {
                    d.push(e.upn, &[e.bytes]);
                }
                out.push((r.get(0)?, d.finish()));
            }
            Ok(out)
        })
    }

    /// What differs, if anything, between the UPN index and the current submissions' rows
    /// (the index must list exactly their pupils, each with its submission, school and term),
    /// for verify: history and a pupil's scores are found through it.
    pub fn pupil_index_problem(&self) -> StoreResult<Option<String>> {
        use std::collections::BTreeSet;
        self.read(|conn| {
            let current: Vec<(i64, u32, u32)> = conn
                .prepare("SELECT id, urn, term_index FROM submissions WHERE state = 'current'")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            let mut expected: BTreeSet<(String, u32, i64, u32)> = BTreeSet::new();
            for (id, urn, term) in current {
                expected.extend(upns_of(conn, id)?.into_iter().map(|u| (u, term, id, urn)));
            }
            let found: BTreeSet<(String, u32, i64, u32)> = conn
                .prepare("SELECT upn_key, term_index, submission_id, urn FROM pupil_index")?
                .query_map([], |r| Ok((upn_of_key(&r.get::<_, String>(0)?), r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?;
            let (missing, extra) = (expected.difference(&found).count(), found.difference(&expected).count());
            Ok((missing + extra > 0).then(|| {
                format!(
                    "the UPN index differs from the current submissions' rows: {missing} pupil(s) missing from it, \
                     {extra} listed that the rows do not explain"
                )
            }))
        })
    }

    pub fn get_submission(&self, id: i64) -> StoreResult<Option<SubmissionRecord>> {
        get(&self.conn(), id)
    }

    /// Submissions newest first, filtered, at most `limit`.
    pub fn list_submissions(&self, f: &SubmissionFilter) -> StoreResult<Vec<SubmissionRecord>> {
        self.read(|conn| {
            let mut sql = format!("SELECT {COLUMNS} FROM submissions WHERE id < ?1");
            if !f.include_superseded {
                sql.push_str(" AND state = 'current'");
            }
            if let Some(schools) = &f.schools {
                let list: Vec<String> = schools.iter().map(|u| u.get().to_string()).collect();
                sql.push_str(&format!(" AND urn IN ({})", list.join(",")));
            }
            sql.push_str(" ORDER BY id DESC LIMIT ?2");
            let rows = conn
                .prepare(&sql)?
                .query_map(params![f.before_id.unwrap_or(i64::MAX), f.limit as i64], read_record)?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    /// A submission's stored rows (current or superseded), in UPN order: `limit` from `offset`.
    pub fn submission_rows(&self, id: i64, offset: usize, limit: usize) -> StoreResult<Vec<PupilTerm>> {
        let Some(packed) = packed_rows(&self.conn(), id)? else { return Ok(Vec::new()) };
        let end = offset.saturating_add(limit).min(packed.len());
        (offset.min(end)..end).map(|i| packed.get(i).decode(ROW)).collect()
    }

    /// Rows of the current submission for a school and term.
    pub fn current_rows(&self, st: SchoolTerm) -> StoreResult<Vec<PupilTerm>> {
        self.read(|conn| {
            let Some(id) = current_id(conn, st)? else { return Ok(Vec::new()) };
            let Some(packed) = packed_rows(conn, id)? else { return Ok(Vec::new()) };
            packed.iter().map(|e| e.decode(ROW)).collect()
        })
    }

    /// One pupil's row in the current submission for a school and term (found by binary
    /// search in the submission's packed rows, without reading the school's other rows).
    pub fn current_row(&self, st: SchoolTerm, upn: &Upn) -> StoreResult<Option<PupilTerm>> {
        self.read(|conn| {
            let Some(id) = current_id(conn, st)? else { return Ok(None) };
            super::packed::lookup(conn, "feed_rows", id, Kind::Rows, upn.as_str())?
                .map(|(format, bytes, _)| super::packed::decode(format, &bytes, ROW))
                .transpose()
        })
    }

    /// One pupil's current rows at every school and term (the UPN follows the child), in
    /// school then term order.
    pub fn pupil_history(&self, upn: &Upn) -> StoreResult<Vec<(SchoolTerm, PupilTerm)>> {
        // One snapshot for the index and the rows it points to.
        self.read(|conn| pupils_current_rows(conn, [upn.as_str()]))
    }

    /// Every current row in the store, as (school, term, row), ordered by school, term and UPN.
    pub fn all_current_rows(&self) -> StoreResult<Vec<(SchoolTerm, PupilTerm)>> {
        self.read(|conn| {
            let packs = current_packs_in(conn)?;
            // Read in order, decoded on every core (in the same order).
            let decoded = crate::par::map(&packs, |(st, packed)| {
                packed.iter().map(|e| Ok((*st, e.decode(ROW)?))).collect::<StoreResult<Vec<_>>>()
            });
            let mut out = Vec::with_capacity(packs.iter().map(|(_, p)| p.len()).sum());
            for rows in decoded {
                out.extend(rows?);
            }
            Ok(out)
        })
    }

    /// Builds the history cache (after `claim_build`) from a snapshot begun after the claim:
    /// every submission committed before it is in the snapshot, and every one applied after
    /// the claim is queued for the cache, so none falls between the two. (A feed's own
    /// snapshot may predate a commit that the cache, still empty, did not keep.)
    fn build_history(&self) {
        // Counted first: a store too large to hold is never read into memory whole.
        let read = self.read(|conn| {
            let version = last_submission_id(conn)?;
            let rows: i64 = conn.query_row(
                "SELECT COALESCE(SUM(f.pupils), 0) FROM feed_rows f JOIN submissions s ON s.id = f.submission_id \
                 WHERE s.state = 'current'",
                [],
                |r| r.get(0),
            )?;
            if usize::try_from(rows).map_or(true, |n| n > self.history.limit()) {
                tracing::info!(rows, "the store's history is read from disk: too large to hold in memory");
                return Ok(None);
            }
            Ok(Some((version, current_packs_in(conn)?)))
        });
        match read {
            Ok(Some((version, packs))) => self.history.fill(version, Ok(packs)),
            Ok(None) => self.history.give_up(),
            Err(e) => self.history.fill(0, Err(e)),
        }
    }

    /// The current rows of these pupils at every school and term except `st` (whose current
    /// submission a new feed replaces), as the snapshot `conn` (latest submission `last_id`)
    /// holds them: what scoring a feed for `st` reads besides the feed. From the history
    /// cache when it holds that snapshot's state, which the first reader to find it empty
    /// builds.
    fn earlier_history(
        &self,
        conn: &rusqlite::Connection,
        last_id: i64,
        st: SchoolTerm,
        rows: &[PupilTerm],
    ) -> StoreResult<Vec<(SchoolTerm, PupilTerm)>> {
        let upns = || rows.iter().map(|r| r.upn.as_str());
        if let Some(h) = self.history.rows_of(last_id, upns(), Some(st)) {
            return Ok(h);
        }
        if self.history.claim_build() {
            self.build_history();
            if let Some(h) = self.history.rows_of(last_id, upns(), Some(st)) {
                return Ok(h);
            }
        }
        let mut out = pupils_current_rows(conn, upns())?;
        out.retain(|(at, _)| *at != st);
        Ok(out)
    }
}

/// Every current submission's packed rows that `conn` holds, by school and term.
fn current_packs_in(conn: &rusqlite::Connection) -> StoreResult<Vec<(SchoolTerm, Packed)>> {
    let subs: Vec<(i64, u32, u32)> = conn
        .prepare("SELECT id, urn, term_index FROM submissions WHERE state = 'current' ORDER BY urn, term_index")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut packs = Vec::with_capacity(subs.len());
    for (id, urn, term) in subs {
        let st = SchoolTerm { urn: Urn::new(urn).map_err(StoreError::Corrupt)?, term: Term::from_index(term) };
        if let Some(packed) = packed_rows(conn, id)? {
            packs.push((st, packed));
        }
    }
    Ok(packs)
}

const ROW: &str = "a stored pupil row";

/// The latest submission id a connection's snapshot holds (0 for none): what scores made
/// on that snapshot are later checked against (`touched_since`).
fn last_submission_id(conn: &rusqlite::Connection) -> StoreResult<i64> {
    Ok(conn.cached_row("SELECT COALESCE(MAX(id), 0) FROM submissions", [], |r| r.get(0))?)
}

/// The active model's id (every feed reads it twice: statements here are prepared once).
fn active_model_id(conn: &rusqlite::Connection) -> StoreResult<String> {
    Ok(conn.cached_row("SELECT model_id FROM models WHERE active = 1", [], |r| r.get(0))?)
}

/// The current submission's id for a school and term.
fn current_id(conn: &rusqlite::Connection, st: SchoolTerm) -> StoreResult<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT id FROM submissions WHERE urn = ?1 AND term_index = ?2 AND state = 'current'")?
        .query_row(params![st.urn.get(), st.term.index()], |r| r.get(0))
        .optional()?)
}

/// A submission's packed rows, if it has any.
pub(super) fn packed_rows(conn: &rusqlite::Connection, id: i64) -> StoreResult<Option<Packed>> {
    let found: Option<(Vec<u8>, Vec<u8>)> = conn
        .prepare_cached("SELECT entries, data FROM feed_rows WHERE submission_id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    found.map(|(e, d)| Packed::new(Kind::Rows, e, d)).transpose()
}

/// The UPNs of a submission's rows, from its entries alone.
fn upns_of(conn: &rusqlite::Connection, id: i64) -> StoreResult<Vec<String>> {
    let entries: Option<Vec<u8>> = conn
        .prepare_cached("SELECT entries FROM feed_rows WHERE submission_id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    entries.map_or(Ok(Vec::new()), |e| super::packed::upns(Kind::Rows, &e))
}

/// A queued submission's pupils' history read on a snapshot, and the latest submission id
/// that snapshot holds.
pub struct SnapshotHistory {
    pub last_id: i64,
    pub history: Vec<(SchoolTerm, PupilTerm)>,
}

/// A UPN's key in the UPN index: the UPN with its first character (the check letter, a
/// checksum of the rest) moved to the end, so the index is ordered by the digits that say
/// where and when the UPN was issued, and one school's pupils sit together in it
/// (migrations/0008).
pub(super) fn index_key(upn: &str) -> String {
    let mut chars = upn.chars();
    let first = chars.next();
    chars.chain(first).collect()
}

/// The UPN an index key was made from: [`index_key`]'s inverse.
pub(super) fn upn_of_key(key: &str) -> String {
    let mut chars = key.chars();
    let last = chars.next_back();
    last.into_iter().chain(chars).collect()
}

/// Which current submissions hold each of a list of pupils, by their index keys (the UPN
/// index lists current submissions only, with their school and term).
pub(super) const PUPILS_CURRENT: &str =
    "SELECT p.upn_key, p.submission_id, p.urn, p.term_index FROM pupil_index p WHERE p.upn_key IN rarray(?1)";

/// Every current row (any school, any term) of each of these pupils, as (school, term, row),
/// ordered by school, term and UPN. Each pupil's submissions come from the UPN index; a
/// submission that holds many of them is read once, whole, and one that holds a few is
/// searched pupil by pupil.
pub(super) fn pupils_current_rows<'a>(
    conn: &rusqlite::Connection,
    upns: impl IntoIterator<Item = &'a str>,
) -> StoreResult<Vec<(SchoolTerm, PupilTerm)>> {
    use std::collections::BTreeMap;
    let upns: Vec<&str> = upns.into_iter().collect();
    // One statement for all of them (SQLite's `rarray`): a seek per pupil, no round trip.
    let list = std::rc::Rc::new(upns.iter().map(|u| rusqlite::types::Value::Text(index_key(u))).collect::<Vec<_>>());
    let mut stmt = conn.prepare_cached(PUPILS_CURRENT)?;
    // By submission: where it is, and which of the pupils it holds.
    let mut wanted: BTreeMap<i64, (SchoolTerm, Vec<String>)> = BTreeMap::new();
    let mut found = stmt.query([list])?;
    while let Some(r) = found.next()? {
        let st =
            SchoolTerm { urn: Urn::new(r.get(2)?).map_err(StoreError::Corrupt)?, term: Term::from_index(r.get(3)?) };
        wanted.entry(r.get(1)?).or_insert_with(|| (st, Vec::new())).1.push(upn_of_key(&r.get::<_, String>(0)?));
    }
    let mut out = Vec::new();
    for (id, (st, pupils)) in wanted {
        if pupils.len() <= 8 {
            for upn in &pupils {
                if let Some((format, bytes, _)) = super::packed::lookup(conn, "feed_rows", id, Kind::Rows, upn)? {
                    out.push((st, super::packed::decode::<PupilTerm>(format, &bytes, ROW)?));
                }
            }
        } else if let Some(packed) = packed_rows(conn, id)? {
            for upn in &pupils {
                if let Some(i) = packed.find(upn) {
                    out.push((st, packed.get(i).decode(ROW)?));
                }
            }
        }
    }
    sort_history(&mut out);
    Ok(out)
}

/// Pupils' rows in the order the store gives them: by school, term and UPN.
pub(super) fn sort_history(rows: &mut [(SchoolTerm, PupilTerm)]) {
    rows.sort_by(|a, b| (a.0.urn, a.0.term, a.1.upn.as_str()).cmp(&(b.0.urn, b.0.term, b.1.upn.as_str())));
}

pub(super) const UNINDEX: &str =
    "DELETE FROM pupil_index WHERE upn_key IN rarray(?1) AND term_index = ?2 AND submission_id = ?3";

/// Removes a submission's pupils from the UPN index (by the index's key: its pupils'
/// UPNs, read from its packed rows, its term and its id).
/// Returns those UPNs.
fn unindex(tx: &Transaction, id: i64, term_index: u32) -> StoreResult<Vec<String>> {
    let upns = upns_of(tx, id)?;
    let list = std::rc::Rc::new(upns.iter().map(|u| rusqlite::types::Value::Text(index_key(u))).collect::<Vec<_>>());
    tx.prepare_cached(UNINDEX)?.execute(params![list, term_index, id])?;
    Ok(upns)
}

/// The current rows, at any school and term, of every pupil in a submission: what features
/// need to describe those pupils' history.
pub(super) fn history_of(conn: &rusqlite::Connection, submission_id: i64) -> StoreResult<Vec<(SchoolTerm, PupilTerm)>> {
    let upns = upns_of(conn, submission_id)?;
    pupils_current_rows(conn, upns.iter().map(String::as_str))
}

/// The digest of a submission's rows from their stored bytes (UPN order, as verify reads).
fn rows_digest(rows: &[PupilTerm], encoded: &[Vec<u8>]) -> String {
    let mut stored: Vec<(&str, &[u8])> =
        rows.iter().map(|r| r.upn.as_str()).zip(encoded.iter().map(Vec::as_slice)).collect();
    stored.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut d = super::scores::PairsDigest::new();
    for (upn, bytes) in &stored {
        d.push(upn, &[bytes]);
    }
    d.finish()
}

/// A feed's rows packed for the store, and its pupils' index keys in order (for the UPN
/// index): made before the write transaction, which only inserts them.
struct PackedRows {
    pupils: usize,
    entries: Vec<u8>,
    data: Vec<u8>,
    keys: Vec<String>,
}

impl PackedRows {
    fn new(rows: &[PupilTerm], encoded: &[Vec<u8>]) -> StoreResult<Self> {
        let pupils = rows
            .iter()
            .zip(encoded)
            .map(|(r, b)| (r.upn.as_str(), Format::Postcard, &b[..], [0.0; super::packed::COLUMNS]));
        let (entries, data) = pack(Kind::Rows, pupils)?;
        let mut keys: Vec<String> = rows.iter().map(|r| index_key(r.upn.as_str())).collect();
        keys.sort_unstable();
        Ok(Self { pupils: rows.len(), entries, data, keys })
    }
}

/// Inserts a submission's packed rows, and each pupil in the UPN index.
fn insert_rows(tx: &Transaction, id: i64, urn: u32, term_index: u32, rows: &PackedRows) -> StoreResult<()> {
    tx.prepare_cached("INSERT INTO feed_rows (submission_id, pupils, entries, data) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![id, rows.pupils as i64, rows.entries, super::packed::zeroed(&rows.data)?])?;
    // The submission id is the row's rowid (an INTEGER PRIMARY KEY).
    super::packed::write_data(tx, "feed_rows", id, &rows.data)?;
    // In the index's order, many to a statement.
    const PER_INSERT: usize = 64;
    let statement = |n: usize| {
        let values = vec!["(?, ?, ?, ?)"; n].join(", ");
        format!("INSERT INTO pupil_index (upn_key, term_index, submission_id, urn) VALUES {values}")
    };
    for chunk in rows.keys.chunks(PER_INSERT) {
        let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(4 * chunk.len());
        for key in chunk {
            values.extend([key as &dyn rusqlite::ToSql, &term_index, &id, &urn]);
        }
        // Only the full statement is kept: a last chunk of each size would evict others.
        if chunk.len() == PER_INSERT {
            tx.prepare_cached(&statement(PER_INSERT))?.execute(values.as_slice())?;
        } else {
            tx.prepare(&statement(chunk.len()))?.execute(values.as_slice())?;
        }
    }
    Ok(())
}

/// Whether a submission committed after `since` (other than `own`) holds any of these
/// pupils, or superseded one that did: then a snapshot taken at `since` is out of date for
/// them.
fn touched_since<'a>(tx: &Transaction, since: i64, own: i64, upns: impl Iterator<Item = &'a str>) -> StoreResult<bool> {
    let newer: Vec<(i64, Option<i64>)> = tx
        .prepare_cached("SELECT id, supersedes FROM submissions WHERE id > ?1 AND id <> ?2")?
        .query_map(params![since, own], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    if newer.is_empty() {
        return Ok(false);
    }
    let ours: std::collections::HashSet<&str> = upns.collect();
    for id in newer.iter().flat_map(|(id, old)| std::iter::once(*id).chain(*old)) {
        if upns_of(tx, id)?.iter().any(|u| ours.contains(u.as_str())) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    use super::*;
    use crate::audit::{Action, NewEvent};
    use crate::domain::{Outcome, Term, Urn};
    use crate::scoring::{Band, OutcomeRisk, PupilRisk};
    use crate::storage::LiveScores;

    #[test]
    fn an_index_key_is_the_upn_with_its_check_letter_last_and_gives_it_back() {
        for upn in ["A123456789012", "H80120001234Z", "T999999999999"] {
            let key = index_key(upn);
            assert_eq!(key.len(), upn.len());
            assert_eq!(&key[..12], &upn[1..]);
            assert_eq!(upn_of_key(&key), upn);
        }
        // One school's pupils (the same local authority and school of issue) sort together,
        // whatever their check letters.
        let mut keys: Vec<String> =
            ["Z801200100001", "A801200100002", "M999000000001", "B801200100003"].map(index_key).to_vec();
        keys.sort();
        assert_eq!(
            keys.iter().map(|k| upn_of_key(k)).collect::<Vec<_>>(),
            ["Z801200100001", "A801200100002", "B801200100003", "M999000000001"]
        );
    }

    fn event(action: Action) -> NewEvent {
        NewEvent {
            at: 0,
            actor_key_id: 0,
            actor_role: "system".into(),
            action,
            school_urn: None,
            subject: "test".into(),
            details: serde_json::json!({}),
        }
    }

    /// A score that records, in its flags, how many terms of the pupil's history it saw.
    fn fake_scores(model_id: &str, st: SchoolTerm, history: &[(SchoolTerm, PupilTerm)]) -> Vec<PupilRisk> {
        let mut out: Vec<PupilRisk> = history
            .iter()
            .filter(|(s, _)| *s == st)
            .map(|(_, r)| {
                let seen = history.iter().filter(|(_, h)| h.upn == r.upn).count();
                PupilRisk {
                    upn: r.upn.as_str().to_owned(),
                    school_term: st,
                    ncyear: 7,
                    statutory: false,
                    model_id: model_id.to_owned(),
                    any_adverse: 0.5,
                    outcomes: Outcome::ALL
                        .iter()
                        .map(|&outcome| OutcomeRisk { outcome, probability: 0.2, band: Band::Low, reasons: vec![] })
                        .collect(),
                    flags: vec![format!("{seen} terms seen")],
                }
            })
            .collect();
        out.sort_by(|a, b| a.upn.cmp(&b.upn));
        out
    }

    fn submission<'a>(st: SchoolTerm, sha: &'a str, rows: &'a [PupilTerm]) -> NewSubmission<'a> {
        NewSubmission {
            school_term: st,
            source: FeedSource::Csv,
            content_sha256: sha,
            rows,
            warnings: &[],
            warning_count: 0,
            received_at: 0,
            key_id: 1,
        }
    }

    type Rows = Vec<(SchoolTerm, PupilTerm)>;

    /// The valid fixture feed's ten pupils.
    fn fixture_rows() -> Vec<PupilTerm> {
        crate::ingest::parse_csv(include_bytes!("../../tests/fixtures/valid-feed.csv")).unwrap().rows
    }

    /// For `rows`' pupils at the store's latest submission: the history cache's rows (`None`
    /// if it does not hold that state) and the store's own, both without `except`; and that
    /// latest submission id.
    fn cached_and_stored(store: &Store, rows: &[PupilTerm], except: Option<SchoolTerm>) -> (Option<Rows>, Rows, i64) {
        let conn = store.snapshot_conn();
        let snap = conn.unchecked_transaction().unwrap();
        let last = last_submission_id(&snap).unwrap();
        let upns = || rows.iter().map(|r| r.upn.as_str());
        let mut stored = pupils_current_rows(&snap, upns()).unwrap();
        stored.retain(|(st, _)| Some(*st) != except);
        (store.history.rows_of(last, upns(), except), stored, last)
    }

    /// Stores `rows` as the feed for `st` (content `sha`), scored with fake scores; its id.
    fn accept(store: &Store, st: SchoolTerm, sha: &str, rows: &[PupilTerm]) -> i64 {
        match store
            .accept_submission::<StoreError>(
                &submission(st, sha, rows),
                None,
                |a, h| super::super::scores::encode_scores(&fake_scores(a.model_id, st, &h)),
                |_, _| event(Action::FeedAccept),
            )
            .unwrap()
        {
            SaveOutcome::Accepted(r) => r.id,
            other => panic!("not accepted: {other:?}"),
        }
    }

    /// A store with a school key for `schools` and the bundled model active.
    fn store_with_model(dir: &std::path::Path, schools: &[u32]) -> Store {
        let store = Store::open(dir).unwrap();
        let schools: BTreeSet<Urn> = schools.iter().map(|&u| Urn::new(u).unwrap()).collect();
        let nk = super::super::NewKey {
            key_hash: "h",
            prefix: "p",
            role: crate::auth::Role::School,
            schools: &schools,
            label: "test",
            created_at: 0,
        };
        store.create_key(&nk, "test").unwrap();
        let model = crate::model::ModelArtifact::from_json(crate::app::BUNDLED_MODEL).unwrap();
        store
            .install_active_model(&model.model_id, crate::app::BUNDLED_MODEL, 0, event(Action::ModelActivate))
            .unwrap();
        store
    }

    /// Through feeds at two schools, a pupil's move and a correction that drops a pupil, the
    /// history cache that feeds are scored from gives exactly what the store holds.
    #[test]
    fn the_history_cache_gives_feeds_what_the_store_holds() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_model(dir.path(), &[100001, 100002]);
        let rows = fixture_rows();
        let autumn = Term::parse("2025/26", "autumn").unwrap();
        let (a, b) = (Urn::new(100001).unwrap(), Urn::new(100002).unwrap());
        let check = |what: &str| {
            for except in [None, Some(SchoolTerm { urn: a, term: autumn })] {
                let (cached, stored, last) = cached_and_stored(&store, &rows, except);
                assert_eq!(cached.unwrap_or_else(|| panic!("{what}: not cached")), stored, "{what}");
                let upns = rows.iter().map(|r| r.upn.as_str());
                assert!(
                    store.history.rows_of(last - 1, upns, None).is_none(),
                    "{what}: an older snapshot reads the store"
                );
            }
        };
        accept(&store, SchoolTerm { urn: a, term: autumn }, "1", &rows);
        check("one feed");
        accept(&store, SchoolTerm { urn: b, term: autumn.next() }, "2", &rows[1..]);
        check("pupils moved to another school");
        let mut corrected = rows[..rows.len() - 1].to_vec();
        corrected[0].suspensions = 3;
        accept(&store, SchoolTerm { urn: a, term: autumn }, "3", &corrected);
        check("a correction");
        accept(&store, SchoolTerm { urn: a, term: autumn.next().next() }, "4", &rows);
        check("a later term");
        // A reopened store builds it again from what is on disk.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        accept(&store, SchoolTerm { urn: b, term: autumn.next().next() }, "5", &rows[..2]);
        let (cached, stored, _) = cached_and_stored(&store, &rows, None);
        assert_eq!(cached.expect("built again"), stored);
    }

    /// A store with more rows than the cache may hold is never read into memory: feeds are
    /// scored from the store, with the same history.
    #[test]
    fn a_store_too_large_for_the_history_cache_is_read_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let rows = fixture_rows();
        let autumn = Term::parse("2025/26", "autumn").unwrap();
        let a = Urn::new(100001).unwrap();
        let seen = |store: &Store, st: SchoolTerm, sha: &str| {
            let n = RefCell::new(0);
            store
                .accept_submission::<StoreError>(
                    &submission(st, sha, &rows),
                    None,
                    |m, h| {
                        *n.borrow_mut() = h.len();
                        super::super::scores::encode_scores(&fake_scores(m.model_id, st, &h))
                    },
                    |_, _| event(Action::FeedAccept),
                )
                .unwrap();
            n.into_inner()
        };
        {
            let mut store = store_with_model(dir.path(), &[100001]);
            store.history = super::super::history::HistoryCache::with_limit(rows.len() + 1);
            assert_eq!(seen(&store, SchoolTerm { urn: a, term: autumn }, "1"), rows.len());
            assert_eq!(seen(&store, SchoolTerm { urn: a, term: autumn.next() }, "2"), 2 * rows.len());
            assert!(cached_and_stored(&store, &rows, None).0.is_none(), "over its limit: off");
        }
        let mut store = Store::open(dir.path()).unwrap();
        store.history = super::super::history::HistoryCache::with_limit(rows.len());
        assert_eq!(seen(&store, SchoolTerm { urn: a, term: autumn.next().next() }, "3"), 3 * rows.len());
        assert!(!store.history.claim_build(), "given up before reading, not built");
    }

    /// A feed whose snapshot predates a commit the empty cache did not keep does not build
    /// the cache from that snapshot (it would be a submission behind, and the next commit
    /// would turn it off): the build reads a snapshot begun after it claimed the build.
    #[test]
    fn the_history_cache_is_built_from_a_snapshot_taken_after_it_is_claimed() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store_with_model(dir.path(), &[100001]);
        let rows = fixture_rows();
        let autumn = Term::parse("2025/26", "autumn").unwrap();
        let a = Urn::new(100001).unwrap();
        accept(&store, SchoolTerm { urn: a, term: autumn }, "1", &rows);
        // A feed's snapshot, begun (by its first read) before submission 2 commits.
        let old = rusqlite::Connection::open(dir.path().join(super::super::DB_FILE)).unwrap();
        rusqlite::vtab::array::load_module(&old).unwrap();
        let old_snap = old.unchecked_transaction().unwrap();
        let old_last = last_submission_id(&old_snap).unwrap();
        accept(&store, SchoolTerm { urn: a, term: autumn.next() }, "2", &rows);
        // An empty cache that kept nothing of submission 2, as one that saw it commit before
        // any feed had claimed a build.
        store.history = super::super::history::HistoryCache::default();
        let st = SchoolTerm { urn: a, term: autumn.next().next() };
        let h = store.earlier_history(&old_snap, old_last, st, &rows).unwrap();
        assert_eq!(h.len(), rows.len(), "the old snapshot's history, read from the store");
        drop(old_snap);
        drop(old);
        accept(&store, st, "3", &rows);
        let (cached, stored, _) = cached_and_stored(&store, &rows, None);
        let cached = cached.expect("still on after the next commit");
        assert_eq!(cached, stored);
        assert_eq!(cached.len(), 3 * rows.len());
    }

    /// Feeds of the same pupils committed from several threads at once leave the history
    /// cache equal to the store (each is applied in commit order, after the write lock).
    #[test]
    fn the_history_cache_keeps_up_with_concurrent_feeds() {
        let dir = tempfile::tempdir().unwrap();
        let urns: Vec<u32> = (0..4).map(|i| 100001 + i).collect();
        let store = store_with_model(dir.path(), &urns);
        let rows = fixture_rows();
        let autumn = Term::parse("2024/25", "autumn").unwrap();
        std::thread::scope(|scope| {
            for (t, &urn) in urns.iter().enumerate() {
                let (store, rows) = (&store, &rows);
                scope.spawn(move || {
                    let mut term = autumn;
                    for i in 0..5 {
                        // Each school its own share of the pupils, and one correction.
                        let mine = &rows[t..rows.len() - i % 2];
                        accept(store, SchoolTerm { urn: Urn::new(urn).unwrap(), term }, &format!("{t}-{i}"), mine);
                        if i == 2 {
                            let fewer = &mine[1..];
                            accept(
                                store,
                                SchoolTerm { urn: Urn::new(urn).unwrap(), term },
                                &format!("{t}-{i}b"),
                                fewer,
                            );
                        }
                        term = term.next();
                    }
                });
            }
        });
        let (cached, stored, _) = cached_and_stored(&store, &rows, None);
        let cached = cached.expect("the cache is current");
        assert_eq!(cached, stored);
        assert_eq!(cached.len(), (0..4).map(|t| 5 * (rows.len() - t) - 2 - 1).sum::<usize>());
    }

    /// Scores computed on a snapshot that a concurrent commit made stale (it added a term of
    /// the same pupils) are not stored: they are computed again inside the transaction, from
    /// the committed history, and what is stored is that.
    #[test]
    fn scores_from_a_stale_snapshot_are_computed_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_model(dir.path(), &[100001, 100002]);
        let rows = fixture_rows();
        let autumn = Term::parse("2025/26", "autumn").unwrap();
        let ours = SchoolTerm { urn: Urn::new(100001).unwrap(), term: autumn.next() };
        // The same pupils' earlier term, at another school, committed while ours is scored.
        let theirs = SchoolTerm { urn: Urn::new(100002).unwrap(), term: autumn };

        let calls = RefCell::new(Vec::new());
        let outcome = store
            .accept_submission::<StoreError>(
                &submission(ours, "ours", &rows),
                None,
                |active, history| {
                    let first = calls.borrow().is_empty();
                    calls.borrow_mut().push(history.len());
                    if first {
                        // A concurrent feed commits between the snapshot and our write lock.
                        store.accept_submission::<StoreError>(
                            &submission(theirs, "theirs", &rows),
                            None,
                            |a, h| super::super::scores::encode_scores(&fake_scores(a.model_id, theirs, &h)),
                            |_, _| event(Action::FeedAccept),
                        )?;
                    }
                    super::super::scores::encode_scores(&fake_scores(active.model_id, ours, &history))
                },
                |_, _| event(Action::FeedAccept),
            )
            .unwrap();
        let SaveOutcome::Accepted(rec) = outcome else { panic!("accepted") };
        // Scored twice: on the snapshot (this term only), then again with the earlier term.
        assert_eq!(*calls.borrow(), vec![rows.len(), 2 * rows.len()]);
        let stored = store.history_of_submission(rec.id).unwrap();
        assert_eq!(stored.len(), 2 * rows.len());
        let LiveScores::Ready { scores, .. } = store.live_scores(ours).unwrap() else { panic!("scored") };
        let flags: Vec<String> = scores.iter().map(|s| s.risk.flags.join(",")).collect();
        assert_eq!(flags.len(), rows.len());
        assert!(flags.iter().all(|f| f == "2 terms seen"), "{flags:?}");
    }

    /// A queued submission's scores made on a snapshot are stored as they are while nothing
    /// committed since touched its pupils, and computed again inside the transaction (from the
    /// committed history) once something did.
    #[test]
    fn queued_scores_from_a_snapshot_are_checked_before_they_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_model(dir.path(), &[100001, 100002]);
        let rows = fixture_rows();
        let autumn = Term::parse("2025/26", "autumn").unwrap();
        let ours = SchoolTerm { urn: Urn::new(100001).unwrap(), term: autumn.next() };
        let theirs = SchoolTerm { urn: Urn::new(100002).unwrap(), term: autumn };
        let model_id = store.active_model().unwrap().unwrap().model_id;
        let id = accept(&store, ours, "ours", &rows);
        let queue = || {
            store
                .write::<_, StoreError>(|tx| {
                    tx.execute(
                        "INSERT INTO score_queue (submission_id, model_id) VALUES (?1, ?2)",
                        params![id, model_id],
                    )?;
                    Ok(())
                })
                .unwrap()
        };
        let write = |prescored: Option<(i64, EncodedScores)>, calls: &RefCell<Vec<usize>>| {
            store
                .write_queued_scores::<StoreError>(
                    id,
                    &model_id,
                    prescored,
                    |h| {
                        calls.borrow_mut().push(h.len());
                        super::super::scores::encode_scores(&fake_scores(&model_id, ours, &h))
                    },
                    |_| event(Action::ScoresWrite),
                )
                .unwrap()
        };
        let snapshot = |store: &Store| {
            let snap = store.queued_history(id).unwrap();
            let encoded = super::super::scores::encode_scores(&fake_scores(&model_id, ours, &snap.history)).unwrap();
            (snap.last_id, encoded)
        };

        // Nothing committed since the snapshot: stored as scored there.
        queue();
        let calls = RefCell::new(Vec::new());
        assert_eq!(write(Some(snapshot(&store)), &calls), rows.len());
        assert!(calls.borrow().is_empty(), "the snapshot's scores were stored");
        assert_eq!(store.queued(10).unwrap(), vec![], "taken off the queue");

        // The same pupils' earlier term, at another school, commits after the snapshot.
        queue();
        let stale = snapshot(&store);
        accept(&store, theirs, "theirs", &rows);
        let calls = RefCell::new(Vec::new());
        assert_eq!(write(Some(stale), &calls), rows.len());
        assert_eq!(*calls.borrow(), vec![2 * rows.len()], "scored again, with the earlier term");
        let LiveScores::Ready { scores, .. } = store.live_scores(ours).unwrap() else { panic!("scored") };
        assert!(scores.iter().all(|s| s.risk.flags.join(",") == "2 terms seen"));

        // Already written by another drain: nothing to do, nothing scored.
        let calls = RefCell::new(Vec::new());
        assert_eq!(write(Some(snapshot(&store)), &calls), 0);
        assert!(calls.borrow().is_empty());
    }

    /// Without a concurrent commit, the snapshot's scores are stored as they are.
    #[test]
    fn scores_from_a_fresh_snapshot_are_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_model(dir.path(), &[100001]);
        let rows = fixture_rows();
        let st = SchoolTerm { urn: Urn::new(100001).unwrap(), term: Term::parse("2025/26", "autumn").unwrap() };
        let calls = RefCell::new(0);
        let submit = || {
            store
                .accept_submission::<StoreError>(
                    &submission(st, "a", &rows),
                    None,
                    |a, h| {
                        *calls.borrow_mut() += 1;
                        super::super::scores::encode_scores(&fake_scores(a.model_id, st, &h))
                    },
                    |_, _| event(Action::FeedAccept),
                )
                .unwrap()
        };
        submit();
        assert_eq!(*calls.borrow(), 1);
        // The same content again is answered as unchanged, and nothing is scored for it.
        let again = submit();
        assert!(matches!(again, SaveOutcome::Unchanged(_)));
        assert_eq!(*calls.borrow(), 1, "unchanged content is not scored");
    }

    /// A correction takes the superseded submission's pupils out of the UPN index (found by
    /// the index's own key) and puts the new one's in: the index lists exactly the current
    /// submissions' pupils, as verify checks.
    #[test]
    fn a_correction_replaces_its_pupils_in_the_upn_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_model(dir.path(), &[100001]);
        let rows = fixture_rows();
        let autumn = Term::parse("2025/26", "autumn").unwrap();
        let at = |term: Term| SchoolTerm { urn: Urn::new(100001).unwrap(), term };
        let submit = |st: SchoolTerm, sha: &str, rows: &[PupilTerm]| accept(&store, st, sha, rows);
        let first = submit(at(autumn), "a1", &rows);
        submit(at(autumn.next()), "s1", &rows);
        // The correction drops a pupil: only the rest stay in the index for autumn.
        let second = submit(at(autumn), "a2", &rows[1..]);
        let entries = |id: i64| -> i64 {
            store
                .conn()
                .query_row("SELECT count(*) FROM pupil_index WHERE submission_id = ?1", [id], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(entries(first), 0, "the superseded submission's pupils are gone from the index");
        assert_eq!(entries(second), rows.len() as i64 - 1);
        let total: i64 = store.conn().query_row("SELECT count(*) FROM pupil_index", [], |r| r.get(0)).unwrap();
        assert_eq!(total, 2 * rows.len() as i64 - 1, "spring's pupils are untouched");
        assert_eq!(store.pupil_index_problem().unwrap(), None);
        let dropped = &rows[0].upn;
        let history = store.pupil_history(dropped).unwrap();
        assert_eq!(history.iter().map(|(st, _)| st.term).collect::<Vec<_>>(), vec![autumn.next()]);
    }
}
