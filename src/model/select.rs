//! Choosing a model family per outcome by temporal validation over several terms (rolling
//! origin): at each origin term O, each family is fitted on the terms before O (calibrated
//! on the last of them) and scored on O, as it would have been live.

use serde::{Deserialize, Serialize};

use super::dataset::Example;
use super::metrics::{precision_recall, roc_auc, top_k_per_group};
use super::scorer::{Calibrated, Family, fit_family_from};
use super::train::{ValidParams, WarmStart};
use super::trees::TreeParams;
use crate::domain::Term;

/// Origins used for selection, at most.
pub const ORIGINS: usize = 2;
/// Selection compares families on at most about this many examples: beyond it, a seeded
/// sample of whole pupils (every term of each) is enough to rank two families, and the
/// chosen one is then fitted on everything.
pub const SELECT_MAX: usize = 50_000;
/// AUCs closer than this are a tie, settled by precision at capacity.
pub const AUC_TIE: f64 = 0.002;

/// One family's figures at the selection origins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilyScore {
    pub family: Family,
    /// Mean over the origins where it could be fitted.
    pub auc: Option<f64>,
    pub precision_at_capacity: Option<f64>,
    /// Per origin: (term, AUC, precision at capacity).
    pub by_origin: Vec<(Term, Option<f64>, f64)>,
    /// Why it could not be fitted, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unfitted: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    pub chosen: Family,
    pub runner_up: Option<Family>,
    pub origins: Vec<Term>,
    pub scores: Vec<FamilyScore>,
    /// The rule, in words.
    pub rule: String,
}

/// AUC and precision at capacity (top `capacity` per school) of `model` on `rows` for `k`.
pub fn auc_and_precision(model: &Calibrated, rows: &[&Example], k: usize, capacity: usize) -> (Option<f64>, f64) {
    let rows: Vec<&Example> = rows.iter().copied().filter(|e| e.labels[k].is_some()).collect();
    let p: Vec<f64> = rows.iter().map(|e| model.probability(&e.features)).collect();
    let l: Vec<bool> = rows.iter().map(|e| e.labels[k] == Some(true)).collect();
    let g: Vec<u32> = rows.iter().map(|e| e.urn.get()).collect();
    let t: Vec<u64> = rows.iter().map(|e| e.tie).collect();
    let sel = top_k_per_group(&p, &g, &t, capacity);
    (roc_auc(&p, &l), precision_recall(&sel, &l).0)
}

/// The selection origins among `rows`: the latest labelled terms that leave at least two
/// earlier terms to fit and calibrate on.
pub fn origins(rows: &[&Example]) -> Vec<Term> {
    super::rolling::latest_terms(rows.iter().copied(), ORIGINS, 2)
}

/// A family's fit at one origin: (AUC, precision at capacity) there, or why it could not be
/// fitted.
pub type OriginFit = Result<(Option<f64>, f64), String>;

/// What selection compares on: the origins and the rows (a sample of whole pupils when
/// there are more than [`SELECT_MAX`]).
pub struct Plan<'a> {
    pub origins: Vec<Term>,
    pub rows: Vec<&'a Example>,
    /// How the rows were sampled, if they were.
    pub sampled: Option<String>,
}

