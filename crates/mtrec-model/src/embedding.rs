//! The input layer: every categorical field gets its own embedding, and the dense features are
//! appended. All fields live in one fused table with per-field row offsets, so a batch costs one
//! gather instead of one lookup per field.

use burn::{
    config::Config,
    module::Module,
    nn::{Embedding, EmbeddingConfig},
    tensor::{Device, Int, Tensor, TensorData},
};

/// Configuration of a [`FeatureEmbedding`].
#[derive(Config, Debug)]
pub struct FeatureEmbeddingConfig {
    /// Vocabulary size of each categorical field (including the out-of-vocabulary id 0).
    pub vocab_sizes: Vec<usize>,
    /// Number of dense features appended after the embeddings.
    pub n_dense: usize,
    /// Embedding width per field.
    #[config(default = 4)]
    pub dim: usize,
}

impl FeatureEmbeddingConfig {
    /// Width of the input vector: `fields × dim + n_dense`.
    pub fn output_dim(&self) -> usize {
        self.vocab_sizes.len() * self.dim + self.n_dense
    }

    /// Initialise the embedding table (`N(0, 1)`, as PyTorch's `nn.Embedding`).
    pub fn init(&self, device: &Device) -> FeatureEmbedding {
        let total: usize = self.vocab_sizes.iter().sum();
        let offsets = self
            .vocab_sizes
            .iter()
            .scan(0i64, |acc, &v| {
                let o = *acc;
                *acc += v as i64;
                Some(o)
            })
            .collect();
        FeatureEmbedding {
            table: (total > 0).then(|| EmbeddingConfig::new(total, self.dim).init(device)),
            offsets,
            dim: self.dim,
            n_dense: self.n_dense,
        }
    }
}

/// Per-field categorical embeddings concatenated with the dense features.
#[derive(Module, Debug)]
pub struct FeatureEmbedding {
    /// One table for all fields; field `f` owns rows `offsets[f]..offsets[f] + vocab_sizes[f]`.
    pub table: Option<Embedding>,
    /// First row of each field in the fused table.
    #[module(skip)]
    pub offsets: Vec<i64>,
    /// Embedding width.
    #[module(skip)]
    pub dim: usize,
    /// Number of dense features.
    #[module(skip)]
    pub n_dense: usize,
}

impl FeatureEmbedding {
    /// Width of the produced input vector.
    pub fn output_dim(&self) -> usize {
        self.offsets.len() * self.dim + self.n_dense
    }

    /// Embeds the categorical ids and appends the dense features.
    ///
    /// # Shapes
    /// - categorical: `[B, F]` (per-field ids), dense: `[B, D]`
    /// - output: `[B, F·dim + D]`
    pub fn forward(&self, categorical: Option<Tensor<2, Int>>, dense: Option<Tensor<2>>) -> Tensor<2> {
        let mut parts = Vec::with_capacity(2);
        if let (Some(table), Some(ids)) = (&self.table, categorical) {
            let [batch, fields] = ids.dims();
            assert_eq!(fields, self.offsets.len(), "expected {} categorical fields", self.offsets.len());
            let offsets =
                Tensor::<2, Int>::from_data(TensorData::new(self.offsets.clone(), [1, fields]), &ids.device());
            let embedded = table.forward(ids + offsets);
            parts.push(embedded.reshape([batch, fields * self.dim]));
        }
        if let Some(dense) = dense {
            assert_eq!(dense.dims()[1], self.n_dense, "expected {} dense features", self.n_dense);
            parts.push(dense);
        }
        assert!(!parts.is_empty(), "a batch needs categorical or dense inputs");
        if parts.len() == 1 { parts.pop().unwrap() } else { Tensor::cat(parts, 1) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_use_their_own_rows_of_the_fused_table() {
        let device = Device::flex();
        let emb = FeatureEmbeddingConfig::new(vec![3, 2], 1).with_dim(2).init(&device);
        assert_eq!(emb.offsets, vec![0, 3]);
        let weights = emb.table.as_ref().unwrap().weight.val().into_data().try_into_vec::<f32>().unwrap();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![2i32, 1], [1, 2]), &device);
        let dense = Tensor::<2>::from_data(TensorData::new(vec![0.5f32], [1, 1]), &device);
        let out = emb.forward(Some(ids), Some(dense)).into_data().try_into_vec::<f32>().unwrap();
        // field 0 id 2 → row 2; field 1 id 1 → row 3 + 1 = 4; then the dense value.
        assert_eq!(out, vec![weights[4], weights[5], weights[8], weights[9], 0.5]);
    }

    #[test]
    fn dense_only_input_passes_through() {
        let device = Device::flex();
        let emb = FeatureEmbeddingConfig::new(vec![], 3).init(&device);
        assert!(emb.table.is_none());
        let dense = Tensor::<2>::ones([4, 3], &device);
        assert_eq!(emb.forward(None, Some(dense)).dims(), [4, 3]);
    }
}
