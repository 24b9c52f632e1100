//! RiskService: stateless scoring for other systems; stored scores for people.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{full_view, risk_view_to_pb, term_at, term_from_pb};
use super::paging::{Query, STANDARD, page_of};
use super::pb::{self, risk_service_server::RiskService};
use super::principal;
use super::status::bad_field;
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

/// The invalid fields of a request: the first [`MAX_LISTED_FIELDS`] kept, all counted (a
/// request of 50,000 empty records would otherwise hold hundreds of thousands of them).
#[derive(Default)]
struct Bad {
    list: Vec<crate::app::FieldError>,
    total: usize,
}

const MAX_LISTED_FIELDS: usize = 1_000;

impl Bad {
    fn new() -> Self {
        Self::default()
    }
    fn push(&mut self, e: crate::app::FieldError) {
        self.total += 1;
        if self.list.len() < MAX_LISTED_FIELDS {
            self.list.push(e);
        }
    }
    fn is_empty(&self) -> bool {
        self.total == 0
    }
    fn into_error(self) -> AppError {
        AppError::BadFields {
            message: format!("{} invalid field(s); nothing was scored", self.total),
            fields: self.list,
        }
    }
}

/// Validates one pupil's cells exactly as a feed row is validated; `None` (no record sent) is
/// a REQUIRED error at `field`.
fn validate_cells(
    owned: Option<&[String; crate::ingest::COLUMN_COUNT]>,
    field: &str,
    bad: &mut Bad,
) -> Option<PupilTerm> {
    let Some(owned) = owned else {
        bad.push(crate::app::FieldError::new(field, "REQUIRED", "record is required"));
        return None;
    };
    let cells: crate::ingest::Cells = std::array::from_fn(|i| owned[i].trim_matches(' '));
    let mut findings = crate::ingest::Findings::default();
    let row = RowValidator::default().validate(0, &cells, &mut findings);
    for Violation { column, code, message, .. } in findings.errors {
        bad.push(crate::app::FieldError::new(format!("{field}.{column}"), code.to_ascii_uppercase(), message));
    }
    row
}

/// One pupil to score as cells: ScoreRecords' records, or the OIP's tensors. `None` cells:
/// no record was sent.
pub(crate) struct CellPupil {
    pub school_term: Option<pb::SchoolTerm>,
    pub cells: Option<[String; crate::ingest::COLUMN_COUNT]>,
    pub prior: Vec<(Option<pb::SchoolTerm>, Option<[String; crate::ingest::COLUMN_COUNT]>)>,
    /// Where each prior term came from (its slot in the request), for error paths.
    pub prior_slots: Vec<usize>,
}

