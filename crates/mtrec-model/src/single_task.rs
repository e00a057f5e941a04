//! Single-task baselines: one independent network per task (its own embeddings, bottom MLP and
//! tower) with the shared-bottom budget each — what every multi-task gain is measured against.
//! Trained together only for convenience: the networks share no parameter, so each task's
//! gradient touches its own network alone. Built from the shared-bottom configuration:
//! [`SharedBottomConfig::init_single_task`](crate::SharedBottomConfig::init_single_task).

use burn::{
    module::{Module, ParamGroup},
    tensor::Tensor,
};
use mtrec_data::FeatureBatch;

use crate::{Embedded, FeatureEmbedding, Mlp, MultiTaskModel, SharedTensors, TaskOutput, TaskTower};

/// One independent network per task.
#[derive(Module, Debug)]
pub struct SingleTask {
    /// Each task's embeddings.
    pub inputs: Vec<FeatureEmbedding>,
    /// Each task's bottom MLP.
    pub bottoms: Vec<Mlp>,
    /// Each task's tower.
    pub towers: Vec<TaskTower>,
}

impl MultiTaskModel for SingleTask {
    fn n_tasks(&self) -> usize {
        self.towers.len()
    }

    /// Shared tensors: each task's bottom output `[B, h]` (task `t` reads only tensor `t`).
    fn forward_shared(&self, features: FeatureBatch) -> SharedTensors {
        let mut sparse_rows = Vec::new();
        let tensors: Vec<Tensor<2>> = self
            .inputs
            .iter()
            .zip(&self.bottoms)
            .map(|(input, bottom)| {
                let Embedded { x, sparse_rows: rows } = input.forward(features.clone());
                sparse_rows.extend(rows);
                bottom.forward(x)
            })
            .collect();
        let n = tensors.len();
        SharedTensors::new(tensors, (0..n).collect()).with_sparse_rows(sparse_rows)
    }

    fn forward_task(&self, task: usize, shared: &SharedTensors) -> TaskOutput {
        TaskOutput::new(self.towers[task].forward(shared.tensors[task].clone()))
    }

    /// Each task's bottom output.
    fn tower_inputs(&self, shared: &SharedTensors) -> Vec<Tensor<2>> {
        shared.tensors.clone()
    }

    fn output_bias(&self, task: usize) -> Option<burn::module::ParamId> {
        self.towers[task].output_bias()
    }

    fn task_parameters(&self, task: usize) -> ParamGroup {
        ParamGroup::ids_from_module((self.inputs[task].clone(), self.bottoms[task].clone(), self.towers[task].clone()))
    }
}
