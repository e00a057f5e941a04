//! The language model as part of the model: a pretrained sentence encoder that trains with the
//! tasks — wholly, its top layers, or through LoRA adapters — as the first piece of the shared
//! phase of every architecture's forward.
//!
//! [`TextTrainingConfig`] is the `[model.text]` section: how the encoder of the table's text
//! columns trains. `finetune = "frozen"` (the default) keeps today's path: texts are encoded once
//! and the model reads their cached embeddings. Any other mode makes the table hold each text's
//! token ids ([`crate::TokenInput`]) and puts a [`TextEncoder`] into the model's input layer:
//!
//! - `full`: every parameter trains;
//! - `top`: the top `train_layers` transformer layers train, the embeddings and the layers below
//!   are frozen (their forward builds no autodiff graph); with `prefix_cache` (on by default)
//!   their output is computed once per distinct text and stored ([`PrefixCache`]), so a step runs
//!   only the top layers;
//! - `lora`: every pretrained parameter is frozen and the `lora_targets` projections of every
//!   layer (or of the top `lora_layers`) get trainable LoRA adapters (burn's
//!   [`Module::apply_lora`]: `W + α/r·A·B`, `B = 0` at the start, so the model starts as the
//!   pretrained one); with `lora_layers`, the layers below never change and use the prefix store
//!   as `top` does.
//!
//! The encoder's parameters are shared parameters for every balancer: a gradient method sees them
//! in the shared phase as it sees a shared bottom.

use std::path::Path;

use burn::{
    module::{Lora, Module, ParamGroup},
    tensor::{Bool, Device, Int, Tensor, TensorData},
};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::{
    BertModel, GROUP_COST_ROWS, PrefixCache, PrefixCacheMode, SentencePooling, TextError, encoder::Pretrained,
    length_groups, prefix_folder,
};

/// How the encoder of the text columns trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Finetune {
    /// Not at all: texts are encoded once and their embeddings cached.
    #[default]
    Frozen,
    /// Every parameter.
    Full,
    /// The top `train_layers` transformer layers.
    Top,
    /// LoRA adapters on the `lora_targets` projections.
    Lora,
}

/// Whose LoRA adapters the encoder carries (`finetune = "lora"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Adapters {
    /// One set, shared by the tasks: the encoder in the model's input layer trains.
    #[default]
    Shared,
    /// One set a task, on the frozen shared base: each task's branch runs the adapted layers
    /// again with its own adapters and reads the result out into its output (the LM form of a
    /// task tower); the input layer's encoder stays the frozen base.
    PerTask,
    /// Both: the shared set in the input layer and one set a task in the task branches.
    SharedAndPerTask,
}

/// How the encoder's learning rate falls after its warm-up (`model.text.decay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LrDecay {
    /// Linearly to 0 at the run's last step (BERT's recipe).
    #[default]
    Linear,
    /// Along half a cosine to 0 at the run's last step.
    Cosine,
    /// Not at all: `lr` from the end of the warm-up to the last step.
    Constant,
}

impl LrDecay {
    /// The factor of `lr` at training progress `p ∈ [0, 1]` after a linear warm-up over the
    /// first `warmup` of the run.
    pub fn factor(self, progress: f64, warmup: f64) -> f64 {
        if progress < warmup {
            return progress / warmup;
        }
        let after = ((progress - warmup) / (1.0 - warmup)).clamp(0.0, 1.0);
        match self {
            Self::Linear => 1.0 - after,
            Self::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * after).cos()),
            Self::Constant => 1.0,
        }
    }
}

/// The projections LoRA can adapt, by name.
pub const LORA_TARGETS: [&str; 6] = ["query", "key", "value", "attention_output", "intermediate", "output"];

