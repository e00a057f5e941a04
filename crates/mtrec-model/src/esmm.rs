//! ESMM, the entire-space multi-task model (Ma et al., SIGIR 2018): the serial (cascaded) form.
//!
//! Every task has a tower on the shared embedding giving `p_t = σ(z_t)`, the probability of step
//! `t` given the previous steps (CTR, then CVR given a click, …). Task `t` predicts the probability
//! of reaching step `t` from an impression, `Π_{s≤t} p_s` (pCTCVR = pCTR × pCVR), so every task is
//! trained on the whole impression space with the labels `y_t = Π_{s≤t} (step s happened)`. The
//! branch returns that product as a logit, so the usual BCE-with-logits is the ESMM loss.

use burn::{
    config::Config,
    module::{Module, ParamGroup},
    tensor::{Device, Tensor},
};
use mtrec_data::FeatureBatch;

use crate::{
    Embedded, FeatureEmbedding, FeatureEmbeddingConfig, MultiTaskModel, SharedTensors, TaskOutput, TaskTower,
    TaskTowerConfig,
};

/// Configuration of an [`Esmm`] model.
#[derive(Config, Debug)]
pub struct EsmmConfig {
    /// The shared input layer.
    pub input: FeatureEmbeddingConfig,
    /// Hidden widths of each task's tower.
    pub tower_hidden: Vec<usize>,
    /// Number of tasks (steps of the funnel).
    pub n_tasks: usize,
    /// Dropout in the towers.
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl EsmmConfig {
    /// Initialise the model.
    pub fn init(&self, device: &Device) -> Esmm {
        let tower = TaskTowerConfig::new(self.input.output_dim(), self.tower_hidden.clone()).with_dropout(self.dropout);
        Esmm { input: self.input.init(device), towers: tower.init_many(self.n_tasks, device) }
    }
}

/// Entire-space multi-task model.
#[derive(Module, Debug)]
pub struct Esmm {
    /// The shared embeddings.
    pub input: FeatureEmbedding,
    /// One tower per step: the logit of `p_t` (step t given the previous ones).
    pub towers: Vec<TaskTower>,
}

/// `log σ(z)`, stable for large `|z|`.
pub fn log_sigmoid(z: Tensor<2>) -> Tensor<2> {
    z.clone().clamp_max(0.0) - z.abs().neg().exp().log1p()
}

impl Esmm {
    /// The logit of `Π p_s` from the steps' logits.
    ///
    /// # Shapes
    /// - logits: `t ≥ 1` tensors `[B, 1]`; output `[B, 1]`
    pub fn product_logit(logits: Vec<Tensor<2>>) -> Tensor<2> {
        if logits.len() == 1 {
            return logits.into_iter().next().expect("one logit");
        }
        // log P, kept below 0 so that log(1 − P) stays finite
        let log_p = logits.into_iter().map(log_sigmoid).reduce(Tensor::add).expect("logits").clamp_max(-1e-6);
        log_p.clone() - log_p.exp().neg().log1p()
    }
}

impl MultiTaskModel for Esmm {
    fn n_tasks(&self) -> usize {
        self.towers.len()
    }

    /// Shared tensors: `[embedded input [B, d]]`.
    fn forward_shared(&self, features: FeatureBatch) -> SharedTensors {
        let Embedded { x, sparse_rows } = self.input.forward(features);
        SharedTensors::new(vec![x], vec![0]).with_sparse_rows(sparse_rows)
    }

    /// Task `t`: the logit of `Π_{s≤t} p_s`; for `t ≥ 1` also the logit of `p_t` itself (pCVR, the
    /// step given the previous one) as the conditional output.
    fn forward_task(&self, task: usize, shared: &SharedTensors) -> TaskOutput {
        let x = &shared.tensors[0];
        let logits: Vec<Tensor<2>> = self.towers[..=task].iter().map(|t| t.forward(x.clone())).collect();
        let own = logits[task].clone();
        let out = TaskOutput::new(Self::product_logit(logits));
        if task == 0 { out } else { out.with_conditional(own) }
    }

    /// The embedded input, which every tower reads.
    fn tower_inputs(&self, shared: &SharedTensors) -> Vec<Tensor<2>> {
        vec![shared.tensors[0].clone()]
    }

    fn task_parameters(&self, task: usize) -> ParamGroup {
        ParamGroup::ids_from_module(self.towers[task].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Int;
    use burn::tensor::{Distribution, TensorData, activation::sigmoid};

    fn to_vec(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    #[test]
    fn pctcvr_is_pctr_times_pcvr() {
        let device = Device::flex();
        let input = FeatureEmbeddingConfig::new(vec![5, 3], 2).with_dim(3);
        let model = EsmmConfig::new(input, vec![4], 2).init(&device);
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![1i32, 2, 0, 1, 4, 0], [3, 2]), &device);
        let dense = Tensor::<2>::random([3, 2], Distribution::Default, &device);
        let x = model.input.forward(FeatureBatch::new(Some(ids.clone()), Some(dense.clone()))).x;
        let outs = model.forward(FeatureBatch::new(Some(ids), Some(dense)));
        let p_ctr = to_vec(sigmoid(model.towers[0].forward(x.clone())));
        let p_cvr = to_vec(sigmoid(model.towers[1].forward(x)));
        let ctr = to_vec(sigmoid(outs[0].output.clone()));
        let ctcvr = to_vec(sigmoid(outs[1].output.clone()));
        assert!(outs[0].conditional.is_none());
        let cvr = to_vec(sigmoid(outs[1].conditional.clone().expect("pCVR exposed")));
        for i in 0..3 {
            assert!((ctr[i] - p_ctr[i]).abs() < 1e-6);
            assert!((ctcvr[i] - p_ctr[i] * p_cvr[i]).abs() < 1e-5, "{} vs {}", ctcvr[i], p_ctr[i] * p_cvr[i]);
            assert!((cvr[i] - p_cvr[i]).abs() < 1e-6);
        }
    }

    #[test]
    fn product_logit_is_stable_at_the_extremes() {
        let device = Device::flex();
        let z = |v: f32| Tensor::<2>::from_data(TensorData::new(vec![v], [1, 1]), &device);
        for (a, b) in [(40.0f32, 40.0f32), (-40.0, 3.0), (0.0, 0.0), (30.0, -30.0)] {
            let l = to_vec(Esmm::product_logit(vec![z(a), z(b)]))[0];
            let p = 1.0 / (1.0 + (-a as f64).exp()) * 1.0 / (1.0 + (-b as f64).exp());
            assert!(l.is_finite(), "{a} {b}");
            let back = 1.0 / (1.0 + (-(l as f64)).exp());
            assert!((back - p).abs() < 1e-5 || (p > 0.999_99 && back > 0.999_99), "{a} {b}: {back} vs {p}");
        }
    }
}
