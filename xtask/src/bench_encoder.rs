//! `cargo xtask bench-encoder`: the text encoder's throughput — texts/s and tokens/s encoding the
//! first `--n` texts `"<Title>. <Review Text>"` of the wcr-mtl Parquet file — optionally alternating
//! with the sentence-transformers reference script (`--torch ../shared/reference/st_encode_bench.py`)
//! on the same texts, batch size and threads, and printing the median ratio.
//!
//! `--train full|top|lora` measures fine-tuning instead: training steps (forward, backward, AdamW)
//! of the encoder with a two-output head on batches of `--batch` texts drawn at random from the
//! first `--n`, `--max-len` tokens at most, for `--steps` steps after one warm-up step; with
//! `--torch-train ../shared/reference/torch_finetune_wcr.py` the PyTorch reference runs the same
//! number of steps alternately (`--freeze-layers` for `top`), and the ratio is printed. `top` uses
//! the frozen-prefix store (`--prefix-cache f32|f16`, in memory; `off` runs the frozen layers every
//! step as the reference does): the prefixes of the `--n` texts are computed first and timed
//! apart (once per text, whatever the number of epochs), then the steps run the top layers only.

use std::{path::PathBuf, process::Command, time::Instant};

use anyhow::{Context, bail};
use burn::tensor::Device;
use clap::Args;
use mtrec_data::{CsvOptions, read_column};
use mtrec_text::SentenceEncoder;

/// Arguments of `cargo xtask bench-encoder`.
#[derive(Args, Debug)]
pub struct BenchEncoderArgs {
    /// The sentence-transformers model folder.
    #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
    model: PathBuf,
    /// The wcr-mtl Parquet file (texts `"<Title>. <Review Text>"`, nulls as empty strings).
    #[arg(long, default_value = "data/womens-clothing-reviews/womens_clothing_reviews.parquet")]
    data: PathBuf,
    /// How many texts (the first ones).
    #[arg(long, default_value_t = 2000)]
    n: usize,
    /// Texts a batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Rounds (each: mtrec, then PyTorch when `--torch` is given).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// The sentence-transformers reference script, run with `python3` alternately.
    #[arg(long)]
    torch: Option<PathBuf>,
    /// Threads for PyTorch (default: every core, as the flex backend uses).
    #[arg(long)]
    threads: Option<usize>,
    /// Measure fine-tuning steps in this mode (`full`, `top`, `lora`) instead of encoding.
    #[arg(long)]
    train: Option<String>,
    /// Fine-tuning: training steps measured (after one warm-up step).
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// Fine-tuning: longest token sequence.
    #[arg(long, default_value_t = 128)]
    max_len: usize,
    /// Fine-tuning `top`: the layers that train.
    #[arg(long, default_value_t = 2)]
    train_layers: usize,
    /// Fine-tuning `top`: the frozen-prefix store (`f32`, `f16`, `off`)
    #[arg(long, default_value = "f32")]
    prefix_cache: String,
    /// Fine-tuning: the PyTorch reference script (`torch_finetune_wcr.py`), run with `python3`.
    #[arg(long)]
    torch_train: Option<PathBuf>,
}

/// The fine-tuned encoder with a two-output head, as the reference trains it.
#[derive(burn::module::Module, Debug)]
struct FineTuned {
    encoder: mtrec_text::TextEncoder,
    head: burn::nn::Linear,
}

