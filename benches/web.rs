//! Server-side rendering of the web app's pages for a 2,000-pupil secondary: the cohort page
//! (target under 50 ms), a child's page, and the school's pupils' scores (all 2,000 rows).
//! Each request goes through the whole router (session, access, the use case, the store,
//! the template). Prints figures; run with `cargo bench --bench web`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use http::{Request, header};
use riskid::app::{App, FeedBody, Limits, ProposeInput};
use riskid::auth::{Role, generate_key};
use riskid::cohort::{CohortParams, Policy};
use riskid::domain::{SchoolTerm, Urn};
use riskid::storage::{NewKey, Store, now_unix};
use riskid::synth::{Phase, WorldConfig, feed_csv, generate};
use riskid::web::{Web, WebConfig};
use tower::ServiceExt;

fn key(store: &Store, role: Role, schools: &[Urn]) -> String {
    let (k, hash, prefix) = generate_key();
    let schools: BTreeSet<Urn> = schools.iter().copied().collect();
    let nk =
        NewKey { key_hash: &hash, prefix: &prefix, role, schools: &schools, label: "bench", created_at: now_unix() };
    store.create_key(&nk, "operator:bench").unwrap();
    k
}

async fn get(router: &axum::Router, path: &str, cookie: &str) -> (http::StatusCode, http::HeaderMap, String) {
    let req = Request::get(path).header(header::COOKIE, cookie).body(Body::empty()).unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = axum::body::to_bytes(resp.into_body(), 64 << 20).await.unwrap();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

fn stats(name: &str, mut ms: Vec<f64>, bytes: usize) {
    ms.sort_by(f64::total_cmp);
    let p = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name:<34} median {:>6.2} ms  p95 {:>6.2} ms  max {:>6.2} ms  ({} KiB)",
        p(0.5),
        p(0.95),
        p(1.0),
        bytes / 1024
    );
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let app = Arc::new(App::new(store.clone(), Limits::default()).unwrap());
    let world =
        generate(&WorldConfig { schools: 2, years: 1, seed: 4, secondary_year_size: 400, ..Default::default() })
            .unwrap();
    let sec = world.schools.iter().find(|s| s.phase == Phase::Secondary).unwrap().urn;
    let loader = app.authenticate(&key(&store, Role::School, &[sec])).await.unwrap();
    let feeds: Vec<_> = world.feeds.iter().filter(|f| f.urn == sec).collect();
    for f in &feeds {
        app.submit_feed(loader.may_submit(sec).unwrap(), f.term, FeedBody::Csv(feed_csv(&f.rows)), None, false)
            .await
            .unwrap();
    }
    let term = feeds.last().unwrap().term;
    let pupils = feeds.last().unwrap().rows.len();
    let lw_key = key(&store, Role::LinkWorker, &[sec]);
    let lw = app.authenticate(&lw_key).await.unwrap();
    let params = CohortParams { capacity: 36, min_year: 0, max_year: 13, policy: Policy::AnyAdverse, seed: 1 };
    let st = SchoolTerm { urn: sec, term };
    let cohort = app
        .propose_cohort(&lw, ProposeInput { school_term: st, params, force: false, request_id: None })
        .await
        .unwrap();
    println!("school {sec}, {term}: {pupils} pupils on roll, a cohort of {} proposed", cohort.members.len());

    let web = Web::new(app.clone(), WebConfig::default());
    let router = riskid::web::router(web.clone());
    // Sign in once, as a browser would.
    let login = router.clone().oneshot(Request::get("/login").body(Body::empty()).unwrap()).await.unwrap();
    let pre = login.headers().get(header::SET_COOKIE).unwrap().to_str().unwrap().split(';').next().unwrap().to_owned();
    let page = String::from_utf8(axum::body::to_bytes(login.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let req = Request::post("/login")
        .header(header::COOKIE, &pre)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("key={lw_key}&csrf={csrf}")))
        .unwrap();
    let signed = router.clone().oneshot(req).await.unwrap();
    let cookie = signed
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .find(|c| c.starts_with("riskid_session="))
        .unwrap();

    let cohort_path = format!("/cohorts/{}", cohort.id);
    let (status, _, body) = get(&router, &cohort_path, &cookie).await;
    assert!(status.is_success(), "{status}");
    let pid = body.split("<tr id=\"m-").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let risks = format!("/risks?school_term={}:{}", sec, term.index());
    for (name, path, n) in [
        ("cohort page (36 children)", cohort_path.clone(), 200),
        ("a child's page (reasons, chart)", format!("{cohort_path}/members/{pid}"), 200),
        ("pupils' scores (every pupil)", risks, 30),
    ] {
        // Warm the caches once, then measure.
        let (status, _, body) = get(&router, &path, &cookie).await;
        assert!(status.is_success(), "{name}: {status}");
        let mut ms = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let (s, _, b) = get(&router, &path, &cookie).await;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            assert!(s.is_success() && b.len() == body.len());
        }
        stats(name, ms, body.len());
    }
}
