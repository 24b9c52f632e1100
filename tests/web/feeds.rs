use futures::StreamExt;
use http::StatusCode;
use riskid::auth::Role;

use super::helpers::*;

const VALID: &[u8] = include_bytes!("../fixtures/valid-feed.csv");
const INVALID: &[u8] = include_bytes!("../fixtures/invalid-feed.csv");

fn fields<'a>(
    csrf: &'a str,
    school: &'a str,
    year: &'a str,
    term: &'a str,
    file: &'a [u8],
    dry: bool,
) -> Vec<(&'a str, Option<&'a str>, &'a [u8])> {
    let mut f = vec![
        ("csrf", None, csrf.as_bytes()),
        ("school", None, school.as_bytes()),
        ("year", None, year.as_bytes()),
        ("term", None, term.as_bytes()),
        ("file", Some("feed.csv"), file),
    ];
    if dry {
        f.push(("dry_run", None, b"yes".as_slice()));
    }
    f
}

#[tokio::test]
async fn a_data_manager_checks_uploads_and_reads_every_error_beside_its_cell() {
    let t = TestWeb::new().await;
    let urn = t.urn(0).to_string();
    let next = t.latest().next();
    let (year, term) = (next.academic_year(), next.name().as_str().to_owned());
    let mut c = t.signed_in(Role::School, &[t.urn(0)]).await;
    let page = c.get("/feeds").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("enctype=\"multipart/form-data\"") && page.body.contains("Submission history"));
    let before = t.store.all_submissions().unwrap().len();
    let csrf = page.csrf();

    // A dry run stores nothing.
    let r = c.multipart("/feeds", &fields(&csrf, &urn, &year, &term, VALID, true)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("Checked: the feed is valid") && r.body.contains("nothing was stored"));
    assert_eq!(t.store.all_submissions().unwrap().len(), before);

    // A broken feed: every error with its line, column and the cell as sent; nothing stored.
    let r = c.multipart("/feeds", &fields(&csrf, &urn, &year, &term, INVALID, false)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("Rejected: the feed has") && r.body.contains("role=\"alert\""));
    let report = riskid::ingest::parse_csv(INVALID).unwrap_err();
    assert!(report.errors.len() >= 3);
    for v in &report.errors {
        let row = format!("<td class=\"num\">{}</td><td>{}</td>", v.line, v.column);
        assert!(r.body.contains(&row), "error at line {} column {} is listed", v.line, v.column);
    }
    // The offending cell is shown as the file had it: ncyear 14 on line 3.
    assert!(r.body.contains("<td class=\"num\">3</td><td>ncyear</td><td><code class=\"cell\">14</code>"), "{}", r.body);
    assert_eq!(t.store.all_submissions().unwrap().len(), before);

    // A good feed is stored, scored and appears in the history.
    let r = c.multipart("/feeds", &fields(&csrf, &urn, &year, &term, VALID, false)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Accepted:"));
    assert_eq!(t.store.all_submissions().unwrap().len(), before + 1);
    let id = t.store.all_submissions().unwrap().iter().map(|s| s.id).max().unwrap();
    assert!(r.body.contains(&format!("href=\"/feeds/{id}\"")));
    let sub = c.get(&format!("/feeds/{id}")).await;
    assert_eq!(sub.status, StatusCode::OK);
    assert!(sub.body.contains(&next.to_string()));
    // The same file again: unchanged.
    let r = c.multipart("/feeds", &fields(&csrf, &urn, &year, &term, VALID, false)).await;
    assert!(r.body.contains("Unchanged"));
}

