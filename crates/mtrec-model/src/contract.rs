//! The two-phase contract every architecture implements: the shared part yields
//! [`SharedTensors`], each task's branch reads only them and yields a [`TaskOutput`]. A user's own
//! architecture implements [`MultiTaskModel`] (and burn's `Module`) and runs in the trainer like
//! the built-ins ([`crate::ArchitectureFactory`]).

use burn::{
    module::{ParamGroup, ParamId},
    tensor::Tensor,
};
use mtrec_data::FeatureBatch;

use crate::{FeatureEmbedding, LastSharedLayer, SparseRows};

/// What the shared part of a model yields: every tensor the task branches read.
///
/// A balancer that needs per-task gradients either detaches these into leaves, builds each task
/// branch from the leaves and pushes the combined gradient back with one surrogate backward
/// ([`Self::detached_leaves`]), or lets each branch read them through probes of its own and runs
/// one ordinary backward ([`Self::probed`]).
#[derive(Debug, Clone)]
pub struct SharedTensors {
    /// The shared tensors, each `[B, width]`.
    pub tensors: Vec<Tensor<2>>,
    /// The last shared layer (GradNorm's `W`), where the architecture can expose it.
    pub last_layer: Option<LastSharedLayer>,
    /// Indices of the tensors that make up the model's shared representation (where
    /// `gradnorm_layer = "representation"` measures the task gradients).
    pub representation: Vec<usize>,
    /// The rows of row-sparse embedding tables the shared part read (leaves upstream of
    /// `tensors`; the step's sparse optimizer updates them).
    pub sparse_rows: Vec<SparseRows>,
    /// The batch's text values (token ids of a trainable encoder's fields), for task branches
    /// that run adapters of their own ([`crate::TaskTextBranch`]); an input, not a shared
    /// tensor: no gradient is taken at it.
    pub text: Option<Tensor<2>>,
    /// `model.erasure`: the concept eraser of each tower input `(μ [1, d], Eᵀ [d, d])`, detached, in
    /// the order of [`MultiTaskModel::tower_inputs`] (empty: nothing erased); architectures apply
    /// it through [`Self::erased`] before their towers.
    pub erasers: Vec<(Tensor<2>, Tensor<2>)>,
}

impl SharedTensors {
    /// Shared tensors whose representation is `representation` (indices into `tensors`).
    pub fn new(tensors: Vec<Tensor<2>>, representation: Vec<usize>) -> Self {
        Self { tensors, last_layer: None, representation, sparse_rows: Vec::new(), text: None, erasers: Vec::new() }
    }

    /// With the rows the input layer read from row-sparse tables.
    pub fn with_sparse_rows(mut self, sparse_rows: Vec<SparseRows>) -> Self {
        self.sparse_rows = sparse_rows;
        self
    }

    /// Tower input `part` with its concept erased (`model.erasure`; unchanged without).
    ///
    /// # Shapes
    /// - `x`: `[B, d]`; output `[B, d]`
    pub fn erased(&self, part: usize, x: Tensor<2>) -> Tensor<2> {
        match self.erasers.get(part) {
            Some((mean, eraser_t)) => crate::erase(x, mean.clone(), eraser_t.clone()),
            None => x,
        }
    }

    /// With the last shared layer exposed.
    pub fn with_last_layer(mut self, last_layer: Option<LastSharedLayer>) -> Self {
        self.last_layer = last_layer;
        self
    }

    /// The tensors a gradient probe goes on: the representation's and the last shared layer's
    /// output, ascending (what GradNorm measures; the other shared tensors — e.g. MMoE's gate
    /// input — pass unprobed).
    pub fn probe_points(&self) -> Vec<usize> {
        let mut points = self.representation.clone();
        points.extend(self.last_layer.as_ref().map(|l| l.output));
        points.sort_unstable();
        points.dedup();
        points
    }

