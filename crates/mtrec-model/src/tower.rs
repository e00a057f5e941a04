//! A task's own tower: an MLP and a head. Binary tasks read a one-unit head as a logit, regression
//! tasks as the value, multiclass tasks have one logit a class.

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
    /// Width of the head: 1 (a logit or a value), or one logit a class.
    #[config(default = 1)]
    pub d_output: usize,
}

impl TaskTowerConfig {
    /// Initialise the tower.
    pub fn init(&self, device: &Device) -> TaskTower {
        let mlp = MlpConfig::new(self.d_input, self.hidden.clone())
            .with_batch_norm(self.batch_norm)
            .with_dropout(self.dropout);
        let head = LinearConfig::new(mlp.output_dim(), self.d_output).init(device);
        TaskTower { mlp: mlp.init(device), head }
    }

    /// `n` independently initialised towers (one per task).
    pub fn init_many(&self, n: usize, device: &Device) -> Vec<TaskTower> {
        (0..n).map(|_| self.init(device)).collect()
    }

    /// One tower per task, each with its head width (`outputs[t]`; empty: `n` towers of width 1).
    pub fn init_each(&self, n: usize, outputs: &[usize], device: &Device) -> Vec<TaskTower> {
        (0..n).map(|t| self.clone().with_d_output(outputs.get(t).copied().unwrap_or(1)).init(device)).collect()
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
    /// - output: `[B, d_output]`
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.head.forward(self.mlp.forward(x))
    }

    /// The head's bias, what [`MultiTaskModel::output_bias`](crate::MultiTaskModel::output_bias)
    /// reports for the tower's task (the trainer starts it at the regression label mean).
    pub fn output_bias(&self) -> Option<burn::module::ParamId> {
        self.head.bias.as_ref().map(|b| b.id)
    }
}
