//! What a study shows: a table of every trial (its point, its objective at each budget, pruned or
//! failed) as Markdown and CSV, and the objective against each parameter as a figure.

use std::collections::BTreeMap;

use mtrec_train::{Figure, Panel, PanelKind, Series};

use super::{Distribution, SearchSpace, TrialRecord};

/// One trial's row: its point and its value at each budget it reached.
struct Row<'a> {
    trial: usize,
    point: &'a [(String, String)],
    values: BTreeMap<usize, Option<f64>>,
    pruned: bool,
    error: Option<&'a str>,
}

fn rows(records: &[TrialRecord]) -> Vec<Row<'_>> {
    let mut by_trial: BTreeMap<usize, Row<'_>> = BTreeMap::new();
    for r in records {
        let row = by_trial.entry(r.trial).or_insert_with(|| Row {
            trial: r.trial,
            point: &r.point,
            values: BTreeMap::new(),
            pruned: false,
            error: None,
        });
        row.values.insert(r.epochs, r.value);
        row.pruned |= r.pruned;
        if r.error.is_some() {
            row.error = r.error.as_deref();
        }
    }
    by_trial.into_values().collect()
}

fn budgets(records: &[TrialRecord]) -> Vec<usize> {
    let mut b: Vec<usize> = records.iter().map(|r| r.epochs).collect();
    b.sort_unstable();
    b.dedup();
    b
}

/// A logged value as the table shows it: floats to 4 significant digits (the CSV keeps them whole).
fn short(text: &str) -> String {
    match text.parse::<f64>() {
        Ok(v) if text.contains('.') && v != 0.0 && v.is_finite() => {
            let scale = 10f64.powi(3 - v.abs().log10().floor() as i32);
            format!("{}", (v * scale).round() / scale)
        }
        _ => text.to_string(),
    }
}

/// The trials as a Markdown table: number, point, the objective after each budget, status; the
/// best trial (`best`) marked.
pub fn trials_markdown(space: &SearchSpace, records: &[TrialRecord], best: Option<usize>) -> String {
    let budgets = budgets(records);
    let objective = format!("{} {}", space.objective.task, space.objective.metric);
    let mut out =
        format!("Objective: validation {objective} ({}).\n\n", if space.objective.maximise() { "max" } else { "min" });
    out += "| trial |";
    for p in &space.params {
        out += &format!(" {} |", p.key);
    }
    for b in &budgets {
        out += &format!(" {b} ep. |");
    }
    out += " status |\n|---|";
    out += &"---|".repeat(space.params.len() + budgets.len() + 1);
    out += "\n";
    for row in rows(records) {
        out += &format!("| {}{} |", row.trial, if Some(row.trial) == best { " (best)" } else { "" });
        for (_, v) in row.point {
            out += &format!(" {} |", short(v));
        }
        for b in &budgets {
            out += &match row.values.get(b) {
                Some(Some(v)) => format!(" {v:.4} |"),
                Some(None) => " failed |".into(),
                None => " |".into(),
            };
        }
        let status = match (row.error, row.pruned) {
            (Some(e), _) => format!("failed: {}", e.lines().next().unwrap_or("").replace('|', "/")),
            (None, true) => "pruned".into(),
            _ => String::new(),
        };
        out += &format!(" {status} |\n");
    }
    out
}

/// The trials as CSV: `trial`, each key, `value@<epochs>` per budget, `pruned`, `error`.
pub fn trials_csv(space: &SearchSpace, records: &[TrialRecord]) -> String {
    let budgets = budgets(records);
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut header = vec!["trial".to_string()];
    header.extend(space.params.iter().map(|p| quote(&p.key)));
    header.extend(budgets.iter().map(|b| format!("value@{b}")));
    header.extend(["pruned".to_string(), "error".to_string()]);
    let mut out = header.join(",") + "\n";
    for row in rows(records) {
        let mut cells = vec![row.trial.to_string()];
        cells.extend(row.point.iter().map(|(_, v)| quote(v)));
        cells.extend(
            budgets.iter().map(|b| row.values.get(b).copied().flatten().map_or(String::new(), |v| v.to_string())),
        );
        cells.push(row.pruned.to_string());
        cells.push(row.error.map_or(String::new(), quote));
        out += &(cells.join(",") + "\n");
    }
    out
}

/// Where a logged value (TOML text) sits on its parameter's x axis: log₁₀ for log-scaled keys, a
/// choice's index, the number itself otherwise (NaN when it does not read).
fn axis_value(distribution: &Distribution, text: &str) -> f64 {
    match distribution {
        Distribution::LogUniform { .. } | Distribution::Int { log: true, .. } => {
            text.parse::<f64>().map_or(f64::NAN, f64::log10)
        }
        Distribution::Choice(values) => {
            values.iter().position(|v| v.to_string() == text).map_or(f64::NAN, |i| i as f64)
        }
        _ => text.parse::<f64>().unwrap_or(f64::NAN),
    }
}

