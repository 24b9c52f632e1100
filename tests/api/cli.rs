//! The command line as a data manager uses it: keys, submit, list.

use std::process::{Command, Output};

use crate::helpers::*;

fn riskid(args: &[&str], key: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_riskid"));
    cmd.args(args).env_remove("RISKID_KEY").env("NO_COLOR", "1");
    if let Some(k) = key {
        cmd.env("RISKID_KEY", k);
    }
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn keys_create_prints_the_key_alone_and_list_never_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = riskid(&["keys", "create", "--role", "school", "--school", "100001", "--data-dir", d], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = text(&out.stdout);
    assert_eq!(key.lines().count(), 1);
    assert!(key.starts_with("rk_") && key.trim().len() == 67, "{key}");
    let list = text(&riskid(&["keys", "list", "--data-dir", d], None).stdout);
    assert!(list.contains("school") && list.contains("100001") && !list.contains(key.trim()));

    let refused = riskid(&["keys", "create", "--role", "link_worker", "--data-dir", d], None);
    assert_eq!(refused.status.code(), Some(2), "usage");
    assert!(text(&refused.stderr).contains("--school"), "{}", text(&refused.stderr));
    assert_eq!(riskid(&["keys", "revoke", "99", "--data-dir", d], None).status.code(), Some(5), "not found");
    let store = riskid::storage::Store::open(dir.path()).unwrap();
    let events = store.audit_log().unwrap();
    assert!(events.iter().any(|(a, _)| *a == riskid::audit::Action::KeyCreate), "key changes are audited");
}

#[tokio::test]
async fn submit_prints_a_report_and_exits_non_zero_on_rejection() {
    let app = spawn_app().await;
    let key = app.key(riskid::auth::Role::School, &[SCHOOL_A]);
    let server = format!("http://{}", app.addr);
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let run = move |file: &'static str, key: String, server: String| {
        tokio::task::spawn_blocking(move || {
            let path = format!("{fixtures}/{file}");
            let args =
                ["submit", "--server", &server, "--school", "100001", "--year", "2025/26", "--term", "autumn", &path];
            riskid(&args, Some(&key))
        })
    };
    let ok = run("valid-feed.csv", key.clone(), server.clone()).await.unwrap();
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let report = text(&ok.stdout);
    assert!(report.contains("ACCEPTED") && report.contains("10 pupil rows, 2 warning(s)"), "{report}");

    let bad = run("invalid-feed.csv", key.clone(), server.clone()).await.unwrap();
    assert_eq!(bad.status.code(), Some(3), "3: rejected input");
    let report = text(&bad.stdout);
    assert!(report.contains("REJECTED") && report.contains("9 error(s)"), "{report}");
    assert!(report.lines().any(|l| l.contains("  11  sdq_emotional")), "{report}");

    let list = tokio::task::spawn_blocking(move || riskid(&["submissions", "list", "--server", &server], Some(&key)))
        .await
        .unwrap();
    assert!(text(&list.stdout).lines().filter(|l| l.contains("100001")).count() == 1);
}

#[tokio::test]
async fn a_feed_with_5000_errors_prints_the_first_1000_and_the_total_without_terminal_escapes() {
    let app = spawn_app().await;
    let key = app.key(riskid::auth::Role::School, &[SCHOOL_A]);
    let server = format!("http://{}", app.addr);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.csv");
    // 5,000 rows with a bad year group; an unknown column whose name holds a terminal escape.
    let mut csv = format!("{},\u{1b}[2Jnote", riskid::ingest::contract_header());
    for i in 0..5_000u64 {
        csv.push_str(&format!("\n{},99,F,WBRI,N,N,N,,,,140,0,0,,0,,N,,,,,,,,,N,x", upn(i)));
    }
    std::fs::write(&path, csv).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let p = path.to_str().unwrap();
        riskid(
            &["submit", "--server", &server, "--school", "100001", "--year", "2025/26", "--term", "autumn", p],
            Some(&key),
        )
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    let rows = report.lines().filter(|l| l.contains(" ncyear ")).count();
    assert_eq!(rows, 1_000, "the CLI fetched the full report");
    assert!(report.contains("5000 error(s) in all (the first 1000 shown)"), "{}", &report[report.len() - 300..]);
    assert!(!report.contains('\u{1b}') && !text(&out.stderr).contains('\u{1b}'));
}

