//! The real binary killed with SIGKILL at random points across ingest, activation,
//! proposals and decisions. After each restart: SQLite's integrity check passes, every
//! acknowledged write is there, every accepted submission is scored by the model active when
//! it was accepted, no activation is left half done, and the audit chain verifies with the
//! state explained by it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use riskid::api::pb::{self, cohort_service_client::CohortServiceClient, model_service_client::ModelServiceClient};
use riskid::audit::Action;
use riskid::client::{Bearer, submission_stream};
use riskid::storage::{LiveScores, Store};
use tonic::transport::Channel;

fn riskid() -> Command {
    Command::new(env!("CARGO_BIN_EXE_riskid"))
}

fn start(dir: &Path) -> (Child, String) {
    let mut child = riskid()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", dir.to_str().unwrap()])
        .env("RUST_LOG", "warn,riskid::server=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("the server exited before listening").unwrap();
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    (child, format!("http://{addr}"))
}

/// A write the server acknowledged.
#[derive(Debug, Clone)]
enum Ack {
    Submission(i64),
    Cohort(i64),
    Decision(i64, String),
    Activation,
}

struct Keys {
    schools: Vec<String>,
    link_workers: Vec<String>,
    analyst: String,
}

/// Runs operations until the server goes away, recording what was acknowledged.
async fn workload(
    server: String,
    keys: Arc<Keys>,
    world: Arc<riskid::synth::World>,
    round: u64,
    acks: Arc<Mutex<Vec<Ack>>>,
) {
    let Ok(ch) = Channel::from_shared(server).unwrap().connect().await else { return };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(round);
    let latest = *world.terms.last().unwrap();
    for step in 0.. {
        let i = rng.random_range(0..world.schools.len());
        let urn = world.schools[i].urn;
        let st = riskid::api::school_term_pb(urn, latest);
        let ok = match (step + round) % 5 {
            // Ingest: a feed for a random term, with a changed row so it supersedes.
            0 | 1 => {
                let f = &world.feeds[rng.random_range(0..world.feeds.len())];
                let mut rows = f.rows.clone();
                let bump = rng.random_range(0..3u16);
                let room = rows[0].sessions_possible - rows[0].sessions_unauthorised;
                rows[0].sessions_authorised = (rows[0].sessions_authorised + bump).min(room);
                rows[0].absence_spells = Some(u16::from(rows[0].absent_sessions() > 0));
                let idx = world.schools.iter().position(|s| s.urn == f.urn).unwrap();
                let mut c = pb::feed_service_client::FeedServiceClient::with_interceptor(
                    ch.clone(),
                    Bearer::new(&keys.schools[idx]),
                );
                let header = pb::SubmissionHeader {
                    school_term: Some(riskid::api::school_term_pb(f.urn, f.term)),
                    ..Default::default()
                };
                match c.submit_feed(submission_stream(header, riskid::synth::feed_csv(&rows))).await {
                    Ok(r) => {
                        let id = r.into_inner().submission.unwrap().submission_id.parse().unwrap();
                        acks.lock().unwrap().push(Ack::Submission(id));
                        true
                    }
                    Err(_) => false,
                }
            }
            // Activation: the bundled model again, which rescoress every school's latest term.
            2 if step % 3 == 0 => {
                let mut m = ModelServiceClient::with_interceptor(ch.clone(), Bearer::new(&keys.analyst));
                let id = riskid::model::ModelArtifact::from_json(riskid::app::BUNDLED_MODEL).unwrap().model_id;
                let req = pb::ActivateModelRequest {
                    model_id: id,
                    force: true,
                    reason: "crash test".into(),
                    request_id: String::new(),
                };
                match m.activate_model(req).await {
                    Ok(_) => {
                        acks.lock().unwrap().push(Ack::Activation);
                        true
                    }
                    Err(_) => false,
                }
            }
            // A proposal (replacing one in review), then decisions on it.
            _ => {
                let mut c = CohortServiceClient::with_interceptor(ch.clone(), Bearer::new(&keys.link_workers[i]));
                let req =
                    pb::ProposeCohortRequest { school_term: Some(st), capacity: 8, force: true, ..Default::default() };
                match c.propose_cohort(req).await {
                    Ok(r) => {
                        let cohort = r.into_inner();
                        acks.lock().unwrap().push(Ack::Cohort(cohort.cohort_id.parse().unwrap()));
                        for m in cohort.members.iter().take(5) {
                            let d = pb::RecordDecisionRequest {
                                cohort_id: cohort.cohort_id.clone(),
                                upn: m.upn.clone(),
                                decision: pb::DecisionKind::Confirm as i32,
                                ..Default::default()
                            };
                            if c.record_decision(d).await.is_err() {
                                return;
                            }
                            acks.lock().unwrap().push(Ack::Decision(cohort.cohort_id.parse().unwrap(), m.upn.clone()));
                        }
                        true
                    }
                    // A finalised or otherwise refused proposal is fine; a dead server ends the run.
                    Err(s) => s.code() == tonic::Code::FailedPrecondition,
                }
            }
        };
        if !ok {
            return;
        }
    }
}

/// Everything that must hold after a restart.
fn check(dir: &Path, acks: &[Ack], round: usize) {
    let db = rusqlite::Connection::open(dir.join("riskid.db")).unwrap();
    let integrity: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(integrity, "ok", "round {round}");
    let store = Store::open(dir).unwrap();
    for a in acks {
        match a {
            Ack::Submission(id) => {
                assert!(store.get_submission(*id).unwrap().is_some(), "round {round}: lost submission {id}")
            }
            Ack::Cohort(id) => assert!(store.get_cohort(*id).unwrap().is_some(), "round {round}: lost cohort {id}"),
            Ack::Decision(id, upn) => {
                let c = store.get_cohort(*id).unwrap().unwrap();
                let m = c.members.iter().find(|m| m.upn.as_str() == upn).expect("member");
                assert!(m.decided.is_some(), "round {round}: lost a decision in cohort {id}");
            }
            Ack::Activation => {}
        }
    }
    assert_eq!(store.queued_count().unwrap(), 0, "round {round}: an activation was left half done");
    // Every current submission has live scores, by the model active when it was accepted.
    for f in store.list_submissions(&riskid::storage::SubmissionFilter { limit: 10_000, ..Default::default() }).unwrap()
    {
        match store.live_scores(f.school_term).unwrap() {
            LiveScores::Ready { scores, .. } => assert_eq!(scores.len(), f.row_count, "round {round}"),
            other => panic!("round {round}: submission {} has no scores: {other:?}", f.id),
        }
    }
    let mut active = String::new();
    for (action, json) in store.audit_log().unwrap() {
        let e: serde_json::Value = serde_json::from_str(&json).unwrap();
        let model = e["details"]["model_id"].as_str().unwrap_or("").to_string();
        match action {
            Action::ModelActivate | Action::ModelActivateForced => active = model,
            Action::FeedAccept => assert_eq!(model, active, "round {round}: a feed was scored by another model"),
            _ => {}
        }
    }
    let v = riskid::app::verify_store(&store, None).unwrap();
    assert_eq!(v.problem, None, "round {round}");
}

fn key(dir: &Path, args: &[&str]) -> String {
    let out = riskid().args(["keys", "create", "--data-dir", dir.to_str().unwrap()]).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_twenty_random_points_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = riskid::synth::WorldConfig {
        schools: 3,
        years: 1,
        seed: 8,
        primary_year_size: 20,
        secondary_year_size: 40,
        ..Default::default()
    };
    let world = Arc::new(riskid::synth::generate(&cfg).unwrap());
    let urns: Vec<String> = world.schools.iter().map(|s| s.urn.to_string()).collect();
    let keys = Arc::new(Keys {
        schools: urns.iter().map(|u| key(dir.path(), &["--role", "school", "--school", u])).collect(),
        link_workers: urns.iter().map(|u| key(dir.path(), &["--role", "link_worker", "--school", u])).collect(),
        analyst: key(dir.path(), &["--role", "analyst"]),
    });
    let acks = Arc::new(Mutex::new(Vec::new()));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261201);
    let mut interrupted_activations = 0;
    for round in 0..20 {
        if round > 0 {
            // Before the restart drains it: did this kill interrupt an activation?
            let db = rusqlite::Connection::open(dir.path().join("riskid.db")).unwrap();
            let queued: i64 = db.query_row("SELECT COUNT(*) FROM score_queue", [], |r| r.get(0)).unwrap();
            interrupted_activations += usize::from(queued > 0);
        }
        let (mut server, addr) = start(dir.path());
        if round > 0 {
            check(dir.path(), &acks.lock().unwrap(), round);
        }
        let run = tokio::spawn(workload(addr, keys.clone(), world.clone(), round as u64, acks.clone()));
        // The kill point: anywhere from the first request to well into the workload.
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..900))).await;
        server.kill().unwrap();
        server.wait().unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(30), run).await;
    }
    let (mut server, _) = start(dir.path());
    check(dir.path(), &acks.lock().unwrap(), 20);
    // SAFETY: sends SIGTERM to the child we spawned.
    unsafe {
        libc::kill(server.id() as i32, libc::SIGTERM);
    }
    assert!(server.wait().unwrap().success());
    let out = riskid().args(["audit", "verify", "--data-dir", dir.path().to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let acks = acks.lock().unwrap();
    let count = |f: fn(&Ack) -> bool| acks.iter().filter(|a| f(a)).count();
    let (subs, cohorts, decisions, activations) = (
        count(|a| matches!(a, Ack::Submission(_))),
        count(|a| matches!(a, Ack::Cohort(_))),
        count(|a| matches!(a, Ack::Decision(..))),
        count(|a| matches!(a, Ack::Activation)),
    );
    println!(
        "20 kills: {subs} submissions, {cohorts} proposals, {decisions} decisions, {activations} activations acknowledged; \
         {interrupted_activations} kills left an activation to resume"
    );
    assert!(subs > 10 && cohorts > 3 && decisions > 10 && activations > 1, "the workload reached every kind of write");
}

/// An activation interrupted after it committed (the queue written, nothing scored yet):
/// reads say the scores are pending, never an empty list, and the next start completes it.
#[tokio::test]
async fn an_interrupted_activation_is_reported_pending_and_resumed_at_start() {
    let app = crate::helpers::spawn_app().await;
    let b = crate::helpers::submit_world(&app, 2).await;
    let model = app.store.active_model().unwrap().unwrap().model_id;
    // What an activation commits before its drain: active model, queue, audit event.
    let queued = app
        .store
        .activate_model(&model, 1, None, |queued, pupils| riskid::audit::NewEvent {
            at: 1,
            actor_key_id: 0,
            actor_role: "test".into(),
            action: Action::ModelActivate,
            school_urn: None,
            subject: format!("model {model}"),
            details: serde_json::json!({ "model_id": model, "queued": queued, "pupils_queued": pupils,
                "artifact_sha256": riskid::audit::sha256_hex(riskid::app::BUNDLED_MODEL.as_bytes()) }),
        })
        .unwrap();
    assert!(matches!(queued, Some(riskid::storage::RequestResult::Activation { schools: 2, .. })));
    let st = riskid::domain::SchoolTerm { urn: b.world.schools[0].urn, term: b.latest };
    let analyst = riskid::auth::Principal { key_id: 0, role: riskid::auth::Role::Analyst, schools: Default::default() };
    let err = app.app.school_risks(&analyst, st, None, None).await.unwrap_err();
    assert!(matches!(err, riskid::app::AppError::NotReady(_)), "{err}");
    let mut risks = pb::risk_service_client::RiskServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(&app.key(riskid::auth::Role::Analyst, &[])),
    );
    let req = pb::ListSchoolRisksRequest {
        school_term: Some(riskid::api::school_term_pb(st.urn, st.term)),
        ..Default::default()
    };
    let status = risks.list_school_risks(req).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "a status the client can act on: retry");
    // A restart on the same data resumes the activation before serving.
    let reopened = Arc::new(Store::open(app._dir.path()).unwrap());
    let _again = riskid::app::App::new(reopened.clone(), Default::default()).unwrap();
    assert_eq!(reopened.queued_count().unwrap(), 0);
    assert!(matches!(reopened.live_scores(st).unwrap(), LiveScores::Ready { .. }));
    assert_eq!(riskid::app::verify_store(&reopened, None).unwrap().problem, None);
}
