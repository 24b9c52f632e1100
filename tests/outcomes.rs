//! Programme outcomes on one closed-loop borough (the 20-borough check is
//! `cargo bench --bench outcomes`): the estimate finds an injected effect and no effect where
//! there is none, while the naive before/after shows a spurious improvement; and the report
//! reaches clients only as published figures, to the roles that may read it.

use riskid::api::pb::{self, outcome_service_client::OutcomeServiceClient};
use riskid::auth::Role;
use riskid::client::Bearer;
use riskid::outcomes::Measure;
use riskid::outcomes::closed_loop::{LoopConfig, LoopResult, run};
use riskid::synth::WorldConfig;

fn config(effect: f64) -> LoopConfig {
    LoopConfig {
        world: WorldConfig { schools: 12, years: 2, seed: 1001, ..Default::default() },
        effect,
        ..Default::default()
    }
}

fn overall(r: &LoopResult, m: Measure, k: u32) -> riskid::outcomes::Row {
    r.estimate.rows.iter().find(|x| x.school.is_none() && x.measure == m && x.horizon == k).unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_estimate_finds_the_injected_effect_and_none_where_there_is_none() {
    let with = run(&config(0.6)).await.unwrap();
    let e = &with.estimate;
    assert!(e.supported > 200 && e.matched > 100, "{} supported, {} matched", e.supported, e.matched);
    let pa = overall(&with, Measure::PersistentAbsence, 1);
    let truth = with.truth[&(1, Measure::PersistentAbsence)];
    let (lo, hi) = pa.interval.unwrap();
    assert!(truth < -0.1, "the support lowers persistent absence: {truth}");
    assert!(lo <= truth && truth <= hi, "the interval {lo:.3}..{hi:.3} covers the truth {truth:.3}");

    let none = run(&config(0.0)).await.unwrap();
    assert!(none.truth.values().all(|t| *t == 0.0));
    for m in [Measure::PersistentAbsence, Measure::AttendanceRate] {
        let r = overall(&none, m, 1);
        let (lo, hi) = r.interval.unwrap();
        assert!(lo <= 0.0 && 0.0 <= hi, "{m:?}: no effect, and the interval {lo:.3}..{hi:.3} covers 0");
        // The naive before/after "improves" all the same: regression to the mean.
        let (b, a) = (r.naive_before.unwrap(), r.naive_after.unwrap());
        let better = if m == Measure::AttendanceRate { a > b } else { a < b };
        assert!(better, "{m:?}: naive before {b:.3} after {a:.3}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_get_published_figures_only_and_only_their_schools() {
    let r = run(&LoopConfig {
        world: WorldConfig { schools: 4, years: 2, seed: 5, ..Default::default() },
        ..Default::default()
    })
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(riskid::server::serve(listener, r.app.clone(), None, async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let client = |k: &str| OutcomeServiceClient::with_interceptor(channel.clone(), Bearer::new(k));
    let key = |role: Role, n: usize| {
        r.keys.iter().find(|(ro, s, _)| *ro == role && s.len() == n).map(|k| k.2.clone()).unwrap()
    };
    let analyst = key(Role::Analyst, 0);
    let all =
        client(&analyst).get_programme_outcomes(pb::GetProgrammeOutcomesRequest::default()).await.unwrap().into_inner();
    assert!(
        !all.figures.is_empty()
            && !all.caveats.is_empty()
            && all.method.contains("caliper")
            && all.method.contains("difference in differences")
    );
    let schools: std::collections::BTreeSet<String> = all.figures.iter().map(|f| f.school_urn.clone()).collect();
    assert!(schools.contains("") && schools.len() == 5, "the borough and each school: {schools:?}");
    // Every count is exact only from 5 up.
    for f in &all.figures {
        for c in [&f.supported, &f.seen, &f.not_seen, &f.pairs, &f.naive_n] {
            let c = c.unwrap();
            if c.state == pb::CountState::Rounded as i32 {
                assert!(c.value >= 5 && c.value % 5 == 0, "{f:?}");
            } else {
                assert_eq!(c.value, 0, "a hidden count carries no value");
            }
        }
        for v in [&f.supported_rate, &f.difference, &f.interval_low, &f.naive_change] {
            let v = v.unwrap();
            if v.state != pb::ValueState::Shown as i32 {
                assert_eq!(v.value, 0.0, "a suppressed value carries no number");
            }
        }
    }
    // A link worker for one school sees that school only; a school key all it covers.
    let lw = key(Role::LinkWorker, 1);
    let mine =
        client(&lw).get_programme_outcomes(pb::GetProgrammeOutcomesRequest::default()).await.unwrap().into_inner();
    let first = r.schools[0].to_string();
    assert!(mine.figures.iter().all(|f| f.school_urn.is_empty() || f.school_urn == first));
    assert!(mine.figures.iter().any(|f| f.school_urn == first));
    let other = r.schools[1].to_string();
    let err =
        client(&lw).get_programme_outcomes(pb::GetProgrammeOutcomesRequest { school_urn: other }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let err = client("rk_0000").get_programme_outcomes(pb::GetProgrammeOutcomesRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    // The CLI, in every format, shows what the RPC published: no count under 5 anywhere.
    for format in ["text", "csv", "json"] {
        let (server, key) = (format!("http://{addr}"), analyst.clone());
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_riskid"))
                .args(["report", "outcomes", "--server", &server, "-o", format])
                .env("RISKID_KEY", key)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let count_columns = ["supported", "seen", "not_seen", "pairs", "naive_n"];
        if format == "json" {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            for row in v.as_array().unwrap() {
                for c in count_columns {
                    if let Some(n) = row[c].as_i64() {
                        assert!(n >= 5 && n % 5 == 0, "{c} = {n} in {row}");
                    }
                }
            }
        } else if format == "csv" {
            let mut rd = csv::Reader::from_reader(text.as_bytes());
            let headers = rd.headers().unwrap().clone();
            for rec in rd.records() {
                let rec = rec.unwrap();
                for c in count_columns {
                    let i = headers.iter().position(|h| h == c).unwrap();
                    if let Ok(n) = rec[i].parse::<i64>() {
                        assert!(n >= 5 && n % 5 == 0, "{c} = {n}");
                    }
                }
            }
        } else {
            assert!(text.contains("NOT an effect") && text.contains("What this design cannot rule out"), "{text}");
        }
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
