//! Scores, kept per submission and model. `live_scores` names the model whose scores people
//! are shown for each submission, so an earlier term keeps the scores that were live then.
//! `score_queue` is the durable to-do list that activation writes and start-up drains.

use rusqlite::{OptionalExtension, params};

use super::packed::{Format, Kind, Packed, pack};
use super::{CachedStatements, Store, StoreError, StoreResult, Tx};
use crate::domain::{PupilTerm, SchoolTerm, Term, Urn};
use crate::scoring::PupilRisk;

/// Each child of a school term and its probabilities per outcome.
pub type TermScores = Vec<(crate::domain::Upn, [f64; 3])>;

/// One stored score, exactly as it was shown.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRecord {
    pub submission_id: i64,
    pub model_id: String,
    pub risk: PupilRisk,
}

/// What ranking needs of one pupil's live score.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub upn: crate::domain::Upn,
    pub ncyear: u8,
    pub statutory: bool,
    pub probabilities: [f64; 3],
}

/// (submission, model, what ranking needs of each pupil) for a school term.
pub type LiveRanking = (i64, String, Vec<Ranked>);

/// A school term's live scores, or why there are none to show yet.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveScores {
    /// No current submission for the school and term.
    NoFeed,
    /// Accepted, and queued for scoring (after an activation, or a crash): not ready yet.
    Pending {
        submission_id: i64,
        model_id: String,
    },
    Ready {
        submission_id: i64,
        model_id: String,
        scores: Vec<ScoreRecord>,
    },
}

/// SHA-256 over (UPN, bytes) pairs fed in UPN order, each length-prefixed: the digest of
/// stored rows or scores that audit events record and `verify` recomputes. Streaming, so a
/// digest costs no copy of what it covers.
#[derive(Default)]
pub struct PairsDigest(sha2::Sha256);

impl PairsDigest {
    pub fn new() -> Self {
        Self(sha2::Sha256::default())
    }

    pub fn push(&mut self, upn: &str, parts: &[&[u8]]) {
        use sha2::Digest;
        self.0.update((upn.len() as u64).to_be_bytes());
        self.0.update(upn.as_bytes());
        for p in parts {
            self.0.update((p.len() as u64).to_be_bytes());
            self.0.update(p);
        }
    }

    pub fn finish(self) -> String {
        use sha2::Digest;
        hex::encode(self.0.finalize())
    }
}

/// One pupil's score as stored: its UPN, the columns ranking reads, and its bytes.
pub struct EncodedScore {
    upn: String,
    columns: [f64; 6],
    bytes: Vec<u8>,
}

impl EncodedScore {
    /// Encodes one score. Scoring encodes each pupil's score on the thread that built it, so
    /// the score's many small parts are freed where they were allocated.
    pub fn of(r: &PupilRisk) -> StoreResult<Self> {
        Ok(Self { upn: r.upn.clone(), columns: ranking_columns(r), bytes: super::codec::encode(r)? })
    }
}

/// Scores as stored: packed in UPN order (ready to insert, so the write transaction only
/// binds them), and the digest of them all.
pub struct EncodedScores {
    pupils: usize,
    entries: Vec<u8>,
    data: Vec<u8>,
    digest: String,
}

impl EncodedScores {
    /// The scores in UPN order (SQLite's default collation compares bytes, as Rust's does)
    /// and their digest, exactly as `verify` recomputes it from what is stored.
    pub fn new(mut pupils: Vec<EncodedScore>) -> StoreResult<Self> {
        pupils.sort_unstable_by(|a, b| a.upn.cmp(&b.upn));
        let mut d = PairsDigest::new();
        for p in &pupils {
            push_score(&mut d, &p.upn, &p.bytes, &p.columns);
        }
        let (entries, data) =
            pack(Kind::Scores, pupils.iter().map(|p| (p.upn.as_str(), Format::Postcard, &p.bytes[..], p.columns)))?;
        Ok(Self { pupils: pupils.len(), entries, data, digest: d.finish() })
    }

    pub fn len(&self) -> usize {
        self.pupils
    }

    pub fn is_empty(&self) -> bool {
        self.pupils == 0
    }
}

/// Encodes scores for the store, on every core.
#[cfg(test)]
pub(crate) fn encode_scores(risks: &[PupilRisk]) -> StoreResult<EncodedScores> {
    let pupils = crate::par::map(risks, EncodedScore::of).into_iter().collect::<StoreResult<Vec<_>>>()?;
    EncodedScores::new(pupils)
}

