//! `cargo xtask synthetic-study`: the MMoE paper's synthetic study (§3.3, Figure 4) — shared-bottom,
//! OMoE and MMoE, same hyper-parameters, on synthetic task pairs of correlation p, several seeds —
//! then `study.md` (final training loss and test MSE, mean ± std, and whether the paper's trend
//! holds), `study.json` and `study.svg`/`study.png` (mean training-loss curves per p and model).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use mtrec_lab::{StudyRun, aggregate, study_figure, study_markdown, trend};
use mtrec_train::{ExperimentConfig, RunDirectory, Trainer};
use serde::Serialize;

/// The three models of the study; they differ only in `[model]` (and name).
const CONFIGS: [(&str, &str); 3] = [
    ("configs/synthetic_shared_bottom.toml", include_str!("../../configs/synthetic_shared_bottom.toml")),
    ("configs/synthetic_omoe.toml", include_str!("../../configs/synthetic_omoe.toml")),
    ("configs/synthetic_mmoe.toml", include_str!("../../configs/synthetic_mmoe.toml")),
];

/// Arguments of `cargo xtask synthetic-study`.
#[derive(Args, Debug)]
pub struct StudyArgs {
    /// Task correlations p, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1.0,0.9,0.5")]
    correlations: Vec<f64>,
    /// Seeds per model and p: training seed 42 + k with dataset seed 1 + k, k = 0, 1, …
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    /// Epochs of every run (no early stopping, so the curves are comparable).
    #[arg(long, default_value_t = 50)]
    epochs: usize,
    /// Output folder (runs in `<out>/p<p>/<model>/seed<k>`).
    #[arg(long, default_value = "runs/synthetic_study")]
    out: PathBuf,
    /// Override a value in every run, as in `train`.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    sets: Vec<String>,
}

#[derive(Serialize)]
struct Report {
    epochs: usize,
    seeds: u64,
    cells: Vec<mtrec_lab::StudyCell>,
    trend: mtrec_lab::StudyTrend,
    runs: Vec<StudyRun>,
}

pub fn run(args: StudyArgs) -> anyhow::Result<()> {
    if args.seeds == 0 || args.correlations.is_empty() {
        anyhow::bail!("--seeds and --correlations need at least one value each");
    }
    if let Some(p) = args.correlations.iter().find(|p| !(-1.0..=1.0).contains(*p)) {
        anyhow::bail!("--correlations: {p} is not a correlation in [-1, 1]");
    }
    let total = args.correlations.len() as u64 * args.seeds * CONFIGS.len() as u64;
    let mut runs = Vec::new();
    let mut n = 0;
    for &p in &args.correlations {
        for k in 0..args.seeds {
            let mut dataset = None;
            for (origin, text) in CONFIGS {
                let mut sets = vec![
                    format!("data.synthetic.correlation={p}"),
                    format!("data.synthetic.seed={}", 1 + k),
                    format!("seed={}", 42 + k),
                    format!("train.epochs={}", args.epochs),
                    format!("train.early_stopping.patience={}", args.epochs + 1),
                ];
                sets.extend(args.sets.iter().cloned());
                let config = ExperimentConfig::from_toml(text, origin, &sets)?;
                let data = match &dataset {
                    Some(d) => d,
                    None => dataset.insert(config.data.load()?),
                };
                n += 1;
                let model = config.model.architecture.name().to_string();
                println!("run {n}/{total}: {model} p = {p} seed {}", config.seed);
                let dir = args.out.join(format!("p{p}")).join(&model).join(format!("seed{}", config.seed));
                let device = config.device.open().map_err(anyhow::Error::msg)?;
                let (summary, records, _) = Trainer::new(&config, data, device)
                    .with_run_dir(RunDirectory::create(&dir, &config)?)
                    .verbose(false)
                    .run()?;
                let mean = |m: &std::collections::BTreeMap<String, f64>| m.values().sum::<f64>() / m.len() as f64;
                let test_mse = summary.test.values().map(|m| m["mse"]).sum::<f64>() / summary.test.len() as f64;
                let train_loss: Vec<f64> = records.iter().map(|r| mean(&r.train_loss)).collect();
                println!("  final training loss {:.4}, test mse {test_mse:.4}", train_loss.last().unwrap_or(&f64::NAN));
                runs.push(StudyRun { model, correlation: p, seed: config.seed, train_loss, test_mse });
            }
        }
    }
    let cells = aggregate(&runs);
    let trend = trend(&cells);
    let md = study_markdown(&cells, &trend);
    println!("\n{md}");
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    std::fs::write(args.out.join("study.md"), &md)?;
    let files = study_figure(&cells).save(&args.out.join("study"))?;
    let report = Report { epochs: args.epochs, seeds: args.seeds, cells, trend, runs };
    std::fs::write(args.out.join("study.json"), serde_json::to_string_pretty(&report)?)?;
    println!(
        "wrote {}, study.json, {}",
        args.out.join("study.md").display(),
        files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
    );
    Ok(())
}
