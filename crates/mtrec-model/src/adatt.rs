//! AdaTT, adaptive task-to-task fusion (Li et al., KDD 2023; the AdaTT-sp model of the authors'
//! `mtl_lib.py`).
//!
//! Every task owns `m` experts (`model.n_task_experts`); there are no shared experts. In each
//! fusion level, task `t`'s fusion unit mixes *all* tasks' experts with a softmax gate on its own
//! input — the adaptive task-to-task part: a task draws on another task's experts as much as its
//! gate finds them useful — and adds a learned linear combination of its own experts (`w_t`, `m`
//! weights, uniform in `±√(1/m)` as in the reference code; with `m = 1` the own expert is added
//! unweighted): `f_t = Σ_e g_t,e(x_t)·E_e(x_{task(e)}) + Σ_k w_t,k·E_t,k(x_t)`. Level 1 reads the
//! embedded input for every task; level `l + 1` reads each task's fusion output.
//! `model.levels` fusion levels, then one tower per task on `f_t`.
//!
//! Two-phase split: every task's fusion reads every expert, so the experts of the last level (and
//! every level below it) are the shared part; it yields each task's last-level input (the embedded
//! input, once, for one level) and the last level's experts side by side. Task `t`'s branch is its
//! gate, its own-expert weights and its tower; the gradient of task `t`'s loss reaches task `s`'s
//! experts only through `t`'s gate weights on them.

use burn::{
    config::Config,
    module::{Module, Param, ParamGroup},
    tensor::{Device, Distribution, Tensor},
};
use mtrec_data::FeatureBatch;

use crate::{
    Embedded, ExpertBank, ExpertBankConfig, ExpertGate, ExpertGateConfig, FeatureEmbedding, FeatureEmbeddingConfig,
    MultiTaskModel, SharedTensors, TaskOutput, TaskTower, TaskTowerConfig,
    experts::{flatten_experts, unflatten_experts},
};

/// Configuration of an [`AdaTt`] model.
#[derive(Config, Debug)]
pub struct AdaTtConfig {
    /// The input layer.
    pub input: FeatureEmbeddingConfig,
    /// Experts per task and level (`m`).
    pub n_task_experts: usize,
    /// Hidden widths of each expert.
    pub expert_hidden: Vec<usize>,
    /// Hidden widths of each tower.
    pub tower_hidden: Vec<usize>,
    /// Number of tasks.
    pub n_tasks: usize,
    /// Number of fusion levels.
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

impl AdaTtConfig {
    /// Initialise the model.
    pub fn init(&self, device: &Device) -> AdaTt {
        assert!(self.levels > 0 && self.n_task_experts > 0 && self.n_tasks > 0, "AdaTT needs levels and experts");
        let (t, m) = (self.n_tasks, self.n_task_experts);
        let h = *self.expert_hidden.last().expect("experts need a layer");
        let levels = (0..self.levels)
            .map(|l| {
                let d_in = if l == 0 { self.input.output_dim() } else { h };
                let scale = (1.0 / m as f64).sqrt();
                FusionLevel {
                    experts: (0..t)
                        .map(|_| {
                            ExpertBankConfig::new(d_in, m, self.expert_hidden.clone())
                                .with_batch_norm(self.batch_norm)
                                .with_dropout(self.dropout)
                                .init(device)
                        })
                        .collect(),
                    gates: (0..t).map(|_| ExpertGateConfig::new(d_in, t * m).init(device)).collect(),
                    own_weights: (m > 1).then(|| {
                        Param::from_tensor(Tensor::random([t, m], Distribution::Uniform(-scale, scale), device))
                    }),
                }
            })
            .collect();
        let towers = TaskTowerConfig::new(h, self.tower_hidden.clone())
            .with_batch_norm(self.batch_norm)
            .with_dropout(self.dropout)
            .init_each(t, &self.task_outputs, device);
        AdaTt { input: self.input.init(device), levels, towers, n_task_experts: m }
    }
}

/// One fusion level.
#[derive(Module, Debug)]
pub struct FusionLevel {
    /// Each task's own experts (`m` each).
    pub experts: Vec<ExpertBank>,
    /// Each task's gate over all `T·m` experts.
    pub gates: Vec<ExpertGate>,
    /// `[T, m]`: each task's weights on its own experts (none for `m = 1`: weight 1).
    pub own_weights: Option<Param<Tensor<2>>>,
}

impl FusionLevel {
    /// Every expert's output, task by task: `[B, T·m, h]` (task `t`'s experts read `inputs[t]`).
    fn experts(&self, inputs: &[Tensor<2>]) -> Tensor<3> {
        Tensor::cat(self.experts.iter().zip(inputs).map(|(bank, x)| bank.forward(x.clone())).collect(), 1)
    }

