//! FAMO, fast adaptive multitask optimisation (Liu, Liu, Jin, Stone & Liu, NeurIPS 2023), as the
//! official code (`famo.py`) computes it.
//!
//! Logits `ξ` (weights `z = softmax(ξ)`, from 0). The network steps along the gradient of
//! `Σ_t (z_t/c)·log ℓ_t` with `c = Σ_t z_t/ℓ_t` held constant — `Σ_t z_t/(c·ℓ_t)·∇ℓ_t`, which
//! decreases every task's loss at the same *rate* where it can. After the update the loop forwards
//! the same batch again ([`LossBalancer::needs_losses_after_step`]): with
//! `δ_t = log ℓ_t(before) − log ℓ_t(after)` (each task's log-loss decrease), `ξ` takes one Adam
//! step (learning rate `balance.weight_lr`, default 0.025) along `J_softmax(ξ)ᵀ·δ + γ·ξ`
//! (`balance.famo_gamma`, default 0.01, Adam's L2 weight decay as `torch.optim.Adam` applies it):
//! the tasks whose loss fell fastest lose weight. `ℓ_t` is the loss plus 1e-8 (the official code's
//! `min_losses` are 0). A task absent from the batch (no labels there) takes no part: not in `c`,
//! no gradient, `δ_t = 0`.

use serde::{Deserialize, Serialize};

use crate::{
    BalanceError, BalancedGradients, LossBalancer, TaskGraph,
    balancer::{batch_mean, detached, parse_state, state_value, to_host, weighted_sum},
    learnable::LearnableTaskValues,
};

/// The official code's floor under the losses (`loss − min_loss + 1e-8`, `min_loss = 0`).
const FLOOR: f64 = 1e-8;

/// FAMO's task weighting.
pub struct Famo {
    gamma: f64,
    logits: LearnableTaskValues,
    /// This step's log-losses before the update, with the tasks present.
    before: Option<(Vec<f64>, Vec<bool>)>,
    /// The last step's coefficients of `∇ℓ_t`.
    coefficients: Vec<f64>,
}

/// What a checkpoint keeps: the logits and their Adam moments.
#[derive(Serialize, Deserialize)]
struct FamoState {
    logits: LearnableTaskValues,
}

impl Famo {
    /// `n_tasks` logits at 0, trained by Adam with learning rate `lr` and weight decay `gamma`.
    pub fn new(n_tasks: usize, lr: f64, gamma: f64) -> Self {
        Self {
            gamma,
            logits: LearnableTaskValues::new(vec![0.0; n_tasks], lr),
            before: None,
            coefficients: vec![1.0; n_tasks],
        }
    }

    /// `z = softmax(ξ)`.
    pub fn weights(&self) -> Vec<f64> {
        let xi = self.logits.values();
        let max = xi.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = xi.iter().map(|v| (v - max).exp()).collect();
        let total: f64 = e.iter().sum();
        e.iter().map(|v| v / total).collect()
    }

    /// The coefficients `z_t/(c·ℓ_t)` of the network's step for the present tasks' losses (0 for
    /// the absent ones), `c = Σ_present z_t/ℓ_t`.
    pub fn step_coefficients(&self, losses: &[f64], present: &[bool]) -> Vec<f64> {
        let z = self.weights();
        let c: f64 = (0..z.len()).filter(|&t| present[t]).map(|t| z[t] / (losses[t] + FLOOR)).sum();
        (0..z.len()).map(|t| if present[t] && c > 0.0 { z[t] / (c * (losses[t] + FLOOR)) } else { 0.0 }).collect()
    }

    /// The logits' gradient `J_softmax(ξ)ᵀ·δ + γ·ξ`: `∂z_i/∂ξ_j = z_i·(1[i = j] − z_j)`, so
    /// `(Jᵀδ)_j = z_j·(δ_j − Σ_i z_i·δ_i)`.
    pub fn logit_gradient(&self, delta: &[f64]) -> Vec<f64> {
        let z = self.weights();
        let mean: f64 = z.iter().zip(delta).map(|(z, d)| z * d).sum();
        let xi = self.logits.values();
        (0..z.len()).map(|j| z[j] * (delta[j] - mean) + self.gamma * xi[j]).collect()
    }
}

