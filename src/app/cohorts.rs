//! Cohort use cases: propose, read, review decisions, finalise, override report.

use std::collections::BTreeMap;

use serde_json::json;

use super::{App, AppError, AppResult, audit};
use crate::audit::NewEvent;
use crate::auth::{CohortPass, Principal};
use crate::cohort::{Candidate, CohortParams, propose};
use crate::domain::{NcYear, SchoolTerm, Upn};
use crate::review::{self, Kind, ReviewError};
use crate::storage::cohorts::{request_result, save_request_result};
use crate::storage::{CohortRow, MemberRow, ReplaceRefused, Store, now_unix};

pub struct ProposeInput {
    pub school_term: SchoolTerm,
    pub params: CohortParams,
    pub force: bool,
}

pub struct DecisionInput {
    pub cohort_id: i64,
    pub upn: String,
    pub kind: Kind,
    pub reason_code: String,
    pub note: String,
    pub request_id: Option<String>,
}

/// The part of a stored `PupilRisk` that ranking needs.
#[derive(serde::Deserialize)]
struct Ranking {
    upn: String,
    ncyear: u8,
    statutory: bool,
    outcomes: Vec<RankingOutcome>,
}

#[derive(serde::Deserialize)]
struct RankingOutcome {
    probability: f64,
}

impl Ranking {
    fn probabilities(&self) -> [f64; 3] {
        std::array::from_fn(|k| self.outcomes.get(k).map_or(0.0, |o| o.probability))
    }
}

impl From<ReviewError> for AppError {
    fn from(e: ReviewError) -> Self {
        match e {
            ReviewError::Invalid(m) => AppError::InvalidArgument(m),
            ReviewError::AlreadyDecided(_) => AppError::Aborted(e.to_string()),
            ReviewError::NotMember => AppError::NotFound(e.to_string()),
            ReviewError::Finalised | ReviewError::NotReady(_) => AppError::Conflict(e.to_string()),
        }
    }
}

fn event(pass: &CohortPass, action: &str, c: &CohortRow, subject: String, details: serde_json::Value) -> NewEvent {
    NewEvent {
        at: now_unix(),
        actor_key_id: pass.key_id,
        actor_role: pass.role.to_string(),
        action: action.into(),
        school_urn: Some(c.school_term.urn.to_string()),
        subject,
        details,
    }
}

/// What the link worker saw for a child: the stored score, as JSON.
fn shown(m: &MemberRow) -> serde_json::Value {
    serde_json::from_str(&m.shown_json).unwrap_or(serde_json::Value::Null)
}

pub fn capacity_of(c: &CohortRow) -> usize {
    serde_json::from_str::<CohortParams>(&c.params_json).map_or(usize::MAX, |p| p.capacity)
}

impl App {
    pub async fn propose_cohort(&self, who: &Principal, input: ProposeInput) -> AppResult<CohortRow> {
        let pass = who.may_propose(input.school_term.urn)?;
        input.params.check().map_err(AppError::InvalidArgument)?;
        let model_id = self.active_model().model_id.clone();
        self.blocking(move |s| {
            let st = input.school_term;
            if s.current_submission_id(st)?.is_none() {
                return Err(AppError::NotFound(format!("no feed for school {} in {}: submit it first", st.urn, st.term)));
            }
            let stored = s.school_scores(st, &model_id)?;
            // Ranking needs only the probabilities: skip the reasons' text when reading.
            let risks: Vec<Ranking> = stored
                .iter()
                .map(|r| serde_json::from_str(&r.explanation_json))
                .collect::<Result<_, _>>()
                .map_err(|e| AppError::Internal(e.to_string()))?;
            if risks.is_empty() {
                return Err(AppError::Conflict(format!("the feed has no scores under the active model {model_id}")));
            }
            let running = s.in_programme(st.term)?;
            let candidates: Vec<Candidate> = risks
                .iter()
                .map(|r| {
                    Ok(Candidate {
                        upn: Upn::parse(&r.upn).map_err(|e| AppError::Internal(e.to_string()))?,
                        ncyear: NcYear::new(r.ncyear).ok_or_else(|| AppError::Internal("bad year".into()))?,
                        statutory: r.statutory,
                        in_programme: running.contains(&r.upn),
                        probabilities: r.probabilities(),
                    })
                })
                .collect::<AppResult<_>>()?;
            let proposal = propose(&candidates, &input.params);
            let members = proposal
                .picks
                .iter()
                .map(|p| MemberRow {
                    upn: risks[p.candidate].upn.clone(),
                    proposed: true,
                    rank: Some(p.rank as u32),
                    priority: Some(p.priority),
                    shown_json: stored[p.candidate].explanation_json.clone(),
                    decision: None,
                    reason_code: None,
                    note: None,
                    decided_by: None,
                    decided_at: None,
                })
                .collect();
            let params_json = serde_json::to_string(&json!({
                "capacity": input.params.capacity, "min_year": input.params.min_year, "max_year": input.params.max_year,
                "policy": input.params.policy, "seed": input.params.seed,
                "eligible": proposal.eligible, "excluded_year_group": proposal.excluded_year_group,
                "excluded_statutory": proposal.excluded_statutory, "excluded_in_programme": proposal.excluded_in_programme,
            }))
            .expect("params serialise");
            let row = CohortRow {
                id: 0,
                school_term: st,
                model_id: model_id.clone(),
                params_json,
                state: "proposed".into(),
                created_at: now_unix(),
                created_by: pass.key_id,
                finalised_at: None,
                over_capacity_reason: None,
                programme_end: None,
                members,
            };
            let saved = s.create_cohort(row, input.force, |tx, c| {
                let details = json!({ "model_id": c.model_id, "params": serde_json::from_str::<serde_json::Value>(&c.params_json).unwrap_or_default(),
                                      "proposed": c.members.len(), "force": input.force });
                audit::append(tx, event(&pass, "cohort.propose", c, format!("cohort {}", c.id), details)).map(|_| ())
            })?;
            match saved {
                Ok(c) => Ok(c),
                Err(ReplaceRefused::ReviewStarted(id)) => Err(AppError::Conflict(format!(
                    "cohort {id} for this school and term is already being reviewed; propose with force to replace it"
                ))),
                Err(ReplaceRefused::Finalised(id)) => {
                    Err(AppError::Conflict(format!("cohort {id} for this school and term is finalised and cannot be replaced")))
                }
            }
        })
        .await
    }

