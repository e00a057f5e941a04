//! A dataset described by configuration instead of code: files (CSV/TSV or Parquet), a split rule,
//! the input columns and the tasks ([`crate::columns`]). Loading reads every file once, places each
//! row in its split, fits the preprocessing on the training rows (or applies a saved one), and
//! encodes the three splits.
//!
//! Files: `train` / `valid` / `test` (one file per split); `train` plus `holdout`, a file the split
//! rule divides into validation and test (census: even rows valid, odd rows test); or `path` (one
//! or more files, rows numbered across them in order) divided by the split rule.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{
    CategoricalField, ColumnKind, ColumnSpec, CsvOptions, DataError, EncodedTable, FittedColumn, MtlDataset,
    MultiCategoricalField, Preprocessing, RowWidths, Schema, SplitName, SplitRule, TableFormat, TaskColumn, TaskKind,
    TaskSpec, TextField,
    table::dense_fit::DenseFit,
    table::file::resolve,
    table::scan::{NULL, Raw, Scan, ScannedRows},
};

/// A text encoder as the table loader sees it: the data crate knows text only through this trait
/// (`mtrec-text` implements it). A frozen encoder gives each text its sentence embedding; for an
/// encoder the model trains, the "embedding" is the text's token ids (see [`Self::tokens`]), which
/// the model's encoder reads at every step.
pub trait TextEmbedder {
    /// The model's identity (its weights' sha256): cached encodings are keyed by it.
    fn model_id(&self) -> String;
    /// Width of an embedding.
    fn dim(&self) -> usize;
    /// The embeddings of `texts`, row-major `[texts, dim]`.
    fn embed(&mut self, texts: &[String]) -> Result<Vec<f32>, String>;
    /// Whether the values are token ids (`id + 1` each, `0` for padding) for a trainable encoder
    /// rather than a sentence embedding.
    fn tokens(&self) -> bool {
        false
    }
}

/// Opens the encoder of a text column (its `encoder` folder).
pub type TextEmbedderFactory<'a> = dyn FnMut(&Path) -> Result<Box<dyn TextEmbedder>, String> + 'a;

/// Which files hold the rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TableFiles {
    /// One file per split.
    Splits {
        /// Training rows.
        train: PathBuf,
        /// Validation rows.
        valid: PathBuf,
        /// Test rows.
        test: PathBuf,
    },
    /// Training rows, and a file the split rule divides into validation and test.
    Holdout {
        /// Training rows.
        train: PathBuf,
        /// Validation and test rows.
        holdout: PathBuf,
    },
    /// Files the split rule divides (rows numbered across the files, in order).
    Paths(Vec<PathBuf>),
}

/// A table dataset (`[data] source = "table"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableSource {
    /// The dataset's name in reports.
    pub name: String,
    /// Relative file paths are relative to this folder.
    pub dir: PathBuf,
    /// The files.
    pub files: TableFiles,
    /// The format (default: from each file's name).
    pub format: Option<TableFormat>,
    /// How CSV files are read.
    pub csv: CsvOptions,
    /// How rows are split (with `holdout` or `path`).
    pub split: Option<SplitRule>,
    /// The inputs.
    pub columns: Vec<ColumnSpec>,
    /// The tasks.
    pub tasks: Vec<TaskColumn>,
    /// A column grouping rows (a user): binary tasks then also report GAUC.
    pub group_by: Option<String>,
    /// The table is scored with a trained model, not trained on (`eval --file`): a file may lack
    /// a task's label column (and `group_by`'s), and a label cell may be empty; such labels are
    /// absent (NaN: no metric counts the row). Default false: both are errors naming the file.
    #[serde(default)]
    pub score_only: bool,
}

/// Per split: rows, and each input column's null count; per task, the label rate (binary: share
/// of 1; regression: mean; multiclass: share of each class).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SplitStats {
    /// Rows.
    pub rows: usize,
    /// Null (missing) cells per input column.
    pub nulls: Vec<(String, usize)>,
    /// Per task: binary rate / regression mean / multiclass class shares, over the rows holding
    /// its label.
    pub labels: Vec<(String, Vec<f64>)>,
    /// The tasks whose label is absent on some rows (a `space`): the rows that hold it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labelled: Vec<(String, usize)>,
    /// Groups (`group_by`), if any.
    pub groups: usize,
}

/// A loaded table: the dataset, its fitted preprocessing, and statistics per split.
#[derive(Debug, Clone)]
pub struct LoadedTable {
    /// The dataset.
    pub dataset: MtlDataset,
    /// The preprocessing the splits were encoded with.
    pub preprocessing: Preprocessing,
    /// Train, valid, test statistics.
    pub stats: [SplitStats; 3],
}

