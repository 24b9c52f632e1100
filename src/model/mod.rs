//! Risk models: features, training, temporal evaluation, fairness, artifacts.
//! Transport-free: no tonic or database here.

pub mod artifact;
pub mod dataset;
pub mod evaluate;
pub mod fairness;
pub mod features;
pub mod live;
pub mod metrics;
pub mod rolling;
pub mod scorer;
pub mod select;
pub mod train;
pub mod trees;

use sha2::{Digest, Sha256};

pub use artifact::{Bands, ModelArtifact, OutcomeModel, TrainingInfo};
pub use features::{FEATURE_SPEC_VERSION, FEATURES, History, N_FEATURES};
pub use scorer::{Calibrated, Family, Platt, Scorer};
pub use select::Selection;
pub use train::{TrainParams, ValidParams};
pub use trees::TreeParams;

/// Bump when the model families or how they are chosen change: part of every model id.
pub const MODEL_SPEC_VERSION: &str = "riskid-models-2";

use dataset::Example;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid training parameters: {0}")]
    Params(String),
    #[error("not enough data to train: {0}")]
    NotEnoughData(String),
    #[error("fitting failed: {0}")]
    Fit(String),
}

fn fingerprint(examples: &[Example]) -> String {
    let mut h = Sha256::new();
    for e in examples {
        h.update(e.urn.get().to_le_bytes());
        h.update(e.term.index().to_le_bytes());
        for v in &e.features {
            h.update(v.to_bits().to_le_bytes());
        }
        for l in &e.labels {
            h.update([match l {
                None => 2u8,
                Some(b) => u8::from(*b),
            }]);
        }
    }
    hex::encode(h.finalize())
}

fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    if v.is_empty() {
        return 1.0;
    }
    // The k-th smallest, as a full sort would place it, without sorting the rest.
    let k = ((v.len() - 1) as f64 * q).round() as usize;
    *v.select_nth_unstable_by(k, f64::total_cmp).1
}

/// riskid's model for outcome `k` from `rows` alone: the family chosen by rolling-origin
/// validation within them, fitted on them (calibrated on their latest term).
pub fn fit_outcome_model(
    rows: &[&Example],
    k: usize,
    params: &ValidParams,
    trees: &TreeParams,
    progress: &mut dyn FnMut(&str),
) -> Result<(Selection, Calibrated), ModelError> {
    let mut warm = train::WarmStart::default();
    let selection = select::select(rows, k, params, trees, &mut warm, progress);
    let model = fit_chosen(&selection, rows, k, params, trees, &mut warm)?;
    Ok((selection, model))
}

/// Fits the chosen family; should trees not fit these rows, logistic regression does.
fn fit_chosen(
    selection: &Selection,
    rows: &[&Example],
    k: usize,
    params: &ValidParams,
    trees: &TreeParams,
    warm: &mut train::WarmStart,
) -> Result<Calibrated, ModelError> {
    match scorer::fit_family_from(selection.chosen, rows, k, params, trees, warm) {
        Err(_) if selection.chosen == Family::Trees => {
            scorer::fit_family_from(Family::Logistic, rows, k, params, trees, warm)
        }
        r => r,
    }
}

/// Training's first jobs: each family's selection fits.
enum Selecting {
    /// Outcome k's trees at origin o.
    Trees(usize, usize),
    /// Outcome k's logistic fits at every origin, in order.
    Logistic(usize),
    Fingerprint,
}

enum Selected {
    Trees(usize, usize, select::OriginFit),
    Logistic(usize, Vec<select::OriginFit>, train::WarmStart),
    Fingerprint(String),
}

/// What a training's last job adds to its fit.
enum Fitted {
    Shipped(Bands),
    Evaluation(Box<evaluate::OutcomeEvaluation>),
}

/// What to call the model and how to describe its data.
pub struct TrainRequest<'a> {
    pub model_id: Option<String>,
    pub created_at: String,
    pub data_description: String,
    pub progress: &'a mut dyn FnMut(&str),
}

