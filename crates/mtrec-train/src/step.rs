//! One optimisation step, shared by the training loop, the benchmark and the parity check: the
//! balancer runs the forward and backward passes through [`TaskGraph`], Adam applies the result.

use burn::{
    lr_scheduler::module_lr_scheduler::ModuleLearningRate,
    optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer},
    tensor::{Gradients, Tensor},
};
use mtrec_balance::{CutForward, LossBalancer, ProbedForward, TaskGraph};
use mtrec_data::{MtlBatch, TaskKind};
use mtrec_model::{MultiTaskModel, MultiTaskNet, SharedTensors};

use crate::{TrainError, task_loss};

/// One training step as the balancer sees it: the model, the batch, the task kinds.
pub(crate) struct StepGraph<'a> {
    pub(crate) model: &'a MultiTaskNet,
    pub(crate) batch: &'a MtlBatch,
    pub(crate) kinds: &'a [TaskKind],
}

impl StepGraph<'_> {
    fn loss_of(&self, t: usize, shared: &SharedTensors) -> Tensor<1> {
        let out = self.model.forward_task(t, shared);
        let target = self.batch.labels.clone().slice([0..self.batch.size, t..t + 1]);
        let loss = task_loss(self.kinds[t], out.output, target);
        match out.auxiliary_loss {
            Some(extra) => loss + extra,
            None => loss,
        }
    }

    fn losses_from(&self, shared: &SharedTensors) -> Vec<Tensor<1>> {
        (0..self.kinds.len()).map(|t| self.loss_of(t, shared)).collect()
    }

    fn shared(&self) -> SharedTensors {
        self.model.forward_shared(self.batch.categorical.clone(), self.batch.dense.clone())
    }
}

impl TaskGraph for StepGraph<'_> {
    fn n_tasks(&self) -> usize {
        self.kinds.len()
    }

    fn task_losses(&mut self) -> Vec<Tensor<1>> {
        self.losses_from(&self.shared())
    }

    fn cut_forward(&mut self) -> CutForward {
        let shared = self.shared();
        let leaves = shared.detached_leaves();
        let losses = self.losses_from(&leaves);
        CutForward { shared: shared.tensors, leaves: leaves.tensors, losses }
    }

    fn probed_forward(&mut self, probe: &[bool]) -> ProbedForward {
        let shared = self.shared();
        let (losses, probes) = (0..self.kinds.len())
            .map(|t| match probe.get(t) {
                Some(true) => {
                    let (probed, probes) = shared.probed();
                    (self.loss_of(t, &probed), probes)
                }
                _ => (self.loss_of(t, &shared), Vec::new()),
            })
            .unzip();
        ProbedForward { losses, points: shared.probe_points(), probes, last_layer: shared.last_layer }
    }
}

/// Sums gradient sets of the model's parameters.
fn merge_gradients(parts: Vec<Gradients>, model: &MultiTaskNet) -> GradientsParams {
    let mut parts = parts.into_iter().map(|g| GradientsParams::from_grads(g, model)).peekable();
    let first = parts.next().expect("a balancer returns at least one gradient set");
    if parts.peek().is_none() {
        return first;
    }
    let mut acc = GradientsAccumulator::<MultiTaskNet>::new();
    acc.accumulate(model, first);
    for gp in parts {
        acc.accumulate(model, gp);
    }
    acc.grads()
}

/// The balanced gradients of one batch, without updating anything.
pub(crate) fn step_gradients(
    model: &MultiTaskNet,
    balancer: &mut dyn LossBalancer,
    batch: &MtlBatch,
    kinds: &[TaskKind],
) -> Result<(GradientsParams, Vec<Tensor<1>>), TrainError> {
    let mut graph = StepGraph { model, batch, kinds };
    let out = balancer.backward(&mut graph).map_err(|e| TrainError::Config(e.to_string()))?;
    Ok((merge_gradients(out.parts, model), out.task_losses))
}

/// One step: balanced gradients of `batch`, then the optimiser's update with learning rate `lr`
/// (one rate, or per-parameter rates from [`ExperimentConfig::learning_rates`](crate::ExperimentConfig::learning_rates)).
///
/// Returns the updated model and each task's (detached) loss on the batch.
pub fn train_step(
    model: MultiTaskNet,
    optim: &mut ModuleOptimizer,
    balancer: &mut dyn LossBalancer,
    batch: &MtlBatch,
    kinds: &[TaskKind],
    lr: impl Into<ModuleLearningRate>,
) -> Result<(MultiTaskNet, Vec<Tensor<1>>), TrainError> {
    let (grads, losses) = step_gradients(&model, balancer, batch, kinds)?;
    Ok((optim.step(lr, model, grads), losses))
}
