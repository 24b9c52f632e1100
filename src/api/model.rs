//! ModelService: analysts train, evaluate, list, read and activate models.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::limits::{MAX_MODEL_ID, check_note, check_token};
use super::paging::{FULL_VIEW, Query, STANDARD};
use super::pb::{self, model_service_server::ModelService, train_model_progress::Event};
use super::principal;
use crate::app::App;
use crate::model::TrainParams;
use crate::model::evaluate::{MethodMetrics, OutcomeEvaluation};
use crate::storage::ModelRecord;

pub struct ModelApi {
    app: Arc<App>,
}

impl ModelApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

fn metrics_to_pb(m: &MethodMetrics) -> pb::MethodMetrics {
    pb::MethodMetrics {
        auc: m.auc,
        average_precision: m.average_precision,
        brier: m.brier,
        ece: m.ece,
        precision_at_capacity: m.precision_at_capacity,
        recall_at_capacity: m.recall_at_capacity,
    }
}

fn term_pb(t: crate::domain::Term) -> pb::SchoolTerm {
    pb::SchoolTerm {
        school_urn: String::new(),
        academic_year: t.academic_year(),
        term: super::convert::term_name_to_pb(t.name()) as i32,
    }
}

fn live_to_pb(r: &crate::model::live::LivePerformance) -> pb::LivePerformance {
    use crate::model::live::{CohortFates, Fate, Metrics, OutcomeFigures};
    let m = |m: &Metrics| pb::LiveMetrics { auc: m.auc, precision_at_capacity: m.precision_at_capacity };
    let outcome = |o: &OutcomeFigures| pb::LiveOutcome {
        outcome: super::convert::outcome_to_pb(o.outcome) as i32,
        children: o.children as u64,
        positives: o.positives as u64,
        model: Some(m(&o.model)),
        last_term_status: Some(m(&o.last_term_status)),
        dfe_absence_rule: Some(m(&o.dfe_absence_rule)),
        mean_predicted: o.mean_predicted,
        observed_rate: o.observed_rate,
        ece: o.ece,
    };
    let fate = |f: &Fate| pb::Fate {
        children: f.children as u64,
        followed: f.followed as u64,
        with_adverse_outcome: f.with_adverse_outcome as u64,
    };
    let fates = |c: &CohortFates| pb::CohortFates {
        confirmed: Some(fate(&c.confirmed)),
        removed: Some(fate(&c.removed)),
        added: Some(fate(&c.added)),
    };
    pb::LivePerformance {
        model_id: r.model_id.clone(),
        capacity: r.capacity as u32,
        terms: r
            .terms
            .iter()
            .map(|t| pb::LiveTerm {
                term: Some(term_pb(t.term)),
                outcomes: t.outcomes.iter().map(outcome).collect(),
                schools: t
                    .schools
                    .iter()
                    .map(|s| pb::LiveSchool {
                        school_urn: s.urn.to_string(),
                        outcomes: s.outcomes.iter().map(outcome).collect(),
                        cohort: s.cohort.as_ref().map(fates),
                    })
                    .collect(),
                cohort: t.cohort.as_ref().map(fates),
                within_training: t.within_training,
            })
            .collect(),
        warnings: r.warnings.clone(),
    }
}

fn interval((low, high): (f64, f64)) -> pb::Interval {
    pb::Interval { low, high }
}

pub(crate) fn evaluation_to_pb(e: &OutcomeEvaluation, full: bool) -> pb::OutcomeEvaluation {
    pb::OutcomeEvaluation {
        outcome: super::convert::outcome_to_pb(e.outcome) as i32,
        test_term: Some(term_pb(e.test_term)),
        test_examples: e.test_examples as u64,
        positives: e.positives as u64,
        capacity: e.capacity as u64,
        model: Some(metrics_to_pb(&e.model)),
        last_term_status: Some(metrics_to_pb(&e.last_term_status)),
        dfe_absence_rule: Some(metrics_to_pb(&e.dfe_absence_rule)),
        beats_baselines: e.beats_baselines,
        reliability: if full {
            e.reliability
                .iter()
                .map(|b| pb::ReliabilityBin {
                    lower: b.lower,
                    upper: b.upper,
                    count: b.count as u64,
                    mean_predicted: b.mean_predicted,
                    observed_rate: b.observed_rate,
                })
                .collect()
        } else {
            vec![]
        },
        fairness: if full {
            e.fairness
                .groups
                .iter()
                .map(|g| pb::GroupRates {
                    dimension: g.dimension.clone(),
                    group: g.group.clone(),
                    count: g.count as u64,
                    selection_rate: g.selection_rate,
                    false_negative_rate: g.false_negative_rate,
                    false_positive_rate: g.false_positive_rate,
                    precision: g.precision,
                    selection_ratio: g.selection_ratio,
                    fnr_ratio: g.fnr_ratio,
                    fpr_ratio: g.fpr_ratio,
                    precision_ratio: g.precision_ratio,
                    small: g.small,
                    flagged: g.flagged,
                    selected: g.selected as u64,
                    positives: g.positives as u64,
                    selection_ratio_ci: g.selection_ratio_ci.map(interval),
                    fnr_ratio_ci: g.fnr_ratio_ci.map(interval),
                    fpr_ratio_ci: g.fpr_ratio_ci.map(interval),
                    precision_ratio_ci: g.precision_ratio_ci.map(interval),
                })
                .collect()
        } else {
            vec![]
        },
        fairness_flags: if full { e.fairness.flags.clone() } else { vec![] },
    }
}

