//! The experiment config: one TOML file with `[data]`, `[model]`, `[balance]` and `[train]`
//! sections. Unknown keys are errors that name the key; `--set section.key=value` overrides any
//! value before the file is checked.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use burn::module::Module;
use burn::{
    grad_clipping::GradientClipping,
    lr_scheduler::{
        LrSchedulerConfig,
        module_lr_scheduler::{ModuleLearningRate, ModuleLrSchedulerConfig},
    },
    module::ParamGroup,
};
use md5::Digest;
use mtrec_balance::{BalanceConfig, BalanceContext, LossBalancer};
use mtrec_data::{
    CensusGroup, CensusIncome, ColumnSpec, CsvOptions, MtlDataset, Preprocessing, Schema, SplitRule, Synthetic,
    SyntheticConfig, TableFiles, TableFormat, TableSource, TaskColumn, TaskKind,
};
use mtrec_model::{ModelConfig, MultiTaskModel, MultiTaskModule, MultiTaskNet};
use serde::{Deserialize, Serialize};

use crate::{DeviceChoice, TrainError};

/// A whole experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExperimentConfig {
    /// A name for the run (default output folder `runs/<name>`).
    pub name: String,
    /// Seed of parameter initialisation and batch order.
    pub seed: u64,
    /// Backend.
    pub device: DeviceChoice,
    /// The dataset.
    pub data: DataConfig,
    /// The architecture.
    pub model: ModelConfig,
    /// The loss-balancing method.
    pub balance: BalanceConfig,
    /// Optimisation and model selection.
    pub train: TrainConfig,
    /// Per-task options, `[tasks.<task name>]`.
    pub tasks: BTreeMap<String, TaskOptions>,
    /// `[fairness]`: group-fairness metrics of the binary main tasks by a sensitive column.
    pub fairness: crate::FairnessConfig,
}

/// A `[tasks.<name>]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskOptions {
    /// Scale of the learning rate of the task's own parameters (its gate, tower and head).
    pub lr_scale: f64,
}

impl Default for TaskOptions {
    fn default() -> Self {
        Self { lr_scale: 1.0 }
    }
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        Self {
            name: "experiment".into(),
            seed: 42,
            device: DeviceChoice::Flex,
            data: DataConfig::default(),
            model: ModelConfig::default(),
            balance: BalanceConfig::default(),
            train: TrainConfig::default(),
            tasks: BTreeMap::new(),
            fairness: crate::FairnessConfig::default(),
        }
    }
}

/// Which dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    /// The MMoE paper's synthetic regression tasks (no download).
    #[default]
    Synthetic,
    /// UCI Census-Income (KDD) under the `census-mmoe` protocol.
    Census,
    /// A table described by the config: files, split, columns, tasks ([`mtrec_data::TableSource`]).
    Table,
}

/// The `[data]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// `synthetic`, `census` or `table`.
    pub source: DataSource,
    /// The data folder: census files, and what relative table paths start from (default: census
    /// `data/census-income`, tables the working directory).
    pub dir: PathBuf,
    /// Census: `income` (group 1: income + never_married) or `college` (group 2).
    pub group: CensusGroup,
    /// Synthetic: the generator's parameters.
    pub synthetic: SyntheticConfig,
    /// Census: add an adversarial task, `"sex"` (removed from the inputs).
    pub adversarial: Option<String>,
    /// Turn the binary tasks into a funnel: task t's label is the AND of tasks 0..=t (ESMM, AITM).
    pub cascade: bool,
    /// The main tasks already are a funnel (checked: a step is positive only where the step before
    /// it is): ESMM and AITM train on them as they are, and each step reports `cvr_auc`.
    pub funnel: bool,
    /// Table: the dataset's name in reports (default `table`).
    pub name: Option<String>,
    /// Table: the training file (with `valid` and `test`, or with `holdout`).
    pub train: Option<PathBuf>,
    /// Table: the validation file.
    pub valid: Option<PathBuf>,
    /// Table: the test file.
    pub test: Option<PathBuf>,
    /// Table: a file `[data.split]` divides into validation and test.
    pub holdout: Option<PathBuf>,
    /// Table: one or more files `[data.split]` divides into the three splits.
    pub path: Vec<PathBuf>,
    /// Table: `csv` or `parquet` (default: from the file names).
    pub format: Option<TableFormat>,
    /// Table: how CSV/TSV files are read.
    pub csv: CsvOptions,
    /// Table: the split rule (`row_mod`, `random`, `column`, `time`).
    pub split: Option<SplitRule>,
    /// Table: the input columns.
    pub columns: Vec<ColumnSpec>,
    /// Table: the tasks.
    pub tasks: Vec<TaskColumn>,
    /// Table: a column grouping the rows (users): binary tasks also report GAUC.
    pub group_by: Option<String>,
    /// Table: cache the encoded splits (see [`mtrec_data::default_cache_dir`]).
    pub cache: bool,
    /// Table: encode the splits into chunk files and stream them through training and evaluation
    /// (out of core: memory stays that of a few chunks, whatever the number of rows).
    pub stream: bool,
    /// Streaming: rows per chunk file.
    pub chunk_rows: usize,
    /// Streaming: chunks a training epoch shuffles together (the shuffle window).
    pub shuffle_window: usize,
    /// Streaming: the folder of the chunk files (default: `<cache>/<key>.chunks`, the key a hash
    /// of the table's config, files and chunking; an existing complete encoding there is reused,
    /// otherwise the folder's `*.chunk` files are replaced).
    pub chunk_dir: Option<PathBuf>,
    /// Text columns hold token ids of at most this many tokens, for a trainable encoder, instead of
    /// sentence embeddings: not a key of the file — [`ExperimentConfig`] sets it from
    /// `model.text` (`finetune` other than `frozen`, `max_len`).
    #[serde(skip)]
    pub text_tokens: Option<usize>,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            source: DataSource::Synthetic,
            dir: PathBuf::new(),
            group: CensusGroup::Income,
            synthetic: SyntheticConfig::default(),
            adversarial: None,
            cascade: false,
            funnel: false,
            name: None,
            train: None,
            valid: None,
            test: None,
            holdout: None,
            path: vec![],
            format: None,
            csv: CsvOptions::default(),
            split: None,
            columns: vec![],
            tasks: vec![],
            group_by: None,
            cache: true,
            stream: false,
            chunk_rows: 1 << 18,
            shuffle_window: 4,
            chunk_dir: None,
            text_tokens: None,
        }
    }
}

