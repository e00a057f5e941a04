//! Pre-encoded, row-major storage of one split, and the three splits of a dataset.

use crate::Schema;

/// One split, fully encoded, row-major with the widths of [`RowWidths`](crate::RowWidths): row `i`
/// has categorical ids `categorical[i*F..(i+1)*F]`, multi-valued slots `multi[i*M..(i+1)*M]`, dense
/// features `dense[i*D..(i+1)*D]`, text embeddings `text[i*X..(i+1)*X]` and labels
/// `labels[i*T..(i+1)*T]`; with `group_by`, `groups[i]` is its group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncodedTable {
    /// Number of rows.
    pub n_rows: usize,
    /// Categorical ids per field (0 = null or out of vocabulary), `[n_rows, F]`.
    pub categorical: Vec<u32>,
    /// Multi-valued categorical slots (0 = empty, 1 = unseen value), `[n_rows, M]`.
    pub multi: Vec<u32>,
    /// Dense features, `[n_rows, D]`.
    pub dense: Vec<f32>,
    /// Text embeddings, `[n_rows, X]`.
    pub text: Vec<f32>,
    /// Labels, `[n_rows, T]`: 0/1 for binary tasks, class indices for multiclass ones.
    pub labels: Vec<f32>,
    /// Each row's group id (GAUC), or empty without grouping.
    pub groups: Vec<u32>,
}

impl EncodedTable {
    /// The label column of task `t`, given `n_tasks` columns.
    pub fn label_column(&self, t: usize, n_tasks: usize) -> Vec<f32> {
        self.labels.iter().skip(t).step_by(n_tasks).copied().collect()
    }

    /// Appends `other`'s rows (of the same widths) after this table's.
    pub fn append(&mut self, other: EncodedTable) {
        self.n_rows += other.n_rows;
        self.categorical.extend(other.categorical);
        self.multi.extend(other.multi);
        self.dense.extend(other.dense);
        self.text.extend(other.text);
        self.labels.extend(other.labels);
        self.groups.extend(other.groups);
    }

    /// Keeps the rows whose index satisfies `keep`, in order.
    pub fn filter_rows(&self, widths: crate::RowWidths, keep: impl Fn(usize) -> bool) -> Self {
        let mut out = EncodedTable::default();
        let copy =
            |to: &mut Vec<u32>, from: &[u32], w: usize, i: usize| to.extend_from_slice(&from[i * w..(i + 1) * w]);
        let copy_f =
            |to: &mut Vec<f32>, from: &[f32], w: usize, i: usize| to.extend_from_slice(&from[i * w..(i + 1) * w]);
        for i in (0..self.n_rows).filter(|&i| keep(i)) {
            copy(&mut out.categorical, &self.categorical, widths.categorical, i);
            copy(&mut out.multi, &self.multi, widths.multi, i);
            copy_f(&mut out.dense, &self.dense, widths.dense, i);
            copy_f(&mut out.text, &self.text, widths.text, i);
            copy_f(&mut out.labels, &self.labels, widths.tasks, i);
            if !self.groups.is_empty() {
                out.groups.push(self.groups[i]);
            }
            out.n_rows += 1;
        }
        out
    }
}

/// Rows of a split where a funnel's step is positive although the step before it is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunnelViolation {
    /// The earlier step (task index).
    pub previous: usize,
    /// The later step (task index).
    pub task: usize,
    /// How many rows break `y_task ≤ y_previous`.
    pub rows: usize,
    /// The first such row (0-based).
    pub first_row: usize,
}

impl EncodedTable {
    /// Turns the labels of the funnel `steps` (task indices) into the cascade: step `t`'s label
    /// becomes `Π_{s≤t} y_s`.
    pub fn cascade_labels(&mut self, steps: &[usize], n_tasks: usize) {
        for row in self.labels.chunks_exact_mut(n_tasks) {
            let mut reached = 1.0;
            for &t in steps {
                reached *= row[t];
                row[t] = reached;
            }
        }
    }

