//! Proposals and the link workers' review through the API, with the audit trail.

use riskid::api::pb::{self, audit_service_client::AuditServiceClient, cohort_service_client::CohortServiceClient};
use riskid::auth::Role;
use riskid::client::{Authed, Bearer};
use tonic::Code;

use crate::helpers::*;

fn cohorts(ch: tonic::transport::Channel, key: &str) -> CohortServiceClient<Authed> {
    CohortServiceClient::with_interceptor(ch, Bearer::new(key))
}

fn propose_req(s: pb::SchoolTerm, k: u32, force: bool) -> pb::ProposeCohortRequest {
    pb::ProposeCohortRequest { school_term: Some(s), capacity: k, seed: 9, force, ..Default::default() }
}

fn decision(c: &pb::Cohort, upn: &str, kind: pb::DecisionKind, reason: &str, rid: &str) -> pb::RecordDecisionRequest {
    pb::RecordDecisionRequest {
        cohort_id: c.cohort_id.clone(),
        upn: upn.into(),
        decision: kind as i32,
        reason_code: reason.into(),
        note: "note".into(),
        request_id: rid.into(),
    }
}

#[tokio::test]
async fn proposals_are_capacity_limited_eligible_and_reproducible() {
    let app = spawn_app().await;
    let b = submit_world(&app, 2).await;
    let urn = b.world.schools[0].urn;
    let mut lw = cohorts(app.channel().await, &app.key(Role::LinkWorker, &[urn.get()]));
    let first = lw.propose_cohort(propose_req(st(urn, b.latest), 10, false)).await.unwrap().into_inner();
    assert_eq!(first.members.len(), 10.min(first.eligible as usize));
    let feed = b.world.feeds.iter().find(|f| f.urn == urn && f.term == b.latest).unwrap();
    for m in &first.members {
        let row = feed.rows.iter().find(|r| r.upn.as_str() == m.upn).unwrap();
        assert!(!row.statutory(), "CLA/CPP children are never proposed");
        let risk = m.risk.as_ref().unwrap();
        assert!(!risk.model_id.is_empty() && risk.outcomes.iter().any(|o| !o.reasons.is_empty()));
    }
    // Repeating the proposal (unreviewed) gives the same list, replacing the first.
    let again = lw.propose_cohort(propose_req(st(urn, b.latest), 10, false)).await.unwrap().into_inner();
    let upns = |c: &pb::Cohort| c.members.iter().map(|m| m.upn.clone()).collect::<Vec<_>>();
    assert_eq!(upns(&first), upns(&again));
    assert_ne!(first.cohort_id, again.cohort_id);
    // Larger capacity than eligible: everyone eligible.
    let all = lw.propose_cohort(propose_req(st(urn, b.latest), 500, false)).await.unwrap().into_inner();
    assert_eq!(all.members.len(), all.eligible as usize);
    // Above the largest capacity: refused, naming the field.
    let err = lw.propose_cohort(propose_req(st(urn, b.latest), 100_000, false)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&err), vec![("capacity".to_string(), "OUT_OF_RANGE".to_string())]);
    // Once review starts, a new proposal needs force.
    let c = lw.propose_cohort(propose_req(st(urn, b.latest), 10, false)).await.unwrap().into_inner();
    lw.record_decision(decision(&c, &c.members[0].upn, pb::DecisionKind::Confirm, "", "")).await.unwrap();
    let err = lw.propose_cohort(propose_req(st(urn, b.latest), 10, false)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(lw.propose_cohort(propose_req(st(urn, b.latest), 10, true)).await.is_ok());
    // Bad input.
    assert_eq!(
        lw.propose_cohort(propose_req(st(urn, b.latest), 0, false)).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let never = st(urn, term("2030/31", "autumn"));
    assert_eq!(lw.propose_cohort(propose_req(never, 5, false)).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn a_full_review_with_refusals_conflicts_repeats_and_an_audit_that_detects_tampering() {
    let app = spawn_app().await;
    let b = submit_world(&app, 2).await;
    let (urn, other) = (b.world.schools[0].urn, b.world.schools[1].urn);
    let mut lw = cohorts(app.channel().await, &app.key(Role::LinkWorker, &[urn.get()]));
    let c = lw.propose_cohort(propose_req(st(urn, b.latest), 6, false)).await.unwrap().into_inner();
    let m: Vec<String> = c.members.iter().map(|m| m.upn.clone()).collect();

    // A link worker for another school is refused on every review RPC, and the cohort reads
    // as absent (NOT_FOUND, the same as an id that does not exist): ids reveal no school.
    let mut stranger = cohorts(app.channel().await, &app.key(Role::LinkWorker, &[other.get()]));
    let denied = stranger.record_decision(decision(&c, &m[0], pb::DecisionKind::Confirm, "", "")).await.unwrap_err();
    assert_eq!(denied.code(), Code::NotFound);
    assert!(!denied.message().contains(&urn.to_string()), "{}", denied.message());
    let undo = pb::UndoDecisionRequest { cohort_id: c.cohort_id.clone(), upn: m[0].clone(), request_id: String::new() };
    assert_eq!(stranger.undo_decision(undo.clone()).await.unwrap_err().code(), Code::NotFound);
    let fin = pb::FinaliseCohortRequest { cohort_id: c.cohort_id.clone(), ..Default::default() };
    assert_eq!(stranger.finalise_cohort(fin.clone()).await.unwrap_err().code(), Code::NotFound);
    // Another school's cohort reads as absent by id (ids reveal nothing), and listing
    // another school is refused.
    let by_id = pb::GetCohortRequest { cohort_id: c.cohort_id.clone(), ..Default::default() };
    assert_eq!(stranger.get_cohort(by_id.clone()).await.unwrap_err().code(), Code::NotFound);
    let list = pb::ListCohortsRequest { school_urn: urn.to_string(), ..Default::default() };
    assert_eq!(stranger.list_cohorts(list.clone()).await.unwrap_err().code(), Code::PermissionDenied);
    // Schools read their cohort but cannot decide.
    let mut school = cohorts(app.channel().await, &app.key(Role::School, &[urn.get()]));
    assert!(school.get_cohort(by_id).await.is_ok());
    let listed = school.list_cohorts(list).await.unwrap().into_inner();
    assert_eq!(listed.cohorts.len(), 1);
    assert!(listed.cohorts[0].members.is_empty(), "lists are BASIC by default");
    assert_eq!(listed.cohorts[0].proposed_count as usize, c.members.len());
    assert_eq!(
        school.record_decision(decision(&c, &m[0], pb::DecisionKind::Confirm, "", "")).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // Removal needs a reason; finalising needs every child decided.
    let no_reason = lw.record_decision(decision(&c, &m[1], pb::DecisionKind::Remove, "", "")).await.unwrap_err();
    assert_eq!(no_reason.code(), Code::InvalidArgument);
    lw.record_decision(decision(&c, &m[1], pb::DecisionKind::Remove, "family_declined", "r1")).await.unwrap();
    assert_eq!(lw.finalise_cohort(fin.clone()).await.unwrap_err().code(), Code::FailedPrecondition);

    // Concurrent decisions on one child: one wins, the other is told so.
    let (mut a, mut bb) = (lw.clone(), lw.clone());
    let (ra, rb) = tokio::join!(
        a.record_decision(decision(&c, &m[0], pb::DecisionKind::Confirm, "", "")),
        bb.record_decision(decision(&c, &m[0], pb::DecisionKind::Remove, "data_wrong", ""))
    );
    assert!(ra.is_ok() != rb.is_ok(), "exactly one wins");
    let loser = ra.err().or(rb.err()).unwrap();
    assert_eq!(loser.code(), Code::Aborted, "{}", loser.message());

    // A repeated request id returns the first result and does not apply twice.
    let first =
        lw.record_decision(decision(&c, &m[2], pb::DecisionKind::Confirm, "", "req-2")).await.unwrap().into_inner();
    let repeat =
        lw.record_decision(decision(&c, &m[2], pb::DecisionKind::Confirm, "", "req-2")).await.unwrap().into_inner();
    assert_eq!(first.members, repeat.members);

    // Undo, then decide again.
    lw.undo_decision(pb::UndoDecisionRequest { upn: m[2].clone(), ..undo.clone() }).await.unwrap();
    lw.record_decision(decision(&c, &m[2], pb::DecisionKind::Confirm, "", "")).await.unwrap();

    // Adding: not on roll is refused; an eligible child on roll is added.
    let not_on_roll =
        lw.record_decision(decision(&c, &upn(7), pb::DecisionKind::Add, "school_concern", "")).await.unwrap_err();
    assert_eq!(not_on_roll.code(), Code::InvalidArgument);
    let feed = b.world.feeds.iter().find(|f| f.urn == urn && f.term == b.latest).unwrap();
    let extra = feed.rows.iter().find(|r| !m.contains(&r.upn.as_str().to_string()) && !r.statutory()).unwrap();
    lw.record_decision(decision(&c, extra.upn.as_str(), pb::DecisionKind::Add, "school_concern", "")).await.unwrap();
    for u in &m[3..] {
        lw.record_decision(decision(&c, u, pb::DecisionKind::Confirm, "", "")).await.unwrap();
    }
    let done = lw.finalise_cohort(fin.clone()).await.unwrap().into_inner();
    assert_eq!(done.state(), pb::CohortState::Finalised);
    assert!(done.programme_ends.is_some());
    assert_eq!(
        lw.record_decision(decision(&c, &m[1], pb::DecisionKind::Confirm, "", "")).await.unwrap_err().code(),
        Code::FailedPrecondition
    );

    // The audit chain verifies, lists the decisions, and breaks when a row is altered directly.
    let analyst = app.key(Role::Analyst, &[]);
    let mut audit = AuditServiceClient::with_interceptor(app.channel().await, Bearer::new(&analyst));
    let ok = audit.verify_audit_chain(pb::VerifyAuditChainRequest::default()).await.unwrap().into_inner();
    assert!(ok.ok && ok.events_checked >= 10, "{ok:?}");
    let events = audit
        .list_audit_events(pb::ListAuditEventsRequest {
            action: pb::AuditAction::DecisionRemove as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // One removal for family_declined, plus one more if the concurrent remove won the race.
    let details: Vec<String> = events.events.iter().map(|e| struct_json(e.details.as_ref().unwrap())).collect();
    let declined: Vec<_> = details.iter().filter(|d| d.contains("family_declined")).collect();
    assert_eq!(declined.len(), 1);
    assert!(declined[0].contains("\"shown\""), "what was shown is recorded");
    let report = audit.get_override_report(pb::GetOverrideReportRequest {}).await.unwrap().into_inner();
    assert!(
        report.rows.iter().any(|r| r.dimension == "reason" && r.value == "remove: family_declined" && r.removed == 1)
    );
    let mut lw_audit = AuditServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(&app.key(Role::LinkWorker, &[urn.get()])),
    );
    assert_eq!(
        lw_audit.verify_audit_chain(pb::VerifyAuditChainRequest::default()).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    let db = rusqlite::Connection::open(app.store.path()).unwrap();
    db.execute_batch(
        "DROP TRIGGER audit_no_update; UPDATE audit_events SET event_json = replace(event_json, 'family_declined', 'data_wrong') WHERE seq = 3 OR event_json LIKE '%family_declined%';",
    )
    .unwrap();
    let broken = audit.verify_audit_chain(pb::VerifyAuditChainRequest::default()).await.unwrap().into_inner();
    assert!(!broken.ok && broken.first_broken_seq > 0, "{broken:?}");
}

#[tokio::test]
async fn a_cohort_stored_before_the_capacity_limit_still_loads() {
    let app = spawn_app().await;
    let b = submit_world(&app, 1).await;
    let urn = b.world.schools[0].urn;
    let mut lw = cohorts(app.channel().await, &app.key(Role::LinkWorker, &[urn.get()]));
    let c = lw.propose_cohort(propose_req(st(urn, b.latest), 5, false)).await.unwrap().into_inner();
    // As an earlier release could have stored it: capacity above today's limit.
    let db = rusqlite::Connection::open(app.store.path()).unwrap();
    db.execute("UPDATE cohorts SET params_json = json_set(params_json, '$.capacity', 600)", []).unwrap();
    let got = lw.get_cohort(pb::GetCohortRequest { cohort_id: c.cohort_id.clone(), ..Default::default() }).await;
    assert_eq!(got.unwrap().into_inner().capacity, 600);
    let listed = lw.list_cohorts(pb::ListCohortsRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.cohorts.len(), 1);
    assert_eq!(listed.cohorts[0].proposed_count, 5);
}

#[tokio::test]
async fn a_child_permanently_excluded_in_the_term_is_not_proposed() {
    let app = spawn_app().await;
    let b = submit_world(&app, 1).await;
    let urn = b.world.schools[0].urn;
    let mut lw = cohorts(app.channel().await, &app.key(Role::LinkWorker, &[urn.get()]));
    let first = lw.propose_cohort(propose_req(st(urn, b.latest), 5, false)).await.unwrap().into_inner();
    let top = first.members[0].upn.clone();
    assert_eq!(first.excluded_permanently, 0);
    // The school's corrected feed: the top child was permanently excluded this term.
    let feed = b.world.feeds.iter().find(|f| f.urn == urn && f.term == b.latest).unwrap();
    let mut rows = feed.rows.clone();
    rows.iter_mut().filter(|r| r.upn.as_str() == top).for_each(|r| r.permanent_exclusion = true);
    let mut c = app.feed(&app.key(Role::School, &[urn.get()])).await;
    submit(&mut c, header(urn.get(), b.latest), &riskid::synth::feed_csv(&rows)).await.unwrap();
    let again = lw.propose_cohort(propose_req(st(urn, b.latest), 5, false)).await.unwrap().into_inner();
    assert!(again.members.iter().all(|m| m.upn != top), "the excluded child is not proposed");
    assert_eq!(again.excluded_permanently, 1);
    assert_eq!(again.members.len(), 5, "the next child takes the place");
    // Nor can a link worker add them.
    let add = decision(&again, &top, pb::DecisionKind::Add, "school_concern", "");
    let e = lw.record_decision(add).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&e), vec![("upn".to_string(), "PERMANENTLY_EXCLUDED".to_string())]);
}

#[tokio::test]
async fn a_proposed_child_later_recorded_as_permanently_excluded_cannot_be_confirmed() {
    let app = spawn_app().await;
    let b = submit_world(&app, 1).await;
    let urn = b.world.schools[0].urn;
    let mut lw = cohorts(app.channel().await, &app.key(Role::LinkWorker, &[urn.get()]));
    let c = lw.propose_cohort(propose_req(st(urn, b.latest), 5, false)).await.unwrap().into_inner();
    let child = c.members[1].upn.clone();
    // The school corrects its feed after the proposal.
    let feed = b.world.feeds.iter().find(|f| f.urn == urn && f.term == b.latest).unwrap();
    let mut rows = feed.rows.clone();
    rows.iter_mut().filter(|r| r.upn.as_str() == child).for_each(|r| r.permanent_exclusion = true);
    let mut school = app.feed(&app.key(Role::School, &[urn.get()])).await;
    submit(&mut school, header(urn.get(), b.latest), &riskid::synth::feed_csv(&rows)).await.unwrap();
    let e = lw.record_decision(decision(&c, &child, pb::DecisionKind::Confirm, "", "")).await.unwrap_err();
    assert_eq!(bad_request_fields(&e), vec![("upn".to_string(), "PERMANENTLY_EXCLUDED".to_string())]);
    // Removing them, with the reason, works; the others confirm as before.
    lw.record_decision(decision(&c, &child, pb::DecisionKind::Remove, "left_school", "")).await.unwrap();
    lw.record_decision(decision(&c, &c.members[0].upn, pb::DecisionKind::Confirm, "", "")).await.unwrap();
}
