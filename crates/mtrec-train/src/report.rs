//! `report.html`: one self-contained page (no network: styles inline, figures as inline SVG) per
//! run, comparison and study, to open in any browser or attach to a message.
//!
//! [`Report`] builds a page from headings, paragraphs, tables (its own, or the pipe tables of the
//! Markdown that `compare.md` and `trials.md` hold), figures and preformatted text. [`run_report`]
//! makes a run folder's page from its files: the summary, validation and test metrics, the
//! gradient diagnostics and gate utilisation, the learning curves, task weights, gradient cosines
//! and gate figures, and the resolved config. A small script, run when the page has loaded, marks
//! the `<body>` with what rendered (`data-rendered`: figures drawn with a size, tables) — what the
//! browser check of `.ci/run` reads.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use crate::{EpochRecord, Figure, Summary, TrainError};

/// HTML-escapes text.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'DejaVu Sans',sans-serif;margin:2em auto;max-width:1700px;\
color:#222;padding:0 1em}h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em;\
text-align:left}th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}figure{margin:.8em 0}\
figure svg{max-width:100%;height:auto}figcaption{color:#555;font-size:.9em}pre{background:#f6f6f6;padding:.8em;\
overflow:auto;font-size:.85em}";

/// Marks the page with what rendered: the number of figures and tables, and whether every figure
/// has a size (a browser that could not draw one gives it none).
const CHECK: &str = "window.addEventListener('load',function(){var s=document.querySelectorAll('figure svg'),\
t=document.querySelectorAll('table'),ok=true;for(var i=0;i<s.length;i++){var b=s[i].getBoundingClientRect();\
if(!(b.width>0&&b.height>0))ok=false;}document.body.setAttribute('data-rendered',JSON.stringify({figures:s.length,\
tables:t.length,ok:ok}));});";

/// A self-contained HTML page.
#[derive(Debug, Clone)]
pub struct Report {
    title: String,
    body: String,
}

impl Report {
    /// An empty page titled `title`.
    pub fn new(title: &str) -> Self {
        Self { title: title.to_string(), body: format!("<h1>{}</h1>\n", escape(title)) }
    }

    /// A section heading.
    pub fn heading(&mut self, text: &str) -> &mut Self {
        self.body += &format!("<h2>{}</h2>\n", escape(text));
        self
    }

    /// A paragraph of plain text.
    pub fn paragraph(&mut self, text: &str) -> &mut Self {
        self.body += &format!("<p>{}</p>\n", escape(text));
        self
    }

    /// A table: a header row and rows of cells (plain text).
    pub fn table(&mut self, header: &[String], rows: &[Vec<String>]) -> &mut Self {
        self.body += "<table>\n<tr>";
        header.iter().for_each(|h| self.body += &format!("<th>{}</th>", escape(h)));
        self.body += "</tr>\n";
        for row in rows {
            self.body += "<tr>";
            row.iter().for_each(|c| self.body += &format!("<td>{}</td>", escape(c)));
            self.body += "</tr>\n";
        }
        self.body += "</table>\n";
        self
    }

    /// Markdown as `compare.md` and `trials.md` write it: pipe tables become tables, every other
    /// non-empty line a paragraph (backticks and asterisks kept as text).
    pub fn markdown(&mut self, md: &str) -> &mut Self {
        let cells = |line: &str| -> Vec<String> {
            let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
            inner.split('|').map(|c| c.trim().to_string()).collect()
        };
        let lines: Vec<&str> = md.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i].trim();
            if line.starts_with('|') {
                let mut block = Vec::new();
                while i < lines.len() && lines[i].trim().starts_with('|') {
                    block.push(lines[i]);
                    i += 1;
                }
                let header = cells(block[0]);
                let separator =
                    |l: &str| cells(l).iter().all(|c| !c.is_empty() && c.chars().all(|ch| "-:".contains(ch)));
                let rows: Vec<Vec<String>> = block[1..].iter().filter(|l| !separator(l)).map(|l| cells(l)).collect();
                self.table(&header, &rows);
                continue;
            }
            if !line.is_empty() {
                self.paragraph(line);
            }
            i += 1;
        }
        self
    }

    /// A figure, inline, with a caption.
    pub fn figure(&mut self, caption: &str, figure: &Figure) -> Result<&mut Self, TrainError> {
        let svg = figure.to_svg()?;
        // the XML declaration has no place inside HTML
        let svg = svg
            .trim_start()
            .strip_prefix("<?xml")
            .map_or(svg.as_str(), |rest| rest.find("?>").map_or(rest, |end| &rest[end + 2..]));
        self.body += &format!("<figure>{}<figcaption>{}</figcaption></figure>\n", svg.trim(), escape(caption));
        Ok(self)
    }

    /// A table of every task's metrics of one split: a row a task, a column a metric name.
    pub fn metrics(&mut self, metrics: &BTreeMap<String, crate::TaskMetrics>) -> &mut Self {
        let (header, rows) = metric_rows(metrics);
        self.table(&header, &rows)
    }

    /// Preformatted text (a config, a log).
    pub fn code(&mut self, text: &str) -> &mut Self {
        self.body += &format!("<pre>{}</pre>\n", escape(text));
        self
    }

    /// The whole page.
    pub fn to_html(&self) -> String {
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n\
             <style>{STYLE}</style>\n</head>\n<body>\n{}<script>{CHECK}</script>\n</body>\n</html>\n",
            escape(&self.title),
            self.body
        )
    }

    /// Writes the page to `path`.
    pub fn write(&self, path: &Path) -> Result<(), TrainError> {
        std::fs::write(path, self.to_html()).map_err(|source| TrainError::Io { path: path.to_path_buf(), source })
    }
}

