//! How a table's columns become inputs and labels: `[[data.columns]]` and `[[data.tasks]]` of an
//! experiment config.
//!
//! Inputs (`kind`):
//! - `categorical`: a vocabulary from the training rows (in order of first appearance; values seen
//!   fewer than `min_count` times there are left out), or `hash_buckets = N` for unbounded ids: id
//!   `1 + FNV-1a-64(value) mod N` ([`fnv1a64`], a fixed, documented hash). Null and unseen values
//!   map to id 0.
//! - `dense`: a number; `transform` fitted on the training rows: `minmax` (to `[0, 1]` with the
//!   training minimum and maximum, clipped), `standard` (zero mean, unit variance), `log1p`
//!   (`ln(1 + x)`, for counts), `none`. A missing value takes `fill` (a number, or the training
//!   values' `"mean"` or `"median"`, fitted and saved with the transform), or is an error.
//!   `clip_quantiles = [q_lo, q_hi]` clips to training quantiles first (robust scaling); see
//!   [`crate::dense_fit`] for constant columns and outliers.
//! - `multi_categorical`: a list of values in one cell, split at `separator` (genres
//!   `Action|Comedy`, tags, recently viewed ids), up to `max_len` kept, embedded as a bag and pooled
//!   (`mean` or `sum`). Vocabulary as for `categorical` (ids from 2: 0 is an empty slot, 1 an unseen
//!   value).
//! - `text`: the sentence embedding of `template` (e.g. `"{Title}. {Review Text}"`, nulls as empty
//!   strings) from the frozen pretrained encoder in folder `encoder`.
//!
//! Labels (`kind`): `binary` (1 where the value is in `positive`, or `≥ threshold`; with
//! `negative`, values in neither list are errors), `regression` (a number; `transform = "log1p"`
//! optional), `multiclass` (`classes = [values]` in class order, or `n_classes = N` for values
//! `0..N−1`). `adversarial = true` puts the task behind gradient reversal. `space = "click == 1"` (or
//! `"labelled"`) gives a task its own sample space: outside it the label is absent
//! ([`crate::LabelSpace`]).

use serde::{Deserialize, Serialize};

use crate::{LabelSpace, Pooling, TaskKind};

/// What a dense column's missing cells (null, empty, NaN) become: `fill = 0.5`, or a statistic of
/// the column's training values, `fill = "mean"` or `fill = "median"` (fitted with the transform
/// and saved with it: a scored file's missing cells take the training rows' value).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FillSpelling", into = "FillSpelling")]
pub enum DenseFill {
    /// This number.
    Value(f64),
    /// The mean of the training values.
    Mean,
    /// The median of the training values (exact up to 2²⁰ training rows, from a seeded uniform
    /// sample beyond; see [`crate::dense_fit`]).
    Median,
}

/// How `fill` is written in a config: a number or a statistic's name.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum FillSpelling {
    Number(f64),
    Name(String),
}

impl TryFrom<FillSpelling> for DenseFill {
    type Error = String;

    fn try_from(spelling: FillSpelling) -> Result<Self, String> {
        match spelling {
            FillSpelling::Number(v) => Ok(Self::Value(v)),
            FillSpelling::Name(name) => match name.as_str() {
                "mean" => Ok(Self::Mean),
                "median" => Ok(Self::Median),
                other => Err(format!("fill = {other:?}: expected a number, \"mean\" or \"median\"")),
            },
        }
    }
}

impl From<DenseFill> for FillSpelling {
    fn from(fill: DenseFill) -> Self {
        match fill {
            DenseFill::Value(v) => Self::Number(v),
            DenseFill::Mean => Self::Name("mean".into()),
            DenseFill::Median => Self::Name("median".into()),
        }
    }
}

/// What a dense column's values are turned into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DenseTransform {
    /// `(x − min) / (max − min)` with the training minimum and maximum, clipped to `[0, 1]`.
    #[default]
    Minmax,
    /// `(x − mean) / std` with the training mean and standard deviation.
    Standard,
    /// `ln(1 + x)` (needs `x > −1`).
    Log1p,
    /// The value as it is.
    None,
}

