//! Aligned-MTL (Senushkin, Patakin, Kuznetsov & Konushin, CVPR 2023).
//!
//! The task gradients are made orthogonal and of equal length — the condition number of the
//! system of gradients becomes 1 — before they are summed: with the Gram matrix
//! `G = V·Λ·Vᵀ` (`G_ij = ⟨g_i, g_j⟩`, eigenvalues above `λ_max·T·ε` kept, as in the official
//! code and LibMTL), `B = √λ_min·V·Λ^{-1/2}·Vᵀ` and the aligned gradients `ĝ_j = Σ_i B_ij·g_i`
//! satisfy `⟨ĝ_i, ĝ_j⟩ = (B·G·B)_ij = λ_min·δ_ij`. The update is `Σ_j ĝ_j`, so the coefficient of
//! `g_i` is the row sum `Σ_j B_ij`. Orthogonal gradients of equal length are left alone (fixed
//! weights); the update is on the scale of the smallest singular value, so a task whose gradient
//! dominates is scaled down to the others. Applied to the gradients at the shared tensors.
//!
//! The eigendecomposition of the `T × T` matrix is the cyclic Jacobi method: a few dozen lines
//! for a matrix of a handful of rows, where a linear-algebra crate would add to every build.

use crate::GradientCombiner;

/// Aligned-MTL's combination.
#[derive(Debug, Default, Clone, Copy)]
pub struct AlignedMtl;

/// Eigenvalues and eigenvectors of a symmetric matrix (`vectors[k]`: the unit eigenvector of
/// `values[k]`), by cyclic Jacobi rotations.
pub fn symmetric_eigen(matrix: &[Vec<f64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = matrix.len();
    let mut a: Vec<Vec<f64>> = matrix.to_vec();
    let mut v: Vec<Vec<f64>> = (0..n).map(|i| (0..n).map(|j| f64::from(u8::from(i == j))).collect()).collect();
    let scale: f64 = a.iter().flatten().map(|x| x * x).sum::<f64>().sqrt();
    for _ in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        if off.sqrt() <= 1e-15 * scale.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q] == 0.0 {
                    continue;
                }
                // the rotation that zeroes a[p][q] (Golub & Van Loan, Algorithm 8.5.1)
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in a.iter_mut() {
                    let (akp, akq) = (row[p], row[q]);
                    row[p] = c * akp - s * akq;
                    row[q] = s * akp + c * akq;
                }
                let (head, tail) = a.split_at_mut(q);
                for (apk, aqk) in head[p].iter_mut().zip(tail[0].iter_mut()) {
                    (*apk, *aqk) = (c * *apk - s * *aqk, s * *apk + c * *aqk);
                }
                for row in v.iter_mut() {
                    let (vp, vq) = (row[p], row[q]);
                    row[p] = c * vp - s * vq;
                    row[q] = s * vp + c * vq;
                }
            }
        }
    }
    let values = (0..n).map(|i| a[i][i]).collect();
    let vectors = (0..n).map(|k| (0..n).map(|i| v[i][k]).collect()).collect();
    (values, vectors)
}

impl AlignedMtl {
    /// The alignment matrix `B` of a Gram matrix (zero where every gradient is zero).
    pub fn alignment(gram: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let t = gram.len();
        let (values, vectors) = symmetric_eigen(gram);
        let largest = values.iter().copied().fold(0.0, f64::max);
        let tolerance = largest * t as f64 * f64::EPSILON;
        let kept: Vec<usize> = (0..t).filter(|&k| values[k] > tolerance).collect();
        let mut b = vec![vec![0.0; t]; t];
        let Some(smallest) = kept.iter().map(|&k| values[k]).reduce(f64::min) else { return b };
        for &k in &kept {
            let w = (smallest / values[k]).sqrt();
            for i in 0..t {
                for j in 0..t {
                    b[i][j] += w * vectors[k][i] * vectors[k][j];
                }
            }
        }
        b
    }
}

