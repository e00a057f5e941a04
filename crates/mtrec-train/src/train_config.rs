//! The `[train]` section: optimisation (optimizer, learning rate, batch sizes, epochs) and model
//! selection (`[train.early_stopping]`).

use mtrec_data::{Schema, TaskKind};
use serde::{Deserialize, Serialize};

use crate::TrainError;

/// The `[train]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Maximum number of epochs.
    pub epochs: usize,
    /// Training batch size.
    pub batch_size: usize,
    /// Batch size for evaluation.
    pub eval_batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// L2 weight decay added to the gradients (Adam, as PyTorch's `weight_decay`).
    pub weight_decay: f64,
    /// Adam's epsilon (also the sparse optimizer's).
    pub adam_epsilon: f64,
    /// The update rule of row-sparse embedding tables (`model.sparse_embeddings`): `lazy_adam`
    /// (default), `adagrad`, `rowwise_adagrad` or `sgd`, at `train.lr`.
    pub sparse_optimizer: crate::SparseRule,
    /// Validations per epoch (default 1: at its end). With `k > 1` the model is also validated
    /// after each `1/k` of the epoch's batches, and any of these points can be the selected model
    /// (as fine-tuning recipes select the best half-epoch); early stopping's patience then counts
    /// validations, and a run that runs out of patience stops at the end of that epoch.
    pub evals_per_epoch: usize,
    /// TensorBoard: every this many optimisation steps, the run's event file gets `step/…` scalars
    /// (each task's batch loss and weight, samples/s) at the global step (default 50; 0: the
    /// epoch scalars only).
    pub log_every_steps: usize,
    /// With a trainable shared text encoder: every this many optimisation steps, each task's
    /// gradient on the encoder's trainable parameters is measured (one extra forward and backward a
    /// task), for the cosine between the tasks there in the epoch log, `summary.json`
    /// (`encoder_gradient_conflict`) and TensorBoard (`step/encoder_gradient_cosine/…`); default 0,
    /// never. See `encoder_gradients.rs`.
    pub encoder_gradients_every: usize,
    /// Whether the selected model is evaluated on the test split at the end (default true). A
    /// tuner's trials set it false: `summary.json` then has no test metrics, and only the model the
    /// study selects on validation is evaluated on test (`cargo xtask tune`).
    pub evaluate_test: bool,
    /// Model selection on the validation split.
    pub early_stopping: EarlyStoppingConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 50,
            batch_size: 1024,
            eval_batch_size: 8192,
            lr: 1e-3,
            weight_decay: 0.0,
            adam_epsilon: 1e-8,
            sparse_optimizer: crate::SparseRule::LazyAdam,
            evals_per_epoch: 1,
            log_every_steps: 50,
            encoder_gradients_every: 0,
            evaluate_test: true,
            early_stopping: EarlyStoppingConfig::default(),
        }
    }
}

/// `[train.early_stopping]`: which validation metric selects the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EarlyStoppingConfig {
    /// `auc`, `logloss` (binary tasks), `mse` or `mae` (regression tasks).
    pub metric: String,
    /// A task name, or `mean` for the mean over the tasks that have the metric.
    pub task: String,
    /// Stop after this many epochs in a row without improvement (at least 1; to train every epoch,
    /// set it to `train.epochs`). The best epoch is selected either way.
    pub patience: usize,
    /// An epoch improves when it beats the best so far by more than this (≥ 0; 0: any strict
    /// improvement).
    pub min_delta: f64,
}

impl Default for EarlyStoppingConfig {
    fn default() -> Self {
        Self { metric: "auc".into(), task: "mean".into(), patience: 5, min_delta: 0.0 }
    }
}

impl TrainConfig {
    /// Adam with this section's epsilon and weight decay for the dense parameters:
    /// [`FusedAdam`](crate::FusedAdam) (burn's Adam off flex or with `model.fused_kernels =
    /// false`); `sparse_optimizer` for row-sparse tables.
    pub fn optimizer(&self) -> crate::Optimizers {
        let (epsilon, decay) = (self.adam_epsilon as f32, self.weight_decay as f32);
        crate::Optimizers {
            dense: crate::FusedAdam::new(epsilon, decay).into(),
            sparse: crate::SparseRowOptimizer::new(self.sparse_optimizer, epsilon, decay),
        }
    }
}

impl EarlyStoppingConfig {
    /// Whether a larger value of the metric is better.
    pub fn higher_is_better(&self) -> bool {
        crate::higher_is_better(&self.metric)
    }

    /// The task kinds that have `metric`.
    fn kinds_of(metric: &str) -> Option<&'static [TaskKind]> {
        Some(match metric {
            "auc" | "gauc" | "cvr_auc" => &[TaskKind::Binary],
            "logloss" => &[TaskKind::Binary, TaskKind::Multiclass],
            "accuracy" | "macro_auc" => &[TaskKind::Multiclass],
            "mse" | "mae" | "mse_log1p" | "mae_log1p" => &[TaskKind::Regression],
            _ => return None,
        })
    }

    /// Indices of the tasks whose values are averaged into the monitored value.
    pub fn monitored_tasks(&self, schema: &Schema) -> Result<Vec<usize>, TrainError> {
        let kinds = Self::kinds_of(&self.metric).ok_or_else(|| {
            TrainError::Config(format!(
                "train.early_stopping.metric = {:?}: expected auc, gauc, cvr_auc, logloss (binary), accuracy, \
                 macro_auc, logloss (multiclass), mse, mae, mse_log1p or mae_log1p (regression)",
                self.metric
            ))
        })?;
        let tasks: Vec<usize> = if self.task == "mean" {
            (0..schema.n_tasks())
                .filter(|&t| kinds.contains(&schema.tasks[t].kind) && !schema.tasks[t].adversarial)
                .collect()
        } else {
            let t = schema.task_index(&self.task).ok_or_else(|| {
                let names: Vec<&str> = schema.tasks.iter().map(|t| t.name.as_str()).collect();
                TrainError::Config(format!(
                    "train.early_stopping.task = {:?}: tasks are {names:?} or \"mean\"",
                    self.task
                ))
            })?;
            if kinds.contains(&schema.tasks[t].kind) { vec![t] } else { vec![] }
        };
        if tasks.is_empty() {
            return Err(TrainError::Config(format!(
                "train.early_stopping: no task {:?} has metric {:?}",
                self.task, self.metric
            )));
        }
        Ok(tasks)
    }
}
