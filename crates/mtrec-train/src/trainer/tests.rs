//! The training loop's tests: every balancer trains every architecture (on tables, multiclass
//! tasks and a fine-tuned text encoder too), run folders are written and re-evaluate to their
//! summary, configs are checked, adversarial and LEACE runs report their probes, and encoder
//! gradients are recorded.

use super::*;
use crate::{DataConfig, DataSource, TrainConfig};
use crate::{RunData, evaluate, evaluate_run};
use mtrec_data::SyntheticConfig;
use mtrec_data::batches;
use mtrec_model::MultiTaskModel;

fn tiny_config(arch: mtrec_model::Architecture) -> ExperimentConfig {
    ExperimentConfig {
        data: DataConfig {
            source: DataSource::Synthetic,
            synthetic: SyntheticConfig { dim: 10, n_train: 2000, n_valid: 500, n_test: 500, ..Default::default() },
            ..Default::default()
        },
        model: mtrec_model::ModelConfig {
            architecture: arch,
            n_experts: 4,
            expert_hidden: vec![16],
            bottom_hidden: vec![32],
            ..Default::default()
        },
        train: TrainConfig {
            epochs: 8,
            batch_size: 64,
            lr: 3e-3,
            early_stopping: crate::EarlyStoppingConfig { metric: "mse".into(), patience: 100, ..Default::default() },
            ..Default::default()
        },
        ..Default::default()
    }
}

/// `model.bottom = "dcn_v2"` under shared-bottom, MMoE and PLE: the model gains exactly the
/// cross layers' parameters (L·(d² + d) on the d = 10 input vector) and trains.
#[test]
fn a_dcn_v2_bottom_trains_under_every_shared_architecture() {
    use burn::module::Module;
    use mtrec_model::Architecture::*;
    for arch in [SharedBottom, Mmoe, Ple] {
        let mut cfg = tiny_config(arch.clone());
        cfg.train.epochs = 4;
        let ds = cfg.data.load().unwrap();
        let plain = cfg.build_model(&ds.schema, &Device::flex()).unwrap().num_params();
        cfg.model.bottom = mtrec_model::Bottom::DcnV2;
        cfg.model.cross_layers = 2;
        let crossed = cfg.build_model(&ds.schema, &Device::flex()).unwrap().num_params();
        assert_eq!(crossed - plain, 2 * (10 * 10 + 10), "{arch:?}");
        let (_, records, _) = Trainer::new(&cfg, &ds, Device::flex()).verbose(false).run().unwrap();
        for task in ["task1", "task2"] {
            let (first, last) = (records[0].train_loss[task], records[3].train_loss[task]);
            assert!(last < 0.8 * first, "{arch:?} {task}: {first} → {last}");
        }
    }
    let mut cfg = tiny_config(Mmoe);
    cfg.model.bottom = mtrec_model::Bottom::DcnV2;
    cfg.model.cross_layers = 0;
    assert!(cfg.model.validate().unwrap_err().contains("model.cross_layers"));
}

#[test]
fn short_training_run_lowers_the_loss_and_writes_the_run_files() {
    for arch in [mtrec_model::Architecture::Mmoe, mtrec_model::Architecture::SharedBottom] {
        let cfg = tiny_config(arch.clone());
        let ds = cfg.data.load().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let run = RunDirectory::create(dir.path().join("run"), &cfg).unwrap();
        let (summary, records, _) =
            Trainer::new(&cfg, &ds, Device::flex()).with_run_dir(run).verbose(false).run().unwrap();
        let first = &records[0].train_loss;
        let last = &records.last().unwrap().train_loss;
        for task in ["task1", "task2"] {
            assert!(last[task] < 0.7 * first[task], "{arch:?} {task}: {} → {}", first[task], last[task]);
            // the model must beat predicting the mean: MSE clearly below the label variance
            let labels = ds.test.label_column(if task == "task1" { 0 } else { 1 }, 2);
            let mean = labels.iter().sum::<f32>() / labels.len() as f32;
            let var = labels.iter().map(|y| (y - mean).powi(2)).sum::<f32>() as f64 / labels.len() as f64;
            eprintln!("{arch:?} {task}: test mse {} label var {var}", summary.test[task]["mse"]);
            assert!(
                summary.test[task]["mse"] < 0.9 * var,
                "{arch:?} {task}: mse {} var {var}",
                summary.test[task]["mse"]
            );
        }
        let lines = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 8);
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("run/summary.json")).unwrap()).unwrap();
        for key in
            ["model", "balance", "device", "seed", "best_epoch", "epochs_run", "train_samples_per_sec", "wall_seconds"]
        {
            assert!(s.get(key).is_some(), "summary.json lacks {key}");
        }
        assert!(s["test"]["task1"]["mae"].as_f64().unwrap() > 0.0);
        assert!(dir.path().join("run/best_model.bpk").exists());
        assert!(dir.path().join("run/config.toml").exists());
    }
}

/// The saved model re-evaluates to the metrics the run reported.
/// `train.evals_per_epoch = 3`: two validations within each epoch besides its end, every one
/// judged by model selection; the summary holds the selected point's validation metrics, and
/// `best_model.bpk` is that point's model.
#[test]
fn validations_within_an_epoch_select_among_all_points() {
    let mut cfg = tiny_config(mtrec_model::Architecture::Mmoe);
    (cfg.train.epochs, cfg.train.evals_per_epoch, cfg.train.lr) = (1, 3, 1e-1);
    // a high learning rate: the validation error jumps around, so the best point can lie within
    // an epoch; the test needs such a run (the generator is shared with the tests running beside
    // it, so the first seed whose run selects a point within the epoch is taken)
    let ds = cfg.data.load().unwrap();
    for seed in 0..20 {
        cfg.seed = seed;
        if within_epoch_selection(&cfg, &ds) {
            return;
        }
    }
    panic!("no seed of 20 selected a point within the epoch");
}

/// One run of [`validations_within_an_epoch_select_among_all_points`]: its checks, and whether
/// the selected point lies within the epoch (else nothing is checked of its model).
fn within_epoch_selection(cfg: &ExperimentConfig, ds: &MtlDataset) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let run = RunDirectory::create(dir.path().join("run"), cfg).unwrap();
    let (summary, records, _) = Trainer::new(cfg, ds, Device::flex()).with_run_dir(run).verbose(false).run().unwrap();
    // 2000 rows in batches of 64: 32 batches, validated after 11, 22 and 32 (the end)
    let mut points = Vec::new(); // (epochs trained, monitor, valid, best)
    for r in &records {
        assert_eq!(r.within_epoch.iter().map(|v| v.batches).collect::<Vec<_>>(), [11, 22]);
        let e = (r.epoch - 1) as f64;
        assert_eq!(r.within_epoch.iter().map(|v| v.epochs).collect::<Vec<_>>(), [e + 1.0 / 3.0, e + 2.0 / 3.0]);
        points.extend(r.within_epoch.iter().map(|v| (v.epochs, v.monitor, v.valid.clone(), v.best)));
        points.push((r.epoch as f64, r.monitor, r.valid.clone(), r.best));
    }
    // the model trained between the points, and "best" marks each new minimum of the MSE
    let mut best_so_far = f64::INFINITY;
    for (epochs, monitor, _, best) in &points {
        assert_eq!(*best, *monitor < best_so_far, "point {epochs}");
        best_so_far = best_so_far.min(*monitor);
    }
    let monitors: Vec<f64> = points.iter().map(|p| p.1).collect();
    assert!(monitors.windows(2).all(|w| w[0] != w[1]), "{monitors:?}");
    let selected = points.iter().rposition(|p| p.3).unwrap();
    let (epochs, _, valid, _) = &points[selected];
    eprintln!("seed {}: validation mse {monitors:?}: selected after {epochs} epochs", cfg.seed);
    assert_eq!(summary.best_after_epochs, Some(*epochs));
    assert_eq!(summary.best_epoch, epochs.ceil() as usize);
    assert_eq!(&summary.valid, valid);
    if epochs.fract() == 0.0 {
        return false;
    }
    // the selected point lies within the epoch: its model is the one kept
    let (_, _, again) = evaluate_run(&dir.path().join("run"), Split::Valid, &[], None).unwrap();
    assert_eq!(by_task(&ds.schema, &again), summary.valid);
    true
}

