//! RiskService: stateless scoring for other systems; stored scores for people.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{risk_to_pb, term_from_pb};
use super::feed::page_size;
use super::pb::{self, risk_service_server::RiskService};
use super::principal;
use crate::app::{App, AppError, AppResult, ToScore};
use crate::domain::{Outcome, PupilTerm, SchoolTerm};
use crate::ingest::{RowValidator, Violation};
use crate::scoring::Band;

pub struct RiskApi {
    app: Arc<App>,
}

impl RiskApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

type Bad = Vec<crate::app::FieldError>;

fn validate(record: &pb::PupilRecord, field: &str, bad: &mut Bad) -> Option<PupilTerm> {
    let owned = super::convert::record_cells(record);
    let cells: crate::ingest::Cells = std::array::from_fn(|i| owned[i].trim_matches(' '));
    let mut findings = crate::ingest::Findings::default();
    let row = RowValidator::default().validate(0, &cells, &mut findings);
    for Violation { column, code, message, .. } in findings.errors {
        bad.push(crate::app::FieldError::new(format!("{field}.{column}"), code.to_ascii_uppercase(), message));
    }
    row
}

/// Checks every pupil of a ScoreRecords request; CPU work, run off the async threads.
fn check_pupils(pupils: Vec<pb::PupilToScore>) -> AppResult<Vec<ToScore>> {
    let mut bad = Bad::new();
    let mut input = Vec::with_capacity(pupils.len());
    for (i, p) in pupils.iter().enumerate() {
        let pb::PupilToScore { school_term, record, prior_terms } = p;
        let st = match term_from_pb(school_term.as_ref()) {
            Ok((urn, term)) => Some(SchoolTerm { urn, term }),
            Err(s) => {
                bad.push(crate::app::FieldError::new(format!("pupils[{i}].school_term"), "INVALID_VALUE", s.message()));
                None
            }
        };
        let row = match record {
            Some(r) => validate(r, &format!("pupils[{i}].record"), &mut bad),
            None => {
                bad.push(crate::app::FieldError::new(format!("pupils[{i}].record"), "REQUIRED", "record is required"));
                None
            }
        };
        let mut prior = Vec::new();
        for (j, pt) in prior_terms.iter().enumerate() {
            let field = format!("pupils[{i}].prior_terms[{j}]");
            let pst = term_from_pb(pt.school_term.as_ref())
                .map_err(|s| {
                    bad.push(crate::app::FieldError::new(format!("{field}.school_term"), "INVALID_VALUE", s.message()))
                })
                .ok();
            let prow = pt.record.as_ref().and_then(|r| validate(r, &format!("{field}.record"), &mut bad));
            if let (Some((urn, term)), Some(r)) = (pst, prow) {
                if row.as_ref().is_some_and(|now| now.upn != r.upn) {
                    bad.push(crate::app::FieldError::new(
                        format!("{field}.record.upn"),
                        "INCONSISTENT",
                        "prior terms must be the same pupil",
                    ));
                }
                prior.push((SchoolTerm { urn, term }, r));
            }
        }
        if let (Some(st), Some(row)) = (st, row) {
            input.push((st, row, prior));
        }
    }
    if !bad.is_empty() {
        return Err(AppError::BadFields {
            message: format!("{} invalid field(s); nothing was scored", bad.len()),
            fields: bad,
        });
    }
    Ok(input)
}

pub(crate) fn band_from_pb(b: i32) -> Option<Band> {
    match pb::Band::try_from(b) {
        Ok(pb::Band::Low) => Some(Band::Low),
        Ok(pb::Band::Medium) => Some(Band::Medium),
        Ok(pb::Band::High) => Some(Band::High),
        _ => None,
    }
}

pub(crate) fn outcome_from_pb(o: i32) -> Option<Outcome> {
    match pb::Outcome::try_from(o) {
        Ok(pb::Outcome::PersistentAbsence) => Some(Outcome::PersistentAbsence),
        Ok(pb::Outcome::Suspension) => Some(Outcome::Suspension),
        Ok(pb::Outcome::MhReferral) => Some(Outcome::MhReferral),
        _ => None,
    }
}

#[tonic::async_trait]
impl RiskService for RiskApi {
    async fn score_records(
        &self,
        request: Request<pb::ScoreRecordsRequest>,
    ) -> Result<Response<pb::ScoreRecordsResponse>, Status> {
        let who = principal(&request)?;
        // The codec has already refused more than MAX_SCORE_PUPILS before decoding.
        let pb::ScoreRecordsRequest { pupils } = request.into_inner();
        let (model_id, risks) = self.app.score_stateless(&who, move || check_pupils(pupils)).await?;
        Ok(Response::new(pb::ScoreRecordsResponse { model_id, risks: risks.iter().map(risk_to_pb).collect() }))
    }

    async fn get_pupil_risk(
        &self,
        request: Request<pb::GetPupilRiskRequest>,
    ) -> Result<Response<pb::GetPupilRiskResponse>, Status> {
        let who = principal(&request)?;
        let pb::GetPupilRiskRequest { upn } = request.into_inner();
        crate::domain::Upn::parse(&upn).map_err(|e| Status::invalid_argument(format!("upn is not valid: {e}")))?;
        let history = self.app.pupil_risk(&who, upn).await?;
        Ok(Response::new(pb::GetPupilRiskResponse { history: history.iter().map(risk_to_pb).collect() }))
    }

    async fn list_school_risks(
        &self,
        request: Request<pb::ListSchoolRisksRequest>,
    ) -> Result<Response<pb::ListSchoolRisksResponse>, Status> {
        let who = principal(&request)?;
        let pb::ListSchoolRisksRequest { school_term, band, outcome, page_size: size, page_token } =
            request.into_inner();
        let (urn, term) = term_from_pb(school_term.as_ref())?;
        let offset: usize = if page_token.is_empty() {
            0
        } else {
            page_token.parse().map_err(|_| Status::invalid_argument("page_token is not valid"))?
        };
        let (model_id, risks) =
            self.app.school_risks(&who, SchoolTerm { urn, term }, band_from_pb(band), outcome_from_pb(outcome)).await?;
        let limit = page_size(size);
        let end = offset.saturating_add(limit).min(risks.len());
        let next_page_token = if end < risks.len() { end.to_string() } else { String::new() };
        let page = risks.get(offset..end).unwrap_or_default();
        Ok(Response::new(pb::ListSchoolRisksResponse {
            model_id,
            risks: page.iter().map(risk_to_pb).collect(),
            next_page_token,
        }))
    }
}
