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

use burn::tensor::{Bool, Gradients, Tensor};

/// The last shared layer's weight parameter (its current value), to read its gradient.
#[derive(Debug, Clone)]
pub enum LastLayerWeight {
    /// One matrix `[d_in, G·d_out]` (a linear layer, or the fused first layer of all experts).
    Matrix(Tensor<2>),
    /// One matrix per group, `[G, d_in, d_out]` (the batched deeper layers of an expert bank).
    Batched(Tensor<3>),
}

impl LastLayerWeight {
    /// This weight's gradient in `grads`, shaped `[G, d_in, d_out]` like
    /// [`LastSharedLayer::weight_gradient`].
    pub fn grad(&self, grads: &Gradients, groups: usize) -> Option<Tensor<3>> {
        match self {
            Self::Matrix(w) => {
                let [d_in, width] = w.dims();
                // [d_in, G·d_out] → [G, d_in, d_out]
                w.grad(grads).map(|g| g.reshape([d_in, groups, width / groups]).swap_dims(0, 1))
            }
            Self::Batched(w) => w.grad(grads),
        }
    }
}

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
    /// The layer's weight parameter.
    pub weight: LastLayerWeight,
    /// Whether dropout follows the activation (otherwise `value` is `activated`).
    pub dropout: bool,
}

/// `∂output/∂z` of a [`LastSharedLayer`], elementwise.
#[derive(Debug, Clone)]
pub enum Jacobian {
    /// ReLU alone: 1 where the unit is on; holds the units that are off.
    Relu(Tensor<2, Bool>),
    /// ReLU then dropout: `0`, or the dropout scale `1/(1−p)`.
    Scaled(Tensor<2>),
}

impl Jacobian {
    /// `d ⊙ J`.
    pub fn apply(&self, d: Tensor<2>) -> Tensor<2> {
        match self {
            Self::Relu(off) => d.mask_fill(off.clone(), 0.0),
            Self::Scaled(j) => d * j.clone(),
        }
    }
}

impl LastSharedLayer {
    /// `J = ∂output/∂z` elementwise, detached: 1 where the unit is on (times the dropout scale
    /// `output / relu(z)` under dropout), else 0.
    ///
    /// # Shapes
    /// - `[B, G·d_out]`
    pub fn jacobian(&self) -> Jacobian {
        let activated = self.activated.clone().detach();
        let off = activated.clone().lower_equal_elem(0.0);
        if !self.dropout {
            return Jacobian::Relu(off);
        }
        Jacobian::Scaled((self.value.clone().detach() / activated.clamp_min(f32::MIN_POSITIVE)).mask_fill(off, 0.0))
    }

    /// Number of groups `G`.
    pub fn groups(&self) -> usize {
        self.input.dims()[0]
    }

    /// `∇_W L` of every group, given `∂L/∂output` and [`Self::jacobian`].
    ///
    /// # Shapes
    /// - d_output: `[B, G·d_out]`
    /// - output: `[G, d_in, d_out]`
    pub fn weight_gradient(&self, d_output: Tensor<2>, jacobian: &Jacobian) -> Tensor<3> {
        let [g, b, d_in] = self.input.dims();
        let [_, width] = d_output.dims();
        let dz = jacobian.apply(d_output);
        if g == 1 {
            // one matrix: a 2-D product is faster than the batched one on CPU backends
            let a = self.input.clone().detach().reshape([b, d_in]);
            return a.transpose().matmul(dz).unsqueeze_dim(0);
        }
        let dz = dz.reshape([b, g, width / g]).swap_dims(0, 1);
        self.input.clone().detach().swap_dims(1, 2).matmul(dz)
    }

    /// `‖∇_W L‖₂` over all groups' weight matrices (see [`Self::weight_gradient`]).
    ///
    /// # Shapes
    /// - output: `[1]`
    pub fn weight_gradient_norm(&self, d_output: Tensor<2>, jacobian: &Jacobian) -> Tensor<1> {
        frobenius(self.weight_gradient(d_output, jacobian))
    }
}