/// Trains and evaluates all three models. Per outcome: a family is chosen by rolling origin
/// over the terms before the latest labelled term; the evaluation model (kept in the
/// artifact) is fitted on those terms and tested on the latest; the shipped model is fitted
/// on every labelled term. Each fit is calibrated on its own latest term.
pub fn train_and_evaluate(
    history: &History,
    params: TrainParams,
    req: TrainRequest,
) -> Result<ModelArtifact, ModelError> {
    let params = params.check()?;
    let p = params.get().clone();
    (req.progress)(&format!("building features for {} pupil-terms", history.rows()));
    let examples = dataset::build(history, p.seed);
    let test_term = dataset::latest_labelled_term(&examples)
        .ok_or_else(|| ModelError::NotEnoughData("no pupil has two consecutive terms".into()))?;
    let train: Vec<&Example> = examples.iter().filter(|e| e.term < test_term).collect();
    let test: Vec<&Example> = examples.iter().filter(|e| e.term == test_term).collect();
    if train.is_empty() || test.is_empty() {
        return Err(ModelError::NotEnoughData(format!(
            "need labelled terms before {test_term} to evaluate over time; have {} training and {} test examples",
            train.len(),
            test.len()
        )));
    }
    let all: Vec<&Example> = examples.iter().collect();
    let trees = TreeParams { seed: p.seed, ..TreeParams::default() };
    let plan = select::Plan::of(&train);
    let labels = crate::domain::Outcome::ALL.map(|o| o.label());
    // The fits run as jobs on every core, each taken by the next thread to come free: first
    // every family's selection fits (the trees' first, the longest), then each outcome's
    // evaluation and shipped fits of its chosen family. Each job's result depends only on
    // its own inputs, so the artifact is the same whatever the scheduling. Progress comes
    // through a channel that this thread passes on as it comes.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let fitted = std::thread::scope(|scope| {
        let work = scope.spawn(|| {
            let say = |m: String| drop(tx.send(m));
            say(format!("choosing each outcome's model family by rolling origin over the terms before {test_term}"));
            if let Some(note) = &plan.sampled {
                say(note.clone());
            }
            let mut jobs = Vec::new();
            for o in (0..plan.origins.len()).rev() {
                jobs.extend((0..3).map(|k| Selecting::Trees(k, o)));
            }
            jobs.extend((0..3).map(Selecting::Logistic));
            jobs.push(Selecting::Fingerprint);
            let mut done = crate::par::jobs(jobs, |job| match job {
                Selecting::Trees(k, o) => {
                    let mut unused = train::WarmStart::default();
                    let r = plan.fit_at(Family::Trees, plan.origins[o], k, &params, &trees, &mut unused);
                    say(format!("{}: gradient-boosted trees fitted for {}", labels[k], plan.origins[o]));
                    Selected::Trees(k, o, r)
                }
                Selecting::Logistic(k) => {
                    // Each logistic fit of this outcome starts where the one before ended.
                    let mut warm = train::WarmStart::default();
                    let r = plan.fit_family(Family::Logistic, k, &params, &trees, &mut warm);
                    say(format!("{}: logistic regression fitted for every origin", labels[k]));
                    Selected::Logistic(k, r, warm)
                }
                Selecting::Fingerprint => Selected::Fingerprint(fingerprint(&examples)),
            });
            let mut fingerprint = String::new();
            let mut logistic: [_; 3] = std::array::from_fn(|_| (Vec::new(), train::WarmStart::default()));
            let mut tree_fits: [Vec<Option<select::OriginFit>>; 3] =
                std::array::from_fn(|_| vec![None; plan.origins.len()]);
            for d in done.drain(..) {
                match d {
                    Selected::Trees(k, o, r) => tree_fits[k][o] = Some(r),
                    Selected::Logistic(k, r, warm) => logistic[k] = (r, warm),
                    Selected::Fingerprint(f) => fingerprint = f,
                }
            }
            let mut selections = Vec::with_capacity(3);
            let mut warms = Vec::with_capacity(3);
            for (k, ((l, warm), t)) in logistic.into_iter().zip(tree_fits).enumerate() {
                let t = t.into_iter().map(|r| r.expect("every origin's trees were fitted")).collect();
                let selection = plan.decide([l, t], &mut |m: &str| say(format!("{}: {}", labels[k], m.trim_start())));
                say(format!(
                    "{}: {} chosen; fitting it on {} examples before {test_term} and on all {}",
                    labels[k],
                    selection.chosen.label(),
                    train.len(),
                    all.len()
                ));
                selections.push(selection);
                warms.push(warm);
            }
            // The shipped fits (on more rows) first; each starts from its outcome's last
            // selection fit. An evaluation fit is then tested on the test term, and a shipped
            // fit's scores of every example set its bands, in the same job.
            let jobs: Vec<(usize, bool)> = (0..3).map(|k| (k, true)).chain((0..3).map(|k| (k, false))).collect();
            let fits = crate::par::jobs(jobs, |(k, shipped)| {
                let mut warm = warms[k].clone();
                let model =
                    fit_chosen(&selections[k], if shipped { &all } else { &train }, k, &params, &trees, &mut warm)?;
                let done = if shipped {
                    let scores: Vec<f64> = all.iter().map(|e| model.probability(&e.features)).collect();
                    Fitted::Shipped(Bands { medium: quantile(scores.clone(), 0.7), high: quantile(scores, 0.9) })
                } else {
                    let probs: Vec<f64> = test.iter().map(|e| model.probability(&e.features)).collect();
                    Fitted::Evaluation(Box::new(evaluate::evaluate_outcome(k, &test, &probs, p.capacity, test_term)))
                };
                Ok::<_, ModelError>((model, done))
            });
            let mut fits = fits.into_iter();
            let shipped: Vec<_> = fits.by_ref().take(3).collect();
            let mut outcomes = Vec::with_capacity(3);
            for (k, ((selection, shipped), evaluated)) in selections.into_iter().zip(shipped).zip(fits).enumerate() {
                let ((model, bands), (evaluation_model, evaluation)) = match (shipped?, evaluated?) {
                    ((m, Fitted::Shipped(b)), (e, Fitted::Evaluation(v))) => ((m, b), (e, *v)),
                    _ => unreachable!("the shipped fits come first"),
                };
                let outcome = crate::domain::Outcome::ALL[k];
                say(format!(
                    "{}: test AUC {:.3} (last term {:.3}, DfE rule {:.3})",
                    outcome.label(),
                    evaluation.model.auc.unwrap_or(f64::NAN),
                    evaluation.last_term_status.auc.unwrap_or(f64::NAN),
                    evaluation.dfe_absence_rule.auc.unwrap_or(f64::NAN),
                ));
                outcomes.push(OutcomeModel { outcome, model, evaluation_model, selection, bands, evaluation });
            }
            drop(tx);
            Ok::<_, ModelError>((outcomes, fingerprint))
        });
        for m in &rx {
            (req.progress)(&m);
        }
        work.join().unwrap_or_else(|_| Err(ModelError::Fit("training panicked".into())))
    });
    let (outcomes, data_fingerprint) = fitted?;
    let model_id = req.model_id.unwrap_or_else(|| {
        let mut h = Sha256::new();
        h.update(data_fingerprint.as_bytes());
        h.update(
            format!("{}:{}:{}:{}:{}", FEATURE_SPEC_VERSION, MODEL_SPEC_VERSION, p.seed, p.alpha, p.capacity).as_bytes(),
        );
        h.update(serde_json::to_vec(&trees).expect("tree parameters serialise"));
        format!("m-{}", &hex::encode(h.finalize())[..12])
    });
    (req.progress)(&format!("model {model_id} trained"));
    Ok(ModelArtifact {
        model_id,
        feature_spec_version: FEATURE_SPEC_VERSION.into(),
        features: FEATURES.iter().map(|(n, d)| (n.to_string(), *d)).collect(),
        model_spec_version: MODEL_SPEC_VERSION.into(),
        outcomes,
        training: TrainingInfo {
            data_fingerprint,
            examples: examples.len(),
            first_term: examples.iter().map(|e| e.term).min().unwrap_or(test_term),
            test_term,
            seed: p.seed,
            alpha: p.alpha,
            capacity: p.capacity,
            trees,
            data_description: req.data_description,
        },
        created_at: req.created_at,
    })
}