/// Runs the CLI off the async threads (it blocks on its own runtime).
async fn cli(args: Vec<String>, key: Option<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        riskid(&args, key.as_deref())
    })
    .await
    .unwrap()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn reads_come_as_text_json_or_csv_at_full_precision_and_never_silently_truncated() {
    let app = spawn_app().await;
    let b = submit_world(&app, 1).await;
    let urn = b.world.schools[0].urn.to_string();
    let key = app.key(riskid::auth::Role::Analyst, &[]);
    let server = format!("http://{}", app.addr);
    let (year, term) = (b.latest.academic_year(), b.latest.name().as_str().to_string());
    let at = |extra: &[&str]| {
        let mut v = strings(&["risks", "--server", &server, "--school", &urn, "--year", &year, "--term", &term]);
        v.extend(strings(extra));
        v
    };
    // Every pupil with --limit 0, as JSON, with probabilities exactly as the API gives them.
    let out = cli(at(&["--limit", "0", "--page-size", "7", "-o", "json"]), Some(key.clone())).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let n = b.world.feeds.iter().find(|f| f.urn == b.world.schools[0].urn && f.term == b.latest).unwrap().rows.len();
    assert!(n > 14);
    assert_eq!(rows.len(), n, "every pupil, over several pages");
    let first = &rows[0];
    let p = first["p_persistent_absence"].as_f64().unwrap();
    let upn_0 = first["upn"].as_str().unwrap().to_string();
    let api = app.app.pupil_risk(&app.app.authenticate(&key).await.unwrap(), upn_0.clone()).await.unwrap();
    let exact = api.last().unwrap().outcomes[0].probability;
    assert_eq!(p.to_bits(), exact.to_bits(), "full precision in json");
    assert!(first["reasons"].is_object());

    // CSV: a header and one row per pupil; the same number.
    let out = cli(at(&["--limit", "5", "-o", "csv"]), Some(key.clone())).await;
    let csv = text(&out.stdout);
    let mut r = csv::Reader::from_reader(csv.as_bytes());
    let header = r.headers().unwrap().clone();
    let col = header.iter().position(|h| h == "p_persistent_absence").unwrap();
    let recs: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    assert_eq!(recs.len(), 5);
    assert_eq!(recs[0][col].parse::<f64>().unwrap().to_bits(), exact.to_bits());
    // A limit below the roll says what was left out.
    assert!(text(&out.stderr).contains(&format!("showing 5 of {n} pupils")), "{}", text(&out.stderr));

    // One pupil, the UPN on stdin (it never appears in the process list).
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_riskid"));
    cmd.args(["pupil", "--server", &server, "-o", "json"]).env("RISKID_KEY", &key);
    cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    let upn_in = upn_0.clone();
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = cmd.spawn().unwrap();
        child.stdin.take().unwrap().write_all(upn_in.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success());
    let hist: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(hist.iter().all(|h| h["upn"] == upn_0.as_str()) && !hist.is_empty());

    // Stateless scoring of a CSV, and model evaluation, as CSV.
    let dir = tempfile::tempdir().unwrap();
    let feed = b.world.feeds.iter().find(|f| f.term == b.latest).unwrap();
    let path = dir.path().join("feed.csv");
    std::fs::write(&path, riskid::synth::feed_csv(&feed.rows)).unwrap();
    let svc = app.key(riskid::auth::Role::Service, &[]);
    let mut args = strings(&["score", "--server", &server, "--school", &urn, "--year", &year, "--term", &term]);
    args.extend(strings(&[path.to_str().unwrap(), "-o", "csv"]));
    let out = cli(args, Some(svc)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), feed.rows.len() + 1);
    let model = app.store.active_model().unwrap().unwrap().model_id;
    let out = cli(strings(&["model", "evaluate", "--server", &server, &model, "-o", "csv"]), Some(key.clone())).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 1 + 3 * 3, "3 outcomes x model and 2 baselines");
    // The bundled model was trained on other data: verify names what differs, and exits 7.
    let out = cli(strings(&["model", "verify", "--server", &server, &model]), Some(key.clone())).await;
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("figure(s) differ") && text(&out.stdout).contains("fingerprint"));
}