    pub async fn get_cohort(&self, who: &Principal, st: SchoolTerm) -> AppResult<CohortRow> {
        who.may_read_cohorts()?.check(st.urn)?;
        self.blocking(move |s| {
            s.open_cohort(st)?
                .ok_or_else(|| AppError::NotFound(format!("no cohort for school {} in {}", st.urn, st.term)))
        })
        .await
    }

    async fn cohort_pass(&self, who: &Principal, id: i64) -> AppResult<CohortPass> {
        let c = self
            .blocking(move |s| s.get_cohort(id)?.ok_or_else(|| AppError::NotFound(format!("no cohort {id}"))))
            .await?;
        if c.state == "replaced" {
            return Err(AppError::Conflict(format!("cohort {id} was replaced by a newer proposal")));
        }
        Ok(who.may_review(c.school_term.urn)?)
    }

    /// Applies `change` to a cohort with its audit event, atomically and idempotently.
    async fn mutate(
        &self,
        pass: CohortPass,
        id: i64,
        request_id: Option<String>,
        method: &'static str,
        change: impl FnOnce(&Store, &mut CohortRow) -> AppResult<(String, String, serde_json::Value)> + Send + 'static,
    ) -> AppResult<CohortRow> {
        self.blocking(move |s| {
            let seen = match &request_id {
                Some(r) => s.in_transaction(|tx| request_result(tx, pass.key_id, r))?,
                None => None,
            };
            if seen.is_some() {
                return s.get_cohort(id)?.ok_or_else(|| AppError::NotFound(format!("no cohort {id}")));
            }
            // Look-ups the rule needs are read before the write transaction takes the lock.
            let pre = s.get_cohort(id)?.ok_or_else(|| AppError::NotFound(format!("no cohort {id}")))?;
            let mut planned = pre.clone();
            let (action, subject, details) = change(s, &mut planned)?;
            let out = s.update_cohort(id, |tx, c| {
                if c.members != pre.members || c.state != pre.state {
                    return Err(AppError::Aborted(
                        "the cohort changed while this decision was being made; reload and try again".into(),
                    ));
                }
                *c = planned;
                audit::append(tx, event(&pass, &action, c, subject, details))?;
                if let Some(r) = &request_id {
                    save_request_result(tx, pass.key_id, r, method, &c.id.to_string())?;
                }
                Ok(())
            })?;
            out.map(|(_, c)| c).ok_or_else(|| AppError::NotFound(format!("no cohort {id}")))
        })
        .await
    }

