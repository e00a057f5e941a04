//! The attention weights of a trained encoder, `softmax(scale·QKᵀ + key bias)`, as one operation
//! with a hand-written backward on flex.
//!
//! Under autodiff burn 0.22 computes attention as its fallback chain: scale, mask fill, max,
//! clamp, subtract, `exp` (libm's, a call per element), sum, clamp, divide — each a tracked pass
//! over `[B, heads, L, L]` on one core, and a backward for each. Here the forward is one pass a
//! row (the vectorised `exp` of [`crate::exp`]) and the backward one pass a row,
//! `dS = scale·P ⊙ (dP − rowsum(dP ⊙ P))`, from the weights `P` it keeps; rows are split over
//! rayon's threads. The two matrix products around it stay burn's here; [`crate::masked_attention`]
//! runs these rows between its own products (the encoder's training path). A row whose keys are all
//! masked gets zero weights (as burn's fallback attention gives). Other backends, other float
//! types and the switch off run the plain operations ([`plain_masked_softmax`]).

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
        tensor::FloatTensor,
    },
    tensor::{Shape, Tensor, activation::softmax},
};
use rayon::prelude::*;

use crate::{
    contiguous,
    exp::exp_nonpositive,
    f32_values,
    simd::{ElementLoop, dot, vectorized},
    use_fused, whole,
};

/// Rows a rayon task takes.
const ROWS_PER_TASK: usize = 64;

/// Attention weights: `softmax(scale·scores + key_bias)` over the last axis, the bias of batch
/// row `b` added to every head's and query's scores (0 for a key that counts, −∞ for padding).
///
/// # Shapes
/// - scores: `[B, heads, L_q, L_k]`, key_bias: `[B, L_k]`
/// - output: `[B, heads, L_q, L_k]`
pub fn masked_softmax(scores: Tensor<4>, key_bias: Tensor<2>, scale: f64) -> Tensor<4> {
    if use_fused(&scores.device()) && scores.dtype() == DType::F32 && key_bias.dtype() == DType::F32 {
        let shape = scores.dims();
        let [b, h, q, k] = shape;
        let out = <Dispatch as MaskedSoftmaxBackend>::masked_softmax(
            scores.reshape([b * h * q, k]).into_dispatch(),
            key_bias.into_dispatch(),
            scale,
        );
        Tensor::<2>::from_dispatch(out).reshape(shape)
    } else {
        plain_masked_softmax(scores, key_bias, scale)
    }
}

/// The same as burn operations: scale, add the broadcast bias, softmax (a row whose keys are all
/// masked is NaN here, as `softmax` of −∞ everywhere is).
pub fn plain_masked_softmax(scores: Tensor<4>, key_bias: Tensor<2>, scale: f64) -> Tensor<4> {
    let [b, k] = key_bias.dims();
    softmax(scores.mul_scalar(scale) + key_bias.reshape([b, 1, 1, k]), 3)
}

/// The fused attention weights as a backend extension (flex, and autodiff over it).
#[backend_extension(Flex, Autodiff)]
pub trait MaskedSoftmaxBackend: Backend {
    /// Rows of `scores` `[B·heads·L_q, L_k]` → `softmax(scale·row + bias[b])`, `bias` `[B, L_k]`.
    fn masked_softmax(scores: FloatTensor<Self>, bias: FloatTensor<Self>, scale: f64) -> FloatTensor<Self>;

    /// The scores' gradient from the weights `p` and their gradient `dp`:
    /// `scale·p ⊙ (dp − rowsum(dp ⊙ p))`.
    fn masked_softmax_backward(p: FloatTensor<Self>, dp: FloatTensor<Self>, scale: f64) -> FloatTensor<Self>;
}

/// The forward over a block of rows of width `k`, in place (scores in, weights out), `first` the
/// index of its first row among `rows_per_batch` rows a batch row (`bias` holds `k` values a batch
/// row).
pub(crate) struct SoftmaxRows<'a> {
    pub(crate) rows: &'a mut [f32],
    pub(crate) bias: &'a [f32],
    pub(crate) first: usize,
    pub(crate) rows_per_batch: usize,
    pub(crate) k: usize,
    pub(crate) scale: f32,
}

