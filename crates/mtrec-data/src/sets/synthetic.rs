//! The synthetic generator of the MMoE paper (Ma et al., KDD 2018, §3.2): two regression tasks whose
//! correlation is controlled by one number `p`.
//!
//! Given input dimension `d`, two orthogonal unit vectors `u1, u2` (Gram–Schmidt on two standard normal
//! draws), a scale `c` and a correlation `p ∈ [-1, 1]`:
//! `w1 = c·u1`, `w2 = c·(p·u1 + sqrt(1 − p²)·u2)`; each example draws `x ~ N(0, I_d)` and
//! `y_t = w_tᵀx + Σ_{i=1..m} sin(α_i·w_tᵀx + β_i) + ε_t` with `ε_t ~ N(0, noise_std²)`.
//! The paper gives `ε ~ N(0, 0.01)`, read here as variance 0.01 (`noise_std = 0.1`), and `m = 10`.
//! `α_i` and `β_i` are drawn once per dataset from the seed, both from `N(0, 1)` (the paper leaves their
//! distribution open). All three splits share `u1, u2, α, β`, so they are one distribution.

use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, Normal, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::{DataError, EncodedTable, MtlDataset, Schema, TaskKind, TaskSpec};

/// Parameters of the generator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    /// Input dimension `d`.
    pub dim: usize,
    /// Task correlation `p` in `[-1, 1]`.
    pub correlation: f64,
    /// Scale `c` of the weight vectors.
    pub scale: f64,
    /// Number of sine terms `m`.
    pub sin_terms: usize,
    /// Standard deviation of the label noise.
    pub noise_std: f64,
    /// Training examples.
    pub n_train: usize,
    /// Validation examples.
    pub n_valid: usize,
    /// Test examples.
    pub n_test: usize,
    /// Seed of the dataset (directions, `α`, `β` and examples).
    pub seed: u64,
    /// A planted sensitive attribute (`0`: none): each row draws `s ~ Bernoulli(½)`, added as a
    /// third, adversarial binary task `sensitive`, and the inputs leak it through two known
    /// channels after the labels are computed — a **linear** one, `x0 += sensitive_leak·(2s − 1)`
    /// (a mean shift any linear probe reads), and a **non-linear** one, `x1 *= 1 + s` (a variance
    /// shift with equal means: invisible to a linear probe, readable by a non-linear one). The
    /// tasks do not depend on `s`, so removing it costs them only what the leaked inputs blur.
    #[serde(default)]
    pub sensitive_leak: f64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            dim: 100,
            correlation: 0.9,
            scale: 1.0,
            sin_terms: 10,
            noise_std: 0.1,
            n_train: 20_000,
            n_valid: 5_000,
            n_test: 5_000,
            seed: 1,
            sensitive_leak: 0.0,
        }
    }
}

/// The generator, with its per-dataset draws fixed.
#[derive(Debug, Clone)]
pub struct Synthetic {
    config: SyntheticConfig,
    weights: [Vec<f64>; 2],
    alpha: Vec<f64>,
    beta: Vec<f64>,
}

impl Synthetic {
    /// Draws the task directions and the sine parameters from `config.seed`.
    pub fn new(config: SyntheticConfig) -> Result<Self, DataError> {
        if !(-1.0..=1.0).contains(&config.correlation) {
            return Err(DataError::Invalid(format!(
                "synthetic.correlation = {} is outside [-1, 1]",
                config.correlation
            )));
        }
        if config.dim < 2 {
            return Err(DataError::Invalid(format!("synthetic.dim = {} must be at least 2", config.dim)));
        }
        if !(config.sensitive_leak.is_finite() && config.sensitive_leak >= 0.0) {
            return Err(DataError::Invalid(format!(
                "synthetic.sensitive_leak = {} must be ≥ 0",
                config.sensitive_leak
            )));
        }
        if config.n_train == 0 || !config.noise_std.is_finite() || config.noise_std < 0.0 {
            return Err(DataError::Invalid("synthetic.n_train must be > 0 and noise_std ≥ 0".into()));
        }
        let mut rng = StdRng::seed_from_u64(config.seed);
        let d = config.dim;
        let normal_vec = |rng: &mut StdRng| -> Vec<f64> { (0..d).map(|_| rng.sample(StandardNormal)).collect() };
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let unit = |v: Vec<f64>| {
            let n = dot(&v, &v).sqrt();
            v.into_iter().map(|x| x / n).collect::<Vec<_>>()
        };
        let u1 = unit(normal_vec(&mut rng));
        let v = normal_vec(&mut rng);
        let proj = dot(&v, &u1);
        let u2 = unit(v.iter().zip(&u1).map(|(a, b)| a - proj * b).collect());
        let (p, c) = (config.correlation, config.scale);
        let q = (1.0 - p * p).max(0.0).sqrt();
        let w1 = u1.iter().map(|x| c * x).collect();
        let w2 = u1.iter().zip(&u2).map(|(a, b)| c * (p * a + q * b)).collect();
        let alpha = (0..config.sin_terms).map(|_| rng.sample(StandardNormal)).collect();
        let beta = (0..config.sin_terms).map(|_| rng.sample(StandardNormal)).collect();
        Ok(Self { config, weights: [w1, w2], alpha, beta })
    }

