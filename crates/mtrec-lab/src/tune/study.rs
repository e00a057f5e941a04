//! A study on disk: `study.jsonl` in the study's folder — a header line saying what the study is
//! (engine, seed, budgets, the space and the resolved config), then one line per finished trial
//! budget (its point, epochs, objective or error, and whether it was pruned). Lines are appended
//! as results come, so a study killed at any point loses only the budgets then in training; run
//! again with the same arguments it reads the log, skips every budget it holds and continues the
//! others from their run folders' checkpoints.
//!
//! [`run_halving`] is the built-in engine (random points, successive halving over epochs);
//! `cargo xtask tune --engine optuna` drives Optuna's samplers and pruners with the same log and
//! runner.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use serde::{Deserialize, Serialize};

use mtrec_train::TrainError;

use super::{Point, SearchSpace, halving};

/// What a study is; a resumed study must be the same (its `jobs` may differ).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyHeader {
    /// `halving` or `optuna` (with its sampler and pruner: `optuna/tpe/halving`).
    pub engine: String,
    /// The seed trials are drawn from.
    pub seed: u64,
    /// Trials to run.
    pub trials: usize,
    /// The epoch budgets of the rungs.
    pub rungs: Vec<usize>,
    /// Successive halving's η.
    pub eta: usize,
    /// The space file's text.
    pub space: String,
    /// The resolved config every trial starts from (before its point).
    pub config: String,
}

/// One finished budget of one trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// The trial's number (0-based).
    pub trial: usize,
    /// Its point: `(key, TOML value)` in the space's order.
    pub point: Vec<(String, String)>,
    /// Epochs trained when the value was read.
    pub epochs: usize,
    /// The objective (validation) at that budget; `None` when the run failed.
    pub value: Option<f64>,
    /// Why the run failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether the engine stopped the trial here (Optuna's pruner).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pruned: bool,
}

impl TrialRecord {
    /// The record of a budget just trained: `result` is the runner's; a non-finite objective
    /// fails the budget like an error.
    pub fn trained(trial: usize, point: &Point, epochs: usize, result: Result<f64, String>) -> Self {
        let (value, error) = match result {
            Ok(v) if v.is_finite() => (Some(v), None),
            Ok(v) => (None, Some(format!("objective {v}"))),
            Err(e) => (None, Some(e)),
        };
        Self { trial, point: point_strings(point), epochs, value, error, pruned: false }
    }
}

/// A point as the log writes it.
pub fn point_strings(point: &Point) -> Vec<(String, String)> {
    point.iter().map(|(k, v)| (k.clone(), v.to_string())).collect()
}

/// Trains trials: what a study needs from the training side.
pub trait TrialRunner: Sync {
    /// Trains trial `trial` at `point` until `epochs` epochs (continuing from what its run folder
    /// holds) and returns the objective: the monitored validation value of the model selected so
    /// far. An error fails this budget of the trial (the study goes on).
    fn train(&self, trial: usize, point: &Point, epochs: usize) -> Result<f64, String>;
}

/// The append-only log of a study (`study.jsonl`).
pub struct StudyLog {
    path: PathBuf,
    file: Mutex<File>,
    /// The records read when the log was opened (a resumed study's).
    pub previous: Vec<TrialRecord>,
}