/// The census folder when `data.dir` is not set.
const CENSUS_DIR: &str = "data/census-income";

/// A dataset with the preprocessing its table was encoded with (tables only).
pub type LoadedData = (MtlDataset, Option<Preprocessing>);

impl DataConfig {
    /// The encoder folder of the table's text columns (`None`: no text column), resolved as the
    /// table resolves it; a trainable encoder is one language model for all text columns, so they
    /// must name the same folder.
    pub fn text_encoder_dir(&self) -> Result<Option<PathBuf>, TrainError> {
        if self.source != DataSource::Table {
            return Ok(None);
        }
        let table = self.table()?;
        let mut dirs = self.columns.iter().filter_map(|c| match &c.kind {
            mtrec_data::ColumnKind::Text { encoder, .. } => {
                Some((c.name.as_str(), mtrec_data::resolve(&table.dir, encoder)))
            }
            _ => None,
        });
        let Some((first_name, first)) = dirs.next() else { return Ok(None) };
        if let Some((name, other)) = dirs.find(|(_, d)| *d != first) {
            return Err(TrainError::Config(format!(
                "data.columns `{first_name}` and `{name}` name different encoders ({} and {}): a trainable \
                 encoder (model.text.finetune) is one language model for every text column",
                first.display(),
                other.display()
            )));
        }
        Ok(Some(first))
    }

    /// Loads (census, table) or generates (synthetic) the dataset.
    pub fn load(&self) -> Result<MtlDataset, TrainError> {
        Ok(self.load_with(None)?.0)
    }

    /// The table of a `source = "table"` config.
    pub fn table(&self) -> Result<TableSource, TrainError> {
        let files = match (&self.train, &self.valid, &self.test, &self.holdout, self.path.is_empty()) {
            (Some(train), Some(valid), Some(test), None, true) => {
                TableFiles::Splits { train: train.clone(), valid: valid.clone(), test: test.clone() }
            }
            (Some(train), None, None, Some(holdout), true) => {
                TableFiles::Holdout { train: train.clone(), holdout: holdout.clone() }
            }
            (None, None, None, None, false) => TableFiles::Paths(self.path.clone()),
            _ => {
                return Err(TrainError::Config(
                    "data: a table's files are `train`, `valid` and `test`; or `train` and `holdout`; or `path` \
                     (with [data.split])"
                        .into(),
                ));
            }
        };
        Ok(TableSource {
            name: self.name.clone().unwrap_or_else(|| "table".into()),
            dir: self.dir.clone(),
            files,
            format: self.format,
            csv: self.csv.clone(),
            split: self.split.clone(),
            columns: self.columns.clone(),
            tasks: self.tasks.clone(),
            group_by: self.group_by.clone(),
        })
    }

    /// This table config reading every row of `file` in all three splits (no split rule, no cache):
    /// with a saved preprocessing, the rows a trained model scores.
    pub fn reading(&self, file: &Path) -> Self {
        let mut data = self.clone();
        let file = if file.is_absolute() {
            file.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(file)
        };
        (data.train, data.valid, data.test) = (Some(file.clone()), Some(file.clone()), Some(file));
        (data.holdout, data.path, data.split, data.cache) = (None, vec![], None, false);
        data
    }

    /// Checks that the keys set belong to the source; messages name the key.
    pub fn validate(&self) -> Result<(), TrainError> {
        let table_keys = [
            ("name", self.name.is_some()),
            ("train", self.train.is_some()),
            ("valid", self.valid.is_some()),
            ("test", self.test.is_some()),
            ("holdout", self.holdout.is_some()),
            ("path", !self.path.is_empty()),
            ("format", self.format.is_some()),
            ("csv", self.csv != CsvOptions::default()),
            ("split", self.split.is_some()),
            ("columns", !self.columns.is_empty()),
            ("tasks", !self.tasks.is_empty()),
            ("group_by", self.group_by.is_some()),
        ];
        if self.source != DataSource::Table {
            if let Some((key, _)) = table_keys.iter().find(|(_, set)| *set) {
                return Err(TrainError::Config(format!(
                    "data.{key} describes a table: it needs data.source = \"table\" (the source is {:?})",
                    self.source
                )));
            }
        } else {
            if self.adversarial.is_some() {
                return Err(TrainError::Config(
                    "data.adversarial is the census option; a table marks its task `adversarial = true`".into(),
                ));
            }
            self.table()?.validate()?;
        }
        if self.cascade && self.funnel {
            return Err(TrainError::Config(
                "data.cascade makes a funnel; data.funnel says the tasks already are one: set one".into(),
            ));
        }
        if self.stream && self.source != DataSource::Table {
            return Err(TrainError::Config(format!(
                "data.stream streams a table's chunk files: it needs data.source = \"table\" (the source is {:?})",
                self.source
            )));
        }
        if self.chunk_rows == 0 || self.shuffle_window == 0 {
            return Err(TrainError::Config("data.chunk_rows and data.shuffle_window must be positive".into()));
        }
        Ok(())
    }