    /// The first pair of consecutive funnel steps `steps[k−1], steps[k]` (task indices) whose labels
    /// break `y_k ≤ y_{k−1}` on some row, with the count and first row; `None` for a funnel.
    pub fn funnel_violation(&self, steps: &[usize], n_tasks: usize) -> Option<FunnelViolation> {
        steps.windows(2).find_map(|pair| {
            let (previous, task) = (pair[0], pair[1]);
            let bad: Vec<usize> = self
                .labels
                .chunks_exact(n_tasks)
                .enumerate()
                .filter(|(_, row)| row[task] > row[previous])
                .map(|(i, _)| i)
                .collect();
            bad.first().map(|&first_row| FunnelViolation { previous, task, rows: bad.len(), first_row })
        })
    }
}

impl MtlDataset<EncodedTable> {
    /// Declares the main binary tasks, as they are, the steps of a funnel (click, then purchase):
    /// checked on every split — a step positive where the step before it is not is an error naming
    /// the split, tasks and first row.
    pub fn into_funnel(mut self) -> Result<Self, crate::DataError> {
        let n_tasks = self.schema.n_tasks();
        let main: Vec<usize> = (0..n_tasks).filter(|&t| !self.schema.tasks[t].adversarial).collect();
        if let Some(t) = main.iter().find(|&&t| self.schema.tasks[t].kind != crate::TaskKind::Binary) {
            return Err(crate::DataError::Invalid(format!(
                "data.funnel needs binary tasks; `{}` is not",
                self.schema.tasks[*t].name
            )));
        }
        for (split, table) in [("train", &self.train), ("valid", &self.valid), ("test", &self.test)] {
            if let Some(v) = table.funnel_violation(&main, n_tasks) {
                return Err(crate::DataError::Invalid(format!(
                    "data.funnel: in the {split} split, task `{}` is 1 where `{}` is 0 on {} rows (first: row {})",
                    self.schema.tasks[v.task].name, self.schema.tasks[v.previous].name, v.rows, v.first_row
                )));
            }
        }
        self.schema.funnel = true;
        Ok(self)
    }

    /// Turns the main binary tasks into a funnel (impression → step 1 → step 2 …): task `t`'s label
    /// becomes `Π_{s≤t} y_s`, renamed `<first>_and_<…>` — the labels ESMM and AITM train on over the
    /// entire space. Adversarial tasks are left alone.
    pub fn into_cascade(mut self) -> Result<Self, crate::DataError> {
        let n_tasks = self.schema.n_tasks();
        let main: Vec<usize> = (0..n_tasks).filter(|&t| !self.schema.tasks[t].adversarial).collect();
        if let Some(t) = main.iter().find(|&&t| self.schema.tasks[t].kind != crate::TaskKind::Binary) {
            return Err(crate::DataError::Invalid(format!(
                "data.cascade needs binary tasks; `{}` is not",
                self.schema.tasks[*t].name
            )));
        }
        for table in [&mut self.train, &mut self.valid, &mut self.test] {
            table.cascade_labels(&main, n_tasks);
        }
        self.schema.cascade_names(&main);
        self.name = format!("{}-cascade", self.name);
        self.schema.funnel = true;
        Ok(self)
    }
}

/// A dataset ready for training: its schema and its train, validation and test splits, held in
/// memory ([`EncodedTable`], the default) or streamed from chunk files
/// ([`ChunkedSplit`](crate::ChunkedSplit)).
#[derive(Debug, Clone)]
pub struct MtlDataset<S = EncodedTable> {
    /// A short name (`census-mmoe`, `synthetic`).
    pub name: String,
    /// Columns and tasks.
    pub schema: Schema,
    /// Training split.
    pub train: S,
    /// Validation split: model selection and early stopping only.
    pub valid: S,
    /// Test split: evaluated once, with the selected model.
    pub test: S,
}