    pub async fn decide(&self, who: &Principal, d: DecisionInput) -> AppResult<CohortRow> {
        let pass = self.cohort_pass(who, d.cohort_id).await?;
        let model_id = self.active_model().model_id.clone();
        let by = pass.key_id;
        let rid = d.request_id.clone();
        self.mutate(pass, d.cohort_id, rid, "RecordDecision", move |s, c| {
            let at = now_unix();
            match d.kind {
                Kind::Add => {
                    let st = c.school_term;
                    let row = s.current_rows(st)?.into_iter().find(|r| r.upn.as_str() == d.upn);
                    let score = s.school_scores(st, &c.model_id)?.into_iter().find(|r| r.upn == d.upn);
                    let running = s.in_programme(st.term)?;
                    let check = review::AddCheck {
                        on_roll: row.is_some(),
                        statutory: row.as_ref().is_some_and(|r| r.statutory()),
                        in_programme: running.contains(&d.upn),
                        shown_json: score.map_or("{}".into(), |r| r.explanation_json),
                    };
                    review::add(c, &d.upn, check, &d.reason_code, &d.note, by, at)?;
                }
                kind => review::decide(c, &d.upn, kind, &d.reason_code, &d.note, by, at)?,
            }
            let m = c.members.iter().find(|m| m.upn == d.upn).expect("member just decided");
            let details = json!({ "upn": d.upn, "decision": d.kind.as_str(), "reason_code": d.reason_code, "note": d.note,
                                  "rank": m.rank, "shown": shown(m), "cohort_model_id": c.model_id, "active_model_id": model_id });
            Ok((format!("decision.{}", d.kind.as_str()), format!("cohort {} member", c.id), details))
        })
        .await
    }

    pub async fn undo(
        &self,
        who: &Principal,
        cohort_id: i64,
        upn: String,
        request_id: Option<String>,
    ) -> AppResult<CohortRow> {
        let pass = self.cohort_pass(who, cohort_id).await?;
        self.mutate(pass, cohort_id, request_id, "UndoDecision", move |_, c| {
            let undone = review::undo(c, &upn)?;
            Ok(("decision.undo".into(), format!("cohort {} member", c.id), json!({ "upn": upn, "undone": undone })))
        })
        .await
    }

    pub async fn finalise(
        &self,
        who: &Principal,
        cohort_id: i64,
        reason: String,
        request_id: Option<String>,
    ) -> AppResult<CohortRow> {
        let pass = self.cohort_pass(who, cohort_id).await?;
        self.mutate(pass, cohort_id, request_id, "FinaliseCohort", move |_, c| {
            let capacity = capacity_of(c);
            let list = review::finalise(c, capacity, &reason, now_unix())?;
            let details = json!({ "final": list, "capacity": capacity, "over_capacity_reason": reason,
                                  "model_id": c.model_id, "programme_end": c.programme_end.map(|t| t.to_string()) });
            Ok(("cohort.finalise".into(), format!("cohort {}", c.id), details))
        })
        .await
    }

    /// Confirm/remove/add counts by school, reason, model and group, over reviewed cohorts.
    pub async fn override_report(&self, who: &Principal) -> AppResult<Vec<OverrideRow>> {
        who.may_read_audit()?;
        self.blocking(|s| {
            let mut rows: BTreeMap<(String, String), [usize; 4]> = BTreeMap::new();
            for c in s.reviewed_cohorts()? {
                let pupils: BTreeMap<String, crate::domain::PupilTerm> =
                    s.current_rows(c.school_term)?.into_iter().map(|r| (r.upn.as_str().to_owned(), r)).collect();
                for m in &c.members {
                    let Some(d) = m.decision.as_deref() else { continue };
                    let col = match d {
                        "confirm" => 1,
                        "remove" => 2,
                        _ => 3,
                    };
                    let mut keys = vec![
                        ("school".to_string(), c.school_term.urn.to_string()),
                        ("model".into(), c.model_id.clone()),
                    ];
                    if let Some(r) = &m.reason_code {
                        keys.push(("reason".into(), format!("{d}: {r}")));
                    }
                    if let Some(p) = pupils.get(&m.upn) {
                        keys.push(("sex".into(), p.sex.code().into()));
                        keys.push(("ethnicity_group".into(), p.ethnicity.group().into()));
                        keys.push(("fsm".into(), if p.fsm { "FSM" } else { "not FSM" }.into()));
                        keys.push(("sen".into(), p.sen.code().into()));
                        keys.push(("eal".into(), if p.eal { "EAL" } else { "not EAL" }.into()));
                    }
                    for k in keys {
                        let e = rows.entry(k).or_default();
                        e[0] += usize::from(m.proposed);
                        e[col] += 1;
                    }
                }
            }
            Ok(rows
                .into_iter()
                .map(|((dimension, value), [proposed, confirmed, removed, added])| OverrideRow {
                    override_rate: if proposed + added > 0 {
                        (removed + added) as f64 / (proposed + added) as f64
                    } else {
                        0.0
                    },
                    dimension,
                    value,
                    proposed,
                    confirmed,
                    removed,
                    added,
                })
                .collect())
        })
        .await
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OverrideRow {
    pub dimension: String,
    pub value: String,
    pub proposed: usize,
    pub confirmed: usize,
    pub removed: usize,
    pub added: usize,
    /// (removed + added) / (proposed + added): how often people changed the model's list.
    pub override_rate: f64,
}
