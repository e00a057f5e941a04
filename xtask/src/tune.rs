//! `cargo xtask tune --config FILE --space SPACE.toml --trials N`: hyperparameter search over any
//! config key, on a validation objective (never test).
//!
//! Each trial is a normal run folder (`<out>/trials/trial-<n>`), trained by this executable in a
//! process of its own (`--jobs` at once, the cores shared among them) with `train.evaluate_test =
//! false`; a trial promoted to a larger epoch budget continues from its checkpoint. Engines:
//!
//! - `halving` (built in, nothing to install): random points, successive halving over epochs
//!   (`--min-epochs`, `--eta`, up to the config's `train.epochs`);
//! - `optuna`: Optuna's samplers (TPE, CMA-ES, random) and pruners (successive halving, median)
//!   through its ask-and-tell interface (`xtask/python/optuna_bridge.py`, in `--python`), its study
//!   in `--storage` (default an SQLite file in the study folder; an RDB URL lets several machines
//!   work on one study, and optuna-dashboard shows it).
//!
//! A killed study, run again with the same arguments, skips what `study.jsonl` (and Optuna's
//! storage) hold and continues the rest from the trials' checkpoints. At the end: `trials.md`,
//! `trials.csv`, `trials.svg` (the objective against each parameter), `best.toml` (the best
//! trial's config, full budget, test on) and `best.json` with the best trial's test metrics —
//! the only test evaluation of the study.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use anyhow::Context;
use clap::{Args, ValueEnum};
use mtrec_lab::tune::{
    Distribution, HalvingOptions, Point, SearchSpace, StudyHeader, StudyLog, TrialRecord, TrialRunner, best_record,
    point_sets, point_strings, run_halving, rungs, trials_csv, trials_figure, trials_markdown,
};
use mtrec_train::{EpochRecord, ExperimentConfig, Split, evaluate_run};
use serde_json::json;

/// The search engine.
#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum Engine {
    /// Random points with successive halving over epochs (built in).
    Halving,
    /// Optuna's sampler and pruner (needs Python with optuna).
    Optuna,
}

/// Optuna's sampler.
#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum Sampler {
    Tpe,
    Cmaes,
    Random,
}

/// Optuna's pruner.
#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum Pruner {
    /// Successive halving (ASHA) over the epoch budgets.
    Halving,
    /// Stop a trial below the median of earlier trials at the same budget.
    Median,
    /// Every trial trains its full budget.
    None,
}

/// Arguments of `cargo xtask tune`.
#[derive(Args, Debug)]
pub struct TuneArgs {
    /// Experiment config every trial starts from (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Search space (TOML: `[objective]`, `[params]`; see crates/mtrec-lab/src/tune/space.rs).
    #[arg(long)]
    space: PathBuf,
    /// Trials to run.
    #[arg(long)]
    trials: usize,
    /// Search engine.
    #[arg(long, value_enum, default_value = "halving")]
    engine: Engine,
    /// Epochs of the first budget (successive halving and Optuna's pruners).
    #[arg(long, default_value_t = 1)]
    min_epochs: usize,
    /// Each budget is η times the last (up to `train.epochs`); a rung keeps the best 1/η.
    #[arg(long, default_value_t = 3)]
    eta: usize,
    /// Trials trained at once, each in a process of its own.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Study folder. Default: `runs/tune/<config name>`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of the points drawn (the trials' own seed is the config's).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Dataset folder (overrides `data.dir`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Override a config value in every trial, as in `train`.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    sets: Vec<String>,
    /// Python with optuna, for `--engine optuna` (default `$MTREC_PYTHON`, else `python3`).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Optuna's sampler.
    #[arg(long, value_enum, default_value = "tpe")]
    sampler: Sampler,
    /// Optuna's pruner.
    #[arg(long, value_enum, default_value = "halving")]
    pruner: Pruner,
    /// Optuna's storage URL. Default: `sqlite:///<out>/optuna.db`.
    #[arg(long)]
    storage: Option<String>,
    /// Optuna's study name. Default: the config's name.
    #[arg(long)]
    study_name: Option<String>,
    #[command(flatten)]
    mlflow: crate::mlflow::MlflowLogging,
}