/// The group id of a row whose `group_by` cell is null: it belongs to no group, and GAUC leaves
/// it out.
pub const NO_GROUP: u32 = u32::MAX;

impl TableSource {
    /// The file columns the table reads, each once: inputs, labels, group and split columns.
    pub(crate) fn wanted_columns(&self) -> Vec<String> {
        let mut wanted: Vec<String> = Vec::new();
        let mut add = |c: &str| {
            if !wanted.iter().any(|w| w == c) {
                wanted.push(c.to_string());
            }
        };
        for column in &self.columns {
            column.source_columns().iter().for_each(|c| add(c));
        }
        self.tasks.iter().for_each(|t| add(t.column()));
        self.tasks.iter().filter_map(|t| t.space.as_ref()?.column()).for_each(&mut add);
        if let Some(g) = &self.group_by {
            add(g);
        }
        if let Some(c) = self.split.as_ref().and_then(SplitRule::column) {
            add(c);
        }
        wanted
    }

    /// Checks the description; messages name the key.
    pub fn validate(&self) -> Result<(), DataError> {
        let invalid = |m: String| Err(DataError::Invalid(m));
        if self.tasks.is_empty() {
            return invalid("data.tasks: a table needs at least one task".into());
        }
        if self.columns.is_empty() {
            return invalid("data.columns: a table needs at least one input column".into());
        }
        for c in &self.columns {
            c.validate().map_err(DataError::Invalid)?;
        }
        for t in &self.tasks {
            t.validate().map_err(DataError::Invalid)?;
        }
        let names: Vec<&str> =
            self.columns.iter().map(|c| c.name.as_str()).chain(self.tasks.iter().map(|t| t.name.as_str())).collect();
        if let Some((_, n)) = names.iter().enumerate().find(|(i, n)| names[..*i].contains(n)) {
            return invalid(format!("data: the name {n:?} is used twice (columns and tasks need distinct names)"));
        }
        let mut tables: Vec<(&str, u64, &str)> = Vec::new();
        for c in &self.columns {
            if let ColumnKind::Categorical { hash_buckets: Some(b), hash_table: Some(table), .. } = &c.kind {
                match tables.iter().find(|(t, _, _)| t == table) {
                    Some((_, other, first)) if other != b => {
                        return invalid(format!(
                            "data.columns `{}`: hash_table {table:?} has {other} buckets (column `{first}`), this \
                             column {b}: the fields of a shared table need the same hash_buckets",
                            c.name
                        ));
                    }
                    Some(_) => {}
                    None => tables.push((table, *b, &c.name)),
                }
            }
        }
        for t in &self.tasks {
            if self.columns.iter().any(|c| c.source_columns().iter().any(|s| s == t.column())) {
                return invalid(format!("data.tasks `{}`: its label column {:?} is also an input", t.name, t.column()));
            }
        }
        match (&self.files, &self.split) {
            (TableFiles::Splits { .. }, Some(_)) => {
                invalid("data.split: with train, valid and test files there is nothing to split".into())
            }
            (TableFiles::Holdout { .. } | TableFiles::Paths(_), None) => {
                invalid("data.split: `holdout` and `path` need a split rule ([data.split] rule = ...)".into())
            }
            (TableFiles::Paths(p), _) if p.is_empty() => invalid("data.path is empty".into()),
            (_, Some(rule)) => rule.validate().map_err(DataError::Invalid),
            _ => Ok(()),
        }
    }

    /// Every file, resolved, with the split its rows go to (`None`: the rule decides).
    pub fn files(&self) -> Vec<(PathBuf, Option<SplitName>)> {
        let r = |p: &PathBuf| resolve(&self.dir, p);
        match &self.files {
            TableFiles::Splits { train, valid, test } => vec![
                (r(train), Some(SplitName::Train)),
                (r(valid), Some(SplitName::Valid)),
                (r(test), Some(SplitName::Test)),
            ],
            TableFiles::Holdout { train, holdout } => vec![(r(train), Some(SplitName::Train)), (r(holdout), None)],
            TableFiles::Paths(paths) => paths.iter().map(|p| (r(p), None)).collect(),
        }
    }

