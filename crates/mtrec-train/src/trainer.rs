//! The training loop.

use std::{
    collections::BTreeMap,
    io::IsTerminal,
    time::{Duration, Instant},
};

use burn::{
    module::Module,
    optim::{ModuleOptimizer, OptimizerRecord},
    store::ModuleRecord,
    tensor::{Bytes, Device, Tensor},
};
use indicatif::{ProgressBar, ProgressStyle};
use mtrec_balance::LossBalancer;
use mtrec_data::{BatchOrder, EncodedTable, MtlDataset, Schema, batches};
use mtrec_model::{MultiTaskModel, MultiTaskNet};

use crate::{
    Checkpoint, EarlyStopping, EpochRecord, ExperimentConfig, RunDirectory, Summary, TaskMetrics, TrainError,
    TrainingState, checkpoint::epoch_seed, collapse_warnings, expert_utilisation, metrics::task_metrics, train_step,
};

/// Trains one experiment on one dataset and device.
pub struct Trainer<'a> {
    config: &'a ExperimentConfig,
    dataset: &'a MtlDataset,
    device: Device,
    run_dir: Option<RunDirectory>,
    verbose: bool,
    resume: bool,
    interrupt_after: Option<usize>,
}

/// Runs `model` (in evaluation mode) over `table` and computes every metric of every task.
pub fn evaluate(
    model: &MultiTaskNet,
    table: &EncodedTable,
    schema: &Schema,
    device: &Device,
    batch_size: usize,
) -> Vec<TaskMetrics> {
    let n_tasks = schema.n_tasks();
    let mut outputs: Vec<Vec<f32>> = vec![Vec::with_capacity(table.n_rows); n_tasks];
    let widths = schema.widths();
    for batch in batches(table, widths, batch_size, BatchOrder::Sequential, device) {
        for (t, out) in model.forward(batch.categorical, batch.dense).into_iter().enumerate() {
            outputs[t].extend(out.output.into_data().try_into_vec::<f32>().expect("f32 outputs"));
        }
    }
    (0..n_tasks).map(|t| task_metrics(schema.tasks[t].kind, &outputs[t], &table.label_column(t, n_tasks))).collect()
}

/// Which split to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The validation split (model selection).
    Valid,
    /// The test split.
    Test,
}

/// The selected model of a run folder (`config.toml` + `best_model.bpk`), in evaluation mode, with
/// its config and dataset (the schema sizes the model); `overrides` are applied to the recorded
/// config first (e.g. `data.dir=...`).
pub fn load_run(
    dir: &std::path::Path,
    overrides: &[String],
) -> Result<(ExperimentConfig, MtlDataset, MultiTaskNet, Device), TrainError> {
    let config = ExperimentConfig::from_file(&dir.join("config.toml"), overrides)?;
    let dataset = config.data.load()?;
    let device = config.device.open().map_err(TrainError::Config)?;
    let path = dir.join("best_model.bpk");
    if !path.exists() {
        return Err(TrainError::Io { path, source: std::io::Error::from(std::io::ErrorKind::NotFound) });
    }
    let model = config
        .build_model(&dataset.schema, &device)?
        .try_load_file(dir.join("best_model"))
        .map_err(|e| TrainError::Io { path: path.clone(), source: std::io::Error::other(e.to_string()) })?
        .valid();
    Ok((config, dataset, model, device))
}

/// Re-evaluates the selected model of a run folder ([`load_run`]) on `split`. Returns the config,
/// the dataset and each task's metrics, in task order.
pub fn evaluate_run(
    dir: &std::path::Path,
    split: Split,
    overrides: &[String],
) -> Result<(ExperimentConfig, MtlDataset, Vec<TaskMetrics>), TrainError> {
    let (config, dataset, model, device) = load_run(dir, overrides)?;
    let table = match split {
        Split::Valid => &dataset.valid,
        Split::Test => &dataset.test,
    };
    let metrics = evaluate(&model, table, &dataset.schema, &device, config.train.eval_batch_size);
    Ok((config, dataset, metrics))
}

