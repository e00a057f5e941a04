//! A user's own architecture, declared here and not in the crates, registered by name: it trains
//! with every built-in balancer, resumes from a checkpoint to the uninterrupted result, exports,
//! and a program that did not register it refuses its run with a message that says so.
//!
//! One test function: burn's generator is global, so runs compared here must not interleave with
//! other tests of the same process.

use burn::{
    module::{Module, ParamGroup, ParamId},
    nn::{Linear, LinearConfig},
    tensor::{Device, Tensor},
};
use mtrec_balance::{BalanceConfig, BalanceMethod};
use mtrec_data::FeatureBatch;
use mtrec_model::{
    ArchitectureInputs, Embedded, FeatureEmbedding, Mlp, MlpConfig, MultiTaskModel, SharedTensors, TaskOutput,
    TaskTower, TaskTowerConfig,
};
use mtrec_train::{
    ExperimentConfig, Registry, RunDirectory, Summary, TrainError, Trainer, load_run, load_run_with, save_safetensors,
};
use serde::Deserialize;

/// A shared bottom whose towers also read the input through a linear skip of their own.
#[derive(Module, Debug)]
struct SkipBottom {
    input: FeatureEmbedding,
    bottom: Mlp,
    towers: Vec<TaskTower>,
    skips: Vec<Linear>,
}

impl MultiTaskModel for SkipBottom {
    fn n_tasks(&self) -> usize {
        self.towers.len()
    }

    fn forward_shared(&self, features: FeatureBatch) -> SharedTensors {
        let Embedded { x, sparse_rows } = self.input.forward(features);
        let (bottom, last_layer) = self.bottom.forward_with_last_layer(x.clone(), 1);
        SharedTensors::new(vec![x, bottom], vec![1]).with_last_layer(last_layer).with_sparse_rows(sparse_rows)
    }

    fn forward_task(&self, task: usize, shared: &SharedTensors) -> TaskOutput {
        let tower = self.towers[task].forward(shared.tensors[1].clone());
        TaskOutput::new(tower + self.skips[task].forward(shared.tensors[0].clone()))
    }

    fn tower_inputs(&self, shared: &SharedTensors) -> Vec<Tensor<2>> {
        vec![shared.tensors[1].clone()]
    }

    fn task_parameters(&self, task: usize) -> ParamGroup {
        ParamGroup::ids_from_module((self.towers[task].clone(), self.skips[task].clone()))
    }

