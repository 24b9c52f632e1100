//! Cohorts and their members, stored as plain rows; the review rules live in `review`.

use rusqlite::{OptionalExtension, Transaction, params};

use super::{Store, StoreError, StoreResult};
use crate::domain::{SchoolTerm, Term, Urn};

#[derive(Debug, Clone, PartialEq)]
pub struct CohortRow {
    pub id: i64,
    pub school_term: SchoolTerm,
    pub model_id: String,
    pub params_json: String,
    /// proposed, in_review, finalised or replaced.
    pub state: String,
    pub created_at: i64,
    pub created_by: i64,
    pub finalised_at: Option<i64>,
    pub over_capacity_reason: Option<String>,
    pub programme_end: Option<Term>,
    pub members: Vec<MemberRow>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MemberRow {
    pub upn: String,
    pub proposed: bool,
    pub rank: Option<u32>,
    pub priority: Option<f64>,
    /// What the link worker is shown (a `PupilRisk` as JSON).
    pub shown_json: String,
    pub decision: Option<String>,
    pub reason_code: Option<String>,
    pub note: Option<String>,
    pub decided_by: Option<i64>,
    pub decided_at: Option<i64>,
}

/// Why a new proposal could not replace the open cohort.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaceRefused {
    ReviewStarted(i64),
    Finalised(i64),
}

