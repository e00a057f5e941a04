//! The shared input layer: every input column kind becomes part of one vector `x` that the rest of
//! the model reads.
//!
//! - categorical fields: each its own embedding; all fields live in one fused table with per-field
//!   row offsets, so a batch costs one gather instead of one lookup per field;
//! - multi-valued fields (genres, tags, recently viewed items): a bag of up to `max_len` ids, embedded
//!   in a fused table of their own and pooled (mean or sum) over the filled slots — empty slots (id 0)
//!   count for nothing;
//! - text fields: a frozen sentence embedding, through a learnable linear projection to `text_dim`;
//!   or, with a trainable encoder attached ([`FeatureEmbedding::with_text_encoder`]), the text's
//!   token ids through the encoder (the language model: the first piece of the shared phase), then
//!   the projection;
//! - dense features, appended as they are.
//!
//! `x = [categorical embeddings, pooled bags, projected texts, dense]`, optionally through DCN-v2's
//! cross network ([`crate::CrossNetwork`], `model.bottom = "dcn_v2"`), which keeps its width, or
//! followed by FM's pairwise interactions of the field embeddings
//! ([`crate::pairwise_interactions`], `model.bottom = "fm"`, `dim` wider). A new input kind changes
//! this layer and nothing else: every architecture reads `x` alone.
//!
//! With `sparse` on, the two id tables are row-sparse (see [`crate::sparse_rows`]): a training
//! forward reports the rows it read beside `x` ([`Embedded::sparse_rows`]), and the step updates
//! only those rows.

use burn::{
    config::Config,
    module::Module,
    nn::{Embedding, EmbeddingConfig, Linear, LinearConfig},
    tensor::{Device, Int, Tensor, TensorData},
};
use mtrec_data::{FeatureBatch, MultiCategoricalField, Pooling, Schema};
use mtrec_text::TextEncoder;

use crate::{CrossNetwork, CrossNetworkConfig, SparseRows, sparse_lookup};

/// Configuration of a [`FeatureEmbedding`].
#[derive(Config, Debug)]
pub struct FeatureEmbeddingConfig {
    /// Vocabulary size of each categorical field (including the out-of-vocabulary id 0).
    pub vocab_sizes: Vec<usize>,
    /// Number of dense features appended after the embeddings.
    pub n_dense: usize,
    /// Embedding width per field (categorical and multi-valued).
    #[config(default = 4)]
    pub dim: usize,
    /// The multi-valued categorical fields.
    #[config(default = "Vec::new()")]
    pub multi_categorical: Vec<MultiCategoricalField>,
    /// Width of each text field's embedding.
    #[config(default = "Vec::new()")]
    pub text_dims: Vec<usize>,
    /// Width each text embedding is projected to.
    #[config(default = 32)]
    pub text_dim: usize,
    /// Row-sparse id tables: only the rows a batch reads get gradients and updates.
    #[config(default = false)]
    pub sparse: bool,
    /// Categorical fields (indices) that share one block of rows (a shared hash table): each
    /// group's fields must have the same vocabulary size.
    #[config(default = "Vec::new()")]
    pub shared_tables: Vec<Vec<usize>>,
    /// DCN-v2 cross layers applied to `x` (0: none).
    #[config(default = 0)]
    pub cross_layers: usize,
    /// Append FM's pairwise interactions of the categorical and multi-valued field embeddings.
    #[config(default = false)]
    pub fm: bool,
}

/// Row offsets of fields in a fused table of the given vocabulary sizes.
fn offsets(vocab_sizes: impl Iterator<Item = usize>) -> Vec<i64> {
    vocab_sizes
        .scan(0i64, |acc, v| {
            let o = *acc;
            *acc += v as i64;
            Some(o)
        })
        .collect()
}

impl FeatureEmbeddingConfig {
    /// The input layer for every input column of `schema`.
    pub fn from_schema(schema: &Schema, dim: usize, text_dim: usize) -> Self {
        Self::new(schema.vocab_sizes(), schema.dense.len())
            .with_dim(dim)
            .with_multi_categorical(schema.multi_categorical.clone())
            .with_text_dims(schema.text.iter().map(|t| t.dim).collect())
            .with_text_dim(text_dim)
            .with_shared_tables(schema.shared_tables.clone())
    }

