use http::StatusCode;
use riskid::auth::Role;

use super::helpers::*;

#[tokio::test]
async fn an_analyst_reads_models_and_a_card_with_the_numbers() {
    let t = TestWeb::new().await;
    let mut c = t.signed_in(Role::Analyst, &[]).await;
    let list = c.get("/models").await;
    assert_eq!(list.status, StatusCode::OK);
    let model = t.app.active_model().model_id.clone();
    assert!(list.body.contains(&format!("href=\"/models/{model}\"")) && list.body.contains("Active"));
    let card = c.get(&format!("/models/{model}")).await;
    assert_eq!(card.status, StatusCode::OK);
    for words in [
        "Metrics against the baselines",
        "status",
        "DfE absence rule",
        "Precision at capacity",
        "Reliability by bin",
        "Fairness at capacity",
        "Selection ratio",
        "False-negative rate",
        "<svg",
        "role=\"img\"",
        "Model family, chosen per outcome",
        "logistic regression",
        "Live performance, term by term",
    ] {
        assert!(card.body.contains(words), "{words}");
    }
    // Live performance: the scores shown in each term with a next term, judged against it.
    let analyst = t.principal(&t.key(Role::Analyst, &[], "live")).await;
    let live = t.app.live_performance(&analyst, model.clone()).await.unwrap();
    if let Some(first) = live.terms.first() {
        assert!(card.body.contains("judged against the next term"));
        assert!(card.body.contains(&first.term.to_string()));
    } else {
        assert!(card.body.contains("needs the term after"));
    }
    // The fairness table has numbers: group sizes and rates, not only flags.
    let artifact = t.app.active_model();
    let g = &artifact.outcomes[0].evaluation.fairness.groups[0];
    assert!(card.body.contains(&format!("<td class=\"num\">{}</td>", g.count)));
    // The active model offers no activation.
    assert!(!card.body.contains("/activate"));
    // Evaluate on the store's data (one year: the last labelled term exists).
    let r = c.post_from(&format!("/models/{model}"), &format!("/models/{model}/evaluate"), &[]).await;
    assert!(r.status == StatusCode::OK || r.status == StatusCode::CONFLICT, "{}", r.status);
    if r.status == StatusCode::OK {
        assert!(r.body.contains("Evaluation on the latest data"));
    }
    // Unknown model.
    assert_eq!(c.get("/models/m-nothing").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn activation_below_the_baselines_needs_force_and_a_reason() {
    let t = TestWeb::new().await;
    // A stored model that does not beat the baselines: the bundled one, with a flag cleared.
    let mut a = (*t.app.active_model()).clone();
    a.model_id = "m-below".into();
    for o in &mut a.outcomes {
        o.evaluation.beats_baselines = false;
    }
    assert!(!a.beats_baselines());
    let json = a.to_json();
    let now = riskid::storage::now_unix();
    let event = riskid::audit::NewEvent {
        at: now,
        actor_key_id: 0,
        actor_role: "analyst".into(),
        action: riskid::audit::Action::ModelTrain,
        school_urn: None,
        subject: "model m-below".into(),
        details: serde_json::json!({ "model_id": "m-below", "artifact_sha256": riskid::audit::sha256_hex(json.as_bytes()) }),
    };
    assert!(t.store.save_model("m-below", &json, now, None, event).unwrap());
    let mut c = t.signed_in(Role::Analyst, &[]).await;
    let page = c.get("/models/m-below").await;
    assert!(page.body.contains("Activate it anyway?") && page.body.contains("id=\"force-yes\""));
    let r = c.post_from("/models/m-below", "/models/m-below/activate", &[("force", "no")]).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains("does not beat the baselines"));
    let r = c.post_from("/models/m-below", "/models/m-below/activate", &[("force", "yes"), ("reason", " ")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("href=\"#reason\""));
    assert_ne!(t.app.active_model().model_id, "m-below");
    let r = c
        .post_from(
            "/models/m-below",
            "/models/m-below/activate",
            &[("force", "yes"), ("reason", "trial in one borough")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(t.app.active_model().model_id, "m-below");
    assert!(c.get("/models/m-below").await.body.contains("Active: its scores"));
}

#[tokio::test]
async fn the_override_report_and_the_audit_chain() {
    let t = TestWeb::new().await;
    let id = t.propose(0, 3).await;
    let cohort = format!("/cohorts/{id}");
    let mut lw = t.signed_in(Role::LinkWorker, &[t.urn(0)]).await;
    let page = lw.get(&cohort).await;
    let ids: Vec<String> =
        page.body.split("<tr id=\"m-").skip(1).map(|s| s.split('"').next().unwrap().to_owned()).collect();
    lw.post_from(
        &cohort,
        &format!("{cohort}/members/{}/decide", ids[0]),
        &[("decision", "remove"), ("reason", "already_supported")],
    )
    .await;
    let mut c = t.signed_in(Role::Analyst, &[]).await;
    let r = c.get("/reports/overrides").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.contains("remove: already_supported")
            && r.body.contains("<svg")
            && r.body.contains("Override rate by school")
    );
    let r = c.get("/audit").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Verified"));
    let mut admin = t.signed_in(Role::Admin, &[]).await;
    assert!(admin.get("/audit").await.body.contains("Verified"));
    assert_eq!(admin.get("/").await.location(), "/audit");
}
