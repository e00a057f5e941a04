//! FairGrad, α-fair multi-task learning (Ban & Ji, ICML 2024), and the solver it shares with
//! Nash-MTL ([`crate::NashMtl`]).
//!
//! The update `d = Σ_t w_t·g_t` is chosen so that every task's first-order improvement `⟨g_i, d⟩`
//! is α-fair: `(G·w)_i = w_i^{−1/α}` (`G_ij = ⟨g_i, g_j⟩`, `balance.fairgrad_alpha`, default 1 as
//! in LibMTL). α = 1 is proportional fairness — Nash-MTL's bargaining solution — and α → ∞
//! approaches max-min fairness (MGDA's direction). The official code solves the system with
//! SciPy's `least_squares` from `w = 1/T`; here it is the unique minimiser of the strictly convex
//! `½·wᵀGw − Σ_i φ(w_i)` over `w > 0` (`φ' = w^{−1/α}`: `φ = log w` for α = 1, else
//! `w^{1−1/α}/(1 − 1/α)`), found by Newton's method with a backtracking line search that keeps
//! `w > 0` — the same fixed point, to 1e-12. A task whose gradient at the shared tensors is zero
//! has no fair weight (its equation reads `0 = w^{−1/α}`) and none is needed: it gets weight 0 and
//! the others are solved without it. Applied to the gradients at the shared tensors.

use crate::{
    GradientCombiner,
    simplex::{multiply, solve_linear},
};

/// FairGrad's combination.
#[derive(Debug, Clone, Copy)]
pub struct FairGrad {
    alpha: f64,
}

impl FairGrad {
    /// With fairness `alpha > 0`.
    pub fn new(alpha: f64) -> Self {
        Self { alpha }
    }
}

impl GradientCombiner for FairGrad {
    fn name(&self) -> &'static str {
        "fairgrad"
    }

    fn coefficients(&mut self, gram: &[Vec<f64>], _losses: &[f64]) -> Vec<f64> {
        fair_weights(gram, self.alpha)
    }
}

/// The `w > 0` with `(G·w)_i = w_i^{−1/α}` for every task whose gradient is not zero (weight 0
/// for the others).
pub fn fair_weights(gram: &[Vec<f64>], alpha: f64) -> Vec<f64> {
    let t = gram.len();
    let largest = (0..t).map(|i| gram[i][i]).fold(0.0, f64::max);
    let active: Vec<usize> = (0..t).filter(|&i| gram[i][i] > 1e-12 * largest && largest > 0.0).collect();
    let mut weights = vec![0.0; t];
    if active.is_empty() {
        return weights;
    }
    let g: Vec<Vec<f64>> = active.iter().map(|&i| active.iter().map(|&j| gram[i][j]).collect()).collect();
    for (&i, w) in active.iter().zip(solve_fair(&g, alpha)) {
        weights[i] = w;
    }
    weights
}

