//! A dataset described by configuration instead of code: files (CSV/TSV or Parquet), a split rule,
//! the input columns and the tasks ([`crate::columns`]). Loading reads every file once, places each
//! row in its split, fits the preprocessing on the training rows (or applies a saved one), and
//! encodes the three splits.
//!
//! Files: `train` / `valid` / `test` (one file per split); `train` plus `holdout`, a file the split
//! rule divides into validation and test (census: even rows valid, odd rows test); or `path` (one
//! or more files, rows numbered across them in order) divided by the split rule.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    CategoricalField, ColumnKind, ColumnSpec, CsvOptions, DataError, DenseTransform, EncodedTable, FittedColumn,
    LabelTransform, LabelValue, MtlDataset, MultiCategoricalField, Preprocessing, RowWidths, Schema, SplitName,
    SplitRule, TableFormat, TaskColumn, TaskKind, TaskSpec, TextField,
    table::columns::{fill_template, hash_bucket},
    table::dense_fit::DenseFit,
    table::file::{Cell, RowRef, cell_error, format_of, resolve, scan_file},
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

/// Values of one column, interned in order of first appearance, with their training counts.
#[derive(Default)]
pub(crate) struct Interner {
    index: HashMap<String, u32>,
    values: Vec<String>,
    train_count: Vec<u64>,
    first_train: Vec<u64>,
}

const NULL: u32 = u32::MAX;

/// The group id of a row whose `group_by` cell is null: it belongs to no group, and GAUC leaves
/// it out.
pub const NO_GROUP: u32 = u32::MAX;

impl Interner {
    fn code(&mut self, value: &str, row: u64, train: bool) -> u32 {
        let code = match self.index.get(value) {
            Some(&c) => c,
            None => {
                let c = self.values.len() as u32;
                self.index.insert(value.to_string(), c);
                self.values.push(value.to_string());
                self.train_count.push(0);
                self.first_train.push(u64::MAX);
                c
            }
        };
        if train {
            let c = code as usize;
            self.train_count[c] += 1;
            self.first_train[c] = self.first_train[c].min(row);
        }
        code
    }

    /// The vocabulary: values seen at least `min_count` times in training, in order of first
    /// appearance there.
    fn vocabulary(&self, min_count: u64) -> Vec<String> {
        let mut kept: Vec<usize> =
            (0..self.values.len()).filter(|&c| self.train_count[c] >= min_count.max(1)).collect();
        kept.sort_by_key(|&c| self.first_train[c]);
        kept.into_iter().map(|c| self.values[c].clone()).collect()
    }
}

/// What the scan keeps of one input column.
pub(crate) enum Raw {
    Codes { interner: Interner, codes: Vec<u32> },
    Hashed { ids: Vec<u32> },
    Dense { values: Vec<f32> },
    Bag { interner: Interner, offsets: Vec<usize>, codes: Vec<u32> },
    Text { interner: Interner, codes: Vec<u32> },
}

impl TableSource {
    /// The file columns the table reads, each once: inputs, labels, group and split columns.
    fn wanted_columns(&self) -> Vec<String> {
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
        check_split_stats(&stats, &schema)?;
        let [train, valid, test] = tables;
        let dataset = MtlDataset { name: self.name.clone(), schema, train, valid, test };
        Ok(LoadedTable { dataset, preprocessing, stats })
    }

