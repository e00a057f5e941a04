//! Linear concept erasure: LEACE (Belrose et al., NeurIPS 2023), the closed-form projection that
//! removes every *linear* trace of a concept `z` (e.g. census `sex`) from a representation `x`
//! while moving `x` as little as possible.
//!
//! Why: an adversary behind gradient reversal may die or be fooled and leaves the attribute
//! recoverable (Elazar & Goldberg 2018); LEACE is a guarantee. With `μ = E[x]`, `Σ = Cov(x)` and
//! the cross-covariance `Σ_xz = Cov(x, z)` (`[d, k]`, one column a concept), the eraser is
//!
//! `r(x) = x − E·(x − μ)`, `E = Σ_xz·(Σ_xzᵀ·Σ⁻¹·Σ_xz)⁻¹·Σ_xzᵀ·Σ⁻¹`,
//!
//! which is LEACE's `W⁺·P_{WΣ_xz}·W` with the whitening `W = Σ^{-1/2}` written out (the two are the
//! same matrix for an invertible `Σ`; a small ridge makes a singular one invertible, e.g. a dead
//! ReLU unit's constant column). **What it guarantees**: `Cov(r(x), z) = Σ_xz − E·Σ_xz = 0`
//! exactly on the rows it was fitted on, which is equivalent to *no linear classifier* (any
//! convex loss) predicting `z` from `r(x)` better than a constant (Belrose et al., Theorem 3.1);
//! on other rows up to estimation error. **What it does not**: a non-linear probe may still read `z`
//! from `r(x)` (higher moments are untouched), and a representation that keeps training after the
//! fit drifts away from it — which is why the trainer refits it as the model trains and before every
//! validation ([`ModelConfig::erasure`](crate::ModelConfig)).

use burn::{
    module::{Module, Param},
    tensor::{Device, Tensor, TensorData},
};

/// Relative ridge added to the covariance's diagonal before solving (times its mean variance).
const RIDGE: f64 = 1e-6;

/// Running sums of `x`, `x·xᵀ`, `z` and `x·zᵀ` over rows: what a LEACE fit needs, and what
/// data-parallel ranks add up ([`Self::as_mut_slice`]) so that every rank fits the same eraser.
#[derive(Debug, Clone, PartialEq)]
pub struct CovarianceSums {
    width: usize,
    concepts: usize,
    /// `[n, Σx (d), Σxxᵀ (d·d), Σz (k), Σxzᵀ (d·k)]`, flat.
    sums: Vec<f64>,
}

impl CovarianceSums {
    /// Empty sums for a representation of `width` columns and `concepts` concept columns.
    pub fn new(width: usize, concepts: usize) -> Self {
        Self { width, concepts, sums: vec![0.0; 1 + width + width * width + concepts + width * concepts] }
    }

    /// Adds rows: `x` row-major `[rows, width]`, `z` row-major `[rows, concepts]`.
    ///
    /// # Panics
    /// When the lengths are not whole rows of the same count.
    pub fn add_rows(&mut self, x: &[f32], z: &[f32]) {
        let (d, k) = (self.width, self.concepts);
        assert!(x.len().is_multiple_of(d.max(1)) && z.len().is_multiple_of(k.max(1)), "whole rows");
        assert_eq!(x.len() / d.max(1), z.len() / k.max(1), "as many concept rows as representation rows");
        let (n, rest) = self.sums.split_first_mut().expect("non-empty");
        let (sx, rest) = rest.split_at_mut(d);
        let (sxx, rest) = rest.split_at_mut(d * d);
        let (sz, sxz) = rest.split_at_mut(k);
        for (xr, zr) in x.chunks_exact(d).zip(z.chunks_exact(k)) {
            *n += 1.0;
            for i in 0..d {
                let xi = xr[i] as f64;
                sx[i] += xi;
                for (j, &xj) in xr.iter().enumerate().skip(i) {
                    sxx[i * d + j] += xi * xj as f64;
                }
                for (c, &zc) in zr.iter().enumerate() {
                    sxz[i * k + c] += xi * zc as f64;
                }
            }
            for (c, &zc) in zr.iter().enumerate() {
                sz[c] += zc as f64;
            }
        }
    }

