//! MMoE, multi-gate mixture of experts (Ma et al., KDD 2018): experts shared by all tasks, one
//! softmax gate per task (linear on the input) mixing them, one tower per task.

use burn::{
    config::Config,
    module::{Module, ParamGroup},
    tensor::{Device, Tensor},
};
use mtrec_data::FeatureBatch;

use crate::{
    Embedded, ExpertBank, ExpertBankConfig, ExpertGate, ExpertGateConfig, FeatureEmbedding, FeatureEmbeddingConfig,
    MultiTaskModel, Omoe, SharedTensors, TaskOutput, TaskTower, TaskTowerConfig,
    experts::{flatten_experts, unflatten_experts},
};

/// Configuration of an [`Mmoe`] model.
#[derive(Config, Debug)]
pub struct MmoeConfig {
    /// The input layer.
    pub input: FeatureEmbeddingConfig,
    /// Number of experts.
    pub n_experts: usize,
    /// Hidden widths of each expert.
    pub expert_hidden: Vec<usize>,
    /// Hidden widths of each tower.
    pub tower_hidden: Vec<usize>,
    /// Number of tasks (= gates = towers).
    pub n_tasks: usize,
    /// Batch normalisation in hidden layers.
    #[config(default = false)]
    pub batch_norm: bool,
    /// Dropout after every hidden activation (experts and towers).
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Head width of each task (empty: 1 each; multiclass tasks have one logit a class).
    #[config(default = "Vec::new()")]
    pub task_outputs: Vec<usize>,
}

impl MmoeConfig {
    fn experts(&self) -> ExpertBankConfig {
        ExpertBankConfig::new(self.input.output_dim(), self.n_experts, self.expert_hidden.clone())
            .with_batch_norm(self.batch_norm)
            .with_dropout(self.dropout)
    }

    fn towers(&self, device: &Device) -> Vec<TaskTower> {
        TaskTowerConfig::new(self.experts().output_dim(), self.tower_hidden.clone())
            .with_batch_norm(self.batch_norm)
            .with_dropout(self.dropout)
            .init_each(self.n_tasks, &self.task_outputs, device)
    }

    /// Initialise the model.
    pub fn init(&self, device: &Device) -> Mmoe {
        let d_in = self.input.output_dim();
        let gates = (0..self.n_tasks).map(|_| ExpertGateConfig::new(d_in, self.n_experts).init(device)).collect();
        Mmoe {
            input: self.input.init(device),
            experts: self.experts().init(device),
            gates,
            towers: self.towers(device),
        }
    }

    /// The same experts and towers with one gate shared by all tasks: [`Omoe`].
    pub fn init_omoe(&self, device: &Device) -> Omoe {
        Omoe {
            input: self.input.init(device),
            experts: self.experts().init(device),
            gate: ExpertGateConfig::new(self.input.output_dim(), self.n_experts).init(device),
            towers: self.towers(device),
        }
    }
}

/// Multi-gate mixture-of-experts model.
#[derive(Module, Debug)]
pub struct Mmoe {
    /// Embeddings + dense features.
    pub input: FeatureEmbedding,
    /// The shared experts.
    pub experts: ExpertBank,
    /// One gate per task.
    pub gates: Vec<ExpertGate>,
    /// One tower per task.
    pub towers: Vec<TaskTower>,
}

impl Mmoe {
    /// Task `task`'s gate weights `[B, E]` and its mixture of the experts `[B, h]`: what its tower reads.
    fn mixture(&self, task: usize, shared: &SharedTensors) -> (Tensor<2>, Tensor<2>) {
        let x = shared.tensors[0].clone();
        let experts = unflatten_experts(shared.tensors[1].clone(), self.experts.n_experts);
        let weights = self.gates[task].forward(x);
        (ExpertGate::mix(weights.clone(), experts), weights)
    }
}

impl MultiTaskModel for Mmoe {
    fn n_tasks(&self) -> usize {
        self.towers.len()
    }

    /// Shared tensors: `[input x [B, d_in], experts [B, E·h]]` (the gates read `x`).
    ///
    /// The last shared layer is the experts' last layer (all experts together): the layer every
    /// task's mixture reads, as GradNorm's "last shared layer" prescribes. The input `x` is shared
    /// too (embeddings) but the gates are task-specific and read it directly.
    fn forward_shared(&self, features: FeatureBatch) -> SharedTensors {
        let Embedded { x, sparse_rows } = self.input.forward(features);
        let (experts, last_layer) = self.experts.forward_with_last_layer(x.clone(), 1);
        SharedTensors::new(vec![x, flatten_experts(experts)], vec![1])
            .with_last_layer(last_layer)
            .with_sparse_rows(sparse_rows)
    }

    fn forward_task(&self, task: usize, shared: &SharedTensors) -> TaskOutput {
        let (mixed, weights) = self.mixture(task, shared);
        TaskOutput::new(self.towers[task].forward(shared.erased(task, mixed))).with_gate(weights)
    }

    /// Each task's mixture of the experts.
    fn tower_inputs(&self, shared: &SharedTensors) -> Vec<Tensor<2>> {
        (0..self.n_tasks()).map(|t| shared.erased(t, self.mixture(t, shared).0)).collect()
    }

    fn output_bias(&self, task: usize) -> Option<burn::module::ParamId> {
        self.towers[task].output_bias()
    }

    fn task_parameters(&self, task: usize) -> ParamGroup {
        ParamGroup::ids_from_module((self.gates[task].clone(), self.towers[task].clone()))
    }
}
