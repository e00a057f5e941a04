//! Per-task training losses: BCE-with-logits for binary tasks, MSE for regression, softmax
//! cross-entropy for multiclass.

use burn::tensor::{Tensor, activation::log_softmax};
use mtrec_data::TaskKind;

/// Mean loss of one task over a batch.
///
/// Binary: `max(z, 0) − z·y + log(1 + exp(−|z|))`, the numerically stable BCE-with-logits.
/// Regression: `(z − y)²`. Multiclass: `−log softmax(z)_y` with `y` the class index.
///
/// # Shapes
/// - output: `[B, 1]` (`[B, classes]` for multiclass), target: `[B, 1]`
/// - returns `[1]`
pub fn task_loss(kind: TaskKind, output: Tensor<2>, target: Tensor<2>) -> Tensor<1> {
    match kind {
        TaskKind::Binary => {
            let softplus_neg_abs = output.clone().abs().neg().exp().log1p();
            (output.clone().clamp_min(0.0) - output * target + softplus_neg_abs).mean()
        }
        TaskKind::Regression => (output - target).powi_scalar(2).mean(),
        TaskKind::Multiclass => log_softmax(output, 1).gather(1, target.int()).neg().mean(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn col(v: &[f32], device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len(), 1]), device)
    }

    #[test]
    fn bce_with_logits_matches_the_definition_and_is_stable() {
        let device = Device::flex();
        let z = [-3.0f32, 0.0, 2.0, 40.0, -40.0];
        let y = [0.0f32, 1.0, 1.0, 0.0, 0.0];
        let got = task_loss(TaskKind::Binary, col(&z, &device), col(&y, &device)).into_scalar::<f32>();
        let expected: f64 = z
            .iter()
            .zip(&y)
            .map(|(&z, &y)| {
                let (z, y) = (z as f64, y as f64);
                // -y·log σ(z) − (1−y)·log(1−σ(z)), written with log-sum-exp for large |z|
                y * (1.0 + (-z).exp()).ln() + (1.0 - y) * (1.0 + z.exp()).ln()
            })
            .sum::<f64>()
            / 5.0;
        assert!((got as f64 - expected).abs() < 1e-5, "{got} vs {expected}");
        assert!((expected - 8.2).abs() < 0.1); // dominated by z = 40 with y = 0: loss 40
    }

    /// Cross-entropy by hand: logits (ln 3, 0, 0) give p = (0.6, 0.2, 0.2); labels 0 and 2 give
    /// (−ln 0.6 − ln 0.2) / 2.
    #[test]
    fn multiclass_cross_entropy_by_hand() {
        let device = Device::flex();
        let ln3 = 3f32.ln();
        let logits = Tensor::<2>::from_data(TensorData::new(vec![ln3, 0.0, 0.0, ln3, 0.0, 0.0], [2, 3]), &device);
        let got = task_loss(TaskKind::Multiclass, logits, col(&[0.0, 2.0], &device)).into_scalar::<f32>() as f64;
        let expected = -(0.6f64.ln() + 0.2f64.ln()) / 2.0;
        assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
    }

    #[test]
    fn mse_is_the_mean_squared_error() {
        let device = Device::flex();
        let got = task_loss(TaskKind::Regression, col(&[1.0, 2.0], &device), col(&[0.0, 4.0], &device));
        assert_eq!(got.into_scalar::<f32>(), 2.5);
    }
}
