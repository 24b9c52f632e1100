//! Model use cases: train (a long job), evaluate, list, activate; scoring at ingest and on
//! activation; stateless scoring for other systems.

use std::sync::Arc;

use super::{App, AppError, AppResult};
use crate::audit::NewEvent;
use crate::auth::Principal;
use crate::domain::{PupilTerm, SchoolTerm};
use crate::model::features::History;
use crate::model::{ModelArtifact, TrainParams, TrainRequest, train_and_evaluate};
use crate::scoring::{PupilRisk, score_pupil};
use crate::storage::{ModelRecord, ScoreRecord, Store, now_unix};

/// The model shipped in the binary: trained on synthetic data by `riskid model build-default`.
pub const BUNDLED_MODEL: &str = include_str!("../../models/default.json");

pub fn rfc3339(unix: i64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64))
        .to_string()
}

/// Scores every pupil of one stored submission with `model`, from their history. `rows` are
/// the submission's rows when the caller already holds them (at ingest), saving a re-read.
pub(crate) fn score_submission(
    store: &Store,
    model: &ModelArtifact,
    submission_id: i64,
    st: SchoolTerm,
    rows: Option<&[PupilTerm]>,
) -> AppResult<Vec<PupilRisk>> {
    let history = History::from_rows(store.history_of_submission(submission_id)?);
    let read;
    let rows = match rows {
        Some(r) => r,
        None => {
            read = store.current_rows(st)?;
            &read
        }
    };
    let risks: Vec<PupilRisk> = rows
        .iter()
        .map(|row| match history.pupils.get(&row.upn) {
            Some(h) => score_pupil(model, h, row, st),
            // Only reachable if the row was superseded meanwhile: score it on its own.
            None => score_pupil(model, &vec![(st, row.clone())], row, st),
        })
        .collect();
    let records: Vec<ScoreRecord> = risks
        .iter()
        .map(|r| ScoreRecord {
            school_term: st,
            upn: r.upn.clone(),
            model_id: model.model_id.clone(),
            submission_id,
            priority: r.any_adverse,
            explanation_json: serde_json::to_string(r).expect("risk serialises"),
        })
        .collect();
    store.save_scores(&records)?;
    Ok(risks)
}

/// A pupil to score statelessly: the term's row and any earlier rows.
pub type ToScore = (SchoolTerm, PupilTerm, Vec<(SchoolTerm, PupilTerm)>);

/// Progress of a training job, for the caller to show. Bounded: a job whose messages are
/// not being read waits (holding the training slot) rather than buffering without limit.
pub type Progress = tokio::sync::mpsc::Sender<String>;

impl App {
    /// The active model, loading it from the store (or the bundled one on first start).
    pub(crate) fn load_active_model(store: &Store) -> AppResult<Arc<ModelArtifact>> {
        if let Some(rec) = store.active_model()? {
            return Ok(Arc::new(ModelArtifact::from_json(&rec.artifact_json).map_err(AppError::Internal)?));
        }
        let model = ModelArtifact::from_json(BUNDLED_MODEL).map_err(AppError::Internal)?;
        store.save_model(&model.model_id, BUNDLED_MODEL, now_unix())?;
        let event = NewEvent {
            at: now_unix(),
            actor_key_id: 0,
            actor_role: "system".into(),
            action: "model.activate".into(),
            school_urn: None,
            subject: format!("model {}", model.model_id),
            details: serde_json::json!({ "model_id": model.model_id, "reason": "no active model: the bundled model (synthetic data)" }),
        };
        store.in_transaction(|tx| super::audit::append(tx, event))?;
        store.activate_model(&model.model_id, now_unix())?;
        tracing::info!(model = %model.model_id, "activated the bundled model (trained on synthetic data)");
        Ok(Arc::new(model))
    }

