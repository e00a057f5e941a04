//! LayerNorm with a hand-written backward on flex: every BERT layer normalises twice, and a
//! fine-tuned encoder trains through all of them.
//!
//! burn 0.22's autodiff has no LayerNorm of its own: under autodiff `layer_norm` is the backend's
//! default, a chain of nine tracked tensor operations (mean, subtract, square, mean, add ε, square
//! root, divide, scale, shift), each a pass over the activations on one core with a buffer of its
//! own, and its backward about twice as many. Here the forward is flex's fused row kernel
//! (parallel over rows) and the backward one pass a row, split over rayon's threads, from the
//! input it keeps:
//!
//! ```text
//! x̂ = (x − μ)·r,  r = 1/√(σ² + ε),  g = dy·γ
//! dx = r·(g − mean(g) − x̂·mean(g·x̂)),  dγ = Σ_rows dy·x̂,  dβ = Σ_rows dy
//! ```
//!
//! The row statistics are recomputed in the backward (one more read of a row already in cache)
//! rather than kept. `dγ` and `dβ` are summed in fixed blocks of rows and the blocks added in
//! order, so the result does not depend on the number of threads. Other backends, other float
//! types, a LayerNorm without bias, and the switch off run burn's `LayerNorm::forward`.

use burn::{
    backend::{
        AutodiffBackend, Backend, DType, Dispatch, Flex,
        autodiff::{
            Autodiff,
            checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
            grads::Gradients,
            ops::{Backward, Ops, OpsKind},
        },
        backend_extension,
        flex::FlexTensor,
        ops::ModuleOps,
        tensor::FloatTensor,
    },
    nn::LayerNorm,
    tensor::Tensor,
};
use rayon::prelude::*;

use crate::{
    contiguous, f32_tensor, f32_values,
    simd::{ElementLoop, vectorized},
    use_fused,
};

/// Rows a rayon task of the backward takes (and a block of the `dγ`, `dβ` sums).
const ROWS_PER_TASK: usize = 32;

/// `norm` applied to `x` (normalising the last axis), with `epsilon` the module's ε (burn keeps
/// it private; the caller passes the value it configured the module with).
///
/// # Shapes
/// - x: `[..., d]`; output: the same
pub fn layer_norm<const D: usize>(norm: &LayerNorm, epsilon: f64, x: Tensor<D>) -> Tensor<D> {
    match &norm.beta {
        Some(beta) if use_fused(&x.device()) && x.dtype() == DType::F32 => {
            let shape = x.shape();
            let d = shape[D - 1];
            let rows = shape.num_elements() / d.max(1);
            let y = <Dispatch as LayerNormBackend>::fused_layer_norm(
                x.reshape([rows, d]).into_dispatch(),
                norm.gamma.val().into_dispatch(),
                beta.val().into_dispatch(),
                epsilon,
            );
            Tensor::<2>::from_dispatch(y).reshape(shape)
        }
        _ => norm.forward(x),
    }
}

/// The fused LayerNorm as a backend extension (flex, and autodiff over it).
#[backend_extension(Flex, Autodiff)]
pub trait LayerNormBackend: Backend {
    /// `(x − μ)/√(σ² + ε)·γ + β` over the rows of `x` `[N, d]`.
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self>;

