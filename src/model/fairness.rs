//! Fairness at the operating point (top-k per school), by sex, ethnicity group, FSM, SEN, EAL.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::dataset::Example;

/// Groups smaller than this are marked small (their intervals are wide), never dropped.
pub const MIN_GROUP: usize = 30;
/// A ratio is flagged when its 95% interval lies wholly outside this range (the four-fifths
/// rule and its inverse).
pub const FLAG_RANGE: (f64, f64) = (0.8, 1.25);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRates {
    pub dimension: String,
    pub group: String,
    pub count: usize,
    pub selection_rate: f64,
    pub false_negative_rate: Option<f64>,
    pub false_positive_rate: Option<f64>,
    pub precision: Option<f64>,
    /// Ratios against the largest group in the dimension.
    pub selection_ratio: Option<f64>,
    pub fnr_ratio: Option<f64>,
    pub fpr_ratio: Option<f64>,
    pub precision_ratio: Option<f64>,
    pub small: bool,
    /// At least one ratio's 95% interval lies wholly outside 0.8–1.25.
    pub flagged: bool,
    /// Children selected, and children with the outcome, in the group (the rates' denominators).
    #[serde(default)]
    pub selected: usize,
    #[serde(default)]
    pub positives: usize,
    /// 95% intervals of the ratios (Katz's log method; absent when a count is 0). Small
    /// groups get wide intervals, so a flag means the data show a difference.
    #[serde(default)]
    pub selection_ratio_ci: Option<(f64, f64)>,
    #[serde(default)]
    pub fnr_ratio_ci: Option<(f64, f64)>,
    #[serde(default)]
    pub fpr_ratio_ci: Option<(f64, f64)>,
    #[serde(default)]
    pub precision_ratio_ci: Option<(f64, f64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FairnessReport {
    pub groups: Vec<GroupRates>,
    pub flags: Vec<String>,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// The 95% interval of a ratio of two proportions, (a/n) / (b/m), by Katz's log method:
/// log ratio ± 1.96 · sqrt(1/a − 1/n + 1/b − 1/m), with half a count added to each cell
/// (Haldane–Anscombe), so that a rate of 0 or 1 still gets an honest, wide interval rather
/// than none or a falsely narrow one. None only when a group has no one to rate.
pub fn ratio_interval(a: usize, n: usize, b: usize, m: usize) -> Option<(f64, f64)> {
    if n == 0 || m == 0 {
        return None;
    }
    let (a, n, b, m) = (a as f64 + 0.5, n as f64 + 1.0, b as f64 + 0.5, m as f64 + 1.0);
    let log_rr = ((a / n) / (b / m)).ln();
    let se = (1.0 / a - 1.0 / n + 1.0 / b - 1.0 / m).max(0.0).sqrt();
    Some(((log_rr - 1.96 * se).exp(), (log_rr + 1.96 * se).exp()))
}

/// Names the group an example belongs to, in one dimension.
type GroupOf = fn(&Example) -> String;

pub fn fairness(rows: &[&Example], selected: &[bool], labels: &[bool]) -> FairnessReport {
    let dims: [(&str, GroupOf); 5] = [
        ("sex", |e| e.groups.sex.to_string()),
        ("ethnicity_group", |e| e.groups.ethnicity.to_string()),
        ("fsm", |e| if e.groups.fsm { "FSM" } else { "not FSM" }.to_string()),
        ("sen", |e| e.groups.sen.code().to_string()),
        ("eal", |e| if e.groups.eal { "EAL" } else { "not EAL" }.to_string()),
    ];
    let mut groups = Vec::new();
    let mut flags = Vec::new();
    for (dim, key) in dims {
        // (count, selected, tp, fn, fp, tn) per group.
        let mut c: BTreeMap<String, [usize; 6]> = BTreeMap::new();
        for (i, e) in rows.iter().enumerate() {
            let g = c.entry(key(e)).or_default();
            let (s, l) = (selected[i], labels[i]);
            g[0] += 1;
            g[1] += usize::from(s);
            g[2] += usize::from(s && l);
            g[3] += usize::from(!s && l);
            g[4] += usize::from(s && !l);
            g[5] += usize::from(!s && !l);
        }
        let frac = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
        let rates = |g: &[usize; 6]| {
            (g[1] as f64 / g[0] as f64, frac(g[3], g[2] + g[3]), frac(g[4], g[4] + g[5]), frac(g[2], g[1]))
        };
        let Some((_, largest)) = c.iter().max_by_key(|(name, g)| (g[0], std::cmp::Reverse((*name).clone()))) else {
            continue;
        };
        let reference = rates(largest);
        let r = *largest;
        for (name, g) in &c {
            let (sel, fnr, fpr, prec) = rates(g);
            let small = g[0] < MIN_GROUP;
            let sr = ratio(Some(sel), Some(reference.0));
            let ratios = [sr, ratio(fnr, reference.1), ratio(fpr, reference.2), ratio(prec, reference.3)];
            // (numerator, denominator) of each rate: selection, FNR, FPR, precision.
            let parts = |g: &[usize; 6]| [(g[1], g[0]), (g[3], g[2] + g[3]), (g[4], g[4] + g[5]), (g[2], g[1])];
            let (mine, theirs) = (parts(g), parts(&r));
            let cis: Vec<Option<(f64, f64)>> =
                (0..4).map(|k| ratio_interval(mine[k].0, mine[k].1, theirs[k].0, theirs[k].1)).collect();
            // Flag only what the data show: an interval wholly outside the range.
            let names = ["selection rate", "false-negative rate", "false-positive rate", "precision"];
            let mut why = Vec::new();
            for k in 0..4 {
                if let (Some(ratio), Some((lo, hi))) = (ratios[k], cis[k])
                    && (hi < FLAG_RANGE.0 || lo > FLAG_RANGE.1)
                {
                    why.push(format!("{} ratio {ratio:.2} (95% interval {lo:.2}–{hi:.2})", names[k]));
                }
            }
            let flagged = !why.is_empty();
            if flagged {
                flags.push(format!(
                    "{dim} = {name} ({} children, against {} in the largest group): {}",
                    g[0],
                    r[0],
                    why.join("; ")
                ));
            }
            groups.push(GroupRates {
                dimension: dim.into(),
                group: name.clone(),
                count: g[0],
                selection_rate: sel,
                false_negative_rate: fnr,
                false_positive_rate: fpr,
                precision: prec,
                selection_ratio: ratios[0],
                fnr_ratio: ratios[1],
                fpr_ratio: ratios[2],
                precision_ratio: ratios[3],
                small,
                flagged,
                selected: g[1],
                positives: g[2] + g[3],
                selection_ratio_ci: cis[0],
                fnr_ratio_ci: cis[1],
                fpr_ratio_ci: cis[2],
                precision_ratio_ci: cis[3],
            });
        }
    }
    FairnessReport { groups, flags }
}

#[cfg(test)]
mod interval_tests {
    use super::*;

    #[test]
    fn katz_intervals_are_wide_for_small_groups_and_tight_for_large_ones() {
        // 20% against 40%: a ratio of 0.5.
        let (lo, hi) = ratio_interval(2, 10, 40, 100).unwrap();
        assert!(lo < 0.2 && hi > 1.25, "10 children cannot show a difference: {lo}–{hi}");
        let (lo, hi) = ratio_interval(200, 1000, 400, 1000).unwrap();
        assert!(lo > 0.43 && hi < 0.58, "1,000 children can: {lo}–{hi}");
        // By hand, with half a count added to each cell: (200.5/1001) / (400.5/1001).
        let se = (1.0 / 200.5 - 1.0 / 1001.0 + 1.0 / 400.5 - 1.0 / 1001.0_f64).sqrt();
        assert!((lo - ((200.5f64 / 400.5).ln() - 1.96 * se).exp()).abs() < 1e-12);
        // A rate of 0 still gets an interval (wide for few children), not none.
        let (lo, hi) = ratio_interval(0, 10, 40, 100).unwrap();
        assert!(lo < 0.1 && hi > 0.8, "{lo}–{hi}");
        let (_, hi) = ratio_interval(0, 500, 100, 1000).unwrap();
        assert!(hi < 0.2, "nobody of 500 selected, against 10%: {hi}");
        // Two of two (a rate of 1) is not a tight interval.
        let (lo, hi) = ratio_interval(2, 2, 70, 100).unwrap();
        assert!(lo < 0.8 && hi > 1.25, "{lo}–{hi}");
        assert_eq!(ratio_interval(0, 0, 4, 10), None);
    }
}

#[cfg(test)]
mod flag_tests {
    use super::*;
    use crate::domain::{Sen, Term, Urn};
    use crate::model::N_FEATURES;

    fn example(fsm: bool) -> Example {
        Example {
            urn: Urn::new(100001).unwrap(),
            upn: crate::domain::Upn::parse("D359200119001").unwrap(),
            term: Term::parse("2025/26", "autumn").unwrap(),
            features: [0.0; N_FEATURES],
            single: super::super::dataset::SingleRow::of(&[0.0; N_FEATURES]),
            labels: [Some(false); 3],
            last_status: [0.0; 3],
            dfe_rule: 0.0,
            groups: super::super::dataset::Groups { sex: "F", ethnicity: "White", fsm, sen: Sen::N, eal: false },
            tie: 0,
        }
    }

    /// `n_fsm` FSM children of whom `sel_fsm` are selected, beside 2,000 others (the largest
    /// group, so the reference) of whom 200 are.
    fn report(n_fsm: usize, sel_fsm: usize) -> FairnessReport {
        let rows: Vec<Example> = (0..n_fsm).map(|_| example(true)).chain((0..2000).map(|_| example(false))).collect();
        let refs: Vec<&Example> = rows.iter().collect();
        let selected: Vec<bool> = (0..n_fsm).map(|i| i < sel_fsm).chain((0..2000).map(|i| i < 200)).collect();
        let labels = vec![false; rows.len()];
        fairness(&refs, &selected, &labels)
    }

    fn fsm_group(r: &FairnessReport) -> &GroupRates {
        r.groups.iter().find(|g| g.dimension == "fsm" && g.group == "FSM").unwrap()
    }

    #[test]
    fn a_flag_needs_the_interval_outside_the_range_not_just_the_ratio() {
        // 2 of 10 selected against 10%: a ratio of 2.0, but ten children cannot show it.
        let small = report(10, 2);
        let g = fsm_group(&small);
        assert_eq!(g.selection_ratio.map(|r| (r * 100.0).round()), Some(200.0));
        assert!(!g.flagged && small.flags.is_empty(), "{:?}", small.flags);
        // 200 of 1,000 against 10%: the same ratio, and now the data show it.
        let large = report(1000, 200);
        let g = fsm_group(&large);
        let (lo, _) = g.selection_ratio_ci.unwrap();
        assert!(g.flagged && lo > 1.25, "{lo}");
        assert!(large.flags[0].contains("1000 children") && large.flags[0].contains("selection rate ratio 2.00"));
        // Nobody of 500 selected against 10%: a ratio of 0, flagged.
        let none = report(500, 0);
        assert!(fsm_group(&none).flagged, "{:?}", none.flags);
    }
}
