//! Your own architecture, outside the crates: DSelect-k (Hazimeh et al., NeurIPS 2021) trained on
//! census data with PCGrad, checkpointed, interrupted and resumed to the uninterrupted result.
//!
//! ```text
//! cargo run -p mtrec-examples --example custom_architecture                 # the census-shaped fixture
//! cargo run -p mtrec-examples --example custom_architecture -- \
//!     --data-dir ../shared/data/census-income --seeds 3 --epochs 100 --check-resume false
//! ```
//!
//! DSelect-k replaces MMoE's softmax gate by a differentiable top-k selection: each task's gate has
//! `k` selectors; selector `i` picks one of `n = 2^m` experts through `m` binary codes
//! `S(z_{i,l}) ∈ [0, 1]`, where `S` is the cubic smooth-step that is exactly 0 or 1 outside
//! `[−γ/2, γ/2]`, so a trained gate selects exactly (not softly) k experts; the selectors' weights
//! are a softmax over `α`. Here `z` and `α` are linear in the input (the paper's per-example gate),
//! and an entropy term on each selector's expert weights pushes the codes to binary.
//!
//! What it takes to bring an architecture: a `#[derive(Module)]` type that implements
//! [`MultiTaskModel`] (the two-phase forward), a factory that builds it from `[model]`, and a
//! [`Registry`] entry under a name — then configs, `--set`, checkpoints, resume and export treat it
//! like a built-in (its parameters are recorded under `body.Custom.*`).

use std::path::PathBuf;

use burn::{
    module::{Module, ParamGroup, ParamId},
    nn::{Initializer, Linear, LinearConfig},
    tensor::{Device, Tensor, TensorData, activation::softmax},
};
use mtrec_data::FeatureBatch;
use mtrec_model::{
    ArchitectureInputs, Embedded, ExpertBank, ExpertBankConfig, ExpertGate, FeatureEmbedding, MultiTaskModel,
    SharedTensors, TaskOutput, TaskTower, TaskTowerConfig,
};
use mtrec_train::{ExperimentConfig, Registry, RunDirectory, TrainError, Trainer};
use serde::Deserialize;

/// `[model.options]` of `dselect_k` (the experts, towers and dropout are `[model]`'s shared keys).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DSelectKOptions {
    /// Non-zero gate weights per task (selectors).
    k: usize,
    /// Width of the smooth-step's transition region.
    gamma: f64,
    /// Weight of the selectors' entropy in each task's loss.
    entropy_reg: f64,
}

impl Default for DSelectKOptions {
    fn default() -> Self {
        Self { k: 2, gamma: 1.0, entropy_reg: 0.01 }
    }
}

/// The cubic smooth-step: 0 below −γ/2, 1 above γ/2, `−2/γ³·t³ + 3/(2γ)·t + ½` between (C¹).
fn smooth_step(t: Tensor<3>, gamma: f64) -> Tensor<3> {
    let t = t.clamp(-gamma / 2.0, gamma / 2.0);
    t.clone().powi_scalar(3).mul_scalar(-2.0 / gamma.powi(3)) + t.mul_scalar(3.0 / (2.0 * gamma)) + 0.5
}

/// One task's DSelect-k gate over `2^m` experts.
#[derive(Module, Debug)]
struct DSelectGate {
    /// The selectors' binary codes `z`, `[d_in] → [k·m]`.
    codes: Linear,
    /// The selectors' weights `α`, `[d_in] → [k]`.
    weights: Linear,
    /// `bits[j][l]`: bit `l` of expert `j`, `[E, m]`.
    bits: Tensor<2>,
    #[module(skip)]
    k: usize,
    #[module(skip)]
    gamma: f64,
}

impl DSelectGate {
    fn new(d_in: usize, n_experts: usize, options: &DSelectKOptions, device: &Device) -> Self {
        let m = n_experts.trailing_zeros() as usize;
        let bits: Vec<f32> = (0..n_experts).flat_map(|j| (0..m).map(move |l| ((j >> l) & 1) as f32)).collect();
        let g = options.gamma / 100.0;
        Self {
            codes: LinearConfig::new(d_in, options.k * m)
                .with_initializer(Initializer::Uniform { min: -g, max: g })
                .init(device),
            weights: LinearConfig::new(d_in, options.k).init(device),
            bits: Tensor::from_data(TensorData::new(bits, [n_experts, m]), device),
            k: options.k,
            gamma: options.gamma,
        }
    }

