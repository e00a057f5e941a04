//! OMoE, one-gate mixture of experts (the MMoE paper's baseline, Ma et al., KDD 2018): the experts
//! and a single softmax gate are shared by all tasks; each task has its own tower on the mixture.
//! Built from the same configuration as MMoE: [`MmoeConfig::init_omoe`](crate::MmoeConfig::init_omoe).

use burn::{
    module::{Module, ParamGroup},
    tensor::Tensor,
};
use mtrec_data::FeatureBatch;

use crate::{Embedded, ExpertBank, ExpertGate, FeatureEmbedding, MultiTaskModel, SharedTensors, TaskOutput, TaskTower};

/// One-gate mixture-of-experts model.
#[derive(Module, Debug)]
pub struct Omoe {
    /// Embeddings + dense features.
    pub input: FeatureEmbedding,
    /// The shared experts.
    pub experts: ExpertBank,
    /// The one gate, shared by all tasks.
    pub gate: ExpertGate,
    /// One tower per task.
    pub towers: Vec<TaskTower>,
}

impl MultiTaskModel for Omoe {
    fn n_tasks(&self) -> usize {
        self.towers.len()
    }

    /// Shared tensors: `[mixture [B, h], gate weights [B, E]]`; every tower reads the same mixture.
    fn forward_shared(&self, features: FeatureBatch) -> SharedTensors {
        let Embedded { x, sparse_rows } = self.input.forward(features);
        let weights = self.gate.forward(x.clone());
        let mixed = ExpertGate::mix(weights.clone(), self.experts.forward(x));
        SharedTensors::new(vec![mixed, weights], vec![0]).with_sparse_rows(sparse_rows)
    }

    fn forward_task(&self, task: usize, shared: &SharedTensors) -> TaskOutput {
        TaskOutput::new(self.towers[task].forward(shared.erased(0, shared.tensors[0].clone())))
            .with_gate(shared.tensors[1].clone())
    }

    /// The one mixture every tower reads.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FeatureEmbeddingConfig, MmoeConfig};
    use burn::tensor::Int;
    use burn::tensor::{Device, Distribution, TensorData};

    #[test]
    fn the_single_gate_is_shared_by_every_task() {
        let device = Device::flex();
        let input = FeatureEmbeddingConfig::new(vec![5, 3], 2).with_dim(3);
        let model = MmoeConfig::new(input, 4, vec![6], vec![3], 3).init_omoe(&device);
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![1i32, 2, 0, 1, 4, 0], [3, 2]), &device);
        let dense = Tensor::<2>::random([3, 2], Distribution::Default, &device);
        let outs = model.forward(FeatureBatch::new(Some(ids), Some(dense)));
        let gates: Vec<Vec<f32>> =
            outs.iter().map(|o| o.gate.clone().unwrap().into_data().try_into_vec::<f32>().unwrap()).collect();
        assert_eq!(gates[0], gates[1]);
        assert_eq!(gates[0], gates[2]);
        // different towers: different outputs from the same mixture
        let o: Vec<Vec<f32>> =
            outs.iter().map(|o| o.output.clone().into_data().try_into_vec::<f32>().unwrap()).collect();
        assert_ne!(o[0], o[1]);
    }
}
