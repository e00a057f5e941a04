//! STEM-Net, shared and task-specific embeddings (Su et al., AAAI 2024).
//!
//! MMoE and PLE give every task the same embeddings, and the tasks' gradients pull them apart
//! (the paper's "embedding collapse"). STEM gives every task its own input layer (own embedding
//! tables) beside a shared one: task `t`'s experts (`model.n_task_experts`) read task `t`'s
//! embeddings, the shared experts (`model.n_shared_experts`) the shared embeddings. Task `t`'s
//! gate (on its own embedded input) mixes its own experts, the shared experts and every other
//! task's experts — *all forward, task-specific backward*: the other tasks' experts enter task `t`'s
//! mixture with their gradient stopped, so task `t`'s loss trains its own embeddings and experts,
//! the shared ones and its gate, and never another task's. Then a tower per task.
//!
//! Two-phase split: the shared part is every input layer and every expert (task `s`'s experts are
//! read by every task's branch, with a gradient only from task `s`); it yields each task's
//! embedded input (its gate's input), the shared experts and each task's experts. Task `t`'s
//! branch is its gate over them (others' detached) and its tower.

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

/// Configuration of a [`Stem`] model.
#[derive(Config, Debug)]
pub struct StemConfig {
    /// The input layer (built once shared and once a task).
    pub input: FeatureEmbeddingConfig,
    /// Experts per task (`m`).
    pub n_task_experts: usize,
    /// Shared experts (`s`, 0 allowed).
    pub n_shared_experts: usize,
    /// Hidden widths of each expert.
    pub expert_hidden: Vec<usize>,
    /// Hidden widths of each tower.
    pub tower_hidden: Vec<usize>,
    /// Number of tasks.
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

impl StemConfig {
    /// Initialise the model.
    pub fn init(&self, device: &Device) -> Stem {
        assert!(self.n_task_experts > 0 && self.n_tasks > 0, "STEM needs task experts");
        let d_x = self.input.output_dim();
        let h = *self.expert_hidden.last().expect("experts need a layer");
        let bank = |n: usize| {
            ExpertBankConfig::new(d_x, n, self.expert_hidden.clone())
                .with_batch_norm(self.batch_norm)
                .with_dropout(self.dropout)
                .init(device)
        };
        let all = self.n_tasks * self.n_task_experts + self.n_shared_experts;
        Stem {
            shared_input: self.input.init(device),
            task_inputs: (0..self.n_tasks).map(|_| self.input.init(device)).collect(),
            shared_experts: (self.n_shared_experts > 0).then(|| bank(self.n_shared_experts)),
            task_experts: (0..self.n_tasks).map(|_| bank(self.n_task_experts)).collect(),
            gates: (0..self.n_tasks).map(|_| ExpertGateConfig::new(d_x, all).init(device)).collect(),
            towers: TaskTowerConfig::new(h, self.tower_hidden.clone())
                .with_batch_norm(self.batch_norm)
                .with_dropout(self.dropout)
                .init_each(self.n_tasks, &self.task_outputs, device),
        }
    }
}

/// Shared and task-specific embedding network.
#[derive(Module, Debug)]
pub struct Stem {
    /// The shared embeddings + dense features.
    pub shared_input: FeatureEmbedding,
    /// Each task's own embeddings + dense features.
    pub task_inputs: Vec<FeatureEmbedding>,
    /// The shared experts, if any.
    pub shared_experts: Option<ExpertBank>,
    /// Each task's experts.
    pub task_experts: Vec<ExpertBank>,
    /// Each task's gate over all experts (its own, the other tasks', the shared).
    pub gates: Vec<ExpertGate>,
    /// One tower per task.
    pub towers: Vec<TaskTower>,
}

impl Stem {
    /// Task `task`'s mixture `[B, h]` and gate weights `[B, T·m + s]` (experts ordered task by
    /// task, then the shared ones; the other tasks' detached).
    fn mixture(&self, task: usize, shared: &SharedTensors) -> (Tensor<2>, Tensor<2>) {
        let n = self.towers.len();
        let x = shared.tensors[task].clone();
        let experts: Vec<Tensor<2>> = (0..n)
            .map(|s| {
                let e = shared.tensors[n + s].clone();
                if s == task { e } else { e.detach() }
            })
            .chain(shared.tensors.get(2 * n).cloned())
            .collect();
        let weights = self.gates[task].forward(x);
        let all = unflatten_experts(Tensor::cat(experts, 1), weights.dims()[1]);
        (ExpertGate::mix(weights.clone(), all), weights)
    }
}

impl MultiTaskModel for Stem {
    fn n_tasks(&self) -> usize {
        self.towers.len()
    }

