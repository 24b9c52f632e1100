//! Scores at ingest, explanations, stateless scoring, and who may read them.

use riskid::api::pb::{self, risk_service_client::RiskServiceClient};
use riskid::auth::Role;
use riskid::client::Bearer;
use tonic::Code;

use crate::helpers::*;

fn client(ch: tonic::transport::Channel, key: &str) -> RiskServiceClient<riskid::client::Authed> {
    RiskServiceClient::with_interceptor(ch, Bearer::new(key))
}

#[tokio::test]
async fn every_accepted_pupil_is_scored_with_the_active_model_and_reasons_match_the_data() {
    let app = spawn_app().await;
    let b = submit_world(&app, 2).await;
    let active = app.store.active_model().unwrap().unwrap().model_id;
    let feed = b.world.feeds.iter().find(|f| f.term == b.latest).unwrap();
    let mut c = client(app.channel().await, &app.key(Role::Analyst, &[]));
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_school_risks(pb::ListSchoolRisksRequest {
                school_term: Some(st(feed.urn, b.latest)),
                page_size: 50,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.model_id, active);
        all.extend(page.risks);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(all.len(), feed.rows.len(), "every accepted pupil has a score");
    assert!(all.windows(2).all(|w| w[0].any_adverse >= w[1].any_adverse), "ranked by risk");
    for r in &all {
        assert_eq!(r.model_id, active);
        assert_eq!(r.outcomes.len(), 3);
        let row = feed.rows.iter().find(|p| p.upn.as_str() == r.upn).unwrap();
        // An attendance reason that cites attendance quotes this term's rate from the row
        // (a reason cites only the facts that raised the risk: it may cite only spells).
        for o in &r.outcomes {
            let cites_rate = |x: &&pb::Reason| x.evidence.iter().any(|e| e.measure == pb::Measure::Attendance as i32);
            for reason in
                o.reasons.iter().filter(|x| x.domain == pb::ReasonDomain::Attendance as i32).filter(cites_rate)
            {
                if let Some(rate) = row.absence_rate() {
                    let shown = format!("attendance {:.0}% this term", 100.0 * (1.0 - rate));
                    assert!(reason.text.starts_with(&shown), "{} vs {shown}", reason.text);
                    // The same fact, as numbers: the value, and the school's median to compare with.
                    let e = reason
                        .evidence
                        .iter()
                        .find(|e| e.measure == pb::Measure::Attendance as i32)
                        .expect("attendance evidence");
                    assert!((e.value - (1.0 - rate)).abs() < 1e-12);
                    assert_eq!(e.compared_with, "school median");
                    assert!(e.compared_value.is_some_and(|m| (0.0..=1.0).contains(&m)));
                }
            }
            assert!(o.reasons.iter().all(|x| x.contribution > 0.0));
        }
    }
    // Band filter.
    let high = c
        .list_school_risks(pb::ListSchoolRisksRequest {
            school_term: Some(st(feed.urn, b.latest)),
            band: pb::Band::High as i32,
            outcome: pb::Outcome::PersistentAbsence as i32,
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(high.risks.iter().all(|r| r.outcomes[0].band == pb::Band::High as i32));
    assert!(high.risks.len() < all.len());

    // A pupil's history spans the terms submitted.
    let hist = c
        .get_pupil_risk(pb::GetPupilRiskRequest { upn: all[0].upn.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(!hist.history.is_empty());
}

#[tokio::test]
async fn reads_are_scoped_and_stateless_scoring_stores_nothing() {
    let app = spawn_app().await;
    let b = submit_world(&app, 2).await;
    let (a, other) = (b.world.schools[0].urn, b.world.schools[1].urn);
    let req = |urn| pb::ListSchoolRisksRequest { school_term: Some(st(urn, b.latest)), ..Default::default() };
    let mut school = client(app.channel().await, &app.key(Role::School, &[a.get()]));
    assert!(school.list_school_risks(req(a)).await.is_ok());
    assert_eq!(school.list_school_risks(req(other)).await.unwrap_err().code(), Code::PermissionDenied);
    let mut lw = client(app.channel().await, &app.key(Role::LinkWorker, &[other.get()]));
    assert!(lw.list_school_risks(req(other)).await.is_ok());
    for role in [Role::Admin, Role::Service] {
        let mut c = client(app.channel().await, &app.key(role, &[]));
        assert_eq!(c.list_school_risks(req(a)).await.unwrap_err().code(), Code::PermissionDenied, "{role}");
    }
    let theirs = b.world.feeds.iter().find(|f| f.urn == other).unwrap().rows[0].upn.as_str().to_string();
    let err = school.get_pupil_risk(pb::GetPupilRiskRequest { upn: theirs, ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "another school's pupil is invisible");

    // Stateless scoring: service role, nothing stored, validation by field.
    let mut svc = client(app.channel().await, &app.key(Role::Service, &[]));
    let scores_before = app.store.pupil_scores(&upn(42)).unwrap().len();
    let rec = pb::PupilRecord {
        upn: upn(42),
        ncyear: "9".into(),
        sex: "M".into(),
        ethnicity: "WBRI".into(),
        fsm: Some(true),
        eal: Some(false),
        sen: "K".into(),
        sessions_possible: Some(140),
        sessions_authorised: Some(20),
        sessions_unauthorised: Some(15),
        absence_spells: Some(12),
        suspensions: Some(1),
        suspension_sessions: Some(2),
        permanent_exclusion: Some(false),
        behaviour_incidents: Some(30),
        mh_referral: Some(false),
        ..Default::default()
    };
    let t = term("2025/26", "spring");
    let pupil =
        |r: pb::PupilRecord| pb::PupilToScore { school_term: Some(st(a, t)), record: Some(r), prior_terms: vec![] };
    let many: Vec<_> = (0..1000).map(|_| pupil(rec.clone())).collect();
    let out =
        svc.score_records(pb::ScoreRecordsRequest { pupils: many, ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(out.risks.len(), 1000);
    assert!(out.risks[0].outcomes[0].probability > 0.3, "35 of 140 sessions missed is a high absence risk");
    assert_eq!(app.store.pupil_scores(&upn(42)).unwrap().len(), scores_before);
    let mut bad = rec.clone();
    bad.sessions_unauthorised = Some(200);
    let err = svc
        .score_records(pb::ScoreRecordsRequest { pupils: vec![pupil(rec), pupil(bad)], ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<String> = riskid::client::rejection_rows(&err).into_iter().map(|r| r.1).collect();
    assert!(fields.iter().any(|f| f.starts_with("pupils[1].record.")), "{fields:?}");
    let mut school_key = client(app.channel().await, &app.key(Role::School, &[a.get()]));
    let denied = school_key.score_records(pb::ScoreRecordsRequest::default()).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
}
