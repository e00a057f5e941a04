//! `cargo xtask pretrain-text --config FILE --out DIR`: the serial stage of multi-task learning —
//! continue training the config's text encoder on the table's own texts, without labels
//! (unsupervised SimCSE, [`mtrec_text::pretrain_simcse`]), and write it as a sentence-transformers
//! folder that a config's `encoder = "…"` (frozen or fine-tuned downstream), `cargo xtask embed`
//! and Hugging Face tools read.
//!
//! The texts are the distinct texts of the training split's text columns (validation and test
//! texts are never seen), tokenized as the config's `[model.text]` says (`max_len`); the encoder
//! trains as `model.text.finetune` says (`full` when the config's is `frozen`), its frozen prefix
//! stored as training would store it.

use std::{collections::HashSet, path::PathBuf};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mtrec_text::{SimCseConfig, TextEncoder};
use mtrec_train::ExperimentConfig;
use rand::{SeedableRng, seq::SliceRandom};

/// Arguments of `cargo xtask pretrain-text`.
#[derive(Args, Debug)]
pub struct PretrainTextArgs {
    /// Experiment config (TOML) whose table has a text column.
    #[arg(long)]
    config: PathBuf,
    /// Folder to write the pretrained encoder to (new or empty).
    #[arg(long)]
    out: PathBuf,
    /// Dataset folder (overrides `data.dir`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Override any config value, as `train --set` (e.g. `model.text.finetune="top"`).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    sets: Vec<String>,
    /// Passes over the texts.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Texts a batch (each encoded twice).
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Peak learning rate (linear warm-up over the first 10 % of the steps, then linear decay).
    #[arg(long, default_value_t = 3e-5)]
    lr: f64,
    /// Temperature of the cosine similarities.
    #[arg(long, default_value_t = 0.05)]
    temperature: f64,
    /// Train on a random sample of this many distinct texts (seeded by the config's seed).
    #[arg(long)]
    max_texts: Option<usize>,
}

