//! ModelService: training streams progress, activation is guarded and audited.

use riskid::api::pb::{self, model_service_client::ModelServiceClient, train_model_progress::Event};
use riskid::auth::Role;
use riskid::client::Bearer;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::helpers::*;

#[tokio::test]
async fn train_then_activate_with_guard_rails() {
    let app = spawn_app().await;
    submit_world(&app, 2).await;
    let bundled = app.store.active_model().unwrap().unwrap().model_id;
    let mut c = ModelServiceClient::with_interceptor(app.channel().await, Bearer::new(&app.key(Role::Analyst, &[])));
    let mut stream =
        c.train_model(pb::TrainModelRequest { capacity: 5, seed: 1, ..Default::default() }).await.unwrap().into_inner();
    let (mut messages, mut model) = (0, None);
    while let Some(m) = stream.next().await {
        match m.unwrap().event {
            Some(Event::Message(_)) => messages += 1,
            Some(Event::Model(m)) => model = Some(m),
            None => {}
        }
    }
    let model = model.expect("the stream ends with the model");
    assert!(messages >= 5, "progress is reported");
    assert!(model.card.contains("never a decision") && !model.active);
    let listed = c.list_models(pb::ListModelsRequest::default()).await.unwrap().into_inner().models;
    assert_eq!(listed.len(), 2);

    let activate = |force: bool, reason: &str| pb::ActivateModelRequest {
        model_id: model.model_id.clone(),
        force,
        reason: reason.into(),
        request_id: String::new(),
    };
    if !model.beats_baselines {
        assert_eq!(c.activate_model(activate(false, "")).await.unwrap_err().code(), Code::FailedPrecondition);
    }
    assert_eq!(c.activate_model(activate(true, " ")).await.unwrap_err().code(), Code::InvalidArgument);
    let done = c.activate_model(activate(true, "pilot comparison")).await.unwrap().into_inner();
    assert_eq!(done.schools_rescored, 2);
    assert_ne!(app.store.active_model().unwrap().unwrap().model_id, bundled);
    let events = app.store.audit_log().unwrap();
    assert!(
        events.iter().any(|(a, e)| *a == riskid::audit::Action::ModelActivateForced && e.contains("pilot comparison"))
    );

    let report = c
        .evaluate_model(pb::EvaluateModelRequest { model_id: bundled.clone(), capacity: 5, reproduce: false })
        .await
        .unwrap()
        .into_inner()
        .evaluations;
    assert_eq!(report.len(), 3, "one evaluation per outcome, on this store's data");
    assert_eq!(report[0].capacity, 5);
    assert!(report.iter().all(|e| e.model.as_ref().unwrap().auc.is_some() && !e.fairness.is_empty()));

    // Every figure the trained model reports is recomputed exactly from the stored feeds with
    // the evaluation model it keeps; the bundled model was trained on other data, and says so.
    let reproduce = |id: &str| pb::EvaluateModelRequest { model_id: id.into(), capacity: 0, reproduce: true };
    let same = c.evaluate_model(reproduce(&model.model_id)).await.unwrap().into_inner();
    assert!(same.same_data && same.differences.is_empty(), "{:?}", same.differences);
    assert_eq!(same.evaluations.len(), 3);
    let other = c.evaluate_model(reproduce(&bundled)).await.unwrap().into_inner();
    assert!(!other.same_data);
    assert!(other.differences.iter().any(|d| d.contains("fingerprint")), "{:?}", &other.differences[..1]);
    assert!(other.differences.iter().any(|d| d.contains("model.auc")), "figures that differ are named");
    let both = pb::EvaluateModelRequest { capacity: 5, ..reproduce(&bundled) };
    assert_eq!(c.evaluate_model(both).await.unwrap_err().code(), Code::InvalidArgument);

    // The bundled model's scores were live for every feed: each term with a next term is
    // judged against what happened, in all and per school, against the baselines.
    let live =
        c.get_live_performance(pb::GetLivePerformanceRequest { model_id: bundled.clone() }).await.unwrap().into_inner();
    assert!(!live.terms.is_empty());
    for t in &live.terms {
        assert_eq!(t.outcomes.len(), 3);
        assert_eq!(t.schools.len(), 2);
        let per_school: u64 = t.schools.iter().map(|s| s.outcomes[1].children).sum();
        assert_eq!(per_school, t.outcomes[1].children, "schools add up to the borough");
        assert!(t.outcomes[0].model.as_ref().unwrap().auc.is_some());
    }
    let none = c.get_live_performance(pb::GetLivePerformanceRequest { model_id: "nope".into() }).await;
    assert_eq!(none.unwrap_err().code(), Code::NotFound);

    let unknown = pb::ActivateModelRequest { model_id: "nope".into(), ..activate(false, "") };
    assert_eq!(c.activate_model(unknown).await.unwrap_err().code(), Code::NotFound);
    let mut school =
        ModelServiceClient::with_interceptor(app.channel().await, Bearer::new(&app.key(Role::School, &[SCHOOL_A])));
    assert_eq!(school.list_models(pb::ListModelsRequest::default()).await.unwrap_err().code(), Code::PermissionDenied);
    let refused = school.get_live_performance(pb::GetLivePerformanceRequest { model_id: bundled.clone() }).await;
    assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_concurrent_training_is_refused() {
    use std::sync::Arc;
    let test_app = spawn_app().await;
    submit_world(&test_app, 2).await;
    let store = Arc::new(riskid::storage::Store::open(test_app._dir.path()).unwrap());
    let app = Arc::new(riskid::app::App::new(store, Default::default()).unwrap());
    let analyst = riskid::auth::Principal { key_id: 1, role: Role::Analyst, schools: Default::default() };
    // The first job reports into a one-slot channel: after we take its first message it can
    // buffer one more, then waits for us at the third, still holding the training slot.
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let (a, who) = (app.clone(), analyst.clone());
    let first = tokio::spawn(async move { a.train(&who, Default::default(), None, None, tx).await });
    assert_eq!(rx.recv().await.unwrap(), "loading history from the store");
    let (tx2, _rx2) = tokio::sync::mpsc::channel(1);
    let err = app.train(&analyst, Default::default(), None, None, tx2).await.unwrap_err();
    assert!(
        matches!(err, riskid::app::AppError::Conflict { reason: "TRAINING_RUNNING", ref message } if message.contains("already running")),
        "{err}"
    );
    while rx.recv().await.is_some() {}
    assert!(first.await.unwrap().is_ok(), "the first training completes");
}
