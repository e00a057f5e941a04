//! `cargo xtask plot RUN_DIR...`: (re)draws each run folder's figures — learning curves per task,
//! task weights (and gradient norms and cosines) over epochs, gate utilisation of gated models — as
//! SVG (and PNG with the `png` feature), and its `report.html`, from the files the run wrote.

use std::path::PathBuf;

use clap::Args;

/// Arguments of `cargo xtask plot`.
#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Run folders written by `train` or `compare`.
    #[arg(required = true)]
    run_dirs: Vec<PathBuf>,
}

pub fn run(args: PlotArgs) -> anyhow::Result<()> {
    for dir in &args.run_dirs {
        for file in mtrec_train::plot_run(dir)? {
            println!("wrote {}", file.display());
        }
        if dir.join("summary.json").is_file() {
            println!("wrote {}", mtrec_train::run_report(dir)?.display());
        }
    }
    Ok(())
}
