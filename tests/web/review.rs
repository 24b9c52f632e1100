use http::StatusCode;
use riskid::auth::Role;
use riskid::domain::SchoolTerm;

use super::helpers::*;

/// The member ids (opaque) on a cohort page, in rank order.
fn member_ids(body: &str) -> Vec<String> {
    body.split("<tr id=\"m-").skip(1).map(|s| s.split('"').next().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn a_link_worker_reviews_a_whole_cohort_and_finalises_it() {
    let t = TestWeb::new().await;
    let mut c = t.signed_in(Role::LinkWorker, &[t.urn(0)]).await;
    // Propose through the page.
    let list = c.get("/cohorts").await;
    let value = format!("{}:{}", t.urn(0), t.latest().index());
    assert!(list.body.contains(&value), "the school's latest term is offered");
    let r = c.post_from("/cohorts", "/cohorts/propose", &[("school_term", &value), ("capacity", "0")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("There is a problem") && r.body.contains("href=\"#capacity\""));
    let r = c.post_from("/cohorts", "/cohorts/propose", &[("school_term", &value), ("capacity", "4")]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let cohort = r.location().to_owned();
    let id: i64 = cohort.trim_start_matches("/cohorts/").parse().unwrap();
    let page = c.get(&cohort).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("0 decided, 4 not decided"), "progress");
    for words in ["Persistent absence", "Year ", "Not decided", "High", "%"] {
        assert!(page.body.contains(words), "{words}");
    }
    let ids = member_ids(&page.body);
    assert_eq!(ids.len(), 4);

    // The child's page: reasons with the data behind them, an attendance chart with its table.
    let child = c.get(&format!("{cohort}/members/{}", ids[0])).await;
    assert_eq!(child.status, StatusCode::OK);
    for words in [
        "Why: what raised the risk",
        "This child",
        "Earlier",
        "Compared with",
        "<svg",
        "role=\"img\"",
        "Attendance by term",
    ] {
        assert!(child.body.contains(words), "{words}");
    }

    // Confirm the first; remove the second (a reason is needed); confirm the rest.
    let decide = |i: usize| format!("{cohort}/members/{}/decide", ids[i]);
    let r = c.post_from(&cohort, &decide(0), &[("decision", "confirm")]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = c.post_from(&cohort, &decide(1), &[("decision", "remove")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("Choose why this child is removed") && r.body.contains("href=\"#reason\""));
    let r = c.post_from(&cohort, &decide(1), &[("decision", "remove"), ("reason", "other"), ("note", "")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "other needs a note");
    let r = c
        .post_from(
            &cohort,
            &decide(1),
            &[("decision", "remove"), ("reason", "family_declined"), ("note", "prefers not")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    for i in 2..4 {
        c.post_from(&cohort, &decide(i), &[("decision", "confirm")]).await;
    }
    let page = c.get(&cohort).await;
    assert!(page.body.contains("4 decided, 0 not decided"));
    assert!(page.body.contains("Removed: family declined") && page.body.contains("Confirmed"));
    assert!(page.body.contains("test link_worker"), "who decided is shown");

    // Add a child: find by UPN (in the form body), see their scores, then add with a reason.
    let cur = t.app.store().current_rows(SchoolTerm { urn: t.urn(0), term: t.latest() }).unwrap();
    let members = t.app.get_cohort_by_id(&t.principal(&t.key(Role::Analyst, &[], "a")).await, id).await.unwrap();
    let extra = cur.iter().find(|r| members.member(&r.upn).is_none() && !r.permanent_exclusion).unwrap().upn.clone();
    let r = c.post_from(&cohort, &format!("{cohort}/find"), &[("upn", "not a upn")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("13-character UPN"));
    let found = c.post_from(&cohort, &format!("{cohort}/find"), &[("upn", extra.as_str())]).await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    assert!(found.body.contains("This child is on roll") && found.body.contains("Chance of each outcome"));
    assert!(!found.body.contains(extra.as_str()), "the page does not echo the UPN");
    let pid = hidden(&found.body, "pid");
    let token = found.csrf();
    let r = c.post(&format!("{cohort}/add"), &[("pid", &pid), ("csrf", &token)]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("Choose why this child is added"));
    let r = c.post(&format!("{cohort}/add"), &[("pid", &pid), ("reason", "school_concern"), ("csrf", &token)]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = c.get(&cohort).await;
    assert!(page.body.contains("Added: concern raised by the school"));
    assert!(page.body.contains("4 of 4 places"), "three confirmed and one added");

    // Undo the removal, then remove again.
    let r = c.post_from(&cohort, &format!("{cohort}/members/{}/undo", ids[1]), &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = c.get(&cohort).await;
    assert!(page.body.contains("4 decided, 1 not decided") && !page.body.contains("Removed: family declined"));
    assert!(page.body.contains("Decide for every child before you finalise"));
    let r = c.post_from(&cohort, &format!("{cohort}/finalise"), &[]).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "undecided children");
    c.post_from(&cohort, &decide(1), &[("decision", "remove"), ("reason", "already_supported")]).await;

    // Finalise: the page then shows the frozen list and no actions.
    let r = c.post_from(&cohort, &format!("{cohort}/finalise"), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("The cohort is finalised"));
    let page = c.get(&cohort).await;
    assert!(page.body.contains("Finalised on "));
    assert!(!page.body.contains("/decide") && !page.body.contains("/undo") && !page.body.contains("Find the child"));
    let c2 = t.app.get_cohort_by_id(&t.principal(&t.key(Role::Analyst, &[], "a")).await, id).await.unwrap();
    assert_eq!(c2.final_list().len(), 4);
    assert!(c2.final_list().contains(&extra));
    // Every decision is in the audit chain.
    let analyst = t.principal(&t.key(Role::Analyst, &[], "a")).await;
    let events = t.app.audit_events(&analyst, 0, 1000, None, None).await.unwrap();
    let count = |a: &str| events.iter().filter(|e| e.event.action.as_str() == a).count();
    assert_eq!(count("decision.confirm"), 3);
    assert_eq!(count("decision.remove"), 2);
    assert_eq!(count("decision.add"), 1);
    assert_eq!(count("decision.undo"), 1);
    assert_eq!(count("cohort.finalise"), 1);
}

#[tokio::test]
async fn over_capacity_needs_a_reason_to_finalise() {
    let t = TestWeb::new().await;
    let id = t.propose(0, 2).await;
    let cohort = format!("/cohorts/{id}");
    let mut c = t.signed_in(Role::LinkWorker, &[t.urn(0)]).await;
    let ids = member_ids(&c.get(&cohort).await.body);
    for pid in &ids {
        c.post_from(&cohort, &format!("{cohort}/members/{pid}/decide"), &[("decision", "confirm")]).await;
    }
    let cur = t.app.store().current_rows(SchoolTerm { urn: t.urn(0), term: t.latest() }).unwrap();
    let c0 = t.app.get_cohort_by_id(&t.principal(&t.key(Role::Analyst, &[], "a")).await, id).await.unwrap();
    let extra = cur.iter().find(|r| c0.member(&r.upn).is_none() && !r.permanent_exclusion).unwrap().upn.clone();
    let found = c.post_from(&cohort, &format!("{cohort}/find"), &[("upn", extra.as_str())]).await;
    let pid = hidden(&found.body, "pid");
    let token = found.csrf();
    c.post(&format!("{cohort}/add"), &[("pid", &pid), ("reason", "family_request"), ("csrf", &token)]).await;
    let page = c.get(&cohort).await;
    assert!(page.body.contains("1 over capacity") && page.body.contains("id=\"over_capacity_reason\""));
    let r = c.post_from(&cohort, &format!("{cohort}/finalise"), &[("over_capacity_reason", "")]).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains("There is a problem") && r.body.contains("#over_capacity_reason"));
    let r = c
        .post_from(&cohort, &format!("{cohort}/finalise"), &[("over_capacity_reason", "one extra place agreed")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(c.get(&cohort).await.body.contains("one extra place agreed"));
}

#[tokio::test]
async fn state_changes_need_the_sessions_csrf_token() {
    let t = TestWeb::new().await;
    let id = t.propose(0, 3).await;
    let cohort = format!("/cohorts/{id}");
    let mut c = t.signed_in(Role::LinkWorker, &[t.urn(0)]).await;
    let ids = member_ids(&c.get(&cohort).await.body);
    let path = format!("{cohort}/members/{}/decide", ids[0]);
    let r = c.post(&path, &[("decision", "confirm")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("The form has expired"));
    // Another session's token is not this one's.
    let mut other = t.signed_in(Role::LinkWorker, &[t.urn(0)]).await;
    let theirs = other.get(&cohort).await.csrf();
    let r = c.post(&path, &[("decision", "confirm"), ("csrf", &theirs)]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    for action in ["undo", "decide"] {
        let r = c.post(&format!("{cohort}/members/{}/{action}", ids[1]), &[("csrf", "deadbeef")]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{action}");
    }
    for p in ["finalise", "find", "add"] {
        assert_eq!(c.post(&format!("{cohort}/{p}"), &[]).await.status, StatusCode::FORBIDDEN, "{p}");
    }
    assert_eq!(c.post("/cohorts/propose", &[]).await.status, StatusCode::FORBIDDEN);
    // Nothing changed.
    assert!(c.get(&cohort).await.body.contains("0 decided, 3 not decided"));
}

#[tokio::test]
async fn another_schools_cohort_reads_as_absent() {
    let t = TestWeb::new().await;
    let id = t.propose(0, 3).await;
    let cohort = format!("/cohorts/{id}");
    let mut mine = t.signed_in(Role::LinkWorker, &[t.urn(0)]).await;
    let ids = member_ids(&mine.get(&cohort).await.body);
    let mut theirs = t.signed_in(Role::LinkWorker, &[t.urn(1)]).await;
    let r = theirs.get(&cohort).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(!r.body.contains(&t.urn(0).to_string()), "the refusal names no school");
    assert_eq!(theirs.get(&format!("{cohort}/members/{}", ids[0])).await.status, StatusCode::NOT_FOUND);
    let token = theirs.get("/cohorts").await.csrf();
    let r =
        theirs.post(&format!("{cohort}/members/{}/decide", ids[0]), &[("decision", "confirm"), ("csrf", &token)]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = theirs.post(&format!("{cohort}/finalise"), &[("csrf", &token)]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(!theirs.get("/cohorts").await.body.contains(&format!("/cohorts/{id}\"")), "not listed");
    // A school-scoped key cannot propose for a school it does not cover.
    let value = format!("{}:{}", t.urn(0), t.latest().index());
    let r = theirs.post("/cohorts/propose", &[("school_term", &value), ("capacity", "3"), ("csrf", &token)]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(mine.get(&cohort).await.body.contains("0 decided, 3 not decided"));
}

#[tokio::test]
async fn a_conflicting_concurrent_decision_is_explained() {
    let t = TestWeb::new().await;
    let id = t.propose(0, 3).await;
    let cohort = format!("/cohorts/{id}");
    let mut a = t.signed_in(Role::LinkWorker, &[t.urn(0)]).await;
    let mut b = t.signed_in(Role::LinkWorker, &[t.urn(0)]).await;
    let page_a = a.get(&cohort).await;
    let page_b = b.get(&cohort).await;
    let ids = member_ids(&page_a.body);
    let path = format!("{cohort}/members/{}/decide", ids[0]);
    // Both loaded the page while the child was undecided; A decides first.
    let r = a.post(&path, &[("decision", "confirm"), ("csrf", &page_a.csrf())]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = b.post(&path, &[("decision", "remove"), ("reason", "data_wrong"), ("csrf", &page_b.csrf())]).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains("Someone else recorded a decision for this child"), "{}", r.body);
    assert!(r.body.contains("Confirmed"), "the page shows the decision that won");
    assert!(!r.body.contains("panicked") && !r.body.contains("Internal"));
}

#[tokio::test]
async fn no_url_names_a_pupil() {
    let t = TestWeb::new().await;
    let id = t.propose(0, 4).await;
    let mut c = t.signed_in(Role::LinkWorker, &[t.urn(0)]).await;
    let mut seen = std::collections::BTreeSet::new();
    let mut queue = vec!["/cohorts".to_string(), format!("/cohorts/{id}"), "/risks".to_string()];
    let mut pages = 0;
    while let Some(p) = queue.pop() {
        if !seen.insert(p.clone()) || pages > 60 {
            continue;
        }
        let r = c.get(&p).await;
        pages += 1;
        assert!(!holds_upn(&p), "a UPN in {p}");
        for l in r.links() {
            assert!(!holds_upn(&l), "a UPN in a link on {p}: {l}");
            let l = l.split('#').next().unwrap().to_owned();
            if l.starts_with('/') && !l.starts_with("/static") && !l.contains("/decide") && !l.contains("/undo") {
                queue.push(l.replace("&amp;", "&"));
            }
        }
    }
    assert!(pages > 10, "crawled {pages} pages");
}

#[tokio::test]
async fn pupil_ids_are_opaque_and_the_same_after_a_restart() {
    let t = TestWeb::new().await;
    let upn = t.world.feeds[0].rows[0].upn.as_str().to_owned();
    let again = riskid::web::Web::new(t.app.clone(), riskid::web::WebConfig::default());
    assert_eq!(t.web.pid(&upn), again.pid(&upn), "a restarted server addresses the child alike");
    assert!(!t.web.pid(&upn).contains(&upn[1..]) && !holds_upn(&t.web.pid(&upn)));
    let other = t.world.feeds[0].rows[1].upn.as_str().to_owned();
    assert_ne!(t.web.pid(&upn), t.web.pid(&other));
    // Another store (its own secret key) gives other ids.
    let elsewhere = TestWeb::new().await;
    assert_ne!(t.web.pid(&upn), elsewhere.web.pid(&upn));
}