impl LossBalancer for Famo {
    fn name(&self) -> &'static str {
        "famo"
    }

    fn backward(&mut self, graph: &mut dyn TaskGraph) -> Result<BalancedGradients, BalanceError> {
        let losses = graph.task_losses();
        let mut host = to_host(detached(&losses));
        batch_mean(graph, &mut host); // the batch's losses, the same on every rank
        if let Some(t) = host.iter().position(|l| !l.is_finite() || *l < 0.0) {
            return Err(BalanceError(format!("famo: the loss of task {t} is {} (FAMO needs losses ≥ 0)", host[t])));
        }
        let present = graph.task_present();
        self.coefficients = self.step_coefficients(&host, &present);
        self.before = Some((host.iter().map(|l| (l + FLOOR).ln()).collect(), present));
        Ok(BalancedGradients {
            parts: vec![weighted_sum(&losses, &self.coefficients).backward()],
            task_losses: detached(&losses),
        })
    }

    fn needs_losses_after_step(&self) -> bool {
        true
    }

    fn after_step(&mut self, losses: &[f64]) -> Result<(), BalanceError> {
        let Some((before, present)) = self.before.take() else {
            return Err(BalanceError("famo: losses after a step that was not taken".into()));
        };
        let delta: Vec<f64> =
            (0..losses.len()).map(|t| if present[t] { before[t] - (losses[t] + FLOOR).ln() } else { 0.0 }).collect();
        let grad = self.logit_gradient(&delta);
        if grad.iter().any(|g| !g.is_finite()) {
            return Err(BalanceError(format!("famo: non-finite logit gradient {grad:?} (losses after {losses:?})")));
        }
        self.logits.step(&grad);
        Ok(())
    }

    /// The coefficients of `∇ℓ_t` of the last step, `z_t/(c·ℓ_t)`.
    fn task_weights(&self) -> Vec<f64> {
        self.coefficients.clone()
    }

    /// The logits with their Adam moments.
    fn state(&self) -> serde_json::Value {
        state_value(&FamoState { logits: self.logits.clone() })
    }

    fn load_state(&mut self, state: serde_json::Value) -> Result<(), BalanceError> {
        let state: FamoState = parse_state(self.name(), state)?;
        self.logits.restore(state.logits, "famo logits")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The step by hand: z = (½, ½), losses (1, 4): c = ½ + ⅛ = ⅝, coefficients (½/⅝, ½/(⅝·4)) =
    /// (0.8, 0.2) — the gradient of Σ (z/c)·log ℓ; an absent task gets 0 and leaves c.
    #[test]
    fn step_coefficients_by_hand() {
        let famo = Famo::new(2, 0.025, 0.01);
        let c = famo.step_coefficients(&[1.0, 4.0], &[true, true]);
        assert!((c[0] - 0.8).abs() < 1e-7 && (c[1] - 0.2).abs() < 1e-7, "{c:?}");
        let c = famo.step_coefficients(&[1.0, 0.0], &[true, false]);
        assert!((c[0] - 1.0).abs() < 1e-7 && c[1] == 0.0, "{c:?}");
    }

    /// The logit update by hand: z = (½, ½), δ = (0.3, 0.1), z·δ = 0.2: Jᵀδ = (z₀(δ₀ − 0.2),
    /// z₁(δ₁ − 0.2)) = (0.05, −0.05); Adam's first step moves each logit by −lr·sign: task 0 (its
    /// loss fell faster) loses weight. Weight decay adds γ·ξ.
    #[test]
    fn the_faster_task_loses_weight() {
        let mut famo = Famo::new(2, 0.025, 0.0);
        let g = famo.logit_gradient(&[0.3, 0.1]);
        assert!((g[0] - 0.05).abs() < 1e-12 && (g[1] + 0.05).abs() < 1e-12, "{g:?}");
        famo.before = Some((vec![0.0, 0.0], vec![true, true]));
        // log ℓ after = −δ: losses e^{−0.3}, e^{−0.1} (minus the floor)
        famo.after_step(&[(-0.3f64).exp() - FLOOR, (-0.1f64).exp() - FLOOR]).unwrap();
        let xi = famo.logits.values();
        assert!((xi[0] + 0.025).abs() < 1e-6 && (xi[1] - 0.025).abs() < 1e-6, "{xi:?}");
        assert!(famo.weights()[0] < 0.5);
        let mut decayed = Famo::new(2, 0.025, 0.5);
        decayed.logits.set(vec![1.0, -1.0]);
        assert_eq!(decayed.logit_gradient(&[0.0, 0.0]), vec![0.5, -0.5]);
    }

    /// Softmax's Jacobian against central finite differences of Σ δ·softmax(ξ).
    #[test]
    fn logit_gradient_matches_finite_differences() {
        let mut famo = Famo::new(3, 0.1, 0.0);
        famo.logits.set(vec![0.3, -1.2, 0.7]);
        let delta = [0.4, -0.2, 1.1];
        let objective = |xi: &[f64]| {
            let mut f = Famo::new(3, 0.1, 0.0);
            f.logits.set(xi.to_vec());
            f.weights().iter().zip(&delta).map(|(z, d)| z * d).sum::<f64>()
        };
        let g = famo.logit_gradient(&delta);
        for j in 0..3 {
            let (mut up, mut down) = (vec![0.3, -1.2, 0.7], vec![0.3, -1.2, 0.7]);
            up[j] += 1e-6;
            down[j] -= 1e-6;
            let fd = (objective(&up) - objective(&down)) / 2e-6;
            assert!((g[j] - fd).abs() < 1e-8, "{j}: {} vs {fd}", g[j]);
        }
    }

    /// LibMTL's FAMO over three steps: the network's update `Σ_t z_t/(c·ℓ_t)·g_t` of each step and
    /// the logits' Adam step from the losses before and after it. From `reference/balancers.json`.
    #[test]
    fn matches_the_reference_implementation() {
        for run in crate::test_support::references("famo") {
            let t = run.jacobian.len();
            let mut famo = Famo::new(t, run.option("lr"), run.option("gamma"));
            for (k, step) in run.steps.iter().enumerate() {
                let present = vec![true; t];
                let c = famo.step_coefficients(&step.losses, &present);
                run.assert_step(k, &run.update(&c), 1e-9);
                famo.before = Some((step.losses.iter().map(|l| (l + FLOOR).ln()).collect(), present));
                famo.after_step(step.losses_after.as_ref().expect("losses after")).unwrap();
            }
        }
    }
}
