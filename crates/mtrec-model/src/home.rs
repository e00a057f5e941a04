//! HoME, a hierarchy of multi-gate experts (Wang, Cao, Fu, Gai & Zhou, "HoME: Hierarchy of
//! Multi-Gate Experts for Multi-Task Learning at Kuaishou", 2024). No reference code is public; this
//! is the paper's §4 as we read it.
//!
//! Tasks fall into categories (`model.task_groups`, lists of task names; default: a category per
//! task) — the paper's passive watch-time tasks and interactive tasks. Two layers of experts, all
//! of them [`NormalizedExperts`] (a feature gate of their own, `Linear → BatchNorm → Swish`):
//!
//! - **Meta layer** on the input `x`: global experts `G₁` (`model.n_shared_experts`) and each
//!   category's experts `C₁,c` (`model.n_task_experts`). The **hierarchy mask**: category `c`'s
//!   meta representation `m_c = Σ gate_c(x)·[G₁, C₁,c]` mixes only the global experts and its own
//!   category's — never another category's; the global one `m₀ = Σ gate₀(x)·[G₁, C₁,*]` mixes all.
//! - **Task layer**: global experts `G₂` on `m₀`, each category's `C₂,c` on `m_c`, each task's own
//!   experts `T₂,t` (`model.n_task_experts`) on its category's `m_c`; task `t` (category `c`) mixes
//!   `[G₂, C₂,c, T₂,t]` with its gate on `m_c`.
//! - **Self-gate**: a gated residual from the meta layer to the task layer, `Σ s_t(m_c)·C₁,c` with
//!   `s_t` a softmax over its category's meta experts (a sigmoid when there is one), so that the
//!   lower layer's category experts reach each task directly (the paper's answer to deeper expert
//!   stacks training worse).
//!
//! Then a tower per task. Two-phase split: the shared part is everything two tasks can read — the
//! meta layer (`m_c`, `C₁,c`) and the task layer's global and category experts; a task's branch
//! holds its own experts, its gate, its self-gate and its tower. The experts' batch norm keeps
//! running statistics, so HoME trains in one process (data-parallel ranks would each keep their
//! own).

use burn::{
    config::Config,
    module::{Module, ParamGroup},
    nn::{Linear, LinearConfig},
    tensor::{
        Device, Tensor,
        activation::{sigmoid, softmax},
    },
};
use mtrec_data::FeatureBatch;

use crate::{
    Embedded, ExpertGate, ExpertGateConfig, FeatureEmbedding, FeatureEmbeddingConfig, MultiTaskModel,
    NormalizedExperts, NormalizedExpertsConfig, SharedTensors, TaskOutput, TaskTower, TaskTowerConfig,
    experts::{flatten_experts, unflatten_experts},
};

/// Configuration of a [`Home`] model.
#[derive(Config, Debug)]
pub struct HomeConfig {
    /// The input layer.
    pub input: FeatureEmbeddingConfig,
    /// Experts of each category (meta and task layer) and of each task (task layer).
    pub n_task_experts: usize,
    /// Global experts of each layer (0 allowed).
    pub n_shared_experts: usize,
    /// Hidden widths of each expert.
    pub expert_hidden: Vec<usize>,
    /// Hidden widths of each tower.
    pub tower_hidden: Vec<usize>,
    /// Each task's category (`0..C`); empty: a category per task.
    #[config(default = "Vec::new()")]
    pub categories: Vec<usize>,
    /// Rank of the experts' feature gates (0: none).
    #[config(default = 8)]
    pub feature_gate_rank: usize,
    /// Number of tasks.
    pub n_tasks: usize,
    /// Batch normalisation in the towers' hidden layers (the experts always normalise).
    #[config(default = false)]
    pub batch_norm: bool,
    /// Dropout after every hidden activation (experts and towers).
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Head width of each task (empty: 1 each; multiclass tasks have one logit a class).
    #[config(default = "Vec::new()")]
    pub task_outputs: Vec<usize>,
}

