//! The two-phase model contract every architecture implements, the enum that holds whichever
//! architecture an experiment chose, and the experiment-level model configuration.

use burn::{
    module::{Module, ModuleMapper, Param, ParamGroup, ParamId},
    tensor::{Device, Tensor},
};
use mtrec_data::{FeatureBatch, Schema, TaskKind};
use mtrec_text::{TextEncoder, TextTrainingConfig};
use serde::{Deserialize, Serialize};

use crate::{
    AdversarialHead, AdversarialHeadConfig, Aitm, AitmConfig, ConceptEraser, CrossStitch, CrossStitchConfig, Esmm,
    EsmmConfig, FeatureEmbedding, FeatureEmbeddingConfig, LastSharedLayer, Mmoe, MmoeConfig, Omoe, Ple, PleConfig,
    SharedBottom, SharedBottomConfig, SingleTask, SparseRows, TaskTextBranch,
};

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

    /// Both phases, all tasks.
    fn forward(&self, features: FeatureBatch) -> Vec<TaskOutput> {
        let shared = self.forward_shared(features);
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
    /// One-gate mixture of experts (the MMoE paper's baseline).
    Omoe,
    /// Progressive layered extraction / CGC (Tang et al., RecSys 2020).
    Ple,
    /// One independent network per task.
    SingleTask,
    /// Cross-stitch columns (Misra et al., CVPR 2016).
    CrossStitch,
    /// Entire-space multi-task model, serial (Ma et al., SIGIR 2018).
    Esmm,
    /// Adaptive information transfer (Xi et al., KDD 2021).
    Aitm,
}

impl Architecture {
    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::SharedBottom => "shared_bottom",
            Self::Mmoe => "mmoe",
            Self::Omoe => "omoe",
            Self::Ple => "ple",
            Self::SingleTask => "single_task",
            Self::CrossStitch => "cross_stitch",
            Self::Esmm => "esmm",
            Self::Aitm => "aitm",
        }
    }

    /// Every architecture.
    pub const ALL: [Architecture; 8] = [
        Self::SharedBottom,
        Self::Mmoe,
        Self::Omoe,
        Self::Ple,
        Self::SingleTask,
        Self::CrossStitch,
        Self::Esmm,
        Self::Aitm,
    ];
}

/// The `[model]` section of an experiment config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// `shared_bottom`, `mmoe`, `omoe`, `ple`, `single_task`, `cross_stitch`, `esmm` or `aitm`.
    pub architecture: Architecture,
    /// Embedding width per categorical (and multi-valued) field.
    pub embedding_dim: usize,
    /// Width each text field's sentence embedding is projected to in the shared input layer.
    pub text_dim: usize,
    /// MMoE, OMoE: number of experts.
    pub n_experts: usize,
    /// MMoE, OMoE, PLE: hidden widths of each expert.
    pub expert_hidden: Vec<usize>,
    /// PLE: task-specific experts per task and level.
    pub n_task_experts: usize,
    /// PLE: shared experts per level.
    pub n_shared_experts: usize,
    /// PLE: number of CGC levels (1 = CGC).
    pub levels: usize,
    /// Shared-bottom: the shared bottom; single-task: each task's bottom; cross-stitch: each
    /// column; AITM: each task's representation tower; ESMM: each tower's first layers.
    pub bottom_hidden: Vec<usize>,
    /// Hidden widths of each task tower (and of an adversarial head).
    pub tower_hidden: Vec<usize>,
    /// Batch normalisation in every hidden layer (experts, bottom, towers).
    pub batch_norm: bool,
    /// Dropout after every hidden activation: bottoms, experts, cross-stitch columns, AITM's
    /// representation towers, and every tower (ESMM: its towers are the whole network).
    pub dropout: f64,
    /// AITM: weight α of the calibrator loss.
    pub calibrator_weight: f64,
    /// λ of the gradient-reversal layer of adversarial tasks.
    pub adversarial_weight: f64,
    /// How λ evolves during training: `constant`, or `dann` (DANN's warm-up from 0 to λ,
    /// [`dann_lambda`](crate::dann_lambda)).
    pub adversarial_schedule: AdversarialSchedule,
    /// Hidden widths of each adversarial head (unset: `tower_hidden`): a deeper head is a stronger
    /// adversary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adversary_hidden: Option<Vec<usize>>,
    /// Extra updates of the adversarial heads alone after each training step, on the same batch
    /// (the min–max game as GAN training plays it: the adversary catches up with the
    /// representation before the next step pushes against it); `0`: none.
    pub adversary_steps: usize,
    /// Replace an adversarial head by a freshly initialised one when the dead-head detector fires
    /// (its validation logloss at the label entropy for 3 validations): a constant head passes no
    /// reversed gradient back, a fresh one does.
    pub adversary_restart: bool,
    /// Linear concept erasure of the representation the towers read: `"none"` or `"leace"`
    /// ([`crate::ConceptEraser`]; the concepts are the adversarial tasks' binary labels).
    pub erasure: Erasure,
    /// With `erasure`: also refit the eraser every this many training steps (`0`: only before the
    /// first step and before every validation, so the selected model's eraser fits its
    /// representation).
    pub erasure_refit_steps: usize,
    /// Run the dense + ReLU layers (experts, bottoms, towers without batch norm), the gate mixing,
    /// the embedding lookups and Adam's update as mtrec's fused kernels where the backend has them
    /// (flex); `false`: plain
    /// burn operations everywhere. Same values and gradients either way; a process-wide switch
    /// ([`set_fused_kernels`](mtrec_kernels::set_fused_kernels)) set when a model is built.
    pub fused_kernels: bool,
    /// Row-sparse id tables ([`crate::sparse_rows`]): a step reads, differentiates and updates only
    /// the rows its batch uses, with `train.sparse_optimizer`. `true`, `false`, or unset: on when the
    /// categorical or the multi-valued table has at least [`SPARSE_AUTO_ROWS`] rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sparse_embeddings: Option<bool>,
    /// `[model.text]`: how the sentence encoder of the text columns trains (frozen by default;
    /// see [`TextTrainingConfig`]).
    pub text: TextTrainingConfig,
}

