//! Datasets for multi-task learning: tables described by configuration (CSV/TSV or Parquet files,
//! a split rule, typed columns and tasks: [`TableSource`]), the real UCI Census-Income (KDD) data
//! under the `census-mmoe` protocol, the synthetic generator of the MMoE paper, and the batching
//! that feeds models.
//!
//! Every dataset is encoded once, up front, into an [`EncodedTable`] per split (categorical ids,
//! multi-valued slots, scaled dense features, text embeddings, one label column per task). Batching
//! then only gathers rows, so a training step allocates nothing per row and the same batches feed
//! every backend. A table too large for memory is encoded instead into chunk files per split
//! ([`TableSource::write_chunks`]) and streamed a window of chunks at a time ([`ChunkedSplit`]);
//! training and evaluation read either through [`SplitRows`]. Text reaches this crate only as
//! embeddings, through the [`TextEmbedder`] trait.

mod batch;
mod cell;
mod census;
mod chunk_file;
mod chunked_split;
mod columns;
mod csv_file;
mod ctr_files;
pub mod dense_fit;
mod error;
mod folder_lock;
mod parquet_file;
mod preprocessing;
mod schema;
mod split;
mod split_rows;
mod synthetic;
mod synthetic_ctr;
mod table;
mod table_cache;
mod table_file;
mod table_source;
mod table_stream;

pub use batch::{BatchOrder, FeatureBatch, MtlBatch, batches};
pub use census::{CENSUS_FILES, CensusGroup, CensusIncome, census_md5_hex};
pub use chunk_file::{read_chunk, write_chunk};
pub use chunked_split::{ChunkRef, ChunkedSplit};
pub use columns::{
    ColumnKind, ColumnSpec, DenseTransform, LabelTransform, LabelValue, MAX_HASH_BUCKETS, TaskColumn, fill_template,
    fnv1a64, hash_bucket, template_columns,
};
pub use ctr_files::{CtrSummary, write_synthetic_ctr};
pub use error::DataError;
pub use folder_lock::{FolderLock, LOCK_FILE, unique_temporary};
pub use preprocessing::{FittedColumn, Preprocessing};
pub use schema::{CategoricalField, MultiCategoricalField, Pooling, RowWidths, Schema, TaskKind, TaskSpec, TextField};
pub use split::{Cut, MissingTime, SplitName, SplitRule, splitmix64};
pub use split_rows::SplitRows;
pub use synthetic::{Synthetic, SyntheticConfig};
pub use synthetic_ctr::{CtrChunk, SyntheticCtr, SyntheticCtrConfig};
pub use table::{EncodedTable, FunnelViolation, MtlDataset};
pub use table_cache::{CacheOutcome, default_cache_dir};
pub use table_file::{CsvOptions, TableFormat, read_column, resolve};
pub use table_source::{LoadedTable, NO_GROUP, SplitStats, TableFiles, TableSource, TextEmbedder, TextEmbedderFactory};
pub use table_stream::{ChunkedDataset, ChunkedTable, MANIFEST_FILE, StreamOptions, open_chunks};