impl StudyLog {
    /// Opens `dir/study.jsonl`: a new log gets `header`; an existing one must have been written
    /// with the same header (else an error saying what differs), and its records are read.
    pub fn open(dir: &Path, header: &StudyHeader) -> Result<Self, TrainError> {
        std::fs::create_dir_all(dir).map_err(|source| TrainError::Io { path: dir.to_path_buf(), source })?;
        let path = dir.join("study.jsonl");
        let io = |source| TrainError::Io { path: path.clone(), source };
        let mut previous = Vec::new();
        if path.is_file() {
            let text = std::fs::read_to_string(&path).map_err(io)?;
            let mut lines = text.lines().filter(|l| !l.trim().is_empty());
            let bad = |line: usize, e: String| TrainError::Config(format!("{}: line {line}: {e}", path.display()));
            let first = lines.next().ok_or_else(|| bad(1, "empty study log".into()))?;
            let theirs: StudyHeader = serde_json::from_str(first).map_err(|e| bad(1, e.to_string()))?;
            if let Some(what) = header_difference(&theirs, header) {
                return Err(TrainError::Config(format!(
                    "{}: this folder holds another study (different {what}): use another --out, or the \
                     study's own arguments to resume it",
                    path.display()
                )));
            }
            for (i, line) in lines.enumerate() {
                // a line cut by a kill is the last one: what it held is trained again
                match serde_json::from_str::<TrialRecord>(line) {
                    Ok(r) => previous.push(r),
                    Err(_) if i + 2 == text.lines().filter(|l| !l.trim().is_empty()).count() => {}
                    Err(e) => return Err(bad(i + 2, e.to_string())),
                }
            }
        } else {
            let mut line = serde_json::to_string(header).expect("headers serialise");
            line.push('\n');
            std::fs::write(&path, line).map_err(io)?;
        }
        let file = OpenOptions::new().append(true).open(&path).map_err(io)?;
        Ok(Self { path, file: Mutex::new(file), previous })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a record (whole lines, flushed: a kill leaves at most the last one cut).
    pub fn append(&self, record: &TrialRecord) -> Result<(), TrainError> {
        let mut line = serde_json::to_string(record).expect("records serialise");
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(line.as_bytes())
            .and_then(|_| file.flush())
            .map_err(|source| TrainError::Io { path: self.path.clone(), source })
    }

    /// The record of `trial` at `epochs` read from the log, if it has a value (a failed budget
    /// is trained again).
    pub fn finished(&self, trial: usize, epochs: usize) -> Option<&TrialRecord> {
        self.previous.iter().rev().find(|r| r.trial == trial && r.epochs == epochs && r.value.is_some())
    }
}

fn header_difference(a: &StudyHeader, b: &StudyHeader) -> Option<&'static str> {
    [
        (a.engine != b.engine, "engine"),
        (a.seed != b.seed, "seed"),
        (a.trials != b.trials, "number of trials"),
        (a.rungs != b.rungs, "epoch budgets"),
        (a.eta != b.eta, "η"),
        (a.space != b.space, "space file"),
        (a.config != b.config, "resolved config"),
    ]
    .into_iter()
    .find_map(|(differs, what)| differs.then_some(what))
}

/// Options of the built-in engine.
#[derive(Debug, Clone)]
pub struct HalvingOptions {
    /// Trials drawn (all train the first rung).
    pub trials: usize,
    /// The rungs' epoch budgets ([`halving::rungs`]).
    pub rungs: Vec<usize>,
    /// The fraction kept at each rung is `1/η`.
    pub eta: usize,
    /// Trials trained at once.
    pub jobs: usize,
    /// The seed points are drawn from.
    pub seed: u64,
}

/// Runs `f` on every item with `jobs` threads; results in the items' order.
pub fn run_parallel<T: Sync, R: Send>(items: &[T], jobs: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                }
            });
        }
    });
    slots.into_iter().map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()).expect("every item ran")).collect()
}

/// Trains (or reads from the log) one budget of a trial and logs it.
fn budget(
    log: &StudyLog,
    runner: &dyn TrialRunner,
    trial: usize,
    point: &Point,
    epochs: usize,
) -> Result<TrialRecord, TrainError> {
    let strings = point_strings(point);
    if let Some(done) = log.finished(trial, epochs) {
        if done.point != strings {
            return Err(TrainError::Config(format!(
                "{}: trial {trial} was drawn as {:?}, now {strings:?}: the space or seed changed",
                log.path().display(),
                done.point
            )));
        }
        return Ok(done.clone());
    }
    let record = TrialRecord::trained(trial, point, epochs, runner.train(trial, point, epochs));
    log.append(&record)?;
    Ok(record)
}

