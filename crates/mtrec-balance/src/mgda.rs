//! MGDA-UB (Sener & Koltun, NeurIPS 2018): multiple-gradient descent with the upper bound.
//!
//! The shared update is the min-norm point of the convex hull of the task gradients at the shared
//! representation: `α = argmin_{α ∈ Δ} ‖Σ_t α_t·g_t‖²` (for two tasks, closed form
//! `α₁ = clamp(⟨g₂ − g₁, g₂⟩ / ‖g₁ − g₂‖², 0, 1)`). Taking the gradients at the representation
//! instead of at every shared parameter is the paper's "upper bound" (UB) variant.
//!
//! `balance.mgda_normalization` is the official code's `normalization_type`
//! (`gradient_normalizers`): the min-norm weights are found on `g_t / n_t` with `n_t` = 1 (`none`,
//! the default), `‖g_t‖` (`l2`), `L_t` (`loss`) or `L_t·‖g_t‖` (`loss+`), and — as in that code,
//! which backpropagates `Σ α_t·L_t` — applied to the raw gradients.

use serde::{Deserialize, Serialize};

use crate::{
    GradientCombiner,
    simplex::{minimize_on_simplex, multiply, quadratic},
};

/// How MGDA normalises each task's gradient before the min-norm solve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MgdaNormalization {
    /// The raw gradients.
    #[default]
    None,
    /// `g_t / ‖g_t‖`.
    L2,
    /// `g_t / L_t`.
    Loss,
    /// `g_t / (L_t·‖g_t‖)`.
    #[serde(rename = "loss+")]
    LossPlus,
}

/// MGDA-UB's min-norm combination.
#[derive(Debug, Default)]
pub struct Mgda {
    normalization: MgdaNormalization,
}

impl Mgda {
    /// MGDA-UB with the gradients normalised as `normalization` says.
    pub fn new(normalization: MgdaNormalization) -> Self {
        Self { normalization }
    }

    /// `n_t` of each task (see the module docs), floored away from 0.
    pub fn normalizers(&self, gram: &[Vec<f64>], losses: &[f64]) -> Vec<f64> {
        (0..gram.len())
            .map(|t| {
                let norm = gram[t][t].max(0.0).sqrt();
                let n = match self.normalization {
                    MgdaNormalization::None => 1.0,
                    MgdaNormalization::L2 => norm,
                    MgdaNormalization::Loss => losses[t],
                    MgdaNormalization::LossPlus => losses[t] * norm,
                };
                n.max(1e-12)
            })
            .collect()
    }

    /// The two-task closed form.
    pub fn two_task(gram: &[Vec<f64>]) -> [f64; 2] {
        let denominator = gram[0][0] + gram[1][1] - 2.0 * gram[0][1];
        if denominator <= 0.0 {
            return [0.5, 0.5];
        }
        let a = ((gram[1][1] - gram[0][1]) / denominator).clamp(0.0, 1.0);
        [a, 1.0 - a]
    }
}

impl GradientCombiner for Mgda {
    fn name(&self) -> &'static str {
        "mgda"
    }

    fn coefficients(&mut self, gram: &[Vec<f64>], losses: &[f64]) -> Vec<f64> {
        let n = self.normalizers(gram, losses);
        let scaled: Vec<Vec<f64>> =
            (0..gram.len()).map(|i| (0..gram.len()).map(|j| gram[i][j] / (n[i] * n[j])).collect()).collect();
        let gram = &scaled;
        if gram.len() == 2 {
            return Self::two_task(gram).to_vec();
        }
        minimize_on_simplex(gram.len(), |a| {
            (quadratic(gram, a, a), multiply(gram, a).into_iter().map(|v| 2.0 * v).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_task_closed_form_by_hand_and_against_the_general_solver() {
        // g1 = (1, 0), g2 = (0, 2): min ‖a·g1 + (1−a)·g2‖² = a² + 4(1−a)² → a = 4/5
        let gram = vec![vec![1.0, 0.0], vec![0.0, 4.0]];
        let [a, b] = Mgda::two_task(&gram);
        assert!((a - 0.8).abs() < 1e-12 && (b - 0.2).abs() < 1e-12);
        let general = minimize_on_simplex(2, |x| {
            (quadratic(&gram, x, x), multiply(&gram, x).into_iter().map(|v| 2.0 * v).collect())
        });
        assert!((general[0] - 0.8).abs() < 1e-6, "{general:?}");
        // one gradient inside the other's direction: the shorter one alone is the min-norm point
        let gram = vec![vec![1.0, 2.0], vec![2.0, 4.0]];
        assert_eq!(Mgda::two_task(&gram), [1.0, 0.0]);
    }

    /// The normalisations of the official code, by hand: g1 = (1, 0) with L1 = 2, g2 = (0, 2) with
    /// L2 = 0.5; for orthogonal gradients the min-norm weights are ∝ 1/‖ĝ_t‖². `none`: (1, 1/4) →
    /// (0.8, 0.2); `l2`: unit vectors → (½, ½); `loss`: ĝ = (0.5, 0), (0, 4) → (4, 1/16) → (64/65,
    /// 1/65); `loss+`: ĝ = (0.5, 0), (0, 2) → (4, 1/4) → (16/17, 1/17).
    #[test]
    fn gradient_normalizations_by_hand() {
        let gram = vec![vec![1.0, 0.0], vec![0.0, 4.0]];
        let losses = [2.0, 0.5];
        let close = |a: Vec<f64>, b: [f64; 2]| (a[0] - b[0]).abs() < 1e-9 && (a[1] - b[1]).abs() < 1e-9;
        let got = Mgda::new(MgdaNormalization::None).coefficients(&gram, &losses);
        assert!(close(got.clone(), [0.8, 0.2]), "{got:?}");
        let got = Mgda::new(MgdaNormalization::L2).coefficients(&gram, &losses);
        assert!(close(got.clone(), [0.5, 0.5]), "{got:?}");
        let got = Mgda::new(MgdaNormalization::Loss).coefficients(&gram, &losses);
        assert!(close(got.clone(), [64.0 / 65.0, 1.0 / 65.0]), "{got:?}");
        let got = Mgda::new(MgdaNormalization::LossPlus).coefficients(&gram, &losses);
        assert!(close(got.clone(), [16.0 / 17.0, 1.0 / 17.0]), "{got:?}");
    }

    #[test]
    fn min_norm_point_is_orthogonal_to_the_hull_for_three_tasks() {
        // g = e1, e2, e3 scaled 1, 2, 3: α ∝ 1/s², and ⟨d, g_t⟩ equal for all active t
        let gram = vec![vec![1.0, 0.0, 0.0], vec![0.0, 4.0, 0.0], vec![0.0, 0.0, 9.0]];
        let a = Mgda::default().coefficients(&gram, &[1.0; 3]);
        let total = 1.0 + 0.25 + 1.0 / 9.0;
        for (t, s2) in [1.0, 4.0, 9.0].iter().enumerate() {
            assert!((a[t] - 1.0 / s2 / total).abs() < 1e-5, "{a:?}");
        }
    }

    /// LibMTL's MGDA (Frank-Wolfe, stopping at a change of 1e-5), from `reference/balancers.json`.
    #[test]
    fn matches_the_reference_implementations() {
        crate::test_support::check_against_references("mgda", 1e-4, |_| Mgda::new(MgdaNormalization::None), |_, _| 1.0);
    }
}
