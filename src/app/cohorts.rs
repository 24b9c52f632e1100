//! Cohort use cases: propose, read, review decisions, finalise, override report.

use std::collections::BTreeMap;

use serde_json::json;

use super::{App, AppError, AppResult, request_key};
use crate::audit::{Action, NewEvent};
use crate::auth::{CohortPass, Principal};
use crate::cohort::{Candidate, CohortParams, propose};
use crate::domain::{NcYear, SchoolTerm, Upn};
use crate::review::{self, Cohort, CohortState, Decision, Kind, Member, ProposalStats, ReviewError};
use crate::scoring::PupilRisk;
use crate::storage::{LiveScores, ReplaceRefused, RequestKey, RequestResult, now_unix};

pub struct ProposeInput {
    pub school_term: SchoolTerm,
    pub params: CohortParams,
    pub force: bool,
    pub request_id: Option<String>,
}

pub struct DecisionInput {
    pub cohort_id: i64,
    pub upn: Upn,
    pub kind: Kind,
    pub reason_code: String,
    pub note: String,
    pub request_id: Option<String>,
}

impl From<ReviewError> for AppError {
    fn from(e: ReviewError) -> Self {
        match e {
            ReviewError::Invalid { field, reason, message } => AppError::bad_field(field, reason, message),
            ReviewError::AlreadyDecided(_) => AppError::Aborted { reason: "ALREADY_DECIDED", message: e.to_string() },
            ReviewError::NotMember => AppError::not_found("MEMBER_NOT_FOUND", e.to_string()),
            ReviewError::Finalised => AppError::conflict("COHORT_FINALISED", e.to_string()),
            ReviewError::Replaced => AppError::conflict("COHORT_REPLACED", e.to_string()),
            ReviewError::NotReady(_) => AppError::conflict("COHORT_NOT_READY", e.to_string()),
        }
    }
}

fn event(key_id: i64, role: &str, action: Action, c: &Cohort, subject: String, details: serde_json::Value) -> NewEvent {
    NewEvent {
        at: now_unix(),
        actor_key_id: key_id,
        actor_role: role.into(),
        action,
        school_urn: Some(c.school_term.urn.to_string()),
        subject,
        details,
    }
}

/// The digest of what a link worker was shown for a child, kept in the audit events.
pub(crate) fn shown_digest(shown: Option<&PupilRisk>) -> String {
    match shown {
        Some(r) => crate::audit::sha256_hex(serde_json::to_string(r).expect("risk serialises").as_bytes()),
        None => "none".into(),
    }
}

/// The live scores of a school term, or an error a client can act on.
pub(crate) fn ready_scores(live: LiveScores, st: SchoolTerm) -> AppResult<(String, Vec<crate::storage::ScoreRecord>)> {
    match live {
        LiveScores::NoFeed => Err(AppError::not_found(
            "FEED_NOT_FOUND",
            format!("no feed for school {} in {}: submit it first", st.urn, st.term),
        )),
        LiveScores::Pending { model_id, .. } => Err(AppError::NotReady(format!(
            "the scores for school {} in {} are being computed{}; retry shortly",
            st.urn,
            st.term,
            if model_id.is_empty() { String::new() } else { format!(" with model {model_id}") }
        ))),
        LiveScores::Ready { model_id, scores, .. } => Ok((model_id, scores)),
    }
}

