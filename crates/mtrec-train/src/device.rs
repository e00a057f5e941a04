//! The backends a run can choose. Every function of the crates takes a `&Device`; this is the one
//! place that turns a name into one.

use burn::tensor::{Device, DeviceKind};
use serde::{Deserialize, Serialize};

/// A backend, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// burn-flex: pure-Rust CPU backend (default).
    #[default]
    Flex,
    /// burn-ndarray: the older CPU backend (deprecated upstream in burn 0.22).
    Ndarray,
    /// burn-wgpu: the GPU through wgpu (Vulkan, Metal, DX12, or a software Vulkan such as lavapipe).
    Wgpu,
}

impl DeviceChoice {
    /// The device (without autodiff).
    pub fn device(self) -> Device {
        match self {
            DeviceChoice::Flex => Device::flex(),
            #[allow(deprecated)]
            DeviceChoice::Ndarray => Device::ndarray(),
            DeviceChoice::Wgpu => Device::wgpu(DeviceKind::DefaultDevice),
        }
    }

    /// The device, checked to be usable: a wgpu device whose adapter cannot be acquired (no GPU and
    /// no software Vulkan driver, or no Vulkan loader) gives an error saying so instead of a panic
    /// deep inside the runtime.
    pub fn open(self) -> Result<Device, String> {
        let device = self.device();
        if self != DeviceChoice::Wgpu {
            return Ok(device);
        }
        let probe = device.clone();
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let ok =
            std::panic::catch_unwind(move || burn::tensor::Tensor::<1>::ones([1], &probe).into_scalar::<f32>() == 1.0);
        std::panic::set_hook(hook);
        match ok {
            Ok(true) => Ok(device),
            _ => Err("wgpu: no usable adapter. A GPU needs its Vulkan (or Metal/DX12) driver and the Vulkan \
                      loader (libvulkan1); without a GPU, install Mesa's software Vulkan (`apt-get install \
                      mesa-vulkan-drivers`) and set VK_ICD_FILENAMES=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json"
                .into()),
        }
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            DeviceChoice::Flex => "flex",
            DeviceChoice::Ndarray => "ndarray",
            DeviceChoice::Wgpu => "wgpu",
        }
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "flex" => Ok(Self::Flex),
            "ndarray" => Ok(Self::Ndarray),
            "wgpu" => Ok(Self::Wgpu),
            other => Err(format!("unknown device {other:?}: expected flex, ndarray or wgpu")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DataConfig, DataSource, EarlyStoppingConfig, ExperimentConfig, TrainConfig, Trainer};
    use mtrec_data::SyntheticConfig;

    /// Each backend trains a tiny MMoE with finite, falling loss. wgpu runs where `MTREC_TEST_WGPU`
    /// is set (`.ci/run` sets it and provides Mesa's software Vulkan driver).
    #[test]
    fn every_backend_trains_with_finite_falling_loss() {
        let mut choices = vec![DeviceChoice::Flex, DeviceChoice::Ndarray];
        if std::env::var_os("MTREC_TEST_WGPU").is_some() {
            choices.push(DeviceChoice::Wgpu);
        } else {
            eprintln!("SKIP wgpu backend: set MTREC_TEST_WGPU=1 with a Vulkan driver (e.g. Mesa lavapipe) to run it");
        }
        for choice in choices {
            let config = ExperimentConfig {
                device: choice,
                data: DataConfig {
                    source: DataSource::Synthetic,
                    synthetic: SyntheticConfig {
                        dim: 8,
                        n_train: 1024,
                        n_valid: 256,
                        n_test: 256,
                        ..Default::default()
                    },
                    ..Default::default()
                },
                train: TrainConfig {
                    epochs: 4,
                    batch_size: 64,
                    lr: 5e-3,
                    early_stopping: EarlyStoppingConfig { metric: "mse".into(), patience: 10, ..Default::default() },
                    ..Default::default()
                },
                ..Default::default()
            };
            let ds = config.data.load().unwrap();
            let (summary, records, _) = Trainer::new(&config, &ds, choice.device()).verbose(false).run().unwrap();
            assert_eq!(summary.device, choice.name());
            for task in ["task1", "task2"] {
                let losses: Vec<f64> = records.iter().map(|r| r.train_loss[task]).collect();
                assert!(losses.iter().all(|l| l.is_finite()), "{choice:?} {task}: {losses:?}");
                assert!(losses[3] < losses[0], "{choice:?} {task}: loss did not fall: {losses:?}");
            }
        }
    }

    #[test]
    fn names_parse_back() {
        for c in [DeviceChoice::Flex, DeviceChoice::Ndarray, DeviceChoice::Wgpu] {
            assert_eq!(c.name().parse::<DeviceChoice>().unwrap(), c);
        }
        assert!("cuda".parse::<DeviceChoice>().unwrap_err().contains("flex, ndarray or wgpu"));
    }
}
