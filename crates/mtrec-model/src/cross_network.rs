//! DCN-v2's cross network (Wang et al., "DCN V2: Improved Deep & Cross Network", WWW 2021): explicit
//! feature crosses of bounded degree on the input vector, before the architecture's MLPs.
//!
//! Layer `l` computes `x_{l+1} = x₀ ⊙ (W_l·x_l + b_l) + x_l` with a full-rank `W_l` (`[d, d]`): after
//! `L` layers `x_L` holds every cross of the input's entries up to degree `L + 1`, and its width is
//! the input's, so it feeds any architecture unchanged. With `model.bottom = "dcn_v2"` the shared
//! input layer ends with it (the paper's *stacked* structure: cross network, then the deep part —
//! here the architecture's experts, bottom or towers). Weights start as PyTorch's `nn.Linear`.

use burn::{
    config::Config,
    module::Module,
    nn::{Linear, LinearConfig},
    tensor::{Device, Tensor},
};

/// Configuration of a [`CrossNetwork`].
#[derive(Config, Debug)]
pub struct CrossNetworkConfig {
    /// Width of the input vector (and of the output).
    pub d_input: usize,
    /// Number of cross layers `L`.
    #[config(default = 3)]
    pub n_layers: usize,
}

impl CrossNetworkConfig {
    /// Initialise the layers.
    pub fn init(&self, device: &Device) -> CrossNetwork {
        CrossNetwork {
            layers: (0..self.n_layers).map(|_| LinearConfig::new(self.d_input, self.d_input).init(device)).collect(),
        }
    }
}

/// `L` cross layers.
#[derive(Module, Debug)]
pub struct CrossNetwork {
    /// Layer `l`'s `W_l`, `b_l`.
    pub layers: Vec<Linear>,
}

impl CrossNetwork {
    /// # Shapes
    /// - `x0`: `[B, d]` → `[B, d]`
    pub fn forward(&self, x0: Tensor<2>) -> Tensor<2> {
        let mut x = x0.clone();
        for layer in &self.layers {
            x = x0.clone() * layer.forward(x.clone()) + x;
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use burn::{module::Param, tensor::TensorData};

    use super::*;

    fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    /// By hand, d = 2, x₀ = (1, 2). Layer 1 (burn's `y = x·W + b`): W = [[1, 2], [3, 4]], b = (0.5, −1):
    /// x₀·W + b = (7.5, 9), x₀ ⊙ that = (7.5, 18), + x₀ = (8.5, 20). Layer 2, W = I, b = 0:
    /// x₀ ⊙ (8.5, 20) = (8.5, 40), + (8.5, 20) = (17, 60).
    #[test]
    fn crosses_by_hand() {
        let device = Device::flex();
        let mut net = CrossNetworkConfig::new(2).with_n_layers(2).init(&device);
        net.layers[0].weight = Param::from_tensor(tensor(vec![1.0, 2.0, 3.0, 4.0], [2, 2], &device));
        net.layers[0].bias = Some(Param::from_tensor(tensor(vec![0.5, -1.0], [2], &device)));
        net.layers[1].weight = Param::from_tensor(tensor(vec![1.0, 0.0, 0.0, 1.0], [2, 2], &device));
        net.layers[1].bias = Some(Param::from_tensor(tensor(vec![0.0, 0.0], [2], &device)));
        let out = net.forward(tensor(vec![1.0, 2.0, 1.0, 2.0], [2, 2], &device));
        assert_eq!(out.into_data().try_into_vec::<f32>().unwrap(), vec![17.0, 60.0, 17.0, 60.0]);
        let one = CrossNetwork { layers: net.layers[..1].to_vec() };
        let out = one.forward(tensor(vec![1.0, 2.0], [1, 2], &device));
        assert_eq!(out.into_data().try_into_vec::<f32>().unwrap(), vec![8.5, 20.0]);
    }

    /// No layers: the input as it is.
    #[test]
    fn zero_layers_pass_through() {
        let device = Device::flex();
        let net = CrossNetworkConfig::new(3).with_n_layers(0).init(&device);
        let x = tensor(vec![1.0, -2.0, 3.0], [1, 3], &device);
        assert_eq!(net.forward(x).into_data().try_into_vec::<f32>().unwrap(), vec![1.0, -2.0, 3.0]);
    }
}
