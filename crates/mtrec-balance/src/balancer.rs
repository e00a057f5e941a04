//! The balancer trait and the step interface it works through.

use burn::tensor::{Gradients, Tensor};

/// A forward cut at the shared tensors.
#[derive(Debug)]
pub struct CutForward {
    /// The shared part's outputs, still attached to the shared part's graph.
    pub shared: Vec<Tensor<2>>,
    /// Detached copies of `shared` that require gradients; the task branches start from these.
    pub leaves: Vec<Tensor<2>>,
    /// Each task's loss, built on `leaves` (branches share nothing but the leaves, so each can be
    /// backpropagated on its own).
    pub losses: Vec<Tensor<1>>,
}

/// One training step, as a balancer sees it.
pub trait TaskGraph {
    /// Number of tasks.
    fn n_tasks(&self) -> usize;

    /// Forward the whole model on the step's batch: each task's scalar loss, on one graph.
    fn task_losses(&mut self) -> Vec<Tensor<1>>;

    /// Forward the shared part once and every task branch from detached leaves of it.
    ///
    /// To push gradients into the shared part afterwards, backpropagate the surrogate
    /// `Σ_k (shared_k · g_k).sum()` with `g_k` the combined gradient at leaf `k`.
    fn cut_forward(&mut self) -> CutForward;
}

/// What a balancer hands back to the optimiser.
pub struct BalancedGradients {
    /// Gradient sets of the model's parameters, to be summed (each already weighted).
    pub parts: Vec<Gradients>,
    /// Each task's unweighted loss of this step, detached (`[1]` each).
    pub task_losses: Vec<Tensor<1>>,
}

/// A loss-balancing method.
pub trait LossBalancer {
    /// The method's config name (`fixed`, …).
    fn name(&self) -> &'static str;

    /// Runs the step's forward and backward passes and returns the model gradients. Methods with
    /// state of their own (learnable weights, initial losses) update it here.
    fn backward(&mut self, graph: &mut dyn TaskGraph) -> BalancedGradients;

    /// The current weight of each task's loss (for logging).
    fn task_weights(&self) -> Vec<f64>;

    /// Called after every epoch with each task's mean training loss (DWA needs them).
    fn end_epoch(&mut self, _mean_task_losses: &[f64]) {}

    /// Per-task gradient norms of the last step, for methods that compute them.
    fn task_gradient_norms(&self) -> Option<Vec<f64>> {
        None
    }
}
