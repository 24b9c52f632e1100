//! Training time and peak memory for about 1,000,000 pupil-terms (all three models, with the
//! temporal evaluation fits). Run with `cargo bench --bench train`.

use std::time::Instant;

use riskid::domain::SchoolTerm;
use riskid::model::{History, TrainParams, TrainRequest, train_and_evaluate};
use riskid::synth::{WorldConfig, generate};

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn main() {
    let schools: usize = std::env::var("RISKID_BENCH_SCHOOLS").ok().and_then(|v| v.parse().ok()).unwrap_or(330);
    let t = Instant::now();
    let world = generate(&WorldConfig { schools, years: 3, seed: 1, ..Default::default() }).unwrap();
    let history = History::from_rows(world.feeds.into_iter().flat_map(|f| {
        let st = SchoolTerm { urn: f.urn, term: f.term };
        f.rows.into_iter().map(move |r| (st, r))
    }));
    println!(
        "world: {schools} schools x 3 years = {} pupil-terms, generated in {:.1} s (peak RSS so far {:.0} MiB)",
        history.rows(),
        t.elapsed().as_secs_f64(),
        peak_rss_mib()
    );
    let t = Instant::now();
    let artifact = train_and_evaluate(
        &history,
        TrainParams::default(),
        TrainRequest {
            model_id: Some("bench".into()),
            created_at: "bench".into(),
            data_description: "bench".into(),
            progress: &mut |m| eprintln!("  {:>6.1} s  {m}", t.elapsed().as_secs_f64()),
        },
    )
    .unwrap();
    println!(
        "trained 3 models (evaluation fit + final fit each) on {} examples in {:.1} s; peak RSS {:.0} MiB",
        artifact.training.examples,
        t.elapsed().as_secs_f64(),
        peak_rss_mib()
    );
    for o in &artifact.outcomes {
        println!("  {:<26} test AUC {:.3}", o.outcome.label(), o.evaluation.model.auc.unwrap_or(f64::NAN));
    }
}