/// The `[model.text]` section: how the encoder of the table's text columns trains (see the
/// module docs of `text_encoder.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextTrainingConfig {
    /// `frozen` (default), `full`, `top` or `lora`.
    pub finetune: Finetune,
    /// `top`: the number of top transformer layers that train (default 2).
    pub train_layers: usize,
    /// Longest token sequence of a trainable encoder's input (default 128, as the usual fine-tuning
    /// recipe; never beyond the model's `max_seq_length`). A frozen encoder uses the model's own.
    pub max_len: usize,
    /// Dropout inside the encoder while it trains (default: the model's `hidden_dropout_prob`,
    /// 0.1 for BERT).
    pub dropout: Option<f64>,
    /// `lora`: rank r of the adapters (default 8).
    pub lora_rank: usize,
    /// `lora`: scale numerator α; the update is `α/r·A·B` (default 16).
    pub lora_alpha: f64,
    /// `lora`: which projections get adapters, of [`LORA_TARGETS`] (default query and value, as
    /// in the LoRA paper).
    pub lora_targets: Vec<String>,
    /// `lora`: adapters in the top `k` transformer layers only (default: every layer); the
    /// embeddings and the layers below are then a frozen prefix, stored as `top`'s
    /// (`prefix_cache`).
    pub lora_layers: Option<usize>,
    /// `lora`: `shared` (default: one set the tasks share), `per_task` (one set a task, on the
    /// frozen base; see [`Adapters`]) or `shared_and_per_task`.
    pub adapters: Adapters,
    /// Learning rate of the encoder's parameters (default 2e-5; LoRA usually wants 1e-4 to 1e-3).
    /// With `layer_lr_decay` below 1 it is the top transformer layer's.
    pub lr: f64,
    /// Layer-wise learning-rate decay (Clark et al. 2020, ELECTRA; Sun et al. 2019): the top
    /// transformer layer trains at `lr`, each layer below at `layer_lr_decay` times the rate of
    /// the layer above, the embeddings at `lr · layer_lr_decay^n_layers` (default 1: one rate for
    /// the whole encoder). Warm-up and decay scale every layer's rate alike.
    pub layer_lr_decay: f64,
    /// Fraction of the run's steps over which the encoder's learning rate warms up linearly from
    /// 0 (default 0.1; `0`: none); it then follows `decay`.
    pub warmup: f64,
    /// After the warm-up: `linear` (default: to 0 at the last step), `cosine` (to 0 along half a
    /// cosine) or `constant`.
    pub decay: LrDecay,
    /// Decoupled weight decay of the encoder's parameters (AdamW; default 0.01).
    pub weight_decay: f64,
    /// Clip each encoder parameter's gradient to this L2 norm (default 1.0; `0`: no clipping).
    pub max_grad_norm: f64,
    /// `top`: store the frozen layers' states once per text (`f32`, default; `f16`: half the
    /// disk) or run them every step (`off`); see [`PrefixCache`].
    pub prefix_cache: PrefixCacheMode,
}

impl Default for TextTrainingConfig {
    fn default() -> Self {
        Self {
            finetune: Finetune::Frozen,
            train_layers: 2,
            max_len: 128,
            dropout: None,
            lora_rank: 8,
            lora_alpha: 16.0,
            lora_targets: vec!["query".into(), "value".into()],
            lora_layers: None,
            adapters: Adapters::Shared,
            lr: 2e-5,
            layer_lr_decay: 1.0,
            warmup: 0.1,
            decay: LrDecay::Linear,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
            prefix_cache: PrefixCacheMode::F32,
        }
    }
}

impl TextTrainingConfig {
    /// Whether the encoder trains (the table then holds token ids).
    pub fn trains(&self) -> bool {
        self.finetune != Finetune::Frozen
    }

    /// Checks the values; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_len < 2 {
            return Err("model.text.max_len must be at least 2 ([CLS] and [SEP])".into());
        }
        if self.finetune == Finetune::Top && self.train_layers == 0 {
            return Err("model.text.train_layers must be positive with finetune = \"top\"".into());
        }
        if let Some(p) = self.dropout
            && !(0.0..1.0).contains(&p)
        {
            return Err(format!("model.text.dropout = {p}: expected 0 ≤ p < 1"));
        }
        if self.finetune == Finetune::Lora {
            if self.lora_rank == 0 || !(self.lora_alpha.is_finite() && self.lora_alpha > 0.0) {
                return Err("model.text.lora_rank and lora_alpha must be positive".into());
            }
            if self.lora_targets.is_empty() {
                return Err(format!("model.text.lora_targets is empty: name some of {LORA_TARGETS:?}"));
            }
            if let Some(t) = self.lora_targets.iter().find(|t| !LORA_TARGETS.contains(&t.as_str())) {
                return Err(format!("model.text.lora_targets: unknown projection {t:?}; expected {LORA_TARGETS:?}"));
            }
            if self.lora_layers == Some(0) {
                return Err("model.text.lora_layers must be positive (leave it out: adapters in every layer)".into());
            }
        } else if self.adapters != Adapters::Shared {
            return Err(format!(
                "model.text.adapters = {:?} needs finetune = \"lora\" (task adapters are LoRA adapters)",
                self.adapters
            ));
        }
        let lr_ok = self.lr.is_finite() && self.lr > 0.0;
        if !lr_ok || !(0.0..1.0).contains(&self.warmup) || self.weight_decay < 0.0 || self.max_grad_norm < 0.0 {
            return Err("model.text: lr must be positive, 0 ≤ warmup < 1, weight_decay and max_grad_norm ≥ 0".into());
        }
        if !(self.layer_lr_decay > 0.0 && self.layer_lr_decay <= 1.0) {
            return Err(format!("model.text.layer_lr_decay = {}: expected 0 < decay ≤ 1", self.layer_lr_decay));
        }
        Ok(())
    }

    /// The parameter paths (inside an encoder of `n_layers` layers) of the LoRA targets, as
    /// regexes.
    fn lora_paths(&self, n_layers: usize) -> Vec<String> {
        let first = n_layers.saturating_sub(self.lora_layers.unwrap_or(n_layers));
        let layers = (first..n_layers).map(|i| i.to_string()).collect::<Vec<_>>().join("|");
        self.lora_targets
            .iter()
            .map(|t| {
                let inner = match t.as_str() {
                    "attention_output" => r"attention\.output".to_string(),
                    "query" | "key" | "value" => format!(r"attention\.{t}"),
                    other => other.to_string(),
                };
                format!(r"^layers\.(?:{layers})\.{inner}\.weight$")
            })
            .collect()
    }

    /// Whether each task gets its own LoRA adapters ([`Adapters::PerTask`] or
    /// [`Adapters::SharedAndPerTask`]).
    pub fn per_task_adapters(&self) -> bool {
        self.finetune == Finetune::Lora && self.adapters != Adapters::Shared
    }

    /// The settings of one task's encoder: the same LoRA adapters, its own.
    pub fn task_adapters(&self) -> Self {
        Self { adapters: Adapters::Shared, ..self.clone() }
    }

    /// The transformer layers below every trained parameter (the embeddings run before them):
    /// `top`'s and `lora` with `lora_layers`' frozen prefix; 0 otherwise.
    pub fn frozen_layers(&self, n_layers: usize) -> usize {
        match self.finetune {
            Finetune::Top => n_layers.saturating_sub(self.train_layers),
            Finetune::Lora => n_layers.saturating_sub(self.lora_layers.unwrap_or(n_layers)),
            Finetune::Full | Finetune::Frozen => 0,
        }
    }
}

