//! riskid against the reference (pandas + scikit-learn: logistic regression and
//! HistGradientBoosting on the last two terms) and the generator's oracle, next term, on
//! generated boroughs, over several test terms (rolling origin). Run with
//! `cargo bench --bench compare`; `RISKID_COMPARE=seed:schools,seed:schools` picks boroughs,
//! `RISKID_COMPARE_TERMS` the number of test terms (default 4). The reference's Python
//! dependencies are installed by `tools/reference/setup.sh` (which this runs).

// Per-outcome tables are indexed by outcome in several parallel arrays.
#![allow(clippy::needless_range_loop)]

use std::collections::HashMap;
use std::process::Command;
use std::time::Instant;

use riskid::domain::{Outcome, SchoolTerm};
use riskid::model::metrics::{reliability, roc_auc, top_k_per_group};
use riskid::model::rolling::rolling_origin;
use riskid::model::{History, TrainParams};
use riskid::synth::{WorldConfig, generate_with_oracle, write_world};

mod common;

const CAPACITY: usize = 36;
const BOOTSTRAP: usize = 200;
const REF_METHODS: [&str; 2] = ["logistic", "hist_gradient_boosting"];

/// One test term of one borough: labels and each method's probabilities, row-aligned.
struct TestSet {
    borough: usize,
    term: String,
    schools: Vec<u32>,
    tie: Vec<u64>,
    /// Per outcome: Some(label) where defined.
    labels: Vec<[Option<bool>; 3]>,
    riskid: Vec<[f64; 3]>,
    oracle: Vec<[f64; 3]>,
    /// Per reference method.
    reference: Vec<Vec<[f64; 3]>>,
}

/// Reads the reference's predictions: (term label, urn, upn) → per method, per outcome.
fn read_reference(path: &std::path::Path) -> HashMap<(String, u32, String), [[f64; 3]; 2]> {
    let mut r = csv::Reader::from_path(path).expect("reference predictions");
    let mut out: HashMap<(String, u32, String), [[f64; 3]; 2]> = HashMap::new();
    for rec in r.records() {
        let rec = rec.expect("a predictions row");
        let term = format!("{} {}", &rec[1], &rec[0]);
        let k = Outcome::ALL.iter().position(|o| o.as_str() == &rec[4]).expect("an outcome");
        let e = out.entry((term, rec[2].parse().unwrap(), rec[3].to_owned())).or_default();
        e[0][k] = rec[5].parse().unwrap();
        e[1][k] = rec[6].parse().unwrap();
    }
    out
}

fn term_label(t: riskid::domain::Term) -> String {
    format!("{} {}", t.name().as_str(), t.academic_year())
}

fn auc_of(set: &TestSet, idx: &[usize], k: usize, score: impl Fn(usize) -> f64) -> Option<f64> {
    let rows: Vec<usize> = idx.iter().copied().filter(|&i| set.labels[i][k].is_some()).collect();
    let s: Vec<f64> = rows.iter().map(|&i| score(i)).collect();
    let l: Vec<bool> = rows.iter().map(|&i| set.labels[i][k] == Some(true)).collect();
    roc_auc(&s, &l)
}

fn combined(p: &[f64; 3]) -> f64 {
    1.0 - p.iter().map(|x| 1.0 - x).product::<f64>()
}

/// Share of the top `CAPACITY` per school (by combined probability) with an adverse outcome.
fn hit_rate(set: &TestSet, score: impl Fn(usize) -> f64) -> f64 {
    let rows: Vec<usize> = (0..set.labels.len()).filter(|&i| set.labels[i].iter().all(Option::is_some)).collect();
    let s: Vec<f64> = rows.iter().map(|&i| score(i)).collect();
    let g: Vec<u32> = rows.iter().map(|&i| set.schools[i]).collect();
    let t: Vec<u64> = rows.iter().map(|&i| set.tie[i]).collect();
    let sel = top_k_per_group(&s, &g, &t, CAPACITY);
    let (mut n, mut hit) = (0.0f64, 0.0f64);
    for (j, &i) in rows.iter().enumerate() {
        if sel[j] {
            n += 1.0;
            hit += f64::from(u8::from(set.labels[i].contains(&Some(true))));
        }
    }
    hit / n.max(1.0)
}

