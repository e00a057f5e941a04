//! Shared-bottom (Caruana, 1997): one MLP shared by all tasks, one tower per task on top of it.

use burn::{
    config::Config,
    module::{Module, ParamGroup},
    tensor::{Device, Tensor},
};
use mtrec_data::FeatureBatch;

use crate::{
    Embedded, FeatureEmbedding, FeatureEmbeddingConfig, Mlp, MlpConfig, MultiTaskModel, SharedTensors, SingleTask,
    TaskOutput, TaskTower, TaskTowerConfig,
};

/// Configuration of a [`SharedBottom`] model.
#[derive(Config, Debug)]
pub struct SharedBottomConfig {
    /// The input layer.
    pub input: FeatureEmbeddingConfig,
    /// Hidden widths of the shared bottom.
    pub bottom_hidden: Vec<usize>,
    /// Hidden widths of each tower.
    pub tower_hidden: Vec<usize>,
    /// Number of tasks.
    pub n_tasks: usize,
    /// Batch normalisation in hidden layers.
    #[config(default = false)]
    pub batch_norm: bool,
    /// Dropout after hidden activations.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Head width of each task (empty: 1 each; multiclass tasks have one logit a class).
    #[config(default = "Vec::new()")]
    pub task_outputs: Vec<usize>,
}

impl SharedBottomConfig {
    fn bottom(&self) -> MlpConfig {
        MlpConfig::new(self.input.output_dim(), self.bottom_hidden.clone())
            .with_batch_norm(self.batch_norm)
            .with_dropout(self.dropout)
    }

    fn towers(&self, device: &Device) -> Vec<TaskTower> {
        TaskTowerConfig::new(self.bottom().output_dim(), self.tower_hidden.clone())
            .with_batch_norm(self.batch_norm)
            .with_dropout(self.dropout)
            .init_each(self.n_tasks, &self.task_outputs, device)
    }

    /// Initialise the model.
    pub fn init(&self, device: &Device) -> SharedBottom {
        SharedBottom { input: self.input.init(device), bottom: self.bottom().init(device), towers: self.towers(device) }
    }

    /// One independent copy of the input layer, bottom and tower per task: [`SingleTask`].
    pub fn init_single_task(&self, device: &Device) -> SingleTask {
        SingleTask {
            inputs: (0..self.n_tasks).map(|_| self.input.init(device)).collect(),
            bottoms: (0..self.n_tasks).map(|_| self.bottom().init(device)).collect(),
            towers: self.towers(device),
        }
    }
}

/// Shared-bottom multi-task model.
#[derive(Module, Debug)]
pub struct SharedBottom {
    /// Embeddings + dense features.
    pub input: FeatureEmbedding,
    /// The shared MLP.
    pub bottom: Mlp,
    /// One tower per task.
    pub towers: Vec<TaskTower>,
}

impl MultiTaskModel for SharedBottom {
    fn n_tasks(&self) -> usize {
        self.towers.len()
    }

    /// Shared tensors: `[bottom output [B, h]]`; the last shared layer is the bottom's last layer.
    fn forward_shared(&self, features: FeatureBatch) -> SharedTensors {
        let Embedded { x, sparse_rows } = self.input.forward(features);
        let (bottom, last_layer) = self.bottom.forward_with_last_layer(x, 0);
        SharedTensors::new(vec![bottom], vec![0]).with_last_layer(last_layer).with_sparse_rows(sparse_rows)
    }

    fn forward_task(&self, task: usize, shared: &SharedTensors) -> TaskOutput {
        TaskOutput::new(self.towers[task].forward(shared.erased(0, shared.tensors[0].clone())))
    }

    /// The bottom's output, which every tower reads.
    fn tower_inputs(&self, shared: &SharedTensors) -> Vec<Tensor<2>> {
        vec![shared.erased(0, shared.tensors[0].clone())]
    }

    fn output_bias(&self, task: usize) -> Option<burn::module::ParamId> {
        self.towers[task].output_bias()
    }

    fn task_parameters(&self, task: usize) -> ParamGroup {
        ParamGroup::ids_from_module(self.towers[task].clone())
    }
}