    /// The sums, flat (to add them over data-parallel ranks in place).
    pub fn as_mut_slice(&mut self) -> &mut [f64] {
        &mut self.sums
    }

    /// Rows added.
    pub fn rows(&self) -> f64 {
        self.sums[0]
    }

    /// `(μ [d], Σ [d, d], Σ_xz [d, k])` of the rows added, row-major.
    fn moments(&self) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (d, k) = (self.width, self.concepts);
        let n = self.sums[0];
        let sx = &self.sums[1..1 + d];
        let sxx = &self.sums[1 + d..1 + d + d * d];
        let sz = &self.sums[1 + d + d * d..1 + d + d * d + k];
        let sxz = &self.sums[1 + d + d * d + k..];
        let mean: Vec<f64> = sx.iter().map(|s| s / n).collect();
        let mean_z: Vec<f64> = sz.iter().map(|s| s / n).collect();
        let mut cov = vec![0.0; d * d];
        for i in 0..d {
            for j in i..d {
                let c = sxx[i * d + j] / n - mean[i] * mean[j];
                cov[i * d + j] = c;
                cov[j * d + i] = c;
            }
        }
        let cross: Vec<f64> = (0..d * k).map(|ic| sxz[ic] / n - mean[ic / k] * mean_z[ic % k]).collect();
        (mean, cov, cross)
    }

    /// The LEACE eraser of these rows.
    ///
    /// # Errors
    /// Without rows.
    pub fn fit(&self) -> Result<LeaceFit, String> {
        let (d, k) = (self.width, self.concepts);
        let n = self.sums[0];
        if n < 2.0 {
            return Err(format!("concept erasure needs at least 2 rows to fit on, got {n}"));
        }
        let (mean, mut cov, cross) = self.moments();
        let scale = (0..d).map(|i| cov[i * d + i]).sum::<f64>() / d.max(1) as f64;
        let ridge = RIDGE * if scale > 0.0 { scale } else { 1.0 };
        (0..d).for_each(|i| cov[i * d + i] += ridge);
        let chol = cholesky(&cov, d).ok_or("the representation's covariance is not positive definite")?;
        // A = Σ⁻¹·Σ_xz, [d, k]
        let mut a = vec![0.0; d * k];
        for c in 0..k {
            let column: Vec<f64> = (0..d).map(|i| cross[i * k + c]).collect();
            for (i, v) in cholesky_solve(&chol, d, column).into_iter().enumerate() {
                a[i * k + c] = v;
            }
        }
        // G = Σ_xzᵀ·A, [k, k]; concepts with no linear signal (G ≈ 0) need no erasure
        let mut g = vec![0.0; k * k];
        for r in 0..k {
            for c in 0..k {
                g[r * k + c] = (0..d).map(|i| cross[i * k + r] * a[i * k + c]).sum();
            }
        }
        let g_scale = (0..k).map(|c| g[c * k + c]).fold(0.0, f64::max);
        let mut eraser = vec![0.0; d * d];
        if g_scale > 1e-300 {
            (0..k).for_each(|c| g[c * k + c] += 1e-12 * g_scale);
            let g_chol = cholesky(&g, k).ok_or("the concepts' cross-covariance is degenerate")?;
            // E = Σ_xz·G⁻¹·Aᵀ: H = G⁻¹·Aᵀ column by column, [k, d]
            let mut h = vec![0.0; k * d];
            for j in 0..d {
                let column: Vec<f64> = (0..k).map(|c| a[j * k + c]).collect();
                for (c, v) in cholesky_solve(&g_chol, k, column).into_iter().enumerate() {
                    h[c * d + j] = v;
                }
            }
            for i in 0..d {
                for j in 0..d {
                    eraser[i * d + j] = (0..k).map(|c| cross[i * k + c] * h[c * d + j]).sum();
                }
            }
        }
        Ok(LeaceFit { width: d, mean, eraser })
    }
}