/// The built-in engine: `trials` random points ([`SearchSpace::sample`]), successive halving over
/// the rungs. Returns every record (read or trained), rung by rung.
pub fn run_halving(
    space: &SearchSpace,
    options: &HalvingOptions,
    runner: &dyn TrialRunner,
    log: &StudyLog,
) -> Result<Vec<TrialRecord>, TrainError> {
    let maximise = space.objective.maximise();
    let mut alive: Vec<usize> = (0..options.trials).collect();
    let mut all = Vec::new();
    for &epochs in &options.rungs {
        let results =
            run_parallel(&alive, options.jobs, |&t| budget(log, runner, t, &space.sample(options.seed, t), epochs));
        let records = results.into_iter().collect::<Result<Vec<_>, _>>()?;
        let scored: Vec<(usize, f64)> = records.iter().map(|r| (r.trial, r.value.unwrap_or(f64::NAN))).collect();
        all.extend(records);
        alive = halving::promote(&scored, options.eta, maximise);
        if alive.is_empty() {
            break;
        }
    }
    Ok(all)
}

/// The study's choice: the best value among the records of the largest budget any trial reached
/// (pruned budgets included: they are values at that budget too), lower trial number on ties.
pub fn best_record(records: &[TrialRecord], maximise: bool) -> Option<&TrialRecord> {
    let top = records.iter().filter(|r| r.value.is_some()).map(|r| r.epochs).max()?;
    let key = |r: &TrialRecord| {
        let v = r.value.expect("filtered");
        if maximise { v } else { -v }
    };
    records.iter().filter(|r| r.epochs == top && r.value.is_some()).fold(None, |best: Option<&TrialRecord>, r| {
        match best {
            Some(b) if key(b) > key(r) || (key(b) == key(r) && b.trial < r.trial) => Some(b),
            _ => Some(r),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tune::Objective;
    use crate::tune::space::{Distribution, Param};

    fn space() -> SearchSpace {
        SearchSpace {
            params: vec![Param { key: "train.lr".into(), distribution: Distribution::Uniform { low: 0.0, high: 1.0 } }],
            objective: Objective { metric: "auc".into(), task: "mean".into() },
        }
    }

    fn header(trials: usize) -> StudyHeader {
        StudyHeader {
            engine: "halving".into(),
            seed: 3,
            trials,
            rungs: halving::rungs(1, 9, 3),
            eta: 3,
            space: "[params]".into(),
            config: "name = \"x\"".into(),
        }
    }

    /// A planted objective: trial quality q = 1 − |lr − 0.7|, seen through a learning curve that
    /// rises with epochs (q·(1 − 1/(e + 1))), so every rung ranks the trials as q does. Counts
    /// calls; fails (as a killed study would stop) after `fail_after` calls.
    struct Planted {
        calls: Mutex<Vec<(usize, usize)>>,
        fail_after: Option<usize>,
    }

    impl Planted {
        fn quality(point: &Point) -> f64 {
            1.0 - (point[0].1.as_float().unwrap() - 0.7).abs()
        }
    }

    impl TrialRunner for Planted {
        fn train(&self, trial: usize, point: &Point, epochs: usize) -> Result<f64, String> {
            let mut calls = self.calls.lock().unwrap();
            if self.fail_after.is_some_and(|n| calls.len() >= n) {
                return Err("killed".into());
            }
            calls.push((trial, epochs));
            Ok(Self::quality(point) * (1.0 - 1.0 / (epochs as f64 + 1.0)))
        }
    }

    fn options(trials: usize, jobs: usize) -> HalvingOptions {
        HalvingOptions { trials, rungs: halving::rungs(1, 9, 3), eta: 3, jobs, seed: 3 }
    }

    #[test]
    fn successive_halving_promotes_the_planted_best_trials() {
        let dir = tempfile::tempdir().unwrap();
        let space = space();
        let log = StudyLog::open(dir.path(), &header(9)).unwrap();
        let runner = Planted { calls: Mutex::new(Vec::new()), fail_after: None };
        let records = run_halving(&space, &options(9, 3), &runner, &log).unwrap();
        // 9 trials at 1 epoch, the best 3 at 3, the best 1 at 9: 13 budgets
        let budgets: Vec<usize> = [1, 3, 9].iter().map(|&e| records.iter().filter(|r| r.epochs == e).count()).collect();
        assert_eq!(budgets, vec![9, 3, 1]);
        let mut by_quality: Vec<usize> = (0..9).collect();
        by_quality
            .sort_by(|&a, &b| Planted::quality(&space.sample(3, b)).total_cmp(&Planted::quality(&space.sample(3, a))));
        let mut at3: Vec<usize> = records.iter().filter(|r| r.epochs == 3).map(|r| r.trial).collect();
        at3.sort_by_key(|t| by_quality.iter().position(|x| x == t));
        assert_eq!(at3, by_quality[..3].to_vec(), "the three best trials go on");
        let best = best_record(&records, true).unwrap();
        assert_eq!((best.trial, best.epochs), (by_quality[0], 9));
        assert_eq!(runner.calls.lock().unwrap().len(), 13);
        // minimising, the worst trials go on
        let dir = tempfile::tempdir().unwrap();
        let mut min_space = space.clone();
        min_space.objective.metric = "mse".into();
        let log = StudyLog::open(dir.path(), &header(9)).unwrap();
        let records =
            run_halving(&min_space, &options(9, 1), &Planted { calls: Mutex::new(vec![]), fail_after: None }, &log)
                .unwrap();
        assert_eq!(best_record(&records, false).unwrap().trial, by_quality[8]);
    }

    #[test]
    fn a_killed_study_resumes_without_repeating_finished_budgets() {
        let dir = tempfile::tempdir().unwrap();
        let space = space();
        let uninterrupted = {
            let d = tempfile::tempdir().unwrap();
            let log = StudyLog::open(d.path(), &header(9)).unwrap();
            run_halving(&space, &options(9, 1), &Planted { calls: Mutex::new(vec![]), fail_after: None }, &log).unwrap()
        };
        // killed after 5 budgets: the runner fails from then on, as the processes of a killed study
        {
            let log = StudyLog::open(dir.path(), &header(9)).unwrap();
            let runner = Planted { calls: Mutex::new(vec![]), fail_after: Some(5) };
            run_halving(&space, &options(9, 1), &runner, &log).unwrap();
        }
        // the failures were logged; drop them (and cut the last line in half) as a kill would leave it
        let text = std::fs::read_to_string(dir.path().join("study.jsonl")).unwrap();
        let mut kept: Vec<&str> = text.lines().take(1 + 5).collect();
        let cut = &text.lines().nth(6).unwrap()[..10];
        kept.push(cut);
        std::fs::write(dir.path().join("study.jsonl"), kept.join("\n")).unwrap();
        let log = StudyLog::open(dir.path(), &header(9)).unwrap();
        assert_eq!(log.previous.len(), 5);
        let runner = Planted { calls: Mutex::new(vec![]), fail_after: None };
        let resumed = run_halving(&space, &options(9, 1), &runner, &log).unwrap();
        let calls = runner.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 13 - 5, "only the budgets not in the log train: {calls:?}");
        assert!(calls.iter().all(|&(t, e)| !(e == 1 && t < 5)), "{calls:?}");
        let strip = |r: &[TrialRecord]| r.iter().map(|r| (r.trial, r.epochs, r.value)).collect::<Vec<_>>();
        assert_eq!(strip(&resumed), strip(&uninterrupted));
        // another study in the same folder is refused, naming what differs
        let mut other = header(9);
        other.seed = 4;
        let err = StudyLog::open(dir.path(), &other).err().unwrap().to_string();
        assert!(err.contains("another study (different seed)"), "{err}");
    }

    #[test]
    fn parallel_jobs_keep_the_items_order() {
        let items: Vec<usize> = (0..37).collect();
        assert_eq!(run_parallel(&items, 4, |&i| i * i), items.iter().map(|i| i * i).collect::<Vec<_>>());
        assert_eq!(run_parallel(&[] as &[usize], 4, |&i| i), Vec::<usize>::new());
    }

    #[test]
    fn the_best_is_chosen_at_the_largest_budget() {
        let r = |trial, epochs, value: Option<f64>| TrialRecord {
            trial,
            point: vec![],
            epochs,
            value,
            error: None,
            pruned: false,
        };
        let records =
            [r(0, 1, Some(0.99)), r(1, 3, Some(0.90)), r(2, 3, Some(0.93)), r(3, 3, None), r(4, 3, Some(0.93))];
        assert_eq!(best_record(&records, true).unwrap().trial, 2, "0.99 at 1 epoch is not comparable");
        assert_eq!(best_record(&records, false).unwrap().trial, 1);
        assert!(best_record(&[r(0, 1, None)], true).is_none());
    }
}
