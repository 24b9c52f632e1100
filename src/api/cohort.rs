//! CohortService: proposals and the link workers' review.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{risk_to_pb, school_term_to_pb, term_from_pb, term_name_from_pb, timestamp, urn_from_pb};
use super::limits::{check_note, check_token, request_id};
use super::paging::{ONE, Query, STANDARD};
use super::pb::{self, cohort_service_server::CohortService};
use super::principal;
use super::status::bad_field;
use crate::app::{App, AppError, DecisionInput, ProposeInput};
use crate::cohort::{CohortParams, Policy};
use crate::domain::{SchoolTerm, Upn};
use crate::review::{Cohort, CohortState, Kind};
use crate::storage::MemberCounts;

pub struct CohortApi {
    app: Arc<App>,
}

impl CohortApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

/// Largest weight of one outcome in a weighted policy.
const MAX_WEIGHT: f64 = 1_000.0;

fn policy_from_pb(p: Option<pb::Policy>) -> Result<Policy, Status> {
    let pb::Policy { kind, weights } = p.unwrap_or_default();
    match pb::PolicyKind::try_from(kind) {
        Ok(pb::PolicyKind::Unspecified | pb::PolicyKind::AnyAdverse) => {
            if !weights.is_empty() {
                return Err(bad_field("policy.weights", "INVALID_VALUE", "weights are only for POLICY_KIND_WEIGHTED"));
            }
            Ok(Policy::AnyAdverse)
        }
        Ok(pb::PolicyKind::Weighted) => {
            let w: [f64; 3] = weights.try_into().map_err(|_| {
                bad_field(
                    "policy.weights",
                    "INVALID_VALUE",
                    "policy.weights needs three numbers (absence, suspension, referral)",
                )
            })?;
            // Bounded weights keep the weighted score a meaningful number: at 1e308 the sum
            // overflows to infinity and the ranking falls to the tie-break hash.
            if !w.iter().all(|x| (0.0..=MAX_WEIGHT).contains(x)) || w.iter().sum::<f64>() <= 0.0 {
                return Err(AppError::BadField {
                    field: "policy.weights".into(),
                    reason: "OUT_OF_RANGE",
                    description: format!("each weight must be from 0 to {MAX_WEIGHT}, and at least one above 0"),
                }
                .into());
            }
            Ok(Policy::Weighted { weights: w })
        }
        Err(_) => Err(bad_field("policy.kind", "INVALID_VALUE", "policy.kind is not a PolicyKind")),
    }
}

fn id(raw: &str) -> Result<i64, Status> {
    if raw.is_empty() {
        return Err(bad_field("cohort_id", "REQUIRED", "cohort_id is required"));
    }
    raw.parse().map_err(|_| bad_field("cohort_id", "INVALID_VALUE", "cohort_id is not a cohort id"))
}

fn rid(r: String) -> Result<Option<String>, Status> {
    request_id(r)
}

fn check_token_or_empty(field: &str, v: &str) -> Result<(), Status> {
    if v.is_empty() { Ok(()) } else { check_token(field, v, 64) }
}

pub(crate) fn cohort_to_pb(c: &Cohort) -> pb::Cohort {
    cohort_view_to_pb(c, true, MemberCounts::of(c))
}

fn full_cohort_view(view: i32, default_full: bool) -> bool {
    match pb::CohortView::try_from(view) {
        Ok(pb::CohortView::Full) => true,
        Ok(pb::CohortView::Basic) => false,
        _ => default_full,
    }
}

