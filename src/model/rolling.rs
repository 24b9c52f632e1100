//! Rolling-origin evaluation: for each of the latest labelled terms T, fit on every term
//! before T (whose outcomes, in the term after, were known by T) and predict T. This is what
//! a model would have scored live in T; benches and model selection compare methods on it.

use super::dataset::{self, Example};
use super::{History, ModelError, ValidParams};
use crate::domain::Term;

/// One test term's examples (labels are the next term's outcomes) and a method's
/// probabilities for them, in `Outcome::ALL` order.
pub struct TermPredictions {
    pub term: Term,
    pub examples: Vec<Example>,
    pub probabilities: Vec<[f64; 3]>,
}

/// The latest `n` terms of `examples` that have at least `before` earlier terms, oldest first.
pub fn latest_terms<'a>(examples: impl IntoIterator<Item = &'a Example>, n: usize, before: usize) -> Vec<Term> {
    let mut terms: Vec<Term> = examples.into_iter().map(|e| e.term).collect();
    terms.sort();
    terms.dedup();
    let usable = terms.len().saturating_sub(before);
    terms.split_off(terms.len() - usable.min(n))
}

/// The latest `test_terms` labelled terms that have at least one earlier labelled term.
pub fn test_terms(examples: &[Example], test_terms: usize) -> Vec<Term> {
    latest_terms(examples, test_terms, 1)
}

/// Fits riskid's models on the terms before each test term and predicts that term.
pub fn rolling_origin(
    history: &History,
    params: &ValidParams,
    n_terms: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<TermPredictions>, ModelError> {
    let examples = dataset::build(history, params.get().seed);
    let terms = test_terms(&examples, n_terms);
    let mut out = Vec::with_capacity(terms.len());
    for term in terms {
        let train: Vec<&Example> = examples.iter().filter(|e| e.term < term).collect();
        let test: Vec<Example> = examples.iter().filter(|e| e.term == term).cloned().collect();
        progress(&format!("{term}: fitting on {} examples before it, predicting {}", train.len(), test.len()));
        let trees = super::TreeParams { seed: params.get().seed, ..Default::default() };
        let mut models = Vec::with_capacity(3);
        for k in 0..3 {
            let (selection, model) = super::fit_outcome_model(&train, k, params, &trees, progress)?;
            progress(&format!("{term}: outcome {k}: {} chosen", selection.chosen.label()));
            models.push(model);
        }
        let probabilities = test.iter().map(|e| std::array::from_fn(|k| models[k].probability(&e.features))).collect();
        out.push(TermPredictions { term, examples: test, probabilities });
    }
    Ok(out)
}
