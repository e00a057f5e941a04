//! `cargo xtask bench-encoder`: the text encoder's throughput — texts/s and tokens/s encoding the
//! first `--n` texts `"<Title>. <Review Text>"` of the wcr-mtl Parquet file — optionally alternating
//! with the sentence-transformers reference script (`--torch ../shared/reference/st_encode_bench.py`)
//! on the same texts, batch size and threads, and printing the median ratio.

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
