//! Nash-MTL, multi-task learning as a bargaining game (Navon et al., ICML 2022).
//!
//! The update `d = Σ_t α_t·g_t` is the Nash bargaining solution: `α_i·⟨g_i, d⟩ = 1` for every task,
//! i.e. `(G·α)_i = 1/α_i` — FairGrad's equations at α-fairness 1 ([`crate::fairgrad`], whose
//! solver finds the exact fixed point), so orthogonal gradients get `α_t = 1/‖g_t‖`. The official
//! code divides the Gram matrix by its Frobenius norm `ν` before its solver but multiplies it back
//! in the constraint (`α_i·ν·(G/ν·α)_i ≥ 1`), so its weights solve the equations on `G` itself, as
//! here (checked against LibMTL's copy of that code, `reference/balancers.json`). The official code
//! approximates the fixed point with a few sequential convex programmes (cvxpy) — which on
//! ill-conditioned gradients can stop at a feasible point of `α_i·(G·α)_i ≥ 1` that is not the
//! bargaining solution (see the reference test) — and clips the shared gradient's norm at 1;
//! neither is done here (clip with `train.clip_norm` if wanted).
//! Applied to the gradients at the shared tensors.

use crate::{GradientCombiner, fairgrad::fair_weights};

/// Nash-MTL's combination.
#[derive(Debug, Default, Clone, Copy)]
pub struct NashMtl;

impl GradientCombiner for NashMtl {
    fn name(&self) -> &'static str {
        "nash_mtl"
    }

    fn coefficients(&mut self, gram: &[Vec<f64>], _losses: &[f64]) -> Vec<f64> {
        fair_weights(gram, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simplex::multiply;

    /// By hand: G = diag(1, 4), so α_i²·G_ii = 1: α = (1, ½); the update g1 + ½·g2 has
    /// α_i·⟨g_i, d⟩ = 1 for both tasks.
    #[test]
    fn bargaining_weights_by_hand() {
        let a = NashMtl.coefficients(&[vec![1.0, 0.0], vec![0.0, 4.0]], &[]);
        assert!((a[0] - 1.0).abs() < 1e-12 && (a[1] - 0.5).abs() < 1e-12, "{a:?}");
    }

    /// Conflicting gradients: α_i·(G·α)_i = 1 for every task (the bargaining condition), and every
    /// task improves (G·α > 0).
    #[test]
    fn every_task_gets_the_same_share() {
        let g = vec![vec![1.0, -0.8, 0.2], vec![-0.8, 4.0, 0.5], vec![0.2, 0.5, 0.25]];
        let a = NashMtl.coefficients(&g, &[]);
        let ga = multiply(&g, &a);
        for i in 0..3 {
            assert!(ga[i] > 0.0);
            assert!((a[i] * ga[i] - 1.0).abs() < 1e-9, "{a:?} {ga:?}");
        }
    }

    /// LibMTL's Nash-MTL (the official code: 20 sequential convex programmes with ECOS, no clipping),
    /// from `reference/balancers.json`: the same update where its programmes reach the bargaining
    /// point. On `scaled2` (gradient norms 30 and 0.23, cosine −0.53) they stop — with 20, 200 or
    /// 2,000 iterations alike — at weights (0.231, 56.3) where `α_i·(G·α)_i` is (1, 118): feasible for
    /// their constraint `α_i·(G·α)_i ≥ 1` but not the bargaining solution, which mtrec returns
    /// ((0.048, 6.38), both products 1; `every_task_gets_the_same_share` checks the equations).
    #[test]
    fn matches_the_reference_implementation_where_it_reaches_the_bargaining_point() {
        let runs = crate::test_support::references("nash_mtl");
        for run in runs.iter().filter(|r| r.case != "scaled2") {
            let c = NashMtl.coefficients(&run.gram(), &run.steps[0].losses);
            run.assert_step(0, &run.update(&c), 1e-3);
        }
        let scaled = runs.iter().find(|r| r.case == "scaled2").expect("scaled2");
        let a = NashMtl.coefficients(&scaled.gram(), &[]);
        let ga = multiply(&scaled.gram(), &a);
        assert!((a[0] * ga[0] - 1.0).abs() < 1e-9 && (a[1] * ga[1] - 1.0).abs() < 1e-9, "{a:?}");
        assert!((a[0] - 0.048).abs() < 1e-3 && (a[1] - 6.38).abs() < 0.01, "{a:?}");
    }
}
