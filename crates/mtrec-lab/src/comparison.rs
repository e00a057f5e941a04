//! Running a comparison: every config with every seed, through a [`Registry`] (so a user's own
//! architectures and balancers compare with the built-ins), into the [`ConfigResult`]s that
//! [`markdown`](crate::markdown) tabulates. `cargo xtask compare` is this plus file writing; a
//! researcher's program calls [`run_comparison`] with its own registry.

use std::path::{Path, PathBuf};

use mtrec_data::{MtlDataset, Preprocessing, TaskKind};
use mtrec_model::MultiTaskModule;
use mtrec_train::{
    DataConfig, EpochRecord, ExperimentConfig, Figure, Registry, Report, RunDirectory, Summary, TrainError, Trainer,
    read_epochs,
};
use serde::Serialize;

use crate::{ConfigResult, compare_figure, fill_delta_m, markdown, trade_off_figure};

/// How a comparison runs.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Seeds per config: the config's seed, +1, +2, …
    pub seeds: u64,
    /// Output folder: runs go to `<out>/<config name>/seed<k>`.
    pub out: PathBuf,
    /// Read a run that its folder already holds finished (`summary.json` written, `config.toml`
    /// the same as this run's) instead of training it again.
    pub reuse: bool,
    /// Print a line per run and each run's test metrics.
    pub verbose: bool,
}

impl CompareOptions {
    /// `seeds` seeds, runs under `out`, nothing reused, verbose.
    pub fn new(seeds: u64, out: impl Into<PathBuf>) -> Self {
        Self { seeds, out: out.into(), reuse: false, verbose: true }
    }
}

/// What a comparison measured.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The seeds of the first config (every config runs as many, from its own seed).
    pub seeds: Vec<u64>,
    /// Per config: each task's test metric per seed, the extra metrics, Δm.
    pub results: Vec<ConfigResult>,
    /// Per config: each seed's epoch records (the learning curves).
    #[serde(skip)]
    pub curves: Vec<(String, Vec<Vec<EpochRecord>>)>,
    /// The `(task, metric)` panels of the curves figure.
    #[serde(skip)]
    pub panels: Vec<(String, String)>,
}

impl Comparison {
    /// The table: config × task metric, mean ± std over seeds, and Δm.
    pub fn markdown(&self) -> String {
        markdown(&self.results, &self.seeds)
    }

    /// Writes `compare.md`, `compare.json`, the curves (`compare.svg`, and `.png` with
    /// mtrec-train's `png` feature), for runs with adversarial tasks the trade-off figure
    /// (`trade_off.svg`/`.png`), and `report.html` (all of it on one page) into `out`.
    pub fn write(&self, out: &Path) -> Result<(), TrainError> {
        let io = |path: PathBuf| move |source| TrainError::Io { path, source };
        std::fs::create_dir_all(out).map_err(io(out.to_path_buf()))?;
        std::fs::write(out.join("compare.md"), self.markdown()).map_err(io(out.join("compare.md")))?;
        let json = serde_json::to_string_pretty(self).expect("a comparison serialises");
        std::fs::write(out.join("compare.json"), json).map_err(io(out.join("compare.json")))?;
        let curves = compare_figure(&self.curves, &self.panels);
        curves.save(&out.join("compare"))?;
        let trade_off = trade_off_figure(&self.results);
        if let Some(trade_off) = &trade_off {
            trade_off.save(&out.join("trade_off"))?;
        }
        self.report(&curves, trade_off.as_ref())?.write(&out.join("report.html"))
    }

    /// `report.html`: the table with ± and Δm, the per-task gains over single-task, the mean
    /// validation curves, the trade-off figure, and where each run's own page is.
    fn report(&self, curves: &Figure, trade_off: Option<&Figure>) -> Result<Report, TrainError> {
        let mut page = Report::new("mtrec comparison");
        page.heading("Test metrics").markdown(&self.markdown());
        page.heading("Validation curves");
        page.figure("Each config's validation metric per task, mean over seeds.", curves)?;
        if let Some(t) = trade_off {
            page.figure("The main task against the adversarial probes' AUC.", t)?;
        }
        page.heading("Runs");
        page.paragraph("Each run's own page is <out>/<config>/seed<k>/report.html.");
        let rows: Vec<Vec<String>> =
            self.results.iter().map(|r| vec![r.name.clone(), r.model.clone(), r.balance.clone()]).collect();
        page.table(&["config".into(), "architecture".into(), "balancer".into()], &rows);
        Ok(page)
    }
}