fn main() {
    let boroughs: Vec<(u64, usize)> = std::env::var("RISKID_COMPARE")
        .unwrap_or_else(|_| "11:12,23:40".into())
        .split(',')
        .map(|b| {
            let (s, n) = b.split_once(':').expect("seed:schools");
            (s.parse().unwrap(), n.parse().unwrap())
        })
        .collect();
    let n_terms: usize = std::env::var("RISKID_COMPARE_TERMS").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let py = common::python();
    let dir = tempfile::tempdir().unwrap();
    let mut sets = Vec::new();
    for (b, &(seed, schools)) in boroughs.iter().enumerate() {
        let cfg = WorldConfig { schools, years: 3, seed, ..Default::default() };
        let (world, oracle) = generate_with_oracle(&cfg).unwrap();
        let wdir = dir.path().join(format!("borough-{b}"));
        write_world(&world, &wdir).unwrap();
        let oracle: HashMap<(String, String), [f64; 3]> =
            oracle.into_iter().map(|o| ((term_label(o.term), o.upn.as_str().to_owned()), o.next)).collect();
        let history = History::from_rows(world.feeds.iter().flat_map(|f| {
            let st = SchoolTerm { urn: f.urn, term: f.term };
            f.rows.iter().cloned().map(move |r| (st, r))
        }));
        println!("borough {b}: seed {seed}, {schools} schools, 3 years, {} pupil-terms", history.rows());
        let t = Instant::now();
        let params = TrainParams { capacity: CAPACITY, ..Default::default() }.check().unwrap();
        let preds = rolling_origin(&history, &params, n_terms, &mut |m| eprintln!("  riskid {m}")).unwrap();
        println!("  riskid: {} rolling-origin fits in {:.1} s", preds.len(), t.elapsed().as_secs_f64());
        let reference = py.as_ref().and_then(|py| {
            let out = wdir.join("reference.csv");
            let t = Instant::now();
            let st = Command::new(py)
                .args(["tools/reference/pipeline.py", "--world"])
                .arg(&wdir)
                .arg("--out")
                .arg(&out)
                .args(["--test-terms", &n_terms.to_string()])
                .status()
                .ok()?;
            println!("  reference: {:.1} s", t.elapsed().as_secs_f64());
            st.success().then(|| read_reference(&out))
        });
        for p in preds {
            let label = term_label(p.term);
            let mut set = TestSet {
                borough: b,
                term: label.clone(),
                schools: vec![],
                tie: vec![],
                labels: vec![],
                riskid: vec![],
                oracle: vec![],
                reference: vec![vec![]; 2],
            };
            let mut missing = 0;
            for (e, prob) in p.examples.iter().zip(&p.probabilities) {
                let upn = e.upn.as_str().to_owned();
                let Some(o) = oracle.get(&(label.clone(), upn.clone())) else {
                    missing += 1;
                    continue;
                };
                let r = match &reference {
                    Some(r) => match r.get(&(label.clone(), e.urn.get(), upn)) {
                        Some(r) => Some(*r),
                        None => {
                            missing += 1;
                            continue;
                        }
                    },
                    None => None,
                };
                set.schools.push(e.urn.get());
                set.tie.push(e.tie);
                set.labels.push(e.labels);
                set.riskid.push(*prob);
                set.oracle.push(*o);
                if let Some(r) = r {
                    set.reference[0].push(r[0]);
                    set.reference[1].push(r[1]);
                }
            }
            assert!(missing * 100 <= p.examples.len(), "{missing} rows of {label} not matched");
            sets.push(set);
        }
    }
    report(&sets, reference_available(&sets));
}

fn reference_available(sets: &[TestSet]) -> bool {
    sets.iter().all(|s| s.reference[0].len() == s.labels.len())
}

