//! GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018), as published.
//!
//! Task weights `w_t` start at 1 with `Σw = T`. Each step, with `W` the last shared layer:
//! - `G_t = ‖∇_W (w_t·L_t)‖₂`, `Ḡ = mean_t G_t`;
//! - `L̃_t = L_t / L_t(0)` (`L_t(0)` from the first step, or the mean of the first epoch), the
//!   inverse training rate `r_t = L̃_t / mean(L̃)`, the target `Ḡ·r_t^α` (held constant);
//! - `L_grad = Σ_t |G_t − Ḡ·r_t^α|` updates only `w`, with its own Adam (`balance.weight_lr`):
//!   `∂L_grad/∂w_t = sign(G_t − target_t)·‖∇_W L_t‖` exactly, because `G_t` is linear in `w_t` —
//!   no second-order autodiff; then the weights are floored at 1e-3 and renormalised to `Σw = T`;
//! - the network gets the gradient of `Σ_t w_t·L_t`.
//!
//! The step is an ordinary one — one forward, one backward of `Σ_t w_t·L_t` — with each task
//! branch reading the shared tensors through zero-valued probe leaves of its own
//! ([`TaskGraph::probed_forward`]): the backward leaves each task's gradient at the shared tensors
//! on its probes. No cut, no second backward.
//!
//! `W` is the model's [`LastSharedLayer`](mtrec_model::LastSharedLayer): the last bottom layer of
//! shared-bottom, the experts' last layer (all experts) of MMoE. `∇_W L_t` is computed from the
//! task's gradient at the layer's output (one small matrix product; see `last_layer.rs` in
//! `mtrec-model`, whose tests check it against autodiff) for all tasks but the last, whose share is
//! the combined weight gradient of the backward minus the others' — `T − 1` extra products a step.
//! `balance.gradnorm_layer = "representation"` uses the gradient at the shared tensors instead
//! (cheaper, and it works with batch normalisation, where the last layer is not exposed).
//!
//! The subtraction leaves f32 rounding residue where the last task's true share is 0 (an
//! adversarial task with λ = 0 passes no gradient): Adam would normalise that residue into a full
//! step and drift the weight up. A last-task norm below [`RESIDUE_TOLERANCE`] of the largest norm
//! in the subtraction is therefore taken as exactly 0. A task whose initial loss is 0 has no
//! training rate `L/L(0)`: that is an error naming the task, as is a non-finite weight gradient.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use mtrec_model::frobenius;

use crate::{
    BalanceError, BalancedGradients, LossBalancer, ProbedForward, TaskGraph,
    balancer::{
        EpochMean, batch_mean, batch_mean_tensor, batch_squares, detached, parse_state, state_value, to_host,
        weighted_sum,
    },
    learnable::LearnableTaskValues,
};

/// Where GradNorm measures the task gradient norms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GradNormLayer {
    /// The weights of the last shared layer (the paper's choice).
    #[default]
    LastShared,
    /// The shared tensors themselves (the representation).
    Representation,
}

/// Which loss is `L_t(0)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum InitialLoss {
    /// The loss of the first training step (the paper's).
    #[default]
    FirstStep,
    /// The mean training loss of the first epoch (the first step's is used during that epoch).
    FirstEpochMean,
}

/// A last-task norm (from the subtraction) at or below this fraction of the largest norm involved
/// is f32 rounding residue and counts as 0.
pub const RESIDUE_TOLERANCE: f64 = 1e-4;

/// GradNorm's learnable task weights.
pub struct GradNorm {
    names: Vec<String>,
    alpha: f64,
    layer: GradNormLayer,
    initial: InitialLoss,
    weights: LearnableTaskValues,
    /// `L_t(0)`, per task from the first batch that holds its label.
    initial_losses: Vec<Option<f64>>,
    epochs_seen: usize,
    norms: EpochMean,
}

impl GradNorm {
    /// `n_tasks` weights, asymmetry `alpha`, weight learning rate `lr`.
    pub fn new(n_tasks: usize, alpha: f64, lr: f64, layer: GradNormLayer, initial: InitialLoss) -> Self {
        Self {
            names: (0..n_tasks).map(|t| format!("task {t}")).collect(),
            alpha,
            layer,
            initial,
            weights: LearnableTaskValues::new(vec![1.0; n_tasks], lr),
            initial_losses: vec![None; n_tasks],
            epochs_seen: 0,
            norms: EpochMean::default(),
        }
    }