/// A pretrained sentence encoder inside the model (see the module docs of `text_encoder.rs`).
#[derive(Module, Debug)]
pub struct TextEncoder {
    /// The BERT.
    pub bert: BertModel,
    /// Its pooling (and normalisation).
    #[module(skip)]
    pub pooling: SentencePooling,
    /// The pretrained model's identity (sha256 of its weights, config and tokenizer).
    #[module(skip)]
    pub model_id: String,
    /// `top` with a prefix store: the frozen layers' states, computed once per text.
    #[module(skip)]
    pub prefix: Option<PrefixCache>,
}

impl TextEncoder {
    /// The pretrained encoder of the sentence-transformers folder `dir` on `device`, its parameters
    /// trainable as `training` says (`frozen`: none).
    pub fn open(dir: &Path, training: &TextTrainingConfig, device: &Device) -> Result<Self, TextError> {
        let mut pretrained = Pretrained::load(dir, device)?;
        let model_id: String = pretrained.files_identity(dir)?.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if let Some(p) = training.dropout {
            pretrained.config.hidden_dropout_prob = p;
        }
        let mut bert = pretrained.model;
        if pretrained.config.hidden_dropout_prob != 0.1 || training.dropout.is_some() {
            // the config's dropout was set when the model was built; rebuild the dropout modules
            bert = with_dropout(bert, pretrained.config.hidden_dropout_prob);
        }
        // parameters loaded from a file are not tracked: the trainable ones are made so
        let bert = match training.finetune {
            Finetune::Frozen => bert.no_grad(),
            Finetune::Full => bert.unfreeze().train(),
            Finetune::Top => {
                let n = bert.layers.len();
                let keep = n.saturating_sub(training.train_layers);
                let BertModel { embeddings, layers } = bert.unfreeze().train();
                BertModel {
                    embeddings: embeddings.no_grad(),
                    layers: layers
                        .into_iter()
                        .enumerate()
                        .map(|(i, l)| if i < keep { l.no_grad() } else { l })
                        .collect(),
                }
            }
            Finetune::Lora if training.adapters == Adapters::PerTask => bert.no_grad(),
            Finetune::Lora => {
                let group = ParamGroup::from_any_regexes(training.lora_paths(bert.layers.len())).map_err(|e| {
                    TextError::Corrupt { path: dir.to_path_buf(), reason: format!("model.text.lora_targets: {e:?}") }
                })?;
                bert.apply_lora(Lora::new(training.lora_rank, training.lora_alpha).set_param_group(group))
            }
        };
        Ok(Self { bert, pooling: pretrained.pooling, model_id, prefix: None })
    }

    /// With a frozen prefix (`finetune = "top"`, or `"lora"` with `lora_layers`) and
    /// `prefix_cache` on, the frozen layers' states are stored once per text, in a folder of
    /// `root` named by [`prefix_folder`] (`None`: in memory), and a step runs only the layers above
    /// (see [`PrefixCache`]). Otherwise `self` unchanged.
    pub fn with_prefix_cache(mut self, root: Option<&Path>, training: &TextTrainingConfig) -> Self {
        let frozen = training.frozen_layers(self.bert.layers.len());
        if training.prefix_cache == PrefixCacheMode::Off || frozen == 0 {
            return self;
        }
        let folder = prefix_folder(&self.model_id, frozen, training.max_len, training.prefix_cache);
        let dir = root.map(|r| r.join(folder));
        self.prefix = Some(PrefixCache::new(&self.bert, frozen, dir.as_deref(), training.prefix_cache));
        self
    }

