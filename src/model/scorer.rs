//! One outcome's fitted model, of either family, with its calibration: a logit that is a sum
//! of per-feature contributions, then a monotone map (Platt scaling, fitted on a held-out
//! term) to a probability.

use serde::{Deserialize, Serialize};

use super::ModelError;
use super::dataset::Example;
use super::features::N_FEATURES;
use super::train::{self, Linear, Scaling, ValidParams, WarmStart, sigmoid};
use super::trees::{Forest, TreeParams};
use crate::domain::Term;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Logistic,
    Trees,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Logistic, Family::Trees];

    pub fn label(self) -> &'static str {
        match self {
            Family::Logistic => "logistic regression",
            Family::Trees => "gradient-boosted trees",
        }
    }
}

/// The uncalibrated model: its logit is additive in the features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum Scorer {
    Logistic { scaling: Scaling, linear: Linear },
    Trees { forest: Forest },
}

/// p = σ(a + b · logit), with b > 0: a monotone map, so contributions keep their direction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Platt {
    pub a: f64,
    pub b: f64,
}

impl Platt {
    pub const IDENTITY: Platt = Platt { a: 0.0, b: 1.0 };

    pub fn apply(&self, logit: f64) -> f64 {
        sigmoid(self.a + self.b * logit)
    }

    /// Fits (a, b) by Newton's method on held-out logits and labels, with a tiny ridge so a
    /// separable or one-class hold-out still gives finite values. A fit with b ≤ 0 (the
    /// model ranks backwards on the hold-out) is refused: the identity is kept instead.
    pub fn fit(logits: &[f64], labels: &[bool]) -> Platt {
        let ridge = 1e-6;
        let loss = |a: f64, b: f64| -> f64 {
            let nll: f64 = logits
                .iter()
                .zip(labels)
                .map(|(&z, &y)| {
                    let e = a + b * z;
                    let sp = if e > 0.0 { e + (-e).exp().ln_1p() } else { e.exp().ln_1p() };
                    sp - if y { e } else { 0.0 }
                })
                .sum();
            nll + 0.5 * ridge * (a * a + (b - 1.0) * (b - 1.0))
        };
        // From the base rate with no slope, by damped Newton steps (each lowers the loss).
        let n = labels.len().max(1) as f64;
        let rate = (labels.iter().filter(|&&y| y).count() as f64 / n).clamp(1e-6, 1.0 - 1e-6);
        let (mut a, mut b) = ((rate / (1.0 - rate)).ln(), 0.0);
        let mut current = loss(a, b);
        for _ in 0..100 {
            let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (ridge * a, ridge * (b - 1.0), ridge, 0.0, ridge);
            for (&z, &y) in logits.iter().zip(labels) {
                let p = sigmoid(a + b * z);
                let r = p - f64::from(u8::from(y));
                let w = (p * (1.0 - p)).max(1e-12);
                ga += r;
                gb += r * z;
                haa += w;
                hab += w * z;
                hbb += w * z * z;
            }
            let det = haa * hbb - hab * hab;
            if !(det.is_finite() && det > 0.0) {
                break;
            }
            let da = (hbb * ga - hab * gb) / det;
            let db = (haa * gb - hab * ga) / det;
            let mut t = 1.0;
            let mut moved = false;
            while t > 1e-8 {
                let next = loss(a - t * da, b - t * db);
                if next <= current {
                    a -= t * da;
                    b -= t * db;
                    moved = current - next > 1e-12 * (1.0 + current.abs());
                    current = next;
                    break;
                }
                t *= 0.5;
            }
            if !moved {
                break;
            }
        }
        if a.is_finite() && b.is_finite() && b > 0.0 { Platt { a, b } } else { Platt::IDENTITY }
    }
}

/// A scorer and its calibration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibrated {
    pub scorer: Scorer,
    pub calibration: Platt,
    /// The held-out term the calibration (and, for trees, early stopping) used.
    pub calibrated_on: Option<Term>,
}

impl Scorer {
    pub fn family(&self) -> Family {
        match self {
            Scorer::Logistic { .. } => Family::Logistic,
            Scorer::Trees { .. } => Family::Trees,
        }
    }

    pub fn logit(&self, x: &[f64; N_FEATURES]) -> f64 {
        match self {
            Scorer::Logistic { scaling, linear } => linear.logit(&scaling.standardise(x)),
            Scorer::Trees { forest } => forest.logit(x),
        }
    }

    /// (baseline, contributions) with `baseline + Σ contributions == logit(x)`: exact for
    /// the linear model (coefficient × standardised value, baseline the intercept), TreeSHAP
    /// for trees (baseline the expected logit over the training data).
    pub fn contributions(&self, x: &[f64; N_FEATURES]) -> (f64, [f64; N_FEATURES]) {
        match self {
            Scorer::Logistic { scaling, linear } => {
                let z = scaling.standardise(x);
                (linear.intercept, std::array::from_fn(|j| linear.coefficients[j] * z[j]))
            }
            Scorer::Trees { forest } => forest.contributions(x),
        }
    }