fn by_task<T: Clone>(schema: &Schema, values: &[T]) -> BTreeMap<String, T> {
    schema.tasks.iter().map(|t| t.name.clone()).zip(values.iter().cloned()).collect()
}

impl<'a> Trainer<'a> {
    /// A trainer for `config` on `dataset`, computing on `device` (autodiff is added for training).
    pub fn new(config: &'a ExperimentConfig, dataset: &'a MtlDataset, device: Device) -> Self {
        Self { config, dataset, device, run_dir: None, verbose: true, resume: false, interrupt_after: None }
    }

    /// Write the run's files into `dir`.
    pub fn with_run_dir(mut self, dir: RunDirectory) -> Self {
        self.run_dir = Some(dir);
        self
    }

    /// Print a line per epoch (default on).
    pub fn verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }

    /// Continue the run in the run folder from its checkpoint (see [`crate::Checkpoint`]) instead
    /// of starting afresh. The result is the one the uninterrupted run would have given.
    ///
    /// burn's `ModuleOptimizer::load_record` creates Adam's state on `Device::default()` (moved to
    /// the run's device at the next step), which is the GPU when the wgpu feature is compiled in:
    /// set `BURN_DEVICE=flex` where no GPU should be touched (`.cargo/config.toml` does so for
    /// `cargo xtask` and the tests).
    pub fn resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// Stop with [`TrainError::Interrupted`] once epoch `epoch` is checkpointed, as an interrupted
    /// run would (time-boxed sessions; testing resume).
    pub fn interrupt_after(mut self, epoch: usize) -> Self {
        self.interrupt_after = Some(epoch);
        self
    }

    /// Trains, selects the best validation epoch, evaluates it once on test.
    ///
    /// With a run folder, every epoch is checkpointed ([`crate::Checkpoint`]).
    ///
    /// Returns the summary, the per-epoch records and the selected model (evaluation mode).
    pub fn run(self) -> Result<(Summary, Vec<EpochRecord>, MultiTaskNet), TrainError> {
        let (cfg, ds) = (self.config, self.dataset);
        let schema = &ds.schema;
        let n_tasks = schema.n_tasks();
        let kinds = schema.task_kinds();
        let monitored = cfg.train.early_stopping.monitored_tasks(schema)?;
        let mut balancer = cfg.balancer(schema)?;
        let start = Instant::now();

        let device = self.device.clone();
        let ad = device.clone().autodiff();
        device.seed(cfg.seed);
        let mut model = cfg.build_model(schema, &ad)?.materialize();
        let mut optim = cfg.train.optimizer();

        let widths = schema.widths();
        let n_batches = ds.train.n_rows.div_ceil(cfg.train.batch_size);
        let es_cfg = &cfg.train.early_stopping;
        let mut stopper = EarlyStopping::new(es_cfg.higher_is_better(), es_cfg.patience, es_cfg.min_delta);
        let mut records = Vec::new();
        let mut best: Option<(MultiTaskNet, Vec<TaskMetrics>)> = None;
        let mut best_bytes = Vec::new();
        let mut train_time = Duration::ZERO;
        let mut samples = 0usize;
        let mut earlier_wall = 0.0;
        let mut done = 0;
        if self.resume {
            let dir =
                self.run_dir.as_ref().ok_or_else(|| TrainError::Config("resuming needs the run folder".into()))?;
            let restored = restore(dir, cfg, schema, &device, model, optim, balancer.as_mut())?;
            (model, optim, stopper, best, best_bytes) =
                (restored.model, restored.optim, restored.stopper, restored.best, restored.best_bytes);
            let state = restored.state;
            (done, samples, earlier_wall) = (state.epoch, state.samples, state.wall_seconds);
            train_time = Duration::from_secs_f64(state.train_seconds);
            records = dir.truncate_epochs(done)?;
            dir.write_config(cfg)?;
            if self.verbose {
                println!("resuming {} after epoch {done}", dir.path().display());
            }
        }
        let lr = cfg.learning_rates(schema, &model)?;
        let show_bar = self.verbose && std::io::stderr().is_terminal();
        let first = if stopper.should_stop() { cfg.train.epochs + 1 } else { done + 1 };
        let config_toml = cfg.to_toml(); // what every checkpoint records

        for epoch in first..=cfg.train.epochs {
            let epoch_start = Instant::now();
            device.seed(epoch_seed(cfg.seed, epoch));
            let bar = if show_bar {
                let bar = ProgressBar::new(n_batches as u64);
                bar.set_style(
                    ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} batches {per_sec} eta {eta}")
                        .expect("valid template")
                        .progress_chars("=> "),
                );
                bar.set_prefix(format!("{epoch}/{}", cfg.train.epochs));
                bar
            } else {
                ProgressBar::hidden()
            };
            let order = BatchOrder::Shuffled(cfg.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
            let mut loss_sums: Vec<Tensor<1>> = (0..n_tasks).map(|_| Tensor::zeros([1], &device)).collect();
            for batch in batches(&ds.train, widths, cfg.train.batch_size, order, &ad) {
                let task_losses;
                (model, task_losses) = train_step(model, &mut optim, balancer.as_mut(), &batch, &kinds, lr.clone())?;
                for (sum, loss) in loss_sums.iter_mut().zip(task_losses) {
                    *sum = sum.clone() + loss.without_autodiff().mul_scalar(batch.size as f64);
                }
                bar.inc(1);
            }
            let train_losses: Vec<f64> =
                loss_sums.into_iter().map(|s| s.into_scalar::<f32>() as f64 / ds.train.n_rows as f64).collect();
            let epoch_train = epoch_start.elapsed();
            bar.finish_and_clear();
            train_time += epoch_train;
            samples += ds.train.n_rows;
            if let Some((t, &value)) = train_losses.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(TrainError::Diverged { epoch, task: schema.tasks[t].name.clone(), value });
            }
            balancer.end_epoch(&train_losses);

            let eval_model = model.valid();
            let valid = evaluate(&eval_model, &ds.valid, schema, &device, cfg.train.eval_batch_size);
            let monitor =
                monitored.iter().map(|&t| valid[t].get(&es_cfg.metric).copied().unwrap_or(f64::NAN)).sum::<f64>()
                    / monitored.len() as f64;
            let improved = stopper.update(epoch, monitor);
            if improved {
                if let Some(dir) = &self.run_dir {
                    best_bytes = record_bytes(eval_model.clone().into_record(), &dir.best_model_path())?;
                    dir.write_best_model(&best_bytes)?;
                }
                best = Some((eval_model, valid.clone()));
            }
            let record = EpochRecord {
                epoch,
                train_loss: by_task(schema, &train_losses),
                valid: by_task(schema, &valid),
                task_weights: by_task(schema, &balancer.task_weights()),
                task_gradient_norms: balancer.task_gradient_norms().map(|g| by_task(schema, &g)),
                monitor,
                best: improved,
                seconds: epoch_start.elapsed().as_secs_f64(),
                samples_per_sec: ds.train.n_rows as f64 / epoch_train.as_secs_f64(),
            };
            if self.verbose {
                println!("{}", epoch_line(&record, cfg.train.epochs, &es_cfg.metric));
            }
            if let Some(dir) = &self.run_dir {
                dir.append_epoch(&record)?;
                let path = dir.checkpoint_path();
                let optimizer = optim.to_record().into_bytes().map_err(|e| checkpoint_error(&path, e))?;
                Checkpoint {
                    state: TrainingState {
                        epoch,
                        config: config_toml.clone(),
                        balancer: balancer.state(),
                        early_stopping: stopper.clone(),
                        best_valid: best.as_ref().map(|(_, v)| v.clone()),
                        train_seconds: train_time.as_secs_f64(),
                        samples,
                        wall_seconds: earlier_wall + start.elapsed().as_secs_f64(),
                    },
                    model: record_bytes(model.clone().into_record(), &path)?,
                    optimizer: optimizer.to_vec(),
                    best_model: best_bytes.clone(),
                }
                .save(&path)?;
                if self.interrupt_after == Some(epoch) {
                    return Err(TrainError::Interrupted { epoch, dir: dir.path().to_path_buf() });
                }
            }
            records.push(record);
            if stopper.should_stop() {
                break;
            }
        }

        let (best_model, best_valid) = match best {
            Some(b) => b,
            None => {
                let m = model.valid();
                let v = evaluate(&m, &ds.valid, schema, &device, cfg.train.eval_batch_size);
                (m, v)
            }
        };
        let test = evaluate(&best_model, &ds.test, schema, &device, cfg.train.eval_batch_size);
        let utilisation = expert_utilisation(&best_model, &ds.valid, schema, &device, cfg.train.eval_batch_size);
        for line in collapse_warnings(&utilisation) {
            if self.verbose {
                println!("{line}");
            } else {
                tracing::warn!("{line}");
            }
        }
        let epochs_run = records.len();
        let summary = Summary {
            name: cfg.name.clone(),
            dataset: ds.name.clone(),
            model: cfg.model.architecture.name().to_string(),
            balance: balancer.name().to_string(),
            device: cfg.device.name().to_string(),
            seed: cfg.seed,
            parameters: best_model.num_params(),
            best_epoch: stopper.best().map_or(epochs_run, |(_, e)| e),
            epochs_run,
            stopped_early: epochs_run < cfg.train.epochs,
            train_samples_per_sec: samples as f64 / train_time.as_secs_f64(),
            wall_seconds: earlier_wall + start.elapsed().as_secs_f64(),
            valid: by_task(schema, &best_valid),
            test: by_task(schema, &test),
            expert_utilisation: utilisation,
        };
        if let Some(dir) = &self.run_dir {
            dir.write_summary(&summary)?;
            // a figure that cannot be drawn does not fail the run; `cargo xtask plot` redraws them
            if let Err(e) = crate::save_run_figures(dir.path(), &records, &es_cfg.metric, Some(&summary)) {
                tracing::warn!("plots of {}: {e}", dir.path().display());
            }
        }
        Ok((summary, records, best_model))
    }
}

