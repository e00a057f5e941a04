//! The `[model]` section of an experiment config: which architecture (a built-in, or one a user
//! registered by name, [`crate::ArchitectureFactory`]), its sizes, and what builds it.

use burn::tensor::Device;
use mtrec_data::{Schema, TaskKind};
use mtrec_text::TextTrainingConfig;
use serde::{Deserialize, Serialize};

use crate::{
    AdaTtConfig, AdversarialHead, AdversarialHeadConfig, AitmConfig, ArchitectureFactory, ArchitectureInputs,
    ArchitectureNet, ArchitectureOptions, ConceptEraser, CrossStitchConfig, EsmmConfig, FeatureEmbeddingConfig,
    HomeConfig, MmoeConfig, MultiTaskModule, MultiTaskNet, NoCustom, PleConfig, SharedBottomConfig, StemConfig,
};

/// Which architecture to build: a built-in, or one registered under its name by the program that
/// trains it ([`crate::ArchitectureFactory`]). The config spells each by its name
/// (`architecture = "mmoe"`, `architecture = "dselect_k"`); a name that is not a built-in's reads as
/// [`Self::Custom`], and building it fails unless the program registered it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
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
    /// Adaptive task-to-task fusion, AdaTT-sp (Li et al., KDD 2023).
    Adatt,
    /// Shared and task-specific embeddings, STEM-Net (Su et al., AAAI 2024).
    Stem,
    /// Hierarchy of multi-gate experts, HoME (Wang et al., 2024).
    Home,
    /// A user's architecture, by the name it is registered under.
    Custom(String),
}

impl Serialize for Architecture {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Architecture {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        if name.trim().is_empty() {
            return Err(serde::de::Error::custom("model.architecture must name an architecture"));
        }
        Ok(Self::from_name(&name))
    }
}

impl Architecture {
    /// The built-in of that name, or [`Self::Custom`].
    pub fn from_name(name: &str) -> Self {
        Self::ALL.into_iter().find(|a| a.name() == name).unwrap_or_else(|| Self::Custom(name.to_string()))
    }

    /// The config spelling.
    pub fn name(&self) -> &str {
        match self {
            Self::SharedBottom => "shared_bottom",
            Self::Mmoe => "mmoe",
            Self::Omoe => "omoe",
            Self::Ple => "ple",
            Self::SingleTask => "single_task",
            Self::CrossStitch => "cross_stitch",
            Self::Esmm => "esmm",
            Self::Aitm => "aitm",
            Self::Adatt => "adatt",
            Self::Stem => "stem",
            Self::Home => "home",
            Self::Custom(name) => name,
        }
    }

    /// Whether it is a user's ([`Self::Custom`]).
    pub fn is_custom(&self) -> bool {
        matches!(self, Self::Custom(_))
    }

    /// Every built-in architecture.
    pub const ALL: [Architecture; 11] = [
        Self::SharedBottom,
        Self::Mmoe,
        Self::Omoe,
        Self::Ple,
        Self::SingleTask,
        Self::CrossStitch,
        Self::Esmm,
        Self::Aitm,
        Self::Adatt,
        Self::Stem,
        Self::Home,
    ];

    /// The built-ins' names, comma-separated: what an error about an unknown name lists.
    pub fn builtin_names() -> String {
        Self::ALL.map(|a| a.name().to_string()).join(", ")
    }
}