    /// Reads, splits, fits (or applies `fitted`) and encodes. Text columns are embedded with the
    /// encoders `text` opens.
    pub fn load(
        &self,
        fitted: Option<&Preprocessing>,
        text: &mut TextEmbedderFactory,
    ) -> Result<LoadedTable, DataError> {
        self.validate()?;
        let mut scan = Scan::new(self);
        self.scan(&mut scan, &mut |_| Ok(()))?;
        scan.report_dropped(self);
        let preprocessing = match fitted {
            Some(p) => self.check_fitted(p)?.clone(),
            None => {
                let mut fits = vec![DenseFit::default(); self.columns.len()];
                scan.fit_dense_rows(&mut fits);
                self.fit(scan.raws(), &fits, text)?
            }
        };
        let mut embedders = self.open_embedders(&preprocessing, text)?;
        let nulls = scan.nulls.clone();
        let (schema, tables) = self.encode_rows(scan.take_rows(), &preprocessing, &mut embedders)?;
        let stats = self.stats(&tables, &schema, &nulls);
        check_split_stats(&stats, &schema, self.score_only)?;
        let [train, valid, test] = tables;
        let dataset = MtlDataset { name: self.name.clone(), schema, train, valid, test };
        Ok(LoadedTable { dataset, preprocessing, stats })
    }

