//! HoME's experts (Wang et al., "HoME: Hierarchy of Multi-Gate Experts for Multi-Task Learning at
//! Kuaishou", 2024, §4.1 and §4.3): each expert reads the input through a feature gate of its own,
//! then `Linear → BatchNorm → Swish` layers.
//!
//! - **Feature gate**: `x ⊙ 2·σ(x·A_e·B_e)` with `A_e: [d, r]`, `B_e: [r, d]` — a LoRA-style rank-`r`
//!   product per expert (`model.feature_gate_rank`; 0: no gate), so every expert sees its own
//!   re-weighting of the features. `B_e` starts at 0, every gate at exactly 1: the model starts as
//!   one without gates.
//! - **Expert normalisation & Swish**: batch normalisation after every expert layer aligns the
//!   experts' output distributions (an expert's output no longer depends on the scale of its
//!   weights), and Swish (`x·σ(x)`) has no dead zone — the paper's two causes of expert collapse
//!   (ReLU experts with over 90 % zeros, experts whose outputs differ in scale so that gates cannot
//!   weigh them fairly).

use burn::{
    config::Config,
    module::{Module, Param},
    nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig},
    tensor::{
        Device, Distribution, Tensor,
        activation::{sigmoid, silu},
    },
};

/// Configuration of [`NormalizedExperts`].
#[derive(Config, Debug)]
pub struct NormalizedExpertsConfig {
    /// Input width `d`.
    pub d_input: usize,
    /// Number of experts `E`.
    pub n_experts: usize,
    /// Hidden widths of each expert; at least one.
    pub hidden: Vec<usize>,
    /// Rank `r` of each expert's feature gate (0: no feature gate).
    #[config(default = 8)]
    pub gate_rank: usize,
    /// Dropout after each layer's activation.
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl NormalizedExpertsConfig {
    /// Output width of one expert.
    pub fn output_dim(&self) -> usize {
        *self.hidden.last().expect("experts need at least one layer")
    }

    /// Initialise every expert: weights uniform `±1/√fan_in` (PyTorch's `nn.Linear`), gates at 1.
    pub fn init(&self, device: &Device) -> NormalizedExperts {
        assert!(self.n_experts > 0 && !self.hidden.is_empty(), "experts need n_experts > 0 and one layer");
        let e = self.n_experts;
        fn uniform<const D: usize>(fan_in: usize, shape: [usize; D], device: &Device) -> Param<Tensor<D>> {
            let bound = 1.0 / (fan_in as f64).sqrt();
            Param::from_tensor(Tensor::random(shape, Distribution::Uniform(-bound, bound), device))
        }
        let widths: Vec<usize> = std::iter::once(self.d_input).chain(self.hidden.iter().copied()).collect();
        let r = self.gate_rank;
        NormalizedExperts {
            gate_down: (r > 0).then(|| uniform(self.d_input, [e, self.d_input, r], device)),
            gate_up: (r > 0).then(|| Param::from_tensor(Tensor::zeros([e, r, self.d_input], device))),
            weights: widths.windows(2).map(|w| uniform(w[0], [e, w[0], w[1]], device)).collect(),
            biases: widths.windows(2).map(|w| uniform(w[0], [e, w[1]], device)).collect(),
            norms: self.hidden.iter().map(|&h| BatchNormConfig::new(e * h).init(device)).collect(),
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

/// `E` feature-gated, normalised Swish experts.
#[derive(Module, Debug)]
pub struct NormalizedExperts {
    /// Each expert's gate down-projection `A_e`, `[E, d, r]` (none without feature gates).
    pub gate_down: Option<Param<Tensor<3>>>,
    /// Each expert's gate up-projection `B_e`, `[E, r, d]`.
    pub gate_up: Option<Param<Tensor<3>>>,
    /// Layer weights, `[E, d_k, d_{k+1}]`.
    pub weights: Vec<Param<Tensor<3>>>,
    /// Layer biases, `[E, d_{k+1}]`.
    pub biases: Vec<Param<Tensor<2>>>,
    /// One batch norm per layer over every expert's units.
    pub norms: Vec<BatchNorm>,
    /// Dropout after every layer's activation.
    pub dropout: Dropout,
}

impl NormalizedExperts {
    /// Number of experts.
    pub fn n_experts(&self) -> usize {
        self.weights[0].dims()[0]
    }

    /// Each expert's gated input `x ⊙ 2·σ(x·A_e·B_e)` (the input itself without gates).
    ///
    /// # Shapes
    /// - x: `[B, d]`
    /// - output: `[E, B, d]`
    pub fn gated_inputs(&self, x: Tensor<2>) -> Tensor<3> {
        let [b, d] = x.dims();
        let xs = x.unsqueeze_dim::<3>(0).expand([self.n_experts(), b, d]);
        match (&self.gate_down, &self.gate_up) {
            (Some(down), Some(up)) => {
                let gate = sigmoid(xs.clone().matmul(down.val()).matmul(up.val())).mul_scalar(2.0);
                xs * gate
            }
            _ => xs,
        }
    }

    /// Every expert's output.
    ///
    /// # Shapes
    /// - x: `[B, d]`
    /// - output: `[B, E, h_last]`
    pub fn forward(&self, x: Tensor<2>) -> Tensor<3> {
        let [b, _] = x.dims();
        let e = self.n_experts();
        let mut h = self.gated_inputs(x);
        for ((w, bias), norm) in self.weights.iter().zip(&self.biases).zip(&self.norms) {
            let y = h.matmul(w.val()) + bias.val().unsqueeze_dim::<3>(1);
            let width = y.dims()[2];
            let flat = y.swap_dims(0, 1).reshape([b, e * width]);
            let activated = mtrec_kernels::dropout(&self.dropout, silu(norm.forward(flat)));
            h = activated.reshape([b, e, width]).swap_dims(0, 1);
        }
        h.swap_dims(0, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn tensor3(v: Vec<f32>, shape: [usize; 3], device: &Device) -> Param<Tensor<3>> {
        Param::from_tensor(Tensor::from_data(TensorData::new(v, shape), device))
    }

    /// The feature gate by hand: x = (1, 2), A = (1, 0)ᵀ, B = (0, ln 3): x·A·B = (0, ln 3), gate
    /// 2σ(·) = (1, 1.5), gated input (1, 3); at initialisation (B = 0) every gate is exactly 1.
    #[test]
    fn feature_gate_by_hand_and_identity_at_start() {
        let device = Device::flex();
        let mut experts = NormalizedExpertsConfig::new(2, 1, vec![3]).with_gate_rank(1).init(&device);
        let x = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 2.0], [1, 2]), &device);
        let start = experts.gated_inputs(x.clone()).into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(start, vec![1.0, 2.0]);
        experts.gate_down = Some(tensor3(vec![1.0, 0.0], [1, 2, 1], &device));
        experts.gate_up = Some(tensor3(vec![0.0, 3f32.ln()], [1, 1, 2], &device));
        let gated = experts.gated_inputs(x).into_data().try_into_vec::<f32>().unwrap();
        assert!((gated[0] - 1.0).abs() < 1e-6 && (gated[1] - 3.0).abs() < 1e-5, "{gated:?}");
    }

    /// Expert normalisation in training (batch statistics): an expert's output does not change when
    /// its weights and bias are scaled by 50 (the batch norm removes the scale; a plain ReLU expert's
    /// output would grow 50×), and Swish leaves negative values (no dead zone).
    #[test]
    fn normalisation_makes_experts_scale_free() {
        let device = Device::flex().autodiff();
        let mut experts = NormalizedExpertsConfig::new(3, 2, vec![4]).with_gate_rank(0).init(&device);
        let x = Tensor::<2>::random([16, 3], Distribution::Normal(0.0, 1.0), &device);
        // from weights 10× their initial ones, so that batch-norm's ε (1e-5) is negligible beside
        // every unit's batch variance whatever the draw
        let (w, b) = (experts.weights[0].val(), experts.biases[0].val());
        experts.weights[0] = Param::from_tensor(w.clone().mul_scalar(10.0).detach());
        experts.biases[0] = Param::from_tensor(b.clone().mul_scalar(10.0).detach());
        let before = experts.forward(x.clone()).into_data().try_into_vec::<f32>().unwrap();
        experts.weights[0] = Param::from_tensor(w.mul_scalar(500.0).detach());
        experts.biases[0] = Param::from_tensor(b.mul_scalar(500.0).detach());
        let after = experts.forward(x).into_data().try_into_vec::<f32>().unwrap();
        let diff = before.iter().zip(&after).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-3, "scaling an expert's weights changes its normalised output by {diff}");
        assert_eq!(before.len(), 16 * 2 * 4);
        assert!(before.iter().any(|v| *v < 0.0));
    }

    /// Each expert has its own input gate: with different gates, two experts of identical layer
    /// weights give different outputs.
    #[test]
    fn experts_read_their_own_gated_inputs() {
        let device = Device::flex().autodiff();
        let mut experts = NormalizedExpertsConfig::new(2, 2, vec![2]).with_gate_rank(1).init(&device);
        let w = experts.weights[0].val().slice([0..1, 0..2, 0..2]);
        experts.weights[0] = Param::from_tensor(Tensor::cat(vec![w.clone(), w], 0).detach());
        let bias = experts.biases[0].val().slice([0..1, 0..2]);
        experts.biases[0] = Param::from_tensor(Tensor::cat(vec![bias.clone(), bias], 0).detach());
        experts.gate_up = Some(tensor3(vec![0.0, 0.0, 2.0, -2.0], [2, 1, 2], &device));
        let x = Tensor::<2>::random([8, 2], Distribution::Normal(0.0, 1.0), &device);
        let out = experts.forward(x);
        let first = out.clone().slice([0..8, 0..1, 0..2]).into_data().try_into_vec::<f32>().unwrap();
        let second = out.slice([0..8, 1..2, 0..2]).into_data().try_into_vec::<f32>().unwrap();
        assert!(first.iter().zip(&second).any(|(a, b)| (a - b).abs() > 1e-3), "the gates privatise the inputs");
    }
}
