//! Multi-task model building blocks and architectures.
//!
//! Every architecture has a two-phase forward ([`MultiTaskModel`]): the shared part (embeddings,
//! bottom, experts) yields [`SharedTensors`]; each task's branch (gate, tower, head) starts from
//! them. A loss balancer can therefore cut the graph at the shared tensors and get per-task
//! gradients there without a second backward through the shared part.

mod embedding;
mod experts;
mod last_layer;
mod mlp;
mod mmoe;
mod model;
mod shared_bottom;
mod tower;

pub use embedding::{FeatureEmbedding, FeatureEmbeddingConfig};
pub use experts::{ExpertBank, ExpertBankConfig, ExpertGate, ExpertGateConfig};
pub use last_layer::{Jacobian, LastLayerWeight, LastSharedLayer, frobenius};
pub use mlp::{Mlp, MlpConfig};
pub use mmoe::{Mmoe, MmoeConfig};
pub use model::{Architecture, ModelConfig, MultiTaskModel, MultiTaskNet, SharedTensors, TaskOutput};
pub use shared_bottom::{SharedBottom, SharedBottomConfig};
pub use tower::{TaskTower, TaskTowerConfig};