/// The folder of the run of the config named `name` at `seed` in a comparison written to `out`:
/// `<out>/<name>/seed<seed>`.
pub fn run_folder(out: &Path, name: &str, seed: u64) -> PathBuf {
    out.join(name).join(format!("seed{seed}"))
}

/// The summary and epochs of the finished run in `dir`, when its `config.toml` is `config`'s.
pub fn finished_run(dir: &Path, config: &ExperimentConfig) -> Result<Option<(Summary, Vec<EpochRecord>)>, TrainError> {
    let recorded = dir.join("config.toml");
    // the recorded config read as `eval` reads it (its notes are comments), compared resolved
    let same = recorded.is_file()
        && ExperimentConfig::from_file(&recorded, &[]).is_ok_and(|c| c.to_toml() == config.to_toml());
    if !same {
        return Ok(None);
    }
    match mtrec_train::read_summary(dir)? {
        Some(summary) => Ok(Some((summary, read_epochs(dir)?))),
        None => Ok(None),
    }
}

/// Trains every config with every seed (`options.seeds`, from each config's seed) and collects
/// each task's test metric (AUC of binary tasks, MSE of regression, accuracy of multiclass), the
/// extra metrics (GAUC, CVR AUC, MAE, macro-AUC, adversarial probes, fairness gaps) and Δm against
/// a single-task config among them. Configs that read the same data share one load of it.
pub fn run_comparison<C: MultiTaskModule>(
    configs: &[ExperimentConfig],
    options: &CompareOptions,
    registry: &Registry<C>,
) -> Result<Comparison, TrainError> {
    for (i, c) in configs.iter().enumerate() {
        if configs[..i].iter().any(|d| d.name == c.name) {
            return Err(TrainError::Config(format!(
                "two configs are named {:?}: give each its own `name` (runs go to <out>/<name>)",
                c.name
            )));
        }
    }
    if options.seeds == 0 {
        return Err(TrainError::Config("a comparison needs at least one seed".into()));
    }
    let say = |line: String| {
        if options.verbose {
            println!("{line}");
        }
    };
    let total = configs.len() as u64 * options.seeds;
    let mut datasets: Vec<(DataConfig, MtlDataset, Option<Preprocessing>)> = Vec::new();
    let mut comparison = Comparison { seeds: Vec::new(), results: Vec::new(), curves: Vec::new(), panels: Vec::new() };
    for (c, base) in configs.iter().enumerate() {
        let i = match datasets.iter().position(|(d, _, _)| *d == base.data) {
            Some(i) => i,
            None => {
                let (dataset, preprocessing) = base.data.load_with(None)?;
                datasets.push((base.data.clone(), dataset, preprocessing));
                datasets.len() - 1
            }
        };
        let (_, dataset, preprocessing) = &datasets[i];
        let mut result = ConfigResult {
            name: base.name.clone(),
            model: base.model.architecture.name().to_string(),
            balance: base.balance.method.as_str().to_string(),
            tasks: Default::default(),
            extra: vec![],
            adversarial: dataset.schema.tasks.iter().filter(|t| t.adversarial).map(|t| t.name.clone()).collect(),
            delta_m: None,
        };
        let mut seed_records = Vec::new();
        for k in 0..options.seeds {
            let mut config = base.clone();
            config.seed = base.seed + k;
            if c == 0 {
                comparison.seeds.push(config.seed);
            }
            let run = c as u64 * options.seeds + k + 1;
            say(format!("run {run}/{total}: {} seed {}", config.name, config.seed));
            let path = run_folder(&options.out, &config.name, config.seed);
            let reused = if options.reuse { finished_run(&path, &config)? } else { None };
            let (summary, records) = match reused {
                Some(finished) => {
                    say(format!("  reused the finished run in {}", path.display()));
                    finished
                }
                None => {
                    let dir = RunDirectory::create(path, &config)?;
                    if let Some(p) = preprocessing {
                        dir.write_preprocessing(p)?;
                    }
                    let device = config.device.open().map_err(TrainError::Config)?;
                    let trainer = Trainer::new(&config, dataset, device).with_registry(registry);
                    let (summary, records, _) = trainer.with_run_dir(dir).verbose(false).run()?;
                    (summary, records)
                }
            };
            seed_records.push(records);
            record_run(&mut result, &mut comparison.panels, &summary, dataset, &say);
        }
        comparison.results.push(result);
        comparison.curves.push((base.name.clone(), seed_records));
    }
    fill_delta_m(&mut comparison.results);
    Ok(comparison)
}

