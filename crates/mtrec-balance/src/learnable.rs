//! Learnable task weights (uncertainty weighting's log-variances, GradNorm's weights): a small
//! module with its own Adam, created lazily on the device of the first step's losses.

use burn::{
    module::{Module, Param},
    optim::{AdamConfig, GradientsParams, ModuleOptimizer},
    tensor::{Device, Tensor, TensorData},
};

/// The parameter vector, one value per task.
#[derive(Module, Debug)]
struct TaskValues {
    values: Param<Tensor<1>>,
}

/// One learnable value per task with its own optimiser and learning rate.
pub(crate) struct LearnableTaskValues {
    module: Option<TaskValues>,
    host: Vec<f64>,
    optim: ModuleOptimizer,
    lr: f64,
}

impl LearnableTaskValues {
    /// Starts at `initial`, trained by Adam (ε = 1e-8) with learning rate `lr`.
    pub(crate) fn new(initial: Vec<f64>, lr: f64) -> Self {
        Self { module: None, host: initial, optim: AdamConfig::new().with_epsilon(1e-8).init(), lr }
    }

    /// The values as a tracked tensor on `device` (autodiff), for building an objective.
    pub(crate) fn tensor(&mut self, device: &Device) -> Tensor<1> {
        let host = &self.host;
        self.module.get_or_insert_with(|| TaskValues { values: Param::from_tensor(vector(host, device)) }).values.val()
    }

    /// The current values.
    pub(crate) fn values(&self) -> &[f64] {
        &self.host
    }

    /// One optimiser step with `grad` (`[T]`); `device` is where the values live.
    pub(crate) fn step(&mut self, grad: Tensor<1>, device: &Device) {
        self.tensor(device);
        let module = self.module.take().expect("created above");
        let mut grads = GradientsParams::new();
        grads.register(module.values.id, grad.detach());
        let module = self.optim.step(self.lr, module, grads);
        self.host = module.values.val().into_data().try_into_vec_as::<f64>().expect("float values");
        self.module = Some(module);
    }

    /// Replaces the values (keeping the parameter and its optimiser state).
    pub(crate) fn set(&mut self, values: Vec<f64>) {
        if let Some(module) = self.module.take() {
            let device = module.values.val().device();
            let tensor = vector(&values, &device);
            let mut values = Param::from_tensor(tensor);
            values.id = module.values.id;
            self.module = Some(TaskValues { values });
        }
        self.host = values;
    }
}

/// A `[T]` float tensor from host values.
pub(crate) fn vector(values: &[f64], device: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(values.iter().map(|&v| v as f32).collect(), [values.len()]), device)
}
