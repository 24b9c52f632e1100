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
        let mut sums = [0.0; N_FEATURES];
        for r in rows {
            for (m, v) in sums.iter_mut().zip(&r.features) {
                *m += v;
            }
        }
        let means: Vec<f64> = sums.iter().map(|s| s / n).collect();
        let mut squares = [0.0; N_FEATURES];
        for r in rows {
            for ((s, v), m) in squares.iter_mut().zip(&r.features).zip(&means) {
                *s += (v - m) * (v - m);
            }
        }
        let vars = squares.map(|s| s / n);
        // A constant feature gets sd 1: it then contributes (next to) nothing, rather than
        // dividing by 0 (next to: the solver's single-precision copy of a value it cannot
        // hold exactly differs from the mean by about 1e-8).
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

/// The last logistic solution fitted for an outcome, on the raw (unstandardised) features:
/// where the next fit of that outcome on similar rows starts. The objective is strictly
/// convex, so a start changes how many Newton steps a fit takes, never its solution.
#[derive(Debug, Clone, Default)]
pub struct WarmStart(Option<(f64, Vec<f64>)>);

impl WarmStart {
    /// The start in `scaling`'s standardised terms (the same function of the raw features).
    fn under(&self, scaling: &Scaling) -> Option<(f64, Vec<f64>)> {
        let (b, w) = self.0.as_ref()?;
        let ws = w.iter().zip(&scaling.sds).map(|(w, s)| w * s).collect();
        let bs = b + w.iter().zip(&scaling.means).map(|(w, m)| w * m).sum::<f64>();
        Some((bs, ws))
    }

    fn remember(&mut self, scaling: &Scaling, fit: &Linear) {
        let w: Vec<f64> = fit.coefficients.iter().zip(&scaling.sds).map(|(c, s)| c / s).collect();
        let b = fit.intercept - w.iter().zip(&scaling.means).map(|(w, m)| w * m).sum::<f64>();
        self.0 = Some((b, w));
    }
}

/// Fits P(label) on the examples whose label for `outcome` is defined.
pub fn fit_outcome(
    rows: &[&Example],
    outcome: usize,
    scaling: &Scaling,
    params: &ValidParams,
    warm: &mut WarmStart,
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
    // The solver reads the examples' single-precision rows (a pass over the rows is bound by
    // memory: rows adjacent in one shared matrix, at half the bytes, take half the time of
    // each example's own doubles) and applies the standardisation through its weights, in
    // double precision.
    let x: Vec<&[f32]> = labelled.iter().map(|(e, _)| e.single.get()).collect();
    let rows = Rows::Raw { x: &x, means: &scaling.means, sds: &scaling.sds };
    let start = warm.under(scaling);
    let start = start.as_ref().map(|(b, w)| (*b, &w[..]));
    let (intercept, w) = newton_with(n, N_FEATURES, rows, &y, p.alpha, p.max_iterations, HESSIAN_ROWS, start)?;
    let fit = Linear { intercept, coefficients: w.to_vec() };
    warm.remember(scaling, &fit);
    Ok(fit)
}

/// [`newton_logistic_blocks`] on a matrix held in memory.
pub fn newton_logistic(
    x: &Array2<f64>,
    y: &[bool],
    alpha: f64,
    max_iterations: u64,
) -> Result<(f64, Array1<f64>), ModelError> {
    let (n, d) = x.dim();
    let x = x.as_standard_layout();
    newton_with(n, d, Rows::Held(x.as_slice().expect("standard layout")), y, alpha, max_iterations, HESSIAN_ROWS, None)
}

/// Rows per block of a streamed matrix.
const BLOCK: usize = 8_192;
/// The Hessian is taken over about this many rows (every k-th); the gradient over all.
const HESSIAN_ROWS: usize = 16_384;
/// Sampled rows gathered for one product of the Hessian.
const HESSIAN_CHUNK: usize = 512;

/// Where the rows of the design matrix come from.
enum Rows<'a> {
    /// Standardised and held whole, row-major.
    Held(&'a [f64]),
    /// Standardised a block at a time: `fill(start, block)` writes rows `start..start + block.nrows()`.
    Filled(&'a dyn Fn(usize, &mut Array2<f64>)),
    /// Raw rows in single precision, standardised as `(x - means) / sds` through the weights.
    Raw { x: &'a [&'a [f32]], means: &'a [f64], sds: &'a [f64] },
}

