//! Dynamic weight average (Liu, Johns & Davison, CVPR 2019).
//!
//! `w_t(k) = T·exp(r_t(k−1)/τ) / Σ_i exp(r_i(k−1)/τ)` with `r_t(k−1) = L_t(k−1) / L_t(k−2)` the
//! ratio of the task's mean training losses over the two previous epochs; `w_t = 1` for the first
//! two epochs. Temperature `τ` (`balance.temperature`, default 2).

use serde::{Deserialize, Serialize};

use crate::{
    BalanceError, BalancedGradients, LossBalancer, TaskGraph,
    balancer::{parse_state, state_value},
    diagnostics::{ConflictLog, WeightedStep},
};

/// Dynamic weight average.
#[derive(Serialize, Deserialize)]
pub struct DynamicWeightAverage {
    temperature: f64,
    weights: Vec<f64>,
    history: Vec<Vec<f64>>,
    #[serde(skip)]
    step: WeightedStep,
}

impl DynamicWeightAverage {
    /// Equal weights until two epochs have been seen.
    pub fn new(n_tasks: usize, temperature: f64) -> Self {
        Self { temperature, weights: vec![1.0; n_tasks], history: Vec::new(), step: WeightedStep::new(0) }
    }

    /// With the task gradients measured every `every`-th step ([`crate::diagnostics`]).
    pub fn with_diagnostics(mut self, every: u64) -> Self {
        self.step = WeightedStep::new(every);
        self
    }
}

impl LossBalancer for DynamicWeightAverage {
    fn name(&self) -> &'static str {
        "dwa"
    }

    fn backward(&mut self, graph: &mut dyn TaskGraph) -> Result<BalancedGradients, BalanceError> {
        self.step.backward(graph, &self.weights)
    }

    fn task_weights(&self) -> Vec<f64> {
        self.weights.clone()
    }

    /// A task without a mean loss this epoch (labelled on no row of it: NaN) carries its previous
    /// epoch's mean; before any, the weights stay as they are.
    fn end_epoch(&mut self, mean_task_losses: &[f64]) {
        self.step.end_epoch();
        let mut means = mean_task_losses.to_vec();
        if let Some(last) = self.history.last() {
            means.iter_mut().zip(last).filter(|(m, _)| !m.is_finite()).for_each(|(m, l)| *m = *l);
        }
        if means.iter().any(|m| !m.is_finite()) {
            return;
        }
        self.history.push(means);
        if let [.., before, last] = self.history.as_slice() {
            let e: Vec<f64> = last.iter().zip(before).map(|(l, b)| (l / b / self.temperature).exp()).collect();
            let total: f64 = e.iter().sum();
            self.weights = e.iter().map(|v| v * e.len() as f64 / total).collect();
        }
    }

    /// The weights and the epochs' mean losses.
    fn state(&self) -> serde_json::Value {
        state_value(self)
    }

    fn load_state(&mut self, state: serde_json::Value) -> Result<(), BalanceError> {
        let state: Self = parse_state(self.name(), state)?;
        if state.weights.len() != self.weights.len() {
            return Err(BalanceError(format!(
                "checkpoint: dwa holds {} weights, the run has {} tasks",
                state.weights.len(),
                self.weights.len()
            )));
        }
        (self.weights, self.history) = (state.weights, state.history);
        Ok(())
    }

    fn conflict_log(&self) -> Option<&ConflictLog> {
        Some(self.step.log())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_follow_the_loss_ratios() {
        let mut dwa = DynamicWeightAverage::new(2, 2.0);
        dwa.end_epoch(&[1.0, 1.0]);
        assert_eq!(dwa.task_weights(), vec![1.0, 1.0]);
        // task 0 stalled (ratio 1), task 1 halved (ratio 0.5)
        dwa.end_epoch(&[1.0, 0.5]);
        let (a, b) = ((1.0f64 / 2.0).exp(), (0.5f64 / 2.0).exp());
        let w = dwa.task_weights();
        assert!((w[0] - 2.0 * a / (a + b)).abs() < 1e-12 && (w[1] - 2.0 * b / (a + b)).abs() < 1e-12, "{w:?}");
        assert!(w[0] > w[1]);
        // an epoch without task 1's labels carries its mean 0.5: ratios (1/1, 0.5/0.5) → equal weights
        dwa.end_epoch(&[1.0, f64::NAN]);
        assert_eq!(dwa.task_weights(), vec![1.0, 1.0]);
        let mut fresh = DynamicWeightAverage::new(2, 2.0);
        fresh.end_epoch(&[f64::NAN, 1.0]);
        assert!(fresh.history.is_empty(), "nothing to carry from: the epoch is left out");
    }
}
