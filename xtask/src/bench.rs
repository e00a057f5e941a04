//! `cargo xtask bench`: training and inference speed per backend and batch size, optionally against
//! the PyTorch reference script, alternating the two so both see the same machine state.
//!
//! Each (device, batch size) runs in its own child process (`cargo xtask bench-one …`), so its
//! peak memory and warm-up are its own.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};
use clap::Args;
use mtrec_lab::{BenchOptions, BenchResult};
use mtrec_train::{DeviceChoice, ExperimentConfig};
use serde::Serialize;

const RESULT_PREFIX: &str = "MTREC_BENCH_RESULT ";

/// Arguments shared by `bench` and its child `bench-one`.
#[derive(Args, Debug, Clone)]
pub struct BenchSetup {
    /// Experiment config whose model and data are measured.
    #[arg(long, default_value = "configs/census_mmoe.toml")]
    config: PathBuf,
    /// Dataset folder (overrides `data.dir`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Warm-up steps before measuring.
    #[arg(long, default_value_t = 20)]
    warmup_steps: usize,
    /// Steps measured (for throughput, then again for latency).
    #[arg(long, default_value_t = 100)]
    steps: usize,
    /// Override any config value, as in `train`.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    sets: Vec<String>,
}

impl BenchSetup {
    fn load_config(&self) -> anyhow::Result<ExperimentConfig> {
        self.load_config_with(&self.sets)
    }

    /// The config with `sets` as its overrides (and `--data-dir`).
    fn load_config_with(&self, sets: &[String]) -> anyhow::Result<ExperimentConfig> {
        let mut sets = sets.to_vec();
        if let Some(dir) = &self.data_dir {
            sets.push(crate::data_dir_override(dir));
        }
        Ok(ExperimentConfig::from_file(&self.config, &sets)?)
    }

    fn child_args(&self) -> Vec<String> {
        let mut args = vec![
            "--config".into(),
            self.config.display().to_string(),
            "--warmup-steps".into(),
            self.warmup_steps.to_string(),
            "--steps".into(),
            self.steps.to_string(),
        ];
        if let Some(d) = &self.data_dir {
            args.extend(["--data-dir".into(), d.display().to_string()]);
        }
        for s in &self.sets {
            args.extend(["--set".into(), s.clone()]);
        }
        args
    }
}

/// Arguments of `cargo xtask bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    setup: BenchSetup,
    /// Backends, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "flex")]
    devices: Vec<DeviceChoice>,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "256,1024,4096")]
    batch_sizes: Vec<usize>,
    /// Balancing methods to compare (`fixed,gradnorm,…`), alternated over `--rounds` rounds; the
    /// step time of each is reported relative to the first. Default: the config's method.
    #[arg(long, value_delimiter = ',')]
    methods: Vec<String>,
    /// Config variants to compare in one process, each a `;`-separated list of `--set` overrides
    /// (e.g. `--variants 'model.fused_kernels=true' --variants 'model.fused_kernels=false'`),
    /// taking turns as `--interleave` does; step times relative to the first.
    #[arg(long)]
    variants: Vec<String>,
    /// With `--methods`: run the methods in one process, taking turns every `--steps` steps over
    /// `--rounds` rounds on the first device and batch size, and print each round's step-time ratio
    /// to the first method (robust to the machine's speed drifting between processes).
    #[arg(long, requires = "methods")]
    interleave: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also run this PyTorch reference script (e.g. ../shared/reference/torch_mmoe_census.py),
    /// alternating with mtrec, and report the throughput ratios.
    #[arg(long)]
    torch: Option<PathBuf>,
    /// Architecture argument for a PyTorch script that has several (`--arch`, as
    /// xtask/reference/torch_census.py: mmoe, shared_bottom, ple).
    #[arg(long, requires = "torch")]
    torch_arch: Option<String>,
    /// Rounds of the mtrec / PyTorch alternation.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Batch size of the PyTorch comparison.
    #[arg(long, default_value_t = 1024)]
    torch_batch_size: usize,
    /// Threads PyTorch may use (match the CPU backends' thread pool: all cores by default).
    #[arg(long)]
    torch_threads: Option<usize>,
    /// Python interpreter for the PyTorch script.
    #[arg(long, default_value = "python3")]
    python: String,
}

