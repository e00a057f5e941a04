//! What a run writes: `config.toml` (the resolved config), `metrics.jsonl` (one line an epoch),
//! `summary.json`, and `best_model.bpk` (the selected model's parameters, burnpack format).

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{ExperimentConfig, TaskMetrics, TrainError};

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss per task (unweighted).
    pub train_loss: BTreeMap<String, f64>,
    /// Validation metrics per task.
    pub valid: BTreeMap<String, TaskMetrics>,
    /// The balancer's task weights at the end of the epoch.
    pub task_weights: BTreeMap<String, f64>,
    /// Per-task gradient norms, for gradient-based balancers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_gradient_norms: Option<BTreeMap<String, f64>>,
    /// Gradient-combining balancers (PCGrad, MGDA, CAGrad, IMTL-G): the mean cosine between two
    /// tasks' gradients at the shared tensors over the epoch, keyed `"a~b"` (negative: conflict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_gradient_cosines: Option<BTreeMap<String, f64>>,
    /// With the cosines: the fraction of the epoch's steps on which a pair's cosine was negative
    /// (the tasks pulled the shared parameters apart), keyed `"a~b"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_gradient_conflicts: Option<BTreeMap<String, f64>>,
    /// `train.encoder_gradients_every > 0`: the mean cosine between two tasks' gradients on the
    /// trainable text encoder's parameters over the epoch's measured steps, keyed `"a~b"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_gradient_cosines: Option<BTreeMap<String, f64>>,
    /// With those cosines: the fraction of the measured steps on which a pair's was negative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_gradient_conflicts: Option<BTreeMap<String, f64>>,
    /// With those cosines: each task's mean gradient norm on the encoder's parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_gradient_norms: Option<BTreeMap<String, f64>>,
    /// The learning rates at the end of the epoch: `model` (`train.lr`) and, for a trainable text
    /// encoder, `text_encoder` (`model.text.lr` after its warm-up and decay).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub learning_rates: BTreeMap<String, f64>,
    /// The monitored validation value.
    pub monitor: f64,
    /// Whether this epoch is the best so far.
    pub best: bool,
    /// `train.evals_per_epoch > 1`: the validations within the epoch, before its end (the end's
    /// are `valid`, `monitor` and `best`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub within_epoch: Vec<WithinEpochValidation>,
    /// Wall seconds of the epoch (training and validation).
    pub seconds: f64,
    /// Training throughput of the epoch (training only).
    pub samples_per_sec: f64,
}

/// A validation within an epoch (`train.evals_per_epoch > 1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WithinEpochValidation {
    /// Epochs trained at this point: `epoch - 1 + j / evals_per_epoch` (1.5: half-way through the
    /// second epoch).
    pub epochs: f64,
    /// Training batches of the epoch done at this point.
    pub batches: usize,
    /// Validation metrics per task.
    pub valid: BTreeMap<String, TaskMetrics>,
    /// The monitored validation value.
    pub monitor: f64,
    /// Whether this point is the best so far.
    pub best: bool,
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The config's name.
    pub name: String,
    /// Dataset name.
    pub dataset: String,
    /// Architecture.
    pub model: String,
    /// Balancing method.
    pub balance: String,
    /// Backend.
    pub device: String,
    /// Seed.
    pub seed: u64,
    /// Trainable parameters.
    pub parameters: usize,
    /// The epoch whose model was selected on validation (with `train.evals_per_epoch > 1`, the
    /// epoch the selected point lies in).
    pub best_epoch: usize,
    /// `train.evals_per_epoch > 1`: the epochs trained at the selected point (0.5: after half of
    /// the first epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_after_epochs: Option<f64>,
    /// Epochs trained.
    pub epochs_run: usize,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Training throughput over the run (training steps only).
    pub train_samples_per_sec: f64,
    /// Wall seconds of the whole run, data loading excluded.
    pub wall_seconds: f64,
    /// Validation metrics of the selected model, per task.
    pub valid: BTreeMap<String, TaskMetrics>,
    /// Test metrics of the selected model, per task (evaluated once).
    pub test: BTreeMap<String, TaskMetrics>,
    /// Gated models: each task's gate statistics on the validation split (selected model).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub expert_utilisation: BTreeMap<String, crate::GateUtilisation>,
    /// Adversarial tasks: how well a fresh classifier, fitted after training on the frozen
    /// representation the towers read, predicts the task's target (see [`crate::adversarial_probe`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub adversarial_probe: BTreeMap<String, crate::ProbeResult>,
    /// Gradient-combining balancers: for each task pair (`"a~b"`), how the two tasks' gradients at
    /// the shared tensors related over the whole run — negative transfer shows as a negative mean
    /// cosine and a large share of steps in conflict.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gradient_conflict: BTreeMap<String, PairConflict>,
    /// `train.encoder_gradients_every > 0`: the same for the tasks' gradients on the trainable text
    /// encoder's parameters (what reaches the language model's weights).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub encoder_gradient_conflict: BTreeMap<String, PairConflict>,
    /// Data-parallel runs: the ranks and the time their collective operations took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_parallel: Option<DataParallelStats>,
    /// The id tables, whether each was row-sparse and why, and the optimizer that updated it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub embedding_tables: Vec<EmbeddingTableUse>,
    /// Warnings the run raised that a reader of the results must see (a dead adversarial head).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// How two tasks' gradients at the shared tensors related over a run (the epochs' means, each
