//! Group-fairness metrics of every binary main task by a sensitive column (`[fairness] by =
//! "sex"`): what a researcher removing an attribute from the representation wants to see change
//! in the decisions.
//!
//! The scores are turned into decisions at the threshold whose positive rate equals the split's
//! base rate (the top `round(p·n)` scores are positive), so the gaps do not depend on the
//! calibration of the logits. Per task:
//! - `dp_gap`: demographic-parity difference, the largest minus the smallest positive-decision
//!   rate over the groups;
//! - `eo_gap`: equal-opportunity difference, the same over the groups' true-positive rates
//!   (groups without positives are left out);
//! - `auc_group_<g>`: the AUC within group `g` (`None` where it has one class).
//!
//! The sensitive column is a task's label (an adversarial task such as census `sex`, or any other
//! task; multiclass labels are groups by class) or a categorical input field (groups by
//! encoded id, 0 = null or unseen).

use std::collections::BTreeMap;

use mtrec_data::{Schema, TaskKind};
use serde::{Deserialize, Serialize};

use crate::{TaskMetrics, TrainError, roc_auc};

/// `[fairness]`: the sensitive column the fairness metrics group by.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FairnessConfig {
    /// A task name or a categorical input field name; unset: no fairness metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// Where each row's group comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupColumn {
    /// Task `t`'s label.
    Task(usize),
    /// Categorical input field `f`'s id.
    Categorical(usize),
}

impl FairnessConfig {
    /// The column `by` names in `schema` (`None` when unset).
    ///
    /// # Errors
    /// A name that is neither a task nor a categorical field, naming the key and the choices.
    pub fn column(&self, schema: &Schema) -> Result<Option<GroupColumn>, TrainError> {
        let Some(by) = &self.by else { return Ok(None) };
        if let Some(t) = schema.task_index(by) {
            if schema.tasks[t].kind == TaskKind::Regression {
                return Err(TrainError::Config(format!(
                    "fairness.by = {by:?} is a regression task: groups need a binary or multiclass label"
                )));
            }
            return Ok(Some(GroupColumn::Task(t)));
        }
        if let Some(f) = schema.categorical.iter().position(|c| c.name == *by) {
            return Ok(Some(GroupColumn::Categorical(f)));
        }
        let tasks: Vec<&str> = schema.tasks.iter().map(|t| t.name.as_str()).collect();
        let fields: Vec<&str> = schema.categorical.iter().map(|c| c.name.as_str()).collect();
        Err(TrainError::Config(format!(
            "fairness.by = {by:?}: no task or categorical input of that name (tasks: {}; categorical inputs: {}); a \
             column dropped from the inputs can be grouped by when it is a task (census: data.adversarial = \"sex\")",
            tasks.join(", "),
            fields.join(", ")
        )))
    }
}

/// `dp_gap`, `eo_gap` and `auc_group_<g>` of one binary task's `scores` (logits or probabilities)
/// against 0/1 `labels`, by `groups` (one a row).
pub fn fairness_metrics(scores: &[f32], labels: &[f32], groups: &[i64]) -> TaskMetrics {
    let n = scores.len();
    let mut out = TaskMetrics::new();
    if n == 0 {
        return out;
    }
    let positives = labels.iter().filter(|&&y| y > 0.5).count();
    let k = positives; // the base rate's share of the rows
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut decided = vec![false; n];
    order.iter().take(k).for_each(|&r| decided[r] = true);
    // per group: rows, positive decisions, positives, true positives, and the rows themselves
    let mut by_group: BTreeMap<i64, (usize, usize, usize, usize, Vec<usize>)> = BTreeMap::new();
    for r in 0..n {
        let e = by_group.entry(groups[r]).or_default();
        let y = labels[r] > 0.5;
        e.0 += 1;
        e.1 += decided[r] as usize;
        e.2 += y as usize;
        e.3 += (y && decided[r]) as usize;
        e.4.push(r);
    }
    let spread = |v: Vec<f64>| {
        let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        (v.len() > 1).then_some(hi - lo)
    };
    let rates = by_group.values().map(|g| g.1 as f64 / g.0 as f64).collect();
    let tprs = by_group.values().filter(|g| g.2 > 0).map(|g| g.3 as f64 / g.2 as f64).collect();
    if let Some(gap) = spread(rates) {
        out.insert("dp_gap".into(), gap);
    }
    if let Some(gap) = spread(tprs) {
        out.insert("eo_gap".into(), gap);
    }
    for (g, (.., rows)) in &by_group {
        let s: Vec<f32> = rows.iter().map(|&r| scores[r]).collect();
        let y: Vec<f32> = rows.iter().map(|&r| labels[r]).collect();
        if let Some(auc) = roc_auc(&s, &y) {
            out.insert(format!("auc_group_{g}"), auc);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A six-row table by hand: base rate ½ → the top 3 scores (rows 0, 1, 4) are positive;
    /// positive rates 2/3 (group 0) and 1/3 (group 1) → DP gap 1/3; TPR ½ (row 0 of rows 0, 2) and
    /// 1 (row 4) → EO gap ½; AUC within group 0: positives 0.9, 0.3 against 0.8 → ½; group 1: 1.
    #[test]
    fn fairness_metrics_by_hand() {
        let scores = [0.9f32, 0.8, 0.3, 0.2, 0.7, 0.1];
        let labels = [1.0f32, 0.0, 1.0, 0.0, 1.0, 0.0];
        let groups = [0i64, 0, 0, 1, 1, 1];
        let m = fairness_metrics(&scores, &labels, &groups);
        assert!((m["dp_gap"] - 1.0 / 3.0).abs() < 1e-12, "{m:?}");
        assert!((m["eo_gap"] - 0.5).abs() < 1e-12);
        assert_eq!(m["auc_group_0"], 0.5);
        assert_eq!(m["auc_group_1"], 1.0);
        // one group: no gaps; the threshold follows the base rate, not 0.5
        let one = fairness_metrics(&scores, &labels, &[7; 6]);
        assert!(!one.contains_key("dp_gap") && one.contains_key("auc_group_7"));
    }

    #[test]
    fn the_column_is_a_task_or_a_categorical_field() {
        use mtrec_data::{CategoricalField, TaskSpec};
        let schema = Schema::new(
            vec![CategoricalField { name: "race".into(), vocab_size: 5 }],
            vec!["x".into()],
            vec![TaskSpec::new("income", TaskKind::Binary), TaskSpec::new("age", TaskKind::Regression)],
        );
        let by = |s: &str| FairnessConfig { by: Some(s.into()) }.column(&schema);
        assert_eq!(by("income").unwrap(), Some(GroupColumn::Task(0)));
        assert_eq!(by("race").unwrap(), Some(GroupColumn::Categorical(0)));
        assert!(by("age").unwrap_err().to_string().contains("regression"));
        let err = by("sex").unwrap_err().to_string();
        assert!(err.contains("fairness.by") && err.contains("race") && err.contains("income"), "{err}");
        assert_eq!(FairnessConfig::default().column(&schema).unwrap(), None);
    }
}