/// Arguments of the hidden child command.
#[derive(Args, Debug)]
pub struct BenchOneArgs {
    #[command(flatten)]
    setup: BenchSetup,
    #[arg(long)]
    device: DeviceChoice,
    #[arg(long)]
    batch_size: usize,
}

/// `--interleave` / `--variants`: the methods (or config variants) take turns in this process.
fn run_interleaved(args: &BenchArgs) -> anyhow::Result<()> {
    let device = *args.devices.first().context("--devices is empty")?;
    let batch_size = *args.batch_sizes.first().context("--batch-sizes is empty")?;
    // each turn-taker: its label and the overrides it adds to `--set`
    let turns: Vec<(&String, Vec<String>)> = if args.variants.is_empty() {
        args.methods.iter().map(|m| (m, vec![format!("balance.method=\"{m}\"")])).collect()
    } else {
        let sets = |v: &str| v.split(';').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
        args.variants.iter().map(|v| (v, sets(v))).collect()
    };
    let configs = turns
        .iter()
        .map(|(_, extra)| args.setup.load_config_with(&[args.setup.sets.clone(), extra.clone()].concat()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let labels: Vec<String> = turns.iter().map(|(label, _)| label.to_string()).collect();
    // each distinct data section loaded once (variants of the model share it)
    let mut loaded: Vec<(mtrec_train::DataConfig, mtrec_data::MtlDataset)> = Vec::new();
    for c in &configs {
        if !loaded.iter().any(|(d, _)| *d == c.data) {
            loaded.push((c.data.clone(), c.data.load()?));
        }
    }
    let datasets: Vec<&mtrec_data::MtlDataset> =
        configs.iter().map(|c| &loaded.iter().find(|(d, _)| *d == c.data).expect("loaded above").1).collect();
    println!(
        "interleaved in one process: {} on {}, batch {batch_size}, {} rounds of {} steps each (after {} warm-up steps)",
        labels.join(" | "),
        device.name(),
        args.rounds,
        args.setup.steps,
        args.setup.warmup_steps
    );
    let dev = device.open().map_err(anyhow::Error::msg)?;
    let times = mtrec_lab::interleaved_step_ms(
        &configs,
        &datasets,
        &dev,
        batch_size,
        args.setup.warmup_steps,
        args.setup.steps,
        args.rounds,
    )?;
    for (m, t) in labels.iter().zip(&times) {
        let ratios: Vec<f64> = t.iter().zip(&times[0]).map(|(a, b)| a / b).collect();
        let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        println!(
            "  {m:<12} step {:.2} ms (median of rounds)   ×{:.2} of {} (median over rounds; range {lo:.2}–{hi:.2})",
            median(t),
            median(&ratios),
            labels[0]
        );
    }
    Ok(())
}

/// Runs one measurement and prints it as one JSON line.
pub fn run_one(args: BenchOneArgs) -> anyhow::Result<()> {
    let config = args.setup.load_config()?;
    let dataset = config.data.load()?;
    let opts = BenchOptions {
        batch_size: args.batch_size,
        warmup_steps: args.setup.warmup_steps,
        measure_steps: args.setup.steps,
    };
    let result = mtrec_lab::bench(
        &config,
        &dataset,
        &args.device.open().map_err(anyhow::Error::msg)?,
        args.device.name(),
        opts,
    )?;
    println!("{RESULT_PREFIX}{}", serde_json::to_string(&result)?);
    Ok(())
}

fn spawn_one(setup: &BenchSetup, device: DeviceChoice, batch_size: usize) -> anyhow::Result<BenchResult> {
    spawn_method(setup, device, batch_size, None)
}

fn spawn_method(
    setup: &BenchSetup,
    device: DeviceChoice,
    batch_size: usize,
    method: Option<&str>,
) -> anyhow::Result<BenchResult> {
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let method_set = method.map(|m| vec!["--set".to_string(), format!("balance.method={m}")]).unwrap_or_default();
    let output = Command::new(exe)
        .arg("bench-one")
        .args(setup.child_args())
        .args(method_set)
        .args(["--device", device.name(), "--batch-size", &batch_size.to_string()])
        .output()
        .context("running bench-one")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout.lines().find_map(|l| l.strip_prefix(RESULT_PREFIX)) {
        Some(json) => Ok(serde_json::from_str(json)?),
        None => bail!(
            "{} at batch {batch_size} failed ({}):\n{}",
            device.name(),
            output.status,
            String::from_utf8_lossy(&output.stderr).lines().rev().take(15).collect::<Vec<_>>().join("\n")
        ),
    }
}

/// One run of the PyTorch reference: its `train_samples_per_s`.
fn run_torch(args: &BenchArgs, data_dir: &Path, threads: usize) -> anyhow::Result<f64> {
    let script = args.torch.as_ref().expect("called with --torch");
    let batches = args.setup.warmup_steps + args.setup.steps;
    let mut command = Command::new(&args.python);
    command.arg(script);
    if let Some(arch) = &args.torch_arch {
        command.args(["--arch", arch]);
    }
    let output = command
        .args(["--data", &data_dir.display().to_string(), "--epochs", "1"])
        .args(["--batch", &args.torch_batch_size.to_string(), "--threads", &threads.to_string()])
        .args(["--max-batches", &batches.to_string()])
        .output()
        .with_context(|| format!("running {} {}", args.python, script.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().rev().find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok());
    match last.as_ref().and_then(|v| v["train_samples_per_s"].as_f64()) {
        Some(v) => Ok(v),
        None => bail!(
            "the PyTorch script failed ({}): {}\n(it needs `pip install torch scikit-learn numpy`)",
            output.status,
            String::from_utf8_lossy(&output.stderr).lines().rev().take(10).collect::<Vec<_>>().join("\n")
        ),
    }
}

#[derive(Serialize)]
struct TorchComparison {
    batch_size: usize,
    threads: usize,
    rounds: usize,
    torch_samples_per_sec: Vec<f64>,
    mtrec_samples_per_sec: std::collections::BTreeMap<String, Vec<f64>>,
    /// median(mtrec) / median(torch), per device.
    ratio: std::collections::BTreeMap<String, f64>,
}

#[derive(Serialize)]
struct BenchReport {
    config: String,
    dataset: String,
    model: String,
    results: Vec<BenchResult>,
    torch: Option<TorchComparison>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 }
}

fn print_row(r: &BenchResult) {
    println!(
        "{:<8} {:>6} {:<12} {:>14.0} {:>14.0} {:>9.2} {:>9.2} {:>9.2} {:>9} {:>9}",
        r.device,
        r.batch_size,
        r.balance,
        r.train_samples_per_sec,
        r.inference_samples_per_sec,
        r.step_ms_p50,
        r.step_ms_p95,
        r.warmup_seconds,
        fmt_opt(r.peak_rss_mib),
        fmt_opt(r.device_memory_mib)
    );
}

/// Median step time of each method relative to the first method, per device and batch size.
fn print_method_ratios(results: &[BenchResult]) {
    let mut keys: Vec<(String, usize)> = Vec::new();
    let mut methods: Vec<&str> = Vec::new();
    for r in results {
        if !keys.contains(&(r.device.clone(), r.batch_size)) {
            keys.push((r.device.clone(), r.batch_size));
        }
        if !methods.contains(&r.balance.as_str()) {
            methods.push(&r.balance);
        }
    }
    let base = methods[0];
    println!("\nstep time relative to {base} (medians over the rounds of the p50 step and of 1/throughput):");
    for (device, bs) in keys {
        let of = |m: &str, f: fn(&BenchResult) -> f64| {
            let v: Vec<f64> =
                results.iter().filter(|r| r.device == device && r.batch_size == bs && r.balance == m).map(f).collect();
            median(&v)
        };
        for &m in &methods {
            let p50 = of(m, |r| r.step_ms_p50) / of(base, |r| r.step_ms_p50);
            let thr = of(base, |r| r.train_samples_per_sec) / of(m, |r| r.train_samples_per_sec);
            println!("  {device} batch {bs} {m:<12} p50 step ×{p50:.2}   1/throughput ×{thr:.2}");
        }
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let config = args.setup.load_config()?;
    if args.interleave || !args.variants.is_empty() {
        return run_interleaved(&args);
    }
    println!(
        "bench: {} ({:?}) — warm-up {} steps, {} measured steps per configuration",
        config.name, config.model.architecture, args.setup.warmup_steps, args.setup.steps
    );
    let mut results = Vec::new();
    println!(
        "{:<8} {:>6} {:<12} {:>14} {:>14} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "device",
        "batch",
        "balance",
        "train samp/s",
        "infer samp/s",
        "p50 ms",
        "p95 ms",
        "warmup s",
        "RSS MiB",
        "dev MiB"
    );
    let methods: Vec<Option<&str>> =
        if args.methods.is_empty() { vec![None] } else { args.methods.iter().map(|m| Some(m.as_str())).collect() };
    let rounds = if methods.len() > 1 { args.rounds } else { 1 };
    for _ in 0..rounds {
        for &device in &args.devices {
            for &bs in &args.batch_sizes {
                for &method in &methods {
                    let r = spawn_method(&args.setup, device, bs, method)?;
                    print_row(&r);
                    results.push(r);
                }
            }
        }
    }
    if methods.len() > 1 {
        print_method_ratios(&results);
    }

    let torch = if args.torch.is_some() {
        let threads = args.torch_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let cpu_devices: Vec<DeviceChoice> =
            args.devices.iter().copied().filter(|d| matches!(d, DeviceChoice::Flex | DeviceChoice::Ndarray)).collect();
        let mut cmp = TorchComparison {
            batch_size: args.torch_batch_size,
            threads,
            rounds: args.rounds,
            torch_samples_per_sec: vec![],
            mtrec_samples_per_sec: Default::default(),
            ratio: Default::default(),
        };
        println!("\nPyTorch comparison at batch {} with {threads} threads, alternating:", args.torch_batch_size);
        for round in 1..=args.rounds {
            for &d in &cpu_devices {
                let r = spawn_one(&args.setup, d, args.torch_batch_size)?;
                println!("  round {round}: mtrec-{} {:.0} samples/s", d.name(), r.train_samples_per_sec);
                cmp.mtrec_samples_per_sec.entry(d.name().to_string()).or_default().push(r.train_samples_per_sec);
            }
            let t = run_torch(&args, &config.data.dir, threads)?;
            println!("  round {round}: pytorch {t:.0} samples/s");
            cmp.torch_samples_per_sec.push(t);
        }
        let torch_median = median(&cmp.torch_samples_per_sec);
        for (d, v) in &cmp.mtrec_samples_per_sec {
            let ratio = median(v) / torch_median;
            println!("  mtrec-{d} / pytorch = {ratio:.2} (medians {:.0} / {torch_median:.0})", median(v));
            cmp.ratio.insert(d.clone(), ratio);
        }
        Some(cmp)
    } else {
        None
    };

    if let Some(path) = &args.json {
        let dataset = match config.data.source {
            mtrec_train::DataSource::Census => "census".to_string(),
            mtrec_train::DataSource::Synthetic => "synthetic".to_string(),
            mtrec_train::DataSource::Table => config.data.name.clone().unwrap_or_else(|| "table".into()),
        };
        let report = BenchReport {
            config: args.setup.config.display().to_string(),
            dataset,
            model: format!("{:?}", config.model.architecture),
            results,
            torch,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
