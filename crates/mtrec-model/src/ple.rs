//! PLE, progressive layered extraction (Tang et al., RecSys 2020), built from CGC levels.
//!
//! A CGC level has task-specific experts for each task and shared experts. Task `t`'s gate (on
//! task `t`'s input) mixes its own experts and the shared ones; in every level but the last a
//! shared gate (on the shared input) mixes all experts into the next level's shared input. Level 1
//! reads the embedded input for every branch. One level is CGC.
//!
//! Two-phase split: the shared tensors are those several tasks read. With shared experts, the
//! levels below the last mix every task's experts into the shared gate's input, so they are the
//! shared part; it yields the last level's inputs (the embedded input for CGC, one per task above)
//! and the last level's shared experts, and task `t`'s branch is its own last-level experts, its
//! gate (on its input), the mixture and its tower. Without shared experts no task reads another's
//! experts: the shared part is the embedded input alone and each branch runs its own path through
//! every level. Either way a task's own experts receive its own loss's gradient, and a balancer
//! sees every task's gradient at every shared tensor.

use burn::{
    config::Config,
    module::{Module, ParamGroup},
    tensor::{Device, Tensor},
};
use mtrec_data::FeatureBatch;

use crate::{
    Embedded, ExpertBank, ExpertBankConfig, ExpertGate, ExpertGateConfig, FeatureEmbedding, FeatureEmbeddingConfig,
    MultiTaskModel, SharedTensors, TaskOutput, TaskTower, TaskTowerConfig,
    experts::{flatten_experts, unflatten_experts},
};

/// Configuration of a [`Ple`] model.
#[derive(Config, Debug)]
pub struct PleConfig {
    /// The input layer.
    pub input: FeatureEmbeddingConfig,
    /// Task-specific experts per task and level.
    pub n_task_experts: usize,
    /// Shared experts per level (0 allowed).
    pub n_shared_experts: usize,
    /// Hidden widths of each expert.
    pub expert_hidden: Vec<usize>,
    /// Hidden widths of each tower.
    pub tower_hidden: Vec<usize>,
    /// Number of tasks.
    pub n_tasks: usize,
    /// Number of CGC levels (1 = CGC).
    #[config(default = 1)]
    pub levels: usize,
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

impl PleConfig {
    /// Initialise the model.
    pub fn init(&self, device: &Device) -> Ple {
        assert!(self.levels > 0 && self.n_task_experts > 0, "PLE needs a level and task experts");
        let d_x = self.input.output_dim();
        let h = *self.expert_hidden.last().expect("experts need a layer");
        let bank = |d_in: usize, n: usize| {
            (n > 0).then(|| {
                ExpertBankConfig::new(d_in, n, self.expert_hidden.clone())
                    .with_batch_norm(self.batch_norm)
                    .with_dropout(self.dropout)
                    .init(device)
            })
        };
        let own_and_shared = self.n_task_experts + self.n_shared_experts;
        let all = self.n_tasks * self.n_task_experts + self.n_shared_experts;
        let levels = (0..self.levels)
            .map(|l| {
                let d_in = if l == 0 { d_x } else { h };
                let last = l + 1 == self.levels;
                CgcLevel {
                    task_experts: (0..self.n_tasks).map(|_| bank(d_in, self.n_task_experts).expect("n > 0")).collect(),
                    shared_experts: bank(d_in, self.n_shared_experts),
                    task_gates: (0..self.n_tasks)
                        .map(|_| ExpertGateConfig::new(d_in, own_and_shared).init(device))
                        .collect(),
                    shared_gate: (!last && self.n_shared_experts > 0)
                        .then(|| ExpertGateConfig::new(d_in, all).init(device)),
                }
            })
            .collect();
        let towers = TaskTowerConfig::new(h, self.tower_hidden.clone())
            .with_batch_norm(self.batch_norm)
            .with_dropout(self.dropout)
            .init_each(self.n_tasks, &self.task_outputs, device);
        Ple { input: self.input.init(device), levels, towers }
    }
}

/// One CGC level.
#[derive(Module, Debug)]
pub struct CgcLevel {
    /// Each task's own experts.
    pub task_experts: Vec<ExpertBank>,
    /// The shared experts, if any.
    pub shared_experts: Option<ExpertBank>,
    /// Each task's gate over its own and the shared experts.
    pub task_gates: Vec<ExpertGate>,
    /// The shared gate over all experts (every level but the last, when there are shared experts).
    pub shared_gate: Option<ExpertGate>,
}

/// Progressive layered extraction model.
#[derive(Module, Debug)]
pub struct Ple {
    /// Embeddings + dense features.
    pub input: FeatureEmbedding,
    /// The CGC levels.
    pub levels: Vec<CgcLevel>,
    /// One tower per task.
    pub towers: Vec<TaskTower>,
}

impl Ple {
    /// The first level whose task paths run in the task branches: the last level when shared
    /// experts mix the tasks, else the first (each task's path is its own from the input).
    fn first_branch_level(&self) -> usize {
        if self.levels[0].shared_experts.is_some() { self.levels.len() - 1 } else { 0 }
    }

    /// Task `task`'s gate weights over its own and the shared experts of the last level `[B, n]`,
    /// and its mixture `[B, h]`: what its tower reads.
    fn mixture(&self, task: usize, shared: &SharedTensors) -> (Tensor<2>, Tensor<2>) {
        let first = self.first_branch_level();
        let (last, inner) = self.levels[first..].split_last().expect("at least one level");
        let n_inputs = if first == 0 { 1 } else { self.n_tasks() };
        let mut input = shared.tensors[if first == 0 { 0 } else { task }].clone();
        for level in inner {
            let own = level.task_experts[task].forward(input.clone());
            input = ExpertGate::mix(level.task_gates[task].forward(input), own);
        }
        let mut experts = vec![last.task_experts[task].forward(input.clone())];
        if let Some(bank) = &last.shared_experts {
            experts.push(unflatten_experts(shared.tensors[n_inputs].clone(), bank.n_experts));
        }
        let weights = last.task_gates[task].forward(input);
        (ExpertGate::mix(weights.clone(), Tensor::cat(experts, 1)), weights)
    }
}

impl MultiTaskModel for Ple {
    fn n_tasks(&self) -> usize {
        self.towers.len()
    }

