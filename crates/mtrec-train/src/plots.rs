//! Figures as SVG (plotters), and as PNG too with the `png` feature: line panels (learning
//! curves, task weights, the synthetic study's loss curves) and grouped bars (gate utilisation),
//! side by side in one figure.
//!
//! [`plot_run`] draws a run folder's figures from its files (`metrics.jsonl`, `summary.json`,
//! `config.toml`), so `cargo xtask plot RUN_DIR` can redraw them at any time. Text is measured
//! (and, in PNGs, set) in the embedded DejaVu Sans (its licence is in `assets/`), so figures need
//! no system fonts. PNG is a feature because its image crates are a fiftieth of a cold build and
//! every browser, paper toolchain and the HTML report shows SVG.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Once,
};

use plotters::{coord::Shift, prelude::*, style::FontStyle};

use crate::{EpochRecord, ExperimentConfig, Summary, TrainError};

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const PANEL: (u32, u32) = (560, 400);
const COLUMNS: usize = 3;

/// One line of a panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// `(x, y)` points, in order; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
}

/// What a panel draws.
#[derive(Debug, Clone, PartialEq)]
pub enum PanelKind {
    /// Lines over a numeric x axis.
    Lines(Vec<Series>),
    /// Points (a marker each, joined by a thin line within a series) over a numeric x axis: a
    /// scatter, e.g. a trade-off front.
    Points(Vec<Series>),
    /// Points alone (a marker each, nothing joined): a scatter of unordered observations, e.g. a
    /// study's objective against a parameter.
    Scatter(Vec<Series>),
    /// Grouped bars: `groups[g] = (label, values)`, one bar per value at x = 0, 1, … (the
    /// `x` categories), one colour per group.
    Bars {
        /// The x categories' names (for the axis label).
        categories: Vec<String>,
        /// One group of bars per legend entry.
        groups: Vec<(String, Vec<f64>)>,
    },
}

/// One chart of a figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// Caption.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// The content.
    pub kind: PanelKind,
}

/// Panels side by side (three a row).
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// The panels, left to right, then top to bottom.
    pub panels: Vec<Panel>,
}

fn plot_error(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Io { path: path.to_path_buf(), source: std::io::Error::other(e.to_string()) }
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // the font is embedded and known to parse; if it did not, text would be left out
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

impl Figure {
    fn size(&self) -> (u32, u32) {
        let n = self.panels.len().max(1);
        let (cols, rows) = (n.min(COLUMNS), n.div_ceil(COLUMNS));
        (PANEL.0 * cols as u32, PANEL.1 * rows as u32)
    }

    /// The figure as an SVG document (what [`Self::save`] writes), for pages that inline it.
    pub fn to_svg(&self) -> Result<String, TrainError> {
        register_font();
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, self.size()).into_drawing_area();
            let fail = |e: &dyn std::fmt::Display| TrainError::Config(format!("drawing a figure: {e}"));
            self.draw(&root).map_err(|e| fail(&e))?;
            root.present().map_err(|e| fail(&e))?;
        }
        Ok(svg)
    }

    /// Writes `<stem>.svg` (and `<stem>.png` with the `png` feature); returns their paths.
    pub fn save(&self, stem: &Path) -> Result<Vec<PathBuf>, TrainError> {
        register_font();
        let svg = stem.with_extension("svg");
        {
            let root = SVGBackend::new(&svg, self.size()).into_drawing_area();
            self.draw(&root).map_err(|e| plot_error(&svg, e))?;
            root.present().map_err(|e| plot_error(&svg, e))?;
        }
        #[allow(unused_mut)] // only the `png` feature adds a file
        let mut written = vec![svg];
        #[cfg(feature = "png")]
        {
            let png = stem.with_extension("png");
            {
                let root = BitMapBackend::new(&png, self.size()).into_drawing_area();
                self.draw(&root).map_err(|e| plot_error(&png, e))?;
                root.present().map_err(|e| plot_error(&png, e))?;
            }
            written.push(png);
        }
        Ok(written)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), Box<dyn std::error::Error>>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let n = self.panels.len().max(1);
        let areas = root.split_evenly((n.div_ceil(COLUMNS), n.min(COLUMNS)));
        for (panel, area) in self.panels.iter().zip(areas) {
            match &panel.kind {
                PanelKind::Lines(series) => draw_lines(&area, panel, series, Marks::Line)?,
                PanelKind::Points(series) => draw_lines(&area, panel, series, Marks::JoinedPoints)?,
                PanelKind::Scatter(series) => draw_lines(&area, panel, series, Marks::Points)?,
                PanelKind::Bars { categories, groups } => draw_bars(&area, panel, categories, groups)?,
            }
        }
        Ok(())
    }
}

