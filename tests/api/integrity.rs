//! One truth: the audit chain covers the state (every tampering case an outsider tried is
//! found by `riskid audit verify --checkpoint`, naming what disagrees), and `request_id`
//! means what it says on every mutation.

use std::path::Path;
use std::process::Command;

use riskid::api::pb::{
    self, audit_service_client::AuditServiceClient, cohort_service_client::CohortServiceClient,
    model_service_client::ModelServiceClient,
};
use riskid::auth::Role;
use riskid::client::{Authed, Bearer};
use tonic::Code;

use crate::helpers::*;

fn cohorts(ch: tonic::transport::Channel, key: &str) -> CohortServiceClient<Authed> {
    CohortServiceClient::with_interceptor(ch, Bearer::new(key))
}

fn propose(s: pb::SchoolTerm, k: u32, rid: &str) -> pb::ProposeCohortRequest {
    pb::ProposeCohortRequest {
        school_term: Some(s),
        capacity: k,
        seed: 9,
        request_id: rid.into(),
        ..Default::default()
    }
}

fn decision(c: &pb::Cohort, upn: &str, kind: pb::DecisionKind, reason: &str, rid: &str) -> pb::RecordDecisionRequest {
    pb::RecordDecisionRequest {
        cohort_id: c.cohort_id.clone(),
        upn: upn.into(),
        decision: kind as i32,
        reason_code: reason.into(),
        note: String::new(),
        request_id: rid.into(),
    }
}

/// A data directory with feeds, scores, keys, one finalised cohort and one in review.
async fn populated() -> (TestApp, String) {
    let app = spawn_app().await;
    let b = submit_world(&app, 2).await;
    for (i, school) in b.world.schools.iter().enumerate() {
        let mut lw = cohorts(app.channel().await, &app.key(Role::LinkWorker, &[school.urn.get()]));
        let c = lw.propose_cohort(propose(st(school.urn, b.latest), 6, "")).await.unwrap().into_inner();
        for (j, m) in c.members.iter().enumerate() {
            let (kind, reason) =
                if j == 1 { (pb::DecisionKind::Remove, "family_declined") } else { (pb::DecisionKind::Confirm, "") };
            if i == 1 && j > 2 {
                break;
            }
            lw.record_decision(decision(&c, &m.upn, kind, reason, "")).await.unwrap();
        }
        if i == 0 {
            let fin = pb::FinaliseCohortRequest { cohort_id: c.cohort_id.clone(), ..Default::default() };
            lw.finalise_cohort(fin).await.unwrap();
        }
    }
    let mut audit = AuditServiceClient::with_interceptor(app.channel().await, Bearer::new(&app.key(Role::Admin, &[])));
    let cp = audit.get_audit_checkpoint(pb::GetAuditCheckpointRequest {}).await.unwrap().into_inner();
    let checkpoint = serde_json::json!({ "seq": cp.seq, "hash": cp.hash, "mac": cp.mac }).to_string();
    (app, checkpoint)
}

