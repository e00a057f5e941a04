//! Methods that combine the tasks' gradients at the shared tensors (PCGrad, MGDA-UB, CAGrad, IMTL-G) share
//! one step: per-task gradients from a cut forward ([`TaskGradients`]), their Gram matrix on the
//! host, coefficients `c_t` from it, and `Σ_t c_t·g_t` into the shared part. Every such method
//! returns a linear combination of the task gradients, so a [`GradientCombiner`] only maps the
//! `T × T` Gram matrix to the `T` coefficients. Task-specific parameters get their own task's
//! gradient, unscaled (as in the papers and LibMTL).

use crate::{
    BalanceError, BalancedGradients, LossBalancer, TaskGradients, TaskGraph,
    balancer::{batch_mean, batch_squares, restore_stateless},
    diagnostics::ConflictLog,
};

/// Maps the Gram matrix of the task gradients to the coefficients of their combination.
pub trait GradientCombiner {
    /// The method's config name.
    fn name(&self) -> &'static str;

    /// `gram[i][j] = ⟨g_i, g_j⟩` and each task's loss this step; returns `c` with the shared update
    /// `Σ_t c_t·g_t`.
    fn coefficients(&mut self, gram: &[Vec<f64>], losses: &[f64]) -> Vec<f64>;

    /// The coefficients when only the tasks with `present[t]` have labels in the step's batch (the
    /// others' losses and gradients are exactly zero; see [`TaskGraph::task_present`]): by default
    /// [`Self::coefficients`] of the present tasks' Gram matrix and losses, and 0 for the absent
    /// tasks — a zero gradient is no information, and read as one it would stall MGDA (the zero
    /// vector is in the hull), Aligned-MTL (λ_min = 0) or IMTL-G (no unit vector). A method whose
    /// state is indexed by task overrides this to keep its indices.
    fn coefficients_of_present(&mut self, gram: &[Vec<f64>], losses: &[f64], present: &[bool]) -> Vec<f64> {
        let kept: Vec<usize> = (0..gram.len()).filter(|&t| present[t]).collect();
        let mut out = vec![0.0; gram.len()];
        if kept.is_empty() {
            return out;
        }
        let sub: Vec<Vec<f64>> = kept.iter().map(|&i| kept.iter().map(|&j| gram[i][j]).collect()).collect();
        let sub_losses: Vec<f64> = kept.iter().map(|&t| losses[t]).collect();
        for (&t, c) in kept.iter().zip(self.coefficients(&sub, &sub_losses)) {
            out[t] = c;
        }
        out
    }

    /// Called after every epoch.
    fn end_epoch(&mut self) {}

    /// The state a checkpoint keeps (see [`LossBalancer::state`]); `Null` when there is none.
    fn state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Restores what [`Self::state`] returned.
    fn load_state(&mut self, state: serde_json::Value) -> Result<(), BalanceError> {
        restore_stateless(self.name(), state)
    }
}

/// A [`LossBalancer`] from a [`GradientCombiner`].
pub struct GradientCombination<C> {
    combiner: C,
    coefficients: Vec<f64>,
    log: ConflictLog,
}

impl<C: GradientCombiner> GradientCombination<C> {
    /// Wraps `combiner` for `n_tasks` tasks.
    pub fn new(combiner: C, n_tasks: usize) -> Self {
        Self { combiner, coefficients: vec![1.0; n_tasks], log: ConflictLog::default() }
    }
}

impl<C: GradientCombiner> LossBalancer for GradientCombination<C> {
    fn name(&self) -> &'static str {
        self.combiner.name()
    }

    fn backward(&mut self, graph: &mut dyn TaskGraph) -> Result<BalancedGradients, BalanceError> {
        let grads = TaskGradients::compute(graph.cut_forward(), &vec![1.0; graph.n_tasks()]);
        let (mut gram, mut losses) = grads.gram_and_losses();
        if graph.ranks() > 1 {
            // the batch's Gram matrix and losses, on every rank
            let t = gram.len();
            let mut flat: Vec<f64> = gram.concat();
            batch_squares(graph, &mut flat);
            gram = flat.chunks(t).map(<[f64]>::to_vec).collect();
            batch_mean(graph, &mut losses);
        }
        if gram.iter().flatten().chain(&losses).any(|v| !v.is_finite()) {
            return Err(BalanceError(format!("{}: non-finite task gradients or losses", self.name())));
        }
        let present = graph.task_present();
        // a task absent from the batch, or one whose gradient at the shared tensors is exactly zero
        // (a tower whose units are all dead), gives no direction: it is left out of the combination
        let moving: Vec<bool> = (0..gram.len()).map(|t| present[t] && gram[t][t] > 0.0).collect();
        self.coefficients = if moving.iter().all(|&p| p) {
            self.combiner.coefficients(&gram, &losses)
        } else {
            self.combiner.coefficients_of_present(&gram, &losses, &moving)
        };
        if let Some(t) = self.coefficients.iter().position(|c| !c.is_finite()) {
            return Err(BalanceError(format!("{}: the coefficient of task {t} is not finite", self.name())));
        }
        // an absent task's norm and cosines are not measured this step (left out of the means)
        self.log.record(&gram, &present);
        Ok(grads.finish(&self.coefficients))
    }

    /// The last step's coefficients of the shared update.
    fn task_weights(&self) -> Vec<f64> {
        self.coefficients.clone()
    }

    fn end_epoch(&mut self, _mean_task_losses: &[f64]) {
        self.log.end_epoch();
        self.combiner.end_epoch();
    }

    fn state(&self) -> serde_json::Value {
        self.combiner.state()
    }

    fn load_state(&mut self, state: serde_json::Value) -> Result<(), BalanceError> {
        self.combiner.load_state(state)
    }

    /// Every step's task gradients at the shared tensors.
    fn conflict_log(&self) -> Option<&ConflictLog> {
        Some(&self.log)
    }
}

