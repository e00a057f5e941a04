//! Hyperparameter search (`cargo xtask tune`): a search space over any config key
//! ([`SearchSpace`]), an objective that is always a validation value, a study log that a killed
//! study resumes from ([`StudyLog`]), the built-in engine — random points and successive halving
//! over epochs ([`run_halving`]) — and the study's tables and figure. The training side is a
//! [`TrialRunner`]: the xtask trains each trial as a normal run folder in a process of its own,
//! and drives Optuna's samplers and pruners through the same log and runner.

mod halving;
mod report;
mod space;
mod study;

pub use halving::{promote, rungs};
pub use report::{trials_csv, trials_figure, trials_markdown};
pub use space::{Distribution, Objective, Param, Point, SearchSpace, point_sets};
pub use study::{
    HalvingOptions, StudyHeader, StudyLog, TrialRecord, TrialRunner, best_record, point_strings, run_halving,
    run_parallel,
};