impl App {
    pub async fn propose_cohort(&self, who: &Principal, input: ProposeInput) -> AppResult<Cohort> {
        let pass = who.may_propose(input.school_term.urn)?;
        input.params.check_new().map_err(|(field, m)| AppError::bad_field(field, "OUT_OF_RANGE", m))?;
        let st = input.school_term;
        let rk = input.request_id.clone().map(|r| {
            request_key(who, "ProposeCohort", r, &(st.urn.get(), st.term.index(), &input.params, input.force))
        });
        let role = pass.role.to_string();
        self.blocking(move |s| {
            if let Some(prior) = s.prior_request_if(rk.as_ref())? {
                return cohort_of(s, prior);
            }
            // Ranking reads only the probabilities; the full scores only of the children picked.
            let (submission_id, model_id, ranked) = match s.live_ranking(st)? {
                Ok(r) => r,
                Err(why) => {
                    return Err(ready_scores(why, st).err().unwrap_or_else(|| AppError::Internal("scores".into())));
                }
            };
            let running = s.in_programme(st.term)?;
            // Children permanently excluded this term are leaving: never proposed.
            let excluded: std::collections::HashSet<Upn> =
                s.current_rows(st)?.into_iter().filter(|r| r.permanent_exclusion).map(|r| r.upn).collect();
            let candidates: Vec<Candidate> = ranked
                .iter()
                .map(|r| {
                    Ok(Candidate {
                        upn: r.upn.clone(),
                        ncyear: NcYear::new(r.ncyear).ok_or_else(|| AppError::Internal("bad year".into()))?,
                        statutory: r.statutory,
                        in_programme: running.contains(&r.upn),
                        permanently_excluded: excluded.contains(&r.upn),
                        probabilities: r.probabilities,
                    })
                })
                .collect::<AppResult<_>>()?;
            let proposal = propose(&candidates, &input.params);
            let picked: Vec<Upn> = proposal.picks.iter().map(|p| candidates[p.candidate].upn.clone()).collect();
            let shown = s.scores_of(submission_id, &model_id, &picked)?;
            let members: Vec<Member> = proposal
                .picks
                .iter()
                .zip(shown)
                .map(|(p, risk)| Member {
                    upn: candidates[p.candidate].upn.clone(),
                    proposed: true,
                    rank: Some(p.rank as u32),
                    priority: Some(p.priority),
                    shown: Some(risk),
                    decided: None,
                })
                .collect();
            let cohort = Cohort {
                id: 0,
                school_term: st,
                model_id,
                params: input.params.clone(),
                stats: ProposalStats {
                    eligible: proposal.eligible,
                    excluded_year_group: proposal.excluded_year_group,
                    excluded_statutory: proposal.excluded_statutory,
                    excluded_in_programme: proposal.excluded_in_programme,
                    excluded_permanently: proposal.excluded_permanently,
                },
                state: CohortState::Proposed,
                created_at: now_unix(),
                created_by: pass.key_id,
                finalised_at: None,
                over_capacity_reason: None,
                programme_end: None,
                members,
            };
            let saved = s.create_cohort(cohort, input.force, rk.as_ref(), |c| {
                let members: Vec<_> =
                    c.members.iter().map(|m| json!([m.upn.as_str(), m.rank, shown_digest(m.shown.as_ref())])).collect();
                let details = json!({ "cohort_id": c.id, "term": c.school_term.term.to_string(), "model_id": c.model_id,
                                      "params": c.params, "proposed": c.members.len(), "force": input.force,
                                      "members": members });
                event(pass.key_id, &role, Action::CohortPropose, c, format!("cohort {}", c.id), details)
            })?;
            match saved {
                Ok(c) => Ok(c),
                Err(ReplaceRefused::ReviewStarted(id)) => Err(AppError::conflict(
                    "REVIEW_STARTED",
                    format!(
                        "cohort {id} for this school and term is already being reviewed; propose with force to replace it"
                    ),
                )),
                Err(ReplaceRefused::Finalised(id)) => Err(AppError::conflict(
                    "COHORT_FINALISED",
                    format!("cohort {id} for this school and term is finalised and cannot be replaced"),
                )),
            }
        })
        .await
    }

    pub async fn get_cohort(&self, who: &Principal, st: SchoolTerm) -> AppResult<Cohort> {
        who.may_read_cohorts()?.check(st.urn)?;
        self.blocking(move |s| {
            s.open_cohort(st)?.ok_or_else(|| {
                AppError::not_found("COHORT_NOT_FOUND", format!("no cohort for school {} in {}", st.urn, st.term))
            })
        })
        .await
    }

    /// One cohort by id, if the caller may read its school's cohorts.
    pub async fn get_cohort_by_id(&self, who: &Principal, id: i64) -> AppResult<Cohort> {
        let scope = who.may_read_cohorts()?;
        let c = self.blocking(move |s| Ok(s.get_cohort(id)?)).await?;
        // Another school's cohort reads as absent, not as refused: ids do not reveal schools.
        match c {
            Some(c) if scope.covers(c.school_term.urn) => Ok(c),
            _ => Err(AppError::not_found("COHORT_NOT_FOUND", format!("no cohort {id}"))),
        }
    }

