//! Quantile buckets of the dense features as extra categorical fields (`data.dense_buckets = N`).
//!
//! A scaled dense value reaches the network as one number through one linear map, which serves a
//! heavy-tailed column badly: census-income's capital gains are 0 on most rows and up to 99,999 on
//! a few, so after min-max scaling the informative range is squeezed near 0. Discretising a
//! numeric feature into quantile buckets and embedding the bucket id (as FuxiCTR, DeepCTR and the
//! numerical-embedding study of Gorishniy et al., 2022, do) lets the model learn any shape per
//! bucket. Each dense column keeps its scaled value and gains a categorical field
//! `<column>_bucket`: the edges are the column's quantiles at `k/N`, `k = 1..N−1`, on the
//! **training** split (duplicates merged: a column that is mostly one value gets fewer buckets),
//! and a value's id is `1 +` the number of edges at or below it (0 stays the null id, for NaN).
//! Validation and test rows use the training edges.

use serde::{Deserialize, Serialize};

use crate::{CategoricalField, DataError, EncodedTable, MtlDataset};

/// The fitted bucket edges of every dense column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenseBuckets {
    /// The number of quantile buckets asked for.
    pub buckets: usize,
    /// Per dense column, its ascending distinct edges.
    pub edges: Vec<Vec<f32>>,
}

impl DenseBuckets {
    /// The edges of the `n_dense` columns of `train` for `buckets ≥ 2` quantile buckets.
    pub fn fit(train: &EncodedTable, n_dense: usize, buckets: usize) -> Result<Self, DataError> {
        if buckets < 2 {
            return Err(DataError::Invalid(format!("data.dense_buckets = {buckets}: use 0 (off) or at least 2")));
        }
        let edges = (0..n_dense)
            .map(|c| {
                let mut values: Vec<f32> =
                    train.dense.iter().skip(c).step_by(n_dense).copied().filter(|v| !v.is_nan()).collect();
                values.sort_by(f32::total_cmp);
                let mut edges: Vec<f32> = Vec::new();
                if values.is_empty() {
                    return edges;
                }
                for k in 1..buckets {
                    // the lower empirical quantile at k/N
                    let edge = values[(k * values.len() / buckets).min(values.len() - 1)];
                    if edges.last().is_none_or(|&last| edge > last) {
                        edges.push(edge);
                    }
                }
                edges
            })
            .collect();
        Ok(Self { buckets, edges })
    }

    /// The bucket id of `value` in column `c` (0 for NaN).
    pub fn id(&self, c: usize, value: f32) -> u32 {
        if value.is_nan() {
            return 0;
        }
        1 + self.edges[c].partition_point(|&e| e <= value) as u32
    }

    /// The categorical fields the buckets add, named after the dense columns.
    pub fn fields(&self, dense_names: &[String]) -> Vec<CategoricalField> {
        dense_names
            .iter()
            .zip(&self.edges)
            .map(|(name, edges)| CategoricalField { name: format!("{name}_bucket"), vocab_size: edges.len() + 2 })
            .collect()
    }

    /// Appends the bucket ids of `table`'s dense columns after its categorical fields
    /// (`n_categorical` of them before).
    pub fn apply(&self, table: &mut EncodedTable, n_categorical: usize) {
        let d = self.edges.len();
        let mut categorical = Vec::with_capacity(table.n_rows * (n_categorical + d));
        for r in 0..table.n_rows {
            categorical.extend_from_slice(&table.categorical[r * n_categorical..(r + 1) * n_categorical]);
            categorical.extend((0..d).map(|c| self.id(c, table.dense[r * d + c])));
        }
        table.categorical = categorical;
    }
}