    pub fn active_model(&self) -> Arc<ModelArtifact> {
        self.active.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Trains from the store's history. Refuses a second concurrent training.
    pub async fn train(
        &self,
        who: &Principal,
        params: TrainParams,
        model_id: Option<String>,
        progress: Progress,
    ) -> AppResult<ModelRecord> {
        who.may_manage_models()?;
        let _job = self
            .training
            .clone()
            .try_lock_owned()
            .map_err(|_| AppError::Conflict("a training job is already running; wait for it to finish".into()))?;
        let params = params.check().map_err(|e| AppError::InvalidArgument(e.to_string()))?.get().clone();
        self.blocking(move |store| {
            let taken =
                |id: &str| AppError::Conflict(format!("a model with id {id} already exists; choose another id"));
            if let Some(id) = &model_id
                && store.get_model(id)?.is_some()
            {
                return Err(taken(id));
            }
            let _ = progress.blocking_send("loading history from the store".into());
            let rows = store.all_current_rows()?;
            let history = History::from_rows(rows);
            let now = now_unix();
            let mut report = |m: &str| {
                let _ = progress.blocking_send(m.to_string());
            };
            let artifact = train_and_evaluate(
                &history,
                params,
                TrainRequest {
                    model_id,
                    created_at: rfc3339(now),
                    data_description: "Trained on the feeds held by this riskid server.".into(),
                    progress: &mut report,
                },
            )
            .map_err(|e| AppError::InvalidArgument(e.to_string()))?;
            if !store.save_model(&artifact.model_id, &artifact.to_json(), now)? {
                return Err(taken(&artifact.model_id));
            }
            store.get_model(&artifact.model_id)?.ok_or_else(|| AppError::Internal("model vanished".into()))
        })
        .await
    }

    pub async fn get_model(&self, who: &Principal, model_id: String) -> AppResult<ModelRecord> {
        who.may_manage_models()?;
        let id = model_id.clone();
        self.blocking(move |s| Ok(s.get_model(&id)?))
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no model {model_id:?}")))
    }

    /// Re-evaluates a stored model, as it is (no refit), on the store's latest labelled term.
    pub async fn evaluate(
        &self,
        who: &Principal,
        model_id: String,
        capacity: usize,
    ) -> AppResult<Vec<crate::model::evaluate::OutcomeEvaluation>> {
        let rec = self.get_model(who, model_id).await?;
        let model = ModelArtifact::from_json(&rec.artifact_json).map_err(AppError::Conflict)?;
        let capacity = if capacity == 0 { model.training.capacity } else { capacity };
        self.blocking(move |store| {
            let history = History::from_rows(store.all_current_rows()?);
            let examples = crate::model::dataset::build(&history, model.training.seed);
            let term = crate::model::dataset::latest_labelled_term(&examples)
                .ok_or_else(|| AppError::Conflict("the store has no pupil with two consecutive terms yet".into()))?;
            let test: Vec<_> = examples.iter().filter(|e| e.term == term).collect();
            let probs: Vec<[f64; 3]> = test.iter().map(|e| model.probabilities(&e.features)).collect();
            Ok((0..3)
                .map(|k| {
                    let p: Vec<f64> = probs.iter().map(|p| p[k]).collect();
                    crate::model::evaluate::evaluate_outcome(k, &test, &p, capacity, term)
                })
                .collect())
        })
        .await
    }

    pub async fn list_models(&self, who: &Principal) -> AppResult<Vec<ModelRecord>> {
        who.may_manage_models()?;
        self.blocking(|s| Ok(s.list_models()?)).await
    }

    /// Activates a model and rescores each school's latest term with it.
    /// Returns (schools, pupils) rescored.
    pub async fn activate(
        &self,
        who: &Principal,
        model_id: String,
        force: bool,
        reason: String,
    ) -> AppResult<(usize, usize)> {
        who.may_manage_models()?;
        let rec = self.get_model(who, model_id.clone()).await?;
        let model = Arc::new(ModelArtifact::from_json(&rec.artifact_json).map_err(AppError::InvalidArgument)?);
        if !model.beats_baselines() && !force {
            return Err(AppError::Conflict(format!(
                "model {model_id} does not beat the baselines at capacity for every outcome; \
                 activate with force and a reason to override (this is audited)"
            )));
        }
        if force && reason.trim().is_empty() {
            return Err(AppError::InvalidArgument("a forced activation needs a reason".into()));
        }
        let event = NewEvent {
            at: now_unix(),
            actor_key_id: who.key_id,
            actor_role: who.role.to_string(),
            action: if force { "model.activate_forced" } else { "model.activate" }.into(),
            school_urn: None,
            subject: format!("model {model_id}"),
            details: serde_json::json!({ "model_id": model_id, "force": force, "reason": reason,
                                         "beats_baselines": model.beats_baselines() }),
        };
        let m = model.clone();
        let counts = self
            .blocking(move |store| {
                store.in_transaction(|tx| super::audit::append(tx, event))?;
                store.activate_model(&m.model_id, now_unix())?;
                let (mut schools, mut pupils) = (0, 0);
                let latest = store.latest_submissions()?;
                for (st, submission) in &latest {
                    pupils += score_submission(store, &m, *submission, *st, None)?.len();
                    schools += 1;
                    tracing::info!(school = %st.urn, term = %st.term, done = schools, of = latest.len(), "rescored");
                }
                Ok((schools, pupils))
            })
            .await?;
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = model;
        tracing::info!(model = %model_id, schools = counts.0, pupils = counts.1, "model activated; latest terms rescored");
        Ok(counts)
    }

    /// Scores pupils without storing anything. Each pupil is (school term, row, earlier rows).
    /// Scores pupils without storing anything. `prepare` (checking the request) runs on the
    /// blocking pool with the scoring itself, so no CPU work lands on the async threads.
    pub async fn score_stateless(
        &self,
        who: &Principal,
        prepare: impl FnOnce() -> AppResult<Vec<ToScore>> + Send + 'static,
    ) -> AppResult<(String, Vec<PupilRisk>)> {
        who.may_score_statelessly()?;
        let _permit = self.scoring_permit()?;
        let model = self.active_model();
        let model_id = model.model_id.clone();
        let risks = tokio::task::spawn_blocking(move || {
            let pupils = prepare()?;
            Ok::<_, AppError>(
                pupils
                    .into_iter()
                    .map(|(st, row, prior)| {
                        let mut h: Vec<(SchoolTerm, PupilTerm)> =
                            prior.into_iter().filter(|(p, _)| p.term < st.term).collect();
                        h.push((st, row.clone()));
                        h.sort_by_key(|(s, _)| (s.term, s.urn));
                        score_pupil(&model, &h, &row, st)
                    })
                    .collect::<Vec<_>>(),
            )
        })
        .await
        .map_err(|e| AppError::Internal(e.to_string()))??;
        Ok((model_id, risks))
    }
}
