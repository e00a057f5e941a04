//! The serial form of multi-task learning: pretrain the language model on the table's own texts,
//! then train the downstream tasks on it. Unsupervised SimCSE (Gao, Yao and Chen 2021, "SimCSE:
//! Simple Contrastive Learning of Sentence Embeddings") needs no labels: every text of a batch is
//! encoded twice, the two passes differ only in their dropout masks, and the encoder learns to
//! pick each text's second view among the batch's others (in-batch negatives):
//!
//! `loss = mean_i [ −log softmax_j( cos(z_i, z'_j) / τ )_i ]`
//!
//! [`pretrain_simcse`] runs it on a [`TextEncoder`] — trainable as its `[model.text]` section says
//! (`full`, `top` with its frozen-prefix store, `lora`) — with AdamW, linear warm-up and decay and
//! gradient-norm clipping, and returns the encoder, which
//! [`TextEncoder::save_pretrained`] writes as a sentence-transformers folder a config can point
//! its `encoder = "…"` to (`cargo xtask pretrain-text`).

use std::time::Instant;

use burn::{
    config::Config,
    grad_clipping::GradientClippingConfig,
    optim::{AdamWConfig, GradientsParams},
    tensor::{Device, Tensor, TensorData},
};
use rand::{SeedableRng, seq::SliceRandom};

use crate::{TextEncoder, TextError};

/// How [`pretrain_simcse`] trains.
#[derive(Config, Debug, PartialEq)]
pub struct SimCseConfig {
    /// Temperature τ of the cosine similarities (the paper's 0.05).
    #[config(default = 0.05)]
    pub temperature: f64,
    /// Texts a batch (each encoded twice; the paper's 64).
    #[config(default = 64)]
    pub batch_size: usize,
    /// Peak learning rate (the paper's 3e-5 for BERT-base).
    #[config(default = 3e-5)]
    pub lr: f64,
    /// Passes over the texts.
    #[config(default = 1)]
    pub epochs: usize,
    /// Fraction of the steps over which the learning rate warms up linearly from 0; it then
    /// decays linearly to 0 at the last step.
    #[config(default = 0.1)]
    pub warmup: f64,
    /// Decoupled weight decay (AdamW).
    #[config(default = 0.01)]
    pub weight_decay: f64,
    /// Clip each parameter's gradient to this L2 norm (`0`: no clipping).
    #[config(default = 1.0)]
    pub max_grad_norm: f64,
    /// Seed of the batch order.
    #[config(default = 42)]
    pub seed: u64,
}

impl SimCseConfig {
    /// Checks the values; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(format!("temperature = {}: expected a positive number", self.temperature));
        }
        if self.batch_size < 2 {
            return Err(format!("batch_size = {}: in-batch negatives need at least 2 texts", self.batch_size));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) || self.epochs == 0 {
            return Err("lr must be positive and epochs at least 1".into());
        }
        if !(0.0..1.0).contains(&self.warmup) || self.weight_decay < 0.0 || self.max_grad_norm < 0.0 {
            return Err("0 ≤ warmup < 1, weight_decay ≥ 0 and max_grad_norm ≥ 0".into());
        }
        Ok(())
    }

    /// The learning rate at training progress `p ∈ [0, 1)`.
    fn lr_at(&self, p: f64) -> f64 {
        self.lr * crate::LrDecay::Linear.factor(p, self.warmup).clamp(0.0, 1.0)
    }
}

/// The unsupervised SimCSE loss of two views of a batch: row `i` of `a` and of `b` are the same
/// text; every other row of `b` is a negative for row `i` of `a` (see the module docs of `simcse.rs`).
///
/// # Shapes
/// - a, b: `[B, d]`
/// - output: `[1]`
pub fn simcse_loss(a: Tensor<2>, b: Tensor<2>, temperature: f64) -> Tensor<1> {
    let [n, _] = a.dims();
    let unit = |x: Tensor<2>| {
        let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
        x / norm
    };
    let logits = unit(a).matmul(unit(b).transpose()).div_scalar(temperature); // [B, B]
    let max = logits.clone().max_dim(1).detach();
    let log_sum_exp = (logits.clone() - max.clone()).exp().sum_dim(1).log() + max; // [B, 1]
    let eye: Tensor<2> = Tensor::eye(n, &logits.device());
    let positive = (logits * eye).sum_dim(1); // [B, 1]
    (log_sum_exp - positive).mean()
}

/// What [`pretrain_simcse`] did.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SimCseReport {
    /// Distinct texts trained on.
    pub texts: usize,
    /// Optimiser steps.
    pub steps: usize,
    /// Mean loss of each epoch.
    pub epoch_loss: Vec<f64>,
    /// Mean loss of the first 10 % of the first epoch's steps (at least one): the loss the
    /// encoder started from.
    pub first_loss: f64,
    /// Wall seconds of training.
    pub seconds: f64,
    /// Texts a second (each encoded twice, forward and backward).
    pub texts_per_sec: f64,
}