/// The objective of a run folder after `epochs` epochs: the monitored validation value of the
/// point selected by then (the last point marked best in `metrics.jsonl` up to that epoch,
/// validations within epochs included).
fn run_objective(dir: &Path, epochs: usize) -> anyhow::Result<f64> {
    let records: Vec<EpochRecord> = mtrec_train::read_epochs(dir)?;
    let mut value = None;
    for r in records.iter().filter(|r| r.epoch <= epochs) {
        for w in &r.within_epoch {
            if w.best {
                value = Some(w.monitor);
            }
        }
        if r.best {
            value = Some(r.monitor);
        }
    }
    value.with_context(|| format!("{}: no epoch in metrics.jsonl", dir.display()))
}

/// Trains trials as `xtask train` processes.
struct ProcessRunner {
    exe: PathBuf,
    config: PathBuf,
    /// The study's overrides (data folder, objective, no test), before each trial's point.
    sets: Vec<String>,
    data_dir: Option<PathBuf>,
    trials_dir: PathBuf,
    /// Rayon threads of each trial process.
    threads: usize,
}

impl ProcessRunner {
    fn dir(&self, trial: usize) -> PathBuf {
        self.trials_dir.join(format!("trial-{trial:04}"))
    }
}

impl TrialRunner for ProcessRunner {
    fn train(&self, trial: usize, point: &Point, epochs: usize) -> Result<f64, String> {
        let dir = self.dir(trial);
        let mut cmd = Command::new(&self.exe);
        cmd.arg("train");
        if dir.join(mtrec_train::CHECKPOINT_FILE).is_file() {
            cmd.arg("--resume").arg(&dir);
            if let Some(d) = &self.data_dir {
                cmd.arg("--data-dir").arg(d);
            }
        } else {
            // killed before its first checkpoint: start over
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            cmd.arg("--config").arg(&self.config).arg("--out").arg(&dir);
            for s in self.sets.iter().chain(&point_sets(point)) {
                cmd.arg("--set").arg(s);
            }
        }
        cmd.arg("--epochs").arg(epochs.to_string());
        let log = self.trials_dir.join(format!("trial-{trial:04}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let err = file.try_clone().map_err(|e| e.to_string())?;
        let status = cmd
            .env("RAYON_NUM_THREADS", self.threads.to_string())
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .status()
            .map_err(|e| format!("{}: {e}", self.exe.display()))?;
        if !status.success() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(3).collect();
            return Err(format!(
                "trial {trial} ({epochs} epochs) failed ({status}); {}: {}",
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
            ));
        }
        run_objective(&dir, epochs).map_err(|e| e.to_string())
    }
}

/// Optuna's ask-and-tell interface in a Python process (`xtask/python/optuna_bridge.py`): one
/// JSON request a line, one JSON answer a line.
struct OptunaBridge {
    child: Child,
    io: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
}

impl OptunaBridge {
    fn start(python: &Path, setup: serde_json::Value) -> anyhow::Result<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/optuna_bridge.py");
        let mut child = Command::new(python)
            .arg(&script)
            .arg(setup.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} (--python)", python.display()))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let bridge = Self { child, io: Mutex::new((stdin, stdout)) };
        bridge.request(json!({"op": "hello"})).with_context(|| {
            format!(
                "the optuna engine needs a Python with optuna: `{} -m pip install -r xtask/python/requirements.txt`, \
                 or --python PATH",
                python.display()
            )
        })?;
        Ok(bridge)
    }

    fn request(&self, request: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let mut io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(io.0, "{request}").and_then(|_| io.0.flush()).context("the optuna bridge ended")?;
        let mut line = String::new();
        io.1.read_line(&mut line).context("reading the optuna bridge")?;
        anyhow::ensure!(!line.is_empty(), "the optuna bridge ended (its error is above)");
        let answer: serde_json::Value = serde_json::from_str(&line).context("the optuna bridge's answer")?;
        if let Some(e) = answer.get("error") {
            anyhow::bail!("optuna: {e}");
        }
        Ok(answer)
    }
}