pub(crate) fn cohort_view_to_pb(c: &Cohort, full: bool, n: MemberCounts) -> pb::Cohort {
    let policy = match c.params.policy {
        Policy::Weighted { weights } => pb::Policy { kind: pb::PolicyKind::Weighted as i32, weights: weights.to_vec() },
        Policy::AnyAdverse => pb::Policy { kind: pb::PolicyKind::AnyAdverse as i32, weights: vec![] },
    };
    pb::Cohort {
        cohort_id: c.id.to_string(),
        school_term: Some(school_term_to_pb(c.school_term.urn, c.school_term.term)),
        state: match c.state {
            CohortState::Proposed => pb::CohortState::Proposed,
            CohortState::InReview => pb::CohortState::InReview,
            CohortState::Finalised => pb::CohortState::Finalised,
            CohortState::Replaced => pb::CohortState::Replaced,
        } as i32,
        model_id: c.model_id.clone(),
        capacity: c.params.capacity as u32,
        policy: Some(policy),
        seed: c.params.seed,
        min_year: u32::from(c.params.min_year),
        max_year: u32::from(c.params.max_year),
        members: c
            .members
            .iter()
            .filter(|_| full)
            .map(|m| {
                let d = m.decided.as_ref().map(|d| &d.decision);
                pb::CohortMember {
                    upn: m.upn.as_str().to_owned(),
                    proposed: m.proposed,
                    rank: m.rank.unwrap_or(0),
                    risk: m.shown.as_ref().map(risk_to_pb),
                    decision: match d.map(|d| d.kind()) {
                        Some(Kind::Confirm) => pb::DecisionKind::Confirm,
                        Some(Kind::Remove) => pb::DecisionKind::Remove,
                        Some(Kind::Add) => pb::DecisionKind::Add,
                        None => pb::DecisionKind::Unspecified,
                    } as i32,
                    reason_code: d.and_then(|d| d.reason_code()).unwrap_or_default().to_owned(),
                    note: d.and_then(|d| d.note()).unwrap_or_default().to_owned(),
                    decide_time: m.decided.as_ref().map(|d| timestamp(d.at)),
                    decided_by_key_id: m.decided.as_ref().map_or(0, |d| d.by),
                }
            })
            .collect(),
        eligible: c.stats.eligible as u32,
        excluded_statutory: c.stats.excluded_statutory as u32,
        excluded_in_programme: c.stats.excluded_in_programme as u32,
        excluded_permanently: c.stats.excluded_permanently as u32,
        excluded_year_group: c.stats.excluded_year_group as u32,
        programme_ends: c.programme_end.map(|t| school_term_to_pb(c.school_term.urn, t)),
        create_time: Some(timestamp(c.created_at)),
        finalise_time: c.finalised_at.map(timestamp),
        over_capacity_reason: c.over_capacity_reason.clone().unwrap_or_default(),
        proposed_count: n.proposed,
        decided_count: n.decided,
        final_count: n.kept,
    }
}

fn upn_of(raw: &str) -> Result<Upn, Status> {
    Upn::parse(raw).map_err(|e| bad_field("upn", "INVALID_VALUE", format!("upn is not valid: {e}")))
}

#[tonic::async_trait]
impl CohortService for CohortApi {
    async fn propose_cohort(&self, request: Request<pb::ProposeCohortRequest>) -> Result<Response<pb::Cohort>, Status> {
        let who = principal(&request)?;
        let pb::ProposeCohortRequest { school_term, capacity, min_year, max_year, policy, seed, force, request_id } =
            request.into_inner();
        let request_id = rid(request_id)?;
        let (urn, term) = term_from_pb(school_term.as_ref())?;
        let params = CohortParams {
            capacity: capacity as usize,
            min_year: min_year.unwrap_or(0).min(255) as u8,
            max_year: max_year.unwrap_or(13).min(255) as u8,
            policy: policy_from_pb(policy)?,
            seed,
        };
        // A repeated proposal with the same inputs gives the same list (replacing an unreviewed one).
        let c = self
            .app
            .propose_cohort(&who, ProposeInput { school_term: SchoolTerm { urn, term }, params, force, request_id })
            .await?;
        Ok(Response::new(cohort_to_pb(&c)))
    }

    async fn get_cohort(&self, request: Request<pb::GetCohortRequest>) -> Result<Response<pb::Cohort>, Status> {
        let who = principal(&request)?;
        let pb::GetCohortRequest { cohort_id, view } = request.into_inner();
        let c = self.app.get_cohort_by_id(&who, id(&cohort_id)?).await?;
        let n = MemberCounts::of(&c);
        Ok(Response::new(cohort_view_to_pb(&c, full_cohort_view(view, true), n)))
    }