    /// A page of cohorts in the caller's schools, newest first.
    pub async fn list_cohorts(
        &self,
        who: &Principal,
        mut f: crate::storage::CohortFilter,
        with_members: bool,
    ) -> AppResult<Vec<(Cohort, crate::storage::MemberCounts)>> {
        let scope = who.may_read_cohorts()?;
        if let Some(u) = f.urn {
            scope.check(u)?;
        }
        f.schools = scope.schools;
        self.blocking(move |s| Ok(s.list_cohorts(&f, with_members)?)).await
    }

    async fn cohort_pass(&self, who: &Principal, id: i64) -> AppResult<(CohortPass, Cohort)> {
        let c = self
            .blocking(move |s| {
                s.get_cohort(id)?.ok_or_else(|| AppError::not_found("COHORT_NOT_FOUND", format!("no cohort {id}")))
            })
            .await?;
        // Another school's cohort reads as absent, as GetCohort answers: ids reveal no school.
        match who.may_review(c.school_term.urn) {
            Ok(pass) => Ok((pass, c)),
            Err(crate::auth::AccessError::School(_)) => {
                Err(AppError::not_found("COHORT_NOT_FOUND", format!("no cohort {id}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Applies `change` to the cohort as it is now, with its audit event and the request's
    /// result, in one transaction; a repeated request returns the cohort as it is.
    async fn mutate(
        &self,
        pass: CohortPass,
        id: i64,
        rk: Option<RequestKey>,
        change: impl FnOnce(&mut Cohort) -> AppResult<(Action, serde_json::Value)> + Send + 'static,
    ) -> AppResult<Cohort> {
        let role = pass.role.to_string();
        self.blocking(move |s| {
            let out = s.update_cohort(id, rk.as_ref(), |c| {
                let (action, details) = change(c)?;
                Ok::<_, AppError>(event(pass.key_id, &role, action, c, format!("cohort {}", c.id), details))
            })?;
            match out {
                Some(c) => Ok(c),
                None => Err(AppError::not_found("COHORT_NOT_FOUND", format!("no cohort {id}"))),
            }
        })
        .await
    }

    pub async fn decide(&self, who: &Principal, d: DecisionInput) -> AppResult<Cohort> {
        let (pass, current) = self.cohort_pass(who, d.cohort_id).await?;
        let decision = Decision::from_parts(d.kind, &d.reason_code, &d.note)?;
        let rk = d.request_id.clone().map(|r| {
            request_key(who, "RecordDecision", r, &(d.cohort_id, d.upn.as_str(), d.kind, &d.reason_code, &d.note))
        });
        if d.kind == Kind::Confirm {
            // The school's feed may have been corrected since the proposal: a child now
            // recorded as permanently excluded this term is leaving, so cannot be confirmed.
            let (st, upn) = (current.school_term, d.upn.clone());
            let excluded =
                self.blocking(move |s| Ok(s.current_row(st, &upn)?.is_some_and(|r| r.permanent_exclusion))).await?;
            if excluded {
                return Err(AppError::bad_field(
                    "upn",
                    "PERMANENTLY_EXCLUDED",
                    "the school's latest feed records this child as permanently excluded this term: remove them \
                     (reason left_school) instead",
                ));
            }
        }
        let active_model_id = self.active_model().model_id.clone();
        let by = pass.key_id;
        // What an addition must satisfy, read from the term's data before the write.
        let check = if d.kind == Kind::Add {
            let (st, upn) = (current.school_term, d.upn.clone());
            Some(
                self.blocking(move |s| {
                    let row = s.current_row(st, &upn)?;
                    let shown = match s.live_scores(st)? {
                        LiveScores::Ready { scores, .. } => {
                            scores.into_iter().find(|r| r.risk.upn == upn.as_str()).map(|r| r.risk)
                        }
                        _ => None,
                    };
                    let running = s.in_programme(st.term)?;
                    Ok(review::AddCheck {
                        on_roll: row.is_some(),
                        statutory: row.as_ref().is_some_and(|r| r.statutory()),
                        in_programme: running.contains(&upn),
                        permanently_excluded: row.as_ref().is_some_and(|r| r.permanent_exclusion),
                        shown,
                    })
                })
                .await?,
            )
        } else {
            None
        };
        let upn = d.upn.clone();
        self.mutate(pass, d.cohort_id, rk, move |c| {
            let at = now_unix();
            match check {
                Some(check) => review::add(c, &upn, check, decision, by, at)?,
                None => review::decide(c, &upn, decision, by, at)?,
            }
            let m = c.member(&upn).expect("member just decided");
            let action = match d.kind {
                Kind::Confirm => Action::DecisionConfirm,
                Kind::Remove => Action::DecisionRemove,
                Kind::Add => Action::DecisionAdd,
            };
            let details = json!({ "cohort_id": c.id, "upn": upn.as_str(), "decision": d.kind.as_str(),
                                  "reason_code": d.reason_code, "note": d.note, "rank": m.rank,
                                  "shown": m.shown, "shown_sha256": shown_digest(m.shown.as_ref()),
                                  "cohort_model_id": c.model_id, "active_model_id": active_model_id });
            Ok((action, details))
        })
        .await
    }

    pub async fn undo(
        &self,
        who: &Principal,
        cohort_id: i64,
        upn: Upn,
        request_id: Option<String>,
    ) -> AppResult<Cohort> {
        let (pass, _) = self.cohort_pass(who, cohort_id).await?;
        let rk = request_id.map(|r| request_key(who, "UndoDecision", r, &(cohort_id, upn.as_str())));
        self.mutate(pass, cohort_id, rk, move |c| {
            let undone = review::undo(c, &upn)?;
            Ok((
                Action::DecisionUndo,
                json!({ "cohort_id": c.id, "upn": upn.as_str(), "undone": undone.kind().as_str() }),
            ))
        })
        .await
    }

    pub async fn finalise(
        &self,
        who: &Principal,
        cohort_id: i64,
        reason: String,
        request_id: Option<String>,
    ) -> AppResult<Cohort> {
        let (pass, _) = self.cohort_pass(who, cohort_id).await?;
        let rk = request_id.map(|r| request_key(who, "FinaliseCohort", r, &(cohort_id, &reason)));
        self.mutate(pass, cohort_id, rk, move |c| {
            let list = review::finalise(c, &reason, now_unix())?;
            let list: Vec<&str> = list.iter().map(Upn::as_str).collect();
            let details = json!({ "cohort_id": c.id, "final": list, "capacity": c.params.capacity,
                                  "over_capacity_reason": c.over_capacity_reason, "model_id": c.model_id,
                                  "programme_end": c.programme_end.map(|t| t.to_string()) });
            Ok((Action::CohortFinalise, details))
        })
        .await
    }

    /// Confirm/remove/add counts by school, reason, model and group, over reviewed cohorts.
    pub async fn override_report(&self, who: &Principal) -> AppResult<Vec<OverrideRow>> {
        who.may_read_audit()?;
        self.blocking(|s| {
            let mut rows: BTreeMap<(String, String), [usize; 4]> = BTreeMap::new();
            for c in s.reviewed_cohorts()? {
                let pupils: BTreeMap<Upn, crate::domain::PupilTerm> =
                    s.current_rows(c.school_term)?.into_iter().map(|r| (r.upn.clone(), r)).collect();
                for m in &c.members {
                    let Some(decided) = &m.decided else { continue };
                    let d = decided.decision.kind().as_str();
                    let col = match decided.decision.kind() {
                        Kind::Confirm => 1,
                        Kind::Remove => 2,
                        Kind::Add => 3,
                    };
                    let mut keys = vec![
                        ("school".to_string(), c.school_term.urn.to_string()),
                        ("model".into(), c.model_id.clone()),
                    ];
                    if let Some(r) = decided.decision.reason_code() {
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

/// The cohort a repeated request produced, as it is now.
fn cohort_of(s: &crate::storage::Store, prior: RequestResult) -> AppResult<Cohort> {
    match prior {
        RequestResult::Cohort { id } => {
            s.get_cohort(id)?.ok_or_else(|| AppError::not_found("COHORT_NOT_FOUND", format!("no cohort {id}")))
        }
        _ => Err(AppError::Internal("a request result of another kind".into())),
    }
}
