use std::time::Duration;

use http::{StatusCode, header};
use riskid::auth::Role;
use riskid::web::WebConfig;

use super::helpers::*;

#[tokio::test]
async fn sign_in_opens_a_strict_http_only_session_and_every_reply_has_the_security_headers() {
    let t = TestWeb::new().await;
    let k = t.key(Role::LinkWorker, &[t.urn(0)], "Wigan link worker");
    let mut c = t.client();
    let login = c.get("/login").await;
    assert_eq!(login.status, StatusCode::OK);
    let csp = login.headers.get(header::CONTENT_SECURITY_POLICY).unwrap().to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("style-src 'self'") && !csp.contains("script-src"));
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(login.headers.get(header::X_FRAME_OPTIONS).unwrap(), "DENY");
    assert_eq!(login.headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
    assert!(login.body.contains("name=\"key\"") && login.body.contains("<label class=\"label\" for=\"key\">"));
    let r = c.sign_in(&k).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let cookie = r
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("riskid_session="))
        .unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && !cookie.contains("Secure"));
    assert!(!cookie.contains(&k), "the cookie is a session token, not the key");
    // Home sends a link worker to their cohorts, which names who is signed in.
    assert_eq!(r.location(), "/");
    let home = c.get("/").await;
    assert_eq!(home.location(), "/cohorts");
    let page = c.get("/cohorts").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Link worker: Wigan link worker"));
    assert!(!page.body.contains(&k));
    // The stylesheet is served from this origin.
    let css = c.get("/static/riskid.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.body.contains(".error-summary"));
}

#[tokio::test]
async fn cookies_are_secure_when_the_listener_speaks_tls() {
    let t = TestWeb::with(WebConfig { secure_cookies: true, ..Default::default() }).await;
    let k = t.key(Role::Analyst, &[], "analyst");
    let mut c = t.client();
    let r = c.sign_in(&k).await;
    let cookies: Vec<&str> = r.headers.get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap()).collect();
    // Under TLS the cookies carry the __Host- prefix: no sibling subdomain can plant them.
    assert!(cookies.iter().any(|v| v.starts_with("__Host-riskid_session=") && v.contains("; Secure")), "{cookies:?}");
    assert!(c.cookies.keys().all(|k| k.starts_with("__Host-")), "{:?}", c.cookies.keys());
    assert_eq!(c.get("/models").await.status, StatusCode::OK);
}

#[tokio::test]
async fn wrong_and_missing_keys_are_refused_in_words_and_attempts_are_rate_limited() {
    let t = TestWeb::with(WebConfig { sign_in_per_minute: 3, ..Default::default() }).await;
    let mut c = t.client();
    let r = c.sign_in("rk_0000000000000000000000000000000000000000000000000000000000000000").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("There is a problem") && r.body.contains("not valid, or it has been revoked"));
    assert!(!c.cookies.contains_key("riskid_session"));
    let r = c.sign_in("").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("Enter your API key"));
    // A service key is for systems: no session.
    let svc = t.key(Role::Service, &[], "svc");
    let r = c.sign_in(&svc).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("service key"));
    // Posts without this browser's form token (another site's) do not use up the share.
    for _ in 0..5 {
        assert_eq!(c.post("/login", &[("key", "rk_x")]).await.status, StatusCode::FORBIDDEN);
    }
    // The fourth real attempt this minute is refused, even with a good key.
    let good = t.key(Role::Analyst, &[], "analyst");
    let r = c.sign_in(&good).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers.get(header::RETRY_AFTER).unwrap(), "60");
    assert!(!c.cookies.contains_key("riskid_session"));
}

