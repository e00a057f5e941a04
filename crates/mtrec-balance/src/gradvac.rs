//! GradVac, gradient vaccine (Wang, Tsvetkov, Firat & Cao, ICLR 2021).
//!
//! PCGrad removes a conflict only when two gradients point apart (cosine < 0); GradVac keeps, for
//! every ordered pair of tasks, a target cosine `φ̂_ij` — an exponential moving average of the
//! cosines seen, `φ̂_ij ← (1 − β)·φ̂_ij + β·φ_ij` (`balance.gradvac_beta`, default 0.01 as in the
//! paper; starting at 0) — and lifts any pair whose cosine falls below its target back onto it:
//! for each task `i`, over the other tasks `j` in a random order, with `φ_ij = cos(g_i', g_j)` of
//! the current `g_i'`,
//!
//! `φ_ij < φ̂_ij  ⇒  g_i' ← g_i' + ‖g_i'‖·(φ̂_ij·√(1 − φ_ij²) − φ_ij·√(1 − φ̂_ij²)) / (‖g_j‖·√(1 − φ̂_ij²))·g_j`,
//!
//! after which `cos(g_i', g_j) = φ̂_ij`. The update is `Σ_i g_i'`. As in PCGrad every `g_i'` stays a
//! combination of the original gradients, so the method runs on the Gram matrix; task orders are
//! drawn from a generator seeded by the run's seed and the epoch, and the targets are part of the
//! checkpoint. The targets move every step (the paper's Algorithm 1, LibMTL and TorchJD alike: on two
//! tasks, where the order does not matter, three steps equal both libraries' to 1e-6,
//! `reference/balancers.json`). Applied to the gradients at the shared tensors, the whole shared
//! part as one group (the paper's per-layer grouping is not done).

use serde::{Deserialize, Serialize};

use crate::{
    BalanceError, GradientCombiner,
    balancer::{EpochRng, parse_state, state_value},
    pcgrad::{column_sums, random_orders},
    simplex::quadratic,
};

const SALT: u64 = 0x4756_4143;

/// GradVac's combination, with its target cosines.
pub struct GradVac {
    beta: f64,
    /// `targets[i][j]`: φ̂_ij.
    targets: Vec<Vec<f64>>,
    rng: EpochRng,
}

/// What a checkpoint keeps.
#[derive(Serialize, Deserialize)]
struct GradVacState {
    epoch: serde_json::Value,
    targets: Vec<Vec<f64>>,
}

impl GradVac {
    /// For `n_tasks` tasks, the targets' moving-average rate `beta` in (0, 1], task orders seeded
    /// with `seed` (and the epoch).
    pub fn new(n_tasks: usize, beta: f64, seed: u64) -> Self {
        Self { beta, targets: vec![vec![0.0; n_tasks]; n_tasks], rng: EpochRng::new(seed, SALT) }
    }

    /// The current target cosines (`[i][j]`: φ̂_ij).
    pub fn targets(&self) -> &[Vec<f64>] {
        &self.targets
    }

    /// The lifted gradients as rows of coefficients over the original ones (`A[i][k]`:
    /// `g_i' = Σ_k A[i][k]·g_k`) for the task orders `orders[i]`; moves the targets.
    pub fn lifted(&mut self, gram: &[Vec<f64>], orders: &[Vec<usize>]) -> Vec<Vec<f64>> {
        let t = gram.len();
        (0..t)
            .map(|i| {
                let mut a = vec![0.0; t];
                a[i] = 1.0;
                for &j in &orders[i] {
                    let (norm_i, norm_j) = (quadratic(gram, &a, &a).max(0.0).sqrt(), gram[j][j].max(0.0).sqrt());
                    if norm_i == 0.0 || norm_j == 0.0 {
                        continue;
                    }
                    let dot: f64 = (0..t).map(|k| a[k] * gram[k][j]).sum();
                    let phi = (dot / (norm_i * norm_j)).clamp(-1.0, 1.0);
                    let target = self.targets[i][j];
                    let room = (1.0 - target * target).max(0.0).sqrt();
                    if phi < target && room > 0.0 {
                        let lift = norm_i * (target * (1.0 - phi * phi).max(0.0).sqrt() - phi * room) / (norm_j * room);
                        a[j] += lift;
                    }
                    self.targets[i][j] = (1.0 - self.beta) * target + self.beta * phi;
                }
                a
            })
            .collect()
    }
}

