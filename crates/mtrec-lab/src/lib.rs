//! What researchers do across runs, on top of the training loop: speed benchmarks of training and
//! inference (`cargo xtask bench`), multi-seed comparisons of configs with Δm against the
//! single-task baseline (`cargo xtask compare`), and the MMoE paper's synthetic study (`cargo xtask
//! synthetic-study`). The loop itself, its metrics and run files are `mtrec-train`'s.

mod bench;
mod compare;
mod synthetic_study;

pub use bench::{BenchOptions, BenchResult, bench, interleaved_step_ms, peak_rss_mib};
pub use compare::{ConfigResult, compare_figure, delta_m, fill_delta_m, markdown, mean_std, trade_off_figure};
pub use synthetic_study::{StudyCell, StudyRun, StudyTrend, aggregate, study_figure, study_markdown, trend};
