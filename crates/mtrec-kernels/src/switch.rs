//! The process-wide switch of the fused kernels (`model.fused_kernels`), and where they run.

use std::sync::atomic::{AtomicBool, Ordering};

use burn::{backend::DispatchDevice, tensor::Device};

static FUSED_KERNELS: AtomicBool = AtomicBool::new(true);

/// Whether models use mtrec's fused kernels where the backend has them (default: on).
pub fn fused_kernels() -> bool {
    FUSED_KERNELS.load(Ordering::Relaxed)
}

/// Turns the fused kernels on or off for this process (`model.fused_kernels`); off, every layer
/// runs as plain burn operations. Both paths compute the same values and gradients.
pub fn set_fused_kernels(on: bool) {
    FUSED_KERNELS.store(on, Ordering::Relaxed);
}

/// Whether the fused kernels run for tensors on `device`: flex (with or without autodiff), with
/// the switch on.
pub fn use_fused(device: &Device) -> bool {
    fused_kernels() && matches!(device.clone().without_autodiff().as_dispatch(), DispatchDevice::Flex(_))
}