    fn output_bias(&self, task: usize) -> Option<ParamId> {
        self.towers[task].output_bias()
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct SkipOptions {
    bottom: Vec<usize>,
}

fn skip_bottom(inputs: ArchitectureInputs<'_>, device: &Device) -> Result<(SkipBottom, usize), String> {
    let options: SkipOptions = inputs.options()?;
    let d_in = inputs.input.output_dim();
    let bottom = MlpConfig::new(d_in, if options.bottom.is_empty() { vec![16] } else { options.bottom });
    let width = bottom.output_dim();
    let n = inputs.n_tasks();
    let model = SkipBottom {
        input: inputs.input.init(device),
        bottom: bottom.init(device),
        towers: TaskTowerConfig::new(width, inputs.config.tower_hidden.clone()).init_each(
            n,
            &inputs.task_outputs,
            device,
        ),
        skips: inputs.task_outputs.iter().map(|&d| LinearConfig::new(d_in, d).init(device)).collect(),
    };
    Ok((model, width))
}

const CONFIG: &str = r#"
name = "skip_bottom"
seed = 7

[data]
source = "synthetic"

[data.synthetic]
dim = 10
n_train = 1200
n_valid = 300
n_test = 300

[model]
architecture = "skip_bottom"
tower_hidden = [8]

[model.options]
bottom = [16]

[train]
epochs = 3
batch_size = 64
lr = 3e-3

[train.early_stopping]
metric = "mse"
patience = 100
"#;

fn untimed(s: &Summary) -> Summary {
    Summary { train_samples_per_sec: 0.0, wall_seconds: 0.0, ..s.clone() }
}

#[test]
fn a_users_architecture_trains_with_every_balancer_resumes_and_exports() {
    let registry = Registry::new().architecture("skip_bottom", skip_bottom);
    let config = ExperimentConfig::from_toml(CONFIG, "the test's config", &[]).unwrap();
    let dataset = config.data.load().unwrap();
    let device = Device::flex();

    // every built-in balancer trains it; the names in the summary are the config's
    let mut test_mse = Vec::new();
    for method in BalanceMethod::ALL {
        let cfg = ExperimentConfig {
            balance: BalanceConfig { method: method.clone(), ..Default::default() },
            ..config.clone()
        };
        let (summary, records, model) =
            Trainer::new(&cfg, &dataset, device.clone()).with_registry(&registry).verbose(false).run().unwrap();
        assert_eq!((summary.model.as_str(), summary.balance.as_str()), ("skip_bottom", method.as_str()));
        assert!(summary.parameters > 0 && summary.parameters == model.num_params());
        let loss = |r: &mtrec_train::EpochRecord| r.train_loss.values().sum::<f64>();
        assert!(loss(records.last().unwrap()) < loss(&records[0]), "{method:?}: the training loss falls");
        let mse = summary.test["task1"]["mse"];
        assert!(mse.is_finite(), "{method:?}");
        test_mse.push((method, mse));
    }
    let fixed = test_mse[0].1;
    let pcgrad = test_mse.iter().find(|(m, _)| *m == BalanceMethod::Pcgrad).unwrap().1;
    assert_ne!(fixed, pcgrad, "PCGrad changes the updates of the shared part");

    // interrupted after epoch 1 and resumed: the uninterrupted run's result
    let cfg = ExperimentConfig {
        balance: BalanceConfig { method: BalanceMethod::Pcgrad, ..Default::default() },
        ..config.clone()
    };
    let root = tempfile_dir();
    let trainer = || Trainer::new(&cfg, &dataset, device.clone()).with_registry(&registry).verbose(false);
    let whole = trainer().with_run_dir(RunDirectory::create(root.join("whole"), &cfg).unwrap()).run().unwrap();
    let dir = root.join("resumed");
    let stopped = trainer().with_run_dir(RunDirectory::create(&dir, &cfg).unwrap()).interrupt_after(1).run();
    assert!(matches!(stopped, Err(TrainError::Interrupted { .. })));
    let resumed = trainer().with_run_dir(RunDirectory::open(&dir).unwrap()).resume(true).run().unwrap();
    assert_eq!(untimed(&resumed.0), untimed(&whole.0), "resumed = uninterrupted");

    // the run exports in a program that registers the architecture, under `body.Custom.*`
    let (loaded_cfg, _, model, _) = load_run_with(&dir, &[], None, &registry).unwrap();
    assert_eq!(loaded_cfg.model.architecture.name(), "skip_bottom");
    let path = root.join("model.safetensors");
    save_safetensors(&model, &Default::default(), &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let names: Vec<&String> = header.as_object().unwrap().keys().filter(|k| *k != "__metadata__").collect();
    assert!(!names.is_empty() && names.iter().all(|n| n.starts_with("body.Custom.")), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("body.Custom.skips.")), "{names:?}");

    // a program without the registration says what is missing instead of guessing
    let err = load_run(&dir, &[]).err().unwrap().to_string();
    assert!(err.contains("\"skip_bottom\"") && err.contains("registers it"), "{err}");
    let misspelt =
        ExperimentConfig::from_toml(CONFIG, "the test's config", &["model.architecture=mmeo".into()]).unwrap();
    let err = Trainer::new(&misspelt, &dataset, device).with_registry(&registry).run().err().unwrap().to_string();
    assert!(err.contains("\"mmeo\"") && err.contains("mmoe") && err.contains("skip_bottom"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mtrec-custom-architecture-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
