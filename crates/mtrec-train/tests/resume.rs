//! Checkpoints and resume, in a test binary of their own: burn's generator is global and
//! parameter initialisation draws from it, so the runs compared here must not share the process
//! with other tests; the tests of this file take a lock for the same reason.

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::Mutex,
    time::Duration,
};

use burn::tensor::Device;
use mtrec_balance::BalanceMethod;
use mtrec_data::SyntheticConfig;
use mtrec_train::{
    CHECKPOINT_FILE, Checkpoint, DataConfig, DataSource, EarlyStopping, EarlyStoppingConfig, EpochRecord,
    ExperimentConfig, RunDirectory, Summary, TrainConfig, TrainError, Trainer, TrainingState,
};

static LOCK: Mutex<()> = Mutex::new(());

fn config(method: BalanceMethod) -> ExperimentConfig {
    ExperimentConfig {
        data: DataConfig {
            source: DataSource::Synthetic,
            synthetic: SyntheticConfig { dim: 10, n_train: 1500, n_valid: 400, n_test: 400, ..Default::default() },
            ..Default::default()
        },
        model: mtrec_model::ModelConfig {
            architecture: mtrec_model::Architecture::Mmoe,
            n_experts: 3,
            expert_hidden: vec![16],
            dropout: 0.2, // dropout draws from burn's generator: resume must restore it
            ..Default::default()
        },
        balance: mtrec_balance::BalanceConfig { method, ..Default::default() },
        train: TrainConfig {
            epochs: 6,
            batch_size: 64,
            lr: 3e-3,
            early_stopping: EarlyStoppingConfig { metric: "mse".into(), patience: 100, ..Default::default() },
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A record without its timings.
fn untimed(r: &EpochRecord) -> EpochRecord {
    EpochRecord { seconds: 0.0, samples_per_sec: 0.0, ..r.clone() }
}

fn untimed_summary(s: &Summary) -> Summary {
    Summary { train_samples_per_sec: 0.0, wall_seconds: 0.0, ..s.clone() }
}

/// Equal up to the last bit or two of each float: epochs before the interruption come back from
/// `metrics.jsonl`, and serde_json's float parsing may differ from the written value in the last
/// place.
fn assert_same<T: serde::Serialize + std::fmt::Debug>(a: &T, b: &T, what: &str) {
    fn close(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        use serde_json::Value::*;
        match (a, b) {
            (Number(x), Number(y)) => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                (x - y).abs() <= 1e-14 * x.abs().max(y.abs())
            }
            (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| close(x, y)),
            (Object(x), Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
            }
            _ => a == b,
        }
    }
    let (va, vb) = (serde_json::to_value(a).unwrap(), serde_json::to_value(b).unwrap());
    assert!(close(&va, &vb), "{what}:\n{a:?}\n{b:?}");
}

fn records_on_disk(dir: &Path) -> Vec<EpochRecord> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| untimed(&serde_json::from_str(l).unwrap()))
        .collect()
}

