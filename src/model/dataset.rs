//! Training examples: term t features joined to the pupil's outcomes in term t+1.

use super::features::{FeatureRow, History, N_FEATURES, features, row_at};
use crate::cohort::tie_break;
use crate::domain::{Outcome, PupilTerm, Sen, Term, Upn, Urn};

/// Group attributes kept for fairness audits only (never features).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Groups {
    pub sex: &'static str,
    pub ethnicity: &'static str,
    pub fsm: bool,
    pub sen: Sen,
    pub eal: bool,
}

#[derive(Debug, Clone)]
pub struct Example {
    pub urn: Urn,
    pub upn: Upn,
    pub term: Term,
    pub features: [f64; N_FEATURES],
    /// Next-term outcome, in `Outcome::ALL` order; `None` where undefined.
    pub labels: [Option<bool>; 3],
    /// This term's status for each outcome: the "last term's status" baseline.
    pub last_status: [f64; 3],
    /// The DfE rule: absence of 10% or more this term.
    pub dfe_rule: f64,
    pub groups: Groups,
    /// Seeded tie-break key, as cohort selection uses.
    pub tie: u64,
}

pub fn status_now(row: &PupilTerm) -> [f64; 3] {
    let b = |v: bool| if v { 1.0 } else { 0.0 };
    [b(row.persistently_absent() == Some(true)), b(row.suspended_or_excluded()), b(row.mh_referral)]
}

pub fn groups_of(row: &PupilTerm) -> Groups {
    Groups { sex: row.sex.code(), ethnicity: row.ethnicity.group(), fsm: row.fsm, sen: row.sen, eal: row.eal }
}

/// One example per pupil row that has a row in the next term (at any school). Pupils with no
/// next row left the system and are left out (censored).
pub fn build(history: &History, seed: u64) -> Vec<Example> {
    let mut out = Vec::with_capacity(history.rows());
    for (upn, rows) in &history.pupils {
        for (st, row) in rows {
            let Some(next) = row_at(rows, st.term.next()) else {
                continue;
            };
            let FeatureRow { values, .. } = features(rows, row, st.term);
            out.push(Example {
                urn: st.urn,
                upn: upn.clone(),
                term: st.term,
                features: values,
                labels: Outcome::ALL.map(|o| o.observe(next)),
                last_status: status_now(row),
                dfe_rule: if row.persistently_absent() == Some(true) { 1.0 } else { 0.0 },
                groups: groups_of(row),
                tie: tie_break(seed, upn),
            });
        }
    }
    out
}

/// The latest term that has next-term outcomes: the temporal test term.
pub fn latest_labelled_term(examples: &[Example]) -> Option<Term> {
    examples.iter().map(|e| e.term).max()
}