/// The columns ranking reads, as the digest covers them.
fn ranking_columns(r: &PupilRisk) -> [f64; 6] {
    let p = r.probabilities();
    [r.any_adverse, f64::from(r.ncyear), f64::from(u8::from(r.statutory)), p[0], p[1], p[2]]
}

/// Replaces one submission's scores under one model, makes them live and takes the pair off
/// the queue, inside the caller's transaction. Returns the digest of what was written.
pub(crate) fn insert_scores(
    tx: &Tx,
    submission_id: i64,
    model_id: &str,
    encoded: &EncodedScores,
) -> StoreResult<String> {
    tx.prepare_cached("DELETE FROM score_sets WHERE submission_id = ?1 AND model_id = ?2")?
        .execute(params![submission_id, model_id])?;
    tx.prepare_cached(
        "INSERT INTO score_sets (submission_id, model_id, pupils, entries, data) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        submission_id,
        model_id,
        encoded.len() as i64,
        encoded.entries,
        super::packed::zeroed(&encoded.data)?
    ])?;
    super::packed::write_data(tx, "score_sets", tx.last_insert_rowid(), &encoded.data)?;
    tx.prepare_cached("INSERT OR REPLACE INTO live_scores (submission_id, model_id) VALUES (?1, ?2)")?
        .execute(params![submission_id, model_id])?;
    tx.prepare_cached("DELETE FROM score_queue WHERE submission_id = ?1 AND model_id = ?2")?
        .execute(params![submission_id, model_id])?;
    Ok(encoded.digest.clone())
}

/// One submission's scores under one model: the packed record's rowid and contents.
fn score_set(conn: &rusqlite::Connection, submission_id: i64, model_id: &str) -> StoreResult<Option<Packed>> {
    let found: Option<(Vec<u8>, Vec<u8>)> = conn
        .prepare_cached("SELECT entries, data FROM score_sets WHERE submission_id = ?1 AND model_id = ?2")?
        .query_row(params![submission_id, model_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    found.map(|(e, d)| Packed::new(Kind::Scores, e, d)).transpose()
}

/// The rowid of one submission's scores under one model.
fn score_set_id(conn: &rusqlite::Connection, submission_id: i64, model_id: &str) -> StoreResult<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT id FROM score_sets WHERE submission_id = ?1 AND model_id = ?2")?
        .query_row(params![submission_id, model_id], |r| r.get(0))
        .optional()?)
}

/// The digest of one submission's scores under one model, as stored.
fn digest_of(conn: &rusqlite::Connection, submission_id: i64, model_id: &str) -> StoreResult<String> {
    let mut d = PairsDigest::new();
    if let Some(set) = score_set(conn, submission_id, model_id)? {
        for e in set.iter() {
            push_score(&mut d, e.upn, e.bytes, &e.columns);
        }
    }
    Ok(d.finish())
}