/// epoch weighing alike).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairConflict {
    /// Mean cosine between the two gradients.
    pub mean_cosine: f64,
    /// Fraction of the steps on which the cosine was negative.
    pub conflict_fraction: f64,
}

impl PairConflict {
    /// Over `records`' per-epoch cosines and conflict fractions at the shared tensors (epochs
    /// without them left out).
    pub fn of_run(records: &[EpochRecord]) -> BTreeMap<String, PairConflict> {
        Self::over(records.iter().map(|r| (&r.task_gradient_cosines, &r.task_gradient_conflicts)))
    }

    /// The same over the epochs' cosines and conflicts on the text encoder's parameters.
    pub fn on_encoder(records: &[EpochRecord]) -> BTreeMap<String, PairConflict> {
        Self::over(records.iter().map(|r| (&r.encoder_gradient_cosines, &r.encoder_gradient_conflicts)))
    }

    #[allow(clippy::type_complexity)]
    fn over<'a>(
        epochs: impl Iterator<Item = (&'a Option<BTreeMap<String, f64>>, &'a Option<BTreeMap<String, f64>>)>,
    ) -> BTreeMap<String, PairConflict> {
        let mut sums: BTreeMap<String, (f64, f64, usize)> = BTreeMap::new();
        for (cosines, conflicts) in epochs {
            let (Some(cos), Some(conflicts)) = (cosines, conflicts) else { continue };
            for (pair, c) in cos {
                let Some(f) = conflicts.get(pair).filter(|f| f.is_finite() && c.is_finite()) else { continue };
                let e = sums.entry(pair.clone()).or_insert((0.0, 0.0, 0));
                *e = (e.0 + c, e.1 + f, e.2 + 1);
            }
        }
        sums.into_iter()
            .map(|(pair, (c, f, n))| {
                (pair, PairConflict { mean_cosine: c / n as f64, conflict_fraction: f / n as f64 })
            })
            .collect()
    }
}

/// An id table of a run and the optimizer that updated it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingTableUse {
    /// The table, and whether (and why) it was row-sparse.
    #[serde(flatten)]
    pub table: mtrec_model::EmbeddingTable,
    /// `train.sparse_optimizer` for a row-sparse table (`lazy_adam`, …); `adam` for a dense one.
    pub optimizer: String,
}

impl EmbeddingTableUse {
    /// The id tables of `config`'s model for `schema`.
    pub fn of(config: &ExperimentConfig, schema: &mtrec_data::Schema) -> Vec<Self> {
        (config.model.embedding_tables(schema).into_iter())
            .map(|table| {
                let optimizer =
                    if table.sparse { config.train.sparse_optimizer.name().to_string() } else { "adam".into() };
                Self { table, optimizer }
            })
            .collect()
    }

    /// One line for the log and `config.toml`.
    pub fn describe(&self) -> String {
        let t = &self.table;
        format!(
            "embedding table `{}` ({} rows; fields {}): {}, updated by {} ({})",
            t.table,
            t.rows,
            t.fields.join(", "),
            if t.sparse { "row-sparse" } else { "dense" },
            self.optimizer,
            t.chosen_by
        )
    }
}

/// How a data-parallel run spent its time communicating.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DataParallelStats {
    /// Number of ranks.
    pub ranks: usize,
    /// Seconds rank 0's training steps spent in collective operations (gradient all-reduces,
    /// balancer reductions), waiting for slower ranks included; in a resumed run, since the resume.
    pub communication_seconds: f64,
    /// `communication_seconds` over the same training steps' seconds.
    pub communication_share: f64,
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, flushed to disk and
/// renamed over the target, so a reader — or a process resuming after a kill — never sees a
/// half-written file.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    write_atomically_with(path, |file| file.write_all(bytes))
}