/// A run interrupted after epoch 3 and resumed ends exactly as the uninterrupted run: same
/// metrics every epoch, same task weights (the balancers' state), same selected model and test
/// metrics. GradNorm has learned weights with Adam moments and initial losses; RLW draws random
/// weights every step; GradVac moves its target cosines every step and draws task orders; the
/// model has dropout.
#[test]
fn a_resumed_run_ends_as_the_uninterrupted_run() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for method in [BalanceMethod::Gradnorm, BalanceMethod::Rlw, BalanceMethod::Gradvac, BalanceMethod::Famo] {
        let mut cfg = config(method.clone());
        // validations within the epochs: their model selection is part of the checkpoint too
        cfg.train.evals_per_epoch = if method == BalanceMethod::Rlw { 2 } else { 1 };
        let ds = cfg.data.load().unwrap();
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));

        let (summary_a, records_a, _) = Trainer::new(&cfg, &ds, Device::flex())
            .with_run_dir(RunDirectory::create(&a, &cfg).unwrap())
            .verbose(false)
            .run()
            .unwrap();

        let err = Trainer::new(&cfg, &ds, Device::flex())
            .with_run_dir(RunDirectory::create(&b, &cfg).unwrap())
            .verbose(false)
            .interrupt_after(3)
            .run()
            .err()
            .unwrap();
        assert!(matches!(err, TrainError::Interrupted { epoch: 3, .. }), "{err}");
        assert_eq!(Checkpoint::load(&b.join(CHECKPOINT_FILE)).unwrap().state.epoch, 3);
        // as if killed after logging epoch 4 but before its checkpoint: the line must go
        let mut log = std::fs::read_to_string(b.join("metrics.jsonl")).unwrap();
        log.push_str(std::fs::read_to_string(a.join("metrics.jsonl")).unwrap().lines().nth(3).unwrap());
        log.push('\n');
        std::fs::write(b.join("metrics.jsonl"), log).unwrap();

        let (summary_b, records_b, _) = Trainer::new(&cfg, &ds, Device::flex())
            .with_run_dir(RunDirectory::open(&b).unwrap())
            .verbose(false)
            .resume(true)
            .run()
            .unwrap();

        assert_eq!(records_b.len(), 6, "{method:?}");
        assert!(records_b.iter().all(|r| r.within_epoch.len() == cfg.train.evals_per_epoch - 1));
        for (ra, rb) in records_a.iter().zip(&records_b) {
            assert_same(&untimed(ra), &untimed(rb), &format!("{method:?} epoch {}", ra.epoch));
        }
        assert_same(&untimed_summary(&summary_a), &untimed_summary(&summary_b), &format!("{method:?} summary"));
        assert_same(&records_on_disk(&a), &records_on_disk(&b), &format!("{method:?}: metrics.jsonl"));
        // the resumed run's TensorBoard file holds each epoch once, as metrics.jsonl has it (the
        // interrupted run's file is replaced by one rewritten from the kept records)
        let files = mtrec_train::event_files(&b).unwrap();
        assert_eq!(files.len(), 1, "{method:?}: {files:?}");
        let read: Vec<_> = mtrec_train::read_scalars(&files[0]).unwrap();
        let losses: Vec<(i64, f32)> =
            read.iter().filter(|s| s.tag == "train_loss/task1").map(|s| (s.step, s.value)).collect();
        let want: Vec<(i64, f32)> = records_b.iter().map(|r| (r.epoch as i64, r.train_loss["task1"] as f32)).collect();
        assert_eq!(losses, want, "{method:?}");
        // the weights moved, so the comparison above compared the balancer's state
        let w = &records_b[5].task_weights;
        assert!((w["task1"] - w["task2"]).abs() > 1e-6, "{method:?}: {w:?}");
    }
}