/// The kind of an input column and its options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ColumnKind {
    /// One id a row.
    Categorical {
        /// Values seen fewer times in training get the unseen id 0 (default 1: every value).
        #[serde(default = "one")]
        min_count: u64,
        /// Hash values into this many buckets instead of a vocabulary.
        #[serde(default)]
        hash_buckets: Option<u64>,
        /// Hashed fields naming the same table share its rows (one embedding table for all of
        /// them, as in the hashing trick); each field's values are salted with the field's name,
        /// so equal values of two fields land on unrelated rows. All must have the same
        /// `hash_buckets`. Without it, each field has rows of its own.
        #[serde(default)]
        hash_table: Option<String>,
    },
    /// A number.
    Dense {
        /// The transform fitted on the training rows.
        #[serde(default)]
        transform: DenseTransform,
        /// The value of a missing (null, empty, NaN) cell: a number, `"mean"` or `"median"`;
        /// without it a missing value is an error.
        #[serde(default)]
        fill: Option<DenseFill>,
        /// `[q_lo, q_hi]`: clip every value to these quantiles of the training values before
        /// `minmax` or `standard` (robust scaling: an outlier no longer sets the scale).
        #[serde(default)]
        clip_quantiles: Option<[f64; 2]>,
    },
    /// A list of values in one cell.
    MultiCategorical {
        /// What separates the values (default `|`).
        #[serde(default = "bar")]
        separator: String,
        /// Values kept a row (the first ones).
        max_len: usize,
        /// How the bag is pooled.
        #[serde(default)]
        pooling: Pooling,
        /// Values seen fewer times in training are unseen (default 1).
        #[serde(default = "one")]
        min_count: u64,
    },
    /// A sentence embedding of a text made from one or more columns.
    Text {
        /// The text, with `{column}` placeholders (nulls as empty strings); default `{<name>}`.
        #[serde(default)]
        template: Option<String>,
        /// Folder of the pretrained encoder (a sentence-transformers model).
        encoder: std::path::PathBuf,
    },
}

/// The largest `hash_buckets`: ids `1..=N` must stay positive 32-bit signed integers, the type of
/// the model's id tensors.
pub const MAX_HASH_BUCKETS: u64 = i32::MAX as u64 - 1;

fn one() -> u64 {
    1
}
fn bar() -> String {
    "|".into()
}

/// One `[[data.columns]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnSpec {
    /// The column's name in the file (for `text`, the field's name; its columns are in `template`).
    pub name: String,
    /// Kind and options.
    #[serde(flatten)]
    pub kind: ColumnKind,
}

impl ColumnSpec {
    /// The file columns this input reads.
    pub fn source_columns(&self) -> Vec<String> {
        match &self.kind {
            ColumnKind::Text { template: Some(t), .. } => template_columns(t),
            _ => vec![self.name.clone()],
        }
    }

    /// Checks the options; messages name the column.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |m: &str| Err(format!("data.columns `{}`: {m}", self.name));
        match &self.kind {
            ColumnKind::Categorical { hash_buckets: Some(0), .. } => bad("hash_buckets must be positive"),
            ColumnKind::Categorical { hash_buckets: None, hash_table: Some(_), .. } => {
                bad("hash_table shares the rows of hashed ids: it needs hash_buckets")
            }
            ColumnKind::Categorical { min_count: 0, .. } | ColumnKind::MultiCategorical { min_count: 0, .. } => {
                bad("min_count must be at least 1")
            }
            ColumnKind::Dense { fill: Some(DenseFill::Value(f)), .. }
                if !f.is_finite() || f.abs() > f32::MAX as f64 =>
            {
                bad("fill must be a finite number within f32's range")
            }
            ColumnKind::Dense { clip_quantiles: Some([a, b]), transform, .. } => {
                if !(0.0 <= *a && a < b && *b <= 1.0) {
                    bad(&format!("clip_quantiles = [{a}, {b}] must be quantiles with 0 ≤ q_lo < q_hi ≤ 1"))
                } else if !matches!(transform, DenseTransform::Minmax | DenseTransform::Standard) {
                    bad("clip_quantiles applies to transform = \"minmax\" or \"standard\"")
                } else {
                    Ok(())
                }
            }
            ColumnKind::Categorical { hash_buckets: Some(b), .. } if *b > MAX_HASH_BUCKETS => bad(&format!(
                "hash_buckets = {b} is above {MAX_HASH_BUCKETS}: ids are 32-bit signed integers in the model"
            )),
            ColumnKind::MultiCategorical { max_len: 0, .. } => bad("max_len must be positive"),
            ColumnKind::MultiCategorical { separator, .. } if separator.is_empty() => bad("separator is empty"),
            ColumnKind::Text { template: Some(t), .. } if template_columns(t).is_empty() => {
                bad("template names no {column}")
            }
            _ => Ok(()),
        }
    }
}

