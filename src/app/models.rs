//! Model use cases: train (a long job), evaluate, list, activate; scoring at ingest and on
//! activation; stateless scoring for other systems.

use std::sync::Arc;

use serde_json::json;

use super::{App, AppError, AppResult};
use crate::audit::{Action, NewEvent};
use crate::auth::Principal;
use crate::domain::{PupilTerm, SchoolTerm};
use crate::model::features::History;
use crate::model::{ModelArtifact, TrainParams, TrainRequest, train_and_evaluate};
use crate::scoring::{PupilRisk, SchoolContext, score_pupil, score_pupil_in};
use crate::storage::{EncodedScore, EncodedScores, ModelRecord, RequestResult, Store, now_unix};

/// The model shipped in the binary: trained on synthetic data by `riskid model build-default`.
pub const BUNDLED_MODEL: &str = include_str!("../../models/default.json");

pub fn rfc3339(unix: i64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64))
        .to_string()
}

/// Scores the pupils of school term `st` (the rows `history` holds for that term) with
/// `model`, from each pupil's whole history (any school, any term), on every core; each
/// pupil's score is encoded for the store as soon as it is made, on the thread that made it
/// (which then frees its many small parts where they were allocated).
pub(crate) fn score_history(
    model: &ModelArtifact,
    st: SchoolTerm,
    history: Vec<(SchoolTerm, PupilTerm)>,
) -> crate::storage::StoreResult<EncodedScores> {
    let ctx = SchoolContext::of(history.iter().filter(|(s, _)| *s == st).map(|(_, r)| r));
    let history = History::from_rows(history);
    let pupils: Vec<_> =
        history.pupils.values().filter_map(|h| h.iter().find(|(s, _)| *s == st).map(|(_, row)| (h, row))).collect();
    let encoded = crate::par::map(&pupils, |(h, row)| EncodedScore::of(&score_pupil_in(model, h, row, st, &ctx)));
    EncodedScores::new(encoded.into_iter().collect::<Result<_, _>>()?)
}

/// The digest of a model's artifact bytes, kept in its audit events.
pub(crate) fn artifact_digest(json: &str) -> String {
    crate::audit::sha256_hex(json.as_bytes())
}

fn system_event(action: Action, subject: String, details: serde_json::Value) -> NewEvent {
    NewEvent {
        at: now_unix(),
        actor_key_id: 0,
        actor_role: "system".into(),
        action,
        school_urn: None,
        subject,
        details,
    }
}