#[test]
fn train_evals_per_epoch_must_be_positive() {
    let err = ExperimentConfig::from_toml("[train]\nevals_per_epoch = 0\n", "x.toml", &[]).unwrap_err().to_string();
    assert!(err.contains("train.evals_per_epoch"), "{err}");
}

#[test]
fn evaluate_run_reproduces_the_summary() {
    let mut cfg = tiny_config(mtrec_model::Architecture::Mmoe);
    cfg.train.epochs = 3;
    let ds = cfg.data.load().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = RunDirectory::create(dir.path().join("run"), &cfg).unwrap();
    let (summary, _, _) = Trainer::new(&cfg, &ds, Device::flex()).with_run_dir(run).verbose(false).run().unwrap();
    for (split, reported) in [(Split::Test, &summary.test), (Split::Valid, &summary.valid)] {
        let (_, data, metrics) = evaluate_run(&dir.path().join("run"), split, &[], None).unwrap();
        for (t, task) in data.schema().tasks.iter().enumerate() {
            let (a, b) = (metrics[t]["mse"], reported[&task.name]["mse"]);
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{split:?} {}: {a} vs {b}", task.name);
        }
    }
    let err = evaluate_run(&dir.path().join("nothing"), Split::Test, &[], None).unwrap_err().to_string();
    assert!(err.contains("config.toml"), "{err}");
}

#[test]
fn early_stopping_on_an_unknown_task_is_a_config_error() {
    let mut cfg = tiny_config(mtrec_model::Architecture::Mmoe);
    cfg.train.early_stopping.task = "income".into();
    let ds = cfg.data.load().unwrap();
    let err = Trainer::new(&cfg, &ds, Device::flex()).verbose(false).run().err().unwrap().to_string();
    assert!(err.contains("train.early_stopping.task"), "{err}");
}

/// Every balancer with every architecture: the loss falls, the weights are logged every epoch,
/// gradient methods log per-task gradient norms.
#[test]
fn every_balancer_trains_every_architecture() {
    use mtrec_balance::BalanceMethod::*;
    use mtrec_model::Architecture as A;
    // AdaTT, STEM and HoME learn this tiny task more slowly (1.62 → 1.39 in 8 epochs for AdaTT, where
    // MMoE falls below 0.7×; on the MMoE paper's synthetic set AdaTT beats MMoE in 10 epochs):
    // they run 8 epochs and must fall below 0.95×
    for (arch, epochs, factor) in
        [(A::Mmoe, 4, 0.8), (A::SharedBottom, 4, 0.8), (A::Adatt, 8, 0.95), (A::Stem, 8, 0.95), (A::Home, 8, 0.95)]
    {
        for method in mtrec_balance::BalanceMethod::ALL {
            let mut cfg = tiny_config(arch.clone());
            cfg.train.epochs = epochs;
            cfg.balance.method = method.clone();
            if method == Gradnorm && matches!(arch, A::Adatt | A::Stem | A::Home) {
                // their experts are per task: no one last shared layer (a config error that says so)
                cfg.balance.gradnorm_layer = Some(mtrec_balance::GradNormLayer::Representation);
            }
            let ds = cfg.data.load().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let run = RunDirectory::create(dir.path().join("run"), &cfg).unwrap();
            let (summary, records, _) =
                Trainer::new(&cfg, &ds, Device::flex()).with_run_dir(run).verbose(false).run().unwrap();
            assert_eq!(summary.balance, method.as_str());
            for task in ["task1", "task2"] {
                let (first, last) = (records[0].train_loss[task], records.last().unwrap().train_loss[task]);
                assert!(last < factor * first, "{arch:?} {method:?} {task}: {first} → {last}");
            }
            let lines = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
            for line in lines.lines() {
                let r: serde_json::Value = serde_json::from_str(line).unwrap();
                assert!(r["task_weights"]["task2"].as_f64().unwrap().is_finite(), "{method:?}: {line}");
                // the combiners measure every step, fixed/DWA/RLW every `diagnose_every`-th step
                let combining = matches!(
                    method,
                    Pcgrad
                        | Mgda
                        | Cagrad
                        | ImtlG
                        | Gradvac
                        | AlignedMtl
                        | Upgrad
                        | NashMtl
                        | Fairgrad
                        | DbMtl
                        | Fixed
                        | Dwa
                        | Rlw
                );
                let gradient_based = combining || method == Gradnorm;
                assert_eq!(r["task_gradient_norms"]["task1"].is_f64(), gradient_based, "{method:?}: {line}");
                let cosine = r["task_gradient_cosines"]["task1~task2"].as_f64();
                assert_eq!(cosine.is_some(), combining, "{method:?}: {line}");
                assert!(cosine.is_none_or(|c| (-1.0..=1.0).contains(&c)), "{method:?}: {line}");
            }
            if method == Gradnorm {
                let w = &records.last().unwrap().task_weights;
                assert!((w["task1"] + w["task2"] - 2.0).abs() < 1e-9, "Σw = T: {w:?}");
            }
        }
    }
}

#[test]
fn gradnorm_on_a_batch_norm_model_is_a_config_error_naming_the_keys() {
    let mut cfg = tiny_config(mtrec_model::Architecture::SharedBottom);
    cfg.model.batch_norm = true;
    cfg.balance.method = mtrec_balance::BalanceMethod::Gradnorm;
    let ds = cfg.data.load().unwrap();
    let err = Trainer::new(&cfg, &ds, Device::flex()).verbose(false).run().err().unwrap().to_string();
    assert!(err.contains("balance.gradnorm_layer") && err.contains("model.batch_norm"), "{err}");
    cfg.balance.gradnorm_layer = Some(mtrec_balance::GradNormLayer::Representation);
    cfg.train.epochs = 1;
    Trainer::new(&cfg, &ds, Device::flex()).verbose(false).run().unwrap();
}

/// Every parameter of `model` with its values, in visiting order.
pub(crate) fn parameter_values<C: MultiTaskModule>(model: &MultiTaskNet<C>) -> Vec<(burn::module::ParamId, Vec<f32>)> {
    use burn::module::{ModuleVisitor, Param, ParamId};
    struct Values(Vec<(ParamId, Vec<f32>)>);
    impl ModuleVisitor for Values {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push((param.id, param.val().into_data().try_into_vec::<f32>().unwrap()));
        }
    }
    let mut v = Values(vec![]);
    model.visit(&mut v);
    v.0
}