/// Adds one seed's test metrics to `result` (and the curve panels it needs to `panels`).
fn record_run(
    result: &mut ConfigResult,
    panels: &mut Vec<(String, String)>,
    summary: &Summary,
    dataset: &MtlDataset,
    say: &impl Fn(String),
) {
    for task in &dataset.schema.tasks {
        let (metric, extras): (&str, &[&str]) = match task.kind {
            TaskKind::Binary => ("auc", &["gauc", "cvr_auc"]),
            TaskKind::Regression => ("mse", &["mae"]),
            TaskKind::Multiclass => ("accuracy", &["macro_auc"]),
        };
        let test = summary.test.get(&task.name);
        let probe = summary.adversarial_probe.get(&task.name);
        let probes = [
            ("probe_mlp_auc", probe.and_then(|p| p.test_auc)),
            ("probe_linear_auc", probe.and_then(|p| p.linear.as_ref()?.test_auc)),
            ("probe_outputs_auc", probe.and_then(|p| p.outputs.as_ref()?.test_auc)),
            ("dp_gap", test.and_then(|m| m.get("dp_gap").copied())),
            ("eo_gap", test.and_then(|m| m.get("eo_gap").copied())),
        ];
        for (extra, v) in probes {
            let Some(v) = v else { continue };
            result.push_extra(&task.name, extra, v);
        }
        let value = test.and_then(|m| m.get(metric)).copied().unwrap_or(f64::NAN);
        if value.is_finite() {
            say(format!("  test {} {metric} {value:.4}", task.name));
        } else {
            say(format!("  test {} {metric} undefined (one class in the test split?)", task.name));
        }
        let entry = result.tasks.entry(task.name.clone()).or_insert_with(|| (metric.to_string(), vec![]));
        entry.1.push(value);
        for &extra in extras {
            let Some(&v) = test.and_then(|m| m.get(extra)) else { continue };
            result.push_extra(&task.name, extra, v);
        }
        let panel = (task.name.clone(), metric.to_string());
        if !panels.contains(&panel) {
            panels.push(panel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finished run is reused only under the same resolved config and with its summary written.
    #[test]
    fn only_a_finished_run_of_the_same_config_is_reused() {
        let dir = std::env::temp_dir().join(format!("mtrec-compare-reuse-{}", std::process::id()));
        let config = ExperimentConfig::default();
        let run = RunDirectory::create(&dir, &config).unwrap();
        run.write_config_with_notes(&config, &["table `categorical`: dense".into()]).unwrap();
        assert!(finished_run(&dir, &config).unwrap().is_none(), "no summary: not finished");
        let summary: Summary = serde_json::from_str(
            r#"{"name":"n","dataset":"d","model":"m","balance":"fixed","device":"flex","seed":42,"parameters":1,
                "best_epoch":1,"epochs_run":1,"stopped_early":false,"train_samples_per_sec":1.0,"wall_seconds":1.0,
                "valid":{},"test":{}}"#,
        )
        .unwrap();
        run.write_summary(&summary).unwrap();
        let (read, epochs) = finished_run(&dir, &config).unwrap().expect("finished, same config");
        assert_eq!((read, epochs.len()), (summary, 0));
        let other = ExperimentConfig { seed: config.seed + 1, ..config };
        assert!(finished_run(&dir, &other).unwrap().is_none(), "another config is trained again");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
