//! Fitting: standardise, then one L2-regularised logistic regression per outcome (linfa).

use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2, ShapeBuilder};
use serde::{Deserialize, Serialize};

use super::ModelError;
use super::dataset::Example;
use super::features::N_FEATURES;

/// Unchecked training parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainParams {
    /// L2 strength on standardised coefficients (1/C in scikit-learn's terms).
    pub alpha: f64,
    pub max_iterations: u64,
    /// Seeds tie-breaks in evaluation (logistic regression itself is deterministic).
    pub seed: u64,
    /// Cohort capacity per school: the operating point for precision, recall and fairness.
    pub capacity: usize,
}

impl Default for TrainParams {
    fn default() -> Self {
        Self { alpha: 1.0, max_iterations: 200, seed: 42, capacity: 36 }
    }
}

/// Parameters that passed `check`.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidParams(TrainParams);

impl TrainParams {
    pub fn check(self) -> Result<ValidParams, ModelError> {
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(ModelError::Params("alpha must be 0 or more".into()));
        }
        if self.max_iterations == 0 {
            return Err(ModelError::Params("max_iterations must be at least 1".into()));
        }
        if self.capacity == 0 {
            return Err(ModelError::Params("capacity must be at least 1".into()));
        }
        Ok(ValidParams(self))
    }
}

impl ValidParams {
    pub fn get(&self) -> &TrainParams {
        &self.0
    }
}

/// Feature standardisation learned from the training rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaling {
    pub means: Vec<f64>,
    pub sds: Vec<f64>,
}

impl Scaling {
    pub fn fit(rows: &[&Example]) -> Self {
        let n = rows.len().max(1) as f64;
        let mut means = vec![0.0; N_FEATURES];
        for r in rows {
            for (m, v) in means.iter_mut().zip(&r.features) {
                *m += v / n;
            }
        }
        let mut vars = vec![0.0; N_FEATURES];
        for r in rows {
            for ((s, v), m) in vars.iter_mut().zip(&r.features).zip(&means) {
                *s += (v - m).powi(2) / n;
            }
        }
        // A constant feature gets sd 1: it then contributes nothing, rather than dividing by 0.
        let sds = vars.into_iter().map(|v| if v > 1e-12 { v.sqrt() } else { 1.0 }).collect();
        Self { means, sds }
    }

    pub fn standardise(&self, x: &[f64; N_FEATURES]) -> [f64; N_FEATURES] {
        std::array::from_fn(|j| (x[j] - self.means[j]) / self.sds[j])
    }
}

/// A fitted outcome model on standardised features, oriented so it gives P(outcome).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Linear {
    pub intercept: f64,
    pub coefficients: Vec<f64>,
}

pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

impl Linear {
    pub fn logit(&self, z: &[f64; N_FEATURES]) -> f64 {
        self.intercept + self.coefficients.iter().zip(z).map(|(w, v)| w * v).sum::<f64>()
    }
    pub fn probability(&self, z: &[f64; N_FEATURES]) -> f64 {
        sigmoid(self.logit(z))
    }
}

/// Fits P(label) on the examples whose label for `outcome` is defined.
pub fn fit_outcome(
    rows: &[&Example],
    outcome: usize,
    scaling: &Scaling,
    params: &ValidParams,
) -> Result<Linear, ModelError> {
    let labelled: Vec<(&Example, bool)> = rows.iter().filter_map(|e| e.labels[outcome].map(|l| (*e, l))).collect();
    let n = labelled.len();
    if n < 50 || labelled.iter().all(|r| r.1) || labelled.iter().all(|r| !r.1) {
        return Err(ModelError::NotEnoughData(format!(
            "{n} labelled examples for outcome {outcome}, with too few of one class to fit"
        )));
    }
    // Column-major: the solver's gradient walks columns.
    let mut x = Array2::<f64>::zeros((n, N_FEATURES).f());
    for (i, (e, _)) in labelled.iter().enumerate() {
        let z = scaling.standardise(&e.features);
        for (j, v) in z.iter().enumerate() {
            x[[i, j]] = *v;
        }
    }
    let y: Array1<bool> = labelled.iter().map(|r| r.1).collect();
    let p = params.get();
    // linfa compares the tolerance with a summed gradient, so it must grow with n.
    let fitted = LogisticRegression::default()
        .alpha(p.alpha)
        .max_iterations(p.max_iterations)
        .gradient_tolerance(1e-6 * n as f64)
        .fit(&Dataset::new(x, y))
        .map_err(|e| ModelError::Fit(e.to_string()))?;
    // linfa's probabilities are for its "positive" class, which is the more frequent one:
    // for a rare outcome that is `false`. Orient so the model always gives P(true).
    let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
    Ok(Linear {
        intercept: sign * fitted.intercept(),
        coefficients: fitted.params().iter().map(|w| sign * w).collect(),
    })
}
