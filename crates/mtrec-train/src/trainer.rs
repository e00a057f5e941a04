//! The training loop.

mod progress_lines;
mod task_warnings;
#[cfg(test)]
pub(crate) mod tests;

use progress_lines::{epoch_line, within_epoch_line};
use task_warnings::{dead_head_warnings, dead_task_warnings};

use std::{
    collections::BTreeMap,
    io::IsTerminal,
    time::{Duration, Instant},
};

use burn::{
    module::Module,
    tensor::{Device, Tensor},
};
use indicatif::{ProgressBar, ProgressStyle};
use mtrec_balance::LossBalancer;
use mtrec_data::{BatchOrder, EncodedTable, MtlDataset, Schema, SplitRows, TaskKind};
use mtrec_model::{MultiTaskModule, MultiTaskNet, NoCustom};

use crate::{
    Checkpoint, DataParallel, DataParallelStats, EarlyStopping, EpochRecord, ExperimentConfig, Optimizers, Registry,
    RunDirectory, Split, Summary, TaskMetrics, TrainError, TrainingState, WithinEpochValidation, adversarial_probe,
    checkpoint::epoch_seed,
    collapse_warnings, data_parallel_step, evaluate_sharded, expert_utilisation,
    restore::{checkpoint_error, initialise_parameters, record_bytes, restore},
};

/// Trains one experiment on one dataset (in memory, or streamed from chunk files) and device.
///
/// The model and the balancer are the ones the config names, built through a [`Registry`]: the
/// built-ins, or a user's own architecture `C` and balancers registered by name
/// ([`Self::with_registry`]).
pub struct Trainer<'a, S: SplitRows = EncodedTable, C: MultiTaskModule = NoCustom> {
    registry: &'a Registry<C>,
    config: &'a ExperimentConfig,
    dataset: &'a MtlDataset<S>,
    device: Device,
    run_dir: Option<RunDirectory>,
    verbose: bool,
    resume: bool,
    interrupt_after: Option<usize>,
    parallel: DataParallel,
}

fn by_task<T: Clone>(schema: &Schema, values: &[T]) -> BTreeMap<String, T> {
    schema.tasks.iter().map(|t| t.name.clone()).zip(values.iter().cloned()).collect()
}

/// Pair values `(i, j)`, `i < j` in order, keyed by the tasks' names `"a~b"`.
fn by_task_pair(schema: &Schema, values: &[f64]) -> BTreeMap<String, f64> {
    let names: Vec<&str> = schema.tasks.iter().map(|t| t.name.as_str()).collect();
    let pairs = (0..names.len()).flat_map(|i| (i + 1..names.len()).map(move |j| (i, j)));
    pairs.zip(values).map(|((i, j), &v)| (format!("{}~{}", names[i], names[j]), v)).collect()
}

/// A step's TensorBoard scalars of the tasks' gradients on the text encoder's parameters: each
/// measured task's norm and each measured pair's cosine.
fn encoder_gradient_scalars(schema: &Schema, gram: &[Vec<f64>], measured: &[bool]) -> Vec<(String, f64)> {
    let names: Vec<&str> = schema.tasks.iter().map(|t| t.name.as_str()).collect();
    let mut scalars: Vec<(String, f64)> = (0..names.len())
        .filter(|&t| measured[t])
        .map(|t| (format!("step/encoder_gradient_norm/{}", names[t]), gram[t][t].max(0.0).sqrt()))
        .collect();
    let pairs = (0..names.len()).flat_map(|i| (i + 1..names.len()).map(move |j| (i, j)));
    for ((i, j), cosine) in pairs.zip(mtrec_balance::pair_cosines(gram)) {
        if measured[i] && measured[j] && cosine.is_finite() {
            scalars.push((format!("step/encoder_gradient_cosine/{}~{}", names[i], names[j]), cosine));
        }
    }
    scalars
}

/// The value early stopping monitors: the mean of `metric` over the monitored tasks that have it
/// this epoch (a task whose validation split holds one class has no AUC), with the names of the
/// tasks left out. An error when none has it.
fn monitored_value(
    valid: &[TaskMetrics],
    monitored: &[usize],
    metric: &str,
    schema: &Schema,
) -> Result<(f64, Vec<String>), TrainError> {
    let (present, missing): (Vec<usize>, Vec<usize>) = monitored.iter().partition(|&&t| valid[t].contains_key(metric));
    if present.is_empty() {
        let names: Vec<&str> = missing.iter().map(|&t| schema.tasks[t].name.as_str()).collect();
        return Err(TrainError::Config(format!(
            "train.early_stopping: no monitored task has a validation {metric} (tasks {names:?}: is their \
             validation split all one class?); monitor another metric or task"
        )));
    }
    let mean = present.iter().map(|&t| valid[t][metric]).sum::<f64>() / present.len() as f64;
    Ok((mean, missing.iter().map(|&t| schema.tasks[t].name.clone()).collect()))
}