/// Lower-triangular `L` with `L·Lᵀ = m` (`m` symmetric `[n, n]`, row-major); `None` when `m` is not
/// positive definite.
fn cholesky(m: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = m[i * n + j] - (0..j).map(|p| l[i * n + p] * l[j * n + p]).sum::<f64>();
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Solves `L·Lᵀ·x = b`.
fn cholesky_solve(l: &[f64], n: usize, mut b: Vec<f64>) -> Vec<f64> {
    for i in 0..n {
        b[i] = (b[i] - (0..i).map(|p| l[i * n + p] * b[p]).sum::<f64>()) / l[i * n + i];
    }
    for i in (0..n).rev() {
        b[i] = (b[i] - (i + 1..n).map(|p| l[p * n + i] * b[p]).sum::<f64>()) / l[i * n + i];
    }
    b
}

/// A fitted eraser `r(x) = x − E·(x − μ)`.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaceFit {
    /// Width `d` of the representation.
    pub width: usize,
    /// `μ`, `[d]`.
    pub mean: Vec<f64>,
    /// `E`, row-major `[d, d]`.
    pub eraser: Vec<f64>,
}

impl LeaceFit {
    /// `r(x)` of one row (f64; what the module computes in f32).
    pub fn erase_row(&self, x: &[f64]) -> Vec<f64> {
        let d = self.width;
        let centred: Vec<f64> = x.iter().zip(&self.mean).map(|(v, m)| v - m).collect();
        (0..d).map(|i| x[i] - (0..d).map(|j| self.eraser[i * d + j] * centred[j]).sum::<f64>()).collect()
    }
}

/// The eraser as model state (saved in checkpoints with the model it was fitted for; never
/// trained: its parameters take no gradient).
#[derive(Module, Debug)]
pub struct ConceptEraser {
    /// `μ`, `[1, d]`.
    pub mean: Param<Tensor<2>>,
    /// `Eᵀ`, `[d, d]`.
    pub eraser_t: Param<Tensor<2>>,
}

impl ConceptEraser {
    /// The identity (nothing erased yet) for a representation of `width` columns.
    pub fn identity(width: usize, device: &Device) -> Self {
        Self::from_parts(vec![0.0; width], vec![0.0; width * width], width, device)
    }

    /// The module of a fit.
    pub fn from_fit(fit: &LeaceFit, device: &Device) -> Self {
        let d = fit.width;
        let transposed: Vec<f64> = (0..d * d).map(|ij| fit.eraser[(ij % d) * d + ij / d]).collect();
        Self::from_parts(fit.mean.clone(), transposed, d, device)
    }

    fn from_parts(mean: Vec<f64>, eraser_t: Vec<f64>, d: usize, device: &Device) -> Self {
        let tensor = |v: Vec<f64>, shape: [usize; 2]| {
            let v: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
            Param::from_tensor(Tensor::from_data(TensorData::new(v, shape), device)).set_require_grad(false)
        };
        Self { mean: tensor(mean, [1, d]), eraser_t: tensor(eraser_t, [d, d]) }
    }

    /// `(μ, Eᵀ)` detached, for [`crate::SharedTensors::erased`].
    pub fn tensors(&self) -> (Tensor<2>, Tensor<2>) {
        (self.mean.val().detach(), self.eraser_t.val().detach())
    }
}

