//! The post-hoc adversarial probe.
//!
//! An adversarial head whose test AUC reads 0.5 may have made its target unpredictable — or may
//! have died (a constant output passes no reversed gradient back). The probe tells which: after
//! training, a *fresh* classifier is fitted on the frozen representation the selected model's
//! towers read ([`MultiTaskNet::representation`]) to predict each adversarial task's target. A
//! representation that still carries the target gives it away to the probe whatever happened to
//! the head.
//!
//! The probe is fitted twice: a **linear** probe (logistic regression), against which linear
//! concept erasure ([`mtrec_model::ConceptEraser`]) is a guarantee, and an **MLP** probe, which
//! may still read what a linear eraser leaves in higher moments. "Removed" means both are near ½.
//!
//! A third MLP probe reads only the model's **main-task outputs** (one logit or value a task): the
//! attribute as far as the predictions themselves give it away. Any representation the towers can
//! turn into these predictions carries at least that much, so it is the floor the representation
//! probes cannot go below without changing the predictions — the price of removal in the main tasks.
//!
//! The MLP probe has one hidden layer of [`PROBE_HIDDEN`] ReLU units, trained with Adam
//! (learning rate 1e-3, batches of 1024) on the training split's representations, standardised
//! with the training mean and deviation, for [`PROBE_EPOCHS`] epochs — more on a small training
//! split, so that it takes at least [`PROBE_MIN_STEPS`] steps (a fresh probe given a few dozen
//! steps reports its initialisation as much as the representation); the epoch with the best
//! validation AUC is the one reported on test.

use std::collections::BTreeMap;

use burn::{
    module::Module,
    optim::{AdamConfig, GradientsParams},
    tensor::{Device, Tensor, TensorData},
};
use mtrec_data::{BatchOrder, EncodedTable, MtlDataset, Schema, SplitRows, TaskKind, batches};
use mtrec_model::{MultiTaskModel, MultiTaskModule, MultiTaskNet, TaskTowerConfig};
use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};
use serde::{Deserialize, Serialize};

use crate::{TrainError, roc_auc, task_loss};

/// Hidden units of the probe.
pub const PROBE_HIDDEN: usize = 32;
/// Epochs the probe trains (more where they would give fewer than [`PROBE_MIN_STEPS`] steps).
pub const PROBE_EPOCHS: usize = 10;
/// Fewest optimiser steps of the probe.
pub const PROBE_MIN_STEPS: usize = 1000;
const PROBE_BATCH: usize = 1024;
const PROBE_LR: f64 = 1e-3;

/// What the probe found for one adversarial task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// Width of the representation the probe read.
    pub width: usize,
    /// The probe's best validation AUC (`None`: one class in validation).
    pub valid_auc: Option<f64>,
    /// Its test AUC at that epoch (`None`: one class in test).
    pub test_auc: Option<f64>,
    /// The epoch of the best validation AUC.
    pub best_epoch: usize,
    /// The linear probe (logistic regression, same training) on the same representation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear: Option<ProbeScores>,
    /// The MLP probe on the main tasks' outputs alone (the floor of the representation probes for
    /// these predictions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<ProbeScores>,
    /// Per main task with a one-column output: the test AUC of its output alone as a score for the
    /// target (no fitting; 0.5: the task's predictions say nothing of it, below 0.5: they say it
    /// inverted) — which task gives the attribute away.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub output_auc: BTreeMap<String, f64>,
}

/// A probe's validation and test AUC at its best validation epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeScores {
    /// Best validation AUC (`None`: one class in validation).
    pub valid_auc: Option<f64>,
    /// Test AUC at that epoch.
    pub test_auc: Option<f64>,
    /// The epoch of the best validation AUC.
    pub best_epoch: usize,
}

