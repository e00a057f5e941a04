//! `cargo xtask`: the command line of mtrec.
//!
//! - `cargo xtask train [--config FILE] [--device flex|ndarray|wgpu] [--data-dir DIR] [--out DIR]
//!   [--epochs N] [--seed N] [--set section.key=value]...` trains one experiment; without `--config`
//!   it runs the built-in default (`configs/synthetic_mmoe.toml`: MMoE on the correlated synthetic
//!   tasks, offline). Every epoch is checkpointed; `cargo xtask train --resume RUN_DIR` continues.
//!   `cargo xtask-mpi train --ranks N [--hostfile FILE] …` trains data-parallel on MPI ranks.
//! - `cargo xtask bench [--config FILE] [--devices flex,ndarray,wgpu] [--batch-sizes 256,1024,4096]
//!   [--json FILE] [--torch SCRIPT]` measures training/inference speed per backend and batch size.
//! - `cargo xtask compare --configs A.toml,B.toml [--seeds 3] [--out DIR]` trains every config with
//!   every seed and writes `compare.md` / `compare.json` (mean ± std, Δm against single-task) and
//!   `compare.svg` (mean validation curves; `.png` too with the `png` feature).
//! - `cargo xtask tune --config FILE --space SPACE.toml --trials N [--engine halving|optuna]
//!   [--jobs J]` searches hyperparameters on a validation objective: successive halving over epochs
//!   built in, or Optuna's samplers and pruners; a killed study resumes; writes `trials.md`,
//!   `trials.svg`, `best.toml` and the best trial's test metrics (`best.json`).
//! - `cargo xtask synthetic-study [--correlations 1.0,0.9,0.5] [--seeds 5] [--epochs 50]`: the MMoE
//!   paper's synthetic study (`study.md`, `study.json`, `study.svg`/`.png`).
//! - `cargo xtask plot RUN_DIR...` redraws a run's figures (training writes them too).
//! - `cargo xtask mlflow RUN_DIR... --uri URI` logs run folders (or folders of them) to MLflow.
//! - `cargo xtask eval RUN_DIR [--split valid|test]` re-evaluates a run's selected model;
//!   `cargo xtask export RUN_DIR [--out FILE]` writes it as safetensors.
//! - `cargo xtask data census|wcr|minilm [--from DIR] [--dir DIR]` fetches a dataset or the text
//!   encoder (or copies it from a folder) and checks its hashes; `cargo xtask data inspect --config
//!   FILE` prints a dataset's schema and statistics; `cargo xtask data bench --config FILE` times
//!   its loading.
//! - `cargo xtask pretrain-text --config FILE --out DIR [--epochs N] [--max-texts N]` pretrains the
//!   config's text encoder on its table's training texts (unsupervised SimCSE) and writes it as a
//!   sentence-transformers folder a config's `encoder = "…"` reads.
//! - `cargo xtask embed --encoder DIR --input FILE --column NAME --out FILE` writes the sentence
//!   embeddings of a text column.

mod bench;
mod bench_encoder;
mod compare;
mod data;
mod embed;
mod eval;
mod export;
mod mlflow;
mod plot;
mod pretrain_text;
mod ranks;
mod synthetic_study;
mod train;
mod tune;

use std::path::Path;

use clap::{Parser, Subcommand};

/// mimalloc keeps freed pages for reuse: burn allocates and frees a buffer per tensor op, and with
/// glibc's allocator each large buffer is a fresh mmap whose pages fault in again on every step.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tells mimalloc never to hand freed pages back to the OS. By default it purges pages idle for a
/// second, and a training step of a fine-tuned encoder frees and re-allocates its large activation
/// buffers less often than that: every step faulted them in again and the kernel zeroed them (13 %
/// of a full fine-tuning step in `clear_page`, measured with perf; the step ran ×1.25 faster with
/// the purge off). The process keeps its peak memory instead, which a training run reaches anyway.
#[allow(unsafe_code)]
fn keep_freed_pages() {
    /// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (`mimalloc.h`).
    const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
    unsafe extern "C" {
        fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    }
    // SAFETY: mi_option_set only stores an integer option; -1 means "never purge" (mimalloc.h).
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

/// The `--set` override that points `data.dir` at `dir` (what every `--data-dir` flag means).
fn data_dir_override(dir: &Path) -> String {
    format!("data.dir={}", toml::Value::String(dir.display().to_string()))
}

/// The Python the xtask runs its bridges with (Optuna, MLflow): `explicit` (a `--python` flag),
/// else `$MTREC_PYTHON`, else `python3`.
fn python(explicit: Option<&Path>) -> std::path::PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("MTREC_PYTHON").map(Into::into))
        .unwrap_or_else(|| "python3".into())
}

/// mtrec tasks.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", about = "mtrec: multi-task learning for recommenders, on Burn")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train one experiment and write its run folder.
    Train(train::TrainArgs),
    /// Fetch a dataset or model; inspect or time loading a configured dataset.
    Data(data::DataArgs),
    /// Measure training and inference speed per backend and batch size.
    Bench(bench::BenchArgs),
    /// The text encoder's throughput, optionally alternating with sentence-transformers.
    BenchEncoder(bench_encoder::BenchEncoderArgs),
    /// Train several configs over several seeds and tabulate mean ± std (and Δm).
    Compare(compare::CompareArgs),
    /// Search hyperparameters on a validation objective (built-in successive halving, or Optuna).
    Tune(tune::TuneArgs),
    /// Write the sentence embeddings of a text column (.npy or .safetensors).
    Embed(embed::EmbedArgs),
    /// Re-evaluate a run's selected model on a split.
    Eval(eval::EvalArgs),
    /// Write a run's selected model as safetensors.
    Export(export::ExportArgs),
    /// Redraw a run's figures (SVG and PNG).
    Plot(plot::PlotArgs),
    /// Log run folders to MLflow (params, metrics, tags, report and figures).
    Mlflow(mlflow::MlflowArgs),
    /// Pretrain the text encoder on the table's own texts (unsupervised SimCSE), then point a
    /// config at it: the serial stage of multi-task learning.
    PretrainText(pretrain_text::PretrainTextArgs),
    /// The MMoE paper's synthetic study: shared-bottom, OMoE and MMoE over task correlations.
    SyntheticStudy(synthetic_study::StudyArgs),
    /// One bench measurement (run by `bench` in a child process).
    #[command(hide = true)]
    BenchOne(bench::BenchOneArgs),
}

fn main() -> std::process::ExitCode {
    keep_freed_pages();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => train::run(args),
        Command::Data(args) => data::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchEncoder(args) => bench_encoder::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Tune(args) => tune::run(args),
        Command::Embed(args) => embed::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Export(args) => export::run(args),
        Command::Plot(args) => plot::run(args),
        Command::Mlflow(args) => mlflow::run(args),
        Command::PretrainText(args) => pretrain_text::run(args),
        Command::SyntheticStudy(args) => synthetic_study::run(args),
        Command::BenchOne(args) => bench::run_one(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