fn load(tx: &rusqlite::Connection, id: i64) -> StoreResult<Option<CohortRow>> {
    let row = tx
        .query_row(
            "SELECT urn, term_index, model_id, params_json, state, created_at, created_by, finalised_at, \
             over_capacity_reason, programme_end FROM cohorts WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, Option<i64>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                    r.get::<_, Option<u32>>(9)?,
                ))
            },
        )
        .optional()?;
    let Some((urn, ti, model_id, params_json, state, created_at, created_by, finalised_at, ocr, pe)) = row else {
        return Ok(None);
    };
    let members = tx
        .prepare(
            "SELECT upn, proposed, rank, priority, shown_json, decision, reason_code, note, decided_by, decided_at \
             FROM cohort_members WHERE cohort_id = ?1 ORDER BY rank IS NULL, rank, upn",
        )?
        .query_map([id], |r| {
            Ok(MemberRow {
                upn: r.get(0)?,
                proposed: r.get::<_, i64>(1)? == 1,
                rank: r.get(2)?,
                priority: r.get(3)?,
                shown_json: r.get(4)?,
                decision: r.get(5)?,
                reason_code: r.get(6)?,
                note: r.get(7)?,
                decided_by: r.get(8)?,
                decided_at: r.get(9)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some(CohortRow {
        id,
        school_term: SchoolTerm { urn: Urn::new(urn).map_err(StoreError::Corrupt)?, term: Term::from_index(ti) },
        model_id,
        params_json,
        state,
        created_at,
        created_by,
        finalised_at,
        over_capacity_reason: ocr,
        programme_end: pe.map(Term::from_index),
        members,
    }))
}

fn write(tx: &Transaction, c: &CohortRow) -> StoreResult<()> {
    tx.execute(
        "UPDATE cohorts SET state = ?2, finalised_at = ?3, over_capacity_reason = ?4, programme_end = ?5 WHERE id = ?1",
        params![c.id, c.state, c.finalised_at, c.over_capacity_reason, c.programme_end.map(|t| t.index())],
    )?;
    tx.execute("DELETE FROM cohort_members WHERE cohort_id = ?1", [c.id])?;
    insert_members(tx, c.id, &c.members)
}

fn insert_members(tx: &Transaction, id: i64, members: &[MemberRow]) -> StoreResult<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO cohort_members (cohort_id, upn, proposed, rank, priority, shown_json, decision, reason_code, \
         note, decided_by, decided_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for m in members {
        stmt.execute(params![
            id,
            m.upn,
            m.proposed as i64,
            m.rank,
            m.priority,
            m.shown_json,
            m.decision,
            m.reason_code,
            m.note,
            m.decided_by,
            m.decided_at
        ])?;
    }
    Ok(())
}

impl Store {
    /// Stores a new proposal, replacing an unreviewed one (or, with `force`, one in review).
    /// A finalised cohort is never replaced. `on_saved` runs inside the same transaction
    /// (e.g. to append the audit event).
    pub fn create_cohort<E: From<StoreError>>(
        &self,
        mut c: CohortRow,
        force: bool,
        on_saved: impl FnOnce(&Transaction, &CohortRow) -> Result<(), E>,
    ) -> Result<Result<CohortRow, ReplaceRefused>, E> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(StoreError::from)?;
        let open: Option<(i64, String)> = tx
            .query_row(
                "SELECT id, state FROM cohorts WHERE urn = ?1 AND term_index = ?2 AND state != 'replaced'",
                params![c.school_term.urn.get(), c.school_term.term.index()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(StoreError::from)?;
        if let Some((id, state)) = open {
            match state.as_str() {
                "finalised" => return Ok(Err(ReplaceRefused::Finalised(id))),
                "in_review" if !force => return Ok(Err(ReplaceRefused::ReviewStarted(id))),
                _ => {
                    tx.execute("UPDATE cohorts SET state = 'replaced' WHERE id = ?1", [id])
                        .map_err(StoreError::from)?;
                }
            }
        }
        tx.execute(
            "INSERT INTO cohorts (urn, term_index, model_id, params_json, state, created_at, created_by) \
             VALUES (?1, ?2, ?3, ?4, 'proposed', ?5, ?6)",
            params![
                c.school_term.urn.get(),
                c.school_term.term.index(),
                c.model_id,
                c.params_json,
                c.created_at,
                c.created_by
            ],
        )
        .map_err(StoreError::from)?;
        c.id = tx.last_insert_rowid();
        c.state = "proposed".into();
        insert_members(&tx, c.id, &c.members)?;
        on_saved(&tx, &c)?;
        tx.commit().map_err(StoreError::from)?;
        Ok(Ok(c))
    }

    pub fn get_cohort(&self, id: i64) -> StoreResult<Option<CohortRow>> {
        load(&self.conn(), id)
    }

    /// The open (proposed, in review or finalised) cohort for a school and term.
    pub fn open_cohort(&self, st: SchoolTerm) -> StoreResult<Option<CohortRow>> {
        let conn = self.conn();
        let id: Option<i64> = conn
            .query_row(
                "SELECT id FROM cohorts WHERE urn = ?1 AND term_index = ?2 AND state != 'replaced'",
                params![st.urn.get(), st.term.index()],
                |r| r.get(0),
            )
            .optional()?;
        id.map_or(Ok(None), |id| load(&conn, id))
    }

    /// Loads a cohort, lets `change` apply a decision to it, and writes it back, all in one
    /// transaction: concurrent decisions are applied one after the other, never interleaved.
    pub fn update_cohort<T, E: From<StoreError>>(
        &self,
        id: i64,
        change: impl FnOnce(&Transaction, &mut CohortRow) -> Result<T, E>,
    ) -> Result<Option<(T, CohortRow)>, E> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(StoreError::from)?;
        let Some(mut c) = load(&tx, id)? else {
            return Ok(None);
        };
        let out = change(&tx, &mut c)?;
        write(&tx, &c)?;
        tx.commit().map_err(StoreError::from)?;
        Ok(Some((out, c)))
    }

    /// UPNs in a finalised cohort whose programme is still running at `term`.
    pub fn in_programme(&self, term: Term) -> StoreResult<std::collections::HashSet<String>> {
        let conn = self.conn();
        let rows = conn
            .prepare(
                "SELECT m.upn FROM cohort_members m JOIN cohorts c ON c.id = m.cohort_id \
                 WHERE c.state = 'finalised' AND c.term_index <= ?1 AND c.programme_end > ?1 \
                 AND (m.decision IN ('confirm', 'add'))",
            )?
            .query_map([term.index()], |r| r.get::<_, String>(0))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Every finalised or in-review cohort (for override reports).
    pub fn reviewed_cohorts(&self) -> StoreResult<Vec<CohortRow>> {
        let conn = self.conn();
        let ids: Vec<i64> = conn
            .prepare("SELECT id FROM cohorts WHERE state IN ('in_review', 'finalised') ORDER BY id")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        ids.into_iter().filter_map(|id| load(&conn, id).transpose()).collect()
    }
}

/// Idempotency: the stored result of an earlier mutation with the same key and request id.
pub fn request_result(tx: &rusqlite::Connection, key_id: i64, request_id: &str) -> StoreResult<Option<String>> {
    Ok(tx
        .query_row(
            "SELECT result_json FROM request_results WHERE key_id = ?1 AND request_id = ?2",
            params![key_id, request_id],
            |r| r.get(0),
        )
        .optional()?)
}

pub fn save_request_result(
    tx: &rusqlite::Connection,
    key_id: i64,
    request_id: &str,
    method: &str,
    result_json: &str,
) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO request_results (key_id, request_id, method, result_json) VALUES (?1, ?2, ?3, ?4)",
        params![key_id, request_id, method, result_json],
    )?;
    Ok(())
}
