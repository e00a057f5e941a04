//! A sentence-transformers model folder as a [`SentenceEncoder`]: `config.json` (the BERT shapes),
//! `model.safetensors` (the weights), `tokenizer.json`, `sentence_bert_config.json`
//! (`max_seq_length`), `modules.json` and the pooling module's `config.json`.
//!
//! Encoding sorts the texts by token count, runs batches of similar lengths (each padded to its own
//! longest text: padding is wasted work in the encoder, the costly part), and restores the input
//! order.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use burn::{
    module::Module,
    store::{KeyRemapper, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore},
    tensor::{Bool, Device, Int, Tensor, TensorData},
};
use rayon::prelude::*;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::{
    BertConfig, BertModel, SentencePooling, SentenceTokenizer, TextError, bert::hf_key_remapping, pooling::read_json,
};

/// Texts a batch holds at most.
pub const DEFAULT_BATCH: usize = 64;

#[derive(Deserialize)]
pub(crate) struct SentenceBertConfig {
    pub(crate) max_seq_length: usize,
}

/// A frozen pretrained sentence encoder.
pub struct SentenceEncoder {
    model: BertModel,
    tokenizer: SentenceTokenizer,
    pooling: SentencePooling,
    dim: usize,
    model_id: String,
    device: Device,
    batch: usize,
    dir: PathBuf,
}

/// sha256 (hex) of a file.
pub fn sha256_file(path: &Path) -> Result<String, TextError> {
    let mut file = std::fs::File::open(path).map_err(|_| TextError::Missing { path: path.to_path_buf() })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n =
            file.read(&mut buf).map_err(|e| TextError::Corrupt { path: path.to_path_buf(), reason: e.to_string() })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

impl SentenceEncoder {
    /// Loads the model folder `dir` onto `device` (without autodiff: the encoder is frozen).
    pub fn open(dir: &Path, device: &Device) -> Result<Self, TextError> {
        let device = device.clone().without_autodiff();
        let pretrained = Pretrained::load(dir, &device)?;
        // the identity covers everything that changes an embedding: weights, the architecture's
        // config (layer norm epsilon, activations…), tokenizer, length, pooling
        let mut id = pretrained.files_identity(dir)?;
        let Pretrained { config, model, tokenizer, pooling, max_len, .. } = pretrained;
        id.update(format!("{max_len}/{:?}", pooling).as_bytes());
        let model_id = id.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            model: model.no_grad(),
            tokenizer,
            pooling,
            dim: config.hidden_size,
            model_id,
            device,
            batch: DEFAULT_BATCH,
            dir: dir.to_path_buf(),
        })
    }

    /// Texts per batch (default [`DEFAULT_BATCH`]).
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Width of an embedding.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The model folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The model's identity: sha256 over the sha256 of the weights, of `config.json` and of the
    /// tokenizer, the maximum length and the pooling.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &SentenceTokenizer {
        &self.tokenizer
    }

    /// The embeddings of `texts`, row-major `[texts, dim]`. `on_batch(texts done, tokens done)` is
    /// called after every batch (progress).
    pub fn encode(&self, texts: &[&str], on_batch: &mut dyn FnMut(usize, usize)) -> Result<Vec<f32>, TextError> {
        let ids = self.tokenizer.encode(texts)?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![0.0f32; texts.len() * self.dim];
        let (mut done, mut tokens) = (0, 0);
        let chunks: Vec<&[usize]> = order.chunks(self.batch).collect();
        // one batch a core at a time: flex runs most element-wise work of a layer (softmax inside
        // attention, LayerNorm, the residual adds) on one core per op, so batches side by side use
        // them all
        let cores = rayon::current_num_threads().max(1);
        for group in chunks.chunks(cores) {
            let vectors: Vec<Vec<f32>> = group
                .par_iter()
                .map(|chunk| self.encode_ids(chunk.iter().map(|&i| ids[i].as_slice()).collect()))
                .collect();
            for (chunk, vectors) in group.iter().zip(vectors) {
                for (k, &i) in chunk.iter().enumerate() {
                    out[i * self.dim..(i + 1) * self.dim].copy_from_slice(&vectors[k * self.dim..(k + 1) * self.dim]);
                }
                done += chunk.len();
                tokens += chunk.iter().map(|&i| ids[i].len()).sum::<usize>();
            }
            on_batch(done, tokens);
        }
        Ok(out)
    }

    /// One padded batch of token ids → pooled embeddings, row-major.
    fn encode_ids(&self, batch: Vec<&[u32]>) -> Vec<f32> {
        let b = batch.len();
        let len = batch.iter().map(|ids| ids.len()).max().unwrap_or(1).max(1);
        let mut ids = vec![0i32; b * len];
        let mut padding = vec![true; b * len];
        for (r, row) in batch.iter().enumerate() {
            for (c, &id) in row.iter().enumerate() {
                ids[r * len + c] = id as i32;
                padding[r * len + c] = false;
            }
        }
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, len]), &self.device);
        let padding = Tensor::<2, Bool>::from_data(TensorData::new(padding, [b, len]), &self.device);
        let hidden = self.model.forward(ids, padding.clone());
        self.pooling.forward(hidden, padding).into_data().try_into_vec::<f32>().expect("f32 embeddings")
    }
}

