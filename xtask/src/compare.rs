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

use std::path::PathBuf;

use clap::Args;
use mtrec_lab::{CompareOptions, run_comparison};
use mtrec_train::{ExperimentConfig, Registry};

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
    #[command(flatten)]
    mlflow: crate::mlflow::MlflowLogging,
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
    let options = CompareOptions { seeds: args.seeds, out: args.out.clone(), reuse: args.reuse, verbose: true };
    let comparison = run_comparison(&configs, &options, Registry::builtin())?;
    println!("\n{}", comparison.markdown());
    comparison.write(&args.out)?;
    let png = if cfg!(feature = "png") { " and compare.png" } else { "" };
    println!("wrote {}, compare.json, compare.svg{png}", args.out.join("compare.md").display());
    if comparison.results.iter().any(|r| !r.adversarial.is_empty()) {
        println!("wrote {} (the main task against the probes)", args.out.join("trade_off.svg").display());
    }
    // one MLflow experiment for the comparison (default: the output folder's name)
    let out = &args.out;
    let runs: Vec<PathBuf> = configs
        .iter()
        .flat_map(|c| (0..args.seeds).map(move |k| mtrec_lab::run_folder(out, &c.name, c.seed + k)))
        .collect();
    let mut mlflow = args.mlflow.clone();
    if mlflow.experiment().is_none() {
        let name = std::path::absolute(&args.out)?.file_name().map(|n| n.to_string_lossy().into_owned());
        mlflow = mlflow.with_experiment(name.unwrap_or_else(|| "compare".into()));
    }
    mlflow.log(&runs)
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
}