/// The table size from which `model.sparse_embeddings` (unset) makes the id tables row-sparse.
pub const SPARSE_AUTO_ROWS: usize = 100_000;

/// `model.erasure`: how a concept is removed from the representation the towers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Erasure {
    /// Nothing erased.
    #[default]
    None,
    /// LEACE's closed-form linear eraser ([`crate::ConceptEraser`]), refitted as the model trains.
    Leace,
}

/// How the reversal weight λ of adversarial heads evolves during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AdversarialSchedule {
    /// λ throughout.
    #[default]
    Constant,
    /// `λ·(2/(1 + exp(−10·p)) − 1)` at training progress `p` (Ganin & Lempitsky 2015).
    Dann,
    /// `λ·p`: a linear ramp from 0 at the first step to λ at the last of `train.epochs`.
    Linear,
}

impl AdversarialSchedule {
    /// λ at training progress `p ∈ [0, 1]` (steps done / steps of the whole run).
    pub fn lambda(self, lambda: f64, progress: f64) -> f64 {
        match self {
            Self::Constant => lambda,
            Self::Dann => crate::dann_lambda(lambda, progress),
            Self::Linear => lambda * progress.clamp(0.0, 1.0),
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            architecture: Architecture::Mmoe,
            embedding_dim: 4,
            text_dim: 32,
            n_experts: 8,
            expert_hidden: vec![16],
            n_task_experts: 2,
            n_shared_experts: 4,
            levels: 1,
            bottom_hidden: vec![128],
            tower_hidden: vec![8],
            batch_norm: false,
            dropout: 0.0,
            calibrator_weight: 0.6,
            adversarial_weight: 1.0,
            adversarial_schedule: AdversarialSchedule::Constant,
            adversary_hidden: None,
            adversary_steps: 0,
            adversary_restart: false,
            erasure: Erasure::None,
            erasure_refit_steps: 0,
            fused_kernels: true,
            sparse_embeddings: None,
            text: TextTrainingConfig::default(),
        }
    }
}