/// `[lo, hi]` padded by 5 % (a flat range gets ±1 % of its value, or ±1).
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    if span <= 0.0 {
        let pad = if lo == 0.0 { 1.0 } else { 0.01 * lo.abs() };
        return (lo - pad, hi + pad);
    }
    (lo - 0.05 * span, hi + 0.05 * span)
}

/// How a series is drawn.
#[derive(Clone, Copy, PartialEq)]
enum Marks {
    Line,
    JoinedPoints,
    Points,
}

fn draw_lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    series: &[Series],
    marks: Marks,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let markers = marks != Marks::Line;
    let finite: Vec<(f64, f64)> =
        series.iter().flat_map(|s| s.points.iter().copied()).filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    let (x0, x1) = finite.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = finite.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let ((x0, x1), (y0, y1)) = (padded(x0, x1), padded(y0, y1));
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|x: &f64| match x.fract() {
            0.0 => format!("{x:.0}"),
            _ if markers => format!("{x:.3}"),
            _ => format!("{x:.1}"),
        })
        .x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .label_style(("sans-serif", 13))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> =
            s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
        if markers {
            if marks == Marks::JoinedPoints {
                chart.draw_series(LineSeries::new(points.clone(), colour.stroke_width(1)))?;
            }
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 5, colour.filled())))?
                .label(s.label.as_str())
                .legend(move |(x, y)| Circle::new((x + 9, y), 5, colour.filled()));
            continue;
        }
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
            .label(s.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
    }
    if !series.is_empty() {
        // the legend goes to the corner the curves' ends leave free
        let ends: Vec<f64> =
            series.iter().filter_map(|s| s.points.iter().rev().find(|p| p.1.is_finite())).map(|p| p.1).collect();
        let high = !ends.is_empty() && ends.iter().sum::<f64>() / ends.len() as f64 > (y0 + y1) / 2.0;
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 13))
            .position(if high { SeriesLabelPosition::LowerRight } else { SeriesLabelPosition::UpperRight })
            .draw()?;
    }
    Ok(())
}

fn draw_bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    categories: &[String],
    groups: &[(String, Vec<f64>)],
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let n = categories.len().max(1) as f64;
    let top = groups.iter().flat_map(|(_, v)| v.iter().copied()).filter(|v| v.is_finite()).fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.5..n - 0.5, 0.0..(top * 1.1).max(1e-9))?;
    let names = categories.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(categories.len().max(1))
        .x_label_formatter(&move |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .label_style(("sans-serif", 13))
        .draw()?;
    let width = 0.8 / groups.len().max(1) as f64;
    for (g, (label, values)) in groups.iter().enumerate() {
        let colour = Palette99::pick(g).to_rgba();
        let left = |i: usize| i as f64 - 0.4 + g as f64 * width;
        chart
            .draw_series(
                values
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(i, &v)| Rectangle::new([(left(i), 0.0), (left(i) + width, v)], colour.filled())),
            )?
            .label(label.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
    }
    if !groups.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 13))
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    Ok(())
}

/// Reads a run folder's `metrics.jsonl`.
pub fn read_epochs(dir: &Path) -> Result<Vec<EpochRecord>, TrainError> {
    let path = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|source| TrainError::Io { path: path.clone(), source })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| TrainError::Io {
                path: path.clone(),
                source: std::io::Error::other(format!("line {}: {e}", i + 1)),
            })
        })
        .collect()
}

