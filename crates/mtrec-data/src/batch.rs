//! Batches of an [`EncodedTable`] as tensors on a device, in sequential or seeded-shuffled order.

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};

use crate::{EncodedTable, RowWidths};

/// The input columns of one batch, as the shared embedding layer reads them. Each part is `None`
/// when the dataset has no column of that kind.
#[derive(Debug, Clone, Default)]
pub struct FeatureBatch {
    /// Categorical ids per field, `[B, F]` (0 = null or unseen).
    pub categorical: Option<Tensor<2, Int>>,
    /// Multi-valued ids: each multi-categorical field's `max_len` slots side by side, `[B, Σ L_f]`
    /// (0 = empty slot, 1 = unseen value).
    pub multi: Option<Tensor<2, Int>>,
    /// Dense features, `[B, D]`.
    pub dense: Option<Tensor<2>>,
    /// Text embeddings: each text field's vector side by side, `[B, Σ d_f]`.
    pub text: Option<Tensor<2>>,
}

impl FeatureBatch {
    /// Categorical ids and dense features only.
    pub fn new(categorical: Option<Tensor<2, Int>>, dense: Option<Tensor<2>>) -> Self {
        Self { categorical, dense, ..Default::default() }
    }
}

/// One batch of examples.
#[derive(Debug, Clone)]
pub struct MtlBatch {
    /// The inputs.
    pub features: FeatureBatch,
    /// Labels, `[B, T]`: column `t` belongs to task `t` (a class index for multiclass tasks);
    /// `NaN` where a task's label is absent (outside its sample space).
    pub labels: Tensor<2>,
    /// Number of examples `B`.
    pub size: usize,
    /// Where some labels are absent: how many rows hold each task's label. `None` when every label
    /// of the batch is present.
    pub labelled: Option<LabelledRows>,
}

/// The labelled rows of a batch with absent labels, counted on the host as the batch is assembled.
/// A shard of the batch ([`MtlBatch::rows`]) keeps the whole batch's counts: a task's loss is the
/// mean over the *batch's* labelled rows, so each shard divides its sum by its share of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledRows {
    /// Per task, the rows of the whole batch holding its label.
    pub per_task: Vec<usize>,
    /// The whole batch's rows.
    pub batch_rows: usize,
}

impl MtlBatch {
    /// Rows `range` of the batch (a data-parallel rank's shard).
    ///
    /// # Panics
    /// When `range` reaches past the batch.
    pub fn rows(&self, range: std::ops::Range<usize>) -> MtlBatch {
        assert!(range.end <= self.size && range.start <= range.end, "rows {range:?} of a batch of {}", self.size);
        let f = &self.features;
        MtlBatch {
            features: FeatureBatch {
                categorical: f.categorical.as_ref().map(|t| t.clone().slice(range.clone())),
                multi: f.multi.as_ref().map(|t| t.clone().slice(range.clone())),
                dense: f.dense.as_ref().map(|t| t.clone().slice(range.clone())),
                text: f.text.as_ref().map(|t| t.clone().slice(range.clone())),
            },
            labels: self.labels.clone().slice(range.clone()),
            size: range.len(),
            labelled: self.labelled.clone(),
        }
    }

    /// The rows of the whole batch (before sharding) holding task `t`'s label.
    pub fn task_rows(&self, t: usize) -> usize {
        self.labelled.as_ref().map_or(self.size, |l| l.per_task[t])
    }

    /// Whether each task's label is on at least one row of the whole batch.
    pub fn task_present(&self, n_tasks: usize) -> Vec<bool> {
        (0..n_tasks).map(|t| self.task_rows(t) > 0).collect()
    }

    /// What task `t`'s summed loss over this batch (or shard) is divided by, where labels are
    /// absent: its labelled rows in the whole batch times this shard's share of the batch's rows
    /// (in one process, the labelled rows), so that the ranks' share-weighted losses add up to the
    /// mean over the batch's labelled rows. `None` when every label is present (the plain mean).
    pub fn loss_denominator(&self, t: usize) -> Option<f64> {
        self.labelled.as_ref().map(|l| l.per_task[t] as f64 * self.size as f64 / l.batch_rows.max(1) as f64)
    }
}

/// The order batches are drawn in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOrder {
    /// Rows in file order (evaluation).
    Sequential,
    /// A permutation drawn from this seed (training; use a new seed each epoch).
    Shuffled(u64),
}