    /// Shared tensors: each task's embedded input `[B, d]` (T of them), each task's experts
    /// `[B, m·h]` (T), then the shared experts `[B, s·h]` if any; the experts are the
    /// representation.
    fn forward_shared(&self, features: FeatureBatch) -> SharedTensors {
        let mut sparse_rows = Vec::new();
        let mut embed = |input: &FeatureEmbedding| {
            let Embedded { x, sparse_rows: rows } = input.forward(features.clone());
            sparse_rows.extend(rows);
            x
        };
        let xs: Vec<Tensor<2>> = self.task_inputs.iter().map(&mut embed).collect();
        let shared_x = embed(&self.shared_input);
        let n = xs.len();
        let mut tensors = xs.clone();
        tensors.extend(self.task_experts.iter().zip(xs).map(|(bank, x)| flatten_experts(bank.forward(x))));
        tensors.extend(self.shared_experts.as_ref().map(|bank| flatten_experts(bank.forward(shared_x))));
        let representation = (n..tensors.len()).collect();
        SharedTensors::new(tensors, representation).with_sparse_rows(sparse_rows)
    }

    fn forward_task(&self, task: usize, shared: &SharedTensors) -> TaskOutput {
        let (mixed, weights) = self.mixture(task, shared);
        TaskOutput::new(self.towers[task].forward(shared.erased(task, mixed))).with_gate(weights)
    }

    /// Each task's mixture.
    fn tower_inputs(&self, shared: &SharedTensors) -> Vec<Tensor<2>> {
        (0..self.n_tasks()).map(|t| shared.erased(t, self.mixture(t, shared).0)).collect()
    }

    fn output_bias(&self, task: usize) -> Option<burn::module::ParamId> {
        self.towers[task].output_bias()
    }

    fn task_parameters(&self, task: usize) -> ParamGroup {
        ParamGroup::ids_from_module((self.gates[task].clone(), self.towers[task].clone()))
    }

    fn input_layers_mut(&mut self) -> Vec<&mut FeatureEmbedding> {
        std::iter::once(&mut self.shared_input).chain(self.task_inputs.iter_mut()).collect()
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Distribution, Int, TensorData};

    use super::*;

    fn model(device: &Device) -> Stem {
        let input = FeatureEmbeddingConfig::new(vec![5, 4], 2).with_dim(3);
        StemConfig::new(input, 2, 1, vec![6], vec![4], 2).init(device)
    }

    fn batch(device: &Device) -> FeatureBatch {
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![1i32, 2, 3, 1, 4, 0, 2, 3], [4, 2]), device);
        FeatureBatch::new(Some(ids), Some(Tensor::random([4, 2], Distribution::Default, device)))
    }

    fn grad_norm(param: &burn::module::Param<Tensor<2>>, grads: &burn::tensor::Gradients) -> f64 {
        param.grad(grads).map_or(0.0, |g| f64::from(g.abs().sum().into_scalar::<f32>()))
    }

    /// All forward, task-specific backward: task 0's loss trains its own embedding table and
    /// experts and the shared ones, and leaves task 1's table and experts untouched (no gradient);
    /// yet task 1's experts are in task 0's forward (changing them changes task 0's output).
    #[test]
    fn a_tasks_loss_leaves_the_other_tasks_embeddings_untouched() {
        let device = Device::flex().autodiff();
        // a 6-unit ReLU expert on 4 rows can start dead on all of them (task 0's output then has no
        // gradient at all) — an initialisation, not what is tested: the first of a few draws whose
        // task-0 expert passes a gradient
        let inputs = batch(&device);
        let (stem, grads) = (0..8)
            .map(|_| {
                let stem = model(&device);
                let grads = stem.forward(inputs.clone())[0].output.clone().sum().backward();
                (stem, grads)
            })
            .find(|(stem, grads)| grad_norm(&stem.task_experts[0].first.weight, grads) > 0.0)
            .expect("a draw with a live task-0 expert");
        let table = |input: &FeatureEmbedding| grad_norm(&input.table.as_ref().unwrap().weight, &grads);
        assert!(table(&stem.task_inputs[0]) > 0.0, "task 0's own table learns");
        assert!(table(&stem.shared_input) > 0.0, "the shared table learns");
        assert_eq!(table(&stem.task_inputs[1]), 0.0, "task 1's table is untouched by task 0's loss");
        assert_eq!(grad_norm(&stem.task_experts[1].first.weight, &grads), 0.0);
        assert!(grad_norm(&stem.task_experts[0].first.weight, &grads) > 0.0);

        // the same draw (its task-0 tower passes a gradient, so it is live on some row): task 1's
        // experts, switched on for every row by a large bias (scaling weights could leave a dead
        // expert dead), change task 0's output through task 0's gate
        let mut stem = stem;
        let before = stem.forward(inputs.clone())[0].output.clone().into_data().try_into_vec::<f32>().unwrap();
        let first = &mut stem.task_experts[1].first;
        let bias = first.bias.as_ref().expect("the experts' first layer has a bias").val();
        first.bias = Some(burn::module::Param::from_tensor((bias + 10.0).detach()));
        let after = stem.forward(inputs)[0].output.clone().into_data().try_into_vec::<f32>().unwrap();
        assert!(before.iter().zip(&after).any(|(a, b)| (a - b).abs() > 1e-6), "task 1's experts feed task 0");
    }

    /// The gate of each task spans every task's experts and the shared ones.
    #[test]
    fn gates_span_all_experts() {
        let device = Device::flex();
        let stem = model(&device);
        for out in stem.forward(batch(&device)) {
            assert_eq!(out.gate.unwrap().dims(), [4, 2 * 2 + 1]);
            assert_eq!(out.output.dims(), [4, 1]);
        }
    }
}
