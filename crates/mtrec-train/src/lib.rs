//! Training and evaluation of multi-task models: the experiment config, the training loop
//! (Adam, per-epoch validation, early stopping on validation, one final test evaluation of the
//! selected model), metrics and the files a run writes.
//!
//! The loop is the same for every architecture and every balancer: it asks the model for its
//! two-phase forward and the balancer for gradients, and never branches on which one it runs.

mod adversarial_probe;
mod adversary;
mod checkpoint;
mod collective;
mod config;
mod data_parallel;
mod device;
mod early_stopping;
mod error;
mod fairness;
mod fused_adam;
mod loss;
mod metrics;
#[cfg(feature = "mpi")]
mod mpi_collective;
mod parity;
mod plots;
mod run_dir;
mod safetensors;
mod sparse_optimizer;
mod step;
mod text;
mod trainer;
mod utilisation;

pub use adversarial_probe::{PROBE_EPOCHS, PROBE_HIDDEN, PROBE_MIN_STEPS, ProbeResult, ProbeScores, adversarial_probe};
pub use adversary::{
    DEAD_HEAD_EPOCHS, DEAD_HEAD_NATS, DeadHeadDetector, adversary_steps, refit_erasers, restart_heads,
};
pub use checkpoint::{CHECKPOINT_FILE, Checkpoint, TrainingState};
pub use collective::{Collective, SingleProcess, ThreadGroup, launcher_ranks};
pub use config::{DataConfig, DataSource, EarlyStoppingConfig, ExperimentConfig, LoadedData, TaskOptions, TrainConfig};
pub use data_parallel::{BUCKET_FLOATS, DataParallel, data_parallel_step};
pub use device::DeviceChoice;
pub use early_stopping::EarlyStopping;
pub use error::TrainError;
pub use fairness::{FairnessConfig, GroupColumn, fairness_metrics};
pub use fused_adam::FusedAdam;
pub use loss::task_loss;
pub use metrics::{TaskMetrics, binary_logloss, higher_is_better, mae, mse, roc_auc};
#[cfg(feature = "mpi")]
pub use mpi_collective::MpiCollective;
pub use parity::{ParityReport, check_parity};
pub use plots::{Figure, Panel, PanelKind, Series, plot_run, read_epochs, run_figures, save_run_figures};
pub use run_dir::{
    DataParallelStats, EmbeddingTableUse, EpochRecord, PREPROCESSING_FILE, RunDirectory, Summary,
    WithinEpochValidation, read_preprocessing,
};
pub use safetensors::{safetensors_bytes, save_safetensors, tensors_to_safetensors};
pub use sparse_optimizer::{SparseGradients, SparseRowOptimizer, SparseRule, TableGradient};
pub use step::{Optimizers, train_step};
pub use text::{open_text_encoder, open_text_input};
pub use trainer::{RunData, Split, Trainer, evaluate, evaluate_run, load_run, load_run_reading};
pub use utilisation::{COLLAPSE_THRESHOLD, GateUtilisation, collapse_warnings, expert_utilisation};
