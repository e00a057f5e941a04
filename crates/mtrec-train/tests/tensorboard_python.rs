//! TensorBoard event files read back by TensorBoard itself: a run's scalars, as TensorBoard's
//! `EventAccumulator` reads them (`scripts/read_tensorboard.py`), equal its `metrics.jsonl`.
//!
//! Needs a Python with the `tensorboard` package in `MTREC_PYTHON` (`.ci/run` makes one); prints
//! SKIP without it. mtrec's own reader ([`mtrec_train::read_scalars`]) is checked against the same
//! records here too, so that part runs everywhere.

use std::{collections::BTreeMap, path::Path, process::Command};

use burn::tensor::Device;
use mtrec_balance::BalanceMethod;
use mtrec_data::SyntheticConfig;
use mtrec_train::{
    DataConfig, DataSource, EarlyStoppingConfig, EpochRecord, ExperimentConfig, RunDirectory, TrainConfig, Trainer,
};

const LOG_EVERY: usize = 7;

fn config() -> ExperimentConfig {
    ExperimentConfig {
        data: DataConfig {
            source: DataSource::Synthetic,
            synthetic: SyntheticConfig { dim: 8, n_train: 640, n_valid: 200, n_test: 200, ..Default::default() },
            ..Default::default()
        },
        model: mtrec_model::ModelConfig {
            architecture: mtrec_model::Architecture::Mmoe,
            n_experts: 3,
            expert_hidden: vec![8],
            ..Default::default()
        },
        // a gradient combiner: the records hold gradient norms, cosines and conflict fractions
        balance: mtrec_balance::BalanceConfig { method: BalanceMethod::Pcgrad, ..Default::default() },
        train: TrainConfig {
            epochs: 3,
            batch_size: 32,
            log_every_steps: LOG_EVERY,
            early_stopping: EarlyStoppingConfig { metric: "mse".into(), patience: 100, ..Default::default() },
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Trains the config into `dir` and returns its records.
fn train(dir: &Path) -> Vec<EpochRecord> {
    let cfg = config();
    let ds = cfg.data.load().unwrap();
    let (_, records, _) = Trainer::new(&cfg, &ds, Device::flex())
        .with_run_dir(RunDirectory::create(dir, &cfg).unwrap())
        .verbose(false)
        .run()
        .unwrap();
    records
}

/// What each epoch tag should hold: (epoch, value) per tag, from the records of `metrics.jsonl`.
fn expected(dir: &Path) -> BTreeMap<String, Vec<(i64, f64)>> {
    let mut out: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for line in std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap().lines() {
        let record: EpochRecord = serde_json::from_str(line).unwrap();
        for (tag, v) in mtrec_train::epoch_scalars(&record) {
            out.entry(tag).or_default().push((record.epoch as i64, v));
        }
    }
    out
}

/// `read` (tag → (step, value)) holds exactly the epoch scalars of `metrics.jsonl` (to f32) and
/// the step scalars every `LOG_EVERY` steps.
fn check(read: &BTreeMap<String, Vec<(i64, f64)>>, dir: &Path, who: &str) {
    let expected = expected(dir);
    let n_steps = 3 * 640usize.div_ceil(32);
    for (tag, values) in &expected {
        let got = read.get(tag).unwrap_or_else(|| panic!("{who}: no `{tag}`"));
        assert_eq!(got.len(), values.len(), "{who}: {tag}");
        for ((se, ve), (sg, vg)) in values.iter().zip(got) {
            assert_eq!(se, sg, "{who}: {tag}");
            let tol = 1e-6 * ve.abs().max(1.0);
            assert!((ve - vg).abs() <= tol, "{who}: {tag} at {se}: {vg} ≠ {ve}");
        }
    }
    for tag in [
        "train_loss/task1",
        "gradient_cosine/task1~task2",
        "gradient_conflict/task1~task2",
        "valid/task2/mse",
        "valid/task1/gate_entropy",
        "learning_rate/model",
    ] {
        assert!(expected.contains_key(tag), "{who}: metrics.jsonl lacks {tag}: {:?}", expected.keys());
    }
    let conflicts = &expected["gradient_conflict/task1~task2"];
    assert!(conflicts.iter().all(|&(_, f)| (0.0..=1.0).contains(&f)), "{conflicts:?}");
    let step_tags: Vec<&str> = read.keys().filter(|t| t.starts_with("step/")).map(String::as_str).collect();
    let want = [
        "step/gate_entropy/task1",
        "step/gate_entropy/task2",
        "step/loss/task1",
        "step/loss/task2",
        "step/samples_per_sec",
        "step/task_weight/task1",
        "step/task_weight/task2",
    ];
    assert_eq!(step_tags, want, "{who}");
    for tag in ["step/gate_entropy/task1", "step/gate_entropy/task2"] {
        assert!(read[tag].iter().all(|&(_, e)| e > 0.0 && e <= 3f64.ln() + 1e-6), "{who}: {tag} within (0, ln 3]");
    }
    for tag in step_tags {
        let steps: Vec<i64> = read[tag].iter().map(|&(s, _)| s).collect();
        let want: Vec<i64> = (1..=n_steps as i64).filter(|s| s % LOG_EVERY as i64 == 0).collect();
        assert_eq!(steps, want, "{who}: {tag}");
        assert!(read[tag].iter().all(|&(_, v)| v.is_finite() && v >= 0.0), "{who}: {tag}");
    }
    assert!(!read.keys().any(|t| !t.starts_with("step/") && !expected.contains_key(t)), "{who}: extra tags");
}

#[test]
fn mtrecs_reader_reads_what_metrics_jsonl_holds() {
    let dir = tempfile::tempdir().unwrap();
    let records = train(dir.path());
    assert_eq!(records.len(), 3);
    let files = mtrec_train::event_files(dir.path()).unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    let mut read: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for s in mtrec_train::read_scalars(&files[0]).unwrap() {
        read.entry(s.tag).or_default().push((s.step, s.value as f64));
    }
    check(&read, dir.path(), "mtrec's reader");
    // the validation gate entropy of the selected model is the gate utilisation's, computed apart
    let summary: mtrec_train::Summary =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap()).unwrap();
    for task in ["task1", "task2"] {
        let (a, b) = (summary.valid[task]["gate_entropy"], summary.expert_utilisation[task].mean_entropy);
        assert!((a - b).abs() < 1e-5 * b, "{task}: {a} vs {b}");
        assert!(b > 0.0 && b <= 3f64.ln() + 1e-9, "{task}: at most ln 3 for 3 experts: {b}");
    }
    // the run's gradient conflict is the mean of the epochs' (each epoch's steps alike)
    let c = &summary.gradient_conflict["task1~task2"];
    let cos: Vec<f64> = records.iter().map(|r| r.task_gradient_cosines.as_ref().unwrap()["task1~task2"]).collect();
    assert!((c.mean_cosine - cos.iter().sum::<f64>() / 3.0).abs() < 1e-12, "{c:?} {cos:?}");
}

#[test]
fn tensorboard_reads_what_metrics_jsonl_holds() {
    let Ok(python) = std::env::var("MTREC_PYTHON") else {
        eprintln!("SKIP: set MTREC_PYTHON to a Python with the tensorboard package");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    train(dir.path());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/read_tensorboard.py");
    let out = Command::new(&python).arg(&script).arg(dir.path()).output().expect("runs MTREC_PYTHON");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: BTreeMap<String, Vec<(i64, f64)>> = serde_json::from_slice(&out.stdout).unwrap();
    check(&json, dir.path(), "TensorBoard's EventAccumulator");
}