impl Drop for OptunaBridge {
    fn drop(&mut self) {
        let _ = self.request(json!({"op": "close"}));
        let _ = self.child.wait();
    }
}

/// The space as the bridge reads it.
fn space_json(space: &SearchSpace) -> serde_json::Value {
    let params: Vec<serde_json::Value> = space
        .params
        .iter()
        .map(|p| match &p.distribution {
            Distribution::Uniform { low, high } => {
                json!({"key": p.key, "kind": "float", "low": low, "high": high, "log": false})
            }
            Distribution::LogUniform { low, high } => {
                json!({"key": p.key, "kind": "float", "low": low, "high": high, "log": true})
            }
            Distribution::Int { low, high, log } => {
                json!({"key": p.key, "kind": "int", "low": low, "high": high, "log": log})
            }
            Distribution::Choice(values) => {
                let choices: Vec<String> = values.iter().map(toml::Value::to_string).collect();
                json!({"key": p.key, "kind": "choice", "choices": choices})
            }
        })
        .collect();
    json!(params)
}

/// A TOML value from the bridge's text.
fn toml_value(text: &str) -> anyhow::Result<toml::Value> {
    let mut t: toml::Table = toml::from_str(&format!("v = {text}")).with_context(|| format!("value {text:?}"))?;
    Ok(t.remove("v").expect("parsed"))
}

/// Optuna: `--jobs` workers ask for trials until `trials` have finished (counting those a resumed
/// study's storage holds), train each through the rungs, report after each, stop where the pruner
/// says, and tell the result.
fn run_optuna(
    bridge: &OptunaBridge,
    space: &SearchSpace,
    trials: usize,
    budgets: &[usize],
    jobs: usize,
    runner: &ProcessRunner,
    log: &StudyLog,
) -> anyhow::Result<Vec<TrialRecord>> {
    let done = bridge.request(json!({"op": "count"}))?["finished"].as_u64().unwrap_or(0) as usize;
    if done > 0 {
        println!("optuna: the study holds {done} finished trials");
    }
    let claimed = AtomicUsize::new(done);
    let records = Mutex::new(Vec::new());
    let keys: Vec<String> = space.params.iter().map(|p| p.key.clone()).collect();
    let work = || -> anyhow::Result<()> {
        while claimed.fetch_add(1, Ordering::SeqCst) < trials {
            let asked = bridge.request(json!({"op": "ask"}))?;
            let number = asked["number"].as_u64().context("ask: number")? as usize;
            let point: Point = keys
                .iter()
                .map(|k| Ok((k.clone(), toml_value(asked["params"][k].as_str().context("ask: params")?)?)))
                .collect::<anyhow::Result<_>>()?;
            let mut state = ("fail", None);
            for (i, &epochs) in budgets.iter().enumerate() {
                // a trial of a killed study handed out again: the budgets its log holds are read
                let logged = log.finished(number, epochs).filter(|r| r.point == point_strings(&point));
                let mut record = match logged {
                    Some(r) => r.clone(),
                    None => TrialRecord::trained(number, &point, epochs, runner.train(number, &point, epochs)),
                };
                let (value, last) = (record.value, i + 1 == budgets.len());
                let prune = match value {
                    Some(v) if !last => bridge.request(json!({
                        "op": "report", "number": number, "step": epochs, "value": v, "logged": logged.is_some()
                    }))?["prune"]
                        .as_bool()
                        .unwrap_or(false),
                    _ => false,
                };
                record.pruned = prune;
                if logged.is_none() || prune {
                    log.append(&record)?;
                    records.lock().unwrap_or_else(|e| e.into_inner()).push(record);
                }
                match value {
                    None => break,
                    Some(v) if prune => {
                        state = ("pruned", Some(v));
                        break;
                    }
                    Some(v) => state = ("complete", Some(v)),
                }
            }
            bridge.request(json!({"op": "tell", "number": number, "state": state.0, "value": state.1}))?;
        }
        Ok(())
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..jobs.max(1)).map(|_| s.spawn(work)).collect();
        handles.into_iter().try_for_each(|h| h.join().expect("a tune worker panicked"))
    })?;
    let mut all = log.previous.clone();
    all.extend(records.into_inner().unwrap_or_else(|e| e.into_inner()));
    Ok(all)
}

