//! PCGrad, gradient surgery (Yu et al., NeurIPS 2020).
//!
//! For each task `i`, in a random order over the other tasks `j`: if `⟨g_i^PC, g_j⟩ < 0`, remove the
//! conflicting component, `g_i^PC ← g_i^PC − ⟨g_i^PC, g_j⟩/‖g_j‖²·g_j`. The update is `Σ_i g_i^PC`.
//! Every `g_i^PC` stays a combination of the original gradients, so the surgery runs on the Gram
//! matrix; the order is drawn from a generator seeded by the run's seed and the epoch.

use rand::seq::SliceRandom;

use crate::{BalanceError, GradientCombiner, balancer::EpochRng};

const SALT: u64 = 0x5043_4752;

/// PCGrad's projection, applied to the gradients at the shared tensors.
pub struct PcGrad {
    rng: EpochRng,
}

impl PcGrad {
    /// Task orders drawn from a generator seeded with `seed` (and the epoch).
    pub fn new(seed: u64) -> Self {
        Self { rng: EpochRng::new(seed, SALT) }
    }

    /// The projected gradients as rows of coefficients over the original ones (`A[i][k]`:
    /// `g_i^PC = Σ_k A[i][k]·g_k`), for the task order `orders[i]`.
    pub fn projected(gram: &[Vec<f64>], orders: &[Vec<usize>]) -> Vec<Vec<f64>> {
        let t = gram.len();
        (0..t)
            .map(|i| {
                let mut a = vec![0.0; t];
                a[i] = 1.0;
                for &j in &orders[i] {
                    let dot: f64 = (0..t).map(|k| a[k] * gram[k][j]).sum();
                    if dot < 0.0 && gram[j][j] > 0.0 {
                        a[j] -= dot / gram[j][j];
                    }
                }
                a
            })
            .collect()
    }
}

impl GradientCombiner for PcGrad {
    fn name(&self) -> &'static str {
        "pcgrad"
    }

    fn coefficients(&mut self, gram: &[Vec<f64>], _losses: &[f64]) -> Vec<f64> {
        let t = gram.len();
        let orders: Vec<Vec<usize>> = (0..t)
            .map(|i| {
                let mut others: Vec<usize> = (0..t).filter(|&j| j != i).collect();
                others.shuffle(self.rng.rng());
                others
            })
            .collect();
        let a = Self::projected(gram, &orders);
        (0..t).map(|k| a.iter().map(|row| row[k]).sum()).collect()
    }

    fn end_epoch(&mut self) {
        self.rng.next_epoch();
    }

    /// The epoch the task orders are seeded from.
    fn state(&self) -> serde_json::Value {
        self.rng.state()
    }

    fn load_state(&mut self, state: serde_json::Value) -> Result<(), BalanceError> {
        self.rng.load_state(self.name(), state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simplex::quadratic;

    fn gram(g: &[[f64; 2]]) -> Vec<Vec<f64>> {
        g.iter().map(|a| g.iter().map(|b| a[0] * b[0] + a[1] * b[1]).collect()).collect()
    }

    fn combine(a: &[f64], g: &[[f64; 2]]) -> [f64; 2] {
        let mut v = [0.0; 2];
        for (c, gi) in a.iter().zip(g) {
            v[0] += c * gi[0];
            v[1] += c * gi[1];
        }
        v
    }

    /// g1 = (1, 0), g2 = (−1, 1) conflict (⟨g1, g2⟩ = −1): g1^PC = g1 − (−1/2)·g2 = (0.5, 0.5),
    /// g2^PC = g2 − (−1/1)·g1 = (0, 1); both are orthogonal to the other task's gradient.
    #[test]
    fn conflicting_gradients_are_projected_by_hand() {
        let g = [[1.0, 0.0], [-1.0, 1.0]];
        let gm = gram(&g);
        let a = PcGrad::projected(&gm, &[vec![1], vec![0]]);
        assert_eq!(combine(&a[0], &g), [0.5, 0.5]);
        assert_eq!(combine(&a[1], &g), [0.0, 1.0]);
        assert!(quadratic(&gm, &a[0], &[0.0, 1.0]).abs() < 1e-12);
        let c = PcGrad::new(1).coefficients(&gm, &[]);
        assert_eq!(combine(&c, &g), [0.5, 1.5]);
    }

    #[test]
    fn agreeing_gradients_are_left_alone() {
        let g = [[1.0, 0.0], [1.0, 1.0]];
        assert_eq!(PcGrad::new(1).coefficients(&gram(&g), &[]), vec![1.0, 1.0]);
    }
}
