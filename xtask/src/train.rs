//! `cargo xtask train`.

use std::path::PathBuf;

use clap::Args;
use mtrec_data::{MtlDataset, SplitRows};
use mtrec_train::{DataParallel, DeviceChoice, ExperimentConfig, RunDirectory, Summary, Trainer};

/// The built-in default experiment: MMoE on the MMoE paper's synthetic tasks (p = 0.9).
const DEFAULT_CONFIG: &str = include_str!("../../configs/synthetic_mmoe.toml");

/// Arguments of `cargo xtask train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Experiment config (TOML). Default: the built-in synthetic MMoE experiment.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run in this folder from its last checkpoint (its `config.toml`; `--epochs`,
    /// `--data-dir` and `--set data.dir=…` may change). Ends as the uninterrupted run would.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["config", "out", "seed", "device"])]
    resume: Option<PathBuf>,
    /// Backend: flex, ndarray or wgpu (overrides the config's `device`).
    #[arg(long)]
    device: Option<DeviceChoice>,
    /// Dataset folder (overrides `data.dir`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Run folder. Default: `runs/<config name>` (suffixed when it exists).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Maximum epochs (overrides `train.epochs`).
    #[arg(long)]
    epochs: Option<usize>,
    /// Seed (overrides `seed`).
    #[arg(long)]
    seed: Option<u64>,
    /// Override any config value: `--set train.lr=0.01 --set model.n_experts=4`.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    sets: Vec<String>,
    /// Train data-parallel on N processes: relaunches this command under Open MPI's `mpirun -n N`
    /// (needs the `mpi` feature: `cargo xtask-mpi`). Each rank computes the gradients of its shard
    /// of every batch; the trajectory is one process's with the same batch size.
    #[arg(long, value_name = "N")]
    ranks: Option<usize>,
    /// With `--ranks`: Open MPI's hostfile naming the machines (`host slots=K` a line). Each needs
    /// this executable and the data at the same paths.
    #[arg(long, requires = "ranks")]
    hostfile: Option<PathBuf>,
    #[command(flatten)]
    mlflow: crate::mlflow::MlflowLogging,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    match crate::ranks::start(args.ranks, args.hostfile.as_deref())? {
        crate::ranks::Start::Launched => Ok(()),
        crate::ranks::Start::Single => run_rank(args, DataParallel::single()),
        #[cfg(feature = "mpi")]
        crate::ranks::Start::Rank(world) => {
            let rank = mtrec_train::Collective::rank(world.as_ref());
            if let Err(e) = run_rank(args, DataParallel::new(Box::new(world.clone()))) {
                // the others would wait for this rank in their next all-reduce: end them all
                eprintln!("rank {rank}: error: {e:#}");
                world.abort(1);
            }
            Ok(())
        }
    }
}

