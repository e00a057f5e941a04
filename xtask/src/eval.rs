//! `cargo xtask eval RUN_DIR [--split valid|test] [--data-dir DIR] [--file FILE] [--predictions
//! OUT.csv]`: re-evaluates a run's selected model (`best_model.bpk`) with the run's recorded
//! `config.toml` — or scores every row of another file of a table run, encoded with the run's
//! saved preprocessing (its label columns optional: metrics where it has labels) — and writes the
//! model's prediction of every row.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use mtrec_train::{RunEvaluation, Split, class_names, evaluate_run_outputs, write_predictions};

/// Which split.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum SplitArg {
    Valid,
    Test,
}

/// Arguments of `cargo xtask eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A run folder written by `train` or `compare`.
    run_dir: PathBuf,
    /// The split to evaluate.
    #[arg(long, value_enum, default_value = "test")]
    split: SplitArg,
    /// Dataset folder (overrides the recorded `data.dir`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Score every row of this file (a table run's format and columns) instead of a split.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Write the prediction of every row (of the file, or of the split) to this CSV file: `row`,
    /// then a binary task's probability, a regression task's value, a multiclass task's
    /// probability of each class `<task>=<class>`.
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// Override a recorded config value.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    sets: Vec<String>,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let mut sets = args.sets.clone();
    sets.extend(args.data_dir.iter().map(|d| crate::data_dir_override(d)));
    let split = match args.split {
        SplitArg::Valid => Split::Valid,
        SplitArg::Test => Split::Test,
    };
    let RunEvaluation { config, data, metrics, outputs } =
        evaluate_run_outputs(&args.run_dir, split, &sets, args.file.as_deref())?;
    match &args.file {
        Some(file) => println!("{} ({}), every row of {}:", config.name, data.name(), file.display()),
        None => println!("{} ({}), {:?} split:", config.name, data.name(), args.split),
    }
    for (task, m) in data.schema().tasks.iter().zip(&metrics) {
        if m.get("labelled_rows") == Some(&0.0) {
            println!("  {}: no labels", task.name);
            continue;
        }
        let values: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
        println!("  {}: {}", task.name, values.join(", "));
    }
    if let Some(path) = &args.predictions {
        let rows = write_predictions(path, data.schema(), &outputs, &class_names(&config.data.tasks))?;
        println!("wrote the predictions of {rows} rows to {}", path.display());
    }
    Ok(())
}