/// A sentence-transformers folder's parts, loaded: the BERT with its pretrained weights on a
/// device, its config, tokenizer, pooling and longest sequence.
pub(crate) struct Pretrained {
    pub(crate) config: BertConfig,
    pub(crate) model: BertModel,
    pub(crate) tokenizer: SentenceTokenizer,
    pub(crate) pooling: SentencePooling,
    pub(crate) max_len: usize,
    pub(crate) weights_sha: String,
}

impl Pretrained {
    /// Reads the folder `dir`; the model's parameters live on `device`.
    pub(crate) fn load(dir: &Path, device: &Device) -> Result<Self, TextError> {
        if !dir.is_dir() {
            return Err(TextError::Missing { path: dir.to_path_buf() });
        }
        let config: BertConfig = read_json(&dir.join("config.json"))?;
        if config.hidden_act != "gelu" {
            return Err(TextError::Corrupt {
                path: dir.join("config.json"),
                reason: format!("hidden_act {:?}: only BERT's erf GELU (\"gelu\") is supported", config.hidden_act),
            });
        }
        let sbert: SentenceBertConfig = read_json(&dir.join("sentence_bert_config.json"))?;
        let max_len = sbert.max_seq_length.min(config.max_position_embeddings);
        let tokenizer = SentenceTokenizer::from_file(&dir.join("tokenizer.json"), max_len)?;
        let pooling = SentencePooling::from_dir(dir)?;
        let weights = dir.join("model.safetensors");
        let weights_sha = sha256_file(&weights)?;
        let mut model = config.init(device);
        let remapper = KeyRemapper::from_patterns(hf_key_remapping()).expect("the remapping patterns are valid");
        let mut store = SafetensorsStore::from_file(&weights)
            .with_from_adapter(PyTorchToBurnAdapter)
            .remap(remapper)
            .allow_partial(true);
        let corrupt = |reason: String| TextError::Corrupt { path: weights.clone(), reason };
        let result = model.load_from(&mut store).map_err(|e| corrupt(e.to_string()))?;
        if !result.missing.is_empty() || !result.errors.is_empty() {
            let missing: Vec<&str> = result.missing.iter().map(|(p, _)| p.as_str()).take(5).collect();
            return Err(corrupt(format!(
                "not a BERT of config.json's shapes: {} tensors missing (e.g. {missing:?}), {} errors ({:?})",
                result.missing.len(),
                result.errors.len(),
                result.errors.iter().take(2).map(|e| e.to_string()).collect::<Vec<_>>()
            )));
        }
        Ok(Self { config, model, tokenizer, pooling, max_len, weights_sha })
    }

