//! AITM, the adaptive information transfer multi-task framework (Xi et al., KDD 2021), for tasks
//! that follow each other (impression → click → purchase …).
//!
//! Each task has a tower `q_t` on the shared embedding. Task `t ≥ 1` fuses the information
//! transferred from task `t−1`, `p = g_t(z_{t−1})`, with its own `q_t` by the AIT attention:
//! `z_t = Σ_{u ∈ {p, q_t}} w_u · h₃(u)`, `w_u = softmax_u(⟨h₁(u), h₂(u)⟩ / √k)`; `z_0 = q_0`. The head
//! reads `z_t`. The behavioural-expectation calibrator adds
//! `α · mean(max(ŷ_t − ŷ_{t−1}, 0))` to task `t`'s loss (a later step cannot be more likely than
//! an earlier one).

use burn::{
    config::Config,
    module::{Module, ParamGroup},
    nn::{Linear, LinearConfig},
    tensor::{Device, Tensor, activation::sigmoid, activation::softmax},
};
use mtrec_data::FeatureBatch;

use crate::{
    Embedded, FeatureEmbedding, FeatureEmbeddingConfig, Mlp, MlpConfig, MultiTaskModel, SharedTensors, TaskOutput,
    TaskTower, TaskTowerConfig,
};

/// Configuration of an [`Aitm`] model.
#[derive(Config, Debug)]
pub struct AitmConfig {
    /// The shared input layer.
    pub input: FeatureEmbeddingConfig,
    /// Hidden widths of each task's representation tower `q_t` (the last is `k`).
    pub bottom_hidden: Vec<usize>,
    /// Hidden widths of each task's head.
    pub tower_hidden: Vec<usize>,
    /// Number of tasks, in funnel order.
    pub n_tasks: usize,
    /// Weight α of the calibrator loss.
    #[config(default = 0.6)]
    pub calibrator_weight: f64,
    /// Dropout after every hidden activation (representation towers and heads).
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl AitmConfig {
    /// Initialise the model.
    pub fn init(&self, device: &Device) -> Aitm {
        let bottom = MlpConfig::new(self.input.output_dim(), self.bottom_hidden.clone()).with_dropout(self.dropout);
        let k = bottom.output_dim();
        let linear = || LinearConfig::new(k, k).init(device);
        Aitm {
            input: self.input.init(device),
            towers: (0..self.n_tasks).map(|_| bottom.init(device)).collect(),
            transfers: (1..self.n_tasks).map(|_| linear()).collect(),
            attention: (1..self.n_tasks).map(|_| AitAttention { h1: linear(), h2: linear(), h3: linear() }).collect(),
            heads: TaskTowerConfig::new(k, self.tower_hidden.clone())
                .with_dropout(self.dropout)
                .init_many(self.n_tasks, device),
            calibrator_weight: self.calibrator_weight,
        }
    }
}

/// The AIT module's three projections.
#[derive(Module, Debug)]
pub struct AitAttention {
    /// Query projection.
    pub h1: Linear,
    /// Key projection.
    pub h2: Linear,
    /// Value projection.
    pub h3: Linear,
}

impl AitAttention {
    /// Fuses the transferred `p` and the task's own `q`.
    ///
    /// # Shapes
    /// - p, q: `[B, k]`; output `[B, k]`
    pub fn forward(&self, p: Tensor<2>, q: Tensor<2>) -> Tensor<2> {
        let [b, k] = q.dims();
        let scale = (k as f64).sqrt();
        // each item's score is the dot of its own query and key; 2-D products only (a 3-D input
        // to a linear layer becomes B tiny matrix products on CPU backends)
        let score =
            |u: &Tensor<2>| (self.h1.forward(u.clone()) * self.h2.forward(u.clone())).sum_dim(1).div_scalar(scale);
        let w = softmax(Tensor::cat(vec![score(&p), score(&q)], 1), 1); // [B, 2]
        let wp = w.clone().slice([0..b, 0..1]);
        let wq = w.slice([0..b, 1..2]);
        self.h3.forward(p) * wp + self.h3.forward(q) * wq
    }
}

/// Adaptive information transfer model.
#[derive(Module, Debug)]
pub struct Aitm {
    /// The shared embeddings.
    pub input: FeatureEmbedding,
    /// Each task's representation tower `q_t`.
    pub towers: Vec<Mlp>,
    /// `g_t`, the transfer from task `t−1` to task `t` (`t ≥ 1`).
    pub transfers: Vec<Linear>,
    /// The AIT attention of each task `t ≥ 1`.
    pub attention: Vec<AitAttention>,
    /// Each task's head.
    pub heads: Vec<TaskTower>,
    /// Weight α of the calibrator loss.
    #[module(skip)]
    pub calibrator_weight: f64,
}

impl Aitm {
    /// `z_0 … z_task`.
    fn fused(&self, x: &Tensor<2>, task: usize) -> Vec<Tensor<2>> {
        let mut z = vec![self.towers[0].forward(x.clone())];
        for t in 1..=task {
            let p = self.transfers[t - 1].forward(z[t - 1].clone());
            z.push(self.attention[t - 1].forward(p, self.towers[t].forward(x.clone())));
        }
        z
    }
}

impl MultiTaskModel for Aitm {
    fn n_tasks(&self) -> usize {
        self.heads.len()
    }

