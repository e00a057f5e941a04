//! The balancer trait and the step interface it works through.

use crate::diagnostics::ConflictLog;
use burn::tensor::{Gradients, Tensor};
use mtrec_data::TaskKind;
use mtrec_model::LastSharedLayer;

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

/// A forward with each task branch reading the shared tensors through its own probes (see
/// [`TaskGraph::probed_forward`]).
#[derive(Debug)]
pub struct ProbedForward {
    /// Each task's loss, on one graph through the shared part.
    pub losses: Vec<Tensor<1>>,
    /// The shared tensors probed (indices, ascending): the representation's and the last shared
    /// layer's output ([`mtrec_model::SharedTensors::probe_points`]).
    pub points: Vec<usize>,
    /// `probes[t][j]`: task `t`'s zero-valued leaf added to shared tensor `points[j]`; after a
    /// backward its gradient is task `t`'s share of the gradient at that tensor. Empty for the
    /// tasks not asked for.
    pub probes: Vec<Vec<Tensor<2>>>,
    /// The model's last shared layer, where it exposes one (GradNorm's `W`).
    pub last_layer: Option<LastSharedLayer>,
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

    /// Forward the whole model once, each task branch reading the shared tensors plus zero-valued
    /// probe leaves of its own. One backward of any weighted sum of the losses then yields the
    /// model's gradient of that sum and, at each task's probes, that task's (weighted) gradient at
    /// the shared tensors — for methods that measure per-task gradients but update the network with
    /// a fixed combination (GradNorm), at the cost of one ordinary step. Only the tasks with
    /// `probe[t]` get probes; the others read the shared tensors directly.
    fn probed_forward(&mut self, probe: &[bool]) -> ProbedForward;

    /// Whether each task's label is on at least one row of the step's (whole) batch. A task with its
    /// own sample space can be absent from a batch: its loss is then 0 with zero gradient, and a
    /// balancer leaves it out of what it decides from (norms, Gram matrices, loss ratios, learned
    /// weights) rather than read the zeros as information. The same on every rank.
    fn task_present(&self) -> Vec<bool> {
        vec![true; self.n_tasks()]
    }

    /// Number of data-parallel ranks the step's batch is split over (1 in one process).
    ///
    /// Each rank forwards its shard of the batch; the batch's loss is `Σ_r share_r · L_r` (losses are
    /// means over rows), so anything linear in the losses — parameter gradients, the losses
    /// themselves — is the share-weighted sum of the ranks' values ([`batch_mean`]). A balancer
    /// that decides from such values (learned weights, norms, Gram matrices) reduces them over the
    /// ranks first, so that every rank takes the same decision as one process with the whole batch.
    fn ranks(&self) -> usize {
        1
    }

    /// This rank's share of the step's batch: its rows over the batch's rows (1 in one process).
    fn batch_share(&self) -> f64 {
        1.0
    }

    /// Sums `values` over the ranks, in place (nothing in one process).
    fn sum_over_ranks(&mut self, _values: &mut [f64]) {}
}

/// Turns this rank's values of quantities that are linear in the batch-mean losses (the losses,
/// gradients of parameters) into their values on the whole batch: `Σ_r share_r · v_r`.
pub fn batch_mean(graph: &mut dyn TaskGraph, values: &mut [f64]) {
    if graph.ranks() > 1 {
        let share = graph.batch_share();
        values.iter_mut().for_each(|v| *v *= share);
        graph.sum_over_ranks(values);
    }
}

/// Turns this rank's squared norms and inner products of per-row gradients at the shared tensors
/// into their values on the whole batch. A row's gradient of the batch-mean loss is its shard's
/// gradient times the shard's share, so each rank's terms scale by `share²`.
pub fn batch_squares(graph: &mut dyn TaskGraph, values: &mut [f64]) {
    if graph.ranks() > 1 {
        let share = graph.batch_share();
        values.iter_mut().for_each(|v| *v *= share * share);
        graph.sum_over_ranks(values);
    }
}

/// [`batch_mean`] of a (small) tensor, through the host.
pub fn batch_mean_tensor<const D: usize>(graph: &mut dyn TaskGraph, tensor: Tensor<D>) -> Tensor<D> {
    if graph.ranks() == 1 {
        return tensor;
    }
    let (shape, device) = (tensor.shape(), tensor.device());
    let mut host = tensor.into_data().convert::<f64>().try_into_vec::<f64>().expect("float tensors convert to f64");
    batch_mean(graph, &mut host);
    Tensor::from_data(burn::tensor::TensorData::new(host, shape).convert::<f32>(), &device)
}

