//! `cargo xtask export RUN_DIR [--out FILE] [--data-dir DIR] [--encoder DIR]`: writes a run's
//! selected model (`best_model.bpk`) as safetensors, with the run's config in the file's metadata;
//! with `--encoder`, also the run's fine-tuned text encoder (LoRA merged) as a sentence-transformers
//! folder that a table's `encoder = "…"`, `cargo xtask embed` and Hugging Face tools read.

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::Context;
use clap::Args;
use mtrec_train::{load_run, save_safetensors};

/// Arguments of `cargo xtask export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A run folder written by `train` or `compare`.
    run_dir: PathBuf,
    /// Output file. Default: `RUN_DIR/best_model.safetensors`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Dataset folder (overrides the recorded `data.dir`; the data sizes the embedding tables).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Also write the fine-tuned text encoder as a sentence-transformers folder here (a new or
    /// empty folder; the run must have trained its encoder: `model.text.finetune` not `frozen`).
    #[arg(long)]
    encoder: Option<PathBuf>,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let sets: Vec<String> = args.data_dir.iter().map(|d| crate::data_dir_override(d)).collect();
    let (config, data, model, _) = load_run(&args.run_dir, &sets)?;
    let metadata = BTreeMap::from([
        ("format".to_string(), "mtrec".to_string()),
        ("architecture".to_string(), config.model.architecture.name().to_string()),
        ("tasks".to_string(), data.schema().tasks.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(",")),
        ("config".to_string(), config.to_toml()),
    ]);
    let out = args.out.unwrap_or_else(|| args.run_dir.join("best_model.safetensors"));
    save_safetensors(&model, &metadata, &out)?;
    println!("wrote {} ({} parameters)", out.display(), burn::module::Module::num_params(&model));
    if let Some(folder) = args.encoder {
        let Some(encoder) = model.text_encoder() else {
            anyhow::bail!(
                "--encoder: the run's text encoder did not train (model.text.finetune = {:?}): its embeddings are \
                 the pretrained model's",
                config.model.text.finetune
            );
        };
        if config.model.text.adapters == mtrec_text::Adapters::PerTask {
            anyhow::bail!(
                "--encoder: the run's adapters are per task (model.text.adapters = \"per_task\"): its shared encoder \
                 is the frozen pretrained one, and each task's adapted encoder reads out into that task alone"
            );
        }
        let base = config.data.text_encoder_dir()?.context("--encoder: the run's table has no text column")?;
        encoder.save_pretrained(&base, &folder, &config.model.text)?;
        println!("wrote the fine-tuned encoder to {} (base {})", folder.display(), base.display());
    }
    Ok(())
}