    /// Each categorical field's first row in the fused table, and the table's rows: fields of a
    /// shared group start where the group's first field does.
    fn field_rows(&self) -> (Vec<i64>, usize) {
        let mut offsets = Vec::with_capacity(self.vocab_sizes.len());
        let mut total = 0usize;
        for (f, &vocab) in self.vocab_sizes.iter().enumerate() {
            let group = self.shared_tables.iter().find(|g| g.contains(&f));
            match group.map(|g| g[0]).filter(|&first| first != f) {
                Some(first) => {
                    assert_eq!(vocab, self.vocab_sizes[first], "the fields of a shared table have one size");
                    offsets.push(offsets[first]);
                }
                None => {
                    offsets.push(total as i64);
                    total += vocab;
                }
            }
        }
        (offsets, total)
    }

    /// Width of the input vector: `(fields + multi fields) × dim + text fields × text_dim + n_dense`,
    /// plus `dim` with FM's interactions.
    pub fn output_dim(&self) -> usize {
        (self.vocab_sizes.len() + self.multi_categorical.len() + usize::from(self.fm)) * self.dim
            + self.text_dims.len() * self.text_dim
            + self.n_dense
    }

    /// Initialise the embedding tables (`N(0, 1)`, as PyTorch's `nn.Embedding`) and the text
    /// projections (PyTorch's `nn.Linear` initialisation).
    pub fn init(&self, device: &Device) -> FeatureEmbedding {
        let (field_offsets_cat, total) = self.field_rows();
        let multi_total: usize = self.multi_categorical.iter().map(|f| f.vocab_size).sum();
        // every slot of field f is offset by field f's first row
        let field_offsets = offsets(self.multi_categorical.iter().map(|f| f.vocab_size));
        let slot_offsets = self
            .multi_categorical
            .iter()
            .zip(&field_offsets)
            .flat_map(|(f, &o)| std::iter::repeat_n(o, f.max_len))
            .collect();
        FeatureEmbedding {
            table: (total > 0).then(|| EmbeddingConfig::new(total, self.dim).init(device)),
            offsets: field_offsets_cat,
            bags: (multi_total > 0).then(|| EmbeddingConfig::new(multi_total, self.dim).init(device)),
            slot_offsets,
            bag_fields: self.multi_categorical.iter().map(|f| (f.max_len, f.pooling == Pooling::Mean)).collect(),
            text: self.text_dims.iter().map(|&d| LinearConfig::new(d, self.text_dim).init(device)).collect(),
            text_dims: self.text_dims.clone(),
            encoder: None,
            token_fields: vec![false; self.text_dims.len()],
            dim: self.dim,
            n_dense: self.n_dense,
            sparse: self.sparse,
            cross: (self.cross_layers > 0)
                .then(|| CrossNetworkConfig::new(self.output_dim()).with_n_layers(self.cross_layers).init(device)),
            fm: self.fm,
        }
    }
}

/// Every input column kind as one vector.
#[derive(Module, Debug)]
pub struct FeatureEmbedding {
    /// One table for all categorical fields; field `f` owns rows `offsets[f]..offsets[f] + vocab_sizes[f]`.
    pub table: Option<Embedding>,
    /// First row of each categorical field in the fused table.
    #[module(skip)]
    pub offsets: Vec<i64>,
    /// One table for all multi-valued fields.
    pub bags: Option<Embedding>,
    /// First row in `bags` of each slot's field (one entry a slot).
    #[module(skip)]
    pub slot_offsets: Vec<i64>,
    /// Each multi-valued field's `(max_len, mean pooling)`.
    #[module(skip)]
    pub bag_fields: Vec<(usize, bool)>,
    /// One projection per text field.
    pub text: Vec<Linear>,
    /// Each text field's width in the batch (its embedding's, or its token ids').
    #[module(skip)]
    pub text_dims: Vec<usize>,
    /// The trainable sentence encoder of the token-id text fields.
    pub encoder: Option<TextEncoder>,
    /// Which text fields hold token ids (read through [`Self::encoder`]).
    #[module(skip)]
    pub token_fields: Vec<bool>,
    /// Embedding width.
    #[module(skip)]
    pub dim: usize,
    /// Number of dense features.
    #[module(skip)]
    pub n_dense: usize,
    /// Whether the id tables are row-sparse.
    #[module(skip)]
    pub sparse: bool,
    /// DCN-v2's cross layers on `x`, or none.
    pub cross: Option<CrossNetwork>,
    /// Whether FM's pairwise interactions of the field embeddings end `x`.
    #[module(skip)]
    pub fm: bool,
}