    /// With the tasks' names, for error messages.
    pub fn with_task_names(mut self, names: Vec<String>) -> Self {
        if names.len() == self.names.len() {
            self.names = names;
        }
        self
    }

    /// The gradient of `L_grad` w.r.t. each `w_t` given the step's `G_t`, losses and weights.
    ///
    /// Returns `(∂L_grad/∂w, targets)`.
    pub fn weight_gradient(&self, g: &[f64], losses: &[f64], initial: &[f64], w: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let t = g.len() as f64;
        let g_mean = g.iter().sum::<f64>() / t;
        let ratios: Vec<f64> = losses.iter().zip(initial).map(|(l, l0)| l / l0).collect();
        let ratio_mean = ratios.iter().sum::<f64>() / t;
        let targets: Vec<f64> = ratios.iter().map(|r| g_mean * (r / ratio_mean).powf(self.alpha)).collect();
        // ∂G_t/∂w_t = ‖∇_W L_t‖ = G_t / w_t
        let grad = (0..g.len()).map(|i| (g[i] - targets[i]).signum() * g[i] / w[i]).collect();
        (grad, targets)
    }

    /// Each task's `G_t = ‖∇_W (w_t·L_t)‖` from its gradients at the probed shared tensors
    /// (`per_task[t][j]` at tensor `points[j]`) and the step's gradients `grads` (of `Σ w_t·L_t`),
    /// one tensor `[1]` each.
    ///
    /// On the last shared layer, `∇_W (w_t·L_t)` of the first `T − 1` tasks are computed from their
    /// gradients at the layer's output (one matrix product each); the last task's is the combined
    /// weight gradient, which the backward computed anyway, minus theirs — and the combined
    /// gradient's norm follows as one more value, the scale of [`RESIDUE_TOLERANCE`].
    fn norms(
        &self,
        graph: &mut dyn TaskGraph,
        points: &[usize],
        per_task: &[Vec<Tensor<2>>],
        last_layer: Option<&mtrec_model::LastSharedLayer>,
        grads: &burn::tensor::Gradients,
    ) -> Result<Vec<Tensor<1>>, BalanceError> {
        let n = per_task.len();
        match self.layer {
            GradNormLayer::LastShared => {
                let last = last_layer.ok_or_else(|| {
                    BalanceError(
                        "balance.gradnorm_layer = \"last_shared\": this model does not expose its last shared layer \
                         (shared_bottom and mmoe do, without batch normalisation: model.batch_norm = false); \
                         set balance.gradnorm_layer = \"representation\" to measure the gradients at the shared tensors"
                            .into(),
                    )
                })?;
                let at = points
                    .iter()
                    .position(|&k| k == last.output)
                    .ok_or_else(|| BalanceError("gradnorm: the last shared layer's output carries no probe".into()))?;
                let jacobian = last.jacobian();
                // over data-parallel ranks: the batch's weight gradients (linear in the losses)
                let partial: Vec<Tensor<3>> = per_task[..n - 1]
                    .iter()
                    .map(|g| batch_mean_tensor(graph, last.weight_gradient(g[at].clone(), &jacobian)))
                    .collect();
                let combined = last.weight.grad(grads, last.groups()).ok_or_else(|| {
                    BalanceError("gradnorm: the last shared layer received no gradient from the backward".into())
                })?;
                let combined = batch_mean_tensor(graph, combined);
                let rest = partial.iter().fold(combined.clone(), |acc, p| acc - p.clone());
                Ok(partial.into_iter().chain([rest, combined]).map(frobenius).collect())
            }
            GradNormLayer::Representation => {
                let squares: Vec<Tensor<1>> = per_task
                    .iter()
                    .map(|g| g.iter().map(|x| x.clone().powi_scalar(2).sum()).reduce(Tensor::add).unwrap())
                    .collect();
                if graph.ranks() == 1 {
                    return Ok(squares.into_iter().map(Tensor::sqrt).collect());
                }
                // over data-parallel ranks: the batch's squared norms, summed over every rank's rows
                let device = squares[0].device();
                let mut host = to_host(squares);
                batch_squares(graph, &mut host);
                Ok(host.iter().map(|v| Tensor::from_floats([v.sqrt() as f32], &device)).collect())
            }
        }
    }
}

