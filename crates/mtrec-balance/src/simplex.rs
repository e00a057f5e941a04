//! Small convex problems over the probability simplex `{x ≥ 0, Σx = 1}`, solved on the host from a
//! `T × T` Gram matrix of task gradients (MGDA-UB's min-norm point, CAGrad's inner problem), and
//! the small linear solve IMTL-G and FairGrad need.

/// Euclidean projection onto the simplex (Duchi et al. 2008, sort-based).
pub fn project_to_simplex(v: &[f64]) -> Vec<f64> {
    let mut sorted = v.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let mut cumulative = 0.0;
    let mut theta = 0.0;
    for (i, &u) in sorted.iter().enumerate() {
        cumulative += u;
        let t = (cumulative - 1.0) / (i + 1) as f64;
        if u - t > 0.0 {
            theta = t;
        }
    }
    v.iter().map(|&x| (x - theta).max(0.0)).collect()
}

/// `xᵀ·G·y`.
pub fn quadratic(gram: &[Vec<f64>], x: &[f64], y: &[f64]) -> f64 {
    gram.iter().zip(x).map(|(row, &xi)| xi * row.iter().zip(y).map(|(g, yj)| g * yj).sum::<f64>()).sum()
}

/// `G·x`.
pub fn multiply(gram: &[Vec<f64>], x: &[f64]) -> Vec<f64> {
    gram.iter().map(|row| row.iter().zip(x).map(|(g, xj)| g * xj).sum()).collect()
}

/// Minimises a convex `f` over the simplex by projected gradient descent with backtracking, from
/// the uniform point. `f_and_grad(x)` returns `(f(x), ∇f(x))`.
pub fn minimize_on_simplex(n: usize, f_and_grad: impl Fn(&[f64]) -> (f64, Vec<f64>)) -> Vec<f64> {
    let mut x = vec![1.0 / n as f64; n];
    let (mut fx, mut grad) = f_and_grad(&x);
    let mut step = 1.0;
    for _ in 0..500 {
        let scale = grad.iter().map(|g| g.abs()).fold(0.0, f64::max);
        if scale == 0.0 || !scale.is_finite() {
            break;
        }
        let mut improved = false;
        for _ in 0..60 {
            let candidate = project_to_simplex(&x.iter().zip(&grad).map(|(xi, g)| xi - step * g).collect::<Vec<_>>());
            let (fc, gc) = f_and_grad(&candidate);
            let moved: f64 = candidate.iter().zip(&x).map(|(c, xi)| (c - xi).powi(2)).sum();
            // sufficient decrease for a projected step: f(x⁺) ≤ f(x) + ⟨∇f, x⁺ − x⟩ + ‖x⁺ − x‖² / 2s
            let linear: f64 = grad.iter().zip(candidate.iter().zip(&x)).map(|(g, (c, xi))| g * (c - xi)).sum();
            if fc <= fx + linear + moved / (2.0 * step) + 1e-15 {
                improved = moved > 1e-24;
                x = candidate;
                fx = fc;
                grad = gc;
                step *= 2.0;
                break;
            }
            step /= 2.0;
        }
        if !improved {
            break;
        }
    }
    x
}

/// Solves `A·x = b` by Gaussian elimination with partial pivoting; `None` when singular (a pivot
/// below 1e-12 of the largest entry). IMTL-G's closed form and FairGrad's Newton steps.
pub fn solve_linear(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 * a.iter().flatten().map(|v| v.abs()).fold(1e-300, f64::max) {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col].clone();
        for row in col + 1..n {
            let f = a[row][col] / pivot_row[col];
            a[row][col..].iter_mut().zip(&pivot_row[col..]).for_each(|(x, p)| *x -= f * p);
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let rest: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - rest) / a[row][row];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_of_points_inside_and_outside() {
        assert_eq!(project_to_simplex(&[0.2, 0.3, 0.5]), vec![0.2, 0.3, 0.5]);
        let p = project_to_simplex(&[2.0, 0.0]);
        assert_eq!(p, vec![1.0, 0.0]);
        let p = project_to_simplex(&[0.5, 0.5, 0.5]);
        for v in p {
            assert!((v - 1.0 / 3.0).abs() < 1e-12);
        }
        // (1, 0.5, −1) → shift θ = 0.25: (0.75, 0.25, 0)
        let p = project_to_simplex(&[1.0, 0.5, -1.0]);
        assert!((p[0] - 0.75).abs() < 1e-12 && (p[1] - 0.25).abs() < 1e-12 && p[2] == 0.0, "{p:?}");
    }

    #[test]
    fn minimiser_finds_the_minimum_of_a_separable_quadratic() {
        // min Σ a_i x_i² on the simplex: x_i ∝ 1 / a_i
        let a = [1.0, 2.0, 4.0];
        let x = minimize_on_simplex(3, |x| {
            (a.iter().zip(x).map(|(a, x)| a * x * x).sum(), a.iter().zip(x).map(|(a, x)| 2.0 * a * x).collect())
        });
        let inv: Vec<f64> = a.iter().map(|v| 1.0 / v).collect();
        let total: f64 = inv.iter().sum();
        for (xi, ii) in x.iter().zip(&inv) {
            assert!((xi - ii / total).abs() < 1e-6, "{x:?}");
        }
    }

    #[test]
    fn linear_solve_by_hand() {
        // 2x + y = 5, x + 3y = 10 → x = 1, y = 3
        let x = solve_linear(vec![vec![2.0, 1.0], vec![1.0, 3.0]], vec![5.0, 10.0]).unwrap();
        assert!((x[0] - 1.0).abs() < 1e-12 && (x[1] - 3.0).abs() < 1e-12);
        assert!(solve_linear(vec![vec![1.0, 2.0], vec![2.0, 4.0]], vec![1.0, 2.0]).is_none());
    }
}