    /// Checks that a saved preprocessing belongs to these columns.
    fn check_fitted<'p>(&self, p: &'p Preprocessing) -> Result<&'p Preprocessing, DataError> {
        let names: Vec<&str> = p.columns.iter().map(FittedColumn::name).collect();
        let expected: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        if names != expected {
            return Err(DataError::Invalid(format!(
                "the saved preprocessing is for columns {names:?}, the config has {expected:?}"
            )));
        }
        Ok(p)
    }

    /// Fits every column on the training rows: vocabularies from the scan's interners, dense
    /// transforms from `dense` (one accumulator a column, over the training rows).
    pub(crate) fn fit(
        &self,
        raws: &[Raw],
        dense: &[DenseFit],
        text: &mut TextEmbedderFactory,
    ) -> Result<Preprocessing, DataError> {
        let mut columns = Vec::with_capacity(self.columns.len());
        for ((column, raw), fit) in self.columns.iter().zip(raws).zip(dense) {
            let name = column.name.clone();
            columns.push(match (&column.kind, raw) {
                (ColumnKind::Categorical { min_count, .. }, Raw::Codes { interner, .. }) => {
                    FittedColumn::Vocabulary { name, values: interner.vocabulary(*min_count) }
                }
                (ColumnKind::Categorical { hash_buckets: Some(b), hash_table, min_count }, Raw::Hashed { .. }) => {
                    if *min_count > 1 {
                        tracing::warn!(
                            "data.columns `{name}`: min_count = {min_count} is ignored: hashed ids \
                             (hash_buckets = {b}) keep every value"
                        );
                    }
                    FittedColumn::Hashed { name, buckets: *b, table: hash_table.clone() }
                }
                (ColumnKind::Dense { transform, fill, clip_quantiles }, Raw::Dense { .. }) => {
                    fit.finish(&name, *transform, *clip_quantiles, *fill)?
                }
                (ColumnKind::MultiCategorical { max_len, pooling, min_count, .. }, Raw::Bag { interner, .. }) => {
                    FittedColumn::Bag {
                        name,
                        values: interner.vocabulary(*min_count),
                        max_len: *max_len,
                        pooling: *pooling,
                    }
                }
                (ColumnKind::Text { encoder, .. }, Raw::Text { .. }) => {
                    let embedder = open_encoder(text, &self.dir, encoder, &name)?;
                    FittedColumn::Text { name, dim: embedder.dim(), model: embedder.model_id() }
                }
                _ => unreachable!("raw columns follow their kinds"),
            });
        }
        Ok(Preprocessing { columns, dense_buckets: None })
    }

    /// Opens the encoder of every text column (checked against the one `preprocessing` was fitted
    /// with); `None` for the other columns.
    pub(crate) fn open_embedders(
        &self,
        preprocessing: &Preprocessing,
        text: &mut TextEmbedderFactory,
    ) -> Result<Vec<Option<Box<dyn TextEmbedder>>>, DataError> {
        self.columns
            .iter()
            .zip(&preprocessing.columns)
            .map(|(column, fitted)| match (&column.kind, fitted) {
                (ColumnKind::Text { encoder, .. }, FittedColumn::Text { dim, model, .. }) => {
                    let embedder = open_encoder(text, &self.dir, encoder, &column.name)?;
                    if embedder.model_id() != *model || embedder.dim() != *dim {
                        return Err(DataError::Invalid(format!(
                            "text column `{}`: the encoder in {} is not the one the preprocessing was fitted with \
                             (model {model})",
                            column.name,
                            encoder.display()
                        )));
                    }
                    Ok(Some(embedder))
                }
                _ => Ok(None),
            })
            .collect()
    }

    /// Encodes scanned rows with `preprocessing` into the schema and the rows of each split, in
    /// file order.
    pub(crate) fn encode_rows(
        &self,
        rows: ScannedRows,
        preprocessing: &Preprocessing,
        embedders: &mut [Option<Box<dyn TextEmbedder>>],
    ) -> Result<(Schema, [EncodedTable; 3]), DataError> {
        let ScannedRows { raws, labels, splits, group_codes } = rows;
        let n = splits.len();
        let mut schema = Schema::new(vec![], vec![], vec![]);
        // per row, one value a categorical field, `max_len` a bag, one a dense feature, `dim` a text
        let mut cat: Vec<Vec<u32>> = vec![];
        let mut multi: Vec<Vec<u32>> = vec![];
        let mut dense: Vec<Vec<f32>> = vec![];
        let mut texts: Vec<Vec<f32>> = vec![];
        // the categorical fields of each shared hash table
        let mut shared: Vec<(String, Vec<usize>)> = vec![];
        for (((column, raw), fitted), embedder) in
            self.columns.iter().zip(raws).zip(&preprocessing.columns).zip(embedders.iter_mut())
        {
            match (raw, fitted) {
                (Raw::Codes { interner, codes }, FittedColumn::Vocabulary { values, .. }) => {
                    let ids = fitted.id_map();
                    let id_of: Vec<u32> =
                        interner.values.iter().map(|v| ids.get(v.as_str()).copied().unwrap_or(0)).collect();
                    cat.push(codes.iter().map(|&c| if c == NULL { 0 } else { id_of[c as usize] }).collect());
                    schema
                        .categorical
                        .push(CategoricalField { name: column.name.clone(), vocab_size: values.len() + 1 });
                }
                (Raw::Hashed { ids }, FittedColumn::Hashed { buckets, table, .. }) => {
                    if let Some(table) = table {
                        let field = schema.categorical.len();
                        match shared.iter_mut().find(|(t, _)| t == table) {
                            Some((_, fields)) => fields.push(field),
                            None => shared.push((table.clone(), vec![field])),
                        }
                    }
                    cat.push(ids);
                    schema
                        .categorical
                        .push(CategoricalField { name: column.name.clone(), vocab_size: *buckets as usize + 1 });
                }
                (Raw::Dense { values }, FittedColumn::Dense { .. }) => {
                    dense.push(values.iter().map(|&v| fitted.apply_dense(v)).collect());
                    schema.dense.push(column.name.clone());
                }
                (Raw::Bag { interner, offsets, codes }, FittedColumn::Bag { values, max_len, pooling, .. }) => {
                    let ids = fitted.id_map();
                    let id_of: Vec<u32> =
                        interner.values.iter().map(|v| ids.get(v.as_str()).copied().unwrap_or(1)).collect();
                    let mut slots = vec![0u32; n * max_len];
                    for row in 0..n {
                        let items = &codes[offsets[row]..offsets[row + 1]];
                        for (k, &c) in items.iter().take(*max_len).enumerate() {
                            slots[row * max_len + k] = id_of[c as usize];
                        }
                    }
                    multi.push(slots);
                    schema.multi_categorical.push(MultiCategoricalField {
                        name: column.name.clone(),
                        vocab_size: values.len() + 2,
                        max_len: *max_len,
                        pooling: *pooling,
                    });
                }
                (Raw::Text { interner, codes }, FittedColumn::Text { dim, .. }) => {
                    let embedder = embedder.as_mut().expect("an encoder for every text column");
                    let vectors = embedder.embed(&interner.values).map_err(|e| {
                        DataError::Invalid(format!("text column `{}`: encoding failed: {e}", column.name))
                    })?;
                    let mut out = Vec::with_capacity(n * dim);
                    for &c in &codes {
                        out.extend_from_slice(&vectors[c as usize * dim..(c as usize + 1) * dim]);
                    }
                    texts.push(out);
                    schema.text.push(TextField { name: column.name.clone(), dim: *dim, tokens: embedder.tokens() });
                }
                _ => {
                    return Err(DataError::Invalid(format!(
                        "column `{}`: the saved preprocessing is of another kind than the config's",
                        column.name
                    )));
                }
            }
        }
        schema.shared_tables = shared.into_iter().map(|(_, fields)| fields).collect();
        schema.tasks = self
            .tasks
            .iter()
            .map(|t| {
                let mut spec = match t.kind {
                    TaskKind::Multiclass => TaskSpec::multiclass(&t.name, t.n_classes()),
                    kind => TaskSpec::new(&t.name, kind),
                };
                spec.adversarial = t.adversarial;
                spec.label_transform = t.transform;
                spec
            })
            .collect();
        let widths: RowWidths = schema.widths();
        let mut tables = [EncodedTable::default(), EncodedTable::default(), EncodedTable::default()];
        for row in 0..n {
            let table = &mut tables[splits[row] as usize];
            table.n_rows += 1;
            table.categorical.extend(cat.iter().map(|c| c[row]));
            for (f, field) in multi.iter().zip(&schema.multi_categorical) {
                table.multi.extend_from_slice(&f[row * field.max_len..(row + 1) * field.max_len]);
            }
            table.dense.extend(dense.iter().map(|d| d[row]));
            for (t, field) in texts.iter().zip(&schema.text) {
                table.text.extend_from_slice(&t[row * field.dim..(row + 1) * field.dim]);
            }
            table.labels.extend(labels.iter().map(|l| l[row]));
            if !group_codes.is_empty() {
                table.groups.push(group_codes[row]);
            }
        }
        debug_assert!(tables.iter().all(|t| t.categorical.len() == t.n_rows * widths.categorical));
        Ok((schema, tables))
    }

    fn stats(&self, tables: &[EncodedTable; 3], schema: &Schema, nulls: &[[usize; 3]]) -> [SplitStats; 3] {
        std::array::from_fn(|s| {
            let table = &tables[s];
            let mut tally = crate::label_tally::LabelTally::new(&schema.tasks);
            tally.add(&table.labels);
            let labels = schema.tasks.iter().map(|t| t.name.clone()).zip(tally.rates()).collect();
            let mut distinct: Vec<u32> = table.groups.iter().copied().filter(|&g| g != NO_GROUP).collect();
            distinct.sort_unstable();
            distinct.dedup();
            SplitStats {
                rows: table.n_rows,
                nulls: self.columns.iter().zip(nulls).map(|(c, n)| (c.name.clone(), n[s])).collect(),
                labels,
                labelled: tally.partial(&schema.tasks),
                groups: distinct.len(),
            }
        })
    }
}

