//! Random loss weighting (Lin, Ye, Xu, Shi & Zhang, TMLR 2022).
//!
//! Every step draws fresh weights `w = softmax(λ̃)`, `λ̃_t ~ N(0, 1)` (summing to 1), from a
//! generator seeded by the run's seed and the epoch.

use rand_distr::{Distribution, StandardNormal};

use crate::{
    BalanceError, BalancedGradients, LossBalancer, TaskGraph,
    balancer::EpochRng,
    diagnostics::{ConflictLog, WeightedStep},
};

const SALT: u64 = 0x524c_5700;

/// Random loss weighting.
pub struct RandomLossWeighting {
    rng: EpochRng,
    weights: Vec<f64>,
    step: WeightedStep,
}

impl RandomLossWeighting {
    /// `n_tasks` tasks, weights drawn from a generator seeded with `seed` (and the epoch).
    pub fn new(n_tasks: usize, seed: u64) -> Self {
        Self {
            rng: EpochRng::new(seed, SALT),
            weights: vec![1.0 / n_tasks as f64; n_tasks],
            step: WeightedStep::new(0),
        }
    }

    /// With the task gradients measured every `every`-th step ([`crate::diagnostics`]).
    pub fn with_diagnostics(mut self, every: u64) -> Self {
        self.step = WeightedStep::new(every);
        self
    }
}

impl LossBalancer for RandomLossWeighting {
    fn name(&self) -> &'static str {
        "rlw"
    }

    fn backward(&mut self, graph: &mut dyn TaskGraph) -> Result<BalancedGradients, BalanceError> {
        let raw: Vec<f64> = self.weights.iter().map(|_| StandardNormal.sample(self.rng.rng())).collect();
        let max = raw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = raw.iter().map(|v| (v - max).exp()).collect();
        let total: f64 = e.iter().sum();
        self.weights = e.iter().map(|v| v / total).collect();
        self.step.backward(graph, &self.weights)
    }

    /// The last step's weights.
    fn task_weights(&self) -> Vec<f64> {
        self.weights.clone()
    }

    fn end_epoch(&mut self, _mean_task_losses: &[f64]) {
        self.rng.next_epoch();
        self.step.end_epoch();
    }

    fn conflict_log(&self) -> Option<&ConflictLog> {
        Some(self.step.log())
    }

    /// The epoch the draws are seeded from.
    fn state(&self) -> serde_json::Value {
        self.rng.state()
    }

    fn load_state(&mut self, state: serde_json::Value) -> Result<(), BalanceError> {
        self.rng.load_state(self.name(), state)
    }
}
