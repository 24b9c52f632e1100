//! Cohorts and their members. Storage speaks `review::Cohort`; the row and JSON layout stay
//! in here. Every change commits with its audit event in one transaction.

use std::collections::HashSet;

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{CachedStatements, RequestKey, RequestResult, Store, StoreError, StoreResult, Tx};
use crate::audit::NewEvent;
use crate::cohort::{CohortParams, Policy};
use crate::domain::{SchoolTerm, Term, Upn, Urn};
use crate::review::{Cohort, CohortState, Decided, Decision, Kind, Member, ProposalStats};
use crate::scoring::PupilRisk;

/// Which cohorts a list returns.
#[derive(Debug, Clone, Default)]
pub struct CohortFilter {
    /// The caller's schools (None: every school).
    pub schools: Option<std::collections::BTreeSet<Urn>>,
    pub urn: Option<Urn>,
    pub term: Option<Term>,
    pub state: Option<CohortState>,
    pub before_id: Option<i64>,
    pub limit: usize,
}

/// Why a new proposal could not replace the open cohort.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaceRefused {
    ReviewStarted(i64),
    Finalised(i64),
}

/// The cohort's parameters and proposal figures as stored (one flat JSON object).
#[derive(Serialize, Deserialize)]
struct StoredParams {
    capacity: usize,
    min_year: u8,
    max_year: u8,
    policy: Policy,
    seed: u64,
    eligible: usize,
    excluded_year_group: usize,
    excluded_statutory: usize,
    excluded_in_programme: usize,
    #[serde(default)]
    excluded_permanently: usize,
}

fn params_json(c: &Cohort) -> String {
    let (p, s) = (&c.params, &c.stats);
    serde_json::to_string(&StoredParams {
        capacity: p.capacity,
        min_year: p.min_year,
        max_year: p.max_year,
        policy: p.policy,
        seed: p.seed,
        eligible: s.eligible,
        excluded_year_group: s.excluded_year_group,
        excluded_statutory: s.excluded_statutory,
        excluded_in_programme: s.excluded_in_programme,
        excluded_permanently: s.excluded_permanently,
    })
    .expect("params serialise")
}

fn corrupt(what: &str, id: i64) -> StoreError {
    StoreError::Corrupt(format!("cohort {id}: {what}"))
}

struct MemberCols {
    upn: String,
    proposed: i64,
    rank: Option<u32>,
    priority: Option<f64>,
    shown_json: String,
    decision: Option<String>,
    reason_code: Option<String>,
    note: Option<String>,
    decided_by: Option<i64>,
    decided_at: Option<i64>,
}

fn member_from(id: i64, m: MemberCols) -> StoreResult<Member> {
    let upn = Upn::parse(&m.upn).map_err(|_| corrupt("a member's UPN is not valid", id))?;
    let shown = if m.shown_json == "{}" {
        None
    } else {
        Some(serde_json::from_str::<PupilRisk>(&m.shown_json).map_err(|_| corrupt("a member's shown score", id))?)
    };
    let decided = match (m.decision, m.decided_by, m.decided_at) {
        (None, _, _) => None,
        (Some(kind), Some(by), Some(at)) => {
            let kind = Kind::parse(&kind).ok_or_else(|| corrupt("a decision kind", id))?;
            let decision =
                Decision::from_parts(kind, m.reason_code.as_deref().unwrap_or(""), m.note.as_deref().unwrap_or(""))
                    .map_err(|_| corrupt("a decision's reason", id))?;
            Some(Decided { decision, by, at })
        }
        _ => return Err(corrupt("a decision without its author or time", id)),
    };
    Ok(Member { upn, proposed: m.proposed == 1, rank: m.rank, priority: m.priority, shown, decided })
}

