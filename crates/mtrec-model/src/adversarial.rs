//! An adversarial task (the seed's §2.1.3): a head behind a gradient-reversal layer (Ganin &
//! Lempitsky, ICML 2015) on the representation the model's towers read (MMoE's per-task mixtures,
//! shared-bottom's bottom, …). The head learns to predict its target (e.g. census `sex`); the
//! reversed gradient, scaled by λ, pushes that representation — and everything below it — to make
//! the target unpredictable: the fairness use. λ may follow DANN's warm-up schedule
//! [`dann_lambda`].

use burn::{
    config::Config,
    module::Module,
    tensor::{Device, Tensor},
};

use crate::{TaskOutput, TaskTower, TaskTowerConfig};

/// Identity forward, `−λ ×` the gradient backward: `−λ·x + (1 + λ)·detach(x)`.
///
/// # Shapes
/// - input and output `[B, d]`
pub fn gradient_reversal(x: Tensor<2>, lambda: f64) -> Tensor<2> {
    x.clone().mul_scalar(-lambda) + x.detach().mul_scalar(1.0 + lambda)
}

/// DANN's warm-up of the reversal weight (Ganin & Lempitsky 2015, §5.2.2):
/// `λ_p = λ·(2 / (1 + exp(−γ·p)) − 1)` at training progress `p ∈ [0, 1]` (steps done / all steps),
/// `γ = 10`: 0 at the start, λ·0.9866 half-way, λ·0.99991 at the end, so the adversary's noisy early gradient does not
/// disturb the representation while it forms.
pub fn dann_lambda(lambda: f64, progress: f64) -> f64 {
    lambda * (2.0 / (1.0 + (-10.0 * progress.clamp(0.0, 1.0)).exp()) - 1.0)
}

/// Configuration of an [`AdversarialHead`].
#[derive(Config, Debug)]
pub struct AdversarialHeadConfig {
    /// Width of the shared representation it reads.
    pub d_input: usize,
    /// Hidden widths of its tower.
    pub hidden: Vec<usize>,
    /// λ, the weight of the reversed gradient.
    #[config(default = 1.0)]
    pub weight: f64,
    /// Width of the head (one logit a class for a multiclass target).
    #[config(default = 1)]
    pub d_output: usize,
}

impl AdversarialHeadConfig {
    /// Initialise the head.
    pub fn init(&self, device: &Device) -> AdversarialHead {
        AdversarialHead {
            tower: TaskTowerConfig::new(self.d_input, self.hidden.clone()).with_d_output(self.d_output).init(device),
            weight: self.weight,
            d_input: self.d_input,
        }
    }
}

/// A head behind a gradient-reversal layer.
#[derive(Module, Debug)]
pub struct AdversarialHead {
    /// The head (a logit).
    pub tower: TaskTower,
    /// λ.
    #[module(skip)]
    pub weight: f64,
    /// Width of the representation it reads.
    #[module(skip)]
    pub d_input: usize,
}

impl AdversarialHead {
    /// The head's logit from the representation the model's towers read
    /// ([`MultiTaskNet::representation`](crate::MultiTaskNet::representation)).
    ///
    /// # Shapes
    /// - representation: `[B, d_input]`; output `[B, 1]`
    pub fn forward(&self, representation: Tensor<2>) -> TaskOutput {
        TaskOutput::new(self.tower.forward(gradient_reversal(representation, self.weight)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    /// The schedule's values by hand: 0 at the start, λ·(2/(1+e⁻⁵) − 1) = λ·0.98661 half-way,
    /// λ·(2/(1+e⁻¹⁰) − 1) at the end.
    #[test]
    fn dann_schedule_by_hand() {
        assert_eq!(dann_lambda(2.0, 0.0), 0.0);
        let half = 2.0 / (1.0 + (-5.0f64).exp()) - 1.0; // 0.986614…
        assert!((dann_lambda(1.0, 0.5) - half).abs() < 1e-12 && (half - 0.986614).abs() < 1e-6);
        assert!((dann_lambda(0.5, 1.0) - 0.5 * (2.0 / (1.0 + (-10.0f64).exp()) - 1.0)).abs() < 1e-12);
        assert!(dann_lambda(1.0, 0.1) < dann_lambda(1.0, 0.2), "rises with progress");
        assert_eq!(dann_lambda(1.0, 7.0), dann_lambda(1.0, 1.0), "progress is clamped to [0, 1]");
    }

    /// The three schedules at a quarter of training: constant λ, DANN's curve, the linear ramp λ/4.
    #[test]
    fn schedules_by_hand() {
        use crate::AdversarialSchedule as S;
        assert_eq!(S::Constant.lambda(2.0, 0.25), 2.0);
        assert_eq!(S::Dann.lambda(2.0, 0.25), dann_lambda(2.0, 0.25));
        assert_eq!(S::Linear.lambda(2.0, 0.25), 0.5);
        assert_eq!(S::Linear.lambda(2.0, 3.0), 2.0, "clamped at the end");
    }

    /// Forward is the identity; the gradient is −λ times the gradient without the layer, checked
    /// against central finite differences of the loss without the layer.
    #[test]
    fn reversal_returns_minus_lambda_times_the_gradient() {
        let device = Device::flex().autodiff();
        let x0 = vec![0.3f32, -1.2, 0.7, 2.0];
        let x = Tensor::<2>::from_data(TensorData::new(x0.clone(), [2, 2]), &device).require_grad();
        let c = Tensor::<2>::random([2, 2], Distribution::Default, &device);
        let loss_of = |v: Tensor<2>| (v.clone() * v * c.clone()).sum(); // Σ c·x²
        for lambda in [0.5, 1.0, 2.0] {
            let y = gradient_reversal(x.clone(), lambda);
            let diff = (y.clone() - x.clone()).abs().max().into_scalar::<f32>();
            assert!(diff < 1e-6, "forward must be the identity: {diff}");
            let grads = loss_of(y).backward();
            let g = x.grad(&grads).unwrap().into_data().try_into_vec::<f32>().unwrap();
            let h = 1e-3f32;
            for i in 0..4 {
                let at = |d: f32| {
                    let mut v = x0.clone();
                    v[i] += d;
                    loss_of(Tensor::from_data(TensorData::new(v, [2, 2]), &device)).into_scalar::<f32>()
                };
                let fd = (at(h) - at(-h)) / (2.0 * h);
                assert!(
                    (g[i] + lambda as f32 * fd).abs() < 2e-3 * (1.0 + fd.abs()),
                    "λ {lambda} [{i}]: {} vs −λ·{fd}",
                    g[i]
                );
            }
        }
    }
}
