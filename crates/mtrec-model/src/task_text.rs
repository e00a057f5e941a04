//! Task-specific adapters inside the language model (`model.text.adapters = "per_task"`): each
//! task's branch runs the encoder's adapted layers again with LoRA adapters of its own, on the
//! frozen pretrained base the tasks share, and reads the sentence embedding out into its output.
//! It is the language-model form of a task tower: the base is the shared bottom, the adapters are
//! the task's own parameters, so a task's gradient reaches its adapters only and gradient
//! balancers see them as task parameters, not shared ones.
//!
//! The branch adds to the architecture's output: task `t`'s output is the tower's plus
//! `readout_t(encoder_t(text))`. The readout starts at zero and LoRA's `B` at zero, so a model
//! starts as the one without task adapters. Cost: each task runs the adapted layers forward and
//! backward once more a step (with `lora_layers = k` and the prefix store: `k` layers a task over
//! the stored prefix; without, the whole encoder a task).

use burn::{
    module::Module,
    nn::{Initializer, Linear, LinearConfig},
    tensor::{Device, Tensor},
};
use mtrec_text::TextEncoder;

/// One task's adapters in the encoder and the readout of its sentence embeddings.
#[derive(Module, Debug)]
pub struct TaskTextBranch {
    /// The frozen base with this task's LoRA adapters.
    pub encoder: TextEncoder,
    /// Sentence embeddings of the token fields, side by side → the task's output.
    pub readout: Linear,
    /// Each token field's `(first column, width)` in the batch's text values.
    #[module(skip)]
    pub fields: Vec<(usize, usize)>,
}

impl TaskTextBranch {
    /// A branch reading the token fields `fields` (`(first column, width)` in the batch's text)
    /// into `output_dim` outputs; its readout starts at zero.
    pub fn new(encoder: TextEncoder, fields: Vec<(usize, usize)>, output_dim: usize, device: &Device) -> Self {
        let readout = LinearConfig::new(encoder.dim() * fields.len(), output_dim)
            .with_initializer(Initializer::Zeros)
            .init(device);
        Self { encoder, readout, fields }
    }

    /// What the branch adds to its task's output.
    ///
    /// # Shapes
    /// - text: `[B, Σ field widths]` (the batch's text values: token ids for the token fields)
    /// - output: `[B, output_dim]`
    pub fn forward(&self, text: &Tensor<2>) -> Tensor<2> {
        let batch = text.dims()[0];
        let embeddings: Vec<Tensor<2>> = (self.fields.iter())
            .map(|&(start, width)| self.encoder.forward(text.clone().slice([0..batch, start..start + width])))
            .collect();
        self.readout.forward(Tensor::cat(embeddings, 1))
    }
}
