//! Mixture-of-experts primitives: a bank of equally shaped expert MLPs evaluated together, and the
//! softmax gate that mixes them.
//!
//! The first layer of all experts is one fused `[d_in, E·h₁]` matrix product (each expert reads the
//! same input), deeper layers are one batched matmul over the expert axis; the result equals `E`
//! separate MLPs with PyTorch's default `Linear` initialisation.

use crate::{LastLayerWeight, LastSharedLayer};
use burn::{
    config::Config,
    module::{Module, Param},
    nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig},
    tensor::{Device, Distribution, Tensor, activation::relu, activation::softmax},
};
use mtrec_kernels::linear_relu;

/// Configuration of an [`ExpertBank`].
#[derive(Config, Debug)]
pub struct ExpertBankConfig {
    /// Input width.
    pub d_input: usize,
    /// Number of experts `E`.
    pub n_experts: usize,
    /// Hidden widths of each expert (ReLU after every layer); at least one.
    pub hidden: Vec<usize>,
    /// Batch normalisation after each expert layer.
    #[config(default = false)]
    pub batch_norm: bool,
    /// Dropout after each expert layer's activation (0 disables it).
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl ExpertBankConfig {
    /// Output width of one expert.
    pub fn output_dim(&self) -> usize {
        *self.hidden.last().expect("experts need at least one layer")
    }

    /// Initialise every expert (uniform `±1/sqrt(fan_in)`, as PyTorch's `nn.Linear`).
    pub fn init(&self, device: &Device) -> ExpertBank {
        assert!(self.n_experts > 0 && !self.hidden.is_empty(), "experts need n_experts > 0 and one layer");
        let e = self.n_experts;
        let first = LinearConfig::new(self.d_input, e * self.hidden[0]).init(device);
        let deeper = self
            .hidden
            .windows(2)
            .map(|w| {
                let bound = 1.0 / (w[0] as f64).sqrt();
                let dist = Distribution::Uniform(-bound, bound);
                (
                    Param::from_tensor(Tensor::random([e, w[0], w[1]], dist, device)),
                    Param::from_tensor(Tensor::random([e, w[1]], dist, device)),
                )
            })
            .collect::<Vec<_>>();
        let norms = if self.batch_norm {
            self.hidden.iter().map(|&h| BatchNormConfig::new(e * h).init(device)).collect()
        } else {
            vec![]
        };
        let (weights, biases) = deeper.into_iter().unzip();
        ExpertBank { first, weights, biases, norms, dropout: DropoutConfig::new(self.dropout).init(), n_experts: e }
    }
}

/// `E` expert MLPs evaluated as one.
#[derive(Module, Debug)]
pub struct ExpertBank {
    /// First layer of all experts, fused: `[d_in, E·h₁]`.
    pub first: Linear,
    /// Deeper layers: `[E, h_k, h_{k+1}]`.
    pub weights: Vec<Param<Tensor<3>>>,
    /// Their biases: `[E, h_{k+1}]`.
    pub biases: Vec<Param<Tensor<2>>>,
    /// One batch norm per layer over all experts' units, or none.
    pub norms: Vec<BatchNorm>,
    /// Dropout after every layer's activation.
    pub dropout: Dropout,
    /// Number of experts.
    #[module(skip)]
    pub n_experts: usize,
}

impl ExpertBank {
    /// Every expert's output.
    ///
    /// # Shapes
    /// - input: `[B, d_in]`
    /// - output: `[B, E, h_last]`
    pub fn forward(&self, x: Tensor<2>) -> Tensor<3> {
        self.forward_with_last_layer(x, 0).0
    }

