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
    /// The same features in single precision, in a matrix shared by the examples built
    /// together: what the logistic solver reads.
    pub single: SingleRow,
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

/// One example's features in single precision: a row of a matrix shared by all the
/// examples built together, rows adjacent in memory. A pass of the logistic solver over
/// examples reads these (a run of adjacent rows streams from memory at half the bytes of
/// the examples' own doubles, and at under two thirds of the time of even those held
/// contiguously) rather than each example's features.
#[derive(Clone)]
pub struct SingleRow {
    matrix: std::sync::Arc<Vec<f32>>,
    row: u32,
}

/// The row's values, not the whole shared matrix.
impl std::fmt::Debug for SingleRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingleRow").field("row", &self.row).field("values", &self.get()).finish()
    }
}

impl SingleRow {
    pub fn get(&self) -> &[f32] {
        &self.matrix[self.row as usize * N_FEATURES..][..N_FEATURES]
    }

    /// A row of its own, for an example made on its own.
    pub fn of(features: &[f64; N_FEATURES]) -> Self {
        Self { matrix: std::sync::Arc::new(features.iter().map(|v| *v as f32).collect()), row: 0 }
    }
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
    // Every example starts with the same empty row, and gets its row of the shared matrix
    // once all are built.
    let unset = SingleRow { matrix: std::sync::Arc::new(Vec::new()), row: 0 };
    // Built on every core straight into their final places, in the history's order: the
    // position of each example (a pupil and a row with a next-term row) is listed first, and
    // rayon fills the vector from it in place (no second copy of the examples at any time).
    use rayon::prelude::*;
    let pupils: Vec<_> = history.pupils.iter().collect();
    let positions: Vec<(u32, u32)> = pupils
        .iter()
        .enumerate()
        .flat_map(|(p, (_, rows))| {
            rows.iter()
                .enumerate()
                .filter(|(_, (st, _))| row_at(rows, st.term.next()).is_some())
                .map(move |(r, _)| (p as u32, r as u32))
        })
        .collect();
    let mut out = Vec::new();
    positions
        .par_iter()
        .with_min_len(256)
        .map(|&(p, r)| {
            let (upn, rows) = pupils[p as usize];
            let (st, row) = &rows[r as usize];
            let next = row_at(rows, st.term.next()).expect("listed with its next row");
            let FeatureRow { values, .. } = features(rows, row, st.term);
            Example {
                urn: st.urn,
                upn: upn.clone(),
                term: st.term,
                features: values,
                single: unset.clone(),
                labels: Outcome::ALL.map(|o| o.observe(next)),
                last_status: status_now(row),
                dfe_rule: if row.persistently_absent() == Some(true) { 1.0 } else { 0.0 },
                groups: groups_of(row),
                tie: tie_break(seed, upn),
            }
        })
        .collect_into_vec(&mut out);
    drop(positions);
    // Made in place at its final size and shared as it is (collecting into an `Arc<[f32]>`
    // would hold a second copy while it is made).
    let mut values = Vec::with_capacity(out.len() * N_FEATURES);
    values.extend(out.iter().flat_map(|e| e.features.map(|v| v as f32)));
    let matrix = std::sync::Arc::new(values);
    for (row, e) in out.iter_mut().enumerate() {
        e.single = SingleRow { matrix: matrix.clone(), row: row as u32 };
    }
    out
}

/// The latest term that has next-term outcomes: the temporal test term.
pub fn latest_labelled_term(examples: &[Example]) -> Option<Term> {
    examples.iter().map(|e| e.term).max()
}
