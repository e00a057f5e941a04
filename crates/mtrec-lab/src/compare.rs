//! Multi-seed comparisons: per config and task, the mean ± sample standard deviation of the test
//! metric over seeds, and Δm — the mean relative gain over the single-task baseline across tasks
//! (Maninis et al. 2019; Vandenhende et al. 2021), the summary number of the MTL literature:
//! `Δm = (1/T) Σ_t (−1)^{l_t} (M_t − M_single,t) / M_single,t`, with `l_t = 1` where lower is better.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use mtrec_train::{EpochRecord, Figure, Panel, PanelKind, Series, higher_is_better};

/// Mean and sample standard deviation (`n − 1`; 0 for one value).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Δm of `config` against `baseline`, both per main task `(metric, mean)`. `None` unless both have
/// the same tasks with the same metrics (a mean over whatever names two configs happen to share —
/// ESMM's funnel `income_and_never_married` against plain `never_married` — would compare other
/// tasks), or when a mean is not finite.
pub fn delta_m(config: &BTreeMap<String, (String, f64)>, baseline: &BTreeMap<String, (String, f64)>) -> Option<f64> {
    let gains = task_gains(config, baseline)?;
    let d = gains.values().sum::<f64>() / gains.len() as f64;
    d.is_finite().then_some(d)
}

/// Each task's relative gain over the baseline, `(−1)^{l_t} (M_t − M_single,t) / M_single,t` —
/// the terms Δm averages: which task gains from sharing and which pays for it. `None` under the
/// conditions of [`delta_m`].
pub fn task_gains(
    config: &BTreeMap<String, (String, f64)>,
    baseline: &BTreeMap<String, (String, f64)>,
) -> Option<BTreeMap<String, f64>> {
    let same_tasks = config.len() == baseline.len()
        && config.iter().all(|(task, (metric, _))| baseline.get(task).is_some_and(|(m, _)| m == metric));
    if !same_tasks || config.is_empty() {
        return None;
    }
    Some(
        config
            .iter()
            .map(|(task, (metric, m))| {
                let b = baseline[task].1;
                let sign = if higher_is_better(metric) { 1.0 } else { -1.0 };
                (task.clone(), sign * (m - b) / b)
            })
            .collect(),
    )
}

/// One config's results over seeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigResult {
    /// The config's name.
    pub name: String,
    /// Its architecture.
    pub model: String,
    /// Its balancer.
    pub balance: String,
    /// Per task: the metric compared and its value for each seed (NaN where undefined, e.g. an AUC
    /// on a one-class split).
    pub tasks: BTreeMap<String, (String, Vec<f64>)>,
    /// Further metrics reported beside the compared one: `(task, metric, value for each seed)` —
    /// GAUC and CVR AUC of binary tasks, MAE of regression, macro-AUC of multiclass.
    #[serde(default)]
    pub extra: Vec<(String, String, Vec<f64>)>,
    /// The adversarial tasks among `tasks`: reported, never part of Δm.
    #[serde(default)]
    pub adversarial: Vec<String>,
    /// Δm against the single-task config, where one is compared and has the same main tasks.
    pub delta_m: Option<f64>,
}

impl ConfigResult {
    /// Adds one seed's `value` of `metric` for `task` to [`Self::extra`].
    pub fn push_extra(&mut self, task: &str, metric: &str, value: f64) {
        match self.extra.iter_mut().find(|(t, m, _)| t == task && m == metric) {
            Some((_, _, values)) => values.push(value),
            None => self.extra.push((task.to_string(), metric.to_string(), vec![value])),
        }
    }

    /// Per main (non-adversarial) task `(metric, mean over seeds)`.
    pub fn means(&self) -> BTreeMap<String, (String, f64)> {
        self.tasks
            .iter()
            .filter(|(t, _)| !self.adversarial.contains(t))
            .map(|(t, (m, v))| (t.clone(), (m.clone(), mean_std(v).0)))
            .collect()
    }
}

/// The distinct names of `names`, in order of first appearance.
fn first_appearances(names: impl IntoIterator<Item = String>) -> Vec<String> {
    names.into_iter().fold(Vec::new(), |mut v, t| {
        if !v.contains(&t) {
            v.push(t);
        }
        v
    })
}

