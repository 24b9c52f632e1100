//! CohortService: proposals and the link workers' review.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{risk_to_pb, school_term_to_pb, term_from_pb};
use super::limits::{check_note, check_token, request_id};
use super::pb::{self, cohort_service_server::CohortService};
use super::principal;
use crate::app::{App, AppError, DecisionInput, ProposeInput};
use crate::cohort::{CohortParams, Policy};
use crate::domain::SchoolTerm;
use crate::review::Kind;
use crate::scoring::PupilRisk;
use crate::storage::CohortRow;

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
    match kind.as_str() {
        "" | "any_adverse" => Ok(Policy::AnyAdverse),
        "weighted" => {
            let w: [f64; 3] = weights.try_into().map_err(|_| {
                Status::invalid_argument("policy.weights needs three numbers (absence, suspension, referral)")
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
        other => Err(Status::invalid_argument(format!("policy.kind {other:?} is not any_adverse or weighted"))),
    }
}

fn id(raw: &str) -> Result<i64, Status> {
    raw.parse().map_err(|_| Status::invalid_argument("cohort_id is not a cohort id"))
}

fn rid(r: String) -> Result<Option<String>, Status> {
    request_id(r)
}

fn check_token_or_empty(field: &str, v: &str) -> Result<(), Status> {
    if v.is_empty() { Ok(()) } else { check_token(field, v, 64) }
}

pub(crate) fn cohort_to_pb(c: &CohortRow) -> pb::Cohort {
    let params: serde_json::Value = serde_json::from_str(&c.params_json).unwrap_or_default();
    let num = |k: &str| params.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let policy = match serde_json::from_value::<Policy>(params["policy"].clone()) {
        Ok(Policy::Weighted { weights }) => pb::Policy { kind: "weighted".into(), weights: weights.to_vec() },
        _ => pb::Policy { kind: "any_adverse".into(), weights: vec![] },
    };
    pb::Cohort {
        cohort_id: c.id.to_string(),
        school_term: Some(school_term_to_pb(c.school_term.urn, c.school_term.term)),
        state: match c.state.as_str() {
            "proposed" => pb::CohortState::Proposed,
            "in_review" => pb::CohortState::InReview,
            "finalised" => pb::CohortState::Finalised,
            _ => pb::CohortState::Unspecified,
        } as i32,
        model_id: c.model_id.clone(),
        capacity: num("capacity") as u32,
        policy: Some(policy),
        seed: num("seed"),
        min_year: num("min_year") as u32,
        max_year: num("max_year") as u32,
        members: c
            .members
            .iter()
            .map(|m| pb::CohortMember {
                upn: m.upn.clone(),
                proposed: m.proposed,
                rank: m.rank.unwrap_or(0),
                risk: serde_json::from_str::<PupilRisk>(&m.shown_json).ok().map(|r| risk_to_pb(&r)),
                decision: match m.decision.as_deref() {
                    Some("confirm") => pb::DecisionKind::Confirm,
                    Some("remove") => pb::DecisionKind::Remove,
                    Some("add") => pb::DecisionKind::Add,
                    _ => pb::DecisionKind::Unspecified,
                } as i32,
                reason_code: m.reason_code.clone().unwrap_or_default(),
                note: m.note.clone().unwrap_or_default(),
            })
            .collect(),
        eligible: num("eligible") as u32,
        excluded_statutory: num("excluded_statutory") as u32,
        excluded_in_programme: num("excluded_in_programme") as u32,
        excluded_year_group: num("excluded_year_group") as u32,
        programme_ends: c.programme_end.map(|t| school_term_to_pb(c.school_term.urn, t)),
    }
}

#[tonic::async_trait]
impl CohortService for CohortApi {
    async fn propose_cohort(&self, request: Request<pb::ProposeCohortRequest>) -> Result<Response<pb::Cohort>, Status> {
        let who = principal(&request)?;
        let pb::ProposeCohortRequest { school_term, capacity, min_year, max_year, policy, seed, force, request_id: _ } =
            request.into_inner();
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
            .propose_cohort(&who, ProposeInput { school_term: SchoolTerm { urn, term }, params, force })
            .await?;
        Ok(Response::new(cohort_to_pb(&c)))
    }

    async fn get_cohort(&self, request: Request<pb::GetCohortRequest>) -> Result<Response<pb::Cohort>, Status> {
        let who = principal(&request)?;
        let pb::GetCohortRequest { school_term } = request.into_inner();
        let (urn, term) = term_from_pb(school_term.as_ref())?;
        Ok(Response::new(cohort_to_pb(&self.app.get_cohort(&who, SchoolTerm { urn, term }).await?)))
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
            _ => return Err(Status::invalid_argument("decision must be CONFIRM, REMOVE or ADD")),
        };
        crate::domain::Upn::parse(&upn).map_err(|e| Status::invalid_argument(format!("upn is not valid: {e}")))?;
        check_note("note", &note)?;
        check_token_or_empty("reason_code", &reason_code)?;
        let input =
            DecisionInput { cohort_id: id(&cohort_id)?, upn, kind, reason_code, note, request_id: rid(request_id)? };
        Ok(Response::new(cohort_to_pb(&self.app.decide(&who, input).await?)))
    }

    async fn undo_decision(&self, request: Request<pb::UndoDecisionRequest>) -> Result<Response<pb::Cohort>, Status> {
        let who = principal(&request)?;
        let pb::UndoDecisionRequest { cohort_id, upn, request_id } = request.into_inner();
        crate::domain::Upn::parse(&upn).map_err(|e| Status::invalid_argument(format!("upn is not valid: {e}")))?;
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
