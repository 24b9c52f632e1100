//! Live performance: how the scores people were shown in term t did, once term t+1's feeds
//! show what happened. Per term, per outcome, overall and per school: AUC, precision at
//! capacity and calibration against the two baselines, and how the children a cohort review
//! confirmed, removed and added fared. Computed from the stored scores and feeds, beside the
//! artifact (which never changes after training).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::dataset::status_now;
use super::features::{History, row_at};
use super::metrics::{precision_recall, reliability, roc_auc, top_k_per_group};
use crate::domain::{Outcome, SchoolTerm, Term, Upn, Urn};

/// Calibration worse than this (expected calibration error) is a warning.
pub const ECE_WARNING: f64 = 0.03;
/// Fewer children with the outcome than this in a term, and its figures are not warned on.
pub const MIN_POSITIVES: usize = 5;

/// The scores that were live for one school term: each child and P(outcome) per outcome.
pub struct LiveTerm {
    pub school_term: SchoolTerm,
    pub scores: Vec<(Upn, [f64; 3])>,
}

/// What a review decided for a child, for the cohort comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reviewed {
    Confirmed,
    Removed,
    Added,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub auc: Option<f64>,
    pub precision_at_capacity: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeFigures {
    pub outcome: Outcome,
    /// Children scored in t who have a row in t+1 with this outcome defined.
    pub children: usize,
    pub positives: usize,
    pub model: Metrics,
    pub last_term_status: Metrics,
    pub dfe_absence_rule: Metrics,
    /// Mean predicted probability and observed rate, and the expected calibration error.
    pub mean_predicted: f64,
    pub observed_rate: f64,
    pub ece: f64,
}

/// Children by what the review decided, and how many had an adverse outcome next term.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Fate {
    pub children: usize,
    /// Children with a row next term (the others left and are not counted).
    pub followed: usize,
    pub with_adverse_outcome: usize,
}