/// `‖x‖₂` over all entries.
///
/// # Shapes
/// - output: `[1]`
pub fn frobenius<const D: usize>(x: Tensor<D>) -> Tensor<1> {
    x.powi_scalar(2).sum().sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FeatureEmbeddingConfig, MmoeConfig, MultiTaskModel, SharedBottomConfig, SharedTensors, TaskOutput};
    use burn::tensor::{Device, Distribution, Int, TensorData};
    use mtrec_data::FeatureBatch;

    fn inputs(b: usize, device: &Device) -> (Tensor<2, Int>, Tensor<2>) {
        let ids: Vec<i32> = (0..b * 2).map(|i| ((i * 7) % 4) as i32).collect();
        (Tensor::from_data(TensorData::new(ids, [b, 2]), device), Tensor::random([b, 3], Distribution::Default, device))
    }

    /// The norm from the leaf gradient equals the norm of the weight gradient autodiff gives when
    /// the leaf gradient is pushed into the shared part.
    ///
    /// Returns false (nothing checked) when the random model passes no gradient to the layer (all
    /// its units off for the batch); the caller then draws another model.
    fn check(
        model: &dyn MultiTaskModel,
        weight: impl Fn(&burn::tensor::Gradients) -> Tensor<1>,
        device: &Device,
    ) -> bool {
        let (c, d) = inputs(64, device);
        let shared = model.forward_shared(FeatureBatch::new(Some(c), Some(d)));
        let last = shared.last_layer.clone().expect("exposed without batch norm");
        let leaves = shared.detached_leaves();
        let TaskOutput { output, .. } = model.forward_task(1, &leaves);
        let loss = (output - 0.5).powi_scalar(2).mean();
        let mut grads = loss.backward();
        let d_out = leaves.tensors[last.output].grad_remove(&mut grads).expect("leaf gradient");
        let norm = last.weight_gradient_norm(d_out.clone(), &last.jacobian()).into_scalar::<f32>();
        let SharedTensors { tensors, .. } = shared;
        let surrogate = (tensors[last.output].clone() * d_out).sum();
        let grads = surrogate.backward();
        let reference = weight(&grads).into_scalar::<f32>();
        if reference <= 1e-6 {
            return false;
        }
        assert!((norm - reference).abs() <= 1e-4 * reference, "{norm} vs autodiff {reference}");
        // the weight handle reads the same gradient, grouped like `weight_gradient`
        let via_handle = frobenius(last.weight.grad(&grads, last.groups()).unwrap()).into_scalar::<f32>();
        assert!((via_handle - reference).abs() <= 1e-5 * reference, "{via_handle} vs {reference}");
        true
    }

    /// Runs `attempt` on fresh random models until one is not degenerate.
    fn until_checked(mut attempt: impl FnMut() -> bool) {
        assert!((0..10).any(|_| attempt()), "ten random models in a row passed no gradient to the layer");
    }

    fn norm_of<const D: usize>(g: Tensor<D>) -> Tensor<1> {
        g.powi_scalar(2).sum().sqrt()
    }

    #[test]
    fn shared_bottom_last_layer_norm_matches_autodiff_with_dropout() {
        let device = Device::flex().autodiff();
        until_checked(|| {
            let input = FeatureEmbeddingConfig::new(vec![4, 4], 3).with_dim(3);
            let model = SharedBottomConfig::new(input, vec![12, 10], vec![6], 2).with_dropout(0.3).init(&device);
            let w = model.bottom.layers[1].weight.val();
            check(&model, |g| norm_of(w.grad(g).unwrap()), &device)
        });
    }

    #[test]
    fn mmoe_expert_last_layer_norm_matches_autodiff() {
        let device = Device::flex().autodiff();
        for hidden in [vec![8], vec![8, 5]] {
            until_checked(|| {
                let input = FeatureEmbeddingConfig::new(vec![4, 4], 3).with_dim(3);
                let model = MmoeConfig::new(input, 3, hidden.clone(), vec![4], 2).init(&device);
                match model.experts.weights.first() {
                    Some(w) => {
                        let w = w.val();
                        check(&model, |g| norm_of(w.grad(g).unwrap()), &device)
                    }
                    None => {
                        let w = model.experts.first.weight.val();
                        check(&model, |g| norm_of(w.grad(g).unwrap()), &device)
                    }
                }
            });
        }
    }

    #[test]
    fn batch_norm_layers_are_not_exposed() {
        let device = Device::flex();
        let input = FeatureEmbeddingConfig::new(vec![4, 4], 3).with_dim(3);
        let model = SharedBottomConfig::new(input, vec![8], vec![4], 2).with_batch_norm(true).init(&device);
        let (c, d) = inputs(4, &device);
        assert!(model.forward_shared(FeatureBatch::new(Some(c), Some(d))).last_layer.is_none());
    }
}