/// Iterates over `table` in batches of `batch_size` rows (the last one may be smaller).
///
/// `widths` are the row widths of the table's arrays ([`Schema::widths`](crate::Schema::widths)).
pub fn batches<'a>(
    table: &'a EncodedTable,
    widths: RowWidths,
    batch_size: usize,
    order: BatchOrder,
    device: &'a Device,
) -> impl Iterator<Item = MtlBatch> + 'a {
    assert!(batch_size > 0, "batch_size must be positive");
    let mut rows: Vec<u32> = (0..table.n_rows as u32).collect();
    if let BatchOrder::Shuffled(seed) = order {
        rows.shuffle(&mut StdRng::seed_from_u64(seed));
    }
    (0..table.n_rows.div_ceil(batch_size)).map(move |b| {
        let chunk = &rows[b * batch_size..((b + 1) * batch_size).min(rows.len())];
        let mut batch = BatchRows::new(widths, chunk.len());
        for &r in chunk {
            batch.push(table, r as usize);
        }
        batch.finish(device)
    })
}

/// A batch being assembled row by row from encoded tables: fresh buffers each batch, moved into
/// the tensors (no copy of the assembled batch).
pub(crate) struct BatchRows {
    widths: RowWidths,
    size: usize,
    cat: Vec<i32>,
    multi: Vec<i32>,
    dense: Vec<f32>,
    text: Vec<f32>,
    labels: Vec<f32>,
    /// Per task, rows whose label is absent (`NaN`).
    absent: Vec<usize>,
}

impl BatchRows {
    /// An empty batch with room for `capacity` rows of `widths`.
    pub(crate) fn new(widths: RowWidths, capacity: usize) -> Self {
        Self {
            widths,
            size: 0,
            cat: Vec::with_capacity(capacity * widths.categorical),
            multi: Vec::with_capacity(capacity * widths.multi),
            dense: Vec::with_capacity(capacity * widths.dense),
            text: Vec::with_capacity(capacity * widths.text),
            labels: Vec::with_capacity(capacity * widths.tasks),
            absent: vec![0; widths.tasks],
        }
    }

    /// Rows so far.
    pub(crate) fn len(&self) -> usize {
        self.size
    }

    /// Appends row `r` of `table`.
    pub(crate) fn push(&mut self, table: &EncodedTable, r: usize) {
        let RowWidths { categorical: n_cat, multi: n_multi, dense: n_dense, text: n_text, tasks: n_tasks } =
            self.widths;
        self.cat.extend(table.categorical[r * n_cat..(r + 1) * n_cat].iter().map(|&id| id as i32));
        self.multi.extend(table.multi[r * n_multi..(r + 1) * n_multi].iter().map(|&id| id as i32));
        self.dense.extend_from_slice(&table.dense[r * n_dense..(r + 1) * n_dense]);
        self.text.extend_from_slice(&table.text[r * n_text..(r + 1) * n_text]);
        let labels = &table.labels[r * n_tasks..(r + 1) * n_tasks];
        for (absent, y) in self.absent.iter_mut().zip(labels) {
            *absent += usize::from(y.is_nan());
        }
        self.labels.extend_from_slice(labels);
        self.size += 1;
    }