    /// Encodes the table into chunk files (or reopens a complete encoding of the same table and
    /// chunking) and returns the streamed dataset with its preprocessing; `fitted` as in
    /// [`Self::load_with`]. See [`mtrec_data::ChunkedSplit`].
    pub fn load_streamed(
        &self,
        fitted: Option<&Preprocessing>,
    ) -> Result<(mtrec_data::ChunkedDataset, Preprocessing), TrainError> {
        self.validate()?;
        if !self.stream {
            return Err(TrainError::Config("load_streamed needs data.stream = true".into()));
        }
        let table = self.table()?;
        let options = mtrec_data::StreamOptions {
            chunk_rows: self.chunk_rows,
            window: self.shuffle_window,
            funnel: self.funnel,
            cascade: self.cascade,
        };
        // what the chunks encode: the table (config and file bytes), the chunking, and a given
        // preprocessing; an encoding that fitted the same preprocessing itself serves too (a run's
        // `eval` reuses its training's chunks)
        let flags = match (self.funnel, self.cascade) {
            (true, _) => "-funnel",
            (_, true) => "-cascade",
            _ => "",
        };
        let base = format!(
            "{}-{}{flags}",
            table.cache_key(None, &mut |dir: &Path| crate::open_text_input(dir, self.text_tokens))?,
            self.chunk_rows
        );
        let key = match fitted {
            None => base.clone(),
            Some(p) => {
                let json = serde_json::to_vec(p).expect("preprocessing serialises");
                let digest: String = md5::Md5::digest(&json).iter().map(|b| format!("{b:02x}")).collect();
                format!("{base}-{digest}")
            }
        };
        let cache = || {
            mtrec_data::default_cache_dir().ok_or_else(|| {
                TrainError::Config("data.stream: no cache folder (HOME unset); set data.chunk_dir".into())
            })
        };
        let mut candidates = match &self.chunk_dir {
            Some(dir) => vec![dir.clone()],
            None => vec![cache()?.join(format!("{base}.chunks")), cache()?.join(format!("{key}.chunks"))],
        };
        candidates.dedup(); // without a preprocessing, the key is the base
        // the folder written is locked before anything is decided: a second run (or rank) encoding
        // the same table waits, then finds the first one's complete encoding and reuses it
        let lock = mtrec_data::FolderLock::exclusive(candidates.last().expect("a chunk folder"))?;
        for dir in &candidates {
            let written = std::fs::read_to_string(dir.join("source.key")).unwrap_or_default();
            if !dir.join(mtrec_data::MANIFEST_FILE).is_file() || (written != key && written != base) {
                continue;
            }
            let opened = mtrec_data::open_chunks(dir, self.shuffle_window)?;
            if fitted.is_none_or(|p| *p == opened.preprocessing) {
                tracing::info!("reusing the chunk files in {}", dir.display());
                return Ok((opened.dataset, opened.preprocessing));
            }
        }
        let dir = candidates.last().expect("a chunk folder").clone();
        let key_file = dir.join("source.key");
        let _ = std::fs::remove_file(&key_file);
        let started = std::time::Instant::now();
        let mut last = std::time::Instant::now();
        let written = table.write_chunks_locked(
            &lock,
            fitted,
            options,
            &mut |dir: &Path| crate::open_text_input(dir, self.text_tokens),
            &mut |pass, rows| {
                if last.elapsed().as_secs() >= 10 {
                    tracing::info!("{pass}: {rows} rows ({:.0} s)", started.elapsed().as_secs_f64());
                    last = std::time::Instant::now();
                }
            },
        )?;
        std::fs::write(&key_file, &key)
            .map_err(|source| mtrec_data::DataError::Io { path: key_file.clone(), source })?;
        tracing::info!(
            "encoded {} into chunk files in {} ({:.1} s)",
            table.name,
            dir.display(),
            started.elapsed().as_secs_f64()
        );
        Ok((written.dataset, written.preprocessing))
    }