/// The objective at each trial's largest budget against each parameter: one scatter panel per
/// key, a series per budget (log₁₀ x for log-uniform and log-int keys; a choice's index, the
/// choices named in the axis label).
pub fn trials_figure(space: &SearchSpace, records: &[TrialRecord]) -> Figure {
    let rows = rows(records);
    let panels = space
        .params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let x_label = match &p.distribution {
                Distribution::LogUniform { .. } | Distribution::Int { log: true, .. } => format!("log10 {}", p.key),
                Distribution::Choice(values) => {
                    let names: Vec<String> = values.iter().map(toml::Value::to_string).collect();
                    format!("{} (0..: {})", p.key, names.join(", "))
                }
                _ => p.key.clone(),
            };
            let mut by_budget: BTreeMap<usize, Vec<(f64, f64)>> = BTreeMap::new();
            for row in &rows {
                let Some((&epochs, Some(v))) = row.values.iter().rev().find(|(_, v)| v.is_some()) else { continue };
                by_budget.entry(epochs).or_default().push((axis_value(&p.distribution, &row.point[i].1), *v));
            }
            let series = by_budget
                .into_iter()
                .map(|(b, points)| Series { label: format!("stopped after {b} epochs"), points })
                .collect();
            Panel {
                title: format!("objective vs {}", p.key),
                x_label,
                y_label: format!("valid {} {}", space.objective.task, space.objective.metric),
                kind: PanelKind::Scatter(series),
            }
        })
        .collect();
    Figure { panels }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tune::{Objective, Param};

    fn space() -> SearchSpace {
        SearchSpace {
            params: vec![
                Param { key: "train.lr".into(), distribution: Distribution::LogUniform { low: 1e-4, high: 1e-2 } },
                Param {
                    key: "model.expert_hidden".into(),
                    distribution: Distribution::Choice(vec![
                        toml::Value::Array(vec![16.into()]),
                        toml::Value::Array(vec![32.into()]),
                    ]),
                },
            ],
            objective: Objective { metric: "auc".into(), task: "mean".into() },
        }
    }

    fn record(trial: usize, lr: &str, hidden: &str, epochs: usize, value: Option<f64>) -> TrialRecord {
        TrialRecord {
            trial,
            point: vec![("train.lr".into(), lr.into()), ("model.expert_hidden".into(), hidden.into())],
            epochs,
            value,
            error: value.is_none().then(|| "diverged | at epoch 2".to_string()),
            pruned: false,
        }
    }

    #[test]
    fn tables_and_figure_show_every_trial_and_budget() {
        let records = vec![
            record(0, "0.001", "[16]", 1, Some(0.9)),
            record(1, "0.01", "[32]", 1, Some(0.8)),
            record(2, "0.0001", "[16]", 1, None),
            record(0, "0.001", "[16]", 3, Some(0.95)),
        ];
        let md = trials_markdown(&space(), &records, Some(0));
        assert!(md.contains("| trial | train.lr | model.expert_hidden | 1 ep. | 3 ep. | status |"), "{md}");
        assert!(md.contains("| 0 (best) | 0.001 | [16] | 0.9000 | 0.9500 |  |"), "{md}");
        assert_eq!(
            (short("0.0037710251107640823"), short("0.05293588"), short("16"), short("0.0")),
            ("0.003771".into(), "0.05294".into(), "16".into(), "0.0".into())
        );
        assert!(md.contains("| 1 | 0.01 | [32] | 0.8000 | |  |"), "{md}");
        assert!(md.contains("| 2 | 0.0001 | [16] | failed | | failed: diverged / at epoch 2 |"), "{md}");
        let csv = trials_csv(&space(), &records);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "trial,\"train.lr\",\"model.expert_hidden\",value@1,value@3,pruned,error");
        assert_eq!(lines[1], "0,\"0.001\",\"[16]\",0.9,0.95,false,");
        assert_eq!(lines[2], "1,\"0.01\",\"[32]\",0.8,,false,");
        let figure = trials_figure(&space(), &records);
        assert_eq!(figure.panels.len(), 2);
        let PanelKind::Scatter(series) = &figure.panels[0].kind else { panic!() };
        // trial 0 at its largest budget (3 epochs), trial 1 at 1; log10 of the learning rates
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].points, vec![(-2.0, 0.8)]);
        assert!((series[1].points[0].0 + 3.0).abs() < 1e-12 && series[1].points[0].1 == 0.95);
        let PanelKind::Scatter(series) = &figure.panels[1].kind else { panic!() };
        assert_eq!((series[0].points[0].0, series[1].points[0].0), (1.0, 0.0), "choices by index");
        assert!(figure.panels[1].x_label.contains("[16], [32]"));
    }
}