    /// A sha256 fed with the sha256 of the weights, of `config.json` and of the tokenizer of the
    /// folder `dir` this was loaded from: the model's identity, to which users add what else
    /// changes their output.
    pub(crate) fn files_identity(&self, dir: &Path) -> Result<Sha256, TextError> {
        let mut id = Sha256::new();
        id.update(self.weights_sha.as_bytes());
        id.update(sha256_file(&dir.join("config.json"))?.as_bytes());
        id.update(sha256_file(&dir.join("tokenizer.json"))?.as_bytes());
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model folder, from `MTREC_MINILM_DIR` (set by `.ci/run`).
    fn model_dir(test: &str) -> Option<PathBuf> {
        let dir = std::env::var_os("MTREC_MINILM_DIR").map(PathBuf::from);
        if dir.is_none() {
            eprintln!("SKIP {test}: set MTREC_MINILM_DIR to the all-MiniLM-L6-v2 folder");
        }
        dir
    }

    /// One line of the reference: text, token ids, embedding.
    type Reference = (String, Vec<u32>, Vec<f32>);

    /// `minilm_reference.jsonl` from `MTREC_REFERENCE_DIR`.
    fn reference(test: &str) -> Option<Vec<Reference>> {
        let Some(dir) = std::env::var_os("MTREC_REFERENCE_DIR") else {
            eprintln!("SKIP {test}: set MTREC_REFERENCE_DIR to the folder of minilm_reference.jsonl");
            return None;
        };
        let text = std::fs::read_to_string(Path::new(&dir).join("minilm_reference.jsonl")).unwrap();
        Some(
            text.lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    let ids = v["token_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
                    let e = v["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
                    (v["text"].as_str().unwrap().to_string(), ids, e)
                })
                .collect(),
        )
    }

    /// The backends to compare: flex always; ndarray in a build with the `ndarray` feature; wgpu
    /// where `MTREC_TEST_WGPU` is set (a build with the `wgpu` feature and a Vulkan driver; then on a
    /// few texts, software Vulkan is slow).
    fn backends() -> Vec<(&'static str, Device, usize)> {
        #[allow(unused_mut)]
        let mut out = vec![("flex", Device::flex(), usize::MAX)];
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        out.push(("ndarray", Device::ndarray(), usize::MAX));
        #[cfg(not(feature = "ndarray"))]
        eprintln!("SKIP the encoder on ndarray: build with --features ndarray");
        match std::env::var_os("MTREC_TEST_WGPU") {
            #[cfg(feature = "wgpu")]
            Some(_) => out.push(("wgpu", Device::wgpu(burn::tensor::DeviceKind::DefaultDevice), 4)),
            #[cfg(not(feature = "wgpu"))]
            Some(_) => panic!("MTREC_TEST_WGPU is set but mtrec-text was built without the `wgpu` feature"),
            None => eprintln!("SKIP the encoder on wgpu: build with --features wgpu and set MTREC_TEST_WGPU=1"),
        }
        out
    }

    /// Token ids identical to the reference tokenizer's for all 24 texts (reviews, empty,
    /// whitespace, accents, Chinese, emoji, a ligature, two over 256 tokens); embeddings of the full
    /// sentence-transformers pipeline within cosine ≥ 0.99999 and max |Δ| ≤ 1e-4 on every backend.
    #[test]
    fn tokens_and_embeddings_match_the_reference_on_every_backend() {
        let (Some(dir), Some(reference)) = (model_dir("reference parity"), reference("reference parity")) else {
            return;
        };
        assert_eq!(reference.len(), 24);
        for (name, device, limit) in backends() {
            let encoder = SentenceEncoder::open(&dir, &device).unwrap();
            let all: Vec<&str> = reference.iter().map(|(t, _, _)| t.as_str()).collect();
            let ids = encoder.tokenizer().encode(&all).unwrap();
            for ((text, expected, _), got) in reference.iter().zip(&ids) {
                assert_eq!(got, expected, "token ids of {text:?}");
            }
            let long = ids.iter().position(|i| i.len() == 256).expect("a long text is cut at max_seq_length");
            // A slow backend encodes the first few texts and one cut at max_seq_length.
            let picked: Vec<usize> = if limit >= all.len() {
                (0..all.len()).collect()
            } else {
                (0..limit.saturating_sub(1)).filter(|&k| k != long).chain([long]).collect()
            };
            let texts: Vec<&str> = picked.iter().map(|&k| all[k]).collect();
            let out = encoder.encode(&texts, &mut |_, _| {}).unwrap();
            let mut worst = (1.0f64, 0.0f32);
            for (j, &k) in picked.iter().enumerate() {
                let (text, _, expected) = &reference[k];
                let got = &out[j * 384..(j + 1) * 384];
                let dot: f64 = got.iter().zip(expected).map(|(a, b)| *a as f64 * *b as f64).sum();
                let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                let cos = dot / (norm(got) * norm(expected));
                let diff = got.iter().zip(expected).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                worst = (worst.0.min(cos), worst.1.max(diff));
                assert!(cos >= 0.99999 && diff <= 1e-4, "{name}: {text:?}: cosine {cos}, max |Δ| {diff}");
            }
            eprintln!("{name}: {} texts, worst cosine {:.8}, worst max |Δ| {:.2e}", texts.len(), worst.0, worst.1);
        }
    }

    /// Batching with padding changes nothing: a batch of texts of different lengths gives each
    /// text's embedding alone (the padding mask and masked pooling at work).
    #[test]
    fn a_padded_batch_equals_each_text_alone() {
        let Some(dir) = model_dir("padded batch") else { return };
        let encoder = SentenceEncoder::open(&dir, &Device::flex()).unwrap().with_batch(8);
        let texts =
            ["short", "a somewhat longer review of a dress that fits well and looks lovely", "", "mid length text"];
        let together = encoder.encode(&texts, &mut |_, _| {}).unwrap();
        for (k, t) in texts.iter().enumerate() {
            let alone = encoder.encode(&[t], &mut |_, _| {}).unwrap();
            let diff =
                alone.iter().zip(&together[k * 384..(k + 1) * 384]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(diff < 1e-5, "{t:?}: {diff}");
        }
    }

    /// Missing or corrupt model files give errors naming the file and how to get the encoder.
    #[test]
    fn missing_or_corrupt_files_are_named() {
        let Some(dir) = model_dir("missing files") else { return };
        let copy = tempfile::tempdir().unwrap();
        for f in ["config.json", "modules.json", "sentence_bert_config.json", "tokenizer.json"] {
            std::fs::copy(dir.join(f), copy.path().join(f)).unwrap();
        }
        std::fs::create_dir(copy.path().join("1_Pooling")).unwrap();
        std::fs::copy(dir.join("1_Pooling/config.json"), copy.path().join("1_Pooling/config.json")).unwrap();
        let err = SentenceEncoder::open(copy.path(), &Device::flex()).err().unwrap().to_string();
        assert!(err.contains("model.safetensors") && err.contains("cargo xtask data minilm"), "{err}");
        // a truncated weights file
        let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
        std::fs::write(copy.path().join("model.safetensors"), &weights[..weights.len() / 2]).unwrap();
        let err = SentenceEncoder::open(copy.path(), &Device::flex()).err().unwrap().to_string();
        assert!(err.contains("model.safetensors") && err.contains("Re-fetch"), "{err}");
        // a broken tokenizer
        std::fs::write(copy.path().join("model.safetensors"), &weights).unwrap();
        std::fs::write(copy.path().join("tokenizer.json"), b"{ not json").unwrap();
        let err = SentenceEncoder::open(copy.path(), &Device::flex()).err().unwrap().to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
        let err = SentenceEncoder::open(&copy.path().join("nothing"), &Device::flex()).err().unwrap().to_string();
        assert!(err.contains("nothing") && err.contains("cargo xtask data minilm"), "{err}");
    }

    /// The embedding cache is hit on a second run (nothing re-encoded, same vectors) and missed when
    /// the model file changes (another identity).
    #[test]
    fn the_cache_is_hit_and_missed_when_the_model_changes() {
        let Some(dir) = model_dir("embedding cache") else { return };
        let cache = tempfile::tempdir().unwrap();
        let texts: Vec<String> =
            ["soft and warm", "runs small", "soft and warm"].iter().map(|s| s.to_string()).collect();
        let mut first = crate::CachedEncoder::open(&dir, &Device::flex(), Some(cache.path())).unwrap();
        let a = first.embed_texts(&texts).unwrap();
        assert_eq!((first.encoded, first.hits), (2, 1), "distinct texts are encoded once");
        let mut second = crate::CachedEncoder::open(&dir, &Device::flex(), Some(cache.path())).unwrap();
        let b = second.embed_texts(&texts).unwrap();
        assert_eq!((second.encoded, second.hits), (0, 3));
        assert_eq!(a, b);
        // the same files with one weight changed: a new identity, a miss
        let changed = tempfile::tempdir().unwrap();
        for entry in ["config.json", "modules.json", "sentence_bert_config.json", "tokenizer.json", "model.safetensors"]
        {
            std::fs::copy(dir.join(entry), changed.path().join(entry)).unwrap();
        }
        std::fs::create_dir(changed.path().join("1_Pooling")).unwrap();
        std::fs::copy(dir.join("1_Pooling/config.json"), changed.path().join("1_Pooling/config.json")).unwrap();
        let mut weights = std::fs::read(changed.path().join("model.safetensors")).unwrap();
        let n = weights.len();
        weights[n - 3] ^= 0x01; // a low mantissa bit of the last weight
        std::fs::write(changed.path().join("model.safetensors"), weights).unwrap();
        let mut third = crate::CachedEncoder::open(changed.path(), &Device::flex(), Some(cache.path())).unwrap();
        assert_ne!(third.encoder().model_id(), first.encoder().model_id());
        third.embed_texts(&texts).unwrap();
        assert_eq!(third.encoded, 2, "a changed model misses the cache");
        // the same weights with another config.json (layer norm epsilon): another identity too
        std::fs::copy(dir.join("model.safetensors"), changed.path().join("model.safetensors")).unwrap();
        let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let mut json: serde_json::Value = serde_json::from_str(&config).unwrap();
        json["layer_norm_eps"] = serde_json::json!(1e-5);
        std::fs::write(changed.path().join("config.json"), json.to_string()).unwrap();
        let fourth = crate::CachedEncoder::open(changed.path(), &Device::flex(), Some(cache.path())).unwrap();
        assert_ne!(fourth.encoder().model_id(), first.encoder().model_id(), "config.json is part of the key");
    }
}

#[cfg(test)]
mod profile {
    use burn::{
        nn::LayerNormConfig,
        tensor::{Device, Distribution, Tensor, activation, module, ops::AttentionModuleOptions},
    };
    use std::time::Instant;

    fn time<const D: usize>(name: &str, reps: usize, f: impl Fn() -> Tensor<D>) {
        let _ = f().into_data();
        let start = Instant::now();
        for _ in 0..reps {
            let _ = f().into_data();
        }
        eprintln!("{name}: {:.2} ms", start.elapsed().as_secs_f64() * 1e3 / reps as f64);
    }

    /// Per-op times of one encoder layer's work at batch 64 × 80 tokens (run by hand:
    /// `cargo test -p mtrec-text op_times -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn op_times() {
        let d = Device::flex();
        let (b, l, h, heads, ff) = (64, 80, 384, 12, 1536);
        let x = Tensor::<2>::random([b * l, h], Distribution::Default, &d);
        let w = Tensor::<2>::random([h, h], Distribution::Default, &d);
        let w1 = Tensor::<2>::random([h, ff], Distribution::Default, &d);
        let y = Tensor::<2>::random([b * l, ff], Distribution::Default, &d);
        let q = Tensor::<4>::random([b, heads, l, h / heads], Distribution::Default, &d);
        let s = Tensor::<4>::random([b, heads, l, l], Distribution::Default, &d);
        let x3 = Tensor::<3>::random([b, l, h], Distribution::Default, &d);
        time("qkv/out matmul [5120,384]x[384,384]", 5, || x.clone().matmul(w.clone()));
        time("ffn in matmul [5120,384]x[384,1536]", 5, || x.clone().matmul(w1.clone()));
        time("ffn in matmul, 1 value read back", 5, || x.clone().matmul(w1.clone()).slice([0..1, 0..1]));
        time("read back [5120,1536]", 5, || y.clone());
        time("ffn out matmul [5120,1536]x[1536,384]", 5, || y.clone().matmul(w1.clone().transpose()));
        time("3-d linear [64,80,384]x[384,384]", 5, || x3.clone().matmul(w.clone().unsqueeze_dim::<3>(0)));
        time("scores [64,12,80,32]x[..,32,80]", 5, || q.clone().matmul(q.clone().swap_dims(2, 3)));
        time("context [64,12,80,80]x[..,80,32]", 5, || s.clone().matmul(q.clone()));
        time("softmax [64,12,80,80]", 5, || activation::softmax(s.clone(), 3));
        time("gelu, burn's [5120,1536]", 5, || activation::gelu(y.clone()));
        time("gelu, mtrec's on a shared tensor (copies its data)", 5, || mtrec_kernels::gelu(y.clone()));
        time("y * 1 [5120,1536]", 5, || y.clone() * 1.0);
        time("y * 1, then burn's gelu", 5, || activation::gelu(y.clone() * 1.0));
        time("y * 1, then mtrec's gelu", 5, || mtrec_kernels::gelu(y.clone() * 1.0));
        time("attention [64,12,80,32]", 5, || {
            module::attention(q.clone(), q.clone(), q.clone(), None, None, AttentionModuleOptions::default())
        });
        let norm = LayerNormConfig::new(h).with_epsilon(1e-12).init(&d);
        time("layer norm [5120,384]", 5, || norm.forward(x.clone()));
        time("swap_dims+reshape [64,80,12,32]", 5, || q.clone().swap_dims(1, 2).reshape([b, l, h]));
        time("add [5120,384]", 5, || x.clone() + x.clone());
    }
}
