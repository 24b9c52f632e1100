//! Gradient-boosted trees: fitted by the `forust-ml` crate, kept in riskid's own compact,
//! ordered form (so an artifact's bytes are the same on every run), scored and explained
//! here: exact TreeSHAP contributions that sum to the model's logit.

use serde::{Deserialize, Serialize};

use super::ModelError;
use super::features::N_FEATURES;

/// One node. A leaf has `left == right == 0` (the root is never a child).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Split: go left when `x[feature] < threshold`.
    pub feature: u16,
    pub threshold: f64,
    pub left: u32,
    pub right: u32,
    /// Leaf value (on the logit scale, learning rate applied); 0 for a split.
    pub value: f64,
    /// The training weight (hessian) reaching the node: TreeSHAP's background distribution.
    pub cover: f64,
}

impl Node {
    fn is_leaf(&self) -> bool {
        self.left == 0 && self.right == 0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

/// A boosted ensemble: logit = base + Σ trees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forest {
    pub base: f64,
    pub trees: Vec<Tree>,
}

/// How the trees are grown (XGBoost-style, as scikit-learn's HistGradientBoosting defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TreeParams {
    pub learning_rate: f32,
    pub max_depth: usize,
    /// The most boosting rounds; early stopping on a held-out term usually ends sooner.
    pub max_trees: usize,
    /// Rounds without improvement on the held-out term before stopping.
    pub early_stopping_rounds: usize,
    /// Minimum hessian (≈ children × p(1−p)) in a leaf.
    pub min_leaf_weight: f32,
    pub l2: f32,
    pub bins: u16,
    pub seed: u64,
    /// Gradient-based one-side sampling (LightGBM's GOSS): after a warm-up of 1/learning
    /// rate rounds, each tree is grown on the rows with the largest gradients and a seeded
    /// sample of the rest, reweighted. `None` (as artifacts from before it say): every row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goss: Option<Goss>,
}

/// The shares of rows a GOSS round keeps: the `top` share by gradient, and `other` of all
/// rows sampled from the rest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Goss {
    pub top: f64,
    pub other: f64,
}

impl Default for TreeParams {
    fn default() -> Self {
        Self {
            // Twice the usual rate and half the rounds: within 0.001 AUC of 0.1 × 300 on the
            // generated boroughs (`cargo bench --bench compare`), in half the time.
            learning_rate: 0.2,
            max_depth: 4,
            max_trees: 150,
            // Five rounds without improvement, 32 bins and GOSS keeping half the rows (the
            // top 30% by gradient and 20% of all from the rest): the trees' selection AUC
            // within 0.002 of ten rounds, 64 bins and every row, averaged over the outcomes
            // of three generated boroughs (12 and 40 schools), in 15% less training time.
            early_stopping_rounds: 5,
            min_leaf_weight: 5.0,
            l2: 1.0,
            bins: 32,
            seed: 42,
            goss: Some(Goss { top: 0.3, other: 0.2 }),
        }
    }
}

impl Tree {
    fn leaf_of(&self, x: &[f64]) -> usize {
        let mut i = 0;
        loop {
            let n = &self.nodes[i];
            if n.is_leaf() {
                return i;
            }
            i = if x[n.feature as usize] < n.threshold { n.left } else { n.right } as usize;
        }
    }

    fn predict(&self, x: &[f64]) -> f64 {
        self.nodes[self.leaf_of(x)].value
    }

    /// The cover-weighted mean of the leaves: the tree's expected value.
    fn expected(&self, i: usize) -> f64 {
        let n = &self.nodes[i];
        if n.is_leaf() {
            return n.value;
        }
        let (l, r) = (&self.nodes[n.left as usize], &self.nodes[n.right as usize]);
        (l.cover * self.expected(n.left as usize) + r.cover * self.expected(n.right as usize)) / n.cover
    }
}

impl Forest {
    pub fn logit(&self, x: &[f64; N_FEATURES]) -> f64 {
        self.base + self.trees.iter().map(|t| t.predict(x)).sum::<f64>()
    }

