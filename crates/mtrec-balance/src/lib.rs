//! Loss balancing for multi-task learning, behind one trait.
//!
//! A [`LossBalancer`] turns one training step into gradients. It asks the step for what it needs
//! through [`TaskGraph`]: either the per-task losses of one forward (loss-weighting methods such as
//! [`FixedWeights`]), or a forward cut at the shared tensors ([`CutForward`]) from which it can take
//! per-task gradients of the shared representation (GradNorm, PCGrad, MGDA…) without the second
//! backward through a shared node that burn's autodiff does not allow. The training loop calls the
//! trait and never asks which method it runs.

mod balancer;
mod config;
mod fixed;

pub use balancer::{BalancedGradients, CutForward, LossBalancer, TaskGraph};
pub use config::{BalanceConfig, BalanceMethod};
pub use fixed::FixedWeights;