/// The artifact's reported evaluation, recomputed from data with the evaluation model it
/// keeps (no refit), and every figure that differs.
#[derive(Debug, Clone, PartialEq)]
pub struct Reproduction {
    /// The examples up to the test term are the ones the model was trained on.
    pub same_data: bool,
    pub evaluations: Vec<evaluate::OutcomeEvaluation>,
    /// `outcome: path: reported → recomputed`, for every figure that differs.
    pub differences: Vec<String>,
}

/// Recomputes every evaluation figure in `artifact` from `history`.
pub fn reproduce(artifact: &ModelArtifact, history: &History) -> Reproduction {
    let t = &artifact.training;
    let examples: Vec<Example> =
        dataset::build(history, t.seed).into_iter().filter(|e| e.term <= t.test_term).collect();
    let same_data = fingerprint(&examples) == t.data_fingerprint;
    let test: Vec<&Example> = examples.iter().filter(|e| e.term == t.test_term).collect();
    let mut differences = Vec::new();
    if !same_data {
        differences.push(format!(
            "data: the pupil-terms up to {} are not the ones the model was trained on (fingerprint differs)",
            t.test_term
        ));
    }
    let mut evaluations = Vec::with_capacity(artifact.outcomes.len());
    for (k, o) in artifact.outcomes.iter().enumerate() {
        let probs: Vec<f64> = test.iter().map(|e| o.evaluation_model.probability(&e.features)).collect();
        let e = evaluate::evaluate_outcome(k, &test, &probs, t.capacity, t.test_term);
        let reported = serde_json::to_value(&o.evaluation).expect("evaluations serialise");
        let recomputed = serde_json::to_value(&e).expect("evaluations serialise");
        diff_values(o.outcome.label(), "", &reported, &recomputed, &mut differences);
        evaluations.push(e);
    }
    Reproduction { same_data, evaluations, differences }
}

fn diff_values(outcome: &str, path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value as V;
    match (a, b) {
        (V::Object(x), V::Object(y)) => {
            for (k, v) in x {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                diff_values(outcome, &p, v, y.get(k).unwrap_or(&V::Null), out);
            }
        }
        (V::Array(x), V::Array(y)) if x.len() == y.len() => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                diff_values(outcome, &format!("{path}[{i}]"), v, w, out);
            }
        }
        _ if a != b => out.push(format!("{outcome}: {path}: reported {a} → recomputed {b}")),
        _ => {}
    }
}