/// Where one text field sits in a batch's text values ([`FeatureEmbedding::text_columns`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextColumns {
    /// Its columns: a sentence embedding's dimensions, or token ids.
    pub columns: std::ops::Range<usize>,
    /// Whether they hold token ids (read through the input layer's encoder).
    pub tokens: bool,
}

/// The input vector of a batch, and the rows of row-sparse tables it read.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// The input vector `x`, `[B, width]`.
    pub x: Tensor<2>,
    /// The rows of each row-sparse table the forward read (training only; empty for dense tables).
    pub sparse_rows: Vec<SparseRows>,
}

impl FeatureEmbedding {
    /// Width of the produced input vector.
    pub fn output_dim(&self) -> usize {
        (self.offsets.len() + self.bag_fields.len() + usize::from(self.fm)) * self.dim
            + self.text.iter().map(|l| l.weight.dims()[1]).sum::<usize>()
            + self.n_dense
    }

    /// Embeds every input column kind and concatenates them.
    ///
    /// # Shapes
    /// - categorical: `[B, F]` (per-field ids), multi: `[B, Σ max_len]`, dense: `[B, D]`, text `[B, Σ d]`
    /// - output `x`: `[B, (F + multi fields)·dim + text fields·text_dim + D]` (the cross network
    ///   keeps the width)
    pub fn forward(&self, features: FeatureBatch) -> Embedded {
        let FeatureBatch { categorical, multi, dense, text } = features;
        let mut parts = Vec::with_capacity(5);
        let mut sparse_rows = Vec::new();
        let mut field_vectors = Vec::new(); // FM's field embeddings, [B, ·, dim] each
        if let (Some(table), Some(ids)) = (&self.table, categorical) {
            let [batch, fields] = ids.dims();
            assert_eq!(fields, self.offsets.len(), "expected {} categorical fields", self.offsets.len());
            let offsets =
                Tensor::<2, Int>::from_data(TensorData::new(self.offsets.clone(), [1, fields]), &ids.device());
            let embedded = self.lookup(table, ids + offsets, &mut sparse_rows);
            if self.fm {
                field_vectors.push(embedded.clone());
            }
            parts.push(embedded.reshape([batch, fields * self.dim]));
        }
        if let (Some(table), Some(ids)) = (&self.bags, multi) {
            let bags = self.pool_bags(table, ids, &mut sparse_rows);
            if self.fm {
                field_vectors.extend(bags.iter().map(|b| b.clone().unsqueeze_dim::<3>(1)));
            }
            parts.extend(bags);
        }
        if let Some(text) = text {
            let [batch, _] = text.dims();
            for (projection, field) in self.text.iter().zip(self.text_columns()) {
                let values = text.clone().slice([0..batch, field.columns.clone()]);
                let embedding = if field.tokens {
                    let encoder = self.encoder.as_ref().expect("token-id text fields come with a text encoder");
                    encoder.forward(values)
                } else {
                    values
                };
                parts.push(projection.forward(embedding));
            }
        }
        if let Some(dense) = dense {
            assert_eq!(dense.dims()[1], self.n_dense, "expected {} dense features", self.n_dense);
            parts.push(dense);
        }
        if self.fm {
            parts.push(crate::pairwise_interactions(Tensor::cat(field_vectors, 1)));
        }
        assert!(!parts.is_empty(), "a batch needs input columns");
        let x = if parts.len() == 1 { parts.pop().unwrap() } else { Tensor::cat(parts, 1) };
        let x = match &self.cross {
            Some(cross) => cross.forward(x),
            None => x,
        };
        Embedded { x, sparse_rows }
    }