#[tokio::test]
async fn exit_codes_tell_failures_apart() {
    let app = spawn_app().await;
    let server = format!("http://{}", app.addr);
    let key = app.key(riskid::auth::Role::Analyst, &[]);
    let code = |o: &Output| o.status.code();
    // A server address without a scheme: usage, with the fix in the message.
    let out = cli(strings(&["model", "list", "--server", &app.addr.to_string()]), Some(key.clone())).await;
    assert_eq!(code(&out), Some(2));
    assert!(text(&out.stderr).contains(&format!("use http://{}", app.addr)), "{}", text(&out.stderr));
    // Nothing listening: unavailable.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let out = cli(strings(&["model", "list", "--server", &format!("http://{closed}")]), Some(key.clone())).await;
    assert_eq!(code(&out), Some(6), "{}", text(&out.stderr));
    // A revoked or unknown key: access refused; a role that may not: access refused.
    let out = cli(strings(&["model", "list", "--server", &server]), Some("rk_nope".into())).await;
    assert_eq!(code(&out), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("API_KEY_INVALID"), "the reason is shown: {}", text(&out.stderr));
    let school = app.key(riskid::auth::Role::School, &[SCHOOL_A]);
    let out = cli(strings(&["model", "list", "--server", &server]), Some(school)).await;
    assert_eq!(code(&out), Some(4));
    // Not found.
    let out = cli(strings(&["pupil", "--server", &server, &upn(77)]), Some(key.clone())).await;
    assert_eq!(code(&out), Some(5), "{}", text(&out.stderr));
    // Rejected: a field the server refuses.
    let args =
        ["cohort", "propose", "--server", &server, "--school", "100001", "--year", "2025/26", "--term", "autumn"];
    let mut args = strings(&args);
    args.extend(strings(&["--capacity", "9999"]));
    let out = cli(args, Some(key.clone())).await;
    assert_eq!(code(&out), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("capacity"), "{}", text(&out.stderr));
    // The codes are in --help.
    let help = text(&cli(strings(&["--help"]), None).await.stdout);
    assert!(help.contains("Exit codes:") && help.contains("6  unavailable"), "{help}");
}

#[tokio::test]
async fn a_manifest_submits_every_feed_in_term_order_and_a_rejected_one_stops_nothing() {
    let app = spawn_app().await;
    let server = format!("http://{}", app.addr);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("borough");
    let generated = cli(
        strings(&["generate", "--schools", "3", "--years", "1", "--seed", "9", "--out", out.to_str().unwrap()]),
        None,
    )
    .await;
    assert!(generated.status.success(), "{}", text(&generated.stderr));
    let manifest: riskid::synth::Manifest =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let urns: Vec<u32> = manifest.schools.iter().map(|s| s.urn.get()).collect();
    // One feed is broken: a bad year group on its first pupil.
    let broken = &manifest.feeds[4];
    let path = out.join(&broken.file);
    let csv = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = csv.lines().map(str::to_owned).collect();
    let mut cells: Vec<String> = lines[1].split(',').map(str::to_owned).collect();
    cells[1] = "99".into();
    lines[1] = cells.join(",");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();

    let key = app.key(riskid::auth::Role::School, &urns);
    let args = strings(&[
        "submit",
        "--server",
        &server,
        "--manifest",
        out.join("manifest.json").to_str().unwrap(),
        "-o",
        "csv",
    ]);
    let run = cli(args.clone(), Some(key.clone())).await;
    assert_eq!(run.status.code(), Some(3), "rejected input: {}", text(&run.stderr));
    let summary = text(&run.stdout);
    let rows: Vec<csv::StringRecord> =
        csv::Reader::from_reader(summary.as_bytes()).records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), manifest.feeds.len(), "one line per feed");
    let rejected: Vec<_> = rows.iter().filter(|r| &r[3] == "rejected").collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(&rejected[0][0], &broken.urn.to_string());
    assert!(rejected[0][6].contains("ncyear"), "the first errors are shown: {:?}", &rejected[0][6]);
    assert_eq!(rows.iter().filter(|r| &r[3] == "accepted").count(), manifest.feeds.len() - 1);
    // Terms in order in the summary (and so sent in order).
    let terms: Vec<riskid::domain::Term> =
        rows.iter().map(|r| riskid::domain::Term::parse(&r[1], &r[2]).unwrap()).collect();
    assert!(terms.windows(2).all(|w| w[0] <= w[1]));
    let stored: usize = manifest.feeds.iter().filter(|f| f.file != broken.file).map(|f| f.rows).sum();
    assert_eq!(app.stored_rows(), stored, "every other feed stored");
    assert!(text(&run.stderr).contains(&format!(
        "{} feeds: {} accepted",
        manifest.feeds.len(),
        manifest.feeds.len() - 1
    )));
    // Sending it again changes nothing but the broken feed's verdict.
    let again = cli(args, Some(key)).await;
    let summary = text(&again.stdout);
    assert_eq!(summary.matches(",unchanged,").count(), manifest.feeds.len() - 1, "{summary}");
}