/// What a checkpoint restores.
struct Restored {
    state: TrainingState,
    model: MultiTaskNet,
    optim: ModuleOptimizer,
    stopper: EarlyStopping,
    best: Option<(MultiTaskNet, Vec<TaskMetrics>)>,
    best_bytes: Vec<u8>,
}

/// Loads the run folder's checkpoint into a freshly built `model`, `optim` and `balancer`; rewrites
/// `best_model.bpk` from it (a process killed after saving a new best model but before its
/// checkpoint leaves a newer file there).
fn restore(
    dir: &RunDirectory,
    cfg: &ExperimentConfig,
    schema: &Schema,
    device: &Device,
    model: MultiTaskNet,
    optim: ModuleOptimizer,
    balancer: &mut dyn LossBalancer,
) -> Result<Restored, TrainError> {
    dir.remove_partial_writes()?;
    let path = dir.checkpoint_path();
    let checkpoint = Checkpoint::load(&path)?;
    let state = checkpoint.state;
    let recorded = ExperimentConfig::from_toml(&state.config, "the checkpoint's config", &[])
        .map_err(|e| TrainError::Checkpoint { path: path.clone(), reason: format!("its config: {e}") })?;
    if !recorded.same_run_as(cfg) {
        return Err(TrainError::Checkpoint {
            path,
            reason: "it was written by a different config (only train.epochs and data.dir may change on resume)".into(),
        });
    }
    let load = |model: MultiTaskNet, bytes: Vec<u8>| {
        ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
            .and_then(|record| model.try_load_record(record))
            .map_err(|e| checkpoint_error(&path, e))
    };
    let model = load(model, checkpoint.model)?;
    let optim = optim.load_record(
        OptimizerRecord::from_bytes(Bytes::from_bytes_vec(checkpoint.optimizer))
            .map_err(|e| checkpoint_error(&path, e))?,
    );
    balancer
        .load_state(state.balancer.clone())
        .map_err(|e| TrainError::Checkpoint { path: path.clone(), reason: e.0 })?;
    let best = match &state.best_valid {
        Some(valid) if !checkpoint.best_model.is_empty() => {
            dir.write_best_model(&checkpoint.best_model)?;
            Some((load(cfg.build_model(schema, device)?, checkpoint.best_model.clone())?.valid(), valid.clone()))
        }
        Some(_) => {
            return Err(TrainError::Checkpoint {
                path,
                reason: "it records a best epoch but holds no best model".into(),
            });
        }
        None => None,
    };
    Ok(Restored { stopper: state.early_stopping.clone(), state, model, optim, best, best_bytes: checkpoint.best_model })
}