impl GradientCombiner for GradVac {
    fn name(&self) -> &'static str {
        "gradvac"
    }

    fn coefficients(&mut self, gram: &[Vec<f64>], _losses: &[f64]) -> Vec<f64> {
        let orders = random_orders(gram.len(), &mut self.rng);
        column_sums(&self.lifted(gram, &orders))
    }

    /// On the whole Gram matrix, so that the targets keep their task indices: a pair with an absent
    /// task's zero gradient is neither lifted nor moves its target; absent tasks get coefficient 0.
    fn coefficients_of_present(&mut self, gram: &[Vec<f64>], losses: &[f64], present: &[bool]) -> Vec<f64> {
        let mut c = self.coefficients(gram, losses);
        c.iter_mut().zip(present).filter(|(_, p)| !**p).for_each(|(c, _)| *c = 0.0);
        c
    }

    fn end_epoch(&mut self) {
        self.rng.next_epoch();
    }

    /// The epoch the task orders are seeded from, and the target cosines.
    fn state(&self) -> serde_json::Value {
        state_value(&GradVacState { epoch: self.rng.state(), targets: self.targets.clone() })
    }

    fn load_state(&mut self, state: serde_json::Value) -> Result<(), BalanceError> {
        let state: GradVacState = parse_state(self.name(), state)?;
        let t = self.targets.len();
        if state.targets.len() != t || state.targets.iter().any(|row| row.len() != t) {
            return Err(BalanceError(format!("checkpoint: the gradvac targets are not {t} × {t}")));
        }
        self.rng.load_state(self.name(), state.epoch)?;
        self.targets = state.targets;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{combine2 as combine, gram};

    fn cos(a: [f64; 2], b: [f64; 2]) -> f64 {
        (a[0] * b[0] + a[1] * b[1]) / ((a[0] * a[0] + a[1] * a[1]).sqrt() * (b[0] * b[0] + b[1] * b[1]).sqrt())
    }

    /// By hand: g1 = (1, 0), g2 = (0, 1) (cosine 0), targets φ̂12 = φ̂21 = 0.6 (√(1 − φ̂²) = 0.8).
    /// φ = 0 < 0.6 lifts g1 by ‖g1‖·(0.6·1 − 0)/(‖g2‖·0.8) = 0.75 of g2: g1' = (1, 0.75), whose
    /// cosine with g2 is 0.75/1.25 = 0.6, the target. Likewise g2' = (0.75, 1). With β = 0.5 the
    /// targets move to ½·0.6 + ½·0 = 0.3.
    #[test]
    fn lifts_a_pair_onto_its_target_by_hand() {
        let g = [[1.0, 0.0], [0.0, 1.0]];
        let mut m = GradVac::new(2, 0.5, 1);
        m.targets = vec![vec![0.0, 0.6], vec![0.6, 0.0]];
        let a = m.lifted(&gram(&g), &[vec![1], vec![0]]);
        let (g1, g2) = (combine(&a[0], &g), combine(&a[1], &g));
        assert!((g1[0] - 1.0).abs() < 1e-12 && (g1[1] - 0.75).abs() < 1e-12, "{g1:?}");
        assert!((g2[0] - 0.75).abs() < 1e-12 && (g2[1] - 1.0).abs() < 1e-12, "{g2:?}");
        assert!((cos(g1, g[1]) - 0.6).abs() < 1e-12);
        assert!((m.targets[0][1] - 0.3).abs() < 1e-12 && (m.targets[1][0] - 0.3).abs() < 1e-12);
    }

    /// A pair above its target is left alone, and its target still moves towards the cosine seen.
    #[test]
    fn agreeing_pairs_are_left_alone_and_targets_follow() {
        let g = [[1.0, 0.0], [1.0, 1.0]]; // cosine 1/√2
        let mut m = GradVac::new(2, 0.01, 7);
        assert_eq!(m.coefficients(&gram(&g), &[]), vec![1.0, 1.0]);
        let expected = 0.01 * std::f64::consts::FRAC_1_SQRT_2;
        assert!((m.targets()[0][1] - expected).abs() < 1e-12 && (m.targets()[1][0] - expected).abs() < 1e-12);
    }

    /// With targets at 0, GradVac is PCGrad: a negative cosine is lifted to 0 (orthogonal).
    #[test]
    fn zero_targets_project_like_pcgrad() {
        let g = [[1.0, 0.0], [-1.0, 1.0]];
        let mut m = GradVac::new(2, 0.01, 1);
        let a = m.lifted(&gram(&g), &[vec![1], vec![0]]);
        let (g1, g2) = (combine(&a[0], &g), combine(&a[1], &g));
        assert!((g1[0] - 0.5).abs() < 1e-12 && (g1[1] - 0.5).abs() < 1e-12, "{g1:?}"); // PCGrad's (0.5, 0.5)
        assert!(g2[0].abs() < 1e-12 && (g2[1] - 1.0).abs() < 1e-12, "{g2:?}"); // and (0, 1)
    }

    /// The checkpoint holds the targets and the epoch; a state of the wrong size is refused.
    #[test]
    fn state_round_trips() {
        let g = [[1.0, 0.0], [-1.0, 1.0]];
        let mut m = GradVac::new(2, 0.2, 3);
        m.coefficients(&gram(&g), &[]);
        m.end_epoch();
        let mut again = GradVac::new(2, 0.2, 3);
        again.load_state(m.state()).unwrap();
        assert_eq!(again.targets(), m.targets());
        assert_eq!(again.coefficients(&gram(&g), &[]), m.coefficients(&gram(&g), &[]));
        let e = GradVac::new(3, 0.2, 3).load_state(m.state()).unwrap_err().to_string();
        assert!(e.contains("3 × 3"), "{e}");
    }

    /// LibMTL's and TorchJD's GradVac on two tasks over three steps with the same gradients (the
    /// targets move every step in both), from `reference/balancers.json`.
    #[test]
    fn matches_the_reference_implementations() {
        crate::test_support::check_against_references(
            "gradvac",
            1e-6,
            |run| GradVac::new(run.jacobian.len(), run.option("beta"), 1),
            |_, _| 1.0,
        );
    }
}
