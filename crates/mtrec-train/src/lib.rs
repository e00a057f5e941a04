//! Training and evaluation of multi-task models: the experiment config, the training loop
//! (Adam, per-epoch validation, early stopping on validation, one final test evaluation of the
//! selected model), metrics and the files a run writes.
//!
//! The loop is the same for every architecture and every balancer: it asks the model for its
//! two-phase forward and the balancer for gradients, and never branches on which one it runs.
//!
//! # Guide
//!
//! An [`ExperimentConfig`] (a TOML file, or built in code) names the data, the architecture, the
//! balancer and the schedule; a [`Trainer`] runs it and returns the [`Summary`] (test metrics of
//! the model selected on validation), the per-epoch records and the selected model. A
//! [`Registry`] adds a program's own architectures and balancers under names its configs use
//! ([`Trainer::with_registry`]); a [`RunDirectory`] makes the run resumable and leaves its files
//! (config, metrics, checkpoints, summary, figures). Your own loop uses the same parts:
//! [`ExperimentConfig::build_model`], [`ExperimentConfig::optimizers`], [`train_step`],
//! [`evaluate`].
//!
//! ```
//! use burn::tensor::Device;
//! use mtrec_train::{ExperimentConfig, Trainer};
//!
//! let config = ExperimentConfig::from_toml(
//!     r#"
//!     [data]
//!     source = "synthetic"               # the MMoE paper's synthetic tasks
//!     synthetic = { n_train = 600, n_valid = 200, n_test = 200, dim = 8 }
//!
//!     [model]
//!     architecture = "mmoe"
//!     n_experts = 4
//!
//!     [balance]
//!     method = "pcgrad"
//!
//!     [train]
//!     epochs = 2
//!     batch_size = 64
//!     early_stopping = { metric = "mse" }
//!     "#,
//!     "the guide",
//!     &[],
//! )?;
//! let dataset = config.data.load()?;
//! let (summary, epochs, _model) = Trainer::new(&config, &dataset, Device::flex()).verbose(false).run()?;
//! assert_eq!((summary.model.as_str(), summary.balance.as_str()), ("mmoe", "pcgrad"));
//! assert_eq!(epochs.len(), 2);
//! assert!(summary.test["task1"]["mse"].is_finite());
//! # Ok::<(), mtrec_train::TrainError>(())
//! ```

#![deny(missing_docs)]

mod adversarial_probe;
mod adversary;
mod checkpoint;
mod collective;
mod config;
mod data_config;
mod data_parallel;
pub mod dead_task;
mod device;
mod early_stopping;
mod encoder_gradients;
mod error;
mod evaluation;
mod fairness;
mod fused_adam;
mod loss;
mod metrics;
#[cfg(feature = "mpi")]
mod mpi_collective;
mod parity;
mod plots;
mod predictions;
mod registry;
mod report;
mod restore;
mod run_dir;
mod run_loading;
mod safetensors;
mod sparse_optimizer;
mod step;
mod tensorboard;
mod text;
mod train_config;
mod trainer;
mod utilisation;

pub use adversarial_probe::{PROBE_EPOCHS, PROBE_HIDDEN, PROBE_MIN_STEPS, ProbeResult, ProbeScores, adversarial_probe};
pub use adversary::{
    DEAD_HEAD_EPOCHS, DEAD_HEAD_NATS, DeadHeadDetector, adversary_steps, refit_erasers, restart_heads,
};
pub use checkpoint::{CHECKPOINT_FILE, Checkpoint, TrainingState};
pub use collective::{Collective, SingleProcess, ThreadGroup, launcher_ranks};
pub use config::{ExperimentConfig, TaskOptions};
pub use data_config::{DataConfig, DataSource, LoadedData};
pub use data_parallel::{BUCKET_FLOATS, DataParallel, data_parallel_step};
pub use device::DeviceChoice;
pub use early_stopping::EarlyStopping;
pub use encoder_gradients::encoder_gradient_gram;
pub use error::TrainError;
pub(crate) use evaluation::evaluate_sharded;
pub use evaluation::{Split, evaluate};
pub use fairness::{FairnessConfig, GroupColumn, fairness_metrics};
pub use fused_adam::FusedAdam;
pub use loss::{batch_task_loss, labelled_task_loss, task_loss, task_loss_rows};
pub use metrics::{TaskMetrics, binary_logloss, higher_is_better, mae, mse, roc_auc};
#[cfg(feature = "mpi")]
pub use mpi_collective::MpiCollective;
pub use parity::{ParityReport, check_parity};
pub use plots::{Figure, Panel, PanelKind, Series, plot_run, read_epochs, run_figures, save_figures, save_run_figures};
pub use predictions::{class_names, prediction_columns, prediction_row, write_predictions};
pub use registry::{BalancerConstructor, Registry};
pub use report::{Report, run_page, run_report, write_run_report};
pub use run_dir::{
    DataParallelStats, EmbeddingTableUse, EpochRecord, PREPROCESSING_FILE, PairConflict, RunDirectory, Summary,
    WithinEpochValidation, read_preprocessing, read_summary,
};
pub use run_loading::{
    RunData, RunEvaluation, evaluate_run, evaluate_run_outputs, load_run, load_run_reading, load_run_with,
};
pub use safetensors::{safetensors_bytes, save_safetensors, tensors_to_safetensors};
pub use sparse_optimizer::{SparseGradients, SparseRowOptimizer, SparseRule, TableGradient};
pub use step::{Optimizers, train_step};
pub use tensorboard::{EventWriter, ScalarEvent, epoch_scalars, event_files, read_scalars, write_epoch};
pub use text::{open_text_encoder, open_text_input};
pub use train_config::{EarlyStoppingConfig, TrainConfig};
pub use trainer::Trainer;
pub use utilisation::{COLLAPSE_THRESHOLD, GateUtilisation, collapse_warnings, expert_utilisation};
