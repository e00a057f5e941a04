//! Cross-stitch networks (Misra, Shrivastava, Gupta & Hebert, CVPR 2016) on per-task MLP columns:
//! after every hidden layer a learnable `T × T` cross-stitch unit mixes the columns,
//! `h'_t = Σ_s α_ts · h_s`, initialised to 0.9 on the diagonal and 0.1/(T−1) elsewhere.
//!
//! Two-phase split: the shared part ends with the columns' last layer *before* its stitch — the
//! tensors every task reads; task `t`'s branch applies row `α_t` of the last stitch and its tower.
//! So a balancer sees each task's gradient on every column (cutting after the stitch would give
//! task `t` a gradient on column `t` only, hiding every conflict from PCGrad, MGDA, CAGrad, IMTL-G).

use burn::{
    config::Config,
    module::{Module, Param, ParamGroup},
    nn::{Dropout, DropoutConfig, Linear, LinearConfig},
    tensor::{Device, Tensor, TensorData, activation::relu},
};
use mtrec_data::FeatureBatch;

use crate::{
    Embedded, FeatureEmbedding, FeatureEmbeddingConfig, MultiTaskModel, SharedTensors, TaskOutput, TaskTower,
    TaskTowerConfig,
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
    /// Dropout after every hidden activation (columns and towers).
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Head width of each task (empty: 1 each; multiclass tasks have one logit a class).
    #[config(default = "Vec::new()")]
    pub task_outputs: Vec<usize>,
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
            .init_each(t, &self.task_outputs, device);
        CrossStitch {
            input: self.input.init(device),
            columns,
            stitches,
            towers,
            dropout: DropoutConfig::new(self.dropout).init(),
        }
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
    /// Dropout after every column layer's activation.
    pub dropout: Dropout,
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

impl CrossStitch {
    /// Task `task`'s row of the last stitch applied to the columns: `Σ_s α_ts · h_s`, `[B, h]`.
    fn stitched(&self, task: usize, shared: &SharedTensors) -> Tensor<2> {
        let t = shared.tensors.len();
        let [b, h] = shared.tensors[0].dims();
        let alpha = self.stitches.last().expect("a column has at least one layer").val();
        let row = alpha.slice([task..task + 1, 0..t]); // [1, T]
        // [B·h, T] · [T, 1]
        Tensor::stack::<3>(shared.tensors.clone(), 2).reshape([b * h, t]).matmul(row.transpose()).reshape([b, h])
    }
}

impl MultiTaskModel for CrossStitch {
    fn n_tasks(&self) -> usize {
        self.towers.len()
    }

    /// Shared tensors: each column's last layer `[B, h]` before the last stitch (every task reads
    /// all of them).
    fn forward_shared(&self, features: FeatureBatch) -> SharedTensors {
        let Embedded { x, sparse_rows } = self.input.forward(features);
        let mut h = vec![x; self.columns.len()];
        let layers = self.stitches.len();
        for (k, alpha) in self.stitches.iter().enumerate() {
            let next: Vec<Tensor<2>> = self
                .columns
                .iter()
                .zip(h)
                .map(|(column, h)| mtrec_kernels::dropout(&self.dropout, relu(column[k].forward(h))))
                .collect();
            h = if k + 1 < layers { Self::stitch(next, alpha.val()) } else { next };
        }
        let n = h.len();
        SharedTensors::new(h, (0..n).collect()).with_sparse_rows(sparse_rows)
    }

    fn forward_task(&self, task: usize, shared: &SharedTensors) -> TaskOutput {
        TaskOutput::new(self.towers[task].forward(self.stitched(task, shared)))
    }

    /// Each task's stitched column.
    fn tower_inputs(&self, shared: &SharedTensors) -> Vec<Tensor<2>> {
        (0..self.n_tasks()).map(|t| self.stitched(t, shared)).collect()
    }

    fn output_bias(&self, task: usize) -> Option<burn::module::ParamId> {
        self.towers[task].output_bias()
    }

    fn task_parameters(&self, task: usize) -> ParamGroup {
        ParamGroup::ids_from_module((self.columns[task].clone(), self.towers[task].clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Int;

    /// The branch's stitch is the last layer's cross-stitch unit: the towers read exactly what
    /// `stitch` over the shared columns gives.
    #[test]
    fn branches_apply_the_last_stitch_to_every_column() {
        let device = Device::flex();
        let input = FeatureEmbeddingConfig::new(vec![5, 3], 2).with_dim(3);
        let model = CrossStitchConfig::new(input, vec![6, 4], vec![3], 3).init(&device);
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![1i32, 2, 0, 1, 4, 0], [3, 2]), &device);
        let dense = Tensor::<2>::random([3, 2], burn::tensor::Distribution::Default, &device);
        let shared = model.forward_shared(FeatureBatch::new(Some(ids), Some(dense)));
        let expected = CrossStitch::stitch(shared.tensors.clone(), model.stitches[1].val());
        for (t, got) in model.tower_inputs(&shared).into_iter().enumerate() {
            let a = got.into_data().try_into_vec::<f32>().unwrap();
            let b = expected[t].clone().into_data().try_into_vec::<f32>().unwrap();
            assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6), "task {t}");
        }
    }

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
