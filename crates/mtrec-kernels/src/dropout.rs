//! Dropout as one vectorised pass on flex, forward and backward, with the mask recomputed from a
//! seed instead of drawn and stored.
//!
//! burn's `Dropout` draws a Bernoulli tensor from the backend's generator (on flex one element at
//! a time), multiplies, and scales: three passes and two allocations, and the backward multiplies
//! by the stored mask again — a census MMoE step with dropout 0.3 took ×1.78 the time of the step
//! without it. Here each call draws one 64-bit seed from the backend's generator (so a seeded run,
//! and a resumed one, draws the same masks), and element `i` is kept when a counter-based hash of
//! `(seed, i)` (murmur3's 32-bit finaliser, twice) falls below `1 − p`: the forward writes
//! `x·[kept]/(1 − p)` in place, the backward recomputes the same mask from the seed for
//! `dy·[kept]/(1 − p)`. No mask is stored, every element is independent (rayon chunks, SIMD), and
//! the result does not depend on the number of threads. Other backends, other float types and
//! the switch off run burn's `Dropout`.

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
        tensor::FloatTensor,
    },
    nn::Dropout,
    tensor::{Distribution, Tensor},
};
use rayon::prelude::*;

use crate::{
    simd::{ElementLoop, vectorized},
    use_fused, whole,
};

/// Elements per rayon task.
const CHUNK: usize = 1 << 15;

/// murmur3's 32-bit finaliser.
#[inline(always)]
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Whether element `i` is kept: 24 bits of the hash of `(seed, i)` below `threshold`
/// (`(1 − p)·2²⁴`).
#[inline(always)]
fn kept(seed: u64, i: u32, threshold: u32) -> bool {
    let h = fmix32(fmix32(i ^ seed as u32) ^ (seed >> 32) as u32);
    (h >> 8) < threshold
}

/// `v = v·[kept]·scale` over a chunk starting at element `first`.
struct MaskLoop<'a> {
    values: &'a mut [f32],
    first: u32,
    seed: u64,
    threshold: u32,
    scale: f32,
}

impl ElementLoop for MaskLoop<'_> {
    #[inline(always)]
    fn run(self) {
        for (k, v) in self.values.iter_mut().enumerate() {
            let keep = kept(self.seed, self.first.wrapping_add(k as u32), self.threshold);
            *v = if keep { *v * self.scale } else { 0.0 };
        }
    }
}

/// The mask of `(seed, p)` applied in place, scaled by `1/(1 − p)`.
fn apply_mask(values: &mut [f32], seed: u64, p: f32) {
    let threshold = ((1.0 - p as f64) * (1u64 << 24) as f64).round() as u32;
    let scale = 1.0 / (1.0 - p);
    values.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
        let first = (c * CHUNK) as u32;
        vectorized(MaskLoop { values: chunk, first, seed, threshold, scale });
    });
}

/// `layer`'s dropout of `x`: active as burn's (the layer's training flag on, `x` on an autodiff
/// device, `p > 0`), computed by the fused kernel on flex (see the module docs of `dropout.rs`).
///
/// # Shapes
/// - x: any; output: the same
pub fn dropout<const D: usize>(layer: &Dropout, x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if !(layer.training.is_enabled() && device.is_autodiff() && layer.prob > 0.0) {
        return x;
    }
    if !(use_fused(&device) && x.dtype() == DType::F32) {
        return layer.forward(x);
    }
    // one seed a call, from the backend's generator: seeded runs draw the same masks
    let draws: Vec<f32> = Tensor::<1>::random([2], Distribution::Uniform(0.0, 1.0), &device.clone().without_autodiff())
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 draws");
    let bits = |u: f32| ((u as f64) * 4_294_967_296.0) as u64 & 0xffff_ffff;
    let seed = bits(draws[0]) | (bits(draws[1]) << 32);
    seeded_dropout(x, layer.prob as f32, seed)
}

/// The fused dropout of an f32 flex tensor (autodiff or not) with the mask of `seed`.
fn seeded_dropout<const D: usize>(x: Tensor<D>, p: f32, seed: u64) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as DropoutBackend>::fused_dropout(x.into_dispatch(), p, seed))
}

/// The fused dropout as a backend extension (flex, and autodiff over it).
#[backend_extension(Flex, Autodiff)]
pub trait DropoutBackend: Backend {
    /// `x·[kept]/(1 − p)`, the mask drawn from `seed`.
    fn fused_dropout(x: FloatTensor<Self>, p: f32, seed: u64) -> FloatTensor<Self>;

    /// The input's gradient: `dy·[kept]/(1 − p)`, the same mask.
    fn fused_dropout_backward(dy: FloatTensor<Self>, p: f32, seed: u64) -> FloatTensor<Self>;
}