/// Queues each school's latest current submission for scoring with `model_id`; returns the
/// submissions queued (for the audit event) and their rows.
pub(crate) fn queue_latest(tx: &Tx, model_id: &str) -> StoreResult<(Vec<i64>, usize)> {
    tx.execute(
        "INSERT OR IGNORE INTO score_queue (submission_id, model_id) \
         SELECT s.id, ?1 FROM submissions s WHERE s.state = 'current' \
         AND s.term_index = (SELECT MAX(term_index) FROM submissions t WHERE t.urn = s.urn AND t.state = 'current')",
        [model_id],
    )?;
    let queued: Vec<(i64, i64)> = tx
        .prepare_cached(
            "SELECT q.submission_id, s.row_count FROM score_queue q JOIN submissions s ON s.id = q.submission_id \
             WHERE q.model_id = ?1 ORDER BY q.submission_id",
        )?
        .query_map([model_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let rows = queued.iter().map(|q| q.1 as usize).sum();
    Ok((queued.into_iter().map(|q| q.0).collect(), rows))
}

/// A pupil's live scores, found through the UPN index (current submissions only): for each
/// submission that holds the pupil, the packed scores of the model live for it.
const PUPIL_SCORES: &str = "SELECT p.submission_id, l.model_id, ss.id FROM pupil_index p \
     JOIN live_scores l ON l.submission_id = p.submission_id \
     JOIN score_sets ss ON ss.submission_id = l.submission_id AND ss.model_id = l.model_id \
     WHERE p.upn_key = ?1 ORDER BY p.term_index, p.urn";

/// What a score digest covers, in UPN order: the explanation as shown, and the columns
/// ranking reads (priority, year group, statutory status, probabilities), so none can be
/// changed unseen.
/// One score into a digest: its UPN, stored bytes, and ranking columns as exact bits. Used
/// when writing and when verifying, so the two cannot drift apart.
fn push_score(d: &mut PairsDigest, upn: &str, bytes: &[u8], cols: &[f64; 6]) {
    let mut bits = [0u8; 48];
    for (i, c) in cols.iter().enumerate() {
        bits[i * 8..i * 8 + 8].copy_from_slice(&f64::to_bits(*c).to_be_bytes());
    }
    d.push(upn, &[bytes, &bits]);
}

impl Store {
    /// Queues one school term's current submission for scoring with `model_id`, with its
    /// audit event; returns the submission and its rows, or `None` if there is none.
    pub fn queue_school_term(
        &self,
        st: SchoolTerm,
        model_id: &str,
        rk: Option<&super::RequestKey>,
        event: impl FnOnce(i64) -> crate::audit::NewEvent,
    ) -> StoreResult<Option<super::RequestResult>> {
        self.write(|tx| {
            if let Some(prior) = tx.prior(rk)? {
                return Ok(Some(prior));
            }
            let row: Option<(i64, i64)> = tx
                .query_row(
                    "SELECT id, row_count FROM submissions WHERE urn = ?1 AND term_index = ?2 AND state = 'current'",
                    params![st.urn.get(), st.term.index()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((id, rows)) = row else { return Ok(None) };
            tx.execute(
                "INSERT OR IGNORE INTO score_queue (submission_id, model_id) VALUES (?1, ?2)",
                params![id, model_id],
            )?;
            super::audit::append(tx, event(id))?;
            let result =
                super::RequestResult::Activation { model_id: model_id.into(), schools: 1, pupils: rows as usize };
            tx.remember(rk, &result)?;
            Ok(Some(result))
        })
    }

    /// The first `limit` queued (submission, school term, model), in the order queued.
    pub fn queued(&self, limit: usize) -> StoreResult<Vec<(i64, SchoolTerm, String)>> {
        let rows: Vec<(i64, u32, u32, String)> = self
            .conn()
            .prepare(
                "SELECT q.submission_id, s.urn, s.term_index, q.model_id FROM score_queue q \
                 JOIN submissions s ON s.id = q.submission_id ORDER BY q.rowid LIMIT ?1",
            )?
            .query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(id, urn, ti, model)| {
                let st = SchoolTerm { urn: Urn::new(urn).map_err(StoreError::Corrupt)?, term: Term::from_index(ti) };
                Ok((id, st, model))
            })
            .collect()
    }

    pub fn queued_count(&self) -> StoreResult<usize> {
        Ok(self.conn().query_row("SELECT COUNT(*) FROM score_queue", [], |r| r.get::<_, i64>(0))? as usize)
    }

    /// Which submission and model are live for a school term, or why none is (as a
    /// `LiveScores` with no scores in it).
    fn live_of(conn: &rusqlite::Connection, st: SchoolTerm) -> StoreResult<Result<(i64, String), LiveScores>> {
        let Some(submission_id): Option<i64> = conn
            .cached_row(
                "SELECT id FROM submissions WHERE urn = ?1 AND term_index = ?2 AND state = 'current'",
                params![st.urn.get(), st.term.index()],
                |r| r.get(0),
            )
            .optional()?
        else {
            return Ok(Err(LiveScores::NoFeed));
        };
        let queued: Option<String> = conn
            .cached_row("SELECT model_id FROM score_queue WHERE submission_id = ?1 LIMIT 1", [submission_id], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(model_id) = queued {
            return Ok(Err(LiveScores::Pending { submission_id, model_id }));
        }
        let live: Option<String> = conn
            .cached_row("SELECT model_id FROM live_scores WHERE submission_id = ?1", [submission_id], |r| r.get(0))
            .optional()?;
        // Accepted submissions are scored in the same transaction, so this means the store
        // was changed by hand; say it is not ready rather than answer with nothing.
        Ok(live.map(|m| (submission_id, m)).ok_or(LiveScores::Pending { submission_id, model_id: String::new() }))
    }

    /// The live scores of a school term, highest priority first, or why there are none.
    pub fn live_scores(&self, st: SchoolTerm) -> StoreResult<LiveScores> {
        self.read(|conn| {
            let (submission_id, model_id) = match Self::live_of(conn, st)? {
                Ok(live) => live,
                Err(why) => return Ok(why),
            };
            let Some(set) = score_set(conn, submission_id, &model_id)? else {
                return Ok(LiveScores::Ready { submission_id, model_id, scores: Vec::new() });
            };
            // Highest priority first, then UPN.
            let mut order: Vec<usize> = (0..set.len()).collect();
            order.sort_by(|&a, &b| set.get(b).columns[0].total_cmp(&set.get(a).columns[0]).then(a.cmp(&b)));
            // Decoded on every core: a school's scores are a few hundred to a few thousand.
            let scores = crate::par::map(&order, |&i| set.get(i).decode(SCORE))
                .into_iter()
                .map(|risk| Ok(ScoreRecord { submission_id, model_id: model_id.clone(), risk: risk? }))
                .collect::<StoreResult<_>>()?;
            Ok(LiveScores::Ready { submission_id, model_id, scores })
        })
    }

    /// What ranking needs from a school term's live scores (probabilities, year group,
    /// statutory status), read without the reasons; the full scores of the children picked
    /// come from [`Store::scores_of`].
    pub fn live_ranking(&self, st: SchoolTerm) -> StoreResult<Result<LiveRanking, LiveScores>> {
        self.read(|conn| {
            let (submission_id, model_id) = match Self::live_of(conn, st)? {
                Ok(live) => live,
                Err(why) => return Ok(Err(why)),
            };
            let entries: Vec<u8> = conn
                .prepare_cached("SELECT entries FROM score_sets WHERE submission_id = ?1 AND model_id = ?2")?
                .query_row(params![submission_id, model_id], |r| r.get(0))
                .optional()?
                .unwrap_or_default();
            let ranked = super::packed::entries_only(Kind::Scores, &entries)?
                .into_iter()
                .map(|(upn, c)| {
                    let upn = crate::domain::Upn::parse(&upn)
                        .map_err(|_| StoreError::Corrupt("a stored score's UPN".into()))?;
                    Ok(Ranked { upn, ncyear: c[1] as u8, statutory: c[2] != 0.0, probabilities: [c[3], c[4], c[5]] })
                })
                .collect::<StoreResult<_>>()?;
            Ok(Ok((submission_id, model_id, ranked)))
        })
    }

    /// The full stored scores of some pupils of a submission under a model.
    pub fn scores_of(
        &self,
        submission_id: i64,
        model_id: &str,
        upns: &[crate::domain::Upn],
    ) -> StoreResult<Vec<PupilRisk>> {
        self.read(|conn| {
            let set = score_set_id(conn, submission_id, model_id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
            upns.iter()
                .map(|u| {
                    let (format, bytes, _) = super::packed::lookup(conn, "score_sets", set, Kind::Scores, u.as_str())?
                        .ok_or(rusqlite::Error::QueryReturnedNoRows)?;
                    super::packed::decode(format, &bytes, SCORE)
                })
                .collect()
        })
    }

    /// Every live score of one pupil, oldest term first.
    pub fn pupil_scores(&self, upn: &str) -> StoreResult<Vec<ScoreRecord>> {
        self.read(|conn| {
            let sets: Vec<(i64, String, i64)> = conn
                .prepare_cached(PUPIL_SCORES)?
                .query_map([super::submissions::index_key(upn)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            let mut out = Vec::with_capacity(sets.len());
            for (submission_id, model_id, set) in sets {
                if let Some((format, bytes, _)) = super::packed::lookup(conn, "score_sets", set, Kind::Scores, upn)? {
                    out.push(ScoreRecord {
                        submission_id,
                        model_id,
                        risk: super::packed::decode(format, &bytes, SCORE)?,
                    });
                }
            }
            Ok(out)
        })
    }

    /// Every score a model had live (shown to people) in a current submission, by school
    /// term: each child's probabilities.
    pub fn live_scores_of_model(&self, model_id: &str) -> StoreResult<Vec<(SchoolTerm, TermScores)>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT u.urn, u.term_index, ss.entries FROM score_sets ss \
                 JOIN live_scores l ON l.submission_id = ss.submission_id AND l.model_id = ss.model_id \
                 JOIN submissions u ON u.id = ss.submission_id AND u.state = 'current' \
                 WHERE ss.model_id = ?1 ORDER BY u.urn, u.term_index",
            )?;
            let mut rows = stmt.query([model_id])?;
            let mut out: Vec<(SchoolTerm, TermScores)> = Vec::new();
            while let Some(r) = rows.next()? {
                let corrupt = |what: &str| StoreError::Corrupt(format!("a stored score's {what}"));
                let st = SchoolTerm {
                    urn: crate::domain::Urn::new(r.get(0)?).map_err(|_| corrupt("URN"))?,
                    term: crate::domain::Term::from_index(r.get(1)?),
                };
                let mut scores = Vec::new();
                for (upn, c) in super::packed::entries_only(Kind::Scores, super::codec::bytes(r.get_ref(2)?, SCORE)?)? {
                    scores.push((crate::domain::Upn::parse(&upn).map_err(|_| corrupt("UPN"))?, [c[3], c[4], c[5]]));
                }
                match out.last_mut() {
                    Some((last, v)) if *last == st => v.extend(scores),
                    _ => out.push((st, scores)),
                }
            }
            Ok(out)
        })
    }

    /// Which model's scores are live for each submission, for verify.
    pub fn live_models(&self) -> StoreResult<Vec<(i64, String)>> {
        self.read(|conn| {
            let rows = conn
                .prepare("SELECT submission_id, model_id FROM live_scores ORDER BY submission_id")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    /// Whether the chain records any model activation (so "no active model" is tampering,
    /// not a first start).
    pub fn has_activations(&self) -> StoreResult<bool> {
        Ok(self.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM audit_events WHERE event_json LIKE '%\"action\":\"model.activate%')",
            [],
            |r| r.get(0),
        )?)
    }

    /// How many scores are stored in all (any model, any submission).
    pub fn score_count(&self) -> StoreResult<usize> {
        Ok(self.conn().query_row("SELECT COALESCE(SUM(pupils), 0) FROM score_sets", [], |r| r.get::<_, i64>(0))?
            as usize)
    }

    /// The current rows, at any school and term, of every pupil in a submission: what
    /// features need to describe those pupils' history.
    pub fn history_of_submission(&self, submission_id: i64) -> StoreResult<Vec<(SchoolTerm, PupilTerm)>> {
        self.read(|conn| history_of(conn, submission_id))
    }

    /// The current submission for a school and term, if any.
    pub fn current_submission_id(&self, st: SchoolTerm) -> StoreResult<Option<i64>> {
        Ok(self
            .conn()
            .cached_row(
                "SELECT id FROM submissions WHERE urn = ?1 AND term_index = ?2 AND state = 'current'",
                params![st.urn.get(), st.term.index()],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// For every (submission, model) with scores: the digest of those scores, for verify.
    pub fn score_digests(&self) -> StoreResult<Vec<(i64, String, String)>> {
        self.read(|conn| {
            let pairs: Vec<(i64, String)> = conn
                .prepare("SELECT submission_id, model_id FROM score_sets ORDER BY submission_id, model_id")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            pairs.into_iter().map(|(id, m)| Ok((id, m.clone(), digest_of(conn, id, &m)?))).collect()
        })
    }
}

pub(super) use super::submissions::history_of;

const SCORE: &str = "a stored score";

#[cfg(test)]
mod tests {
    /// SQLite's plan for `sql` with `params`, a line per step.
    fn plan_of(conn: &rusqlite::Connection, sql: &str, params: impl rusqlite::Params) -> String {
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(params, |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        plan.join("\n")
    }

    /// A pupil's scores are read by index, never by scanning the (large) scores table.
    #[test]
    fn a_pupils_scores_are_found_by_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::Store::open(dir.path()).unwrap();
        let plan = plan_of(&store.conn(), super::PUPIL_SCORES, ["U"]);
        assert!(plan.contains("SEARCH p USING PRIMARY KEY (upn_key=?)"), "{plan}");
        assert!(!plan.contains("SCAN"), "{plan}");
    }

    /// A feed's pupils are looked up in the UPN index by one statement, a seek each.
    #[test]
    fn a_feeds_pupils_are_found_by_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::Store::open(dir.path()).unwrap();
        let list = std::rc::Rc::new(vec![rusqlite::types::Value::Text("U".into())]);
        let plan = plan_of(&store.conn(), super::super::submissions::PUPILS_CURRENT, [list]);
        assert!(plan.contains("SEARCH p USING PRIMARY KEY (upn_key=?)"), "{plan}");
        assert!(!plan.contains("SCAN p"), "{plan}");
    }

    /// A superseded submission's pupils leave the UPN index by its primary key, a seek each
    /// (the index has no other index to find a submission's entries by).
    #[test]
    fn a_superseded_submissions_pupils_are_unindexed_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::Store::open(dir.path()).unwrap();
        let list = std::rc::Rc::new(vec![rusqlite::types::Value::Text("U".into())]);
        let plan = plan_of(&store.conn(), super::super::submissions::UNINDEX, rusqlite::params![list, 0, 0]);
        assert!(
            plan.contains("SEARCH pupil_index USING PRIMARY KEY (upn_key=? AND term_index=? AND submission_id=?)"),
            "{plan}"
        );
        assert!(!plan.contains("SCAN pupil_index"), "{plan}");
    }
}