/// What a balancer hands back to the optimiser.
pub struct BalancedGradients {
    /// Gradient sets of the model's parameters, to be summed (each already weighted).
    pub parts: Vec<Gradients>,
    /// Each task's unweighted loss of this step, detached (`[1]` each).
    pub task_losses: Vec<Tensor<1>>,
}

/// A balancing step that cannot go on; the message says why and which config key to change.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BalanceError(pub String);

/// What a balancer is built for: the tasks, the network's learning rate and the run's seed.
#[derive(Debug, Clone)]
pub struct BalanceContext {
    /// Each task's name, in task order (for error messages).
    pub names: Vec<String>,
    /// Each task's kind, in task order.
    pub kinds: Vec<TaskKind>,
    /// The network's learning rate (the default for learnable task weights).
    pub lr: f64,
    /// The run's seed (random loss weighting, PCGrad's task order).
    pub seed: u64,
}

impl BalanceContext {
    /// Number of tasks.
    pub fn n_tasks(&self) -> usize {
        self.kinds.len()
    }
}

/// A loss-balancing method.
pub trait LossBalancer {
    /// The method's config name (`fixed`, `gradnorm`, …).
    fn name(&self) -> &'static str;

    /// Runs the step's forward and backward passes and returns the model gradients. Methods with
    /// state of their own (learnable weights, initial losses) update it here.
    fn backward(&mut self, graph: &mut dyn TaskGraph) -> Result<BalancedGradients, BalanceError>;

    /// The current weight of each task's loss (for logging).
    fn task_weights(&self) -> Vec<f64>;

    /// Whether the method needs each task's loss on the step's batch *after* the update (FAMO
    /// measures how much each loss fell): the loop then forwards the updated model on the same
    /// batch once more and calls [`Self::after_step`].
    fn needs_losses_after_step(&self) -> bool {
        false
    }

    /// The step's batch-mean task losses after the update (on every rank the whole batch's), when
    /// [`Self::needs_losses_after_step`].
    fn after_step(&mut self, _losses: &[f64]) -> Result<(), BalanceError> {
        Ok(())
    }

    /// Called after every epoch with each task's mean training loss (DWA needs them).
    fn end_epoch(&mut self, _mean_task_losses: &[f64]) {}

    /// Where the method records the task gradients it measures ([`ConflictLog`]); the three
    /// methods below read it by default.
    fn conflict_log(&self) -> Option<&ConflictLog> {
        None
    }

    /// Per-task gradient norms (mean over the last epoch's steps), for methods that compute them.
    fn task_gradient_norms(&self) -> Option<Vec<f64>> {
        self.conflict_log().and_then(ConflictLog::norms)
    }

    /// The cosine between each pair of tasks' gradients at the shared tensors (pairs `(i, j)`,
    /// `i < j`, in that order; mean over the last epoch's steps), for methods that compute them:
    /// how much the tasks agree, or conflict, where they share parameters.
    fn task_gradient_cosines(&self) -> Option<Vec<f64>> {
        self.conflict_log().and_then(ConflictLog::cosines)
    }

    /// With [`Self::task_gradient_cosines`]: for each pair, the fraction of the last epoch's steps
    /// on which its cosine was negative (the tasks pulled the shared parameters apart).
    fn task_gradient_conflicts(&self) -> Option<Vec<f64>> {
        self.conflict_log().and_then(ConflictLog::conflicts)
    }

    /// What the method carries from one epoch to the next (learned weights and their optimiser's
    /// moments, initial losses, loss history, the epoch its random draws are seeded from), for
    /// checkpoints; `Null` for methods without state. Taken after [`Self::end_epoch`].
    fn state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Restores what [`Self::state`] returned.
    fn load_state(&mut self, state: serde_json::Value) -> Result<(), BalanceError> {
        restore_stateless(self.name(), state)
    }
}

/// [`LossBalancer::load_state`] of a method without state: only `Null` is its state.
pub fn restore_stateless(name: &str, state: serde_json::Value) -> Result<(), BalanceError> {
    if state.is_null() {
        Ok(())
    } else {
        Err(BalanceError(format!("checkpoint: {name} keeps no state, but the checkpoint holds {state}")))
    }
}

/// Parses a method's checkpointed state.
pub fn parse_state<T: serde::de::DeserializeOwned>(name: &str, state: serde_json::Value) -> Result<T, BalanceError> {
    serde_json::from_value(state).map_err(|e| BalanceError(format!("checkpoint: the {name} state does not parse: {e}")))
}