    /// Checks a loaded scorer has this build's shape.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Scorer::Logistic { scaling, linear } => {
                if linear.coefficients.len() != N_FEATURES
                    || scaling.means.len() != N_FEATURES
                    || scaling.sds.len() != N_FEATURES
                    || scaling.sds.iter().any(|s| !(s.is_finite() && *s > 0.0))
                {
                    return Err(format!("a logistic model without {N_FEATURES} features"));
                }
            }
            Scorer::Trees { forest } => {
                for t in &forest.trees {
                    let n = t.nodes.len() as u32;
                    for (i, node) in t.nodes.iter().enumerate() {
                        let leaf = node.left == 0 && node.right == 0;
                        if !(node.cover.is_finite() && node.cover > 0.0 && node.value.is_finite()) {
                            return Err("a tree node without a positive cover".into());
                        }
                        if !leaf
                            && (usize::from(node.feature) >= N_FEATURES
                                || node.left as usize <= i
                                || node.right as usize <= i
                                || node.left >= n
                                || node.right >= n)
                        {
                            return Err("a tree with a malformed split".into());
                        }
                    }
                    if t.nodes.is_empty() {
                        return Err("an empty tree".into());
                    }
                }
            }
        }
        Ok(())
    }
}

impl Calibrated {
    pub fn family(&self) -> Family {
        self.scorer.family()
    }

    pub fn probability(&self, x: &[f64; N_FEATURES]) -> f64 {
        self.calibration.apply(self.scorer.logit(x))
    }
}

fn labelled<'a>(rows: &[&'a Example], k: usize) -> (Vec<&'a Example>, Vec<bool>) {
    rows.iter().filter_map(|e| e.labels[k].map(|l| (*e, l))).unzip()
}

/// Fits one family for outcome `k` on `rows`. Logistic regression is fitted on every term:
/// its own likelihood calibrates it, so its map is the identity. Trees are grown on every
/// term but the latest and early-stopped and calibrated (Platt) on the latest, held out.
pub fn fit_family(
    family: Family,
    rows: &[&Example],
    k: usize,
    params: &ValidParams,
    trees: &TreeParams,
) -> Result<Calibrated, ModelError> {
    fit_family_from(family, rows, k, params, trees, &mut WarmStart::default())
}

/// [`fit_family`], a logistic fit starting from the outcome's last one (`warm`, which it
/// then updates): fits of one outcome on nested sets of terms have nearby solutions.
pub fn fit_family_from(
    family: Family,
    rows: &[&Example],
    k: usize,
    params: &ValidParams,
    trees: &TreeParams,
    warm: &mut WarmStart,
) -> Result<Calibrated, ModelError> {
    let Some(last) = rows.iter().map(|e| e.term).max() else {
        return Err(ModelError::NotEnoughData("no examples".into()));
    };
    match family {
        Family::Logistic => {
            let scaling = Scaling::fit(rows);
            let linear = train::fit_outcome(rows, k, &scaling, params, warm)?;
            Ok(Calibrated {
                scorer: Scorer::Logistic { scaling, linear },
                calibration: Platt::IDENTITY,
                calibrated_on: None,
            })
        }
        Family::Trees => {
            let fit: Vec<&Example> = rows.iter().copied().filter(|e| e.term < last).collect();
            let hold: Vec<&Example> = rows.iter().copied().filter(|e| e.term == last).collect();
            let (fx, fy) = labelled(&fit, k);
            let (hx, hy) = labelled(&hold, k);
            let one_class = |y: &[bool]| y.iter().all(|&v| v) || y.iter().all(|&v| !v);
            if fy.len() < 50 || one_class(&fy) || hy.len() < 50 || one_class(&hy) {
                return Err(ModelError::NotEnoughData(format!(
                    "{} labelled examples to grow trees on and {} held out to stop and calibrate them",
                    fy.len(),
                    hy.len()
                )));
            }
            let fxv: Vec<[f64; N_FEATURES]> = fx.iter().map(|e| e.features).collect();
            let hxv: Vec<[f64; N_FEATURES]> = hx.iter().map(|e| e.features).collect();
            let p = TreeParams { seed: params.get().seed, ..*trees };
            let scorer = Scorer::Trees { forest: Forest::fit(&fxv, &fy, &hxv, &hy, &p)? };
            let logits: Vec<f64> = hxv.iter().map(|x| scorer.logit(x)).collect();
            let calibration = Platt::fit(&logits, &hy);
            Ok(Calibrated { scorer, calibration, calibrated_on: Some(last) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platt_recovers_a_known_map_and_refuses_a_backwards_one() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let z: Vec<f64> = (0..20000).map(|_| rng.random_range(-4.0..2.0)).collect();
        let y: Vec<bool> = z.iter().map(|&z| rng.random::<f64>() < sigmoid(-0.5 + 0.7 * z)).collect();
        let p = Platt::fit(&z, &y);
        assert!((p.a + 0.5).abs() < 0.08 && (p.b - 0.7).abs() < 0.05, "{p:?}");
        let backwards: Vec<bool> = y.iter().map(|&v| !v).collect();
        assert_eq!(Platt::fit(&z, &backwards), Platt::IDENTITY, "a model that ranks backwards is not flipped");
        assert_eq!(Platt::fit(&[], &[]), Platt::IDENTITY);
    }
}