    /// The batch as tensors on `device`.
    pub(crate) fn finish(self, device: &Device) -> MtlBatch {
        let (size, w) = (self.size, self.widths);
        let ints = |v: Vec<i32>, w: usize| (w > 0).then(|| Tensor::from_data(TensorData::new(v, [size, w]), device));
        let floats = |v: Vec<f32>, w: usize| (w > 0).then(|| Tensor::from_data(TensorData::new(v, [size, w]), device));
        MtlBatch {
            features: FeatureBatch {
                categorical: ints(self.cat, w.categorical),
                multi: ints(self.multi, w.multi),
                dense: floats(self.dense, w.dense),
                text: floats(self.text, w.text),
            },
            labels: Tensor::from_data(TensorData::new(self.labels, [size, w.tasks]), device),
            size,
            labelled: self
                .absent
                .iter()
                .any(|&a| a > 0)
                .then(|| LabelledRows { per_task: self.absent.iter().map(|a| size - a).collect(), batch_rows: size }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(n: usize) -> EncodedTable {
        EncodedTable {
            n_rows: n,
            categorical: (0..n as u32 * 2).collect(),
            dense: (0..n).map(|i| i as f32).collect(),
            labels: (0..n).map(|i| (i % 2) as f32).collect(),
            ..Default::default()
        }
    }

    const WIDTHS: RowWidths = RowWidths { categorical: 2, multi: 0, dense: 1, text: 0, tasks: 1 };

    #[test]
    fn sequential_batches_cover_rows_in_order() {
        let device = Device::flex();
        let t = table(10);
        let got: Vec<MtlBatch> = batches(&t, WIDTHS, 4, BatchOrder::Sequential, &device).collect();
        assert_eq!(got.iter().map(|b| b.size).collect::<Vec<_>>(), vec![4, 4, 2]);
        let dense: Vec<f32> = got
            .iter()
            .flat_map(|b| b.features.dense.clone().unwrap().into_data().try_into_vec::<f32>().unwrap())
            .collect();
        assert_eq!(dense, (0..10).map(|i| i as f32).collect::<Vec<_>>());
        let ids = got[2].features.categorical.clone().unwrap().into_data().try_into_vec_as::<i64>().unwrap();
        assert_eq!(ids, vec![16, 17, 18, 19]);
    }

    /// A shard of a batch holds the batch's rows of its range, every part cut the same way.
    #[test]
    fn rows_of_a_batch_are_its_rows() {
        let device = Device::flex();
        let batch = batches(&table(10), WIDTHS, 10, BatchOrder::Sequential, &device).next().unwrap();
        let shard = batch.rows(3..7);
        assert_eq!(shard.size, 4);
        let dense = shard.features.dense.unwrap().into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(dense, vec![3.0, 4.0, 5.0, 6.0]);
        let ids = shard.features.categorical.unwrap().into_data().try_into_vec_as::<i64>().unwrap();
        assert_eq!(ids, vec![6, 7, 8, 9, 10, 11, 12, 13]);
        let labels = shard.labels.into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(labels, vec![1.0, 0.0, 1.0, 0.0]);
        assert!(shard.features.text.is_none() && shard.features.multi.is_none());
    }

    /// Absent labels (NaN) are counted per task as the batch is assembled; a batch with every
    /// label present carries no counts; a shard keeps the whole batch's counts and divides by its
    /// share of them: 3 of 4 rows labelled, a shard of 2 rows → denominator 3·2/4.
    #[test]
    fn labelled_rows_are_counted_and_shards_keep_them() {
        let device = Device::flex();
        let widths = RowWidths { tasks: 2, ..WIDTHS };
        let mut t = table(4);
        t.labels = vec![1.0, f32::NAN, 0.0, 1.0, 1.0, f32::NAN, 0.0, 0.5];
        let batch = batches(&t, widths, 4, BatchOrder::Sequential, &device).next().unwrap();
        let labelled = batch.labelled.clone().expect("absent labels are counted");
        assert_eq!(labelled, LabelledRows { per_task: vec![4, 2], batch_rows: 4 });
        assert_eq!((batch.task_rows(0), batch.task_rows(1)), (4, 2));
        assert_eq!(batch.task_present(2), vec![true, true]);
        assert_eq!((batch.loss_denominator(0), batch.loss_denominator(1)), (Some(4.0), Some(2.0)));
        let shard = batch.rows(2..4);
        assert_eq!(shard.labelled, Some(labelled));
        assert_eq!(shard.loss_denominator(1), Some(1.0));
        let only_first = batches(&t, widths, 1, BatchOrder::Sequential, &device).next().unwrap();
        assert_eq!(only_first.task_present(2), vec![true, false]);
        let full = batches(&table(4), WIDTHS, 4, BatchOrder::Sequential, &device).next().unwrap();
        assert!(full.labelled.is_none() && full.loss_denominator(0).is_none() && full.task_rows(0) == 4);
    }

    #[test]
    fn shuffled_batches_are_a_seeded_permutation_with_rows_kept_together() {
        let device = Device::flex();
        let t = table(50);
        let read = |seed| -> Vec<f32> {
            batches(&t, WIDTHS, 16, BatchOrder::Shuffled(seed), &device)
                .flat_map(|b| {
                    let d = b.features.dense.unwrap().into_data().try_into_vec::<f32>().unwrap();
                    let ids = b.features.categorical.unwrap().into_data().try_into_vec_as::<i64>().unwrap();
                    // each row's ids are (2r, 2r+1) for dense value r
                    for (k, r) in d.iter().enumerate() {
                        assert_eq!(ids[2 * k], 2 * *r as i64);
                        assert_eq!(ids[2 * k + 1], 2 * *r as i64 + 1);
                    }
                    d
                })
                .collect()
        };
        let a = read(7);
        assert_eq!(a, read(7));
        assert_ne!(a, read(8));
        let mut sorted = a.clone();
        sorted.sort_by(f32::total_cmp);
        assert_eq!(sorted, (0..50).map(|i| i as f32).collect::<Vec<_>>());
    }
}
