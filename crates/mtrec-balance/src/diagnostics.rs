//! Gradient-conflict diagnostics: each task's gradient norm at the shared tensors, the cosine
//! between every pair of tasks' gradients there and how often it is negative, averaged over an
//! epoch — where a researcher sees which tasks pull the shared parameters apart.
//!
//! Gradient-combining methods measure the task gradients every step anyway
//! ([`crate::GradientCombination`] records them in a [`ConflictLog`]). Loss-weighting methods
//! (fixed weights, DWA, RLW) take one backward of `Σ_t w_t·L_t` and see no per-task gradient: for
//! them [`WeightedStep`] runs every `balance.diagnose_every`-th step (default 10; 0 = never)
//! through per-task probes ([`TaskGraph::probed_forward`]). That step is the same single backward
//! of the same weighted sum — the update does not change — and it leaves each task's weighted
//! gradient `w_t·g_t` at the shared tensors on its probes, from which the Gram matrix is read (one
//! `T × T` product and one small device-to-host read). Data-parallel ranks reduce the Gram matrix
//! as the combining methods do.

use burn::tensor::Tensor;

use crate::{
    BalanceError, BalancedGradients, ProbedForward, TaskGraph,
    balancer::{EpochMean, batch_squares, detached, to_host, weighted_backward, weighted_sum},
    combination::pair_cosines,
    task_gradients::flat_gram,
};

/// Per-epoch means of the task gradients' norms, pair cosines and conflicts at the shared tensors.
#[derive(Debug, Clone, Default)]
pub struct ConflictLog {
    norms: EpochMean,
    cosines: EpochMean,
    conflicts: EpochMean,
}

impl ConflictLog {
    /// Records one step's Gram matrix of the task gradients; a task with `measured[t] == false`
    /// (absent from the batch) has no norm or cosines this step.
    pub fn record(&mut self, gram: &[Vec<f64>], measured: &[bool]) {
        let t = gram.len();
        self.norms
            .add(&(0..t).map(|i| if measured[i] { gram[i][i].max(0.0).sqrt() } else { f64::NAN }).collect::<Vec<_>>());
        let pairs = (0..t).flat_map(|i| (i + 1..t).map(move |j| (i, j)));
        let cosines: Vec<f64> = pair_cosines(gram)
            .into_iter()
            .zip(pairs)
            .map(|(c, (i, j))| if measured[i] && measured[j] { c } else { f64::NAN })
            .collect();
        let conflicts: Vec<f64> =
            cosines.iter().map(|&c| if c.is_nan() { f64::NAN } else { f64::from(u8::from(c < 0.0)) }).collect();
        self.cosines.add(&cosines);
        self.conflicts.add(&conflicts);
    }

    /// Closes the epoch.
    pub fn end_epoch(&mut self) {
        self.norms.end_epoch();
        self.cosines.end_epoch();
        self.conflicts.end_epoch();
    }

    /// Mean `‖g_t‖` over the last epoch's measured steps.
    pub fn norms(&self) -> Option<Vec<f64>> {
        self.norms.last_epoch()
    }

    /// Mean cosine of each pair `(i, j)`, `i < j`, over the last epoch's measured steps.
    pub fn cosines(&self) -> Option<Vec<f64>> {
        self.cosines.last_epoch()
    }

    /// Fraction of the last epoch's measured steps with a negative cosine, per pair.
    pub fn conflicts(&self) -> Option<Vec<f64>> {
        self.conflicts.last_epoch()
    }
}

/// The step of a loss-weighting method, `∇ Σ_t w_t·L_t`, measuring the task gradients every
/// `every`-th step (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct WeightedStep {
    every: u64,
    steps: u64,
    log: ConflictLog,
}

impl WeightedStep {
    /// Measures on an epoch's steps 1, `every + 1`, `2·every + 1`, … (the same steps in a resumed
    /// run); never with `every = 0`.
    pub fn new(every: u64) -> Self {
        Self { every, ..Self::default() }
    }

