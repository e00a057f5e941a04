//! MGDA-UB (Sener & Koltun, NeurIPS 2018): multiple-gradient descent with the upper bound.
//!
//! The shared update is the min-norm point of the convex hull of the task gradients at the shared
//! representation: `α = argmin_{α ∈ Δ} ‖Σ_t α_t·g_t‖²` (for two tasks, closed form
//! `α₁ = clamp(⟨g₂ − g₁, g₂⟩ / ‖g₁ − g₂‖², 0, 1)`). Taking the gradients at the representation
//! instead of at every shared parameter is the paper's "upper bound" (UB) variant.

use crate::{
    GradientCombiner,
    simplex::{minimize_on_simplex, multiply, quadratic},
};

/// MGDA-UB's min-norm combination.
#[derive(Debug, Default)]
pub struct Mgda;

impl Mgda {
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

    fn coefficients(&mut self, gram: &[Vec<f64>]) -> Vec<f64> {
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

    #[test]
    fn min_norm_point_is_orthogonal_to_the_hull_for_three_tasks() {
        // g = e1, e2, e3 scaled 1, 2, 3: α ∝ 1/s², and ⟨d, g_t⟩ equal for all active t
        let gram = vec![vec![1.0, 0.0, 0.0], vec![0.0, 4.0, 0.0], vec![0.0, 0.0, 9.0]];
        let a = Mgda.coefficients(&gram);
        let total = 1.0 + 0.25 + 1.0 / 9.0;
        for (t, s2) in [1.0, 4.0, 9.0].iter().enumerate() {
            assert!((a[t] - 1.0 / s2 / total).abs() < 1e-5, "{a:?}");
        }
    }
}