impl GradientCombiner for AlignedMtl {
    fn name(&self) -> &'static str {
        "aligned_mtl"
    }

    fn coefficients(&mut self, gram: &[Vec<f64>], _losses: &[f64]) -> Vec<f64> {
        Self::alignment(gram).iter().map(|row| row.iter().sum()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
        (0..a.len()).map(|i| (0..b[0].len()).map(|j| (0..b.len()).map(|k| a[i][k] * b[k][j]).sum()).collect()).collect()
    }

    /// By hand: g1 = (1, 0), g2 = (0, 2): G = diag(1, 4), λ_min = 1, B = diag(√(1/1), √(1/4)) =
    /// diag(1, ½): the coefficients (1, ½) make the update g1 + ½·g2 = (1, 1), both tasks' parts of
    /// length 1.
    #[test]
    fn equalises_orthogonal_gradients_by_hand() {
        let c = AlignedMtl.coefficients(&[vec![1.0, 0.0], vec![0.0, 4.0]], &[]);
        assert!((c[0] - 1.0).abs() < 1e-12 && (c[1] - 0.5).abs() < 1e-12, "{c:?}");
        let c = AlignedMtl.coefficients(&[vec![2.0, 0.0], vec![0.0, 2.0]], &[]);
        assert!(c.iter().all(|&x| (x - 1.0).abs() < 1e-12), "orthogonal, equal length: left alone, {c:?}");
    }

    /// The defining property on a non-diagonal case: g1 = (1, 0), g2 = (1, 1), G = [[1, 1], [1, 2]],
    /// eigenvalues (3 ± √5)/2: B·G·B = λ_min·I with λ_min = (3 − √5)/2, and B symmetric.
    #[test]
    fn aligned_gradients_are_orthogonal_and_equal() {
        let g = vec![vec![1.0, 1.0], vec![1.0, 2.0]];
        let (mut values, _) = symmetric_eigen(&g);
        values.sort_by(f64::total_cmp);
        let small = (3.0 - 5f64.sqrt()) / 2.0;
        assert!((values[0] - small).abs() < 1e-12 && (values[1] - (3.0 + 5f64.sqrt()) / 2.0).abs() < 1e-12);
        let b = AlignedMtl::alignment(&g);
        let bgb = product(&product(&b, &g), &b);
        for i in 0..2 {
            for j in 0..2 {
                let want = if i == j { small } else { 0.0 };
                assert!((bgb[i][j] - want).abs() < 1e-12, "BGB = {bgb:?}");
                assert!((b[i][j] - b[j][i]).abs() < 1e-12);
            }
        }
    }

    /// Jacobi on a 4 × 4 symmetric matrix: V·Λ·Vᵀ gives it back and V is orthonormal; a rank-1
    /// Gram matrix (two parallel gradients) keeps one direction.
    #[test]
    fn eigendecomposition_reconstructs() {
        let m = vec![
            vec![4.0, 1.0, -2.0, 0.5],
            vec![1.0, 3.0, 0.0, 1.0],
            vec![-2.0, 0.0, 5.0, -1.0],
            vec![0.5, 1.0, -1.0, 2.0],
        ];
        let (values, vectors) = symmetric_eigen(&m);
        for i in 0..4 {
            for j in 0..4 {
                let back: f64 = (0..4).map(|k| values[k] * vectors[k][i] * vectors[k][j]).sum();
                assert!((back - m[i][j]).abs() < 1e-10, "[{i}][{j}]");
                let dot: f64 = (0..4).map(|k| vectors[i][k] * vectors[j][k]).sum();
                assert!((dot - f64::from(u8::from(i == j))).abs() < 1e-10);
            }
        }
        // g1 = (1, 0), g2 = (2, 0): G = [[1, 2], [2, 4]], one eigenvalue 5 along (1, 2)/√5: B = that
        // projector, coefficients (1 + 2, 2 + 4)/5
        let c = AlignedMtl.coefficients(&[vec![1.0, 2.0], vec![2.0, 4.0]], &[]);
        assert!((c[0] - 0.6).abs() < 1e-12 && (c[1] - 1.2).abs() < 1e-12, "{c:?}");
    }

    /// LibMTL's and TorchJD's Aligned-MTL (preference ones), from `reference/balancers.json`.
    #[test]
    fn matches_the_reference_implementations() {
        crate::test_support::check_against_references("aligned_mtl", 1e-9, |_| AlignedMtl, |_, _| 1.0);
    }
}
