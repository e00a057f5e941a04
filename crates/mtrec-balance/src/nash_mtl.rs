//! Nash-MTL, multi-task learning as a bargaining game (Navon et al., ICML 2022).
//!
//! The update `d = Σ_t α_t·g_t` is the Nash bargaining solution: `α_i·⟨g_i, d⟩ = 1` for every task,
//! i.e. `(G·α)_i = 1/α_i` — FairGrad's equations at α-fairness 1 ([`crate::fairgrad`], whose
//! solver finds the exact fixed point). As in the official code the Gram matrix is first divided
//! by its Frobenius norm, and the solved `α` are the weights (so orthogonal gradients of equal
//! length get weight `T^{1/4}` each). The official code approximates the fixed point with a few
//! sequential convex programmes (cvxpy) and clips the shared gradient's norm at 1; neither is done
//! here (clip with `train.clip_norm` if wanted). Applied to the gradients at the shared tensors.

use crate::{GradientCombiner, fairgrad::fair_weights};

/// Nash-MTL's combination.
#[derive(Debug, Default, Clone, Copy)]
pub struct NashMtl;

impl GradientCombiner for NashMtl {
    fn name(&self) -> &'static str {
        "nash_mtl"
    }

    fn coefficients(&mut self, gram: &[Vec<f64>], _losses: &[f64]) -> Vec<f64> {
        let norm = gram.iter().flatten().map(|x| x * x).sum::<f64>().sqrt();
        if norm == 0.0 {
            return vec![0.0; gram.len()];
        }
        let normalised: Vec<Vec<f64>> = gram.iter().map(|row| row.iter().map(|x| x / norm).collect()).collect();
        fair_weights(&normalised, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simplex::multiply;

    /// By hand: G = diag(1, 4), ‖G‖_F = √17, so α_i²·G_ii/√17 = 1: α = (17^{1/4}, 17^{1/4}/2); the
    /// update α1·g1 + α2·g2 then has equal projections α_i·⟨g_i, d⟩ = √17 on both tasks' scale.
    #[test]
    fn bargaining_weights_by_hand() {
        let a = NashMtl.coefficients(&[vec![1.0, 0.0], vec![0.0, 4.0]], &[]);
        let r = 17f64.powf(0.25);
        assert!((a[0] - r).abs() < 1e-12 && (a[1] - r / 2.0).abs() < 1e-12, "{a:?}");
    }

    /// Conflicting gradients: α_i·(G·α)_i is the same for every task (the bargaining condition on
    /// the un-normalised matrix: ‖G‖_F), and every task improves (G·α > 0).
    #[test]
    fn every_task_gets_the_same_share() {
        let g = vec![vec![1.0, -0.8, 0.2], vec![-0.8, 4.0, 0.5], vec![0.2, 0.5, 0.25]];
        let a = NashMtl.coefficients(&g, &[]);
        let ga = multiply(&g, &a);
        let norm = g.iter().flatten().map(|x| x * x).sum::<f64>().sqrt();
        for i in 0..3 {
            assert!(ga[i] > 0.0);
            assert!((a[i] * ga[i] - norm).abs() < 1e-9, "{a:?} {ga:?}");
        }
    }
}