    /// The expected logit over the training data, and each feature's TreeSHAP contribution:
    /// `expected + Σ contributions == logit(x)`.
    pub fn contributions(&self, x: &[f64; N_FEATURES]) -> (f64, [f64; N_FEATURES]) {
        let mut phi = [0.0; N_FEATURES];
        let mut expected = self.base;
        for t in &self.trees {
            expected += t.expected(0);
            tree_shap(t, x, &mut phi);
        }
        (expected, phi)
    }

    /// Fits P(label) on `x`, stopping early when the log loss on the held-out `(vx, vy)`
    /// stops improving (the held-out rows are never fitted on).
    pub fn fit(
        x: &[[f64; N_FEATURES]],
        y: &[bool],
        vx: &[[f64; N_FEATURES]],
        vy: &[bool],
        p: &TreeParams,
    ) -> Result<Self, ModelError> {
        use forust_ml::GradientBooster;
        use forust_ml::metric::Metric;
        use forust_ml::objective::ObjectiveType;
        // forust reads column-major data.
        fn columns(x: &[[f64; N_FEATURES]]) -> Vec<f64> {
            let n = x.len();
            let mut cols = vec![0.0; n * N_FEATURES];
            for (i, row) in x.iter().enumerate() {
                for (j, v) in row.iter().enumerate() {
                    cols[j * n + i] = *v;
                }
            }
            cols
        }
        let target = |y: &[bool]| y.iter().map(|&b| f64::from(u8::from(b))).collect::<Vec<f64>>();
        let (cols, vcols, yv, vyv) = (columns(x), columns(vx), target(y), target(vy));
        let (w, vw) = (vec![1.0; x.len()], vec![1.0; vx.len()]);
        let m = forust_ml::Matrix::new(&cols, x.len(), N_FEATURES);
        let vm = forust_ml::Matrix::new(&vcols, vx.len(), N_FEATURES);
        let mut booster = GradientBooster::default()
            .set_objective_type(ObjectiveType::LogLoss)
            .set_iterations(p.max_trees)
            .set_learning_rate(p.learning_rate)
            .set_max_depth(p.max_depth)
            .set_min_leaf_weight(p.min_leaf_weight)
            .set_l2(p.l2)
            .set_nbins(p.bins)
            .set_seed(p.seed)
            .set_allow_missing_splits(false)
            .set_evaluation_metric(Some(Metric::LogLoss))
            .set_early_stopping_rounds(Some(p.early_stopping_rounds))
            .set_parallel(false)
            .set_tiled_histograms(true);
        if let Some(g) = p.goss {
            booster = booster
                .set_sample_method(forust_ml::sampler::SampleMethod::Goss)
                .set_top_rate(g.top)
                .set_other_rate(g.other);
        }
        booster.fit(&m, &yv, &w, Some(vec![(vm, &vyv, &vw)])).map_err(|e| ModelError::Fit(e.to_string()))?;
        let keep = booster.best_iteration.map_or(booster.trees.len(), |b| (b + 1).min(booster.trees.len()));
        let trees = booster.trees[..keep].iter().map(convert).collect::<Result<_, _>>()?;
        let forest = Forest { base: booster.base_score, trees };
        tracing::debug!(rows = x.len(), grown = booster.trees.len(), kept = keep, "trees fitted");
        // Ours must score exactly as the crate does (checked on up to 1,000 training rows).
        booster.prediction_iteration = Some(keep);
        let check = x.len().min(1000);
        let sample = columns(&x[..check]);
        let theirs = booster.predict(&forust_ml::Matrix::new(&sample, check, N_FEATURES), false);
        if theirs.iter().zip(x).any(|(t, row)| (t - forest.logit(row)).abs() > 1e-6) {
            return Err(ModelError::Fit("the converted trees do not score as the fitted ones".into()));
        }
        Ok(forest)
    }
}

