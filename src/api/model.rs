//! ModelService: analysts train, evaluate, list, read and activate models.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::feed::page_size;
use super::limits::{MAX_MODEL_ID, check_note, check_token};
use super::pb::{self, model_service_server::ModelService, train_model_progress::Event};
use super::principal;
use crate::app::App;
use crate::model::TrainParams;
use crate::storage::ModelRecord;

pub struct ModelApi {
    app: Arc<App>,
}

impl ModelApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

pub(crate) fn model_to_pb(r: &ModelRecord) -> pb::Model {
    let artifact = r.artifact.as_ref().ok();
    pb::Model {
        model_id: r.model_id.clone(),
        active: r.active,
        created_at: crate::app::rfc3339(r.created_at),
        card: artifact.map(|a| a.model_card()).unwrap_or_default(),
        // Re-rendered from the parsed artifact: byte-identical to the stored one (float_roundtrip).
        artifact_json: artifact.map(|a| a.to_json()).unwrap_or_default(),
        beats_baselines: artifact.is_some_and(|a| a.beats_baselines()),
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
                return Err(crate::app::AppError::Conflict(format!(
                    "a model with id {model_id} already exists; choose another id"
                ))
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
                Ok(Ok(rec)) => Ok(pb::TrainModelProgress { event: Some(Event::Model(model_to_pb(&rec))) }),
                Ok(Err(e)) => Err(Status::from(e)),
                Err(e) => Err(Status::internal(format!("training stopped: {e}"))),
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
        let pb::EvaluateModelRequest { model_id, capacity } = request.into_inner();
        check_token("model_id", &model_id, MAX_MODEL_ID)?;
        let evaluations = self.app.evaluate(&who, model_id, capacity as usize).await?;
        let report_json = serde_json::to_string_pretty(&evaluations).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::EvaluateModelResponse { report_json }))
    }

    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let who = principal(&request)?;
        let pb::ListModelsRequest { page_size: size, page_token } = request.into_inner();
        let all = self.app.list_models(&who).await?;
        let offset: usize = if page_token.is_empty() {
            0
        } else {
            page_token.parse().map_err(|_| Status::invalid_argument("bad page_token"))?
        };
        let end = offset.saturating_add(page_size(size)).min(all.len());
        let models = all.get(offset..end).unwrap_or_default().iter().map(model_to_pb).collect();
        let next_page_token = if end < all.len() { end.to_string() } else { String::new() };
        Ok(Response::new(pb::ListModelsResponse { models, next_page_token }))
    }

    async fn get_model(&self, request: Request<pb::GetModelRequest>) -> Result<Response<pb::Model>, Status> {
        let who = principal(&request)?;
        let pb::GetModelRequest { model_id } = request.into_inner();
        check_token("model_id", &model_id, MAX_MODEL_ID)?;
        Ok(Response::new(model_to_pb(&self.app.get_model(&who, model_id).await?)))
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
            model: Some(model_to_pb(&rec)),
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
