//! End to end in a real browser: headless Chromium over WebDriver, against `riskid demo
//! --serve`'s web app. A link worker signs in, reviews a whole cohort (confirm, remove with a
//! reason, add, undo), finalises it and checks what the page then shows; a school data manager
//! uploads a broken feed and reads its report; an analyst reads a model card and the override
//! report. Every page visited is checked with axe-core (no serious or critical violation),
//! and screenshots are saved (`RISKID_SCREENSHOTS`, default `target/e2e/screenshots`).
//!
//! Needs Debian's `chromium` and `chromium-driver`, and axe-core from npm
//! (`target/e2e/node_modules/axe-core`, or `RISKID_AXE_JS`): `.ci/run` installs them and runs
//! this test with `--include-ignored`.

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use riskid::demo::{DemoOptions, run_until};
use riskid::synth::{WorldConfig, generate};

/// Sends each line the demo prints to the test.
struct Lines(tokio::sync::mpsc::UnboundedSender<String>, Vec<u8>);

impl Write for Lines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(b);
        while let Some(i) = self.1.iter().position(|&c| c == b'\n') {
            let line: Vec<u8> = self.1.drain(..=i).collect();
            let _ = self.0.send(String::from_utf8_lossy(&line).trim_end().to_owned());
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Stops ChromeDriver however the test ends.
struct Driver(std::process::Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn manifest(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
}

struct Browser {
    c: Client,
    base: String,
    axe: String,
    shots: PathBuf,
    checked: Vec<String>,
}

impl Browser {
    async fn go(&self, path: &str) {
        self.c.goto(&format!("{}{path}", self.base)).await.unwrap();
    }

    async fn body(&self) -> String {
        self.c.source().await.unwrap()
    }

    async fn click(&self, css: &str) {
        self.c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.unwrap();
    }

    /// Clicks a button that submits a form, and waits until the page it was on has been
    /// replaced by the answer (the button is gone from the document): a wait for an element
    /// alone could find it on the old page. Gives up after 30 s.
    async fn submit_with(&self, button: fantoccini::elements::Element) {
        button.click().await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match button.tag_name().await {
                Err(e) if e.is_stale_element_reference() => break,
                // ChromeDriver sometimes reports a node of the replaced page this way instead.
                Err(e) if e.to_string().contains("does not belong to the document") => break,
                Err(e) => panic!("waiting for the answer to a form: {e}"),
                Ok(_) => assert!(std::time::Instant::now() < deadline, "the form's answer never replaced the page"),
            }
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        self.c.find(Locator::Css(css)).await.unwrap().send_keys(text).await.unwrap();
    }

    /// Runs axe-core on the page: no serious or critical violation.
    async fn accessible(&mut self, what: &str) {
        self.c.execute(&self.axe, vec![]).await.unwrap();
        let found = self
            .c
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { resultTypes: ['violations'] }).then(r => done(r.violations
                   .filter(v => v.impact === 'serious' || v.impact === 'critical')
                   .map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at ' +
                        v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', '))));",
                vec![],
            )
            .await
            .unwrap();
        let problems: Vec<String> = serde_json::from_value(found).unwrap();
        assert!(problems.is_empty(), "{what}: accessibility problems:\n{}", problems.join("\n"));
        self.checked.push(what.to_owned());
    }

    /// A screenshot of the whole page (up to 2,400 px tall), from the top.
    async fn screenshot(&self, name: &str) {
        let size = self.c.get_window_size().await.unwrap();
        let h = self
            .c
            .execute("window.scrollTo(0, 0); return document.documentElement.scrollHeight;", vec![])
            .await
            .unwrap();
        let h = h.as_u64().unwrap_or(1000).clamp(600, 2400) as u32;
        self.c.set_window_size(size.0 as u32, h + 100).await.unwrap();
        let png = self.c.screenshot().await.unwrap();
        self.c.set_window_size(size.0 as u32, size.1 as u32).await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    /// The page fits the window: nothing but a table's own scroll box is wider.
    async fn fits(&self, what: &str) {
        let w =
            self.c.execute("return [document.documentElement.scrollWidth, window.innerWidth];", vec![]).await.unwrap();
        let (scroll, inner) = (w[0].as_i64().unwrap(), w[1].as_i64().unwrap());
        assert!(scroll <= inner + 1, "{what}: the page is {scroll}px wide in a {inner}px window");
    }

    async fn sign_in(&self, key: &str) {
        self.go("/login").await;
        // By keyboard: type the key and press Enter.
        self.type_into("#key", &format!("{key}\u{E007}")).await;
        self.c.wait().for_element(Locator::Css("nav.nav")).await.unwrap();
    }

    async fn sign_out(&self) {
        self.click("form[action='/logout'] button").await;
        self.c.wait().for_element(Locator::Css("#key")).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium and chromium-driver and axe-core from npm: .ci/run installs them and runs this with --include-ignored"]
async fn people_do_their_jobs_in_a_real_browser() {
    let axe_path = std::env::var("RISKID_AXE_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| manifest("target/e2e/node_modules/axe-core/axe.min.js"));
    let axe = std::fs::read_to_string(&axe_path).unwrap_or_else(|e| {
        panic!("axe-core at {}: {e} (npm install axe-core, or set RISKID_AXE_JS)", axe_path.display())
    });
    let shots =
        std::env::var("RISKID_SCREENSHOTS").map(PathBuf::from).unwrap_or_else(|_| manifest("target/e2e/screenshots"));
    std::fs::create_dir_all(&shots).unwrap();

    // The newcomer's command, `riskid demo --serve`, in process.
    let opts = DemoOptions {
        schools: 2,
        years: 2,
        seed: 11,
        capacity: 6,
        keep: None,
        ctf: false,
        serve: Some("127.0.0.1:0".parse().unwrap()),
    };
    let world = generate(&WorldConfig { schools: 2, years: 2, seed: 11, ..Default::default() }).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let demo = tokio::spawn(async move {
        let mut out = Lines(tx, Vec::new());
        run_until(opts, &mut out, async {
            let _ = stopped.await;
        })
        .await
    });
    let (mut base, mut keys) = (String::new(), std::collections::HashMap::new());
    while let Some(line) = rx.recv().await {
        if let Some(rest) = line.strip_prefix("== Serving: open ") {
            base = rest.split_whitespace().next().unwrap().trim_end_matches('/').to_owned();
        }
        for role in ["link worker", "school data manager", "analyst", "administrator"] {
            if let Some(k) = line.trim().strip_prefix(&format!("{role}:")) {
                keys.insert(role, k.split_whitespace().next().unwrap().to_owned());
            }
        }
        if line.contains("waiting for review") {
            break;
        }
    }
    assert!(base.starts_with("http://127.0.0.1:") && keys.len() == 4, "the demo printed {base:?} and {keys:?}");

    // ChromeDriver on a free loopback port; headless Chromium with a fresh profile.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _driver = Driver(
        std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver) on PATH"),
    );
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--window-size=1280,1000", format!("--user-data-dir={}", profile.path().display()),
        ]}),
    );
    let mut client = None;
    for _ in 0..100 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => {
                client = Some(c);
                break;
            }
            // ChromeDriver is still starting.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let c = client.expect("a WebDriver session within 10 s");
    let mut b = Browser { c, base, axe, shots, checked: Vec::new() };

    // --- Link worker: review the cohort left for them, then finalise. ---
    b.go("/login").await;
    b.accessible("sign-in").await;
    b.screenshot("sign-in").await;
    // A wrong key: the error summary, linked to the field.
    b.type_into("#key", "rk_not-a-key\u{E007}").await;
    b.c.wait().for_element(Locator::Css(".error-summary")).await.unwrap();
    assert!(b.body().await.contains("not valid, or it has been revoked"));
    b.accessible("sign-in with an error").await;
    b.sign_in(&keys["link worker"]).await;
    assert!(b.c.current_url().await.unwrap().path().ends_with("/cohorts"));
    b.accessible("cohorts").await;
    b.click("tbody tr:first-child a").await;
    let body = b.body().await;
    assert!(
        body.contains("Proposed") && body.contains("0 decided, 6 not decided"),
        "the demo left this cohort for review"
    );
    let cohort_url = b.c.current_url().await.unwrap().path().to_owned();
    b.accessible("cohort").await;

    // Confirm rank 1 with its row's button.
    b.click("tbody tr:nth-child(1) form[action$='/decide'] button").await;
    b.c.wait().for_element(Locator::Css("tbody tr:nth-child(1) form[action$='/undo']")).await.unwrap();
    assert!(b.body().await.contains("1 decided, 5 not decided"));

    // Rank 2: open the child, read the reasons and the chart, remove with a reason and a note.
    b.click("tbody tr:nth-child(2) td:nth-child(2) a").await;
    let child = b.body().await;
    assert!(child.contains("Why: what raised the risk") && child.contains("Attendance over terms"));
    assert!(child.contains("<svg"), "the attendance chart");
    b.accessible("child").await;
    b.screenshot("link-worker-child").await;
    // Remove without a reason: the error summary says what to do.
    b.click("#remove button.button-warning").await;
    b.c.wait().for_element(Locator::Css(".error-summary")).await.unwrap();
    assert!(b.body().await.contains("Choose why this child is removed"));
    b.accessible("remove without a reason").await;
    b.click("#reason-family_declined").await;
    b.type_into("#note", "family prefers to wait until next year").await;
    b.click("#remove button.button-warning").await;
    b.c.wait().for_element(Locator::Css("form[action$='/undo']")).await.unwrap();
    assert!(b.body().await.contains("Removed: family declined"));

    // Back to the cohort: undo rank 1, then confirm it again and the rest.
    b.go(&cohort_url).await;
    b.click("tbody tr:nth-child(1) form[action$='/undo'] button").await;
    b.c.wait().for_element(Locator::Css("tbody tr:nth-child(1) form[action$='/decide']")).await.unwrap();
    assert!(b.body().await.contains("1 decided, 5 not decided"), "the undo reopened rank 1");
    b.screenshot("link-worker-cohort").await;
    loop {
        let buttons = b.c.find_all(Locator::Css("form[action$='/decide'] button")).await.unwrap();
        let Some(first) = buttons.into_iter().next() else { break };
        b.submit_with(first).await;
        b.c.wait().for_element(Locator::Css("#progress")).await.unwrap();
    }
    assert!(b.body().await.contains("6 decided, 0 not decided"));

    // Add a child the model did not propose: find by UPN, see their scores, add with a reason.
    let urn = world.schools[1].urn;
    let latest = *world.terms.last().unwrap();
    let feed = world.feeds.iter().find(|f| f.urn == urn && f.term == latest).unwrap();
    let mut added = false;
    for row in feed.rows.iter().filter(|r| !r.permanent_exclusion && !r.statutory()).rev().take(10) {
        b.go(&cohort_url).await;
        b.type_into("#upn", row.upn.as_str()).await;
        b.click("form[action$='/find'] button").await;
        b.c.wait().for_element(Locator::Css("h1")).await.unwrap();
        if b.body().await.contains("This child is on roll") {
            assert!(!b.c.current_url().await.unwrap().as_str().contains(row.upn.as_str()), "no UPN in the URL");
            b.accessible("add a child").await;
            b.click("#reason-school_concern").await;
            b.click("form[action$='/add'] button").await;
            b.c.wait().for_element(Locator::Css("#progress")).await.unwrap();
            added = true;
            break;
        }
    }
    assert!(added, "a child on roll could be added");
    let body = b.body().await;
    assert!(
        body.contains("Added: concern raised by the school") && body.contains("6 of 6 places"),
        "five confirmed, one added"
    );

    // Finalise and check what the page then shows.
    b.click("form[action$='/finalise'] button").await;
    b.c.wait().for_element(Locator::Css(".notice-success")).await.unwrap();
    let body = b.body().await;
    assert!(body.contains("The cohort is finalised") && body.contains("Finalised on "));
    assert!(!body.contains("/decide") && !body.contains("Find the child"), "a finalised cohort has no actions");
    assert!(body.contains("Who decided what") && body.contains("family prefers to wait"));
    b.accessible("finalised cohort").await;
    b.screenshot("link-worker-finalised").await;
    // At phone width the page still fits (tables scroll in their own box).
    b.c.set_window_size(390, 844).await.unwrap();
    b.go(&cohort_url).await;
    b.fits("cohort at phone width").await;
    b.screenshot("link-worker-phone").await;
    b.c.set_window_size(1280, 1000).await.unwrap();
    b.sign_out().await;

    // --- School data manager: upload a broken feed and read the report. ---
    b.sign_in(&keys["school data manager"]).await;
    assert!(b.c.current_url().await.unwrap().path().ends_with("/feeds"));
    b.accessible("feeds").await;
    b.click("#term-spring").await;
    b.type_into("#file", manifest("tests/fixtures/invalid-feed.csv").to_str().unwrap()).await;
    b.click("form[action='/feeds'] button[type=submit]").await;
    b.c.wait().for_element(Locator::Css("#outcome")).await.unwrap();
    let body = b.body().await;
    assert!(body.contains("Rejected: the feed has") && body.contains("<code class=\"cell\">14</code>"));
    b.accessible("feed report").await;
    b.screenshot("data-manager-report").await;
    b.go("/feeds").await;
    b.click("a[href^='/feeds/']").await;
    assert!(b.body().await.contains("Content SHA-256"));
    b.accessible("submission").await;
    b.go("/risks").await;
    b.accessible("pupils' scores").await;
    b.click("a[href^='/risks/']").await;
    assert!(b.body().await.contains("Read only"));
    b.accessible("a pupil's scores").await;
    b.sign_out().await;

    // --- Analyst: the model card with its charts and fairness numbers; overrides; audit. ---
    b.sign_in(&keys["analyst"]).await;
    b.accessible("models").await;
    b.click("tbody tr:first-child td:first-child a").await;
    let body = b.body().await;
    assert!(body.contains("Fairness at capacity") && body.contains("Reliability by bin"));
    b.accessible("model card").await;
    b.screenshot("analyst-model-card").await;
    b.go("/reports/overrides").await;
    assert!(b.body().await.contains("family_declined"));
    b.accessible("overrides").await;
    b.screenshot("analyst-overrides").await;
    b.go("/outcomes").await;
    assert!(b.body().await.contains("Finalised cohorts"));
    b.accessible("outcomes").await;
    b.go("/audit").await;
    assert!(b.body().await.contains("Verified"));
    b.accessible("audit").await;
    b.sign_out().await;

    assert!(b.checked.len() >= 18, "axe checked {:?}", b.checked);
    b.c.close().await.unwrap();
    let _ = stop.send(());
    demo.await.unwrap().unwrap();
}