/// forust's tree as ours: in node-number order, covers made consistent (a split's cover is
/// its children's sum), so TreeSHAP's weights add to one.
fn convert(t: &forust_ml::tree::Tree) -> Result<Tree, ModelError> {
    let mut nums: Vec<usize> = t.nodes.iter().map(|n| n.num).collect();
    nums.sort_unstable();
    let pos: std::collections::HashMap<usize, u32> = nums.iter().enumerate().map(|(i, &n)| (n, i as u32)).collect();
    if nums.first() != Some(&0) {
        return Err(ModelError::Fit("a tree without a root".into()));
    }
    let mut nodes: Vec<Node> = nums
        .iter()
        .map(|n| {
            let s = t.nodes.iter().find(|x| x.num == *n).expect("listed above");
            if s.is_leaf {
                Ok(Node {
                    feature: 0,
                    threshold: 0.0,
                    left: 0,
                    right: 0,
                    value: f64::from(s.weight_value),
                    cover: f64::from(s.hessian_sum).max(1e-12),
                })
            } else {
                if s.missing_node != s.left_child && s.missing_node != s.right_child {
                    return Err(ModelError::Fit("missing-value branches are not used".into()));
                }
                let child = |c: usize| pos.get(&c).copied().ok_or_else(|| ModelError::Fit("a dangling child".into()));
                Ok(Node {
                    feature: s.split_feature as u16,
                    threshold: s.split_value,
                    left: child(s.left_child)?,
                    right: child(s.right_child)?,
                    value: 0.0,
                    cover: 0.0,
                })
            }
        })
        .collect::<Result<_, _>>()?;
    // Children are numbered after their parents: fill covers bottom-up.
    for i in (0..nodes.len()).rev() {
        if !nodes[i].is_leaf() {
            let (l, r) = (nodes[i].left as usize, nodes[i].right as usize);
            if l <= i || r <= i {
                return Err(ModelError::Fit("a child numbered before its parent".into()));
            }
            nodes[i].cover = nodes[l].cover + nodes[r].cover;
        }
    }
    Ok(Tree { nodes })
}

/// One element of TreeSHAP's path of unique features.
#[derive(Clone, Copy)]
struct PathElem {
    feature: Option<u16>,
    zero: f64,
    one: f64,
    weight: f64,
}

fn extend(path: &mut Vec<PathElem>, zero: f64, one: f64, feature: Option<u16>) {
    let l = path.len();
    path.push(PathElem { feature, zero, one, weight: if l == 0 { 1.0 } else { 0.0 } });
    for i in (0..l).rev() {
        path[i + 1].weight += one * path[i].weight * (i + 1) as f64 / (l + 1) as f64;
        path[i].weight = zero * path[i].weight * (l - i) as f64 / (l + 1) as f64;
    }
}

fn unwind(path: &mut Vec<PathElem>, i: usize) {
    let l = path.len() - 1;
    let (one, zero) = (path[i].one, path[i].zero);
    let mut n = path[l].weight;
    for j in (0..l).rev() {
        if one != 0.0 {
            let t = path[j].weight;
            path[j].weight = n * (l + 1) as f64 / ((j + 1) as f64 * one);
            n = t - path[j].weight * zero * (l - j) as f64 / (l + 1) as f64;
        } else {
            path[j].weight = path[j].weight * (l + 1) as f64 / (zero * (l - j) as f64);
        }
    }
    for j in i..l {
        path[j].feature = path[j + 1].feature;
        path[j].zero = path[j + 1].zero;
        path[j].one = path[j + 1].one;
    }
    path.pop();
}

fn unwound_sum(path: &[PathElem], i: usize) -> f64 {
    let l = path.len() - 1;
    let (one, zero) = (path[i].one, path[i].zero);
    let mut n = path[l].weight;
    let mut total = 0.0;
    for j in (0..l).rev() {
        if one != 0.0 {
            let t = n * (l + 1) as f64 / ((j + 1) as f64 * one);
            total += t;
            n = path[j].weight - t * zero * (l - j) as f64 / (l + 1) as f64;
        } else {
            total += path[j].weight / zero * (l + 1) as f64 / (l - j) as f64;
        }
    }
    total
}