    /// Reads every row of every file into `scan`, calling `after_row` after each (a streaming
    /// encoder drains the scan there every chunk of rows).
    pub(crate) fn scan(
        &self,
        scan: &mut Scan,
        after_row: &mut dyn FnMut(&mut Scan) -> Result<(), DataError>,
    ) -> Result<(), DataError> {
        let wanted = self.wanted_columns();
        let at = |name: &str| wanted.iter().position(|w| w == name).expect("wanted");
        let label_sets: Vec<LabelSets> = self.tasks.iter().map(LabelSets::new).collect();
        for (path, fixed) in self.files() {
            let format = format_of(&path, self.format)?;
            let mut on_row = |row: &RowRef| -> Result<(), DataError> {
                let split = match fixed {
                    Some(s) => s,
                    None => {
                        let rule = self.split.as_ref().expect("validated");
                        let cell = rule.column().map(|c| row.cells[at(c)]);
                        let text = cell.and_then(|c| c.text().map(|t| t.into_owned()));
                        let s = rule
                            .assign(scan.rule_row, text.as_deref())
                            .map_err(|m| cell_error(&path, row.place, rule.column().unwrap_or("-"), m))?;
                        scan.rule_row += 1;
                        let Some(s) = s else {
                            // `missing = "drop"`: the row is in no split
                            scan.dropped += 1;
                            return Ok(());
                        };
                        if matches!(self.files, TableFiles::Holdout { .. }) && s == SplitName::Train {
                            return Err(cell_error(
                                &path,
                                row.place,
                                rule.column().unwrap_or("-"),
                                "the split rule sends a holdout row to train: a holdout rule must cover only valid and test",
                            ));
                        }
                        s
                    }
                };
                let train = split == SplitName::Train;
                let n = scan.rows;
                for (k, (column, raw)) in self.columns.iter().zip(scan.raws.iter_mut()).enumerate() {
                    let null = record_input(column, raw, row, &at, n, train, &path)?;
                    scan.nulls[k][split as usize] += usize::from(null);
                }
                for (t, task) in self.tasks.iter().enumerate() {
                    let cell = row.cells[at(task.column())];
                    let in_space = match &task.space {
                        None => true,
                        Some(space) => {
                            let condition = space.column().map_or(Cell::Null, |c| row.cells[at(c)]);
                            space
                                .contains(cell, condition)
                                .map_err(|m| cell_error(&path, row.place, space.column().unwrap_or(task.column()), m))?
                        }
                    };
                    // outside its space a task's label is absent: NaN, left out of its loss and metrics
                    let y = if in_space {
                        label_sets[t].label(task, cell).map_err(|m| cell_error(&path, row.place, task.column(), m))?
                    } else {
                        f32::NAN
                    };
                    scan.labels[t].push(y);
                }
                if let Some(g) = &self.group_by {
                    // a row without a group belongs to none (GAUC leaves it out), not to a group ""
                    let code = match row.cells[at(g)].text() {
                        Some(value) => scan.groups.code(&value, n, train),
                        None => NO_GROUP,
                    };
                    scan.group_codes.push(code);
                }
                scan.splits.push(split);
                scan.rows += 1;
                after_row(scan)
            };
            scan_file(&path, format, &self.csv, &wanted, &mut on_row)?;
        }
        Ok(())
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
                    fit.finish(&name, *transform, *clip_quantiles, *fill)
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
pub(crate) fn check_split_stats(stats: &[SplitStats; 3], schema: &Schema) -> Result<(), DataError> {
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

/// The rows a scan has read and not yet encoded.
pub(crate) struct ScannedRows {
    raws: Vec<Raw>,
    labels: Vec<Vec<f32>>,
    splits: Vec<SplitName>,
    group_codes: Vec<u32>,
}

/// A scan in progress: the rows read and not yet drained, and what spans all rows (vocabulary
/// interners, group ids, null counts, row numbers).
pub(crate) struct Scan {
    raws: Vec<Raw>,
    labels: Vec<Vec<f32>>,
    pub(crate) splits: Vec<SplitName>,
    groups: Interner,
    group_codes: Vec<u32>,
    /// Null cells per input column and split.
    pub(crate) nulls: Vec<[usize; 3]>,
    /// Rows the split rule has numbered (across files).
    rule_row: u64,
    /// Rows read (across files): the row number vocabularies order first appearances by.
    rows: u64,
    /// Rows the split rule placed in no split (a time rule's `missing = "drop"`).
    pub(crate) dropped: u64,
}

impl Scan {
    pub(crate) fn new(source: &TableSource) -> Self {
        Self {
            raws: source.columns.iter().map(Raw::empty).collect(),
            labels: vec![Vec::new(); source.tasks.len()],
            splits: Vec::new(),
            groups: Interner::default(),
            group_codes: Vec::new(),
            nulls: vec![[0usize; 3]; source.columns.len()],
            rule_row: 0,
            rows: 0,
            dropped: 0,
        }
    }

    /// Warns, naming the column, when the split rule left rows out.
    pub(crate) fn report_dropped(&self, source: &TableSource) {
        if self.dropped > 0 {
            tracing::warn!(
                "data.split: {} rows without a value in the time column {:?} were dropped (missing = \"drop\")",
                self.dropped,
                source.split.as_ref().and_then(SplitRule::column).unwrap_or("-")
            );
        }
    }

    /// Rows read and not yet drained.
    pub(crate) fn pending(&self) -> usize {
        self.splits.len()
    }

    /// Adds the pending training rows' dense values to `fits` (one a column).
    pub(crate) fn fit_dense_rows(&self, fits: &mut [DenseFit]) {
        for (raw, fit) in self.raws.iter().zip(fits.iter_mut()) {
            if let Raw::Dense { values } = raw {
                for (v, split) in values.iter().zip(&self.splits) {
                    if *split == SplitName::Train {
                        fit.add(*v);
                    }
                }
            }
        }
    }

    /// Takes the pending rows with the interners their codes refer to (fresh, empty interners
    /// stay: encoding maps values through the fitted vocabulary, not through codes).
    pub(crate) fn take_rows(&mut self) -> ScannedRows {
        ScannedRows {
            raws: self.raws.iter_mut().map(Raw::take).collect(),
            labels: self.labels.iter_mut().map(std::mem::take).collect(),
            splits: std::mem::take(&mut self.splits),
            group_codes: std::mem::take(&mut self.group_codes),
        }
    }

    /// Drops the pending rows but keeps the vocabulary interners with their counts (what fitting
    /// reads once every row has been seen).
    pub(crate) fn clear_rows(&mut self) {
        self.raws.iter_mut().for_each(Raw::clear_rows);
        self.labels.iter_mut().for_each(Vec::clear);
        self.splits.clear();
        self.group_codes.clear();
    }

    /// The interners fitting reads.
    pub(crate) fn raws(&self) -> &[Raw] {
        &self.raws
    }
}

impl Raw {
    /// An empty column of `spec`'s kind.
    fn empty(spec: &ColumnSpec) -> Self {
        match &spec.kind {
            ColumnKind::Categorical { hash_buckets: Some(_), .. } => Raw::Hashed { ids: vec![] },
            ColumnKind::Categorical { .. } => Raw::Codes { interner: Interner::default(), codes: vec![] },
            ColumnKind::Dense { .. } => Raw::Dense { values: vec![] },
            ColumnKind::MultiCategorical { .. } => {
                Raw::Bag { interner: Interner::default(), offsets: vec![0], codes: vec![] }
            }
            ColumnKind::Text { .. } => Raw::Text { interner: Interner::default(), codes: vec![] },
        }
    }

    /// Takes the rows and the interner, leaving an empty column.
    fn take(&mut self) -> Raw {
        match self {
            Raw::Codes { interner, codes } => {
                Raw::Codes { interner: std::mem::take(interner), codes: std::mem::take(codes) }
            }
            Raw::Hashed { ids } => Raw::Hashed { ids: std::mem::take(ids) },
            Raw::Dense { values } => Raw::Dense { values: std::mem::take(values) },
            Raw::Bag { interner, offsets, codes } => Raw::Bag {
                interner: std::mem::take(interner),
                offsets: std::mem::replace(offsets, vec![0]),
                codes: std::mem::take(codes),
            },
            Raw::Text { interner, codes } => {
                Raw::Text { interner: std::mem::take(interner), codes: std::mem::take(codes) }
            }
        }
    }

    /// Empties the rows; categorical and bag interners keep every value and training count.
    fn clear_rows(&mut self) {
        match self {
            Raw::Codes { codes, .. } => codes.clear(),
            Raw::Hashed { ids } => ids.clear(),
            Raw::Dense { values } => values.clear(),
            Raw::Bag { offsets, codes, .. } => {
                offsets.truncate(1);
                codes.clear();
            }
            Raw::Text { interner, codes } => {
                *interner = Interner::default();
                codes.clear();
            }
        }
    }
}

/// Records one row's value of an input column; returns whether it was null.
fn record_input(
    column: &ColumnSpec,
    raw: &mut Raw,
    row: &RowRef,
    at: &dyn Fn(&str) -> usize,
    n: u64,
    train: bool,
    path: &Path,
) -> Result<bool, DataError> {
    let name = column.name.as_str();
    match (raw, &column.kind) {
        (Raw::Codes { interner, codes }, _) => {
            let cell = row.cells[at(name)];
            match cell.text() {
                Some(v) => codes.push(interner.code(&v, n, train)),
                None => codes.push(NULL),
            }
            Ok(cell == Cell::Null)
        }
        (Raw::Hashed { ids }, ColumnKind::Categorical { hash_buckets: Some(b), hash_table, .. }) => {
            let cell = row.cells[at(name)];
            ids.push(cell.text().map_or(0, |v| match hash_table {
                // salted with the field's name: a shared table's fields do not collide by value
                Some(_) => hash_bucket(&format!("{name}\u{1f}{v}"), *b),
                None => hash_bucket(&v, *b),
            }));
            Ok(cell == Cell::Null)
        }
        (Raw::Dense { values }, ColumnKind::Dense { transform, fill, .. }) => {
            let cell = row.cells[at(name)];
            let parsed = cell.number().map_err(|m| cell_error(path, row.place, name, m))?;
            let value = match parsed {
                Some(v) if v.is_infinite() => {
                    return Err(cell_error(path, row.place, name, format!("not finite: {v}")));
                }
                Some(v) if !v.is_nan() => v,
                _ => match fill {
                    Some(f) => *f as f32,
                    None => {
                        return Err(cell_error(
                            path,
                            row.place,
                            name,
                            format!(
                                "missing value ({}); set `fill` for this column",
                                if parsed.is_some() { "NaN" } else { "null" }
                            ),
                        ));
                    }
                },
            };
            if *transform == DenseTransform::Log1p && value <= -1.0 {
                return Err(cell_error(path, row.place, name, format!("log1p needs values above −1, got {value}")));
            }
            values.push(value);
            Ok(parsed.is_none_or(f32::is_nan))
        }
        (Raw::Bag { interner, offsets, codes }, ColumnKind::MultiCategorical { separator, .. }) => {
            let cell = row.cells[at(name)];
            if let Some(v) = cell.text() {
                for item in v.split(separator.as_str()).map(str::trim).filter(|s| !s.is_empty()) {
                    codes.push(interner.code(item, n, train));
                }
            }
            offsets.push(codes.len());
            Ok(cell == Cell::Null)
        }
        (Raw::Text { interner, codes }, ColumnKind::Text { template, .. }) => {
            let value = match template {
                Some(t) => fill_template(t, |c| row.cells[at(c)].text().map(|s| s.into_owned())),
                None => row.cells[at(name)].text().map(|s| s.into_owned()).unwrap_or_default(),
            };
            let null = value.is_empty();
            codes.push(interner.code(&value, n, train));
            Ok(null)
        }
        _ => unreachable!("raw columns follow their kinds"),
    }
}

/// A task's label values, matched against cells by value: a number (`1`, `0.5`, `true`) matches a
/// cell holding that number, whatever its rendering (`1`, `1.0`, `True`, a Parquet integer, float or
/// boolean); a string matches the cell's canonical text ([`crate::cell`]).
struct LabelSets<'t> {
    positive: &'t [LabelValue],
    negative: &'t [LabelValue],
    classes: &'t [LabelValue],
}

/// Whether `cell` holds `value` (see [`LabelSets`]).
pub(crate) fn label_matches(value: &LabelValue, cell: Cell) -> bool {
    let number = || cell.number_f64().ok().flatten();
    match value {
        LabelValue::Int(i) => match cell {
            Cell::Int(j) => *i == j,
            Cell::UInt(u) => u64::try_from(*i).is_ok_and(|i| i == u),
            _ => number() == Some(*i as f64),
        },
        LabelValue::Float(f) => number() == Some(*f),
        LabelValue::Bool(b) => number() == Some(f64::from(u8::from(*b))),
        LabelValue::Text(t) => cell.text().is_some_and(|c| *c == **t),
    }
}

impl<'t> LabelSets<'t> {
    fn new(task: &'t TaskColumn) -> Self {
        Self { positive: &task.positive, negative: &task.negative, classes: &task.classes }
    }

    /// The label of one cell; `Err` says what is wrong.
    fn label(&self, task: &TaskColumn, cell: Cell) -> Result<f32, String> {
        let missing = || {
            format!(
                "task `{}`: the label is missing (a task whose label exists on some rows only takes \
                 `space = \"labelled\"` or a condition such as `space = \"click == 1\"`)",
                task.name
            )
        };
        let shown = |v: &[LabelValue]| v.iter().map(LabelValue::as_text).collect::<Vec<_>>();
        let number = || cell.number_f64().map_err(|m| format!("task `{}`: {m}", task.name));
        match task.kind {
            TaskKind::Binary => match task.threshold {
                Some(th) => {
                    let v = number()?.filter(|v| !v.is_nan()).ok_or_else(missing)?;
                    Ok(f32::from(v >= th))
                }
                None => {
                    let v = cell.text().ok_or_else(missing)?;
                    if self.positive.iter().any(|p| label_matches(p, cell)) {
                        Ok(1.0)
                    } else if self.negative.is_empty() || self.negative.iter().any(|p| label_matches(p, cell)) {
                        Ok(0.0)
                    } else {
                        Err(format!(
                            "task `{}`: label {v:?} is neither positive {:?} nor negative {:?}",
                            task.name,
                            shown(self.positive),
                            shown(self.negative)
                        ))
                    }
                }
            },
            TaskKind::Regression => {
                let v = cell.number().map_err(|m| format!("task `{}`: {m}", task.name))?;
                let v = v.filter(|v| v.is_finite()).ok_or_else(missing)?;
                match task.transform {
                    LabelTransform::None => Ok(v),
                    LabelTransform::Log1p if v > -1.0 => Ok(v.ln_1p()),
                    LabelTransform::Log1p => Err(format!("task `{}`: log1p needs values above −1, got {v}", task.name)),
                }
            }
            TaskKind::Multiclass => {
                let v = cell.text().ok_or_else(missing)?;
                if let Some(n) = task.n_classes {
                    return match number() {
                        Ok(Some(c)) if c >= 0.0 && c.fract() == 0.0 && c < n as f64 => Ok(c as f32),
                        _ => Err(format!("task `{}`: label {v:?} is not a class id 0..{}", task.name, n - 1)),
                    };
                }
                match self.classes.iter().position(|c| label_matches(c, cell)) {
                    Some(c) => Ok(c as f32),
                    None => Err(format!(
                        "task `{}`: label {v:?} is not one of the classes {:?}",
                        task.name,
                        shown(self.classes)
                    )),
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{Cut, fnv1a64};

    pub(crate) fn fixture(file: &str) -> PathBuf {
        let dir = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
        Path::new(&dir).join("tests/fixtures/table-small").join(file)
    }

    const COLUMNS: &str = r#"
        [[columns]]
        name = "user"
        kind = "categorical"

        [[columns]]
        name = "item"
        kind = "categorical"
        hash_buckets = 16

        [[columns]]
        name = "genres"
        kind = "multi_categorical"
        max_len = 2

        [[columns]]
        name = "age"
        kind = "dense"
        fill = 30.0

        [[columns]]
        name = "price"
        kind = "dense"
        transform = "standard"

        [[tasks]]
        name = "click"
        kind = "binary"
        positive = [1]
        negative = [0]

        [[tasks]]
        name = "stars"
        column = "rating"
        kind = "multiclass"
        classes = [1, 2, 3, 4, 5]

        [[tasks]]
        name = "rating"
        kind = "regression"
        transform = "log1p"
    "#;

    #[derive(serde::Deserialize)]
    struct Parts {
        columns: Vec<ColumnSpec>,
        tasks: Vec<TaskColumn>,
    }

    pub(crate) fn source(file: &str) -> TableSource {
        let parts: Parts = toml::from_str(COLUMNS).unwrap();
        TableSource {
            name: "small".into(),
            dir: fixture(""),
            files: TableFiles::Paths(vec![file.into()]),
            format: None,
            csv: CsvOptions::default(),
            split: Some(SplitRule::RowMod { modulus: 5, valid: vec![3], test: vec![4] }),
            columns: parts.columns,
            tasks: parts.tasks,
            group_by: Some("user".into()),
        }
    }

    pub(crate) fn no_text(_: &Path) -> Result<Box<dyn TextEmbedder>, String> {
        Err("no encoder in this test".into())
    }

    /// The raw fixture rows, for expectations computed here.
    pub(crate) fn rows() -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(fixture("table.csv")).unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        reader.records().map(|r| r.unwrap().iter().map(str::to_string).collect()).collect()
    }

    /// The same table as CSV and as Parquet encodes identically: every id, value, label and group.
    #[test]
    fn csv_and_parquet_encode_identically() {
        let csv = source("table.csv").load(None, &mut no_text).unwrap();
        let parquet = source("table.parquet").load(None, &mut no_text).unwrap();
        assert_eq!(csv.dataset.schema, parquet.dataset.schema);
        assert_eq!(csv.dataset.train, parquet.dataset.train);
        assert_eq!(csv.dataset.valid, parquet.dataset.valid);
        assert_eq!(csv.dataset.test, parquet.dataset.test);
        assert_eq!(csv.preprocessing, parquet.preprocessing);
        assert_eq!((csv.dataset.train.n_rows, csv.dataset.valid.n_rows, csv.dataset.test.n_rows), (72, 24, 24));
    }

    /// One pandas frame written as CSV (`to_csv`) and as Parquet (`to_parquet`) by
    /// `tests/fixtures/pandas-frame/make_frame.py` — float ids, float32 values, booleans, uint64
    /// above i64::MAX, nulls — encodes identically from either file, whichever was fitted on
    /// (what `eval --file` of the other format relies on). Before the canonical rendering, Parquet
    /// gave `8` for pandas' `8.0`, `0.20000000298023224` for `0.2`, `1` for `True`, and a negative
    /// id for 2⁶³.
    #[test]
    fn csv_and_parquet_of_one_frame_encode_identically() {
        let toml = r#"
            [[columns]]
            name = "user"
            kind = "categorical"
            [[columns]]
            name = "code"
            kind = "categorical"
            [[columns]]
            name = "flag"
            kind = "categorical"
            [[columns]]
            name = "big"
            kind = "categorical"
            [[columns]]
            name = "price"
            kind = "dense"
            transform = "standard"
            fill = 0.0
            [[tasks]]
            name = "click"
            kind = "binary"
            positive = [true]
            negative = [0]
            [[tasks]]
            name = "rating"
            kind = "regression"
        "#;
        let parts: Parts = toml::from_str(toml).unwrap();
        let dir = fixture("").parent().unwrap().join("pandas-frame");
        let frame = |file: &str| TableSource {
            name: "frame".into(),
            dir: dir.clone(),
            files: TableFiles::Paths(vec![file.into()]),
            format: None,
            csv: CsvOptions::default(),
            split: Some(SplitRule::RowMod { modulus: 6, valid: vec![3], test: vec![4] }),
            columns: parts.columns.clone(),
            tasks: parts.tasks.clone(),
            group_by: Some("shop".into()),
        };
        let csv = frame("frame.csv").load(None, &mut no_text).unwrap();
        let parquet = frame("frame.parquet").load(None, &mut no_text).unwrap();
        assert_eq!(csv.preprocessing, parquet.preprocessing, "the same vocabularies from either file");
        for (a, b) in [(&csv, &parquet), (&parquet, &csv)] {
            let again = (if std::ptr::eq(a, &csv) { frame("frame.parquet") } else { frame("frame.csv") })
                .load(Some(&a.preprocessing), &mut no_text)
                .unwrap();
            assert_eq!(again.dataset.schema, b.dataset.schema);
            for (x, y) in [(&again.dataset.train, &a.dataset.train), (&again.dataset.test, &a.dataset.test)] {
                assert_eq!(x, y, "applying one file's preprocessing to the other encodes the same rows");
            }
        }
        let vocabulary = |c: usize| match &csv.preprocessing.columns[c] {
            FittedColumn::Vocabulary { values, .. } => values.clone(),
            other => panic!("{other:?}"),
        };
        assert!(vocabulary(0).contains(&"8.0".to_string()), "{:?}", vocabulary(0));
        assert!(vocabulary(1).contains(&"0.2".to_string()), "{:?}", vocabulary(1));
        assert!(vocabulary(2).contains(&"True".to_string()), "{:?}", vocabulary(2));
        assert!(vocabulary(3).iter().all(|v| v.parse::<u64>().is_ok_and(|u| u >= 1 << 63)), "{:?}", vocabulary(3));
        // the frame's null users are null, not an id of "" or "nan"
        assert!(!vocabulary(0).iter().any(|v| v.is_empty() || v == "nan"));
        // click = True is 1 in either file (positive = [true]); nulls in `shop` belong to no group
        let d = &parquet.dataset;
        assert_eq!(d.train.label_column(0, 2), csv.dataset.train.label_column(0, 2));
        assert!(d.train.label_column(0, 2).contains(&1.0) && d.train.label_column(0, 2).contains(&0.0));
        assert!(d.train.groups.contains(&NO_GROUP), "a null group is no group");
    }

    /// A null `group_by` cell is in no group ([`NO_GROUP`]), not in a pseudo-user `""` that GAUC
    /// would average in; the statistics count only real groups.
    #[test]
    fn null_groups_are_no_group() {
        let csv = csv_with(|r| r[0] = String::new()); // record 2's user (the group) is null
        let loaded = load_text(&csv, |_| {}).unwrap();
        let train = &loaded.dataset.train;
        assert_eq!(train.groups[2], NO_GROUP, "record 2 trains and has no group");
        assert_eq!(train.groups.iter().filter(|&&g| g == NO_GROUP).count(), 1);
        let real: std::collections::HashSet<u32> = train.groups.iter().copied().filter(|&g| g != NO_GROUP).collect();
        assert_eq!(loaded.stats[0].groups, real.len());
    }

    /// A time split: a NaN or null time is an error naming file, line and column (it went to test
    /// before), or trains / is dropped as `missing` says; a value beyond f32 is an error naming file,
    /// line and column (it became an infinity).
    #[test]
    fn missing_times_and_overflowing_values_are_named() {
        let time = |missing| {
            move |s: &mut TableSource| {
                s.split = Some(SplitRule::Time {
                    column: "day".into(),
                    valid_from: Cut::Text("2024-02-01".into()),
                    test_from: Cut::Text("2024-03-01".into()),
                    missing,
                })
            }
        };
        let no_day = csv_with(|r| r[9] = String::new());
        let e = load_text(&no_day, time(crate::MissingTime::Error)).err().unwrap().to_string();
        assert!(e.contains("t.csv: line 4: column \"day\"") && e.contains("null"), "{e}");
        let all = load_text(&std::fs::read_to_string(fixture("table.csv")).unwrap(), time(crate::MissingTime::Error))
            .unwrap()
            .dataset;
        let trained = load_text(&no_day, time(crate::MissingTime::Train)).unwrap().dataset;
        let dropped = load_text(&no_day, time(crate::MissingTime::Drop)).unwrap().dataset;
        let rows = |d: &MtlDataset| d.train.n_rows + d.valid.n_rows + d.test.n_rows;
        assert_eq!((rows(&trained), rows(&dropped)), (rows(&all), rows(&all) - 1));
        let huge = csv_with(|r| r[4] = "1e39".into());
        let e = load_text(&huge, |_| {}).err().unwrap().to_string();
        assert!(e.contains("t.csv: line 4: column \"price\"") && e.contains("overflows f32"), "{e}");
    }

    /// Every rule on the fixture, recomputed by hand from the raw rows: vocabulary ids in order of
    /// first appearance in training (validation-only values → 0), hashed ids, bag slots, min-max with
    /// the fill, standardisation with the training mean and deviation, labels, groups.
    #[test]
    fn encoding_rules_by_hand() {
        let loaded = source("table.csv").load(None, &mut no_text).unwrap();
        let d = &loaded.dataset;
        let raw = rows();
        let (train, valid): (Vec<&Vec<String>>, Vec<&Vec<String>>) = (
            raw.iter().enumerate().filter(|(i, _)| i % 5 < 3).map(|(_, r)| r).collect(),
            raw.iter().enumerate().filter(|(i, _)| i % 5 == 3).map(|(_, r)| r).collect(),
        );
        // user: ids by first appearance in training
        let mut vocab: Vec<&str> = Vec::new();
        for r in &train {
            if !vocab.contains(&r[0].as_str()) {
                vocab.push(&r[0]);
            }
        }
        assert_eq!(d.schema.categorical[0].vocab_size, vocab.len() + 1);
        let id = |v: &str| vocab.iter().position(|u| *u == v).map_or(0, |p| p as u32 + 1);
        let w = d.schema.widths();
        for (k, r) in valid.iter().enumerate() {
            let row = &d.valid.categorical[k * w.categorical..(k + 1) * w.categorical];
            assert_eq!(row[0], id(&r[0]), "user of valid row {k}");
            assert_eq!(row[1], 1 + (fnv1a64(r[1].as_bytes()) % 16) as u32, "hashed item of valid row {k}");
        }
        // genres: a bag of 2 slots, vocabulary ids from 2 by first appearance in training
        let mut genres: Vec<&str> = Vec::new();
        for r in &train {
            for g in r[2].split('|').filter(|g| !g.is_empty()) {
                if !genres.contains(&g) {
                    genres.push(g);
                }
            }
        }
        assert_eq!(d.schema.multi_categorical[0].vocab_size, genres.len() + 2);
        for (k, r) in train.iter().enumerate() {
            let expected: Vec<u32> = r[2]
                .split('|')
                .filter(|g| !g.is_empty())
                .take(2)
                .map(|g| genres.iter().position(|x| *x == g).unwrap() as u32 + 2)
                .chain(std::iter::repeat(0))
                .take(2)
                .collect();
            assert_eq!(&d.train.multi[k * 2..k * 2 + 2], expected.as_slice(), "genres of train row {k}");
        }
        // age: min-max over training with missing = 30; price: standardised
        let age = |r: &Vec<String>| if r[3].is_empty() { 30.0 } else { r[3].parse::<f32>().unwrap() };
        let (lo, hi) = train.iter().map(|r| age(r)).fold((f32::MAX, f32::MIN), |(a, b), v| (a.min(v), b.max(v)));
        let prices: Vec<f64> = train.iter().map(|r| r[4].parse::<f32>().unwrap() as f64).collect();
        let mean = prices.iter().sum::<f64>() / prices.len() as f64;
        let sd = (prices.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / prices.len() as f64).sqrt();
        for (k, r) in valid.iter().enumerate() {
            let got = &d.valid.dense[k * 2..k * 2 + 2];
            assert!((got[0] - ((age(r) - lo) / (hi - lo)).clamp(0.0, 1.0)).abs() < 1e-6, "age of valid row {k}");
            let p = r[4].parse::<f32>().unwrap() as f64;
            assert!(
                (got[1] as f64 - (p - mean) / sd).abs() < 1e-4,
                "price of valid row {k}: {} vs {}",
                got[1],
                (p - mean) / sd
            );
        }
        // labels: click 0/1, stars a class index, rating log1p
        for (k, r) in valid.iter().enumerate() {
            let labels = &d.valid.labels[k * 3..k * 3 + 3];
            let rating: f32 = r[6].parse().unwrap();
            assert_eq!(labels[0], r[7].parse::<f32>().unwrap());
            assert_eq!(labels[1], rating - 1.0);
            assert!((labels[2] - rating.ln_1p()).abs() < 1e-6);
        }
        assert_eq!(d.schema.tasks[1].n_classes, 5);
        // groups: one id per user, the same id for the same user in every split
        let users: Vec<&str> = raw.iter().map(|r| r[0].as_str()).collect();
        let by_group = |t: &EncodedTable, rows: &[&Vec<String>]| {
            t.groups.iter().zip(rows).map(|(g, r)| (*g, r[0].clone())).collect::<Vec<_>>()
        };
        let mut seen = HashMap::new();
        for (g, u) in by_group(&d.train, &train).into_iter().chain(by_group(&d.valid, &valid)) {
            assert_eq!(seen.entry(g).or_insert_with(|| u.clone()), &u, "group {g}");
        }
        assert!(seen.len() <= users.len());
        assert_eq!(
            loaded.stats[1].nulls.iter().find(|(c, _)| c == "age").unwrap().1,
            valid.iter().filter(|r| r[3].is_empty()).count()
        );
    }

    /// A saved preprocessing reproduces the encoding (what `eval` and `--resume` rely on), and
    /// `min_count` sends rare training values to id 0.
    #[test]
    fn saved_preprocessing_reproduces_the_encoding_and_min_count_applies() {
        let fitted = source("table.csv").load(None, &mut no_text).unwrap();
        let again = source("table.parquet").load(Some(&fitted.preprocessing), &mut no_text).unwrap();
        assert_eq!(fitted.dataset.test, again.dataset.test);
        let mut rare = source("table.csv");
        rare.columns[0].kind = ColumnKind::Categorical { min_count: 6, hash_buckets: None, hash_table: None };
        let loaded = rare.load(None, &mut no_text).unwrap();
        let FittedColumn::Vocabulary { values, .. } = &loaded.preprocessing.columns[0] else { panic!("vocabulary") };
        let raw = rows();
        for v in values {
            let n = raw.iter().enumerate().filter(|(i, r)| i % 5 < 3 && r[0] == *v).count();
            assert!(n >= 6, "{v} seen {n} times in training");
        }
        assert!(values.len() < fitted.dataset.schema.categorical[0].vocab_size - 1);
        let mismatched =
            source("table.csv").load(Some(&Preprocessing::default()), &mut no_text).unwrap_err().to_string();
        assert!(mismatched.contains("saved preprocessing"), "{mismatched}");
    }

    /// Split rules give disjoint splits that cover every row, the same on every load.
    #[test]
    fn splits_are_disjoint_cover_every_row_and_repeat() {
        let mut s = source("table.parquet");
        s.split = Some(SplitRule::Random { valid: 0.2, test: 0.2, seed: 9 });
        let a = s.load(None, &mut no_text).unwrap().dataset;
        let b = s.load(None, &mut no_text).unwrap().dataset;
        assert_eq!(a.test, b.test);
        assert_eq!(a.train.n_rows + a.valid.n_rows + a.test.n_rows, 120);
        // the group column carries each row's user: the multiset of users is the file's
        let mut users: Vec<u32> = [&a.train, &a.valid, &a.test].iter().flat_map(|t| t.groups.clone()).collect();
        users.sort_unstable();
        let mut all = s.clone();
        all.split = Some(SplitRule::RowMod { modulus: 5, valid: vec![3], test: vec![4] });
        let c = all.load(None, &mut no_text).unwrap().dataset;
        let mut expected: Vec<u32> = [&c.train, &c.valid, &c.test].iter().flat_map(|t| t.groups.clone()).collect();
        expected.sort_unstable();
        assert_eq!(users.len(), expected.len());
        s.split = Some(SplitRule::Time {
            column: "day".into(),
            valid_from: Cut::Text("2024-02-01".into()),
            test_from: Cut::Text("2024-03-01".into()),
            missing: crate::MissingTime::Error,
        });
        let t = s.load(None, &mut no_text).unwrap().dataset;
        assert_eq!((t.train.n_rows, t.valid.n_rows, t.test.n_rows), (40, 40, 40));
    }

    pub(crate) struct FakeEncoder;
    impl TextEmbedder for FakeEncoder {
        fn model_id(&self) -> String {
            "fake".into()
        }
        fn dim(&self) -> usize {
            2
        }
        fn embed(&mut self, texts: &[String]) -> Result<Vec<f32>, String> {
            Ok(texts.iter().flat_map(|t| [t.len() as f32, t.matches(' ').count() as f32]).collect())
        }
    }

    /// Hashed fields naming one `hash_table` share its rows: the schema lists them, each value
    /// is salted with its field's name; fields of one table with different bucket counts are an
    /// error naming the column.
    #[test]
    fn hashed_fields_can_share_a_table() {
        let mut s = source("table.csv");
        for c in &mut s.columns[..2] {
            c.kind = ColumnKind::Categorical { min_count: 1, hash_buckets: Some(64), hash_table: Some("ids".into()) };
        }
        let loaded = s.load(None, &mut no_text).unwrap();
        assert_eq!(loaded.dataset.schema.shared_tables, vec![vec![0, 1]]);
        let raw = rows();
        let first = &raw[0];
        let salted = |field: &str, v: &str| 1 + (fnv1a64(format!("{field}\u{1f}{v}").as_bytes()) % 64) as u32;
        assert_eq!(loaded.dataset.train.categorical[0], salted("user", &first[0]));
        assert_eq!(loaded.dataset.train.categorical[1], salted("item", &first[1]));
        s.columns[1].kind =
            ColumnKind::Categorical { min_count: 1, hash_buckets: Some(32), hash_table: Some("ids".into()) };
        let err = s.load(None, &mut no_text).unwrap_err().to_string();
        assert!(err.contains("`item`") && err.contains("hash_buckets"), "{err}");
    }

    /// A text column fills its template per row (nulls as empty strings) and gets the encoder's
    /// vector for that text.
    #[test]
    fn text_columns_embed_their_template() {
        let mut s = source("table.csv");
        s.columns.push(ColumnSpec {
            name: "review".into(),
            kind: ColumnKind::Text { template: Some("{title} ({user})".into()), encoder: "enc".into() },
        });
        let mut opened = 0;
        let loaded = s
            .load(None, &mut |dir: &Path| {
                assert!(dir.ends_with("enc"));
                opened += 1;
                Ok(Box::new(FakeEncoder) as Box<dyn TextEmbedder>)
            })
            .unwrap();
        assert!(opened >= 1);
        let d = &loaded.dataset;
        assert_eq!(d.schema.text[0].dim, 2);
        let raw = rows();
        let train: Vec<&Vec<String>> = raw.iter().enumerate().filter(|(i, _)| i % 5 < 3).map(|(_, r)| r).collect();
        for (k, r) in train.iter().enumerate() {
            let text = format!("{} ({})", r[5], r[0]);
            assert_eq!(
                &d.train.text[k * 2..k * 2 + 2],
                &[text.len() as f32, text.matches(' ').count() as f32],
                "{text:?}"
            );
        }
    }

    /// Writes `csv` as a file and loads it with the fixture's columns (possibly changed by `edit`).
    pub(crate) fn load_text(csv: &str, edit: impl Fn(&mut TableSource)) -> Result<LoadedTable, DataError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.csv"), csv).unwrap();
        let mut s = source("t.csv");
        s.dir = dir.path().to_path_buf();
        edit(&mut s);
        s.load(None, &mut no_text)
    }

    /// The fixture as CSV text, record 2 (line 4: the records before it are one line each)
    /// changed by `edit` (its cells in file order).
    pub(crate) fn csv_with(edit: impl Fn(&mut Vec<String>)) -> String {
        let text = std::fs::read_to_string(fixture("table.csv")).unwrap();
        let header = text.lines().next().unwrap().to_string();
        let mut records = rows();
        edit(&mut records[2]);
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(header.split(',')).unwrap();
        for r in &records {
            w.write_record(r).unwrap();
        }
        String::from_utf8(w.into_inner().unwrap()).unwrap()
    }

    /// One case per bad input; each error names the file, the line or row, and the column.
    #[test]
    fn bad_inputs_are_named_errors() {
        let good = std::fs::read_to_string(fixture("table.csv")).unwrap();
        let set = |col: usize, value: &'static str| csv_with(move |r| r[col] = value.to_string());
        let short = csv_with(|_| {})
            .lines()
            .enumerate()
            .map(|(i, l)| if i == 3 { "u1,101".to_string() } else { l.to_string() })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n";
        let cases: Vec<(&str, Result<LoadedTable, DataError>, Vec<&str>)> = vec![
            ("wrong field count", load_text(&short, |_| {}), vec!["t.csv:4:", "expected 10 fields", "found 2"]),
            ("unterminated quote", load_text(&(good.clone() + "u2,\"never closed,1\n"), |_| {}), vec!["t.csv:"]),
            (
                "missing column",
                load_text(&good.replacen("price", "cost", 1), |_| {}),
                vec!["t.csv", "no column \"price\"", "\"cost\""],
            ),
            (
                "not a number",
                load_text(&set(4, "cheap"), |_| {}),
                vec!["t.csv: line 4: column \"price\"", "not a number: \"cheap\""],
            ),
            (
                "NaN without fill",
                load_text(&set(4, "NaN"), |_| {}),
                vec!["line 4: column \"price\"", "missing value (NaN)", "fill"],
            ),
            ("inf", load_text(&set(3, "inf"), |_| {}), vec!["line 4: column \"age\"", "not finite"]),
            (
                "null without fill",
                load_text(&set(4, ""), |_| {}),
                vec!["line 4: column \"price\"", "missing value (null)"],
            ),
            (
                "label outside the set",
                load_text(&set(7, "2"), |_| {}),
                vec!["line 4: column \"click\"", "\"2\" is neither positive"],
            ),
            (
                "unknown class",
                load_text(&set(6, "6"), |_| {}),
                vec!["line 4: column \"rating\"", "not one of the classes"],
            ),
            ("missing label", load_text(&set(6, ""), |_| {}), vec!["line 4: column \"rating\"", "missing"]),
            (
                "empty split",
                load_text(&good, |s| s.split = Some(SplitRule::RowMod { modulus: 5, valid: vec![3], test: vec![] })),
                vec!["the test split is empty"],
            ),
            (
                "one class in validation",
                load_text(&good, |s| {
                    s.tasks[0].positive = vec![crate::LabelValue::Int(7)];
                    s.tasks[0].negative = vec![];
                }),
                vec!["`click`", "valid split holds only label 0"],
            ),
        ];
        for (name, result, expected) in cases {
            let message = match result {
                Ok(_) => panic!("{name}: loaded"),
                Err(e) => e.to_string(),
            };
            for part in expected {
                assert!(message.contains(part), "{name}: {message:?} lacks {part:?}");
            }
        }
        // a Parquet column of a type mtrec does not read
        let mut s = source("list_column.parquet");
        s.columns = vec![ColumnSpec {
            name: "tags".into(),
            kind: ColumnKind::Categorical { min_count: 1, hash_buckets: None, hash_table: None },
        }];
        s.tasks.truncate(1);
        s.group_by = None;
        let e = s.load(None, &mut no_text).unwrap_err().to_string();
        assert!(e.contains("list_column.parquet") && e.contains("\"tags\"") && e.contains("List"), "{e}");
        // a missing file
        let e = source("nothing.csv").load(None, &mut no_text).unwrap_err().to_string();
        assert!(e.contains("nothing.csv"), "{e}");
    }

    /// The second load of the same table comes from the cache, equal to the first; a changed file
    /// misses it.
    #[test]
    fn the_cache_is_hit_then_missed_when_a_file_changes() {
        let cache = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        std::fs::copy(fixture("table.csv"), data.path().join("t.csv")).unwrap();
        let mut s = source("t.csv");
        s.dir = data.path().to_path_buf();
        let (first, outcome) = s.load_cached(None, Some(cache.path()), &mut no_text).unwrap();
        assert!(matches!(outcome, crate::CacheOutcome::Written(_)), "{outcome:?}");
        let (second, outcome) = s.load_cached(None, Some(cache.path()), &mut no_text).unwrap();
        assert!(matches!(outcome, crate::CacheOutcome::Hit(_)), "{outcome:?}");
        assert_eq!(first.dataset.train, second.dataset.train);
        assert_eq!(first.preprocessing, second.preprocessing);
        let text = std::fs::read_to_string(data.path().join("t.csv")).unwrap().replacen("u3,118", "u3,119", 1);
        std::fs::write(data.path().join("t.csv"), text).unwrap();
        let (_, outcome) = s.load_cached(None, Some(cache.path()), &mut no_text).unwrap();
        assert!(matches!(outcome, crate::CacheOutcome::Written(_)), "a changed file must miss: {outcome:?}");
    }
}
