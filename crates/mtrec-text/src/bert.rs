//! A BERT-family encoder in Burn: token, position and type embeddings with their LayerNorm, then
//! burn-nn's [`TransformerEncoder`] — which is BERT's layer: post-norm (`LayerNorm(x + attention)`,
//! `LayerNorm(x + FFN)`), LayerNorm epsilon from the config (1e-12), erf GELU in the FFN, the padding
//! mask applied to the attention scores.
//!
//! Weights come from a Hugging Face `model.safetensors` through burn-store: its PyTorch adapter
//! transposes linear weights and renames LayerNorm's `weight`/`bias` to `gamma`/`beta`, and
//! [`hf_key_remapping`] maps BERT's tensor names onto this module's paths.

use burn::{
    config::Config,
    module::Module,
    nn::{
        Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig,
        transformer::{TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput},
    },
    tensor::{Bool, Device, Int, Tensor},
};
use serde::{Deserialize, Serialize};

/// The fields of a Hugging Face BERT `config.json` the encoder needs.
#[derive(Config, Debug, PartialEq)]
pub struct BertConfig {
    /// Token vocabulary size.
    pub vocab_size: usize,
    /// Width of every hidden state.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Longest position.
    pub max_position_embeddings: usize,
    /// Number of token types (segments).
    #[config(default = 2)]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[config(default = 1e-12)]
    pub layer_norm_eps: f64,
    /// The FFN activation (`gelu`: erf GELU, the only one supported).
    #[config(default = "String::from(\"gelu\")")]
    pub hidden_act: String,
}

/// The subset of `config.json` read from disk (its other keys are ignored).
#[derive(Debug, Deserialize, Serialize)]
pub(crate) struct HfConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "gelu")]
    pub hidden_act: String,
}

fn two() -> usize {
    2
}
fn eps() -> f64 {
    1e-12
}
fn gelu() -> String {
    "gelu".into()
}

impl From<HfConfig> for BertConfig {
    fn from(c: HfConfig) -> Self {
        BertConfig::new(
            c.vocab_size,
            c.hidden_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.intermediate_size,
            c.max_position_embeddings,
        )
        .with_type_vocab_size(c.type_vocab_size)
        .with_layer_norm_eps(c.layer_norm_eps)
        .with_hidden_act(c.hidden_act)
    }
}

impl BertConfig {
    /// A model with this config's shapes (weights to be loaded).
    pub fn init(&self, device: &Device) -> BertModel {
        let h = self.hidden_size;
        BertModel {
            embeddings: BertEmbeddings {
                word_embeddings: EmbeddingConfig::new(self.vocab_size, h).init(device),
                position_embeddings: EmbeddingConfig::new(self.max_position_embeddings, h).init(device),
                token_type_embeddings: EmbeddingConfig::new(self.type_vocab_size, h).init(device),
                layer_norm: LayerNormConfig::new(h).with_epsilon(self.layer_norm_eps).init(device),
            },
            encoder: TransformerEncoderConfig::new(
                h,
                self.intermediate_size,
                self.num_attention_heads,
                self.num_hidden_layers,
            )
            .with_dropout(0.0)
            .with_norm_first(false)
            .with_layer_norm_eps(self.layer_norm_eps)
            .init(device),
        }
    }
}

/// Token, position and type embeddings, summed and normalised.
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    /// Token embeddings.
    pub word_embeddings: Embedding,
    /// Absolute position embeddings.
    pub position_embeddings: Embedding,
    /// Segment (token type) embeddings; every token here is type 0.
    pub token_type_embeddings: Embedding,
    /// LayerNorm over the sum.
    pub layer_norm: LayerNorm,
}

/// A BERT encoder (no pooler: sentence embeddings pool the last hidden states).
#[derive(Module, Debug)]
pub struct BertModel {
    /// The input embeddings.
    pub embeddings: BertEmbeddings,
    /// The transformer layers.
    pub encoder: TransformerEncoder,
}

impl BertModel {
    /// The last hidden states.
    ///
    /// # Shapes
    /// - ids: `[B, L]` token ids; padding: `[B, L]`, `true` where the position is padding
    /// - output: `[B, L, hidden]`
    pub fn forward(&self, ids: Tensor<2, Int>, padding: Tensor<2, Bool>) -> Tensor<3> {
        let [batch, length] = ids.dims();
        let device = ids.device();
        let positions = Tensor::<1, Int>::arange(0..length as i64, &device).unsqueeze_dim::<2>(0).repeat_dim(0, batch);
        let types = Tensor::<2, Int>::zeros([batch, length], &device);
        let e = &self.embeddings;
        let x = e.word_embeddings.forward(ids)
            + e.position_embeddings.forward(positions)
            + e.token_type_embeddings.forward(types);
        let x = e.layer_norm.forward(x);
        self.encoder.forward(TransformerEncoderInput::new(x).mask_pad(padding))
    }
}

/// Hugging Face BERT tensor names → this module's paths (regex, replacement), for
/// burn-store's key remapping. The pooler and `position_ids` have no counterpart and are skipped.
pub fn hf_key_remapping() -> Vec<(&'static str, &'static str)> {
    vec![
        (r"^(?:bert\.)?embeddings\.LayerNorm\.", "embeddings.layer_norm."),
        (r"^(?:bert\.)?embeddings\.", "embeddings."),
        (r"^(?:bert\.)?encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.", "encoder.layers.$1.mha.$2."),
        (r"^(?:bert\.)?encoder\.layer\.(\d+)\.attention\.output\.dense\.", "encoder.layers.$1.mha.output."),
        (r"^(?:bert\.)?encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", "encoder.layers.$1.norm_1."),
        (r"^(?:bert\.)?encoder\.layer\.(\d+)\.intermediate\.dense\.", "encoder.layers.$1.pwff.linear_inner."),
        (r"^(?:bert\.)?encoder\.layer\.(\d+)\.output\.dense\.", "encoder.layers.$1.pwff.linear_outer."),
        (r"^(?:bert\.)?encoder\.layer\.(\d+)\.output\.LayerNorm\.", "encoder.layers.$1.norm_2."),
    ]
}