    /// Task `t`'s fusion of `all` (`[B, T·m, h]`) from its input `x`, and its gate weights.
    fn fuse(&self, t: usize, x: Tensor<2>, all: Tensor<3>, m: usize) -> (Tensor<2>, Tensor<2>) {
        let [b, _, h] = all.dims();
        let weights = self.gates[t].forward(x);
        let mixed = ExpertGate::mix(weights.clone(), all.clone());
        let own = all.slice([0..b, t * m..(t + 1) * m, 0..h]);
        let own = match &self.own_weights {
            Some(w) => {
                let w_t = w.val().slice([t..t + 1, 0..m]).reshape([1, m, 1]);
                (own * w_t).sum_dim(1).reshape([b, h])
            }
            None => own.reshape([b, h]),
        };
        (mixed + own, weights)
    }
}

/// Adaptive task-to-task fusion model.
#[derive(Module, Debug)]
pub struct AdaTt {
    /// Embeddings + dense features.
    pub input: FeatureEmbedding,
    /// The fusion levels.
    pub levels: Vec<FusionLevel>,
    /// One tower per task.
    pub towers: Vec<TaskTower>,
    /// Experts per task.
    #[module(skip)]
    pub n_task_experts: usize,
}

impl AdaTt {
    /// Task `task`'s last-level fusion `[B, h]` and gate weights `[B, T·m]`.
    fn fusion(&self, task: usize, shared: &SharedTensors) -> (Tensor<2>, Tensor<2>) {
        let n = self.towers.len();
        let last = self.levels.last().expect("a level");
        let all = unflatten_experts(shared.tensors.last().expect("the experts").clone(), n * self.n_task_experts);
        let x = shared.tensors[if self.levels.len() == 1 { 0 } else { task }].clone();
        last.fuse(task, x, all, self.n_task_experts)
    }
}

impl MultiTaskModel for AdaTt {
    fn n_tasks(&self) -> usize {
        self.towers.len()
    }

    /// Shared tensors: the last level's inputs (`[x]` for one level, one a task above) and its
    /// experts side by side, `[B, T·m·h]` (the representation).
    fn forward_shared(&self, features: FeatureBatch) -> SharedTensors {
        let Embedded { x, sparse_rows } = self.input.forward(features);
        let n = self.towers.len();
        let m = self.n_task_experts;
        let mut inputs = vec![x.clone(); n];
        for level in &self.levels[..self.levels.len() - 1] {
            let all = level.experts(&inputs);
            inputs = (0..n).map(|t| level.fuse(t, inputs[t].clone(), all.clone(), m).0).collect();
        }
        let all = self.levels.last().expect("a level").experts(&inputs);
        let mut tensors = if self.levels.len() == 1 { vec![x] } else { inputs };
        tensors.push(flatten_experts(all));
        let representation = tensors.len() - 1;
        SharedTensors::new(tensors, vec![representation]).with_sparse_rows(sparse_rows)
    }

    fn forward_task(&self, task: usize, shared: &SharedTensors) -> TaskOutput {
        let (fused, weights) = self.fusion(task, shared);
        TaskOutput::new(self.towers[task].forward(shared.erased(task, fused))).with_gate(weights)
    }

    /// Each task's last-level fusion.
    fn tower_inputs(&self, shared: &SharedTensors) -> Vec<Tensor<2>> {
        (0..self.n_tasks()).map(|t| shared.erased(t, self.fusion(t, shared).0)).collect()
    }