    /// The two task weight vectors `w1, w2`.
    pub fn task_weights(&self) -> &[Vec<f64>; 2] {
        &self.weights
    }

    /// The noiseless label of task `t` for input `x`.
    pub fn label(&self, t: usize, x: &[f64]) -> f64 {
        let s: f64 = self.weights[t].iter().zip(x).map(|(w, v)| w * v).sum();
        s + self.alpha.iter().zip(&self.beta).map(|(a, b)| (a * s + b).sin()).sum::<f64>()
    }

    fn split(&self, n: usize, rng: &mut StdRng) -> EncodedTable {
        let noise = Normal::new(0.0, self.config.noise_std).expect("noise_std checked in new");
        let mut table = EncodedTable { n_rows: n, ..Default::default() };
        table.dense.reserve(n * self.config.dim);
        let leak = self.config.sensitive_leak;
        table.labels.reserve(n * if leak > 0.0 { 3 } else { 2 });
        let mut x = vec![0.0; self.config.dim];
        for _ in 0..n {
            x.iter_mut().for_each(|v| *v = rng.sample(StandardNormal));
            for t in 0..2 {
                table.labels.push((self.label(t, &x) + noise.sample(rng)) as f32);
            }
            if leak > 0.0 {
                let s = rng.random_bool(0.5) as u8 as f64;
                x[0] += leak * (2.0 * s - 1.0);
                x[1] *= 1.0 + s;
                table.labels.push(s as f32);
            }
            table.dense.extend(x.iter().map(|&v| v as f32));
        }
        table
    }

