//! Your own loss balancer, outside the crates: a variant of FAMO (Liu et al., NeurIPS 2023, "FAMO:
//! Fast Adaptive Multitask Optimization") against the public `LossBalancer` trait, registered as
//! `famo_next_batch` and compared with fixed weights through `compare`'s library API. (mtrec ships
//! the paper's FAMO as the built-in `famo`, which measures the losses' fall on the same batch with
//! one more forward after the update.)
//!
//! ```text
//! cargo run -p mtrec-examples --example custom_balancer                     # the census-shaped fixture
//! cargo run -p mtrec-examples --example custom_balancer -- \
//!     --data-dir ../shared/data/census-income --seeds 3 --epochs 100        # UCI Census-Income
//! ```
//!
//! FAMO keeps logits `ξ` (weights `z = softmax(ξ)`) and steps along `Σ_t z_t/(c·ℓ_t)·∇ℓ_t` with
//! `c = Σ_t z_t/ℓ_t`: the gradient of `Σ_t (z_t/c)·log ℓ_t`, which decreases every task's loss at
//! the same rate where it can. After each step it moves `ξ` against the tasks whose log-loss fell
//! fastest: `ξ ← Adam(ξ, J_softmax(ξ)ᵀ δ + γ·ξ)` with `δ_t = log ℓ_t(before) − log ℓ_t(after)`.
//! The paper measures `δ` on the same batch after the update (a second forward the trainer does
//! not run); here a step's `δ` compares the previous step's losses with this step's — on the next
//! batch, so `δ` carries batch noise. Its defaults are the official code's (`γ = 0.01`, logits'
//! learning rate 0.025).
//!
//! What it takes to bring a balancer: a type implementing [`LossBalancer`] (a step's forward and
//! backward through [`TaskGraph`]; its state for checkpoints, with a version), built from
//! `[balance.options]` by a constructor registered under a name.

use std::path::PathBuf;

use mtrec_balance::{
    BalanceContext, BalanceError, BalanceOptions, BalancedGradients, LossBalancer, TaskGraph,
    kit::{LearnableTaskValues, batch_mean, detached, parse_options, parse_state, state_value, to_host, weighted_sum},
};
use mtrec_lab::{CompareOptions, run_comparison};
use mtrec_train::{ExperimentConfig, Registry};
use serde::{Deserialize, Serialize};

/// `[balance.options]` of `famo_next_batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FamoOptions {
    /// Weight decay of the logits.
    gamma: f64,
    /// Learning rate of the logits.
    w_lr: f64,
}

impl Default for FamoOptions {
    fn default() -> Self {
        Self { gamma: 0.01, w_lr: 0.025 }
    }
}

/// What a checkpoint keeps: the logits with their Adam moments and the last step's log-losses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FamoState {
    v: u32,
    logits: LearnableTaskValues,
    previous: Option<Vec<f64>>,
}

/// FAMO's task weighting.
struct Famo {
    gamma: f64,
    state: FamoState,
    weights: Vec<f64>,
}

/// The smallest loss FAMO takes the logarithm of.
const EPSILON: f64 = 1e-8;

impl Famo {
    fn new(n_tasks: usize, options: FamoOptions) -> Self {
        let logits = LearnableTaskValues::new(vec![0.0; n_tasks], options.w_lr);
        Self { gamma: options.gamma, state: FamoState { v: 1, logits, previous: None }, weights: vec![1.0; n_tasks] }
    }

    fn z(&self) -> Vec<f64> {
        let logits = self.state.logits.values();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f64 = exp.iter().sum();
        exp.iter().map(|e| e / sum).collect()
    }
}

