//! The whole borough pipeline, riskid beside the repo's pandas + scikit-learn reference
//! (`tools/reference/pipeline.py`), on one generated borough in one run. Prints each step and
//! the ratio. Run with `cargo bench --bench pipeline`; the reference's Python dependencies are
//! installed by `tools/reference/setup.sh` (which this runs; without Python, riskid alone is
//! timed and the comparison is reported as not run).
//!
//! riskid: a fresh server (new data directory, bundled model active), every feed sent by the
//! real `riskid submit --manifest` over one connection, a model trained with selection and
//! activated (which rescores every school's latest term), every score of the latest term
//! read back through `ListSchoolRisks`, and a cohort proposed per school. Then it checks that
//! every feed was stored and scored and that the audit chain verifies.
//!
//! Environment: RISKID_BENCH_SCHOOLS (default 40), RISKID_BENCH_SEED (default 23).

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use riskid::api::pb;
use riskid::api::pb::audit_service_client::AuditServiceClient;
use riskid::api::pb::cohort_service_client::CohortServiceClient;
use riskid::api::pb::feed_service_client::FeedServiceClient;
use riskid::api::pb::model_service_client::ModelServiceClient;
use riskid::api::pb::risk_service_client::RiskServiceClient;
use riskid::auth::Role;
use riskid::client::Bearer;
use riskid::domain::Urn;
use riskid::storage::Store;
use riskid::synth::{WorldConfig, generate, write_world};

mod common;

fn status_kib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Bytes this process has written through system calls (`wchar` in /proc/self/io).
fn bytes_written() -> f64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// CPU seconds this process and its waited-for children have used (utime + stime).
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<f64> = after.split_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect();
    // Fields 14-17 of stat (utime, stime, cutime, cstime), in clock ticks of 1/100 s.
    let at = |i: usize| f.get(i - 3).copied().unwrap_or(0.0) / 100.0;
    (at(14) + at(15), at(16) + at(17))
}

struct Steps(Vec<(String, f64)>);

impl Steps {
    fn add(&mut self, what: &str, since: &mut Instant) {
        self.0.push((what.into(), since.elapsed().as_secs_f64()));
        *since = Instant::now();
    }
    fn total(&self) -> f64 {
        self.0.iter().map(|s| s.1).sum()
    }
}