fn checkpoint_error(path: &std::path::Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint { path: path.to_path_buf(), reason: e.to_string() }
}

fn record_bytes(record: ModuleRecord, path: &std::path::Path) -> Result<Vec<u8>, TrainError> {
    Ok(record.into_bytes().map_err(|e| checkpoint_error(path, e))?.to_vec())
}

fn epoch_line(r: &EpochRecord, epochs: usize, metric: &str) -> String {
    let losses: Vec<String> = r.train_loss.iter().map(|(t, v)| format!("{t} {v:.4}")).collect();
    let valid: Vec<String> = r
        .valid
        .iter()
        .map(|(t, m)| {
            let (name, v) =
                m.get_key_value(metric).or_else(|| m.iter().next()).map_or(("-", f64::NAN), |(k, v)| (k.as_str(), *v));
            format!("{t} {name} {v:.4}")
        })
        .collect();
    format!(
        "epoch {:>3}/{epochs}  train loss: {}  valid: {}  {:.1}s  {:.0} samples/s{}",
        r.epoch,
        losses.join(", "),
        valid.join(", "),
        r.seconds,
        r.samples_per_sec,
        if r.best { "  *best" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DataConfig, DataSource, TrainConfig};
    use mtrec_data::SyntheticConfig;

    fn tiny_config(arch: mtrec_model::Architecture) -> ExperimentConfig {
        ExperimentConfig {
            data: DataConfig {
                source: DataSource::Synthetic,
                synthetic: SyntheticConfig { dim: 10, n_train: 2000, n_valid: 500, n_test: 500, ..Default::default() },
                ..Default::default()
            },
            model: mtrec_model::ModelConfig {
                architecture: arch,
                n_experts: 4,
                expert_hidden: vec![16],
                bottom_hidden: vec![32],
                ..Default::default()
            },
            train: TrainConfig {
                epochs: 8,
                batch_size: 64,
                lr: 3e-3,
                early_stopping: crate::EarlyStoppingConfig {
                    metric: "mse".into(),
                    patience: 100,
                    ..Default::default()
                },
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn short_training_run_lowers_the_loss_and_writes_the_run_files() {
        for arch in [mtrec_model::Architecture::Mmoe, mtrec_model::Architecture::SharedBottom] {
            let cfg = tiny_config(arch);
            let ds = cfg.data.load().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let run = RunDirectory::create(dir.path().join("run"), &cfg).unwrap();
            let (summary, records, _) =
                Trainer::new(&cfg, &ds, Device::flex()).with_run_dir(run).verbose(false).run().unwrap();
            let first = &records[0].train_loss;
            let last = &records.last().unwrap().train_loss;
            for task in ["task1", "task2"] {
                assert!(last[task] < 0.7 * first[task], "{arch:?} {task}: {} → {}", first[task], last[task]);
                // the model must beat predicting the mean: MSE clearly below the label variance
                let labels = ds.test.label_column(if task == "task1" { 0 } else { 1 }, 2);
                let mean = labels.iter().sum::<f32>() / labels.len() as f32;
                let var = labels.iter().map(|y| (y - mean).powi(2)).sum::<f32>() as f64 / labels.len() as f64;
                eprintln!("{arch:?} {task}: test mse {} label var {var}", summary.test[task]["mse"]);
                assert!(
                    summary.test[task]["mse"] < 0.9 * var,
                    "{arch:?} {task}: mse {} var {var}",
                    summary.test[task]["mse"]
                );
            }
            let lines = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
            assert_eq!(lines.lines().count(), 8);
            let s: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.path().join("run/summary.json")).unwrap()).unwrap();
            for key in [
                "model",
                "balance",
                "device",
                "seed",
                "best_epoch",
                "epochs_run",
                "train_samples_per_sec",
                "wall_seconds",
            ] {
                assert!(s.get(key).is_some(), "summary.json lacks {key}");
            }
            assert!(s["test"]["task1"]["mae"].as_f64().unwrap() > 0.0);
            assert!(dir.path().join("run/best_model.bpk").exists());
            assert!(dir.path().join("run/config.toml").exists());
        }
    }

    /// The saved model re-evaluates to the metrics the run reported.
    #[test]
    fn evaluate_run_reproduces_the_summary() {
        let mut cfg = tiny_config(mtrec_model::Architecture::Mmoe);
        cfg.train.epochs = 3;
        let ds = cfg.data.load().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let run = RunDirectory::create(dir.path().join("run"), &cfg).unwrap();
        let (summary, _, _) = Trainer::new(&cfg, &ds, Device::flex()).with_run_dir(run).verbose(false).run().unwrap();
        for (split, reported) in [(Split::Test, &summary.test), (Split::Valid, &summary.valid)] {
            let (_, dataset, metrics) = evaluate_run(&dir.path().join("run"), split, &[]).unwrap();
            for (t, task) in dataset.schema.tasks.iter().enumerate() {
                let (a, b) = (metrics[t]["mse"], reported[&task.name]["mse"]);
                assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{split:?} {}: {a} vs {b}", task.name);
            }
        }
        let err = evaluate_run(&dir.path().join("nothing"), Split::Test, &[]).unwrap_err().to_string();
        assert!(err.contains("config.toml"), "{err}");
    }

    #[test]
    fn early_stopping_on_an_unknown_task_is_a_config_error() {
        let mut cfg = tiny_config(mtrec_model::Architecture::Mmoe);
        cfg.train.early_stopping.task = "income".into();
        let ds = cfg.data.load().unwrap();
        let err = Trainer::new(&cfg, &ds, Device::flex()).verbose(false).run().err().unwrap().to_string();
        assert!(err.contains("train.early_stopping.task"), "{err}");
    }

    /// Every balancer with every architecture: the loss falls, the weights are logged every epoch,
    /// gradient methods log per-task gradient norms.
    #[test]
    fn every_balancer_trains_every_architecture() {
        use mtrec_balance::BalanceMethod::*;
        for arch in [mtrec_model::Architecture::Mmoe, mtrec_model::Architecture::SharedBottom] {
            for method in [Fixed, Uncertainty, Gradnorm, Dwa, Rlw, Pcgrad, Mgda, Cagrad, ImtlG] {
                let mut cfg = tiny_config(arch);
                cfg.train.epochs = 4;
                cfg.balance.method = method;
                let ds = cfg.data.load().unwrap();
                let dir = tempfile::tempdir().unwrap();
                let run = RunDirectory::create(dir.path().join("run"), &cfg).unwrap();
                let (summary, records, _) =
                    Trainer::new(&cfg, &ds, Device::flex()).with_run_dir(run).verbose(false).run().unwrap();
                assert_eq!(summary.balance, method.as_str());
                for task in ["task1", "task2"] {
                    let (first, last) = (records[0].train_loss[task], records[3].train_loss[task]);
                    assert!(last < 0.8 * first, "{arch:?} {method:?} {task}: {first} → {last}");
                }
                let lines = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
                for line in lines.lines() {
                    let r: serde_json::Value = serde_json::from_str(line).unwrap();
                    assert!(r["task_weights"]["task2"].as_f64().unwrap().is_finite(), "{method:?}: {line}");
                    let gradient_based = matches!(method, Gradnorm | Pcgrad | Mgda | Cagrad | ImtlG);
                    assert_eq!(r["task_gradient_norms"]["task1"].is_f64(), gradient_based, "{method:?}: {line}");
                }
                if method == Gradnorm {
                    let w = &records[3].task_weights;
                    assert!((w["task1"] + w["task2"] - 2.0).abs() < 1e-9, "Σw = T: {w:?}");
                }
            }
        }
    }

    #[test]
    fn gradnorm_on_a_batch_norm_model_is_a_config_error_naming_the_keys() {
        let mut cfg = tiny_config(mtrec_model::Architecture::SharedBottom);
        cfg.model.batch_norm = true;
        cfg.balance.method = mtrec_balance::BalanceMethod::Gradnorm;
        let ds = cfg.data.load().unwrap();
        let err = Trainer::new(&cfg, &ds, Device::flex()).verbose(false).run().err().unwrap().to_string();
        assert!(err.contains("balance.gradnorm_layer") && err.contains("model.batch_norm"), "{err}");
        cfg.balance.gradnorm_layer = Some(mtrec_balance::GradNormLayer::Representation);
        cfg.train.epochs = 1;
        Trainer::new(&cfg, &ds, Device::flex()).verbose(false).run().unwrap();
    }

    /// `tasks.task2.lr_scale` scales the learning rate of task 2's own parameters only.
    #[test]
    fn per_task_lr_scale_reaches_only_that_tasks_parameters() {
        use burn::module::{ModuleVisitor, Param, ParamId};
        use mtrec_model::MultiTaskModel;
        struct Values(Vec<(ParamId, Vec<f32>)>);
        impl ModuleVisitor for Values {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.push((param.id, param.val().into_data().try_into_vec::<f32>().unwrap()));
            }
        }
        let values = |m: &MultiTaskNet| {
            let mut v = Values(vec![]);
            m.visit(&mut v);
            v.0
        };
        let mut cfg = tiny_config(mtrec_model::Architecture::Mmoe);
        cfg.tasks.insert("task2".into(), crate::TaskOptions { lr_scale: 1e-3 });
        let ds = cfg.data.load().unwrap();
        let ad = Device::flex().autodiff();
        let mut model = cfg.model.init(&ds.schema, &ad);
        let before = values(&model); // materialises the lazily initialised parameters
        let lr = cfg.learning_rates(&ds.schema, &model).unwrap();
        let mut optim = cfg.train.optimizer();
        let mut balancer = cfg.balancer(&ds.schema).unwrap();
        let kinds = ds.schema.task_kinds();
        for batch in batches(&ds.train, ds.schema.widths(), 64, BatchOrder::Sequential, &ad).take(10) {
            (model, _) = crate::train_step(model, &mut optim, balancer.as_mut(), &batch, &kinds, lr.clone()).unwrap();
        }
        let groups = [model.task_parameters(0), model.task_parameters(1)];
        let after = values(&model);
        let mut moved = [0.0f64; 3]; // task 1, task 2, shared: largest |Δ|
        assert_eq!(before.len(), after.len());
        for ((id0, a), (id, b)) in before.iter().zip(&after) {
            assert_eq!(id0, id);
            let slot = if groups[0].matches(id, None) {
                0
            } else if groups[1].matches(id, None) {
                1
            } else {
                2
            };
            let delta = a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max);
            moved[slot] = moved[slot].max(delta);
        }
        assert!(moved[1] < 0.02 * moved[0] && moved[1] < 0.02 * moved[2] && moved[1] > 0.0, "{moved:?}");
        cfg.tasks.insert("task9".into(), crate::TaskOptions::default());
        let err = Trainer::new(&cfg, &ds, Device::flex()).verbose(false).run().err().unwrap().to_string();
        assert!(err.contains("tasks.task9"), "{err}");
    }
}
