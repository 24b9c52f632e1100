//! Models trained on the generator's world: they beat simple baselines, are calibrated,
//! explain themselves additively, and are reproducible byte for byte.

use riskid::domain::SchoolTerm;
use riskid::model::{History, ModelArtifact, TrainParams, TrainRequest, train_and_evaluate};

use riskid::synth::{WorldConfig, generate};

fn history(schools: usize, years: usize, seed: u64) -> History {
    let w = generate(&WorldConfig { schools, years, seed, ..Default::default() }).unwrap();
    History::from_rows(
        w.feeds.into_iter().flat_map(|f| f.rows.into_iter().map(move |r| (SchoolTerm { urn: f.urn, term: f.term }, r))),
    )
}

fn train(h: &History, capacity: usize) -> ModelArtifact {
    let mut log = Vec::new();
    let a = train_and_evaluate(
        h,
        TrainParams { capacity, ..Default::default() },
        TrainRequest {
            model_id: None,
            created_at: "2026-01-01T00:00:00Z".into(),
            data_description: "Synthetic test world.".into(),
            progress: &mut |m| log.push(m.to_string()),
        },
    )
    .unwrap();
    assert!(log.len() >= 7, "progress is reported: {log:?}");
    a
}

#[test]
fn models_beat_both_baselines_are_calibrated_and_reproducible() {
    let h = history(12, 3, 11);
    let a = train(&h, 36);
    for o in &a.outcomes {
        let e = &o.evaluation;
        println!(
            "{:<26} AUC {:.3} vs last {:.3} / DfE {:.3}; P@k {:.3} vs {:.3} / {:.3}; ECE {:.4}; n {} pos {}",
            o.outcome.label(),
            e.model.auc.unwrap(),
            e.last_term_status.auc.unwrap(),
            e.dfe_absence_rule.auc.unwrap(),
            e.model.precision_at_capacity,
            e.last_term_status.precision_at_capacity,
            e.dfe_absence_rule.precision_at_capacity,
            e.model.ece.unwrap(),
            e.test_examples,
            e.positives
        );
        assert!(e.beats_baselines, "{} does not beat the baselines", o.outcome.label());
        assert!(e.model.ece.unwrap() <= 0.02, "{} ECE {}", o.outcome.label(), e.model.ece.unwrap());
        assert!(o.bands.medium < o.bands.high);
    }
    // Same data and seed: the same bytes.
    assert_eq!(train(&h, 36).to_json(), a.to_json());
    let back = ModelArtifact::from_json(&a.to_json()).unwrap();
    assert_eq!(back, a);
    assert!(a.model_card().contains("never a decision"));
}

/// Training runs its selection fits as parallel jobs; the rolling-origin benches choose with
/// `select::select`, one fit after another. Both must choose from the same figures.
#[test]
fn training_chooses_each_family_as_sequential_selection_does() {
    use riskid::model::{TrainParams, TreeParams, dataset, select};
    let h = history(8, 2, 3);
    let a = train(&h, 36);
    let examples = dataset::build(&h, a.training.seed);
    let before: Vec<&dataset::Example> = examples.iter().filter(|e| e.term < a.training.test_term).collect();
    let params = TrainParams { capacity: 36, ..Default::default() }.check().unwrap();
    let trees = TreeParams { seed: a.training.seed, ..TreeParams::default() };
    for (k, o) in a.outcomes.iter().enumerate() {
        let mut warm = Default::default();
        let sequential = select::select(&before, k, &params, &trees, &mut warm, &mut |_| {});
        assert_eq!(o.selection, sequential, "{}", o.outcome.label());
    }
}