/// Losses spanning more than a factor of 20 are drawn as log10 (the late epochs would otherwise
/// be a flat line at the bottom); returns the series and the y label.
fn loss_scale(series: Vec<Series>, label: &str) -> (Vec<Series>, String) {
    let values = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::INFINITY, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    if lo > 0.0 && hi / lo > 20.0 {
        let logged = series
            .into_iter()
            .map(|s| Series { points: s.points.into_iter().map(|(x, y)| (x, y.log10())).collect(), ..s })
            .collect();
        (logged, format!("log10 {label}"))
    } else {
        (series, label.to_string())
    }
}

/// One series per task from each record's per-task values.
fn per_task(records: &[EpochRecord], value: impl Fn(&EpochRecord, &str) -> Option<f64>) -> Vec<Series> {
    let tasks: Vec<String> = records.first().map(|r| r.train_loss.keys().cloned().collect()).unwrap_or_default();
    tasks
        .iter()
        .map(|task| Series {
            label: task.clone(),
            points: records.iter().filter_map(|r| value(r, task).map(|v| (r.epoch as f64, v))).collect(),
        })
        .collect()
}

/// The figures of one run, from its records, its early-stopping metric and its summary (if any).
pub fn run_figures(records: &[EpochRecord], metric: &str, summary: Option<&Summary>) -> BTreeMap<String, Figure> {
    let mut figures = BTreeMap::new();
    let lines = |title: &str, y: &str, series| Panel {
        title: title.into(),
        x_label: "epoch".into(),
        y_label: y.into(),
        kind: PanelKind::Lines(series),
    };
    let (losses, loss_label) = loss_scale(per_task(records, |r, t| r.train_loss.get(t).copied()), "mean training loss");
    figures.insert(
        "learning_curves".to_string(),
        Figure {
            panels: vec![
                lines("training loss", &loss_label, losses),
                lines(
                    &format!("validation {metric}"),
                    metric,
                    per_task(records, |r, t| r.valid.get(t).and_then(|m| m.get(metric)).copied()),
                ),
            ],
        },
    );
    let mut weights = vec![lines("task weights", "weight", per_task(records, |r, t| r.task_weights.get(t).copied()))];
    if records.iter().any(|r| r.task_gradient_norms.is_some()) {
        weights.push(lines(
            "task gradient norms",
            "mean gradient norm",
            per_task(records, |r, t| r.task_gradient_norms.as_ref().and_then(|g| g.get(t)).copied()),
        ));
    }
    // each task pair's mean cosine, and its share of steps in conflict, per epoch
    let per_pair = |value: &dyn Fn(&EpochRecord) -> Option<&BTreeMap<String, f64>>| -> Vec<Series> {
        let pairs: Vec<String> =
            records.iter().find_map(value).map(|c| c.keys().cloned().collect()).unwrap_or_default();
        pairs
            .iter()
            .map(|pair| Series {
                label: pair.clone(),
                points: records
                    .iter()
                    .filter_map(|r| value(r).and_then(|c| c.get(pair)).map(|v| (r.epoch as f64, *v)))
                    .collect(),
            })
            .collect()
    };
    if records.iter().any(|r| r.task_gradient_cosines.is_some()) {
        weights.push(lines(
            "gradient cosine at the shared parameters",
            "mean cosine",
            per_pair(&|r| r.task_gradient_cosines.as_ref()),
        ));
        if records.iter().any(|r| r.task_gradient_conflicts.is_some()) {
            weights.push(lines(
                "steps in conflict (cosine < 0)",
                "fraction of steps",
                per_pair(&|r| r.task_gradient_conflicts.as_ref()),
            ));
        }
    }
    if records.iter().any(|r| r.encoder_gradient_cosines.is_some()) {
        // `train.encoder_gradients_every`: the same on the trainable text encoder's parameters
        weights.push(lines(
            "gradient cosine on the text encoder",
            "mean cosine",
            per_pair(&|r| r.encoder_gradient_cosines.as_ref()),
        ));
        weights.push(lines(
            "task gradient norms on the text encoder",
            "mean gradient norm",
            per_task(records, |r, t| r.encoder_gradient_norms.as_ref().and_then(|g| g.get(t)).copied()),
        ));
    }
    figures.insert("task_weights".to_string(), Figure { panels: weights });
    if let Some(summary) = summary.filter(|s| !s.expert_utilisation.is_empty()) {
        let experts = summary.expert_utilisation.values().map(|u| u.mean_weight.len()).max().unwrap_or(0);
        figures.insert(
            "gate_utilisation".to_string(),
            Figure {
                panels: vec![Panel {
                    title: "gate utilisation (validation, selected model)".into(),
                    x_label: "expert".into(),
                    y_label: "mean gate weight".into(),
                    kind: PanelKind::Bars {
                        categories: (0..experts).map(|e| e.to_string()).collect(),
                        groups: summary
                            .expert_utilisation
                            .iter()
                            .map(|(task, u)| (task.clone(), u.mean_weight.clone()))
                            .collect(),
                    },
                }],
            },
        );
    }
    figures
}

