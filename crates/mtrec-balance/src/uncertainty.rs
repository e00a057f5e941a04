//! Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018).
//!
//! One learnable `s_t = log σ_t²` per task, initialised to 0; the objective is
//! `Σ_t c_t·exp(−s_t)·L_t + ½·s_t` with `c_t = 1` for classification (`1/σ²·L + log σ`) and
//! `c_t = ½` for regression (`1/(2σ²)·L + log σ`). For fixed losses the optimum is
//! `s_t = log(2·c_t·L_t)`, an effective weight `c_t·exp(−s_t) = 1/(2·L_t)`: a task with a small loss
//! is weighted *up* — the `s_t` are not clamped. The network and the `s_t` get the gradient of the
//! same objective; the `s_t` have their own Adam (`balance.weight_lr`, default the network's).

use burn::tensor::Tensor;
use mtrec_data::TaskKind;
use serde::{Deserialize, Serialize};

use crate::{
    BalanceError, BalancedGradients, LossBalancer, TaskGraph,
    balancer::{batch_mean, detached, parse_state, state_value, to_host},
    learnable::{LearnableTaskValues, vector},
};

/// Which `c_t` the objective uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UncertaintyConvention {
    /// The paper's: `c_t = 1` for classification tasks, `½` for regression tasks.
    #[default]
    Kendall,
    /// `c_t = ½` for every task, as if all were regression (what several libraries do).
    AllRegression,
}

/// Learnable homoscedastic-uncertainty task weights.
pub struct UncertaintyWeighting {
    coefficients: Vec<f64>,
    log_variances: LearnableTaskValues,
}

impl UncertaintyWeighting {
    /// For tasks of `kinds`, log-variances trained with learning rate `lr`.
    pub fn new(kinds: &[TaskKind], convention: UncertaintyConvention, lr: f64) -> Self {
        let coefficients = kinds
            .iter()
            .map(|kind| match (convention, kind) {
                (UncertaintyConvention::Kendall, TaskKind::Binary | TaskKind::Multiclass) => 1.0,
                _ => 0.5,
            })
            .collect();
        Self { coefficients, log_variances: LearnableTaskValues::new(vec![0.0; kinds.len()], lr) }
    }

    /// The current log-variances `s_t`.
    pub fn log_variances(&self) -> &[f64] {
        self.log_variances.values()
    }

    /// `Σ_t c_t·exp(−s_t)·L_t + ½·s_t` over the tasks with `present[t]` (a task absent from the
    /// step's batch has `L_t = 0`; its `½·s_t` is left out too, else it would pull `s_t` down with
    /// no loss to weigh).
    ///
    /// # Shapes
    /// - losses: `T` tensors `[1]`; log_variances: `[T]`
    /// - output: `[1]`
    pub fn objective(
        losses: &[Tensor<1>],
        log_variances: Tensor<1>,
        coefficients: &[f64],
        present: &[bool],
    ) -> Tensor<1> {
        let device = log_variances.device();
        let loss = Tensor::cat(losses.to_vec(), 0);
        let c = vector(coefficients, &device);
        let half: Vec<f64> = present.iter().map(|&p| if p { 0.5 } else { 0.0 }).collect();
        (c * log_variances.clone().neg().exp() * loss + log_variances * vector(&half, &device)).sum()
    }
}

