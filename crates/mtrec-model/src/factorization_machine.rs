//! The factorization machine's second-order term over the field embeddings (Rendle, ICDM 2010), as
//! a vector: NFM's bi-interaction pooling (He & Chua, SIGIR 2017),
//! `Σ_{i<j} v_i ⊙ v_j = ½·((Σ_i v_i)² − Σ_i v_i²)`, in `O(fields·dim)`.
//!
//! With `model.bottom = "fm"` the shared input layer appends it to the input vector: every pairwise
//! interaction of the categorical and multi-valued fields' embeddings (the embeddings FM and the
//! networks share, as in DeepFM), summed per embedding unit, so the architecture's MLPs read
//! `[x, interactions]`. FM's first-order term is linear in `x`, which the networks' first layer
//! already is. Parameter-free: it reuses the field embeddings.

use burn::tensor::Tensor;

/// `Σ_{i<j} v_i ⊙ v_j` over the fields of `fields`.
///
/// # Shapes
/// - `fields`: `[B, F, dim]` → `[B, dim]`
pub fn pairwise_interactions(fields: Tensor<3>) -> Tensor<2> {
    let [batch, _, dim] = fields.dims();
    let sum = fields.clone().sum_dim(1); // [B, 1, dim]
    let squares = fields.powi_scalar(2).sum_dim(1);
    ((sum.powi_scalar(2) - squares) * 0.5).reshape([batch, dim])
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, TensorData};

    use super::*;

    /// By hand: v1 = (1, 2), v2 = (3, 4), v3 = (−1, 0.5): v1⊙v2 + v1⊙v3 + v2⊙v3 =
    /// (3, 8) + (−1, 1) + (−3, 2) = (−1, 11); two fields give their product alone.
    #[test]
    fn sums_the_pairwise_products_by_hand() {
        let device = Device::flex();
        let three = Tensor::<3>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0, -1.0, 0.5], [1, 3, 2]), &device);
        assert_eq!(pairwise_interactions(three).into_data().try_into_vec::<f32>().unwrap(), vec![-1.0, 11.0]);
        let two = Tensor::<3>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [1, 2, 2]), &device);
        assert_eq!(pairwise_interactions(two).into_data().try_into_vec::<f32>().unwrap(), vec![3.0, 8.0]);
    }
}