/// `r(x) = x − (x − μ)·Eᵀ` row by row.
///
/// # Shapes
/// - `x`: `[B, d]`, `mean`: `[1, d]`, `eraser_t`: `[d, d]`; output `[B, d]`
pub fn erase(x: Tensor<2>, mean: Tensor<2>, eraser_t: Tensor<2>) -> Tensor<2> {
    x.clone() - (x - mean).matmul(eraser_t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};
    use rand_distr::{Distribution, Normal};

    /// Rows `x = (z·s + n₁, y + n₂ + 0.5·n₁, n₃)` with `z ∈ {0, 1}` (the concept), `y` an independent
    /// signal: column 0 leaks `z`, column 1 carries `y` and a share of column 0's noise.
    fn planted(rows: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let normal = Normal::new(0.0f64, 1.0).unwrap();
        let (mut x, mut z, mut y) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rows {
            let zi = rng.random_bool(0.3) as u8 as f64;
            let yi = normal.sample(&mut rng);
            let n1 = normal.sample(&mut rng);
            x.extend(
                [2.0 * zi + n1, yi + 0.3 * normal.sample(&mut rng) + 0.5 * n1, normal.sample(&mut rng)]
                    .map(|v| v as f32),
            );
            z.push(zi as f32);
            y.push(yi as f32);
        }
        (x, z, y)
    }

    fn auc(scores: &[f64], labels: &[f32]) -> f64 {
        let mut pairs: Vec<(f64, f32)> = scores.iter().copied().zip(labels.iter().copied()).collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (mut rank_sum, mut pos) = (0.0, 0.0);
        for (r, (_, l)) in pairs.iter().enumerate() {
            if *l > 0.5 {
                rank_sum += (r + 1) as f64;
                pos += 1.0;
            }
        }
        let neg = labels.len() as f64 - pos;
        (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
    }

    /// The best linear score for `z`: least squares of `z` on `x` (Fisher's direction), fitted on
    /// `train`, AUC on `test`.
    fn linear_probe_auc(train: (&[Vec<f64>], &[f32]), test: (&[Vec<f64>], &[f32])) -> f64 {
        let d = train.0[0].len();
        let mut sums = CovarianceSums::new(d, 1);
        for (row, z) in train.0.iter().zip(train.1) {
            let row: Vec<f32> = row.iter().map(|&v| v as f32).collect();
            sums.add_rows(&row, &[*z]);
        }
        // w = Σ⁻¹·Σ_xz: the regression direction
        let (_, mut cov, cross) = sums.moments();
        (0..d).for_each(|i| cov[i * d + i] += 1e-9);
        let w = cholesky_solve(&cholesky(&cov, d).unwrap(), d, cross);
        let scores: Vec<f64> = test.0.iter().map(|r| r.iter().zip(&w).map(|(a, b)| a * b).sum()).collect();
        auc(&scores, test.1)
    }

    /// A 2-D case by hand: `Σ = diag(4, 1)`, `Σ_xz = (1, 0)ᵀ` → `E = [[1, 0], [0, 0]]` (column 0 is
    /// replaced by its mean, column 1 kept); with a correlated column, `E·Σ_xz = Σ_xz`.
    #[test]
    fn eraser_by_hand() {
        // rows (±2 + 1, ±1) with z = 1 on the + rows of column 0: Σ = diag(4, 1), Σ_xz = (1, 0)
        let x = [3.0f32, 1.0, 3.0, -1.0, -1.0, 1.0, -1.0, -1.0];
        let z = [1.0f32, 1.0, 0.0, 0.0];
        let mut sums = CovarianceSums::new(2, 1);
        sums.add_rows(&x, &z);
        let fit = sums.fit().unwrap();
        assert_eq!(fit.mean, vec![1.0, 0.0]);
        for (got, want) in fit.eraser.iter().zip([1.0, 0.0, 0.0, 0.0]) {
            assert!((got - want).abs() < 1e-5, "{:?}", fit.eraser);
        }
        assert_eq!(fit.erase_row(&[3.0, 1.0]).iter().map(|v| (v * 1e6).round() / 1e6).collect::<Vec<_>>(), [1.0, 1.0]);
    }

    /// Planted data: before, a linear probe reads `z` (AUC ≈ 0.92); after the eraser fitted on the
    /// training rows, the cross-covariance on them is 0, a linear probe refitted on the erased
    /// training rows is at chance on held-out rows, and the orthogonal signal `y` is kept: column 1
    /// has no covariance with `z`, so `E` leaves it as it was (its correlation with `y` stays
    /// `1/√(1 + 0.3² + 0.5²) = 0.8639`, by hand).
    #[test]
    fn erasure_leaves_a_linear_probe_at_chance_and_keeps_an_orthogonal_signal() {
        let (x, z, _) = planted(20_000, 1);
        let (tx, tz, ty) = planted(20_000, 2);
        let rows =
            |x: &[f32]| x.chunks_exact(3).map(|r| r.iter().map(|&v| v as f64).collect()).collect::<Vec<Vec<f64>>>();
        let (train, test) = (rows(&x), rows(&tx));
        let before = linear_probe_auc((&train, &z), (&test, &tz));
        assert!(before > 0.85, "the planted concept is linearly readable: {before}");
        let mut sums = CovarianceSums::new(3, 1);
        sums.add_rows(&x, &z);
        let fit = sums.fit().unwrap();
        let erased: Vec<Vec<f64>> = train.iter().map(|r| fit.erase_row(r)).collect();
        let erased_test: Vec<Vec<f64>> = test.iter().map(|r| fit.erase_row(r)).collect();
        // Cov(r(x), z) = 0 on the fitted rows
        let n = z.len() as f64;
        let mz = z.iter().map(|&v| v as f64).sum::<f64>() / n;
        for j in 0..3 {
            let mx = erased.iter().map(|r| r[j]).sum::<f64>() / n;
            let cov = erased.iter().zip(&z).map(|(r, &zi)| (r[j] - mx) * (zi as f64 - mz)).sum::<f64>() / n;
            assert!(cov.abs() < 1e-9, "column {j}: Cov(r(x), z) = {cov}");
        }
        let after = linear_probe_auc((&erased, &z), (&erased_test, &tz));
        assert!((after - 0.5).abs() < 0.02, "a linear probe after erasure: {after}");
        let corr = |a: &[f64], b: &[f32]| {
            let (ma, mb) =
                (a.iter().sum::<f64>() / a.len() as f64, b.iter().map(|&v| v as f64).sum::<f64>() / b.len() as f64);
            let cov: f64 = a.iter().zip(b).map(|(x, &y)| (x - ma) * (y as f64 - mb)).sum();
            let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
            let vb: f64 = b.iter().map(|&y| (y as f64 - mb).powi(2)).sum();
            cov / (va * vb).sqrt()
        };
        let kept = corr(&erased_test.iter().map(|r| r[1]).collect::<Vec<_>>(), &ty);
        let by_hand = 1.0 / (1.0f64 + 0.09 + 0.25).sqrt();
        assert!((kept - by_hand).abs() < 0.01, "the orthogonal signal survives: corr {kept} vs {by_hand}");
        // the module computes the same in f32
        let device = Device::flex();
        let module = ConceptEraser::from_fit(&fit, &device);
        let (m, e) = module.tensors();
        let input = Tensor::<2>::from_data(TensorData::new(tx[..30].to_vec(), [10, 3]), &device);
        let out = erase(input, m, e).into_data().try_into_vec::<f32>().unwrap();
        for (r, row) in test[..10].iter().enumerate() {
            for (j, want) in fit.erase_row(row).into_iter().enumerate() {
                assert!((out[r * 3 + j] as f64 - want).abs() < 1e-4, "row {r} col {j}");
            }
        }
    }

    /// A concept the representation does not carry linearly (both classes have the same mean:
    /// `Σ_xz = 0`) leaves it exactly as it is (`E = 0`); no rows is an error.
    #[test]
    fn an_absent_concept_is_left_alone() {
        let x = [1.0f32, 2.0, -1.0, -2.0, 1.0, -2.0, -1.0, 2.0];
        let z = [1.0f32, 1.0, 0.0, 0.0];
        let mut sums = CovarianceSums::new(2, 1);
        sums.add_rows(&x, &z);
        let fit = sums.fit().unwrap();
        assert!(fit.eraser.iter().all(|&e| e.abs() < 1e-12), "{:?}", fit.eraser);
        assert_eq!(fit.erase_row(&[1.0, 2.0]), vec![1.0, 2.0]);
        assert!(CovarianceSums::new(2, 1).fit().is_err(), "no rows: an error");
    }
}
