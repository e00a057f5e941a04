//! Learnable task weights (uncertainty weighting's log-variances, GradNorm's weights): one value
//! per task with its own Adam, kept on the host.
//!
//! The values are a handful of numbers, so Adam runs on the host in f64 — no extra device module or
//! optimiser, and the whole state (values and moments) serialises into a checkpoint as it is. The
//! update is burn's `Adam` (β₁ 0.9, β₂ 0.999, bias-corrected moments, `ε` added to `√v̂`).

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

const BETA_1: f64 = 0.9;
const BETA_2: f64 = 0.999;
const EPSILON: f64 = 1e-8;

/// One learnable value per task with its own Adam and learning rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnableTaskValues {
    values: Vec<f64>,
    moment_1: Vec<f64>,
    moment_2: Vec<f64>,
    steps: i32,
    lr: f64,
}

impl LearnableTaskValues {
    /// Starts at `initial`, trained by Adam with learning rate `lr`.
    pub fn new(initial: Vec<f64>, lr: f64) -> Self {
        let n = initial.len();
        Self { values: initial, moment_1: vec![0.0; n], moment_2: vec![0.0; n], steps: 0, lr }
    }

    /// The values as a tensor on `device` that requires gradients, for building an objective.
    pub fn tensor(&self, device: &Device) -> Tensor<1> {
        vector(&self.values, device).require_grad()
    }

    /// The current values.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// One Adam step with the gradient `grad` (one value per task).
    pub fn step(&mut self, grad: &[f64]) {
        self.step_where(grad, &vec![true; grad.len()]);
    }

    /// One Adam step of the values with `update[t]` only (the tasks present in the step's batch):
    /// the others keep their value and moments — a task without labels gives no gradient, and
    /// Adam's momentum would otherwise move it on regardless.
    pub fn step_where(&mut self, grad: &[f64], update: &[bool]) {
        assert_eq!(grad.len(), self.values.len(), "one gradient per task value");
        assert_eq!(update.len(), self.values.len(), "one flag per task value");
        self.steps += 1;
        let (c1, c2) = (1.0 - BETA_1.powi(self.steps), 1.0 - BETA_2.powi(self.steps));
        for (t, &g) in grad.iter().enumerate().filter(|(t, _)| update[*t]) {
            self.moment_1[t] = BETA_1 * self.moment_1[t] + (1.0 - BETA_1) * g;
            self.moment_2[t] = BETA_2 * self.moment_2[t] + (1.0 - BETA_2) * g * g;
            self.values[t] -= self.lr * (self.moment_1[t] / c1) / ((self.moment_2[t] / c2).sqrt() + EPSILON);
        }
    }

    /// Replaces the values (keeping the optimiser's moments).
    pub fn set(&mut self, values: Vec<f64>) {
        assert_eq!(values.len(), self.values.len(), "one value per task");
        self.values = values;
    }

    /// Restores a checkpointed state, checking it is one for as many tasks.
    pub fn restore(&mut self, state: Self, what: &str) -> Result<(), crate::BalanceError> {
        let n = self.values.len();
        if [state.values.len(), state.moment_1.len(), state.moment_2.len()] != [n; 3] {
            return Err(crate::BalanceError(format!(
                "checkpoint: {what} holds {} values, the run has {n} tasks",
                state.values.len()
            )));
        }
        *self = Self { lr: self.lr, ..state };
        Ok(())
    }
}

/// A `[T]` float tensor from host values.
pub fn vector(values: &[f64], device: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(values.iter().map(|&v| v as f32).collect(), [values.len()]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two Adam steps by hand: the first moves each value by `lr·sign(g)`; the second by
    /// `lr·m̂/(√v̂ + ε)` with the bias-corrected moments.
    #[test]
    fn adam_steps_by_hand() {
        let mut v = LearnableTaskValues::new(vec![1.0, -2.0], 0.1);
        v.step(&[0.5, -3.0]);
        assert!((v.values()[0] - 0.9).abs() < 1e-7 && (v.values()[1] + 1.9).abs() < 1e-7, "{:?}", v.values());
        v.step(&[-1.0, -3.0]);
        let m = 0.9 * 0.1 * 0.5 - 0.1 * 1.0;
        let s = 0.999 * 0.001 * 0.25 + 0.001 * 1.0;
        let expected = 0.9 - 0.1 * (m / (1.0 - 0.81)) / ((s / (1.0 - 0.999f64.powi(2))).sqrt() + 1e-8);
        assert!((v.values()[0] - expected).abs() < 1e-8, "{} vs {expected}", v.values()[0]);
        // a constant gradient keeps moving by lr a step
        assert!((v.values()[1] + 1.8).abs() < 1e-7, "{}", v.values()[1]);
    }

    #[test]
    fn restore_rejects_a_state_for_another_task_count() {
        let mut v = LearnableTaskValues::new(vec![0.0; 2], 0.1);
        let err = v.restore(LearnableTaskValues::new(vec![0.0; 3], 0.1), "gradnorm weights").unwrap_err();
        assert!(err.to_string().contains("3 values") && err.to_string().contains("2 tasks"), "{err}");
    }
}