    /// [`Self::forward`], also exposing the experts' last layer as a [`LastSharedLayer`] whose
    /// value is the output flattened to `[B, E·h_last]` (shared-tensor index `output`).
    ///
    /// The first layer is one group (one fused matrix); a deeper last layer is one group per
    /// expert. `None` with batch normalisation.
    pub fn forward_with_last_layer(&self, x: Tensor<2>, output: usize) -> (Tensor<3>, Option<LastSharedLayer>) {
        let e = self.n_experts;
        let mut input = x.clone().unsqueeze_dim::<3>(0);
        let h = match self.norms.first() {
            Some(norm) => relu(norm.forward(self.first.forward(x))),
            None => linear_relu(&self.first, x),
        };
        let [b, width] = h.dims();
        let mut activated = h.reshape([b, e, width / e]);
        let mut h = mtrec_kernels::dropout(&self.dropout, activated.clone());
        for (k, (w, bias)) in self.weights.iter().zip(&self.biases).enumerate() {
            // [E, B, h_k] · [E, h_k, h_{k+1}] + [E, 1, h_{k+1}]
            input = h.swap_dims(0, 1);
            let z = input.clone().matmul(w.val()) + bias.val().unsqueeze_dim::<3>(1);
            let mut z = z.swap_dims(0, 1);
            if let Some(norm) = self.norms.get(k + 1) {
                let [b, e, d] = z.dims();
                z = norm.forward(z.reshape([b, e * d])).reshape([b, e, d]);
            }
            activated = relu(z);
            h = mtrec_kernels::dropout(&self.dropout, activated.clone());
        }
        let [b, e, d] = h.dims();
        let flat = h.clone().reshape([b, e * d]);
        let weight = match self.weights.last() {
            Some(w) => LastLayerWeight::Batched(w.val()),
            None => LastLayerWeight::Matrix(self.first.weight.val()),
        };
        let last = self.norms.is_empty().then(|| LastSharedLayer {
            output,
            input,
            activated: activated.reshape([b, e * d]),
            value: flat,
            weight,
            dropout: self.dropout.prob > 0.0,
        });
        (h, last)
    }
}

/// Configuration of an [`ExpertGate`].
#[derive(Config, Debug)]
pub struct ExpertGateConfig {
    /// Input width.
    pub d_input: usize,
    /// Number of experts to weigh.
    pub n_experts: usize,
}

impl ExpertGateConfig {
    /// Initialise the gate's linear layer.
    pub fn init(&self, device: &Device) -> ExpertGate {
        ExpertGate { linear: LinearConfig::new(self.d_input, self.n_experts).init(device) }
    }
}

/// A softmax gate over experts: `softmax(x·W + b)`.
#[derive(Module, Debug)]
pub struct ExpertGate {
    /// Gate logits.
    pub linear: Linear,
}

impl ExpertGate {
    /// Gate weights (each row sums to 1).
    ///
    /// # Shapes
    /// - input: `[B, d_in]`
    /// - output: `[B, E]`
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        softmax(self.linear.forward(x), 1)
    }

    /// Mixes expert outputs with gate weights: `Σ_e w_e · expert_e` ([`gate_mix`](mtrec_kernels::gate_mix):
    /// one fused operation on flex).
    ///
    /// # Shapes
    /// - weights: `[B, E]`, experts: `[B, E, H]`
    /// - output: `[B, H]`
    pub fn mix(weights: Tensor<2>, experts: Tensor<3>) -> Tensor<2> {
        mtrec_kernels::gate_mix(weights, experts)
    }
}

/// Expert outputs side by side, as a shared tensor holds them.
///
/// # Shapes
/// - `[B, E, h]` → `[B, E·h]`
pub(crate) fn flatten_experts(experts: Tensor<3>) -> Tensor<2> {
    let [b, e, h] = experts.dims();
    experts.reshape([b, e * h])
}

/// [`flatten_experts`] undone for `n` experts.
///
/// # Shapes
/// - `[B, n·h]` → `[B, n, h]`
pub(crate) fn unflatten_experts(experts: Tensor<2>, n: usize) -> Tensor<3> {
    let [b, w] = experts.dims();
    experts.reshape([b, n, w / n])
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // burn slices take one range per dimension
mod tests {
    use super::*;

    fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    /// The fused/batched bank equals running each expert as its own MLP.
    #[test]
    fn bank_equals_separate_experts() {
        let device = Device::flex();
        let bank = ExpertBankConfig::new(5, 3, vec![4, 2]).init(&device);
        let x = Tensor::<2>::random([6, 5], Distribution::Default, &device);
        let out = bank.forward(x.clone());
        assert_eq!(out.dims(), [6, 3, 2]);
        let w1 = bank.first.weight.val(); // [5, 12]
        let b1 = bank.first.bias.as_ref().unwrap().val();
        for e in 0..3 {
            let we = w1.clone().slice([0..5, e * 4..(e + 1) * 4]);
            let be = b1.clone().slice([e * 4..(e + 1) * 4]).unsqueeze_dim::<2>(0);
            let h = relu(x.clone().matmul(we) + be);
            let w2 = bank.weights[0].val().slice([e..e + 1, 0..4, 0..2]).reshape([4, 2]);
            let b2 = bank.biases[0].val().slice([e..e + 1, 0..2]);
            let expected = relu(h.matmul(w2) + b2);
            let got = out.clone().slice([0..6, e..e + 1, 0..2]).reshape([6, 2]);
            for (a, b) in to_vec(got).iter().zip(to_vec(expected)) {
                assert!((a - b).abs() < 1e-5, "expert {e}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn gate_weights_sum_to_one_and_mix_is_weighted_sum() {
        let device = Device::flex();
        let gate = ExpertGateConfig::new(4, 3).init(&device);
        let w = gate.forward(Tensor::<2>::random([5, 4], Distribution::Default, &device));
        for row in to_vec(w.clone().sum_dim(1)) {
            assert!((row - 1.0).abs() < 1e-5);
        }
        let experts = Tensor::<3>::random([5, 3, 2], Distribution::Default, &device);
        let mixed = to_vec(ExpertGate::mix(w.clone(), experts.clone()));
        let (wv, ev) = (to_vec(w), to_vec(experts));
        for b in 0..5 {
            for h in 0..2 {
                let expected: f32 = (0..3).map(|e| wv[b * 3 + e] * ev[b * 6 + e * 2 + h]).sum();
                assert!((mixed[b * 2 + h] - expected).abs() < 1e-5);
            }
        }
    }
}