    /// The gradients `(dx, dγ, dβ)` from the input `x`, `γ` and the output's gradient `dy`.
    fn fused_layer_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// `(μ, 1/√(σ² + ε))` of a row (σ² the biased variance, as LayerNorm's), two passes.
#[inline(always)]
fn row_statistics(x: &[f32], epsilon: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = lane_sum(x, x, x, |v, _, _| v) / n;
    let var = lane_sum(x, x, x, |v, _, _| (v - mean) * (v - mean)) / n;
    (mean, 1.0 / (var + epsilon).sqrt())
}

/// `Σ_i f(a[i], b[i], c[i])` with 16 independent partial sums (so that it vectorises), in a fixed
/// order.
#[inline(always)]
fn lane_sum(a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; 16];
    let (ca, cb, cc) = (a.chunks_exact(16), b.chunks_exact(16), c.chunks_exact(16));
    let tail: f32 =
        ca.remainder().iter().zip(cb.remainder()).zip(cc.remainder()).map(|((&x, &y), &z)| f(x, y, z)).sum();
    for ((x, y), z) in ca.zip(cb).zip(cc) {
        for i in 0..16 {
            lanes[i] += f(x[i], y[i], z[i]);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The backward over a block of rows: `dx` written, the block's `dγ`, `dβ` sums returned in
/// `dgamma`, `dbeta`.
struct BackwardRows<'a> {
    x: &'a [f32],
    dy: &'a [f32],
    gamma: &'a [f32],
    dx: &'a mut [f32],
    dgamma: &'a mut [f32],
    dbeta: &'a mut [f32],
    epsilon: f32,
}

impl ElementLoop for BackwardRows<'_> {
    #[inline(always)]
    fn run(self) {
        let Self { x, dy, gamma, dx, dgamma, dbeta, epsilon } = self;
        let d = gamma.len();
        let n = d as f32;
        for ((x, dy), dx) in x.chunks_exact(d).zip(dy.chunks_exact(d)).zip(dx.chunks_exact_mut(d)) {
            let (mean, rstd) = row_statistics(x, epsilon);
            let normalised = |v: f32| (v - mean) * rstd;
            let sum_g = lane_sum(dy, gamma, x, |g, w, _| g * w);
            let sum_gx = lane_sum(dy, gamma, x, |g, w, v| g * w * normalised(v));
            let (mean_g, mean_gx) = (sum_g / n, sum_gx / n);
            for ((((out, &v), &g), &w), (dw, db)) in
                dx.iter_mut().zip(x).zip(dy).zip(gamma).zip(dgamma.iter_mut().zip(dbeta.iter_mut()))
            {
                let xhat = normalised(v);
                *out = rstd * (g * w - mean_g - xhat * mean_gx);
                *dw += g * xhat;
                *db += g;
            }
        }
    }
}

impl LayerNormBackend for Flex {
    fn fused_layer_norm(x: FlexTensor, gamma: FlexTensor, beta: FlexTensor, epsilon: f64) -> FlexTensor {
        // flex's own kernel: one pass a row, rows split over rayon's threads
        <Flex as ModuleOps<Flex>>::layer_norm(x, gamma, Some(beta), epsilon)
    }

