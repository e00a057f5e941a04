//! Reading a table's rows: each input column's raw values (vocabulary values interned with their
//! training counts, hashed ids, dense numbers, bags, texts), each task's label, each row's split
//! and group — what fitting the preprocessing and encoding then read. Loading scans every file
//! once; streaming scans in chunks ([`Scan::take_rows`] after each).

use std::{collections::HashMap, path::Path};

use crate::{
    ColumnKind, ColumnSpec, DataError, DenseFill, DenseTransform, LabelTransform, LabelValue, SplitName, SplitRule,
    TaskColumn, TaskKind,
    table::columns::{fill_template, hash_bucket},
    table::dense_fit::DenseFit,
    table::file::{Cell, RowRef, cell_error},
    table::file::{format_of, scan_file},
    table::source::{NO_GROUP, TableFiles, TableSource},
};

/// Values of one column, interned in order of first appearance, with their training counts.
#[derive(Default)]
pub(crate) struct Interner {
    index: HashMap<String, u32>,
    /// The values, by code.
    pub(crate) values: Vec<String>,
    train_count: Vec<u64>,
    first_train: Vec<u64>,
}

/// The code of a null cell.
pub(crate) const NULL: u32 = u32::MAX;

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
    pub(crate) fn vocabulary(&self, min_count: u64) -> Vec<String> {
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

/// The rows a scan has read and not yet encoded.
pub(crate) struct ScannedRows {
    /// Each input column's values.
    pub(crate) raws: Vec<Raw>,
    /// Each task's labels (NaN outside its space).
    pub(crate) labels: Vec<Vec<f32>>,
    /// Each row's split.
    pub(crate) splits: Vec<SplitName>,
    /// Each row's group code (with `group_by`).
    pub(crate) group_codes: Vec<u32>,
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

impl TableSource {
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
        let may_lack: Vec<String> = match self.score_only {
            true => self.tasks.iter().map(|t| t.column().to_string()).chain(self.group_by.clone()).collect(),
            false => vec![],
        };
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
                    if self.score_only && matches!(cell, Cell::Null) {
                        scan.labels[t].push(f32::NAN);
                        continue;
                    }
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
            scan_file(&path, format, &self.csv, &wanted, &may_lack, &mut on_row)?;
        }
        Ok(())
    }
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
                    // NaN: a missing value that a fitted statistic will fill
                    if *split == SplitName::Train && !v.is_nan() {
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
                    Some(DenseFill::Value(f)) => *f as f32,
                    // a statistic of the training values, known once they are all read: NaN until
                    // encoding puts the fitted value in (`FittedColumn::apply_dense`)
                    Some(DenseFill::Mean | DenseFill::Median) => f32::NAN,
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