/// The TrainModelRequest field a parameter error is about.
fn param_field(e: &crate::model::ModelError) -> &'static str {
    let m = e.to_string();
    if m.contains("alpha") {
        "alpha"
    } else if m.contains("capacity") {
        "capacity"
    } else {
        "seed"
    }
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
            return rec.artifact.map_err(AppError::Internal);
        }
        // Only a first start has no active model: after an activation, none active is tampering.
        if store.has_activations()? {
            return Err(AppError::Internal(
                "no model is active, but the audit chain records activations: the database was changed outside riskid"
                    .into(),
            ));
        }
        let model = ModelArtifact::from_json(BUNDLED_MODEL).map_err(AppError::Internal)?;
        let event = system_event(
            Action::ModelActivate,
            format!("model {}", model.model_id),
            json!({ "model_id": model.model_id, "artifact_sha256": artifact_digest(BUNDLED_MODEL),
                    "reason": "no active model: the bundled model (synthetic data)" }),
        );
        store.install_active_model(&model.model_id, BUNDLED_MODEL, now_unix(), event)?;
        tracing::info!(model = %model.model_id, "activated the bundled model (trained on synthetic data)");
        Ok(Arc::new(model))
    }

    /// Scores every queued submission, each in its own transaction with its audit event:
    /// what an activation queued, and after a crash whatever it left. Returns pupils scored.
    /// A few at a time are scored at once on read snapshots, outside the write lock, then
    /// written in the order queued (each checked against what committed since its snapshot).
    pub(crate) fn drain_score_queue(store: &Store) -> AppResult<usize> {
        // One drain at a time, so two activations cannot write the same pair in either order.
        static DRAIN: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = DRAIN.lock().unwrap_or_else(|p| p.into_inner());
        let at_once = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 4);
        let mut pupils = 0;
        let mut models: std::collections::HashMap<String, Arc<ModelArtifact>> = Default::default();
        loop {
            let batch = store.queued(at_once)?;
            if batch.is_empty() {
                return Ok(pupils);
            }
            for (_, _, model_id) in &batch {
                if !models.contains_key(model_id) {
                    let rec = store
                        .get_model(model_id)?
                        .ok_or_else(|| AppError::Internal("a queued model vanished".into()))?;
                    models.insert(model_id.clone(), rec.artifact.map_err(AppError::Internal)?);
                }
            }
            // Scored at once, each on its own snapshot; one that fails here is scored again
            // inside its transaction, where a lasting error is reported.
            let prescored: Vec<Option<(i64, EncodedScores)>> = std::thread::scope(|scope| {
                let handles: Vec<_> = batch
                    .iter()
                    .map(|(submission_id, st, model_id)| {
                        let model = &models[model_id];
                        scope.spawn(move || -> AppResult<(i64, EncodedScores)> {
                            let snap = store.queued_history(*submission_id)?;
                            Ok((snap.last_id, score_history(model, *st, snap.history)?))
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .zip(&batch)
                    .map(|(h, (submission_id, _, _))| match h.join() {
                        Ok(Ok(scored)) => Some(scored),
                        Ok(Err(e)) => {
                            tracing::warn!(submission_id, error = %e, "scoring a queued submission on a snapshot failed; scoring it in its transaction");
                            None
                        }
                        Err(_) => {
                            tracing::warn!(submission_id, "scoring a queued submission on a snapshot panicked; scoring it in its transaction");
                            None
                        }
                    })
                    .collect()
            });
            for ((submission_id, st, model_id), prescored) in batch.into_iter().zip(prescored) {
                pupils += Self::write_queued(store, &models[&model_id], submission_id, st, &model_id, prescored)?;
            }
        }
    }

    /// Writes one queued submission's scores (made on a snapshot, or here) with its event.
    fn write_queued(
        store: &Store,
        model: &ModelArtifact,
        submission_id: i64,
        st: SchoolTerm,
        model_id: &str,
        prescored: Option<(i64, EncodedScores)>,
    ) -> AppResult<usize> {
        let pupils = store.write_queued_scores(
            submission_id,
            model_id,
            prescored,
            |history| Ok::<_, AppError>(score_history(model, st, history)?),
            |digest| {
                let mut e = system_event(
                    Action::ScoresWrite,
                    format!("submission {submission_id}"),
                    json!({ "submission_id": submission_id, "model_id": model_id, "scores_sha256": digest }),
                );
                e.school_urn = Some(st.urn.to_string());
                e
            },
        )?;
        tracing::info!(school = %st.urn, term = %st.term, model = %model_id, "scored a queued submission");
        Ok(pupils)
    }

    pub fn active_model(&self) -> Arc<ModelArtifact> {
        self.active.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Trains from the store's history. Refuses a second concurrent training; a repeated
    /// `request_id` returns the first training's model without training again (a repeat
    /// racing the first waits for it).
    pub async fn train(
        &self,
        who: &Principal,
        params: TrainParams,
        model_id: Option<String>,
        request_id: Option<String>,
        progress: Progress,
    ) -> AppResult<ModelRecord> {
        who.may_manage_models()?;
        let rk = request_id.map(|r| super::request_key(who, "TrainModel", r, &(format!("{params:?}"), &model_id)));
        let _same_request = self.request_lock(rk.as_ref()).await;
        if let Some(rk) = &rk {
            let key = rk.clone();
            if let Some(RequestResult::Model { model_id }) = self.blocking(move |s| Ok(s.prior_request(&key)?)).await? {
                let _ = progress.send(format!("request {} was already done: model {model_id}", rk.request_id)).await;
                return self
                    .blocking(move |s| Ok(s.get_model(&model_id)?))
                    .await?
                    .ok_or_else(|| AppError::Internal("model vanished".into()));
            }
        }
        let _job = self.training.clone().try_lock_owned().map_err(|_| {
            AppError::conflict("TRAINING_RUNNING", "a training job is already running; wait for it to finish")
        })?;
        let params = params
            .check()
            .map_err(|e| AppError::bad_field(param_field(&e), "OUT_OF_RANGE", e.to_string()))?
            .get()
            .clone();
        let actor = (who.key_id, who.role.to_string());
        let _timer = self.metrics().training_seconds.start_timer();
        self.blocking(move |store| {
            let taken = |id: &str| {
                AppError::conflict("MODEL_ID_TAKEN", format!("a model with id {id} already exists; choose another id"))
            };
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
            .map_err(|e| match e {
                crate::model::ModelError::NotEnoughData(_) => AppError::conflict("NOT_ENOUGH_DATA", e.to_string()),
                crate::model::ModelError::Params(_) => {
                    AppError::bad_field(param_field(&e), "OUT_OF_RANGE", e.to_string())
                }
                crate::model::ModelError::Fit(_) => AppError::Internal(e.to_string()),
            })?;
            let json = artifact.to_json();
            let event = NewEvent {
                at: now,
                actor_key_id: actor.0,
                actor_role: actor.1,
                action: Action::ModelTrain,
                school_urn: None,
                subject: format!("model {}", artifact.model_id),
                details: json!({ "model_id": artifact.model_id, "artifact_sha256": artifact_digest(&json),
                                 "examples": artifact.training.examples }),
            };
            if !store.save_model(&artifact.model_id, &json, now, rk.as_ref(), event)? {
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
            .ok_or_else(|| AppError::not_found("MODEL_NOT_FOUND", format!("no model {model_id:?}")))
    }

    /// Re-evaluates a stored model, as it is (no refit), on the store's latest labelled term.
    pub async fn evaluate(
        &self,
        who: &Principal,
        model_id: String,
        capacity: usize,
    ) -> AppResult<Vec<crate::model::evaluate::OutcomeEvaluation>> {
        let rec = self.get_model(who, model_id).await?;
        let model = rec.artifact.map_err(|m| AppError::conflict("MODEL_UNREADABLE", m))?;
        let capacity = if capacity == 0 { model.training.capacity } else { capacity };
        self.blocking(move |store| {
            let history = History::from_rows(store.all_current_rows()?);
            let examples = crate::model::dataset::build(&history, model.training.seed);
            let term = crate::model::dataset::latest_labelled_term(&examples).ok_or_else(|| {
                AppError::conflict("NOT_ENOUGH_DATA", "the store has no pupil with two consecutive terms yet")
            })?;
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

    /// Recomputes a stored model's reported figures from the store's feeds with the
    /// evaluation model its artifact keeps, and lists every difference.
    pub async fn reproduce(&self, who: &Principal, model_id: String) -> AppResult<crate::model::Reproduction> {
        let rec = self.get_model(who, model_id).await?;
        let model = rec.artifact.map_err(|m| AppError::conflict("MODEL_UNREADABLE", m))?;
        self.blocking(move |store| {
            let history = History::from_rows(store.all_current_rows()?);
            Ok(crate::model::reproduce(&model, &history))
        })
        .await
    }

    /// How a model's live scores did once the next terms' feeds arrived.
    pub async fn live_performance(
        &self,
        who: &Principal,
        model_id: String,
    ) -> AppResult<crate::model::live::LivePerformance> {
        use crate::model::live::{LiveTerm, Reviewed, live_performance};
        use crate::review::Decision;
        let rec = self.get_model(who, model_id).await?;
        let model = rec.artifact.map_err(|m| AppError::conflict("MODEL_UNREADABLE", m))?;
        self.blocking(move |store| {
            let live: Vec<LiveTerm> = store
                .live_scores_of_model(&model.model_id)?
                .into_iter()
                .map(|(school_term, scores)| LiveTerm { school_term, scores })
                .collect();
            let history = History::from_rows(store.all_current_rows()?);
            let mut reviews: std::collections::HashMap<_, Vec<_>> = std::collections::HashMap::new();
            for c in store.reviewed_cohorts()?.into_iter().filter(|c| c.model_id == model.model_id) {
                let decided = c.members.iter().filter_map(|m| {
                    let d = match &m.decided.as_ref()?.decision {
                        Decision::Confirm { .. } => Reviewed::Confirmed,
                        Decision::Remove { .. } => Reviewed::Removed,
                        Decision::Add { .. } => Reviewed::Added,
                    };
                    Some((m.upn.clone(), d))
                });
                reviews.entry(c.school_term).or_default().extend(decided);
            }
            let t = &model.training;
            Ok(live_performance(&model.model_id, t.capacity, t.seed, t.test_term, &live, &history, &reviews))
        })
        .await
    }

    pub async fn list_models(&self, who: &Principal) -> AppResult<Vec<ModelRecord>> {
        who.may_manage_models()?;
        self.blocking(|s| Ok(s.list_models()?)).await
    }

    /// Activates a model: in one transaction it becomes active and each school's latest term
    /// is queued for scoring with it (with the audit event); then the queue is drained, each
    /// school in its own transaction. A crash part-way leaves the queue, which start-up
    /// drains, so an activation always completes. Returns (schools, pupils) rescored.
    pub async fn activate(
        &self,
        who: &Principal,
        model_id: String,
        force: bool,
        reason: String,
        request_id: Option<String>,
    ) -> AppResult<(usize, usize)> {
        who.may_manage_models()?;
        let rk = request_id.map(|r| super::request_key(who, "ActivateModel", r, &(&model_id, force, &reason)));
        let _same_request = self.request_lock(rk.as_ref()).await;
        let rec = self.get_model(who, model_id.clone()).await?;
        let model = rec.artifact.clone().map_err(|m| AppError::conflict("MODEL_UNREADABLE", m))?;
        if !model.beats_baselines() && !force {
            return Err(AppError::conflict(
                "MODEL_BELOW_BASELINES",
                format!(
                    "model {model_id} does not beat the baselines at capacity for every outcome; \
                     activate with force and a reason to override (this is audited)"
                ),
            ));
        }
        if force && reason.trim().is_empty() {
            return Err(AppError::bad_field("reason", "REQUIRED", "a forced activation needs a reason"));
        }
        let (key_id, role) = (who.key_id, who.role.to_string());
        let digest = rec.artifact_sha256.clone();
        let beats = model.beats_baselines();
        let id = model_id.clone();
        let result = self
            .blocking(move |store| {
                let result = store.activate_model(&id, now_unix(), rk.as_ref(), |queued, pupils| NewEvent {
                    at: now_unix(),
                    actor_key_id: key_id,
                    actor_role: role,
                    action: if force { Action::ModelActivateForced } else { Action::ModelActivate },
                    school_urn: None,
                    subject: format!("model {id}"),
                    details: json!({ "model_id": id, "artifact_sha256": digest, "force": force, "reason": reason,
                                     "beats_baselines": beats, "queued": queued, "pupils_queued": pupils }),
                })?;
                App::drain_score_queue(store)?;
                Ok(result)
            })
            .await?;
        let Some(RequestResult::Activation { model_id: activated, schools, pupils }) = result else {
            return Err(AppError::not_found("MODEL_NOT_FOUND", format!("no model {model_id:?}")));
        };
        if activated != model_id {
            return Err(AppError::Internal("a request result of another model".into()));
        }
        // The store says which model is active (a repeated request may be older than the last
        // activation): the server's copy follows it.
        let active = self.blocking(|s| Ok(s.active_model()?)).await?;
        let active = match active {
            Some(rec) if rec.model_id == model.model_id => model,
            Some(rec) => rec.artifact.map_err(AppError::Internal)?,
            None => return Err(AppError::Internal("no active model after an activation".into())),
        };
        self.metrics().set_model(&active.model_id);
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = active;
        tracing::info!(model = %model_id, schools, pupils, "model activated; latest terms rescored");
        Ok((schools, pupils))
    }

    /// Scores one school term with a stored model and makes those scores live for it: an
    /// explicit request, audited. Returns the pupils rescored.
    pub async fn rescore_school_term(
        &self,
        who: &Principal,
        st: SchoolTerm,
        model_id: String,
        request_id: Option<String>,
    ) -> AppResult<usize> {
        who.may_manage_models()?;
        let rec = self.get_model(who, model_id.clone()).await?;
        rec.artifact.map_err(|m| AppError::conflict("MODEL_UNREADABLE", m))?;
        let rk = request_id
            .map(|r| super::request_key(who, "RescoreSchoolTerm", r, &(st.urn.get(), st.term.index(), &model_id)));
        let _same_request = self.request_lock(rk.as_ref()).await;
        let (key_id, role) = (who.key_id, who.role.to_string());
        let result = self
            .blocking(move |store| {
                let r = store.queue_school_term(st, &model_id, rk.as_ref(), |submission_id| NewEvent {
                    at: now_unix(),
                    actor_key_id: key_id,
                    actor_role: role,
                    action: Action::ScoresRescore,
                    school_urn: Some(st.urn.to_string()),
                    subject: format!("submission {submission_id}"),
                    details: json!({ "submission_id": submission_id, "term": st.term.to_string(), "model_id": model_id }),
                })?;
                App::drain_score_queue(store)?;
                Ok(r)
            })
            .await?;
        match result {
            Some(RequestResult::Activation { pupils, .. }) => Ok(pupils),
            _ => Err(AppError::not_found("FEED_NOT_FOUND", format!("no feed for school {} in {}", st.urn, st.term))),
        }
    }

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
        let _timer = self.metrics().scoring_seconds.with_label_values(&["stateless"]).start_timer();
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
