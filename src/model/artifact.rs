//! The model artifact (JSON, reproducible byte for byte) and its human-readable card.

use serde::{Deserialize, Serialize};

use super::evaluate::{MethodMetrics, OutcomeEvaluation};
use super::features::{Domain, FEATURE_SPEC_VERSION, N_FEATURES};
use super::scorer::Calibrated;
use super::select::Selection;
use super::trees::TreeParams;
use crate::domain::{Outcome, Term};
use crate::scoring::Band;

/// Probability cut-offs for bands, from the fitted model's scores on its training rows:
/// `high` is the 90th percentile, `medium` the 70th.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bands {
    pub medium: f64,
    pub high: f64,
}

impl Bands {
    pub fn band(&self, p: f64) -> Band {
        if p >= self.high {
            Band::High
        } else if p >= self.medium {
            Band::Medium
        } else {
            Band::Low
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeModel {
    pub outcome: Outcome,
    /// The shipped model: fitted on every labelled term.
    pub model: Calibrated,
    /// The model the evaluation figures come from: the same family, fitted only on the terms
    /// before the test term. Kept so anyone can recompute every figure from stored data.
    pub evaluation_model: Calibrated,
    /// How the family was chosen, with the runner-up's figures.
    pub selection: Selection,
    pub bands: Bands,
    pub evaluation: OutcomeEvaluation,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingInfo {
    /// SHA-256 over the training examples (features and labels), in order.
    pub data_fingerprint: String,
    pub examples: usize,
    pub first_term: Term,
    pub test_term: Term,
    pub seed: u64,
    pub alpha: f64,
    pub capacity: usize,
    pub trees: TreeParams,
    pub data_description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelArtifact {
    pub model_id: String,
    pub feature_spec_version: String,
    pub features: Vec<(String, Domain)>,
    pub model_spec_version: String,
    pub outcomes: Vec<OutcomeModel>,
    pub training: TrainingInfo,
    pub created_at: String,
}

/// Per-outcome logit = baseline + Σ contributions (one per feature), before calibration;
/// the probability is the calibration's monotone map of the logit.
#[derive(Debug, Clone, PartialEq)]
pub struct Explained {
    pub probability: f64,
    pub logit: f64,
    pub baseline: f64,
    pub contributions: [f64; N_FEATURES],
}

impl ModelArtifact {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("artifact serialises")
    }

    pub fn from_json(s: &str) -> Result<Self, String> {
        let a: Self = serde_json::from_str(s).map_err(|e| format!("not a riskid model artifact: {e}"))?;
        if a.feature_spec_version != FEATURE_SPEC_VERSION {
            return Err(format!(
                "model {} was built for features {:?}, this build computes {FEATURE_SPEC_VERSION:?}: retrain it",
                a.model_id, a.feature_spec_version
            ));
        }
        if a.model_spec_version != super::MODEL_SPEC_VERSION {
            return Err(format!(
                "model {} was built by {:?}, this build runs {:?}: retrain it",
                a.model_id,
                a.model_spec_version,
                super::MODEL_SPEC_VERSION
            ));
        }
        if a.outcomes.len() != 3 || a.features.len() != N_FEATURES {
            return Err(format!("model {} does not have three outcomes of {N_FEATURES} features", a.model_id));
        }
        for o in &a.outcomes {
            for m in [&o.model, &o.evaluation_model] {
                m.scorer.check().map_err(|e| format!("model {}: {}: {e}", a.model_id, o.outcome.label()))?;
            }
        }
        Ok(a)
    }

    pub fn beats_baselines(&self) -> bool {
        self.outcomes.iter().all(|o| o.evaluation.beats_baselines)
    }

    /// Probability and additive explanation for each outcome, in `Outcome::ALL` order.
    pub fn explain(&self, features: &[f64; N_FEATURES]) -> [Explained; 3] {
        std::array::from_fn(|k| {
            let m = &self.outcomes[k].model;
            let (baseline, contributions) = m.scorer.contributions(features);
            let logit = baseline + contributions.iter().sum::<f64>();
            Explained { probability: m.calibration.apply(logit), logit, baseline, contributions }
        })
    }

    pub fn probabilities(&self, features: &[f64; N_FEATURES]) -> [f64; 3] {
        std::array::from_fn(|k| self.outcomes[k].model.probability(features))
    }

    /// The model card: what it predicts, on what data, how well, for whom, and its limits.
    pub fn model_card(&self) -> String {
        let t = &self.training;
        let mut s = format!("# Model card: {}\n\n", self.model_id);
        s.push_str(&format!(
            "**Intended use.** A starting point for a conversation between a school and its link workers \
             about which children might benefit from a trusted adult — never a decision. Every proposed \
             list is reviewed by people who know the children.\n\n\
             **What it predicts.** For each pupil in a term, the chance in the *next* term of persistent \
             absence (10% or more of sessions missed), a suspension or exclusion, and a referral to \
             mental-health services. One model per outcome over {} engineered features (spec `{}`) \
             from the child's whole history at any school: attendance over every term and this one, \
             spells, behaviour, suspensions, SDQ wellbeing scores, referrals, attainment and context. \
             Per outcome the family — logistic regression or gradient-boosted trees — is chosen by \
             validation over earlier terms (below), and its probabilities are calibrated on a held-out \
             term. Sex and ethnicity are never inputs; they are used only to audit fairness.\n\n\
             **Data.** {} {} training examples (pupil-terms with a next term), terms {} to {}; \
             evaluated on {} with a model trained only on earlier terms. Data fingerprint `{}`, seed {}, \
             L2 alpha {}. Created {}.\n\n",
            N_FEATURES,
            self.feature_spec_version,
            t.data_description,
            t.examples,
            t.first_term,
            t.test_term.prev(),
            t.test_term,
            &t.data_fingerprint[..16],
            t.seed,
            t.alpha,
            self.created_at
        ));
        s.push_str(&format!(
            "## Metrics on {} (capacity {} per school)\n\n\
             | outcome | method | AUC | avg precision | Brier | ECE | precision@cap | recall@cap |\n\
             |---|---|---|---|---|---|---|---|\n",
            t.test_term, t.capacity
        ));
        let f = |v: Option<f64>| v.map_or("–".to_string(), |x| format!("{x:.3}"));
        for o in &self.outcomes {
            let e = &o.evaluation;
            let rows: [(&str, &MethodMetrics); 3] = [
                ("model", &e.model),
                ("last term's status", &e.last_term_status),
                ("DfE 10% rule", &e.dfe_absence_rule),
            ];
            for (name, m) in rows {
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {:.3} | {:.3} |\n",
                    o.outcome.label(),
                    name,
                    f(m.auc),
                    f(m.average_precision),
                    f(m.brier),
                    f(m.ece),
                    m.precision_at_capacity,
                    m.recall_at_capacity
                ));
            }
        }
        s.push_str(&format!(
            "\nBeats both baselines on AUC and precision at capacity for every outcome: **{}**.\n\n",
            if self.beats_baselines() { "yes" } else { "no" }
        ));
        s.push_str(
            "## Model family, chosen per outcome\n\n\
             | outcome | family | AUC at origins | precision@cap at origins | runner-up | its AUC | its precision@cap |\n\
             |---|---|---|---|---|---|---|\n",
        );
        for o in &self.outcomes {
            let sel = &o.selection;
            let score = |fam| sel.scores.iter().find(|x| x.family == fam);
            let (a, p) = score(sel.chosen).map_or((None, None), |x| (x.auc, x.precision_at_capacity));
            let (ra, rp) = sel.runner_up.and_then(score).map_or((None, None), |x| (x.auc, x.precision_at_capacity));
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                o.outcome.label(),
                sel.chosen.label(),
                f(a),
                f(p),
                sel.runner_up.map_or("–", |r| r.label()),
                f(ra),
                f(rp)
            ));
        }
        let origins: Vec<String> = self
            .outcomes
            .first()
            .map(|o| o.selection.origins.iter().map(|t| t.to_string()).collect())
            .unwrap_or_default();
        s.push_str(&format!(
            "\nOrigin terms: {} (each family fitted on the terms before each, as it would have been live). \
             Rule: {}.\n\n",
            if origins.is_empty() { "none (too few terms to compare)".into() } else { origins.join(", ") },
            self.outcomes.first().map_or("", |o| o.selection.rule.as_str())
        ));
        s.push_str(
            "## Fairness at the operating point\n\nEach group is compared with the largest group in its \
             dimension, at capacity (the top children per school). A ratio is flagged only when its 95% \
             interval lies wholly outside 0.8–1.25, so small groups, whose intervals are wide, are flagged \
             only for large differences. Sex and ethnicity are audited here, never used as inputs.\n",
        );
        let pct = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{:.1}%", 100.0 * v));
        let ci = |r: Option<f64>, c: Option<(f64, f64)>| match (r, c) {
            (Some(r), Some((lo, hi))) => format!("{r:.2} ({lo:.2}–{hi:.2})"),
            (Some(r), None) => format!("{r:.2}"),
            _ => "–".into(),
        };
        for o in &self.outcomes {
            s.push_str(&format!(
                "\n### {}\n\n| group | children | selected | selection rate | ratio (95% interval) | precision | ratio (95% interval) | false-negative rate | ratio (95% interval) | false-positive rate | ratio (95% interval) | flag |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
                o.outcome.label()
            ));
            for g in &o.evaluation.fairness.groups {
                s.push_str(&format!(
                    "| {} = {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    g.dimension,
                    g.group,
                    g.count,
                    g.selected,
                    pct(Some(g.selection_rate)),
                    ci(g.selection_ratio, g.selection_ratio_ci),
                    pct(g.precision),
                    ci(g.precision_ratio, g.precision_ratio_ci),
                    pct(g.false_negative_rate),
                    ci(g.fnr_ratio, g.fnr_ratio_ci),
                    pct(g.false_positive_rate),
                    ci(g.fpr_ratio, g.fpr_ratio_ci),
                    if g.flagged { "**flagged**" } else { "" }
                ));
            }
            let flags = &o.evaluation.fairness.flags;
            if !flags.is_empty() {
                s.push_str(&format!("\nFlags: {}\n", flags.join("; ")));
            }
        }
        s.push_str(
            "\n## Limits\n\n- Scores reflect what schools record; a child whose needs are not visible in the \
             data will not be found by it. Link workers add children the model missed.\n\
             - Higher selection rates for disadvantaged groups mostly reflect higher recorded need; flags are \
             prompts to look, not verdicts.\n\
             - Trained on the data described above: if that is synthetic, the figures say how the method \
             behaves, not how it will perform on real schools. Re-evaluate on real history before use.\n\
             - Probabilities are calibrated on the test term as shown; calibration drifts when attendance \
             patterns change, so retrain each year.\n",
        );
        s
    }
}