impl LossBalancer for UncertaintyWeighting {
    fn name(&self) -> &'static str {
        "uncertainty"
    }

    fn backward(&mut self, graph: &mut dyn TaskGraph) -> Result<BalancedGradients, BalanceError> {
        let losses = graph.task_losses();
        let device = losses[0].device();
        let s = self.log_variances.tensor(&device);
        let present = graph.task_present();
        let mut grads = Self::objective(&losses, s.clone(), &self.coefficients, &present).backward();
        let ds = s
            .grad_remove(&mut grads)
            .ok_or_else(|| BalanceError("uncertainty weighting needs an autodiff device".into()))?;
        // ∂/∂s_t is linear in the losses: over ranks, the share-weighted sum is the batch's
        let mut ds = to_host(vec![ds]);
        batch_mean(graph, &mut ds);
        self.log_variances.step_where(&ds, &present);
        Ok(BalancedGradients { parts: vec![grads], task_losses: detached(&losses) })
    }

    /// The effective weights `c_t·exp(−s_t)`.
    fn task_weights(&self) -> Vec<f64> {
        self.coefficients.iter().zip(self.log_variances()).map(|(c, s)| c * (-s).exp()).collect()
    }

    /// The log-variances and their Adam moments.
    fn state(&self) -> serde_json::Value {
        state_value(&self.log_variances)
    }

    fn load_state(&mut self, state: serde_json::Value) -> Result<(), BalanceError> {
        self.log_variances.restore(parse_state(self.name(), state)?, "uncertainty log-variances")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CutForward, TaskGraph};
    use burn::tensor::{Device, TensorData};

    fn objective_host(l: &[f64], s: &[f64], c: &[f64]) -> f64 {
        (0..l.len()).map(|t| c[t] * (-s[t]).exp() * l[t] + 0.5 * s[t]).sum()
    }

    /// Gradients of the objective w.r.t. a model input and the log-variances against central
    /// finite differences (f64 on the host).
    #[test]
    fn objective_gradients_match_finite_differences() {
        let device = Device::flex().autodiff();
        let (x0, s0, c) = (0.7f64, [0.3f64, -0.8], [1.0f64, 0.5]);
        // L1 = (x − 1)², L2 = 3x²
        let losses_host = |x: f64| [(x - 1.0).powi(2), 3.0 * x * x];
        let x = Tensor::<1>::from_data(TensorData::new(vec![x0 as f32], [1]), &device).require_grad();
        let s = vector(&s0, &device).require_grad();
        let losses = vec![(x.clone() - 1.0).powi_scalar(2), x.clone().powi_scalar(2).mul_scalar(3.0)];
        let grads = UncertaintyWeighting::objective(&losses, s.clone(), &c, &[true, true]).backward();
        let gx = x.grad(&grads).unwrap().into_scalar::<f32>() as f64;
        let gs = s.grad(&grads).unwrap().into_data().try_into_vec_as::<f64>().unwrap();
        let h = 1e-5;
        let fd_x =
            (objective_host(&losses_host(x0 + h), &s0, &c) - objective_host(&losses_host(x0 - h), &s0, &c)) / (2.0 * h);
        assert!((gx - fd_x).abs() < 1e-4 * fd_x.abs().max(1.0), "d/dx {gx} vs {fd_x}");
        for t in 0..2 {
            let (mut up, mut down) = (s0, s0);
            up[t] += h;
            down[t] -= h;
            let l = losses_host(x0);
            let fd = (objective_host(&l, &up, &c) - objective_host(&l, &down, &c)) / (2.0 * h);
            assert!((gs[t] - fd).abs() < 1e-4, "d/ds{t} {} vs {fd}", gs[t]);
        }
    }

    /// Constant losses 0.1 (binary) and 2.0 (regression).
    struct ConstantLosses {
        device: Device,
    }

    impl TaskGraph for ConstantLosses {
        fn n_tasks(&self) -> usize {
            2
        }
        fn task_losses(&mut self) -> Vec<Tensor<1>> {
            vec![vector(&[0.1], &self.device), vector(&[2.0], &self.device)]
        }
        fn cut_forward(&mut self) -> CutForward {
            unreachable!("uncertainty weighting needs no cut")
        }
        fn probed_forward(&mut self, _probe: &[bool]) -> crate::ProbedForward {
            unreachable!("uncertainty weighting needs no probes")
        }
    }

    /// With fixed losses the log-variances reach `log(2·c·L)`: the effective weight of the task with
    /// the small loss rises well above 1 (no clamping), the other falls to 1/(2L).
    #[test]
    fn weights_converge_to_the_closed_form_optimum() {
        let device = Device::flex().autodiff();
        let mut uw =
            UncertaintyWeighting::new(&[TaskKind::Binary, TaskKind::Regression], UncertaintyConvention::Kendall, 0.05);
        assert_eq!(uw.task_weights(), vec![1.0, 0.5]);
        let mut graph = ConstantLosses { device };
        for _ in 0..600 {
            uw.backward(&mut graph).unwrap();
        }
        let s = uw.log_variances();
        assert!((s[0] - (2.0f64 * 0.1).ln()).abs() < 0.02, "{s:?}");
        assert!((s[1] - (2.0f64 * 0.5 * 2.0).ln()).abs() < 0.02, "{s:?}");
        let w = uw.task_weights();
        assert!((w[0] - 5.0).abs() < 0.15 && (w[1] - 0.25).abs() < 0.01, "{w:?}");
    }

    #[test]
    fn all_regression_convention_halves_classification_weights() {
        let uw = UncertaintyWeighting::new(&[TaskKind::Binary], UncertaintyConvention::AllRegression, 0.01);
        assert_eq!(uw.task_weights(), vec![0.5]);
    }
}
