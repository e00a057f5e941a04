//! Errors of a training run.

use std::path::PathBuf;

/// What can stop a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The experiment config is invalid; the message names the key.
    #[error("config: {0}")]
    Config(String),
    /// The dataset could not be loaded.
    #[error(transparent)]
    Data(#[from] mtrec_data::DataError),
    /// A run file could not be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A checkpoint file is damaged, truncated or from another run.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Training stopped on request after checkpointing an epoch ([`crate::Trainer::interrupt_after`]).
    #[error("training interrupted after epoch {epoch}; continue with `cargo xtask train --resume {}`", dir.display())]
    Interrupted {
        /// The last epoch completed and checkpointed.
        epoch: usize,
        /// The run folder.
        dir: PathBuf,
    },
    /// A model output became NaN or infinite on an evaluation split: its metrics would be
    /// meaningless (a NaN score would even rank as a perfect AUC).
    #[error("training diverged: the {task} output on the {split} split is {value} at row {row} (try a lower train.lr)")]
    NonFiniteOutput {
        /// The split.
        split: crate::Split,
        /// The task.
        task: String,
        /// The first row with a non-finite output (0-based).
        row: usize,
        /// Its value.
        value: f32,
    },
    /// A loss became NaN or infinite.
    #[error("training diverged at epoch {epoch}: the training loss of task `{task}` is {value} (try a lower train.lr)")]
    Diverged {
        /// The epoch (1-based).
        epoch: usize,
        /// The task.
        task: String,
        /// The non-finite value.
        value: f64,
    },
}