/// `--train`: fine-tuning throughput (see the module docs).
fn run_train(args: &BenchEncoderArgs, mode: &str, texts: &[String]) -> anyhow::Result<()> {
    use burn::{optim::GradientsParams, tensor::Tensor};
    let finetune: mtrec_text::Finetune = serde_json::from_value(serde_json::Value::String(mode.into()))
        .with_context(|| format!("--train {mode}: expected full, top or lora"))?;
    let training = mtrec_text::TextTrainingConfig {
        finetune,
        train_layers: args.train_layers,
        max_len: args.max_len,
        prefix_cache: serde_json::from_value(serde_json::Value::String(args.prefix_cache.clone()))
            .with_context(|| format!("--prefix-cache {}: expected off, f32 or f16", args.prefix_cache))?,
        ..Default::default()
    };
    let device = Device::flex().autodiff();
    let encoder = mtrec_text::TextEncoder::open(&args.model, &training, &device)?.with_prefix_cache(None, &training);
    let head = burn::nn::LinearConfig::new(encoder.dim(), 2).init(&device);
    let mut model = FineTuned { encoder, head };
    let input = mtrec_text::TokenInput::open(&args.model, Some(args.max_len))?;
    let values = input.values(texts)?;
    let width = input.len();
    if let Some(prefix) = &model.encoder.prefix {
        let start = Instant::now();
        for rows in values.chunks(64 * width) {
            let x = Tensor::<2>::from_data(
                burn::tensor::TensorData::new(rows.to_vec(), [rows.len() / width, width]),
                &device,
            );
            let _ = prefix.states(x);
        }
        let seconds = start.elapsed().as_secs_f64();
        println!(
            "frozen prefix ({} layers) of {} texts, once: {seconds:.2} s, {:.1} texts/s",
            prefix.layers(),
            prefix.len(),
            texts.len() as f64 / seconds
        );
    }
    let mut optim = burn::optim::AdamWConfig::new().with_weight_decay(0.01).init();
    // batches drawn at random (a fixed LCG), as the reference's shuffled epoch
    let mut state = 42u64;
    let mut draw = || {
        (0..args.batch)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 33) as usize % texts.len()
            })
            .collect::<Vec<usize>>()
    };
    let (mut seconds, mut done_texts, mut done_tokens) = (0.0, 0usize, 0usize);
    for step in 0..=args.steps {
        let rows = draw();
        let batch: Vec<f32> = rows.iter().flat_map(|&r| values[r * width..(r + 1) * width].iter().copied()).collect();
        let tokens = batch.iter().filter(|&&v| v > 0.0).count();
        let start = Instant::now();
        let x = Tensor::<2>::from_data(burn::tensor::TensorData::new(batch, [rows.len(), width]), &device);
        let out = model.head.forward(model.encoder.forward(x));
        let grads = GradientsParams::from_grads(out.powi_scalar(2).mean().backward(), &model);
        model = optim.step(2e-5, model, grads);
        let _ = model.head.weight.val().into_data(); // the step is done
        if step > 0 {
            seconds += start.elapsed().as_secs_f64();
            done_texts += rows.len();
            done_tokens += tokens;
        }
    }
    let ours = done_texts as f64 / seconds;
    println!(
        "mtrec-flex fine-tuning ({mode}): {} steps of {} texts in {seconds:.2} s: {ours:.1} texts/s, {:.0} tokens/s",
        args.steps,
        args.batch,
        done_tokens as f64 / seconds
    );
    if let Some(script) = &args.torch_train {
        let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let mut command = Command::new("python3");
        command
            .arg(script)
            .args([args.model.display().to_string(), args.data.display().to_string()])
            .args(["--max-steps", &args.steps.to_string(), "--threads", &threads.to_string()])
            .args(["--max-len", &args.max_len.to_string()]);
        if finetune == mtrec_text::Finetune::Top {
            // the reference freezes the bottom layers (and the embeddings)
            command.args(["--freeze-layers", &6usize.saturating_sub(args.train_layers).to_string()]);
        }
        let output = command.output().with_context(|| format!("running python3 {}", script.display()))?;
        if !output.status.success() {
            bail!("{} failed: {}", script.display(), String::from_utf8_lossy(&output.stderr));
        }
        let line = String::from_utf8_lossy(&output.stdout);
        let json: serde_json::Value = serde_json::from_str(line.lines().last().unwrap_or_default())
            .with_context(|| format!("reading {}'s output: {line}", script.display()))?;
        let theirs = json["train_texts_per_s"].as_f64().context("train_texts_per_s")?;
        println!("pytorch: {}", line.trim());
        println!("mtrec-flex / pytorch = {:.2} (texts/s)", ours / theirs);
    }
    Ok(())
}

pub fn run(args: BenchEncoderArgs) -> anyhow::Result<()> {
    let column = |name: &str| read_column(&args.data, None, &CsvOptions::default(), name);
    let (titles, reviews) = (column("Title")?, column("Review Text")?);
    let texts: Vec<String> = titles
        .into_iter()
        .zip(reviews)
        .take(args.n)
        .map(|(t, r)| format!("{}. {}", t.unwrap_or_default(), r.unwrap_or_default()))
        .collect();
    if let Some(mode) = &args.train {
        return run_train(&args, mode, &texts);
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let encoder = SentenceEncoder::open(&args.model, &Device::flex())?.with_batch(args.batch);
    let tokens: usize = encoder.tokenizer().encode(&refs)?.iter().map(Vec::len).sum();
    encoder.encode(&refs[..args.batch.min(refs.len())], &mut |_, _| {})?; // warm-up
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds.max(1) {
        let start = Instant::now();
        let out = encoder.encode(&refs, &mut |_, _| {})?;
        let s = start.elapsed().as_secs_f64();
        println!(
            "round {round}: mtrec-flex {} texts in {s:.2} s: {:.1} texts/s, {:.0} tokens/s (first values {:?})",
            texts.len(),
            texts.len() as f64 / s,
            tokens as f64 / s,
            &out[..4]
        );
        ours.push(texts.len() as f64 / s);
        if let Some(script) = &args.torch {
            let output = Command::new("python3")
                .arg(script)
                .args(["--model", &args.model.display().to_string(), "--data", &args.data.display().to_string()])
                .args([
                    "--n",
                    &args.n.to_string(),
                    "--threads",
                    &threads.to_string(),
                    "--batch",
                    &args.batch.to_string(),
                ])
                .output()
                .with_context(|| format!("running python3 {}", script.display()))?;
            if !output.status.success() {
                bail!("{} failed: {}", script.display(), String::from_utf8_lossy(&output.stderr));
            }
            let line = String::from_utf8_lossy(&output.stdout);
            let json: serde_json::Value = serde_json::from_str(line.lines().last().unwrap_or_default())
                .with_context(|| format!("reading {}'s output: {line}", script.display()))?;
            let tps = json["texts_per_s"].as_f64().context("texts_per_s")?;
            println!("round {round}: pytorch {line}");
            theirs.push(tps);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let m = median(&mut ours);
    println!(
        "mtrec-flex: median {m:.1} texts/s, {:.0} tokens/s ({tokens} tokens)",
        m * tokens as f64 / texts.len() as f64
    );
    if !theirs.is_empty() {
        let t = median(&mut theirs);
        println!(
            "sentence-transformers ({threads} threads): median {t:.1} texts/s; mtrec-flex / pytorch = {:.2}",
            m / t
        );
    }
    Ok(())
}
