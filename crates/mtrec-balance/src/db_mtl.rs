//! DB-MTL, dual-balancing multi-task learning (Lin, Ye, Zhang & Kwok, 2023), on the gradients at
//! the shared tensors.
//!
//! Two balancings: the **loss scale** by a logarithm — each task contributes `∇log ℓ_t = ∇ℓ_t/ℓ_t`
//! (`ℓ_t` the loss plus 1e-8, as LibMTL) — and the **gradient magnitude**: every task's log-gradient
//! is rescaled to the largest norm among them, `Σ_t (max_k n_k / n_t)·∇log ℓ_t`. `n_t` is an
//! exponential moving average of `‖∇log ℓ_t‖` with the paper's decaying rate `β_k = β/k^σ` at step
//! `k` (`balance.db_mtl_beta` 0.9 as LibMTL, `balance.db_mtl_sigma` 0.5 where LibMTL's command line
//! defaults to 0, a constant rate); the
//! coefficients of the raw gradients are `c_t = (max_k n_k / n_t)/ℓ_t`.
//!
//! Where LibMTL keeps the moving average of the whole *parameter* gradient vectors, mtrec's task
//! gradients live at the shared activations of each batch — a different set of rows every step, so
//! vectors of different steps cannot be averaged. The average is kept of their norms, the direction
//! is the step's own. As `β_k` decays (0.09 after 100 steps, 0.009 after 10⁴), LibMTL's buffer
//! approaches the step's gradient too, and the two updates agree; early steps differ. A task absent
//! from the batch gets coefficient 0 and keeps its average.

use serde::{Deserialize, Serialize};

use crate::{
    BalanceError, GradientCombiner,
    balancer::{parse_state, state_value},
};

/// LibMTL's floor under the losses (`log(loss + 1e-8)`).
const FLOOR: f64 = 1e-8;

/// DB-MTL's dual balancing, with its moving average of the log-gradient norms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DbMtl {
    beta: f64,
    sigma: f64,
    /// The moving average `n_t` of each task's `‖∇log ℓ_t‖` (none before the task's first step).
    norms: Vec<Option<f64>>,
    /// Steps taken (`k`).
    steps: u64,
}

/// What a checkpoint keeps.
#[derive(Serialize, Deserialize)]
struct DbMtlState {
    norms: Vec<Option<f64>>,
    steps: u64,
}

impl DbMtl {
    /// For `n_tasks` tasks, the average's rate `β/k^σ`.
    pub fn new(n_tasks: usize, beta: f64, sigma: f64) -> Self {
        Self { beta, sigma, norms: vec![None; n_tasks], steps: 0 }
    }

    /// The moving averages of the log-gradient norms.
    pub fn norms(&self) -> &[Option<f64>] {
        &self.norms
    }
}