    /// Loads the dataset; a table is encoded with `fitted` when given (a run's saved
    /// preprocessing), else fitted on its training rows (and cached).
    pub fn load_with(&self, fitted: Option<&Preprocessing>) -> Result<LoadedData, TrainError> {
        self.validate()?;
        let (dataset, preprocessing) = match self.source {
            DataSource::Census => {
                let dir = if self.dir.as_os_str().is_empty() { Path::new(CENSUS_DIR) } else { &self.dir };
                if !dir.join(mtrec_data::CENSUS_FILES[0].0).exists() {
                    return Err(TrainError::Config(format!(
                        "data.dir = {:?} has no {}: run `cargo xtask data census` or pass --data-dir",
                        dir,
                        mtrec_data::CENSUS_FILES[0].0
                    )));
                }
                let sex = match self.adversarial.as_deref() {
                    None => false,
                    Some("sex") => true,
                    Some(other) => {
                        return Err(TrainError::Config(format!(
                            "data.adversarial = {other:?}: the census data offers \"sex\""
                        )));
                    }
                };
                (CensusIncome::new(dir, self.group).with_adversarial_sex(sex).load()?, None)
            }
            DataSource::Synthetic => {
                if let Some(a) = &self.adversarial {
                    return Err(TrainError::Config(format!(
                        "data.adversarial = {a:?}: synthetic data has none of its own; data.synthetic.sensitive_leak > 0 \
                         plants one (the adversarial task `sensitive`)"
                    )));
                }
                (Synthetic::new(self.synthetic.clone())?.generate(), None)
            }
            DataSource::Table => {
                let table = self.table()?;
                let cache = if self.cache { mtrec_data::default_cache_dir() } else { None };
                let (loaded, outcome) = table.load_cached(fitted, cache.as_deref(), &mut |dir: &Path| {
                    crate::open_text_input(dir, self.text_tokens)
                })?;
                if let mtrec_data::CacheOutcome::Hit(path) = outcome {
                    tracing::info!("table cache hit: {}", path.display());
                }
                (loaded.dataset, Some(loaded.preprocessing))
            }
        };
        let dataset = if self.cascade { dataset.into_cascade()? } else { dataset };
        if self.funnel {
            return Ok((dataset.into_funnel()?, preprocessing));
        }
        Ok((dataset, preprocessing))
    }
}

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

impl ExperimentConfig {
    /// Parses a TOML config, applies `section.key=value` overrides, and checks the values.
    ///
    /// `origin` names the text in error messages (usually the file path).
    pub fn from_toml(text: &str, origin: &str, overrides: &[String]) -> Result<Self, TrainError> {
        let bad = |e: toml::de::Error| TrainError::Config(format!("{origin}: {e}"));
        let mut table: toml::Table = toml::from_str(text).map_err(bad)?;
        for o in overrides {
            apply_override(&mut table, o)?;
        }
        let defaults = toml::Table::try_from(Self::default()).expect("the default config serialises");
        sections_are_tables(&table, &defaults, "").map_err(|m| TrainError::Config(format!("{origin}: {m}")))?;
        let config: Self = toml::Value::Table(table).try_into::<Self>().map_err(|e| {
            if overrides.is_empty() {
                TrainError::Config(format!("{origin}: {e}"))
            } else {
                TrainError::Config(format!("{origin} with --set {overrides:?}: {e}"))
            }
        })?;
        config.validate()?;
        Ok(config.with_text_input())
    }

    /// The config with `data.text_tokens` following `model.text`: a trainable encoder reads
    /// token ids. (Parsing a config does this; a config built in code calls it.)
    pub fn with_text_input(mut self) -> Self {
        self.data.text_tokens = self.model.text.trains().then_some(self.model.text.max_len);
        self
    }

