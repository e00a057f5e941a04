//! Bringing your own architecture.
//!
//! A user's architecture is a burn `Module` that implements [`MultiTaskModel`] (the two-phase
//! forward), declared in the user's own crate. It runs inside [`MultiTaskNet`](crate::MultiTaskNet)
//! as [`ArchitectureNet::Custom`](crate::ArchitectureNet::Custom), so everything the net adds —
//! adversarial heads, text branches, checkpoints (its parameters are recorded under
//! `body.Custom.*`), export, data parallelism — works for it as for the built-ins. An
//! [`ArchitectureFactory`] builds it from the `[model]` section; the program that trains it
//! registers the factory under a name (`mtrec_train::Registry::architecture`), and configs name it
//! like a built-in: `architecture = "dselect_k"` with its own options in `[model.options]`.
//!
//! The built-in nets have no custom type: their `C` is [`NoCustom`], a stateless module that is
//! never built. A program with several architectures of its own makes `C` an enum of them
//! (`#[derive(Module)]` on an enum of one-field variants).

use burn::{
    module::{Module, ModuleDisplay, ParamGroup},
    tensor::Device,
};
use mtrec_data::{FeatureBatch, Schema};
use serde::de::DeserializeOwned;

use crate::{FeatureEmbeddingConfig, ModelConfig, MultiTaskModel, SharedTensors, TaskOutput};

/// `[model.options]`: a registered architecture's own options, as parsed from the config.
pub type ArchitectureOptions = serde_json::Map<String, serde_json::Value>;

/// What a factory builds a user's architecture from.
#[derive(Debug)]
pub struct ArchitectureInputs<'a> {
    /// The `[model]` section: the shared keys (`expert_hidden`, `tower_hidden`, `dropout`,
    /// `batch_norm`…) and `[model.options]`.
    pub config: &'a ModelConfig,
    /// The dataset's columns and tasks.
    pub schema: &'a Schema,
    /// The input layer for the schema (embedding widths and row-sparse tables as `[model]` says):
    /// `input.init(device)` builds it; `input.output_dim()` is its width.
    pub input: FeatureEmbeddingConfig,
    /// The output width of each main task (1 for binary and regression tasks, the number of
    /// classes for multiclass ones), in task order; the architecture has one branch each.
    pub task_outputs: Vec<usize>,
}

impl ArchitectureInputs<'_> {
    /// Number of main tasks (the branches to build).
    pub fn n_tasks(&self) -> usize {
        self.task_outputs.len()
    }

    /// `[model.options]` parsed into the architecture's own type (absent keys take the type's
    /// serde defaults); the error names `model.options`.
    pub fn options<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_value(serde_json::Value::Object(self.config.options.clone()))
            .map_err(|e| format!("model.options of {:?}: {e}", self.config.architecture.name()))
    }
}

/// Builds a user's architecture `C` from the config (see the module docs). Closures
/// `Fn(ArchitectureInputs, &Device) -> Result<(C, usize), String>` are factories too.
pub trait ArchitectureFactory<C>: Send + Sync {
    /// Checks the architecture against the dataset's schema before it is built (e.g. "needs
    /// binary tasks"); the message names the offending key or task.
    fn check_schema(&self, _config: &ModelConfig, _schema: &Schema) -> Result<(), String> {
        Ok(())
    }

    /// The architecture, and the width of what its towers read side by side
    /// ([`MultiTaskModel::tower_inputs`]): the representation adversarial heads read.
    fn init(&self, inputs: ArchitectureInputs<'_>, device: &Device) -> Result<(C, usize), String>;
}

impl<C, F> ArchitectureFactory<C> for F
where
    F: Fn(ArchitectureInputs<'_>, &Device) -> Result<(C, usize), String> + Send + Sync,
{
    fn init(&self, inputs: ArchitectureInputs<'_>, device: &Device) -> Result<(C, usize), String> {
        self(inputs, device)
    }
}

/// The custom architecture of a program that has none: a stateless module (like burn's `Relu`)
/// that no factory builds, so its methods are never called.
#[derive(Module, Debug, Default)]
pub struct NoCustom;

impl MultiTaskModel for NoCustom {
    fn n_tasks(&self) -> usize {
        unreachable!("NoCustom is never built")
    }
    fn forward_shared(&self, _features: FeatureBatch) -> SharedTensors {
        unreachable!("NoCustom is never built")
    }
    fn forward_task(&self, _task: usize, _shared: &SharedTensors) -> TaskOutput {
        unreachable!("NoCustom is never built")
    }
    fn tower_inputs(&self, _shared: &SharedTensors) -> Vec<burn::tensor::Tensor<2>> {
        unreachable!("NoCustom is never built")
    }
    fn task_parameters(&self, _task: usize) -> ParamGroup {
        unreachable!("NoCustom is never built")
    }
}

/// The traits a user implements stay usable as trait objects.
#[allow(dead_code)]
fn object_safe(_: &dyn MultiTaskModel, _: &dyn ArchitectureFactory<NoCustom>) {}

/// A burn `Module` that is a [`MultiTaskModel`]: what a user's architecture is (implemented for
/// every such type; `#[derive(Module)]` gives the `ModuleDisplay` it needs too); the bound the
/// generic code names.
pub trait MultiTaskModule: Module + ModuleDisplay + MultiTaskModel {}

impl<T: Module + ModuleDisplay + MultiTaskModel> MultiTaskModule for T {}
