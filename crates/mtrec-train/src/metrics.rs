//! Evaluation metrics: exact ROC-AUC (ties averaged), logloss, MSE and MAE.

use std::collections::BTreeMap;

use mtrec_data::{LabelTransform, TaskKind, TaskSpec};

/// Exact area under the ROC curve of `scores` for binary `labels` (1 = positive).
///
/// Equals the probability that a random positive scores above a random negative, counting ties as
/// one half (the Mann–Whitney statistic with average ranks). `None` — undefined — when either class
/// Whether a larger value of `metric` is better (`auc`, `gauc`, `cvr_auc`, `accuracy`,
/// `macro_auc`), or a smaller one (`logloss`, `mse`, `mae`).
pub fn higher_is_better(metric: &str) -> bool {
    matches!(metric, "auc" | "gauc" | "cvr_auc" | "accuracy" | "macro_auc")
}

/// is absent or a score is not finite (a NaN has no rank: sorting it anywhere would invent one).
pub fn roc_auc(scores: &[f32], labels: &[f32]) -> Option<f64> {
    assert_eq!(scores.len(), labels.len());
    if scores.iter().any(|s| !s.is_finite()) {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_unstable_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum_pos, mut n_pos) = (0.0f64, 0usize);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        // ranks i+1..=j+1 share their mean
        let mean_rank = (i + j + 2) as f64 / 2.0;
        for &k in &order[i..=j] {
            if labels[k] > 0.5 {
                rank_sum_pos += mean_rank;
                n_pos += 1;
            }
        }
        i = j + 1;
    }
    let n_neg = scores.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let (p, n) = (n_pos as f64, n_neg as f64);
    Some((rank_sum_pos - p * (p + 1.0) / 2.0) / (p * n))
}

/// Mean binary cross-entropy of `logits` against 0/1 `labels` (natural log), computed stably.
pub fn binary_logloss(logits: &[f32], labels: &[f32]) -> f64 {
    let sum: f64 = logits
        .iter()
        .zip(labels)
        .map(|(&z, &y)| {
            let (z, y) = (z as f64, y as f64);
            z.max(0.0) - z * y + (-z.abs()).exp().ln_1p()
        })
        .sum();
    sum / logits.len() as f64
}

/// Group AUC (GAUC): the AUC within each group (a user, an item…), averaged with each group's
/// number of rows (impressions) as its weight, over the groups whose labels hold both classes —
/// the others have no AUC and are skipped. Rows without a group ([`mtrec_data::NO_GROUP`]: a null
/// `group_by` cell) belong to none and are left out. Returns `(gauc, groups used)`; `None` when no
/// group has both classes.
pub fn group_auc(scores: &[f32], labels: &[f32], groups: &[u32]) -> Option<(f64, usize)> {
    assert!(scores.len() == labels.len() && labels.len() == groups.len());
    let mut order: Vec<usize> = (0..groups.len()).filter(|&i| groups[i] != mtrec_data::NO_GROUP).collect();
    order.sort_by_key(|&i| groups[i]);
    let (mut weighted, mut weight, mut used) = (0.0f64, 0.0f64, 0usize);
    let (mut s, mut l) = (Vec::new(), Vec::new());
    for chunk in order.chunk_by(|&a, &b| groups[a] == groups[b]) {
        s.clear();
        l.clear();
        s.extend(chunk.iter().map(|&i| scores[i]));
        l.extend(chunk.iter().map(|&i| labels[i]));
        if let Some(auc) = roc_auc(&s, &l) {
            weighted += auc * chunk.len() as f64;
            weight += chunk.len() as f64;
            used += 1;
        }
    }
    (used > 0).then(|| (weighted / weight, used))
}

