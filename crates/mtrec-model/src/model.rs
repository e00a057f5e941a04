//! The two-phase model contract every architecture implements, the enum that holds whichever
//! architecture an experiment chose, and the experiment-level model configuration.

use burn::{
    module::{Module, ParamGroup},
    tensor::{Device, Int, Tensor},
};
use mtrec_data::Schema;
use serde::{Deserialize, Serialize};

use crate::{FeatureEmbeddingConfig, LastSharedLayer, Mmoe, MmoeConfig, SharedBottom, SharedBottomConfig};

/// What the shared part of a model yields: every tensor the task branches read.
///
/// A balancer that needs per-task gradients detaches these into leaves, builds each task branch
/// from the leaves, and pushes the combined gradient back with one surrogate backward.
#[derive(Debug, Clone)]
pub struct SharedTensors {
    /// The shared tensors, each `[B, width]`.
    pub tensors: Vec<Tensor<2>>,
    /// The last shared layer (GradNorm's `W`), where the architecture can expose it.
    pub last_layer: Option<LastSharedLayer>,
}

impl SharedTensors {
    /// Detached copies that require gradients: the cut point for per-task gradients.
    pub fn detached_leaves(&self) -> SharedTensors {
        SharedTensors {
            tensors: self.tensors.iter().map(|t| t.clone().detach().require_grad()).collect(),
            last_layer: self.last_layer.clone(),
        }
    }
}

/// One task branch's output.
#[derive(Debug, Clone)]
pub struct TaskOutput {
    /// The head's output, `[B, 1]`: a logit for binary tasks, a value for regression.
    pub output: Tensor<2>,
    /// The branch's gate weights over experts, `[B, E]`, for gated architectures.
    pub gate: Option<Tensor<2>>,
}

/// A multi-task architecture with a shared part and per-task branches.
pub trait MultiTaskModel {
    /// Number of tasks (branches).
    fn n_tasks(&self) -> usize;

    /// The shared part: embeddings, bottom, experts.
    ///
    /// # Shapes
    /// - categorical: `[B, F]`, dense: `[B, D]`
    fn forward_shared(&self, categorical: Option<Tensor<2, Int>>, dense: Option<Tensor<2>>) -> SharedTensors;

    /// Task `task`'s branch (gate, tower, head), reading only `shared`.
    fn forward_task(&self, task: usize, shared: &SharedTensors) -> TaskOutput;

    /// The parameters that belong to task `task` alone (its gate, tower, head): the group a
    /// per-task learning-rate scale applies to.
    fn task_parameters(&self, task: usize) -> ParamGroup;

    /// Both phases, all tasks.
    fn forward(&self, categorical: Option<Tensor<2, Int>>, dense: Option<Tensor<2>>) -> Vec<TaskOutput> {
        let shared = self.forward_shared(categorical, dense);
        (0..self.n_tasks()).map(|t| self.forward_task(t, &shared)).collect()
    }
}

/// Which architecture to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// One shared MLP bottom, one tower per task (Caruana 1997).
    SharedBottom,
    /// Multi-gate mixture of experts (Ma et al., KDD 2018).
    #[default]
    Mmoe,
}

/// The `[model]` section of an experiment config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// `shared_bottom` or `mmoe`.
    pub architecture: Architecture,
    /// Embedding width per categorical field.
    pub embedding_dim: usize,
    /// MMoE: number of experts.
    pub n_experts: usize,
    /// MMoE: hidden widths of each expert.
    pub expert_hidden: Vec<usize>,
    /// Shared-bottom: hidden widths of the shared bottom.
    pub bottom_hidden: Vec<usize>,
    /// Hidden widths of each task tower.
    pub tower_hidden: Vec<usize>,
    /// Batch normalisation in every hidden layer (experts, bottom, towers).
    pub batch_norm: bool,
    /// Dropout after every hidden activation.
    pub dropout: f64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            architecture: Architecture::Mmoe,
            embedding_dim: 4,
            n_experts: 8,
            expert_hidden: vec![16],
            bottom_hidden: vec![128],
            tower_hidden: vec![8],
            batch_norm: false,
            dropout: 0.0,
        }
    }
}