/// Checks pupils given as cells; field paths are those of ScoreRecords
/// (`pupils[i].record.column`, `pupils[i].prior_terms[j].school_term`).
pub(crate) fn check_cell_pupils(pupils: Vec<CellPupil>) -> AppResult<Vec<ToScore>> {
    let mut bad = Bad::new();
    let mut input = Vec::with_capacity(pupils.len());
    for (i, p) in pupils.iter().enumerate() {
        let st = term_at(&format!("pupils[{i}].school_term"), p.school_term.as_ref())
            .map(|(urn, term)| SchoolTerm { urn, term })
            .map_err(|s| bad.push(field_error(&s)))
            .ok();
        let row = validate_cells(p.cells.as_ref(), &format!("pupils[{i}].record"), &mut bad);
        let mut prior = Vec::new();
        for (j, (pst, cells)) in p.prior.iter().enumerate() {
            let field = format!("pupils[{i}].prior_terms[{}]", p.prior_slots.get(j).copied().unwrap_or(j));
            let pst =
                term_at(&format!("{field}.school_term"), pst.as_ref()).map_err(|s| bad.push(field_error(&s))).ok();
            let prow = validate_cells(cells.as_ref(), &format!("{field}.record"), &mut bad);
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
        return Err(bad.into_error());
    }
    Ok(input)
}

/// The one field violation of a `bad_field` status, as a FieldError.
fn field_error(s: &Status) -> crate::app::FieldError {
    use tonic_types::StatusExt;
    match s.get_details_bad_request().and_then(|b| b.field_violations.into_iter().next()) {
        Some(v) => crate::app::FieldError::new(v.field, v.reason, v.description),
        None => crate::app::FieldError::new("", "INVALID_VALUE", s.message()),
    }
}

/// Checks ScoreRecords' pupils: the same checks as every other path, through cells.
pub(crate) fn check_pupils(pupils: Vec<pb::PupilToScore>) -> AppResult<Vec<ToScore>> {
    if pupils.is_empty() {
        return Err(AppError::bad_field("pupils", "REQUIRED", "send at least one pupil"));
    }
    let cells = |r: &Option<pb::PupilRecord>| r.as_ref().map(super::convert::record_cells);
    let as_cells = pupils
        .iter()
        .map(|p| CellPupil {
            school_term: p.school_term.clone(),
            cells: cells(&p.record),
            prior: p.prior_terms.iter().map(|pt| (pt.school_term.clone(), cells(&pt.record))).collect(),
            prior_slots: (0..p.prior_terms.len()).collect(),
        })
        .collect();
    check_cell_pupils(as_cells)
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
        let pb::ScoreRecordsRequest { pupils, view } = request.into_inner();
        let full = full_view(view);
        let (model_id, risks) = self.app.score_stateless(&who, move || check_pupils(pupils)).await?;
        let risks = risks.iter().map(|r| risk_view_to_pb(r, full)).collect();
        Ok(Response::new(pb::ScoreRecordsResponse { model_id, risks }))
    }

    async fn get_pupil_risk(
        &self,
        request: Request<pb::GetPupilRiskRequest>,
    ) -> Result<Response<pb::GetPupilRiskResponse>, Status> {
        let who = principal(&request)?;
        let pb::GetPupilRiskRequest { upn, view } = request.into_inner();
        crate::domain::Upn::parse(&upn)
            .map_err(|e| bad_field("upn", "INVALID_VALUE", format!("upn is not valid: {e}")))?;
        let history = self.app.pupil_risk(&who, upn).await?;
        let full = full_view(view);
        Ok(Response::new(pb::GetPupilRiskResponse {
            history: history.iter().map(|r| risk_view_to_pb(r, full)).collect(),
        }))
    }

    async fn list_school_risks(
        &self,
        request: Request<pb::ListSchoolRisksRequest>,
    ) -> Result<Response<pb::ListSchoolRisksResponse>, Status> {
        let who = principal(&request)?;
        let pb::ListSchoolRisksRequest { school_term, band, outcome, page_size: size, page_token, view } =
            request.into_inner();
        let (urn, term) = term_from_pb(school_term.as_ref())?;
        let limit = STANDARD.of(size)?;
        let band_f = match band {
            0 => None,
            b => Some(band_from_pb(b).ok_or_else(|| bad_field("band", "INVALID_VALUE", "band is not a Band"))?),
        };
        let outcome_f = match outcome {
            0 => None,
            o => Some(
                outcome_from_pb(o).ok_or_else(|| bad_field("outcome", "INVALID_VALUE", "outcome is not an Outcome"))?,
            ),
        };
        let (model_id, risks) = self.app.school_risks(&who, SchoolTerm { urn, term }, band_f, outcome_f).await?;
        // Bound to the model too: after an activation the order changes, and an old token
        // would mix two models' pages.
        let q = Query::new("ListSchoolRisks", who.key_id, &(urn, term, band, outcome, &model_id));
        let full = full_view(view);
        let total_size = risks.len() as u32;
        // A page is up to 500 children's scores to convert (and a whole school's to free):
        // CPU work, so on the blocking pool, on every core, rather than on a runtime worker.
        let span = tracing::Span::current();
        let (risks, next_page_token) = tokio::task::spawn_blocking(move || {
            span.in_scope(|| {
                let (page, next) = page_of(&risks, &q, &page_token, limit)?;
                Ok::<_, Status>((crate::par::map(page, |r| risk_view_to_pb(r, full)), next))
            })
        })
        .await
        .map_err(|_| Status::internal("converting the scores failed"))??;
        Ok(Response::new(pb::ListSchoolRisksResponse { model_id, risks, next_page_token, total_size }))
    }
}