impl ElementLoop for SoftmaxRows<'_> {
    #[inline(always)]
    fn run(self) {
        let Self { rows, bias, first, rows_per_batch, k, scale } = self;
        for (i, y) in rows.chunks_exact_mut(k).enumerate() {
            let b = (first + i) / rows_per_batch;
            let bias = &bias[b * k..][..k];
            for (t, &c) in y.iter_mut().zip(bias) {
                *t = scale * *t + c;
            }
            let max = lane_max(y);
            if max == f32::NEG_INFINITY {
                y.fill(0.0); // every key masked
                continue;
            }
            for t in y.iter_mut() {
                *t = if *t == f32::NEG_INFINITY { 0.0 } else { exp_nonpositive(*t - max) };
            }
            let inv = 1.0 / lane_sum(y);
            y.iter_mut().for_each(|t| *t *= inv);
        }
    }
}

/// The largest value, with 16 independent lanes (so that it vectorises).
#[inline(always)]
fn lane_max(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = values.chunks_exact(16);
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for c in chunks {
        for i in 0..16 {
            lanes[i] = lanes[i].max(c[i]);
        }
    }
    lanes.iter().fold(tail, |m, &v| m.max(v))
}

/// The sum, with 16 independent lanes (so that it vectorises).
#[inline(always)]
fn lane_sum(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let chunks = values.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for i in 0..16 {
            lanes[i] += c[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The backward over a block of rows, in place on `dp`.
pub(crate) struct SoftmaxBackwardRows<'a> {
    pub(crate) p: &'a [f32],
    pub(crate) dp: &'a mut [f32],
    pub(crate) k: usize,
    pub(crate) scale: f32,
}

impl ElementLoop for SoftmaxBackwardRows<'_> {
    #[inline(always)]
    fn run(self) {
        let Self { p, dp, k, scale } = self;
        for (p, g) in p.chunks_exact(k).zip(dp.chunks_exact_mut(k)) {
            let inner = dot(p, g);
            for (g, &w) in g.iter_mut().zip(p) {
                *g = scale * w * (*g - inner);
            }
        }
    }
}

impl MaskedSoftmaxBackend for Flex {
    fn masked_softmax(scores: FlexTensor, bias: FlexTensor, scale: f64) -> FlexTensor {
        if scores.dtype() != DType::F32 || bias.dtype() != DType::F32 {
            return backend_masked_softmax::<Flex>(scores, bias, scale);
        }
        // the scores become the weights, in place (copied first only if shared)
        let (mut y, bias) = (whole(scores), contiguous(bias));
        let (rows, k) = (y.layout().shape()[0], y.layout().shape()[1]);
        let rows_per_batch = rows / bias.layout().shape()[0].max(1);
        let bv = f32_values(&bias);
        let block = (ROWS_PER_TASK * k).max(1);
        y.storage_mut::<f32>().par_chunks_mut(block).enumerate().for_each(|(i, rows)| {
            let first = i * ROWS_PER_TASK;
            vectorized(SoftmaxRows { rows, bias: bv, first, rows_per_batch, k, scale: scale as f32 })
        });
        y
    }

    fn masked_softmax_backward(p: FlexTensor, dp: FlexTensor, scale: f64) -> FlexTensor {
        if p.dtype() != DType::F32 || dp.dtype() != DType::F32 {
            return backend_masked_softmax_backward::<Flex>(p, dp, scale);
        }
        // the weights' gradient becomes the scores', in place (copied first only if shared)
        let (p, mut g) = (contiguous(p), whole(dp));
        let k = p.layout().shape()[1];
        let block = (ROWS_PER_TASK * k).max(1);
        (g.storage_mut::<f32>().par_chunks_mut(block))
            .zip(f32_values(&p).par_chunks(block))
            .for_each(|(dp, p)| vectorized(SoftmaxBackwardRows { p, dp, k, scale: scale as f32 }));
        g
    }
}

/// The forward as plain backend operations (any float type).
pub(crate) fn backend_masked_softmax<B: Backend>(
    scores: FloatTensor<B>,
    bias: FloatTensor<B>,
    scale: f64,
) -> FloatTensor<B> {
    let (rows, k) = (scores.shape()[0], scores.shape()[1]);
    let batches = bias.shape()[0];
    let scores = B::float_reshape(B::float_mul_scalar(scores, scale.into()), Shape::new([batches, rows / batches, k]));
    let shifted = B::float_add(scores, B::float_reshape(bias, Shape::new([batches, 1, k])));
    B::float_reshape(B::softmax(shifted, 2), Shape::new([rows, k]))
}

/// The backward as plain backend operations.
pub(crate) fn backend_masked_softmax_backward<B: Backend>(
    p: FloatTensor<B>,
    dp: FloatTensor<B>,
    scale: f64,
) -> FloatTensor<B> {
    let inner = B::float_sum_dim(B::float_mul(p.clone(), dp.clone()), 1);
    B::float_mul_scalar(B::float_mul(p, B::float_sub(dp, inner)), scale.into())
}

impl<B: MaskedSoftmaxBackend, C: CheckpointStrategy> MaskedSoftmaxBackend for Autodiff<B, C> {
    fn masked_softmax(scores: FloatTensor<Self>, bias: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct MaskedSoftmax;

        impl<B: MaskedSoftmaxBackend> Backward<B, 1> for MaskedSoftmax {
            type State = (FloatTensor<B>, f64);

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
                let (p, scale) = ops.state;
                let dp = grads.consume::<B>(&ops.node);
                let [parent] = ops.parents;
                if let Some(node) = parent {
                    grads.register::<B>(node.id, B::masked_softmax_backward(p, dp, scale));
                }
            }
        }

        // the bias is a constant of the batch (its padding): no gradient flows to it
        let nodes = [scores.node()];
        let (scores, bias) = (scores.into_primitive(), bias.into_primitive());
        match MaskedSoftmax.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let p = B::masked_softmax(scores, bias, scale);
                prep.finish((p.clone(), scale), p)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::masked_softmax(scores, bias, scale)),
        }
    }

    fn masked_softmax_backward(p: FloatTensor<Self>, dp: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
        // gradients are not differentiated (no double backward in burn 0.22)
        Self::from_inner(B::masked_softmax_backward(p.into_primitive(), dp.into_primitive(), scale))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    /// Weights and the scores' gradient equal the plain operations' (burn's softmax) on flex with
    /// autodiff: 3 batch rows with different padding, 4 heads, 5 queries, 37 keys (rows of several
    /// blocks, a row width that is no multiple of 16); padded keys get exactly 0.
    #[test]
    fn fused_weights_equal_the_plain_operations_forward_and_backward() {
        let device = Device::flex().autodiff();
        let (b, h, q, k) = (3, 4, 5, 37);
        let scores = Tensor::<4>::random([b, h, q, k], Distribution::Normal(0.0, 3.0), &device);
        let upstream = Tensor::<4>::random([b, h, q, k], Distribution::Normal(0.0, 1.0), &device);
        let lengths = [37, 20, 1];
        let bias: Vec<f32> =
            lengths.iter().flat_map(|&n| (0..k).map(move |j| if j < n { 0.0 } else { f32::NEG_INFINITY })).collect();
        let bias = Tensor::<1>::from_floats(bias.as_slice(), &device).reshape([b, k]);
        let scale = 0.17;
        let run = |fused: bool| {
            let s = scores.clone().require_grad();
            let p = if fused {
                masked_softmax(s.clone(), bias.clone(), scale)
            } else {
                plain_masked_softmax(s.clone(), bias.clone(), scale)
            };
            let grads = (p.clone() * upstream.clone()).sum().backward();
            (to_vec(p), to_vec(s.grad(&grads).unwrap()))
        };
        let (plain_p, plain_ds) = run(false);
        let (p, ds) = run(true);
        for (i, ((a, b), (c, d))) in p.iter().zip(&plain_p).zip(ds.iter().zip(&plain_ds)).enumerate() {
            assert!((a - b).abs() < 1e-6, "weight {i}: {a} vs {b}");
            assert!((c - d).abs() < 1e-5, "score gradient {i}: {c} vs {d}");
            let (batch, key) = (i / (h * q * k), i % k);
            if key >= lengths[batch] {
                assert_eq!((*a, *c), (0.0, 0.0), "padded key {key} of batch row {batch}");
            }
        }
        for row in p.chunks_exact(k) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }

    /// A row whose keys are all masked gets zero weights and a zero gradient (no NaN).
    #[test]
    fn a_fully_masked_row_gets_zero_weights() {
        let device = Device::flex().autodiff();
        let scores = Tensor::<4>::random([1, 2, 3, 4], Distribution::Default, &device).require_grad();
        let bias = Tensor::<2>::full([1, 4], f32::NEG_INFINITY, &device);
        let p = masked_softmax(scores.clone(), bias, 1.0);
        let grads = p.clone().sum().backward();
        assert!(to_vec(p).iter().all(|&v| v == 0.0));
        assert!(to_vec(scores.grad(&grads).unwrap()).iter().all(|&v| v == 0.0));
    }
}