/// `tasks.task2.lr_scale` scales the learning rate of task 2's own parameters only.
#[test]
fn per_task_lr_scale_reaches_only_that_tasks_parameters() {
    use mtrec_model::MultiTaskModel;
    let values = parameter_values;
    let mut cfg = tiny_config(mtrec_model::Architecture::Mmoe);
    cfg.tasks.insert("task2".into(), crate::TaskOptions { lr_scale: 1e-3 });
    let ds = cfg.data.load().unwrap();
    let ad = Device::flex().autodiff();
    let mut model = cfg.model.init(&ds.schema, &ad);
    let before = values(&model); // materialises the lazily initialised parameters
    let lr = cfg.learning_rates(&ds.schema, &model).unwrap();
    let mut optim = cfg.train.optimizer();
    let mut balancer = cfg.balancer(&ds.schema).unwrap();
    let kinds = ds.schema.task_kinds();
    for batch in batches(&ds.train, ds.schema.widths(), 64, BatchOrder::Sequential, &ad).take(10) {
        (model, _) = crate::train_step(model, &mut optim, balancer.as_mut(), &batch, &kinds, lr.clone()).unwrap();
    }
    let groups = [model.task_parameters(0), model.task_parameters(1)];
    let after = values(&model);
    let mut moved = [0.0f64; 3]; // task 1, task 2, shared: largest |Δ|
    assert_eq!(before.len(), after.len());
    for ((id0, a), (id, b)) in before.iter().zip(&after) {
        assert_eq!(id0, id);
        let slot = if groups[0].matches(id, None) {
            0
        } else if groups[1].matches(id, None) {
            1
        } else {
            2
        };
        let delta = a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max);
        moved[slot] = moved[slot].max(delta);
    }
    assert!(moved[1] < 0.02 * moved[0] && moved[1] < 0.02 * moved[2] && moved[1] > 0.0, "{moved:?}");
    cfg.tasks.insert("task9".into(), crate::TaskOptions::default());
    let err = Trainer::new(&cfg, &ds, Device::flex()).verbose(false).run().err().unwrap().to_string();
    assert!(err.contains("tasks.task9"), "{err}");
}

/// The committed census fixture (200 train, 100 test rows).
fn census_fixture() -> std::path::PathBuf {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    std::path::Path::new(&dir).join("../mtrec-data/tests/fixtures/census-small")
}

fn census_config(arch: mtrec_model::Architecture, cascade: bool) -> ExperimentConfig {
    ExperimentConfig {
        data: DataConfig { source: DataSource::Census, dir: census_fixture(), cascade, ..Default::default() },
        model: mtrec_model::ModelConfig { architecture: arch, ..Default::default() },
        train: TrainConfig { epochs: 2, batch_size: 64, ..Default::default() },
        ..Default::default()
    }
}

/// ESMM and AITM on labels that are not a funnel are refused with the rows that break it; on the
/// cascade they train.
#[test]
fn funnel_models_refuse_labels_that_are_not_a_funnel() {
    for arch in [mtrec_model::Architecture::Esmm, mtrec_model::Architecture::Aitm] {
        let cfg = census_config(arch.clone(), false);
        let ds = cfg.data.load().unwrap();
        let err = Trainer::new(&cfg, &ds, Device::flex()).verbose(false).run().err().unwrap().to_string();
        assert!(err.contains("needs funnel labels") && err.contains("data.cascade"), "{err}");
        assert!(err.contains("`never_married` is 1 where `income` is 0"), "{err}");
        let cfg = census_config(arch.clone(), true);
        let ds = cfg.data.load().unwrap();
        Trainer::new(&cfg, &ds, Device::flex()).verbose(false).run().unwrap();
    }
}

/// On funnel data every later step reports `cvr_auc` (on the rows where the previous step is
/// positive); for ESMM it is computed from pCVR, its conditional output, and equals the AUC of
/// that output on those rows recomputed here.
#[test]
fn funnel_steps_report_the_cvr_auc() {
    let cfg = census_config(mtrec_model::Architecture::Esmm, true);
    let ds = cfg.data.load().unwrap();
    let (summary, _, model) = Trainer::new(&cfg, &ds, Device::flex()).verbose(false).run().unwrap();
    let step = &summary.test["income_and_never_married"];
    assert!(step.contains_key("auc") && step.contains_key("cvr_auc"), "{step:?}");
    assert!(!summary.test["income"].contains_key("cvr_auc"));
    let batch = batches(&ds.test, ds.schema.widths(), 1000, BatchOrder::Sequential, &Device::flex()).next().unwrap();
    let outs = model.forward(batch.features);
    let pcvr = outs[1].conditional.clone().unwrap().into_data().try_into_vec::<f32>().unwrap();
    let (y0, y1) = (ds.test.label_column(0, 2), ds.test.label_column(1, 2));
    let expected = crate::metrics::conditional_auc(&pcvr, &y1, &y0).unwrap();
    assert!((step["cvr_auc"] - expected).abs() < 1e-12, "{} vs {expected}", step["cvr_auc"]);
    // an unconditional model is measured on the same rows with its own output
    let cfg = census_config(mtrec_model::Architecture::Mmoe, true);
    let (summary, _, _) = Trainer::new(&cfg, &ds, Device::flex()).verbose(false).run().unwrap();
    assert!(summary.test["income_and_never_married"].contains_key("cvr_auc"));
}

/// A model whose outputs are NaN is not evaluated into a finite AUC: evaluation stops with an
/// error naming the split, task and row.
#[test]
fn nan_outputs_stop_evaluation() {
    use burn::module::{ModuleMapper, Param};
    struct Poison;
    impl ModuleMapper for Poison {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.map(|t| t.mul_scalar(f32::NAN))
        }
    }
    let cfg = census_config(mtrec_model::Architecture::Mmoe, false);
    let ds = cfg.data.load().unwrap();
    let model = cfg.model.init(&ds.schema, &Device::flex()).map(&mut Poison);
    let err = evaluate(&model, &ds.valid, Split::Valid, &ds.schema, &Device::flex(), 64).unwrap_err().to_string();
    assert!(err.contains("income output on the valid split is NaN at row 0"), "{err}");
}

/// A task without the monitored metric this epoch is left out of the mean (and named); with no
/// task left it is an error, not a NaN monitor that never selects a model.
#[test]
fn the_monitored_mean_skips_tasks_without_the_metric() {
    let cfg = census_config(mtrec_model::Architecture::Mmoe, false);
    let schema = cfg.data.load().unwrap().schema;
    let with = |auc: Option<f64>| {
        let mut m = TaskMetrics::new();
        m.insert("logloss".into(), 0.3);
        if let Some(a) = auc {
            m.insert("auc".into(), a);
        }
        m
    };
    let (v, skipped) = monitored_value(&[with(None), with(Some(0.8))], &[0, 1], "auc", &schema).unwrap();
    assert_eq!((v, skipped), (0.8, vec!["income".to_string()]));
    let (v, skipped) = monitored_value(&[with(Some(0.6)), with(Some(0.8))], &[0, 1], "auc", &schema).unwrap();
    assert!((v - 0.7).abs() < 1e-12 && skipped.is_empty());
    let err = monitored_value(&[with(None), with(None)], &[0, 1], "auc", &schema).unwrap_err().to_string();
    assert!(err.contains("no monitored task has a validation auc"), "{err}");
}

/// With the adversarial `sex` task the summary holds the probe's AUC on the test split, and the
/// DANN schedule trains (λ rises from 0).
#[test]
fn adversarial_runs_report_the_probe() {
    let mut cfg = census_config(mtrec_model::Architecture::Mmoe, false);
    cfg.data.adversarial = Some("sex".into());
    cfg.model.adversarial_schedule = mtrec_model::AdversarialSchedule::Dann;
    let ds = cfg.data.load().unwrap();
    let (summary, _, _) = Trainer::new(&cfg, &ds, Device::flex()).verbose(false).run().unwrap();
    let probe = &summary.adversarial_probe["sex"];
    assert!(probe.test_auc.is_some_and(|a| (0.0..=1.0).contains(&a)), "{probe:?}");
    assert_eq!(probe.width, 2 * 16, "MMoE's two task mixtures of 16 units");
}

