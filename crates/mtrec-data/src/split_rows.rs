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

    /// The mean of each of the `n_tasks` labels over the split (what a regression head's bias
    /// starts at); a streamed split reads its chunks once.
    fn label_means(&self, n_tasks: usize) -> Result<Vec<f64>, DataError>;
}

/// Per task, the sum of its labels in `table` (row-major `[rows, n_tasks]`).
pub(crate) fn label_sums(table: &EncodedTable, n_tasks: usize, into: &mut [f64]) {
    for row in table.labels.chunks_exact(n_tasks.max(1)) {
        into.iter_mut().zip(row).for_each(|(s, &y)| *s += y as f64);
    }
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
        let mut sums = vec![0.0; n_tasks];
        label_sums(self, n_tasks, &mut sums);
        Ok(sums.into_iter().map(|s| s / self.n_rows.max(1) as f64).collect())
    }
}