impl LossBalancer for GradNorm {
    fn name(&self) -> &'static str {
        "gradnorm"
    }

    fn backward(&mut self, graph: &mut dyn TaskGraph) -> Result<BalancedGradients, BalanceError> {
        let n = graph.n_tasks();
        let w = self.weights.values().to_vec();
        // one forward and one backward of Σ w_t·L_t, as a fixed-weight step; the probes give each
        // task's gradient at the shared tensors (on the last shared layer, the last task's norm
        // comes from the combined weight gradient, so it needs none)
        let probe: Vec<bool> = (0..n).map(|t| self.layer == GradNormLayer::Representation || t + 1 < n).collect();
        let ProbedForward { losses, points, probes, last_layer } = graph.probed_forward(&probe);
        let mut grads = weighted_sum(&losses, &w).backward();
        let per_task: Vec<Vec<Tensor<2>>> = probes
            .iter()
            .map(|task| {
                task.iter().map(|p| p.grad_remove(&mut grads).unwrap_or_else(|| p.zeros_like().detach())).collect()
            })
            .collect();
        let norms = self.norms(graph, &points, &per_task, last_layer.as_ref(), &grads)?;
        let out = BalancedGradients { parts: vec![grads], task_losses: detached(&losses) };
        let mut host = to_host(out.task_losses.iter().cloned().chain(norms).collect());
        batch_mean(graph, &mut host[..n]); // the batch's losses (the norms already are)
        let (losses, g) = host.split_at(n);
        if let Some(t) = host.iter().position(|v| !v.is_finite()) {
            let what = if t < n { "loss" } else { "gradient norm" };
            return Err(BalanceError(format!(
                "gradnorm: non-finite {what} of task `{}`",
                self.names[if t < n { t } else { (t - n).min(n - 1) }]
            )));
        }
        let mut g = g[..n].to_vec();
        if let Some(&combined) = host.get(2 * n) {
            // the last task's norm came from a subtraction: below the tolerance it is residue
            let scale = g[..n - 1].iter().copied().fold(combined, f64::max);
            if g[n - 1] <= RESIDUE_TOLERANCE * scale {
                g[n - 1] = 0.0;
            }
        }
        // a task absent from the batch (its own sample space) has no loss or gradient this step: the
        // rates, the mean norm and the update are those of the present tasks; L_t(0) is the loss of
        // the first batch holding the task's label
        let present = graph.task_present();
        for t in (0..n).filter(|&t| present[t]) {
            self.initial_losses[t].get_or_insert(losses[t]);
        }
        let kept: Vec<usize> = (0..n).filter(|&t| present[t]).collect();
        let initial: Vec<f64> = self.initial_losses.iter().map(|l| l.unwrap_or(f64::NAN)).collect();
        if let Some(&t) = kept.iter().find(|&&t| !(initial[t].is_finite() && initial[t] > 0.0)) {
            return Err(BalanceError(format!(
                "gradnorm: the initial loss L(0) of task `{}` is {}, so its training rate L/L(0) is undefined; \
                 GradNorm needs positive task losses (is the task's loss exactly 0 — a constant label fitted \
                 exactly?); use another balance.method for this data",
                self.names[t], initial[t]
            )));
        }
        let pick = |v: &[f64]| kept.iter().map(|&t| v[t]).collect::<Vec<f64>>();
        let mut dw = vec![0.0; n];
        if kept.len() > 1 {
            let (dw_kept, _) = self.weight_gradient(&pick(&g), &pick(losses), &pick(&initial), &pick(&w));
            kept.iter().zip(dw_kept).for_each(|(&t, d)| dw[t] = d);
        }
        if let Some(t) = dw.iter().position(|d| !d.is_finite()) {
            return Err(BalanceError(format!(
                "gradnorm: the weight gradient of task `{}` is not finite (G = {}, L = {}, L(0) = {}, w = {})",
                self.names[t], g[t], losses[t], initial[t], w[t]
            )));
        }
        let updated: Vec<bool> = (0..n).map(|t| present[t] && kept.len() > 1).collect();
        self.weights.step_where(&dw, &updated);
        let floored: Vec<f64> = self.weights.values().iter().map(|v| v.max(1e-3)).collect();
        let total: f64 = floored.iter().sum();
        self.weights.set(floored.iter().map(|v| v * n as f64 / total).collect());
        self.norms.add(&(0..n).map(|t| if present[t] { g[t] } else { f64::NAN }).collect::<Vec<_>>());
        Ok(out)
    }

    fn task_weights(&self) -> Vec<f64> {
        self.weights.values().to_vec()
    }

    fn end_epoch(&mut self, mean_task_losses: &[f64]) {
        self.epochs_seen += 1;
        if self.initial == InitialLoss::FirstEpochMean && self.epochs_seen == 1 {
            // a task labelled on no row of the epoch keeps its first batch's loss
            for (l0, &mean) in self.initial_losses.iter_mut().zip(mean_task_losses) {
                if mean.is_finite() {
                    *l0 = Some(mean);
                }
            }
        }
        self.norms.end_epoch();
    }

    /// Mean `G_t = ‖∇_W (w_t·L_t)‖` over the last epoch.
    fn task_gradient_norms(&self) -> Option<Vec<f64>> {
        self.norms.last_epoch()
    }

    /// The weights with their Adam moments, `L_t(0)` and the epochs seen.
    fn state(&self) -> serde_json::Value {
        state_value(&GradNormState {
            weights: self.weights.clone(),
            initial_losses: self.initial_losses.iter().any(Option::is_some).then(|| self.initial_losses.clone()),
            epochs_seen: self.epochs_seen,
        })
    }

    fn load_state(&mut self, state: serde_json::Value) -> Result<(), BalanceError> {
        let state: GradNormState = parse_state(self.name(), state)?;
        self.weights.restore(state.weights, "gradnorm weights")?;
        let n = self.initial_losses.len();
        match state.initial_losses {
            Some(l) if l.len() != n => {
                return Err(BalanceError(format!(
                    "checkpoint: gradnorm holds {} initial losses, the run has {n} tasks",
                    l.len()
                )));
            }
            Some(l) => self.initial_losses = l,
            None => self.initial_losses = vec![None; n],
        }
        self.epochs_seen = state.epochs_seen;
        Ok(())
    }
}

