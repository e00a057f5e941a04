//! How a sentence-transformers model turns hidden states into one vector: the pooling mode of
//! `1_Pooling/config.json` (mean over the real tokens, or the `[CLS]` state), then — when
//! `modules.json` lists a `Normalize` module — L2 normalisation.

use std::path::Path;

use burn::tensor::{Bool, Tensor};
use serde::Deserialize;

use crate::TextError;

/// The pooling mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolingMode {
    /// Mean over the tokens of the attention mask.
    Mean,
    /// The first (`[CLS]`) token's state.
    Cls,
}

/// Pooling and normalisation of a sentence-transformers model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentencePooling {
    /// The pooling mode.
    pub mode: PoolingMode,
    /// L2-normalise the pooled vector.
    pub normalize: bool,
}

#[derive(Deserialize)]
struct PoolingFile {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, TextError> {
    let bytes = std::fs::read(path).map_err(|_| TextError::Missing { path: path.to_path_buf() })?;
    serde_json::from_slice(&bytes).map_err(|e| TextError::Corrupt { path: path.to_path_buf(), reason: e.to_string() })
}

impl SentencePooling {
    /// Reads `modules.json` and the pooling module's `config.json` in the model folder.
    pub fn from_dir(dir: &Path) -> Result<Self, TextError> {
        let modules: Vec<ModuleEntry> = read_json(&dir.join("modules.json"))?;
        let pooling = modules.iter().find(|m| m.kind.ends_with(".Pooling")).ok_or_else(|| TextError::Corrupt {
            path: dir.join("modules.json"),
            reason: "no sentence_transformers Pooling module".into(),
        })?;
        let path = dir.join(&pooling.path).join("config.json");
        let file: PoolingFile = read_json(&path)?;
        let mode = match (file.pooling_mode_mean_tokens, file.pooling_mode_cls_token) {
            (true, false) if !file.pooling_mode_max_tokens && !file.pooling_mode_mean_sqrt_len_tokens => {
                PoolingMode::Mean
            }
            (false, true) if !file.pooling_mode_max_tokens && !file.pooling_mode_mean_sqrt_len_tokens => {
                PoolingMode::Cls
            }
            _ => {
                return Err(TextError::Corrupt {
                    path,
                    reason: "one pooling mode must be on, mean or cls (max and mean_sqrt_len are not supported)".into(),
                });
            }
        };
        let normalize = modules.iter().any(|m| m.kind.ends_with(".Normalize"));
        Ok(Self { mode, normalize })
    }

    /// Pools hidden states into one vector a text.
    ///
    /// # Shapes
    /// - hidden: `[B, L, H]`; padding: `[B, L]` (`true` at padding)
    /// - output: `[B, H]`
    pub fn forward(&self, hidden: Tensor<3>, padding: Tensor<2, Bool>) -> Tensor<2> {
        let [b, _, h] = hidden.dims();
        let pooled = match self.mode {
            PoolingMode::Cls => hidden.slice([0..b, 0..1, 0..h]).reshape([b, h]),
            PoolingMode::Mean => {
                let keep = padding.bool_not().float().unsqueeze_dim::<3>(2); // [B, L, 1]
                let sum = (hidden * keep.clone()).sum_dim(1).reshape([b, h]);
                let count = keep.sum_dim(1).reshape([b, 1]).clamp_min(1e-9);
                sum / count
            }
        };
        if !self.normalize {
            return pooled;
        }
        let norm = pooled.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
        pooled / norm
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    /// Mean pooling ignores padding; normalisation gives unit vectors.
    #[test]
    fn masked_mean_and_normalisation_by_hand() {
        let device = Device::flex();
        // one text of 2 real tokens (3, 4) and (1, 0), then a padding token (100, 100)
        let hidden =
            Tensor::<3>::from_data(TensorData::new(vec![3.0f32, 4.0, 1.0, 0.0, 100.0, 100.0], [1, 3, 2]), &device);
        let padding = Tensor::<2, Bool>::from_data(TensorData::new(vec![false, false, true], [1, 3]), &device);
        let mean = SentencePooling { mode: PoolingMode::Mean, normalize: false };
        let v = mean.forward(hidden.clone(), padding.clone()).into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(v, vec![2.0, 2.0]);
        let unit = SentencePooling { mode: PoolingMode::Mean, normalize: true };
        let v = unit.forward(hidden.clone(), padding.clone()).into_data().try_into_vec::<f32>().unwrap();
        assert!((v[0] - 0.5f32.sqrt()).abs() < 1e-6 && (v[1] - 0.5f32.sqrt()).abs() < 1e-6);
        let cls = SentencePooling { mode: PoolingMode::Cls, normalize: false };
        assert_eq!(cls.forward(hidden, padding).into_data().try_into_vec::<f32>().unwrap(), vec![3.0, 4.0]);
    }
}