/// LEACE with every adversary option on (extra adversary steps, a deeper head, the linear ramp)
/// and fairness by `sex`: the selected model's representation of the training rows has no
/// covariance with `sex` left (the eraser was refitted before the validation that selected it);
/// the summary reports both probes; the test fairness metrics of `income` are those computed by
/// hand from the selected model's outputs, and `eval` of the run folder reproduces them.
#[test]
fn leace_leaves_no_linear_signal_and_fairness_is_reported() {
    let mut cfg = census_config(mtrec_model::Architecture::Mmoe, false);
    cfg.data.adversarial = Some("sex".into());
    cfg.model.erasure = mtrec_model::Erasure::Leace;
    cfg.model.erasure_refit_steps = 7;
    cfg.model.adversary_steps = 2;
    cfg.model.adversary_hidden = Some(vec![8, 4]);
    cfg.model.adversarial_schedule = mtrec_model::AdversarialSchedule::Linear;
    cfg.fairness.by = Some("sex".into());
    let ds = cfg.data.load().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = RunDirectory::create(dir.path().join("run"), &cfg).unwrap();
    let (summary, _, best) = Trainer::new(&cfg, &ds, Device::flex()).with_run_dir(run).verbose(false).run().unwrap();
    // `eval` of the run folder reproduces the test metrics, fairness included: the eraser is in best_model.bpk
    let (_, _, again) = evaluate_run(&dir.path().join("run"), Split::Test, &[], None).unwrap();
    for (t, task) in ds.schema.tasks.iter().enumerate() {
        for (key, want) in &summary.test[&task.name] {
            assert!((again[t][key] - want).abs() < 1e-9, "{} {key}: {} vs {want}", task.name, again[t][key]);
        }
    }
    let probe = &summary.adversarial_probe["sex"];
    assert!(probe.linear.as_ref().is_some_and(|l| l.test_auc.is_some()), "{probe:?}");
    // Cov(r(x), sex) on the training rows, relative to the deviations
    let n_tasks = ds.schema.n_tasks();
    let sex = ds.train.label_column(n_tasks - 1, n_tasks);
    let mut repr = Vec::new();
    for batch in batches(&ds.train, ds.schema.widths(), 512, BatchOrder::Sequential, &Device::flex()) {
        let shared = best.forward_shared(batch.features);
        repr.extend(best.representation(&shared).into_data().try_into_vec::<f32>().unwrap());
    }
    let (rows, width) = (sex.len(), repr.len() / sex.len());
    let mz = sex.iter().map(|&v| v as f64).sum::<f64>() / rows as f64;
    let sz = (sex.iter().map(|&v| (v as f64 - mz).powi(2)).sum::<f64>() / rows as f64).sqrt();
    for j in 0..width {
        let col: Vec<f64> = (0..rows).map(|r| repr[r * width + j] as f64).collect();
        let m = col.iter().sum::<f64>() / rows as f64;
        let sd = (col.iter().map(|v| (v - m).powi(2)).sum::<f64>() / rows as f64).sqrt();
        let cov = col.iter().zip(&sex).map(|(v, &z)| (v - m) * (z as f64 - mz)).sum::<f64>() / rows as f64;
        assert!(sd < 1e-6 || (cov / (sd * sz)).abs() < 1e-3, "column {j}: correlation with sex {}", cov / (sd * sz));
    }
    // fairness of income by sex, by hand from the outputs
    let (mut outputs, labels) = (Vec::new(), ds.test.label_column(0, n_tasks));
    for batch in batches(&ds.test, ds.schema.widths(), 512, BatchOrder::Sequential, &Device::flex()) {
        outputs.extend(best.forward(batch.features)[0].output.clone().into_data().try_into_vec::<f32>().unwrap());
    }
    let groups: Vec<i64> = ds.test.label_column(n_tasks - 1, n_tasks).iter().map(|&v| v as i64).collect();
    let by_hand = crate::fairness_metrics(&outputs, &labels, &groups);
    let test = &summary.test["income"];
    assert!(by_hand.contains_key("dp_gap") && by_hand.keys().any(|k| k.starts_with("auc_group_")), "{by_hand:?}");
    for (key, want) in &by_hand {
        let got = test.get(key).copied().unwrap_or(f64::NAN);
        assert!((got - want).abs() < 1e-9, "{key}: {got} vs {want} (test metrics {test:?})");
    }
    assert!(!summary.test["sex"].contains_key("dp_gap"), "the grouping task has no gaps of its own");
    // how much the income output alone says of sex, by hand
    let sex_test = ds.test.label_column(n_tasks - 1, n_tasks);
    let income_says = crate::roc_auc(&outputs, &sex_test).unwrap();
    assert!((probe.output_auc["income"] - income_says).abs() < 1e-9, "{probe:?}");
}

/// The planted attribute against the truth (`synthetic.sensitive_leak`: a linear and a
/// variance channel): without erasure the linear probe reads it well above chance; with LEACE
/// the linear probe is at chance on test — the linear channel is gone — while the MLP probe
/// still reads the variance channel, which LEACE does not promise to remove.
#[test]
fn leace_removes_the_planted_linear_channel() {
    let mut cfg = tiny_config(mtrec_model::Architecture::Mmoe);
    cfg.data.synthetic.sensitive_leak = 1.5;
    cfg.data.synthetic.n_test = 2000;
    cfg.model.adversarial_weight = 0.0;
    let ds = cfg.data.load().unwrap();
    let linear_probe = |cfg: &ExperimentConfig| {
        let (summary, _, _) = Trainer::new(cfg, &ds, Device::flex()).verbose(false).run().unwrap();
        let probe = summary.adversarial_probe["sensitive"].clone();
        eprintln!("erasure {:?}: {probe:?}", cfg.model.erasure);
        (probe.linear.unwrap().test_auc.unwrap(), probe.test_auc.unwrap())
    };
    let before = linear_probe(&cfg);
    cfg.model.erasure = mtrec_model::Erasure::Leace;
    let after = linear_probe(&cfg);
    assert!(before.0 > 0.75, "the linear channel is readable without erasure: {}", before.0);
    assert!((after.0 - 0.5).abs() < 0.04, "a linear probe after LEACE: {}", after.0);
    assert!(after.1 > 0.7, "the variance channel is left for a non-linear probe: MLP probe {}", after.1);
}

/// The small mixed table of the data crate: a binary and a 5-class task (`stars`), a group.
fn table_config() -> ExperimentConfig {
    let dir = toml::Value::String(census_fixture().join("../table-small").display().to_string());
    let text = include_str!("../../tests/fixtures/table_small.toml");
    ExperimentConfig::from_toml(text, "table config", &[format!("data.dir={dir}")]).unwrap()
}

/// The small table with its `title` as a text column read by the tiny BERT of mtrec-text's
/// fixtures, trained as `finetune` says.
fn text_table_config(finetune: &str) -> ExperimentConfig {
    let dir = toml::Value::String(census_fixture().join("../table-small").display().to_string());
    let tiny = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../mtrec-text/tests/fixtures/tiny-bert/model");
    let text = format!(
        "{}\n[[data.columns]]\nname = \"title\"\nkind = \"text\"\nencoder = {:?}\n\n[model.text]\nfinetune = \"{finetune}\"\nlr = 0.01\nwarmup = 0.2\n",
        include_str!("../../tests/fixtures/table_small.toml"),
        tiny.display().to_string()
    );
    ExperimentConfig::from_toml(&text, "text table config", &[format!("data.dir={dir}"), "train.epochs=2".into()])
        .unwrap()
}