    /// Each text field's place in the batch's text values, in field order.
    pub fn text_columns(&self) -> impl Iterator<Item = TextColumns> + '_ {
        let starts = self.text_dims.iter().scan(0, |start, &d| {
            *start += d;
            Some(*start - d)
        });
        starts
            .zip(&self.text_dims)
            .zip(&self.token_fields)
            .map(|((start, &d), &tokens)| TextColumns { columns: start..start + d, tokens })
    }

    /// Attaches a trainable sentence encoder for the text fields of token ids (`tokens[f]`: field
    /// `f` holds them): their projections now read the encoder's sentence embedding.
    pub fn with_text_encoder(mut self, encoder: TextEncoder, tokens: &[bool]) -> Self {
        assert_eq!(tokens.len(), self.text.len(), "one flag a text field");
        let device = encoder.bert.embeddings.word_embeddings.weight.device();
        for (projection, &is_tokens) in self.text.iter_mut().zip(tokens) {
            if is_tokens {
                let width = projection.weight.dims()[1];
                *projection = LinearConfig::new(encoder.dim(), width).init(&device);
            }
        }
        self.token_fields = tokens.to_vec();
        self.encoder = Some(encoder);
        self
    }

    /// The rows of `table` at `ids` (`[B, S]` → `[B, S, dim]`): row-sparse or through the graph.
    fn lookup(&self, table: &Embedding, ids: Tensor<2, Int>, sparse_rows: &mut Vec<SparseRows>) -> Tensor<3> {
        if !self.sparse {
            return mtrec_kernels::embedding_rows(table, ids);
        }
        let (rows, leaf) = sparse_lookup(&table.weight, ids);
        sparse_rows.extend(leaf);
        rows
    }

    /// Each multi-valued field's pooled embedding, `[B, dim]` a field.
    fn pool_bags(&self, table: &Embedding, ids: Tensor<2, Int>, sparse_rows: &mut Vec<SparseRows>) -> Vec<Tensor<2>> {
        let [batch, slots] = ids.dims();
        assert_eq!(slots, self.slot_offsets.len(), "expected {} multi-valued slots", self.slot_offsets.len());
        let device = ids.device();
        let filled = ids.clone().not_equal_elem(0).float().unsqueeze_dim::<3>(2); // [B, S, 1]
        let offsets = Tensor::<2, Int>::from_data(TensorData::new(self.slot_offsets.clone(), [1, slots]), &device);
        let embedded = self.lookup(table, ids + offsets, sparse_rows) * filled.clone(); // [B, S, dim]
        let mut start = 0;
        self.bag_fields
            .iter()
            .map(|&(len, mean)| {
                let range = start..start + len;
                start += len;
                let sum = embedded
                    .clone()
                    .slice([0..batch, range.clone(), 0..self.dim])
                    .sum_dim(1)
                    .reshape([batch, self.dim]);
                if !mean {
                    return sum;
                }
                let count = filled.clone().slice([0..batch, range, 0..1]).sum_dim(1).reshape([batch, 1]).clamp_min(1.0);
                sum / count
            })
            .collect()
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
        let out = emb.forward(FeatureBatch::new(Some(ids), Some(dense))).x.into_data().try_into_vec::<f32>().unwrap();
        // field 0 id 2 → row 2; field 1 id 1 → row 3 + 1 = 4; then the dense value.
        assert_eq!(out, vec![weights[4], weights[5], weights[8], weights[9], 0.5]);
    }

    /// With FM, `x` ends with the pairwise products of the field embeddings: for two categorical
    /// fields and a bag, `v_a⊙v_b + v_a⊙bag + v_b⊙bag`, from the tables' own rows.
    #[test]
    fn fm_appends_the_pairwise_products_of_the_fields() {
        let device = Device::flex();
        let bag = MultiCategoricalField { name: "m".into(), vocab_size: 3, max_len: 1, pooling: Pooling::Sum };
        let emb = FeatureEmbeddingConfig::new(vec![3, 2], 1)
            .with_dim(2)
            .with_multi_categorical(vec![bag])
            .with_fm(true)
            .init(&device);
        assert_eq!(emb.output_dim(), 3 * 2 + 1 + 2);
        let w = emb.table.as_ref().unwrap().weight.val().into_data().try_into_vec::<f32>().unwrap();
        let m = emb.bags.as_ref().unwrap().weight.val().into_data().try_into_vec::<f32>().unwrap();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![2i32, 1], [1, 2]), &device);
        let bag_ids = Tensor::<2, Int>::from_data(TensorData::new(vec![2i32], [1, 1]), &device);
        let dense = Tensor::<2>::from_data(TensorData::new(vec![0.5f32], [1, 1]), &device);
        let mut batch = FeatureBatch::new(Some(ids), Some(dense));
        batch.multi = Some(bag_ids);
        let out = emb.forward(batch).x.into_data().try_into_vec::<f32>().unwrap();
        let (a, b, c) = ([w[4], w[5]], [w[8], w[9]], [m[4], m[5]]);
        let pairs = |k: usize| a[k] * b[k] + a[k] * c[k] + b[k] * c[k];
        assert_eq!(out.len(), 9);
        assert_eq!(&out[..7], &[a[0], a[1], b[0], b[1], c[0], c[1], 0.5]);
        for k in 0..2 {
            assert!((out[7 + k] - pairs(k)).abs() < 1e-5, "unit {k}: {} vs {}", out[7 + k], pairs(k));
        }
    }

    /// Text fields sit one after another in the batch's text values, each flagged as token ids or
    /// an embedding.
    #[test]
    fn text_columns_follow_the_fields_widths() {
        let mut emb = FeatureEmbeddingConfig::new(vec![], 0).with_text_dims(vec![3, 5, 2]).init(&Device::flex());
        emb.token_fields = vec![false, true, false];
        let fields: Vec<TextColumns> = emb.text_columns().collect();
        let expected = [(0..3, false), (3..8, true), (8..10, false)];
        assert_eq!(fields, expected.map(|(columns, tokens)| TextColumns { columns, tokens }));
    }

    /// Bags pool the filled slots only: mean divides by the number of filled slots, sum adds them;
    /// an empty bag is zeros. Text fields pass through their own projections.
    #[test]
    fn bags_pool_filled_slots_and_texts_are_projected() {
        let device = Device::flex();
        let field = |max_len, pooling| MultiCategoricalField { name: "f".into(), vocab_size: 4, max_len, pooling };
        let emb = FeatureEmbeddingConfig::new(vec![], 0)
            .with_dim(2)
            .with_multi_categorical(vec![field(3, Pooling::Mean), field(2, Pooling::Sum)])
            .with_text_dims(vec![3])
            .with_text_dim(2)
            .init(&device);
        assert_eq!(emb.slot_offsets, vec![0, 0, 0, 4, 4]);
        let w = emb.bags.as_ref().unwrap().weight.val().into_data().try_into_vec::<f32>().unwrap();
        let row = |r: usize| [w[2 * r], w[2 * r + 1]];
        // row 0: field 0 holds ids 2, 3 (one empty slot) → mean of rows 2, 3; field 1 holds 1, 1 → 2 × row 4 + 1
        // row 1: field 0 empty → zeros; field 1 holds 3 and an empty slot → row 4 + 3
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![2i32, 0, 3, 1, 1, 0, 0, 0, 3, 0], [2, 5]), &device);
        let text = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 0.0, 0.0, 0.0, 2.0, 0.0], [2, 3]), &device);
        let features = FeatureBatch { multi: Some(ids), text: Some(text.clone()), ..Default::default() };
        let out = emb.forward(features).x.into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(out.len(), 2 * 6);
        let close = |a: f32, b: f32| (a - b).abs() < 1e-6;
        for k in 0..2 {
            assert!(close(out[k], (row(2)[k] + row(3)[k]) / 2.0), "mean of the filled slots");
            assert!(close(out[2 + k], 2.0 * row(5)[k]), "sum");
            assert!(close(out[6 + k], 0.0), "an empty bag is zeros");
            assert!(close(out[6 + 2 + k], row(7)[k]));
        }
        let projected = emb.text[0].forward(text).into_data().try_into_vec::<f32>().unwrap();
        assert!(close(out[4], projected[0]) && close(out[6 + 5], projected[3]));
        assert_eq!(emb.output_dim(), 6);
    }

    /// Fields of a shared table start at the same row: the same id reads the same embedding in
    /// either field; the other fields keep rows of their own.
    #[test]
    fn fields_of_a_shared_table_read_the_same_rows() {
        let device = Device::flex();
        let emb = FeatureEmbeddingConfig::new(vec![5, 3, 5], 0)
            .with_dim(2)
            .with_shared_tables(vec![vec![0, 2]])
            .init(&device);
        assert_eq!(emb.offsets, vec![0, 5, 0]);
        assert_eq!(emb.table.as_ref().unwrap().weight.dims(), [8, 2]);
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![4i32, 1, 4, 3, 2, 1], [2, 3]), &device);
        let out = emb.forward(FeatureBatch::new(Some(ids), None)).x.into_data().try_into_vec::<f32>().unwrap();
        let w = emb.table.as_ref().unwrap().weight.val().into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(out[0..2], w[8..10], "field 0, id 4 → row 4");
        assert_eq!(out[4..6], w[8..10], "field 2, id 4 → the same row 4");
        assert_eq!(out[2..4], w[12..14], "field 1, id 1 → its own row 5 + 1");
        assert_eq!(out[10..12], w[2..4], "field 2, id 1 → row 1, field 0's id 1");
    }

    #[test]
    fn dense_only_input_passes_through() {
        let device = Device::flex();
        let emb = FeatureEmbeddingConfig::new(vec![], 3).init(&device);
        assert!(emb.table.is_none());
        let dense = Tensor::<2>::ones([4, 3], &device);
        assert_eq!(emb.forward(FeatureBatch::new(None, Some(dense))).x.dims(), [4, 3]);
    }
}