    /// The gate weights over experts and each selector's weights over experts.
    ///
    /// # Shapes
    /// - x: `[B, d_in]`; output `([B, E], [B, k, E])`
    fn forward(&self, x: Tensor<2>) -> (Tensor<2>, Tensor<3>) {
        let [b, _] = x.dims();
        let [e, m] = self.bits.dims();
        let s = smooth_step(self.codes.forward(x.clone()).reshape([b, self.k, m]), self.gamma);
        // r[b, i, j] = Π_l (bit ? s : 1 − s), the product of m factors
        let bits = self.bits.clone().unsqueeze_dim::<3>(0).unsqueeze_dim::<4>(0); // [1, 1, E, m]
        let s = s.unsqueeze_dim::<4>(2); // [B, k, 1, m]
        let factors = bits.clone() * s.clone() + (bits.neg() + 1.0) * (s.neg() + 1.0); // [B, k, E, m]
        let mut selection = factors.clone().slice([0..b, 0..self.k, 0..e, 0..1]);
        for l in 1..m {
            selection = selection * factors.clone().slice([0..b, 0..self.k, 0..e, l..l + 1]);
        }
        let selection: Tensor<3> = selection.reshape([b, self.k, e]);
        let alpha = softmax(self.weights.forward(x), 1).unsqueeze_dim::<3>(2); // [B, k, 1]
        ((alpha * selection.clone()).sum_dim(1).reshape([b, e]), selection)
    }
}

/// DSelect-k: MMoE's experts and towers, each task's gate a [`DSelectGate`].
#[derive(Module, Debug)]
struct DSelectK {
    input: FeatureEmbedding,
    experts: ExpertBank,
    gates: Vec<DSelectGate>,
    towers: Vec<TaskTower>,
    #[module(skip)]
    entropy_reg: f64,
}

impl MultiTaskModel for DSelectK {
    fn n_tasks(&self) -> usize {
        self.towers.len()
    }

    /// `[input x [B, d_in], experts [B, E·h]]`; the experts' last layer is the last shared one.
    fn forward_shared(&self, features: FeatureBatch) -> SharedTensors {
        let Embedded { x, sparse_rows } = self.input.forward(features);
        let (experts, last_layer) = self.experts.forward_with_last_layer(x.clone(), 1);
        let [b, e, h] = experts.dims();
        SharedTensors::new(vec![x, experts.reshape([b, e * h])], vec![1])
            .with_last_layer(last_layer)
            .with_sparse_rows(sparse_rows)
    }

    fn forward_task(&self, task: usize, shared: &SharedTensors) -> TaskOutput {
        let (gate, selection) = self.gates[task].forward(shared.tensors[0].clone());
        let mixed = self.mix(gate.clone(), shared);
        let out = TaskOutput::new(self.towers[task].forward(mixed)).with_gate(gate);
        if self.entropy_reg == 0.0 {
            return out;
        }
        // mean over rows of Σ_i H(r_i): zero once every selector picks one expert
        let entropy = (selection.clone() * selection.clamp_min(1e-9).log()).sum_dim(2).sum_dim(1).mean().neg();
        out.with_auxiliary_loss(entropy.mul_scalar(self.entropy_reg).reshape([1]))
    }

    fn tower_inputs(&self, shared: &SharedTensors) -> Vec<Tensor<2>> {
        let x = &shared.tensors[0];
        self.gates.iter().map(|g| self.mix(g.forward(x.clone()).0, shared)).collect()
    }

    fn task_parameters(&self, task: usize) -> ParamGroup {
        ParamGroup::ids_from_module((self.gates[task].clone(), self.towers[task].clone()))
    }

    fn output_bias(&self, task: usize) -> Option<ParamId> {
        self.towers[task].output_bias()
    }

    fn input_layers_mut(&mut self) -> Vec<&mut FeatureEmbedding> {
        vec![&mut self.input]
    }
}

impl DSelectK {
    fn mix(&self, gate: Tensor<2>, shared: &SharedTensors) -> Tensor<2> {
        let flat = shared.tensors[1].clone();
        let [b, width] = flat.dims();
        let e = self.experts.n_experts;
        ExpertGate::mix(gate, flat.reshape([b, e, width / e]))
    }
}

/// Builds DSelect-k from `[model]`: `n_experts` (a power of two), `expert_hidden`, `tower_hidden`,
/// `dropout`, and `[model.options]` ([`DSelectKOptions`]).
fn dselect_k(inputs: ArchitectureInputs<'_>, device: &Device) -> Result<(DSelectK, usize), String> {
    let options: DSelectKOptions = inputs.options()?;
    let m = inputs.config;
    if !m.n_experts.is_power_of_two() || m.n_experts < 2 {
        return Err(format!("dselect_k: model.n_experts = {} must be a power of two ≥ 2", m.n_experts));
    }
    let valid = options.gamma > 0.0 && options.entropy_reg >= 0.0; // false for NaN too
    if options.k == 0 || !valid || m.expert_hidden.is_empty() {
        return Err("dselect_k: model.options.k and gamma must be positive, entropy_reg ≥ 0, and model.expert_hidden \
                    non-empty"
            .into());
    }
    let d_in = inputs.input.output_dim();
    let experts = ExpertBankConfig::new(d_in, m.n_experts, m.expert_hidden.clone())
        .with_batch_norm(m.batch_norm)
        .with_dropout(m.dropout);
    let width = experts.output_dim();
    let model = DSelectK {
        input: inputs.input.init(device),
        experts: experts.init(device),
        gates: (0..inputs.n_tasks()).map(|_| DSelectGate::new(d_in, m.n_experts, &options, device)).collect(),
        towers: TaskTowerConfig::new(width, m.tower_hidden.clone()).with_dropout(m.dropout).init_each(
            inputs.n_tasks(),
            &inputs.task_outputs,
            device,
        ),
        entropy_reg: options.entropy_reg,
    };
    Ok((model, inputs.n_tasks() * width))
}

