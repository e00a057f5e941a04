//! `cargo xtask compare`: every config with every seed, then a table of mean ± std over seeds
//! (and Δm against a single-task config among them) as `compare.md` and `compare.json`. With
//! `--reuse`, a run already finished in the output folder under the same resolved config is read
//! back instead of trained again: an interrupted compare (hours of fine-tuning) goes on where it
//! stopped, and a seed trained apart can join the table. With `--sweep KEY=V1,V2,…` the first config
//! is run once per value (`--set KEY=V`, named `<name>-<KEY>=<V>`; the other configs join as they
//! are): a trade-off curve, e.g.
//! `--sweep model.adversarial_weight=0,0.3,1,3,10`; runs with adversarial tasks add the probes'
//! test AUCs and a plot of the main task against them (`trade_off.svg`), runs with `[fairness]`
//! the gaps.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use mtrec_data::{MtlDataset, Preprocessing, TaskKind};
use mtrec_lab::{ConfigResult, compare_figure, fill_delta_m, markdown, trade_off_figure};
use mtrec_train::{DataConfig, EpochRecord, ExperimentConfig, RunDirectory, Summary, Trainer, read_epochs};
use serde::Serialize;

/// Arguments of `cargo xtask compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Experiment configs, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    configs: Vec<PathBuf>,
    /// Seeds per config: the config's seed, +1, +2, …
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Dataset folder (overrides `data.dir` of every config).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Output folder (runs in `<out>/<config name>/seed<k>`).
    #[arg(long, default_value = "runs/compare")]
    out: PathBuf,
    /// Override a value in every config, as in `train`.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    sets: Vec<String>,
    /// Read a run that `<out>/<name>/seed<k>` already holds finished (`summary.json` written,
    /// `config.toml` the same as this run's) instead of training it again.
    #[arg(long)]
    reuse: bool,
    /// Run the first config once per value of a key: `SECTION.KEY=V1,V2,…` (scalar values); the
    /// other configs join the table as they are.
    #[arg(long, value_name = "SECTION.KEY=V1,V2,...")]
    sweep: Option<String>,
}

/// The `(key, values)` of `--sweep`.
fn parse_sweep(sweep: &str) -> anyhow::Result<(String, Vec<String>)> {
    let (key, values) = sweep.split_once('=').ok_or_else(|| {
        anyhow::anyhow!("--sweep {sweep:?}: expected SECTION.KEY=V1,V2,… (e.g. model.adversarial_weight=0,1,3)")
    })?;
    let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
    if key.trim().is_empty() || values.is_empty() {
        anyhow::bail!("--sweep {sweep:?}: expected SECTION.KEY=V1,V2,… with at least one value");
    }
    Ok((key.trim().to_string(), values))
}

/// The summary and epochs of the finished run in `dir`, when its `config.toml` is `config`'s.
fn finished_run(dir: &Path, config: &ExperimentConfig) -> anyhow::Result<Option<(Summary, Vec<EpochRecord>)>> {
    let (summary, recorded) = (dir.join("summary.json"), dir.join("config.toml"));
    // the recorded config read as `eval` reads it (its notes are comments), compared resolved
    let same = recorded.is_file()
        && ExperimentConfig::from_file(&recorded, &[]).is_ok_and(|c| c.to_toml() == config.to_toml());
    if !summary.is_file() || !same {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&summary).with_context(|| format!("reading {}", summary.display()))?;
    let summary = serde_json::from_str(&text).with_context(|| format!("reading {}", summary.display()))?;
    Ok(Some((summary, read_epochs(dir)?)))
}

#[derive(Serialize)]
struct Report {
    seeds: Vec<u64>,
    results: Vec<ConfigResult>,
}

