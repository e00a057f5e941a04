//! The MMoE paper's synthetic study (Ma et al., KDD 2018, §3.3 and Figure 4): shared-bottom, OMoE
//! and MMoE trained with the same hyper-parameters on synthetic task pairs of correlation
//! p ∈ {1.0, 0.9, 0.5}, over several seeds. The paper finds that every model trains worse as the
//! tasks grow less related, shared-bottom markedly so, and MMoE the least.
//!
//! This module aggregates the runs (mean training-loss curves per model and p, final losses and
//! test MSE as mean ± std over seeds), checks the paper's trend and renders the table and figure;
//! `cargo xtask synthetic-study` runs the experiments.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use mtrec_train::{Figure, Panel, PanelKind, Series};

use crate::mean_std;

/// One training run of the study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyRun {
    /// Architecture name (`shared_bottom`, `omoe`, `mmoe`).
    pub model: String,
    /// Task correlation p.
    pub correlation: f64,
    /// Training seed.
    pub seed: u64,
    /// Training loss per epoch, averaged over the tasks.
    pub train_loss: Vec<f64>,
    /// Test MSE of the selected model, averaged over the tasks.
    pub test_mse: f64,
}

/// One model at one correlation, over seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyCell {
    /// Architecture name.
    pub model: String,
    /// Task correlation p.
    pub correlation: f64,
    /// Number of seeds.
    pub runs: usize,
    /// Mean over seeds of the training loss at each epoch (epochs all runs reached).
    pub mean_curve: Vec<f64>,
    /// Training loss of the last epoch: mean and std over seeds.
    pub final_loss: (f64, f64),
    /// Test MSE: mean and std over seeds.
    pub test_mse: (f64, f64),
}

/// Groups runs by (model, p) — models in order of first appearance, p descending.
pub fn aggregate(runs: &[StudyRun]) -> Vec<StudyCell> {
    let mut models: Vec<&str> = Vec::new();
    for r in runs {
        if !models.contains(&r.model.as_str()) {
            models.push(&r.model);
        }
    }
    let mut correlations: Vec<f64> = Vec::new();
    for r in runs {
        if !correlations.contains(&r.correlation) {
            correlations.push(r.correlation);
        }
    }
    correlations.sort_by(|a, b| b.total_cmp(a));
    let mut cells = Vec::new();
    for &p in &correlations {
        for &model in &models {
            let group: Vec<&StudyRun> = runs.iter().filter(|r| r.model == model && r.correlation == p).collect();
            if group.is_empty() {
                continue;
            }
            let epochs = group.iter().map(|r| r.train_loss.len()).min().unwrap_or(0);
            let mean_curve =
                (0..epochs).map(|e| group.iter().map(|r| r.train_loss[e]).sum::<f64>() / group.len() as f64).collect();
            let finals: Vec<f64> = group.iter().filter_map(|r| r.train_loss.last().copied()).collect();
            let tests: Vec<f64> = group.iter().map(|r| r.test_mse).collect();
            cells.push(StudyCell {
                model: model.to_string(),
                correlation: p,
                runs: group.len(),
                mean_curve,
                final_loss: mean_std(&finals),
                test_mse: mean_std(&tests),
            });
        }
    }
    cells
}

/// The paper's finding, measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyTrend {
    /// The highest and lowest p compared.
    pub from_to: (f64, f64),
    /// Per model: mean final training loss at the lowest p minus at the highest p (positive:
    /// training got worse as the tasks grew less related).
    pub degradation: BTreeMap<String, f64>,
    /// Shared-bottom's loss rises as p falls.
    pub shared_bottom_degrades: Option<bool>,
    /// MMoE's rise is the smallest of the models compared.
    pub mmoe_degrades_least: Option<bool>,
}

/// Compares each model's final training loss at the highest and the lowest correlation.
pub fn trend(cells: &[StudyCell]) -> StudyTrend {
    let hi = cells.iter().map(|c| c.correlation).fold(f64::NEG_INFINITY, f64::max);
    let lo = cells.iter().map(|c| c.correlation).fold(f64::INFINITY, f64::min);
    let at =
        |model: &str, p: f64| cells.iter().find(|c| c.model == model && c.correlation == p).map(|c| c.final_loss.0);
    let mut degradation = BTreeMap::new();
    for c in cells {
        if let (Some(a), Some(b)) = (at(&c.model, lo), at(&c.model, hi)) {
            degradation.insert(c.model.clone(), a - b);
        }
    }
    let comparable = hi > lo;
    let shared_bottom_degrades = degradation.get("shared_bottom").filter(|_| comparable).map(|d| *d > 0.0);
    let mmoe_degrades_least = degradation
        .get("mmoe")
        .filter(|_| comparable && degradation.len() > 1)
        .map(|m| degradation.iter().all(|(k, d)| k == "mmoe" || m < d));
    StudyTrend { from_to: (hi, lo), degradation, shared_bottom_degrades, mmoe_degrades_least }
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "not measured",
    }
}

