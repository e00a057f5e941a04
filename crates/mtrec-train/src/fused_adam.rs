//! Adam (with burn's L2 weight decay) as one pass over each parameter: read the gradient, update
//! both moments and the parameter in place, allocate nothing.
//!
//! burn's `Adam` does the same update as about ten tensor operations per parameter tensor, each
//! allocating its output; on a CPU with small tensors that is most of the optimiser's time.
//! [`FusedAdam`] is a drop-in for it: the same state type (`AdamState`, so checkpoints of either
//! load into the other), the same per-parameter learning rates through burn's `ModuleOptimizer`,
//! and the same arithmetic in the same order, so a run takes the same steps up to float rounding.
//! It runs the fused kernel ([`FusedAdamBackend`]) on flex (f32) when
//! [`fused_kernels`](mtrec_kernels::fused_kernels) is on, and burn's own `Adam` otherwise (other
//! backends, the switch off).

use burn::{
    backend::{DType, Dispatch},
    optim::{Adam, AdamConfig, AdamState, AdaptiveMomentumState, LearningRate, Optimizer, decay::WeightDecayConfig},
    tensor::{Device, Tensor},
};
use mtrec_kernels::FusedAdamBackend;

/// Adam's hyper-parameters as [`AdamConfig`] has them (β₁ 0.9, β₂ 0.999; mtrec's ε and weight
/// decay from `train.*`).
#[derive(Clone)]
pub struct FusedAdam {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: f32,
    /// burn's Adam with the same settings: the path off flex.
    plain: Adam,
}

impl FusedAdam {
    /// Adam with `epsilon` and L2 `weight_decay` (0: none), as `AdamConfig::new()` otherwise.
    pub fn new(epsilon: f32, weight_decay: f32) -> Self {
        let decay = (weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay));
        let config = AdamConfig::new().with_epsilon(epsilon).with_weight_decay(decay);
        Self { beta_1: 0.9, beta_2: 0.999, epsilon, weight_decay, plain: config.build() }
    }
}

fn on_flex(device: &Device) -> bool {
    mtrec_kernels::use_fused(device)
}

impl Optimizer for FusedAdam {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let amsgrad = state.as_ref().is_some_and(|s| s.momentum.max_moment_2.is_some());
        if !on_flex(&tensor.device()) || tensor.dtype() != DType::F32 || grad.dtype() != DType::F32 || amsgrad {
            return self.plain.step(lr, tensor, grad, state);
        }
        let (m, v, time) = match state {
            Some(s) => (s.momentum.moment_1, s.momentum.moment_2, s.momentum.time + 1),
            None => (tensor.zeros_like(), tensor.zeros_like(), 1),
        };
        let (param, m, v) = <Dispatch as FusedAdamBackend>::adam_update(
            tensor.into_dispatch(),
            grad.into_dispatch(),
            m.into_dispatch(),
            v.into_dispatch(),
            lr as f32,
            self.beta_1,
            self.beta_2,
            self.epsilon,
            self.weight_decay,
            time as i32,
        );
        let momentum = AdaptiveMomentumState::new(time, Tensor::from_dispatch(m), Tensor::from_dispatch(v));
        (Tensor::from_dispatch(param), Some(AdamState::new(momentum)))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        <Adam as Optimizer>::to_device(state, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    /// 20 steps of the fused update against burn's Adam on the same parameters and gradients,
    /// with and without weight decay, a small tensor and one large enough for the threaded path.
    #[test]
    fn fused_adam_follows_burns_adam_step_for_step() {
        let device = Device::flex();
        assert!(on_flex(&device), "the fused kernel must be the one under test");
        for &(n, decay) in &[(37usize, 0.0f32), (37, 1e-2), (300_000, 1e-3)] {
            let fused = FusedAdam::new(1e-7, decay);
            let plain = fused.plain.clone();
            let start = Tensor::<2>::random([n, 1], Distribution::Normal(0.0, 1.0), &device);
            let (mut p_fused, mut p_plain) = (start.clone(), start.clone() + 0.0);
            let (mut s_fused, mut s_plain) = (None, None);
            for step in 0..20 {
                let grad = Tensor::<2>::random([n, 1], Distribution::Normal(0.0, 1.0), &device);
                let lr = 1e-2 * (1.0 + step as f64 / 10.0);
                (p_fused, s_fused) = fused.step(lr, p_fused, grad.clone(), s_fused);
                (p_plain, s_plain) = plain.step(lr, p_plain, grad, s_plain);
            }
            let (a, b) = (to_vec(p_fused.clone()), to_vec(p_plain));
            let moved = to_vec(p_fused - start).iter().map(|d| d.abs()).fold(0.0f32, f32::max);
            assert!(moved > 0.05, "the parameters must move ({moved})");
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                assert!((x - y).abs() <= 1e-5 * y.abs().max(1.0), "n={n} decay={decay} [{i}]: fused {x} vs burn {y}");
            }
            let (sf, sp) = (s_fused.unwrap().momentum, s_plain.unwrap().momentum);
            assert_eq!(sf.time, sp.time);
            for (x, y) in to_vec(sf.moment_2).iter().zip(to_vec(sp.moment_2)) {
                assert!((x - y).abs() <= 1e-5 * y.abs().max(1e-6), "second moment: {x} vs {y}");
            }
        }
    }
}
