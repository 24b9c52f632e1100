//! Fairness at the operating point (top-k per school), by sex, ethnicity group, FSM, SEN, EAL.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::dataset::Example;

/// Groups smaller than this are marked, not dropped: their rates are too noisy to flag.
pub const MIN_GROUP: usize = 30;
/// Disparity ratios outside this range are flagged (the four-fifths rule and its inverse).
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
    pub flagged: bool,
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
        for (name, g) in &c {
            let (sel, fnr, fpr, prec) = rates(g);
            let small = g[0] < MIN_GROUP;
            let sr = ratio(Some(sel), Some(reference.0));
            let ratios = [sr, ratio(fnr, reference.1), ratio(fpr, reference.2), ratio(prec, reference.3)];
            let outside = ratios.iter().flatten().any(|r| *r < FLAG_RANGE.0 || *r > FLAG_RANGE.1);
            let flagged = outside && !small;
            if flagged {
                flags.push(format!("{dim} = {name}: a rate differs from the largest group by more than 0.8–1.25"));
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
            });
        }
    }
    FairnessReport { groups, flags }
}