/// Fills in Δm of every config against the first single-task one.
pub fn fill_delta_m(results: &mut [ConfigResult]) {
    let Some(baseline) = results.iter().find(|r| r.model == "single_task").map(ConfigResult::means) else {
        return;
    };
    for r in results.iter_mut() {
        r.delta_m = delta_m(&r.means(), &baseline);
    }
}

/// The comparison as a Markdown table: config × task metric (mean ± std over `seeds`), and Δm.
/// The columns are every config's tasks (in order of first appearance); adversarial tasks are
/// marked and left out of Δm.
pub fn markdown(results: &[ConfigResult], seeds: &[u64]) -> String {
    let mut tasks: Vec<(String, String)> = Vec::new();
    for r in results {
        let primary = r.tasks.iter().map(|(t, (m, _))| (t, m));
        for (t, m) in primary.chain(r.extra.iter().map(|(t, m, _)| (t, m))) {
            if !tasks.iter().any(|(t2, m2)| t2 == t && m2 == m) {
                tasks.push((t.clone(), m.clone()));
            }
        }
    }
    // each task's metrics side by side, in order of first appearance of the task
    let order = first_appearances(tasks.iter().map(|(t, _)| t.clone()));
    tasks.sort_by_key(|(t, _)| order.iter().position(|o| o == t));
    let adversarial = |t: &str| results.iter().any(|r| r.adversarial.iter().any(|a| a == t));
    let baseline = results.iter().find(|r| r.model == "single_task");
    let has_delta = baseline.is_some();
    let mut out = format!("Test metrics, mean ± std over {} seeds ({seeds:?}).\n\n", seeds.len());
    out += "| config | model | balance |";
    for (t, m) in &tasks {
        out += &format!(" {t} {m}{} |", if adversarial(t) { " (adversarial)" } else { "" });
    }
    if has_delta {
        out += " Δm vs single-task |";
    }
    out += "\n|---|---|---|";
    out += &"---|".repeat(tasks.len() + usize::from(has_delta));
    out += "\n";
    for r in results {
        out += &format!("| {} | {} | {} |", r.name, r.model, r.balance);
        for (t, m) in &tasks {
            let values = r
                .tasks
                .get(t)
                .filter(|(metric, _)| metric == m)
                .map(|(_, v)| v)
                .or_else(|| r.extra.iter().find(|(t2, m2, _)| t2 == t && m2 == m).map(|(_, _, v)| v));
            match values {
                Some(v) if v.iter().all(|x| x.is_finite()) => {
                    let (mean, std) = mean_std(v);
                    out += &format!(" {mean:.4} ± {std:.4} |");
                }
                Some(_) => out += " undefined |",
                None => out += " – |",
            }
        }
        if has_delta {
            // + 0.0 turns −0.0 into 0.0
            out += &r.delta_m.map_or(" – |".to_string(), |d| format!(" {:+.2} % |", 100.0 * d + 0.0));
        }
        out += "\n";
    }
    if let Some(b) = baseline {
        // the terms of Δm: who gains from sharing, who pays for it
        let gains: Vec<(&str, BTreeMap<String, f64>)> = results
            .iter()
            .filter(|r| r.model != "single_task")
            .filter_map(|r| Some((r.name.as_str(), task_gains(&r.means(), &b.means())?)))
            .collect();
        if let Some((_, first)) = gains.first() {
            out += &format!("\nGain over single-task per task (the terms of Δm), relative to `{}`:\n\n", b.name);
            out += "| config |";
            first.keys().for_each(|t| out += &format!(" {t} |"));
            out += "\n|---|";
            out += &"---|".repeat(first.len());
            out += "\n";
            for (name, g) in &gains {
                out += &format!("| {name} |");
                g.values().for_each(|v| out += &format!(" {:+.2} % |", 100.0 * v + 0.0));
                out += "\n";
            }
        }
        let others: Vec<&str> = results.iter().filter(|r| r.delta_m.is_none()).map(|r| r.name.as_str()).collect();
        if !others.is_empty() {
            out += &format!(
                "\nΔm is left out (–) for {others:?}: their main tasks or metrics differ from the single-task \
                 config `{}`'s, or a metric is undefined.\n",
                b.name
            );
        }
    }
    out
}