/// Newton's method on `½·wᵀGw − Σ φ(w_i)` for a Gram matrix with a positive diagonal.
fn solve_fair(g: &[Vec<f64>], alpha: f64) -> Vec<f64> {
    let n = g.len();
    let p = 1.0 / alpha;
    let phi = |w: f64| if (p - 1.0).abs() < 1e-12 { w.ln() } else { w.powf(1.0 - p) / (1.0 - p) };
    let objective = |w: &[f64]| {
        let gw = multiply(g, w);
        0.5 * w.iter().zip(&gw).map(|(a, b)| a * b).sum::<f64>() - w.iter().map(|&x| phi(x)).sum::<f64>()
    };
    // start where each task alone would be fair: G_ii·w_i = w_i^{−p}
    let mut w: Vec<f64> = (0..n).map(|i| g[i][i].powf(-1.0 / (1.0 + p))).collect();
    let mut f = objective(&w);
    for _ in 0..200 {
        let gw = multiply(g, &w);
        let gradient: Vec<f64> = (0..n).map(|i| gw[i] - w[i].powf(-p)).collect();
        let scale = (0..n).map(|i| (gw[i].abs() + w[i].powf(-p)).max(f64::MIN_POSITIVE)).fold(0.0, f64::max);
        if gradient.iter().all(|d| d.abs() <= 1e-13 * scale) {
            break;
        }
        let hessian: Vec<Vec<f64>> = (0..n)
            .map(|i| (0..n).map(|j| g[i][j] + if i == j { p * w[i].powf(-p - 1.0) } else { 0.0 }).collect())
            .collect();
        let Some(step) = solve_linear(hessian, gradient.clone()) else { break };
        let decrease: f64 = gradient.iter().zip(&step).map(|(a, b)| a * b).sum();
        let mut t = 1.0;
        let mut moved = false;
        for _ in 0..60 {
            let candidate: Vec<f64> = w.iter().zip(&step).map(|(x, d)| x - t * d).collect();
            if candidate.iter().all(|&x| x > 0.0) {
                let fc = objective(&candidate);
                if fc <= f - 1e-4 * t * decrease {
                    w = candidate;
                    f = fc;
                    moved = true;
                    break;
                }
            }
            t /= 2.0;
        }
        if !moved {
            break;
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    /// By hand, orthogonal gradients G = diag(1, 4): `G_ii·w_i = w_i^{−1/α}` gives
    /// `w_i = G_ii^{−α/(1+α)}`: for α = 1, (1, ½); for α = 2, (1, 4^{−2/3}).
    #[test]
    fn orthogonal_gradients_by_hand() {
        let g = vec![vec![1.0, 0.0], vec![0.0, 4.0]];
        let w = FairGrad::new(1.0).coefficients(&g, &[]);
        assert!((w[0] - 1.0).abs() < 1e-12 && (w[1] - 0.5).abs() < 1e-12, "{w:?}");
        let w = FairGrad::new(2.0).coefficients(&g, &[]);
        assert!((w[0] - 1.0).abs() < 1e-12 && (w[1] - 4f64.powf(-2.0 / 3.0)).abs() < 1e-12, "{w:?}");
    }

    /// Conflicting and correlated gradients, three tasks and several α: the weights are positive
    /// and solve the fairness equations; a task with a zero gradient gets weight 0 and leaves the
    /// others' solution as it is without it.
    #[test]
    fn weights_solve_the_fairness_equations() {
        let g = vec![vec![2.0, -1.0, 0.5], vec![-1.0, 3.0, 1.0], vec![0.5, 1.0, 1.5]];
        for alpha in [0.5, 1.0, 2.0, 5.0] {
            let w = fair_weights(&g, alpha);
            let gw = multiply(&g, &w);
            for i in 0..3 {
                assert!(w[i] > 0.0);
                assert!((gw[i] - w[i].powf(-1.0 / alpha)).abs() < 1e-10, "α {alpha}: {gw:?} vs {w:?}");
            }
        }
        let with_zero = vec![vec![2.0, 0.0, -1.0], vec![0.0, 0.0, 0.0], vec![-1.0, 0.0, 3.0]];
        let w = fair_weights(&with_zero, 1.0);
        let without = fair_weights(&[vec![2.0, -1.0], vec![-1.0, 3.0]], 1.0);
        assert_eq!(w[1], 0.0);
        assert!((w[0] - without[0]).abs() < 1e-12 && (w[2] - without[1]).abs() < 1e-12);
        assert_eq!(fair_weights(&[vec![0.0]], 1.0), vec![0.0]);
    }

    /// LibMTL's FairGrad (SciPy's `least_squares`) and TorchJD's, α = 1 and 2, from
    /// `reference/balancers.json`.
    #[test]
    fn matches_the_reference_implementations() {
        crate::test_support::check_against_references(
            "fairgrad",
            1e-5,
            |run| FairGrad::new(run.option("alpha")),
            |_, _| 1.0,
        );
    }
}