/// Draws a run folder's figures (`learning_curves`, `task_weights`, and `gate_utilisation` for
/// gated models) as SVG and PNG into the folder; returns the files written.
pub fn plot_run(dir: &Path) -> Result<Vec<PathBuf>, TrainError> {
    let records = read_epochs(dir)?;
    let config = ExperimentConfig::from_file(&dir.join("config.toml"), &[])?;
    let summary = crate::read_summary(dir)?; // an interrupted run has none yet
    save_run_figures(dir, &records, &config.train.early_stopping.metric, summary.as_ref())
}

/// Draws [`run_figures`] into the run folder `dir`; returns the files written.
pub fn save_run_figures(
    dir: &Path,
    records: &[EpochRecord],
    metric: &str,
    summary: Option<&Summary>,
) -> Result<Vec<PathBuf>, TrainError> {
    save_figures(dir, &run_figures(records, metric, summary))
}

/// Writes each figure as `dir/<name>.svg` (and `.png` with the `png` feature); returns the files.
pub fn save_figures(dir: &Path, figures: &BTreeMap<String, Figure>) -> Result<Vec<PathBuf>, TrainError> {
    let mut written = Vec::new();
    for (name, figure) in figures {
        written.extend(figure.save(&dir.join(name))?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize, loss: [f64; 2], weights: [f64; 2]) -> EpochRecord {
        let metrics = |v: f64| crate::TaskMetrics::from([("auc".to_string(), v)]);
        EpochRecord {
            epoch,
            train_loss: BTreeMap::from([("ctr".into(), loss[0]), ("cvr".into(), loss[1])]),
            valid: BTreeMap::from([("ctr".into(), metrics(0.6 + 0.01 * epoch as f64)), ("cvr".into(), metrics(0.7))]),
            task_weights: BTreeMap::from([("ctr".into(), weights[0]), ("cvr".into(), weights[1])]),
            ..Default::default()
        }
    }

    /// The figures hold each task's values in epoch order.
    #[test]
    fn run_figures_hold_the_records() {
        let records = vec![record(1, [0.9, 0.5], [1.2, 0.8]), record(2, [0.7, 0.4], [1.1, 0.9])];
        let figures = run_figures(&records, "auc", None);
        assert_eq!(figures.keys().collect::<Vec<_>>(), ["learning_curves", "task_weights"]);
        let PanelKind::Lines(loss) = &figures["learning_curves"].panels[0].kind else { panic!("lines") };
        assert_eq!(loss[0], Series { label: "ctr".into(), points: vec![(1.0, 0.9), (2.0, 0.7)] });
        let PanelKind::Lines(valid) = &figures["learning_curves"].panels[1].kind else { panic!("lines") };
        assert_eq!(valid[0].points, vec![(1.0, 0.61), (2.0, 0.62)]);
        assert_eq!(figures["learning_curves"].panels[0].y_label, "mean training loss");
        let PanelKind::Lines(w) = &figures["task_weights"].panels[0].kind else { panic!("lines") };
        assert_eq!(w[1].points, vec![(1.0, 0.8), (2.0, 0.9)]);
        assert_eq!(figures["task_weights"].panels.len(), 1, "no gradient-norm panel without norms");
        // the encoder's task-gradient cosines and norms get panels of their own
        let mut measured = records.clone();
        measured[1].encoder_gradient_cosines = Some(BTreeMap::from([("ctr~cvr".to_string(), 0.25)]));
        measured[1].encoder_gradient_norms = Some(BTreeMap::from([("ctr".to_string(), 2.0), ("cvr".into(), 4.0)]));
        let panels = &run_figures(&measured, "auc", None)["task_weights"].panels;
        assert_eq!(panels.len(), 3);
        let PanelKind::Lines(cosine) = &panels[1].kind else { panic!("lines") };
        assert_eq!(cosine, &[Series { label: "ctr~cvr".into(), points: vec![(2.0, 0.25)] }]);
        let PanelKind::Lines(norms) = &panels[2].kind else { panic!("lines") };
        assert_eq!(norms[1].points, vec![(2.0, 4.0)]);
        // a loss falling by more than 20× is drawn as log10
        let falling = vec![record(1, [5.0, 0.5], [1.0, 1.0]), record(2, [0.1, 0.05], [1.0, 1.0])];
        let panel = &run_figures(&falling, "auc", None)["learning_curves"].panels[0];
        assert_eq!(panel.y_label, "log10 mean training loss");
        let PanelKind::Lines(loss) = &panel.kind else { panic!("lines") };
        assert_eq!(loss[0].points, vec![(1.0, 5f64.log10()), (2.0, 0.1f64.log10())]);
    }

    /// SVG: one polyline per series with one vertex per point, the legend labels, the titles; with
    /// the `png` feature a PNG of the figure's size beside it, else nothing else.
    #[test]
    fn saves_svg_and_png() {
        let figure = Figure {
            panels: vec![
                Panel {
                    title: "loss curves".into(),
                    x_label: "epoch".into(),
                    y_label: "loss".into(),
                    kind: PanelKind::Lines(vec![
                        Series { label: "alpha".into(), points: vec![(1.0, 3.0), (2.0, 2.0), (3.0, 1.5)] },
                        Series { label: "beta".into(), points: vec![(1.0, 2.0), (2.0, f64::NAN), (3.0, 1.0)] },
                    ]),
                },
                Panel {
                    title: "gates".into(),
                    x_label: "expert".into(),
                    y_label: "weight".into(),
                    kind: PanelKind::Bars {
                        categories: vec!["0".into(), "1".into()],
                        groups: vec![("gamma".into(), vec![0.25, 0.75])],
                    },
                },
            ],
        };
        let dir = tempfile::tempdir().unwrap();
        let files = figure.save(&dir.path().join("fig")).unwrap();
        let svg = std::fs::read_to_string(&files[0]).unwrap();
        for text in ["loss curves", "gates", "alpha", "beta", "gamma", "epoch", "expert"] {
            assert!(svg.contains(text), "the SVG lacks {text:?}");
        }
        let vertices: Vec<usize> = svg
            .match_indices("<polyline")
            .map(|(i, _)| {
                let points = &svg[i..][svg[i..].find("points=\"").unwrap() + 8..];
                points[..points.find('"').unwrap()].split_whitespace().count()
            })
            .collect();
        // alpha's three points; beta's NaN left out (a legend sample is two points)
        assert_eq!(vertices.iter().filter(|&&v| v == 3).count(), 1, "polylines: {vertices:?}");
        assert!(vertices.iter().all(|&v| v <= 3), "polylines: {vertices:?}");
        if cfg!(not(feature = "png")) {
            assert_eq!(files.len(), 1);
            return;
        }
        let png = std::fs::read(&files[1]).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let (w, h) =
            (u32::from_be_bytes(png[16..20].try_into().unwrap()), u32::from_be_bytes(png[20..24].try_into().unwrap()));
        assert_eq!((w, h), (2 * PANEL.0, PANEL.1));
    }
}
