//! UPGrad, unconflicting projection of gradients (Quinton & Rey, "Jacobian Descent for
//! Multi-Objective Optimization", 2024; TorchJD's `UPGrad`).
//!
//! Each task's gradient `g_i` is projected onto the dual cone of all the task gradients — the
//! directions that conflict with none of them — and the projections are summed. In the Gram
//! matrix `G` (`G_ij = ⟨g_i, g_j⟩`) the projection of `Σ_j u_j·g_j` is `Σ_j v_j·g_j` with
//! `v = argmin_{v ≥ u} vᵀ·G·v` (the dual of the cone projection), so the update is
//! `Σ_i Σ_j v⁽ⁱ⁾_j·g_j` with `v⁽ⁱ⁾` solved from `u = e_i`. Every such combination has
//! `⟨update, g_j⟩ ≥ 0` for every task — no task's loss rises to first order — and where no pair
//! conflicts (`G·e_i ≥ 0` for every `i`) the update is `Σ_i g_i`, fixed weights.
//!
//! TorchJD's default weights each `e_i` by `1/T` (its update is the mean's scale); mtrec uses
//! `u = e_i` (TorchJD's `pref_vector` of ones) so that the update is on the scale of `Σ_t L_t`
//! like fixed weights and the learning rate means the same for both. As in TorchJD, `G` is
//! normalised by its trace and regularised by `10⁻⁴·I` before the solve; the small non-negative
//! quadratic programme is solved by coordinate descent, exact per coordinate.

use crate::GradientCombiner;

/// The regularisation added to the normalised Gram matrix (TorchJD's `reg_eps`).
const REGULARISATION: f64 = 1e-4;

/// UPGrad's combination.
#[derive(Debug, Default, Clone, Copy)]
pub struct UpGrad;

impl UpGrad {
    /// `argmin_{v ≥ u} vᵀ·G·v` for a positive definite `G`.
    pub fn project(gram: &[Vec<f64>], u: &[f64]) -> Vec<f64> {
        let t = u.len();
        let mut v = u.to_vec();
        for _ in 0..10_000 {
            let mut moved = 0.0f64;
            for j in 0..t {
                // the exact minimiser along coordinate j, kept at or above u_j
                let rest: f64 = (0..t).filter(|&k| k != j).map(|k| gram[j][k] * v[k]).sum();
                let best = (-rest / gram[j][j]).max(u[j]);
                moved = moved.max((best - v[j]).abs());
                v[j] = best;
            }
            if moved < 1e-13 {
                break;
            }
        }
        v
    }
}

impl GradientCombiner for UpGrad {
    fn name(&self) -> &'static str {
        "upgrad"
    }

    fn coefficients(&mut self, gram: &[Vec<f64>], _losses: &[f64]) -> Vec<f64> {
        let t = gram.len();
        let trace: f64 = (0..t).map(|i| gram[i][i]).sum();
        if trace <= 0.0 {
            return vec![1.0; t]; // every gradient is zero: any combination is zero
        }
        let g: Vec<Vec<f64>> = (0..t)
            .map(|i| (0..t).map(|j| gram[i][j] / trace + if i == j { REGULARISATION } else { 0.0 }).collect())
            .collect();
        let mut c = vec![0.0; t];
        for i in 0..t {
            let mut e = vec![0.0; t];
            e[i] = 1.0;
            for (ck, vk) in c.iter_mut().zip(Self::project(&g, &e)) {
                *ck += vk;
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{simplex::multiply, test_support::gram};

    /// By hand, without regularisation: g1 = (1, 0), g2 = (−1, 1), G = [[1, −1], [−1, 2]].
    /// From u = e1: G·e1 = (1, −1) conflicts, so v = (1, x) with x minimising 1 − 2x + 2x²: x = ½,
    /// v = (1, ½) (g1 + ½·g2 = (½, ½), orthogonal to g2). From u = e2: v = (x, 1) minimising
    /// x² − 2x + 2: x = 1, v = (1, 1) (g1 + g2 = (0, 1), orthogonal to g1). Sum: (2, 1.5).
    #[test]
    fn projects_conflicting_gradients_by_hand() {
        let g = gram(&[vec![1.0, 0.0], vec![-1.0, 1.0]]);
        assert_eq!(UpGrad::project(&g, &[1.0, 0.0]), vec![1.0, 0.5]);
        assert_eq!(UpGrad::project(&g, &[0.0, 1.0]), vec![1.0, 1.0]);
        let c = UpGrad.coefficients(&g, &[]);
        assert!((c[0] - 2.0).abs() < 1e-3 && (c[1] - 1.5).abs() < 1e-3, "{c:?} (regularised)");
    }

    /// Three tasks where one conflicts with both others: the update conflicts with none
    /// (`G·c ≥ 0`), unlike the sum; and gradients that do not conflict are summed (fixed weights).
    #[test]
    fn the_update_conflicts_with_no_task() {
        let g = gram(&[vec![1.0, 0.0, 0.0], vec![0.0, 1.0, 0.0], vec![-2.0, -1.0, 0.5]]);
        let sum = multiply(&g, &[1.0, 1.0, 1.0]);
        assert!(sum.iter().any(|&d| d < 0.0), "the plain sum conflicts: {sum:?}");
        let c = UpGrad.coefficients(&g, &[]);
        let dots = multiply(&g, &c);
        assert!(dots.iter().all(|&d| d >= -1e-6), "⟨update, g_j⟩ = {dots:?}");
        let agreeing = gram(&[vec![1.0, 0.2], vec![0.3, 1.0]]);
        let c = UpGrad.coefficients(&agreeing, &[]);
        assert!(c.iter().all(|&x| (x - 1.0).abs() < 1e-12), "{c:?}");
    }

    /// LibMTL's UPGrad (quadprog, preference `1/T`: mtrec's update `/T`) and TorchJD's (preference
    /// ones), from `reference/balancers.json`.
    #[test]
    fn matches_the_reference_implementations() {
        crate::test_support::check_against_references(
            "upgrad",
            1e-6,
            |_| UpGrad,
            |run, _| if run.options["pref"] == "mean" { 1.0 / run.jacobian.len() as f64 } else { 1.0 },
        );
    }
}
