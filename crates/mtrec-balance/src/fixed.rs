//! Fixed weights: minimise `Σ_t w_t · L_t` with constant `w_t` (default 1, equal weighting).

use crate::{
    BalanceError, BalancedGradients, LossBalancer, TaskGraph,
    diagnostics::{ConflictLog, WeightedStep},
};

/// Constant per-task loss weights.
#[derive(Debug, Clone)]
pub struct FixedWeights {
    weights: Vec<f64>,
    step: WeightedStep,
}

impl FixedWeights {
    /// Weights in task order; no gradient diagnostics.
    pub fn new(weights: Vec<f64>) -> Self {
        Self { weights, step: WeightedStep::new(0) }
    }

    /// With the task gradients measured every `every`-th step ([`crate::diagnostics`]).
    pub fn with_diagnostics(mut self, every: u64) -> Self {
        self.step = WeightedStep::new(every);
        self
    }
}

impl LossBalancer for FixedWeights {
    fn name(&self) -> &'static str {
        "fixed"
    }

    fn backward(&mut self, graph: &mut dyn TaskGraph) -> Result<BalancedGradients, BalanceError> {
        self.step.backward(graph, &self.weights)
    }

    fn task_weights(&self) -> Vec<f64> {
        self.weights.clone()
    }

    fn end_epoch(&mut self, _mean_task_losses: &[f64]) {
        self.step.end_epoch();
    }

    fn conflict_log(&self) -> Option<&ConflictLog> {
        Some(self.step.log())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BalanceConfig, CutForward, test_support::context};
    use burn::tensor::{Device, Tensor, TensorData};

    /// L1 = x², L2 = 3·x on a single leaf x.
    struct Toy {
        x: Tensor<1>,
    }

    impl TaskGraph for Toy {
        fn n_tasks(&self) -> usize {
            2
        }
        fn task_losses(&mut self) -> Vec<Tensor<1>> {
            vec![self.x.clone().powi_scalar(2), self.x.clone().mul_scalar(3.0)]
        }
        fn cut_forward(&mut self) -> CutForward {
            unreachable!("fixed weights need no cut")
        }
        fn probed_forward(&mut self, _probe: &[bool]) -> crate::ProbedForward {
            unreachable!("fixed weights without diagnostics need no probes")
        }
    }

    #[test]
    fn gradient_is_the_weighted_sum_of_task_gradients() {
        let device = Device::flex().autodiff();
        let x = Tensor::<1>::from_data(TensorData::new(vec![1.5f32], [1]), &device).require_grad();
        let mut toy = Toy { x: x.clone() };
        let mut fixed = BalanceConfig { weights: Some(vec![2.0, 0.5]), diagnose_every: Some(0), ..Default::default() }
            .init(&context(2))
            .unwrap();
        let out = fixed.backward(&mut toy).unwrap();
        let g = x.grad(&out.parts[0]).unwrap().into_scalar::<f32>();
        // d/dx (2·x² + 0.5·3x) = 4x + 1.5 = 7.5 at x = 1.5
        assert!((g - 7.5).abs() < 1e-5, "{g}");
        let losses: Vec<f32> = out.task_losses.into_iter().map(|l| l.into_scalar::<f32>()).collect();
        assert_eq!(losses, vec![2.25, 4.5]);
        assert_eq!(fixed.task_weights(), vec![2.0, 0.5]);
    }

    #[test]
    fn wrong_weight_count_names_the_key() {
        let err = BalanceConfig { weights: Some(vec![1.0]), ..Default::default() }.init(&context(2)).err().unwrap();
        assert!(err.contains("balance.weights"), "{err}");
    }
}