/// The `[model]` section of an experiment config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// `shared_bottom`, `mmoe`, `omoe`, `ple`, `single_task`, `cross_stitch`, `esmm`, `aitm`, `adatt`, `stem`,
    /// `home`, or the name of an architecture the program registered.
    pub architecture: Architecture,
    /// `[model.options]`: a registered architecture's own options (it parses them,
    /// [`ArchitectureInputs::options`]); the built-ins take none. A registered architecture also
    /// reads the shared keys below that apply to it (`expert_hidden`, `tower_hidden`, `dropout`…).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub options: ArchitectureOptions,
    /// Embedding width per categorical (and multi-valued) field.
    pub embedding_dim: usize,
    /// Width each text field's sentence embedding is projected to in the shared input layer.
    pub text_dim: usize,
    /// MMoE, OMoE: number of experts.
    pub n_experts: usize,
    /// MMoE, OMoE, PLE: hidden widths of each expert.
    pub expert_hidden: Vec<usize>,
    /// PLE, AdaTT, STEM: task-specific experts per task and level; HoME: experts of each category
    /// (both layers) and of each task.
    pub n_task_experts: usize,
    /// PLE: shared experts per level; STEM: shared experts; HoME: global experts per layer.
    pub n_shared_experts: usize,
    /// HoME: the task categories, each a list of task names (every main task in one); empty: a
    /// category per task.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub task_groups: Vec<Vec<String>>,
    /// HoME: rank of each expert's feature gate (0: no feature gates; default 8).
    pub feature_gate_rank: usize,
    /// PLE: number of CGC levels (1 = CGC); AdaTT: number of fusion levels.
    pub levels: usize,
    /// Shared-bottom: the shared bottom; single-task: each task's bottom; cross-stitch: each
    /// column; AITM: each task's representation tower; ESMM: each tower's first layers.
    pub bottom_hidden: Vec<usize>,
    /// Hidden widths of each task tower (and of an adversarial head).
    pub tower_hidden: Vec<usize>,
    /// `mlp` (default), `dcn_v2` or `fm`: explicit feature crosses on the input vector before the
    /// architecture's networks, under any architecture.
    pub bottom: Bottom,
    /// `dcn_v2`: number of cross layers (default 3).
    pub cross_layers: usize,
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
    /// Row-sparse id tables ([`SparseRows`](crate::SparseRows)): a step reads, differentiates and updates only
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

