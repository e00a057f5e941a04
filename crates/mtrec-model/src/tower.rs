//! A task's own tower: an MLP and a one-unit head. Binary tasks read the head as a logit,
//! regression tasks as the value.

use burn::{
    config::Config,
    module::Module,
    nn::{Linear, LinearConfig},
    tensor::{Device, Tensor},
};

use crate::{Mlp, MlpConfig};

/// Configuration of a [`TaskTower`].
#[derive(Config, Debug)]
pub struct TaskTowerConfig {
    /// Input width (the shared representation the tower reads).
    pub d_input: usize,
    /// Hidden widths of the tower.
    pub hidden: Vec<usize>,
    /// Batch normalisation in the tower's hidden layers.
    #[config(default = false)]
    pub batch_norm: bool,
    /// Dropout in the tower's hidden layers.
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl TaskTowerConfig {
    /// Initialise the tower.
    pub fn init(&self, device: &Device) -> TaskTower {
        let mlp = MlpConfig::new(self.d_input, self.hidden.clone())
            .with_batch_norm(self.batch_norm)
            .with_dropout(self.dropout);
        let head = LinearConfig::new(mlp.output_dim(), 1).init(device);
        TaskTower { mlp: mlp.init(device), head }
    }

    /// `n` independently initialised towers (one per task).
    pub fn init_many(&self, n: usize, device: &Device) -> Vec<TaskTower> {
        (0..n).map(|_| self.init(device)).collect()
    }
}

/// One task's tower.
#[derive(Module, Debug)]
pub struct TaskTower {
    /// Hidden layers.
    pub mlp: Mlp,
    /// The output unit (logit or value).
    pub head: Linear,
}

impl TaskTower {
    /// # Shapes
    /// - input: `[B, d_input]`
    /// - output: `[B, 1]`
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.head.forward(self.mlp.forward(x))
    }
}