fn number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 { format!("{v:.0}") } else { format!("{v:.4}") }
}

/// Every task's metrics of one split as table rows: task, then each metric name's value.
fn metric_rows(metrics: &BTreeMap<String, crate::TaskMetrics>) -> (Vec<String>, Vec<Vec<String>>) {
    let mut names: Vec<String> = Vec::new();
    for m in metrics.values() {
        for k in m.keys() {
            if !names.contains(k) {
                names.push(k.clone());
            }
        }
    }
    let mut header = vec!["task".to_string()];
    header.extend(names.iter().cloned());
    let rows = metrics
        .iter()
        .map(|(task, m)| {
            let mut row = vec![task.clone()];
            row.extend(names.iter().map(|n| m.get(n).map_or("–".into(), |v| number(*v))));
            row
        })
        .collect();
    (header, rows)
}

/// A run's page from its records, summary, figures ([`crate::run_figures`]) and resolved config.
pub fn run_page(
    name: &str,
    records: &[EpochRecord],
    summary: &Summary,
    figures: &BTreeMap<String, Figure>,
    config: &str,
) -> Result<Report, TrainError> {
    let mut page = Report::new(&format!("mtrec run: {name}"));
    page.heading("Summary");
    let facts = [
        ("dataset", summary.dataset.clone()),
        ("architecture", summary.model.clone()),
        ("balancer", summary.balance.clone()),
        ("device", summary.device.clone()),
        ("seed", summary.seed.to_string()),
        ("parameters", summary.parameters.to_string()),
        ("selected epoch", summary.best_epoch.to_string()),
        (
            "epochs run",
            format!("{}{}", summary.epochs_run, if summary.stopped_early { " (stopped early)" } else { "" }),
        ),
        ("training samples/s", format!("{:.0}", summary.train_samples_per_sec)),
        ("wall seconds", format!("{:.1}", summary.wall_seconds)),
    ];
    let rows: Vec<Vec<String>> = facts.iter().map(|(k, v)| vec![k.to_string(), v.clone()]).collect();
    page.table(&["".into(), "value".into()], &rows);
    for (split, metrics) in
        [("Test metrics (the model selected on validation)", &summary.test), ("Validation metrics", &summary.valid)]
    {
        if metrics.is_empty() {
            continue;
        }
        page.heading(split).metrics(metrics);
    }
    for (title, conflict) in [
        ("Gradient conflict at the shared parameters", &summary.gradient_conflict),
        ("Gradient conflict on the text encoder's parameters", &summary.encoder_gradient_conflict),
    ] {
        if conflict.is_empty() {
            continue;
        }
        page.heading(title);
        page.paragraph("Per task pair over the run: the mean cosine of the two tasks' gradients, and the fraction of (measured) steps on which it was negative (the tasks pulled the parameters apart).");
        let rows: Vec<Vec<String>> = conflict
            .iter()
            .map(|(pair, c)| vec![pair.clone(), format!("{:.4}", c.mean_cosine), format!("{:.3}", c.conflict_fraction)])
            .collect();
        page.table(&["task pair".into(), "mean cosine".into(), "steps in conflict".into()], &rows);
    }
    if !summary.expert_utilisation.is_empty() {
        page.heading("Gate utilisation (validation, selected model)");
        let rows: Vec<Vec<String>> = summary
            .expert_utilisation
            .iter()
            .map(|(task, u)| {
                let weights: Vec<String> = u.mean_weight.iter().map(|w| format!("{w:.3}")).collect();
                vec![task.clone(), format!("{:.3}", u.mean_entropy), weights.join(" "), u.collapsed.to_string()]
            })
            .collect();
        page.table(
            &["task".into(), "gate entropy (nats)".into(), "mean weight per expert".into(), "collapsed".into()],
            &rows,
        );
    }
    if !summary.warnings.is_empty() {
        page.heading("Warnings");
        summary.warnings.iter().for_each(|w| {
            page.paragraph(w);
        });
    }
    let captions = [
        ("learning_curves", "Learning curves: training loss and the validation metric per task."),
        (
            "task_weights",
            "Task weights per epoch; gradient norms, cosines and conflicts for gradient balancers; the tasks' gradient cosine and norms on the text encoder (train.encoder_gradients_every).",
        ),
        ("gate_utilisation", "Mean gate weight per expert and task (validation, selected model)."),
    ];
    page.heading("Figures");
    for (key, caption) in captions {
        if let Some(f) = figures.get(key) {
            page.figure(caption, f)?;
        }
    }
    page.heading("Epochs");
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let losses: Vec<String> = r.train_loss.iter().map(|(t, l)| format!("{t} {l:.4}")).collect();
            let weights: Vec<String> = r.task_weights.iter().map(|(t, w)| format!("{t} {w:.3}")).collect();
            vec![
                r.epoch.to_string(),
                losses.join(", "),
                weights.join(", "),
                format!("{:.4}", r.monitor),
                if r.best { "best so far".into() } else { String::new() },
                format!("{:.1}", r.seconds),
            ]
        })
        .collect();
    let header = ["epoch", "training loss", "task weights", "valid monitor", "", "seconds"];
    page.table(&header.map(String::from), &rows);
    page.heading("Config");
    page.code(config);
    Ok(page)
}