/// Serialises a method's state.
pub fn state_value<T: serde::Serialize>(state: &T) -> serde_json::Value {
    serde_json::to_value(state).expect("balancer states serialise")
}

/// A generator reseeded from the run's seed at every epoch, so that a run resumed from a checkpoint
/// draws what the uninterrupted run would have; its checkpoint state is the epoch.
pub struct EpochRng {
    seed: u64,
    epoch: u64,
    rng: rand::rngs::StdRng,
}

impl EpochRng {
    /// Epoch 0's generator; `salt` separates the methods' streams.
    pub fn new(seed: u64, salt: u64) -> Self {
        let seed = seed ^ salt;
        Self { seed, epoch: 0, rng: Self::seeded(seed, 0) }
    }

    fn seeded(seed: u64, epoch: u64) -> rand::rngs::StdRng {
        use rand::SeedableRng;
        rand::rngs::StdRng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    /// This epoch's generator.
    pub fn rng(&mut self) -> &mut rand::rngs::StdRng {
        &mut self.rng
    }

    /// Moves to the next epoch's generator.
    pub fn next_epoch(&mut self) {
        self.restart_at(self.epoch + 1);
    }

    fn restart_at(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.rng = Self::seeded(self.seed, epoch);
    }

    /// The checkpoint state: the epoch.
    pub fn state(&self) -> serde_json::Value {
        state_value(&self.epoch)
    }

    /// Restores [`Self::state`] for method `name`.
    pub fn load_state(&mut self, name: &str, state: serde_json::Value) -> Result<(), BalanceError> {
        self.restart_at(parse_state(name, state)?);
        Ok(())
    }
}

/// The detached losses, for [`BalancedGradients::task_losses`].
pub fn detached(losses: &[Tensor<1>]) -> Vec<Tensor<1>> {
    losses.iter().map(|l| l.clone().detach()).collect()
}

/// `Σ_t w_t · L_t` on one graph.
pub fn weighted_sum(losses: &[Tensor<1>], weights: &[f64]) -> Tensor<1> {
    assert_eq!(losses.len(), weights.len(), "one weight per task");
    losses.iter().zip(weights).map(|(l, &w)| l.clone().mul_scalar(w)).reduce(Tensor::add).expect("at least one task")
}

/// The step of a loss-weighting method: one forward, one backward of `Σ_t w_t · L_t`.
pub fn weighted_backward(graph: &mut dyn TaskGraph, weights: &[f64]) -> BalancedGradients {
    let losses = graph.task_losses();
    BalancedGradients { parts: vec![weighted_sum(&losses, weights).backward()], task_losses: detached(&losses) }
}

/// Reads small device tensors (losses, norms, dot products) to the host in one transfer.
pub fn to_host(values: Vec<Tensor<1>>) -> Vec<f64> {
    Tensor::cat(values, 0).into_data().try_into_vec_as::<f64>().expect("float tensors convert to f64")
}

/// Per-task values averaged over an epoch's steps (gradient norms for the logs). A non-finite
/// value (a task absent from a step's batch) is left out of its entry's mean.
#[derive(Debug, Clone, Default)]
pub struct EpochMean {
    sums: Vec<f64>,
    counts: Vec<usize>,
    last_epoch: Option<Vec<f64>>,
}

impl EpochMean {
    /// Adds one step's values.
    pub fn add(&mut self, values: &[f64]) {
        if self.sums.len() != values.len() {
            self.sums = vec![0.0; values.len()];
            self.counts = vec![0; values.len()];
        }
        for ((s, n), v) in self.sums.iter_mut().zip(&mut self.counts).zip(values) {
            if v.is_finite() {
                *s += v;
                *n += 1;
            }
        }
    }

    /// Closes the epoch: its mean becomes [`Self::last_epoch`] (an entry seen at no step is NaN).
    pub fn end_epoch(&mut self) {
        if self.counts.iter().any(|&n| n > 0) {
            let means = self.sums.iter().zip(&self.counts);
            self.last_epoch = Some(means.map(|(s, &n)| if n > 0 { s / n as f64 } else { f64::NAN }).collect());
        }
        self.sums.iter_mut().for_each(|s| *s = 0.0);
        self.counts.iter_mut().for_each(|n| *n = 0);
    }

    /// The last closed epoch's mean.
    pub fn last_epoch(&self) -> Option<Vec<f64>> {
        self.last_epoch.clone()
    }
}