impl GradientCombiner for DbMtl {
    fn name(&self) -> &'static str {
        "db_mtl"
    }

    fn coefficients(&mut self, gram: &[Vec<f64>], losses: &[f64]) -> Vec<f64> {
        self.coefficients_of_present(gram, losses, &vec![true; gram.len()])
    }

    /// On the whole Gram matrix, so that the averages keep their task indices.
    fn coefficients_of_present(&mut self, gram: &[Vec<f64>], losses: &[f64], present: &[bool]) -> Vec<f64> {
        self.steps += 1;
        let rate = self.beta / (self.steps as f64).powf(self.sigma);
        for t in (0..gram.len()).filter(|&t| present[t]) {
            let norm = gram[t][t].max(0.0).sqrt() / (losses[t] + FLOOR);
            // LibMTL: buffer ← g + β_k·(buffer − g), from a buffer of zeros
            let previous = self.norms[t].unwrap_or(0.0);
            self.norms[t] = Some(norm + rate * (previous - norm));
        }
        let largest = (0..gram.len()).filter(|&t| present[t]).filter_map(|t| self.norms[t]).fold(0.0, f64::max);
        (0..gram.len())
            .map(|t| match self.norms[t] {
                Some(n) if present[t] && n > 0.0 => largest / n / (losses[t] + FLOOR),
                _ => 0.0,
            })
            .collect()
    }

    /// The averages and the step count.
    fn state(&self) -> serde_json::Value {
        state_value(&DbMtlState { norms: self.norms.clone(), steps: self.steps })
    }

    fn load_state(&mut self, state: serde_json::Value) -> Result<(), BalanceError> {
        let state: DbMtlState = parse_state(self.name(), state)?;
        if state.norms.len() != self.norms.len() {
            return Err(BalanceError(format!(
                "checkpoint: db_mtl holds {} norms, the run has {} tasks",
                state.norms.len(),
                self.norms.len()
            )));
        }
        (self.norms, self.steps) = (state.norms, state.steps);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::gram;

    /// By hand: g = ((3, 0), (0, 1)), losses (1, 0.5): log-gradient norms 3 and 2; at the first step
    /// `β₁ = 0.9` and the buffer starts at 0, so n = 0.1·(3, 2) = (0.3, 0.2) and the coefficients are
    /// (0.3/0.3/1, 0.3/0.2/0.5) = (1, 3): both log-gradients at norm 3 (3·1 = 3, 1·3 = 3). A second
    /// step with the same gradients: β₂ = 0.9/√2, n = g + β₂(n − g).
    #[test]
    fn dual_balancing_by_hand() {
        let mut db = DbMtl::new(2, 0.9, 0.5);
        let g = gram(&[vec![3.0, 0.0], vec![0.0, 1.0]]);
        let c = db.coefficients(&g, &[1.0, 0.5]);
        assert!((c[0] - 1.0).abs() < 1e-6 && (c[1] - 3.0).abs() < 1e-6, "{c:?}");
        let shared = |c: &[f64]| ((c[0] * 3.0f64).powi(2) + (c[1] * 1.0f64).powi(2)).sqrt();
        assert!((shared(&c) - 18f64.sqrt()).abs() < 1e-5);
        db.coefficients(&g, &[1.0, 0.5]);
        let beta = 0.9 / 2f64.sqrt();
        let want = 3.0 + beta * (0.3 - 3.0);
        assert!((db.norms()[0].unwrap() - want).abs() < 1e-7, "{:?}", db.norms());
    }

    /// A task absent from the batch: coefficient 0, its average untouched; the present task keeps
    /// its own scale (its log-gradient at its own norm: coefficient 1/ℓ).
    #[test]
    fn an_absent_task_keeps_its_average() {
        let mut db = DbMtl::new(2, 0.9, 0.5);
        let g = gram(&[vec![3.0, 0.0], vec![0.0, 1.0]]);
        db.coefficients(&g, &[1.0, 0.5]);
        let before = db.norms()[1];
        let zero = gram(&[vec![3.0, 0.0], vec![0.0, 0.0]]);
        let c = db.coefficients_of_present(&zero, &[2.0, 0.0], &[true, false]);
        assert_eq!((c[1], db.norms()[1]), (0.0, before));
        assert!((c[0] - 0.5).abs() < 1e-6, "{c:?}");
    }

    #[test]
    fn state_round_trips() {
        let mut db = DbMtl::new(2, 0.9, 0.5);
        db.coefficients(&gram(&[vec![1.0, 2.0], vec![0.5, 0.0]]), &[0.3, 0.7]);
        let mut other = DbMtl::new(2, 0.9, 0.5);
        other.load_state(db.state()).unwrap();
        assert_eq!(other, db);
        assert!(DbMtl::new(3, 0.9, 0.5).load_state(db.state()).unwrap_err().0.contains("3 tasks"));
    }

    /// LibMTL's DB-MTL over three steps with the same gradients. LibMTL averages the log-gradient
    /// vectors (from zero) and sums the averaged vectors; with constant gradients its buffer is
    /// `s_k·∇log ℓ_t` with `s_k = 1 − β_k + β_k·s_{k−1}` (`s_0 = 0`) for every task, so its update is
    /// `s_k ×` mtrec's, whose direction is the step's own gradient. From `reference/balancers.json`.
    #[test]
    fn matches_the_reference_implementation() {
        let scale = |run: &crate::test_support::Reference, step: usize| {
            let (beta, sigma) = (run.option("beta"), run.option("sigma"));
            (1..=step + 1).fold(0.0, |s, k| {
                let rate = beta / (k as f64).powf(sigma);
                1.0 - rate + rate * s
            })
        };
        crate::test_support::check_against_references(
            "db_mtl",
            1e-6,
            |run| DbMtl::new(run.jacobian.len(), run.option("beta"), run.option("sigma")),
            scale,
        );
    }
}