impl HomeConfig {
    /// Initialise the model.
    pub fn init(&self, device: &Device) -> Home {
        let (m, s, n) = (self.n_task_experts, self.n_shared_experts, self.n_tasks);
        assert!(m > 0 && n > 0, "HoME needs category and task experts");
        let categories = if self.categories.is_empty() { (0..n).collect() } else { self.categories.clone() };
        assert_eq!(categories.len(), n, "a category for every task");
        let n_categories = categories.iter().max().map_or(0, |c| c + 1);
        let d_x = self.input.output_dim();
        let h = *self.expert_hidden.last().expect("experts need a layer");
        let experts = |d_in: usize, count: usize| {
            NormalizedExpertsConfig::new(d_in, count, self.expert_hidden.clone())
                .with_gate_rank(self.feature_gate_rank)
                .with_dropout(self.dropout)
                .init(device)
        };
        let gate = |d_in: usize, count: usize| ExpertGateConfig::new(d_in, count).init(device);
        let per_category = |d_in: usize| (0..n_categories).map(|_| experts(d_in, m)).collect::<Vec<_>>();
        Home {
            input: self.input.init(device),
            meta_shared: (s > 0).then(|| experts(d_x, s)),
            meta_categories: per_category(d_x),
            meta_gates: (0..n_categories).map(|_| gate(d_x, s + m)).collect(),
            meta_shared_gate: (s > 0).then(|| gate(d_x, s + n_categories * m)),
            task_shared: (s > 0).then(|| experts(h, s)),
            task_categories: per_category(h),
            task_experts: (0..n).map(|_| experts(h, m)).collect(),
            task_gates: (0..n).map(|_| gate(h, s + 2 * m)).collect(),
            self_gates: (0..n).map(|_| LinearConfig::new(h, m).init(device)).collect(),
            towers: TaskTowerConfig::new(h, self.tower_hidden.clone())
                .with_batch_norm(self.batch_norm)
                .with_dropout(self.dropout)
                .init_each(n, &self.task_outputs, device),
            categories,
        }
    }
}

/// Hierarchy of multi-gate experts.
#[derive(Module, Debug)]
pub struct Home {
    /// The input layer.
    pub input: FeatureEmbedding,
    /// Meta layer: the global experts `G₁`, if any.
    pub meta_shared: Option<NormalizedExperts>,
    /// Meta layer: each category's experts `C₁,c`.
    pub meta_categories: Vec<NormalizedExperts>,
    /// Each category's gate over `[G₁, C₁,c]` (the hierarchy mask: no other category's).
    pub meta_gates: Vec<ExpertGate>,
    /// The global gate over `[G₁, C₁,*]`, when there are global experts.
    pub meta_shared_gate: Option<ExpertGate>,
    /// Task layer: the global experts `G₂` (on `m₀`), if any.
    pub task_shared: Option<NormalizedExperts>,
    /// Task layer: each category's experts `C₂,c` (on `m_c`).
    pub task_categories: Vec<NormalizedExperts>,
    /// Task layer: each task's own experts `T₂,t` (on its category's `m_c`).
    pub task_experts: Vec<NormalizedExperts>,
    /// Each task's gate over `[G₂, C₂,c, T₂,t]` (on `m_c`).
    pub task_gates: Vec<ExpertGate>,
    /// Each task's self-gate logits over its category's meta experts (on `m_c`).
    pub self_gates: Vec<Linear>,
    /// One tower per task.
    pub towers: Vec<TaskTower>,
    /// Each task's category.
    #[module(skip)]
    pub categories: Vec<usize>,
}

impl Home {
    fn n_categories(&self) -> usize {
        self.meta_categories.len()
    }

    /// Task `task`'s task-layer output `[B, h]` (its expert mixture plus the self-gated meta
    /// experts of its category) and its gate weights `[B, s + 2m]`.
    ///
    /// Shared tensors: `m_c` (C), `C₁,c` flattened (C), `C₂,c` flattened (C), `G₂` flattened.
    fn mixture(&self, task: usize, shared: &SharedTensors) -> (Tensor<2>, Tensor<2>) {
        let (c, n_c) = (self.categories[task], self.n_categories());
        let m_c = shared.tensors[c].clone();
        let own = flatten_experts(self.task_experts[task].forward(m_c.clone()));
        let experts: Vec<Tensor<2>> = shared
            .tensors
            .get(3 * n_c)
            .cloned()
            .into_iter()
            .chain([shared.tensors[2 * n_c + c].clone(), own])
            .collect();
        let weights = self.task_gates[task].forward(m_c.clone());
        let mixed = ExpertGate::mix(weights.clone(), unflatten_experts(Tensor::cat(experts, 1), weights.dims()[1]));
        let logits = self.self_gates[task].forward(m_c);
        let m = logits.dims()[1];
        let self_weights = if m == 1 { sigmoid(logits) } else { softmax(logits, 1) };
        let meta = unflatten_experts(shared.tensors[n_c + c].clone(), m);
        (mixed + ExpertGate::mix(self_weights, meta), weights)
    }
}

impl MultiTaskModel for Home {
    fn n_tasks(&self) -> usize {
        self.towers.len()
    }