    fn output_bias(&self, task: usize) -> Option<burn::module::ParamId> {
        self.towers[task].output_bias()
    }

    /// Task `t`'s last-level gate and tower (the own-expert weights of all tasks are one tensor of
    /// the last level, shared by the branches).
    fn task_parameters(&self, task: usize) -> ParamGroup {
        let last = self.levels.last().expect("a level");
        ParamGroup::ids_from_module((last.gates[task].clone(), self.towers[task].clone()))
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::TensorData;

    use super::*;

    fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    /// The fusion by hand: two tasks, two experts each (h = 1), expert outputs (1, 2 | 3, 4), task
    /// 0's gate weights forced to (0.1, 0.2, 0.3, 0.4) and own weights (0.5, −1): mixture
    /// 0.1 + 0.4 + 0.9 + 1.6 = 3, own 0.5·1 − 1·2 = −1.5, fusion 1.5.
    #[test]
    fn fuses_all_experts_and_its_own_by_hand() {
        let device = Device::flex();
        let input = FeatureEmbeddingConfig::new(vec![], 3);
        let mut model = AdaTtConfig::new(input, 2, vec![1], vec![2], 2).init(&device);
        let level = &mut model.levels[0];
        // a gate whose logits are log(0.1..0.4) whatever the input: zero weights, those biases
        level.gates[0].linear.weight = Param::from_tensor(Tensor::zeros([3, 4], &device));
        let logits: Vec<f32> = [0.1f32, 0.2, 0.3, 0.4].iter().map(|p| p.ln()).collect();
        level.gates[0].linear.bias = Some(Param::from_tensor(Tensor::from_data(TensorData::new(logits, [4]), &device)));
        level.own_weights =
            Some(Param::from_tensor(Tensor::from_data(TensorData::new(vec![0.5f32, -1.0, 0.0, 0.0], [2, 2]), &device)));
        let all = Tensor::<3>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [1, 4, 1]), &device);
        let x = Tensor::<2>::zeros([1, 3], &device);
        let (fused, weights) = model.levels[0].fuse(0, x, all, 2);
        let w = to_vec(weights);
        assert!(w.iter().zip([0.1, 0.2, 0.3, 0.4]).all(|(a, b)| (a - b).abs() < 1e-6), "{w:?}");
        assert!((to_vec(fused)[0] - 1.5).abs() < 1e-5);
    }

    /// Task-to-task transfer: task 0's loss reaches task 1's experts only through task 0's gate;
    /// with that gate's weight on them forced to (almost) 0, task 1's experts get (almost) no
    /// gradient from task 0, while task 0's own experts do.
    #[test]
    fn a_task_reaches_another_tasks_experts_through_its_gate() {
        let device = Device::flex().autodiff();
        // a 4-unit ReLU expert under a 2-unit tower can start dead (no gradient to pass on): the
        // first of 8 initialisations whose task-0 path is live shows the gating
        let live = (0..8).find_map(|_| {
            let input = FeatureEmbeddingConfig::new(vec![], 3);
            let mut model = AdaTtConfig::new(input, 1, vec![4], vec![2], 2).init(&device);
            let gate = &mut model.levels[0].gates[0];
            gate.linear.weight = Param::from_tensor(Tensor::zeros([3, 2], &device));
            gate.linear.bias =
                Some(Param::from_tensor(Tensor::from_data(TensorData::new(vec![0.0f32, -40.0], [2]), &device)));
            let dense = Tensor::<2>::random([8, 3], Distribution::Default, &device);
            let out = model.forward(FeatureBatch::new(None, Some(dense)));
            let grads = out[0].output.clone().sum().backward();
            let norm = |bank: &ExpertBank| {
                bank.first.weight.grad(&grads).map_or(0.0, |g| f64::from(g.abs().sum().into_scalar::<f32>()))
            };
            let (own, other) = (norm(&model.levels[0].experts[0]), norm(&model.levels[0].experts[1]));
            (own > 1e-3).then_some((own, other))
        });
        let (own, other) = live.expect("task 0's own experts learn from it in one of 8 initialisations");
        assert!(other < 1e-12 * own.max(1.0), "task 1's experts, gated out: {other} (own {own})");
    }
}
