//! What training and evaluation need of a split, whether it is held in memory
//! ([`EncodedTable`]) or streamed from chunk files on disk ([`ChunkedSplit`](crate::ChunkedSplit)).

use burn::tensor::Device;

use crate::{BatchOrder, DataError, EncodedTable, MtlBatch, RowWidths, batches};

/// The batches of a split, and what evaluation reads besides them.
pub trait SplitRows: Sync {
    /// Number of rows.
    fn n_rows(&self) -> usize;

    /// The split in batches of `batch_size` rows (the last may be smaller), in file order or a
    /// seeded shuffle (in memory: a permutation of all rows; streamed: within a window of chunks).
    /// Reading a streamed split can fail (a damaged chunk): each item is a `Result`.
    fn stream<'a>(
        &'a self,
        widths: RowWidths,
        batch_size: usize,
        order: BatchOrder,
        device: &'a Device,
    ) -> Box<dyn Iterator<Item = Result<MtlBatch, DataError>> + 'a>;

    /// Each row's group id (`group_by`), in file order; empty without grouping.
    fn group_ids(&self) -> Result<Vec<u32>, DataError>;

    /// The split as one table, when it is held in memory (what the adversarial probe, the funnel
    /// check and the cascade filter read).
    fn in_memory(&self) -> Option<&EncodedTable>;

    /// The mean of each of the `n_tasks` labels over the split's rows that hold it (what a
    /// regression head's bias starts at; 0 for a task labelled nowhere); a streamed split reads its
    /// chunks once.
    fn label_means(&self, n_tasks: usize) -> Result<Vec<f64>, DataError>;
}

/// Per task, the sum of its present labels in `table` (row-major `[rows, n_tasks]`, `NaN` =
/// absent) and how many there are.
pub(crate) fn label_sums(table: &EncodedTable, n_tasks: usize, into: &mut [(f64, usize)]) {
    for row in table.labels.chunks_exact(n_tasks.max(1)) {
        for ((sum, count), &y) in into.iter_mut().zip(row) {
            if !y.is_nan() {
                *sum += y as f64;
                *count += 1;
            }
        }
    }
}

/// The means of [`label_sums`].
pub(crate) fn label_means_of(sums: &[(f64, usize)]) -> Vec<f64> {
    sums.iter().map(|&(s, n)| s / n.max(1) as f64).collect()
}

impl SplitRows for EncodedTable {
    fn n_rows(&self) -> usize {
        self.n_rows
    }

    fn stream<'a>(
        &'a self,
        widths: RowWidths,
        batch_size: usize,
        order: BatchOrder,
        device: &'a Device,
    ) -> Box<dyn Iterator<Item = Result<MtlBatch, DataError>> + 'a> {
        Box::new(batches(self, widths, batch_size, order, device).map(Ok))
    }

    fn group_ids(&self) -> Result<Vec<u32>, DataError> {
        Ok(self.groups.clone())
    }

    fn in_memory(&self) -> Option<&EncodedTable> {
        Some(self)
    }

    fn label_means(&self, n_tasks: usize) -> Result<Vec<f64>, DataError> {
        let mut sums = vec![(0.0, 0); n_tasks];
        label_sums(self, n_tasks, &mut sums);
        Ok(label_means_of(&sums))
    }
}
