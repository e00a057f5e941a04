//! Cross-stitch networks (Misra, Shrivastava, Gupta & Hebert, CVPR 2016) on per-task MLP columns:
//! after every hidden layer a learnable `T × T` cross-stitch unit mixes the columns,
//! `h'_t = Σ_s α_ts · h_s`, initialised to 0.9 on the diagonal and 0.1/(T−1) elsewhere.

use burn::{
    config::Config,
    module::{Module, Param, ParamGroup},
    nn::{Linear, LinearConfig},
    tensor::{Device, Int, Tensor, TensorData, activation::relu},
};

use crate::{
    FeatureEmbedding, FeatureEmbeddingConfig, MultiTaskModel, SharedTensors, TaskOutput, TaskTower, TaskTowerConfig,
};

/// Configuration of a [`CrossStitch`] model.
#[derive(Config, Debug)]
pub struct CrossStitchConfig {
    /// The shared input layer.
    pub input: FeatureEmbeddingConfig,
    /// Hidden widths of each task's column.
    pub column_hidden: Vec<usize>,
    /// Hidden widths of each tower.
    pub tower_hidden: Vec<usize>,
    /// Number of tasks (= columns).
    pub n_tasks: usize,
    /// Dropout after tower activations.
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl CrossStitchConfig {
    /// Initialise the model.
    pub fn init(&self, device: &Device) -> CrossStitch {
        let t = self.n_tasks;
        let widths: Vec<usize> =
            std::iter::once(self.input.output_dim()).chain(self.column_hidden.iter().copied()).collect();
        let columns =
            (0..t).map(|_| widths.windows(2).map(|w| LinearConfig::new(w[0], w[1]).init(device)).collect()).collect();
        let off = if t > 1 { 0.1 / (t - 1) as f32 } else { 0.0 };
        let alpha: Vec<f32> = (0..t * t).map(|i| if i / t == i % t { 0.9 } else { off }).collect();
        let stitches = self
            .column_hidden
            .iter()
            .map(|_| Param::from_data(TensorData::new(alpha.clone(), [t, t]), device))
            .collect();
        let towers = TaskTowerConfig::new(*widths.last().expect("input width"), self.tower_hidden.clone())
            .with_dropout(self.dropout)
            .init_many(t, device);
        CrossStitch { input: self.input.init(device), columns, stitches, towers }
    }
}

/// Per-task columns joined by cross-stitch units.
#[derive(Module, Debug)]
pub struct CrossStitch {
    /// The shared input layer.
    pub input: FeatureEmbedding,
    /// `columns[t][k]`: layer `k` of task `t`'s column.
    pub columns: Vec<Vec<Linear>>,
    /// One `[T, T]` cross-stitch matrix per layer.
    pub stitches: Vec<Param<Tensor<2>>>,
    /// One tower per task.
    pub towers: Vec<TaskTower>,
}

impl CrossStitch {
    /// `h'_t = Σ_s α_ts · h_s` for every task.
    ///
    /// # Shapes
    /// - columns: `T` tensors `[B, h]`; alpha: `[T, T]`
    pub fn stitch(columns: Vec<Tensor<2>>, alpha: Tensor<2>) -> Vec<Tensor<2>> {
        let [b, h] = columns[0].dims();
        let t = columns.len();
        // [B·h, T] · [T, T]ᵀ → [B·h, T]
        let stacked = Tensor::stack::<3>(columns, 2).reshape([b * h, t]);
        let mixed = stacked.matmul(alpha.transpose()).reshape([b, h, t]);
        (0..t).map(|i| mixed.clone().slice([0..b, 0..h, i..i + 1]).reshape([b, h])).collect()
    }
}

impl MultiTaskModel for CrossStitch {
    fn n_tasks(&self) -> usize {
        self.towers.len()
    }

    /// Shared tensors: each column's output `[B, h]` (task `t`'s tower reads tensor `t`).
    fn forward_shared(&self, categorical: Option<Tensor<2, Int>>, dense: Option<Tensor<2>>) -> SharedTensors {
        let x = self.input.forward(categorical, dense);
        let mut h = vec![x; self.columns.len()];
        for (k, alpha) in self.stitches.iter().enumerate() {
            let next = self.columns.iter().zip(h).map(|(column, h)| relu(column[k].forward(h))).collect();
            h = Self::stitch(next, alpha.val());
        }
        let n = h.len();
        SharedTensors::new(h, (0..n).collect())
    }

    fn forward_task(&self, task: usize, shared: &SharedTensors) -> TaskOutput {
        TaskOutput::new(self.towers[task].forward(shared.tensors[task].clone()))
    }

    fn task_parameters(&self, task: usize) -> ParamGroup {
        ParamGroup::ids_from_module((self.columns[task].clone(), self.towers[task].clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stitch_mixes_columns_with_alpha() {
        let device = Device::flex();
        let a = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]), &device);
        let b = Tensor::<2>::from_data(TensorData::new(vec![10.0f32, 20.0, 30.0, 40.0], [2, 2]), &device);
        let alpha = Tensor::<2>::from_data(TensorData::new(vec![0.9f32, 0.1, 0.25, 0.75], [2, 2]), &device);
        let out = CrossStitch::stitch(vec![a, b], alpha);
        let v0 = out[0].clone().into_data().try_into_vec::<f32>().unwrap();
        let v1 = out[1].clone().into_data().try_into_vec::<f32>().unwrap();
        for (i, (x, y)) in [(1.0f32, 10.0f32), (2.0, 20.0), (3.0, 30.0), (4.0, 40.0)].iter().enumerate() {
            assert!((v0[i] - (0.9 * x + 0.1 * y)).abs() < 1e-5);
            assert!((v1[i] - (0.25 * x + 0.75 * y)).abs() < 1e-5);
        }
    }
}