pub fn run(args: TuneArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.trials > 0, "--trials must be at least 1");
    let mut sets = args.sets.clone();
    if let Some(d) = &args.data_dir {
        sets.push(crate::data_dir_override(d));
    }
    let space = SearchSpace::from_file(&args.space, &args.config, &sets)?;
    sets.extend(space.objective.sets());
    sets.push("train.evaluate_test=false".into());
    let config = ExperimentConfig::from_file(&args.config, &sets)?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("runs/tune").join(&config.name));
    let budgets = rungs(args.min_epochs, config.train.epochs, args.eta);
    let engine = match args.engine {
        Engine::Halving => "halving".to_string(),
        Engine::Optuna => format!("optuna/{:?}/{:?}", args.sampler, args.pruner).to_lowercase(),
    };
    let header = StudyHeader {
        engine: engine.clone(),
        seed: args.seed,
        trials: args.trials,
        rungs: budgets.clone(),
        eta: args.eta,
        space: std::fs::read_to_string(&args.space)?,
        config: config.to_toml(),
    };
    let log = StudyLog::open(&out, &header)?;
    let trials_dir = out.join("trials");
    std::fs::create_dir_all(&trials_dir)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runner = ProcessRunner {
        exe: std::env::current_exe()?,
        config: args.config.canonicalize().with_context(|| args.config.display().to_string())?,
        sets: sets.clone(),
        data_dir: args.data_dir.clone(),
        trials_dir,
        threads: (cores / args.jobs.max(1)).max(1),
    };
    let objective = format!("validation {} {}", space.objective.task, space.objective.metric);
    println!(
        "tune {}: {} trials, engine {engine}, budgets {budgets:?} epochs, {} jobs, objective {objective} ({}){}",
        config.name,
        args.trials,
        args.jobs,
        if space.objective.maximise() { "max" } else { "min" },
        if log.previous.is_empty() {
            String::new()
        } else {
            format!(", resuming ({} budgets logged)", log.previous.len())
        }
    );
    let started = std::time::Instant::now();
    let records = match args.engine {
        Engine::Halving => {
            let options = HalvingOptions {
                trials: args.trials,
                rungs: budgets.clone(),
                eta: args.eta,
                jobs: args.jobs,
                seed: args.seed,
            };
            run_halving(&space, &options, &runner, &log)?
        }
        Engine::Optuna => {
            let python = crate::python(args.python.as_deref());
            let storage = match &args.storage {
                Some(s) => s.clone(),
                None => format!("sqlite:///{}", std::path::absolute(out.join("optuna.db"))?.display()),
            };
            let setup = json!({
                "storage": storage,
                "study_name": args.study_name.clone().unwrap_or_else(|| config.name.clone()),
                "direction": if space.objective.maximise() { "maximize" } else { "minimize" },
                "sampler": format!("{:?}", args.sampler).to_lowercase(),
                "pruner": format!("{:?}", args.pruner).to_lowercase(),
                "seed": args.seed,
                "min_resource": budgets[0],
                "eta": args.eta,
                "space": space_json(&space),
            });
            let bridge = OptunaBridge::start(&python, setup)?;
            run_optuna(&bridge, &space, args.trials, &budgets, args.jobs, &runner, &log)?
        }
    };
    let maximise = space.objective.maximise();
    let best = best_record(&records, maximise).cloned();
    std::fs::write(out.join("trials.md"), trials_markdown(&space, &records, best.as_ref().map(|b| b.trial)))?;
    std::fs::write(out.join("trials.csv"), trials_csv(&space, &records))?;
    let figure = trials_figure(&space, &records);
    let figures = figure.save(&out.join("trials"))?;
    println!("\n{}", trials_markdown(&space, &records, best.as_ref().map(|b| b.trial)));
    let Some(best) = best else {
        anyhow::bail!("no trial finished: see the trial logs in {}", out.join("trials").display());
    };
    let dir = runner.dir(best.trial);
    // the best trial's config, as a run to train again: its full budget, test evaluated
    let best_config = ExperimentConfig::from_file(
        &dir.join("config.toml"),
        &["train.evaluate_test=true".into(), format!("train.epochs={}", config.train.epochs)],
    )?;
    std::fs::write(out.join("best.toml"), best_config.to_toml())?;
    let data_sets: Vec<String> = args.data_dir.iter().map(|d| crate::data_dir_override(d)).collect();
    let (_, data, test) = evaluate_run(&dir, Split::Test, &data_sets, None)?;
    let test: std::collections::BTreeMap<String, mtrec_train::TaskMetrics> =
        data.schema().tasks.iter().map(|t| t.name.clone()).zip(test).collect();
    let summary = json!({
        "trial": best.trial,
        "point": best.point.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "epochs": best.epochs,
        "objective": objective,
        "valid": best.value,
        "test": test,
        "trials": records.iter().map(|r| r.trial).collect::<std::collections::BTreeSet<_>>().len(),
        "budgets_trained": records.len(),
        "wall_seconds_this_process": started.elapsed().as_secs_f64(),
        "run": dir,
    });
    std::fs::write(out.join("best.json"), serde_json::to_string_pretty(&summary)?)?;
    // the study's page: the best trial and its test metrics, every trial, the objective per parameter
    let mut page = mtrec_train::Report::new(&format!("mtrec study: {}", config.name));
    page.heading("Best trial").paragraph(&format!(
        "Trial {} after {} epochs: {objective} {:.4} (engine {engine}, {} trials, budgets {budgets:?} epochs). \
         Its test metrics, the study's only evaluation on test:",
        best.trial,
        best.epochs,
        best.value.unwrap_or(f64::NAN),
        args.trials
    ));
    let point: Vec<Vec<String>> = best.point.iter().map(|(k, v)| vec![k.clone(), v.clone()]).collect();
    page.table(&["key".into(), "value".into()], &point);
    page.metrics(&test);
    page.heading("Trials").markdown(&trials_markdown(&space, &records, Some(best.trial)));
    page.heading("The objective against each parameter");
    page.figure("Each trial's objective at the largest budget it reached.", &figure)?;
    page.heading("Config of the best trial (best.toml)").code(&best_config.to_toml());
    page.write(&out.join("report.html"))?;
    println!("best: trial {} at {} epochs, {objective} {:.4}", best.trial, best.epochs, best.value.unwrap_or(f64::NAN));
    for (task, m) in &test {
        println!("  test {task}: {}", json!(m));
    }
    let figures: Vec<String> = figures.iter().map(|f| f.display().to_string()).collect();
    println!(
        "wrote {}, trials.csv, {}, best.toml, best.json, report.html ({:.0}s)",
        out.join("trials.md").display(),
        figures.join(", "),
        started.elapsed().as_secs_f64()
    );
    args.mlflow.log(&[out.join("trials")])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_values_read_as_toml() {
        assert_eq!(toml_value("1e-05").unwrap(), toml::Value::Float(1e-5));
        assert_eq!(toml_value("16").unwrap(), toml::Value::Integer(16));
        assert_eq!(toml_value("[32, 16]").unwrap(), toml::Value::Array(vec![32.into(), 16.into()]));
        assert_eq!(toml_value("\"mlp\"").unwrap(), toml::Value::String("mlp".into()));
        assert!(toml_value("[").is_err());
    }
}