/// The trained model, each task's mean training loss, the validations within the epoch and the
/// time they took.
type EpochOutcome<C> = (MultiTaskNet<C>, Vec<f64>, Vec<WithinEpochValidation>, Duration);

/// What model selection needs at every validation: the monitored tasks, and whether the warning
/// about tasks without the metric was given.
struct Selection<'s> {
    monitored: &'s [usize],
    skipped_warned: &'s mut bool,
}

/// What the loop carries from epoch to epoch.
struct LoopState<C: MultiTaskModule> {
    optim: Optimizers,
    balancer: Box<dyn LossBalancer>,
    stopper: EarlyStopping,
    best: Option<(MultiTaskNet<C>, Vec<TaskMetrics>)>,
    best_bytes: Vec<u8>,
    records: Vec<EpochRecord>,
    train_time: Duration,
    samples: usize,
    earlier_wall: f64,
    done: usize,
    /// This process's training time (a resumed run's `train_time` includes the earlier ones') and
    /// the part of it spent in collective operations.
    steps_time: Duration,
    steps_communication: Duration,
    /// Adversarial heads that stopped learning, and the warnings said about them (a resumed run
    /// replays the logged epochs into them).
    dead_heads: crate::DeadHeadDetector,
    /// Main tasks whose predictions went constant (the same replay on resume).
    dead_tasks: crate::dead_task::DeadTaskDetector,
    warnings: Vec<String>,
    /// The run's TensorBoard event file (rank 0 of a run with a folder).
    events: Option<crate::EventWriter>,
    /// `train.encoder_gradients_every`: the tasks' gradients on the text encoder's parameters.
    encoder_gradients: crate::encoder_gradients::EncoderGradientLog,
}

impl<'a, S: SplitRows> Trainer<'a, S, NoCustom> {
    /// A trainer for `config` on `dataset`, computing on `device` (autodiff is added for training),
    /// with the built-in architectures and balancers.
    pub fn new(config: &'a ExperimentConfig, dataset: &'a MtlDataset<S>, device: Device) -> Self {
        Self {
            registry: Registry::builtin(),
            config,
            dataset,
            device,
            run_dir: None,
            verbose: true,
            resume: false,
            interrupt_after: None,
            parallel: DataParallel::single(),
        }
    }
}

