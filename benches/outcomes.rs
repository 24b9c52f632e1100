//! Programme outcomes against the truth, over 20 generated boroughs: the closed loop
//! (generator → riskid cohorts → support shifts the supported children's next terms) with an
//! injected effect and with none. Prints, per measure and term after selection, how often the
//! 95% interval covers the true effect (acceptance: at least 17 of 20), and, with no effect,
//! how often it covers zero while the naive before/after shows an "improvement".
//! Run with `cargo bench --bench outcomes` (RISKID_OUTCOME_SEEDS, RISKID_OUTCOME_EFFECT to vary).

use std::collections::HashMap;

use riskid::outcomes::Measure;
use riskid::outcomes::closed_loop::{LoopConfig, run};
use riskid::synth::WorldConfig;

fn main() {
    let seeds: u64 = std::env::var("RISKID_OUTCOME_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let effect: f64 = std::env::var("RISKID_OUTCOME_EFFECT").ok().and_then(|v| v.parse().ok()).unwrap_or(0.5);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let horizons = [1u32, 2, 3];
    // (measure, horizon) → (covered, runs, sum of estimates, sum of truths)
    let mut with: HashMap<(Measure, u32), (u32, u32, f64, f64)> = HashMap::new();
    let mut null: HashMap<(Measure, u32), (u32, u32, u32, f64)> = HashMap::new(); // covers 0, runs, naive improves, sum of estimates
    let mut all_truth: HashMap<(Measure, u32), f64> = HashMap::new();
    let started = std::time::Instant::now();
    for seed in 1..=seeds {
        for eff in [effect, 0.0] {
            let cfg = LoopConfig {
                world: WorldConfig { schools: 12, years: 2, seed: 1000 + seed, ..Default::default() },
                effect: eff,
                ..Default::default()
            };
            let r = rt.block_on(run(&cfg)).expect("the loop runs");
            for row in r.estimate.rows.iter().filter(|r| r.school.is_none() && horizons.contains(&r.horizon)) {
                let key = (row.measure, row.horizon);
                let Some((lo, hi)) = row.interval else { continue };
                let truth = r.truth[&(row.horizon, row.measure)];
                if eff != 0.0 {
                    let e = with.entry(key).or_default();
                    e.0 += u32::from(lo <= truth && truth <= hi);
                    e.1 += 1;
                    e.2 += row.difference.unwrap_or(0.0);
                    e.3 += truth;
                    *all_truth.entry(key).or_default() += r.truth_all[&(row.horizon, row.measure)];
                } else {
                    let e = null.entry(key).or_default();
                    e.0 += u32::from(lo <= 0.0 && 0.0 <= hi);
                    e.1 += 1;
                    // An "improvement": attendance up, the others down.
                    let better = match (row.naive_before, row.naive_after) {
                        (Some(b), Some(a)) if row.measure == Measure::AttendanceRate => a > b,
                        (Some(b), Some(a)) => a < b,
                        _ => false,
                    };
                    e.2 += u32::from(better);
                    e.3 += row.difference.unwrap_or(0.0);
                }
            }
        }
        eprintln!("seed {seed}/{seeds} done ({:.0} s)", started.elapsed().as_secs_f64());
    }
    println!(
        "\nclosed loop: {seeds} boroughs of 12 schools x 2 years, cohorts of 36 chosen in the first summer, effect {effect} on the logits\n"
    );
    println!(
        "| measure | terms after | covers the true effect | mean estimate | mean truth (matched) | mean truth (all supported) | no effect: covers 0 | no effect: mean estimate | no effect: naive 'improves' |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for m in Measure::ALL {
        for k in horizons {
            let (c, n, est, tru) = with.get(&(m, k)).copied().unwrap_or_default();
            let (z, nn, imp, nest) = null.get(&(m, k)).copied().unwrap_or_default();
            let nf = f64::from(n.max(1));
            let at = all_truth.get(&(m, k)).copied().unwrap_or_default();
            println!(
                "| {} | {k} | {c} of {n} | {:+.4} | {:+.4} | {:+.4} | {z} of {nn} | {:+.4} | {imp} of {nn} |",
                m.as_str(),
                est / nf,
                tru / nf,
                at / nf,
                nest / f64::from(nn.max(1))
            );
        }
    }
    println!("\n{:.0} s in all", started.elapsed().as_secs_f64());
}