    /// Shared tensors: the last level's inputs — `[x]` when every task reads the embedded input
    /// (CGC, or no shared experts), else one per task — then, with shared experts, the last level's
    /// shared experts flattened `[B, n·h]`.
    fn forward_shared(&self, features: FeatureBatch) -> SharedTensors {
        let n_tasks = self.n_tasks();
        let Embedded { x, sparse_rows } = self.input.forward(features);
        let first = self.first_branch_level();
        let mut task_inputs = vec![x.clone(); n_tasks];
        let mut shared_input = x.clone();
        for level in &self.levels[..first] {
            let own: Vec<Tensor<3>> =
                level.task_experts.iter().zip(&task_inputs).map(|(e, x)| e.forward(x.clone())).collect();
            let shared = level.shared_experts.as_ref().map(|e| e.forward(shared_input.clone()));
            let mixture = |experts: Vec<Tensor<3>>, gate: &ExpertGate, input: Tensor<2>| {
                ExpertGate::mix(gate.forward(input), Tensor::cat(experts, 1))
            };
            let next: Vec<Tensor<2>> = (0..n_tasks)
                .map(|t| {
                    let experts = std::iter::once(own[t].clone()).chain(shared.clone()).collect();
                    mixture(experts, &level.task_gates[t], task_inputs[t].clone())
                })
                .collect();
            if let Some(gate) = &level.shared_gate {
                let experts = own.iter().cloned().chain(shared.clone()).collect();
                shared_input = mixture(experts, gate, shared_input);
            }
            task_inputs = next;
        }
        let mut tensors = if first == 0 { vec![x] } else { task_inputs };
        let last = self.levels.last().expect("at least one level");
        tensors.extend(last.shared_experts.as_ref().map(|e| flatten_experts(e.forward(shared_input))));
        let all = (0..tensors.len()).collect();
        SharedTensors::new(tensors, all).with_sparse_rows(sparse_rows)
    }

    fn forward_task(&self, task: usize, shared: &SharedTensors) -> TaskOutput {
        let (mixed, weights) = self.mixture(task, shared);
        TaskOutput::new(self.towers[task].forward(shared.erased(task, mixed))).with_gate(weights)
    }

    /// Each task's last-level mixture.
    fn tower_inputs(&self, shared: &SharedTensors) -> Vec<Tensor<2>> {
        (0..self.n_tasks()).map(|t| shared.erased(t, self.mixture(t, shared).0)).collect()
    }

    fn output_bias(&self, task: usize) -> Option<burn::module::ParamId> {
        self.towers[task].output_bias()
    }

    fn task_parameters(&self, task: usize) -> ParamGroup {
        let levels: Vec<(ExpertBank, ExpertGate)> =
            self.levels.iter().map(|l| (l.task_experts[task].clone(), l.task_gates[task].clone())).collect();
        ParamGroup::ids_from_module((levels, self.towers[task].clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Int;
    use burn::tensor::{Distribution, TensorData};

    fn to_vec(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    /// Without shared experts, one CGC level is per-task MMoE: task t's output is its tower on its
    /// gate's mixture of its own experts only.
    #[test]
    fn without_shared_experts_each_task_mixes_only_its_own_experts() {
        let device = Device::flex();
        let input = FeatureEmbeddingConfig::new(vec![5, 3], 2).with_dim(3);
        let model = PleConfig::new(input, 3, 0, vec![4], vec![2], 2).init(&device);
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![1i32, 2, 0, 1, 4, 0, 2, 2], [4, 2]), &device);
        let dense = Tensor::<2>::random([4, 2], Distribution::Default, &device);
        let x = model.input.forward(FeatureBatch::new(Some(ids.clone()), Some(dense.clone()))).x;
        let outs = model.forward(FeatureBatch::new(Some(ids), Some(dense)));
        let level = &model.levels[0];
        for (t, out) in outs.iter().enumerate() {
            let w = level.task_gates[t].forward(x.clone());
            let expected =
                model.towers[t].forward(ExpertGate::mix(w.clone(), level.task_experts[t].forward(x.clone())));
            assert_eq!(to_vec(out.output.clone()), to_vec(expected));
            assert_eq!(out.gate.clone().unwrap().dims(), [4, 3]);
            for row in to_vec(w.sum_dim(1)) {
                assert!((row - 1.0).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn two_levels_with_shared_experts_gate_over_own_and_shared() {
        let device = Device::flex();
        let input = FeatureEmbeddingConfig::new(vec![5, 3], 2).with_dim(3);
        let model = PleConfig::new(input, 2, 3, vec![4], vec![2], 3).with_levels(2).init(&device);
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![1i32, 2, 0, 1], [2, 2]), &device);
        let outs =
            model.forward(FeatureBatch::new(Some(ids), Some(Tensor::random([2, 2], Distribution::Default, &device))));
        assert_eq!(outs.len(), 3);
        for o in outs {
            assert_eq!(o.output.dims(), [2, 1]);
            assert_eq!(o.gate.unwrap().dims(), [2, 5]);
        }
        assert!(model.levels[0].shared_gate.is_some() && model.levels[1].shared_gate.is_none());
    }
}