/// The trade-off of a sweep over adversarial settings: per adversarial task, the first main
/// task's test metric (mean over seeds) against the fresh probes' test AUC on the representation
/// — one panel for the MLP probe, one for the linear probe, one point a config (each its own
/// colour, so a LEACE config is its own point). Configs without probe results are left out; `None`
/// when none has any.
pub fn trade_off_figure(results: &[ConfigResult]) -> Option<Figure> {
    let mean_of = |r: &ConfigResult, task: &str, metric: &str| {
        r.extra.iter().find(|(t, m, _)| t == task && m == metric).map(|(_, _, v)| mean_std(v).0)
    };
    let mut panels = Vec::new();
    let adversarial = first_appearances(results.iter().flat_map(|r| r.adversarial.clone()));
    for task in &adversarial {
        for (probe, label) in [("probe_mlp_auc", "MLP"), ("probe_linear_auc", "linear")] {
            let mut y_label = String::new();
            let series: Vec<Series> = results
                .iter()
                .filter_map(|r| {
                    let x = mean_of(r, task, probe)?;
                    let (main, (metric, values)) = r.tasks.iter().find(|(t, _)| !r.adversarial.contains(t))?;
                    y_label = format!("{main} test {metric}");
                    Some(Series { label: r.name.clone(), points: vec![(x, mean_std(values).0)] })
                })
                .collect();
            if !series.is_empty() {
                panels.push(Panel {
                    title: format!("`{task}`: {label} probe against the main task"),
                    x_label: format!("{label} probe test AUC on `{task}` (0.5: removed)"),
                    y_label,
                    kind: PanelKind::Points(series),
                });
            }
        }
    }
    (!panels.is_empty()).then_some(Figure { panels })
}

