//! Batches of an [`EncodedTable`] as tensors on a device, in sequential or seeded-shuffled order.

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};

use crate::EncodedTable;

/// One batch of examples.
#[derive(Debug, Clone)]
pub struct MtlBatch {
    /// Categorical ids per field, `[B, F]`; `None` when the dataset has no categorical field.
    pub categorical: Option<Tensor<2, Int>>,
    /// Dense features, `[B, D]`; `None` when the dataset has no dense feature.
    pub dense: Option<Tensor<2>>,
    /// Labels, `[B, T]`: column `t` belongs to task `t`.
    pub labels: Tensor<2>,
    /// Number of examples `B`.
    pub size: usize,
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
/// `n_cat`, `n_dense` and `n_tasks` are the row widths of the table's three arrays.
pub fn batches<'a>(
    table: &'a EncodedTable,
    widths: (usize, usize, usize),
    batch_size: usize,
    order: BatchOrder,
    device: &'a Device,
) -> impl Iterator<Item = MtlBatch> + 'a {
    assert!(batch_size > 0, "batch_size must be positive");
    let mut rows: Vec<u32> = (0..table.n_rows as u32).collect();
    if let BatchOrder::Shuffled(seed) = order {
        rows.shuffle(&mut StdRng::seed_from_u64(seed));
    }
    let (n_cat, n_dense, n_tasks) = widths;
    let mut cat = Vec::with_capacity(batch_size * n_cat);
    let mut dense = Vec::with_capacity(batch_size * n_dense);
    let mut labels = Vec::with_capacity(batch_size * n_tasks);
    (0..table.n_rows.div_ceil(batch_size)).map(move |b| {
        let chunk = &rows[b * batch_size..((b + 1) * batch_size).min(rows.len())];
        cat.clear();
        dense.clear();
        labels.clear();
        for &r in chunk {
            let r = r as usize;
            cat.extend(table.categorical[r * n_cat..(r + 1) * n_cat].iter().map(|&id| id as i32));
            dense.extend_from_slice(&table.dense[r * n_dense..(r + 1) * n_dense]);
            labels.extend_from_slice(&table.labels[r * n_tasks..(r + 1) * n_tasks]);
        }
        let size = chunk.len();
        MtlBatch {
            categorical: (n_cat > 0).then(|| Tensor::from_data(TensorData::new(cat.clone(), [size, n_cat]), device)),
            dense: (n_dense > 0).then(|| Tensor::from_data(TensorData::new(dense.clone(), [size, n_dense]), device)),
            labels: Tensor::from_data(TensorData::new(labels.clone(), [size, n_tasks]), device),
            size,
        }
    })
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
        }
    }

    #[test]
    fn sequential_batches_cover_rows_in_order() {
        let device = Device::flex();
        let t = table(10);
        let got: Vec<MtlBatch> = batches(&t, (2, 1, 1), 4, BatchOrder::Sequential, &device).collect();
        assert_eq!(got.iter().map(|b| b.size).collect::<Vec<_>>(), vec![4, 4, 2]);
        let dense: Vec<f32> =
            got.iter().flat_map(|b| b.dense.clone().unwrap().into_data().try_into_vec::<f32>().unwrap()).collect();
        assert_eq!(dense, (0..10).map(|i| i as f32).collect::<Vec<_>>());
        let ids = got[2].categorical.clone().unwrap().into_data().try_into_vec_as::<i64>().unwrap();
        assert_eq!(ids, vec![16, 17, 18, 19]);
    }

    #[test]
    fn shuffled_batches_are_a_seeded_permutation_with_rows_kept_together() {
        let device = Device::flex();
        let t = table(50);
        let read = |seed| -> Vec<f32> {
            batches(&t, (2, 1, 1), 16, BatchOrder::Shuffled(seed), &device)
                .flat_map(|b| {
                    let d = b.dense.unwrap().into_data().try_into_vec::<f32>().unwrap();
                    let ids = b.categorical.unwrap().into_data().try_into_vec_as::<i64>().unwrap();
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