/// `G[i][j]/√(G[i][i]·G[j][j])` for `i < j`, in that order (0 where a gradient is zero).
pub fn pair_cosines(gram: &[Vec<f64>]) -> Vec<f64> {
    let t = gram.len();
    let mut out = Vec::with_capacity(t * t.saturating_sub(1) / 2);
    for i in 0..t {
        for j in i + 1..t {
            let norms = (gram[i][i] * gram[j][j]).sqrt();
            out.push(if norms > 0.0 { gram[i][j] / norms } else { 0.0 });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Tensor, TensorData};

    /// Cosines from a Gram matrix by hand: g0 = (1, 0), g1 = (1, 1), g2 = (−2, 0), and a zero
    /// gradient.
    #[test]
    fn pair_cosines_by_hand() {
        let g = [[1.0, 0.0], [1.0, 1.0], [-2.0, 0.0]];
        let gram: Vec<Vec<f64>> = g.iter().map(|a| g.iter().map(|b| a[0] * b[0] + a[1] * b[1]).collect()).collect();
        let c = pair_cosines(&gram);
        let want = [1.0 / 2f64.sqrt(), -1.0, -1.0 / 2f64.sqrt()];
        assert_eq!(c.len(), 3);
        c.iter().zip(want).for_each(|(a, b)| assert!((a - b).abs() < 1e-12, "{c:?}"));
        assert_eq!(pair_cosines(&[vec![0.0, 0.0], vec![0.0, 4.0]]), vec![0.0]);
    }

    /// Two tasks on one shared leaf x ∈ R²: L0 = a·x, L1 = b·x, so g0 = a, g1 = b at every x.
    struct Linear {
        x: Tensor<2>,
        a: [f32; 2],
        b: [f32; 2],
    }

    impl TaskGraph for Linear {
        fn n_tasks(&self) -> usize {
            2
        }
        fn task_losses(&mut self) -> Vec<Tensor<1>> {
            unreachable!("combiners cut")
        }
        fn cut_forward(&mut self) -> crate::CutForward {
            let device = self.x.device();
            let leaf = self.x.clone().detach().require_grad();
            let dot = |w: [f32; 2]| {
                let w = Tensor::<2>::from_data(TensorData::new(w.to_vec(), [1, 2]), &device);
                (leaf.clone() * w).sum()
            };
            let losses = vec![dot(self.a), dot(self.b)];
            crate::CutForward { shared: vec![self.x.clone()], leaves: vec![leaf], losses }
        }
        fn probed_forward(&mut self, _probe: &[bool]) -> crate::ProbedForward {
            unreachable!("combiners cut")
        }
    }

    /// Over an epoch of four steps with task-1 gradients (1, 1), (−1, 0), (0, 1), (−1, −1)
    /// against g0 = (1, 0): cosines 1/√2, −1, 0, −1/√2 — mean −1/4, negative on 2 steps of 4
    /// (0 is no conflict): conflict fraction ½; norms ‖g0‖ = 1, ‖g1‖ mean (2√2 + 2)/4.
    #[test]
    fn epoch_cosines_and_conflict_fractions_by_hand() {
        let device = Device::flex().autodiff();
        let x = Tensor::<2>::from_data(TensorData::new(vec![0.5f32, 2.0], [1, 2]), &device).require_grad();
        let mut pcgrad = GradientCombination::new(crate::PcGrad::new(1), 2);
        assert_eq!(pcgrad.task_gradient_conflicts(), None);
        for b in [[1.0, 1.0], [-1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]] {
            pcgrad.backward(&mut Linear { x: x.clone(), a: [1.0, 0.0], b }).unwrap();
        }
        pcgrad.end_epoch(&[0.0, 0.0]);
        let cosine = pcgrad.task_gradient_cosines().unwrap();
        assert!((cosine[0] + 0.25).abs() < 1e-7, "{cosine:?}");
        assert_eq!(pcgrad.task_gradient_conflicts().unwrap(), vec![0.5]);
        let norms = pcgrad.task_gradient_norms().unwrap();
        let sqrt2 = 2f64.sqrt();
        assert!((norms[0] - 1.0).abs() < 1e-7 && (norms[1] - (2.0 * sqrt2 + 2.0) / 4.0).abs() < 1e-7, "{norms:?}");
    }
}
