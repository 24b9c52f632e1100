//! Evaluation metrics, written out so each can be checked by hand on tiny examples.

use serde::{Deserialize, Serialize};

/// ROC AUC: the chance a random positive scores above a random negative (ties count half).
/// `None` when there are no positives or no negatives.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Mann–Whitney U with mid-ranks for ties.
    let (mut rank_sum, mut pos) = (0.0, 0.0);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if labels[k] {
                rank_sum += mid;
                pos += 1.0;
            }
        }
        i = j + 1;
    }
    let neg = scores.len() as f64 - pos;
    (pos > 0.0 && neg > 0.0).then(|| (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg))
}

/// Average precision: mean precision at each positive, ranking by score (ties as one block).
pub fn average_precision(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let total_pos = labels.iter().filter(|&&l| l).count() as f64;
    if total_pos == 0.0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut seen, mut ap, mut prev_recall) = (0.0, 0.0, 0.0, 0.0);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        for &k in &idx[i..=j] {
            seen += 1.0;
            tp += f64::from(u8::from(labels[k]));
        }
        let recall = tp / total_pos;
        ap += (recall - prev_recall) * (tp / seen);
        prev_recall = recall;
        i = j + 1;
    }
    Some(ap)
}

pub fn brier(probs: &[f64], labels: &[bool]) -> f64 {
    let n = probs.len().max(1) as f64;
    probs.iter().zip(labels).map(|(p, &l)| (p - f64::from(u8::from(l))).powi(2)).sum::<f64>() / n
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bin {
    pub lower: f64,
    pub upper: f64,
    pub count: usize,
    pub mean_predicted: f64,
    pub observed_rate: f64,
}

/// Reliability diagram over `n_bins` equal-width bins, and the expected calibration error
/// (bin-size-weighted mean |observed − predicted|).
pub fn reliability(probs: &[f64], labels: &[bool], n_bins: usize) -> (Vec<Bin>, f64) {
    let mut sums = vec![(0usize, 0.0, 0.0); n_bins];
    for (&p, &l) in probs.iter().zip(labels) {
        let b = ((p * n_bins as f64) as usize).min(n_bins - 1);
        sums[b].0 += 1;
        sums[b].1 += p;
        sums[b].2 += f64::from(u8::from(l));
    }
    let n = probs.len().max(1) as f64;
    let mut ece = 0.0;
    let bins = sums
        .iter()
        .enumerate()
        .map(|(i, &(count, sp, sl))| {
            let c = count.max(1) as f64;
            ece += count as f64 / n * (sl / c - sp / c).abs();
            Bin {
                lower: i as f64 / n_bins as f64,
                upper: (i + 1) as f64 / n_bins as f64,
                count,
                mean_predicted: sp / c,
                observed_rate: sl / c,
            }
        })
        .collect();
    (bins, ece)
}

/// Which rows are selected when each group (school) takes its top `k` by score.
/// Ties are broken by `tie` (a seeded hash), so selection is deterministic.
pub fn top_k_per_group(scores: &[f64], groups: &[u32], tie: &[u64], k: usize) -> Vec<bool> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| groups[a].cmp(&groups[b]).then(scores[b].total_cmp(&scores[a])).then(tie[a].cmp(&tie[b])));
    let mut selected = vec![false; scores.len()];
    let mut taken = 0;
    for (pos, &i) in idx.iter().enumerate() {
        if pos == 0 || groups[idx[pos - 1]] != groups[i] {
            taken = 0;
        }
        if taken < k {
            selected[i] = true;
            taken += 1;
        }
    }
    selected
}

/// (precision, recall) of a selection.
pub fn precision_recall(selected: &[bool], labels: &[bool]) -> (f64, f64) {
    let tp = selected.iter().zip(labels).filter(|(s, l)| **s && **l).count() as f64;
    let sel = selected.iter().filter(|&&s| s).count() as f64;
    let pos = labels.iter().filter(|&&l| l).count() as f64;
    (if sel > 0.0 { tp / sel } else { 0.0 }, if pos > 0.0 { tp / pos } else { 0.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ties_as_half() {
        // Pairs (pos, neg): (0.8>0.3), (0.8>0.5), (0.5=0.5 → ½), (0.5>0.3) → 3.5 / 4.
        let auc = roc_auc(&[0.8, 0.5, 0.5, 0.3], &[true, true, false, false]).unwrap();
        assert!((auc - 0.875).abs() < 1e-12);
        assert_eq!(roc_auc(&[0.1, 0.2], &[false, false]), None);
        assert_eq!(roc_auc(&[0.3, 0.3, 0.3], &[true, false, false]), Some(0.5));
    }

    #[test]
    fn average_precision_by_hand() {
        // Ranked: T(0.9) F(0.8) T(0.7) F(0.1): precision at positives 1 and 2/3 → 5/6.
        let ap = average_precision(&[0.9, 0.8, 0.7, 0.1], &[true, false, true, false]).unwrap();
        assert!((ap - 5.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn brier_and_ece_by_hand() {
        assert!((brier(&[1.0, 0.0, 0.5], &[true, true, false]) - (0.0 + 1.0 + 0.25) / 3.0).abs() < 1e-12);
        // Bin 0.1–0.2: two at 0.15, one positive (|0.5−0.15|); bin 0.9–1.0: two at 0.95, both positive.
        let (bins, ece) = reliability(&[0.15, 0.15, 0.95, 0.95], &[true, false, true, true], 10);
        assert!((ece - (0.5 * 0.35 + 0.5 * 0.05)).abs() < 1e-12);
        assert_eq!(bins[1].count, 2);
        assert_eq!(bins[9].observed_rate, 1.0);
    }

    #[test]
    fn precision_at_k_per_school() {
        let scores = [0.9, 0.8, 0.1, 0.7, 0.6, 0.5];
        let schools = [1, 1, 1, 2, 2, 2];
        let labels = [true, false, true, false, true, true];
        let sel = top_k_per_group(&scores, &schools, &[0; 6], 2);
        assert_eq!(sel, vec![true, true, false, true, true, false]);
        let (p, r) = precision_recall(&sel, &labels);
        assert!((p - 0.5).abs() < 1e-12 && (r - 0.5).abs() < 1e-12);
        // Ties are broken by the tie key, not input order.
        let tied = top_k_per_group(&[0.5, 0.5], &[1, 1], &[9, 3], 1);
        assert_eq!(tied, vec![false, true]);
    }
}
