//! The last shared layer of a model, exposed so that a balancer can take each task's gradient with
//! respect to its weights from the gradient at the shared tensor alone.
//!
//! GradNorm (Chen et al., ICML 2018) balances `G_t = ‖∇_W (w_t·L_t)‖₂` with `W` the last shared
//! layer's weights. burn has no retain-graph, so the per-task gradients are taken at a detached
//! leaf of the shared tensor `h` (see [`SharedTensors::detached_leaves`](crate::SharedTensors)). For
//! a layer `h = dropout(relu(a·W + b))` the chain rule then gives the weight gradient exactly:
//! `∇_W L = aᵀ·(∂L/∂h ⊙ J)` with `J = ∂h/∂z` elementwise (`0` where the ReLU is off, the dropout
//! scale `1/(1−p)` or `0` where it is on). Layers with batch normalisation mix the batch in `∂h/∂z`
//! and are not exposed (`None`).

use burn::tensor::Tensor;

/// The last shared layer: `output = dropout(relu(input_g · W_g + b_g))` for every group `g`.
///
/// A group is one weight matrix: a plain linear layer (or the fused first layer of all experts) is
/// one group; the batched deeper layers of an expert bank are one group per expert. The output's
/// columns are the groups' columns in order.
#[derive(Debug, Clone)]
pub struct LastSharedLayer {
    /// Index of the shared tensor this layer produces.
    pub output: usize,
    /// The layer's input per group, `[G, B, d_in]`.
    pub input: Tensor<3>,
    /// `relu(input_g · W_g + b_g)` before dropout, `[B, G·d_out]`.
    pub activated: Tensor<2>,
    /// The layer's output (after dropout), `[B, G·d_out]`; the shared tensor at `output`.
    pub value: Tensor<2>,
}

impl LastSharedLayer {
    /// `J = ∂output/∂z` elementwise, detached: `output / relu(z)` where the unit is on, else 0.
    ///
    /// # Shapes
    /// - output: `[B, G·d_out]`
    pub fn jacobian(&self) -> Tensor<2> {
        let activated = self.activated.clone().detach();
        let off = activated.clone().lower_equal_elem(0.0);
        (self.value.clone().detach() / activated.clamp_min(f32::MIN_POSITIVE)).mask_fill(off, 0.0)
    }

    /// `‖∇_W L‖₂` over all groups' weight matrices, given `∂L/∂output` and [`Self::jacobian`].
    ///
    /// # Shapes
    /// - d_output, jacobian: `[B, G·d_out]`
    /// - output: `[1]`
    pub fn weight_gradient_norm(&self, d_output: Tensor<2>, jacobian: Tensor<2>) -> Tensor<1> {
        let [g, b, _] = self.input.dims();
        let [_, width] = d_output.dims();
        let dz = (d_output * jacobian).reshape([b, g, width / g]).swap_dims(0, 1);
        let grad = self.input.clone().detach().swap_dims(1, 2).matmul(dz);
        grad.powi_scalar(2).sum().sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FeatureEmbeddingConfig, MmoeConfig, MultiTaskModel, SharedBottomConfig, SharedTensors, TaskOutput};
    use burn::tensor::{Device, Distribution, Int, TensorData};

    fn inputs(b: usize, device: &Device) -> (Tensor<2, Int>, Tensor<2>) {
        let ids: Vec<i32> = (0..b * 2).map(|i| ((i * 7) % 4) as i32).collect();
        (Tensor::from_data(TensorData::new(ids, [b, 2]), device), Tensor::random([b, 3], Distribution::Default, device))
    }

    /// The norm from the leaf gradient equals the norm of the weight gradient autodiff gives when
    /// the leaf gradient is pushed into the shared part.
    fn check(model: &dyn MultiTaskModel, weight: impl Fn(&burn::tensor::Gradients) -> Tensor<1>, device: &Device) {
        let (c, d) = inputs(16, device);
        let shared = model.forward_shared(Some(c), Some(d));
        let last = shared.last_layer.clone().expect("exposed without batch norm");
        let leaves = shared.detached_leaves();
        let TaskOutput { output, .. } = model.forward_task(1, &leaves);
        let loss = (output - 0.5).powi_scalar(2).mean();
        let mut grads = loss.backward();
        let d_out = leaves.tensors[last.output].grad_remove(&mut grads).expect("leaf gradient");
        let norm = last.weight_gradient_norm(d_out.clone(), last.jacobian()).into_scalar::<f32>();
        let SharedTensors { tensors, .. } = shared;
        let surrogate = (tensors[last.output].clone() * d_out).sum();
        let reference = weight(&surrogate.backward()).into_scalar::<f32>();
        assert!(reference > 1e-6, "degenerate check: {reference}");
        assert!((norm - reference).abs() <= 1e-4 * reference, "{norm} vs autodiff {reference}");
    }

    fn norm_of<const D: usize>(g: Tensor<D>) -> Tensor<1> {
        g.powi_scalar(2).sum().sqrt()
    }

    #[test]
    fn shared_bottom_last_layer_norm_matches_autodiff_with_dropout() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let input = FeatureEmbeddingConfig::new(vec![4, 4], 3).with_dim(3);
        let model = SharedBottomConfig::new(input, vec![12, 10], vec![6], 2).with_dropout(0.3).init(&device);
        let w = model.bottom.layers[1].weight.val();
        check(&model, |g| norm_of(w.grad(g).unwrap()), &device);
    }

    #[test]
    fn mmoe_expert_last_layer_norm_matches_autodiff() {
        let device = Device::flex().autodiff();
        device.seed(4);
        for hidden in [vec![8], vec![8, 5]] {
            let input = FeatureEmbeddingConfig::new(vec![4, 4], 3).with_dim(3);
            let deep = hidden.len() > 1;
            let model = MmoeConfig::new(input, 3, hidden, vec![4], 2).init(&device);
            if deep {
                let w = model.experts.weights[0].val();
                check(&model, |g| norm_of(w.grad(g).unwrap()), &device);
            } else {
                let w = model.experts.first.weight.val();
                check(&model, |g| norm_of(w.grad(g).unwrap()), &device);
            }
        }
    }

    #[test]
    fn batch_norm_layers_are_not_exposed() {
        let device = Device::flex();
        let input = FeatureEmbeddingConfig::new(vec![4, 4], 3).with_dim(3);
        let model = SharedBottomConfig::new(input, vec![8], vec![4], 2).with_batch_norm(true).init(&device);
        let (c, d) = inputs(4, &device);
        assert!(model.forward_shared(Some(c), Some(d)).last_layer.is_none());
    }
}