/// The first weight of the first layer of the model's text encoder.
fn encoder_weight<C: MultiTaskModule>(model: &MultiTaskNet<C>) -> Vec<f32> {
    let mtrec_model::ArchitectureNet::Mmoe(m) = &model.body else { panic!("mmoe") };
    let encoder = m.input.encoder.as_ref().expect("a text encoder");
    encoder.bert.layers[0].attention.value.weight.val().into_data().try_into_vec::<f32>().unwrap()
}

/// A fine-tuned text encoder is part of the shared phase: it trains under every balancer (its
/// weights move from the pretrained ones), the loss falls, and PCGrad trains it differently
/// from fixed weights; a frozen-mode config is refused for a token table and vice versa.
#[test]
fn a_fine_tuned_encoder_trains_with_every_balancer() {
    let base = text_table_config("full");
    let ds = base.data.load().unwrap();
    assert!(ds.schema.text[0].tokens, "the table holds token ids");
    let pretrained = {
        let model = base.build_model(&ds.schema, &Device::flex().autodiff()).unwrap();
        encoder_weight(&model)
    };
    let mut trained = std::collections::HashMap::new();
    for method in mtrec_balance::BalanceMethod::ALL {
        let mut cfg = base.clone();
        cfg.balance.method = method.clone();
        let (summary, records, model) = Trainer::new(&cfg, &ds, Device::flex()).verbose(false).run().unwrap();
        assert!(summary.test["click"]["auc"].is_finite(), "{method:?}");
        let (first, last) = (records[0].train_loss["stars"], records.last().unwrap().train_loss["stars"]);
        assert!(last.is_finite() && first.is_finite(), "{method:?}: {first} → {last}");
        let w = encoder_weight(&model);
        let moved = w.iter().zip(&pretrained).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(moved > 1e-5, "{method:?}: the encoder did not train ({moved})");
        trained.insert(format!("{method:?}"), w);
    }
    let differ = trained["Pcgrad"].iter().zip(&trained["Fixed"]).any(|(a, b)| (a - b).abs() > 1e-6);
    assert!(differ, "PCGrad trains the encoder differently from fixed weights");
    // a token table under a frozen model, and an embedding table under a trainable one, are refused
    let mut frozen = base.clone();
    frozen.model.text.finetune = mtrec_text::Finetune::Frozen;
    let err = frozen.build_model(&ds.schema, &Device::flex()).unwrap_err().to_string();
    assert!(err.contains("title") && err.contains("frozen"), "{err}");
}

/// `model.text.layer_lr_decay = d`: one Adam step moves each element of a parameter by at most
/// its rate (the first step's update is `lr · g / (|g| + ε)`), so the largest move of the top
/// layer's weights is `lr`, the bottom layer's (of 2) `lr · d`, the embeddings' `lr · d²`, and
/// the towers' `train.lr`; with the default 1 every encoder parameter moves by `lr`.
#[test]
fn layer_lr_decay_gives_each_encoder_layer_its_rate() {
    let moves = |decay: f64| {
        let mut cfg = text_table_config("full");
        cfg.model.text.layer_lr_decay = decay;
        cfg.train.lr = 1e-3;
        cfg.model.text.warmup = 0.0;
        cfg.model.text.decay = mtrec_text::LrDecay::Constant;
        (cfg.model.text.weight_decay, cfg.model.text.max_grad_norm) = (0.0, 0.0);
        cfg.model.text.dropout = Some(0.0);
        let ds = cfg.data.load().unwrap();
        let ad = Device::flex().autodiff();
        let model = cfg.build_model(&ds.schema, &ad).unwrap();
        let encoder = model.text_encoder().unwrap();
        let (top, bottom) = (encoder.bert.layers[1].clone(), encoder.bert.layers[0].clone());
        let groups = [
            burn::module::ParamGroup::ids_from_module(top),
            burn::module::ParamGroup::ids_from_module(bottom),
            burn::module::ParamGroup::ids_from_module(encoder.bert.embeddings.clone()),
        ];
        let before = parameter_values(&model);
        let lr = cfg.learning_rates_at(&ds.schema, &model, 0.5).unwrap();
        let mut optim = cfg.optimizers(&model);
        let mut balancer = cfg.balancer(&ds.schema).unwrap();
        let kinds = ds.schema.task_kinds();
        let batch = batches(&ds.train, ds.schema.widths(), 32, BatchOrder::Sequential, &ad).next().unwrap();
        let (model, _) = crate::train_step(model, &mut optim, balancer.as_mut(), &batch, &kinds, lr).unwrap();
        let mut moved = [0.0f64; 4]; // top layer, bottom layer, embeddings, the rest: largest |Δ|
        for ((id, a), (_, b)) in before.iter().zip(&parameter_values(&model)) {
            let slot = groups.iter().position(|g| g.matches(id, None)).unwrap_or(3);
            let delta = a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max);
            moved[slot] = moved[slot].max(delta);
        }
        moved
    };
    let close = |got: f64, want: f64| (got - want).abs() <= 1e-3 * want;
    let m = moves(0.5);
    let want = [0.01, 0.005, 0.0025, 1e-3];
    assert!(m.iter().zip(&want).all(|(&g, &w)| close(g, w)), "decay 0.5: {m:?}, want {want:?}");
    let m = moves(1.0);
    let want = [0.01, 0.01, 0.01, 1e-3];
    assert!(m.iter().zip(&want).all(|(&g, &w)| close(g, w)), "decay 1: {m:?}, want {want:?}");
    let mut bad = text_table_config("full");
    bad.model.text.layer_lr_decay = 1.5;
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("model.text.layer_lr_decay"), "{err}");
}