impl ModelConfig {
    /// Checks the values; the message names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if self.embedding_dim == 0 || self.text_dim == 0 {
            return Err("model.embedding_dim and model.text_dim must be positive".into());
        }
        self.text.validate()?;
        if self.text.per_task_adapters() && self.needs_funnel() {
            return Err(format!(
                "model.text.adapters = {:?}: a task's adapters add to its output, and {}'s outputs are products of \
                 the funnel's probabilities; use adapters = \"shared\" or another architecture",
                self.text.adapters,
                self.architecture.name()
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("model.dropout = {} must be in [0, 1)", self.dropout));
        }
        if !(self.calibrator_weight.is_finite() && self.calibrator_weight >= 0.0) {
            return Err(format!("model.calibrator_weight = {} must be ≥ 0", self.calibrator_weight));
        }
        if !(self.adversarial_weight.is_finite() && self.adversarial_weight >= 0.0) {
            return Err(format!("model.adversarial_weight = {} must be ≥ 0", self.adversarial_weight));
        }
        let zero = |v: &[usize]| v.contains(&0);
        if zero(&self.expert_hidden)
            || zero(&self.bottom_hidden)
            || zero(&self.tower_hidden)
            || zero(self.adversary_hidden.as_deref().unwrap_or(&[]))
        {
            return Err("model.*_hidden widths must be positive".into());
        }
        use Architecture::*;
        match self.architecture {
            Mmoe | Omoe if self.n_experts == 0 || self.expert_hidden.is_empty() => {
                Err("model.n_experts must be positive and model.expert_hidden non-empty for mmoe and omoe".into())
            }
            Ple if self.n_task_experts == 0 || self.levels == 0 || self.expert_hidden.is_empty() => {
                Err("model.n_task_experts and model.levels must be positive and model.expert_hidden non-empty for ple"
                    .into())
            }
            SharedBottom | SingleTask | CrossStitch | Aitm if self.bottom_hidden.is_empty() => {
                Err(format!("model.bottom_hidden must be non-empty for {}", self.architecture.name()))
            }
            CrossStitch | Esmm | Aitm if self.batch_norm => {
                Err(format!("model.batch_norm is not supported by {}", self.architecture.name()))
            }
            _ => Ok(()),
        }
    }

    /// Checks the architecture against a dataset's tasks: adversarial tasks come last; ESMM and
    /// AITM need binary tasks in funnel order.
    pub fn check_schema(&self, schema: &Schema) -> Result<(), String> {
        let main = schema.tasks.iter().filter(|t| !t.adversarial).count();
        if schema.tasks[..main].iter().any(|t| t.adversarial) || main == 0 {
            return Err("the dataset's adversarial tasks must come after its main tasks".into());
        }
        if self.erasure == Erasure::Leace {
            let concepts = schema.tasks[main..].iter().filter(|t| t.kind == TaskKind::Binary).count();
            if concepts == 0 || concepts < schema.n_tasks() - main {
                return Err("model.erasure = \"leace\" erases the adversarial tasks' labels: it needs at least one \
                            adversarial task, every one binary (census: data.adversarial = \"sex\"; a table: a binary \
                            task with adversarial = true)"
                    .into());
            }
            if self.erasure_parts(main).is_none() {
                return Err(format!(
                    "model.erasure = \"leace\" is not supported by {}: use shared_bottom, mmoe, omoe or ple",
                    self.architecture.name()
                ));
            }
        }
        if matches!(self.architecture, Architecture::Esmm | Architecture::Aitm)
            && schema.tasks[..main].iter().any(|t| t.kind != TaskKind::Binary)
        {
            return Err(format!("model.architecture = {:?} needs binary tasks", self.architecture.name()));
        }
        if let Some(field) = schema.text.iter().find(|f| f.tokens != self.text.trains()) {
            return Err(if field.tokens {
                format!(
                    "text field `{}` holds token ids (a table loaded for a trainable encoder) but model.text.finetune \
                     is \"frozen\"",
                    field.name
                )
            } else {
                format!(
                    "text field `{}` holds sentence embeddings but model.text.finetune = {:?} trains the encoder: \
                     load the table through the experiment config, which asks for token ids",
                    field.name, self.text.finetune
                )
            });
        }
        // ids are 32-bit signed integers, offset into one fused table a kind
        // (the fields of a shared hash table count once)
        let categorical: Vec<(&str, usize)> = (schema.categorical.iter().enumerate())
            .filter(|(i, _)| !schema.shared_tables.iter().any(|t| t.contains(i) && t[0] != *i))
            .map(|(_, f)| (f.name.as_str(), f.vocab_size))
            .collect();
        let bags: Vec<(&str, usize)> =
            schema.multi_categorical.iter().map(|f| (f.name.as_str(), f.vocab_size)).collect();
        for fields in [categorical, bags] {
            let total: usize = fields.iter().map(|(_, v)| v).sum();
            if total > i32::MAX as usize {
                let (largest, rows) = fields.iter().max_by_key(|(_, v)| *v).expect("a field");
                return Err(format!(
                    "the id fields need {total} embedding rows together (largest: column `{largest}`, {rows}); ids \
                     are 32-bit signed integers, so at most {} rows: lower hash_buckets or share a hash_table",
                    i32::MAX
                ));
            }
        }
        if let Some(t) = schema.tasks.iter().find(|t| t.kind == TaskKind::Multiclass && t.n_classes < 2) {
            return Err(format!("task `{}` is multiclass with {} classes: it needs at least 2", t.name, t.n_classes));
        }
        Ok(())
    }

    /// Whether the architecture models the steps of a funnel (ESMM, AITM): its tasks' labels must
    /// satisfy `y_t ≤ y_{t−1}`.
    pub fn needs_funnel(&self) -> bool {
        matches!(self.architecture, Architecture::Esmm | Architecture::Aitm)
    }

    /// Width of what the towers read, side by side ([`MultiTaskModel::tower_inputs`]): the
    /// representation an adversarial head reads.
    pub fn tower_inputs_width(&self, d_input: usize, n_main: usize) -> usize {
        let last = |v: &[usize]| v.last().copied().unwrap_or(d_input);
        match self.architecture {
            Architecture::SharedBottom => last(&self.bottom_hidden),
            Architecture::Omoe => last(&self.expert_hidden),
            Architecture::Mmoe | Architecture::Ple => n_main * last(&self.expert_hidden),
            Architecture::SingleTask | Architecture::CrossStitch | Architecture::Aitm => {
                n_main * last(&self.bottom_hidden)
            }
            Architecture::Esmm => d_input,
        }
    }

    /// The width of each tower input an eraser acts on ([`MultiTaskModel::tower_inputs`]'s order),
    /// for the architectures that apply `model.erasure`; `None` for the others.
    pub fn erasure_parts(&self, n_main: usize) -> Option<Vec<usize>> {
        let last = |v: &[usize]| v.last().copied();
        match self.architecture {
            Architecture::SharedBottom => Some(vec![last(&self.bottom_hidden)?]),
            Architecture::Omoe => Some(vec![last(&self.expert_hidden)?]),
            Architecture::Mmoe | Architecture::Ple => Some(vec![last(&self.expert_hidden)?; n_main]),
            _ => None,
        }
    }

    /// Whether the id tables of a model for `schema` are row-sparse (`sparse_embeddings`, or by
    /// size when unset).
    pub fn sparse_tables(&self, schema: &Schema) -> bool {
        self.sparse_embeddings.unwrap_or_else(|| {
            let categorical: usize = schema.vocab_sizes().iter().sum();
            let multi: usize = schema.multi_categorical.iter().map(|f| f.vocab_size).sum();
            categorical.max(multi) >= SPARSE_AUTO_ROWS
        })
    }

    /// A freshly initialised adversarial head for task `task` of `schema` (what [`Self::init`]
    /// builds, and what `model.adversary_restart` replaces a dead head with).
    pub fn adversarial_head(&self, schema: &Schema, task: usize, device: &Device) -> AdversarialHead {
        let input = FeatureEmbeddingConfig::from_schema(schema, self.embedding_dim, self.text_dim);
        let n = schema.tasks.iter().filter(|t| !t.adversarial).count();
        let d_repr = self.tower_inputs_width(input.output_dim(), n);
        AdversarialHeadConfig::new(d_repr, self.adversary_hidden.clone().unwrap_or(self.tower_hidden.clone()))
            .with_weight(self.adversarial_weight)
            .with_d_output(schema.tasks[task].output_dim())
            .init(device)
    }

    /// Builds the chosen architecture for a dataset's schema (see [`Self::check_schema`]); every
    /// adversarial task gets an [`AdversarialHead`] on the shared representation.
    pub fn init(&self, schema: &Schema, device: &Device) -> MultiTaskNet {
        mtrec_kernels::set_fused_kernels(self.fused_kernels);
        let input = FeatureEmbeddingConfig::from_schema(schema, self.embedding_dim, self.text_dim)
            .with_sparse(self.sparse_tables(schema));
        let n = schema.tasks.iter().filter(|t| !t.adversarial).count();
        let outputs: Vec<usize> = schema.tasks[..n].iter().map(|t| t.output_dim()).collect();
        let (bn, dropout, towers) = (self.batch_norm, self.dropout, self.tower_hidden.clone());
        let body = match self.architecture {
            Architecture::SharedBottom => ArchitectureNet::SharedBottom(
                SharedBottomConfig::new(input, self.bottom_hidden.clone(), towers, n)
                    .with_batch_norm(bn)
                    .with_dropout(dropout)
                    .with_task_outputs(outputs)
                    .init(device),
            ),
            Architecture::Mmoe => ArchitectureNet::Mmoe(
                MmoeConfig::new(input, self.n_experts, self.expert_hidden.clone(), towers, n)
                    .with_batch_norm(bn)
                    .with_dropout(dropout)
                    .with_task_outputs(outputs)
                    .init(device),
            ),
            Architecture::Omoe => ArchitectureNet::Omoe(
                MmoeConfig::new(input, self.n_experts, self.expert_hidden.clone(), towers, n)
                    .with_batch_norm(bn)
                    .with_dropout(dropout)
                    .with_task_outputs(outputs)
                    .init_omoe(device),
            ),
            Architecture::Ple => ArchitectureNet::Ple(
                PleConfig::new(
                    input,
                    self.n_task_experts,
                    self.n_shared_experts,
                    self.expert_hidden.clone(),
                    towers,
                    n,
                )
                .with_levels(self.levels)
                .with_batch_norm(bn)
                .with_dropout(dropout)
                .with_task_outputs(outputs)
                .init(device),
            ),
            Architecture::SingleTask => ArchitectureNet::SingleTask(
                SharedBottomConfig::new(input, self.bottom_hidden.clone(), towers, n)
                    .with_batch_norm(bn)
                    .with_dropout(dropout)
                    .with_task_outputs(outputs)
                    .init_single_task(device),
            ),
            Architecture::CrossStitch => ArchitectureNet::CrossStitch(
                CrossStitchConfig::new(input, self.bottom_hidden.clone(), towers, n)
                    .with_dropout(dropout)
                    .with_task_outputs(outputs)
                    .init(device),
            ),
            Architecture::Esmm => ArchitectureNet::Esmm(
                EsmmConfig::new(input, [self.bottom_hidden.clone(), towers].concat(), n)
                    .with_dropout(dropout)
                    .init(device),
            ),
            Architecture::Aitm => ArchitectureNet::Aitm(
                AitmConfig::new(input, self.bottom_hidden.clone(), towers, n)
                    .with_calibrator_weight(self.calibrator_weight)
                    .with_dropout(dropout)
                    .init(device),
            ),
        };
        let adversaries = (n..schema.n_tasks()).map(|t| self.adversarial_head(schema, t, device)).collect();
        let erasers = match self.erasure {
            Erasure::None => Vec::new(),
            Erasure::Leace => (self.erasure_parts(n).unwrap_or_default().into_iter())
                .map(|width| ConceptEraser::identity(width, device))
                .collect(),
        };
        MultiTaskNet { body, adversaries, task_text: Vec::new(), erasers }
    }
}