fn report(sets: &[TestSet], with_ref: bool) {
    let all: Vec<Vec<usize>> = sets.iter().map(|s| (0..s.labels.len()).collect()).collect();
    println!("\nAUC by borough, test term and outcome (next term):");
    println!(
        "{:<8} {:<16} {:<26} {:>7} {:>9} {:>9} {:>7}",
        "borough", "term", "outcome", "riskid", "ref LR", "ref HGB", "oracle"
    );
    // auc[outcome][method] per set; methods: riskid, ref LR, ref HGB, oracle.
    let mut auc = vec![vec![Vec::new(); 4]; 3];
    for (s, idx) in sets.iter().zip(&all) {
        for k in 0..3 {
            let m = [
                auc_of(s, idx, k, |i| s.riskid[i][k]),
                if with_ref { auc_of(s, idx, k, |i| s.reference[0][i][k]) } else { None },
                if with_ref { auc_of(s, idx, k, |i| s.reference[1][i][k]) } else { None },
                auc_of(s, idx, k, |i| s.oracle[i][k]),
            ];
            let f = |v: Option<f64>| v.map_or("–".into(), |x| format!("{x:.4}"));
            println!(
                "{:<8} {:<16} {:<26} {:>7} {:>9} {:>9} {:>7}",
                s.borough,
                s.term,
                Outcome::ALL[k].label(),
                f(m[0]),
                f(m[1]),
                f(m[2]),
                f(m[3])
            );
            for (j, v) in m.iter().enumerate() {
                auc[k][j].push(v.unwrap_or(f64::NAN));
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    // The reference's best model per outcome: the better mean AUC.
    let best: Vec<usize> = (0..3)
        .map(|k| {
            if !with_ref {
                3
            } else if mean(&auc[k][1]) >= mean(&auc[k][2]) {
                1
            } else {
                2
            }
        })
        .collect();
    println!("\nMeans over {} test sets:", sets.len());
    let mut diffs = Vec::new();
    for k in 0..3 {
        let (r, o) = (mean(&auc[k][0]), mean(&auc[k][3]));
        if with_ref {
            let b = mean(&auc[k][best[k]]);
            diffs.push(r - b);
            println!(
                "  {:<26} riskid {r:.4}  reference best ({}) {b:.4}  oracle {o:.4}  riskid − reference {:+.4}  gap to oracle closed {:.1}%",
                Outcome::ALL[k].label(),
                REF_METHODS[best[k] - 1],
                r - b,
                100.0 * (r - b) / (o - b)
            );
        } else {
            println!("  {:<26} riskid {r:.4}  oracle {o:.4} (reference not run)", Outcome::ALL[k].label());
        }
    }
    if with_ref {
        println!("  mean riskid − reference over outcomes, terms and boroughs: {:+.4}", mean(&diffs));
        // Paired bootstrap: resample children within each test set, the same draw for both.
        let mut rng_state = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            rng_state
        };
        let mut boots = Vec::with_capacity(BOOTSTRAP);
        for _ in 0..BOOTSTRAP {
            let mut d = Vec::new();
            for s in sets {
                let n = s.labels.len();
                let idx: Vec<usize> = (0..n).map(|_| (next() % n as u64) as usize).collect();
                for k in 0..3 {
                    let r = auc_of(s, &idx, k, |i| s.riskid[i][k]);
                    let b = auc_of(s, &idx, k, |i| s.reference[best[k] - 1][i][k]);
                    if let (Some(r), Some(b)) = (r, b) {
                        d.push(r - b);
                    }
                }
            }
            boots.push(mean(&d));
        }
        boots.sort_by(f64::total_cmp);
        println!(
            "  paired bootstrap 95% interval ({BOOTSTRAP} resamples of children): {:+.4} to {:+.4}",
            boots[BOOTSTRAP * 25 / 1000],
            boots[BOOTSTRAP * 975 / 1000 - 1]
        );
    }
    println!("\nCalibration (ECE, 10 bins) and hit rate of the top {CAPACITY} per school:");
    for k in 0..3 {
        let (mut p, mut l) = (Vec::new(), Vec::new());
        for s in sets {
            for i in 0..s.labels.len() {
                if let Some(y) = s.labels[i][k] {
                    p.push(s.riskid[i][k]);
                    l.push(y);
                }
            }
        }
        println!("  {:<26} riskid ECE {:.4}", Outcome::ALL[k].label(), reliability(&p, &l, 10).1);
    }
    let hr =
        |f: &dyn Fn(&TestSet, usize) -> f64| mean(&sets.iter().map(|s| hit_rate(s, |i| f(s, i))).collect::<Vec<_>>());
    let riskid = hr(&|s, i| combined(&s.riskid[i]));
    let oracle = hr(&|s, i| combined(&s.oracle[i]));
    if with_ref {
        let reference = hr(&|s, i| combined(&std::array::from_fn(|k| s.reference[best[k] - 1][i][k])));
        println!(
            "  hit rate: riskid {:.1}%  reference {:.1}%  oracle {:.1}%",
            100.0 * riskid,
            100.0 * reference,
            100.0 * oracle
        );
    } else {
        println!("  hit rate: riskid {:.1}%  oracle {:.1}%", 100.0 * riskid, 100.0 * oracle);
    }
}
