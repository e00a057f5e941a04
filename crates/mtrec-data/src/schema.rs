//! What a dataset's columns are: categorical fields with their vocabulary sizes, dense features,
//! and the tasks with their kinds. Models are built from a [`Schema`], never from a dataset.

use serde::{Deserialize, Serialize};

/// The kind of a task decides its head, its loss and its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Binary classification: the head yields a logit; loss BCE-with-logits; metrics AUC, logloss.
    Binary,
    /// Regression: the head yields a value; loss MSE; metrics MSE, MAE.
    Regression,
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
}

impl TaskSpec {
    /// A main task.
    pub fn new(name: impl Into<String>, kind: TaskKind) -> Self {
        Self { name: name.into(), kind, adversarial: false }
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

/// The columns of a dataset, as the model sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    /// Categorical fields, in column order of [`EncodedTable::categorical`](crate::EncodedTable).
    pub categorical: Vec<CategoricalField>,
    /// Names of the dense features, in column order.
    pub dense: Vec<String>,
    /// The tasks, in label column order.
    pub tasks: Vec<TaskSpec>,
    /// The main tasks are the steps of a funnel (impression → click → purchase): task `t`'s label
    /// is positive only where task `t − 1`'s is, so each step also has a conditional metric on the
    /// rows that reached the step before it (ESMM's CVR AUC).
    #[serde(default)]
    pub funnel: bool,
}

impl Schema {
    /// Number of tasks.
    pub fn n_tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Row widths of an [`EncodedTable`](crate::EncodedTable) of this schema: `(categorical fields,
    /// dense features, tasks)`, as [`batches`](crate::batches) takes them.
    pub fn widths(&self) -> (usize, usize, usize) {
        (self.categorical.len(), self.dense.len(), self.tasks.len())
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
