//! Pre-encoded, row-major storage of one split, and the three splits of a dataset.

use crate::Schema;

/// One split, fully encoded: row `i` has categorical ids `categorical[i*F..(i+1)*F]`, dense
/// features `dense[i*D..(i+1)*D]` and labels `labels[i*T..(i+1)*T]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncodedTable {
    /// Number of rows.
    pub n_rows: usize,
    /// Categorical ids per field (0 = out of vocabulary), row-major `[n_rows, F]`.
    pub categorical: Vec<u32>,
    /// Dense features, row-major `[n_rows, D]`.
    pub dense: Vec<f32>,
    /// Labels, row-major `[n_rows, T]`; 0/1 for binary tasks.
    pub labels: Vec<f32>,
}

impl EncodedTable {
    /// The label column of task `t`, given `n_tasks` columns.
    pub fn label_column(&self, t: usize, n_tasks: usize) -> Vec<f32> {
        self.labels.iter().skip(t).step_by(n_tasks).copied().collect()
    }

    /// Keeps the rows whose index satisfies `keep`, in order.
    pub fn filter_rows(&self, n_cat: usize, n_dense: usize, n_tasks: usize, keep: impl Fn(usize) -> bool) -> Self {
        let mut out = EncodedTable::default();
        for i in (0..self.n_rows).filter(|&i| keep(i)) {
            out.categorical.extend_from_slice(&self.categorical[i * n_cat..(i + 1) * n_cat]);
            out.dense.extend_from_slice(&self.dense[i * n_dense..(i + 1) * n_dense]);
            out.labels.extend_from_slice(&self.labels[i * n_tasks..(i + 1) * n_tasks]);
            out.n_rows += 1;
        }
        out
    }
}

/// A dataset ready for training: its schema and its train, validation and test splits.
#[derive(Debug, Clone)]
pub struct MtlDataset {
    /// A short name (`census-mmoe`, `synthetic`).
    pub name: String,
    /// Columns and tasks.
    pub schema: Schema,
    /// Training split.
    pub train: EncodedTable,
    /// Validation split: model selection and early stopping only.
    pub valid: EncodedTable,
    /// Test split: evaluated once, with the selected model.
    pub test: EncodedTable,
}