/// Multiclass metrics of `logits` (row-major `[n, k]`) against class indices `labels` (`0..k` as
/// floats): `accuracy`, `logloss` (mean softmax cross-entropy, natural log) and `macro_auc` (the mean
/// over classes of the one-vs-rest AUC of the class's softmax probability, over the classes present
/// with both outcomes).
pub fn multiclass_metrics(logits: &[f32], labels: &[f32], k: usize) -> TaskMetrics {
    let n = labels.len();
    let mut probabilities = vec![0.0f32; n * k];
    let (mut correct, mut loss) = (0usize, 0.0f64);
    for (i, row) in logits.chunks_exact(k).enumerate() {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = row.iter().map(|&z| (z as f64 - max).exp()).sum();
        let y = labels[i] as usize;
        loss += max + sum.ln() - row[y] as f64;
        let argmax = row.iter().enumerate().fold(0, |b, (j, &z)| if z > row[b] { j } else { b });
        correct += usize::from(argmax == y);
        for (j, &z) in row.iter().enumerate() {
            probabilities[i * k + j] = ((z as f64 - max).exp() / sum) as f32;
        }
    }
    let aucs: Vec<f64> = (0..k)
        .filter_map(|c| {
            let p: Vec<f32> = probabilities.iter().skip(c).step_by(k).copied().collect();
            let y: Vec<f32> = labels.iter().map(|&l| f32::from(l as usize == c)).collect();
            roc_auc(&p, &y)
        })
        .collect();
    let mut m = TaskMetrics::new();
    m.insert("accuracy".into(), correct as f64 / n.max(1) as f64);
    m.insert("logloss".into(), loss / n.max(1) as f64);
    if !aucs.is_empty() {
        m.insert("macro_auc".into(), aucs.iter().sum::<f64>() / aucs.len() as f64);
    }
    m
}

/// Mean squared error.
pub fn mse(pred: &[f32], target: &[f32]) -> f64 {
    pred.iter().zip(target).map(|(&p, &t)| (p as f64 - t as f64).powi(2)).sum::<f64>() / pred.len() as f64
}

/// Mean absolute error.
pub fn mae(pred: &[f32], target: &[f32]) -> f64 {
    pred.iter().zip(target).map(|(&p, &t)| (p as f64 - t as f64).abs()).sum::<f64>() / pred.len() as f64
}

/// The metrics of one task on one split, by name.
pub type TaskMetrics = BTreeMap<String, f64>;

/// The first non-finite value of `outputs`: `(row, value)`.
pub(crate) fn first_non_finite(outputs: &[f32]) -> Option<(usize, f32)> {
    outputs.iter().enumerate().find(|(_, v)| !v.is_finite()).map(|(i, v)| (i, *v))
}

/// `cvr_auc` of a funnel step: the AUC of `scores` (the model's probability of the step given the
/// previous one, or its unconditional output) against the step's labels on the rows where the
/// previous step is positive — ESMM's CVR AUC on clicked impressions. `None` when undefined.
pub(crate) fn conditional_auc(scores: &[f32], labels: &[f32], previous: &[f32]) -> Option<f64> {
    let (s, l): (Vec<f32>, Vec<f32>) =
        scores.iter().zip(labels).zip(previous).filter(|(_, p)| **p > 0.5).map(|((s, l), _)| (*s, *l)).unzip();
    roc_auc(&s, &l)
}

