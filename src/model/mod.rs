//! Risk models: features, training, temporal evaluation, fairness, artifacts.
//! Transport-free: no tonic or database here.

pub mod artifact;
pub mod dataset;
pub mod evaluate;
pub mod fairness;
pub mod features;
pub mod metrics;
pub mod rolling;
pub mod train;

use sha2::{Digest, Sha256};

pub use artifact::{Bands, ModelArtifact, OutcomeModel, TrainingInfo};
pub use features::{FEATURE_SPEC_VERSION, FEATURES, History, N_FEATURES};
pub use train::{TrainParams, ValidParams};

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
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// The three outcome models fitted on some examples, with their scaling.
pub struct Fitted {
    pub scaling: train::Scaling,
    pub models: Vec<train::Linear>,
}

impl Fitted {
    pub fn probabilities(&self, features: &[f64; N_FEATURES]) -> [f64; 3] {
        let z = self.scaling.standardise(features);
        std::array::from_fn(|k| self.models[k].probability(&z))
    }
}

/// Fits riskid's model for every outcome on these examples.
pub fn fit_all(rows: &[&Example], params: &ValidParams) -> Result<Fitted, ModelError> {
    let scaling = train::Scaling::fit(rows);
    let models = (0..3).map(|k| train::fit_outcome(rows, k, &scaling, params)).collect::<Result<_, _>>()?;
    Ok(Fitted { scaling, models })
}

/// What to call the model and how to describe its data.
pub struct TrainRequest<'a> {
    pub model_id: Option<String>,
    pub created_at: String,
    pub data_description: String,
    pub progress: &'a mut dyn FnMut(&str),
}

/// Trains and evaluates all three models: evaluation fits on terms before the latest
/// labelled term and tests on it; the shipped fit uses every labelled term.
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
    let eval_scaling = train::Scaling::fit(&train);
    let scaling = train::Scaling::fit(&all);
    let mut outcomes = Vec::with_capacity(3);
    for (k, outcome) in crate::domain::Outcome::ALL.iter().enumerate() {
        (req.progress)(&format!("{}: fitting on {} examples before {test_term}", outcome.label(), train.len()));
        let eval_model = train::fit_outcome(&train, k, &eval_scaling, &params)?;
        let probs: Vec<f64> =
            test.iter().map(|e| eval_model.probability(&eval_scaling.standardise(&e.features))).collect();
        let evaluation = evaluate::evaluate_outcome(k, &test, &probs, p.capacity, test_term);
        (req.progress)(&format!(
            "{}: test AUC {:.3} (last term {:.3}, DfE rule {:.3}); refitting on all {} examples",
            outcome.label(),
            evaluation.model.auc.unwrap_or(f64::NAN),
            evaluation.last_term_status.auc.unwrap_or(f64::NAN),
            evaluation.dfe_absence_rule.auc.unwrap_or(f64::NAN),
            all.len()
        ));
        let model = train::fit_outcome(&all, k, &scaling, &params)?;
        let scores: Vec<f64> = all.iter().map(|e| model.probability(&scaling.standardise(&e.features))).collect();
        let bands = Bands { medium: quantile(scores.clone(), 0.7), high: quantile(scores, 0.9) };
        outcomes.push(OutcomeModel { outcome: *outcome, model, bands, evaluation });
    }
    let data_fingerprint = fingerprint(&examples);
    let model_id = req.model_id.unwrap_or_else(|| {
        let mut h = Sha256::new();
        h.update(data_fingerprint.as_bytes());
        h.update(format!("{}:{}:{}:{}", FEATURE_SPEC_VERSION, p.seed, p.alpha, p.capacity).as_bytes());
        format!("m-{}", &hex::encode(h.finalize())[..12])
    });
    (req.progress)(&format!("model {model_id} trained"));
    Ok(ModelArtifact {
        model_id,
        feature_spec_version: FEATURE_SPEC_VERSION.into(),
        features: FEATURES.iter().map(|(n, d)| (n.to_string(), *d)).collect(),
        scaling,
        outcomes,
        training: TrainingInfo {
            data_fingerprint,
            examples: examples.len(),
            first_term: examples.iter().map(|e| e.term).min().unwrap_or(test_term),
            test_term,
            seed: p.seed,
            alpha: p.alpha,
            capacity: p.capacity,
            data_description: req.data_description,
        },
        created_at: req.created_at,
    })
}