/// An adversarial run with every adversary option on — LEACE erasure refitted every 7 steps and
/// before every validation, 2 extra adversary updates a step, a deeper head, the linear λ ramp — on
/// the synthetic set's planted attribute, interrupted after epoch 3 and resumed, ends as the
/// uninterrupted run: the eraser, the head and its optimiser state are in the checkpoint, and the
/// dead-head detector replays the logged epochs.
#[test]
fn a_resumed_adversarial_run_ends_as_the_uninterrupted_run() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut cfg = config(BalanceMethod::Fixed);
    cfg.data.synthetic.sensitive_leak = 1.0;
    cfg.model.erasure = mtrec_model::Erasure::Leace;
    cfg.model.erasure_refit_steps = 7;
    cfg.model.adversary_steps = 2;
    cfg.model.adversary_hidden = Some(vec![8, 4]);
    cfg.model.adversarial_weight = 0.5;
    cfg.model.adversarial_schedule = mtrec_model::AdversarialSchedule::Linear;
    let ds = cfg.data.load().unwrap();
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let run = |dir: RunDirectory, interrupt: Option<usize>, resume: bool| {
        let mut t = Trainer::new(&cfg, &ds, Device::flex()).with_run_dir(dir).verbose(false).resume(resume);
        if let Some(e) = interrupt {
            t = t.interrupt_after(e);
        }
        t.run()
    };
    let (summary_a, records_a, _) = run(RunDirectory::create(&a, &cfg).unwrap(), None, false).unwrap();
    let err = run(RunDirectory::create(&b, &cfg).unwrap(), Some(3), false).err().unwrap();
    assert!(matches!(err, TrainError::Interrupted { epoch: 3, .. }), "{err}");
    let (summary_b, records_b, _) = run(RunDirectory::open(&b).unwrap(), None, true).unwrap();
    assert_eq!(records_b.len(), 6);
    for (ra, rb) in records_a.iter().zip(&records_b) {
        assert_same(&untimed(ra), &untimed(rb), &format!("adversarial epoch {}", ra.epoch));
    }
    assert_same(&untimed_summary(&summary_a), &untimed_summary(&summary_b), "adversarial summary");
    assert!(summary_b.adversarial_probe["sensitive"].linear.is_some());
}

/// A run whose text encoder trains (the tiny BERT of mtrec-text's fixtures on the small table's
/// titles; fully, and through LoRA adapters), interrupted after epoch 1 and resumed, ends as the
/// uninterrupted run: the checkpoint holds the encoder's (or the adapters') weights and their AdamW
/// state, and the encoder's dropout draws continue.
#[test]
fn a_resumed_fine_tuning_run_ends_as_the_uninterrupted_run() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("../mtrec-data/tests/fixtures/table-small");
    let tiny = root.join("../mtrec-text/tests/fixtures/tiny-bert/model");
    for finetune in ["full", "lora"] {
        let text = format!(
            "{}\n[[data.columns]]\nname = \"title\"\nkind = \"text\"\nencoder = {:?}\n\n[model.text]\nfinetune = \"{finetune}\"\nlr = 0.01\nlora_rank = 2\n",
            include_str!("fixtures/table_small.toml"),
            tiny.display().to_string()
        );
        let overrides = [format!("data.dir={:?}", dir.display().to_string()), "train.epochs=3".into()];
        let cfg = ExperimentConfig::from_toml(&text, "fine-tuning config", &overrides).unwrap();
        let ds = cfg.data.load().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        let trainer = |dir: RunDirectory| Trainer::new(&cfg, &ds, Device::flex()).with_run_dir(dir).verbose(false);
        let (summary_a, records_a, _) = trainer(RunDirectory::create(&a, &cfg).unwrap()).run().unwrap();
        let (_, records_c, _) = Trainer::new(&cfg, &ds, Device::flex()).verbose(false).run().unwrap();
        assert_same(
            &records_a.iter().map(untimed).collect::<Vec<_>>(),
            &records_c.iter().map(untimed).collect(),
            finetune,
        );
        let err = trainer(RunDirectory::create(&b, &cfg).unwrap()).interrupt_after(1).run().err().unwrap();
        assert!(matches!(err, TrainError::Interrupted { epoch: 1, .. }), "{err}");
        let (summary_b, records_b, _) = trainer(RunDirectory::open(&b).unwrap()).resume(true).run().unwrap();
        assert_eq!(records_b.len(), 3, "{finetune}");
        for (ra, rb) in records_a.iter().zip(&records_b) {
            assert_same(&untimed(ra), &untimed(rb), &format!("{finetune} epoch {}", ra.epoch));
        }
        assert_same(&untimed_summary(&summary_a), &untimed_summary(&summary_b), &format!("{finetune} summary"));
    }
}