    /// Generates the three splits (inputs are dense only; two regression tasks `task1`, `task2`).
    pub fn generate(&self) -> MtlDataset {
        let mut rng = StdRng::seed_from_u64(self.config.seed.wrapping_add(0x9E37_79B9_7F4A_7C15));
        let train = self.split(self.config.n_train, &mut rng);
        let valid = self.split(self.config.n_valid, &mut rng);
        let test = self.split(self.config.n_test, &mut rng);
        let mut tasks: Vec<TaskSpec> =
            ["task1", "task2"].iter().map(|n| TaskSpec::new(*n, TaskKind::Regression)).collect();
        if self.config.sensitive_leak > 0.0 {
            let mut sensitive = TaskSpec::new("sensitive", TaskKind::Binary);
            sensitive.adversarial = true;
            tasks.push(sensitive);
        }
        let schema = Schema::new(vec![], (0..self.config.dim).map(|i| format!("x{i}")).collect(), tasks);
        MtlDataset { name: format!("synthetic-p{}", self.config.correlation), schema, train, valid, test }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pearson(a: &[f32], b: &[f32]) -> f64 {
        let n = a.len() as f64;
        let ma = a.iter().map(|&v| v as f64).sum::<f64>() / n;
        let mb = b.iter().map(|&v| v as f64).sum::<f64>() / n;
        let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
        for (&x, &y) in a.iter().zip(b) {
            let (dx, dy) = (x as f64 - ma, y as f64 - mb);
            sab += dx * dy;
            saa += dx * dx;
            sbb += dy * dy;
        }
        sab / (saa * sbb).sqrt()
    }

    fn label_correlation(p: f64, seed: u64) -> f64 {
        let cfg =
            SyntheticConfig { correlation: p, n_train: 20_000, n_valid: 10, n_test: 10, seed, ..Default::default() };
        let ds = Synthetic::new(cfg).unwrap().generate();
        pearson(&ds.train.label_column(0, 2), &ds.train.label_column(1, 2))
    }

    #[test]
    fn weight_vectors_have_the_requested_cosine() {
        for p in [-0.5, 0.0, 0.5, 0.9, 1.0] {
            let g = Synthetic::new(SyntheticConfig { correlation: p, scale: 2.0, ..Default::default() }).unwrap();
            let [w1, w2] = g.task_weights();
            let dot: f64 = w1.iter().zip(w2).map(|(a, b)| a * b).sum();
            let n1: f64 = w1.iter().map(|a| a * a).sum::<f64>().sqrt();
            let n2: f64 = w2.iter().map(|a| a * a).sum::<f64>().sqrt();
            assert!((n1 - 2.0).abs() < 1e-9 && (n2 - 2.0).abs() < 1e-9);
            assert!((dot / (n1 * n2) - p).abs() < 1e-9, "p = {p}");
        }
    }

    /// The labels' Pearson correlation rises with p. With `α_i ~ N(0, 1)` the sine terms carry most of
    /// the label variance, so p = 0.9 gives r ≈ 0.75–0.85 depending on the dataset seed.
    #[test]
    fn label_correlation_tracks_p() {
        for seed in [1, 2, 3] {
            let r: Vec<f64> = [0.0, 0.5, 0.9, 1.0].iter().map(|&p| label_correlation(p, seed)).collect();
            eprintln!("seed {seed}: label correlation at p = 0, 0.5, 0.9, 1: {r:?}");
            assert!(r[0].abs() < 0.1, "seed {seed}: p = 0 gave r = {}", r[0]);
            assert!(r[2] >= 0.7, "seed {seed}: p = 0.9 gave r = {}", r[2]);
            assert!(r[3] > 0.98, "seed {seed}: p = 1 gave r = {}", r[3]);
            assert!(r.windows(2).all(|w| w[0] < w[1]), "seed {seed}: not increasing in p: {r:?}");
        }
    }

    /// The planted attribute leaks through exactly the two channels: `x0`'s mean differs by
    /// `2·leak` between the groups, `x1`'s means agree and its deviation doubles, the other inputs
    /// and the task labels are independent of `s`.
    #[test]
    fn the_sensitive_attribute_leaks_through_the_known_channels() {
        let cfg = SyntheticConfig {
            dim: 4,
            sensitive_leak: 1.5,
            n_train: 40_000,
            n_valid: 10,
            n_test: 10,
            ..Default::default()
        };
        let ds = Synthetic::new(cfg).unwrap().generate();
        assert_eq!(ds.schema.n_tasks(), 3);
        assert!(ds.schema.tasks[2].adversarial && ds.schema.tasks[2].kind == TaskKind::Binary);
        let s = ds.train.label_column(2, 3);
        let column = |j: usize| -> Vec<f32> { ds.train.dense.iter().skip(j).step_by(4).copied().collect() };
        let stats = |v: &[f32], group: f32| {
            let g: Vec<f64> = v.iter().zip(&s).filter(|(_, z)| **z == group).map(|(x, _)| *x as f64).collect();
            let m = g.iter().sum::<f64>() / g.len() as f64;
            (m, (g.iter().map(|x| (x - m).powi(2)).sum::<f64>() / g.len() as f64).sqrt())
        };
        let ((m0, _), (m1, _)) = (stats(&column(0), 0.0), stats(&column(0), 1.0));
        assert!((m1 - m0 - 3.0).abs() < 0.05, "x0's mean shift: {}", m1 - m0);
        let ((a0, d0), (a1, d1)) = (stats(&column(1), 0.0), stats(&column(1), 1.0));
        assert!((a1 - a0).abs() < 0.05 && (d1 / d0 - 2.0).abs() < 0.05, "x1: means {a0} {a1}, deviations {d0} {d1}");
        assert!(pearson(&column(2), &s).abs() < 0.02 && pearson(&ds.train.label_column(0, 3), &s).abs() < 0.02);
        let bad = SyntheticConfig { sensitive_leak: -1.0, ..Default::default() };
        assert!(Synthetic::new(bad).unwrap_err().to_string().contains("sensitive_leak"));
    }

    #[test]
    fn same_seed_same_data_and_bad_p_is_rejected() {
        let a = Synthetic::new(SyntheticConfig { n_train: 50, ..Default::default() }).unwrap().generate();
        let b = Synthetic::new(SyntheticConfig { n_train: 50, ..Default::default() }).unwrap().generate();
        assert_eq!(a.train, b.train);
        let err = Synthetic::new(SyntheticConfig { correlation: 1.5, ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("synthetic.correlation"));
    }
}
