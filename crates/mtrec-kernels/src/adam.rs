//! Adam's update (with burn's L2 weight decay) in one pass over a parameter: gradient, both moments
//! and the parameter, updated in place when this call owns them; large tensors over both cores.
//! The optimiser around it (state, learning rates, fallback) is mtrec-train's `FusedAdam`.

use burn::backend::{Backend, Flex, backend_extension, flex::FlexTensor, tensor::FloatTensor};
use rayon::prelude::*;

use crate::{
    contiguous, f32_values,
    simd::{ElementLoop, vectorized},
    whole,
};

/// Scalars of one fused update.
#[derive(Debug, Clone, Copy)]
struct AdamStep {
    lr: f32,
    beta_1: f32,
    beta_2: f32,
    /// `√(1 − β₂ᵗ) / (1 − β₁ᵗ)`
    combined_factor: f32,
    /// `ε·√(1 − β₂ᵗ)`
    epsilon: f32,
    weight_decay: f32,
}

/// One step over every element of a chunk.
struct AdamLoop<'a> {
    step: AdamStep,
    p: &'a mut [f32],
    g: &'a [f32],
    m: &'a mut [f32],
    v: &'a mut [f32],
}

impl ElementLoop for AdamLoop<'_> {
    #[inline(always)]
    fn run(self) {
        for (((p, &g), m), v) in self.p.iter_mut().zip(self.g).zip(self.m.iter_mut()).zip(self.v.iter_mut()) {
            self.step.apply(p, g, m, v);
        }
    }
}

impl AdamStep {
    /// One element, in burn's order of operations.
    #[inline(always)]
    fn apply(&self, p: &mut f32, g: f32, m: &mut f32, v: &mut f32) {
        let g = if self.weight_decay > 0.0 { *p * self.weight_decay + g } else { g };
        *m = *m * self.beta_1 + g * (1.0 - self.beta_1);
        *v = *v * self.beta_2 + g * g * (1.0 - self.beta_2);
        let update = *m * self.combined_factor / (v.sqrt() + self.epsilon);
        *p -= update * self.lr;
    }
}

/// The fused update as a backend extension (flex only; the optimiser sees inner tensors).
#[backend_extension(Flex)]
pub trait FusedAdamBackend: Backend {
    /// One Adam step of `param` with gradient `grad` and moments `m`, `v` (zeros before the
    /// first step) at step `time` (1-based); returns the new parameter and moments.
    #[allow(clippy::too_many_arguments)]
    fn adam_update(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        lr: f32,
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
        weight_decay: f32,
        time: i32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// Elements per rayon task of a large update.
const CHUNK: usize = 1 << 16;

impl FusedAdamBackend for Flex {
    fn adam_update(
        param: FlexTensor,
        grad: FlexTensor,
        m: FlexTensor,
        v: FlexTensor,
        lr: f32,
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
        weight_decay: f32,
        time: i32,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let bias_correction2_sqrt = (1.0 - beta_2.powi(time)).sqrt();
        let step = AdamStep {
            lr,
            beta_1,
            beta_2,
            combined_factor: bias_correction2_sqrt / (1.0 - beta_1.powi(time)),
            epsilon: epsilon * bias_correction2_sqrt,
            weight_decay,
        };
        let grad = contiguous(grad);
        // updated in place; `storage_mut` copies a buffer first only where another tensor shares it
        let (mut param, mut m, mut v) = (whole(param), whole(m), whole(v));
        {
            let g = f32_values(&grad);
            let (p, m, v) = (param.storage_mut::<f32>(), m.storage_mut::<f32>(), v.storage_mut::<f32>());
            assert!(g.len() == p.len() && m.len() == p.len() && v.len() == p.len(), "adam_update: shapes differ");
            if p.len() > 4 * CHUNK {
                p.par_chunks_mut(CHUNK)
                    .zip(g.par_chunks(CHUNK))
                    .zip(m.par_chunks_mut(CHUNK))
                    .zip(v.par_chunks_mut(CHUNK))
                    .for_each(|(((p, g), m), v)| vectorized(AdamLoop { step, p, g, m, v }));
            } else {
                vectorized(AdamLoop { step, p, g, m, v });
            }
        }
        (param, m, v)
    }
}