    /// The encoder's parameters by depth below its top transformer layer: `(layer i's
    /// parameters, n_layers − 1 − i)` for each layer, then `(the embeddings', n_layers)`; what
    /// `model.text.layer_lr_decay` scales by `decay^depth`. A layer's LoRA adapters are its own.
    pub fn depth_groups(&self) -> Vec<(ParamGroup, usize)> {
        let n = self.bert.layers.len();
        let layers = self.bert.layers.iter().enumerate();
        let layers = layers.map(|(i, layer)| (ParamGroup::ids_from_module(layer.clone()), n - 1 - i));
        layers.chain([(ParamGroup::ids_from_module(self.bert.embeddings.clone()), n)]).collect()
    }

    /// Width of a sentence embedding.
    pub fn dim(&self) -> usize {
        self.bert.embeddings.word_embeddings.weight.dims()[1]
    }

    /// Sentence embeddings of token-id rows as [`crate::TokenInput`] writes them (`id + 1`, `0` for
    /// padding). Padding is wasted work: the batch is cut to its longest text, and the
    /// transformer layers run over groups of texts of similar length ([`crate::length_groups`]),
    /// each cut to its own longest text; the embeddings come back in the rows' order.
    ///
    /// # Shapes
    /// - tokens: `[B, L]`
    /// - output: `[B, hidden]`
    pub fn forward(&self, tokens: Tensor<2>) -> Tensor<2> {
        let [batch, width] = tokens.dims();
        let lengths: Vec<usize> = (tokens.clone().greater_elem(0.0).int().sum_dim(1).into_data().convert::<i64>())
            .iter::<i64>()
            .map(|n| n.clamp(0, width as i64) as usize)
            .collect();
        let longest = |rows: &[usize]| rows.iter().map(|&r| lengths[r]).max().unwrap_or(0).max(1);
        let length = lengths.iter().copied().max().unwrap_or(0).max(1);
        let tokens = tokens.slice([0..batch, 0..length]);
        let padding: Tensor<2, Bool> = tokens.clone().lower_equal_elem(0.0);
        let h = self.dim();
        // the states the trained layers start from, `[B·L, H]`: the stored prefix, or the embeddings
        // (run once over the whole batch: their gradient is one dense table however many groups)
        let (states, first) = match &self.prefix {
            Some(prefix) => (prefix.states(tokens), prefix.layers()),
            None => (self.bert.embed((tokens - 1.0).clamp_min(0.0).int()), 0),
        };
        let groups = length_groups(&lengths, GROUP_COST_ROWS);
        let run = |states: Tensor<2>, padding: Tensor<2, Bool>| {
            let [b, l] = padding.dims();
            let hidden = self.bert.forward_layers(states, padding.clone(), first).reshape([b, l, h]);
            self.pooling.forward(hidden, padding)
        };
        if groups.len() <= 1 {
            return run(states, padding);
        }
        let device = states.device();
        let index = |rows: Vec<i64>| {
            let n = rows.len();
            Tensor::<1, Int>::from_data(TensorData::new(rows, [n]), &device)
        };
        let pooled: Vec<Tensor<2>> = (groups.iter())
            .map(|rows| {
                let l = longest(rows);
                let token_rows = rows.iter().flat_map(|&r| (0..l).map(move |p| (r * length + p) as i64)).collect();
                let text_rows = index(rows.iter().map(|&r| r as i64).collect());
                run(
                    states.clone().select(0, index(token_rows)),
                    padding.clone().select(0, text_rows).slice([0..rows.len(), 0..l]),
                )
            })
            .collect();
        // the groups' k-th row is text `groups.concat()[k]`: each text's row, back in the batch's order
        let mut at = vec![0i64; batch];
        for (k, &text) in groups.concat().iter().enumerate() {
            at[text] = k as i64;
        }
        Tensor::cat(pooled, 0).select(0, index(at))
    }
}

