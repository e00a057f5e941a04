//! What a dataset's columns are: categorical fields with their vocabulary sizes, multi-valued
//! (bag) fields, dense features, text fields with their embedding width, and the tasks with their
//! kinds. Models are built from a [`Schema`], never from a dataset.

use serde::{Deserialize, Serialize};

use crate::LabelTransform;

/// The kind of a task decides its head, its loss and its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Binary classification: the head yields a logit; loss BCE-with-logits; metrics AUC, logloss
    /// (and GAUC with groups).
    Binary,
    /// Regression: the head yields a value; loss MSE; metrics MSE, MAE.
    Regression,
    /// Classification into `n_classes` classes ([`TaskSpec::n_classes`]): the head yields one logit a
    /// class; loss softmax cross-entropy; metrics accuracy, logloss, macro one-vs-rest AUC. Labels
    /// are class indices `0..n_classes`.
    Multiclass,
}

impl TaskKind {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Binary => "binary",
            Self::Regression => "regression",
            Self::Multiclass => "multiclass",
        }
    }
}

/// One task of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The task's name (`income`, `never_married`, …), used in configs and reports.
    pub name: String,
    /// Classification or regression.
    pub kind: TaskKind,
    /// An adversarial task: its head sits behind gradient reversal and the shared representation
    /// learns to make it unpredictable; it is reported but never monitored for model selection.
    #[serde(default)]
    pub adversarial: bool,
    /// Multiclass tasks: the number of classes (0 for the other kinds).
    #[serde(default)]
    pub n_classes: usize,
    /// Regression tasks: the transform the labels (and so the model's outputs) are in; with
    /// `log1p`, metrics are reported in both spaces (`mse` of `expm1` of both, `mse_log1p` as
    /// trained).
    #[serde(default, skip_serializing_if = "LabelTransform::is_none")]
    pub label_transform: LabelTransform,
}

impl TaskSpec {
    /// A main binary or regression task.
    pub fn new(name: impl Into<String>, kind: TaskKind) -> Self {
        Self { name: name.into(), kind, adversarial: false, n_classes: 0, label_transform: LabelTransform::None }
    }

    /// A main multiclass task with `n_classes` classes.
    pub fn multiclass(name: impl Into<String>, n_classes: usize) -> Self {
        Self {
            name: name.into(),
            kind: TaskKind::Multiclass,
            adversarial: false,
            n_classes,
            label_transform: LabelTransform::None,
        }
    }

    /// Width of the task's head: one logit per class for multiclass, else 1.
    pub fn output_dim(&self) -> usize {
        match self.kind {
            TaskKind::Multiclass => self.n_classes,
            _ => 1,
        }
    }
}

/// One categorical input field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoricalField {
    /// The field's name.
    pub name: String,
    /// Number of ids, including the reserved out-of-vocabulary id 0.
    pub vocab_size: usize,
}

/// How a bag of embeddings becomes one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The mean of the bag's embeddings (an empty bag gives zeros).
    #[default]
    Mean,
    /// Their sum.
    Sum,
}

/// One multi-valued categorical input field (genres, tags, recently viewed items): up to `max_len`
/// ids a row, embedded and pooled into one vector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiCategoricalField {
    /// The field's name.
    pub name: String,
    /// Number of ids, including the reserved empty-slot id 0 and unseen-value id 1.
    pub vocab_size: usize,
    /// Slots a row (longer lists are cut, shorter ones padded with 0).
    pub max_len: usize,
    /// How the slots' embeddings are pooled.
    pub pooling: Pooling,
}

/// One text input field: a sentence embedding of the field's text from a frozen pretrained
/// encoder, or the text's token ids for an encoder the model trains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextField {
    /// The field's name.
    pub name: String,
    /// Width of its embedding (of its token ids: the encoder's longest sequence).
    pub dim: usize,
    /// The values are token ids (`id + 1`, `0` for padding), not an embedding.
    #[serde(default)]
    pub tokens: bool,
}

/// The row widths of an [`EncodedTable`](crate::EncodedTable)'s arrays, as
/// [`batches`](crate::batches) takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RowWidths {
    /// Categorical fields.
    pub categorical: usize,
    /// Multi-valued slots (Σ `max_len`).
    pub multi: usize,
    /// Dense features.
    pub dense: usize,
    /// Text embedding values (Σ `dim`).
    pub text: usize,
    /// Tasks.
    pub tasks: usize,
}

/// The columns of a dataset, as the model sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    /// Categorical fields, in column order of [`EncodedTable::categorical`](crate::EncodedTable).
    pub categorical: Vec<CategoricalField>,
    /// Multi-valued categorical fields, in slot order of [`EncodedTable::multi`](crate::EncodedTable).
    #[serde(default)]
    pub multi_categorical: Vec<MultiCategoricalField>,
    /// Names of the dense features, in column order.
    pub dense: Vec<String>,
    /// Text fields, in order of [`EncodedTable::text`](crate::EncodedTable).
    #[serde(default)]
    pub text: Vec<TextField>,
    /// The tasks, in label column order.
    pub tasks: Vec<TaskSpec>,
    /// The main tasks are the steps of a funnel (impression → click → purchase): task `t`'s label
    /// is positive only where task `t − 1`'s is, so each step also has a conditional metric on the
    /// rows that reached the step before it (ESMM's CVR AUC).
    #[serde(default)]
    pub funnel: bool,
    /// Categorical fields (indices) that share one table's rows (`hash_table`), a list per table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_tables: Vec<Vec<usize>>,
}

impl Schema {
    /// Renames the later steps of a cascade: step `k` becomes `<step k−1>_and_<step k>`.
    pub fn cascade_names(&mut self, steps: &[usize]) {
        for k in 1..steps.len() {
            let name = format!("{}_and_{}", self.tasks[steps[k - 1]].name, self.tasks[steps[k]].name);
            self.tasks[steps[k]].name = name;
        }
    }

    /// A schema of categorical fields, dense features and tasks only.
    pub fn new(categorical: Vec<CategoricalField>, dense: Vec<String>, tasks: Vec<TaskSpec>) -> Self {
        Self {
            categorical,
            multi_categorical: vec![],
            dense,
            text: vec![],
            tasks,
            funnel: false,
            shared_tables: vec![],
        }
    }

    /// Number of tasks.
    pub fn n_tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Row widths of an [`EncodedTable`](crate::EncodedTable) of this schema.
    pub fn widths(&self) -> RowWidths {
        RowWidths {
            categorical: self.categorical.len(),
            multi: self.multi_categorical.iter().map(|f| f.max_len).sum(),
            dense: self.dense.len(),
            text: self.text.iter().map(|f| f.dim).sum(),
            tasks: self.tasks.len(),
        }
    }

    /// The kind of each task, in task order.
    pub fn task_kinds(&self) -> Vec<TaskKind> {
        self.tasks.iter().map(|t| t.kind).collect()
    }

    /// Vocabulary size of each categorical field.
    pub fn vocab_sizes(&self) -> Vec<usize> {
        self.categorical.iter().map(|f| f.vocab_size).collect()
    }

    /// Index of the task called `name`.
    pub fn task_index(&self, name: &str) -> Option<usize> {
        self.tasks.iter().position(|t| t.name == name)
    }
}