#[tokio::test]
async fn uploads_are_refused_clearly_and_store_nothing() {
    let t = TestWeb::new().await;
    let mine = t.urn(0).to_string();
    let other = t.urn(1).to_string();
    let next = t.latest().next();
    let (year, term) = (next.academic_year(), next.name().as_str().to_owned());
    let mut c = t.signed_in(Role::School, &[t.urn(0)]).await;
    let csrf = c.get("/feeds").await.csrf();
    let before = t.store.all_submissions().unwrap().len();
    // Another school's feed.
    let r = c.multipart("/feeds", &fields(&csrf, &other, &year, &term, VALID, false)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Missing fields: one error summary naming each.
    let r = c.multipart("/feeds", &[("csrf", None, csrf.as_bytes())]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    for want in ["Choose the term", "Choose the feed file", "Choose the school"] {
        assert!(r.body.contains(want), "{want}");
    }
    let r = c.multipart("/feeds", &fields(&csrf, &mine, "2025-26", &term, VALID, false)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("academic year like 2025/26"));
    // No CSRF token: refused.
    let r = c.multipart("/feeds", &fields("", &mine, &year, &term, VALID, false)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Larger than the server accepts (the gRPC limit): refused, nothing stored.
    let big = vec![b'a'; t.app.limits().max_feed_bytes + 1];
    let r = c.multipart("/feeds", &fields(&csrf, &mine, &year, &term, &big, false)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert!(r.body.contains("too large"));
    assert_eq!(t.store.all_submissions().unwrap().len(), before);
    // Link workers and analysts do not upload.
    for role in [Role::LinkWorker, Role::Analyst] {
        let mut o = t.signed_in(role, &[t.urn(0)]).await;
        let token = o.get("/risks").await.csrf();
        let r = o.multipart("/feeds", &fields(&token, &mine, &year, &term, VALID, false)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{role}");
    }
    assert_eq!(t.store.all_submissions().unwrap().len(), before);
}

#[tokio::test]
async fn scores_are_read_only_and_scoped_to_the_key() {
    let t = TestWeb::new().await;
    let mut c = t.signed_in(Role::School, &[t.urn(0)]).await;
    let r = c.get("/risks").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Persistent absence") && r.body.contains(&format!("School {}", t.urn(0))));
    assert!(!r.body.contains(&format!("School {}", t.urn(1))), "only the key's school is offered");
    let link = r.links().into_iter().find(|l| l.starts_with("/risks/")).expect("a pupil link");
    assert!(!holds_upn(&link));
    let p = c.get(&link).await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.body.contains("Read only") && p.body.contains("Chance of each outcome"));
    assert!(!p.body.contains("/decide"));
    // Another school's scores, by URL: refused.
    let other = format!("/risks?school_term={}:{}", t.urn(1), t.latest().index());
    assert_eq!(c.get(&other).await.status, StatusCode::FORBIDDEN);
    let parts: Vec<&str> = link.split('/').collect();
    let other_pupil = format!("/risks/{}/{}/{}", t.urn(1), parts[3], parts[4]);
    assert_eq!(c.get(&other_pupil).await.status, StatusCode::FORBIDDEN);
    assert_eq!(c.get(&format!("/risks/{}/{}/pnothing", parts[2], parts[3])).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_stalled_upload_is_ended_and_frees_its_slot() {
    let limits =
        riskid::app::Limits { ingest_idle_timeout: std::time::Duration::from_millis(300), ..Default::default() };
    let t = TestWeb::with_limits(riskid::web::WebConfig::default(), limits).await;
    let mut c = t.signed_in(Role::School, &[t.urn(0)]).await;
    let csrf = c.get("/feeds").await.csrf();
    let cookie: Vec<String> = c.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let boundary = "b0undary";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.csv\"\r\n\r\nupn,"
    );
    // The first bytes, then nothing more, ever.
    let stream = futures::stream::iter([Ok::<_, std::io::Error>(axum::body::Bytes::from(head))])
        .chain(futures::stream::pending());
    let req = http::Request::post("/feeds")
        .header(http::header::COOKIE, cookie.join("; "))
        .header(http::header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
        .body(axum::body::Body::from_stream(stream))
        .unwrap();
    use tower::ServiceExt;
    let resp =
        tokio::time::timeout(std::time::Duration::from_secs(20), t.router().oneshot(req)).await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
    // The key's upload slots and the ingest slot are free again: a good upload goes through.
    let next = t.latest().next();
    let urn = t.urn(0).to_string();
    let r = c.multipart("/feeds", &fields(&csrf, &urn, &next.academic_year(), next.name().as_str(), VALID, true)).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn the_cell_beside_an_error_is_from_the_line_the_error_names() {
    let t = TestWeb::new().await;
    let urn = t.urn(0).to_string();
    let next = t.latest().next();
    let mut c = t.signed_in(Role::School, &[t.urn(0)]).await;
    let csrf = c.get("/feeds").await.csrf();
    // A blank line and a quoted cell across two lines shift the csv crate's record count
    // away from the file's line numbers, which the report uses.
    let text = String::from_utf8(VALID.to_vec()).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let header = lines.remove(0);
    let bad = lines[1].replacen(",5,", ",14,", 1).replacen(",4,", ",14,", 1);
    let mut row: Vec<String> = bad.split(',').map(str::to_owned).collect();
    row[1] = "14".into();
    let feed = format!("{header}\n{}\n\n{}\n", lines[0], row.join(","));
    let r = c
        .multipart("/feeds", &fields(&csrf, &urn, &next.academic_year(), next.name().as_str(), feed.as_bytes(), true))
        .await;
    let report = riskid::ingest::parse_csv(feed.as_bytes()).unwrap_err();
    let v = report.errors.iter().find(|v| v.column == "ncyear").expect("the ncyear error");
    assert_eq!(v.line, 4, "the file's own line");
    assert!(r.body.contains("<td class=\"num\">4</td><td>ncyear</td><td><code class=\"cell\">14</code>"), "{}", r.body);
}
