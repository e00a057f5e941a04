//! Datasets for multi-task learning: the real UCI Census-Income (KDD) data under the `census-mmoe`
//! protocol, the synthetic generator of the MMoE paper, and the batching that feeds models.
//!
//! Every dataset is encoded once, up front, into an [`EncodedTable`] per split (categorical ids,
//! scaled dense features, one label column per task). Batching then only gathers rows, so a
//! training step allocates nothing per row and the same batches feed every backend.

mod batch;
mod census;
mod error;
mod schema;
mod synthetic;
mod table;

pub use batch::{BatchOrder, MtlBatch, batches};
pub use census::{CENSUS_FILES, CensusGroup, CensusIncome, census_md5_hex};
pub use error::DataError;
pub use schema::{CategoricalField, Schema, TaskKind, TaskSpec};
pub use synthetic::{Synthetic, SyntheticConfig};
pub use table::{EncodedTable, FunnelViolation, MtlDataset};
