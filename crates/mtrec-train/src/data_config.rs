//! The `[data]` section: which dataset (synthetic, census, or a table described by the config)
//! and how it is loaded — in memory or streamed, with the text columns' encoders.

use std::path::{Path, PathBuf};

use md5::Digest;
use mtrec_data::{
    CensusGroup, CensusIncome, ColumnSpec, CsvOptions, MtlDataset, Preprocessing, SplitRule, Synthetic,
    SyntheticConfig, TableFiles, TableFormat, TableSource, TaskColumn,
};
use serde::{Deserialize, Serialize};

use crate::TrainError;

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
    /// Each dense column also becomes a categorical field of its quantile bucket on the training
    /// split, `N` buckets (default 0: off); see [`mtrec_data::DenseBuckets`]. In-memory tables only.
    pub dense_buckets: usize,
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
    /// sentence embeddings: not a key of the file — [`ExperimentConfig`](crate::ExperimentConfig) sets it from
    /// `model.text` (`finetune` other than `frozen`, `max_len`).
    #[serde(skip)]
    pub text_tokens: Option<usize>,
    /// The table is scored by a trained model, not trained on ([`Self::reading`]): its files may
    /// lack the label columns (see [`TableSource::score_only`]). Not a key of the file.
    #[serde(skip)]
    pub score_only: bool,
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
            dense_buckets: 0,
            cache: true,
            stream: false,
            chunk_rows: 1 << 18,
            shuffle_window: 4,
            chunk_dir: None,
            text_tokens: None,
            score_only: false,
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
            score_only: self.score_only,
        })
    }

    /// This table config reading every row of `file` in all three splits (no split rule, no cache),
    /// its label columns optional (`score_only`): with a saved preprocessing, the rows a trained
    /// model scores.
    pub fn reading(&self, file: &Path) -> Self {
        let mut data = self.clone();
        let file = if file.is_absolute() {
            file.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(file)
        };
        (data.train, data.valid, data.test) = (Some(file.clone()), Some(file.clone()), Some(file));
        (data.holdout, data.path, data.split, data.cache) = (None, vec![], None, false);
        data.score_only = true;
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
        if self.dense_buckets == 1 {
            return Err(TrainError::Config("data.dense_buckets = 1: use 0 (off) or at least 2 buckets".into()));
        }
        if self.stream && self.dense_buckets > 0 {
            return Err(TrainError::Config(
                "data.dense_buckets needs the table in memory: it does not work with data.stream = true".into(),
            ));
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
        let (dataset, preprocessing) = if self.dense_buckets > 0 {
            // a table's trained run scores new rows with the buckets of its training split
            let fitted = fitted.and_then(|p| p.dense_buckets.as_ref());
            let (dataset, buckets) = dataset.with_dense_buckets(self.dense_buckets, fitted)?;
            (dataset, preprocessing.map(|p| Preprocessing { dense_buckets: Some(buckets), ..p }))
        } else {
            (dataset, preprocessing)
        };
        let dataset = if self.cascade { dataset.into_cascade()? } else { dataset };
        if self.funnel {
            return Ok((dataset.into_funnel()?, preprocessing));
        }
        Ok((dataset, preprocessing))
    }
}
