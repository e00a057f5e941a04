//! The tasks' gradients on the trainable text encoder's own parameters: where the tasks of a
//! fine-tuned language model pull its weights apart, or together.
//!
//! The balancers' diagnostics ([`mtrec_balance::diagnostics`]) measure each task's gradient at the
//! shared *tensors* (the representation the encoder's output is part of). What reaches the encoder's
//! weights is that gradient sent back through the encoder, `Jᵀ g_t`, and two tasks can agree at the
//! representation and still fight in the weights (or the reverse). With `train.encoder_gradients_every
//! = n > 0`, every `n`-th step of a run whose shared text encoder trains measures it directly: one
//! extra forward and backward a task on the step's batch (the model before the step's update), each
//! task's gradient on the encoder's trainable parameters (full weights, the top layers or LoRA's
//! factors), and their Gram matrix — norms, cosines and whether each pair conflicts — into a
//! [`ConflictLog`], as the balancers' logs. Every task's forward draws the *same* dropout masks (the
//! backend's generator is seeded alike before each, from the run's seed and the step): with masks
//! of their own, two tasks' gradients would be those of two different thinned networks, and the
//! masks' noise alone would pull their cosine towards 0. The update does not use the measurement;
//! after it the generator is seeded again (from the seed and the step), so the later steps' masks
//! differ from a run without the measurement (the run is as reproducible, not bit-equal to one
//! without it). Task-specific
//! adapters (`adapters = "per_task"`) are task parameters, not shared ones: with no trainable shared
//! encoder there is nothing to measure. Data-parallel ranks each measure their own shard; the
//! records are rank 0's.

use burn::{
    module::{Module, ModuleVisitor, Param},
    optim::GradientsParams,
    tensor::Tensor,
};
use mtrec_balance::{TaskGraph, diagnostics::ConflictLog};
use mtrec_data::{MtlBatch, TaskKind};
use mtrec_model::{MultiTaskModule, MultiTaskNet};

use crate::{checkpoint::epoch_seed, step::StepGraph};

/// Sums `Σ_p ⟨g_i(p), g_j(p)⟩` over a module's float parameters for every task pair, on the device.
struct GramOverParameters<'a> {
    task_gradients: &'a [Option<GradientsParams>],
    /// `sums[i][j]` for `i ≤ j`: the running inner product (`None` until a parameter has both).
    sums: Vec<Vec<Option<Tensor<1>>>>,
}

impl GramOverParameters<'_> {
    fn add(&mut self, gradients: Vec<Option<Tensor<1>>>) {
        for i in 0..gradients.len() {
            for j in i..gradients.len() {
                let (Some(a), Some(b)) = (&gradients[i], &gradients[j]) else { continue };
                let product = (a.clone() * b.clone()).sum();
                let sum = &mut self.sums[i][j];
                *sum = Some(match sum.take() {
                    Some(s) => s + product,
                    None => product,
                });
            }
        }
    }
}

impl ModuleVisitor for GramOverParameters<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let gradients: Vec<Option<Tensor<1>>> = (self.task_gradients.iter())
            .map(|g| g.as_ref().and_then(|g| g.get::<D>(param.id)).map(|g| g.reshape([-1])))
            .collect();
        if gradients.iter().any(Option::is_some) {
            self.add(gradients);
        }
    }
}

/// Each task's gradient on the shared text encoder's trainable parameters at `model` on `batch`,
/// as their Gram matrix (`T × T`, `[i][j] = ⟨g_i, g_j⟩` summed over every trainable parameter,
/// f32 on the device then f64) and whether each task was measured (labelled on a row of the batch).
/// `None` when the model has no shared text encoder with a trainable parameter.
///
/// Each task takes a forward and backward of its own (burn keeps no graph for a second backward);
/// the backend's generator is seeded with `dropout_seed` before each forward, so every task's
/// gradient is taken through the same dropout masks. The generator is left where the last forward
/// left it: seed it again before drawing anything that should not depend on the measurement. It is
/// one per process, so a draw on another thread between the seeding and the forward changes the
/// masks.
pub fn encoder_gradient_gram<C: MultiTaskModule>(
    model: &MultiTaskNet<C>,
    batch: &MtlBatch,
    kinds: &[TaskKind],
    dropout_seed: u64,
) -> Option<(Vec<Vec<f64>>, Vec<bool>)> {
    let encoder = model.text_encoder()?;
    if !has_trainable_parameter(&encoder) {
        return None;
    }
    let device = batch.labels.device();
    let measured: Vec<bool> = (0..kinds.len()).map(|t| batch.task_rows(t) > 0).collect();
    let task_gradients: Vec<Option<GradientsParams>> = (0..kinds.len())
        .map(|t| {
            measured[t].then(|| {
                device.seed(dropout_seed);
                let loss = StepGraph::new(model, batch, kinds).task_losses().swap_remove(t);
                GradientsParams::from_grads(loss.backward(), &encoder)
            })
        })
        .collect();
    let n = kinds.len();
    let mut gram = GramOverParameters { task_gradients: &task_gradients, sums: vec![vec![None; n]; n] };
    encoder.visit(&mut gram);
    let read = |s: &Option<Tensor<1>>| s.clone().map_or(0.0, |s| s.without_autodiff().into_scalar::<f32>() as f64);
    let values = (0..n).map(|i| (0..n).map(|j| read(&gram.sums[i.min(j)][i.max(j)])).collect()).collect();
    Some((values, measured))
}

