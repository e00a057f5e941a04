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

/// For each task, the other tasks in a random order (PCGrad's and GradVac's visiting orders).
pub(crate) fn random_orders(n_tasks: usize, rng: &mut EpochRng) -> Vec<Vec<usize>> {
    (0..n_tasks)
        .map(|i| {
            let mut others: Vec<usize> = (0..n_tasks).filter(|&j| j != i).collect();
            others.shuffle(rng.rng());
            others
        })
        .collect()
}

/// The coefficients of `Σ_i g_i'` when each `g_i' = Σ_k a[i][k]·g_k`.
pub(crate) fn column_sums(a: &[Vec<f64>]) -> Vec<f64> {
    (0..a.first().map_or(0, Vec::len)).map(|k| a.iter().map(|row| row[k]).sum()).collect()
}

impl GradientCombiner for PcGrad {
    fn name(&self) -> &'static str {
        "pcgrad"
    }

    fn coefficients(&mut self, gram: &[Vec<f64>], _losses: &[f64]) -> Vec<f64> {
        let orders = random_orders(gram.len(), &mut self.rng);
        column_sums(&Self::projected(gram, &orders))
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
    use crate::{
        simplex::quadratic,
        test_support::{combine2 as combine, gram},
    };

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

    /// LibMTL's and TorchJD's PCGrad on two tasks (each task has one other to visit, so the random
    /// order does not matter), from `reference/balancers.json`; LibMTL adds 1e-8 to `‖g_j‖²`.
    #[test]
    fn matches_the_reference_implementations() {
        crate::test_support::check_against_references("pcgrad", 1e-6, |_| PcGrad::new(1), |_, _| 1.0);
    }
}