/// [`write_atomically`], the contents written by `write` (which may stream them).
pub(crate) fn write_atomically_with(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<(), TrainError> {
    let io = |source| TrainError::Io { path: path.to_path_buf(), source };
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(folder).map_err(io)?;
    write(tmp.as_file_mut()).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// The file of a run's fitted table preprocessing.
pub const PREPROCESSING_FILE: &str = "preprocessing.json";

/// The saved preprocessing of the run in `dir`, if it has one.
pub fn read_preprocessing(dir: &Path) -> Result<Option<mtrec_data::Preprocessing>, TrainError> {
    let path = dir.join(PREPROCESSING_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read(&path).map_err(|source| TrainError::Io { path: path.clone(), source })?;
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| TrainError::Io { path, source: std::io::Error::new(std::io::ErrorKind::InvalidData, e) })
}

/// The `summary.json` of the run in `dir`, if it has one (an interrupted or running run has none
/// yet); a summary that cannot be read or parsed is an error naming the file.
pub fn read_summary(dir: &Path) -> Result<Option<Summary>, TrainError> {
    let path = dir.join("summary.json");
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(TrainError::Io { path, source }),
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| TrainError::Io { path, source: std::io::Error::new(std::io::ErrorKind::InvalidData, e) })
}

/// The output folder of one run.
#[derive(Debug, Clone)]
pub struct RunDirectory {
    path: PathBuf,
}

impl RunDirectory {
    /// Creates the folder (and parents) and writes the resolved `config.toml`; starts a new
    /// `metrics.jsonl`.
    pub fn create(path: impl Into<PathBuf>, config: &ExperimentConfig) -> Result<Self, TrainError> {
        let path = path.into();
        std::fs::create_dir_all(&path).map_err(|source| TrainError::Io { path: path.clone(), source })?;
        let dir = Self { path };
        dir.write("config.toml", config.to_toml().as_bytes())?;
        dir.write("metrics.jsonl", b"")?;
        Ok(dir)
    }

    /// An existing run folder (to resume it); it must hold `config.toml`.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, TrainError> {
        let path = path.into();
        let config = path.join("config.toml");
        if !config.is_file() {
            return Err(TrainError::Io { path: config, source: std::io::Error::from(std::io::ErrorKind::NotFound) });
        }
        Ok(Self { path })
    }

    /// The run folder as data-parallel rank `parallel.rank()` sees it: rank 0 creates it (or opens
    /// it to resume) and writes it; the others only read its checkpoint to resume (on several
    /// machines it must be on each: a shared file system), and start without it otherwise.
    pub fn for_rank(
        path: impl Into<PathBuf>,
        config: &ExperimentConfig,
        resume: bool,
        parallel: &crate::DataParallel,
    ) -> Result<Option<Self>, TrainError> {
        if resume {
            Self::open(path).map(Some)
        } else if parallel.is_root() {
            Self::create(path, config).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Removes what interrupted atomic writes left behind (temporary files named `.tmp…`, never
    /// renamed into place).
    pub fn remove_partial_writes(&self) -> Result<(), TrainError> {
        let io = |source| TrainError::Io { path: self.path.clone(), source };
        for entry in std::fs::read_dir(&self.path).map_err(io)? {
            let entry = entry.map_err(io)?;
            if entry.file_name().to_string_lossy().starts_with(".tmp") && entry.path().is_file() {
                std::fs::remove_file(entry.path()).map_err(io)?;
            }
        }
        Ok(())
    }

    /// Rewrites `config.toml` (a resumed run may have a new epoch budget or data folder).
    pub fn write_config(&self, config: &ExperimentConfig) -> Result<(), TrainError> {
        self.write("config.toml", config.to_toml().as_bytes())
    }

    /// Rewrites `config.toml` with `notes` after it as comments: what the run decided from its
    /// data (which tables were row-sparse), readable beside the config and ignored when it is read.
    pub fn write_config_with_notes(&self, config: &ExperimentConfig, notes: &[String]) -> Result<(), TrainError> {
        let mut text = config.to_toml();
        if !notes.is_empty() {
            text.push_str("\n# What this run chose from its data (comments; not read back):\n");
            notes.iter().for_each(|n| text.push_str(&format!("# {n}\n")));
        }
        self.write("config.toml", text.as_bytes())
    }

    /// Where the run's checkpoint is.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.path.join(crate::CHECKPOINT_FILE)
    }

    /// The first `epochs` records of `metrics.jsonl`; later lines (epochs after the checkpoint
    /// that is being resumed) are dropped from the file.
    pub fn truncate_epochs(&self, epochs: usize) -> Result<Vec<EpochRecord>, TrainError> {
        let path = self.path.join("metrics.jsonl");
        let text = std::fs::read_to_string(&path).map_err(|source| TrainError::Io { path: path.clone(), source })?;
        let lines: Vec<&str> = text.lines().take(epochs).collect();
        let records = lines
            .iter()
            .enumerate()
            .map(|(i, line)| {
                serde_json::from_str::<EpochRecord>(line)
                    .map_err(|e| TrainError::Checkpoint { path: path.clone(), reason: format!("line {}: {e}", i + 1) })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if records.len() < epochs {
            return Err(TrainError::Checkpoint {
                path,
                reason: format!("holds {} epochs, the checkpoint {epochs}", records.len()),
            });
        }
        let kept: String = lines.iter().map(|line| format!("{line}\n")).collect();
        self.write("metrics.jsonl", kept.as_bytes())?;
        Ok(records)
    }

    /// Writes the table's fitted preprocessing (`preprocessing.json`): vocabularies, scalers, hash
    /// settings — what `eval`, `export` and `--resume` encode the data with.
    pub fn write_preprocessing(&self, preprocessing: &mtrec_data::Preprocessing) -> Result<(), TrainError> {
        let json = serde_json::to_vec_pretty(preprocessing).expect("preprocessing serialises");
        self.write(PREPROCESSING_FILE, &json)
    }

    /// The run's saved preprocessing, if it has one (runs on tables do).
    pub fn read_preprocessing(&self) -> Result<Option<mtrec_data::Preprocessing>, TrainError> {
        read_preprocessing(&self.path)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the selected model's parameters go (burn appends `.bpk`).
    pub fn best_model_path(&self) -> PathBuf {
        self.path.join("best_model")
    }

    /// Writes the selected model's record (burnpack bytes) as `best_model.bpk`, atomically.
    pub fn write_best_model(&self, bytes: &[u8]) -> Result<(), TrainError> {
        self.write("best_model.bpk", bytes)
    }

    /// Writes `name` in the folder atomically ([`write_atomically`]).
    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), TrainError> {
        write_atomically(&self.path.join(name), bytes)
    }

    /// Appends one epoch to `metrics.jsonl`.
    pub fn append_epoch(&self, record: &EpochRecord) -> Result<(), TrainError> {
        let path = self.path.join("metrics.jsonl");
        let io = |source| TrainError::Io { path: path.clone(), source };
        let mut file: File = OpenOptions::new().append(true).create(true).open(&path).map_err(io)?;
        let line = serde_json::to_string(record).expect("records serialise");
        writeln!(file, "{line}").map_err(io)
    }

    /// Writes `summary.json`.
    pub fn write_summary(&self, summary: &Summary) -> Result<(), TrainError> {
        self.write("summary.json", serde_json::to_string_pretty(summary).expect("summaries serialise").as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_summary_is_none_and_a_broken_one_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_summary(dir.path()).unwrap().is_none());
        std::fs::write(dir.path().join("summary.json"), "{ not json").unwrap();
        let err = read_summary(dir.path()).unwrap_err().to_string();
        assert!(err.contains("summary.json"), "{err}");
    }

    fn record(epoch: usize, cosine: Option<f64>, conflict: Option<f64>) -> EpochRecord {
        let pair = |v: Option<f64>| v.map(|v| BTreeMap::from([("a~b".to_string(), v)]));
        EpochRecord {
            epoch,
            task_gradient_cosines: pair(cosine),
            task_gradient_conflicts: pair(conflict),
            ..Default::default()
        }
    }

    /// Epoch means (−0.2, 0.4, —, NaN) and conflict fractions (0.6, 0.1, —, 0.5): the run's are the
    /// means over the two epochs that have both, −0.2+0.4 / 2 = 0.1 and 0.6+0.1 / 2 = 0.35.
    #[test]
    fn pair_conflict_of_a_run_by_hand() {
        let records = [
            record(1, Some(-0.2), Some(0.6)),
            record(2, Some(0.4), Some(0.1)),
            record(3, None, None),
            record(4, Some(f64::NAN), Some(0.5)),
        ];
        let c = &PairConflict::of_run(&records)["a~b"];
        assert!((c.mean_cosine - 0.1).abs() < 1e-12 && (c.conflict_fraction - 0.35).abs() < 1e-12, "{c:?}");
        assert!(PairConflict::of_run(&records[2..3]).is_empty());
    }
}