impl ProbeResult {
    /// One probe's result on a representation of `width` columns (no linear or outputs probe).
    fn fitted(width: usize, scores: ProbeScores) -> Self {
        let ProbeScores { valid_auc, test_auc, best_epoch } = scores;
        Self { width, valid_auc, test_auc, best_epoch, linear: None, outputs: None, output_auc: BTreeMap::new() }
    }

    /// This (MLP) probe's scores.
    fn scores(&self) -> ProbeScores {
        ProbeScores { valid_auc: self.valid_auc, test_auc: self.test_auc, best_epoch: self.best_epoch }
    }
}

/// Fits a fresh probe on `model`'s tower representation for every adversarial task of `dataset`;
/// empty when it has none.
pub fn adversarial_probe<C: MultiTaskModule, S: SplitRows>(
    model: &MultiTaskNet<C>,
    dataset: &MtlDataset<S>,
    device: &Device,
    seed: u64,
    batch_size: usize,
) -> Result<BTreeMap<String, ProbeResult>, TrainError> {
    let schema = &dataset.schema;
    let adversarial: Vec<usize> = (0..schema.n_tasks()).filter(|&t| schema.tasks[t].adversarial).collect();
    if adversarial.is_empty() {
        return Ok(BTreeMap::new());
    }
    let (Some(train_rows), Some(valid_rows), Some(test_rows)) =
        (dataset.train.in_memory(), dataset.valid.in_memory(), dataset.test.in_memory())
    else {
        return Err(TrainError::Config(
            "the adversarial probe fits on representations of every row: adversarial tasks need the data in \
             memory (data.stream = false)"
                .into(),
        ));
    };
    let features = |table: &EncodedTable| representations(model, table, schema, device, batch_size);
    let ((mut train, mut train_out), (mut valid, mut valid_out), (mut test, mut test_out)) =
        (features(train_rows), features(valid_rows), features(test_rows));
    let width = train.len() / train_rows.n_rows.max(1);
    let out_width = train_out.len() / train_rows.n_rows.max(1);
    standardise(&mut train, &mut [&mut valid, &mut test], width);
    standardise(&mut train_out, &mut [&mut valid_out, &mut test_out], out_width);
    let n = schema.n_tasks();
    let mut out = BTreeMap::new();
    for t in adversarial {
        if schema.tasks[t].kind != TaskKind::Binary {
            continue;
        }
        let labels = |table: &EncodedTable| table.label_column(t, n);
        let (train_y, valid_y, test_y) = (labels(train_rows), labels(valid_rows), labels(test_rows));
        let fit = |hidden: &[usize]| {
            fit_probe(
                ProbeData { x: &train, y: &train_y },
                ProbeData { x: &valid, y: &valid_y },
                ProbeData { x: &test, y: &test_y },
                (width, hidden),
                device,
                seed,
            )
        };
        let linear = fit(&[]);
        let outputs = fit_probe(
            ProbeData { x: &train_out, y: &train_y },
            ProbeData { x: &valid_out, y: &valid_y },
            ProbeData { x: &test_out, y: &test_y },
            (out_width, &[PROBE_HIDDEN]),
            device,
            seed,
        );
        let main: Vec<usize> = (0..n).filter(|&m| !schema.tasks[m].adversarial).collect();
        let mut output_auc = BTreeMap::new();
        if out_width == main.len() {
            for (j, &m) in main.iter().enumerate() {
                let column: Vec<f32> = test_out.iter().skip(j).step_by(out_width).copied().collect();
                if let Some(auc) = roc_auc(&column, &test_y) {
                    output_auc.insert(schema.tasks[m].name.clone(), auc);
                }
            }
        }
        let result = ProbeResult {
            output_auc,
            outputs: Some(outputs.scores()),
            linear: Some(linear.scores()),
            ..fit(&[PROBE_HIDDEN])
        };
        out.insert(schema.tasks[t].name.clone(), result);
    }
    Ok(out)
}

