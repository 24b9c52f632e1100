//! Across terms and restarts: a finalised cohort's children are not proposed again while their
//! programme runs, and everything survives a server restart.

use std::sync::Arc;

use riskid::api::pb::{self, cohort_service_client::CohortServiceClient};
use riskid::auth::Role;
use riskid::client::Bearer;

use crate::helpers::*;

#[tokio::test]
async fn children_in_a_running_programme_are_not_proposed_again_and_state_survives_a_restart() {
    let app = spawn_app().await;
    let b = submit_world(&app, 2).await;
    let urn = b.world.schools[0].urn;
    let spring = b.latest.prev();
    let key = app.key(Role::LinkWorker, &[urn.get()]);
    let mut lw = CohortServiceClient::with_interceptor(app.channel().await, Bearer::new(&key));
    let propose = |t| pb::ProposeCohortRequest {
        school_term: Some(st(urn, t)),
        capacity: 5,
        min_year: Some(1),
        max_year: Some(6),
        seed: 4,
        ..Default::default()
    };
    let first = lw.propose_cohort(propose(spring)).await.unwrap().into_inner();
    assert!(first.excluded_year_group > 0, "Reception is outside years 1–6");
    for m in &first.members {
        let d = pb::RecordDecisionRequest {
            cohort_id: first.cohort_id.clone(),
            upn: m.upn.clone(),
            decision: pb::DecisionKind::Confirm as i32,
            ..Default::default()
        };
        lw.record_decision(d).await.unwrap();
    }
    lw.finalise_cohort(pb::FinaliseCohortRequest { cohort_id: first.cohort_id.clone(), ..Default::default() })
        .await
        .unwrap();

    let next = lw.propose_cohort(propose(b.latest)).await.unwrap().into_inner();
    let before: Vec<&str> = first.members.iter().map(|m| m.upn.as_str()).collect();
    let still_on_roll = b
        .world
        .feeds
        .iter()
        .find(|f| f.urn == urn && f.term == b.latest)
        .unwrap()
        .rows
        .iter()
        .filter(|r| before.contains(&r.upn.as_str()))
        .count();
    assert_eq!(next.excluded_in_programme as usize, still_on_roll);
    assert!(next.members.iter().all(|m| !before.contains(&m.upn.as_str())), "no child is proposed twice");

    // A restart: a new server on the same data directory sees the same state.
    let active = app.store.active_model().unwrap().unwrap().model_id;
    let reopened = Arc::new(riskid::storage::Store::open(app._dir.path()).unwrap());
    let again = riskid::app::App::new(reopened.clone(), Default::default()).unwrap();
    assert_eq!(again.active_model().model_id, active);
    let spring_cohort = reopened.open_cohort(riskid::domain::SchoolTerm { urn, term: spring }).unwrap().unwrap();
    assert_eq!(spring_cohort.state, riskid::review::CohortState::Finalised);
    let analyst = riskid::auth::Principal { key_id: 0, role: Role::Analyst, schools: Default::default() };
    let v = again.verify_audit(&analyst, None).await.unwrap();
    assert_eq!(v.problem, None);
    assert_eq!(v.events, reopened.audit_log().unwrap().len() as u64);
}

#[tokio::test]
async fn a_weighted_policy_ranks_by_the_weighted_outcomes() {
    let app = spawn_app().await;
    let b = submit_world(&app, 2).await;
    let urn = b.world.schools[1].urn;
    let mut c = CohortServiceClient::with_interceptor(app.channel().await, Bearer::new(&app.key(Role::Analyst, &[])));
    let req = |kind: i32, weights: Vec<f64>| pb::ProposeCohortRequest {
        school_term: Some(st(urn, b.latest)),
        capacity: 10,
        policy: Some(pb::Policy { kind, weights }),
        ..Default::default()
    };
    let weighted = pb::PolicyKind::Weighted as i32;
    let by_absence = c.propose_cohort(req(weighted, vec![1.0, 0.0, 0.0])).await.unwrap().into_inner();
    let p = |m: &pb::CohortMember| m.risk.as_ref().unwrap().outcomes[0].probability;
    assert!(by_absence.members.windows(2).all(|w| p(&w[0]) >= p(&w[1])), "ranked by absence risk");
    assert_eq!(by_absence.policy.unwrap().kind, weighted);
    for bad in [req(weighted, vec![1.0]), req(weighted, vec![0.0, 0.0, 0.0]), req(99, vec![]), req(0, vec![1.0])] {
        assert_eq!(c.propose_cohort(bad).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    }
}