/// Sets the listed bias parameters to constants.
struct BiasSetter(Vec<(ParamId, f32)>);

impl ModuleMapper for BiasSetter {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(&(_, value)) = self.0.iter().find(|(id, _)| *id == param.id) else { return param };
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let mut filled = tensor.zeros_like().add_scalar(value);
        if require_grad {
            filled = filled.require_grad();
        }
        Param::from_mapped_value(id, filled, mapper)
    }
}

/// Whichever architecture an experiment runs.
#[derive(Module, Debug)]
pub enum ArchitectureNet {
    /// See [`SharedBottom`].
    SharedBottom(SharedBottom),
    /// See [`Mmoe`].
    Mmoe(Mmoe),
    /// See [`Omoe`].
    Omoe(Omoe),
    /// See [`Ple`].
    Ple(Ple),
    /// See [`SingleTask`].
    SingleTask(SingleTask),
    /// See [`CrossStitch`].
    CrossStitch(CrossStitch),
    /// See [`Esmm`].
    Esmm(Esmm),
    /// See [`Aitm`].
    Aitm(Aitm),
}

impl ArchitectureNet {
    /// Every input layer (one; one a task for single-task networks).
    fn inputs_mut(&mut self) -> Vec<&mut FeatureEmbedding> {
        match self {
            Self::SharedBottom(m) => vec![&mut m.input],
            Self::Mmoe(m) => vec![&mut m.input],
            Self::Omoe(m) => vec![&mut m.input],
            Self::Ple(m) => vec![&mut m.input],
            Self::SingleTask(m) => m.inputs.iter_mut().collect(),
            Self::CrossStitch(m) => vec![&mut m.input],
            Self::Esmm(m) => vec![&mut m.input],
            Self::Aitm(m) => vec![&mut m.input],
        }
    }