/// `model.bottom`: what the shared input vector goes through before the architecture's networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Bottom {
    /// Nothing: the architecture's own MLPs (experts, shared bottom, towers) read the input vector.
    #[default]
    Mlp,
    /// DCN-v2's cross network (`model.cross_layers` full-rank layers, [`crate::CrossNetwork`]) on
    /// the input vector, then the architecture's MLPs: the paper's stacked structure.
    DcnV2,
    /// FM's second-order term: the pairwise interactions of the categorical and multi-valued field
    /// embeddings ([`crate::pairwise_interactions`]) appended to the input vector.
    Fm,
}

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
            options: ArchitectureOptions::new(),
            embedding_dim: 4,
            text_dim: 32,
            n_experts: 8,
            expert_hidden: vec![16],
            n_task_experts: 2,
            n_shared_experts: 4,
            task_groups: Vec::new(),
            feature_gate_rank: 8,
            levels: 1,
            bottom_hidden: vec![128],
            tower_hidden: vec![8],
            bottom: Bottom::Mlp,
            cross_layers: 3,
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
        if self.bottom == Bottom::DcnV2 && self.cross_layers == 0 {
            return Err("model.bottom = \"dcn_v2\" needs model.cross_layers ≥ 1".into());
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
        if !self.options.is_empty() && !self.architecture.is_custom() {
            return Err(format!(
                "model.options is read by registered architectures; the built-in {:?} takes its options as keys of \
                 [model] (model.n_experts, model.expert_hidden, …)",
                self.architecture.name()
            ));
        }
        use Architecture::*;
        match self.architecture {
            Mmoe | Omoe if self.n_experts == 0 || self.expert_hidden.is_empty() => {
                Err("model.n_experts must be positive and model.expert_hidden non-empty for mmoe and omoe".into())
            }
            Ple | Adatt | Stem | Home
                if self.n_task_experts == 0 || self.levels == 0 || self.expert_hidden.is_empty() =>
            {
                Err(format!(
                    "model.n_task_experts and model.levels must be positive and model.expert_hidden non-empty for {}",
                    self.architecture.name()
                ))
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
        self.task_categories(schema)?;
        if let Some(t) = schema.tasks.iter().find(|t| t.kind == TaskKind::Multiclass && t.n_classes < 2) {
            return Err(format!("task `{}` is multiclass with {} classes: it needs at least 2", t.name, t.n_classes));
        }
        Ok(())
    }

    /// HoME's category of each main task from `model.task_groups` (a category per task when it is
    /// empty); every main task must be in exactly one group, and every name a main task's.
    pub fn task_categories(&self, schema: &Schema) -> Result<Vec<usize>, String> {
        let main: Vec<&str> = schema.tasks.iter().filter(|t| !t.adversarial).map(|t| t.name.as_str()).collect();
        if self.task_groups.is_empty() {
            return Ok((0..main.len()).collect());
        }
        if self.architecture != Architecture::Home {
            return Err(format!("model.task_groups is read by home, not by {}", self.architecture.name()));
        }
        let mut categories = vec![None; main.len()];
        for (g, group) in self.task_groups.iter().enumerate() {
            if group.is_empty() {
                return Err(format!("model.task_groups: group {g} is empty"));
            }
            for name in group {
                let t = main.iter().position(|m| m == name).ok_or_else(|| {
                    format!("model.task_groups: {name:?} is not a main task of the dataset ({})", main.join(", "))
                })?;
                if categories[t].replace(g).is_some() {
                    return Err(format!("model.task_groups: task {name:?} is in two groups"));
                }
            }
        }
        (0..main.len())
            .map(|t| categories[t].ok_or_else(|| format!("model.task_groups: task {:?} is in no group", main[t])))
            .collect()
    }

    /// What makes the model normalise with batch statistics — the setting and how to do without it
    /// (`model.batch_norm`, or HoME, whose experts always normalise); `None` when nothing does. Such
    /// a model keeps running statistics of the batches it sees.
    pub fn batch_statistics(&self) -> Option<(&'static str, &'static str)> {
        if self.batch_norm {
            Some(("model.batch_norm = true", "set model.batch_norm = false or train in one process"))
        } else if self.architecture == Architecture::Home {
            Some((
                "model.architecture = \"home\" (its experts normalise with batch statistics)",
                "train it in one process",
            ))
        } else {
            None
        }
    }

    /// Whether the architecture models the steps of a funnel (ESMM, AITM): its tasks' labels must
    /// satisfy `y_t ≤ y_{t−1}`.
    pub fn needs_funnel(&self) -> bool {
        matches!(self.architecture, Architecture::Esmm | Architecture::Aitm)
    }

    /// Width of what the towers read, side by side ([`MultiTaskModel::tower_inputs`](crate::MultiTaskModel::tower_inputs)): the
    /// representation an adversarial head reads; `None` for a registered architecture (its
    /// factory reports it).
    pub fn tower_inputs_width(&self, d_input: usize, n_main: usize) -> Option<usize> {
        let last = |v: &[usize]| v.last().copied().unwrap_or(d_input);
        Some(match self.architecture {
            Architecture::SharedBottom => last(&self.bottom_hidden),
            Architecture::Omoe => last(&self.expert_hidden),
            Architecture::Mmoe | Architecture::Ple | Architecture::Adatt | Architecture::Stem | Architecture::Home => {
                n_main * last(&self.expert_hidden)
            }
            Architecture::SingleTask | Architecture::CrossStitch | Architecture::Aitm => {
                n_main * last(&self.bottom_hidden)
            }
            Architecture::Esmm => d_input,
            Architecture::Custom(_) => return None,
        })
    }

    /// The width of each tower input an eraser acts on ([`MultiTaskModel::tower_inputs`](crate::MultiTaskModel::tower_inputs)'s order),
    /// for the architectures that apply `model.erasure`; `None` for the others.
    pub fn erasure_parts(&self, n_main: usize) -> Option<Vec<usize>> {
        let last = |v: &[usize]| v.last().copied();
        match self.architecture {
            Architecture::SharedBottom => Some(vec![last(&self.bottom_hidden)?]),
            Architecture::Omoe => Some(vec![last(&self.expert_hidden)?]),
            Architecture::Mmoe | Architecture::Ple | Architecture::Adatt | Architecture::Stem | Architecture::Home => {
                Some(vec![last(&self.expert_hidden)?; n_main])
            }
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

    /// A freshly initialised adversarial head for task `task` of `schema`, reading a
    /// representation `d_repr` wide (what [`Self::init`] builds, and what
    /// `model.adversary_restart` replaces a dead head with).
    pub fn adversarial_head(&self, schema: &Schema, task: usize, d_repr: usize, device: &Device) -> AdversarialHead {
        AdversarialHeadConfig::new(d_repr, self.adversary_hidden.clone().unwrap_or(self.tower_hidden.clone()))
            .with_weight(self.adversarial_weight)
            .with_d_output(schema.tasks[task].output_dim())
            .init(device)
    }

    /// Builds the chosen built-in architecture for a dataset's schema (see [`Self::check_schema`]);
    /// every adversarial task gets an [`AdversarialHead`] on the shared representation.
    ///
    /// # Panics
    /// When `architecture` names a registered architecture: build those with [`Self::init_with`].
    pub fn init(&self, schema: &Schema, device: &Device) -> MultiTaskNet {
        self.init_with::<NoCustom>(schema, None, device).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::init`] for any architecture: a built-in, or the registered one `custom` builds (a
    /// `Custom` architecture without a factory is an error naming it).
    pub fn init_with<C: MultiTaskModule>(
        &self,
        schema: &Schema,
        custom: Option<&dyn ArchitectureFactory<C>>,
        device: &Device,
    ) -> Result<MultiTaskNet<C>, String> {
        mtrec_kernels::set_fused_kernels(self.fused_kernels);
        let input = FeatureEmbeddingConfig::from_schema(schema, self.embedding_dim, self.text_dim)
            .with_sparse(self.sparse_tables(schema))
            .with_cross_layers(if self.bottom == Bottom::DcnV2 { self.cross_layers } else { 0 })
            .with_fm(self.bottom == Bottom::Fm);
        let n_fields = schema.vocab_sizes().len() + schema.multi_categorical.len();
        if self.bottom == Bottom::Fm && n_fields < 2 {
            return Err(format!(
                "model.bottom = \"fm\" crosses the embeddings of categorical and multi-valued fields, and the table has \
                 {n_fields}: it needs two or more"
            ));
        }
        let n = schema.tasks.iter().filter(|t| !t.adversarial).count();
        let outputs: Vec<usize> = schema.tasks[..n].iter().map(|t| t.output_dim()).collect();
        let d_repr = self.tower_inputs_width(input.output_dim(), n);
        let (bn, dropout, towers) = (self.batch_norm, self.dropout, self.tower_hidden.clone());
        let (body, d_repr) = match &self.architecture {
            Architecture::Custom(name) => {
                let factory = custom.ok_or_else(|| {
                    format!(
                        "model.architecture = {name:?} is not a built-in architecture ({}) and no factory was given \
                         for it: register it in the program that trains it (mtrec_train::Registry::architecture)",
                        Architecture::builtin_names()
                    )
                })?;
                factory.check_schema(self, schema)?;
                let inputs = ArchitectureInputs { config: self, schema, input, task_outputs: outputs };
                let (body, width) = factory.init(inputs, device)?;
                if body.n_tasks() != n {
                    return Err(format!(
                        "model.architecture = {name:?} built {} task branches for the dataset's {n} main tasks",
                        body.n_tasks()
                    ));
                }
                (ArchitectureNet::Custom(body), width)
            }
            builtin => {
                let categories = self.task_categories(schema)?;
                let body = self.init_builtin(builtin, input, &categories, outputs, bn, dropout, towers, device);
                (body, d_repr.unwrap_or(0))
            }
        };
        let adversaries = (n..schema.n_tasks()).map(|t| self.adversarial_head(schema, t, d_repr, device)).collect();
        let erasers = match self.erasure {
            Erasure::None => Vec::new(),
            Erasure::Leace => (self.erasure_parts(n).unwrap_or_default().into_iter())
                .map(|width| ConceptEraser::identity(width, device))
                .collect(),
        };
        Ok(MultiTaskNet { body, adversaries, task_text: Vec::new(), erasers })
    }

    #[allow(clippy::too_many_arguments)]
    fn init_builtin<C: MultiTaskModule>(
        &self,
        architecture: &Architecture,
        input: FeatureEmbeddingConfig,
        categories: &[usize],
        outputs: Vec<usize>,
        bn: bool,
        dropout: f64,
        towers: Vec<usize>,
        device: &Device,
    ) -> ArchitectureNet<C> {
        let n = categories.len();
        match architecture {
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
            Architecture::Adatt => ArchitectureNet::Adatt(
                AdaTtConfig::new(input, self.n_task_experts, self.expert_hidden.clone(), towers, n)
                    .with_levels(self.levels)
                    .with_batch_norm(bn)
                    .with_dropout(dropout)
                    .with_task_outputs(outputs)
                    .init(device),
            ),
            Architecture::Stem => ArchitectureNet::Stem(
                StemConfig::new(
                    input,
                    self.n_task_experts,
                    self.n_shared_experts,
                    self.expert_hidden.clone(),
                    towers,
                    n,
                )
                .with_batch_norm(bn)
                .with_dropout(dropout)
                .with_task_outputs(outputs)
                .init(device),
            ),
            Architecture::Home => ArchitectureNet::Home(
                HomeConfig::new(
                    input,
                    self.n_task_experts,
                    self.n_shared_experts,
                    self.expert_hidden.clone(),
                    towers,
                    n,
                )
                .with_categories(categories.to_vec())
                .with_feature_gate_rank(self.feature_gate_rank)
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
            Architecture::Custom(name) => unreachable!("{name} is built by its factory"),
        }
    }
}
