//! A fine-tuned encoder written back as a sentence-transformers folder, so that what the tasks
//! taught the language model can be used as a frozen encoder (`encoder = "…"` in a table config,
//! `cargo xtask embed`) or by Hugging Face tools.
//!
//! The folder is the base model's folder with new weights: its config, tokenizer and module files
//! (`modules.json`, `1_Pooling/`, …) are copied, `model.safetensors` is written with Hugging Face's
//! tensor names (the inverse of [`crate::hf_key_remapping`]) in PyTorch's layout (Linear weights
//! `[out, in]`, LayerNorm `weight`/`bias`), LoRA adapters merged into their projections, and
//! `mtrec_finetune.json` records the base model's identity and how the encoder was trained.

use std::path::Path;

use burn::{
    module::Module,
    store::{BurnToPyTorchAdapter, KeyRemapper, ModuleSnapshot, SafetensorsStore},
};

use crate::{TextEncoder, TextError, TextTrainingConfig};

/// This module's paths → Hugging Face BERT tensor names (regex, replacement), for burn-store's key
/// remapping when writing.
pub fn hf_export_remapping() -> Vec<(&'static str, &'static str)> {
    vec![
        (r"^embeddings\.layer_norm\.", "embeddings.LayerNorm."),
        (r"^layers\.(\d+)\.attention\.(query|key|value)\.", "encoder.layer.$1.attention.self.$2."),
        (r"^layers\.(\d+)\.attention\.output\.", "encoder.layer.$1.attention.output.dense."),
        (r"^layers\.(\d+)\.attention\.layer_norm\.", "encoder.layer.$1.attention.output.LayerNorm."),
        (r"^layers\.(\d+)\.intermediate\.", "encoder.layer.$1.intermediate.dense."),
        (r"^layers\.(\d+)\.output\.", "encoder.layer.$1.output.dense."),
        (r"^layers\.(\d+)\.layer_norm\.", "encoder.layer.$1.output.LayerNorm."),
    ]
}

/// Files of a model folder that are weights (replaced) or notes about the base model (not copied).
fn replaced(name: &str) -> bool {
    matches!(name, "model.safetensors" | "pytorch_model.bin" | "tf_model.h5" | "rust_model.ot" | "flax_model.msgpack")
        || name.ends_with(".md")
}

/// Copies the files of `from` into `to`, and the sentence-transformers module folders (`1_Pooling`,
/// `2_Normalize`, …) with their contents.
fn copy_folder(from: &Path, to: &Path, top: bool) -> Result<(), TextError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| TextError::Corrupt { path: path.clone(), reason: format!("copying: {e}") }
    };
    std::fs::create_dir_all(to).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if path.is_dir() {
            let module_folder = name.split_once('_').is_some_and(|(n, _)| n.parse::<u32>().is_ok());
            if !top || module_folder {
                copy_folder(&path, &to.join(&name), false)?;
            }
        } else if !(top && replaced(&name)) {
            std::fs::copy(&path, to.join(&name)).map_err(io(&path))?;
        }
    }
    Ok(())
}

impl TextEncoder {
    /// Writes this encoder (LoRA merged) as a sentence-transformers folder `out`, with the
    /// tokenizer, config and modules of `base`, the folder it was opened from (see the
    /// module docs of `pretrained_export.rs`).
    pub fn save_pretrained(&self, base: &Path, out: &Path, training: &TextTrainingConfig) -> Result<(), TextError> {
        if out.exists() && std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(true) {
            return Err(TextError::Corrupt {
                path: out.to_path_buf(),
                reason: "the export folder exists and is not empty; name a new one".into(),
            });
        }
        copy_folder(base, out, true)?;
        let weights = out.join("model.safetensors");
        let merged = self.bert.clone().materialize();
        let remapper = KeyRemapper::from_patterns(hf_export_remapping()).expect("the remapping patterns are valid");
        let mut store = SafetensorsStore::from_file(&weights)
            .with_to_adapter(BurnToPyTorchAdapter)
            .remap(remapper)
            .metadata("format", "pt");
        merged
            .save_into(&mut store)
            .map_err(|e| TextError::Corrupt { path: weights.clone(), reason: format!("writing: {e}") })?;
        let record = serde_json::json!({
            "base_model": base.display().to_string(),
            "base_model_id": self.model_id,
            "finetune": training,
            "written_by": concat!("mtrec-text ", env!("CARGO_PKG_VERSION")),
        });
        let path = out.join("mtrec_finetune.json");
        std::fs::write(&path, serde_json::to_string_pretty(&record).expect("json"))
            .map_err(|e| TextError::Corrupt { path, reason: format!("writing: {e}") })
    }
}

#[cfg(test)]
mod tests {
    use burn::{
        optim::{AdamConfig, GradientsParams},
        tensor::{Device, Tensor, TensorData},
    };

    use super::*;
    use crate::{Finetune, SentenceEncoder, TokenInput};

    /// A LoRA-fine-tuned tiny BERT, written and opened again as a frozen sentence encoder, encodes
    /// texts as the adapted model does (≤ 1e-5), and unlike the base model; the folder holds the
    /// base's tokenizer and pooling; a non-empty folder is refused.
    #[test]
    fn an_exported_encoder_encodes_as_the_fine_tuned_one() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert/model");
        let device = Device::flex().autodiff();
        let training = TextTrainingConfig {
            finetune: Finetune::Lora,
            dropout: Some(0.0),
            lora_rank: 2,
            lora_targets: vec!["query".into(), "value".into(), "intermediate".into()],
            ..Default::default()
        };
        let encoder = TextEncoder::open(&base, &training, &device).unwrap();
        let texts = ["a soft dress, runs small", "Love it!", "not for me"];
        let input = TokenInput::open(&base, None).unwrap();
        let owned: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
        let tokens =
            Tensor::<2>::from_data(TensorData::new(input.values(&owned).unwrap(), [texts.len(), input.len()]), &device);
        // embeddings are L2-normalised: move them towards the first axis
        let grads = encoder.forward(tokens.clone()).slice([0..texts.len(), 0..1]).sum().backward();
        let grads = GradientsParams::from_grads(grads, &encoder);
        let tuned = AdamConfig::new().init().step(5e-2, encoder, grads);
        let want: Vec<f32> = tuned.forward(tokens).into_data().try_into_vec::<f32>().unwrap();

        let out = tempfile::tempdir().unwrap();
        let folder = out.path().join("tuned");
        tuned.save_pretrained(&base, &folder, &training).unwrap();
        for file in ["tokenizer.json", "config.json", "modules.json", "1_Pooling/config.json", "mtrec_finetune.json"] {
            assert!(folder.join(file).is_file(), "{file}");
        }
        let encode =
            |dir: &Path| SentenceEncoder::open(dir, &Device::flex()).unwrap().encode(&texts, &mut |_, _| {}).unwrap();
        let got = encode(&folder);
        assert_eq!(got.len(), want.len());
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 1e-5, "[{i}]: exported {a} vs fine-tuned {b}");
        }
        let before = encode(&base);
        assert!(before.iter().zip(&want).any(|(a, b)| (a - b).abs() > 1e-3), "the step changed the encoder");
        let again = tuned.save_pretrained(&base, &folder, &training).unwrap_err().to_string();
        assert!(again.contains("not empty"), "{again}");
    }
}
