//! The backends a run can choose. Every function of the crates takes a `&Device`; this is the one
//! place that turns a name into one.
//!
//! The flex CPU backend is always built. The others are cargo features of `mtrec-train` (and of
//! the xtask), off by default because a CPU user never runs them and they dominate a cold build:
//! `ndarray` (burn's older CPU backend, deprecated upstream: the largest single crate of the
//! build), and the GPU backends, whose stack (wgpu, naga, CubeCL…) is larger still — `wgpu`
//! (Vulkan, Metal, DX12, or a software Vulkan) and `cuda` (NVIDIA, through CubeCL). A name whose
//! backend this build lacks is an error saying how to get it.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

/// A backend, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// burn-flex: pure-Rust CPU backend (default).
    #[default]
    Flex,
    /// burn-ndarray: the older CPU backend (deprecated upstream in burn 0.22); needs the `ndarray`
    /// cargo feature.
    Ndarray,
    /// burn-wgpu: the GPU through wgpu (Vulkan, Metal, DX12, or a software Vulkan such as lavapipe);
    /// needs the `wgpu` cargo feature.
    Wgpu,
    /// burn-cuda: an NVIDIA GPU through CUDA; needs the `cuda` cargo feature.
    Cuda,
}

impl DeviceChoice {
    /// Every backend name, built in or not.
    pub const ALL: [DeviceChoice; 4] = [Self::Flex, Self::Ndarray, Self::Wgpu, Self::Cuda];

