//! What researchers do across runs, on top of the training loop: speed benchmarks of training and
//! inference (`cargo xtask bench`), multi-seed comparisons of configs with Δm against the
//! single-task baseline (`cargo xtask compare`), hyperparameter search ([`tune`], `cargo xtask
//! tune`) and the MMoE paper's synthetic study (`cargo xtask synthetic-study`). The loop itself, its metrics and run files are `mtrec-train`'s.
//!
//! # Guide
//!
//! [`run_comparison`] trains configs over seeds through a registry (so a program's own
//! architectures and balancers compare with the built-ins) and returns a [`Comparison`]; its
//! numbers are the mean ± sample standard deviation over seeds and Δm against the single-task
//! configuration:
//!
//! ```
//! use std::collections::BTreeMap;
//! use mtrec_lab::{delta_m, mean_std};
//!
//! let (mean, std) = mean_std(&[0.94, 0.95, 0.96]);
//! assert!((mean - 0.95).abs() < 1e-12 && (std - 0.01).abs() < 1e-12);
//!
//! // AUC up 1 % on one task, MSE down 10 % on the other: Δm = (1 % + 10 %) / 2
//! let single = BTreeMap::from([("a".into(), ("auc".into(), 0.90)), ("b".into(), ("mse".into(), 0.50))]);
//! let multi = BTreeMap::from([("a".into(), ("auc".into(), 0.909)), ("b".into(), ("mse".into(), 0.45))]);
//! assert!((delta_m(&multi, &single).unwrap() - 0.055).abs() < 1e-12);
//! ```

#![deny(missing_docs)]

mod bench;
mod compare;
mod comparison;
mod synthetic_study;
pub mod tune;

pub use bench::{BenchOptions, BenchResult, bench, interleaved_step_ms, peak_rss_mib};
pub use compare::{
    ConfigResult, compare_figure, delta_m, fill_delta_m, markdown, mean_std, task_gains, trade_off_figure,
};
pub use comparison::{CompareOptions, Comparison, finished_run, run_comparison, run_folder};
pub use synthetic_study::{StudyCell, StudyRun, StudyTrend, aggregate, study_figure, study_markdown, trend};