/// A model in the BASIC (`full` false) or FULL view.
pub(crate) fn model_to_pb(r: &ModelRecord, full: bool) -> pb::Model {
    let artifact = r.artifact.as_ref().ok();
    pb::Model {
        model_id: r.model_id.clone(),
        active: r.active,
        create_time: Some(super::convert::timestamp(r.created_at)),
        beats_baselines: artifact.is_some_and(|a| a.beats_baselines()),
        training: artifact.map(|a| {
            let t = &a.training;
            pb::TrainingInfo {
                data_fingerprint: t.data_fingerprint.clone(),
                examples: t.examples as u64,
                first_term: Some(term_pb(t.first_term)),
                test_term: Some(term_pb(t.test_term)),
                seed: t.seed,
                alpha: t.alpha,
                capacity: t.capacity as u64,
                data_description: t.data_description.clone(),
                feature_spec_version: a.feature_spec_version.clone(),
            }
        }),
        evaluations: artifact
            .map(|a| a.outcomes.iter().map(|o| evaluation_to_pb(&o.evaluation, full)).collect())
            .unwrap_or_default(),
        card: if full { artifact.map(|a| a.model_card()).unwrap_or_default() } else { String::new() },
        artifact: if full { r.artifact_json.as_bytes().to_vec() } else { vec![] },
        artifact_sha256: r.artifact_sha256.clone(),
        problem: r.artifact.as_ref().err().cloned().unwrap_or_default(),
    }
}