pub fn run(args: CompareArgs) -> anyhow::Result<()> {
    let mut sets = args.sets.clone();
    if let Some(dir) = &args.data_dir {
        sets.push(crate::data_dir_override(dir));
    }
    let mut configs: Vec<ExperimentConfig> = Vec::new();
    for (i, path) in args.configs.iter().enumerate() {
        // the first config is swept; the others join the table as they are (e.g. the LEACE point)
        match args.sweep.as_deref().filter(|_| i == 0).map(parse_sweep).transpose()? {
            None => configs.push(ExperimentConfig::from_file(path, &sets)?),
            Some((key, values)) => {
                for v in values {
                    let mut with = sets.clone();
                    with.push(format!("{key}={v}"));
                    let mut config = ExperimentConfig::from_file(path, &with)?;
                    config.name = format!("{}-{key}={v}", config.name);
                    configs.push(config);
                }
            }
        }
    }
    for (i, c) in configs.iter().enumerate() {
        if configs[..i].iter().any(|d| d.name == c.name) {
            anyhow::bail!("two configs are named {:?}: give each its own `name` (runs go to <out>/<name>)", c.name);
        }
    }
    if args.seeds == 0 {
        anyhow::bail!("--seeds must be at least 1");
    }
    let total = configs.len() as u64 * args.seeds;
    let mut datasets: Vec<(DataConfig, MtlDataset, Option<Preprocessing>)> = Vec::new();
    let mut results = Vec::new();
    let mut seeds_used = Vec::new();
    let mut curves = Vec::new();
    let mut panels: Vec<(String, String)> = Vec::new();
    for (c, base) in configs.iter().enumerate() {
        let (dataset, preprocessing) = match datasets.iter().position(|(d, _, _)| *d == base.data) {
            Some(i) => (&datasets[i].1, &datasets[i].2),
            None => {
                let (dataset, preprocessing) = base.data.load_with(None)?;
                datasets.push((base.data.clone(), dataset, preprocessing));
                let last = datasets.last().expect("pushed");
                (&last.1, &last.2)
            }
        };
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
        for k in 0..args.seeds {
            let mut config = base.clone();
            config.seed = base.seed + k;
            if c == 0 {
                seeds_used.push(config.seed);
            }
            let run = c as u64 * args.seeds + k + 1;
            println!("run {run}/{total}: {} seed {}", config.name, config.seed);
            let path = args.out.join(&config.name).join(format!("seed{}", config.seed));
            let reused = if args.reuse { finished_run(&path, &config)? } else { None };
            let (summary, records) = match reused {
                Some(finished) => {
                    println!("  reused the finished run in {}", path.display());
                    finished
                }
                None => {
                    let dir = RunDirectory::create(path, &config)?;
                    if let Some(p) = preprocessing {
                        dir.write_preprocessing(p)?;
                    }
                    let device = config.device.open().map_err(anyhow::Error::msg)?;
                    let (summary, records, _) =
                        Trainer::new(&config, dataset, device).with_run_dir(dir).verbose(false).run()?;
                    (summary, records)
                }
            };
            seed_records.push(records);
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
                    println!("  test {} {metric} {value:.4}", task.name);
                } else {
                    println!("  test {} {metric} undefined (one class in the test split?)", task.name);
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
        results.push(result);
        curves.push((base.name.clone(), seed_records));
    }
    fill_delta_m(&mut results);
    let md = markdown(&results, &seeds_used);
    println!("\n{md}");
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    std::fs::write(args.out.join("compare.md"), &md)?;
    let report = Report { seeds: seeds_used, results };
    std::fs::write(args.out.join("compare.json"), serde_json::to_string_pretty(&report)?)?;
    let report = &report;
    compare_figure(&curves, &panels).save(&args.out.join("compare"))?;
    println!("wrote {}, compare.json, compare.svg and compare.png", args.out.join("compare.md").display());
    if let Some(figure) = trade_off_figure(&report.results) {
        figure.save(&args.out.join("trade_off"))?;
        println!("wrote {} (the main task against the probes)", args.out.join("trade_off.svg").display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_are_a_key_and_values() {
        let (key, values) = parse_sweep("model.adversarial_weight=0, 0.3,1").unwrap();
        assert_eq!((key.as_str(), values), ("model.adversarial_weight", vec!["0".into(), "0.3".into(), "1".into()]));
        for bad in ["model.adversarial_weight", "=1,2", "model.x="] {
            assert!(parse_sweep(bad).unwrap_err().to_string().contains("--sweep"), "{bad}");
        }
    }

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