    /// Shared tensors: each category's meta representation `m_c` `[B, h]`, each category's meta
    /// experts `[B, m·h]`, each category's task-layer experts `[B, m·h]`, then the task layer's
    /// global experts `[B, s·h]` if any; all of them are the representation.
    fn forward_shared(&self, features: FeatureBatch) -> SharedTensors {
        let Embedded { x, sparse_rows } = self.input.forward(features);
        let global = self.meta_shared.as_ref().map(|g| g.forward(x.clone()));
        let meta: Vec<Tensor<3>> = self.meta_categories.iter().map(|e| e.forward(x.clone())).collect();
        let with_global = |experts: Vec<Tensor<3>>| Tensor::cat(global.iter().cloned().chain(experts).collect(), 1);
        let m_c: Vec<Tensor<2>> = (self.meta_gates.iter().zip(&meta))
            .map(|(gate, own)| ExpertGate::mix(gate.forward(x.clone()), with_global(vec![own.clone()])))
            .collect();
        let m_0 =
            self.meta_shared_gate.as_ref().map(|gate| ExpertGate::mix(gate.forward(x), with_global(meta.clone())));
        let mut tensors = m_c.clone();
        tensors.extend(meta.into_iter().map(flatten_experts));
        tensors.extend(self.task_categories.iter().zip(&m_c).map(|(e, m)| flatten_experts(e.forward(m.clone()))));
        if let (Some(experts), Some(m_0)) = (&self.task_shared, m_0) {
            tensors.push(flatten_experts(experts.forward(m_0)));
        }
        let representation = (0..tensors.len()).collect();
        SharedTensors::new(tensors, representation).with_sparse_rows(sparse_rows)
    }

    fn forward_task(&self, task: usize, shared: &SharedTensors) -> TaskOutput {
        let (mixed, weights) = self.mixture(task, shared);
        TaskOutput::new(self.towers[task].forward(shared.erased(task, mixed))).with_gate(weights)
    }

    /// Each task's task-layer output.
    fn tower_inputs(&self, shared: &SharedTensors) -> Vec<Tensor<2>> {
        (0..self.n_tasks()).map(|t| shared.erased(t, self.mixture(t, shared).0)).collect()
    }

    fn output_bias(&self, task: usize) -> Option<burn::module::ParamId> {
        self.towers[task].output_bias()
    }

    fn task_parameters(&self, task: usize) -> ParamGroup {
        ParamGroup::ids_from_module((
            self.task_experts[task].clone(),
            self.task_gates[task].clone(),
            self.self_gates[task].clone(),
            self.towers[task].clone(),
        ))
    }

    fn input_layers_mut(&mut self) -> Vec<&mut FeatureEmbedding> {
        vec![&mut self.input]
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Distribution, Int, TensorData};

    use super::*;

    /// Three tasks: 0 and 1 in category 0, task 2 alone in category 1.
    fn model(shared_experts: usize, device: &Device) -> Home {
        let input = FeatureEmbeddingConfig::new(vec![5, 4], 2).with_dim(3);
        HomeConfig::new(input, 2, shared_experts, vec![6], vec![4], 3)
            .with_categories(vec![0, 0, 1])
            .with_feature_gate_rank(2)
            .init(device)
    }