pub fn run(args: PretrainTextArgs) -> anyhow::Result<()> {
    let mut sets = args.sets.clone();
    if let Some(dir) = &args.data_dir {
        sets.push(crate::data_dir_override(dir));
    }
    let mut config = ExperimentConfig::from_file(&args.config, &sets)?;
    if !config.model.text.trains() {
        config.model.text.finetune = mtrec_text::Finetune::Full;
        config = config.with_text_input();
    }
    let text = config.model.text.clone();
    let simcse = SimCseConfig::new()
        .with_epochs(args.epochs)
        .with_batch_size(args.batch_size)
        .with_lr(args.lr)
        .with_temperature(args.temperature)
        .with_weight_decay(text.weight_decay)
        .with_max_grad_norm(text.max_grad_norm)
        .with_seed(config.seed);
    simcse.validate().map_err(|e| anyhow::anyhow!("pretrain-text: {e}"))?;
    let base = config.data.text_encoder_dir()?.context("pretrain-text: the config's table has no text column")?;
    let dataset = config.data.load()?;
    let train = &dataset.train;
    let (fields, width) = (&dataset.schema.text, dataset.schema.widths().text);
    // every token field's rows, each distinct text once, in table order
    let mut seen = HashSet::new();
    let mut texts: Vec<&[f32]> = Vec::new();
    for row in train.text.chunks(width) {
        let mut offset = 0;
        for field in fields {
            let tokens = &row[offset..offset + field.dim];
            offset += field.dim;
            let key: Vec<u32> = tokens.iter().map(|v| v.to_bits()).collect();
            if field.tokens && tokens[0] > 0.0 && seen.insert(key) {
                texts.push(tokens);
            }
        }
    }
    let distinct = texts.len();
    if let Some(max) = args.max_texts.filter(|&m| m < texts.len()) {
        texts.shuffle(&mut rand::rngs::StdRng::seed_from_u64(config.seed));
        texts.truncate(max);
    }
    let len = fields.iter().find(|f| f.tokens).map(|f| f.dim).context("pretrain-text: no text column holds tokens")?;
    let tokens: Vec<f32> = texts.concat();
    println!(
        "pretrain-text: SimCSE on {} of {distinct} distinct training texts ({} tokens at most) of {}, encoder {} \
         (finetune = {:?}), {} epoch(s), batch {}, lr {}, τ {}",
        texts.len(),
        len,
        dataset.name,
        base.display(),
        text.finetune,
        args.epochs,
        args.batch_size,
        args.lr,
        args.temperature
    );
    let device = config.device.open().map_err(|e| anyhow::anyhow!(e))?.autodiff();
    device.seed(config.seed);
    let prefix_root = mtrec_data::default_cache_dir().map(|d| d.join("text-prefix"));
    let encoder = TextEncoder::open(&base, &text, &device)?.with_prefix_cache(prefix_root.as_deref(), &text);
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("SimCSE [{bar:30}] {pos}/{len} steps {per_sec} eta {eta} loss {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let (encoder, report) = mtrec_text::pretrain_simcse(encoder, &tokens, len, &simcse, |step, steps, loss| {
        bar.set_length(steps as u64);
        bar.set_position(step as u64);
        bar.set_message(format!("{loss:.4}"));
    })?;
    bar.finish_and_clear();
    encoder.save_pretrained(&base, &args.out, &text)?;
    let record = serde_json::json!({
        "method": "unsupervised SimCSE (Gao et al. 2021)",
        "config": args.config.display().to_string(),
        "dataset": dataset.name,
        "split": "train",
        "distinct_texts": distinct,
        "simcse": simcse,
        "finetune": text,
        "report": report,
    });
    let path = args.out.join("mtrec_pretrain.json");
    std::fs::write(&path, serde_json::to_string_pretty(&record)?).with_context(|| format!("{}", path.display()))?;
    println!(
        "loss {:.4} (first steps) → {:.4} (last epoch); {} steps, {:.1} texts/s, {:.0}s",
        report.first_loss,
        report.epoch_loss.last().copied().unwrap_or(f64::NAN),
        report.steps,
        report.texts_per_sec,
        report.seconds
    );
    println!(
        "wrote {} — point a text column's encoder at it: encoder = \"{}\"",
        args.out.display(),
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use burn::tensor::Device;
    use mtrec_text::SentenceEncoder;

    use super::*;

    /// The small table's titles, encoded by the tiny BERT (frozen in the config: pretrained fully),
    /// through `pretrain-text`: the folder encodes differently from the base, records what it did,
    /// and a second run into it is refused.
    #[test]
    fn pretraining_writes_an_encoder_folder_a_config_can_use() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let data = root.join("crates/mtrec-data/tests/fixtures/table-small");
        let tiny = root.join("crates/mtrec-text/tests/fixtures/tiny-bert/model");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        let text = format!(
            "{}\n[[data.columns]]\nname = \"title\"\nkind = \"text\"\nencoder = {:?}\n",
            include_str!("../../crates/mtrec-train/tests/fixtures/table_small.toml"),
            tiny.display().to_string()
        );
        std::fs::write(&config, text).unwrap();
        let out = dir.path().join("pretrained");
        let args = |out: &Path| PretrainTextArgs {
            config: config.clone(),
            out: out.to_path_buf(),
            data_dir: Some(data.clone()),
            sets: vec![],
            epochs: 2,
            batch_size: 2,
            lr: 1e-3,
            temperature: 0.05,
            max_texts: None,
        };
        run(args(&out)).unwrap();
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("mtrec_pretrain.json")).unwrap()).unwrap();
        assert_eq!(record["finetune"]["finetune"], "full");
        assert_eq!(record["split"], "train");
        let texts = record["report"]["texts"].as_u64().unwrap();
        assert!(texts >= 4 && texts == record["distinct_texts"].as_u64().unwrap(), "{record}");
        // two epochs of batches of 2; a last batch of 1 is skipped
        assert_eq!(record["report"]["steps"].as_u64().unwrap(), 2 * (texts / 2), "{record}");
        let sentences = ["soft and warm", "the dress runs small"];
        let encode =
            |dir: &Path| SentenceEncoder::open(dir, &Device::flex()).unwrap().encode(&sentences, &mut |_, _| {});
        let (base, trained) = (encode(&tiny).unwrap(), encode(&out).unwrap());
        assert!(base.iter().zip(&trained).any(|(a, b)| (a - b).abs() > 1e-4), "the encoder moved");
        let err = run(args(&out)).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
    }
}