#[tokio::test]
async fn a_sign_in_form_from_elsewhere_is_refused() {
    let t = TestWeb::new().await;
    let k = t.key(Role::Analyst, &[], "analyst");
    let mut c = t.client();
    // No form token (a cross-site form posting a key): refused, no session.
    let r = c.post("/login", &[("key", &k)]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!c.cookies.contains_key("riskid_session"));
    c.get("/login").await;
    let r = c.post("/login", &[("key", &k), ("csrf", "0123")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!c.cookies.contains_key("riskid_session"));
}

#[tokio::test]
async fn pages_need_a_session_and_an_ended_session_says_so() {
    let t = TestWeb::new().await;
    let mut anon = t.client();
    for path in ["/", "/cohorts", "/feeds", "/models", "/audit", "/risks", "/reports/overrides", "/cohorts/1"] {
        let r = anon.get(path).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(r.location(), "/login", "{path}");
    }
    let r = anon.post("/cohorts/propose", &[("school_term", "x")]).await;
    assert_eq!(r.location(), "/login");

    // Idle expiry.
    let mut c = t.signed_in(Role::Analyst, &[]).await;
    assert_eq!(c.get("/models").await.status, StatusCode::OK);
    t.web.age_sessions(Duration::from_secs(31 * 60));
    let r = c.get("/models").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/login?ended=1");
    assert!(c.get("/login?ended=1").await.body.contains("Your session has ended"));
    assert_eq!(c.get("/models").await.location(), "/login");

    // Absolute expiry: a session in use all day still ends.
    let mut c = t.signed_in(Role::Analyst, &[]).await;
    for _ in 0..16 {
        t.web.age_sessions(Duration::from_secs(29 * 60));
        assert_eq!(c.get("/models").await.status, StatusCode::OK);
    }
    t.web.age_sessions(Duration::from_secs(29 * 60));
    assert_eq!(c.get("/models").await.location(), "/login?ended=1");
}

#[tokio::test]
async fn sign_out_needs_the_token_and_ends_the_session() {
    let t = TestWeb::new().await;
    let mut c = t.signed_in(Role::Analyst, &[]).await;
    let token = c.get("/models").await.csrf();
    let r = c.post("/logout", &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(c.get("/models").await.status, StatusCode::OK);
    let saved = c.cookies.clone();
    let r = c.post("/logout", &[("csrf", &token)]).await;
    assert_eq!(r.location(), "/login?out=1");
    // The old cookie no longer works, even if kept.
    c.cookies = saved;
    assert_eq!(c.get("/models").await.location(), "/login?ended=1");
}

#[tokio::test]
async fn a_key_holds_a_bounded_number_of_sessions() {
    let t = TestWeb::with(WebConfig { sign_in_per_minute: 100, ..Default::default() }).await;
    let k = t.key(Role::Analyst, &[], "analyst");
    let mut first = t.client();
    first.sign_in(&k).await;
    assert_eq!(first.get("/models").await.status, StatusCode::OK);
    for _ in 0..riskid::web::SESSIONS_PER_KEY + 5 {
        let mut c = t.client();
        assert_eq!(c.sign_in(&k).await.status, StatusCode::SEE_OTHER);
    }
    assert_eq!(t.web.sessions_open(), riskid::web::SESSIONS_PER_KEY);
    // Signing in again ended the oldest.
    assert_eq!(first.get("/models").await.location(), "/login?ended=1");
}

#[tokio::test]
async fn revoking_the_key_ends_its_sessions() {
    let t = TestWeb::new().await;
    let k = t.key(Role::Analyst, &[], "analyst");
    let mut c = t.client();
    c.sign_in(&k).await;
    assert_eq!(c.get("/models").await.status, StatusCode::OK);
    let id = t.principal(&k).await.key_id;
    assert!(t.store.revoke_key(id, riskid::storage::now_unix(), "operator:test").unwrap());
    assert_eq!(c.get("/models").await.location(), "/login?ended=1");
}

#[tokio::test]
async fn each_role_reaches_its_pages_and_is_refused_the_others() {
    let t = TestWeb::new().await;
    let id = t.propose(0, 5).await;
    let cohort = format!("/cohorts/{id}");
    let lw = t.signed_in(Role::LinkWorker, &[t.urn(0)]).await;
    let school = t.signed_in(Role::School, &[t.urn(0)]).await;
    let analyst = t.signed_in(Role::Analyst, &[]).await;
    let admin = t.signed_in(Role::Admin, &[]).await;
    let ok = StatusCode::OK;
    let no = StatusCode::FORBIDDEN;
    let mut cs = [lw, school, analyst, admin];
    for (who, path, want) in [
        (0, "/cohorts", ok),
        (0, cohort.as_str(), ok),
        (0, "/risks", ok),
        (0, "/models", no),
        (0, "/audit", no),
        (0, "/reports/overrides", no),
        (1, "/feeds", ok),
        (1, "/risks", ok),
        (1, cohort.as_str(), ok),
        (1, "/models", no),
        (1, "/audit", no),
        (2, "/models", ok),
        (2, "/cohorts", ok),
        (2, cohort.as_str(), ok),
        (2, "/reports/overrides", ok),
        (2, "/audit", ok),
        (3, "/audit", ok),
        (0, "/outcomes", ok),
        (1, "/outcomes", ok),
        (2, "/outcomes", ok),
        (3, "/outcomes", ok),
        (3, "/cohorts", no),
        (3, "/models", no),
        (3, "/risks", no),
    ] {
        let r = cs[who].get(path).await;
        assert_eq!(r.status, want, "{path}: {}", r.body);
        if want == no {
            assert!(r.body.contains("You cannot do this"), "{path}");
        }
    }
    let [mut lw, mut school, mut analyst, _] = cs;
    // Review actions are the link worker's alone (the same table as the gRPC API): a school
    // reads its cohort without the buttons, an analyst is refused the action itself.
    let page = school.get(&cohort).await;
    assert!(!page.body.contains("/decide") && !page.body.contains("Finalise the cohort"));
    let page = lw.get(&cohort).await;
    assert!(page.body.contains("/decide") && page.body.contains("Find the child"));
    let pid = page.body.split("id=\"m-").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let r = analyst.post_from(&cohort, &format!("{cohort}/members/{pid}/decide"), &[("decision", "confirm")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = school.post_from(&cohort, &format!("{cohort}/finalise"), &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Only schools upload.
    let r = analyst.post_from("/models", "/models/x/activate", &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = lw.get("/feeds").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!r.body.contains("enctype=\"multipart/form-data\""), "a link worker has no upload form");
    // The framework's own refusals are pages too: a wrong method, an unreadable query.
    let r = analyst.get("/logout").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.body.contains("<h1>") && r.headers.get(header::CONTENT_SECURITY_POLICY).is_some());
    let r = lw.get("/risks?page=many").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("There is a problem") && !r.body.contains("deserialize"));
    // Unknown pages are a page, not a stack trace.
    let r = analyst.get("/nothing/here").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.contains("Page not found"));
}
