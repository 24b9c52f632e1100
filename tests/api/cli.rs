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
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("--school"), "{}", text(&refused.stderr));
    assert!(!riskid(&["keys", "revoke", "99", "--data-dir", d], None).status.success());
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
    assert_eq!(bad.status.code(), Some(1));
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
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    let rows = report.lines().filter(|l| l.contains(" ncyear ")).count();
    assert_eq!(rows, 1_000, "the CLI fetched the full report");
    assert!(report.contains("5000 error(s) in all (the first 1000 shown)"), "{}", &report[report.len() - 300..]);
    assert!(!report.contains('\u{1b}') && !text(&out.stderr).contains('\u{1b}'));
}