/// What a GradNorm checkpoint holds.
#[derive(Serialize, Deserialize)]
struct GradNormState {
    weights: LearnableTaskValues,
    /// Per task (null: not seen yet); a whole null before any step.
    initial_losses: Option<Vec<Option<f64>>>,
    epochs_seen: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CutForward, ProbedForward};
    use burn::{
        module::Module,
        nn::{Linear, LinearConfig},
        optim::{AdamConfig, GradientsAccumulator, GradientsParams},
        tensor::{Device, activation::relu},
    };
    use mtrec_model::{LastLayerWeight, LastSharedLayer};
    use rand::{SeedableRng, rngs::StdRng};
    use rand_distr::{Distribution as _, Normal};

    #[test]
    fn weight_gradient_by_hand() {
        let gn = GradNorm::new(2, 1.0, 0.01, GradNormLayer::LastShared, InitialLoss::FirstStep);
        // G = (2, 1), equal loss ratios: both targets Ḡ = 1.5; ∂G_t/∂w_t = G_t / w_t
        let (dw, targets) = gn.weight_gradient(&[2.0, 1.0], &[0.5, 0.5], &[1.0, 1.0], &[1.0, 1.0]);
        assert_eq!(targets, vec![1.5, 1.5]);
        assert_eq!(dw, vec![2.0, -1.0]);
        // task 0 trained slower (L̃ = 1 vs 0.5): r = (4/3, 2/3), α = 1: targets 2 and 1 — both met
        let (dw, targets) = gn.weight_gradient(&[4.0, 1.0], &[1.0, 0.25], &[1.0, 0.5], &[2.0, 0.5]);
        assert!((targets[0] - 10.0 / 3.0).abs() < 1e-12 && (targets[1] - 5.0 / 3.0).abs() < 1e-12);
        assert_eq!(dw, vec![2.0, -2.0]);
    }

    /// The toy of §4 of the paper: shared 4-layer ReLU trunk of 100 units, one affine head per task.
    #[derive(Module, Debug)]
    struct Toy {
        trunk: Vec<Linear>,
        heads: Vec<Linear>,
    }

    struct ToyStep<'a> {
        model: &'a Toy,
        x: Tensor<2>,
        targets: Vec<Tensor<2>>,
        /// A task whose head reads the trunk detached: its gradient at the trunk is exactly 0.
        detached_task: Option<usize>,
        /// A task whose loss is exactly 0.
        zero_loss_task: Option<usize>,
    }

    impl ToyStep<'_> {
        fn trunk(&self) -> (Tensor<2>, LastSharedLayer) {
            let mut h = self.x.clone();
            let mut input = h.clone();
            for layer in &self.model.trunk {
                input = h.clone();
                h = relu(layer.forward(h));
            }
            let weight = LastLayerWeight::Matrix(self.model.trunk.last().unwrap().weight.val());
            let last = LastSharedLayer {
                output: 0,
                input: input.unsqueeze_dim(0),
                activated: h.clone(),
                value: h.clone(),
                weight,
                dropout: false,
            };
            (h, last)
        }
        fn losses(&self, z: &Tensor<2>) -> Vec<Tensor<1>> {
            self.model
                .heads
                .iter()
                .zip(&self.targets)
                .enumerate()
                .map(|(t, (head, y))| {
                    let input = if self.detached_task == Some(t) { z.clone().detach() } else { z.clone() };
                    let loss = (head.forward(input) - y.clone()).powi_scalar(2).mean();
                    if self.zero_loss_task == Some(t) { loss.mul_scalar(0.0) } else { loss }
                })
                .collect()
        }
    }

    impl TaskGraph for ToyStep<'_> {
        fn n_tasks(&self) -> usize {
            self.targets.len()
        }
        fn task_losses(&mut self) -> Vec<Tensor<1>> {
            self.losses(&self.trunk().0)
        }
        fn cut_forward(&mut self) -> CutForward {
            unreachable!("gradnorm probes, it does not cut")
        }
        fn probed_forward(&mut self, probe: &[bool]) -> ProbedForward {
            let (z, last) = self.trunk();
            let (losses, probes) = (0..self.targets.len())
                .map(|t| {
                    if !probe[t] {
                        return (self.losses(&z).swap_remove(t), vec![]);
                    }
                    let probe = z.zeros_like().detach().require_grad();
                    (self.losses(&(z.clone() + probe.clone())).swap_remove(t), vec![probe])
                })
                .unzip();
            ProbedForward { losses, points: vec![0], probes, last_layer: Some(last) }
        }
    }

    fn coefficient_of_variation(v: &[f64]) -> f64 {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt() / mean
    }

    /// Paper §4: targets `σ_i·tanh((B + ε_i)·x)`, `B ~ N(0, 10)`, `ε_i ~ N(0, 3.5)` (variances),
    /// x ∈ R²⁵⁰ (entries N(0, 1/250) so that the tanh is not saturated), 100 outputs, σ spread over an
    /// order of magnitude. GradNorm must equalise the gradient norms and weight the tasks inversely
    /// to their scales, keeping Σw = T at every step.
    #[test]
    fn gradnorm_balances_the_papers_toy_problem() {
        let device = Device::flex().autodiff();
        device.seed(7);
        let sigmas = [1.0, 3.0, 10.0];
        let (n, d_in, d_out) = (400, 250, 100);
        let mut rng = StdRng::seed_from_u64(11);
        let mut sample = |std: f64, len: usize| -> Vec<f32> {
            let dist = Normal::new(0.0, std).unwrap();
            (0..len).map(|_| dist.sample(&mut rng) as f32).collect()
        };
        let matrix =
            |v: Vec<f32>, rows, cols| Tensor::<2>::from_data(burn::tensor::TensorData::new(v, [rows, cols]), &device);
        let b = matrix(sample(10f64.sqrt(), d_out * d_in), d_out, d_in);
        let x = matrix(sample((1.0f64 / d_in as f64).sqrt(), n * d_in), n, d_in);
        let targets: Vec<Tensor<2>> = sigmas
            .iter()
            .map(|&s| {
                let e = matrix(sample(3.5f64.sqrt(), d_out * d_in), d_out, d_in);
                x.clone().matmul((b.clone() + e).transpose()).tanh().mul_scalar(s)
            })
            .collect();
        let widths = [d_in, 100, 100, 100, 100];
        let mut model = Toy {
            trunk: widths.windows(2).map(|w| LinearConfig::new(w[0], w[1]).init(&device)).collect(),
            heads: sigmas.iter().map(|_| LinearConfig::new(100, d_out).init(&device)).collect(),
        };
        let mut optim = AdamConfig::new().init();
        let mut gn = GradNorm::new(3, 0.12, 0.02, GradNormLayer::LastShared, InitialLoss::FirstStep);
        let mut first_norms = None;
        let batch = 100;
        for step in 0..400 {
            let rows = (step % (n / batch)) * batch;
            let mut graph = ToyStep {
                model: &model,
                x: x.clone().slice([rows..rows + batch, 0..d_in]),
                targets: targets.iter().map(|y| y.clone().slice([rows..rows + batch, 0..d_out])).collect(),
                detached_task: None,
                zero_loss_task: None,
            };
            let out = gn.backward(&mut graph).unwrap();
            let w = gn.task_weights();
            assert!((w.iter().sum::<f64>() - 3.0).abs() < 1e-9, "Σw = {} at step {step}", w.iter().sum::<f64>());
            let mut acc = GradientsAccumulator::<Toy>::new();
            for part in out.parts {
                acc.accumulate(&model, GradientsParams::from_grads(part, &model));
            }
            model = optim.step(1e-3, model, acc.grads());
            if step == 0 || step == 349 {
                // epochs of the log: step 0 alone, then steps 1–349, then the last 50
                gn.end_epoch(&[0.0; 3]);
                first_norms = first_norms.or(gn.task_gradient_norms());
            }
        }
        gn.end_epoch(&[0.0; 3]);
        let (start, end) = (first_norms.unwrap(), gn.task_gradient_norms().unwrap());
        let w = gn.task_weights();
        assert!(w[0] > w[1] && w[1] > w[2], "weights must order inversely to σ: {w:?}");
        let (cv_start, cv_end) = (coefficient_of_variation(&start), coefficient_of_variation(&end));
        assert!(cv_end < 0.25 * cv_start, "gradient norms {start:?} → {end:?} (CV {cv_start:.3} → {cv_end:.3})");
    }

    /// A small toy: 2-layer trunk, three heads, random targets.
    fn small_toy(device: &Device) -> (Toy, Tensor<2>, Vec<Tensor<2>>) {
        let toy = Toy {
            trunk: [12, 16, 16].windows(2).map(|w| LinearConfig::new(w[0], w[1]).init(device)).collect(),
            heads: (0..3).map(|_| LinearConfig::new(16, 4).init(device)).collect(),
        };
        let x = Tensor::<2>::random([64, 12], burn::tensor::Distribution::Default, device);
        let targets =
            (0..3).map(|_| Tensor::<2>::random([64, 4], burn::tensor::Distribution::Default, device)).collect();
        (toy, x, targets)
    }

    /// The last task's share of the last layer's gradient comes from a subtraction; where its true
    /// value is 0 (its head reads the trunk detached, like an adversary with λ = 0) the norm must be
    /// exactly 0 — f32 residue would make Adam drift its weight up a full step each step (Adam
    /// normalises the residue's size away).
    #[test]
    fn a_last_task_without_gradient_has_norm_zero_not_residue() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let (toy, x, targets) = small_toy(&device);
        let mut gn = GradNorm::new(3, 1.5, 0.05, GradNormLayer::LastShared, InitialLoss::FirstStep);
        for _ in 0..20 {
            let mut graph = ToyStep {
                model: &toy,
                x: x.clone(),
                targets: targets.clone(),
                detached_task: Some(2),
                zero_loss_task: None,
            };
            gn.backward(&mut graph).unwrap();
        }
        gn.end_epoch(&[0.0; 3]);
        let norms = gn.task_gradient_norms().unwrap();
        assert!(norms[0] > 0.0 && norms[1] > 0.0, "{norms:?}");
        assert_eq!(norms[2], 0.0, "residue of the subtraction: {norms:?}");
    }

    /// A task whose initial loss is 0 has no training rate: an error naming the task, not silently
    /// equal weights for the whole run (0/0 → NaN through Adam, then NaN.max(1e-3)).
    #[test]
    fn a_zero_initial_loss_is_an_error_naming_the_task() {
        let device = Device::flex().autodiff();
        let (toy, x, targets) = small_toy(&device);
        let mut gn = GradNorm::new(3, 1.5, 0.05, GradNormLayer::LastShared, InitialLoss::FirstStep)
            .with_task_names(vec!["ctr".into(), "cvr".into(), "rating".into()]);
        let mut graph = ToyStep { model: &toy, x, targets, detached_task: None, zero_loss_task: Some(1) };
        let err = gn.backward(&mut graph).err().expect("an error").0;
        assert!(err.contains("`cvr`") && err.contains("L(0)"), "{err}");
        assert!(gn.task_weights().iter().all(|w| w.is_finite()));
    }
}