impl<'a> Plan<'a> {
    pub fn of(rows: &[&'a Example]) -> Self {
        let origins = origins(rows);
        if rows.len() <= SELECT_MAX {
            return Self { origins, rows: rows.to_vec(), sampled: None };
        }
        // The tie key is a seeded hash of the UPN: keeping the lowest share keeps whole pupils.
        let keep = SELECT_MAX as f64 / rows.len() as f64;
        let cut = (keep * u64::MAX as f64) as u64;
        let sampled: Vec<&Example> = rows.iter().copied().filter(|e| e.tie <= cut).collect();
        let note = format!("comparing on a sample of {} of {} examples (whole pupils)", sampled.len(), rows.len());
        Self { origins, rows: sampled, sampled: Some(note) }
    }

    /// `family` fitted on the plan's rows before `origin` and scored on those at it: (AUC,
    /// precision at capacity), or why it could not be fitted.
    pub fn fit_at(
        &self,
        family: Family,
        origin: Term,
        k: usize,
        params: &ValidParams,
        trees: &TreeParams,
        warm: &mut WarmStart,
    ) -> OriginFit {
        let before: Vec<&Example> = self.rows.iter().copied().filter(|e| e.term < origin).collect();
        let at: Vec<&Example> = self.rows.iter().copied().filter(|e| e.term == origin).collect();
        let m = fit_family_from(family, &before, k, params, trees, warm).map_err(|e| e.to_string())?;
        Ok(auc_and_precision(&m, &at, k, params.get().capacity))
    }

    /// Every origin's fit of `family`, in order (a logistic fit starts where the one before
    /// ended).
    pub fn fit_family(
        &self,
        family: Family,
        k: usize,
        params: &ValidParams,
        trees: &TreeParams,
        warm: &mut WarmStart,
    ) -> Vec<OriginFit> {
        self.origins.iter().map(|&o| self.fit_at(family, o, k, params, trees, warm)).collect()
    }

    /// The choice from each family's fits at the origins (in [`Family::ALL`] order, one
    /// result per origin each), with each family's figures reported through `progress`.
    pub fn decide(&self, fits: [Vec<OriginFit>; 2], progress: &mut dyn FnMut(&str)) -> Selection {
        let mut scores = Vec::new();
        for (family, results) in Family::ALL.into_iter().zip(fits) {
            let mut by_origin = Vec::new();
            let mut unfitted = None;
            for (&o, r) in self.origins.iter().zip(results) {
                match r {
                    Ok((auc, prec)) => by_origin.push((o, auc, prec)),
                    Err(e) => unfitted = Some(e),
                }
            }
            let aucs: Vec<f64> = by_origin.iter().filter_map(|x| x.1).collect();
            let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
            let precs: Vec<f64> = by_origin.iter().map(|x| x.2).collect();
            let score = FamilyScore {
                family,
                auc: if unfitted.is_some() { None } else { mean(&aucs) },
                precision_at_capacity: if unfitted.is_some() { None } else { mean(&precs) },
                by_origin,
                unfitted,
            };
            progress(&format!(
                "  {}: AUC {} and precision at capacity {} over {} origin term(s)",
                family.label(),
                score.auc.map_or("–".into(), |v| format!("{v:.4}")),
                score.precision_at_capacity.map_or("–".into(), |v| format!("{v:.3}")),
                self.origins.len()
            ));
            scores.push(score);
        }
        let rule = format!(
            "the higher mean AUC over the origin terms; AUCs within {AUC_TIE} are settled by mean precision \
             at capacity; logistic regression when a family cannot be compared"
        );
        let key = |s: &FamilyScore| (s.auc, s.precision_at_capacity);
        let (chosen, runner_up) = match (key(&scores[0]), key(&scores[1])) {
            ((Some(la), Some(lp)), (Some(ta), Some(tp))) => {
                let trees_better = if (ta - la).abs() < AUC_TIE { tp > lp } else { ta > la };
                if trees_better {
                    (Family::Trees, Some(Family::Logistic))
                } else {
                    (Family::Logistic, Some(Family::Trees))
                }
            }
            _ => (Family::Logistic, None),
        };
        Selection { chosen, runner_up, origins: self.origins.clone(), scores, rule }
    }
}

/// Chooses the family for outcome `k` from `rows` (never looking past them), one fit after
/// another. Logistic fits start from `warm` and leave their last solution in it.
pub fn select(
    rows: &[&Example],
    k: usize,
    params: &ValidParams,
    trees: &TreeParams,
    warm: &mut WarmStart,
    progress: &mut dyn FnMut(&str),
) -> Selection {
    let plan = Plan::of(rows);
    if let Some(note) = &plan.sampled {
        progress(&format!("  {note}"));
    }
    let fits = Family::ALL.map(|family| plan.fit_family(family, k, params, trees, warm));
    plan.decide(fits, progress)
}