/// Every metric of a task: `auc`, `logloss` (binary), `mse`, `mae` (regression) or `accuracy`,
/// `logloss`, `macro_auc` (multiclass; `outputs` row-major `[n, classes]`).
pub(crate) fn task_metrics(task: &TaskSpec, outputs: &[f32], labels: &[f32]) -> TaskMetrics {
    let mut m = TaskMetrics::new();
    match task.kind {
        TaskKind::Multiclass => return multiclass_metrics(outputs, labels, task.n_classes),
        TaskKind::Binary => {
            if let Some(auc) = roc_auc(outputs, labels) {
                m.insert("auc".into(), auc);
            }
            m.insert("logloss".into(), binary_logloss(outputs, labels));
        }
        TaskKind::Regression if task.label_transform == LabelTransform::Log1p => {
            // trained in log space; reported in the label's own units too (`expm1` of both)
            m.insert("mse_log1p".into(), mse(outputs, labels));
            m.insert("mae_log1p".into(), mae(outputs, labels));
            let units = |v: &[f32]| v.iter().map(|&x| (x as f64).exp_m1()).collect::<Vec<f64>>();
            let (p, y) = (units(outputs), units(labels));
            let n = p.len().max(1) as f64;
            m.insert("mse".into(), p.iter().zip(&y).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / n);
            m.insert("mae".into(), p.iter().zip(&y).map(|(a, b)| (a - b).abs()).sum::<f64>() / n);
        }
        TaskKind::Regression => {
            m.insert("mse".into(), mse(outputs, labels));
            m.insert("mae".into(), mae(outputs, labels));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// O(n²) reference: fraction of (positive, negative) pairs ordered correctly, ties = ½.
    fn pairwise_auc(scores: &[f32], labels: &[f32]) -> f64 {
        let (mut num, mut den) = (0.0, 0.0);
        for (i, &si) in scores.iter().enumerate() {
            for (j, &sj) in scores.iter().enumerate() {
                if labels[i] > 0.5 && labels[j] < 0.5 {
                    den += 1.0;
                    num += if si > sj {
                        1.0
                    } else if si == sj {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        num / den
    }

    #[test]
    fn auc_matches_the_pairwise_reference_with_many_ties() {
        let mut rng = StdRng::seed_from_u64(3);
        for trial in 0..20 {
            let n = rng.random_range(2..300);
            // few distinct score values → many ties
            let levels = rng.random_range(1..8);
            let scores: Vec<f32> = (0..n).map(|_| rng.random_range(0..levels) as f32 / 3.0).collect();
            let labels: Vec<f32> = scores.iter().map(|&s| f32::from(rng.random::<f32>() < 0.2 + 0.2 * s)).collect();
            let expected = pairwise_auc(&scores, &labels);
            match roc_auc(&scores, &labels) {
                Some(got) => assert!((got - expected).abs() < 1e-12, "trial {trial}: {got} vs {expected}"),
                None => assert!(expected.is_nan(), "trial {trial}"),
            }
        }
    }

    #[test]
    fn auc_hand_computed_cases() {
        assert_eq!(roc_auc(&[0.1, 0.4, 0.35, 0.8], &[0.0, 0.0, 1.0, 1.0]), Some(0.75));
        assert_eq!(roc_auc(&[0.5, 0.5, 0.5], &[0.0, 1.0, 1.0]), Some(0.5));
        assert_eq!(roc_auc(&[3.0, 1.0], &[1.0, 0.0]), Some(1.0));
        assert_eq!(roc_auc(&[1.0, 2.0], &[1.0, 1.0]), None);
    }

    /// A NaN score has no rank: the AUC is undefined, not 1.0 (what sorting NaN last gave).
    #[test]
    fn auc_of_non_finite_scores_is_undefined() {
        assert_eq!(roc_auc(&[f32::NAN, f32::NAN], &[0.0, 1.0]), None);
        assert_eq!(roc_auc(&[0.2, f32::NAN, 0.7], &[0.0, 1.0, 1.0]), None);
        assert_eq!(roc_auc(&[0.2, f32::INFINITY], &[0.0, 1.0]), None);
        assert_eq!(first_non_finite(&[0.5, 1.0, f32::NAN]).map(|(i, _)| i), Some(2));
    }

    /// A `log1p` regression task reports MSE and MAE in the label's units (`expm1` of outputs and
    /// labels) and, named `_log1p`, in the log space it trains in; a plain one only the former.
    #[test]
    fn log1p_regression_reports_both_spaces() {
        let mut task = TaskSpec::new("watch", TaskKind::Regression);
        task.label_transform = LabelTransform::Log1p;
        let (y, p) = ([1.0f32, 3.0], [2.0f32, 3.0]);
        let (ly, lp): (Vec<f32>, Vec<f32>) =
            (y.iter().map(|v| v.ln_1p()).collect(), p.iter().map(|v| v.ln_1p()).collect());
        let m = task_metrics(&task, &lp, &ly);
        assert!((m["mse"] - 0.5).abs() < 1e-5 && (m["mae"] - 0.5).abs() < 1e-5, "{m:?}");
        let log_err = (3.0f64.ln() - 2.0f64.ln()).powi(2) / 2.0;
        assert!((m["mse_log1p"] - log_err).abs() < 1e-6, "{m:?}");
        let plain = task_metrics(&TaskSpec::new("r", TaskKind::Regression), &p, &y);
        assert_eq!((plain["mse"], plain.contains_key("mse_log1p")), (0.5, false));
    }

    /// GAUC by hand: group 1 has AUC 1 over 3 rows, group 2 AUC 0 over 2 rows, group 3 one class
    /// (skipped): (1·3 + 0·2) / 5 = 0.6 over 2 groups.
    #[test]
    fn group_auc_by_hand() {
        let scores = [0.9f32, 0.1, 0.5, 0.2, 0.8, 0.3, 0.4];
        let labels = [1.0f32, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0];
        let groups = [1u32, 1, 1, 2, 2, 3, 3];
        // group 1: positive 0.9 above negatives 0.1, 0.5 → 1; group 2: positive 0.2 below 0.8 → 0
        assert_eq!(group_auc(&scores, &labels, &groups), Some((0.6, 2)));
        assert_eq!(group_auc(&scores[5..], &labels[5..], &groups[5..]), None);
        // the groups need not be contiguous
        let shuffled = [3usize, 0, 6, 2, 5, 1, 4];
        let pick = |v: &[f32]| shuffled.iter().map(|&i| v[i]).collect::<Vec<f32>>();
        let g: Vec<u32> = shuffled.iter().map(|&i| groups[i]).collect();
        assert_eq!(group_auc(&pick(&scores), &pick(&labels), &g), Some((0.6, 2)));
        // rows without a group are in none: not one more group of their own
        let mut with_null = groups.to_vec();
        let (mut s2, mut l2) = (scores.to_vec(), labels.to_vec());
        with_null.extend([mtrec_data::NO_GROUP; 4]);
        s2.extend([0.9, 0.1, 0.8, 0.2]);
        l2.extend([0.0, 1.0, 1.0, 0.0]);
        assert_eq!(group_auc(&s2, &l2, &with_null), Some((0.6, 2)), "null groups are left out");
    }

    /// Multiclass by hand: 3 rows, 3 classes.
    #[test]
    fn multiclass_metrics_by_hand() {
        let ln3 = 3f32.ln();
        // row 0: logits (ln 3, 0, 0) → p = (0.6, 0.2, 0.2), label 0; row 1: (0, 0, 0) → ⅓ each, label 2;
        // row 2: (0, ln 3, 0) → (0.2, 0.6, 0.2), label 1
        let logits = [ln3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, ln3, 0.0];
        let labels = [0.0f32, 2.0, 1.0];
        let m = multiclass_metrics(&logits, &labels, 3);
        // argmax: 0 ✓, 0 (ties → first) ✗, 1 ✓
        assert!((m["accuracy"] - 2.0 / 3.0).abs() < 1e-12);
        let expected = -((0.6f64).ln() + (1.0f64 / 3.0).ln() + (0.6f64).ln()) / 3.0;
        assert!((m["logloss"] - expected).abs() < 1e-6, "{} vs {expected}", m["logloss"]);
        // class 0: p = (0.6, ⅓, 0.2), positive row 0 above both → 1; class 1: (0.2, ⅓, 0.6), positive
        // row 2 → 1; class 2: (0.2, ⅓, 0.2), positive row 1 → 1
        assert!((m["macro_auc"] - 1.0).abs() < 1e-12);
    }

    /// CVR AUC counts only the rows whose previous step is positive.
    #[test]
    fn conditional_auc_by_hand() {
        // rows 0, 2, 3 clicked; among them labels 0, 1, 0 with scores 0.9, 0.8, 0.1 → 1 of 2 pairs
        let scores = [0.9f32, 0.0, 0.8, 0.1];
        let labels = [0.0f32, 0.0, 1.0, 0.0];
        let clicked = [1.0f32, 0.0, 1.0, 1.0];
        assert_eq!(conditional_auc(&scores, &labels, &clicked), Some(0.5));
        assert_eq!(conditional_auc(&scores, &labels, &[0.0; 4]), None);
    }

    #[test]
    fn logloss_mse_mae_hand_computed() {
        // logit 0 → p = ½ → loss ln 2 for either label
        assert!((binary_logloss(&[0.0, 0.0], &[1.0, 0.0]) - std::f64::consts::LN_2).abs() < 1e-12);
        // logit ln 3 → p = ¾; label 1 → −ln ¾
        let z = 3.0f32.ln();
        assert!((binary_logloss(&[z], &[1.0]) - (-(0.75f64).ln())).abs() < 1e-6);
        assert_eq!(mse(&[1.0, 3.0], &[0.0, 1.0]), 2.5);
        assert_eq!(mae(&[1.0, 3.0], &[0.0, 1.0]), 1.5);
    }
}