/// Trains `encoder` (on an autodiff device) with unsupervised SimCSE on the token rows `tokens`
/// (`[N, L]` as [`crate::TokenInput`] writes them: `id + 1`, `0` for padding, one distinct text a
/// row). `on_step(step, steps, loss)` is called after every step. Returns the trained encoder and
/// what happened; a batch of fewer than 2 texts (the last, when `N mod batch_size = 1`) is skipped.
pub fn pretrain_simcse(
    mut encoder: TextEncoder,
    tokens: &[f32],
    width: usize,
    config: &SimCseConfig,
    mut on_step: impl FnMut(usize, usize, f64),
) -> Result<(TextEncoder, SimCseReport), TextError> {
    config.validate().map_err(|reason| TextError::Config(format!("SimCSE: {reason}")))?;
    if width == 0 || !tokens.len().is_multiple_of(width) {
        return Err(TextError::Config(format!("SimCSE: {} token values are not rows of {width}", tokens.len())));
    }
    let n = tokens.len() / width;
    if n < 2 {
        return Err(TextError::Config(format!("SimCSE: {n} text(s); in-batch negatives need at least 2")));
    }
    let device: Device = encoder.bert.embeddings.word_embeddings.weight.device();
    let batches_per_epoch = n / config.batch_size + usize::from(n % config.batch_size >= 2);
    let steps = batches_per_epoch * config.epochs;
    let clipping = (config.max_grad_norm > 0.0).then_some(GradientClippingConfig::Norm(config.max_grad_norm as f32));
    let mut optim =
        AdamWConfig::new().with_weight_decay(config.weight_decay as f32).with_grad_clipping(clipping).init();
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let (start, mut step) = (Instant::now(), 0);
    let (mut epoch_loss, mut first) = (Vec::new(), Vec::new());
    let first_steps = (batches_per_epoch / 10).max(1);
    for _ in 0..config.epochs {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let mut sum = 0.0;
        for rows in order.chunks(config.batch_size).filter(|rows| rows.len() >= 2) {
            let b = rows.len();
            // the batch twice, one forward: the views differ in their dropout masks only
            let mut values = Vec::with_capacity(2 * b * width);
            for _ in 0..2 {
                rows.iter().for_each(|&r| values.extend_from_slice(&tokens[r * width..(r + 1) * width]));
            }
            let batch = Tensor::<2>::from_data(TensorData::new(values, [2 * b, width]), &device);
            let z = encoder.forward(batch);
            let d = z.dims()[1];
            let loss = simcse_loss(z.clone().slice([0..b, 0..d]), z.slice([b..2 * b, 0..d]), config.temperature);
            let value = loss.clone().into_scalar::<f32>() as f64;
            if !value.is_finite() {
                return Err(TextError::Config(format!("SimCSE diverged at step {}: loss {value}", step + 1)));
            }
            let grads = GradientsParams::from_grads(loss.backward(), &encoder);
            encoder = optim.step(config.lr_at(step as f64 / steps as f64), encoder, grads);
            step += 1;
            sum += value;
            if first.len() < first_steps {
                first.push(value);
            }
            on_step(step, steps, value);
        }
        epoch_loss.push(sum / batches_per_epoch as f64);
    }
    let seconds = start.elapsed().as_secs_f64();
    let report = SimCseReport {
        texts: n,
        steps,
        epoch_loss,
        first_loss: first.iter().sum::<f64>() / first.len() as f64,
        seconds,
        texts_per_sec: (n * config.epochs) as f64 / seconds,
    };
    Ok((encoder, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loss of `simcse_loss` against the formula written out in f64.
    #[test]
    fn the_loss_is_the_cross_entropy_of_scaled_cosines() {
        let a = [[1.0, 2.0, 0.5], [-0.3, 0.8, 1.1], [0.9, -1.2, 0.4]];
        let b = [[0.8, 2.1, 0.2], [0.1, 0.5, 1.3], [1.5, -0.7, -0.2]];
        let tau = 0.1;
        let cos = |x: &[f64; 3], y: &[f64; 3]| {
            let dot: f64 = x.iter().zip(y).map(|(p, q)| p * q).sum();
            let norm = |v: &[f64; 3]| v.iter().map(|p| p * p).sum::<f64>().sqrt();
            dot / (norm(x) * norm(y))
        };
        let expected = (0..3)
            .map(|i| {
                let logits: Vec<f64> = (0..3).map(|j| cos(&a[i], &b[j]) / tau).collect();
                let lse = logits.iter().map(|l| l.exp()).sum::<f64>().ln();
                lse - logits[i]
            })
            .sum::<f64>()
            / 3.0;
        let device = Device::flex();
        let t = |m: [[f64; 3]; 3]| {
            let v: Vec<f32> = m.iter().flatten().map(|&x| x as f32).collect();
            Tensor::<2>::from_data(TensorData::new(v, [3, 3]), &device)
        };
        let got = simcse_loss(t(a), t(b), tau).into_scalar::<f32>() as f64;
        assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
        // identical views of orthogonal texts: the loss is the log of 1 + (B-1)·e^{-1/τ}
        let eye: Tensor<2> = Tensor::eye(3, &device);
        let floor = simcse_loss(eye.clone(), eye, tau).into_scalar::<f32>() as f64;
        assert!((floor - (1.0 + 2.0 * (-1.0f64 / tau).exp()).ln()).abs() < 1e-6, "{floor}");
    }

    /// On the tiny BERT's vocabulary, a few epochs of SimCSE lower the loss; with `top`, only the
    /// top layer moves; the batch of one left over is skipped.
    #[test]
    fn pretraining_lowers_the_loss_and_moves_only_the_trained_layers() {
        use crate::{Finetune, TextTrainingConfig, TokenInput};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert/model");
        let input = TokenInput::open(&dir, Some(16)).unwrap();
        let texts: Vec<String> = [
            "soft and warm",
            "the dress runs small",
            "love it",
            "too tight in the waist",
            "great color",
            "fabric is thin",
            "fits true to size",
            "returned it",
            "would buy again",
        ]
        .map(String::from)
        .to_vec();
        let tokens = input.values(&texts).unwrap();
        let training = TextTrainingConfig { finetune: Finetune::Top, train_layers: 1, ..Default::default() };
        let device = Device::flex().autodiff();
        device.seed(7);
        let encoder = TextEncoder::open(&dir, &training, &device).unwrap();
        // per layer (and the embeddings): one weight of each kind
        let weights = |e: &TextEncoder| {
            let v = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
            let mut w = vec![v(e.bert.embeddings.word_embeddings.weight.val())];
            for l in &e.bert.layers {
                w.push(v(l.attention.query.weight.val()));
                w.push(v(l.output.weight.val()));
            }
            w
        };
        let before = weights(&encoder);
        // the loss without dropout (identical views): how well the texts tell themselves apart
        let inner = device.clone().without_autodiff();
        let rows = Tensor::<2>::from_data(TensorData::new(tokens.clone(), [texts.len(), input.len()]), &inner);
        let plain_loss = |e: &TextEncoder| {
            let z = burn::module::Module::valid(e).forward(rows.clone());
            simcse_loss(z.clone(), z, 0.05).into_scalar::<f32>() as f64
        };
        let loss_before = plain_loss(&encoder);
        let config = SimCseConfig::new().with_batch_size(4).with_epochs(30).with_lr(3e-3).with_warmup(0.0);
        let mut seen = 0;
        let (trained, report) =
            pretrain_simcse(encoder, &tokens, input.len(), &config, |step, steps, _| seen = seen.max(step).max(steps))
                .unwrap();
        // 9 texts in batches of 4: 4 + 4 + (1, skipped)
        assert_eq!((report.texts, report.steps, seen), (9, 60, 60));
        let loss_after = plain_loss(&trained);
        eprintln!("loss per epoch {:?}; without dropout {loss_before} → {loss_after}", report.epoch_loss);
        // alone the run is deterministic (0.519 → 0.229); beside other tests, which draw from the
        // same generator, its dropout masks differ (0.519 → 0.22…0.26 seen): a margin for that
        assert!(loss_after < 0.7 * loss_before, "loss without dropout {loss_before} → {loss_after}");
        let after = weights(&trained);
        let top = after.len() - 2; // the last layer's two weights
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            let moved = b.iter().zip(a).any(|(x, y)| x != y);
            assert_eq!(moved, i >= top, "weight {i} of {}", after.len());
        }
    }

    #[test]
    fn the_config_is_checked() {
        assert!(SimCseConfig::new().validate().is_ok());
        assert!(SimCseConfig::new().with_batch_size(1).validate().unwrap_err().contains("batch_size"));
        assert!(SimCseConfig::new().with_temperature(0.0).validate().unwrap_err().contains("temperature"));
        let c = SimCseConfig::new().with_warmup(0.5);
        assert_eq!((c.lr_at(0.0), c.lr_at(0.25), c.lr_at(0.5), c.lr_at(0.75)), (0.0, 1.5e-5, 3e-5, 1.5e-5));
    }
}