/// Lundberg, Erion & Lee (2018), Algorithm 2: exact Shapley values of one tree's
/// prediction, with the training covers as the background, in O(leaves × depth²).
fn tree_shap(t: &Tree, x: &[f64], phi: &mut [f64]) {
    #[allow(clippy::too_many_arguments)] // the algorithm's own state, as in the paper
    fn recurse(
        t: &Tree,
        x: &[f64],
        phi: &mut [f64],
        node: usize,
        mut path: Vec<PathElem>,
        zero: f64,
        one: f64,
        feature: Option<u16>,
    ) {
        extend(&mut path, zero, one, feature);
        let n = &t.nodes[node];
        if n.is_leaf() {
            for i in 1..path.len() {
                let w = unwound_sum(&path, i);
                let e = path[i];
                phi[e.feature.expect("only the root has no feature") as usize] += w * (e.one - e.zero) * n.value;
            }
            return;
        }
        let (hot, cold) = if x[n.feature as usize] < n.threshold { (n.left, n.right) } else { (n.right, n.left) };
        let (mut iz, mut io) = (1.0, 1.0);
        if let Some(k) = (1..path.len()).find(|&k| path[k].feature == Some(n.feature)) {
            iz = path[k].zero;
            io = path[k].one;
            unwind(&mut path, k);
        }
        let (h, c) = (&t.nodes[hot as usize], &t.nodes[cold as usize]);
        recurse(t, x, phi, hot as usize, path.clone(), iz * h.cover / n.cover, io, Some(n.feature));
        recurse(t, x, phi, cold as usize, path, iz * c.cover / n.cover, 0.0, Some(n.feature));
    }
    recurse(t, x, phi, 0, Vec::with_capacity(16), 1.0, 1.0, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(value: f64, cover: f64) -> Node {
        Node { feature: 0, threshold: 0.0, left: 0, right: 0, value, cover }
    }
    fn split(feature: u16, threshold: f64, left: u32, right: u32, cover: f64) -> Node {
        Node { feature, threshold, left, right, value: 0.0, cover }
    }

    /// A tree that splits on feature 0, then on 1 (left) and on 0 again (right).
    fn tree() -> Tree {
        Tree {
            nodes: vec![
                split(0, 0.5, 1, 2, 10.0),
                split(1, 0.5, 3, 4, 6.0),
                split(0, 0.8, 5, 6, 4.0),
                leaf(1.0, 2.0),
                leaf(-2.0, 4.0),
                leaf(0.5, 1.0),
                leaf(3.0, 3.0),
            ],
        }
    }

    /// The tree's expectation given the features in `known` are x's and the others follow
    /// the covers (what TreeSHAP's value function is).
    fn cond(t: &Tree, x: &[f64], known: &[usize], i: usize) -> f64 {
        let n = &t.nodes[i];
        if n.is_leaf() {
            return n.value;
        }
        if known.contains(&(n.feature as usize)) {
            let next = if x[n.feature as usize] < n.threshold { n.left } else { n.right };
            return cond(t, x, known, next as usize);
        }
        let (l, r) = (&t.nodes[n.left as usize], &t.nodes[n.right as usize]);
        (l.cover * cond(t, x, known, n.left as usize) + r.cover * cond(t, x, known, n.right as usize)) / n.cover
    }

    #[test]
    #[allow(clippy::needless_range_loop)]
    fn tree_shap_matches_shapley_values_by_enumeration() {
        let t = tree();
        let m = 3; // features 0, 1 and an unused 2
        for x in [[0.2, 0.9, 0.0], [0.9, 0.1, 5.0], [0.6, 0.6, 1.0], [0.1, 0.1, 0.0]] {
            let mut phi = [0.0; 3];
            tree_shap(&t, &x, &mut phi);
            for f in 0..m {
                let others: Vec<usize> = (0..m).filter(|&g| g != f).collect();
                let mut exact = 0.0;
                for mask in 0..(1u32 << others.len()) {
                    let s: Vec<usize> =
                        others.iter().enumerate().filter(|(b, _)| mask >> b & 1 == 1).map(|(_, &g)| g).collect();
                    let k = s.len();
                    let w = (1..=k).product::<usize>() as f64 * (1..=(m - k - 1)).product::<usize>() as f64
                        / (1..=m).product::<usize>() as f64;
                    let mut with = s.clone();
                    with.push(f);
                    exact += w * (cond(&t, &x, &with, 0) - cond(&t, &x, &s, 0));
                }
                assert!((phi[f] - exact).abs() < 1e-12, "feature {f} at {x:?}: {} vs {exact}", phi[f]);
            }
            let total: f64 = phi.iter().sum();
            assert!((t.expected(0) + total - t.predict(&x)).abs() < 1e-12);
            assert_eq!(phi[2], 0.0, "an unused feature contributes nothing");
        }
    }
}