/// Writes `report.html` for the run folder `dir` from its files; returns its path.
pub fn run_report(dir: &Path) -> Result<PathBuf, TrainError> {
    let summary = crate::read_summary(dir)?.ok_or_else(|| TrainError::Io {
        path: dir.join("summary.json"),
        source: std::io::ErrorKind::NotFound.into(),
    })?;
    let metric = crate::ExperimentConfig::from_file(&dir.join("config.toml"), &[])
        .map(|c| c.train.early_stopping.metric)
        .unwrap_or_else(|_| "auc".into());
    let records = crate::read_epochs(dir)?;
    let figures = crate::run_figures(&records, &metric, Some(&summary));
    write_run_report(dir, &records, &summary, &figures)
}

/// Writes `report.html` into the run folder `dir` from a run's records, summary and figures in
/// memory (the trainer's, which draws the figures once for their files and the page) and the
/// folder's `config.toml`; returns its path.
pub fn write_run_report(
    dir: &Path,
    records: &[EpochRecord],
    summary: &Summary,
    figures: &BTreeMap<String, Figure>,
) -> Result<PathBuf, TrainError> {
    let path = dir.join("config.toml");
    let config = std::fs::read_to_string(&path).map_err(|source| TrainError::Io { path, source })?;
    let page = run_page(&summary.name, records, summary, figures, &config)?;
    let path = dir.join("report.html");
    page.write(&path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Panel, PanelKind, Series};

    #[test]
    fn markdown_tables_become_tables_and_text_is_escaped() {
        let mut page = Report::new("a <b>");
        page.markdown(
            "Test metrics & more.\n\n| config | auc |\n|---|---|\n| mmoe | 0.9 ± 0.1 |\n| <x> | – |\n\nafter",
        );
        let html = page.to_html();
        assert!(html.contains("<title>a &lt;b&gt;</title>"), "{html}");
        assert!(html.contains("<p>Test metrics &amp; more.</p>"));
        assert!(html.contains("<tr><th>config</th><th>auc</th></tr>"));
        assert!(
            html.contains("<tr><td>mmoe</td><td>0.9 ± 0.1</td></tr>\n<tr><td>&lt;x&gt;</td><td>–</td></tr>"),
            "{html}"
        );
        assert!(!html.contains("<td>---</td>"), "the separator row is not a row");
        assert!(html.contains("<p>after</p>"));
        assert!(html.contains("data-rendered"), "the render check");
    }

    #[test]
    fn figures_are_inline_svg_without_an_xml_declaration() {
        let figure = Figure {
            panels: vec![Panel {
                title: "loss".into(),
                x_label: "epoch".into(),
                y_label: "loss".into(),
                kind: PanelKind::Lines(vec![Series { label: "a".into(), points: vec![(1.0, 2.0), (2.0, 1.0)] }]),
            }],
        };
        let mut page = Report::new("r");
        page.figure("the loss", &figure).unwrap();
        let html = page.to_html();
        assert!(html.contains("<figure><svg") && html.contains("</svg><figcaption>the loss</figcaption></figure>"));
        assert!(!html.contains("<?xml"));
    }
}