    fn inner(&self) -> &dyn MultiTaskModel {
        match self {
            Self::SharedBottom(m) => m,
            Self::Mmoe(m) => m,
            Self::Omoe(m) => m,
            Self::Ple(m) => m,
            Self::SingleTask(m) => m,
            Self::CrossStitch(m) => m,
            Self::Esmm(m) => m,
            Self::Aitm(m) => m,
        }
    }
}

/// An experiment's model: the architecture's main tasks, then the adversarial heads.
#[derive(Module, Debug)]
pub struct MultiTaskNet {
    /// The architecture (main tasks).
    pub body: ArchitectureNet,
    /// One head per adversarial task, on the shared representation behind gradient reversal.
    pub adversaries: Vec<AdversarialHead>,
    /// `model.text.adapters = "per_task"`: each main task's adapters in the text encoder, added
    /// to its output (empty otherwise).
    pub task_text: Vec<TaskTextBranch>,
    /// `model.erasure = "leace"`: one concept eraser a tower input (empty otherwise), refitted by
    /// the trainer ([`Self::set_erasers`]).
    pub erasers: Vec<ConceptEraser>,
}

impl MultiTaskNet {
    /// What the main towers read, side by side, `[B, Σ width]`: the representation the adversarial
    /// heads read and the post-hoc probe is fitted on.
    pub fn representation(&self, shared: &SharedTensors) -> Tensor<2> {
        let mut parts = self.body.inner().tower_inputs(shared);
        if parts.len() == 1 { parts.pop().expect("one part") } else { Tensor::cat(parts, 1) }
    }

    /// Sets the output bias of each task `t` with `values[t] = Some(v)` to `v` (a regression
    /// head starting at the training label mean: the first steps then learn the signal, not the
    /// label's offset). Tasks whose head has no bias ([`MultiTaskModel::output_bias`]) keep theirs.
    pub fn with_output_biases(self, values: &[Option<f32>]) -> Self {
        let targets: Vec<(ParamId, f32)> =
            (values.iter().enumerate()).filter_map(|(t, v)| Some((self.output_bias(t)?, (*v)?))).collect();
        if targets.is_empty() {
            return self;
        }
        self.map(&mut BiasSetter(targets))
    }

    /// Attaches a trainable sentence encoder to every input layer (one, or one a task for
    /// single-task networks: `open` is called for each, so none shares parameters) for the text
    /// fields holding token ids (`tokens[f]`).
    pub fn with_text_encoders<E>(
        mut self,
        tokens: &[bool],
        mut open: impl FnMut() -> Result<TextEncoder, E>,
    ) -> Result<Self, E> {
        for input in self.body.inputs_mut() {
            let taken = std::mem::replace(input, FeatureEmbeddingConfig::new(vec![], 0).init(&Device::flex()));
            *input = taken.with_text_encoder(open()?, tokens);
        }
        Ok(self)
    }

    /// The parameters of the trainable text encoders (`None`: the model has none), the task
    /// branches' adapters included, for their own learning rate, weight decay and clipping.
    pub fn text_encoder_parameters(&self) -> Option<ParamGroup> {
        let mut body = self.body.clone();
        (body.inputs_mut().into_iter())
            .filter_map(|input| input.encoder.clone())
            .chain(self.task_text.iter().map(|b| b.encoder.clone()))
            .map(ParamGroup::ids_from_module)
            .reduce(|a, b| a.fuse(&b))
    }