/// The experiment: the census protocol of `configs/census_mmoe.toml` with DSelect-k and PCGrad.
const CONFIG: &str = r#"
name = "census_dselect_k"
seed = 42

[data]
source = "census"
group = "income"

[model]
architecture = "dselect_k"
embedding_dim = 4
n_experts = 8
expert_hidden = [16]
tower_hidden = [8]

[model.options]
k = 2
gamma = 1.0
entropy_reg = 0.01

[balance]
method = "pcgrad"

[train]
batch_size = 1024
lr = 1e-3

[train.early_stopping]
metric = "auc"
task = "mean"
patience = 10
"#;

struct Args {
    data_dir: PathBuf,
    seeds: u64,
    epochs: usize,
    out: PathBuf,
    /// Interrupt the first seed's run after epoch 1, resume it and check it against a whole run.
    check_resume: bool,
}

fn args() -> Result<Args, String> {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crates/mtrec-data/tests/fixtures/census-small");
    let out = std::env::temp_dir().join("mtrec-dselect-k");
    let mut args = Args { data_dir: fixture, seeds: 1, epochs: 3, out, check_resume: true };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let value = given.next().ok_or(format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--data-dir" => args.data_dir = value.into(),
            "--seeds" => args.seeds = number(&value)?.max(1),
            "--epochs" => args.epochs = number(&value)? as usize,
            "--out" => args.out = value.into(),
            "--check-resume" => args.check_resume = value.parse().map_err(|e| format!("{flag} {value}: {e}"))?,
            other => {
                return Err(format!("unknown argument {other} (--data-dir, --seeds, --epochs, --out, --check-resume)"));
            }
        }
    }
    Ok(args)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let registry = Registry::new().architecture("dselect_k", dselect_k);
    let overrides =
        [format!("data.dir={:?}", args.data_dir.display().to_string()), format!("train.epochs={}", args.epochs)];
    let base = ExperimentConfig::from_toml(CONFIG, "custom_architecture.rs", &overrides)?;
    let dataset = base.data.load()?;
    let device = Device::flex();
    let mut aucs: Vec<Vec<f64>> = Vec::new();
    for k in 0..args.seeds {
        let config = ExperimentConfig { seed: base.seed + k, ..base.clone() };
        let dir = args.out.join(format!("seed{}", config.seed));
        let trainer = || Trainer::new(&config, &dataset, device.clone()).with_registry(&registry).verbose(false);
        let (summary, _, model) = if k == 0 && args.epochs >= 2 && args.check_resume {
            // checkpointed, interrupted after the first epoch, resumed: the uninterrupted run's result
            let interrupted = trainer().with_run_dir(RunDirectory::create(&dir, &config)?).interrupt_after(1).run();
            assert!(matches!(interrupted, Err(TrainError::Interrupted { .. })), "the run stops after epoch 1");
            let resumed = trainer().with_run_dir(RunDirectory::open(&dir)?).resume(true).run()?;
            let whole = trainer().run()?;
            assert_eq!(resumed.0.test, whole.0.test, "the resumed run ends where the uninterrupted one does");
            println!("seed {}: interrupted after epoch 1 and resumed: the same test metrics as one run", config.seed);
            resumed
        } else {
            trainer().with_run_dir(RunDirectory::create(&dir, &config)?).run()?
        };
        let n = model.num_params();
        let auc: Vec<f64> = ["income", "never_married"].iter().map(|t| summary.test[*t]["auc"]).collect();
        println!(
            "seed {}: {} with {}: test AUC income {:.4}, never_married {:.4} (best epoch {} of {}, {n} parameters)",
            config.seed, summary.model, summary.balance, auc[0], auc[1], summary.best_epoch, summary.epochs_run
        );
        aucs.push(auc);
    }
    let stat = |t: usize| mtrec_lab::mean_std(&aucs.iter().map(|a| a[t]).collect::<Vec<_>>());
    let ((mi, si), (mn, sn)) = (stat(0), stat(1));
    println!("DSelect-k + PCGrad over {} seeds: income {mi:.4} ± {si:.4}, never_married {mn:.4} ± {sn:.4}", args.seeds);
    Ok(())
}