    /// The same tensors, those at [`Self::probe_points`] plus a zero-valued leaf that requires
    /// gradients (returned beside, in that order).
    ///
    /// A task branch built on the probed tensors computes exactly what it would on `self`, and
    /// the gradient a backward pass leaves at each probe is that branch's gradient at the shared
    /// tensor — without cutting the graph: the same backward also reaches the shared part.
    pub fn probed(&self) -> (SharedTensors, Vec<Tensor<2>>) {
        let points = self.probe_points();
        let mut tensors = self.tensors.clone();
        let probes = points
            .iter()
            .map(|&k| {
                let probe = tensors[k].zeros_like().detach().require_grad();
                tensors[k] = tensors[k].clone() + probe.clone();
                probe
            })
            .collect();
        (SharedTensors { tensors, ..self.clone() }, probes)
    }

    /// Detached copies that require gradients: the cut point for per-task gradients.
    pub fn detached_leaves(&self) -> SharedTensors {
        SharedTensors {
            tensors: self.tensors.iter().map(|t| t.clone().detach().require_grad()).collect(),
            ..self.clone()
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
    /// A loss term the architecture adds to this task's loss (AITM's calibrator), `[1]`.
    pub auxiliary_loss: Option<Tensor<1>>,
    /// For a step of a funnel whose output is the probability of reaching the step from the
    /// start (ESMM's pCTCVR), the logit of the step given the previous one (pCVR), `[B, 1]`:
    /// what the paper's CVR AUC is measured on.
    pub conditional: Option<Tensor<2>>,
}

impl TaskOutput {
    /// An output without gate or auxiliary loss.
    pub fn new(output: Tensor<2>) -> Self {
        Self { output, gate: None, auxiliary_loss: None, conditional: None }
    }

    /// With the logit of the step given the previous one (funnel models).
    pub fn with_conditional(mut self, logit: Tensor<2>) -> Self {
        self.conditional = Some(logit);
        self
    }

    /// With the branch's gate weights.
    pub fn with_gate(mut self, gate: Tensor<2>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// With an auxiliary loss term.
    pub fn with_auxiliary_loss(mut self, loss: Tensor<1>) -> Self {
        self.auxiliary_loss = Some(loss);
        self
    }
}

/// A multi-task architecture with a shared part and per-task branches.
pub trait MultiTaskModel {
    /// Number of tasks (branches).
    fn n_tasks(&self) -> usize;

    /// The shared part: embeddings, bottom, experts.
    ///
    /// # Shapes
    /// - features: see [`FeatureBatch`] (categorical `[B, F]`, multi `[B, M]`, dense `[B, D]`, text
    ///   `[B, X]`)
    fn forward_shared(&self, features: FeatureBatch) -> SharedTensors;

    /// Task `task`'s branch (gate, tower, head), reading only `shared`.
    fn forward_task(&self, task: usize, shared: &SharedTensors) -> TaskOutput;

    /// What the towers read, computed from `shared` (each distinct tensor once, `[B, width]` each):
    /// MMoE's per-task mixtures, shared-bottom's bottom, AITM's fused `z_t`… — the representation
    /// an adversarial head reads and the post-hoc adversarial probe is fitted on. For
    /// architectures whose towers read a task-specific mixture, this runs each task's branch up to
    /// its tower (gates included), so an adversary's reversed gradient reaches them too.
    fn tower_inputs(&self, shared: &SharedTensors) -> Vec<Tensor<2>>;

    /// The parameters that belong to task `task` alone (its gate, tower, head): the group a
    /// per-task learning-rate scale applies to.
    fn task_parameters(&self, task: usize) -> ParamGroup;

    /// The bias of task `task`'s output unit, when the architecture's head has one that adds to
    /// the output directly (a regression head's bias starts at the training label mean); `None`
    /// where the output is not a plain linear head (ESMM's and AITM's products of probabilities).
    fn output_bias(&self, _task: usize) -> Option<ParamId> {
        None
    }

    /// The model's input layers (one, or one a task for networks with nothing shared), for
    /// attaching a trainable sentence encoder to them (`model.text.finetune`). An architecture
    /// that returns none cannot fine-tune its text encoder (building it says so).
    fn input_layers_mut(&mut self) -> Vec<&mut FeatureEmbedding> {
        Vec::new()
    }

    /// Both phases, all tasks.
    fn forward(&self, features: FeatureBatch) -> Vec<TaskOutput> {
        let shared = self.forward_shared(features);
        (0..self.n_tasks()).map(|t| self.forward_task(t, &shared)).collect()
    }
}