impl Rows<'_> {
    /// Calls `each(i, row)` for every row, in order.
    fn for_rows(&self, n: usize, d: usize, each: &mut dyn FnMut(usize, &[f64])) {
        match self {
            Rows::Held(x) => x.chunks_exact(d).take(n).enumerate().for_each(|(i, r)| each(i, r)),
            Rows::Raw { x, .. } => {
                let mut row = vec![0.0; d];
                for (i, r) in x.iter().take(n).enumerate() {
                    for (to, v) in row.iter_mut().zip(r.iter()) {
                        *to = f64::from(*v);
                    }
                    each(i, &row);
                }
            }
            Rows::Filled(fill) => {
                let mut xb = Array2::<f64>::zeros((BLOCK.min(n), d));
                for start in (0..n).step_by(BLOCK) {
                    let end = (start + BLOCK).min(n);
                    if end - start != xb.nrows() {
                        xb = Array2::<f64>::zeros((end - start, d));
                    }
                    fill(start, &mut xb);
                    let block = xb.as_slice().expect("a new array is in standard layout");
                    block.chunks_exact(d).enumerate().for_each(|(i, r)| each(start + i, r));
                }
            }
        }
    }

    /// The standardisation applied to raw rows: (means, 1 / sds), or none.
    fn scaling(&self) -> Option<(&[f64], Vec<f64>)> {
        match self {
            Rows::Raw { means, sds, .. } => Some((means, sds.iter().map(|s| 1.0 / s).collect())),
            _ => None,
        }
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    // Four accumulators, so the compiler can keep several multiply-adds in flight.
    let mut acc = [0.0; 4];
    let (ca, ra) = a.as_chunks::<4>();
    let (cb, rb) = b.as_chunks::<4>();
    for (x, y) in ca.iter().zip(cb) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// What one pass over the rows gives at a point (w, b).
struct Pass {
    /// Summed log loss (without the penalty).
    loss: f64,
    /// Σ r·x over the rows as given (raw or standardised) and Σ r, with r = p - t.
    gx: Vec<f64>,
    gb: f64,
    /// The sampled Hessian's parts, when asked for: ZᵀHZ, ZᵀH1 and Σh (not yet scaled up).
    hessian: Option<(Array2<f64>, Vec<f64>, f64)>,
}

/// One pass at (w, b) over every row: the linear predictor (kept in `eta`), the loss, the
/// gradient's sums and, when `hessian_stride` is given, the Hessian from every such row.
/// On raw rows the standardisation is folded into the weights:
/// z · w + b = x · (w / sds) + (b - means · (w / sds)).
#[allow(clippy::too_many_arguments)]
fn pass(
    rows: &Rows,
    n: usize,
    d: usize,
    t: &[f64],
    w: &[f64],
    b: f64,
    eta: &mut [f64],
    hessian_stride: Option<usize>,
) -> Pass {
    let scaling = rows.scaling();
    let (v, c) = match &scaling {
        Some((means, inv)) => {
            let v: Vec<f64> = w.iter().zip(inv).map(|(w, i)| w * i).collect();
            let c = b - dot(means, &v);
            (v, c)
        }
        None => (w.to_vec(), b),
    };
    // The loss's log terms are summed as the log of their arguments' running product (each
    // in (1, 2], so 512 of them stay far inside a double's range): one logarithm per 512
    // rows rather than one per row, within about 1e-16 of each term's own.
    let (mut loss, mut product, mut in_product) = (0.0, 1.0, 0);
    let mut gx = vec![0.0; d];
    let mut gb = 0.0;
    // Sampled rows, each standardised and times √h, gathered for the Hessian's product.
    let mut hb = hessian_stride.map(|_| Array2::<f64>::zeros((HESSIAN_CHUNK, d)));
    let mut xtx = Array2::<f64>::zeros((if hb.is_some() { d } else { 0 }, d));
    let (mut xh, mut hsum, mut taken) = (vec![0.0; d], 0.0, 0);
    let mut z = vec![0.0; d];
    rows.for_rows(n, d, &mut |row, x| {
        let e = dot(x, &v) + c;
        eta[row] = e;
        // One exponential for both the loss and the probability.
        let a = (-e.abs()).exp();
        loss += e.max(0.0) - t[row] * e;
        product *= 1.0 + a;
        in_product += 1;
        if in_product == 512 {
            loss += product.ln();
            (product, in_product) = (1.0, 0);
        }
        let p = if e >= 0.0 { 1.0 / (1.0 + a) } else { a / (1.0 + a) };
        let r = p - t[row];
        for (g, xv) in gx.iter_mut().zip(x) {
            *g += r * xv;
        }
        gb += r;
        if let (Some(stride), Some(hb)) = (hessian_stride, hb.as_mut())
            && row % stride == 0
        {
            let h = (p * (1.0 - p)).max(1e-12);
            let sh = h.sqrt();
            let zx: &[f64] = match &scaling {
                Some((means, inv)) => {
                    for (((zj, xj), m), i) in z.iter_mut().zip(x).zip(*means).zip(inv) {
                        *zj = (xj - m) * i;
                    }
                    &z
                }
                None => x,
            };
            let out = &mut hb.as_slice_mut().expect("a new array is in standard layout")[taken * d..(taken + 1) * d];
            for ((o, zv), a) in out.iter_mut().zip(zx).zip(xh.iter_mut()) {
                *o = sh * zv;
                *a += h * zv;
            }
            hsum += h;
            taken += 1;
            if taken == HESSIAN_CHUNK {
                ndarray::linalg::general_mat_mul(1.0, &hb.t(), &*hb, 1.0, &mut xtx);
                taken = 0;
            }
        }
    });
    loss += product.ln();
    let hessian = hb.map(|hb| {
        if taken > 0 {
            let part = hb.slice(ndarray::s![..taken, ..]);
            ndarray::linalg::general_mat_mul(1.0, &part.t(), &part, 1.0, &mut xtx);
        }
        (xtx, xh, hsum)
    });
    Pass { loss, gx, gb, hessian }
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
    newton_with(n, d, Rows::Filled(fill), y, alpha, max_iterations, HESSIAN_ROWS, None)
}

/// [`newton_logistic_blocks`], with the Hessian over about `hessian_rows` rows, started from
/// `start` (intercept, coefficients) when given, else from the base rate. The objective is
/// strictly convex, so the start changes only how many steps it takes, not where it ends.
#[allow(clippy::too_many_arguments)]
fn newton_with(
    n: usize,
    d: usize,
    rows: Rows,
    y: &[bool],
    alpha: f64,
    max_iterations: u64,
    hessian_rows: usize,
    start: Option<(f64, &[f64])>,
) -> Result<(f64, Array1<f64>), ModelError> {
    let t: Vec<f64> = y.iter().map(|&l| f64::from(u8::from(l))).collect();
    let (mut b, mut w) = match start {
        Some((b, w)) if w.len() == d && b.is_finite() && w.iter().all(|v| v.is_finite()) => (b, w.to_vec()),
        _ => {
            // The base rate: intercept = its logit, coefficients 0.
            let rate = (t.iter().sum::<f64>() / n as f64).clamp(1e-6, 1.0 - 1e-6);
            ((rate / (1.0 - rate)).ln(), vec![0.0; d])
        }
    };
    let penalty = |w: &[f64]| 0.5 * alpha * dot(w, w);
    let inv_sds = rows.scaling().map(|(_, inv)| inv);
    // The gradient in standardised terms: Σ r·z = (Σ r·x - means Σ r) / sds.
    let gradient = |at: &Pass, w: &[f64]| -> Array1<f64> {
        let mut g = Array1::<f64>::zeros(d + 1);
        for j in 0..d {
            g[j] = alpha * w[j]
                + match (&rows, &inv_sds) {
                    (Rows::Raw { means, .. }, Some(inv)) => (at.gx[j] - means[j] * at.gb) * inv[j],
                    _ => at.gx[j],
                };
        }
        g[d] = at.gb;
        g
    };
    // The gradient is exact, over every row; the Hessian, which only shapes the step, comes
    // from every `stride`-th row (scaled up to all n). The solution is where the gradient is
    // zero, so it is the same; each step costs a fraction of an exact Newton step, and the
    // damped search below keeps every step downhill.
    let stride = n.div_ceil(hessian_rows.max(1)).max(1);
    let sampled = n.div_ceil(stride);
    let scale_up = n as f64 / sampled as f64;
    let factor_of = |(xtx, xh, hsum): (Array2<f64>, Vec<f64>, f64)| -> Result<Cholesky, ModelError> {
        // The bordered system [[ZᵀHZ + αI, ZᵀH1], [1ᵀHZ, Σh]] over (w, b).
        let mut hess = Array2::<f64>::zeros((d + 1, d + 1));
        hess.slice_mut(ndarray::s![..d, ..d]).assign(&(xtx * scale_up));
        for j in 0..d {
            hess[[j, j]] += alpha;
            hess[[j, d]] = scale_up * xh[j];
            hess[[d, j]] = scale_up * xh[j];
        }
        hess[[d, d]] = scale_up * hsum;
        cholesky_factor(&hess).ok_or_else(|| ModelError::Fit("the Hessian is not positive definite".into()))
    };
    // Each step: one pass at the new point gives its objective and, once it is taken, the
    // gradient (and Hessian) for the next step, so a step whose size is kept reads the rows
    // once. The factored Hessian is kept while it keeps the steps shrinking fast (a step at
    // most half the one before, taken whole): near the solution the Hessian barely changes,
    // and recomputing it (a d × d product over the sampled rows) is most of a step's cost.
    let mut eta = vec![0.0; n];
    let mut next_eta = vec![0.0; n];
    let mut at = pass(&rows, n, d, &t, &w, b, &mut eta, Some(stride));
    // Passes over the rows (each one reads all n), for the debug log.
    let mut passes = 1;
    let mut current = at.loss + penalty(&w);
    let mut factor = factor_of(at.hessian.take().expect("asked for"))?;
    let mut last_step = f64::INFINITY;
    for _ in 0..max_iterations.max(1) {
        let step = factor.solve(&gradient(&at, &w));
        let whole = step.iter().fold(0.0f64, |m, s| m.max(s.abs()));
        // Whether the next step needs a fresh Hessian, if this one is taken whole.
        let refresh = whole > 0.5 * last_step;
        // Damped: halve the step until the objective does not rise.
        let mut scale = 1.0;
        loop {
            let nw: Vec<f64> = w.iter().zip(&step).map(|(v, s)| v - scale * s).collect();
            let nb = b - scale * step[d];
            let mut next = pass(&rows, n, d, &t, &nw, nb, &mut next_eta, (scale == 1.0 && refresh).then_some(stride));
            passes += 1;
            let objective = next.loss + penalty(&nw);
            tracing::trace!(passes, scale, whole, refresh, improved = current - objective, "newton step");
            if objective <= current || scale < 1e-6 {
                w = nw;
                b = nb;
                std::mem::swap(&mut eta, &mut next_eta);
                let improved = current - objective;
                current = objective;
                // Converged when no coefficient (of a standardised feature) moves by 1e-7.
                let largest = scale * whole;
                if improved.abs() <= 1e-12 * (1.0 + current.abs()) || largest < 1e-7 {
                    tracing::debug!(rows = n, passes, warm = start.is_some(), "logistic fit converged");
                    return Ok((b, Array1::from(w)));
                }
                if scale < 1.0 {
                    // A damped step: the gradient and a fresh Hessian at the new point.
                    next = pass(&rows, n, d, &t, &w, b, &mut next_eta, Some(stride));
                    passes += 1;
                }
                if let Some(h) = next.hessian.take() {
                    factor = factor_of(h)?;
                }
                at = next;
                last_step = largest;
                break;
            }
            scale *= 0.5;
        }
    }
    tracing::debug!(rows = n, passes, warm = start.is_some(), "logistic fit stopped at the iteration limit");
    Ok((b, Array1::from(w)))
}

/// Solves `a x = g` for a symmetric positive-definite `a` (Cholesky).
/// The lower-triangular L with L Lᵀ = A, for a symmetric positive-definite A.
struct Cholesky(Array2<f64>);

fn cholesky_factor(a: &Array2<f64>) -> Option<Cholesky> {
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
    Some(Cholesky(l))
}

impl Cholesky {
    /// Solves A x = g.
    fn solve(&self, g: &Array1<f64>) -> Array1<f64> {
        let l = &self.0;
        let n = l.nrows();
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
        x
    }
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
        let held = Rows::Held(x.as_slice().unwrap());
        let exact = newton_with(n, d, held, &y, 1.0, 200, usize::MAX, None).unwrap();
        let sampled = newton_with(n, d, Rows::Held(x.as_slice().unwrap()), &y, 1.0, 200, 4_000, None).unwrap();
        // Streamed blocks give the same as a held matrix, to the bit.
        assert_eq!(newton_with(n, d, Rows::Filled(&fill), &y, 1.0, 200, 4_000, None).unwrap(), sampled);
        assert!((exact.0 - sampled.0).abs() < 1e-6, "{} vs {}", exact.0, sampled.0);
        for (a, b) in exact.1.iter().zip(&sampled.1) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    /// Correlated rows on raw scales (means far from 0, spreads far from 1) and outcomes.
    fn raw_rows(n: usize, seed: u64) -> (Vec<[f64; 5]>, Vec<bool>) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (mut x, mut y) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let common: f64 = rng.random_range(-1.0..1.0);
            let row: [f64; 5] = std::array::from_fn(|j| {
                let v = common + 0.5 * rng.random_range(-1.0..1.0);
                // Values a single-precision copy holds exactly, so every form of the rows
                // below is the same data.
                f64::from(([50.0, 0.1, -3.0, 7.0, 1000.0][j] + v * [10.0, 0.02, 1.0, 3.0, 200.0][j]) as f32)
            });
            let z = -2.0 + (row[0] - 50.0) / 10.0 - 0.7 * (row[1] - 0.1) / 0.02 + 0.4 * (row[4] - 1000.0) / 200.0;
            x.push(row);
            y.push(rng.random::<f64>() < sigmoid(z));
        }
        (x, y)
    }

    /// The rows as the solver's raw form holds them: single precision, row-major.
    fn single(x: &[[f64; 5]]) -> Vec<f32> {
        let x32: Vec<f32> = x.iter().flat_map(|r| r.map(|v| v as f32)).collect();
        assert!(x32.iter().zip(x.iter().flatten()).all(|(a, b)| f64::from(*a) == *b), "exactly representable");
        x32
    }

    fn scaling_of(x: &[[f64; 5]]) -> (Vec<f64>, Vec<f64>) {
        let n = x.len() as f64;
        let means: Vec<f64> = (0..5).map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n).collect();
        let sds = (0..5).map(|j| (x.iter().map(|r| (r[j] - means[j]).powi(2)).sum::<f64>() / n).sqrt()).collect();
        (means, sds)
    }

    /// Raw rows with the standardisation folded into the weights reach the solution a
    /// standardised matrix does.
    #[test]
    fn raw_rows_reach_the_standardised_solution() {
        let (x, y) = raw_rows(30_000, 3);
        let (means, sds) = scaling_of(&x);
        let z: Vec<f64> =
            x.iter().flat_map(|r| (0..5).map(|j| (r[j] - means[j]) / sds[j]).collect::<Vec<_>>()).collect();
        let held = newton_with(x.len(), 5, Rows::Held(&z), &y, 1.0, 200, 4_000, None).unwrap();
        let x32 = single(&x);
        let refs: Vec<&[f32]> = x32.chunks_exact(5).collect();
        let raw = Rows::Raw { x: &refs, means: &means, sds: &sds };
        let folded = newton_with(x.len(), 5, raw, &y, 1.0, 200, 4_000, None).unwrap();
        assert!((held.0 - folded.0).abs() < 1e-6, "{} vs {}", held.0, folded.0);
        for (a, b) in held.1.iter().zip(&folded.1) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    /// The solver's single-precision copy of the features moves the fit by no more than
    /// rounding the data would: on values that single precision cannot hold exactly (means
    /// far from zero, small spreads), `fit_outcome` ends within 1e-4 of a double-precision
    /// solve of the same objective, on every coefficient and the intercept.
    #[test]
    fn a_single_precision_copy_of_the_features_barely_moves_the_fit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let n = 20_000;
        let mut examples = Vec::with_capacity(n);
        for i in 0..n {
            let mut features = [0.0; N_FEATURES];
            for (j, f) in features.iter_mut().enumerate() {
                // Year groups, rates and log counts, with an offset f32 rounds.
                *f =
                    [7.0, 0.061, 1.7][j % 3] + [1.3, 0.013, 0.9][j % 3] * rng.random_range(-1.0..1.0) + 1e-9 * j as f64;
            }
            let z = -1.0 + 0.8 * (features[0] - 7.0) - 30.0 * (features[1] - 0.061) + 0.5 * (features[2] - 1.7);
            let label = rng.random::<f64>() < sigmoid(z);
            examples.push(Example {
                urn: crate::domain::Urn::new(100001).unwrap(),
                upn: crate::domain::Upn::parse("D359200119001").unwrap(),
                term: crate::domain::Term::parse("2025/26", "autumn").unwrap(),
                features,
                single: crate::model::dataset::SingleRow::of(&features),
                labels: [Some(label); 3],
                last_status: [0.0; 3],
                dfe_rule: 0.0,
                groups: crate::model::dataset::Groups {
                    sex: "F",
                    ethnicity: "White",
                    fsm: false,
                    sen: crate::domain::Sen::N,
                    eal: false,
                },
                tie: i as u64,
            });
        }
        assert!(
            examples.iter().flat_map(|e| e.features).any(|v| f64::from(v as f32) != v),
            "the data is not exactly representable in single precision"
        );
        let rows: Vec<&Example> = examples.iter().collect();
        let scaling = Scaling::fit(&rows);
        let params = TrainParams::default().check().unwrap();
        let single = fit_outcome(&rows, 0, &scaling, &params, &mut WarmStart::default()).unwrap();
        // The same objective in double precision: the standardised matrix, held whole.
        let z: Vec<f64> = rows.iter().flat_map(|e| scaling.standardise(&e.features)).collect();
        let y: Vec<bool> = rows.iter().map(|e| e.labels[0] == Some(true)).collect();
        let (b, w) = newton_with(n, N_FEATURES, Rows::Held(&z), &y, 1.0, 200, HESSIAN_ROWS, None).unwrap();
        assert!((single.intercept - b).abs() < 1e-4, "{} vs {b}", single.intercept);
        for (a, c) in single.coefficients.iter().zip(&w) {
            assert!((a - c).abs() < 1e-4, "{a} vs {c}");
        }
    }

    /// A warm start, carried from a fit under one scaling to a fit under another, is the
    /// same function of the raw features; started from it, a fit ends where a cold one does,
    /// in fewer steps.
    #[test]
    fn a_warm_start_changes_the_path_not_the_solution() {
        let (x, y) = raw_rows(30_000, 4);
        let (m1, s1) = scaling_of(&x[..20_000]);
        let (m2, s2) = scaling_of(&x);
        let (first, second) = (Scaling { means: m1, sds: s1 }, Scaling { means: m2, sds: s2 });
        let fit = Linear { intercept: -1.5, coefficients: vec![0.9, -0.6, 0.05, 0.0, 0.35] };
        let mut warm = WarmStart::default();
        warm.remember(&first, &fit);
        let (b2, w2) = warm.under(&second).unwrap();
        for row in x.iter().take(100) {
            let mut r = [0.0; N_FEATURES];
            r[..5].copy_from_slice(row);
            let logit =
                |s: &Scaling, b: f64, w: &[f64]| b + (0..5).map(|j| w[j] * (r[j] - s.means[j]) / s.sds[j]).sum::<f64>();
            let (a, c) = (logit(&first, fit.intercept, &fit.coefficients), logit(&second, b2, &w2));
            assert!((a - c).abs() < 1e-9 * (1.0 + a.abs()), "{a} vs {c}");
        }
        let x32 = single(&x);
        let refs: Vec<&[f32]> = x32.chunks_exact(5).collect();
        let rows = || Rows::Raw { x: &refs, means: &second.means, sds: &second.sds };
        let cold = newton_with(x.len(), 5, rows(), &y, 1.0, 200, 4_000, None).unwrap();
        // Start from a nearby solution (the cold one, perturbed).
        let near: Vec<f64> = cold.1.iter().map(|v| v * 1.05 + 0.01).collect();
        let warmed = newton_with(x.len(), 5, rows(), &y, 1.0, 200, 4_000, Some((cold.0 + 0.02, &near))).unwrap();
        assert!((cold.0 - warmed.0).abs() < 1e-6, "{} vs {}", cold.0, warmed.0);
        for (a, b) in cold.1.iter().zip(&warmed.1) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
