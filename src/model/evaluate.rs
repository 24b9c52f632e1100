//! Honest evaluation: train on earlier terms, test on the latest labelled term, at the
//! cohort capacity, against two simple baselines, with calibration and fairness by group.

use serde::{Deserialize, Serialize};

use super::dataset::Example;
use super::fairness::{FairnessReport, fairness};
use super::metrics::{Bin, average_precision, brier, precision_recall, reliability, roc_auc, top_k_per_group};
use crate::domain::{Outcome, Term};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodMetrics {
    pub auc: Option<f64>,
    pub average_precision: Option<f64>,
    /// Only for methods that give probabilities.
    pub brier: Option<f64>,
    pub ece: Option<f64>,
    pub precision_at_capacity: f64,
    pub recall_at_capacity: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeEvaluation {
    pub outcome: Outcome,
    pub test_term: Term,
    pub test_examples: usize,
    pub positives: usize,
    pub capacity: usize,
    pub model: MethodMetrics,
    pub last_term_status: MethodMetrics,
    pub dfe_absence_rule: MethodMetrics,
    pub reliability: Vec<Bin>,
    /// Better AUC and at least as good precision at capacity as both baselines.
    pub beats_baselines: bool,
    pub fairness: FairnessReport,
}

fn method(scores: &[f64], labels: &[bool], schools: &[u32], tie: &[u64], k: usize, probs: bool) -> MethodMetrics {
    let selected = top_k_per_group(scores, schools, tie, k);
    let (precision, recall) = precision_recall(&selected, labels);
    MethodMetrics {
        auc: roc_auc(scores, labels),
        average_precision: average_precision(scores, labels),
        brier: probs.then(|| brier(scores, labels)),
        ece: probs.then(|| reliability(scores, labels, 10).1),
        precision_at_capacity: precision,
        recall_at_capacity: recall,
    }
}

/// Evaluates one outcome on the test rows, given the model's probabilities for each row.
pub fn evaluate_outcome(
    outcome: usize,
    test: &[&Example],
    probabilities: &[f64],
    capacity: usize,
    test_term: Term,
) -> OutcomeEvaluation {
    let keep: Vec<usize> = (0..test.len()).filter(|&i| test[i].labels[outcome].is_some()).collect();
    let labels: Vec<bool> = keep.iter().map(|&i| test[i].labels[outcome] == Some(true)).collect();
    let schools: Vec<u32> = keep.iter().map(|&i| test[i].urn.get()).collect();
    let tie: Vec<u64> = keep.iter().map(|&i| test[i].tie).collect();
    let model: Vec<f64> = keep.iter().map(|&i| probabilities[i]).collect();
    let last: Vec<f64> = keep.iter().map(|&i| test[i].last_status[outcome]).collect();
    let dfe: Vec<f64> = keep.iter().map(|&i| test[i].dfe_rule).collect();
    let m = method(&model, &labels, &schools, &tie, capacity, true);
    let l = method(&last, &labels, &schools, &tie, capacity, false);
    let d = method(&dfe, &labels, &schools, &tie, capacity, false);
    let beats = |b: &MethodMetrics| {
        m.auc.unwrap_or(0.0) > b.auc.unwrap_or(0.0) && m.precision_at_capacity >= b.precision_at_capacity
    };
    let beats_baselines = beats(&l) && beats(&d);
    let selected = top_k_per_group(&model, &schools, &tie, capacity);
    let rows: Vec<&Example> = keep.iter().map(|&i| test[i]).collect();
    OutcomeEvaluation {
        outcome: Outcome::ALL[outcome],
        test_term,
        test_examples: labels.len(),
        positives: labels.iter().filter(|&&l| l).count(),
        capacity,
        reliability: reliability(&model, &labels, 10).0,
        model: m,
        last_term_status: l,
        dfe_absence_rule: d,
        beats_baselines,
        fairness: fairness(&rows, &selected, &labels),
    }
}
