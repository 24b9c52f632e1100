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

#[test]
fn probabilities_point_the_right_way_and_explanations_add_up() {
    let h = history(6, 2, 3);
    let a = train(&h, 10);
    let n = riskid::model::N_FEATURES;
    let idx = |name: &str| riskid::model::FEATURES.iter().position(|f| f.0 == name).unwrap();
    let mut calm = vec![0.0; n];
    calm[idx("absence_rate")] = 0.01;
    calm[idx("absence_rate_last_term")] = 0.01;
    calm[idx("year_group")] = 0.5;
    for (i, v) in a.scaling.means.iter().enumerate() {
        if calm[i] == 0.0 && !riskid::model::FEATURES[i].0.contains("absence") {
            calm[i] = *v;
        }
    }
    let mut worrying = calm.clone();
    for f in ["absence_rate", "absence_rate_last_term"] {
        worrying[idx(f)] = 0.35;
    }
    worrying[idx("absence_10pct_or_more")] = 1.0;
    worrying[idx("absence_20pct_or_more")] = 1.0;
    worrying[idx("absence_over_10pct_by")] = 0.25;
    // The same absence, on every term on record.
    let logit = |r: f64| (r / (1.0 - r)).ln();
    for (f, calm_v, worrying_v) in [
        ("absence_logit", logit(0.01), logit(0.35)),
        ("absence_logit_all_terms", logit(0.01), logit(0.35)),
        ("persistent_absence_share_all_terms", 0.0, 1.0),
    ] {
        calm[idx(f)] = calm_v;
        worrying[idx(f)] = worrying_v;
    }
    type Row = [f64; riskid::model::N_FEATURES];
    let (calm, worrying): (Row, Row) = (calm.try_into().unwrap(), worrying.try_into().unwrap());
    // Persistent absence is the rarer class: a high-absence pupil must get the higher probability.
    assert!(a.probabilities(&worrying)[0] > 0.5, "{:?}", a.probabilities(&worrying));
    assert!(a.probabilities(&calm)[0] < 0.1, "{:?}", a.probabilities(&calm));
    for e in a.explain(&worrying) {
        let logit = e.baseline + e.contributions.iter().sum::<f64>();
        assert!((1.0 / (1.0 + (-logit).exp()) - e.probability).abs() < 1e-12);
    }
}
