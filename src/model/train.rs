//! Fitting: standardise, then one L2-regularised logistic regression per outcome (Newton).

use ndarray::{Array1, Array2};
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
        // Some features are exact combinations of others (and of the intercept): without a
        // penalty the solution is not unique.
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(ModelError::Params("alpha must be more than 0".into()));
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

/// Fits on at most this many rows hold their standardised matrix; larger ones stream it.
const HELD_ROWS: usize = 200_000;

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
    let y: Vec<bool> = labelled.iter().map(|r| r.1).collect();
    let p = params.get();
    let standardise_into = |start: usize, out: &mut Array2<f64>| {
        for (i, mut row) in out.rows_mut().into_iter().enumerate() {
            let z = scaling.standardise(&labelled[start + i].0.features);
            for (v, zj) in row.iter_mut().zip(z) {
                *v = zj;
            }
        }
    };
    let (intercept, w) = if n <= HELD_ROWS {
        // Standardised once and held (at most ~90 MiB): each pass reads views of it.
        let mut x = Array2::<f64>::zeros((n, N_FEATURES));
        standardise_into(0, &mut x);
        newton_logistic(&x, &y, p.alpha, p.max_iterations)?
    } else {
        // Standardised a block at a time, each pass: no n × d matrix is held.
        newton_logistic_blocks(n, N_FEATURES, &standardise_into, &y, p.alpha, p.max_iterations)?
    };
    Ok(Linear { intercept, coefficients: w.to_vec() })
}

/// [`newton_logistic_blocks`] on a matrix held in memory.
pub fn newton_logistic(
    x: &Array2<f64>,
    y: &[bool],
    alpha: f64,
    max_iterations: u64,
) -> Result<(f64, Array1<f64>), ModelError> {
    let (n, d) = x.dim();
    newton_with(n, d, Rows::Held(x), y, alpha, max_iterations, HESSIAN_ROWS)
}

/// Rows per block: a block is one matrix product in the Hessian.
const BLOCK: usize = 8_192;
/// The Hessian is taken over about this many rows (every k-th); the gradient over all.
const HESSIAN_ROWS: usize = 16_384;

/// Called for each block of rows: its first row, the rows, and X w + b for them.
type BlockFn<'a> = dyn FnMut(usize, ndarray::ArrayView2<f64>, &Array1<f64>) + 'a;

