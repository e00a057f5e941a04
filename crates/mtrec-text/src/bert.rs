//! A BERT-family encoder in Burn: token, position and type embeddings with their LayerNorm, then
//! BERT's layers — post-norm (`LayerNorm(x + attention(x))`, `LayerNorm(x + FFN(x))`), LayerNorm
//! epsilon from the config (1e-12), erf GELU in the FFN, padding masked out of the attention,
//! dropout (`hidden_dropout_prob`) on the embeddings and every sub-layer's output while the model
//! trains (dropout on the attention probabilities is not applied: the fused attention op has no
//! such input). The
//! layer is burn-nn's `TransformerEncoderLayer` (post-norm) computed with burn's fused attention op
//! (`burn::tensor::module::attention`: flex runs it per batch and head without materialising the
//! softmax weights of a separate op) — on flex, mtrec's [`mtrec_kernels::masked_attention`] (one
//! operation with its own backward) — and every linear
//! layer on `[B·L, H]` matrices: one large product each instead of a product per text.
//!
//! Weights come from a Hugging Face `model.safetensors` through burn-store: its PyTorch adapter
//! transposes linear weights and renames LayerNorm's `weight`/`bias` to `gamma`/`beta`, and
//! [`hf_key_remapping`] maps BERT's tensor names onto this module's paths.

use burn::{
    config::Config,
    module::Module,
    nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig},
    tensor::{Bool, DType, Device, Int, Tensor, module::attention, ops::AttentionModuleOptions},
};

/// The fields of a Hugging Face BERT `config.json` the encoder needs, deserialised from that
/// file directly (its other keys are ignored; absent defaults are filled in).
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
    /// Dropout on the embeddings' and every sub-layer's output while training (BERT's 0.1);
    /// inactive in inference and in a frozen encoder.
    #[config(default = 0.1)]
    pub hidden_dropout_prob: f64,
}

impl BertConfig {
    /// A model with this config's shapes (weights to be loaded).
    pub fn init(&self, device: &Device) -> BertModel {
        let h = self.hidden_size;
        let norm = || LayerNormConfig::new(h).with_epsilon(self.layer_norm_eps).init(device);
        let linear = |i, o| LinearConfig::new(i, o).init(device);
        let dropout = || DropoutConfig::new(self.hidden_dropout_prob).init();
        BertModel {
            embeddings: BertEmbeddings {
                word_embeddings: EmbeddingConfig::new(self.vocab_size, h).init(device),
                position_embeddings: EmbeddingConfig::new(self.max_position_embeddings, h).init(device),
                token_type_embeddings: EmbeddingConfig::new(self.type_vocab_size, h).init(device),
                layer_norm: norm(),
                layer_norm_eps: self.layer_norm_eps,
                dropout: dropout(),
            },
            layers: (0..self.num_hidden_layers)
                .map(|_| BertLayer {
                    attention: BertAttention {
                        query: linear(h, h),
                        key: linear(h, h),
                        value: linear(h, h),
                        output: linear(h, h),
                        layer_norm: norm(),
                        layer_norm_eps: self.layer_norm_eps,
                        dropout: dropout(),
                        n_heads: self.num_attention_heads,
                    },
                    intermediate: linear(h, self.intermediate_size),
                    output: linear(self.intermediate_size, h),
                    layer_norm: norm(),
                    layer_norm_eps: self.layer_norm_eps,
                    dropout: dropout(),
                })
                .collect(),
        }
    }
}

/// Multi-head self-attention with its output projection and post-norm.
#[derive(Module, Debug)]
pub struct BertAttention {
    /// Query projection.
    pub query: Linear,
    /// Key projection.
    pub key: Linear,
    /// Value projection.
    pub value: Linear,
    /// Output projection.
    pub output: Linear,
    /// LayerNorm of `x + output`.
    pub layer_norm: LayerNorm,
    /// Its ε (burn's LayerNorm keeps it private; the fused kernel needs it).
    #[module(skip)]
    pub layer_norm_eps: f64,
    /// Dropout on the output projection (training only).
    pub dropout: Dropout,
    /// Attention heads.
    #[module(skip)]
    pub n_heads: usize,
}

impl BertAttention {
    /// # Shapes
    /// - x: `[B·L, H]` (the batch's tokens, text by text); mask: `[B, 1, L, L]`, `true` = masked,
    ///   a text's padding keys (the same for every query row, as [`BertModel::forward_layers`]
    ///   builds it)
    /// - output `[B·L, H]`
    pub fn forward(&self, x: Tensor<2>, mask: Tensor<4, Bool>) -> Tensor<2> {
        let [b, _, l, _] = mask.dims();
        let [_, h] = x.dims();
        let heads = self.n_heads;
        let q = mtrec_kernels::linear(&self.query, x.clone());
        let k = mtrec_kernels::linear(&self.key, x.clone());
        let v = mtrec_kernels::linear(&self.value, x.clone());
        let context = if mtrec_kernels::use_fused(&x.device()) && x.dtype() == DType::F32 {
            // attention as one operation reading the heads in place, with its own backward while
            // training (burn's attention under autodiff is a chain of tracked passes and copies;
            // in inference its per-head loop calls libm's `exp`); every query row of a text
            // masks the same keys, its padding
            let padding = mask.slice([0..b, 0..1, 0..1, 0..l]).reshape([b, l]);
            let key_bias = Tensor::<2>::zeros([b, l], &x.device()).mask_fill(padding, f32::NEG_INFINITY);
            mtrec_kernels::masked_attention(q, k, v, key_bias, heads)
        } else {
            let split = |t: Tensor<2>| t.reshape([b, l, heads, h / heads]).swap_dims(1, 2); // [B, heads, L, d]
            let context = attention(split(q), split(k), split(v), Some(mask), None, AttentionModuleOptions::default());
            context.swap_dims(1, 2).reshape([b * l, h])
        };
        let residual = x + mtrec_kernels::dropout(&self.dropout, mtrec_kernels::linear(&self.output, context));
        mtrec_kernels::layer_norm(&self.layer_norm, self.layer_norm_eps, residual)
    }
}

