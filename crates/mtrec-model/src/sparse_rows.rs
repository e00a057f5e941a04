//! Row-sparse embedding tables: a training step touches only the rows its batch reads.
//!
//! burn's embedding backward produces a dense `[V, D]` gradient (zero-filled, then rows added),
//! and Adam then updates every row of every table: a step costs time in proportion to the
//! vocabulary, not the batch. A table marked sparse stays a parameter of the module (so records,
//! checkpoints, `valid()` and evaluation treat it as any other) but never enters the autodiff
//! graph: a training forward gathers the batch's *unique* rows into a leaf `[U, D]` that requires
//! gradients, looks the batch up in that leaf, and reports it as a [`SparseRows`]. After the
//! backward pass the leaf's gradient is the table's gradient restricted to those rows, and a
//! row-wise optimizer (mtrec-train's `SparseRowOptimizer`: lazy Adam, Adagrad, row-wise Adagrad,
//! SGD) updates those rows of the table in place. The dense optimizer never sees the table (it
//! has no gradient in the graph).
//!
//! Off autodiff (evaluation) the lookup reads the table directly: the same values.

use burn::{
    module::{Param, ParamId},
    tensor::{Int, Tensor, TensorData},
};

/// The rows of a sparse table one forward pass read.
#[derive(Debug, Clone)]
pub struct SparseRows {
    /// The table's parameter id.
    pub table: ParamId,
    /// The rows read, ascending, each once.
    pub ids: Vec<i64>,
    /// Their values when read: a leaf that requires gradients, `[ids.len(), D]`.
    pub rows: Tensor<2>,
}

/// `ids` sorted and deduplicated, and each id's position in that list.
fn unique_ids(ids: &[i64]) -> (Vec<i64>, Vec<i64>) {
    let mut unique = ids.to_vec();
    unique.sort_unstable();
    unique.dedup();
    let positions = ids.iter().map(|id| unique.binary_search(id).expect("an id of the list") as i64).collect();
    (unique, positions)
}

/// Looks `ids` up in a sparse `table`: `[B, F]` ids → `[B, F, D]` rows, and on an autodiff device
/// the [`SparseRows`] leaf the result was read from.
///
/// Ids outside the table are an error naming the id (a panic, as burn's lookup).
///
/// # Shapes
/// - table: `[V, D]`; ids: `[B, F]`; output: `[B, F, D]`
pub fn sparse_lookup(table: &Param<Tensor<2>>, ids: Tensor<2, Int>) -> (Tensor<3>, Option<SparseRows>) {
    let weight = table.val();
    // off autodiff (evaluation) or frozen (`no_grad`): a plain lookup, nothing to update
    if !weight.device().is_autodiff() || !weight.is_require_grad() {
        return (mtrec_kernels::weight_rows(weight, ids), None);
    }
    let device = ids.device();
    let [batch, fields] = ids.dims();
    let vocab = weight.dims()[0];
    let host: Vec<i64> = ids.into_data().convert::<i64>().try_into_vec::<i64>().expect("int ids");
    if let Some(bad) = host.iter().find(|&&i| i < 0 || i as usize >= vocab) {
        panic!("embedding id {bad} is outside the table of {vocab} rows");
    }
    let (unique, positions) = unique_ids(&host);
    let n = unique.len();
    let index = Tensor::<1, Int>::from_data(TensorData::new(unique.clone(), [n]), &device);
    let rows = weight.detach().select(0, index).detach().require_grad();
    let positions = Tensor::<2, Int>::from_data(TensorData::new(positions, [batch, fields]), &device);
    let looked_up = mtrec_kernels::weight_rows(rows.clone(), positions);
    (looked_up, Some(SparseRows { table: table.id, ids: unique, rows }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    #[test]
    fn unique_ids_map_every_id_to_its_row() {
        let (unique, positions) = unique_ids(&[7, 3, 7, 0, 3]);
        assert_eq!(unique, vec![0, 3, 7]);
        assert_eq!(positions, vec![2, 1, 2, 0, 1]);
    }

    /// The sparse lookup reads the same values as the table, its leaf holds the batch's rows once
    /// each, and a backward through it gives the leaf the table gradient's rows (repeated ids add).
    #[test]
    fn sparse_lookup_reads_the_table_and_collects_row_gradients() {
        let device = Device::flex().autodiff();
        let table = Param::from_tensor(Tensor::<2>::random([6, 3], Distribution::Default, &device));
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![4i64, 1, 4, 5], [2, 2]), &device);
        let (out, rows) = sparse_lookup(&table, ids.clone());
        let dense = burn::tensor::module::embedding(table.val(), ids);
        let (a, b) = (out.clone().into_data(), dense.clone().into_data());
        a.assert_eq(&b, true);
        let rows = rows.expect("a leaf on autodiff");
        assert_eq!(rows.ids, vec![1, 4, 5]);
        let weights: Vec<f32> = (0..12).map(|k| k as f32).collect();
        let w = Tensor::<3>::from_data(TensorData::new(weights, [2, 2, 3]), &device);
        let grads = (out * w.clone()).sum().backward();
        let g: Vec<f32> = rows.rows.grad(&grads).unwrap().into_data().try_into_vec::<f32>().unwrap();
        // id 4 at positions 0 and 2 (weights 0..3 and 6..9), id 1 at 1 (3..6), id 5 at 3 (9..12)
        assert_eq!(g, vec![3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 9.0, 10.0, 11.0]);
        assert!(table.val().grad(&grads).is_none(), "the table stays out of the graph");
        let inner = Param::from_tensor(table.val().inner());
        let (_, none) = sparse_lookup(&inner, Tensor::<2, Int>::zeros([1, 1], &device.clone().without_autodiff()));
        assert!(none.is_none(), "no leaf off autodiff");
        let frozen = Param::from_tensor(table.val().detach()).set_require_grad(false);
        let (_, none) = sparse_lookup(&frozen, Tensor::<2, Int>::zeros([1, 1], &device));
        assert!(none.is_none(), "no leaf for a frozen table");
    }
}