impl<'a, S: SplitRows, C: MultiTaskModule> Trainer<'a, S, C> {
    /// Builds the model and the balancer through `registry`: the names the config gives
    /// (`model.architecture`, `balance.method`) may be the ones it registered.
    pub fn with_registry<D: MultiTaskModule>(self, registry: &'a Registry<D>) -> Trainer<'a, S, D> {
        Trainer {
            registry,
            config: self.config,
            dataset: self.dataset,
            device: self.device,
            run_dir: self.run_dir,
            verbose: self.verbose,
            resume: self.resume,
            interrupt_after: self.interrupt_after,
            parallel: self.parallel,
        }
    }

    /// Train data-parallel over `parallel`'s ranks (see [`DataParallel`]): every rank runs the
    /// trainer with the same config, data and run folder; rank 0 alone writes the folder's files.
    pub fn with_data_parallel(mut self, parallel: DataParallel) -> Self {
        self.parallel = parallel;
        self
    }

    /// The run folder, on the rank that writes it.
    fn writer(&self) -> Option<&RunDirectory> {
        self.run_dir.as_ref().filter(|_| self.parallel.is_root())
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
    /// the run's device at the next step), which is the GPU when a GPU feature is compiled in:
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

    /// Whether this trainer prints its progress: when verbose, on rank 0 (the ranks train alike:
    /// rank 0 speaks for them).
    fn prints(&self) -> bool {
        self.verbose && self.parallel.is_root()
    }

    /// Prints a line when verbose, logs it otherwise (on rank 0).
    fn say(&self, line: &str) {
        if self.prints() {
            println!("{line}");
        } else if self.parallel.is_root() {
            tracing::warn!("{line}");
        }
    }

    /// Trains, selects the best validation epoch, evaluates it once on test.
    ///
    /// With a run folder, every epoch is checkpointed ([`crate::Checkpoint`]).
    ///
    /// Returns the summary, the per-epoch records and the selected model (evaluation mode).
    pub fn run(self) -> Result<(Summary, Vec<EpochRecord>, MultiTaskNet<C>), TrainError> {
        let (cfg, schema) = (self.config, &self.dataset.schema);
        let monitored = cfg.train.early_stopping.monitored_tasks(schema)?;
        cfg.check_dataset(self.dataset)?;
        self.check_data_parallel()?;
        // Adam's moments of parameters without gradient decay into subnormals, ~100× slower on x86
        mtrec_kernels::flush_denormals();
        let start = Instant::now();
        let (model, mut state) = self.start()?;
        let tables = crate::EmbeddingTableUse::of(cfg, schema);
        let notes: Vec<String> = tables.iter().map(crate::EmbeddingTableUse::describe).collect();
        if self.prints() {
            notes.iter().for_each(|n| println!("{n}"));
        }
        if let Some(dir) = self.writer() {
            dir.write_config_with_notes(cfg, &notes)?;
            // a new event file holds the run's history: a resumed run rewrites its kept epochs (the
            // step scalars before the resume go), a rerun into the folder starts over
            for old in crate::event_files(dir.path())? {
                std::fs::remove_file(&old).map_err(|source| TrainError::Io { path: old.clone(), source })?;
            }
            let mut events = crate::EventWriter::create(dir.path())?;
            for record in &state.records {
                crate::write_epoch(&mut events, record)?;
            }
            state.events = Some(events);
        }
        // every rank starts from rank 0's parameters
        let mut model = self.parallel.broadcast_parameters(model);
        if state.done == 0 {
            self.refit_erasers(&mut model)?; // a resumed run's eraser is the checkpoint's
        }
        let first = if state.stopper.should_stop() { cfg.train.epochs + 1 } else { state.done + 1 };
        let lr = cfg.learning_rates(schema, &model)?;
        let config_toml = cfg.to_toml(); // what every checkpoint records
        let mut skipped_warned = false;
        for epoch in first..=cfg.train.epochs {
            let (epoch_start, communication) = (Instant::now(), self.parallel.communication_time());
            let (train_losses, within_epoch, validating);
            let mut selection = Selection { monitored: &monitored, skipped_warned: &mut skipped_warned };
            (model, train_losses, within_epoch, validating) =
                self.train_epoch(epoch, model, &mut state, &lr, &mut selection)?;
            let epoch_train = epoch_start.elapsed() - validating;
            state.train_time += epoch_train;
            state.steps_time += epoch_train;
            state.steps_communication += self.parallel.communication_time() - communication;
            state.samples += self.dataset.train.n_rows();
            state.balancer.end_epoch(&train_losses);
            state.encoder_gradients.log.end_epoch();

            let point = epoch * cfg.train.evals_per_epoch;
            self.refit_erasers(&mut model)?;
            let (valid, monitor, improved) =
                self.validate(epoch, point, &model, &mut state, &monitored, &mut skipped_warned)?;
            let fired = dead_head_warnings(&mut state, schema, epoch, &valid);
            for (_, warning) in &fired {
                self.say(warning);
            }
            for warning in dead_task_warnings(&mut state, schema, epoch, &valid) {
                self.say(&warning);
            }
            if cfg.model.adversary_restart && !fired.is_empty() {
                let tasks: Vec<usize> = fired.iter().map(|(t, _)| *t).collect();
                crate::restart_heads(&mut model, &tasks, &cfg.model, schema, &self.device.clone().autodiff());
                for &t in &tasks {
                    let name = &schema.tasks[t].name;
                    self.say(&format!(
                        "epoch {epoch}: the adversarial head `{name}` restarts from a fresh initialisation"
                    ));
                }
                model = self.parallel.broadcast_parameters(model); // every rank continues with rank 0's head
            }
            let record = EpochRecord {
                epoch,
                train_loss: by_task(schema, &train_losses),
                valid: by_task(schema, &valid),
                task_weights: by_task(schema, &state.balancer.task_weights()),
                task_gradient_norms: state.balancer.task_gradient_norms().map(|g| by_task(schema, &g)),
                task_gradient_cosines: state.balancer.task_gradient_cosines().map(|c| by_task_pair(schema, &c)),
                task_gradient_conflicts: state.balancer.task_gradient_conflicts().map(|c| by_task_pair(schema, &c)),
                encoder_gradient_cosines: state.encoder_gradients.log.cosines().map(|c| by_task_pair(schema, &c)),
                encoder_gradient_conflicts: state.encoder_gradients.log.conflicts().map(|c| by_task_pair(schema, &c)),
                encoder_gradient_norms: state.encoder_gradients.log.norms().map(|g| by_task(schema, &g)),
                learning_rates: cfg.learning_rate_values_at(epoch as f64 / cfg.train.epochs as f64),
                monitor,
                best: improved,
                within_epoch,
                seconds: epoch_start.elapsed().as_secs_f64(),
                samples_per_sec: self.dataset.train.n_rows() as f64 / epoch_train.as_secs_f64(),
            };
            if self.prints() {
                println!("{}", epoch_line(&record, cfg.train.epochs, &cfg.train.early_stopping.metric));
            }
            if let Some(events) = state.events.as_mut() {
                crate::write_epoch(events, &record)?;
            }
            self.save_epoch(&record, &model, &state, &config_toml, start)?;
            state.records.push(record);
            if state.stopper.should_stop() {
                break;
            }
        }
        self.finish(model, state, start)
    }

    /// Refits the model's concept erasers (`model.erasure`) on the training rows.
    fn refit_erasers(&self, model: &mut MultiTaskNet<C>) -> Result<(), TrainError> {
        let ds = self.dataset;
        let batch_size = self.config.train.eval_batch_size;
        crate::refit_erasers(model, &ds.train, ds.schema.widths(), ds.schema.n_tasks(), batch_size)
    }

    /// The dead-head detector of the binary adversarial tasks, with their validation label rates.
    fn dead_head_detector(&self) -> Result<crate::DeadHeadDetector, TrainError> {
        let schema = &self.dataset.schema;
        let heads: Vec<usize> = (0..schema.n_tasks())
            .filter(|&t| schema.tasks[t].adversarial && schema.tasks[t].kind == TaskKind::Binary)
            .collect();
        if heads.is_empty() {
            return Ok(crate::DeadHeadDetector::default());
        }
        let rates = self.dataset.valid.label_means(schema.n_tasks())?;
        Ok(crate::DeadHeadDetector::new(heads.into_iter().map(|t| (t, rates[t]))))
    }

    /// The dead-task detector of the binary main tasks ([`crate::dead_task`]).
    fn dead_task_detector(&self) -> Result<crate::dead_task::DeadTaskDetector, TrainError> {
        let schema = &self.dataset.schema;
        if !schema.tasks.iter().any(|t| t.kind == TaskKind::Binary && !t.adversarial) {
            return Ok(crate::dead_task::DeadTaskDetector::default());
        }
        let rates = self.dataset.valid.label_means(schema.n_tasks())?;
        Ok(crate::dead_task::DeadTaskDetector::new(schema, &rates))
    }

    /// What data-parallel training cannot do.
    fn check_data_parallel(&self) -> Result<(), TrainError> {
        match self.config.model.batch_statistics() {
            Some((what, instead)) if self.parallel.size() > 1 => Err(TrainError::Config(format!(
                "{what} cannot train data-parallel: each rank would keep running statistics of its own shard; {instead}"
            ))),
            _ => Ok(()),
        }
    }

    /// Evaluates the model on validation and lets early stopping judge it as validation `point`
    /// (1-based over the run: `train.evals_per_epoch` an epoch); keeps it (and writes
    /// `best_model.bpk`) when it is the best so far. Returns the validation metrics, the
    /// monitored value and whether it improved.
    fn validate(
        &self,
        epoch: usize,
        point: usize,
        model: &MultiTaskNet<C>,
        state: &mut LoopState<C>,
        monitored: &[usize],
        skipped_warned: &mut bool,
    ) -> Result<(Vec<TaskMetrics>, f64, bool), TrainError> {
        let (cfg, schema) = (self.config, &self.dataset.schema);
        let eval_model = model.valid();
        let valid = self.evaluate(&eval_model, Split::Valid)?;
        let metric = &cfg.train.early_stopping.metric;
        let (monitor, skipped) = monitored_value(&valid, monitored, metric, schema)?;
        if !skipped.is_empty() && !*skipped_warned {
            self.say(&format!(
                "warning: epoch {epoch}: {skipped:?} have no validation {metric} (one class?); the monitored mean \
                 leaves them out"
            ));
            *skipped_warned = true;
        }
        let improved = state.stopper.update(point, monitor);
        if improved {
            if let Some(dir) = self.writer() {
                state.best_bytes = record_bytes(eval_model.clone().into_record(), &dir.best_model_path())?;
                dir.write_best_model(&state.best_bytes)?;
            }
            state.best = Some((eval_model, valid.clone()));
        }
        Ok((valid, monitor, improved))
    }

    /// Appends the epoch's record and writes its checkpoint (rank 0); stops the run here when asked
    /// to ([`Self::interrupt_after`]).
    fn save_epoch(
        &self,
        record: &EpochRecord,
        model: &MultiTaskNet<C>,
        state: &LoopState<C>,
        config_toml: &str,
        start: Instant,
    ) -> Result<(), TrainError> {
        let Some(dir) = &self.run_dir else { return Ok(()) };
        if let Some(dir) = self.writer() {
            dir.append_epoch(record)?;
            self.checkpoint(dir, record.epoch, model, state, config_toml, start)?;
        }
        if self.interrupt_after == Some(record.epoch) {
            return Err(TrainError::Interrupted { epoch: record.epoch, dir: dir.path().to_path_buf() });
        }
        Ok(())
    }

    /// A fresh model, optimiser and balancer, or those of the run folder's checkpoint.
    fn start(&self) -> Result<(MultiTaskNet<C>, LoopState<C>), TrainError> {
        let (cfg, schema) = (self.config, &self.dataset.schema);
        let device = &self.device;
        let es = &cfg.train.early_stopping;
        // rank 0 draws the initial parameters (the others receive them) before any other rank
        // touches the generator: ranks that are threads of one process share it
        // a regression head starts at the training label mean (its scale is the data's, not 0)
        let regression = schema.tasks.iter().any(|t| t.kind == TaskKind::Regression);
        let means = if regression { self.dataset.train.label_means(schema.n_tasks())? } else { vec![] };
        let biases: Vec<Option<f32>> = (schema.tasks.iter().enumerate())
            .map(|(t, task)| (task.kind == TaskKind::Regression).then(|| means[t] as f32))
            .collect();
        let model = self.parallel.root_first(|| {
            device.seed(cfg.seed);
            let model = cfg.build_model_with(schema, &device.clone().autodiff(), self.registry)?;
            initialise_parameters(&model);
            Ok::<_, TrainError>(model.with_output_biases(&biases))
        })?;
        let mut state = LoopState {
            balancer: self.registry.build_balancer(cfg, schema)?,
            optim: cfg.optimizers(&model),
            stopper: EarlyStopping::new(es.higher_is_better(), es.patience, es.min_delta),
            best: None,
            best_bytes: Vec::new(),
            records: Vec::new(),
            train_time: Duration::ZERO,
            steps_time: Duration::ZERO,
            steps_communication: Duration::ZERO,
            samples: 0,
            earlier_wall: 0.0,
            done: 0,
            dead_heads: self.dead_head_detector()?,
            dead_tasks: self.dead_task_detector()?,
            warnings: Vec::new(),
            events: None,
            encoder_gradients: crate::encoder_gradients::EncoderGradientLog {
                every: cfg.train.encoder_gradients_every,
                seed: cfg.seed,
                ..Default::default()
            },
        };
        if !self.resume {
            return Ok((model, state));
        }
        let dir = self.run_dir.as_ref().ok_or_else(|| TrainError::Config("resuming needs the run folder".into()))?;
        let write = self.parallel.is_root();
        let restored = restore(dir, write, cfg, schema, device, model, state.balancer.as_mut(), self.registry)?;
        let saved = restored.state;
        state.optim = restored.optim;
        state.stopper = restored.stopper;
        state.best = restored.best;
        state.best_bytes = restored.best_bytes;
        (state.done, state.samples, state.earlier_wall) = (saved.epoch, saved.samples, saved.wall_seconds);
        state.train_time = Duration::from_secs_f64(saved.train_seconds);
        if write {
            state.records = dir.truncate_epochs(saved.epoch)?;
            dir.write_config(cfg)?;
            // the dead-head counts and warnings of the epochs before, as the uninterrupted run has them
            for record in std::mem::take(&mut state.records) {
                let valid: Vec<TaskMetrics> =
                    schema.tasks.iter().map(|t| record.valid.get(&t.name).cloned().unwrap_or_default()).collect();
                dead_head_warnings(&mut state, schema, record.epoch, &valid);
                dead_task_warnings(&mut state, schema, record.epoch, &valid);
                state.records.push(record);
            }
        }
        if self.prints() {
            println!("resuming {} after epoch {}", dir.path().display(), saved.epoch);
        }
        Ok((restored.model, state))
    }

    /// One epoch of training steps, validating after each `1/k` of them when
    /// `train.evals_per_epoch = k > 1`; returns each task's mean training loss, the validations
    /// within the epoch and the time they took.
    ///
    /// Reseeds the backend's generator from (seed, epoch) and draws the epoch's batch order from them;
    /// sets the adversarial reversal weight of its schedule before every step.
    fn train_epoch(
        &self,
        epoch: usize,
        mut model: MultiTaskNet<C>,
        state: &mut LoopState<C>,
        lr: &burn::lr_scheduler::module_lr_scheduler::ModuleLearningRate,
        selection: &mut Selection<'_>,
    ) -> Result<EpochOutcome<C>, TrainError> {
        let (cfg, ds) = (self.config, self.dataset);
        let schema = &ds.schema;
        let kinds = schema.task_kinds();
        let n_batches = ds.train.n_rows().div_ceil(cfg.train.batch_size);
        self.device.seed(epoch_seed(cfg.seed, epoch));
        let bar = self.progress_bar(epoch, n_batches);
        let ad = self.device.clone().autodiff();
        let order = BatchOrder::Shuffled(cfg.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
        let mut loss_sums: Vec<Tensor<1>> = (0..kinds.len()).map(|_| Tensor::zeros([1], &self.device)).collect();
        let mut labelled_rows = vec![0.0f64; kinds.len()];
        let parallel = &self.parallel;
        let all_steps = (cfg.train.epochs * n_batches) as f64;
        let k = cfg.train.evals_per_epoch;
        // the validations within the epoch: after batch ⌈j·n/k⌉, j = 1..k (the k-th is the end's)
        let within_points: Vec<usize> = (1..k).map(|j| (j * n_batches).div_ceil(k)).collect();
        let (mut within_epoch, mut validating) = (Vec::new(), Duration::ZERO);
        // the last step scalars: when, after which batch, the validating time by then
        let mut logged = (Instant::now(), 0usize, Duration::ZERO);
        for (b, batch) in ds.train.stream(schema.widths(), cfg.train.batch_size, order, &ad).enumerate() {
            let batch = batch?;
            let progress = ((epoch - 1) * n_batches + b) as f64 / all_steps;
            let m = &cfg.model;
            model.set_adversarial_weight(m.adversarial_schedule.lambda(m.adversarial_weight, progress));
            // a trainable text encoder's learning rate follows its warm-up and decay
            let lr = if m.text.trains() { cfg.learning_rates_at(schema, &model, progress)? } else { lr.clone() };
            let step = (epoch - 1) * n_batches + b + 1;
            // measured on the model this step updates, before its update
            if let Some((gram, measured)) = state.encoder_gradients.measure(step, &model, &batch, &kinds)
                && let Some(events) = state.events.as_mut()
            {
                let pairs = encoder_gradient_scalars(schema, &gram, &measured);
                events.scalars(step as i64, pairs.iter().map(|(t, v)| (t.as_str(), *v)))?;
            }
            let (task_losses, rows);
            (model, task_losses, rows) = data_parallel_step(
                model,
                &mut state.optim,
                state.balancer.as_mut(),
                &batch,
                &kinds,
                lr.clone(),
                parallel,
            )?;
            model = crate::adversary_steps(model, &mut state.optim, &batch, &kinds, &lr, parallel, m.adversary_steps);
            let every = cfg.train.log_every_steps;
            if let Some(events) = state.events.as_mut().filter(|_| every > 0 && step.is_multiple_of(every)) {
                let seconds = (logged.0.elapsed() - (validating - logged.2)).as_secs_f64();
                let rows_since = (b + 1 - logged.1) * cfg.train.batch_size;
                logged = (Instant::now(), b + 1, validating);
                let tasks = schema.tasks.iter().map(|t| t.name.as_str());
                let losses: Vec<(String, f64)> = tasks
                    .clone()
                    .zip(&task_losses)
                    .enumerate()
                    .filter(|&(t, _)| batch.task_rows(t) > 0) // a task labelled on no row of the batch
                    .map(|(_, (t, l))| {
                        (format!("step/loss/{t}"), l.clone().without_autodiff().into_scalar::<f32>() as f64)
                    })
                    .collect();
                let weights =
                    tasks.zip(state.balancer.task_weights()).map(|(t, w)| (format!("step/task_weight/{t}"), w));
                let mut scalars: Vec<(String, f64)> = losses.into_iter().chain(weights).collect();
                let gates = crate::utilisation::batch_gate_entropies(&model, &batch.features);
                for (task, entropy) in schema.tasks.iter().zip(gates) {
                    scalars.extend(entropy.map(|e| (format!("step/gate_entropy/{}", task.name), e)));
                }
                scalars.push(("step/samples_per_sec".into(), rows_since as f64 / seconds.max(1e-9)));
                events.scalars(step as i64, scalars.iter().map(|(t, v)| (t.as_str(), *v)))?;
            }
            if m.erasure_refit_steps > 0 && step.is_multiple_of(m.erasure_refit_steps) {
                self.refit_erasers(&mut model)?;
            }
            // a task's epoch loss is the mean over the rows holding its label: each batch's loss
            // weighs by its labelled rows (this rank's share of them)
            let share = rows / batch.size as f64;
            for (t, (sum, loss)) in loss_sums.iter_mut().zip(task_losses).enumerate() {
                let labelled = share * batch.task_rows(t) as f64;
                *sum = sum.clone() + loss.without_autodiff().mul_scalar(labelled);
                labelled_rows[t] += labelled;
            }
            bar.inc(1);
            if let Some(j) = within_points.iter().position(|&p| p == b + 1) {
                let started = Instant::now();
                let point = (epoch - 1) * k + j + 1;
                self.refit_erasers(&mut model)?;
                let (valid, monitor, best) =
                    self.validate(epoch, point, &model, state, selection.monitored, selection.skipped_warned)?;
                let v = WithinEpochValidation {
                    epochs: (epoch - 1) as f64 + (j + 1) as f64 / k as f64,
                    batches: b + 1,
                    valid: by_task(schema, &valid),
                    monitor,
                    best,
                };
                if self.prints() {
                    bar.suspend(|| println!("{}", within_epoch_line(&v, &cfg.train.early_stopping.metric)));
                }
                within_epoch.push(v);
                validating += started.elapsed();
            }
        }
        bar.finish_and_clear();
        let mut losses: Vec<f64> = loss_sums.into_iter().map(|s| s.into_scalar::<f32>() as f64).collect();
        losses.extend(labelled_rows);
        parallel.sum_f64(&mut losses); // every rank's rows
        let labelled_rows = losses.split_off(kinds.len());
        // a task labelled on no training row has no epoch loss (NaN; balancers skip it)
        losses.iter_mut().zip(&labelled_rows).for_each(|(l, &n)| *l = if n > 0.0 { *l / n } else { f64::NAN });
        let labelled = |t: usize| labelled_rows[t] > 0.0;
        if let Some((t, &value)) = losses.iter().enumerate().find(|&(t, v)| labelled(t) && !v.is_finite()) {
            return Err(TrainError::Diverged { epoch, task: schema.tasks[t].name.clone(), value });
        }
        Ok((model, losses, within_epoch, validating))
    }

    fn progress_bar(&self, epoch: usize, n_batches: usize) -> ProgressBar {
        if !(self.prints() && std::io::stderr().is_terminal()) {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(n_batches as u64);
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} batches {per_sec} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{epoch}/{}", self.config.train.epochs));
        bar
    }

    fn evaluate(&self, model: &MultiTaskNet<C>, split: Split) -> Result<Vec<TaskMetrics>, TrainError> {
        let ds = self.dataset;
        let batch_size = self.config.train.eval_batch_size;
        let fairness = self.config.fairness.column(&ds.schema)?;
        evaluate_sharded(model, split.of(ds), split, &ds.schema, &self.device, batch_size, &self.parallel, fairness)
            .map(|(metrics, _)| metrics)
    }

    /// Writes the epoch's checkpoint.
    fn checkpoint(
        &self,
        dir: &RunDirectory,
        epoch: usize,
        model: &MultiTaskNet<C>,
        state: &LoopState<C>,
        config_toml: &str,
        start: Instant,
    ) -> Result<(), TrainError> {
        let path = dir.checkpoint_path();
        let optimizer = state.optim.dense.to_record().into_bytes().map_err(|e| checkpoint_error(&path, e))?;
        Checkpoint {
            state: TrainingState {
                epoch,
                config: config_toml.to_string(),
                balancer: state.balancer.state(),
                early_stopping: state.stopper.clone(),
                best_valid: state.best.as_ref().map(|(_, v)| v.clone()),
                train_seconds: state.train_time.as_secs_f64(),
                samples: state.samples,
                wall_seconds: state.earlier_wall + start.elapsed().as_secs_f64(),
            },
            model: record_bytes(model.clone().into_record(), &path)?,
            optimizer: optimizer.to_vec(),
            best_model: state.best_bytes.clone(),
            sparse_optimizer: state.optim.sparse.state_bytes(),
        }
        .save(&path)
    }

    /// Evaluates the selected model once on test, probes its representation for adversarial
    /// targets, writes the summary and figures.
    fn finish(
        self,
        model: MultiTaskNet<C>,
        state: LoopState<C>,
        start: Instant,
    ) -> Result<(Summary, Vec<EpochRecord>, MultiTaskNet<C>), TrainError> {
        let (cfg, ds) = (self.config, self.dataset);
        let schema = &ds.schema;
        let (best_model, best_valid) = match state.best {
            Some(b) => b,
            None => {
                let m = model.valid();
                let v = self.evaluate(&m, Split::Valid)?;
                (m, v)
            }
        };
        // `train.evaluate_test = false` (a tuner's trials): the test split stays unseen
        let test = if cfg.train.evaluate_test { self.evaluate(&best_model, Split::Test)? } else { Vec::new() };
        let communication = state.steps_communication.as_secs_f64();
        let data_parallel = (self.parallel.size() > 1).then(|| DataParallelStats {
            ranks: self.parallel.size(),
            communication_seconds: communication,
            communication_share: communication / state.steps_time.as_secs_f64().max(f64::MIN_POSITIVE),
        });
        let (utilisation, probe) = self.diagnostics(&best_model)?;
        let records = state.records;
        let epochs_run = records.len();
        let k = cfg.train.evals_per_epoch;
        let summary = Summary {
            name: cfg.name.clone(),
            dataset: ds.name.clone(),
            model: cfg.model.architecture.name().to_string(),
            balance: state.balancer.name().to_string(),
            device: cfg.device.name().to_string(),
            seed: cfg.seed,
            parameters: best_model.num_params(),
            best_epoch: state.stopper.best().map_or(epochs_run, |(_, point)| point.div_ceil(k)),
            best_after_epochs: (k > 1)
                .then(|| state.stopper.best().map_or(epochs_run as f64, |(_, point)| point as f64 / k as f64)),
            epochs_run,
            stopped_early: epochs_run < cfg.train.epochs,
            train_samples_per_sec: state.samples as f64 / state.train_time.as_secs_f64(),
            wall_seconds: state.earlier_wall + start.elapsed().as_secs_f64(),
            valid: by_task(schema, &best_valid),
            test: by_task(schema, &test),
            expert_utilisation: utilisation,
            adversarial_probe: probe,
            gradient_conflict: crate::PairConflict::of_run(&records),
            encoder_gradient_conflict: crate::PairConflict::on_encoder(&records),
            data_parallel,
            embedding_tables: crate::EmbeddingTableUse::of(cfg, &ds.schema),
            warnings: state.warnings,
        };
        if let Some(dir) = self.writer() {
            dir.write_summary(&summary)?;
            // a figure that cannot be drawn does not fail the run; `cargo xtask plot` redraws them
            let metric = &cfg.train.early_stopping.metric;
            // drawn once, for their files and for report.html
            let figures = crate::run_figures(&records, metric, Some(&summary));
            if let Err(e) = crate::save_figures(dir.path(), &figures) {
                tracing::warn!("plots of {}: {e}", dir.path().display());
            }
            if let Err(e) = crate::write_run_report(dir.path(), &records, &summary, &figures) {
                tracing::warn!("report.html of {}: {e}", dir.path().display());
            }
        }
        Ok((summary, records, best_model))
    }

    /// The selected model's gate statistics and adversarial probe, with their warnings: rank 0's,
    /// for its summary (the other ranks skip them).
    fn diagnostics(&self, best_model: &MultiTaskNet<C>) -> Result<Diagnostics, TrainError> {
        if !self.parallel.is_root() {
            return Ok((BTreeMap::new(), BTreeMap::new()));
        }
        let (cfg, ds) = (self.config, self.dataset);
        let batch_size = cfg.train.eval_batch_size;
        let utilisation = expert_utilisation(best_model, &ds.valid, &ds.schema, &self.device, batch_size)?;
        for line in collapse_warnings(&utilisation) {
            self.say(&line);
        }
        let probe = adversarial_probe(best_model, ds, &self.device, cfg.seed, batch_size)?;
        for (task, p) in &probe {
            let auc = |a: Option<f64>| a.map_or("undefined".into(), |a| format!("{a:.4}"));
            self.say(&format!(
                "adversarial probe `{task}`: fresh classifiers on the representation the towers read reach test AUC {} \
                 (MLP), {} (linear); on the main tasks' outputs alone {} (MLP)",
                auc(p.test_auc),
                auc(p.linear.as_ref().and_then(|l| l.test_auc)),
                auc(p.outputs.as_ref().and_then(|l| l.test_auc))
            ));
        }
        Ok((utilisation, probe))
    }
}

/// The selected model's gate statistics and adversarial probes, by task.
type Diagnostics = (BTreeMap<String, crate::GateUtilisation>, BTreeMap<String, crate::ProbeResult>);