    /// Gives main task `t` the branch `branches[t]` (adapters of its own in the text encoder,
    /// read out into its output: see [`TaskTextBranch`]); one branch a main task.
    ///
    /// # Panics
    /// When the number of branches is not the number of main tasks.
    pub fn with_task_text_branches(mut self, branches: Vec<TaskTextBranch>) -> Self {
        assert_eq!(branches.len(), self.body.inner().n_tasks(), "one text branch a main task");
        self.task_text = branches;
        self
    }

    /// The text-value columns of the first input layer's token fields: `(first column, width)`
    /// each, in the batch's text values.
    pub fn token_fields(&self) -> Vec<(usize, usize)> {
        let mut body = self.body.clone();
        let Some(input) = body.inputs_mut().into_iter().next().map(|i| i.clone()) else { return vec![] };
        let mut start = 0;
        let mut fields = Vec::new();
        for (&width, &tokens) in input.text_dims.iter().zip(&input.token_fields) {
            if tokens {
                fields.push((start, width));
            }
            start += width;
        }
        fields
    }

    /// The trainable text encoder of the first input layer (`None`: the model has none); every
    /// input layer's encoder starts from the same pretrained model.
    pub fn text_encoder(&self) -> Option<TextEncoder> {
        let mut body = self.body.clone();
        body.inputs_mut().into_iter().find_map(|input| input.encoder.clone())
    }

    /// The tower inputs before any erasure, one tensor each ([`MultiTaskModel::tower_inputs`]'s
    /// order): what an eraser is fitted on.
    ///
    /// # Shapes
    /// - features: see [`FeatureBatch`]; each output `[B, width]`
    pub fn tower_inputs_unerased(&self, features: FeatureBatch) -> Vec<Tensor<2>> {
        let body = self.body.inner();
        body.tower_inputs(&body.forward_shared(features))
    }

    /// Replaces the erasers by `fits` (one a tower input, on `device`).
    ///
    /// # Panics
    /// When their number or widths differ from the model's erasers.
    pub fn set_erasers(&mut self, fits: &[crate::LeaceFit], device: &Device) {
        assert_eq!(fits.len(), self.erasers.len(), "one fit an eraser");
        for (eraser, fit) in self.erasers.iter_mut().zip(fits) {
            assert_eq!(eraser.eraser_t.dims(), [fit.width, fit.width], "the eraser's width");
            *eraser = ConceptEraser::from_fit(fit, device);
        }
    }

    /// Sets λ of every adversarial head's gradient reversal (a warm-up schedule changes it as
    /// training progresses).
    pub fn set_adversarial_weight(&mut self, lambda: f64) {
        for head in &mut self.adversaries {
            head.weight = lambda;
        }
    }
}

impl MultiTaskModel for MultiTaskNet {
    fn output_bias(&self, task: usize) -> Option<ParamId> {
        (task < self.body.inner().n_tasks()).then(|| self.body.inner().output_bias(task)).flatten()
    }