impl MtlDataset {
    /// The dataset with bucket fields of its dense columns ([`DenseBuckets`]): fitted on its
    /// training split, or `fitted` (a trained run's, when its model scores new rows).
    pub fn with_dense_buckets(
        mut self,
        buckets: usize,
        fitted: Option<&DenseBuckets>,
    ) -> Result<(Self, DenseBuckets), DataError> {
        let n_dense = self.schema.dense.len();
        if n_dense == 0 {
            return Err(DataError::Invalid(format!(
                "data.dense_buckets = {buckets}: the data set `{}` has no dense column",
                self.name
            )));
        }
        let fit = match fitted {
            Some(f) if f.edges.len() == n_dense => f.clone(),
            Some(f) => {
                return Err(DataError::Invalid(format!(
                    "data.dense_buckets: the fitted buckets cover {} dense columns, the data has {n_dense}",
                    f.edges.len()
                )));
            }
            None => DenseBuckets::fit(&self.train, n_dense, buckets)?,
        };
        let n_categorical = self.schema.categorical.len();
        for table in [&mut self.train, &mut self.valid, &mut self.test] {
            fit.apply(table, n_categorical);
        }
        self.schema.categorical.extend(fit.fields(&self.schema.dense));
        Ok((self, fit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Schema, TaskKind, TaskSpec};

    fn table(categorical: Vec<u32>, dense: Vec<f32>) -> EncodedTable {
        let n_rows = dense.len() / 2;
        EncodedTable { n_rows, categorical, dense, labels: vec![0.0; n_rows], ..Default::default() }
    }

    /// By hand: column 0 = 0..8 (eight values), 4 buckets: edges at the values of ranks 2, 4, 6 —
    /// 2, 4, 6; column 1 is 0 on six rows of eight, then 11 and 12: its quantile edges 0, 0, 11 merge
    /// to (0, 11).
    /// Ids: 1 + the edges at or below the value.
    #[test]
    fn quantile_edges_and_ids_by_hand() {
        let dense: Vec<f32> = (0..8).flat_map(|i| [i as f32, if i < 6 { 0.0 } else { 5.0 + i as f32 }]).collect();
        let train = table((0..8).collect(), dense);
        let b = DenseBuckets::fit(&train, 2, 4).unwrap();
        assert_eq!(b.edges, vec![vec![2.0, 4.0, 6.0], vec![0.0, 11.0]]);
        assert_eq!([b.id(0, -1.0), b.id(0, 1.9), b.id(0, 2.0), b.id(0, 5.0), b.id(0, 100.0)], [1, 1, 2, 3, 4]);
        assert_eq!([b.id(1, 0.0), b.id(1, 3.0), b.id(1, 12.0), b.id(1, f32::NAN)], [2, 2, 3, 0]);
        assert!(DenseBuckets::fit(&train, 2, 1).unwrap_err().to_string().contains("data.dense_buckets = 1"));
    }

    /// The fields follow the categorical ones row by row, named after the dense columns, and the
    /// validation and test rows use the training edges.
    #[test]
    fn the_dataset_gains_one_field_a_dense_column() {
        let schema = Schema::new(
            vec![CategoricalField { name: "a".into(), vocab_size: 9 }],
            vec!["x".into(), "y".into()],
            vec![TaskSpec::new("t", TaskKind::Binary)],
        );
        let dense: Vec<f32> = (0..8).flat_map(|i| [i as f32, if i < 6 { 0.0 } else { 5.0 + i as f32 }]).collect();
        let ds = MtlDataset {
            name: "toy".into(),
            schema,
            train: table((1..=8).collect(), dense),
            valid: table(vec![3], vec![3.0, 20.0]),
            test: table(vec![4], vec![9.0, -1.0]),
        };
        let (ds, fit) = ds.with_dense_buckets(4, None).unwrap();
        let names: Vec<&str> = ds.schema.categorical.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a", "x_bucket", "y_bucket"]);
        assert_eq!(ds.schema.categorical[1].vocab_size, 5);
        assert_eq!(ds.schema.categorical[2].vocab_size, 4);
        assert_eq!(&ds.train.categorical[..6], &[1, 1, 2, 2, 1, 2]);
        assert_eq!(ds.valid.categorical, vec![3, 2, 3]);
        assert_eq!(ds.test.categorical, vec![4, 4, 1]);
        assert_eq!(ds.train.dense.len(), 16, "the scaled values stay");
        // a trained run's buckets are applied as they are
        let other = MtlDataset {
            name: "new".into(),
            schema: Schema::new(vec![], vec!["x".into(), "y".into()], vec![]),
            train: table(vec![], vec![100.0, 100.0]),
            valid: table(vec![], vec![]),
            test: table(vec![], vec![]),
        };
        let (other, again) = other.with_dense_buckets(4, Some(&fit)).unwrap();
        assert_eq!(again, fit);
        assert_eq!(other.train.categorical, vec![4, 3]);
    }
}