/// The representation of every row of `table`, row-major `[rows, width]`, and the main tasks'
/// outputs, row-major `[rows, Σ output widths]`.
fn representations<C: MultiTaskModule>(
    model: &MultiTaskNet<C>,
    table: &EncodedTable,
    schema: &Schema,
    device: &Device,
    batch_size: usize,
) -> (Vec<f32>, Vec<f32>) {
    let (mut out, mut outputs) = (Vec::new(), Vec::new());
    let main = model.n_tasks() - model.adversaries.len();
    for batch in batches(table, schema.widths(), batch_size, BatchOrder::Sequential, device) {
        let shared = model.forward_shared(batch.features);
        out.extend(model.representation(&shared).into_data().try_into_vec::<f32>().expect("f32 representation"));
        let heads: Vec<Tensor<2>> = (0..main).map(|t| model.forward_task(t, &shared).output).collect();
        outputs.extend(Tensor::cat(heads, 1).into_data().try_into_vec::<f32>().expect("f32 outputs"));
    }
    (out, outputs)
}

/// Standardises every column of `train` by its mean and standard deviation, and the other splits
/// by the same (constant columns are only centred).
fn standardise(train: &mut [f32], others: &mut [&mut Vec<f32>], width: usize) {
    let rows = (train.len() / width.max(1)).max(1) as f64;
    let mut mean = vec![0.0f64; width];
    let mut sq = vec![0.0f64; width];
    for row in train.chunks_exact(width) {
        for (j, &v) in row.iter().enumerate() {
            mean[j] += v as f64;
            sq[j] += (v as f64) * (v as f64);
        }
    }
    let scale: Vec<(f32, f32)> = (0..width)
        .map(|j| {
            let m = mean[j] / rows;
            let sd = (sq[j] / rows - m * m).max(0.0).sqrt();
            (m as f32, if sd > 1e-12 { (1.0 / sd) as f32 } else { 1.0 })
        })
        .collect();
    for values in std::iter::once(train).chain(others.iter_mut().map(|v| v.as_mut_slice())) {
        for row in values.chunks_exact_mut(width) {
            for (v, (m, inv)) in row.iter_mut().zip(&scale) {
                *v = (*v - m) * inv;
            }
        }
    }
}

/// Features `[rows, width]` and 0/1 labels of one split.
struct ProbeData<'a> {
    x: &'a [f32],
    y: &'a [f32],
}