/// Where the rows of the design matrix come from.
enum Rows<'a> {
    /// Held whole: blocks are views of it.
    Held(&'a Array2<f64>),
    /// Made a block at a time: `fill(start, block)` writes rows `start..start + block.nrows()`.
    Filled(&'a dyn Fn(usize, &mut Array2<f64>)),
}

/// L2-penalised logistic regression by Newton's method: minimises the summed log loss plus
/// `alpha`/2 · ‖w‖² (the intercept unpenalised) — the objective of linfa's and
/// scikit-learn's solvers (`alpha` = 1/C). Newton needs a handful of exact steps where
/// L-BFGS needs hundreds on correlated features. The design matrix is never held whole:
/// `fill(start, block)` writes rows `start..start + block.nrows()` of it.
pub fn newton_logistic_blocks(
    n: usize,
    d: usize,
    fill: &dyn Fn(usize, &mut Array2<f64>),
    y: &[bool],
    alpha: f64,
    max_iterations: u64,
) -> Result<(f64, Array1<f64>), ModelError> {
    newton_with(n, d, Rows::Filled(fill), y, alpha, max_iterations, HESSIAN_ROWS)
}

/// [`newton_logistic_blocks`], with the Hessian over about `hessian_rows` rows.
fn newton_with(
    n: usize,
    d: usize,
    rows: Rows,
    y: &[bool],
    alpha: f64,
    max_iterations: u64,
    hessian_rows: usize,
) -> Result<(f64, Array1<f64>), ModelError> {
    let t: Vec<f64> = y.iter().map(|&l| f64::from(u8::from(l))).collect();
    // Start from the base rate: intercept = its logit, coefficients 0.
    let rate = (t.iter().sum::<f64>() / n as f64).clamp(1e-6, 1.0 - 1e-6);
    let mut b = (rate / (1.0 - rate)).ln();
    let mut w = Array1::<f64>::zeros(d);
    // Calls `each(start, rows, eta)` for every block, with eta = X w + b for its rows.
    let mut pass = |w: &Array1<f64>, b: f64, each: &mut BlockFn| {
        for start in (0..n).step_by(BLOCK) {
            let end = (start + BLOCK).min(n);
            match rows {
                Rows::Held(x) => {
                    let xb = x.slice(ndarray::s![start..end, ..]);
                    let eta = xb.dot(w) + b;
                    each(start, xb, &eta);
                }
                Rows::Filled(fill) => {
                    let mut xb = Array2::<f64>::zeros((end - start, d));
                    fill(start, &mut xb);
                    let eta = xb.dot(w) + b;
                    each(start, xb.view(), &eta);
                }
            }
        }
    };
    let objective = |pass: &mut dyn FnMut(&Array1<f64>, f64, &mut BlockFn), w: &Array1<f64>, b: f64| -> f64 {
        let mut loss = 0.0;
        pass(w, b, &mut |start, _, eta| {
            loss += eta.iter().zip(&t[start..]).map(|(&e, &ti)| softplus(e) - ti * e).sum::<f64>();
        });
        loss + 0.5 * alpha * w.dot(w)
    };
    let mut current = objective(&mut pass, &w, b);
    // The gradient is exact, over every row; the Hessian, which only shapes the step, comes
    // from every `stride`-th row (scaled up to all n). The solution is where the gradient is
    // zero, so it is the same; each step costs a fraction of an exact Newton step, and the
    // damped search below keeps every step downhill.
    let stride = n.div_ceil(hessian_rows.max(1)).max(1);
    let sampled = n.div_ceil(stride);
    let scale_up = n as f64 / sampled as f64;
    for _ in 0..max_iterations.max(1) {
        // Gradient and Hessian over (w, b): the bordered system [[XᵀHX + αI, XᵀH1], [1ᵀHX, Σh]].
        let mut gw = alpha * &w;
        let mut gb = 0.0;
        let mut xtx = Array2::<f64>::zeros((d, d));
        let mut xh = Array1::<f64>::zeros(d);
        let mut hsum = 0.0;
        pass(&w, b, &mut |start, xb, eta| {
            let p = eta.mapv(sigmoid);
            let tb = ndarray::ArrayView1::from(&t[start..start + p.len()]);
            let r = &p - &tb;
            let h = p.mapv(|q| (q * (1.0 - q)).max(1e-12));
            gw += &xb.t().dot(&r);
            gb += r.sum();
            let (xs, hs) = if stride == 1 {
                (xb.to_owned(), h)
            } else {
                // The rows whose index is a multiple of the stride.
                let first = (stride - start % stride) % stride;
                let idx: Vec<usize> = (first..xb.nrows()).step_by(stride).collect();
                (xb.select(ndarray::Axis(0), &idx), h.select(ndarray::Axis(0), &idx))
            };
            xh += &xs.t().dot(&hs);
            hsum += hs.sum();
            let xs = xs * &hs.mapv(f64::sqrt).insert_axis(ndarray::Axis(1));
            ndarray::linalg::general_mat_mul(1.0, &xs.t(), &xs, 1.0, &mut xtx);
        });
        xtx *= scale_up;
        xh *= scale_up;
        hsum *= scale_up;
        let mut hess = Array2::<f64>::zeros((d + 1, d + 1));
        hess.slice_mut(ndarray::s![..d, ..d]).assign(&xtx);
        for j in 0..d {
            hess[[j, j]] += alpha;
            hess[[j, d]] = xh[j];
            hess[[d, j]] = xh[j];
        }
        hess[[d, d]] = hsum;
        let mut g = Array1::<f64>::zeros(d + 1);
        g.slice_mut(ndarray::s![..d]).assign(&gw);
        g[d] = gb;
        let step =
            cholesky_solve(&hess, &g).ok_or_else(|| ModelError::Fit("the Hessian is not positive definite".into()))?;
        // Damped: halve the step until the objective does not rise.
        let mut scale = 1.0;
        loop {
            let nw = &w - &(scale * &step.slice(ndarray::s![..d]));
            let nb = b - scale * step[d];
            let next = objective(&mut pass, &nw, nb);
            if next <= current || scale < 1e-6 {
                w = nw;
                b = nb;
                let improved = current - next;
                current = next;
                // Converged when no coefficient (of a standardised feature) moves by 1e-7.
                if improved.abs() <= 1e-12 * (1.0 + current.abs()) || step.iter().all(|s| (scale * s).abs() < 1e-7) {
                    return Ok((b, w));
                }
                break;
            }
            scale *= 0.5;
        }
    }
    Ok((b, w))
}

fn softplus(z: f64) -> f64 {
    if z > 0.0 { z + (-z).exp().ln_1p() } else { z.exp().ln_1p() }
}

/// Solves `a x = g` for a symmetric positive-definite `a` (Cholesky).
fn cholesky_solve(a: &Array2<f64>, g: &Array1<f64>) -> Option<Array1<f64>> {
    let n = a.nrows();
    let mut l = Array2::<f64>::zeros((n, n));
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[[i, j]];
            for k in 0..j {
                s -= l[[i, k]] * l[[j, k]];
            }
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[[i, i]] = s.sqrt();
            } else {
                l[[i, j]] = s / l[[j, j]];
            }
        }
    }
    let mut z = Array1::<f64>::zeros(n);
    for i in 0..n {
        let mut s = g[i];
        for k in 0..i {
            s -= l[[i, k]] * z[k];
        }
        z[i] = s / l[[i, i]];
    }
    let mut x = Array1::<f64>::zeros(n);
    for i in (0..n).rev() {
        let mut s = z[i];
        for k in i + 1..n {
            s -= l[[k, i]] * x[k];
        }
        x[i] = s / l[[i, i]];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use linfa::prelude::*;
    use linfa_logistic::LogisticRegression;
    use ndarray::ShapeBuilder;

    /// The same objective as linfa's L-BFGS solver, to its tolerance.
    #[test]
    fn newton_matches_linfa_on_the_same_objective() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let (n, d) = (2000, 6);
        let mut x = Array2::<f64>::zeros((n, d).f());
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let mut z = -1.5;
            for j in 0..d {
                let v: f64 = rng.random_range(-2.0..2.0);
                x[[i, j]] = v;
                z += [0.8, -0.5, 0.3, 0.0, 1.2, -0.1][j] * v;
            }
            y.push(rng.random::<f64>() < sigmoid(z));
        }
        let (b, w) = newton_logistic(&x, &y, 1.0, 100).unwrap();
        let fitted = LogisticRegression::default()
            .alpha(1.0)
            .max_iterations(1000)
            .gradient_tolerance(1e-8)
            .fit(&Dataset::new(x.clone(), Array1::from(y.clone())))
            .unwrap();
        let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
        assert!((sign * fitted.intercept() - b).abs() < 1e-4, "{} vs {b}", sign * fitted.intercept());
        for (a, c) in fitted.params().iter().zip(&w) {
            assert!((sign * a - c).abs() < 1e-4, "{} vs {c}", sign * a);
        }
    }

    /// A Hessian from a subsample of rows changes the path, not the solution: on 40,000 rows
    /// with correlated features, the same coefficients as exact Newton.
    #[test]
    fn a_subsampled_hessian_reaches_the_exact_solution() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let (n, d) = (40_000, 5);
        let mut x = Array2::<f64>::zeros((n, d));
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let common: f64 = rng.random_range(-1.0..1.0);
            let mut z = -2.0;
            for j in 0..d {
                let v = common + 0.5 * rng.random_range(-1.0..1.0);
                x[[i, j]] = v;
                z += [1.0, -0.7, 0.4, 0.0, 0.9][j] * v;
            }
            y.push(rng.random::<f64>() < sigmoid(z));
        }
        let fill = |start: usize, out: &mut Array2<f64>| {
            let rows = out.nrows();
            out.assign(&x.slice(ndarray::s![start..start + rows, ..]));
        };
        let exact = newton_with(n, d, Rows::Held(&x), &y, 1.0, 200, usize::MAX).unwrap();
        let sampled = newton_with(n, d, Rows::Held(&x), &y, 1.0, 200, 4_000).unwrap();
        // Streamed blocks give the same as a held matrix, to the bit.
        assert_eq!(newton_with(n, d, Rows::Filled(&fill), &y, 1.0, 200, 4_000).unwrap(), sampled);
        assert!((exact.0 - sampled.0).abs() < 1e-6, "{} vs {}", exact.0, sampled.0);
        for (a, b) in exact.1.iter().zip(&sampled.1) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