impl LossBalancer for Famo {
    fn name(&self) -> &'static str {
        "famo_next_batch"
    }

    fn backward(&mut self, graph: &mut dyn TaskGraph) -> Result<BalancedGradients, BalanceError> {
        let losses = graph.task_losses();
        let mut values = to_host(detached(&losses));
        batch_mean(graph, &mut values); // every data-parallel rank decides on the whole batch
        if values.iter().any(|l| !l.is_finite() || *l < 0.0) {
            return Err(BalanceError(format!("famo_next_batch: needs finite non-negative losses, got {values:?}")));
        }
        let log_now: Vec<f64> = values.iter().map(|l| (l + EPSILON).ln()).collect();
        if let Some(previous) = self.state.previous.take() {
            // ξ's gradient: J_softmax(ξ)ᵀ δ = z ⊙ (δ − ⟨z, δ⟩), plus the weight decay γ·ξ
            let z = self.z();
            let delta: Vec<f64> = previous.iter().zip(&log_now).map(|(p, n)| p - n).collect();
            let mean: f64 = z.iter().zip(&delta).map(|(z, d)| z * d).sum();
            let grad: Vec<f64> = (z.iter().zip(&delta).zip(self.state.logits.values()))
                .map(|((z, d), xi)| z * (d - mean) + self.gamma * xi)
                .collect();
            self.state.logits.step(&grad);
        }
        self.state.previous = Some(log_now);
        // ∇ Σ_t (z_t/c)·log ℓ_t = Σ_t z_t/(c·ℓ_t)·∇ℓ_t
        let z = self.z();
        let c: f64 = z.iter().zip(&values).map(|(z, l)| z / (l + EPSILON)).sum();
        self.weights = z.iter().zip(&values).map(|(z, l)| z / (c * (l + EPSILON))).collect();
        let total = weighted_sum(&losses, &self.weights);
        Ok(BalancedGradients { parts: vec![total.backward()], task_losses: detached(&losses) })
    }

    fn task_weights(&self) -> Vec<f64> {
        self.weights.clone()
    }

    fn state(&self) -> serde_json::Value {
        state_value(&self.state)
    }

    fn load_state(&mut self, state: serde_json::Value) -> Result<(), BalanceError> {
        let saved: FamoState = parse_state("famo_next_batch", state)?;
        if saved.v != 1 {
            return Err(BalanceError(format!(
                "checkpoint: a famo_next_batch state of version {}, this program reads 1",
                saved.v
            )));
        }
        self.state.logits.restore(saved.logits, "the famo logits")?;
        self.state.previous = saved.previous;
        Ok(())
    }
}

/// The registered constructor: the tasks and `[balance.options]` to a boxed balancer.
fn famo(ctx: &BalanceContext, options: &BalanceOptions) -> Result<Box<dyn LossBalancer>, String> {
    let options: FamoOptions = parse_options("famo_next_batch", options)?;
    if !(options.gamma >= 0.0 && options.w_lr > 0.0) {
        return Err(format!("gamma must be ≥ 0 and w_lr positive, got {options:?}"));
    }
    Ok(Box::new(Famo::new(ctx.n_tasks(), options)))
}

/// The census MMoE protocol (`configs/census_mmoe.toml`); the balancer is set per config.
const CONFIG: &str = r#"
name = "census_mmoe"
seed = 42

[data]
source = "census"
group = "income"

[model]
architecture = "mmoe"
embedding_dim = 4
n_experts = 8
expert_hidden = [16]
tower_hidden = [8]

[train]
batch_size = 1024
lr = 1e-3

[train.early_stopping]
metric = "auc"
task = "mean"
patience = 10
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crates/mtrec-data/tests/fixtures/census-small");
    let (mut data_dir, mut seeds, mut epochs, mut out) = (fixture, 1, 3, std::env::temp_dir().join("mtrec-famo"));
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let value = given.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--data-dir" => data_dir = value.into(),
            "--seeds" => seeds = value.parse()?,
            "--epochs" => epochs = value.parse()?,
            "--out" => out = value.into(),
            other => return Err(format!("unknown argument {other} (--data-dir, --seeds, --epochs, --out)").into()),
        }
    }
    // only balancers registered: the default architecture type (no architecture of its own)
    let registry: Registry = Registry::new().balancer("famo_next_batch", famo);
    let data = format!("data.dir={:?}", data_dir.display().to_string());
    let config = |name: &str, method: &str| {
        let sets = [data.clone(), format!("train.epochs={epochs}"), format!("balance.method={method:?}")];
        let mut config = ExperimentConfig::from_toml(CONFIG, "custom_balancer.rs", &sets)?;
        config.name = name.into();
        Ok::<_, mtrec_train::TrainError>(config)
    };
    let configs = [config("mmoe_fixed", "fixed")?, config("mmoe_famo", "famo_next_batch")?];
    let comparison = run_comparison(&configs, &CompareOptions::new(seeds, &out), &registry)?;
    println!("\n{}", comparison.markdown());
    comparison.write(&out)?;
    println!("wrote {}", out.join("compare.md").display());

    // the state a checkpoint keeps round-trips, and a state of another version is refused
    let mut trained = Famo::new(2, FamoOptions::default());
    trained.state.logits.step(&[0.3, -0.1]);
    trained.state.previous = Some(vec![-0.5, -1.2]);
    let mut fresh = Famo::new(2, FamoOptions::default());
    fresh.load_state(trained.state())?;
    assert_eq!(fresh.state, trained.state);
    let mut newer = trained.state();
    newer["v"] = 2.into();
    assert!(fresh.load_state(newer).is_err(), "a state of another version is refused");
    Ok(())
}