    async fn list_cohorts(
        &self,
        request: Request<pb::ListCohortsRequest>,
    ) -> Result<Response<pb::ListCohortsResponse>, Status> {
        let who = principal(&request)?;
        let pb::ListCohortsRequest { school_urn, academic_year, term, state, page_size, page_token, view } =
            request.into_inner();
        let full = full_cohort_view(view, false);
        let limit = if full { ONE } else { STANDARD }.of(page_size)?;
        let urn = if school_urn.is_empty() { None } else { Some(urn_from_pb("school_urn", &school_urn)?) };
        let term = match (academic_year.is_empty(), term_name_from_pb(term)) {
            (true, None) if term == 0 => None,
            (false, Some(name)) => Some(
                crate::domain::Term::parse(&academic_year, name.as_str())
                    .map_err(|e| bad_field("academic_year", "INVALID_VALUE", e))?,
            ),
            _ => return Err(bad_field("term", "INVALID_VALUE", "give academic_year and term together, or neither")),
        };
        let state = match pb::CohortState::try_from(state) {
            Ok(pb::CohortState::Unspecified) => None,
            Ok(pb::CohortState::Proposed) => Some(CohortState::Proposed),
            Ok(pb::CohortState::InReview) => Some(CohortState::InReview),
            Ok(pb::CohortState::Finalised) => Some(CohortState::Finalised),
            Ok(pb::CohortState::Replaced) | Err(_) => {
                return Err(bad_field("state", "INVALID_VALUE", "state is not a CohortState"));
            }
        };
        let q = Query::new("ListCohorts", who.key_id, &(urn, term, state));
        let before_id = q.position(&page_token)?.map(|id| i64::try_from(id).unwrap_or(i64::MAX));
        let filter = crate::storage::CohortFilter { schools: None, urn, term, state, before_id, limit: limit + 1 };
        let rows = self.app.list_cohorts(&who, filter, full).await?;
        let next_page_token = if rows.len() > limit { q.token(rows[limit - 1].0.id as u64) } else { String::new() };
        let cohorts = rows.iter().take(limit).map(|(c, n)| cohort_view_to_pb(c, full, *n)).collect();
        Ok(Response::new(pb::ListCohortsResponse { cohorts, next_page_token }))
    }

    async fn record_decision(
        &self,
        request: Request<pb::RecordDecisionRequest>,
    ) -> Result<Response<pb::Cohort>, Status> {
        let who = principal(&request)?;
        let pb::RecordDecisionRequest { cohort_id, upn, decision, reason_code, note, request_id } =
            request.into_inner();
        let kind = match pb::DecisionKind::try_from(decision) {
            Ok(pb::DecisionKind::Confirm) => Kind::Confirm,
            Ok(pb::DecisionKind::Remove) => Kind::Remove,
            Ok(pb::DecisionKind::Add) => Kind::Add,
            _ => return Err(bad_field("decision", "REQUIRED", "decision must be CONFIRM, REMOVE or ADD")),
        };
        let upn = upn_of(&upn)?;
        check_note("note", &note)?;
        check_token_or_empty("reason_code", &reason_code)?;
        let input =
            DecisionInput { cohort_id: id(&cohort_id)?, upn, kind, reason_code, note, request_id: rid(request_id)? };
        Ok(Response::new(cohort_to_pb(&self.app.decide(&who, input).await?)))
    }

    async fn undo_decision(&self, request: Request<pb::UndoDecisionRequest>) -> Result<Response<pb::Cohort>, Status> {
        let who = principal(&request)?;
        let pb::UndoDecisionRequest { cohort_id, upn, request_id } = request.into_inner();
        let upn = upn_of(&upn)?;
        Ok(Response::new(cohort_to_pb(&self.app.undo(&who, id(&cohort_id)?, upn, rid(request_id)?).await?)))
    }

    async fn finalise_cohort(
        &self,
        request: Request<pb::FinaliseCohortRequest>,
    ) -> Result<Response<pb::Cohort>, Status> {
        let who = principal(&request)?;
        let pb::FinaliseCohortRequest { cohort_id, over_capacity_reason, request_id } = request.into_inner();
        check_note("over_capacity_reason", &over_capacity_reason)?;
        let c = self.app.finalise(&who, id(&cohort_id)?, over_capacity_reason, rid(request_id)?).await?;
        Ok(Response::new(cohort_to_pb(&c)))
    }
}