    /// Reads a config file; see [`from_toml`](Self::from_toml).
    pub fn from_file(path: &Path, overrides: &[String]) -> Result<Self, TrainError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| TrainError::Io { path: path.to_path_buf(), source })?;
        Self::from_toml(&text, &path.display().to_string(), overrides)
    }

    /// Whether a checkpoint written under `other` can continue under `self`: everything equal but
    /// `train.epochs` (a resumed run may go on for longer), `data.dir` (the data may have moved) and
    /// `data.cache`.
    pub fn same_run_as(&self, other: &Self) -> bool {
        let normalise = |c: &Self| {
            let mut c = c.clone();
            c.train.epochs = 1;
            c.data.dir = PathBuf::new();
            c.data.cache = true;
            c.data.chunk_dir = None;
            c
        };
        normalise(self) == normalise(other)
    }

    /// The config as TOML (what a run records as `config.toml`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("configs serialise")
    }

    /// Range checks that need no dataset; messages name the key.
    pub fn validate(&self) -> Result<(), TrainError> {
        let t = &self.train;
        let err = |m: &str| Err(TrainError::Config(m.into()));
        if t.epochs == 0 {
            return err("train.epochs must be at least 1");
        }
        if t.batch_size == 0 || t.eval_batch_size == 0 {
            return err("train.batch_size and train.eval_batch_size must be positive");
        }
        if t.evals_per_epoch == 0 {
            return err("train.evals_per_epoch must be at least 1 (1: validate at the end of each epoch)");
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            return err("train.lr must be a positive number");
        }
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
            return err("train.weight_decay must be ≥ 0");
        }
        if !(t.adam_epsilon.is_finite() && t.adam_epsilon > 0.0) {
            return err("train.adam_epsilon must be positive");
        }
        let es = &t.early_stopping;
        if es.patience == 0 {
            return err(
                "train.early_stopping.patience must be at least 1 (epochs in a row without improvement before \
                 stopping); to train every epoch, set it to train.epochs",
            );
        }
        if !(es.min_delta.is_finite() && es.min_delta >= 0.0) {
            return Err(TrainError::Config(format!(
                "train.early_stopping.min_delta must be ≥ 0 (a negative one would count worse epochs as \
                 improvements), got {}",
                es.min_delta
            )));
        }
        self.data.validate()?;
        if let Some((name, o)) = self.tasks.iter().find(|(_, o)| !(o.lr_scale.is_finite() && o.lr_scale > 0.0)) {
            return Err(TrainError::Config(format!("tasks.{name}.lr_scale must be positive, got {}", o.lr_scale)));
        }
        self.model.validate().map_err(TrainError::Config)
    }

    /// The model of `[model]` for a dataset's schema, on `device`; the schema is checked first.
    ///
    /// With `model.text.finetune` other than `frozen`, every input layer gets the pretrained
    /// encoder of the table's text columns ([`mtrec_text::TextEncoder`]), trainable as
    /// `model.text` says; `top` stores its frozen prefix under the cache folder's `text-prefix/`
    /// ([`mtrec_text::PrefixCache`]).
    ///
    /// Builds the built-in architectures; [`Self::build_model_with`] also a user's.
    pub fn build_model(&self, schema: &Schema, device: &burn::tensor::Device) -> Result<MultiTaskNet, TrainError> {
        self.build_model_with(schema, device, crate::Registry::builtin())
    }

    /// [`Self::build_model`] for a config that may name an architecture `registry` registered.
    pub fn build_model_with<C: MultiTaskModule>(
        &self,
        schema: &Schema,
        device: &burn::tensor::Device,
        registry: &crate::Registry<C>,
    ) -> Result<MultiTaskNet<C>, TrainError> {
        self.model.check_schema(schema).map_err(TrainError::Config)?;
        let factory = registry.factory(&self.model.architecture)?;
        let model = self.model.init_with(schema, factory, device).map_err(TrainError::Config)?.materialize();
        if !self.model.text.trains() {
            return Ok(model);
        }
        let dir = self.data.text_encoder_dir()?.ok_or_else(|| {
            TrainError::Config(format!(
                "model.text.finetune = {:?} trains the text encoder, but the table has no text column",
                self.model.text.finetune
            ))
        })?;
        let tokens: Vec<bool> = schema.text.iter().map(|f| f.tokens).collect();
        // `top`: one frozen-prefix store for every input layer's encoder (their frozen layers are
        // the same pretrained ones), on disk in the cache folder
        let prefix_root = mtrec_data::default_cache_dir().map(|d| d.join("text-prefix"));
        let mut prefix: Option<mtrec_text::PrefixCache> = None;
        let mut open = |training: &mtrec_text::TextTrainingConfig| {
            let mut encoder = mtrec_text::TextEncoder::open(&dir, training, device)
                .map_err(|e| TrainError::Config(format!("model.text: {e}")))?;
            match &prefix {
                Some(shared) => encoder.prefix = Some(shared.clone()),
                None => {
                    encoder = encoder.with_prefix_cache(prefix_root.as_deref(), training);
                    prefix = encoder.prefix.clone();
                }
            }
            Ok::<_, TrainError>(encoder)
        };
        let text = &self.model.text;
        let model = model.with_text_encoders(&tokens, || open(text))?;
        if model.text_encoder().is_none() {
            return Err(TrainError::Config(format!(
                "model.text.finetune = {:?} trains the text encoder, but model.architecture = {:?} exposes no input \
                 layer to attach it to (MultiTaskModel::input_layers_mut)",
                text.finetune,
                self.model.architecture.name()
            )));
        }
        if !text.per_task_adapters() {
            return Ok(model);
        }
        let fields = model.token_fields();
        let main = schema.tasks.iter().filter(|t| !t.adversarial);
        let branches = main
            .map(|task| {
                let encoder = open(&text.task_adapters())?;
                Ok(mtrec_model::TaskTextBranch::new(encoder, fields.clone(), task.output_dim(), device))
            })
            .collect::<Result<Vec<_>, TrainError>>()?;
        Ok(model.with_task_text_branches(branches))
    }

    /// The optimisers: `train`'s for the model; for a trainable text encoder's parameters, AdamW
    /// with `model.text`'s weight decay and per-parameter gradient-norm clipping.
    pub fn optimizers<C: MultiTaskModule>(&self, model: &MultiTaskNet<C>) -> crate::Optimizers {
        let mut optim = self.train.optimizer();
        if let Some(group) = model.text_encoder_parameters() {
            let text = &self.model.text;
            let adamw = burn::optim::AdamWConfig::new()
                .with_weight_decay(text.weight_decay as f32)
                .with_epsilon(self.train.adam_epsilon as f32)
                .build();
            let clip = (text.max_grad_norm > 0.0).then_some(GradientClipping::Norm(text.max_grad_norm as f32));
            optim.dense = optim.dense.with_group(group, adamw, clip);
        }
        optim
    }

    /// The learning rates at training progress `p ∈ [0, 1]`: [`Self::learning_rates`], with a
    /// trainable text encoder's `model.text.lr` warmed up linearly over the first `warmup` of the
    /// run and decayed linearly to 0 at its end.
    pub fn learning_rates_at<C: MultiTaskModule>(
        &self,
        schema: &Schema,
        model: &MultiTaskNet<C>,
        progress: f64,
    ) -> Result<ModuleLearningRate, TrainError> {
        let Some(group) = model.text_encoder_parameters() else { return self.learning_rates(schema, model) };
        let text = &self.model.text;
        let factor =
            if progress < text.warmup { progress / text.warmup } else { (1.0 - progress) / (1.0 - text.warmup) };
        self.learning_rates_with(schema, model, Some((group, text.lr * factor.clamp(0.0, 1.0))))
    }

    /// Checks the config against the dataset: a `gauc` monitor needs groups, a `cvr_auc` one a
    /// funnel; ESMM and AITM model the steps of a funnel, so a later step must never be positive
    /// where the earlier one is not (on the training rows) — the error counts the rows that break it
    /// and points to `data.cascade`.
    ///
    /// A streamed dataset's funnel was checked on every row as it was encoded (`data.funnel`), so
    /// the check here reads in-memory datasets only.
    pub fn check_dataset<S: mtrec_data::SplitRows>(&self, dataset: &MtlDataset<S>) -> Result<(), TrainError> {
        self.fairness.column(&dataset.schema)?;
        let metric = self.train.early_stopping.metric.as_str();
        let grouped = match dataset.valid.in_memory() {
            Some(table) => !table.groups.is_empty(),
            None => self.data.group_by.is_some(),
        };
        if metric == "gauc" && !grouped {
            return Err(TrainError::Config(
                "train.early_stopping.metric = \"gauc\" needs groups: set data.group_by (tables)".into(),
            ));
        }
        if metric == "cvr_auc" && !dataset.schema.funnel {
            return Err(TrainError::Config(
                "train.early_stopping.metric = \"cvr_auc\" needs funnel tasks: data.cascade or data.funnel".into(),
            ));
        }
        if !self.model.needs_funnel() {
            return Ok(());
        }
        let schema = &dataset.schema;
        let steps: Vec<usize> = (0..schema.n_tasks()).filter(|&t| !schema.tasks[t].adversarial).collect();
        let Some(train) = dataset.train.in_memory() else {
            return match schema.funnel {
                true => Ok(()),
                false => Err(TrainError::Config(format!(
                    "model.architecture = {:?} needs funnel labels: a streamed dataset needs data.funnel or \
                     data.cascade (checked on every row as it is encoded)",
                    self.model.architecture.name()
                ))),
            };
        };
        let Some(v) = train.funnel_violation(&steps, schema.n_tasks()) else { return Ok(()) };
        let name = |t: usize| schema.tasks[t].name.as_str();
        Err(TrainError::Config(format!(
            "model.architecture = {:?} needs funnel labels (a step positive only where the step before it is), but \
             task `{}` is 1 where `{}` is 0 on {} of {} training rows (first: row {}); set data.cascade = true to \
             train on the funnel of the tasks, or choose another architecture",
            self.model.architecture.name(),
            name(v.task),
            name(v.previous),
            v.rows,
            train.n_rows,
            v.first_row
        )))
    }

    /// The balancer of `[balance]` for a dataset's tasks (a built-in method; a registered one is
    /// built by [`crate::Registry::build_balancer`]).
    pub fn balancer(&self, schema: &Schema) -> Result<Box<dyn LossBalancer>, TrainError> {
        crate::Registry::builtin().build_balancer(self, schema)
    }

    /// What a balancer for a dataset's tasks is built for: the task names and kinds, `train.lr`,
    /// the seed.
    pub fn balance_context(&self, schema: &Schema) -> BalanceContext {
        let names = schema.tasks.iter().map(|t| t.name.clone()).collect();
        BalanceContext { names, kinds: schema.task_kinds(), lr: self.train.lr, seed: self.seed }
    }

    /// The learning rate of every parameter: `train.lr`, times `tasks.<name>.lr_scale` for each
    /// task's own parameters. Unknown task names are errors naming the key.
    pub fn learning_rates(
        &self,
        schema: &Schema,
        model: &impl MultiTaskModel,
    ) -> Result<ModuleLearningRate, TrainError> {
        self.learning_rates_with(schema, model, None)
    }

    fn learning_rates_with(
        &self,
        schema: &Schema,
        model: &impl MultiTaskModel,
        encoder: Option<(ParamGroup, f64)>,
    ) -> Result<ModuleLearningRate, TrainError> {
        let mut policy = ModuleLrSchedulerConfig::new(LrSchedulerConfig::Constant(self.train.lr));
        if let Some((group, lr)) = encoder {
            policy = policy.with_group(group, LrSchedulerConfig::Constant(lr));
        }
        for (name, options) in &self.tasks {
            let task = schema.task_index(name).ok_or_else(|| {
                let names: Vec<&str> = schema.tasks.iter().map(|t| t.name.as_str()).collect();
                TrainError::Config(format!("tasks.{name}: no task of that name (tasks: {})", names.join(", ")))
            })?;
            let group: ParamGroup = model.task_parameters(task);
            policy = policy.with_group(group, LrSchedulerConfig::Constant(self.train.lr * options.lr_scale));
        }
        Ok(policy.init().map_err(TrainError::Config)?.step())
    }
}

