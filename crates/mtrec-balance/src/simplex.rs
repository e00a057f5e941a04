//! Small convex problems over the probability simplex `{x ≥ 0, Σx = 1}`, solved on the host from a
//! `T × T` Gram matrix of task gradients (MGDA-UB's min-norm point, CAGrad's inner problem).

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
}
