//! The fitted preprocessing of a table: vocabularies, scalers and hash settings learnt from the
//! training rows. A run saves it (`preprocessing.json`) and `eval`, `export` and `--resume` reuse it,
//! so a saved model scores new files with the encoding it was trained on.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{DenseTransform, Pooling};

/// One input column, fitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FittedColumn {
    /// A categorical vocabulary: value `values[i]` has id `i + 1`; anything else 0.
    Vocabulary {
        /// The column.
        name: String,
        /// The values, in id order.
        values: Vec<String>,
    },
    /// Hashed ids: `1 + fnv1a64(value) mod buckets`.
    Hashed {
        /// The column.
        name: String,
        /// Number of buckets.
        buckets: u64,
        /// The shared hash table the field's rows belong to (its values salted with its name).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        table: Option<String>,
    },
    /// A dense transform with its fitted parameters: `x` clipped to `clip` when set, then
    /// `(x − min) / (max − min)` clipped to `[0, 1]` for `minmax` (0 when the training range is
    /// empty), `(x − mean) / std` for `standard` (scale 1 when the deviation is 0), `ln(1 + x)` for
    /// `log1p` — computed in f64 (a range wider than f32 does not overflow).
    Dense {
        /// The column.
        name: String,
        /// The transform.
        transform: DenseTransform,
        /// `minmax`: the training minimum; `standard`: the mean.
        shift: f32,
        /// `minmax`: the training maximum; `standard`: the standard deviation.
        spread: f32,
        /// The value of a missing cell.
        fill: Option<f64>,
        /// The training quantiles every value is clipped to first (`clip_quantiles`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clip: Option<[f32; 2]>,
    },
    /// A multi-valued vocabulary: `values[i]` has id `i + 2` (0 empty slot, 1 unseen).
    Bag {
        /// The column.
        name: String,
        /// The values, in id order.
        values: Vec<String>,
        /// Slots a row.
        max_len: usize,
        /// Pooling.
        pooling: Pooling,
    },
    /// A text field and the encoder it was embedded with.
    Text {
        /// The field.
        name: String,
        /// Embedding width.
        dim: usize,
        /// The encoder's identity (its weights' sha256).
        model: String,
    },
}

impl FittedColumn {
    /// The column's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Vocabulary { name, .. }
            | Self::Hashed { name, .. }
            | Self::Dense { name, .. }
            | Self::Bag { name, .. }
            | Self::Text { name, .. } => name,
        }
    }

    /// The id map of a vocabulary (`Vocabulary`: ids from 1; `Bag`: from 2).
    pub(crate) fn id_map(&self) -> HashMap<&str, u32> {
        match self {
            Self::Vocabulary { values, .. } => {
                values.iter().enumerate().map(|(i, v)| (v.as_str(), i as u32 + 1)).collect()
            }
            Self::Bag { values, .. } => values.iter().enumerate().map(|(i, v)| (v.as_str(), i as u32 + 2)).collect(),
            _ => HashMap::new(),
        }
    }

    /// A dense value, transformed with the fitted parameters.
    pub fn apply_dense(&self, x: f32) -> f32 {
        match self {
            Self::Dense { transform, shift, spread, clip, fill, .. } => {
                // NaN reaches here only for a missing cell whose fill is a fitted statistic
                let x = match fill {
                    Some(f) if x.is_nan() => *f as f32,
                    _ => x,
                };
                let x = clip.map_or(x, |[a, b]| x.clamp(a, b)) as f64;
                let (shift, spread) = (*shift as f64, *spread as f64);
                match transform {
                    DenseTransform::Minmax if spread > shift => ((x - shift) / (spread - shift)).clamp(0.0, 1.0) as f32,
                    DenseTransform::Minmax => f32::from(x > shift),
                    DenseTransform::Standard if spread > 0.0 && spread.is_finite() => ((x - shift) / spread) as f32,
                    DenseTransform::Standard => (x - shift) as f32,
                    DenseTransform::Log1p => x.ln_1p() as f32,
                    DenseTransform::None => x as f32,
                }
            }
            _ => x,
        }
    }
}

/// Every input column, fitted, in the config's column order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Preprocessing {
    /// The columns.
    pub columns: Vec<FittedColumn>,
    /// The dense columns' bucket edges (`data.dense_buckets`), fitted on the training split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dense_buckets: Option<crate::DenseBuckets>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each transform by hand, with the census min-max rule (clipped, guarded spread).
    #[test]
    fn dense_transforms_by_hand() {
        let dense = |transform, shift, spread| FittedColumn::Dense {
            name: "x".into(),
            transform,
            shift,
            spread,
            fill: None,
            clip: None,
        };
        let minmax = dense(DenseTransform::Minmax, 10.0, 30.0);
        assert_eq!([minmax.apply_dense(10.0), minmax.apply_dense(20.0), minmax.apply_dense(40.0)], [0.0, 0.5, 1.0]);
        assert_eq!(minmax.apply_dense(-5.0), 0.0, "clipped below");
        let constant = dense(DenseTransform::Minmax, 3.0, 3.0);
        assert_eq!(constant.apply_dense(3.0), 0.0, "a constant column is 0, not NaN");
        let standard = dense(DenseTransform::Standard, 2.0, 4.0);
        assert_eq!(standard.apply_dense(10.0), 2.0);
        assert!((dense(DenseTransform::Log1p, 0.0, 0.0).apply_dense(std::f32::consts::E - 1.0) - 1.0).abs() < 1e-6);
        assert_eq!(dense(DenseTransform::None, 5.0, 1.0).apply_dense(7.5), 7.5);
    }

    #[test]
    fn vocabulary_ids_start_at_one_and_bags_at_two() {
        let v = FittedColumn::Vocabulary { name: "c".into(), values: vec!["a".into(), "b".into()] };
        assert_eq!(v.id_map()["b"], 2);
        let b = FittedColumn::Bag { name: "g".into(), values: vec!["x".into()], max_len: 3, pooling: Pooling::Mean };
        assert_eq!(b.id_map()["x"], 2);
        let json = serde_json::to_string(&Preprocessing { columns: vec![v.clone(), b], dense_buckets: None }).unwrap();
        let back: Preprocessing = serde_json::from_str(&json).unwrap();
        assert_eq!(back.columns[0], v);
    }
}