    /// The backward of `Σ_t w_t·L_t`.
    pub fn backward(&mut self, graph: &mut dyn TaskGraph, weights: &[f64]) -> Result<BalancedGradients, BalanceError> {
        self.steps += 1;
        if self.every == 0 || !(self.steps - 1).is_multiple_of(self.every) {
            return Ok(weighted_backward(graph, weights));
        }
        let n = graph.n_tasks();
        let ProbedForward { losses, probes, .. } = graph.probed_forward(&vec![true; n]);
        let mut grads = weighted_sum(&losses, weights).backward();
        let per_task: Vec<Vec<Tensor<2>>> = probes
            .iter()
            .map(|task| {
                task.iter().map(|p| p.grad_remove(&mut grads).unwrap_or_else(|| p.zeros_like().detach())).collect()
            })
            .collect();
        let mut flat = to_host(vec![flat_gram(&per_task)]);
        batch_squares(graph, &mut flat);
        let out = BalancedGradients { parts: vec![grads], task_losses: detached(&losses) };
        if flat.iter().any(|v| !v.is_finite()) {
            return Ok(out); // nothing to record; the step itself is the loop's to judge, as without diagnostics
        }
        // probe t holds w_t·g_t: undo the weights (a task of weight 0 leaves no gradient to measure)
        let present = graph.task_present();
        let measured: Vec<bool> = (0..n).map(|t| present[t] && weights[t] > 0.0).collect();
        let gram: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| if measured[i] && measured[j] { flat[i * n + j] / (weights[i] * weights[j]) } else { 0.0 })
                    .collect()
            })
            .collect();
        self.log.record(&gram, &measured);
        Ok(out)
    }

    /// The conflicts measured.
    pub fn log(&self) -> &ConflictLog {
        &self.log
    }

    /// Closes the epoch.
    pub fn end_epoch(&mut self) {
        self.log.end_epoch();
        self.steps = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BalanceConfig, test_support::context};
    use burn::tensor::{Device, TensorData};

    /// Two tasks on one shared leaf x ∈ R²: L0 = a·x, L1 = b·x (g0 = a, g1 = b); counts the
    /// forwards of each kind.
    struct Linear {
        x: Tensor<2>,
        a: [f32; 2],
        b: [f32; 2],
        plain: usize,
        probed: usize,
    }

    impl Linear {
        fn loss(&self, input: Tensor<2>, w: [f32; 2]) -> Tensor<1> {
            (input * Tensor::<2>::from_data(TensorData::new(w.to_vec(), [1, 2]), &self.x.device())).sum()
        }
    }

    impl TaskGraph for Linear {
        fn n_tasks(&self) -> usize {
            2
        }
        fn task_losses(&mut self) -> Vec<Tensor<1>> {
            self.plain += 1;
            vec![self.loss(self.x.clone(), self.a), self.loss(self.x.clone(), self.b)]
        }
        fn cut_forward(&mut self) -> crate::CutForward {
            unreachable!("loss weighting does not cut")
        }
        fn probed_forward(&mut self, probe: &[bool]) -> ProbedForward {
            assert_eq!(probe, [true, true]);
            self.probed += 1;
            let probes: Vec<Tensor<2>> =
                (0..2).map(|_| Tensor::<2>::zeros([1, 2], &self.x.device()).require_grad()).collect();
            let losses = vec![
                self.loss(self.x.clone() + probes[0].clone(), self.a),
                self.loss(self.x.clone() + probes[1].clone(), self.b),
            ];
            ProbedForward {
                losses,
                points: vec![0],
                probes: probes.into_iter().map(|p| vec![p]).collect(),
                last_layer: None,
            }
        }
    }

    /// Fixed weights (2, ½) measuring every 3rd step: an epoch of 7 steps probes steps 1, 4 and 7
    /// only; the measured task-1 gradients (1, 1), (−1, 0), (0, 1) against g0 = (1, 0) give
    /// cosines 1/√2, −1, 0 (mean (1/√2 − 1)/3), conflicts 1 of 3, norms 1 and (√2 + 2)/3 — the
    /// unweighted gradients; and every step's update is 2·a + ½·b, probed or not.
    #[test]
    fn fixed_weights_measure_every_nth_step_by_hand() {
        let device = Device::flex().autodiff();
        let x = Tensor::<2>::from_data(TensorData::new(vec![0.5f32, 2.0], [1, 2]), &device).require_grad();
        let config = BalanceConfig { weights: Some(vec![2.0, 0.5]), diagnose_every: Some(3), ..Default::default() };
        let mut fixed = config.init(&context(2)).unwrap();
        let bs = [[1.0, 1.0], [9.0, 9.0], [9.0, -9.0], [-1.0, 0.0], [5.0, 5.0], [-5.0, 3.0], [0.0, 1.0]];
        let (mut plain, mut probed) = (0, 0);
        for b in bs {
            let mut graph = Linear { x: x.clone(), a: [1.0, 0.0], b, plain: 0, probed: 0 };
            let out = fixed.backward(&mut graph).unwrap();
            let g: Vec<f32> = x.grad(&out.parts[0]).unwrap().into_data().try_to_vec::<f32>().unwrap();
            let want = [2.0 + 0.5 * b[0], 0.5 * b[1]];
            assert!((g[0] - want[0]).abs() < 1e-6 && (g[1] - want[1]).abs() < 1e-6, "{g:?} {want:?}");
            (plain, probed) = (plain + graph.plain, probed + graph.probed);
        }
        assert_eq!((plain, probed), (4, 3));
        fixed.end_epoch(&[0.0, 0.0]);
        let cosine = fixed.task_gradient_cosines().unwrap()[0];
        assert!((cosine - (1.0 / 2f64.sqrt() - 1.0) / 3.0).abs() < 1e-7, "{cosine}");
        assert!((fixed.task_gradient_conflicts().unwrap()[0] - 1.0 / 3.0).abs() < 1e-12);
        let norms = fixed.task_gradient_norms().unwrap();
        assert!((norms[0] - 1.0).abs() < 1e-7 && (norms[1] - (2f64.sqrt() + 2.0) / 3.0).abs() < 1e-7, "{norms:?}");
    }

    /// `diagnose_every = 0` never probes and logs nothing; the option belongs to the
    /// loss-weighting methods only.
    #[test]
    fn zero_never_measures_and_the_option_is_theirs() {
        let device = Device::flex().autodiff();
        let x = Tensor::<2>::from_data(TensorData::new(vec![0.5f32, 2.0], [1, 2]), &device).require_grad();
        for method in ["fixed", "dwa", "rlw"] {
            let config: BalanceConfig =
                serde_json::from_value(serde_json::json!({"method": method, "diagnose_every": 0})).unwrap();
            let mut balancer = config.init(&context(2)).unwrap();
            let mut graph = Linear { x: x.clone(), a: [1.0, 0.0], b: [0.0, 1.0], plain: 0, probed: 0 };
            balancer.backward(&mut graph).unwrap();
            balancer.end_epoch(&[1.0, 1.0]);
            assert_eq!((graph.plain, graph.probed), (1, 0), "{method}");
            assert_eq!(balancer.task_gradient_cosines(), None, "{method}");
        }
        let config: BalanceConfig =
            serde_json::from_value(serde_json::json!({"method": "pcgrad", "diagnose_every": 5})).unwrap();
        let err = config.init(&context(2)).err().unwrap();
        assert!(err.contains("balance.diagnose_every"), "{err}");
    }
}
