//! The real binary, as deployed: logs carry request ids and counts but no pupil values, and
//! SIGTERM drains and stops the server.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn riskid() -> Command {
    Command::new(env!("CARGO_BIN_EXE_riskid"))
}

#[test]
fn server_logs_hold_no_pupil_data_and_sigterm_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let key = |args: &[&str]| {
        let out = riskid().args(["keys", "create", "--data-dir", d]).args(args).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let school = key(&["--role", "school", "--school", "100001"]);
    let mut server = riskid()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", d])
        .env("RUST_LOG", "debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    let addr = loop {
        let line = lines.next().expect("server exited early").unwrap();
        log.push(line.clone());
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let reader = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    for file in ["valid-feed.csv", "invalid-feed.csv"] {
        let status = riskid()
            .args(["submit", "--server", &format!("http://{addr}"), "--school", "100001", "--year", "2025/26"])
            .args(["--term", "autumn", &format!("{fixtures}/{file}")])
            .env("RISKID_KEY", &school)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.success(), file.starts_with("valid"));
    }
    // SAFETY: sends SIGTERM to the child we spawned.
    unsafe {
        libc::kill(server.id() as i32, libc::SIGTERM);
    }
    assert!(server.wait().unwrap().success(), "SIGTERM is a clean shutdown");
    log.extend(reader.join().unwrap());
    let text = log.join("\n");
    assert!(text.contains("feed accepted") && text.contains("request_id="), "{text}");
    assert!(text.contains("shutdown signal received"));
    for line in std::fs::read_to_string(format!("{fixtures}/invalid-feed.csv")).unwrap().lines().skip(1) {
        let upn = line.split(',').next().unwrap();
        assert!(!text.contains(upn), "a UPN reached the log: {upn}");
    }
    for value in ["WBRX", "maybe", "Q207000016049"] {
        assert!(!text.contains(value), "a cell value reached the log: {value}");
    }
}
