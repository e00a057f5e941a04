//! Per-task training losses: BCE-with-logits for binary tasks, MSE for regression, softmax
//! cross-entropy for multiclass — means over the rows that hold the task's label (a task with its
//! own sample space has absent labels, `NaN`, elsewhere).

use burn::tensor::{Tensor, activation::log_softmax};
use mtrec_data::{MtlBatch, TaskKind};

/// Each row's loss of one task.
///
/// Binary: `max(z, 0) − z·y + log(1 + exp(−|z|))`, the numerically stable BCE-with-logits (its
/// gradient is `σ(z) − y` everywhere, `z = 0` included).
/// Regression: `(z − y)²`. Multiclass: `−log softmax(z)_y` with `y` the class index.
///
/// # Shapes
/// - output: `[B, 1]` (`[B, classes]` for multiclass), target: `[B, 1]`
/// - returns `[B, 1]`
pub fn task_loss_rows(kind: TaskKind, output: Tensor<2>, target: Tensor<2>) -> Tensor<2> {
    match kind {
        TaskKind::Binary => {
            // max(z, 0) as (z + |z|)/2 (the same value): its derivative at z = 0 is ½, so the sum's
            // is σ(0) − y there too (clamp_min's 1 and |z|'s 0 at the kink gave 1 − y)
            let abs = output.clone().abs();
            let softplus_neg_abs = abs.clone().neg().exp().log1p();
            (output.clone() + abs).mul_scalar(0.5) - output * target + softplus_neg_abs
        }
        TaskKind::Regression => (output - target).powi_scalar(2),
        TaskKind::Multiclass => log_softmax(output, 1).gather(1, target.int()).neg(),
    }
}

/// Mean loss of one task over a batch whose labels are all present ([`task_loss_rows`]).
///
/// # Shapes
/// - output: `[B, 1]` (`[B, classes]` for multiclass), target: `[B, 1]`
/// - returns `[1]`
pub fn task_loss(kind: TaskKind, output: Tensor<2>, target: Tensor<2>) -> Tensor<1> {
    task_loss_rows(kind, output, target).mean()
}

/// The loss of one task whose label may be absent (`NaN`) on some rows: the sum over the rows that
/// hold it, divided by `denominator` (their number in one process; see
/// [`MtlBatch::loss_denominator`] for a shard). Absent rows add exactly zero to the loss and to its
/// gradient, whatever the output there; with `denominator = 0` (no row holds the label) the loss is
/// 0 and so is its gradient.
///
/// # Shapes
/// - output: `[B, 1]` (`[B, classes]` for multiclass), target: `[B, 1]`
/// - returns `[1]`
pub fn labelled_task_loss(kind: TaskKind, output: Tensor<2>, target: Tensor<2>, denominator: f64) -> Tensor<1> {
    let absent = target.clone().is_nan();
    let rows = task_loss_rows(kind, output, target.mask_fill(absent.clone(), 0.0));
    let sum = rows.mask_fill(absent, 0.0).sum();
    if denominator > 0.0 { sum.div_scalar(denominator) } else { sum.mul_scalar(0.0) }
}

/// Task `t`'s loss on `batch` (or a shard of it) from its `output`: the plain mean where every
/// label is present, else [`labelled_task_loss`] with the batch's denominator.
///
/// # Shapes
/// - output: `[B, 1]` (`[B, classes]` for multiclass) for the batch's `B` rows
/// - returns `[1]`
pub fn batch_task_loss(kind: TaskKind, output: Tensor<2>, batch: &MtlBatch, t: usize) -> Tensor<1> {
    let target = batch.labels.clone().slice([0..batch.size, t..t + 1]);
    match batch.loss_denominator(t) {
        None => task_loss(kind, output, target),
        Some(denominator) => labelled_task_loss(kind, output, target, denominator),
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

    /// Absent labels by hand: BCE over the two labelled rows only (the absent row's huge logit
    /// changes nothing), the same value divided by a shard's denominator, zero gradient on the absent
    /// row; a task labelled nowhere has loss 0 and gradient 0; a multiclass and a regression task
    /// with NaN labels give the mean over their labelled rows.
    #[test]
    fn absent_labels_add_nothing_to_loss_or_gradient() {
        let device = Device::flex().autodiff();
        let nan = f32::NAN;
        let z = col(&[0.0, 1e4, 2.0], &device).require_grad();
        let y = col(&[1.0, nan, 0.0], &device);
        let loss = labelled_task_loss(TaskKind::Binary, z.clone(), y.clone(), 2.0);
        let expected = (2f64.ln() + (1.0 + 2f64.exp()).ln()) / 2.0;
        assert!((loss.clone().into_scalar::<f32>() as f64 - expected).abs() < 1e-6);
        let grad = z.grad(&loss.backward()).unwrap().into_data().try_into_vec::<f32>().unwrap();
        // ∂/∂z = (σ(z) − y) / 2 on labelled rows, exactly 0 on the absent one
        let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
        assert!((grad[0] as f64 - (0.5 - 1.0) / 2.0).abs() < 1e-6 && grad[1] == 0.0, "{grad:?}");
        assert!((grad[2] as f64 - sigmoid(2.0) / 2.0).abs() < 1e-6, "{grad:?}");
        let halved = labelled_task_loss(TaskKind::Binary, z.clone(), y, 4.0).into_scalar::<f32>() as f64;
        assert!((halved - expected / 2.0).abs() < 1e-6);
        let nowhere = labelled_task_loss(TaskKind::Binary, z.clone(), col(&[nan; 3], &device), 0.0);
        assert_eq!(nowhere.clone().into_scalar::<f32>(), 0.0);
        let grad = z.grad(&nowhere.backward()).unwrap().into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(grad, vec![0.0; 3]);
        let ln3 = 3f32.ln();
        let logits = Tensor::<2>::from_data(TensorData::new(vec![ln3, 0.0, 0.0, 9.0, 9.0, 9.0], [2, 3]), &device);
        let got = labelled_task_loss(TaskKind::Multiclass, logits, col(&[0.0, nan], &device), 1.0);
        assert!((got.into_scalar::<f32>() as f64 + 0.6f64.ln()).abs() < 1e-6);
        let got = labelled_task_loss(
            TaskKind::Regression,
            col(&[1.0, 5.0, 2.0], &device),
            col(&[0.0, nan, 4.0], &device),
            2.0,
        );
        assert_eq!(got.into_scalar::<f32>(), 2.5);
    }

    #[test]
    fn mse_is_the_mean_squared_error() {
        let device = Device::flex();
        let got = task_loss(TaskKind::Regression, col(&[1.0, 2.0], &device), col(&[0.0, 4.0], &device));
        assert_eq!(got.into_scalar::<f32>(), 2.5);
    }
}