/// One rank's run (the only one in one process); rank 0 prints and writes the run folder.
fn run_rank(args: TrainArgs, parallel: DataParallel) -> anyhow::Result<()> {
    let root = parallel.is_root();
    let mut sets = args.sets.clone();
    if let Some(d) = args.device {
        sets.push(format!("device=\"{}\"", d.name()));
    }
    if let Some(dir) = &args.data_dir {
        sets.push(crate::data_dir_override(dir));
    }
    if let Some(e) = args.epochs {
        sets.push(format!("train.epochs={e}"));
    }
    if let Some(s) = args.seed {
        sets.push(format!("seed={s}"));
    }
    let config = match (&args.resume, &args.config) {
        (Some(run), _) => ExperimentConfig::from_file(&run.join("config.toml"), &sets)?,
        (None, Some(path)) => ExperimentConfig::from_file(path, &sets)?,
        (None, None) => {
            ExperimentConfig::from_toml(DEFAULT_CONFIG, "built-in default (configs/synthetic_mmoe.toml)", &sets)?
        }
    };
    let out = match (&args.resume, &args.out) {
        (Some(run), _) => run.clone(),
        (None, Some(out)) => out.clone(),
        (None, None) => fresh_dir(PathBuf::from("runs").join(&config.name)),
    };
    if root {
        println!(
            "mtrec: {} — {:?} on {:?} data, balance {:?}, device {}, seed {}{}",
            config.name,
            config.model.architecture,
            config.data.source,
            config.balance.method,
            config.device.name(),
            config.seed,
            if parallel.size() > 1 { format!(", {} data-parallel ranks", parallel.size()) } else { String::new() }
        );
    }
    let load_start = std::time::Instant::now();
    // a resumed run encodes its data with the preprocessing it was fitted with
    let saved = match &args.resume {
        Some(run) => mtrec_train::read_preprocessing(run)?,
        None => None,
    };
    let resume = args.resume.is_some();
    // rank 0 loads (and caches, or encodes into chunk files) first; the others then read its work
    let summary = if config.data.stream {
        let (dataset, preprocessing) = parallel.root_first(|| config.data.load_streamed(saved.as_ref()))?;
        let dir = RunDirectory::for_rank(&out, &config, resume, &parallel)?;
        if let Some(dir) = dir.as_ref().filter(|_| root) {
            describe(&dataset, load_start, "chunk files, streamed");
            dir.write_preprocessing(&preprocessing)?;
        }
        train(&config, &dataset, dir, resume, parallel)?
    } else {
        let (dataset, preprocessing) = parallel.root_first(|| config.data.load_with(saved.as_ref()))?;
        let dir = RunDirectory::for_rank(&out, &config, resume, &parallel)?;
        if let Some(dir) = dir.as_ref().filter(|_| root) {
            describe(&dataset, load_start, "in memory");
            if let Some(p) = &preprocessing {
                dir.write_preprocessing(p)?;
            }
        }
        train(&config, &dataset, dir, resume, parallel)?
    };
    if !root {
        return Ok(());
    }
    if let Some(dp) = &summary.data_parallel {
        println!(
            "data parallel: {} ranks, {:.1}s of the training steps in collective operations ({:.1}%)",
            dp.ranks,
            dp.communication_seconds,
            100.0 * dp.communication_share
        );
    }
    let at = summary.best_after_epochs.map_or(String::new(), |e| format!(" (after {e:.2} epochs)"));
    println!(
        "best epoch {}{at} of {} ({:.0} train samples/s, {:.1}s)",
        summary.best_epoch, summary.epochs_run, summary.train_samples_per_sec, summary.wall_seconds
    );
    for (task, metrics) in &summary.test {
        let m: Vec<String> = metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
        println!("test {task}: {}", m.join(", "));
    }
    println!("wrote {}", out.join("summary.json").display());
    args.mlflow.log(&[out])
}

/// The data line: rows of each split, inputs, tasks, load time.
fn describe<S: SplitRows>(dataset: &MtlDataset<S>, load_start: std::time::Instant, held: &str) {
    println!(
        "data: {} — {} train / {} valid / {} test rows ({held}), {} categorical + {} multi-valued + {} dense + {} \
         text inputs, tasks {:?} ({:.1}s)",
        dataset.name,
        dataset.train.n_rows(),
        dataset.valid.n_rows(),
        dataset.test.n_rows(),
        dataset.schema.categorical.len(),
        dataset.schema.multi_categorical.len(),
        dataset.schema.dense.len(),
        dataset.schema.text.len(),
        dataset.schema.tasks.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        load_start.elapsed().as_secs_f64()
    );
}

/// Trains `config` on `dataset` into `dir` (rank 0's; the others read it only to resume).
fn train<S: SplitRows>(
    config: &ExperimentConfig,
    dataset: &MtlDataset<S>,
    dir: Option<RunDirectory>,
    resume: bool,
    parallel: DataParallel,
) -> anyhow::Result<Summary> {
    let device = config.device.open().map_err(anyhow::Error::msg)?;
    let mut trainer = Trainer::new(config, dataset, device).resume(resume).verbose(parallel.is_root());
    if let Some(dir) = dir {
        trainer = trainer.with_run_dir(dir);
    }
    Ok(trainer.with_data_parallel(parallel).run()?.0)
}

/// `base`, or `base-2`, `base-3`… whichever does not exist yet.
fn fresh_dir(base: PathBuf) -> PathBuf {
    if !base.exists() {
        return base;
    }
    (2..).map(|i| PathBuf::from(format!("{}-{i}", base.display()))).find(|p| !p.exists()).expect("some suffix is free")
}