fn main() {
    let schools: usize = std::env::var("RISKID_BENCH_SCHOOLS").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
    // RISKID_BENCH_VERBOSE=1 prints training's progress with the time into the step;
    // RISKID_BENCH_NO_REFERENCE=1 runs riskid's side alone (when comparing two builds of it);
    // RISKID_BENCH_JOBS=N sends N feeds at once (default 2, the server's default per-key
    // limit, which the bench then raises to N).
    let verbose = std::env::var_os("RISKID_BENCH_VERBOSE").is_some();
    let seed: u64 = std::env::var("RISKID_BENCH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(23);
    let tmp = tempfile::tempdir().unwrap();
    let world_dir = tmp.path().join("world");
    let (urns, latest, feeds, rows) = {
        let world = generate(&WorldConfig { schools, years: 3, seed, ..Default::default() }).unwrap();
        let manifest = write_world(&world, &world_dir).unwrap();
        let urns: BTreeSet<Urn> = world.schools.iter().map(|s| s.urn).collect();
        (urns, *world.terms.last().unwrap(), manifest.feeds.len(), manifest.feeds.iter().map(|f| f.rows).sum::<usize>())
    };
    println!("borough: {schools} schools x 3 years (seed {seed}), {feeds} feeds, {rows} pupil rows");
    // Peak memory from here on is the server's (and its in-process clients'), not the generator's.
    let _ = std::fs::write("/proc/self/clear_refs", "5");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut steps = Steps(Vec::new());
    let (scores_read, cohorts) = rt.block_on(async {
        let mut t = Instant::now();
        let data = tmp.path().join("data");
        let store = Arc::new(Store::open(&data).unwrap());
        let school_key = common::key(&store, Role::School, &urns, "pipeline bench");
        let analyst = Bearer::new(&common::key(&store, Role::Analyst, &BTreeSet::new(), "pipeline bench"));
        let link_worker = Bearer::new(&common::key(&store, Role::LinkWorker, &urns, "pipeline bench"));
        let mut settings = riskid::server::Settings::for_data_dir(data.clone());
        let jobs: usize = std::env::var("RISKID_BENCH_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
        settings.max_ingests_per_key = settings.max_ingests_per_key.max(jobs);
        let app = Arc::new(riskid::app::App::new(store, settings.limits()).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(riskid::server::serve(listener, app.clone(), None, async {
            let _ = stopped.await;
        }));
        let channel =
            tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        steps.add("start a fresh server", &mut t);

        // The data team's bulk submission: the real client, every feed over one connection.
        let manifest = world_dir.join("manifest.json");
        let mut submit = Command::new(env!("CARGO_BIN_EXE_riskid"));
        submit
            .args(["submit", "--manifest", manifest.to_str().unwrap(), "--jobs", &jobs.to_string(), "--output", "json"])
            .args(["--server", &format!("http://{addr}")])
            .env("RISKID_KEY", &school_key);
        let cpu_before = cpu_seconds();
        let written_before = bytes_written();
        let out = tokio::task::spawn_blocking(move || submit.output()).await.unwrap().unwrap();
        let cpu_after = cpu_seconds();
        let written = bytes_written() - written_before;
        assert!(out.status.success(), "bulk submit failed: {}", String::from_utf8_lossy(&out.stderr));
        steps.add("bulk submit (validate, store, score, audit)", &mut t);
        if verbose {
            let secs = steps.0.last().map_or(1.0, |s| s.1);
            eprintln!(
                "  CPU: server {:.2} s ({:.2} cores), the submit client {:.2} s",
                cpu_after.0 - cpu_before.0,
                (cpu_after.0 - cpu_before.0) / secs,
                cpu_after.1 - cpu_before.1
            );
            // How much of the wall clock the server spent answering SubmitFeed.
            for l in app.metrics().render().lines().filter(|l| l.contains("SubmitFeed") && !l.contains("_bucket")) {
                eprintln!("  {l}");
            }
            let bytes: u64 = std::fs::read_dir(&data)
                .map(|d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
                .unwrap_or(0);
            eprintln!(
                "  data directory after bulk submit: {:.1} MiB; the server wrote {:.1} MiB (WAL and checkpoints)",
                bytes as f64 / (1 << 20) as f64,
                written / (1 << 20) as f64
            );
        }

        let mut models = ModelServiceClient::with_interceptor(channel.clone(), analyst.clone());
        let cpu_train = cpu_seconds();
        let mut stream = models
            .train_model(pb::TrainModelRequest { capacity: 36, seed, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let mut trained = None;
        while let Some(m) = futures::StreamExt::next(&mut stream).await {
            match m.unwrap().event {
                Some(pb::train_model_progress::Event::Model(m)) => trained = Some(m),
                Some(pb::train_model_progress::Event::Message(line)) if verbose => {
                    eprintln!("  {:>6.3} s  {line}", t.elapsed().as_secs_f64())
                }
                _ => {}
            }
        }
        let trained = trained.expect("a trained model");
        if verbose {
            let (cpu, secs) = (cpu_seconds().0 - cpu_train.0, t.elapsed().as_secs_f64());
            eprintln!("  CPU while training: {cpu:.2} s ({:.2} cores)", cpu / secs);
        }
        steps.add("train 3 outcomes with model selection", &mut t);
        models
            .activate_model(pb::ActivateModelRequest { model_id: trained.model_id.clone(), ..Default::default() })
            .await
            .unwrap();
        steps.add("activate (rescore every school's latest term)", &mut t);

        let mut risks = RiskServiceClient::with_interceptor(channel.clone(), link_worker.clone());
        let mut scores_read = 0;
        for &urn in &urns {
            let mut page_token = String::new();
            loop {
                let r = risks
                    .list_school_risks(pb::ListSchoolRisksRequest {
                        school_term: Some(riskid::api::school_term_pb(urn, latest)),
                        page_size: 500,
                        page_token: page_token.clone(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(r.model_id, trained.model_id, "scores are the new model's");
                scores_read += r.risks.len();
                if r.next_page_token.is_empty() {
                    break;
                }
                page_token = r.next_page_token;
            }
        }
        steps.add("read every score of the latest term", &mut t);

        let mut cohort = CohortServiceClient::with_interceptor(channel.clone(), link_worker.clone());
        let mut cohorts = 0;
        for &urn in &urns {
            let c = cohort
                .propose_cohort(pb::ProposeCohortRequest {
                    school_term: Some(riskid::api::school_term_pb(urn, latest)),
                    capacity: 36,
                    seed,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert!(!c.members.is_empty());
            cohorts += 1;
        }
        steps.add("propose every school's cohort", &mut t);

        if verbose {
            // The server's time in each method over the whole pipeline.
            for l in app.metrics().render().lines().filter(|l| l.starts_with("riskid_rpc_duration_seconds_sum")) {
                eprintln!("  {l}");
            }
        }
        // Not timed: every feed stored and scored, and the audit chain whole.
        let mut feeds_api = FeedServiceClient::with_interceptor(channel.clone(), analyst.clone());
        let mut stored = 0;
        let mut page_token = String::new();
        loop {
            let r = feeds_api
                .list_submissions(pb::ListSubmissionsRequest {
                    page_size: 500,
                    page_token: page_token.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            stored += r.submissions.len();
            if r.next_page_token.is_empty() {
                break;
            }
            page_token = r.next_page_token;
        }
        assert_eq!(stored, feeds, "every feed stored");
        let mut audit = AuditServiceClient::with_interceptor(channel, analyst);
        let v = audit.verify_audit_chain(pb::VerifyAuditChainRequest::default()).await.unwrap().into_inner();
        assert!(v.ok, "audit chain verifies");
        println!(
            "checked: {stored} feeds stored, every one scored and audited; audit chain of {} events verifies",
            v.events_checked
        );
        let _ = stop.send(());
        let _ = server.await;
        (scores_read, cohorts)
    });
    let peak = status_kib("VmHWM:") / 1024.0;
    let riskid_total = steps.total();
    println!("\nriskid ({scores_read} scores read, {cohorts} cohorts proposed):");
    for (what, s) in &steps.0 {
        println!("  {what:<48} {s:>7.2} s");
    }
    println!("  {:<48} {riskid_total:>7.2} s  ({:.0} rows/s end to end)", "whole pipeline", rows as f64 / riskid_total);
    println!("  peak memory of the server process (with its in-process clients): {peak:.0} MiB");

    if std::env::var_os("RISKID_BENCH_NO_REFERENCE").is_some() {
        println!("\nreference: not run (RISKID_BENCH_NO_REFERENCE is set)");
        return;
    }
    let Some(py) = common::python() else {
        println!("\nreference: not run (Python setup failed; see above) — no ratio reported");
        return;
    };
    let t = Instant::now();
    let out = Command::new(&py)
        .args(["tools/reference/pipeline.py", "--world", world_dir.to_str().unwrap(), "--timing"])
        .output()
        .expect("run the reference");
    let reference = t.elapsed().as_secs_f64();
    assert!(out.status.success(), "reference failed: {}", String::from_utf8_lossy(&out.stderr));
    println!("\nreference (pandas + scikit-learn, wall clock with interpreter start):");
    for l in String::from_utf8_lossy(&out.stdout).lines().chain(String::from_utf8_lossy(&out.stderr).lines()) {
        println!("  {l}");
    }
    println!("  {:<48} {reference:>7.2} s", "whole pipeline");
    println!("\nriskid is {:.2}x the reference's speed (target: at least 3x)", reference / riskid_total);
}