/// A copy of the data directory (database checkpointed first), to tamper with.
fn copy_of(app: &TestApp) -> tempfile::TempDir {
    let db = rusqlite::Connection::open(app.store.path()).unwrap();
    // The server's own checkpointer may be running one (a checkpoint at a time): wait for
    // it rather than copy a database file that lacks what is still in the WAL.
    db.busy_timeout(std::time::Duration::from_secs(30)).unwrap();
    let busy: i64 = db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0)).unwrap();
    assert_eq!(busy, 0, "the whole WAL is in the database file before it is copied");
    let dir = tempfile::tempdir().unwrap();
    for f in ["riskid.db", "audit.key", "audit.head"] {
        std::fs::copy(app._dir.path().join(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn verify(dir: &Path, checkpoint: &str) -> (bool, String) {
    let cp = dir.join("checkpoint.json");
    std::fs::write(&cp, checkpoint).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_riskid"))
        .args(["audit", "verify", "--data-dir", dir.to_str().unwrap(), "--checkpoint", cp.to_str().unwrap()])
        .env_remove("RISKID_AUDIT_KEY_FILE")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

fn sql(dir: &Path, statements: &str) {
    let db = rusqlite::Connection::open(dir.join("riskid.db")).unwrap();
    db.execute_batch(&format!(
        "DROP TRIGGER IF EXISTS audit_no_update; DROP TRIGGER IF EXISTS audit_no_delete; {statements}"
    ))
    .unwrap();
}

fn event_count(dir: &Path) -> i64 {
    let db = rusqlite::Connection::open(dir.join("riskid.db")).unwrap();
    db.query_row("SELECT COUNT(*) FROM audit_events", [], |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn every_tampering_case_is_found_and_named() {
    let (app, checkpoint) = populated().await;
    let clean = copy_of(&app);
    let (ok, text) = verify(clean.path(), &checkpoint);
    assert!(ok, "{text}");
    let n = event_count(clean.path());
    assert!(n > 26, "{n} events");

    // Each case on its own copy: (what was done, SQL, what the report must say).
    let cases: Vec<(&str, String, &str)> = vec![
        ("edit an event", "UPDATE audit_events SET event_json = replace(event_json, 'family_declined', 'data_wrong') WHERE event_json LIKE '%family_declined%'".into(), "altered"),
        ("delete one from the middle", format!("DELETE FROM audit_events WHERE seq = {}", n / 2), "missing"),
        ("edit the hash column", format!("UPDATE audit_events SET hash = '{}' WHERE seq = 5", "ab".repeat(32)), "altered"),
        ("delete the last 26 events", format!("DELETE FROM audit_events WHERE seq > {}", n - 26), "removed from the end"),
        ("flip a decision", "UPDATE cohort_members SET decision = 'remove', reason_code = 'data_wrong' WHERE (cohort_id, upn) = (SELECT cohort_id, upn FROM cohort_members WHERE decision = 'confirm' LIMIT 1)".into(), "decision differs"),
        ("mark a cohort finalised", "UPDATE cohorts SET state = 'finalised' WHERE state = 'in_review'".into(), "finalised but the chain says in_review"),
        ("forge a score", "UPDATE score_sets SET data = CAST(X'00' || substr(data, 2) AS BLOB) WHERE id = (SELECT MIN(id) FROM score_sets)".into(), "scores under model"),
        ("change a key's role", "UPDATE api_keys SET role = 'analyst' WHERE id = (SELECT MIN(key_id) FROM api_key_schools); DELETE FROM api_key_schools WHERE key_id = (SELECT MIN(key_id) FROM api_key_schools)".into(), "role or schools differ"),
        ("edit pupil rows", "UPDATE feed_rows SET data = CAST(X'01' || substr(data, 2) AS BLOB) WHERE submission_id = (SELECT MIN(submission_id) FROM feed_rows)".into(), "pupil rows differ"),
        ("cut a submission's packed rows short", "UPDATE feed_rows SET data = substr(data, 1, 3) WHERE submission_id = (SELECT MIN(submission_id) FROM feed_rows)".into(), "stored pupil rows cannot be read"),
        ("reorder a set of scores", "UPDATE score_sets SET entries = CAST(substr(entries, 71, 70) || substr(entries, 1, 70) || substr(entries, 141) AS BLOB) WHERE id = (SELECT MIN(id) FROM score_sets)".into(), "stored scores cannot be read"),
        ("hide a pupil's history", "DELETE FROM pupil_index WHERE upn_key = (SELECT MIN(upn_key) FROM pupil_index)".into(), "UPN index differs"),
        ("move a pupil to another school in the index", "UPDATE pupil_index SET urn = 100099 WHERE upn_key = (SELECT MIN(upn_key) FROM pupil_index)".into(), "UPN index differs"),
        ("edit the active model's coefficients", "UPDATE models SET artifact_json = replace(artifact_json, '\"intercept\":', '\"intercept\":1') WHERE active = 1".into(), "artifact differs"),
        // Found in review: state the first version of verify did not compare.
        ("replace a key's secret", format!("UPDATE api_keys SET key_hash = '{}' WHERE id = 1", "0".repeat(64)), "secret differs"),
        ("move a submission to another school", "UPDATE submissions SET urn = 100099 WHERE id = 1".into(), "school, term or state differs"),
        ("unlink the live scores", "DELETE FROM live_scores WHERE submission_id = 1".into(), "not the last ones"),
        ("extend a programme", "UPDATE cohorts SET programme_end = programme_end + 30 WHERE state = 'finalised'".into(), "programme end"),
        ("credit a decision to someone else", "UPDATE cohort_members SET decided_by = 999 WHERE (cohort_id, upn) = (SELECT cohort_id, upn FROM cohort_members WHERE decision = 'confirm' LIMIT 1)".into(), "who decided"),
        // The first pupil's p_absence (0.99) and priority (0.999), as the f64 bits its entry keeps.
        ("raise a ranking column", "UPDATE score_sets SET entries = CAST(substr(entries, 1, 46) || X'AE47E17A14AEEF3F' || substr(entries, 55) AS BLOB) WHERE id = (SELECT MIN(id) FROM score_sets)".into(), "scores under model"),
        ("reorder by priority", "UPDATE score_sets SET entries = CAST(substr(entries, 1, 22) || X'2B8716D9CEF7EF3F' || substr(entries, 31) AS BLOB) WHERE id = (SELECT MIN(id) FROM score_sets)".into(), "scores under model"),
        ("delete a submission", "DELETE FROM live_scores WHERE submission_id = 2; DELETE FROM score_sets WHERE submission_id = 2; DELETE FROM feed_rows WHERE submission_id = 2; DELETE FROM pupil_index WHERE submission_id = 2; UPDATE submissions SET superseded_by = NULL WHERE superseded_by = 2; DELETE FROM submissions WHERE id = 2".into(), "submissions; the chain records"),
        ("corrupt an event", "UPDATE audit_events SET event_json = 'not json' WHERE seq = 7".into(), "BROKEN at event 7: the event cannot be read"),
    ];
    for (what, statements, says) in cases {
        let dir = copy_of(&app);
        sql(dir.path(), &statements);
        let (ok, text) = verify(dir.path(), &checkpoint);
        assert!(!ok, "{what}: not detected");
        assert!(text.contains(says), "{what}: the report should say {says:?}: {text}");
    }

    // Scores laundered through the queue: the server scores what it finds at start, but
    // verify asks which activation wanted them.
    let dir = copy_of(&app);
    let bundled = app.store.active_model().unwrap().unwrap().model_id;
    sql(dir.path(), &format!("INSERT INTO score_queue (submission_id, model_id) VALUES (1, '{bundled}')"));
    let store = std::sync::Arc::new(riskid::storage::Store::open(dir.path()).unwrap());
    drop(riskid::app::App::new(store, Default::default()).unwrap());
    let (ok, text) = verify(dir.path(), &checkpoint);
    assert!(!ok && text.contains("no activation or rescore asked for"), "{text}");

    // A cut chain is not re-anchored by the next write: the server refuses to open it.
    let dir = copy_of(&app);
    sql(dir.path(), &format!("DELETE FROM audit_events WHERE seq > {}", n - 2));
    let refused = riskid::storage::Store::open(dir.path()).err().expect("refused");
    assert!(refused.to_string().contains("head file records event"), "{refused}");

    // Rewrite an event and re-hash all the events after it, as someone without the key would.
    let dir = copy_of(&app);
    let store = riskid::storage::Store::open(dir.path()).unwrap();
    let events: Vec<riskid::audit::AuditEvent> =
        store.all_stored_events().unwrap().into_iter().map(|s| s.event.unwrap()).collect();
    drop(store);
    let from = (n / 3) as usize;
    let mut chain: Vec<riskid::audit::AuditEvent> = events[..from - 1].to_vec();
    let db = rusqlite::Connection::open(dir.path().join("riskid.db")).unwrap();
    db.execute_batch("DROP TRIGGER audit_no_update;").unwrap();
    for (i, e) in events[from - 1..].iter().enumerate() {
        let mut content = e.event.clone();
        if i == 0 {
            content.actor_key_id = 999;
        }
        let rehashed = riskid::audit::chain(chain.last(), content);
        db.execute(
            "UPDATE audit_events SET event_json = ?1, hash = ?2 WHERE seq = ?3",
            rusqlite::params![serde_json::to_string(&rehashed).unwrap(), rehashed.hash, rehashed.seq as i64],
        )
        .unwrap();
        chain.push(rehashed);
    }
    drop(db);
    let (ok, text) = verify(dir.path(), &checkpoint);
    assert!(!ok && text.contains(&format!("event {from}")) && text.contains("not authenticated"), "{text}");

    // Cut events and the head file too: the checkpoint kept elsewhere still finds it.
    let dir = copy_of(&app);
    sql(dir.path(), &format!("DELETE FROM audit_events WHERE seq > {}", n - 3));
    std::fs::remove_file(dir.path().join("audit.head")).unwrap();
    let (ok, text) = verify(dir.path(), &checkpoint);
    assert!(!ok && text.contains("head file"), "{text}");
    std::fs::write(dir.path().join("audit.head"), &checkpoint).unwrap();
    let (ok, text) = verify(dir.path(), &checkpoint);
    assert!(!ok && text.contains("removed from the end"), "{text}");
}

#[tokio::test]
async fn admins_read_audit_events_with_pupil_values_redacted() {
    let (app, _) = populated().await;
    let list = |key: String| {
        let ch = app.channel();
        async move {
            let mut c = AuditServiceClient::with_interceptor(ch.await, Bearer::new(&key));
            let req =
                pb::ListAuditEventsRequest { action: pb::AuditAction::DecisionRemove as i32, ..Default::default() };
            c.list_audit_events(req).await.unwrap().into_inner().events
        }
    };
    let upns: Vec<String> = app
        .store
        .all_cohorts()
        .unwrap()
        .iter()
        .flat_map(|c| c.members.iter().map(|m| m.upn.as_str().to_owned()))
        .collect();
    let admin = list(app.key(Role::Admin, &[])).await;
    assert!(!admin.is_empty());
    for e in &admin {
        let d = struct_json(e.details.as_ref().unwrap());
        assert!(d.contains("[redacted: pupil data]"), "{d}");
        assert!(!upns.iter().any(|u| d.contains(u.as_str())), "a UPN reached an admin");
        assert!(!d.contains("probability"), "what was shown is redacted");
    }
    let analyst = list(app.key(Role::Analyst, &[])).await;
    assert!(
        analyst.iter().all(|e| upns.iter().any(|u| struct_json(e.details.as_ref().unwrap()).contains(u.as_str()))),
        "analysts may read pupils"
    );
}

#[tokio::test]
async fn request_ids_mean_what_they_say_on_every_mutation() {
    let app = spawn_app().await;
    let b = submit_world(&app, 2).await;
    let urn = b.world.schools[0].urn;
    let lw_key = app.key(Role::LinkWorker, &[urn.get()]);
    let mut lw = cohorts(app.channel().await, &lw_key);
    let events =
        |action: riskid::audit::Action| app.store.audit_log().unwrap().iter().filter(|(a, _)| *a == action).count();

    // ProposeCohort: racing repeats make one proposal; a later repeat returns the same cohort.
    let (mut la, mut lb) = (lw.clone(), lw.clone());
    let (r1, r2) = tokio::join!(
        la.propose_cohort(propose(st(urn, b.latest), 40, "p-1")),
        lb.propose_cohort(propose(st(urn, b.latest), 40, "p-1"))
    );
    let first = r1.unwrap().into_inner();
    assert_eq!(r2.unwrap().into_inner().cohort_id, first.cohort_id);
    let again = lw.propose_cohort(propose(st(urn, b.latest), 40, "p-1")).await.unwrap().into_inner();
    assert_eq!(again.cohort_id, first.cohort_id);
    assert_eq!(events(riskid::audit::Action::CohortPropose), 1);
    let other = lw.propose_cohort(propose(st(urn, b.latest), 5, "p-1")).await.unwrap_err();
    assert_eq!(other.code(), Code::InvalidArgument, "same id, other content");
    assert!(other.message().contains("already used"));

    // 40 concurrent decisions on 40 different children: none conflicts.
    assert_eq!(first.members.len(), 40);
    let calls: Vec<_> = first
        .members
        .iter()
        .map(|m| {
            let mut c = lw.clone();
            let req = decision(&first, &m.upn, pb::DecisionKind::Confirm, "", "");
            tokio::spawn(async move { c.record_decision(req).await })
        })
        .collect();
    let mut aborted = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => {}
            Err(s) if s.code() == Code::Aborted => aborted += 1,
            Err(s) => panic!("{s:?}"),
        }
    }
    assert_eq!(aborted, 0);
    assert_eq!(events(riskid::audit::Action::DecisionConfirm), 40);

    // UndoDecision: a repeat does not undo twice; racing repeats give one undo; another
    // child with the same id is refused (the first release silently dropped it).
    let m0 = first.members[0].upn.clone();
    let undo = |upn: &str, rid: &str| pb::UndoDecisionRequest {
        cohort_id: first.cohort_id.clone(),
        upn: upn.into(),
        request_id: rid.into(),
    };
    let (u1, u2) = tokio::join!(la.undo_decision(undo(&m0, "u-1")), lb.undo_decision(undo(&m0, "u-1")));
    assert_eq!(u1.unwrap().into_inner(), u2.unwrap().into_inner());
    assert_eq!(events(riskid::audit::Action::DecisionUndo), 1);
    assert_eq!(lw.undo_decision(undo(&first.members[1].upn, "u-1")).await.unwrap_err().code(), Code::InvalidArgument);

    // RecordDecision: the same id on another child is refused, not silently ignored.
    let again = decision(&first, &m0, pb::DecisionKind::Remove, "data_wrong", "d-1");
    let d1 = lw.record_decision(again.clone()).await.unwrap().into_inner();
    assert_eq!(lw.record_decision(again).await.unwrap().into_inner(), d1);
    let reuse = decision(&first, &first.members[2].upn, pb::DecisionKind::Confirm, "", "d-1");
    assert_eq!(lw.record_decision(reuse).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(events(riskid::audit::Action::DecisionRemove), 1);

    // FinaliseCohort: racing repeats finalise once.
    let fin = |reason: &str| pb::FinaliseCohortRequest {
        cohort_id: first.cohort_id.clone(),
        over_capacity_reason: reason.into(),
        request_id: "f-1".into(),
    };
    let (f1, f2) = tokio::join!(la.finalise_cohort(fin("")), lb.finalise_cohort(fin("")));
    assert_eq!(f1.unwrap().into_inner(), f2.unwrap().into_inner());
    assert_eq!(events(riskid::audit::Action::CohortFinalise), 1);
    assert_eq!(lw.finalise_cohort(fin("other")).await.unwrap_err().code(), Code::InvalidArgument);

    // TrainModel: a repeat returns the same model without training again, also racing.
    let analyst = app.key(Role::Analyst, &[]);
    let mut m = ModelServiceClient::with_interceptor(app.channel().await, Bearer::new(&analyst));
    let train = |rid: &str, seed: u64| pb::TrainModelRequest {
        capacity: 5,
        seed,
        request_id: rid.into(),
        ..Default::default()
    };
    async fn model_of(c: &mut ModelServiceClient<Authed>, req: pb::TrainModelRequest) -> Result<String, tonic::Status> {
        let mut stream = c.train_model(req).await?.into_inner();
        let mut id = None;
        while let Some(msg) = stream.message().await? {
            if let Some(pb::train_model_progress::Event::Model(model)) = msg.event {
                id = Some(model.model_id);
            }
        }
        Ok(id.expect("the stream ends with the model"))
    }
    let (mut a, mut bb) = (m.clone(), m.clone());
    let (t1, t2) = tokio::join!(model_of(&mut a, train("t-1", 3)), model_of(&mut bb, train("t-1", 3)));
    let trained = t1.unwrap();
    assert_eq!(t2.unwrap(), trained, "the racing repeat waited and got the same model");
    assert_eq!(model_of(&mut m, train("t-1", 3)).await.unwrap(), trained);
    assert_eq!(events(riskid::audit::Action::ModelTrain), 1, "trained once");
    assert_eq!(model_of(&mut m, train("t-1", 4)).await.unwrap_err().code(), Code::InvalidArgument);

    // ActivateModel: racing repeats give one activation event.
    let activate = |rid: &str, reason: &str| pb::ActivateModelRequest {
        model_id: trained.clone(),
        force: true,
        reason: reason.into(),
        request_id: rid.into(),
    };
    let (mut ma, mut mb) = (m.clone(), m.clone());
    let (x1, x2) =
        tokio::join!(ma.activate_model(activate("a-1", "pilot")), mb.activate_model(activate("a-1", "pilot")));
    assert_eq!(x1.unwrap().into_inner(), x2.unwrap().into_inner());
    assert_eq!(events(riskid::audit::Action::ModelActivateForced), 1);
    assert_eq!(m.activate_model(activate("a-1", "other")).await.unwrap_err().code(), Code::InvalidArgument);

    // SubmitFeed: racing repeats store once.
    let school = app.key(Role::School, &[urn.get()]);
    let h = pb::SubmissionHeader { request_id: "s-1".into(), ..header(urn.get(), b.latest.next()) };
    let csv = riskid::synth::feed_csv(&b.world.feeds.last().unwrap().rows);
    let (mut c1, mut c2) = (app.feed(&school).await, app.feed(&school).await);
    let (s1, s2) = tokio::join!(submit(&mut c1, h.clone(), &csv), submit(&mut c2, h.clone(), &csv));
    assert_eq!(s1.unwrap(), s2.unwrap());
    assert_eq!(events(riskid::audit::Action::FeedAccept), b.world.feeds.len() + 1);

    // And the whole history verifies, with the state explained.
    let analyst_principal = riskid::auth::Principal { key_id: 0, role: Role::Analyst, schools: Default::default() };
    assert_eq!(app.app.verify_audit(&analyst_principal, None).await.unwrap().problem, None);
}

#[tokio::test]
async fn earlier_terms_keep_the_scores_that_were_live_until_rescored_on_request() {
    let app = spawn_app().await;
    let b = submit_world(&app, 2).await;
    let bundled = app.store.active_model().unwrap().unwrap().model_id;
    let analyst = app.key(Role::Analyst, &[]);
    let mut m = ModelServiceClient::with_interceptor(app.channel().await, Bearer::new(&analyst));
    let mut stream =
        m.train_model(pb::TrainModelRequest { capacity: 5, ..Default::default() }).await.unwrap().into_inner();
    let mut trained = String::new();
    while let Some(msg) = stream.message().await.unwrap() {
        if let Some(pb::train_model_progress::Event::Model(model)) = msg.event {
            trained = model.model_id;
        }
    }
    let activate = pb::ActivateModelRequest {
        model_id: trained.clone(),
        force: true,
        reason: "test".into(),
        ..Default::default()
    };
    m.activate_model(activate).await.unwrap();
    let mut risks =
        pb::risk_service_client::RiskServiceClient::with_interceptor(app.channel().await, Bearer::new(&analyst));
    let urn = b.world.schools[0].urn;
    let read =
        |t: riskid::domain::Term| pb::ListSchoolRisksRequest { school_term: Some(st(urn, t)), ..Default::default() };
    let latest = risks.list_school_risks(read(b.latest)).await.unwrap().into_inner();
    assert_eq!(latest.model_id, trained, "the activation rescored the latest term");
    let earlier = b.world.terms[0];
    let before = risks.list_school_risks(read(earlier)).await.unwrap().into_inner();
    assert_eq!(before.model_id, bundled, "an earlier term keeps what link workers saw, labelled with its model");
    assert!(!before.risks.is_empty());
    let req = pb::RescoreSchoolTermRequest {
        school_term: Some(st(urn, earlier)),
        model_id: trained.clone(),
        request_id: String::new(),
    };
    let done = m.rescore_school_term(req).await.unwrap().into_inner();
    let rows = b.world.feeds.iter().find(|f| f.urn == urn && f.term == earlier).unwrap().rows.len();
    assert_eq!(done.pupils_rescored as usize, rows);
    let after = risks.list_school_risks(read(earlier)).await.unwrap().into_inner();
    assert_eq!(after.model_id, trained);
    let v = app
        .app
        .verify_audit(&riskid::auth::Principal { key_id: 0, role: Role::Analyst, schools: Default::default() }, None)
        .await
        .unwrap();
    assert_eq!(v.problem, None);
}

/// An administrator verifying while schools submit: the chain and the state it explains are
/// read as of one moment, so feeds committed while verify runs are never reported as state
/// the chain does not explain.
#[tokio::test]
async fn verify_while_feeds_arrive_finds_nothing() {
    let app = spawn_app().await;
    let admin = app.key(Role::Admin, &[]);
    let school = app.key(Role::School, &[100001]);
    let mut feeds = app.feed(&school).await;
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        let mut t = riskid::domain::Term::parse("2023/24", "autumn").unwrap();
        for salt in 0..12 {
            submit(&mut feeds, header(100001, t), &valid_csv(300, salt)).await.unwrap();
            t = t.next();
        }
        let _ = done_tx.send(());
    });
    let mut audit = AuditServiceClient::with_interceptor(app.channel().await, Bearer::new(&admin));
    let mut runs = 0;
    loop {
        let finished = done_rx.try_recv().is_ok();
        let v = audit.verify_audit_chain(pb::VerifyAuditChainRequest::default()).await.unwrap().into_inner();
        assert!(v.ok, "verify while feeds arrive, run {runs}: {v:?}");
        runs += 1;
        if finished {
            break;
        }
    }
    writer.await.unwrap();
    assert!(runs >= 2, "verify ran while feeds arrived and after");
}