    /// Shared tensors: `[embedded input [B, d]]`.
    fn forward_shared(&self, features: FeatureBatch) -> SharedTensors {
        let Embedded { x, sparse_rows } = self.input.forward(features);
        SharedTensors::new(vec![x], vec![0]).with_sparse_rows(sparse_rows)
    }

    fn forward_task(&self, task: usize, shared: &SharedTensors) -> TaskOutput {
        let z = self.fused(&shared.tensors[0], task);
        let output = self.heads[task].forward(z[task].clone());
        if task == 0 || self.calibrator_weight == 0.0 {
            return TaskOutput::new(output);
        }
        let previous = self.heads[task - 1].forward(z[task - 1].clone());
        let excess = (sigmoid(output.clone()) - sigmoid(previous)).clamp_min(0.0);
        TaskOutput::new(output).with_auxiliary_loss(excess.mean().mul_scalar(self.calibrator_weight))
    }

    /// Every task's fused representation `z_t` (what its head reads).
    fn tower_inputs(&self, shared: &SharedTensors) -> Vec<Tensor<2>> {
        self.fused(&shared.tensors[0], self.n_tasks() - 1)
    }

    fn task_parameters(&self, task: usize) -> ParamGroup {
        let own = (self.towers[task].clone(), self.heads[task].clone());
        match task {
            0 => ParamGroup::ids_from_module(own),
            t => ParamGroup::ids_from_module((own, self.transfers[t - 1].clone(), self.attention[t - 1].clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Int;
    use burn::tensor::{Distribution, TensorData};

    #[test]
    fn attention_weights_mix_the_two_inputs_and_the_calibrator_penalises_rising_probabilities() {
        let device = Device::flex();
        let input = FeatureEmbeddingConfig::new(vec![5, 3], 2).with_dim(3);
        let model = AitmConfig::new(input, vec![6], vec![3], 3).init(&device);
        let p = Tensor::<2>::random([4, 6], Distribution::Default, &device);
        let q = Tensor::<2>::random([4, 6], Distribution::Default, &device);
        // equal inputs: the fused vector is the value projection of that input
        let same = model.attention[0].forward(q.clone(), q.clone());
        let value = model.attention[0].h3.forward(q.clone());
        let diff = (same - value).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-5, "{diff}");
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![1i32, 2, 0, 1, 4, 0, 3, 1], [4, 2]), &device);
        let outs =
            model.forward(FeatureBatch::new(Some(ids), Some(Tensor::random([4, 2], Distribution::Default, &device))));
        assert!(outs[0].auxiliary_loss.is_none());
        for t in 1..3 {
            let expected = (sigmoid(outs[t].output.clone()) - sigmoid(outs[t - 1].output.clone()))
                .clamp_min(0.0)
                .mean()
                .mul_scalar(0.6)
                .into_scalar::<f32>();
            let got = outs[t].auxiliary_loss.clone().unwrap().into_scalar::<f32>();
            assert!((got - expected).abs() < 1e-6, "task {t}: {got} vs {expected}");
        }
        let _ = p;
    }
}