#[test]
fn probabilities_point_the_right_way_and_explanations_add_up() {
    let h = history(6, 2, 3);
    let a = train(&h, 10);
    let idx = |name: &str| riskid::model::FEATURES.iter().position(|f| f.0 == name).unwrap();
    let examples = riskid::model::dataset::build(&h, 1);
    let (ab, ab_all) = (idx("absence_rate"), idx("absence_logit_all_terms"));
    let logit = |r: f64| (r / (1.0 - r)).ln();
    let mean_pa = |keep: &dyn Fn(&[f64]) -> bool| {
        let p: Vec<f64> =
            examples.iter().filter(|e| keep(&e.features)).map(|e| a.probabilities(&e.features)[0]).collect();
        assert!(p.len() >= 10, "enough pupils to compare: {}", p.len());
        p.iter().sum::<f64>() / p.len() as f64
    };
    // High absence this term and over the whole history: persistent absence is likely.
    let worrying = mean_pa(&|f| f[ab] >= 0.2 && f[ab_all] >= logit(0.15));
    let calm = mean_pa(&|f| f[ab] <= 0.02 && f[ab_all] <= logit(0.03));
    assert!(worrying > 0.5 && calm < 0.1, "worrying {worrying}, calm {calm}");
    for e in examples.iter().take(500) {
        for (x, m) in a.explain(&e.features).iter().zip(&a.outcomes) {
            let logit = x.baseline + x.contributions.iter().sum::<f64>();
            assert!((logit - m.model.scorer.logit(&e.features)).abs() < 1e-9);
            assert!((m.model.calibration.apply(logit) - x.probability).abs() < 1e-12);
        }
    }
}

/// Both families explain themselves additively: contributions sum to the logit before
/// calibration, exactly (TreeSHAP for trees).
#[test]
fn tree_and_linear_contributions_sum_to_the_logit() {
    use riskid::model::{Family, TrainParams, TreeParams, scorer::fit_family};
    let h = history(6, 2, 5);
    let examples = riskid::model::dataset::build(&h, 1);
    let rows: Vec<&riskid::model::dataset::Example> = examples.iter().collect();
    let params = TrainParams::default().check().unwrap();
    let trees = TreeParams { max_trees: 60, ..TreeParams::default() };
    for family in Family::ALL {
        let m = fit_family(family, &rows, 0, &params, &trees).unwrap();
        assert_eq!(m.family(), family);
        if family == Family::Trees {
            assert!(m.calibrated_on.is_some(), "trees are calibrated on a held-out term");
            assert!(m.calibration.b > 0.0);
        }
        let mut spread = 0.0f64;
        for e in rows.iter().take(400) {
            let (baseline, c) = m.scorer.contributions(&e.features);
            let logit = m.scorer.logit(&e.features);
            assert!((baseline + c.iter().sum::<f64>() - logit).abs() < 1e-9, "{family:?}");
            spread = spread.max(c.iter().map(|v| v.abs()).fold(0.0, f64::max));
        }
        assert!(spread > 0.1, "{family:?}: contributions say something");
    }
}

/// With trees as the model, reasons still come only from facts whose features raised the
/// risk (TreeSHAP contributions), and every reason's contribution is positive.
#[test]
fn tree_models_give_only_reasons_that_raised_the_risk() {
    use riskid::domain::SchoolTerm;
    use riskid::model::{Family, TrainParams, TreeParams, scorer::fit_family};
    let h = history(6, 2, 8);
    let mut a = train(&h, 10);
    let examples = riskid::model::dataset::build(&h, 1);
    let rows: Vec<&riskid::model::dataset::Example> = examples.iter().collect();
    let params = TrainParams::default().check().unwrap();
    let trees = TreeParams { max_trees: 60, ..TreeParams::default() };
    for (k, o) in a.outcomes.iter_mut().enumerate() {
        o.model = fit_family(Family::Trees, &rows, k, &params, &trees).unwrap();
    }
    let (mut reasons, mut scored) = (0, 0);
    for (upn, ph) in h.pupils.iter().take(400) {
        let (st, row) = ph.last().unwrap();
        let risk = riskid::scoring::score_pupil(&a, ph, row, SchoolTerm { urn: st.urn, term: st.term });
        assert_eq!(risk.upn, upn.as_str());
        let x = riskid::model::features::features(ph, row, st.term).values;
        for ((out, e), m) in risk.outcomes.iter().zip(a.explain(&x)).zip(&a.outcomes) {
            assert!((out.probability - m.model.probability(&x)).abs() < 1e-12);
            assert!((e.baseline + e.contributions.iter().sum::<f64>() - m.model.scorer.logit(&x)).abs() < 1e-9);
            for r in &out.reasons {
                reasons += 1;
                assert!(r.contribution > 0.0, "a reason that did not raise the risk: {r:?}");
            }
        }
        scored += 1;
    }
    assert!(reasons > scored, "trees still give reasons: {reasons} for {scored} pupils");
}