/// `adapters = "per_task"`: each main task gets LoRA adapters of its own on the frozen base and
/// a readout into its output. The model starts as the one without them (readout 0, B = 0); a
/// task's loss reaches its own branch only, never the other task's nor the shared encoder; after
/// training under fixed weights and under PCGrad, each task's adapters moved and differ from the
/// other's; funnel architectures refuse them.
#[test]
fn per_task_adapters_are_each_tasks_own() {
    use mtrec_model::MultiTaskModel;
    let mut base = text_table_config("lora");
    base.model.text.adapters = mtrec_text::Adapters::PerTask;
    base.model.text.lora_layers = Some(1);
    base.model.text.lr = 0.05;
    let ds = base.data.load().unwrap();
    let ad = Device::flex().autodiff();
    let model = base.build_model(&ds.schema, &ad).unwrap();
    assert_eq!(model.task_text.len(), 2);
    let plain = MultiTaskNet { task_text: Vec::new(), ..model.clone() };
    let eval = |m: &MultiTaskNet| evaluate(&m.valid(), &ds.valid, Split::Valid, &ds.schema, &Device::flex(), 64);
    assert_eq!(eval(&model).unwrap(), eval(&plain).unwrap(), "the branches start at zero");
    // task 0's loss: gradients in its own readout and adapters only
    let batch = batches(&ds.train, ds.schema.widths(), 16, BatchOrder::Sequential, &ad).next().unwrap();
    let task0 = || model.forward_task(0, &model.forward_shared(batch.features.clone())).output.sum().backward();
    let branch = |t: usize| &model.task_text[t];
    let grads = task0();
    assert!(branch(0).readout.weight.grad(&grads).is_some(), "task 0's readout");
    assert!(branch(1).readout.weight.grad(&grads).is_none(), "not task 1's readout");
    let shared_encoder = model.text_encoder().unwrap();
    assert!(shared_encoder.bert.layers[1].attention.query.weight.grad(&grads).is_none(), "the base is frozen");
    let adapter_grads = |t: usize| burn::optim::GradientsParams::from_grads(task0(), &branch(t).encoder).len();
    assert!(adapter_grads(0) > 0, "task 0's adapters");
    assert_eq!(adapter_grads(1), 0, "not task 1's adapters");
    // training moves each task's adapters, differently
    let query = |e: &mtrec_text::TextEncoder| {
        e.bert.clone().materialize().layers[1].attention.query.weight.val().into_data().try_into_vec::<f32>().unwrap()
    };
    let start = query(&branch(0).encoder);
    for method in [mtrec_balance::BalanceMethod::Fixed, mtrec_balance::BalanceMethod::Pcgrad] {
        let mut cfg = base.clone();
        cfg.balance.method = method.clone();
        let (summary, _, trained) = Trainer::new(&cfg, &ds, Device::flex()).verbose(false).run().unwrap();
        assert!(summary.test["click"]["auc"].is_finite(), "{method:?}");
        let (q0, q1) = (query(&trained.task_text[0].encoder), query(&trained.task_text[1].encoder));
        let moved = |q: &[f32]| q.iter().zip(&start).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(moved(&q0) > 1e-5 && moved(&q1) > 1e-5, "{method:?}: {} {}", moved(&q0), moved(&q1));
        assert!(q0.iter().zip(&q1).any(|(a, b)| (a - b).abs() > 1e-6), "{method:?}: the tasks' adapters differ");
        assert_eq!(query(&trained.text_encoder().unwrap()), start, "{method:?}: the shared base stays frozen");
    }
    let mut funnel = base.clone();
    funnel.model.architecture = mtrec_model::Architecture::Esmm;
    let err = funnel.validate().unwrap_err().to_string();
    assert!(err.contains("adapters"), "{err}");
}

/// `train.encoder_gradients_every`: a run records the tasks' gradient cosines on the encoder per
/// epoch, in [−1, 1], with positive norms, and in its summary; with adapters per task (the shared
/// base frozen) there is nothing to measure. (That the Gram matrix equals each task's own
/// backward through the same dropout masks is `tests/encoder_gradient_masks.rs`, a process of
/// its own for the backend's one generator.)
#[test]
fn encoder_gradients_are_recorded_per_epoch_and_not_for_task_adapters() {
    let mut cfg = text_table_config("full");
    let ds = cfg.data.load().unwrap();
    let kinds = ds.schema.task_kinds();
    let ad = Device::flex().autodiff();
    let model = cfg.build_model(&ds.schema, &ad).unwrap();
    initialise_parameters(&model);
    let batch = batches(&ds.train, ds.schema.widths(), 16, BatchOrder::Sequential, &ad).next().unwrap();
    let (gram, measured) = crate::encoder_gradient_gram(&model, &batch, &kinds, 7).unwrap();
    assert_eq!(measured, vec![true, true]);
    assert!(gram[0][1].abs() > 0.0 && gram[0][0] > 0.0 && gram[1][1] > 0.0, "{gram:?}");
    // a run every step: per-epoch cosines in [−1, 1] and the run's in the summary
    cfg.train.encoder_gradients_every = 1;
    let (summary, records, _) = Trainer::new(&cfg, &ds, Device::flex()).verbose(false).run().unwrap();
    for r in &records {
        let c = r.encoder_gradient_cosines.as_ref().expect("measured")["click~stars"];
        assert!((-1.0..=1.0).contains(&c), "{c}");
        assert!(r.encoder_gradient_norms.as_ref().unwrap().values().all(|n| *n > 0.0));
    }
    assert!(summary.encoder_gradient_conflict.contains_key("click~stars"), "{:?}", summary.encoder_gradient_conflict);
    // per-task adapters: the shared base is frozen
    let mut per_task = text_table_config("lora");
    per_task.model.text.adapters = mtrec_text::Adapters::PerTask;
    per_task.model.text.lora_layers = Some(1);
    let adapted = per_task.build_model(&ds.schema, &ad).unwrap();
    assert!(crate::encoder_gradient_gram(&adapted, &batch, &kinds, 7).is_none());
}

/// A 5-class task trains with every balancer and every architecture that takes it: its loss
/// falls, the summary reports accuracy, logloss and macro-AUC; the binary task reports GAUC
/// over its groups (and early stopping selects on it).
#[test]
fn multiclass_tasks_train_with_every_balancer() {
    use mtrec_balance::BalanceMethod::*;
    let base = table_config();
    let ds = base.data.load().unwrap();
    assert_eq!(ds.schema.tasks[1].n_classes, 5);
    for (arch, method) in [
        (mtrec_model::Architecture::Mmoe, Fixed),
        (mtrec_model::Architecture::Mmoe, Uncertainty),
        (mtrec_model::Architecture::SharedBottom, Gradnorm),
        (mtrec_model::Architecture::Mmoe, Dwa),
        (mtrec_model::Architecture::Ple, Rlw),
        (mtrec_model::Architecture::CrossStitch, Pcgrad),
        (mtrec_model::Architecture::Mmoe, Mgda),
        (mtrec_model::Architecture::SingleTask, Cagrad),
        (mtrec_model::Architecture::Omoe, ImtlG),
    ] {
        let mut cfg = base.clone();
        cfg.model.architecture = arch.clone();
        cfg.balance.method = method.clone();
        if method == Gradnorm {
            cfg.balance.gradnorm_layer = Some(mtrec_balance::GradNormLayer::Representation);
        }
        let (summary, records, _) = Trainer::new(&cfg, &ds, Device::flex()).verbose(false).run().unwrap();
        let stars = &summary.test["stars"];
        for key in ["accuracy", "logloss", "macro_auc"] {
            assert!(stars.get(key).is_some_and(|v| v.is_finite()), "{arch:?} {method:?}: {stars:?}");
        }
        assert!(stars["logloss"] < 5f64.ln() + 0.5, "{arch:?} {method:?}: {stars:?}");
        let (first, last) = (records[0].train_loss["stars"], records.last().unwrap().train_loss["stars"]);
        assert!(last < first, "{arch:?} {method:?}: stars loss {first} → {last}");
        let click = &summary.valid["click"];
        assert!(click.contains_key("gauc") && click["gauc_groups"] >= 1.0, "{click:?}");
    }
}