/// The `{column}` placeholders of a text template, in order.
pub fn template_columns(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start + 1..].find('}') else { break };
        let name = &rest[start + 1..start + 1 + len];
        if !out.iter().any(|c| c == name) {
            out.push(name.to_string());
        }
        rest = &rest[start + 2 + len..];
    }
    out
}

/// Fills a template's `{column}` placeholders with `value(column)` (nulls as empty strings).
pub fn fill_template(template: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        match rest[start + 1..].find('}') {
            Some(len) => {
                out.push_str(&value(&rest[start + 1..start + 1 + len]).unwrap_or_default());
                rest = &rest[start + 2 + len..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// A label value of a config: a string, a number or a boolean (`positive = [1, "yes"]`). A number
/// or boolean matches a cell holding that number whatever its rendering (`1`, `1.0`, `True`, a
/// Parquet integer, float or boolean); a string matches the cell's text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LabelValue {
    /// An integer, matched against the cell's integer (or its text).
    Int(i64),
    /// A float, matched against the cell's number.
    Float(f64),
    /// A boolean (`true` = 1), matched against the cell's number (`True`, `1`, a Parquet boolean).
    Bool(bool),
    /// A string, matched against the cell's text.
    Text(String),
}

impl LabelValue {
    /// The value as the text a cell would hold.
    pub fn as_text(&self) -> String {
        match self {
            Self::Int(i) => i.to_string(),
            Self::Float(f) => f.to_string(),
            Self::Bool(b) => b.to_string(),
            Self::Text(s) => s.clone(),
        }
    }
}

/// Regression label transforms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LabelTransform {
    /// The value as it is.
    #[default]
    None,
    /// `ln(1 + y)` (watch time, counts).
    Log1p,
}

impl LabelTransform {
    /// Whether the labels are as they are.
    pub fn is_none(&self) -> bool {
        *self == Self::None
    }
}

/// One `[[data.tasks]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskColumn {
    /// The task's name.
    pub name: String,
    /// The column holding its label (default: the task's name).
    #[serde(default)]
    pub column: Option<String>,
    /// `binary`, `regression` or `multiclass`.
    pub kind: TaskKind,
    /// Binary: the values meaning 1.
    #[serde(default)]
    pub positive: Vec<LabelValue>,
    /// Binary: the values meaning 0 (then any other value is an error; without it, every value
    /// not in `positive` is 0).
    #[serde(default)]
    pub negative: Vec<LabelValue>,
    /// Binary: 1 where the number is `≥ threshold` (instead of `positive`).
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Regression: transform of the label.
    #[serde(default)]
    pub transform: LabelTransform,
    /// Multiclass: the classes, in class order.
    #[serde(default)]
    pub classes: Vec<LabelValue>,
    /// Multiclass: values are the class ids `0..n_classes` (instead of `classes`).
    #[serde(default)]
    pub n_classes: Option<usize>,
    /// An adversarial task (gradient reversal), reported but never monitored.
    #[serde(default)]
    pub adversarial: bool,
    /// The rows the label exists on (`"labelled"`, or a condition such as `"click == 1"`); outside
    /// them the label is absent: no loss, no gradient, not in the task's metrics. Default: every
    /// row, where a missing label is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<LabelSpace>,
}

impl TaskColumn {
    /// The label column's name.
    pub fn column(&self) -> &str {
        self.column.as_deref().unwrap_or(&self.name)
    }

    /// Number of classes of a multiclass task.
    pub fn n_classes(&self) -> usize {
        self.n_classes.unwrap_or(self.classes.len())
    }

    /// Checks the options; messages name the task.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |m: String| Err(format!("data.tasks `{}`: {m}", self.name));
        let set = |name: &str, present: bool, kinds: &[TaskKind]| {
            if present && !kinds.contains(&self.kind) {
                Err(format!("data.tasks `{}`: {name} does not apply to a {} task", self.name, self.kind.as_str()))
            } else {
                Ok(())
            }
        };
        set("positive", !self.positive.is_empty(), &[TaskKind::Binary])?;
        set("negative", !self.negative.is_empty(), &[TaskKind::Binary])?;
        set("threshold", self.threshold.is_some(), &[TaskKind::Binary])?;
        set("transform", self.transform != LabelTransform::None, &[TaskKind::Regression])?;
        set("classes", !self.classes.is_empty(), &[TaskKind::Multiclass])?;
        set("n_classes", self.n_classes.is_some(), &[TaskKind::Multiclass])?;
        if self.adversarial && self.space.is_some() {
            return bad("`space` does not apply to an adversarial task: its probe and concept eraser read every \
                        row's label"
                .into());
        }
        match self.kind {
            TaskKind::Binary if self.positive.is_empty() == self.threshold.is_none() => {
                bad("a binary task needs `positive = [values]` or `threshold = number` (one of them)".into())
            }
            TaskKind::Binary if self.threshold.is_some() && !self.negative.is_empty() => {
                bad("`negative` goes with `positive`, not with `threshold`".into())
            }
            TaskKind::Multiclass if self.classes.is_empty() == self.n_classes.is_none() => {
                bad("a multiclass task needs `classes = [values]` or `n_classes = N` (one of them)".into())
            }
            TaskKind::Multiclass if self.n_classes() < 2 => {
                bad(format!("{} classes: at least 2 are needed", self.n_classes()))
            }
            _ => Ok(()),
        }
    }
}