/// Whether any float parameter of `module` requires a gradient.
fn has_trainable_parameter(module: &impl Module) -> bool {
    struct Any(bool);
    impl ModuleVisitor for Any {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0 |= param.is_require_grad();
        }
    }
    let mut any = Any(false);
    module.visit(&mut any);
    any.0
}

/// The measurements of a run's epoch: every `every`-th step's Gram matrix, averaged per epoch.
#[derive(Debug, Clone, Default)]
pub(crate) struct EncoderGradientLog {
    /// Every how many steps (0: never).
    pub(crate) every: usize,
    /// The run's seed: the measurement's dropout masks and the generator after it derive from it.
    pub(crate) seed: u64,
    /// The epoch's measurements.
    pub(crate) log: ConflictLog,
}

impl EncoderGradientLog {
    /// Measures at global step `step` (1-based) when it is due; returns the step's Gram matrix and
    /// which tasks were measured, after recording them.
    pub(crate) fn measure<C: MultiTaskModule>(
        &mut self,
        step: usize,
        model: &MultiTaskNet<C>,
        batch: &MtlBatch,
        kinds: &[TaskKind],
    ) -> Option<(Vec<Vec<f64>>, Vec<bool>)> {
        if self.every == 0 || !step.is_multiple_of(self.every) {
            return None;
        }
        let masks = measurement_seed(self.seed, step);
        // `None` before any forward: nothing drawn, the generator left as it was
        let (gram, measured) = encoder_gradient_gram(model, batch, kinds, masks)?;
        // the step's own draws: fixed by the seed and the step, whatever the measurement drew
        batch.labels.device().seed(masks ^ 0x5354_4550); // "STEP"
        self.log.record(&gram, &measured);
        Some((gram, measured))
    }
}

/// The dropout seed of the measurement at global step `step` of a run seeded `seed`: the epochs'
/// seed mixing ([`epoch_seed`]) over the steps, from a seed of its own.
fn measurement_seed(seed: u64, step: usize) -> u64 {
    epoch_seed(seed ^ 0x454e_4347_5241_4453, step) // "ENCGRADS"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The visitor's sums against a direct computation (the Gram matrix of a model's encoder
    /// against each task's own backward is `tests/encoder_gradient_masks.rs`).
    #[test]
    fn gram_over_parameters_sums_every_parameters_products() {
        let device = burn::tensor::Device::flex();
        let a = Tensor::<1>::from_floats([1.0, 2.0, -1.0], &device);
        let b = Tensor::<1>::from_floats([0.5, -1.0, 3.0], &device);
        let c = Tensor::<1>::from_floats([2.0, 0.0], &device);
        let d = Tensor::<1>::from_floats([1.0, 4.0], &device);
        let mut gram = GramOverParameters { task_gradients: &[], sums: vec![vec![None; 2]; 2] };
        gram.add(vec![Some(a), Some(b)]);
        gram.add(vec![Some(c), Some(d)]);
        gram.add(vec![None, Some(Tensor::<1>::from_floats([2.0], &device))]);
        let value = |i: usize, j: usize| gram.sums[i][j].clone().unwrap().into_scalar::<f32>();
        assert_eq!(value(0, 0), 1.0 + 4.0 + 1.0 + 4.0); // ‖a‖² + ‖c‖²
        assert_eq!(value(0, 1), 0.5 - 2.0 - 3.0 + 2.0); // ⟨a, b⟩ + ⟨c, d⟩
        assert_eq!(value(1, 1), 0.25 + 1.0 + 9.0 + 1.0 + 16.0 + 4.0);
    }
}