    fn batch(device: &Device) -> FeatureBatch {
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![1i32, 2, 3, 1, 4, 0, 2, 3], [4, 2]), device);
        FeatureBatch::new(Some(ids), Some(Tensor::random([4, 2], Distribution::Default, device)))
    }

    fn grad<const D: usize>(param: &burn::module::Param<Tensor<D>>, grads: &burn::tensor::Gradients) -> f64 {
        param.grad(grads).map_or(0.0, |g| f64::from(g.abs().sum().into_scalar::<f32>()))
    }

    /// The hierarchy mask: category 0's meta representation reads the global experts and its own
    /// category's, never category 1's (no gradient reaches them from it); without global experts a
    /// task of category 0 leaves category 1's meta and task-layer experts untouched, while its own
    /// category's and its own experts learn. With global experts, category 1's meta experts reach
    /// category 0's tasks only through the global representation `m₀` (they get a gradient).
    #[test]
    fn the_hierarchy_mask_keeps_categories_apart() {
        let device = Device::flex().autodiff();
        let home = model(1, &device);
        let shared = home.forward_shared(batch(&device));
        let grads = shared.tensors[0].clone().sum().backward();
        let first = |e: &NormalizedExperts| grad(&e.weights[0], &grads);
        assert_eq!(first(&home.meta_categories[1]), 0.0, "m_0 of category 0 reads no category-1 expert");
        assert!(first(&home.meta_categories[0]) > 0.0 && first(home.meta_shared.as_ref().unwrap()) > 0.0);

        let home = model(0, &device);
        let out = home.forward(batch(&device));
        let grads = out[0].output.clone().sum().backward();
        let first = |e: &NormalizedExperts| grad(&e.weights[0], &grads);
        assert_eq!(first(&home.meta_categories[1]), 0.0);
        assert_eq!(first(&home.task_categories[1]), 0.0);
        assert_eq!(first(&home.task_experts[1]), 0.0, "task 1's own experts are its own");
        assert_eq!(first(&home.task_experts[2]), 0.0);
        for e in [&home.meta_categories[0], &home.task_categories[0], &home.task_experts[0]] {
            assert!(first(e) > 0.0);
        }

        let home = model(1, &device);
        let out = home.forward(batch(&device));
        let grads = out[0].output.clone().sum().backward();
        assert!(grad(&home.meta_categories[1].weights[0], &grads) > 0.0, "through the global m₀ and G₂");
    }

    /// The task layer by hand from the shared tensors: task 2's output is its gate's softmax mixture
    /// of `[G₂, C₂,c, T₂,t]` plus the self-gate's softmax mixture of its category's meta experts.
    #[test]
    fn the_task_layer_adds_the_self_gated_meta_experts() {
        let device = Device::flex();
        let home = model(1, &device);
        let shared = home.forward_shared(batch(&device));
        let task = 2;
        let (c, n_c) = (home.categories[task], home.n_categories());
        let m_c = shared.tensors[c].clone();
        let own = home.task_experts[task].forward(m_c.clone());
        let g2 = unflatten_experts(shared.tensors[3 * n_c].clone(), 1);
        let c2 = unflatten_experts(shared.tensors[2 * n_c + c].clone(), 2);
        let experts = Tensor::cat(vec![g2, c2, own], 1);
        let weights = softmax(home.task_gates[task].linear.forward(m_c.clone()), 1);
        let sum = |t: Tensor<3>| -> Tensor<2> {
            let [b, _, h] = t.dims();
            t.sum_dim(1).reshape([b, h])
        };
        let mixed = sum(experts * weights.unsqueeze_dim::<3>(2));
        let s = softmax(home.self_gates[task].forward(m_c), 1);
        let meta = unflatten_experts(shared.tensors[n_c + c].clone(), 2);
        let residual = sum(meta * s.unsqueeze_dim::<3>(2));
        let want = (mixed + residual).into_data().try_into_vec::<f32>().unwrap();
        let got = home.mixture(task, &shared).0.into_data().try_into_vec::<f32>().unwrap();
        want.iter().zip(&got).for_each(|(a, b)| assert!((a - b).abs() < 1e-5, "{want:?} vs {got:?}"));
        // the shared tensors: m_c (2), C₁,c (2), C₂,c (2), G₂; gates over s + 2m = 5 experts
        assert_eq!(shared.tensors.len(), 7);
        for out in home.forward(batch(&device)) {
            assert_eq!((out.gate.unwrap().dims(), out.output.dims()), ([4, 5], [4, 1]));
        }
    }

    /// `model.task_groups` maps task names to categories: by default a category per task; every
    /// main task in exactly one group, names that are no main task, empty groups and groups for
    /// another architecture refused with the key named.
    #[test]
    fn task_groups_put_every_task_in_one_category() {
        use crate::{Architecture, ModelConfig};
        use mtrec_data::{Schema, TaskKind, TaskSpec};
        let tasks = ["click", "like", "watch"].map(|n| TaskSpec::new(n, TaskKind::Binary)).to_vec();
        let schema = Schema::new(vec![], vec!["x".into()], tasks);
        let config = |groups: &[&[&str]]| ModelConfig {
            architecture: Architecture::Home,
            task_groups: groups.iter().map(|g| g.iter().map(|s| s.to_string()).collect()).collect(),
            ..Default::default()
        };
        assert_eq!(config(&[]).task_categories(&schema), Ok(vec![0, 1, 2]));
        assert_eq!(config(&[&["watch"], &["click", "like"]]).task_categories(&schema), Ok(vec![1, 1, 0]));
        for (groups, says) in [
            (&[&["click", "like"][..]][..], "\"watch\" is in no group"),
            (&[&["click", "like"], &["like", "watch"]], "\"like\" is in two groups"),
            (&[&["click", "like", "watch"], &["buy"]], "\"buy\" is not a main task"),
            (&[&["click", "like", "watch"], &[]], "group 1 is empty"),
        ] {
            let e = config(groups).task_categories(&schema).unwrap_err();
            assert!(e.contains("model.task_groups") && e.contains(says), "{e}");
        }
        let mmoe = ModelConfig { architecture: Architecture::Mmoe, ..config(&[&["click", "like", "watch"]]) };
        assert!(mmoe.task_categories(&schema).unwrap_err().contains("read by home"));
        let model = config(&[&["watch"], &["click", "like"]]).init(&schema, &Device::flex());
        let crate::ArchitectureNet::Home(home) = &model.body else { panic!("home") };
        assert_eq!((home.categories.clone(), home.meta_categories.len()), (vec![1, 1, 0], 2));
    }
}