/// Trains a fresh probe with hidden widths `hidden` (none: logistic regression) on `train`'s rows of
/// `width` columns, keeps the epoch of the best validation AUC, reports test there.
fn fit_probe(
    train: ProbeData,
    valid: ProbeData,
    test: ProbeData,
    (width, hidden): (usize, &[usize]),
    device: &Device,
    seed: u64,
) -> ProbeResult {
    let ad = device.clone().autodiff();
    ad.seed(seed ^ 0x0050_524f_4245);
    let mut probe = TaskTowerConfig::new(width, hidden.to_vec()).init(&ad);
    let mut optim = AdamConfig::new().init();
    let rows = train.y.len();
    let mut order: Vec<usize> = (0..rows).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut best = ProbeScores { valid_auc: None, test_auc: None, best_epoch: 0 };
    let (mut x, mut y) = (Vec::with_capacity(PROBE_BATCH * width), Vec::with_capacity(PROBE_BATCH));
    let epochs = PROBE_EPOCHS.max(PROBE_MIN_STEPS.div_ceil(rows.div_ceil(PROBE_BATCH).max(1)));
    for epoch in 1..=epochs {
        order.shuffle(&mut rng);
        for chunk in order.chunks(PROBE_BATCH) {
            x.clear();
            y.clear();
            for &r in chunk {
                x.extend_from_slice(&train.x[r * width..(r + 1) * width]);
                y.push(train.y[r]);
            }
            let xs = Tensor::<2>::from_data(TensorData::new(x.clone(), [chunk.len(), width]), &ad);
            let ys = Tensor::<2>::from_data(TensorData::new(y.clone(), [chunk.len(), 1]), &ad);
            let loss = task_loss(TaskKind::Binary, probe.forward(xs), ys);
            let grads = GradientsParams::from_grads(loss.backward(), &probe);
            probe = optim.step(PROBE_LR, probe, grads);
        }
        let frozen = probe.valid();
        let scores = |split: &ProbeData| {
            let n = split.y.len();
            let mut out = Vec::with_capacity(n);
            for start in (0..n).step_by(8192) {
                let end = (start + 8192).min(n);
                let xs = Tensor::<2>::from_data(
                    TensorData::new(split.x[start * width..end * width].to_vec(), [end - start, width]),
                    device,
                );
                out.extend(frozen.forward(xs).into_data().try_into_vec::<f32>().expect("f32 scores"));
            }
            out
        };
        let valid_auc = roc_auc(&scores(&valid), valid.y);
        if best.best_epoch == 0 || valid_auc.unwrap_or(0.0) > best.valid_auc.unwrap_or(0.0) {
            best = ProbeScores { valid_auc, test_auc: roc_auc(&scores(&test), test.y), best_epoch: epoch };
        }
    }
    ProbeResult::fitted(width, best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution as _, Normal};

    fn split(rows: usize, signal: f32, rng: &mut StdRng) -> (Vec<f32>, Vec<f32>) {
        let noise = Normal::new(0.0f32, 1.0).unwrap();
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..rows {
            let label = (i % 3 == 0) as u8 as f32;
            // column 0 carries the label (scaled by `signal`), columns 1–3 are noise
            x.push(signal * (2.0 * label - 1.0) + noise.sample(rng));
            x.extend((0..3).map(|_| noise.sample(rng)));
            y.push(label);
        }
        (x, y)
    }

    /// The probe finds a target the representation carries, and only then: AUC near 1 with a strong
    /// signal in one column (the Bayes AUC of a 2σ separation is Φ(2/√2) ≈ 0.92; the probe comes
    /// within a few points), near ½ without — from every seed: with only the 60 steps of 10 epochs
    /// here, some initialisations stopped at AUC 0.72.
    #[test]
    fn probe_recovers_a_planted_target_and_not_noise() {
        let device = Device::flex();
        for (signal, lo, hi) in [(1.0f32, 0.88, 0.95), (0.0, 0.44, 0.56)] {
            let mut rng = StdRng::seed_from_u64(5);
            let (tx, ty) = split(6000, signal, &mut rng);
            let (vx, vy) = split(2000, signal, &mut rng);
            let (sx, sy) = split(2000, signal, &mut rng);
            for seed in 1..=3 {
                let r = fit_probe(
                    ProbeData { x: &tx, y: &ty },
                    ProbeData { x: &vx, y: &vy },
                    ProbeData { x: &sx, y: &sy },
                    (4, &[PROBE_HIDDEN]),
                    &device,
                    seed,
                );
                let auc = r.test_auc.unwrap();
                eprintln!("signal {signal}, seed {seed}: probe test AUC {auc:.4} (epoch {})", r.best_epoch);
                assert!((lo..hi).contains(&auc), "signal {signal}, seed {seed}: probe test AUC {auc}");
                assert!(r.best_epoch >= 1 && r.width == 4);
            }
        }
    }

    #[test]
    fn standardisation_uses_the_training_statistics() {
        let mut train = vec![1.0f32, 5.0, 3.0, 5.0];
        let mut other = vec![5.0f32, 7.0];
        standardise(&mut train, &mut [&mut other], 2);
        // column 0: mean 2, sd 1 → train −1, 1; other (5 − 2)/1 = 3; column 1 constant: centred only
        assert_eq!(train, vec![-1.0, 0.0, 1.0, 0.0]);
        assert_eq!(other, vec![3.0, 2.0]);
    }
}