fn open_encoder(
    text: &mut TextEmbedderFactory,
    dir: &Path,
    encoder: &Path,
    column: &str,
) -> Result<Box<dyn TextEmbedder>, DataError> {
    text(&resolve(dir, encoder)).map_err(|e| DataError::Invalid(format!("text column `{column}`: {e}")))
}

/// Every split holds rows; every binary task has both classes in validation (else its AUC, and
/// model selection on it, is undefined) — read from the splits' statistics (a binary task's rate is
/// its share of 1s).
///
/// A table that is only scored ([`TableSource::score_only`]) only needs rows: it trains and
/// selects nothing, so it may hold one class of a task (that task's AUC is then left out) or be a
/// single small file in every split.
pub(crate) fn check_split_stats(stats: &[SplitStats; 3], schema: &Schema, score_only: bool) -> Result<(), DataError> {
    if score_only {
        if stats.iter().all(|s| s.rows == 0) {
            return Err(DataError::Invalid("data: no rows to read; check the files".into()));
        }
        return Ok(());
    }
    for (split, s) in SplitName::ALL.iter().zip(stats) {
        if s.rows == 0 {
            return Err(DataError::Invalid(format!(
                "data: the {} split is empty; check the files and data.split",
                split.as_str()
            )));
        }
    }
    for (split, s) in SplitName::ALL.iter().zip(stats) {
        if let Some((task, _)) = s.labelled.iter().find(|(_, n)| *n == 0) {
            return Err(DataError::Invalid(format!(
                "data.tasks `{task}`: no row of the {} split holds its label (its `space` leaves out all {} rows), \
                 so it can be neither trained nor measured there; check the space or the split",
                split.as_str(),
                s.rows
            )));
        }
    }
    let valid = &stats[SplitName::Valid as usize];
    for (task, (_, rate)) in schema.tasks.iter().zip(&valid.labels) {
        if task.kind == TaskKind::Binary && (rate[0] <= 0.0 || rate[0] >= 1.0) {
            return Err(DataError::Invalid(format!(
                "data.tasks `{}`: the valid split holds only label {} ({} rows), so its AUC — and model selection \
                 on it — is undefined; change the split or the task",
                task.name,
                if rate[0] <= 0.0 { 0 } else { 1 },
                valid.rows
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