impl DropoutBackend for Flex {
    fn fused_dropout(x: FlexTensor, p: f32, seed: u64) -> FlexTensor {
        assert!(x.dtype() == DType::F32, "the fused dropout runs on f32 (checked by `dropout`)");
        let mut x = whole(x);
        apply_mask(x.storage_mut::<f32>(), seed, p);
        x
    }

    fn fused_dropout_backward(dy: FlexTensor, p: f32, seed: u64) -> FlexTensor {
        Self::fused_dropout(dy, p, seed)
    }
}

impl<B: DropoutBackend, C: CheckpointStrategy> DropoutBackend for Autodiff<B, C> {
    fn fused_dropout(x: FloatTensor<Self>, p: f32, seed: u64) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct FusedDropout;

        impl<B: DropoutBackend> Backward<B, 1> for FusedDropout {
            type State = (f32, u64);

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
                let dy = grads.consume::<B>(&ops.node);
                let [parent] = ops.parents;
                let (p, seed) = ops.state;
                if let Some(node) = parent {
                    grads.register::<B>(node.id, B::fused_dropout_backward(dy, p, seed));
                }
            }
        }

        let nodes = [x.node()];
        let x = x.into_primitive();
        match FusedDropout.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((p, seed), B::fused_dropout(x, p, seed)),
            OpsKind::UnTracked(prep) => prep.finish(B::fused_dropout(x, p, seed)),
        }
    }

    fn fused_dropout_backward(dy: FloatTensor<Self>, p: f32, seed: u64) -> FloatTensor<Self> {
        Self::from_inner(B::fused_dropout_backward(dy.into_primitive(), p, seed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::{nn::DropoutConfig, tensor::Device};

    /// Forward and backward by hand: every output is 0 or `x/(1 − p)`, the gradient is zero exactly
    /// where the output is, the kept share is `1 − p` within sampling error, and the same seed
    /// gives the same mask; a layer not training, or a plain device, passes `x`. (That a seeded
    /// generator draws the same seed is tested in `tests/dropout_seeding.rs`, alone in its process:
    /// the generator is shared by every test of this crate running beside it.)
    #[test]
    fn the_fused_dropout_keeps_one_minus_p_and_its_gradient_follows_the_mask() {
        let device = Device::flex().autodiff();
        let n = 200_003;
        let values: Vec<f32> = (0..n).map(|i| 1.0 + (i % 7) as f32).collect();
        let run = |seed: u64| {
            let x = Tensor::<1>::from_floats(values.as_slice(), &device).reshape([n, 1]).require_grad();
            let y = seeded_dropout(x.clone(), 0.3, seed);
            let grads = (y.clone() * 2.0).sum().backward();
            let dx: Vec<f32> = x.grad(&grads).unwrap().into_data().try_into_vec::<f32>().unwrap();
            (y.into_data().try_into_vec::<f32>().unwrap(), dx)
        };
        let (y, dx) = run(7);
        let mut kept_count = 0usize;
        for i in 0..n {
            if y[i] == 0.0 {
                assert_eq!(dx[i], 0.0, "dropped {i}: no gradient");
            } else {
                kept_count += 1;
                assert!((y[i] - values[i] / 0.7).abs() <= 1e-5 * y[i], "kept {i}: {} vs {}", y[i], values[i] / 0.7);
                assert!((dx[i] - 2.0 / 0.7).abs() < 1e-5, "kept {i}: gradient {}", dx[i]);
            }
        }
        let share = kept_count as f64 / n as f64;
        // binomial standard deviation ≈ 0.001 at this n
        assert!((share - 0.7).abs() < 0.005, "kept share {share}");
        assert_eq!(run(7).0, y, "the same seed draws the same mask");
        assert_ne!(run(8).0, y, "another seed another mask");
        let layer = DropoutConfig::new(0.3).init();
        let plain = Tensor::<1>::from_floats(values.as_slice(), &Device::flex());
        let out: Vec<f32> = dropout(&layer, plain).into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(out, values, "without autodiff dropout is off");
    }

    /// Neighbouring elements' keep decisions are independent: over a long run the share of pairs
    /// (i, i+1) both kept is (1 − p)², as it is for (i, i+CHUNK) across chunks.
    #[test]
    fn masks_have_no_pattern_between_neighbours() {
        let (seed, threshold) = (0x1234_5678_9abc_def0u64, (0.5f64 * (1u64 << 24) as f64) as u32);
        let n = 1_000_000u32;
        let both = |gap: u32| {
            (0..n).filter(|&i| kept(seed, i, threshold) && kept(seed, i + gap, threshold)).count() as f64 / n as f64
        };
        for gap in [1, 2, CHUNK as u32] {
            let share = both(gap);
            assert!((share - 0.25).abs() < 0.003, "gap {gap}: {share}");
        }
    }
}