/// Validation curves side by side: one panel per `(task, metric)`, one line per config — the
/// mean over seeds of the validation metric at each epoch every seed reached.
pub fn compare_figure(runs: &[(String, Vec<Vec<EpochRecord>>)], tasks: &[(String, String)]) -> Figure {
    Figure {
        panels: tasks
            .iter()
            .map(|(task, metric)| Panel {
                title: format!("{task}: validation {metric}"),
                x_label: "epoch".into(),
                y_label: format!("{metric}, mean over seeds"),
                kind: PanelKind::Lines(
                    runs.iter()
                        .map(|(name, seeds)| {
                            let epochs = seeds.iter().map(Vec::len).min().unwrap_or(0);
                            let points = (0..epochs)
                                .map(|e| {
                                    let values: Vec<f64> = seeds
                                        .iter()
                                        .map(|r| {
                                            r[e].valid
                                                .get(task)
                                                .and_then(|m| m.get(metric))
                                                .copied()
                                                .unwrap_or(f64::NAN)
                                        })
                                        .collect();
                                    ((e + 1) as f64, mean_std(&values).0)
                                })
                                .collect();
                            Series { label: name.clone(), points }
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

    #[test]
    fn compare_figure_averages_seeds_over_the_common_epochs() {
        let record = |epoch: usize, auc: f64| EpochRecord {
            epoch,
            valid: BTreeMap::from([("ctr".to_string(), BTreeMap::from([("auc".to_string(), auc)]))]),
            monitor: auc,
            ..Default::default()
        };
        let runs = vec![(
            "mmoe".to_string(),
            vec![vec![record(1, 0.6), record(2, 0.7), record(3, 0.8)], vec![record(1, 0.8), record(2, 0.9)]],
        )];
        let figure = compare_figure(&runs, &[("ctr".into(), "auc".into())]);
        let PanelKind::Lines(series) = &figure.panels[0].kind else { panic!("lines") };
        assert_eq!(series[0].label, "mmoe");
        assert_eq!(series[0].points.len(), 2, "only the epochs both seeds reached");
        assert!((series[0].points[0].1 - 0.7).abs() < 1e-12 && (series[0].points[1].1 - 0.8).abs() < 1e-12);
    }

    #[test]
    fn mean_and_sample_std_by_hand() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 6.0]);
        assert_eq!(m, 3.0);
        // Σ(x − 3)² = 4 + 1 + 0 + 9 = 14; 14 / 3
        assert!((s - (14.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_std(&[0.5]), (0.5, 0.0));
    }

    #[test]
    fn delta_m_by_hand() {
        let task = |m: &str, v: f64| (m.to_string(), v);
        let single = BTreeMap::from([("a".to_string(), task("auc", 0.80)), ("b".to_string(), task("mse", 2.0))]);
        let mtl = BTreeMap::from([("a".to_string(), task("auc", 0.84)), ("b".to_string(), task("mse", 2.2))]);
        // a: +0.04/0.80 = +5 %; b: lower is better, −0.2/2.0 = −10 %; mean −2.5 %
        let d = delta_m(&mtl, &single).unwrap();
        assert!((d + 0.025).abs() < 1e-12, "{d}");
        let gains = task_gains(&mtl, &single).unwrap();
        assert!((gains["a"] - 0.05).abs() < 1e-12 && (gains["b"] + 0.1).abs() < 1e-12, "{gains:?}");
        assert_eq!(delta_m(&single, &single), Some(0.0));
    }

    #[test]
    fn markdown_table_and_baseline() {
        let result = |name: &str, model: &str, a: Vec<f64>| ConfigResult {
            name: name.into(),
            model: model.into(),
            balance: "fixed".into(),
            tasks: BTreeMap::from([("income".to_string(), ("auc".to_string(), a))]),
            extra: vec![],
            adversarial: vec![],
            delta_m: None,
        };
        let mut rs = vec![result("st", "single_task", vec![0.90, 0.92]), result("mmoe", "mmoe", vec![0.93, 0.95])];
        fill_delta_m(&mut rs);
        assert_eq!(rs[0].delta_m, Some(0.0));
        assert!((rs[1].delta_m.unwrap() - 0.03 / 0.91).abs() < 1e-12);
        let md = markdown(&rs, &[1, 2]);
        assert!(md.contains("| mmoe | mmoe | fixed | 0.9400 ± 0.0141 | +3.30 % |"), "{md}");
        // the per-task terms of Δm, the single-task row left out
        assert!(md.contains("| config | income |\n|---|---|\n| mmoe | +3.30 % |\n"), "{md}");
    }

    /// Δm leaves adversarial tasks out, refuses configs whose main tasks differ from the baseline's,
    /// and the table has a column for every config's tasks; undefined metrics print as such.
    #[test]
    fn delta_m_needs_matching_main_tasks_and_skips_adversarial_ones() {
        let result = |name: &str, model: &str, tasks: &[(&str, &str, f64)], adversarial: &[&str]| ConfigResult {
            name: name.into(),
            model: model.into(),
            balance: "fixed".into(),
            tasks: tasks.iter().map(|(t, m, v)| (t.to_string(), (m.to_string(), vec![*v]))).collect(),
            extra: vec![],
            adversarial: adversarial.iter().map(|a| a.to_string()).collect(),
            delta_m: None,
        };
        let mut rs = vec![
            result("st", "single_task", &[("a", "auc", 0.80), ("b", "auc", 0.90)], &[]),
            // the adversary's AUC falls from 0.8 to 0.5: "higher is better" would count −37.5 %
            result("adv", "mmoe", &[("a", "auc", 0.84), ("b", "auc", 0.90), ("sex", "auc", 0.5)], &["sex"]),
            result("funnel", "esmm", &[("a", "auc", 0.84), ("a_and_b", "auc", 0.97)], &[]),
            result("nan", "mmoe", &[("a", "auc", f64::NAN), ("b", "auc", 0.9)], &[]),
        ];
        fill_delta_m(&mut rs);
        assert!((rs[1].delta_m.unwrap() - 0.025).abs() < 1e-12, "{:?}", rs[1].delta_m);
        assert_eq!(rs[2].delta_m, None, "other tasks than the baseline's");
        assert_eq!(rs[3].delta_m, None, "an undefined metric");
        rs[1].extra.push(("a".into(), "gauc".into(), vec![0.7]));
        let md = markdown(&rs, &[1]);
        assert!(md.contains("a_and_b auc") && md.contains("sex auc (adversarial)"), "{md}");
        assert!(md.contains("| a auc | a gauc | b auc |"), "extra metrics sit beside their task: {md}");
        assert!(md.contains("| 0.8400 ± 0.0000 | 0.7000 ± 0.0000 |"), "{md}");
        assert!(md.contains("| nan | mmoe | fixed | undefined |"), "{md}");
        assert!(md.contains("Δm is left out"), "{md}");
    }
}