/// Every key that is a section in the defaults (`[train]`, `[train.early_stopping]`…) must be a
/// table in `user`: serde would otherwise read an array into a section's fields by position
/// (`--set train=[16, 8]` became epochs 16, batch size 8 — found by fuzzing).
fn sections_are_tables(user: &toml::Table, defaults: &toml::Table, prefix: &str) -> Result<(), String> {
    for (key, default) in defaults {
        let (Some(toml::Value::Table(inner)), Some(value)) = (Some(default), user.get(key)) else { continue };
        let name = format!("{prefix}{key}");
        match value {
            toml::Value::Table(given) => sections_are_tables(given, inner, &format!("{name}."))?,
            other => {
                return Err(format!(
                    "{name} is a section: set its keys ({name}.key = value), not {} {other}",
                    other.type_str()
                ));
            }
        }
    }
    Ok(())
}

/// Sets `a.b.c = value` in `table`; the value is read as TOML (`3`, `1e-3`, `true`, `[16, 8]`,
/// `"mmoe"`) and otherwise taken as a bare string (`mmoe`).
fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<(), TrainError> {
    let (path, raw) = assignment
        .split_once('=')
        .ok_or_else(|| TrainError::Config(format!("--set {assignment:?}: expected section.key=value")))?;
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.trim().to_string()));
    let keys: Vec<&str> = path.trim().split('.').collect();
    let (last, parents) = keys.split_last().expect("split yields one item");
    let mut node = table;
    let mut k = 0;
    while k < parents.len() {
        let key = parents[k];
        let entry = node.entry(key.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        // an array of tables takes an index: `data.columns.0.hash_buckets`
        let entry = match entry {
            toml::Value::Array(items) => {
                let list = parents[..=k].join(".");
                k += 1;
                let index = parents.get(k).and_then(|i| i.parse::<usize>().ok());
                let count = items.len();
                index.and_then(|i| items.get_mut(i)).ok_or_else(|| {
                    TrainError::Config(format!(
                        "--set {assignment:?}: {list} is a list of {count} items: name one by its index \
                         ({list}.0.… to {list}.{}.…)",
                        count.saturating_sub(1)
                    ))
                })?
            }
            other => other,
        };
        node = entry
            .as_table_mut()
            .ok_or_else(|| TrainError::Config(format!("--set {assignment:?}: {key} is not a section")))?;
        k += 1;
    }
    node.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = ExperimentConfig::from_toml("[train]\nlearning_rate = 0.1\n", "x.toml", &[]).unwrap_err().to_string();
        assert!(err.contains("x.toml") && err.contains("learning_rate"), "{err}");
        let err = ExperimentConfig::from_toml("[modle]\n", "x.toml", &[]).unwrap_err().to_string();
        assert!(err.contains("modle"), "{err}");
    }

    #[test]
    fn overrides_apply_and_are_checked() {
        let sets = [
            "train.lr=0.01".to_string(),
            "model.architecture=shared_bottom".into(),
            "model.tower_hidden=[4, 2]".into(),
        ];
        let c = ExperimentConfig::from_toml("[train]\nlr = 0.1\n", "x.toml", &sets).unwrap();
        assert_eq!(c.train.lr, 0.01);
        assert_eq!(c.model.architecture, mtrec_model::Architecture::SharedBottom);
        assert_eq!(c.model.tower_hidden, vec![4, 2]);
        let err = ExperimentConfig::from_toml("", "x.toml", &["train.lrr=1".into()]).unwrap_err().to_string();
        assert!(err.contains("lrr"), "{err}");
        let err = ExperimentConfig::from_toml("", "x.toml", &["train.epochs=0".into()]).unwrap_err().to_string();
        assert!(err.contains("train.epochs"), "{err}");
        // a section replaced by a value is refused, not read by position (fuzzing found it)
        for (text, set) in [("", "train=[16, 8]"), ("train = [16, 8]\n", "seed=1"), ("", "train.early_stopping=3")] {
            let err = ExperimentConfig::from_toml(text, "x.toml", &[set.to_string()]).unwrap_err().to_string();
            assert!(err.contains("is a section"), "{text:?} {set}: {err}");
        }
        // an item of a list of tables by its index
        let columns = include_str!("../../../configs/ctr_vocab.toml");
        let sets = ["data.columns.0.hash_buckets=10_000_000".to_string(), "model.sparse_embeddings=true".into()];
        let c = ExperimentConfig::from_toml(columns, "x.toml", &sets).unwrap();
        let kind = format!("{:?}", c.data.columns[0].kind);
        assert!(kind.contains("hash_buckets: Some(10000000)"), "{kind}");
        assert_eq!(c.model.sparse_embeddings, Some(true));
        for bad in ["data.columns.9.hash_buckets=1", "data.columns.x.hash_buckets=1"] {
            let err = ExperimentConfig::from_toml(columns, "x.toml", &[bad.into()]).unwrap_err().to_string();
            assert!(err.contains("data.columns.0"), "{bad}: {err}");
        }
    }

    /// `patience = 0` used to train exactly one epoch; a negative `min_delta` counted worse epochs
    /// as improvements. Both are refused, naming the key.
    #[test]
    fn early_stopping_patience_and_min_delta_are_validated() {
        let err = ExperimentConfig::from_toml("[train.early_stopping]\npatience = 0\n", "x.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("train.early_stopping.patience"), "{err}");
        let err = ExperimentConfig::from_toml("[train.early_stopping]\nmin_delta = -0.01\n", "x.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("train.early_stopping.min_delta"), "{err}");
        let ok = "[train.early_stopping]\npatience = 1\nmin_delta = 0.001\n";
        assert!(ExperimentConfig::from_toml(ok, "x.toml", &[]).is_ok());
    }

    /// The options added from the papers parse, and belong to their methods.
    #[test]
    fn paper_options_parse() {
        let c = ExperimentConfig::from_toml(
            "[model]\nadversarial_schedule = \"dann\"\n[balance]\nmethod = \"mgda\"\nmgda_normalization = \"loss+\"\n",
            "x.toml",
            &[],
        )
        .unwrap();
        assert_eq!(c.model.adversarial_schedule, mtrec_model::AdversarialSchedule::Dann);
        assert_eq!(c.balance.mgda_normalization, Some(mtrec_balance::MgdaNormalization::LossPlus));
        let c =
            ExperimentConfig::from_toml("[balance]\nmethod = \"cagrad\"\ncagrad_scale = \"mean\"\n", "x", &[]).unwrap();
        assert_eq!(c.balance.cagrad_scale, Some(mtrec_balance::CaGradScale::Mean));
    }

    #[test]
    fn round_trips_through_toml() {
        let c = ExperimentConfig::default();
        assert_eq!(ExperimentConfig::from_toml(&c.to_toml(), "rt", &[]).unwrap(), c);
    }

    #[test]
    fn shipped_configs_parse() {
        let manifest = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
        let dir = Path::new(&manifest).join("../../configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                ExperimentConfig::from_file(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 3, "expected the shipped configs in {}", dir.display());
    }

    fn repo_path(relative: &str) -> std::path::PathBuf {
        let manifest = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
        Path::new(&manifest).join("../..").join(relative)
    }

    /// The census-mmoe protocol as a table config gives exactly the dedicated loader's encoded
    /// tables: the committed sample always, the full data with `MTREC_CENSUS_DIR`.
    #[test]
    fn census_as_a_table_equals_the_census_loader() {
        let mut dirs = vec![repo_path("crates/mtrec-data/tests/fixtures/census-small")];
        match std::env::var_os("MTREC_CENSUS_DIR") {
            Some(d) => dirs.push(d.into()),
            None => eprintln!("SKIP the full census: set MTREC_CENSUS_DIR to the census-income folder"),
        }
        for dir in dirs {
            let set = |c: &str| {
                let mut cfg =
                    ExperimentConfig::from_file(&repo_path(c), &[format!("data.dir={:?}", dir.display().to_string())])
                        .unwrap();
                cfg.data.cache = false;
                cfg.data.load().unwrap()
            };
            let table = set("configs/census_table_mmoe.toml");
            let census = set("configs/census_mmoe.toml");
            assert_eq!(table.schema, census.schema, "{}", dir.display());
            assert_eq!(table.train, census.train, "{}", dir.display());
            assert_eq!(table.valid, census.valid, "{}", dir.display());
            assert_eq!(table.test, census.test, "{}", dir.display());
            assert_eq!(table.name, census.name);
        }
    }

    /// wcr-mtl from the Parquet file and from the CSV written from it encode identically, with the
    /// protocol's split sizes (`MTREC_WCR_DIR`).
    #[test]
    fn wcr_parquet_and_csv_encode_identically() {
        let Some(dir) = std::env::var_os("MTREC_WCR_DIR") else {
            eprintln!(
                "SKIP wcr_parquet_and_csv_encode_identically: set MTREC_WCR_DIR to the womens-clothing-reviews folder"
            );
            return;
        };
        let load = |sets: &[&str]| {
            let mut all: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            all.push(format!("data.dir={:?}", Path::new(&dir).display().to_string()));
            let mut cfg = ExperimentConfig::from_file(&repo_path("configs/wcr_mmoe.toml"), &all).unwrap();
            cfg.data.cache = false;
            cfg.data.load_with(None).unwrap()
        };
        let (parquet, pp) = load(&[]);
        let (csv, cp) = load(&["data.path=[\"womens_clothing_reviews.csv.gz\"]"]);
        assert_eq!((parquet.train.n_rows, parquet.valid.n_rows, parquet.test.n_rows), (18_790, 2_348, 2_348));
        assert_eq!(parquet.schema, csv.schema);
        assert_eq!(parquet.train, csv.train);
        assert_eq!(parquet.valid, csv.valid);
        assert_eq!(parquet.test, csv.test);
        assert_eq!(pp, cp);
        // 1,206 distinct items in the file; the vocabulary holds those seen in training
        assert!(parquet.schema.categorical[0].vocab_size > 1000, "{:?}", parquet.schema.categorical[0]);
        assert!(!parquet.valid.groups.is_empty());
    }

    /// `configs/ctr_*.toml` read what `cargo xtask data synthetic-ctr` writes (Parquet and CSV), as
    /// a funnel ESMM accepts, with the generator's rows split by the config.
    #[test]
    fn ctr_configs_read_the_generated_funnel() {
        let dir = tempfile::tempdir().unwrap();
        let generator = mtrec_data::SyntheticCtrConfig { rows: 4_000, users: 300, items: 200, ..Default::default() };
        for (format, file) in [
            (mtrec_data::TableFormat::Parquet, "synthetic_ctr.parquet"),
            (mtrec_data::TableFormat::Csv, "synthetic_ctr.csv"),
        ] {
            let summary = mtrec_data::write_synthetic_ctr(generator.clone(), dir.path(), format, |_| {}).unwrap();
            for config in ["configs/ctr_esmm.toml", "configs/ctr_mmoe.toml"] {
                let sets =
                    [format!("data.dir={:?}", dir.path().display().to_string()), format!("data.path=[{file:?}]")];
                let mut cfg = ExperimentConfig::from_file(&repo_path(config), &sets).unwrap();
                cfg.data.cache = false;
                let data = cfg.data.load().unwrap();
                let rows = data.train.n_rows + data.valid.n_rows + data.test.n_rows;
                assert_eq!(rows as u64, summary.rows, "{config} {file}");
                assert!(data.valid.n_rows > 100 && data.test.n_rows > 100, "{config}: 5 % each");
                assert_eq!((data.schema.task_index("click"), data.schema.task_index("purchase")), (Some(0), Some(1)));
                cfg.check_dataset(&data).unwrap();
            }
        }
    }
}