/// A table run saves its preprocessing; `evaluate_run` with a file scores every row of it with
/// that encoding (what `cargo xtask eval RUN_DIR --file F` does), a file of five rows holding one
/// class of a task too, and the file without its label columns (no metrics, the same outputs as
/// with them; training on it is refused); a run without one refuses.
#[test]
fn a_table_run_scores_another_file_with_its_preprocessing() {
    let cfg = table_config();
    let (ds, preprocessing) = cfg.data.load_with(None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = RunDirectory::create(dir.path().join("run"), &cfg).unwrap();
    run.write_preprocessing(preprocessing.as_ref().unwrap()).unwrap();
    Trainer::new(&cfg, &ds, Device::flex()).with_run_dir(run).verbose(false).run().unwrap();
    let file = census_fixture().join("../table-small/table.parquet");
    let (_, scored, metrics) = evaluate_run(&dir.path().join("run"), Split::Valid, &[], Some(&file)).unwrap();
    assert_eq!(scored.n_rows(Split::Test), 120, "every row of the file");
    assert!(metrics[0].contains_key("auc") && metrics[1].contains_key("accuracy"), "{metrics:?}");
    // a few rows, every one without a click: scored, the click's AUC left out (one class)
    let csv = std::fs::read_to_string(census_fixture().join("../table-small/table.csv")).unwrap();
    let no_click = csv.lines().skip(1).filter(|l| !l.contains('"') && l.split(',').nth(7) == Some("0")).take(5);
    let few = dir.path().join("few.csv");
    std::fs::write(&few, std::iter::once(csv.lines().next().unwrap()).chain(no_click).collect::<Vec<_>>().join("\n"))
        .unwrap();
    let (_, scored, metrics) = evaluate_run(&dir.path().join("run"), Split::Test, &[], Some(&few)).unwrap();
    assert_eq!(scored.n_rows(Split::Test), 5);
    assert!(!metrics[0].contains_key("auc") && metrics[0].contains_key("logloss"), "{metrics:?}");
    // the file without its label columns: no metrics, the same outputs
    let mut reader = csv::Reader::from_path(census_fixture().join("../table-small/table.csv")).unwrap();
    let header = reader.headers().unwrap().clone();
    let keep: Vec<usize> = (0..header.len()).filter(|&i| !["rating", "click"].contains(&&header[i])).collect();
    let unlabelled = dir.path().join("unlabelled.csv");
    let mut writer = csv::Writer::from_path(&unlabelled).unwrap();
    writer.write_record(keep.iter().map(|&i| &header[i])).unwrap();
    for record in reader.records() {
        let record = record.unwrap();
        writer.write_record(keep.iter().map(|&i| &record[i])).unwrap();
    }
    writer.flush().unwrap();
    let labelled = census_fixture().join("../table-small/table.csv");
    let run_dir = dir.path().join("run");
    let with_labels = crate::evaluate_run_outputs(&run_dir, Split::Test, &[], Some(&labelled)).unwrap();
    assert!(with_labels.metrics[0].contains_key("auc"), "{:?}", with_labels.metrics);
    let scored = crate::evaluate_run_outputs(&run_dir, Split::Test, &[], Some(&unlabelled)).unwrap();
    assert_eq!(scored.data.n_rows(Split::Test), 120);
    let metrics = &scored.metrics;
    assert!(metrics.iter().all(|m| m.get("labelled_rows") == Some(&0.0) && !m.contains_key("auc")), "{metrics:?}");
    assert_eq!(scored.outputs, with_labels.outputs, "the same rows, the same outputs");
    let predictions = dir.path().join("predictions.csv");
    let classes = crate::class_names(&cfg.data.tasks);
    assert_eq!(crate::write_predictions(&predictions, scored.data.schema(), &scored.outputs, &classes).unwrap(), 120);
    let text = std::fs::read_to_string(&predictions).unwrap();
    assert!(text.starts_with("row,click,stars=1,stars=2,stars=3,stars=4,stars=5\n"), "{}", &text[..80]);
    // the table without a label column it trains on stays an error naming the column
    let mut training = cfg.clone();
    training.data.path = vec![unlabelled.clone()];
    let err = training.data.load_with(None).unwrap_err().to_string();
    assert!(err.contains("no column \"click\""), "{err}");
    std::fs::remove_file(dir.path().join("run").join(crate::PREPROCESSING_FILE)).unwrap();
    let err = evaluate_run(&dir.path().join("run"), Split::Test, &[], Some(&file)).unwrap_err().to_string();
    assert!(err.contains("preprocessing.json"), "{err}");
}

/// Trains `cfg` (a table config) into a run folder with its preprocessing, checks that the
/// saved model re-evaluates to the test metrics the run reported, and scores every row of the
/// small table's file with the run (`eval --file`): the dataset, its preprocessing, the scored
/// data and their validation metrics.
fn train_and_score_the_table_file(
    cfg: &ExperimentConfig,
) -> (MtlDataset, mtrec_data::Preprocessing, crate::RunData, Vec<TaskMetrics>) {
    let (ds, preprocessing) = cfg.data.load_with(None).unwrap();
    let preprocessing = preprocessing.expect("a table's preprocessing");
    let dir = tempfile::tempdir().unwrap();
    let run = RunDirectory::create(dir.path().join("run"), cfg).unwrap();
    run.write_preprocessing(&preprocessing).unwrap();
    let (summary, _, _) = Trainer::new(cfg, &ds, Device::flex()).with_run_dir(run).verbose(false).run().unwrap();
    let (_, _, metrics) = evaluate_run(&dir.path().join("run"), Split::Test, &[], None).unwrap();
    let (a, b) = (metrics[0]["auc"], summary.test["click"]["auc"]);
    assert!((a - b).abs() <= 1e-9, "re-evaluated {a} vs reported {b}");
    let file = census_fixture().join("../table-small/table.parquet");
    let (_, scored, metrics) = evaluate_run(&dir.path().join("run"), Split::Valid, &[], Some(&file)).unwrap();
    (ds, preprocessing, scored, metrics)
}

/// `data.dense_buckets`: the run saves the training split's bucket edges with its
/// preprocessing; its saved model re-evaluates to the test metrics it reported, and scoring
/// another file encodes that file's dense values with the saved edges (not ones fitted on the
/// file).
#[test]
fn dense_buckets_are_saved_and_reused_when_scoring_a_file() {
    let mut cfg = table_config();
    cfg.data.dense_buckets = 4;
    let (ds, preprocessing, scored, _) = train_and_score_the_table_file(&cfg);
    let saved = preprocessing.dense_buckets.clone().expect("fitted buckets");
    let field = ds.schema.categorical.last().unwrap();
    assert!(field.name.ends_with("_bucket") && field.vocab_size == saved.edges[0].len() + 2, "{field:?}");
    assert_eq!(scored.schema().categorical, ds.schema.categorical);
    let crate::RunData::Memory(file_data) = &scored else { panic!("in memory") };
    let (table, n_dense) = (&file_data.test, saved.edges.len());
    let width = ds.schema.categorical.len();
    for r in 0..table.n_rows {
        for c in 0..n_dense {
            let id = table.categorical[r * width + width - n_dense + c];
            assert_eq!(id, saved.id(c, table.dense[r * n_dense + c]), "row {r} column {c}: the saved edges");
        }
    }
    // buckets fitted on the file itself would differ: the check above can fail
    let refit = mtrec_data::DenseBuckets::fit(table, n_dense, 4).unwrap();
    assert_ne!(refit, saved, "the fixture's file and training split have different quantiles");
}

/// A fine-tuned run's saved model (its trained encoder inside) re-evaluates to the test metrics
/// the run reported, and scores another file's texts through the fine-tuned encoder (the file's
/// titles become token ids, as `eval --file` does).
#[test]
fn a_fine_tuned_run_evaluates_and_scores_another_file() {
    let mut cfg = text_table_config("lora");
    cfg.model.text.lora_rank = 2;
    let (_, _, scored, metrics) = train_and_score_the_table_file(&cfg);
    assert!(scored.schema().text[0].tokens, "the file's texts are token ids");
    assert_eq!(scored.n_rows(Split::Test), 120, "every row of the file");
    assert!(metrics[0]["auc"].is_finite(), "{metrics:?}");
}

/// A run says which id tables were row-sparse and which optimizer updated them: printed, as
/// comments after `config.toml` (which still reads back as the config), and in `summary.json`
/// — so a `hash_buckets` ablation crossing the automatic threshold cannot switch silently.
#[test]
fn runs_record_which_tables_were_sparse() {
    for sparse in [None, Some(true)] {
        let mut cfg = table_config();
        cfg.train.epochs = 1;
        cfg.model.sparse_embeddings = sparse;
        let ds = cfg.data.load().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let run = RunDirectory::create(dir.path().join("run"), &cfg).unwrap();
        let (summary, _, _) = Trainer::new(&cfg, &ds, Device::flex()).with_run_dir(run).verbose(false).run().unwrap();
        let table = summary.embedding_tables.iter().find(|t| t.table.table == "categorical").unwrap();
        assert_eq!(table.table.sparse, sparse == Some(true));
        assert_eq!(table.optimizer, if sparse == Some(true) { "lazy_adam" } else { "adam" });
        assert!(table.table.fields.contains(&"user".to_string()), "{table:?}");
        let text = std::fs::read_to_string(dir.path().join("run/config.toml")).unwrap();
        let expected = if sparse == Some(true) { "row-sparse, updated by lazy_adam" } else { "dense, updated by adam" };
        assert!(text.contains(expected), "{text}");
        assert_eq!(ExperimentConfig::from_file(&dir.path().join("run/config.toml"), &[]).unwrap(), cfg);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("run/summary.json")).unwrap()).unwrap();
        assert_eq!(json["embedding_tables"][0]["sparse"], serde_json::json!(sparse == Some(true)), "{json}");
    }
}