impl ModelConfig {
    /// Checks the values; the message names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if self.embedding_dim == 0 {
            return Err("model.embedding_dim must be positive".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("model.dropout = {} must be in [0, 1)", self.dropout));
        }
        let zero = |v: &[usize]| v.contains(&0);
        if zero(&self.expert_hidden) || zero(&self.bottom_hidden) || zero(&self.tower_hidden) {
            return Err("model.*_hidden widths must be positive".into());
        }
        match self.architecture {
            Architecture::Mmoe if self.n_experts == 0 || self.expert_hidden.is_empty() => {
                Err("model.n_experts must be positive and model.expert_hidden non-empty for mmoe".into())
            }
            Architecture::SharedBottom if self.bottom_hidden.is_empty() => {
                Err("model.bottom_hidden must be non-empty for shared_bottom".into())
            }
            _ => Ok(()),
        }
    }

    /// Builds the chosen architecture for a dataset's schema.
    pub fn init(&self, schema: &Schema, device: &Device) -> MultiTaskNet {
        let input = FeatureEmbeddingConfig::new(schema.vocab_sizes(), schema.dense.len()).with_dim(self.embedding_dim);
        let n_tasks = schema.n_tasks();
        match self.architecture {
            Architecture::SharedBottom => MultiTaskNet::SharedBottom(
                SharedBottomConfig::new(input, self.bottom_hidden.clone(), self.tower_hidden.clone(), n_tasks)
                    .with_batch_norm(self.batch_norm)
                    .with_dropout(self.dropout)
                    .init(device),
            ),
            Architecture::Mmoe => MultiTaskNet::Mmoe(
                MmoeConfig::new(input, self.n_experts, self.expert_hidden.clone(), self.tower_hidden.clone(), n_tasks)
                    .with_batch_norm(self.batch_norm)
                    .with_dropout(self.dropout)
                    .init(device),
            ),
        }
    }
}

/// Whichever architecture an experiment runs.
#[derive(Module, Debug)]
pub enum MultiTaskNet {
    /// See [`SharedBottom`].
    SharedBottom(SharedBottom),
    /// See [`Mmoe`].
    Mmoe(Mmoe),
}

impl MultiTaskNet {
    fn inner(&self) -> &dyn MultiTaskModel {
        match self {
            MultiTaskNet::SharedBottom(m) => m,
            MultiTaskNet::Mmoe(m) => m,
        }
    }
}

impl MultiTaskModel for MultiTaskNet {
    fn n_tasks(&self) -> usize {
        self.inner().n_tasks()
    }
    fn forward_shared(&self, categorical: Option<Tensor<2, Int>>, dense: Option<Tensor<2>>) -> SharedTensors {
        self.inner().forward_shared(categorical, dense)
    }
    fn forward_task(&self, task: usize, shared: &SharedTensors) -> TaskOutput {
        self.inner().forward_task(task, shared)
    }
    fn task_parameters(&self, task: usize) -> ParamGroup {
        self.inner().task_parameters(task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};
    use mtrec_data::{CategoricalField, TaskKind, TaskSpec};

    fn schema(n_tasks: usize) -> Schema {
        Schema {
            categorical: vec![
                CategoricalField { name: "a".into(), vocab_size: 5 },
                CategoricalField { name: "b".into(), vocab_size: 3 },
            ],
            dense: vec!["x".into(), "y".into(), "z".into()],
            tasks: (0..n_tasks).map(|t| TaskSpec { name: format!("t{t}"), kind: TaskKind::Binary }).collect(),
        }
    }

    fn inputs(b: usize, device: &Device) -> (Tensor<2, Int>, Tensor<2>) {
        let ids: Vec<i32> = (0..b * 2).map(|i| (i % 3) as i32).collect();
        (Tensor::from_data(TensorData::new(ids, [b, 2]), device), Tensor::random([b, 3], Distribution::Default, device))
    }

    #[test]
    fn output_shapes_for_each_architecture_and_task_count() {
        let device = Device::flex();
        for arch in [Architecture::SharedBottom, Architecture::Mmoe] {
            for n_tasks in [1, 2, 3] {
                let cfg = ModelConfig { architecture: arch, n_experts: 4, ..Default::default() };
                let model = cfg.init(&schema(n_tasks), &device);
                let (c, d) = inputs(7, &device);
                let outs = model.forward(Some(c), Some(d));
                assert_eq!(outs.len(), n_tasks);
                for out in outs {
                    assert_eq!(out.output.dims(), [7, 1]);
                    match arch {
                        Architecture::Mmoe => assert_eq!(out.gate.unwrap().dims(), [7, 4]),
                        Architecture::SharedBottom => assert!(out.gate.is_none()),
                    }
                }
            }
        }
    }

    /// Branches built on detached leaves give the same outputs as the attached forward.
    #[test]
    fn task_branches_read_only_the_shared_tensors() {
        let device = Device::flex().autodiff();
        let model = ModelConfig::default().init(&schema(2), &device);
        let (c, d) = inputs(4, &device);
        let shared = model.forward_shared(Some(c.clone()), Some(d.clone()));
        let leaves = shared.detached_leaves();
        let full = model.forward(Some(c), Some(d));
        for (t, out) in full.iter().enumerate() {
            let cut = model.forward_task(t, &leaves).output.into_data().try_into_vec::<f32>().unwrap();
            assert_eq!(out.output.clone().into_data().try_into_vec::<f32>().unwrap(), cut);
        }
    }

    #[test]
    fn invalid_configs_name_their_key() {
        let bad = ModelConfig { n_experts: 0, ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("model.n_experts"));
        let bad = ModelConfig { dropout: 1.5, ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("model.dropout"));
    }
}