/// One BERT layer: self-attention, then the feed-forward network, each with residual and LayerNorm.
#[derive(Module, Debug)]
pub struct BertLayer {
    /// Self-attention.
    pub attention: BertAttention,
    /// FFN in (then erf GELU).
    pub intermediate: Linear,
    /// FFN out.
    pub output: Linear,
    /// LayerNorm of `x + FFN(x)`.
    pub layer_norm: LayerNorm,
    /// Its ε.
    #[module(skip)]
    pub layer_norm_eps: f64,
    /// Dropout on the FFN's output (training only).
    pub dropout: Dropout,
}

impl BertLayer {
    /// # Shapes
    /// - x: `[B·L, H]`; mask `[B, 1, L, L]`; output `[B·L, H]`
    pub fn forward(&self, x: Tensor<2>, mask: Tensor<4, Bool>) -> Tensor<2> {
        let x = self.attention.forward(x, mask);
        let ff = mtrec_kernels::gelu(mtrec_kernels::linear(&self.intermediate, x.clone()));
        let ff = mtrec_kernels::linear(&self.output, ff);
        mtrec_kernels::layer_norm(&self.layer_norm, self.layer_norm_eps, x + mtrec_kernels::dropout(&self.dropout, ff))
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
    /// Its ε.
    #[module(skip)]
    pub layer_norm_eps: f64,
    /// Dropout on the normalised sum (training only).
    pub dropout: Dropout,
}

/// A BERT encoder (no pooler: sentence embeddings pool the last hidden states).
#[derive(Module, Debug)]
pub struct BertModel {
    /// The input embeddings.
    pub embeddings: BertEmbeddings,
    /// The transformer layers.
    pub layers: Vec<BertLayer>,
}

impl BertModel {
    /// The last hidden states.
    ///
    /// # Shapes
    /// - ids: `[B, L]` token ids; padding: `[B, L]`, `true` where the position is padding
    /// - output: `[B, L, hidden]`
    pub fn forward(&self, ids: Tensor<2, Int>, padding: Tensor<2, Bool>) -> Tensor<3> {
        let [batch, length] = ids.dims();
        let x = self.embed(ids);
        let [_, h] = x.dims();
        self.forward_layers(x, padding, 0).reshape([batch, length, h])
    }

    /// The embedding layer's output, token by token.
    ///
    /// # Shapes
    /// - ids: `[B, L]`; output: `[B·L, hidden]`
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<2> {
        let [batch, length] = ids.dims();
        let device = ids.device();
        let positions = Tensor::<1, Int>::arange(0..length as i64, &device).unsqueeze_dim::<2>(0).repeat_dim(0, batch);
        let types = Tensor::<2, Int>::zeros([batch, length], &device);
        let e = &self.embeddings;
        let x = e.word_embeddings.forward(ids)
            + e.position_embeddings.forward(positions)
            + e.token_type_embeddings.forward(types);
        let x = mtrec_kernels::dropout(&e.dropout, mtrec_kernels::layer_norm(&e.layer_norm, e.layer_norm_eps, x));
        let [_, _, h] = x.dims();
        x.reshape([batch * length, h])
    }

    /// The layers from `first` on, applied to the hidden states after layer `first − 1` (the
    /// embeddings' output when `first` is 0).
    ///
    /// # Shapes
    /// - x: `[B·L, hidden]`; padding: `[B, L]`; output: `[B·L, hidden]`
    pub fn forward_layers(&self, x: Tensor<2>, padding: Tensor<2, Bool>, first: usize) -> Tensor<2> {
        let [batch, length] = padding.dims();
        let mask = padding.reshape([batch, 1, 1, length]).expand([batch, 1, length, length]);
        self.layers[first..].iter().fold(x, |x, layer| layer.forward(x, mask.clone()))
    }
}

/// Hugging Face BERT tensor names → this module's paths (regex, replacement), for
/// burn-store's key remapping. The pooler and `position_ids` have no counterpart and are skipped.
pub fn hf_key_remapping() -> Vec<(&'static str, &'static str)> {
    vec![
        (r"^(?:bert\.)?embeddings\.LayerNorm\.", "embeddings.layer_norm."),
        (r"^(?:bert\.)?embeddings\.", "embeddings."),
        (r"^(?:bert\.)?encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.", "layers.$1.attention.$2."),
        (r"^(?:bert\.)?encoder\.layer\.(\d+)\.attention\.output\.dense\.", "layers.$1.attention.output."),
        (r"^(?:bert\.)?encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", "layers.$1.attention.layer_norm."),
        (r"^(?:bert\.)?encoder\.layer\.(\d+)\.intermediate\.dense\.", "layers.$1.intermediate."),
        (r"^(?:bert\.)?encoder\.layer\.(\d+)\.output\.dense\.", "layers.$1.output."),
        (r"^(?:bert\.)?encoder\.layer\.(\d+)\.output\.LayerNorm\.", "layers.$1.layer_norm."),
    ]
}