/// 64-bit FNV-1a of `bytes` (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`): the hash of
/// `hash_buckets`, fixed so that a hashed id means the same on every machine, run and language.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

/// The id of `value` among `buckets` hash buckets: `1 + fnv1a64(value) mod buckets` (0 is null).
pub fn hash_bucket(value: &str, buckets: u64) -> u32 {
    (1 + fnv1a64(value.as_bytes()) % buckets) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published FNV-1a test vectors, and bucket ids pinned so a change of hash cannot pass.
    #[test]
    fn fnv1a_matches_the_reference_and_buckets_are_pinned() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(hash_bucket("a", 1000), 1 + (0xaf63_dc4c_8601_ec8cu64 % 1000) as u32);
        assert_eq!(hash_bucket("user_42", 1 << 20), 1 + (fnv1a64(b"user_42") % (1 << 20)) as u32);
        assert!((1..=7).contains(&hash_bucket("anything", 7)));
    }

    #[test]
    fn templates_name_and_fill_their_columns() {
        assert_eq!(template_columns("{Title}. {Review Text}"), vec!["Title", "Review Text"]);
        let text = fill_template("{Title}. {Review Text}", |c| (c == "Review Text").then(|| "Great fit".to_string()));
        assert_eq!(text, ". Great fit");
        assert_eq!(fill_template("{a}{a}!", |_| Some("x".into())), "xx!");
    }

    /// `hash_buckets` past the 32-bit signed id range is refused, naming the column (it used to give
    /// negative ids); the largest allowed value passes.
    #[test]
    fn hash_buckets_stay_in_the_id_range() {
        let spec = |b: u64| -> ColumnSpec {
            toml::from_str(&format!("name = \"user_id\"\nkind = \"categorical\"\nhash_buckets = {b}\n")).unwrap()
        };
        let e = spec(1 << 31).validate().unwrap_err();
        assert!(e.contains("`user_id`") && e.contains("hash_buckets = 2147483648"), "{e}");
        assert!(spec(MAX_HASH_BUCKETS).validate().is_ok());
    }

    #[test]
    fn column_and_task_options_are_checked() {
        let toml = r#"
            name = "genres"
            kind = "multi_categorical"
            max_len = 0
        "#;
        let c: ColumnSpec = toml::from_str(toml).unwrap();
        assert!(c.validate().unwrap_err().contains("`genres`: max_len"));
        let t: TaskColumn = toml::from_str("name = \"click\"\nkind = \"binary\"\n").unwrap();
        assert!(t.validate().unwrap_err().contains("positive"));
        let t: TaskColumn = toml::from_str("name = \"r\"\nkind = \"regression\"\npositive = [1]\n").unwrap();
        assert!(t.validate().unwrap_err().contains("positive does not apply to a regression task"));
        let t: TaskColumn = toml::from_str("name = \"r\"\nkind = \"multiclass\"\nclasses = [1, 2, 3]\n").unwrap();
        assert_eq!((t.validate(), t.n_classes()), (Ok(()), 3));
        let c: Result<ColumnSpec, _> = toml::from_str("name = \"x\"\nkind = \"dense\"\nscale = 2\n");
        assert!(c.unwrap_err().to_string().contains("scale"), "unknown keys are errors");
    }
}
