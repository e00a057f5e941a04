//! Multi-task model building blocks and architectures.
//!
//! Every architecture has a two-phase forward ([`MultiTaskModel`]): the shared part (embeddings,
//! bottom, experts) yields [`SharedTensors`]; each task's branch (gate, tower, head) starts from
//! them. A loss balancer can therefore cut the graph at the shared tensors and get per-task
//! gradients there without a second backward through the shared part.
//!
//! # Guide
//!
//! [`ModelConfig`] (the `[model]` section) builds a [`MultiTaskNet`] for a dataset's
//! [`Schema`](mtrec_data::Schema): the architecture it names ([`ArchitectureNet`]: the built-ins,
//! or a user's own type through an [`ArchitectureFactory`]), then one [`AdversarialHead`] per
//! adversarial task.
//! Every architecture answers the same two calls — the shared part once, each task's branch from
//! its output — so the trainer and the balancers never ask which one runs:
//!
//! ```
//! use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
//! use mtrec_data::{CategoricalField, FeatureBatch, Schema, TaskKind, TaskSpec};
//! use mtrec_model::{Architecture, ModelConfig, MultiTaskModel};
//!
//! let schema = Schema::new(
//!     vec![CategoricalField { name: "country".into(), vocab_size: 4 }],
//!     vec!["age".into(), "income".into()],
//!     vec![TaskSpec::new("click", TaskKind::Binary), TaskSpec::new("buy", TaskKind::Binary)],
//! );
//! let device = Device::flex();
//! let config = ModelConfig { architecture: Architecture::Mmoe, n_experts: 4, ..Default::default() };
//! let model = config.init(&schema, &device);
//!
//! let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![1i32, 3, 0], [3, 1]), &device);
//! let dense = Tensor::<2>::random([3, 2], Distribution::Default, &device);
//! let shared = model.forward_shared(FeatureBatch::new(Some(ids), Some(dense)));
//! for task in 0..model.n_tasks() {
//!     let out = model.forward_task(task, &shared);
//!     assert_eq!(out.output.dims(), [3, 1]); // a logit per row
//!     assert_eq!(out.gate.unwrap().dims(), [3, 4]); // MMoE: the task's gate over 4 experts
//! }
//! ```
//!
//! A user's architecture is a `#[derive(Module)]` type implementing [`MultiTaskModel`], built by an
//! [`ArchitectureFactory`] and registered by name in the program that trains it
//! (`mtrec_train::Registry`); `examples/custom_architecture.rs` writes DSelect-k that way.

#![deny(missing_docs)]

mod adatt;
mod adversarial;
mod aitm;
mod concept_erasure;
mod contract;
mod cross_network;
mod cross_stitch;
mod custom;
mod embedding;
mod embedding_tables;
mod esmm;
mod experts;
mod factorization_machine;
mod home;
mod last_layer;
mod mlp;
mod mmoe;
mod model_config;
mod net;
mod normalized_experts;
mod omoe;
mod ple;
mod shared_bottom;
mod single_task;
mod sparse_rows;
mod stem;
mod task_text;
mod tower;

pub use adatt::{AdaTt, AdaTtConfig, FusionLevel};
pub use adversarial::{AdversarialHead, AdversarialHeadConfig, dann_lambda, gradient_reversal};
pub use aitm::{AitAttention, Aitm, AitmConfig};
pub use concept_erasure::{ConceptEraser, CovarianceSums, LeaceFit, erase};
pub use contract::{MultiTaskModel, SharedTensors, TaskOutput};
pub use cross_network::{CrossNetwork, CrossNetworkConfig};
pub use cross_stitch::{CrossStitch, CrossStitchConfig};
pub use custom::{ArchitectureFactory, ArchitectureInputs, ArchitectureOptions, MultiTaskModule, NoCustom};
pub use embedding::{Embedded, FeatureEmbedding, FeatureEmbeddingConfig, TextColumns};
pub use embedding_tables::EmbeddingTable;
pub use esmm::{Esmm, EsmmConfig, log_sigmoid};
pub use experts::{ExpertBank, ExpertBankConfig, ExpertGate, ExpertGateConfig};
pub use factorization_machine::pairwise_interactions;
pub use home::{Home, HomeConfig};
pub use last_layer::{Jacobian, LastLayerWeight, LastSharedLayer, frobenius};
pub use mlp::{Mlp, MlpConfig};
pub use mmoe::{Mmoe, MmoeConfig};
pub use model_config::{AdversarialSchedule, Architecture, Bottom, Erasure, ModelConfig, SPARSE_AUTO_ROWS};
pub use net::{ArchitectureNet, MultiTaskNet};
pub use normalized_experts::{NormalizedExperts, NormalizedExpertsConfig};
pub use omoe::Omoe;
pub use ple::{CgcLevel, Ple, PleConfig};
pub use shared_bottom::{SharedBottom, SharedBottomConfig};
pub use single_task::SingleTask;
pub use sparse_rows::{SparseRows, sparse_lookup};
pub use stem::{Stem, StemConfig};
pub use task_text::TaskTextBranch;
pub use tower::{TaskTower, TaskTowerConfig};
