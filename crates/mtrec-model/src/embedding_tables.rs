//! Which id tables a model has, and whether each is row-sparse — recorded by a run, so that an
//! ablation over `hash_buckets` that crosses [`SPARSE_AUTO_ROWS`] cannot switch the embedding
//! update rule without saying so.

use mtrec_data::Schema;
use serde::{Deserialize, Serialize};

use crate::{ModelConfig, SPARSE_AUTO_ROWS};

/// One id table of a model: the fused table of the categorical fields, or of the multi-valued
/// fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingTable {
    /// `categorical` or `multi_categorical`.
    pub table: String,
    /// The fields whose rows it holds.
    pub fields: Vec<String>,
    /// Its rows.
    pub rows: usize,
    /// Whether it is row-sparse (updated by `train.sparse_optimizer`) or dense.
    pub sparse: bool,
    /// Why: `model.sparse_embeddings = …`, or the automatic rule and the rows it compared.
    pub chosen_by: String,
}

impl ModelConfig {
    /// The id tables of a model for `schema` and whether each is row-sparse
    /// ([`Self::sparse_tables`]); tables without fields are left out.
    pub fn embedding_tables(&self, schema: &Schema) -> Vec<EmbeddingTable> {
        let sparse = self.sparse_tables(schema);
        let chosen_by = match self.sparse_embeddings {
            Some(s) => format!("model.sparse_embeddings = {s}"),
            None => {
                let categorical: usize = schema.vocab_sizes().iter().sum();
                let multi: usize = schema.multi_categorical.iter().map(|f| f.vocab_size).sum();
                let largest = categorical.max(multi);
                let relation = if sparse { "≥" } else { "<" };
                format!("automatic: the largest table has {largest} rows {relation} {SPARSE_AUTO_ROWS}")
            }
        };
        let mut tables = Vec::new();
        let categorical = (
            "categorical",
            schema.categorical.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
            schema.vocab_sizes().iter().sum::<usize>(),
        );
        let multi = (
            "multi_categorical",
            schema.multi_categorical.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
            schema.multi_categorical.iter().map(|f| f.vocab_size).sum::<usize>(),
        );
        for (table, fields, rows) in [categorical, multi] {
            if !fields.is_empty() {
                tables.push(EmbeddingTable { table: table.into(), fields, rows, sparse, chosen_by: chosen_by.clone() });
            }
        }
        tables
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mtrec_data::{CategoricalField, TaskKind, TaskSpec};

    /// Automatic choice by size, an explicit choice, and the reasons recorded for each.
    #[test]
    fn tables_say_whether_and_why_they_are_sparse() {
        let schema = |buckets: usize| {
            Schema::new(
                vec![
                    CategoricalField { name: "user".into(), vocab_size: buckets },
                    CategoricalField { name: "item".into(), vocab_size: 11 },
                ],
                vec![],
                vec![TaskSpec::new("click", TaskKind::Binary)],
            )
        };
        let auto = ModelConfig::default();
        let small = auto.embedding_tables(&schema(1_000));
        assert_eq!(small.len(), 1);
        assert_eq!((small[0].rows, small[0].sparse), (1_011, false));
        assert_eq!(small[0].fields, vec!["user", "item"]);
        assert!(small[0].chosen_by.contains("1011 rows < 100000"), "{}", small[0].chosen_by);
        let large = auto.embedding_tables(&schema(100_000));
        assert!(large[0].sparse && large[0].chosen_by.contains("≥ 100000"), "{:?}", large[0]);
        let forced = ModelConfig { sparse_embeddings: Some(false), ..Default::default() };
        let forced = forced.embedding_tables(&schema(100_000));
        assert!(!forced[0].sparse && forced[0].chosen_by == "model.sparse_embeddings = false");
    }
}