/// A checkpoint written by another config is refused, naming the checkpoint; more epochs and a
/// moved data folder are allowed.
#[test]
fn a_checkpoint_of_another_config_is_refused() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut cfg = config(BalanceMethod::Fixed);
    cfg.train.epochs = 2;
    let ds = cfg.data.load().unwrap();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("run");
    Trainer::new(&cfg, &ds, Device::flex())
        .with_run_dir(RunDirectory::create(&dir, &cfg).unwrap())
        .verbose(false)
        .run()
        .unwrap();
    let mut other = cfg.clone();
    other.model.n_experts = 4;
    let err = Trainer::new(&other, &ds, Device::flex())
        .with_run_dir(RunDirectory::open(&dir).unwrap())
        .verbose(false)
        .resume(true)
        .run()
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains(CHECKPOINT_FILE) && err.contains("different config"), "{err}");
    let mut longer = cfg.clone();
    longer.train.epochs = 3;
    let (summary, records, _) = Trainer::new(&longer, &ds, Device::flex())
        .with_run_dir(RunDirectory::open(&dir).unwrap())
        .verbose(false)
        .resume(true)
        .run()
        .unwrap();
    assert_eq!((summary.epochs_run, records.len(), records[2].epoch), (3, 3, 3));
    let recorded = ExperimentConfig::from_file(&dir.join("config.toml"), &[]).unwrap();
    assert_eq!(recorded.train.epochs, 3, "config.toml records the new budget");
    let missing = RunDirectory::open(root.path().join("none")).unwrap_err().to_string();
    assert!(missing.contains("config.toml"), "{missing}");
}

/// The marker a child process writes: section contents derived from the epoch, so a file that
/// mixes two checkpoints, or a torn write, is detectable.
fn marked_checkpoint(epoch: usize) -> Checkpoint {
    let byte = (epoch % 251) as u8;
    Checkpoint {
        state: TrainingState {
            epoch,
            config: String::new(),
            balancer: serde_json::Value::Null,
            early_stopping: EarlyStopping::new(true, 1, 0.0),
            best_valid: None,
            train_seconds: 0.0,
            samples: epoch,
            wall_seconds: 0.0,
        },
        model: vec![byte; 24 << 20],
        optimizer: vec![byte.wrapping_add(1); 8 << 20],
        best_model: vec![],
        sparse_optimizer: vec![byte.wrapping_add(2); 1 << 20],
    }
}

/// The child: writes checkpoints of growing epochs into `MTREC_CHECKPOINT_CHILD` until killed.
#[test]
#[ignore = "run by a_checkpoint_killed_while_written_never_loads_as_valid_but_wrong in a child process"]
fn checkpoint_writer_child() {
    let Ok(dir) = std::env::var("MTREC_CHECKPOINT_CHILD") else { return };
    let path = Path::new(&dir).join(CHECKPOINT_FILE);
    for epoch in 1.. {
        marked_checkpoint(epoch).save(&path).unwrap();
    }
}

/// Kills a process that writes checkpoints in a loop at random moments: what is left under the
/// checkpoint's name is always a complete checkpoint (or nothing yet), never a torn one, because
/// the file is written to a temporary name and renamed.
#[test]
fn a_checkpoint_killed_while_written_never_loads_as_valid_but_wrong() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let exe = std::env::current_exe().unwrap();
    let (mut loaded, mut torn_temporaries) = (0, 0);
    for round in 0..8u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(&exe)
            .args(["--exact", "checkpoint_writer_child", "--ignored", "--test-threads=1"])
            .env("MTREC_CHECKPOINT_CHILD", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // kill it at a moment spread over rounds once it has finished a first checkpoint (waiting
        // for that, not for a fixed time, so a loaded machine cannot make the test vacuous)
        let path = dir.path().join(CHECKPOINT_FILE);
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !path.exists() {
            assert!(std::time::Instant::now() < deadline, "round {round}: the writer wrote no checkpoint in 120 s");
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(7 + 31 * round));
        child.kill().unwrap();
        child.wait().unwrap();
        if path.exists() {
            let c = Checkpoint::load(&path).expect("the checkpoint left by a killed writer loads");
            assert_eq!(c, marked_checkpoint(c.state.epoch), "round {round}: a checkpoint mixing two writes");
            loaded += 1;
        }
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() != CHECKPOINT_FILE {
                torn_temporaries += 1;
                let bytes = std::fs::read(entry.path()).unwrap();
                if let Ok(c) = Checkpoint::from_bytes(&bytes) {
                    // a temporary that was complete when the writer died is still a valid checkpoint
                    assert_eq!(c, marked_checkpoint(c.state.epoch), "round {round}");
                }
            }
        }
    }
    eprintln!("8 kills: {loaded} checkpoints loaded, {torn_temporaries} temporaries left behind");
    assert_eq!(loaded, 8, "a finished checkpoint is never lost to a later, killed write");
}

