//! Multi-task model building blocks and architectures.
//!
//! Every architecture has a two-phase forward ([`MultiTaskModel`]): the shared part (embeddings,
//! bottom, experts) yields [`SharedTensors`]; each task's branch (gate, tower, head) starts from
//! them. A loss balancer can therefore cut the graph at the shared tensors and get per-task
//! gradients there without a second backward through the shared part.

mod adversarial;
mod aitm;
mod concept_erasure;
mod cross_stitch;
mod embedding;
mod embedding_tables;
mod esmm;
mod experts;
mod last_layer;
mod mlp;
mod mmoe;
mod model;
mod omoe;
mod ple;
mod shared_bottom;
mod single_task;
mod sparse_rows;
mod task_text;
mod tower;

pub use adversarial::{AdversarialHead, AdversarialHeadConfig, dann_lambda, gradient_reversal};
pub use aitm::{AitAttention, Aitm, AitmConfig};
pub use concept_erasure::{ConceptEraser, CovarianceSums, LeaceFit, erase};
pub use cross_stitch::{CrossStitch, CrossStitchConfig};
pub use embedding::{Embedded, FeatureEmbedding, FeatureEmbeddingConfig};
pub use embedding_tables::EmbeddingTable;
pub use esmm::{Esmm, EsmmConfig, log_sigmoid};
pub use experts::{ExpertBank, ExpertBankConfig, ExpertGate, ExpertGateConfig};
pub use last_layer::{Jacobian, LastLayerWeight, LastSharedLayer, frobenius};
pub use mlp::{Mlp, MlpConfig};
pub use mmoe::{Mmoe, MmoeConfig};
pub use model::{
    AdversarialSchedule, Architecture, ArchitectureNet, Erasure, ModelConfig, MultiTaskModel, MultiTaskNet,
    SPARSE_AUTO_ROWS, SharedTensors, TaskOutput,
};
pub use omoe::Omoe;
pub use ple::{CgcLevel, Ple, PleConfig};
pub use shared_bottom::{SharedBottom, SharedBottomConfig};
pub use single_task::SingleTask;
pub use sparse_rows::{SparseRows, sparse_lookup};
pub use task_text::TaskTextBranch;
pub use tower::{TaskTower, TaskTowerConfig};
