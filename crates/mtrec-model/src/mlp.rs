//! A stack of `Linear → [BatchNorm] → ReLU → [Dropout]` layers.

use crate::{LastLayerWeight, LastSharedLayer};
use burn::{
    config::Config,
    module::Module,
    nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig},
    tensor::{Device, Tensor, activation::relu},
};
use mtrec_kernels::linear_relu;

/// Configuration of an [`Mlp`].
#[derive(Config, Debug)]
pub struct MlpConfig {
    /// Input width.
    pub d_input: usize,
    /// Width of each hidden layer; empty gives the identity.
    pub hidden: Vec<usize>,
    /// Batch normalisation after each linear layer (before the ReLU).
    #[config(default = false)]
    pub batch_norm: bool,
    /// Dropout probability after each ReLU (0 disables it).
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl MlpConfig {
    /// Output width (the last hidden width, or the input width when there is no layer).
    pub fn output_dim(&self) -> usize {
        self.hidden.last().copied().unwrap_or(self.d_input)
    }

    /// Initialise the layers.
    pub fn init(&self, device: &Device) -> Mlp {
        let widths = std::iter::once(self.d_input).chain(self.hidden.iter().copied()).collect::<Vec<_>>();
        let layers = widths.windows(2).map(|w| LinearConfig::new(w[0], w[1]).init(device)).collect();
        let norms = if self.batch_norm {
            self.hidden.iter().map(|&h| BatchNormConfig::new(h).init(device)).collect()
        } else {
            vec![]
        };
        Mlp { layers, norms, dropout: DropoutConfig::new(self.dropout).init() }
    }
}

/// Fully connected ReLU layers.
#[derive(Module, Debug)]
pub struct Mlp {
    /// The linear layers.
    pub layers: Vec<Linear>,
    /// One batch norm per layer, or none.
    pub norms: Vec<BatchNorm>,
    /// Dropout after each activation.
    pub dropout: Dropout,
}

impl Mlp {
    /// Applies every layer.
    ///
    /// # Shapes
    /// - input: `[B, d_input]`
    /// - output: `[B, hidden.last()]`
    pub fn forward(&self, mut x: Tensor<2>) -> Tensor<2> {
        for (i, layer) in self.layers.iter().enumerate() {
            x = mtrec_kernels::dropout(&self.dropout, self.layer_relu(i, layer, x));
        }
        x
    }

    /// Layer `i` with its batch norm (if any) and ReLU; without batch norm, one fused
    /// [`linear_relu`].
    fn layer_relu(&self, i: usize, layer: &Linear, x: Tensor<2>) -> Tensor<2> {
        match self.norms.get(i) {
            Some(norm) => relu(norm.forward(layer.forward(x))),
            None => linear_relu(layer, x),
        }
    }

    /// Applies every layer and keeps the last layer's input and activation, for
    /// [`LastSharedLayer`] (`output` is the shared-tensor index to record).
    ///
    /// `None` when the MLP has no layer or uses batch normalisation.
    pub fn forward_with_last_layer(&self, x: Tensor<2>, output: usize) -> (Tensor<2>, Option<LastSharedLayer>) {
        let last = self.forward_exposing_last(x, output);
        let exposed = (!self.layers.is_empty() && self.norms.is_empty()).then(|| last.clone());
        (last.value, exposed)
    }

    fn forward_exposing_last(&self, mut x: Tensor<2>, output: usize) -> LastSharedLayer {
        let mut input = x.clone();
        let mut activated = x.clone();
        let weight = LastLayerWeight::Matrix(self.layers.last().map_or_else(|| x.clone(), |l| l.weight.val()));
        for (i, layer) in self.layers.iter().enumerate() {
            input = x.clone();
            activated = self.layer_relu(i, layer, x);
            x = mtrec_kernels::dropout(&self.dropout, activated.clone());
        }
        LastSharedLayer {
            output,
            input: input.unsqueeze_dim::<3>(0),
            activated,
            value: x,
            weight,
            dropout: self.dropout.prob > 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_relu_output() {
        let device = Device::flex();
        let mlp = MlpConfig::new(5, vec![7, 3]).with_batch_norm(true).init(&device);
        let out = mlp.forward(Tensor::<2>::random([4, 5], burn::tensor::Distribution::Default, &device));
        assert_eq!(out.dims(), [4, 3]);
        assert!(out.into_data().try_into_vec::<f32>().unwrap().iter().all(|&v| v >= 0.0));
        let id = MlpConfig::new(5, vec![]).init(&device);
        let x = Tensor::<2>::ones([2, 5], &device);
        assert_eq!(id.forward(x).dims(), [2, 5]);
    }
}