/// A regression head starts at the training label mean (labels shifted far from 0 start at
/// their mean, not near 0).
#[test]
fn regression_heads_start_at_the_training_label_mean() {
    let cfg = tiny_config(mtrec_model::Architecture::Mmoe);
    let mut ds = cfg.data.load().unwrap();
    for t in [&mut ds.train, &mut ds.valid, &mut ds.test] {
        t.labels.iter_mut().for_each(|y| *y += 3.5);
    }
    let means = ds.train.label_means(2).unwrap();
    assert!(means.iter().all(|m| m.abs() > 1.0), "labels far from 0: {means:?}");
    let (model, _) = Trainer::new(&cfg, &ds, Device::flex()).verbose(false).start().unwrap();
    let mtrec_model::ArchitectureNet::Mmoe(m) = &model.body else { panic!("mmoe") };
    for (t, mean) in means.iter().enumerate() {
        let bias: Vec<f32> = m.towers[t].head.bias.as_ref().unwrap().val().into_data().try_into_vec().unwrap();
        assert!((bias[0] as f64 - mean).abs() < 1e-5, "task {t}: bias {bias:?}, mean {mean}");
    }
}

/// `data.funnel` declares tasks that already are a funnel: checked, then ESMM trains on them and
/// the later step reports `cvr_auc`; tasks that are not a funnel are refused.
#[test]
fn declared_funnels_are_checked_and_measured() {
    let mut cfg = table_config();
    cfg.data.tasks.truncate(1);
    let mut buy = cfg.data.tasks[0].clone();
    (buy.name, buy.column) = ("buy".into(), Some("buy".into()));
    cfg.data.tasks.push(buy);
    cfg.data.funnel = true;
    cfg.model.architecture = mtrec_model::Architecture::Esmm;
    cfg.train.early_stopping.metric = "auc".into();
    cfg.train.early_stopping.task = "mean".into();
    let ds = cfg.data.load().unwrap();
    let (summary, _, _) = Trainer::new(&cfg, &ds, Device::flex()).verbose(false).run().unwrap();
    assert!(summary.test["buy"].contains_key("cvr_auc"), "{:?}", summary.test["buy"]);
    // rating ≥ 3 is no funnel step after click
    let mut not_funnel = cfg.clone();
    not_funnel.data.tasks[1].column = Some("rating".into());
    not_funnel.data.tasks[1].positive = vec![mtrec_data::LabelValue::Int(5)];
    not_funnel.data.tasks[1].negative = vec![];
    let err = not_funnel.data.load().unwrap_err().to_string();
    assert!(err.contains("data.funnel") && err.contains("`buy` is 1 where `click` is 0"), "{err}");
}

/// A streamed table (chunk files, windowed shuffle) trains end to end; the selected model's
/// metrics on the streamed test split equal those on the same split loaded in memory (AUC and
/// CVR AUC over every row); a second load reuses the chunk files.
#[test]
fn streamed_tables_train_and_evaluate_exactly() {
    let data = tempfile::tempdir().unwrap();
    let generator = mtrec_data::SyntheticCtrConfig { rows: 8_000, users: 400, items: 300, ..Default::default() };
    mtrec_data::write_synthetic_ctr(generator, data.path(), mtrec_data::TableFormat::Parquet, |_| {}).unwrap();
    let chunks = data.path().join("chunks");
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/ctr_esmm.toml");
    let sets = [
        format!("data.dir={:?}", data.path().display().to_string()),
        "data.stream=true".into(),
        format!("data.chunk_dir={:?}", chunks.display().to_string()),
        "data.chunk_rows=700".into(),
        "data.shuffle_window=3".into(),
        "model.bottom_hidden=[32]".into(),
        "model.tower_hidden=[16]".into(),
        "train.epochs=3".into(),
        "train.batch_size=256".into(),
        "train.lr=0.005".into(),
    ];
    let mut cfg = ExperimentConfig::from_file(&config, &sets).unwrap();
    cfg.data.cache = false;
    let (streamed, preprocessing) = cfg.data.load_streamed(None).unwrap();
    assert!(streamed.train.chunks.len() > 3, "several windows");
    let (memory, fitted) = cfg.data.load_with(None).unwrap();
    assert_eq!(fitted.as_ref(), Some(&preprocessing));
    assert_eq!(streamed.schema, memory.schema);
    let run = RunDirectory::create(data.path().join("run"), &cfg).unwrap();
    run.write_preprocessing(&preprocessing).unwrap();
    let (summary, records, model) =
        Trainer::new(&cfg, &streamed, Device::flex()).with_run_dir(run).verbose(false).run().unwrap();
    assert_eq!(records.len(), 3);
    let loss = |e: usize| records[e].train_loss["click"] + records[e].train_loss["purchase"];
    assert!(loss(2) < 0.9 * loss(0), "training on the streamed batches lowers the loss: {records:?}");
    assert!(summary.test["click"]["auc"] > 0.55, "{:?}", summary.test);
    let on_chunks = evaluate(&model, &streamed.test, Split::Test, &streamed.schema, &Device::flex(), 1000).unwrap();
    let in_memory = evaluate(&model, &memory.test, Split::Test, &memory.schema, &Device::flex(), 1000).unwrap();
    assert_eq!(on_chunks, in_memory, "metrics over every row, whichever way the rows are read");
    assert!(on_chunks[1].contains_key("cvr_auc"));
    // `cargo xtask eval` of the run streams its test split again and reproduces the summary
    let (_, run_data, metrics) = evaluate_run(&data.path().join("run"), Split::Test, &[], None).unwrap();
    assert!(matches!(run_data, RunData::Streamed(_)));
    for (t, task) in run_data.schema().tasks.iter().enumerate() {
        for (metric, value) in &summary.test[&task.name] {
            assert!((metrics[t][metric] - value).abs() < 1e-9, "{} {metric}", task.name);
        }
    }
    let modified = |p: &std::path::Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let first = modified(&streamed.train.chunks[0].file);
    let (again, _) = cfg.data.load_streamed(None).unwrap();
    assert_eq!(again.train, streamed.train);
    assert_eq!(modified(&again.train.chunks[0].file), first, "the chunk files are reused");
}
