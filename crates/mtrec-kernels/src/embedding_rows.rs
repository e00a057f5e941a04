//! An embedding lookup with a hand-written backward: `y[i] = W[ids[i]]`, and the table's gradient
//! `dW[r] = Σ_{i: ids[i] = r} dy[i]`.
//!
//! burn's flex embedding backward zero-fills the `[V, D]` gradient and then scatter-adds through a
//! generic strided `select_assign`; here the gradient rows are added with one vectorised loop a
//! row. The forward copies each row with `copy_from_slice`. Other backends (and the switch off) use
//! burn's `Embedding`.

use burn::{
    backend::{
        AutodiffBackend, Backend, DType, Dispatch, Flex, TensorMetadata,
        autodiff::{
            Autodiff,
            checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
            grads::Gradients,
            ops::{Backward, Ops, OpsKind},
        },
        backend_extension,
        flex::FlexTensor,
        ops::{FloatTensorOps, IntTensorOps},
        tensor::{FloatTensor, IntTensor},
    },
    nn::Embedding,
    tensor::{Int, Shape, Tensor},
};

use crate::{
    contiguous, f32_tensor, f32_values,
    simd::{ElementLoop, vectorized},
    use_fused,
};

/// The rows of `table`'s weight at `ids`: `[B, F]` ids → `[B, F, D]` (see [`weight_rows`]).
///
/// # Shapes
/// - ids: `[B, F]`; output: `[B, F, D]`
pub fn embedding_rows(table: &Embedding, ids: Tensor<2, Int>) -> Tensor<3> {
    weight_rows(table.weight.val(), ids)
}

/// The rows of `weight` at `ids`: `[B, F]` ids → `[B, F, D]`.
///
/// The fused lookup on flex (ids must lie in the table: out-of-range ids panic, naming the id, as
/// burn's lookup does); burn's `embedding` elsewhere. `weight` may be a parameter or any tensor
/// (a leaf of gathered rows, for row-sparse tables).
///
/// # Shapes
/// - weight: `[V, D]`; ids: `[B, F]`; output: `[B, F, D]`
pub fn weight_rows(weight: Tensor<2>, ids: Tensor<2, Int>) -> Tensor<3> {
    if use_fused(&weight.device()) && weight.dtype() == DType::F32 {
        let [b, f] = ids.dims();
        let d = weight.dims()[1];
        let out = <Dispatch as EmbeddingRowsBackend>::embedding_rows(weight.into_dispatch(), ids.into_dispatch());
        Tensor::<2>::from_dispatch(out).reshape([b, f, d])
    } else {
        burn::tensor::module::embedding(weight, ids)
    }
}

/// Embedding lookup as a backend extension (flex, and autodiff over it).
#[backend_extension(Flex, Autodiff)]
pub trait EmbeddingRowsBackend: Backend {
    /// Rows of `weight` `[V, D]` at `ids` (any shape, `N` ids) → `[N, D]`.
    fn embedding_rows(weight: FloatTensor<Self>, ids: IntTensor<Self>) -> FloatTensor<Self>;

    /// The gradient `[V, D]` of the table from the ids and the rows' gradient `dy` `[N, D]`.
    fn embedding_rows_backward(ids: IntTensor<Self>, dy: FloatTensor<Self>, vocab: usize) -> FloatTensor<Self>;
}

/// The ids as `usize`, checked against the vocabulary.
fn row_ids(ids: &FlexTensor, vocab: usize) -> Vec<usize> {
    let ids = contiguous(ids.clone());
    let n = ids.layout().num_elements();
    let start = ids.layout().start_offset();
    let out: Vec<usize> = match ids.dtype() {
        DType::I64 => ids.storage::<i64>()[start..start + n].iter().map(|&i| i as usize).collect(),
        DType::I32 => ids.storage::<i32>()[start..start + n].iter().map(|&i| i as usize).collect(),
        other => panic!("embedding ids must be i32 or i64, not {other:?}"),
    };
    if let Some(bad) = out.iter().find(|&&i| i >= vocab) {
        panic!("embedding id {bad} is outside the table of {vocab} rows");
    }
    out
}

/// `out[i] = table[rows[i]]` for rows of a width known at compile time: each row one register
/// move instead of a `memcpy` call.
fn gather_rows<const D: usize>(out: &mut [f32], table: &[f32], rows: &[usize]) {
    for (dst, &r) in out.chunks_exact_mut(D).zip(rows) {
        let src: &[f32; D] = table[r * D..(r + 1) * D].try_into().expect("a row of D values");
        let dst: &mut [f32; D] = dst.try_into().expect("a row of D values");
        *dst = *src;
    }
}

/// `dW[ids[i]] += dy[i]` for every row `i`.
struct ScatterAddRows<'a> {
    grad: &'a mut [f32],
    ids: &'a [usize],
    dy: &'a [f32],
    d: usize,
}