/// The table of final training losses and test MSEs, and the trend.
pub fn study_markdown(cells: &[StudyCell], trend: &StudyTrend) -> String {
    let mut md = String::from(
        "Synthetic study (MMoE paper §3.3): mean ± std over seeds; losses are the mean of the two tasks' MSE.\n\n\
         | p | model | seeds | final training loss | test MSE |\n|---|---|---|---|---|\n",
    );
    for c in cells {
        md.push_str(&format!(
            "| {} | {} | {} | {:.4} ± {:.4} | {:.4} ± {:.4} |\n",
            c.correlation, c.model, c.runs, c.final_loss.0, c.final_loss.1, c.test_mse.0, c.test_mse.1
        ));
    }
    md.push_str(&format!(
        "\nFinal training loss at p = {} minus at p = {}: {}.\n\n\
         - shared-bottom degrades as p falls: **{}**\n- MMoE degrades least: **{}**\n",
        trend.from_to.1,
        trend.from_to.0,
        trend.degradation.iter().map(|(m, d)| format!("{m} {d:+.4}")).collect::<Vec<_>>().join(", "),
        yes_no(trend.shared_bottom_degrades),
        yes_no(trend.mmoe_degrades_least),
    ));
    md
}

/// One panel per correlation: each model's mean training-loss curve (log10).
pub fn study_figure(cells: &[StudyCell]) -> Figure {
    let mut correlations: Vec<f64> = cells.iter().map(|c| c.correlation).collect();
    correlations.dedup();
    Figure {
        panels: correlations
            .iter()
            .map(|&p| Panel {
                title: format!("task correlation p = {p}"),
                x_label: "epoch".into(),
                y_label: "log10 mean training loss".into(),
                kind: PanelKind::Lines(
                    cells
                        .iter()
                        .filter(|c| c.correlation == p)
                        .map(|c| Series {
                            label: c.model.clone(),
                            points: c.mean_curve.iter().enumerate().map(|(e, l)| ((e + 1) as f64, l.log10())).collect(),
                        })
                        .collect(),
                ),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(model: &str, p: f64, seed: u64, train_loss: Vec<f64>, test_mse: f64) -> StudyRun {
        StudyRun { model: model.into(), correlation: p, seed, train_loss, test_mse }
    }

    #[test]
    fn aggregates_curves_and_finals_over_seeds() {
        let runs = vec![
            run("mmoe", 0.5, 1, vec![4.0, 2.0, 1.0], 0.3),
            run("mmoe", 0.5, 2, vec![2.0, 1.0, 0.5], 0.5),
            run("shared_bottom", 1.0, 1, vec![3.0, 1.0], 0.2),
            run("mmoe", 1.0, 1, vec![3.0, 0.9], 0.1),
        ];
        let cells = aggregate(&runs);
        // p descending, models in order of appearance
        let keys: Vec<(f64, &str)> = cells.iter().map(|c| (c.correlation, c.model.as_str())).collect();
        assert_eq!(keys, vec![(1.0, "mmoe"), (1.0, "shared_bottom"), (0.5, "mmoe")]);
        let c = &cells[2];
        assert_eq!(c.runs, 2);
        assert_eq!(c.mean_curve, vec![3.0, 1.5, 0.75]);
        assert!(
            (c.final_loss.0 - 0.75).abs() < 1e-12 && (c.final_loss.1 - 0.25f64.sqrt() * 0.5f64.sqrt()).abs() < 1e-12
        );
        assert!((c.test_mse.0 - 0.4).abs() < 1e-12 && (c.test_mse.1 - 0.02f64.sqrt()).abs() < 1e-12);
        let figure = study_figure(&cells);
        assert_eq!(figure.panels.len(), 2);
        let PanelKind::Lines(series) = &figure.panels[1].kind else { panic!("lines") };
        assert_eq!(series[0].points[1], (2.0, 1.5f64.log10()));
    }

    #[test]
    fn trend_compares_the_lowest_and_highest_correlation() {
        let cell = |model: &str, p: f64, loss: f64| StudyCell {
            model: model.into(),
            correlation: p,
            runs: 1,
            mean_curve: vec![loss],
            final_loss: (loss, 0.0),
            test_mse: (loss, 0.0),
        };
        let cells = vec![
            cell("shared_bottom", 1.0, 0.10),
            cell("omoe", 1.0, 0.08),
            cell("mmoe", 1.0, 0.08),
            cell("shared_bottom", 0.9, 0.12),
            cell("shared_bottom", 0.5, 0.20),
            cell("omoe", 0.5, 0.15),
            cell("mmoe", 0.5, 0.09),
        ];
        let t = trend(&cells);
        assert_eq!(t.from_to, (1.0, 0.5));
        assert!((t.degradation["shared_bottom"] - 0.10).abs() < 1e-12);
        assert_eq!((t.shared_bottom_degrades, t.mmoe_degrades_least), (Some(true), Some(true)));
        let md = study_markdown(&cells, &t);
        assert!(md.contains("| 0.5 | mmoe | 1 | 0.0900 ± 0.0000 |"), "{md}");
        assert!(md.contains("MMoE degrades least: **yes**"), "{md}");
        // MMoE no longer the least: the check says so
        let mut worse = cells.clone();
        worse[6].final_loss.0 = 0.3;
        assert_eq!(trend(&worse).mmoe_degrades_least, Some(false));
        // one correlation only: nothing to compare
        assert_eq!(trend(&cells[..3]).shared_bottom_degrades, None);
    }
}