fn member_cols(m: &Member) -> MemberCols {
    let d = m.decided.as_ref();
    MemberCols {
        upn: m.upn.as_str().to_owned(),
        proposed: i64::from(m.proposed),
        rank: m.rank,
        priority: m.priority,
        shown_json: m
            .shown
            .as_ref()
            .map_or_else(|| "{}".into(), |r| serde_json::to_string(r).expect("risk serialises")),
        decision: d.map(|d| d.decision.kind().as_str().to_owned()),
        reason_code: d.and_then(|d| d.decision.reason_code()).map(str::to_owned),
        note: d.and_then(|d| d.decision.note()).map(str::to_owned),
        decided_by: d.map(|d| d.by),
        decided_at: d.map(|d| d.at),
    }
}

fn load(tx: &rusqlite::Connection, id: i64) -> StoreResult<Option<Cohort>> {
    load_with(tx, id, true)
}

/// A cohort, with its members or (for summaries) without them.
fn load_with(tx: &rusqlite::Connection, id: i64, with_members: bool) -> StoreResult<Option<Cohort>> {
    let row = tx
        .cached_row(
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
    // Stored state that does not parse is corruption: refuse it rather than guess (the first
    // release read unparseable parameters as "no capacity limit").
    let p: StoredParams = serde_json::from_str(&params_json).map_err(|_| corrupt("its parameters", id))?;
    let params = CohortParams {
        capacity: p.capacity,
        min_year: p.min_year,
        max_year: p.max_year,
        policy: p.policy,
        seed: p.seed,
    };
    params.check().map_err(|_| corrupt("its parameters", id))?;
    let stats = ProposalStats {
        eligible: p.eligible,
        excluded_year_group: p.excluded_year_group,
        excluded_statutory: p.excluded_statutory,
        excluded_in_programme: p.excluded_in_programme,
        excluded_permanently: p.excluded_permanently,
    };
    let members = if !with_members { Vec::new() } else { load_members(tx, id)? };
    Ok(Some(Cohort {
        id,
        school_term: SchoolTerm { urn: Urn::new(urn).map_err(StoreError::Corrupt)?, term: Term::from_index(ti) },
        model_id,
        params,
        stats,
        state: CohortState::parse(&state).ok_or_else(|| corrupt("its state", id))?,
        created_at,
        created_by,
        finalised_at,
        over_capacity_reason: ocr,
        programme_end: pe.map(Term::from_index),
        members,
    }))
}

fn load_members(tx: &rusqlite::Connection, id: i64) -> StoreResult<Vec<Member>> {
    tx.prepare_cached(
        "SELECT upn, proposed, rank, priority, shown_json, decision, reason_code, note, decided_by, decided_at \
             FROM cohort_members WHERE cohort_id = ?1 ORDER BY rank IS NULL, rank, decided_at, upn",
    )?
    .query_map([id], |r| {
        Ok(MemberCols {
            upn: r.get(0)?,
            proposed: r.get(1)?,
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
    .collect::<Result<Vec<_>, _>>()?
    .into_iter()
    .map(|m| member_from(id, m))
    .collect::<StoreResult<_>>()
}

/// How many children a cohort proposed, how many have a decision, and how many are on the
/// final list (confirmed or added).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemberCounts {
    pub proposed: u32,
    pub decided: u32,
    pub kept: u32,
}

impl MemberCounts {
    pub fn of(c: &Cohort) -> Self {
        Self {
            proposed: c.members.iter().filter(|m| m.proposed).count() as u32,
            decided: c.members.iter().filter(|m| m.decided.is_some()).count() as u32,
            kept: c.final_list().len() as u32,
        }
    }
}

fn counts(conn: &rusqlite::Connection, id: i64) -> StoreResult<MemberCounts> {
    Ok(conn
        .prepare_cached(
            "SELECT COALESCE(SUM(proposed), 0), COUNT(decision), COALESCE(SUM(decision IN ('confirm', 'add')), 0) \
         FROM cohort_members WHERE cohort_id = ?1",
        )?
        .query_row([id], |r| Ok(MemberCounts { proposed: r.get(0)?, decided: r.get(1)?, kept: r.get(2)? }))?)
}

fn upsert_member(tx: &Tx, id: i64, m: &Member) -> StoreResult<()> {
    let c = member_cols(m);
    tx.prepare_cached(
        "INSERT OR REPLACE INTO cohort_members (cohort_id, upn, proposed, rank, priority, shown_json, decision, \
         reason_code, note, decided_by, decided_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        id,
        c.upn,
        c.proposed,
        c.rank,
        c.priority,
        c.shown_json,
        c.decision,
        c.reason_code,
        c.note,
        c.decided_by,
        c.decided_at
    ])?;
    Ok(())
}

/// Writes what changed between `before` and `after`: the cohort row and changed members only.
fn write_changes(tx: &Tx, before: &Cohort, after: &Cohort) -> StoreResult<()> {
    tx.cached_exec(
        "UPDATE cohorts SET state = ?2, finalised_at = ?3, over_capacity_reason = ?4, programme_end = ?5 WHERE id = ?1",
        params![
            after.id,
            after.state.as_str(),
            after.finalised_at,
            after.over_capacity_reason,
            after.programme_end.map(|t| t.index())
        ],
    )?;
    for m in &after.members {
        if before.member(&m.upn) != Some(m) {
            upsert_member(tx, after.id, m)?;
        }
    }
    for m in &before.members {
        if after.member(&m.upn).is_none() {
            tx.cached_exec(
                "DELETE FROM cohort_members WHERE cohort_id = ?1 AND upn = ?2",
                params![after.id, m.upn.as_str()],
            )?;
        }
    }
    Ok(())
}

impl Store {
    /// Stores a new proposal, replacing an unreviewed one (or, with `force`, one in review),
    /// with the audit event `event` builds from the saved cohort, in one transaction. A
    /// finalised cohort is never replaced.
    pub fn create_cohort(
        &self,
        mut c: Cohort,
        force: bool,
        rk: Option<&RequestKey>,
        event: impl FnOnce(&Cohort) -> NewEvent,
    ) -> StoreResult<Result<Cohort, ReplaceRefused>> {
        self.write(|tx| {
            if let Some(RequestResult::Cohort { id }) = tx.prior(rk)? {
                return Ok(Ok(load(tx, id)?.ok_or_else(|| corrupt("lost", id))?));
            }
            let open: Option<(i64, String)> = tx
                .cached_row(
                    "SELECT id, state FROM cohorts WHERE urn = ?1 AND term_index = ?2 AND state != 'replaced'",
                    params![c.school_term.urn.get(), c.school_term.term.index()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((id, state)) = open {
                match CohortState::parse(&state) {
                    Some(CohortState::Finalised) => return Ok(Err(ReplaceRefused::Finalised(id))),
                    Some(CohortState::InReview) if !force => return Ok(Err(ReplaceRefused::ReviewStarted(id))),
                    _ => {
                        tx.execute("UPDATE cohorts SET state = 'replaced' WHERE id = ?1", [id])?;
                    }
                }
            }
            c.state = CohortState::Proposed;
            tx.cached_exec(
                "INSERT INTO cohorts (urn, term_index, model_id, params_json, state, created_at, created_by) \
                 VALUES (?1, ?2, ?3, ?4, 'proposed', ?5, ?6)",
                params![
                    c.school_term.urn.get(),
                    c.school_term.term.index(),
                    c.model_id,
                    params_json(&c),
                    c.created_at,
                    c.created_by
                ],
            )?;
            c.id = tx.last_insert_rowid();
            for m in &c.members {
                upsert_member(tx, c.id, m)?;
            }
            super::audit::append(tx, event(&c))?;
            tx.remember(rk, &RequestResult::Cohort { id: c.id })?;
            Ok(Ok(c))
        })
    }

    pub fn get_cohort(&self, id: i64) -> StoreResult<Option<Cohort>> {
        load(&self.conn(), id)
    }

    /// The open (proposed, in review or finalised) cohort for a school and term.
    pub fn open_cohort(&self, st: SchoolTerm) -> StoreResult<Option<Cohort>> {
        let conn = self.conn();
        let id: Option<i64> = conn
            .cached_row(
                "SELECT id FROM cohorts WHERE urn = ?1 AND term_index = ?2 AND state != 'replaced'",
                params![st.urn.get(), st.term.index()],
                |r| r.get(0),
            )
            .optional()?;
        id.map_or(Ok(None), |id| load(&conn, id))
    }

    /// Loads the cohort as it is now, lets `change` apply a review rule to it and name the
    /// audit event, then writes what changed and the event, all in one transaction.
    /// Concurrent changes are applied one after the other to the latest state, so decisions
    /// on different children never conflict.
    /// A repeated request (same key, method and id) changes nothing and returns the cohort
    /// as it is now.
    pub fn update_cohort<E: From<StoreError>>(
        &self,
        id: i64,
        rk: Option<&RequestKey>,
        change: impl FnOnce(&mut Cohort) -> Result<NewEvent, E>,
    ) -> Result<Option<Cohort>, E> {
        self.write(|tx| {
            let Some(before) = load(tx, id)? else {
                return Ok(None);
            };
            if tx.prior(rk)?.is_some() {
                return Ok(Some(before));
            }
            let mut after = before.clone();
            let event = change(&mut after)?;
            write_changes(tx, &before, &after)?;
            super::audit::append(tx, event)?;
            tx.remember(rk, &RequestResult::Cohort { id })?;
            Ok(Some(after))
        })
    }

    /// Children in a finalised cohort whose programme is still running at `term`.
    pub fn in_programme(&self, term: Term) -> StoreResult<HashSet<Upn>> {
        let conn = self.conn();
        let rows: Vec<String> = conn
            .prepare_cached(
                "SELECT m.upn FROM cohort_members m JOIN cohorts c ON c.id = m.cohort_id \
                 WHERE c.state = 'finalised' AND c.term_index <= ?1 AND c.programme_end > ?1 \
                 AND (m.decision IN ('confirm', 'add'))",
            )?
            .query_map([term.index()], |r| r.get::<_, String>(0))?
            .collect::<Result<_, _>>()?;
        rows.iter().map(|u| Upn::parse(u).map_err(|_| StoreError::Corrupt("a member's UPN".into()))).collect()
    }

    /// A page of cohorts (never replaced ones), newest first, with ids below `f.before_id`,
    /// with their members only if `with_members` (a summary reads three counts instead).
    pub fn list_cohorts(&self, f: &CohortFilter, with_members: bool) -> StoreResult<Vec<(Cohort, MemberCounts)>> {
        let conn = self.conn();
        let mut sql = String::from("SELECT id FROM cohorts WHERE id < ?1 AND state != 'replaced'");
        if let Some(schools) = &f.schools {
            let list: Vec<String> = schools.iter().map(|u| u.get().to_string()).collect();
            sql.push_str(&format!(" AND urn IN ({})", list.join(",")));
        }
        if let Some(u) = f.urn {
            sql.push_str(&format!(" AND urn = {}", u.get()));
        }
        if let Some(t) = f.term {
            sql.push_str(&format!(" AND term_index = {}", t.index()));
        }
        if let Some(st) = f.state {
            // A fixed word from the enum, never caller text.
            sql.push_str(&format!(" AND state = '{}'", st.as_str()));
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?2");
        let ids: Vec<i64> = conn
            .prepare(&sql)?
            .query_map(params![f.before_id.unwrap_or(i64::MAX), f.limit as i64], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(c) = load_with(&conn, id, with_members)? {
                let n = if with_members { MemberCounts::of(&c) } else { counts(&conn, id)? };
                out.push((c, n));
            }
        }
        Ok(out)
    }

    /// Every finalised or in-review cohort (for override reports).
    pub fn reviewed_cohorts(&self) -> StoreResult<Vec<Cohort>> {
        self.cohorts_where("state IN ('in_review', 'finalised')")
    }

    /// Every cohort, replaced ones too (for audit verification).
    pub fn all_cohorts(&self) -> StoreResult<Vec<Cohort>> {
        self.cohorts_where("1 = 1")
    }

    fn cohorts_where(&self, filter: &str) -> StoreResult<Vec<Cohort>> {
        let conn = self.conn();
        let ids: Vec<i64> = conn
            .prepare(&format!("SELECT id FROM cohorts WHERE {filter} ORDER BY id"))?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        ids.into_iter().filter_map(|id| load(&conn, id).transpose()).collect()
    }
}