fn full_model_view(view: i32, default_full: bool) -> bool {
    match pb::ModelView::try_from(view) {
        Ok(pb::ModelView::Full) => true,
        Ok(pb::ModelView::Basic) => false,
        _ => default_full,
    }
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<pb::TrainModelProgress, Status>> + Send>>;

#[tonic::async_trait]
impl ModelService for ModelApi {
    type TrainModelStream = ProgressStream;

    async fn train_model(
        &self,
        request: Request<pb::TrainModelRequest>,
    ) -> Result<Response<Self::TrainModelStream>, Status> {
        let who = principal(&request)?;
        who.may_manage_models().map_err(crate::app::AppError::from)?;
        let pb::TrainModelRequest { capacity, seed, alpha, model_id, request_id } = request.into_inner();
        let request_id = super::limits::request_id(request_id)?;
        let defaults = TrainParams::default();
        let params = TrainParams {
            capacity: if capacity == 0 { defaults.capacity } else { capacity as usize },
            seed,
            alpha: if alpha == 0.0 { defaults.alpha } else { alpha },
            ..defaults
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(16);
        let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Result<pb::TrainModelProgress, Status>>(64);
        let app = self.app.clone();
        if !model_id.is_empty() {
            check_token("model_id", &model_id, MAX_MODEL_ID)?;
            // Refused before the stream starts; the job checks again when it saves.
            if self.app.get_model(&who, model_id.clone()).await.is_ok() {
                return Err(crate::app::AppError::conflict(
                    "MODEL_ID_TAKEN",
                    format!("a model with id {model_id} already exists; choose another id"),
                )
                .into());
            }
        }
        let model_id = (!model_id.is_empty()).then_some(model_id);
        // The job runs to completion even if the caller goes away; progress is best effort.
        let job = tokio::spawn(async move { app.train(&who, params, model_id, request_id, tx).await });
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                let _ = out_tx.send(Ok(pb::TrainModelProgress { event: Some(Event::Message(m)) })).await;
            }
            let last = match job.await {
                Ok(Ok(rec)) => Ok(pb::TrainModelProgress { event: Some(Event::Model(model_to_pb(&rec, true))) }),
                Ok(Err(e)) => Err(Status::from(e)),
                Err(e) => {
                    Err(super::status::to_status(crate::app::AppError::Internal(format!("training stopped: {e}"))))
                }
            };
            let _ = out_tx.send(last).await;
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(out_rx))))
    }

    async fn evaluate_model(
        &self,
        request: Request<pb::EvaluateModelRequest>,
    ) -> Result<Response<pb::EvaluateModelResponse>, Status> {
        let who = principal(&request)?;
        let pb::EvaluateModelRequest { model_id, capacity, reproduce } = request.into_inner();
        check_token("model_id", &model_id, MAX_MODEL_ID)?;
        if reproduce {
            if capacity != 0 {
                return Err(super::status::bad_field(
                    "capacity",
                    "NOT_WITH_REPRODUCE",
                    "reproduce uses the model's own capacity: leave capacity unset",
                ));
            }
            let r = self.app.reproduce(&who, model_id.clone()).await?;
            let evaluations = r.evaluations.iter().map(|e| evaluation_to_pb(e, true)).collect();
            return Ok(Response::new(pb::EvaluateModelResponse {
                model_id,
                evaluations,
                same_data: r.same_data,
                differences: r.differences,
            }));
        }
        let evaluations = self.app.evaluate(&who, model_id.clone(), capacity as usize).await?;
        let evaluations = evaluations.iter().map(|e| evaluation_to_pb(e, true)).collect();
        Ok(Response::new(pb::EvaluateModelResponse { model_id, evaluations, ..Default::default() }))
    }

    async fn get_live_performance(
        &self,
        request: Request<pb::GetLivePerformanceRequest>,
    ) -> Result<Response<pb::LivePerformance>, Status> {
        let who = principal(&request)?;
        let pb::GetLivePerformanceRequest { model_id } = request.into_inner();
        check_token("model_id", &model_id, MAX_MODEL_ID)?;
        let r = self.app.live_performance(&who, model_id).await?;
        Ok(Response::new(live_to_pb(&r)))
    }

    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let who = principal(&request)?;
        let pb::ListModelsRequest { page_size: size, page_token, view } = request.into_inner();
        let full = full_model_view(view, false);
        let limit = if full { FULL_VIEW } else { STANDARD }.of(size)?;
        let q = Query::new("ListModels", who.key_id, &());
        // Newest first, and new models arrive at the front: the token counts the models still
        // to come (older ones), so a model trained between pages shifts nothing.
        let remaining = q.position(&page_token)?;
        let all = self.app.list_models(&who).await?;
        let start = remaining.map_or(0, |r| all.len().saturating_sub(usize::try_from(r).unwrap_or(usize::MAX)));
        let end = start.saturating_add(limit).min(all.len());
        let page = &all[start..end];
        let next_page_token = if end < all.len() { q.token((all.len() - end) as u64) } else { String::new() };
        let models = page.iter().map(|m| model_to_pb(m, full)).collect();
        Ok(Response::new(pb::ListModelsResponse { models, next_page_token }))
    }

    async fn get_model(&self, request: Request<pb::GetModelRequest>) -> Result<Response<pb::Model>, Status> {
        let who = principal(&request)?;
        let pb::GetModelRequest { model_id, view } = request.into_inner();
        check_token("model_id", &model_id, MAX_MODEL_ID)?;
        Ok(Response::new(model_to_pb(&self.app.get_model(&who, model_id).await?, full_model_view(view, true))))
    }

    async fn activate_model(
        &self,
        request: Request<pb::ActivateModelRequest>,
    ) -> Result<Response<pb::ActivateModelResponse>, Status> {
        let who = principal(&request)?;
        let pb::ActivateModelRequest { model_id, force, reason, request_id } = request.into_inner();
        check_token("model_id", &model_id, MAX_MODEL_ID)?;
        check_note("reason", &reason)?;
        let request_id = super::limits::request_id(request_id)?;
        let (schools, pupils) = self.app.activate(&who, model_id.clone(), force, reason, request_id).await?;
        let rec = self.app.get_model(&who, model_id).await?;
        Ok(Response::new(pb::ActivateModelResponse {
            model: Some(model_to_pb(&rec, false)),
            schools_rescored: schools as u32,
            pupils_rescored: pupils as u32,
        }))
    }

    async fn rescore_school_term(
        &self,
        request: Request<pb::RescoreSchoolTermRequest>,
    ) -> Result<Response<pb::RescoreSchoolTermResponse>, Status> {
        let who = principal(&request)?;
        let pb::RescoreSchoolTermRequest { school_term, model_id, request_id } = request.into_inner();
        let (urn, term) = super::convert::term_from_pb(school_term.as_ref())?;
        check_token("model_id", &model_id, MAX_MODEL_ID)?;
        let request_id = super::limits::request_id(request_id)?;
        let st = crate::domain::SchoolTerm { urn, term };
        let pupils = self.app.rescore_school_term(&who, st, model_id.clone(), request_id).await?;
        Ok(Response::new(pb::RescoreSchoolTermResponse { model_id, pupils_rescored: pupils as u32 }))
    }
}