/// With row-sparse tables (lazy Adam's per-row moments and step counts live in the checkpoint's
/// sparse section), a run interrupted after epoch 2 and resumed ends as the uninterrupted run.
#[test]
fn a_resumed_sparse_run_ends_as_the_uninterrupted_run() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let data = tempfile::tempdir().unwrap();
    let generator = mtrec_data::SyntheticCtrConfig { rows: 6_000, users: 500, items: 300, ..Default::default() };
    mtrec_data::write_synthetic_ctr(generator, data.path(), mtrec_data::TableFormat::Parquet, |_| {}).unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/ctr_mmoe.toml");
    let sets = [
        format!("data.dir={:?}", data.path().display().to_string()),
        "model.sparse_embeddings=true".into(),
        "model.expert_hidden=[8]".into(),
        "model.tower_hidden=[4]".into(),
        "model.dropout=0.1".into(),
        "train.epochs=4".into(),
        "train.batch_size=256".into(),
        "train.early_stopping.patience=100".into(),
    ];
    let mut cfg = ExperimentConfig::from_file(&config, &sets).unwrap();
    cfg.data.cache = false;
    let ds = cfg.data.load().unwrap();
    assert!(cfg.model.sparse_tables(&ds.schema));
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let trainer = |dir: RunDirectory| Trainer::new(&cfg, &ds, Device::flex()).with_run_dir(dir).verbose(false);
    let (summary_a, records_a, _) = trainer(RunDirectory::create(&a, &cfg).unwrap()).run().unwrap();
    let err = trainer(RunDirectory::create(&b, &cfg).unwrap()).interrupt_after(2).run().err().unwrap();
    assert!(matches!(err, TrainError::Interrupted { epoch: 2, .. }), "{err}");
    let checkpoint = Checkpoint::load(&b.join(CHECKPOINT_FILE)).unwrap();
    assert!(!checkpoint.sparse_optimizer.is_empty(), "the sparse state is saved");
    let (summary_b, records_b, _) = trainer(RunDirectory::open(&b).unwrap()).resume(true).run().unwrap();
    assert_eq!(records_b.len(), 4);
    for (ra, rb) in records_a.iter().zip(&records_b) {
        assert_same(&untimed(ra), &untimed(rb), &format!("sparse epoch {}", ra.epoch));
    }
    assert_same(&untimed_summary(&summary_a), &untimed_summary(&summary_b), "sparse summary");
    // without the sparse state the resumed run would differ: the comparison above can fail
    let mut stripped = checkpoint.clone();
    stripped.sparse_optimizer.clear();
    stripped.save(&b.join(CHECKPOINT_FILE)).unwrap();
    std::fs::write(b.join("metrics.jsonl"), records_on_disk_text(&a, 2)).unwrap();
    let (_, records_c, _) = trainer(RunDirectory::open(&b).unwrap()).resume(true).run().unwrap();
    assert_ne!(untimed(&records_a[3]), untimed(&records_c[3]), "lazy Adam's state matters");
}

/// The first `n` lines of a run's `metrics.jsonl`.
fn records_on_disk_text(dir: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines().take(n).map(|l| format!("{l}\n")).collect()
}