impl ElementLoop for ScatterAddRows<'_> {
    #[inline(always)]
    fn run(self) {
        let d = self.d;
        for (&r, row) in self.ids.iter().zip(self.dy.chunks_exact(d)) {
            for (acc, &g) in self.grad[r * d..(r + 1) * d].iter_mut().zip(row) {
                *acc += g;
            }
        }
    }
}

impl EmbeddingRowsBackend for Flex {
    fn embedding_rows(weight: FlexTensor, ids: FlexTensor) -> FlexTensor {
        let n = ids.layout().num_elements();
        if weight.dtype() != DType::F32 || weight.layout().num_dims() != 2 {
            let ids = Flex::int_reshape(ids, Shape::new([n]));
            return Flex::float_select(weight, 0, ids);
        }
        let weight = contiguous(weight);
        let [vocab, d] = [weight.layout().shape()[0], weight.layout().shape()[1]];
        let table = f32_values(&weight);
        let rows = row_ids(&ids, vocab);
        let mut y = vec![0.0f32; n * d];
        match d {
            4 => gather_rows::<4>(&mut y, table, &rows),
            8 => gather_rows::<8>(&mut y, table, &rows),
            16 => gather_rows::<16>(&mut y, table, &rows),
            32 => gather_rows::<32>(&mut y, table, &rows),
            _ => y.chunks_exact_mut(d).zip(&rows).for_each(|(out, &r)| out.copy_from_slice(&table[r * d..(r + 1) * d])),
        }
        f32_tensor(y, [n, d])
    }

    fn embedding_rows_backward(ids: FlexTensor, dy: FlexTensor, vocab: usize) -> FlexTensor {
        let dy = contiguous(dy);
        let d = dy.layout().shape()[1];
        let rows = row_ids(&ids, vocab);
        let dyv = f32_values(&dy);
        let mut grad = vec![0.0f32; vocab * d];
        vectorized(ScatterAddRows { grad: &mut grad, ids: &rows, dy: dyv, d });
        f32_tensor(grad, [vocab, d])
    }
}

impl<B: EmbeddingRowsBackend, C: CheckpointStrategy> EmbeddingRowsBackend for Autodiff<B, C> {
    fn embedding_rows(weight: FloatTensor<Self>, ids: IntTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct EmbeddingRows;

        impl<B: EmbeddingRowsBackend> Backward<B, 1> for EmbeddingRows {
            type State = (IntTensor<B>, usize);

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
                let (ids, vocab) = ops.state;
                let dy = grads.consume::<B>(&ops.node);
                let [node] = ops.parents;
                if let Some(node) = node {
                    grads.register::<B>(node.id, B::embedding_rows_backward(ids, dy, vocab));
                }
            }
        }

        let vocab = weight.shape()[0];
        let nodes = [weight.node()];
        let weight = weight.into_primitive();
        match EmbeddingRows.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::embedding_rows(weight, ids.clone());
                prep.finish((ids, vocab), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::embedding_rows(weight, ids)),
        }
    }

    fn embedding_rows_backward(ids: IntTensor<Self>, dy: FloatTensor<Self>, vocab: usize) -> FloatTensor<Self> {
        // Gradients themselves are not differentiated (no double backward in burn 0.22).
        Self::from_inner(B::embedding_rows_backward(ids, dy.into_primitive(), vocab))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::{
        nn::EmbeddingConfig,
        tensor::{Device, Distribution, TensorData},
    };

    fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    /// Rows and the table's gradient (repeated ids accumulate) of the fused lookup vs burn's
    /// `Embedding`, on flex with autodiff, with i32 and i64 ids.
    #[test]
    fn fused_embedding_equals_burns_embedding() {
        let device = Device::flex().autodiff();
        let table = EmbeddingConfig::new(50, 4).init(&device);
        let ids: Vec<i64> = (0..64 * 3).map(|i| (i * 7 % 50) as i64 % 13).collect();
        for int_dtype in [DType::I64, DType::I32] {
            let ids =
                Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [64, 3]).convert_dtype(int_dtype), &device);
            let upstream = Tensor::<3>::random([64, 3, 4], Distribution::Normal(0.0, 1.0), &device);
            let run = |fused: bool| {
                let rows = if fused {
                    let weight = table.weight.val();
                    let out = <Dispatch as EmbeddingRowsBackend>::embedding_rows(
                        weight.into_dispatch(),
                        ids.clone().into_dispatch(),
                    );
                    Tensor::<2>::from_dispatch(out).reshape([64, 3, 4])
                } else {
                    table.forward(ids.clone())
                };
                let grads = (rows.clone() * upstream.clone()).sum().backward();
                (to_vec(rows), to_vec(table.weight.grad(&grads).unwrap()))
            };
            let (fused, plain) = (run(true), run(false));
            assert_eq!(fused.0, plain.0, "rows ({int_dtype:?})");
            assert!(plain.1.iter().filter(|g| **g != 0.0).count() == 13 * 4, "13 rows have a gradient");
            for (i, (a, b)) in fused.1.iter().zip(&plain.1).enumerate() {
                assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "dW[{i}] ({int_dtype:?}): fused {a} vs burn {b}");
            }
        }
    }
}