    fn fused_layer_norm_backward(
        x: FlexTensor,
        gamma: FlexTensor,
        dy: FlexTensor,
        epsilon: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        if [&x, &gamma, &dy].iter().any(|t| t.dtype() != DType::F32) {
            return backend_layer_norm_backward::<Flex>(x, gamma, dy, epsilon);
        }
        let (x, gamma, dy) = (contiguous(x), contiguous(gamma), contiguous(dy));
        let (xv, gv, dyv) = (f32_values(&x), f32_values(&gamma), f32_values(&dy));
        let d = gv.len();
        let rows = xv.len() / d.max(1);
        let block = ROWS_PER_TASK * d;
        let mut dx = vec![0.0f32; xv.len()];
        let blocks = rows.div_ceil(ROWS_PER_TASK);
        let mut partial = vec![0.0f32; blocks * 2 * d];
        (dx.par_chunks_mut(block.max(1)))
            .zip(xv.par_chunks(block.max(1)).zip(dyv.par_chunks(block.max(1))))
            .zip(partial.par_chunks_mut(2 * d.max(1)))
            .for_each(|((dx, (x, dy)), sums)| {
                let (dgamma, dbeta) = sums.split_at_mut(d);
                vectorized(BackwardRows { x, dy, gamma: gv, dx, dgamma, dbeta, epsilon: epsilon as f32 });
            });
        let (mut dgamma, mut dbeta) = (vec![0.0f32; d], vec![0.0f32; d]);
        for sums in partial.chunks_exact(2 * d.max(1)) {
            dgamma.iter_mut().zip(&sums[..d]).for_each(|(a, b)| *a += b);
            dbeta.iter_mut().zip(&sums[d..]).for_each(|(a, b)| *a += b);
        }
        (f32_tensor(dx, [rows, d]), f32_tensor(dgamma, [d]), f32_tensor(dbeta, [d]))
    }
}

/// The backward as plain backend operations (any float type).
fn backend_layer_norm_backward<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    dy: FloatTensor<B>,
    epsilon: f64,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    use burn::backend::TensorMetadata;
    let d = gamma.shape()[0];
    let mean = B::float_mean_dim(x.clone(), 1);
    let centered = B::float_sub(x, mean);
    let var = B::float_mean_dim(B::float_mul(centered.clone(), centered.clone()), 1);
    let rstd = B::float_recip(B::float_sqrt(B::float_add_scalar(var, epsilon.into())));
    let xhat = B::float_mul(centered, rstd.clone());
    let gamma_row = B::float_reshape(gamma, [1, d].into());
    let g = B::float_mul(dy.clone(), gamma_row);
    let mean_g = B::float_mean_dim(g.clone(), 1);
    let mean_gx = B::float_mean_dim(B::float_mul(g.clone(), xhat.clone()), 1);
    let inner = B::float_sub(B::float_sub(g, mean_g), B::float_mul(xhat.clone(), mean_gx));
    let dx = B::float_mul(inner, rstd);
    let dgamma = B::float_reshape(B::float_sum_dim(B::float_mul(dy.clone(), xhat), 0), [d].into());
    let dbeta = B::float_reshape(B::float_sum_dim(dy, 0), [d].into());
    (dx, dgamma, dbeta)
}

impl<B: LayerNormBackend, C: CheckpointStrategy> LayerNormBackend for Autodiff<B, C> {
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct FusedLayerNorm;

