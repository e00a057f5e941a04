//! IMTL-G, the gradient half of impartial multi-task learning (Liu et al., ICLR 2021).
//!
//! The shared update `g = Σ_t α_t·g_t` (`Σα = 1`) has equal projections on every task's unit
//! gradient `u_t = g_t/‖g_t‖`. Closed form: with rows `D_t = g_1 − g_t` and `U_t = u_1 − u_t`
//! (`t ≥ 2`), `α_{2..T} = g_1·Uᵀ·(D·Uᵀ)⁻¹` and `α_1 = 1 − Σ_{t≥2} α_t`; every product is read off
//! the Gram matrix.

use crate::{GradientCombiner, simplex::solve_linear};

/// IMTL-G's impartial combination.
#[derive(Debug, Default)]
pub struct ImtlG;

impl GradientCombiner for ImtlG {
    fn name(&self) -> &'static str {
        "imtl_g"
    }

    fn coefficients(&mut self, gram: &[Vec<f64>], _losses: &[f64]) -> Vec<f64> {
        let t = gram.len();
        let uniform = vec![1.0 / t as f64; t];
        if t == 1 {
            return vec![1.0];
        }
        let norm: Vec<f64> = (0..t).map(|i| gram[i][i].sqrt().max(1e-20)).collect();
        // g_1·U_j and D_i·U_j for i, j ≥ 2 (0-based 1..t)
        let g1_u = |j: usize| gram[0][0] / norm[0] - gram[0][j] / norm[j];
        let d_u = |i: usize, j: usize| g1_u(j) - gram[i][0] / norm[0] + gram[i][j] / norm[j];
        // α·M = a  ⇔  Mᵀ·αᵀ = aᵀ
        let m_t: Vec<Vec<f64>> = (1..t).map(|j| (1..t).map(|i| d_u(i, j)).collect()).collect();
        let a: Vec<f64> = (1..t).map(g1_u).collect();
        match solve_linear(m_t, a) {
            Some(rest) if rest.iter().all(|v| v.is_finite()) => {
                std::iter::once(1.0 - rest.iter().sum::<f64>()).chain(rest).collect()
            }
            _ => uniform,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::gram;

    /// g1 = (1, 0), g2 = (0, 2): equal projections need α₁ = 2α₂, so α = (2/3, 1/3).
    #[test]
    fn two_task_case_by_hand() {
        let a = ImtlG.coefficients(&gram(&[vec![1.0, 0.0], vec![0.0, 2.0]]), &[]);
        assert!((a[0] - 2.0 / 3.0).abs() < 1e-12 && (a[1] - 1.0 / 3.0).abs() < 1e-12, "{a:?}");
    }

    /// Three random-ish gradients in R⁴: the combination's projections on the unit gradients agree.
    #[test]
    fn projections_on_unit_gradients_are_equal() {
        let g = vec![vec![1.0, 0.5, -0.3, 2.0], vec![-0.4, 1.5, 0.2, 0.1], vec![0.3, -0.2, 3.0, 0.5]];
        let a = ImtlG.coefficients(&gram(&g), &[]);
        assert!((a.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let d: Vec<f64> = (0..4).map(|k| (0..3).map(|t| a[t] * g[t][k]).sum()).collect();
        let proj: Vec<f64> = g
            .iter()
            .map(|gt| {
                let n = gt.iter().map(|v| v * v).sum::<f64>().sqrt();
                gt.iter().zip(&d).map(|(x, y)| x * y).sum::<f64>() / n
            })
            .collect();
        assert!((proj[0] - proj[1]).abs() < 1e-9 && (proj[0] - proj[2]).abs() < 1e-9, "{proj:?}");
    }

    /// LibMTL's IMTL (its gradient half) and TorchJD's IMTL-G, from `reference/balancers.json`.
    #[test]
    fn matches_the_reference_implementations() {
        crate::test_support::check_against_references("imtl", 1e-9, |_| ImtlG, |_, _| 1.0);
    }
}