impl Fate {
    pub fn rate(&self) -> Option<f64> {
        (self.followed > 0).then(|| self.with_adverse_outcome as f64 / self.followed as f64)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CohortFates {
    pub confirmed: Fate,
    pub removed: Fate,
    pub added: Fate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchoolFigures {
    pub urn: Urn,
    pub outcomes: Vec<OutcomeFigures>,
    pub cohort: Option<CohortFates>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TermFigures {
    /// The term the scores were live in; outcomes are from the term after.
    pub term: Term,
    /// At or before the model's test term: if it was trained on this store's feeds, these
    /// outcomes were among its training labels (in-sample), so they are shown, not warned on.
    pub within_training: bool,
    pub outcomes: Vec<OutcomeFigures>,
    pub schools: Vec<SchoolFigures>,
    pub cohort: Option<CohortFates>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LivePerformance {
    pub model_id: String,
    pub capacity: usize,
    /// Terms whose next term has arrived, oldest first.
    pub terms: Vec<TermFigures>,
    /// Where the live model fell below a baseline or its calibration drifted.
    pub warnings: Vec<String>,
}

/// One scored child with what happened next.
struct Row {
    urn: u32,
    upn: Upn,
    tie: u64,
    p: [f64; 3],
    labels: [Option<bool>; 3],
    last: [f64; 3],
    dfe: f64,
    reviewed: Option<Reviewed>,
    adverse: Option<bool>,
}

impl Row {
    /// A reviewed child with no score or no next term: counted in the cohort's fates only.
    fn reviewed_only(st: SchoolTerm, upn: &Upn, d: Reviewed, adverse: Option<bool>) -> Row {
        Row {
            urn: st.urn.get(),
            upn: upn.clone(),
            tie: 0,
            p: [f64::NAN; 3],
            labels: [None; 3],
            last: [0.0; 3],
            dfe: 0.0,
            reviewed: Some(d),
            adverse,
        }
    }
}

/// At least one adverse outcome observed in this (next-term) row.
fn any_adverse(next: &crate::domain::PupilTerm) -> bool {
    Outcome::ALL.iter().any(|o| o.observe(next) == Some(true))
}

fn figures(rows: &[&Row], k: usize, capacity: usize) -> Option<OutcomeFigures> {
    let rows: Vec<&&Row> = rows.iter().filter(|r| r.labels[k].is_some()).collect();
    if rows.is_empty() {
        return None;
    }
    let labels: Vec<bool> = rows.iter().map(|r| r.labels[k] == Some(true)).collect();
    let schools: Vec<u32> = rows.iter().map(|r| r.urn).collect();
    let tie: Vec<u64> = rows.iter().map(|r| r.tie).collect();
    let metrics = |s: &[f64]| {
        let sel = top_k_per_group(s, &schools, &tie, capacity);
        Metrics { auc: roc_auc(s, &labels), precision_at_capacity: precision_recall(&sel, &labels).0 }
    };
    let p: Vec<f64> = rows.iter().map(|r| r.p[k]).collect();
    let last: Vec<f64> = rows.iter().map(|r| r.last[k]).collect();
    let dfe: Vec<f64> = rows.iter().map(|r| r.dfe).collect();
    let n = rows.len() as f64;
    let positives = labels.iter().filter(|&&l| l).count();
    Some(OutcomeFigures {
        outcome: Outcome::ALL[k],
        children: rows.len(),
        positives,
        model: metrics(&p),
        last_term_status: metrics(&last),
        dfe_absence_rule: metrics(&dfe),
        mean_predicted: p.iter().sum::<f64>() / n,
        observed_rate: positives as f64 / n,
        ece: reliability(&p, &labels, 10).1,
    })
}

fn fates(rows: &[&Row]) -> Option<CohortFates> {
    let mut f = CohortFates::default();
    let mut any = false;
    for r in rows {
        let Some(d) = r.reviewed else { continue };
        any = true;
        let fate = match d {
            Reviewed::Confirmed => &mut f.confirmed,
            Reviewed::Removed => &mut f.removed,
            Reviewed::Added => &mut f.added,
        };
        fate.children += 1;
        if let Some(a) = r.adverse {
            fate.followed += 1;
            fate.with_adverse_outcome += usize::from(a);
        }
    }
    any.then_some(f)
}

fn warn(scope: &str, term: Term, o: &OutcomeFigures, out: &mut Vec<String>) {
    if o.positives < MIN_POSITIVES {
        return;
    }
    let label = o.outcome.label();
    let m = &o.model;
    for (name, b) in [("last term's status", &o.last_term_status), ("the DfE 10% rule", &o.dfe_absence_rule)] {
        let below_auc = matches!((m.auc, b.auc), (Some(x), Some(y)) if x < y);
        if below_auc || m.precision_at_capacity < b.precision_at_capacity {
            out.push(format!(
                "{scope}, {term}, {label}: below {name} (AUC {} vs {}, precision at capacity {:.3} vs {:.3})",
                m.auc.map_or("–".into(), |v| format!("{v:.3}")),
                b.auc.map_or("–".into(), |v| format!("{v:.3}")),
                m.precision_at_capacity,
                b.precision_at_capacity
            ));
        }
    }
    if o.ece > ECE_WARNING {
        out.push(format!(
            "{scope}, {term}, {label}: calibration drifted (ECE {:.3} > {ECE_WARNING}; predicted {:.1}%, observed {:.1}%)",
            o.ece,
            100.0 * o.mean_predicted,
            100.0 * o.observed_rate
        ));
    }
}

/// Live performance of `model_id` from its live scores, the history they are judged on, and
/// the reviews of cohorts proposed from them (school term → child → decision).
pub fn live_performance(
    model_id: &str,
    capacity: usize,
    seed: u64,
    test_term: Term,
    live: &[LiveTerm],
    history: &History,
    reviews: &HashMap<SchoolTerm, Vec<(Upn, Reviewed)>>,
) -> LivePerformance {
    // A school's term is judged once that school's next term has arrived: judging it on the
    // few who moved to schools that sent theirs first would bias it.
    let arrived: std::collections::HashSet<SchoolTerm> =
        history.pupils.values().flat_map(|h| h.iter().map(|(st, _)| *st)).collect();
    let mut by_term: BTreeMap<Term, Vec<Row>> = BTreeMap::new();
    for lt in live {
        let st = lt.school_term;
        if !arrived.contains(&SchoolTerm { urn: st.urn, term: st.term.next() }) {
            continue;
        }
        let decided: HashMap<&Upn, Reviewed> =
            reviews.get(&st).map(|v| v.iter().map(|(u, d)| (u, *d)).collect()).unwrap_or_default();
        let scored: std::collections::HashSet<&Upn> = lt.scores.iter().map(|(u, _)| u).collect();
        for (upn, p) in &lt.scores {
            let h = history.pupils.get(upn);
            let next = h.and_then(|h| row_at(h, st.term.next()));
            // This term's row at this school: the baselines' inputs.
            let now = h.and_then(|h| h.iter().rev().find(|(s, _)| *s == st)).map(|(_, r)| r);
            let (Some(next), Some(now)) = (next, now) else {
                // Left before the next term: no outcome, but a reviewed child still counts.
                if let Some(&d) = decided.get(upn) {
                    by_term.entry(st.term).or_default().push(Row::reviewed_only(st, upn, d, None));
                }
                continue;
            };
            let labels = Outcome::ALL.map(|o| o.observe(next));
            let adverse = Some(any_adverse(next));
            by_term.entry(st.term).or_default().push(Row {
                urn: st.urn.get(),
                upn: upn.clone(),
                tie: crate::cohort::tie_break(seed, upn),
                p: *p,
                labels,
                last: status_now(now),
                dfe: if now.persistently_absent() == Some(true) { 1.0 } else { 0.0 },
                reviewed: decided.get(upn).copied(),
                adverse,
            });
        }
        // Added children without a live score of their own still have a fate.
        let mut added: Vec<(&Upn, Reviewed)> = decided
            .iter()
            .filter(|(u, d)| **d == Reviewed::Added && !scored.contains(**u))
            .map(|(u, d)| (*u, *d))
            .collect();
        added.sort_by(|a, b| a.0.cmp(b.0));
        for (upn, d) in added {
            let next = history.pupils.get(upn).and_then(|h| row_at(h, st.term.next()));
            let adverse = next.map(any_adverse);
            by_term.entry(st.term).or_default().push(Row::reviewed_only(st, upn, d, adverse));
        }
    }
    let mut warnings = Vec::new();
    let mut terms = Vec::new();
    for (term, rows) in by_term {
        // Over all schools a child on two rolls counts once (the later roll, as features do).
        let mut last_roll: HashMap<&Upn, usize> = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            let keep = last_roll.get(&r.upn).is_none_or(|&j| rows[j].urn <= r.urn);
            if keep {
                last_roll.insert(&r.upn, i);
            }
        }
        let all: Vec<&Row> = rows.iter().enumerate().filter(|(i, r)| last_roll[&r.upn] == *i).map(|(_, r)| r).collect();
        let outcomes: Vec<OutcomeFigures> = (0..3).filter_map(|k| figures(&all, k, capacity)).collect();
        let within_training = term <= test_term;
        if !within_training {
            for o in &outcomes {
                warn("all schools", term, o, &mut warnings);
            }
        }
        let mut urns: Vec<u32> = rows.iter().map(|r| r.urn).collect();
        urns.sort_unstable();
        urns.dedup();
        let schools = urns
            .into_iter()
            .map(|u| {
                let mine: Vec<&Row> = rows.iter().filter(|r| r.urn == u).collect();
                let urn = Urn::new(u).expect("stored URNs are valid");
                // A school's figures rest on few children: shown, not warned on.
                let outcomes: Vec<OutcomeFigures> = (0..3).filter_map(|k| figures(&mine, k, capacity)).collect();
                SchoolFigures { urn, outcomes, cohort: fates(&mine) }
            })
            .collect();
        terms.push(TermFigures { term, within_training, outcomes, schools, cohort: fates(&all) });
    }
    LivePerformance { model_id: model_id.to_owned(), capacity, terms, warnings }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{PupilTerm, Term};

    /// Four children in one school, figures worked out by hand.
    #[test]
    fn live_performance_matches_figures_worked_by_hand() {
        let world =
            crate::synth::generate(&crate::synth::WorldConfig { schools: 1, years: 1, ..Default::default() }).unwrap();
        let template: Vec<PupilTerm> = world.feeds[0].rows.iter().take(4).cloned().collect();
        let urn = world.feeds[0].urn;
        let (t, next) = (Term::parse("2025/26", "autumn").unwrap(), Term::parse("2025/26", "spring").unwrap());
        let row = |i: usize, absent: u16, suspensions: u8| {
            let mut r = template[i].clone();
            r.sessions_possible = 100;
            r.sessions_authorised = absent;
            r.sessions_unauthorised = 0;
            r.suspensions = suspensions;
            r.permanent_exclusion = false;
            r.mh_referral = false;
            r
        };
        let (st, st_next) = (SchoolTerm { urn, term: t }, SchoolTerm { urn, term: next });
        // Now: A and C persistently absent. Next: A and B are; only D is suspended.
        let rows = vec![
            (st, row(0, 20, 0)),
            (st, row(1, 2, 0)),
            (st, row(2, 15, 0)),
            (st, row(3, 0, 0)),
            (st_next, row(0, 30, 0)),
            (st_next, row(1, 12, 0)),
            (st_next, row(2, 1, 0)),
            (st_next, row(3, 0, 1)),
        ];
        let history = History::from_rows(rows);
        let upn = |i: usize| template[i].upn.clone();
        let live = vec![LiveTerm {
            school_term: st,
            scores: vec![
                (upn(0), [0.9, 0.1, 0.05]),
                (upn(1), [0.6, 0.2, 0.05]),
                (upn(2), [0.3, 0.3, 0.05]),
                (upn(3), [0.1, 0.4, 0.05]),
            ],
        }];
        let reviews = HashMap::from([(
            st,
            vec![
                (upn(0), Reviewed::Confirmed),
                (upn(2), Reviewed::Confirmed),
                (upn(1), Reviewed::Removed),
                (upn(3), Reviewed::Added),
            ],
        )]);
        let before = Term::parse("2024/25", "summer").unwrap();
        let r = live_performance("m", 1, 7, before, &live, &history, &reviews);
        assert_eq!(r.terms.len(), 1);
        let term = &r.terms[0];
        assert_eq!(term.term, t);
        assert!(!term.within_training);
        let pa = &term.outcomes[0];
        assert_eq!((pa.children, pa.positives), (4, 2));
        assert_eq!(pa.model.auc, Some(1.0));
        assert_eq!(pa.model.precision_at_capacity, 1.0);
        // Last term's status scores A 1, B 0, C 1, D 0: pairs (A,C) ½, (A,D) 1, (B,C) 0, (B,D) ½.
        assert_eq!(pa.last_term_status.auc, Some(0.5));
        // Its top one is A or C (tied), by the seeded tie-break.
        let a_first = crate::cohort::tie_break(7, &upn(0)) < crate::cohort::tie_break(7, &upn(2));
        assert_eq!(pa.last_term_status.precision_at_capacity, if a_first { 1.0 } else { 0.0 });
        assert!((pa.mean_predicted - 0.475).abs() < 1e-12 && (pa.observed_rate - 0.5).abs() < 1e-12);
        // One child per bin: |1−0.9|, |1−0.6|, |0−0.3|, |0−0.1|, averaged.
        assert!((pa.ece - 0.225).abs() < 1e-12, "{}", pa.ece);
        let susp = &term.outcomes[1];
        assert_eq!((susp.positives, susp.model.auc, susp.model.precision_at_capacity), (1, Some(1.0), 1.0));
        assert_eq!(term.outcomes[2].positives, 0);
        assert_eq!(term.outcomes[2].model.auc, None, "one class: no AUC");
        let c = term.cohort.as_ref().unwrap();
        assert_eq!((c.confirmed.children, c.confirmed.with_adverse_outcome), (2, 1));
        assert_eq!((c.removed.children, c.removed.with_adverse_outcome), (1, 1));
        assert_eq!((c.added.children, c.added.with_adverse_outcome), (1, 1));
        assert_eq!(c.confirmed.rate(), Some(0.5));
        assert_eq!(term.schools.len(), 1);
        assert_eq!(term.schools[0].outcomes, term.outcomes, "one school: its figures are the borough's");
        assert!(r.warnings.is_empty(), "two positives are too few to warn on: {:?}", r.warnings);
    }

    #[test]
    fn warnings_name_a_baseline_beaten_and_calibration_drift() {
        let m = |auc: f64, p: f64| Metrics { auc: Some(auc), precision_at_capacity: p };
        let o = OutcomeFigures {
            outcome: Outcome::PersistentAbsence,
            children: 500,
            positives: 60,
            model: m(0.70, 0.40),
            last_term_status: m(0.72, 0.30),
            dfe_absence_rule: m(0.65, 0.30),
            mean_predicted: 0.17,
            observed_rate: 0.12,
            ece: 0.05,
        };
        let mut w = Vec::new();
        warn("all schools", Term::parse("2025/26", "autumn").unwrap(), &o, &mut w);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("below last term's status") && w[0].contains("0.700 vs 0.720"));
        assert!(w[1].contains("calibration drifted") && w[1].contains("0.050"));
        let fine = OutcomeFigures { model: m(0.8, 0.5), ece: 0.01, ..o };
        let mut w = Vec::new();
        warn("all schools", Term::parse("2025/26", "autumn").unwrap(), &fine, &mut w);
        assert!(w.is_empty(), "{w:?}");
    }
}