    fn n_tasks(&self) -> usize {
        self.body.inner().n_tasks() + self.adversaries.len()
    }
    fn forward_shared(&self, features: FeatureBatch) -> SharedTensors {
        let erasers = self.erasers.iter().map(ConceptEraser::tensors).collect();
        if self.task_text.is_empty() {
            return SharedTensors { erasers, ..self.body.inner().forward_shared(features) };
        }
        let text = features.text.clone();
        SharedTensors { text, erasers, ..self.body.inner().forward_shared(features) }
    }
    fn forward_task(&self, task: usize, shared: &SharedTensors) -> TaskOutput {
        let main = self.body.inner().n_tasks();
        match task.checked_sub(main) {
            None => {
                let mut out = self.body.inner().forward_task(task, shared);
                if let (Some(branch), Some(text)) = (self.task_text.get(task), &shared.text) {
                    out.output = out.output + branch.forward(text);
                }
                out
            }
            Some(a) => self.adversaries[a].forward(self.representation(shared)),
        }
    }
    fn tower_inputs(&self, shared: &SharedTensors) -> Vec<Tensor<2>> {
        self.body.inner().tower_inputs(shared)
    }
    /// A task's own parameters; with task adapters, its readout too (the adapters follow the
    /// encoder's learning rate, [`Self::text_encoder_parameters`]).
    fn task_parameters(&self, task: usize) -> ParamGroup {
        let main = self.body.inner().n_tasks();
        match task.checked_sub(main) {
            None => match self.task_text.get(task) {
                Some(branch) => {
                    self.body.inner().task_parameters(task).fuse(&ParamGroup::ids_from_module(branch.readout.clone()))
                }
                None => self.body.inner().task_parameters(task),
            },
            Some(a) => ParamGroup::ids_from_module(self.adversaries[a].clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Int;
    use burn::tensor::{Distribution, TensorData};
    use mtrec_data::{CategoricalField, TaskKind, TaskSpec};

    fn schema(n_tasks: usize) -> Schema {
        Schema::new(
            vec![
                CategoricalField { name: "a".into(), vocab_size: 5 },
                CategoricalField { name: "b".into(), vocab_size: 3 },
            ],
            vec!["x".into(), "y".into(), "z".into()],
            (0..n_tasks).map(|t| TaskSpec::new(format!("t{t}"), TaskKind::Binary)).collect(),
        )
    }

    fn inputs(b: usize, device: &Device) -> (Tensor<2, Int>, Tensor<2>) {
        let ids: Vec<i32> = (0..b * 2).map(|i| (i % 3) as i32).collect();
        (Tensor::from_data(TensorData::new(ids, [b, 2]), device), Tensor::random([b, 3], Distribution::Default, device))
    }

    fn small(arch: Architecture) -> ModelConfig {
        ModelConfig {
            architecture: arch,
            n_experts: 4,
            n_task_experts: 2,
            n_shared_experts: 3,
            expert_hidden: vec![6],
            bottom_hidden: vec![8],
            tower_hidden: vec![4],
            ..Default::default()
        }
    }

    /// The gate width each task's branch reports, or `None` for ungated architectures.
    fn gate_width(arch: Architecture) -> Option<usize> {
        match arch {
            Architecture::Mmoe | Architecture::Omoe => Some(4),
            Architecture::Ple => Some(5),
            _ => None,
        }
    }

    #[test]
    fn output_shapes_for_each_architecture_and_task_count() {
        let device = Device::flex();
        for arch in Architecture::ALL {
            for n_tasks in [1, 2, 3] {
                let model = small(arch).init(&schema(n_tasks), &device);
                let (c, d) = inputs(7, &device);
                let outs = model.forward(FeatureBatch::new(Some(c), Some(d)));
                assert_eq!(outs.len(), n_tasks, "{arch:?}");
                for out in outs {
                    assert_eq!(out.output.dims(), [7, 1], "{arch:?}");
                    assert_eq!(out.gate.as_ref().map(|g| g.dims()[1]), gate_width(arch), "{arch:?}");
                    if let Some(g) = out.gate {
                        for row in g.sum_dim(1).into_data().try_into_vec::<f32>().unwrap() {
                            assert!((row - 1.0).abs() < 1e-5, "{arch:?}: gate row sums to {row}");
                        }
                    }
                }
            }
        }
    }

    /// Branches built on detached leaves give the same outputs as the attached forward, for every
    /// architecture, with an adversarial task behind them.
    #[test]
    fn task_branches_read_only_the_shared_tensors() {
        let device = Device::flex().autodiff();
        let mut schema = schema(3);
        schema.tasks[2].adversarial = true;
        for arch in Architecture::ALL {
            let model = small(arch).init(&schema, &device);
            assert_eq!(model.n_tasks(), 3);
            assert_eq!(model.adversaries.len(), 1);
            let (c, d) = inputs(4, &device);
            let shared = model.forward_shared(FeatureBatch::new(Some(c.clone()), Some(d.clone())));
            let leaves = shared.detached_leaves();
            let full = model.forward(FeatureBatch::new(Some(c), Some(d)));
            for (t, out) in full.iter().enumerate() {
                let cut = model.forward_task(t, &leaves).output.into_data().try_into_vec::<f32>().unwrap();
                assert_eq!(out.output.clone().into_data().try_into_vec::<f32>().unwrap(), cut, "{arch:?} task {t}");
            }
        }
    }

    /// Probed branches: one backward of `Σ_t w_t·L_t` leaves on task t's probes exactly the
    /// gradient that a backward of `w_t·L_t` alone leaves on detached leaves, for every
    /// architecture (with an adversarial task).
    #[test]
    fn probes_give_each_tasks_gradient_at_the_shared_tensors() {
        let device = Device::flex().autodiff();
        let mut schema = schema(3);
        schema.tasks[2].adversarial = true;
        let weights = [0.5, 2.0, 1.5];
        let values = |g: Option<Tensor<2>>, like: &Tensor<2>| {
            g.unwrap_or_else(|| like.zeros_like()).into_data().try_into_vec::<f32>().unwrap()
        };
        for arch in Architecture::ALL {
            let model = small(arch).init(&schema, &device);
            let (c, d) = inputs(4, &device);
            let shared = model.forward_shared(FeatureBatch::new(Some(c), Some(d)));
            let mut probes = Vec::new();
            let mut total: Option<Tensor<1>> = None;
            for (t, w) in weights.iter().enumerate() {
                let (probed, p) = shared.probed();
                let loss = model.forward_task(t, &probed).output.powi_scalar(2).sum().mul_scalar(*w);
                total = Some(match total {
                    Some(sum) => sum + loss,
                    None => loss,
                });
                probes.push(p);
            }
            let grads = total.unwrap().backward();
            let mut reached = 0;
            for (t, w) in weights.iter().enumerate() {
                let leaves = shared.detached_leaves();
                let alone = model.forward_task(t, &leaves).output.powi_scalar(2).sum().mul_scalar(*w).backward();
                for (j, &k) in shared.probe_points().iter().enumerate() {
                    let leaf = &leaves.tensors[k];
                    let expected = values(leaf.grad(&alone), leaf);
                    let got = values(probes[t][j].grad(&grads), leaf);
                    let scale = expected.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
                    let diff = expected.iter().zip(&got).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                    assert!(diff <= 1e-5 * scale, "{arch:?} task {t} tensor {k}: {diff} (scale {scale})");
                    reached += usize::from(expected.iter().any(|v| *v != 0.0));
                }
            }
            assert!(reached >= 2, "{arch:?}: the tasks read the probed tensors");
        }
    }

    fn values(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    /// `model.dropout` acts after every hidden activation: in training (an autodiff device) two
    /// forwards of the same batch differ in the shared part wherever it has hidden layers (experts,
    /// bottoms, columns) and in every task branch on the same shared tensors (towers, AITM's
    /// representation towers); in evaluation mode they are equal.
    #[test]
    fn dropout_acts_in_the_shared_part_and_every_branch() {
        let device = Device::flex().autodiff();
        for arch in Architecture::ALL {
            let cfg = ModelConfig { dropout: 0.5, ..small(arch) };
            let (c, d) = inputs(32, &device);
            // a tower whose ReLUs are all dead on this batch outputs its bias whatever dropout does:
            // take an initialisation where every branch's output varies over the batch
            let alive = |m: &MultiTaskNet| {
                let shared = m.forward_shared(FeatureBatch::new(Some(c.clone()), Some(d.clone())));
                (0..2).all(|t| {
                    let out = values(m.forward_task(t, &shared).output);
                    out.iter().any(|v| *v != out[0])
                })
            };
            let model = (0..10)
                .map(|_| cfg.init(&schema(2), &device))
                .find(alive)
                .expect("an initialisation with live branches");
            let a = model.forward_shared(FeatureBatch::new(Some(c.clone()), Some(d.clone())));
            let b = model.forward_shared(FeatureBatch::new(Some(c.clone()), Some(d.clone())));
            let shared_differs = a.tensors.iter().zip(&b.tensors).any(|(x, y)| values(x.clone()) != values(y.clone()));
            let hidden_in_shared_part = !matches!(arch, Architecture::Esmm | Architecture::Aitm);
            assert_eq!(shared_differs, hidden_in_shared_part, "{arch:?}: dropout in the shared part");
            for t in 0..2 {
                let once = values(model.forward_task(t, &a).output);
                let twice = values(model.forward_task(t, &a).output);
                assert_ne!(once, twice, "{arch:?} task {t}: no dropout in the branch");
            }
            let eval = model.valid();
            let (c, d) = inputs(32, &Device::flex());
            let x = eval.forward(FeatureBatch::new(Some(c.clone()), Some(d.clone())));
            let y = eval.forward(FeatureBatch::new(Some(c), Some(d)));
            assert_eq!(
                values(x[0].output.clone()),
                values(y[0].output.clone()),
                "{arch:?}: evaluation is deterministic"
            );
        }
    }

    /// The adversary reads what the towers read: MMoE's and PLE's per-task mixtures (not the raw
    /// experts or only the shared experts), for every architecture `representation` has the
    /// configured width, and each main tower applied to its tower input gives its task's output.
    #[test]
    fn adversaries_read_the_representation_the_towers_read() {
        let device = Device::flex();
        let mut schema = schema(3);
        schema.tasks[2].adversarial = true;
        for arch in Architecture::ALL {
            let cfg = small(arch);
            let model = cfg.init(&schema, &device);
            let (c, d) = inputs(5, &device);
            let shared = model.forward_shared(FeatureBatch::new(Some(c), Some(d)));
            let representation = model.representation(&shared);
            let d_input = 2 * cfg.embedding_dim + 3;
            assert_eq!(representation.dims(), [5, cfg.tower_inputs_width(d_input, 2)], "{arch:?}");
            let head = model.adversaries[0].tower.forward(representation);
            assert_eq!(values(model.forward_task(2, &shared).output), values(head), "{arch:?}");
            let inputs = model.tower_inputs(&shared);
            let towers = match &model.body {
                ArchitectureNet::Mmoe(m) => &m.towers,
                ArchitectureNet::Ple(m) => &m.towers,
                ArchitectureNet::CrossStitch(m) => &m.towers,
                ArchitectureNet::SharedBottom(m) => &m.towers,
                _ => continue,
            };
            for (t, tower) in towers.iter().enumerate() {
                let input = inputs[t.min(inputs.len() - 1)].clone();
                assert_eq!(values(tower.forward(input)), values(model.forward_task(t, &shared).output), "{arch:?} {t}");
            }
        }
    }

    #[test]
    fn adversarial_tasks_must_come_last_and_funnels_need_binary_tasks() {
        let mut s = schema(3);
        s.tasks[0].adversarial = true;
        assert!(ModelConfig::default().check_schema(&s).unwrap_err().contains("adversarial"));
        let mut s = schema(2);
        s.tasks[1].kind = TaskKind::Regression;
        let esmm = ModelConfig { architecture: Architecture::Esmm, ..Default::default() };
        assert!(esmm.check_schema(&s).unwrap_err().contains("binary"));
        assert!(ModelConfig::default().check_schema(&s).is_ok());
    }

    #[test]
    fn invalid_configs_name_their_key() {
        let bad = ModelConfig { n_experts: 0, ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("model.n_experts"));
        let bad = ModelConfig { dropout: 1.5, ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("model.dropout"));
    }
}