#[tokio::test]
async fn submit_detects_a_ctf_needs_its_supplement_and_rows_prints_what_was_derived() {
    let app = spawn_app().await;
    let server = format!("http://{}", app.addr);
    let key = app.key(riskid::auth::Role::School, &[SCHOOL_A]);
    let fx = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let xml = format!("{fx}/ctf/ctf25-autumn.xml");
    let supp = format!("{fx}/ctf/ctf25-autumn-supplement.csv");
    let base = ["submit", "--server", &server, "--school", "100001", "--year", "2025/26", "--term", "autumn"];
    let mut no_supp = strings(&base);
    no_supp.push(xml.clone());
    let out = cli(no_supp, Some(key.clone())).await;
    assert_eq!(out.status.code(), Some(2), "usage");
    assert!(text(&out.stderr).contains("--supplement"), "{}", text(&out.stderr));
    // A supplement with a CSV feed is a mistake too.
    let mut csv_supp = strings(&base);
    csv_supp.extend([format!("{fx}/valid-feed.csv"), "--supplement".into(), supp.clone()]);
    assert_eq!(cli(csv_supp, Some(key.clone())).await.status.code(), Some(2));
    // A broken CTF: the report names the CTF line and element.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.xml");
    std::fs::write(&broken, std::fs::read_to_string(&xml).unwrap().replace("<Sex>F</Sex>", "<Sex>Q</Sex>")).unwrap();
    let mut bad = strings(&base);
    bad.extend([broken.to_str().unwrap().to_owned(), "--supplement".into(), supp.clone()]);
    let out = cli(bad, Some(key.clone())).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(report.contains("CTF line") && report.contains("[CTfile/CTFpupilData/Pupil[1]/Sex]"), "{report}");
    // The real thing.
    let mut ok = strings(&base);
    ok.extend([xml.clone(), "--supplement".into(), supp.clone()]);
    let out = cli(ok, Some(key.clone())).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = cli(strings(&["submissions", "list", "--server", &server, "-o", "json"]), Some(key.clone())).await;
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let id = v[0]["id"].as_str().map(str::to_owned).unwrap_or_else(|| v[0]["id"].to_string());
    let rows = cli(strings(&["submissions", "rows", "--server", &server, &id]), Some(key)).await;
    assert!(rows.status.success(), "{}", text(&rows.stderr));
    let csv = text(&rows.stdout);
    assert_eq!(csv.lines().next().unwrap(), riskid::ingest::contract_header());
    assert_eq!(csv.lines().count(), 6, "{csv}");
    assert!(csv.contains("V359200125001,4,F,WBRI,N,N,K,,N,0,16,4,3,3,0,0,N,2,,,4,2,5,1,8,N"), "{csv}");
}