/// `bert` with every dropout module at probability `p`.
fn with_dropout(mut bert: BertModel, p: f64) -> BertModel {
    let dropout = || burn::nn::DropoutConfig::new(p).init();
    bert.embeddings.dropout = dropout();
    for layer in &mut bert.layers {
        layer.attention.dropout = dropout();
        layer.dropout = dropout();
    }
    bert
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The learning-rate factor, by hand: warm-up 0.2, then at progress 0.6 (half-way through the
    /// decay) 0.5 linearly, ½(1 + cos π/2) = 0.5 along the cosine, 1 constant; at 0.8 (¾):
    /// 0.25, ½(1 + cos 3π/4) ≈ 0.1464, 1; and with no warm-up the run starts at lr.
    #[test]
    fn the_learning_rate_warms_up_then_decays() {
        let (w, eps) = (0.2, 1e-12);
        for decay in [LrDecay::Linear, LrDecay::Cosine, LrDecay::Constant] {
            assert!((decay.factor(0.1, w) - 0.5).abs() < eps, "{decay:?} half-way through the warm-up");
            assert!((decay.factor(0.2, w) - 1.0).abs() < eps, "{decay:?} at the end of the warm-up");
            assert!((decay.factor(0.0, 0.0) - 1.0).abs() < eps, "{decay:?} without warm-up");
        }
        let at = |d: LrDecay, p: f64| d.factor(p, w);
        assert!((at(LrDecay::Linear, 0.6) - 0.5).abs() < eps && (at(LrDecay::Linear, 0.8) - 0.25).abs() < eps);
        assert!((at(LrDecay::Cosine, 0.6) - 0.5).abs() < eps);
        assert!((at(LrDecay::Cosine, 0.8) - 0.146_446_609_406_726_2).abs() < 1e-12);
        assert!(at(LrDecay::Linear, 1.0).abs() < eps && at(LrDecay::Cosine, 1.0).abs() < eps);
        assert_eq!((at(LrDecay::Constant, 0.6), at(LrDecay::Constant, 1.0)), (1.0, 1.0));
        let parsed: TextTrainingConfig = serde_json::from_str(r#"{"decay": "cosine"}"#).unwrap();
        assert_eq!(parsed.decay, LrDecay::Cosine);
    }

    /// The config's checks name the key.
    #[test]
    fn the_section_is_checked() {
        assert!(TextTrainingConfig::default().validate().is_ok());
        let bad =
            TextTrainingConfig { lora_targets: vec!["qkv".into()], finetune: Finetune::Lora, ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("qkv"));
        let top = TextTrainingConfig { finetune: Finetune::Top, train_layers: 0, ..Default::default() };
        assert!(top.validate().unwrap_err().contains("train_layers"));
        let paths = TextTrainingConfig {
            lora_targets: vec!["query".into(), "attention_output".into(), "output".into()],
            ..Default::default()
        }
        .lora_paths(4);
        let group = ParamGroup::from_any_regexes(paths).unwrap();
        let id = burn::module::ParamId::new();
        let top = TextTrainingConfig { lora_layers: Some(1), ..Default::default() }.lora_paths(4);
        let top = ParamGroup::from_any_regexes(top).unwrap();
        assert!(top.matches(&burn::module::ParamId::new(), Some("layers.3.attention.query.weight")));
        assert!(!top.matches(&burn::module::ParamId::new(), Some("layers.2.attention.query.weight")));
        let per_task =
            TextTrainingConfig { finetune: Finetune::Top, adapters: Adapters::PerTask, ..Default::default() };
        assert!(per_task.validate().unwrap_err().contains("adapters"));
        let none = TextTrainingConfig { finetune: Finetune::Lora, lora_layers: Some(0), ..Default::default() };
        assert!(none.validate().unwrap_err().contains("lora_layers"));
        assert_eq!(
            (none.frozen_layers(6), TextTrainingConfig { lora_layers: Some(2), ..none.clone() }.frozen_layers(6)),
            (6, 4)
        );
        assert!(group.matches(&id, Some("layers.3.attention.query.weight")));
        assert!(group.matches(&id, Some("layers.0.attention.output.weight")));
        assert!(group.matches(&id, Some("layers.0.output.weight")));
        assert!(!group.matches(&id, Some("layers.0.attention.key.weight")));
        assert!(!group.matches(&id, Some("layers.0.intermediate.weight")));
        assert!(!group.matches(&id, Some("embeddings.word_embeddings.weight")));
    }

    use burn::{
        optim::{AdamConfig, GradientsParams},
        tensor::TensorData,
    };

    use crate::TokenInput;

    /// The tiny BERT written by `tests/fixtures/tiny-bert/make_tiny_bert.py`, and its reference.
    fn tiny() -> (std::path::PathBuf, serde_json::Value) {
        let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert");
        let reference = serde_json::from_str(&std::fs::read_to_string(here.join("reference.json")).unwrap()).unwrap();
        (here.join("model"), reference)
    }

    fn floats(v: &serde_json::Value) -> Vec<f32> {
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
    }

    /// The reference texts as token rows, on `device`.
    fn token_rows(dir: &Path, reference: &serde_json::Value, device: &Device) -> Tensor<2> {
        let input = TokenInput::open(dir, None).unwrap();
        let texts: Vec<String> =
            reference["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
        let values = input.values(&texts).unwrap();
        Tensor::from_data(TensorData::new(values, [texts.len(), input.len()]), device)
    }

    fn no_dropout(finetune: Finetune) -> TextTrainingConfig {
        TextTrainingConfig { finetune, dropout: Some(0.0), ..Default::default() }
    }

    fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
        }
    }

    /// The backends to compare: flex (its fused kernels) always; ndarray (plain burn) in a build
    /// with the `ndarray` feature; wgpu where `MTREC_TEST_WGPU` is set (a build with the `wgpu`
    /// feature and a Vulkan driver).
    fn backends() -> Vec<(&'static str, Device)> {
        #[allow(unused_mut)]
        let mut out = vec![("flex", Device::flex())];
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        out.push(("ndarray", Device::ndarray()));
        #[cfg(not(feature = "ndarray"))]
        eprintln!("SKIP fine-tuning gradients on ndarray: build with --features ndarray");
        match std::env::var_os("MTREC_TEST_WGPU") {
            #[cfg(feature = "wgpu")]
            Some(_) => out.push(("wgpu", Device::wgpu(burn::tensor::DeviceKind::DefaultDevice))),
            #[cfg(not(feature = "wgpu"))]
            Some(_) => panic!("MTREC_TEST_WGPU is set but mtrec-text was built without the `wgpu` feature"),
            None => {
                eprintln!("SKIP fine-tuning gradients on wgpu: build with --features wgpu and set MTREC_TEST_WGPU=1")
            }
        }
        out
    }

    /// Fully fine-tuned, the tiny BERT gives PyTorch's embeddings and PyTorch's gradients of
    /// `sum(embedding · w)` (token ids from the same tokenizer, padded to the longest row), on
    /// every backend.
    #[test]
    fn gradients_of_fine_tuning_equal_pytorchs_on_every_backend() {
        for (name, device) in backends() {
            eprintln!("{name}: fine-tuning gradients of the tiny BERT against PyTorch's");
            gradients_of_fine_tuning_equal_pytorchs_on(device.autodiff());
        }
    }

    fn gradients_of_fine_tuning_equal_pytorchs_on(device: Device) {
        let (dir, reference) = tiny();
        let encoder = TextEncoder::open(&dir, &no_dropout(Finetune::Full), &device).unwrap();
        let tokens = token_rows(&dir, &reference, &device);
        let out = encoder.forward(tokens);
        let got: Vec<f32> = out.clone().into_data().try_into_vec::<f32>().unwrap();
        assert_close(&got, &floats(&reference["embedding"]), 1e-5, "embedding");
        let w = Tensor::<1>::from_data(TensorData::new(floats(&reference["w"]), [8]), &device);
        let grads = (out * w.unsqueeze_dim::<2>(0)).sum().backward();
        let b = &encoder.bert;
        let grad2 = |p: &burn::module::Param<Tensor<2>>| -> Vec<f32> {
            p.grad(&grads).unwrap().into_data().try_into_vec::<f32>().unwrap()
        };
        let grad1 = |p: &burn::module::Param<Tensor<1>>| -> Vec<f32> {
            p.grad(&grads).unwrap().into_data().try_into_vec::<f32>().unwrap()
        };
        let expected = &reference["grads"];
        assert_close(
            &grad2(&b.layers[1].attention.query.weight),
            &floats(&expected["layers.1.attention.query.weight"]),
            1e-4,
            "query",
        );
        assert_close(
            &grad2(&b.layers[0].intermediate.weight),
            &floats(&expected["layers.0.intermediate.weight"]),
            1e-4,
            "intermediate",
        );
        let bias = b.layers[0].output.bias.as_ref().unwrap();
        assert_close(&grad1(bias), &floats(&expected["layers.0.output.bias"]), 1e-4, "output bias");
        assert_close(
            &grad1(&b.embeddings.layer_norm.gamma),
            &floats(&expected["embeddings.layer_norm.gamma"]),
            1e-4,
            "gamma",
        );
        assert_close(
            &grad2(&b.embeddings.word_embeddings.weight),
            &floats(&expected["embeddings.word_embeddings.weight"]),
            1e-4,
            "word embeddings",
        );
    }

    /// `top`: only the top layers get gradients, the embeddings and lower layers none.
    #[test]
    fn top_layers_alone_train() {
        let (dir, reference) = tiny();
        let device = Device::flex().autodiff();
        let cfg = TextTrainingConfig { train_layers: 1, ..no_dropout(Finetune::Top) };
        let encoder = TextEncoder::open(&dir, &cfg, &device).unwrap();
        let grads = encoder.forward(token_rows(&dir, &reference, &device)).sum().backward();
        let b = &encoder.bert;
        assert!(b.layers[1].intermediate.weight.grad(&grads).is_some(), "the top layer trains");
        assert!(b.layers[0].intermediate.weight.grad(&grads).is_none(), "the lower layer is frozen");
        assert!(b.embeddings.word_embeddings.weight.grad(&grads).is_none(), "the embeddings are frozen");
    }

    /// A batch whose texts' lengths spread runs as groups of similar length: the sentence
    /// embeddings and the gradients equal those of each text run alone (≤ 1e-5), through every
    /// layer (`full`) and over the frozen-prefix store (`top`).
    #[test]
    fn length_groups_give_each_texts_own_embedding_and_gradients() {
        let (dir, _) = tiny();
        let device = Device::flex().autodiff();
        // 12 texts of 2 tokens and 4 of 32, in mixed order: two groups
        let (width, vocab) = (32usize, 24u32); // the tiny BERT's positions and vocabulary
        let lengths: Vec<usize> = (0..16).map(|i| if i % 4 == 1 { 32 } else { 2 }).collect();
        assert_eq!(length_groups(&lengths, GROUP_COST_ROWS).len(), 2);
        let values: Vec<f32> = (lengths.iter().enumerate())
            .flat_map(|(i, &n)| {
                (0..width).map(move |j| if j < n { (1 + (i as u32 * 7 + j as u32 * 3) % vocab) as f32 } else { 0.0 })
            })
            .collect();
        let tokens = Tensor::<2>::from_data(TensorData::new(values, [16, width]), &device);
        let w = Tensor::<1>::from_floats([0.3, -0.2, 0.5, 0.1, -0.4, 0.25, 0.05, -0.15], &device).unsqueeze_dim::<2>(0);
        let v = |t: Tensor<2>| t.into_data().try_into_vec::<f32>().unwrap();
        let top = TextTrainingConfig { train_layers: 1, ..no_dropout(Finetune::Top) };
        for (what, encoder) in [
            ("full", TextEncoder::open(&dir, &no_dropout(Finetune::Full), &device).unwrap()),
            ("top over the store", TextEncoder::open(&dir, &top, &device).unwrap().with_prefix_cache(None, &top)),
        ] {
            let grouped = encoder.forward(tokens.clone());
            let alone =
                Tensor::cat((0..16).map(|r| encoder.forward(tokens.clone().slice([r..r + 1, 0..width]))).collect(), 0);
            assert_close(&v(grouped.clone()), &v(alone.clone()), 1e-5, what);
            let grads = (grouped * w.clone()).sum().backward();
            let alone_grads = (alone * w.clone()).sum().backward();
            let query = &encoder.bert.layers[1].attention.query.weight;
            let grad = |g: &burn::tensor::Gradients| query.grad(g).unwrap().into_data().try_into_vec::<f32>().unwrap();
            assert_close(&grad(&grads), &grad(&alone_grads), 1e-5, &format!("{what}: query gradient"));
        }
    }

    /// `lora` with `lora_layers = 1`: adapters in the top layer only, so the embeddings and layer 0
    /// are a frozen prefix read from the store; two SGD steps from the stored prefix end where two
    /// steps through every layer do (≤ 1e-5).
    #[test]
    fn lora_in_the_top_layers_reads_the_prefix_store() {
        let (dir, reference) = tiny();
        let device = Device::flex().autodiff();
        let tokens = token_rows(&dir, &reference, &device);
        let off = TextTrainingConfig {
            lora_layers: Some(1),
            prefix_cache: PrefixCacheMode::Off,
            lora_targets: vec!["query".into(), "value".into(), "intermediate".into()],
            ..no_dropout(Finetune::Lora)
        };
        let on = TextTrainingConfig { prefix_cache: PrefixCacheMode::F32, ..off.clone() };
        let store = tempfile::tempdir().unwrap();
        // one encoder (LoRA's A is drawn at random), with and without the store
        let full = TextEncoder::open(&dir, &off, &device).unwrap();
        let cached = full.clone().with_prefix_cache(Some(store.path()), &on);
        assert_eq!(cached.prefix.as_ref().map(PrefixCache::layers), Some(1), "layer 0 and the embeddings are frozen");
        let w = Tensor::<1>::from_data(TensorData::new(floats(&reference["w"]), [8]), &device).unsqueeze_dim::<2>(0);
        let v = |t: Tensor<2>| t.into_data().try_into_vec::<f32>().unwrap();
        let before = v(full.forward(tokens.clone()));
        // two SGD steps (the first moves B off zero, the second A too) from each one's own gradients
        let step = |e: TextEncoder| {
            let mut optim = burn::optim::SgdConfig::new().init();
            let mut e = e;
            for _ in 0..2 {
                let grads = (e.forward(tokens.clone()) * w.clone()).sum().backward();
                e = optim.step(0.5, e.clone(), GradientsParams::from_grads(grads, &e));
            }
            e
        };
        let (full, cached) = (step(full), step(cached));
        let (want, got) = (v(full.forward(tokens.clone())), v(cached.forward(tokens.clone())));
        assert!(want.iter().zip(&before).any(|(a, b)| (a - b).abs() > 1e-3), "the adapters moved the embeddings");
        assert_close(&got, &want, 1e-5, "LoRA over the stored prefix");
    }

    /// `top` with the prefix store: the stored states plus the top layer give the full forward's
    /// embeddings and top-layer gradients (≤ 1e-5); each distinct text is stored once, and
    /// another encoder on the same folder reads them back instead of computing; f16 rounds, the
    /// states computed on a miss as well as those read back.
    #[test]
    fn the_prefix_cache_equals_the_full_forward() {
        let (dir, reference) = tiny();
        let device = Device::flex().autodiff();
        let rows = token_rows(&dir, &reference, &device);
        let tokens = Tensor::cat(vec![rows.clone(), rows.clone().narrow(0, 0, 1)], 0); // a repeated text
        let n_texts = rows.dims()[0];
        let off =
            TextTrainingConfig { train_layers: 1, prefix_cache: PrefixCacheMode::Off, ..no_dropout(Finetune::Top) };
        let on = TextTrainingConfig { prefix_cache: PrefixCacheMode::F32, ..off.clone() };
        let store = tempfile::tempdir().unwrap();
        let full = TextEncoder::open(&dir, &off, &device).unwrap().with_prefix_cache(Some(store.path()), &off);
        assert!(full.prefix.is_none(), "prefix_cache = off");
        let cached = TextEncoder::open(&dir, &on, &device).unwrap().with_prefix_cache(Some(store.path()), &on);
        let w = Tensor::<1>::from_data(TensorData::new(floats(&reference["w"]), [8]), &device).unsqueeze_dim::<2>(0);
        let run = |e: &TextEncoder| {
            let out = e.forward(tokens.clone());
            let grads = (out.clone() * w.clone()).sum().backward();
            let g = e.bert.layers[1].intermediate.weight.grad(&grads).unwrap();
            (out.into_data().try_into_vec::<f32>().unwrap(), g.into_data().try_into_vec::<f32>().unwrap())
        };
        let (want, want_grad) = run(&full);
        let (got, got_grad) = run(&cached);
        assert_close(&got, &want, 1e-5, "cached embedding");
        assert_close(&got_grad, &want_grad, 1e-5, "cached top-layer gradient");
        let prefix = cached.prefix.as_ref().unwrap();
        assert_eq!((prefix.layers(), prefix.len()), (1, n_texts), "each distinct text stored once");
        let again = TextEncoder::open(&dir, &on, &device).unwrap().with_prefix_cache(Some(store.path()), &on);
        assert_eq!(again.prefix.as_ref().unwrap().len(), n_texts, "a second encoder reads the stored states");
        assert_close(&run(&again).0, &want, 1e-5, "read back");
        let half = TextTrainingConfig { prefix_cache: PrefixCacheMode::F16, ..off.clone() };
        let f16 = TextEncoder::open(&dir, &half, &device).unwrap().with_prefix_cache(Some(store.path()), &half);
        assert_eq!(f16.prefix.as_ref().unwrap().len(), 0, "f16 states live in their own folder");
        let (got16, _) = run(&f16);
        assert_close(&got16, &want, 1e-2, "f16 states");
        assert!(got16.iter().zip(&want).any(|(a, b)| a != b), "f16 rounds");
        let again16 = TextEncoder::open(&dir, &half, &device).unwrap().with_prefix_cache(Some(store.path()), &half);
        assert_eq!(run(&again16).0, got16, "states computed on a miss are used as they are read back: rounded");
    }

    /// LoRA with B = 0 is the pretrained (frozen) model; only the adapters get gradients; after a
    /// training step moves B, the merged model (`materialize`) equals the adapted one.
    #[test]
    fn lora_starts_as_the_frozen_model_and_merges_exactly() {
        let (dir, reference) = tiny();
        let device = Device::flex().autodiff();
        let tokens = token_rows(&dir, &reference, &device);
        let frozen = TextEncoder::open(&dir, &no_dropout(Finetune::Frozen), &device).unwrap();
        let lora_cfg = TextTrainingConfig {
            lora_rank: 2,
            lora_targets: vec!["query".into(), "value".into(), "intermediate".into()],
            ..no_dropout(Finetune::Lora)
        };
        let lora = TextEncoder::open(&dir, &lora_cfg, &device).unwrap();
        let v = |t: Tensor<2>| -> Vec<f32> { t.into_data().try_into_vec::<f32>().unwrap() };
        let base = v(frozen.forward(tokens.clone()));
        assert_close(&v(lora.forward(tokens.clone())), &base, 1e-6, "B = 0 is the frozen model");
        let w = Tensor::<1>::from_data(TensorData::new(floats(&reference["w"]), [8]), &device);
        let grads = (lora.forward(tokens.clone()) * w.unsqueeze_dim::<2>(0)).sum().backward();
        assert!(lora.bert.embeddings.word_embeddings.weight.grad(&grads).is_none(), "the base is frozen");
        assert!(lora.bert.layers[0].attention.key.weight.grad(&grads).is_none(), "no adapter on key");
        let grads = GradientsParams::from_grads(grads, &lora);
        assert!(!grads.is_empty(), "the adapters get gradients");
        let mut optim = AdamConfig::new().init();
        let stepped = optim.step(1e-1, lora, grads);
        let adapted = v(stepped.forward(tokens.clone()));
        assert!(adapted.iter().zip(&base).any(|(a, b)| (a - b).abs() > 1e-4), "the step moved the model");
        let merged = stepped.materialize();
        assert_close(&v(merged.forward(tokens)), &adapted, 1e-5, "merged equals adapted");
    }
}