    /// Whether this build has the backend (GPU backends are cargo features).
    pub fn is_built(self) -> bool {
        match self {
            Self::Flex => true,
            Self::Ndarray => cfg!(feature = "ndarray"),
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// The device (without autodiff), or an error naming the cargo feature that adds the backend.
    pub fn device(self) -> Result<Device, String> {
        match self {
            Self::Flex => Ok(Device::flex()),
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            Self::Ndarray => Ok(Device::ndarray()),
            #[cfg(feature = "wgpu")]
            Self::Wgpu => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
            #[cfg(feature = "cuda")]
            Self::Cuda => Ok(Device::cuda(0)),
            #[allow(unreachable_patterns)]
            other => Err(other.not_built()),
        }
    }

    /// The message for a backend this build lacks.
    fn not_built(self) -> String {
        let name = self.name();
        if self == Self::Ndarray {
            return "device \"ndarray\": this build of mtrec has no ndarray backend (burn's older CPU backend, a \
                    cargo feature off by default: flex is faster and builds with everything else). Build with it: \
                    `cargo run -p xtask --features ndarray -- train --device ndarray ...`, or depend on mtrec-train \
                    with `features = [\"ndarray\"]`."
                .into();
        }
        format!(
            "device {name:?}: this build of mtrec has no {name} backend. GPU backends are cargo features, off by \
             default to keep the CPU build lean; build the xtask with it: `cargo xtask-{name} train --device {name} \
             ...` (an alias of `cargo run -p xtask --features {name} -- ...`), or depend on mtrec-train with \
             `features = [\"{name}\"]`. The first such build compiles burn's GPU stack (see README, Building)."
        )
    }

    /// The device, checked to be usable: a backend this build lacks, or a GPU device whose adapter
    /// cannot be acquired (no GPU and no software Vulkan driver, or no Vulkan loader), gives an error
    /// saying so instead of a panic deep inside the runtime.
    pub fn open(self) -> Result<Device, String> {
        let device = self.device()?;
        if matches!(self, Self::Flex | Self::Ndarray) {
            return Ok(device);
        }
        let probe = device.clone();
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let ok =
            std::panic::catch_unwind(move || burn::tensor::Tensor::<1>::ones([1], &probe).into_scalar::<f32>() == 1.0);
        std::panic::set_hook(hook);
        match (ok, self) {
            (Ok(true), _) => Ok(device),
            (_, Self::Cuda) => Err("cuda: no usable CUDA device (an NVIDIA GPU with its driver is needed)".into()),
            _ => Err("wgpu: no usable adapter. A GPU needs its Vulkan (or Metal/DX12) driver and the Vulkan \
                      loader (libvulkan1); without a GPU, install Mesa's software Vulkan (`apt-get install \
                      mesa-vulkan-drivers`) and set VK_ICD_FILENAMES=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json"
                .into()),
        }
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Flex => "flex",
            Self::Ndarray => "ndarray",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        }
    }

    /// The CPU backends besides flex a test run compares with it: `ndarray` in a build with its
    /// feature (`.ci/run` builds one); otherwise none, with a SKIP line.
    pub fn cpu_backends_under_test(test: &str) -> Vec<DeviceChoice> {
        if Self::Ndarray.is_built() {
            vec![Self::Ndarray]
        } else {
            eprintln!("SKIP {test} on ndarray: build with `--features ndarray`");
            vec![]
        }
    }

    /// The GPU backends a test run should exercise: `wgpu` where `MTREC_TEST_WGPU` is set (with a
    /// Vulkan driver; `.ci/run` provides Mesa's lavapipe). Prints a SKIP line when it is not set, and
    /// panics when it is set in a build without the `wgpu` feature (a silently skipped GPU test is
    /// a false green).
    pub fn gpu_backends_under_test(test: &str) -> Vec<DeviceChoice> {
        let requested = std::env::var_os("MTREC_TEST_WGPU").is_some();
        match (requested, Self::Wgpu.is_built()) {
            (true, true) => vec![Self::Wgpu],
            (true, false) => panic!(
                "MTREC_TEST_WGPU is set but this test binary was built without the `wgpu` feature: \
                 run `cargo test --features wgpu`"
            ),
            (false, built) => {
                let how = if built {
                    "set MTREC_TEST_WGPU=1 with a Vulkan driver (e.g. Mesa lavapipe)"
                } else {
                    "build with `--features wgpu` and set MTREC_TEST_WGPU=1 with a Vulkan driver"
                };
                eprintln!("SKIP {test} on wgpu: {how}");
                vec![]
            }
        }
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|c| c.name() == s).ok_or_else(|| {
            format!(
                "unknown device {s:?}: expected flex, ndarray, wgpu or cuda (ndarray, wgpu and cuda are cargo features)"
            )
        })
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
        let mut choices = vec![DeviceChoice::Flex];
        choices.extend(DeviceChoice::cpu_backends_under_test("every_backend_trains_with_finite_falling_loss"));
        choices.extend(DeviceChoice::gpu_backends_under_test("every_backend_trains_with_finite_falling_loss"));
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
            let (summary, records, _) =
                Trainer::new(&config, &ds, choice.device().unwrap()).verbose(false).run().unwrap();
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
        for c in DeviceChoice::ALL {
            assert_eq!(c.name().parse::<DeviceChoice>().unwrap(), c);
        }
        assert!("metal".parse::<DeviceChoice>().unwrap_err().contains("flex, ndarray, wgpu or cuda"));
    }

    /// A GPU backend this build lacks is an error that says which feature adds it and how to build
    /// with it; one it has is a device.
    #[test]
    fn a_backend_not_built_in_says_how_to_get_it() {
        for choice in [DeviceChoice::Wgpu, DeviceChoice::Cuda] {
            match choice.device() {
                Ok(_) => assert!(choice.is_built()),
                Err(e) => {
                    assert!(!choice.is_built());
                    let name = choice.name();
                    assert!(e.contains(&format!("cargo xtask-{name} train --device {name}")), "{e}");
                    assert!(e.contains(&format!("--features {name}")), "{e}");
                    assert_eq!(choice.open().unwrap_err(), e);
                }
            }
        }
        assert!(DeviceChoice::Flex.is_built() && DeviceChoice::Flex.open().is_ok());
    }
}