        impl<B: LayerNormBackend> Backward<B, 3> for FusedLayerNorm {
            type State = (FloatTensor<B>, FloatTensor<B>, f64);

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
                let (x, gamma, epsilon) = ops.state;
                let dy = grads.consume::<B>(&ops.node);
                let (dx, dgamma, dbeta) = B::fused_layer_norm_backward(x, gamma, dy, epsilon);
                let [node_x, node_gamma, node_beta] = ops.parents;
                for (node, grad) in [(node_x, dx), (node_gamma, dgamma), (node_beta, dbeta)] {
                    if let Some(node) = node {
                        grads.register::<B>(node.id, grad);
                    }
                }
            }
        }

        let nodes = [x.node(), gamma.node(), beta.node()];
        let (x, gamma, beta) = (x.into_primitive(), gamma.into_primitive(), beta.into_primitive());
        match FusedLayerNorm.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::fused_layer_norm(x.clone(), gamma.clone(), beta, epsilon);
                prep.finish((x, gamma, epsilon), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_layer_norm(x, gamma, beta, epsilon)),
        }
    }

    fn fused_layer_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // gradients are not differentiated (no double backward in burn 0.22)
        let (dx, dgamma, dbeta) =
            B::fused_layer_norm_backward(x.into_primitive(), gamma.into_primitive(), dy.into_primitive(), epsilon);
        (Self::from_inner(dx), Self::from_inner(dgamma), Self::from_inner(dbeta))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::{
        module::Param,
        nn::LayerNormConfig,
        tensor::{Device, Distribution},
    };

    fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    /// Values and the gradients of input, γ and β equal burn's LayerNorm (its chain of tracked
    /// operations) on flex with autodiff: a 3-d input, a strided one, rows of several blocks
    /// (77 rows of width 40, blocks of 32), γ and β away from 1 and 0.
    #[test]
    fn fused_layer_norm_equals_burns_forward_and_backward() {
        let device = Device::flex().autodiff();
        let epsilon = 1e-5;
        let mut norm = LayerNormConfig::new(40).with_epsilon(epsilon).init(&device);
        norm.gamma = Param::from_tensor(Tensor::random([40], Distribution::Uniform(0.5, 1.5), &device));
        norm.beta = Some(Param::from_tensor(Tensor::random([40], Distribution::Uniform(-0.5, 0.5), &device)));
        let x = Tensor::<3>::random([7, 11, 40], Distribution::Normal(0.3, 2.0), &device);
        let upstream = Tensor::<3>::random([7, 11, 40], Distribution::Normal(0.0, 1.0), &device);
        let run = |fused: bool, strided: bool| {
            let x = x.clone().require_grad();
            let xin = if strided { x.clone().swap_dims(0, 1).swap_dims(0, 1) } else { x.clone() };
            let y = if fused { layer_norm(&norm, epsilon, xin) } else { norm.forward(xin) };
            let grads = (y.clone() * upstream.clone()).sum().backward();
            let beta = norm.beta.as_ref().unwrap();
            (
                to_vec(y),
                to_vec(x.grad(&grads).unwrap()),
                to_vec(norm.gamma.grad(&grads).unwrap()),
                to_vec(beta.grad(&grads).unwrap()),
            )
        };
        let plain = run(false, false);
        for strided in [false, true] {
            let fused = run(true, strided);
            let close = |a: &[f32], b: &[f32], what: &str| {
                assert_eq!(a.len(), b.len());
                let worst = a.iter().zip(b).map(|(p, q)| (p - q).abs() / q.abs().max(1.0)).fold(0.0f32, f32::max);
                assert!(worst < 2e-5, "{what} (strided {strided}): worst {worst}");
            };
            close(&fused.0, &plain.0, "y");
            close(&fused.1, &plain.1, "dx");
            close(&fused.2, &plain.2, "dγ");
            close(&fused.3, &plain.3, "dβ");
        }
    }

    /// The gradients by hand for one row: `x = (1, 2, 3, 6)`, γ = (1, 2, 1, 1), `dy = e₀`: with
    /// μ = 3, σ² = 3.5, r = 1/√3.5, x̂ = (−2, −1, 0, 3)·r, dβ = dy, dγ = dy·x̂, and
    /// dx = r·(g − mean(g) − x̂·mean(g·x̂)) with g = (1, 0, 0, 0).
    #[test]
    fn the_backward_by_hand() {
        let x = f32_tensor(vec![1.0, 2.0, 3.0, 6.0], [1, 4]);
        let gamma = f32_tensor(vec![1.0, 2.0, 1.0, 1.0], [4]);
        let dy = f32_tensor(vec![1.0, 0.0, 0.0, 0.0], [1, 4]);
        let (dx, dgamma, dbeta) = <Flex as LayerNormBackend>::fused_layer_norm_backward(x, gamma, dy, 0.0);
        let values = |t: FlexTensor| f32_values(&contiguous(t)).to_vec();
        let r = 1.0 / 3.5f64.sqrt();
        let xhat = [-2.0 * r, -r, 0.0, 3.0 * r];
        let (mean_g, mean_gx) = (0.25, xhat[0] / 4.0);
        let expected: Vec<f64> = (0..4).map(|i| r * (f64::from(i == 0) - mean_g - xhat[i] * mean_gx)).collect();
        for (got, want) in values(dx).iter().zip(&expected) {
            assert!((f64::from(*got) - want).abs() < 1e-6, "dx {got} vs {want}");
        }
        let dgamma = values(dgamma);
        assert!((f64::from(dgamma[0]) - xhat[0]).abs() < 1e-6 && dgamma[1..].iter().all(|&v| v == 0.0));
        assert_eq!(values(dbeta), vec![1.0, 0.0, 0.0, 0.0]);
    }
}
