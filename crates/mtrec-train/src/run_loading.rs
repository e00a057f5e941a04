//! A finished run folder read back: its config, data (encoded with the run's saved
//! preprocessing) and selected model, for evaluation, scoring other files and export.

use burn::{module::Module, tensor::Device};
use mtrec_data::{MtlDataset, Schema};
use mtrec_model::{MultiTaskModule, MultiTaskNet};

use crate::{DataParallel, ExperimentConfig, Registry, Split, TaskMetrics, TrainError, evaluate_sharded};

/// A run's data: held in memory, or streamed from chunk files (a `data.stream` run).
#[derive(Debug, Clone)]
pub enum RunData {
    /// Decoded into memory.
    Memory(Box<MtlDataset>),
    /// Chunk files on disk.
    Streamed(Box<mtrec_data::ChunkedDataset>),
}

impl RunData {
    /// The dataset's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Memory(d) => &d.name,
            Self::Streamed(d) => &d.name,
        }
    }

    /// The dataset's schema.
    pub fn schema(&self) -> &Schema {
        match self {
            Self::Memory(d) => &d.schema,
            Self::Streamed(d) => &d.schema,
        }
    }

    /// Rows of `split`.
    pub fn n_rows(&self, split: Split) -> usize {
        match self {
            Self::Memory(d) => split.of(d.as_ref()).n_rows,
            Self::Streamed(d) => split.of(d.as_ref()).n_rows,
        }
    }

    /// Every metric of every task of `model` on `split` (see [`evaluate`](crate::evaluate)), with
    /// `fairness` the group-fairness metrics by that column ([`crate::fairness_metrics`]), and the
    /// model's outputs of every row of `split`, a vector a task in row order (see
    /// [`crate::prediction_row`]).
    pub fn evaluate<C: MultiTaskModule>(
        &self,
        model: &MultiTaskNet<C>,
        split: Split,
        device: &Device,
        batch_size: usize,
        fairness: Option<crate::GroupColumn>,
    ) -> Result<(Vec<TaskMetrics>, Vec<Vec<f32>>), TrainError> {
        let one = DataParallel::single();
        match self {
            Self::Memory(d) => {
                evaluate_sharded(model, split.of(d.as_ref()), split, &d.schema, device, batch_size, &one, fairness)
            }
            Self::Streamed(d) => {
                evaluate_sharded(model, split.of(d.as_ref()), split, &d.schema, device, batch_size, &one, fairness)
            }
        }
    }
}

/// The selected model of a run folder (`config.toml` + `best_model.bpk`), in evaluation mode, with
/// its config and data (the schema sizes the model), encoded with the run's saved preprocessing
/// when it has one — streamed from chunk files when the run streamed its data; `overrides` are
/// applied to the recorded config first (e.g. `data.dir=...`, or `data.test=new.csv` to score
/// another file).
pub fn load_run(
    dir: &std::path::Path,
    overrides: &[String],
) -> Result<(ExperimentConfig, RunData, MultiTaskNet, Device), TrainError> {
    load_run_with(dir, overrides, None, Registry::builtin())
}

/// [`load_run`] of a run whose config may name architectures `registry` registered (a run of a
/// user's architecture loads only in a program that registers it), reading every row of `file`
/// instead of the run's data when given ([`load_run_reading`]).
pub fn load_run_with<C: MultiTaskModule>(
    dir: &std::path::Path,
    overrides: &[String],
    file: Option<&std::path::Path>,
    registry: &Registry<C>,
) -> Result<(ExperimentConfig, RunData, MultiTaskNet<C>, Device), TrainError> {
    let mut config = ExperimentConfig::from_file(&dir.join("config.toml"), overrides)?;
    let saved = crate::run_dir::read_preprocessing(dir)?;
    if let Some(file) = file {
        if saved.is_none() {
            return Err(TrainError::Config(format!(
                "{}: the run has no {} (only runs on tables score other files)",
                dir.display(),
                crate::PREPROCESSING_FILE
            )));
        }
        config.data = config.data.reading(file);
    }
    let data = if config.data.stream {
        let fitted = saved.as_ref().ok_or_else(|| {
            TrainError::Config(format!(
                "{}: no {} (a streamed run writes it when it starts; its chunks are encoded with it)",
                dir.display(),
                crate::PREPROCESSING_FILE
            ))
        })?;
        RunData::Streamed(Box::new(config.data.load_streamed(Some(fitted))?.0))
    } else {
        RunData::Memory(Box::new(config.data.load_with(saved.as_ref())?.0))
    };
    let device = config.device.open().map_err(TrainError::Config)?;
    let path = dir.join("best_model.bpk");
    if !path.exists() {
        return Err(TrainError::Io { path, source: std::io::Error::from(std::io::ErrorKind::NotFound) });
    }
    let model = config
        .build_model_with(data.schema(), &device, registry)?
        .try_load_file(dir.join("best_model"))
        .map_err(|e| TrainError::Io { path: path.clone(), source: std::io::Error::other(e.to_string()) })?
        .valid();
    Ok((config, data, model, device))
}

/// [`load_run`], the data of a table run replaced by every row of `file` (in all three splits),
/// encoded with the run's saved preprocessing: what scores new rows with a trained model.
pub fn load_run_reading(
    dir: &std::path::Path,
    overrides: &[String],
    file: Option<&std::path::Path>,
) -> Result<(ExperimentConfig, RunData, MultiTaskNet, Device), TrainError> {
    load_run_with(dir, overrides, file, Registry::builtin())
}

/// Re-evaluates the selected model of a run folder ([`load_run`]) on `split`, or on every row of
/// `file` ([`load_run_reading`]). Returns the config, the data and each task's metrics, in task
/// order.
pub fn evaluate_run(
    dir: &std::path::Path,
    split: Split,
    overrides: &[String],
    file: Option<&std::path::Path>,
) -> Result<(ExperimentConfig, RunData, Vec<TaskMetrics>), TrainError> {
    let RunEvaluation { config, data, metrics, .. } = evaluate_run_outputs(dir, split, overrides, file)?;
    Ok((config, data, metrics))
}

/// A run's selected model evaluated on a split or on every row of a file
/// ([`evaluate_run_outputs`]).
#[derive(Debug)]
pub struct RunEvaluation {
    /// The run's recorded config (with the overrides).
    pub config: ExperimentConfig,
    /// The data evaluated.
    pub data: RunData,
    /// Each task's metrics, in task order.
    pub metrics: Vec<TaskMetrics>,
    /// The model's outputs of every row, a vector a task in row order
    /// ([`crate::write_predictions`] writes them).
    pub outputs: Vec<Vec<f32>>,
}

/// [`evaluate_run`], and the selected model's outputs of every row: what `cargo xtask eval
/// [--file F] --predictions OUT` does.
pub fn evaluate_run_outputs(
    dir: &std::path::Path,
    split: Split,
    overrides: &[String],
    file: Option<&std::path::Path>,
) -> Result<RunEvaluation, TrainError> {
    let (config, data, model, device) = load_run_reading(dir, overrides, file)?;
    let split = if file.is_some() { Split::Test } else { split };
    let fairness = config.fairness.column(data.schema())?;
    let (metrics, outputs) = data.evaluate(&model, split, &device, config.train.eval_batch_size, fairness)?;
    Ok(RunEvaluation { config, data, metrics, outputs })
}
