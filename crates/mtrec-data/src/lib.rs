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
//!
//! # Guide
//!
//! A dataset is a [`Schema`] (the columns the model reads and the tasks it predicts) and three
//! splits. Configs build them from files ([`TableSource`], [`CensusIncome`], [`Synthetic`]); a
//! program can also build them from its own vectors — an [`EncodedTable`] is plain row-major
//! arrays — and the trainer takes either, through [`SplitRows`]:
//!
//! ```
//! use burn::tensor::Device;
//! use mtrec_data::{BatchOrder, CategoricalField, EncodedTable, Schema, SplitRows, TaskKind, TaskSpec};
//!
//! // one categorical field (id 0: missing), one dense feature, two tasks
//! let schema = Schema::new(
//!     vec![CategoricalField { name: "country".into(), vocab_size: 3 }],
//!     vec!["age".into()],
//!     vec![TaskSpec::new("click", TaskKind::Binary), TaskSpec::new("dwell", TaskKind::Regression)],
//! );
//! let table = EncodedTable {
//!     n_rows: 5,
//!     categorical: vec![1, 2, 0, 1, 2],
//!     dense: vec![0.1, 0.5, -0.3, 0.9, 0.0],
//!     labels: vec![1.0, 3.5, 0.0, 1.0, 1.0, 0.2, 1.0, 7.0, 0.0, 0.4], // [rows, tasks]
//!     ..Default::default()
//! };
//! let device = Device::flex();
//! let batches: Vec<_> = table.stream(schema.widths(), 2, BatchOrder::Sequential, &device).collect();
//! assert_eq!(batches.len(), 3); // 2 + 2 + 1 rows
//! let first = batches[0].as_ref().unwrap();
//! assert_eq!(first.labels.dims(), [2, 2]);
//! assert_eq!(table.label_means(2).unwrap()[0], 0.6); // 3 clicks in 5 rows
//! ```

#![deny(missing_docs)]

mod batch;
mod error;
mod folder_lock;
mod label_tally;
mod schema;
mod sets;
mod split_rows;
mod stream;
mod table;

pub use batch::{BatchOrder, FeatureBatch, LabelledRows, MtlBatch, batches};
pub use error::DataError;
pub use folder_lock::{FolderLock, LOCK_FILE, unique_temporary};
pub use schema::{CategoricalField, MultiCategoricalField, Pooling, RowWidths, Schema, TaskKind, TaskSpec, TextField};
pub use sets::census::{CENSUS_FILES, CensusGroup, CensusIncome, census_md5_hex};
pub use sets::ctr_files::{CtrSummary, write_synthetic_ctr};
pub use sets::synthetic::{Synthetic, SyntheticConfig};
pub use sets::synthetic_ctr::{CtrChunk, SyntheticCtr, SyntheticCtrConfig};
pub use split_rows::SplitRows;
pub use stream::chunk_file::{read_chunk, write_chunk};
pub use stream::chunked_split::{ChunkRef, ChunkedSplit};
pub use stream::chunked_table::{ChunkedDataset, ChunkedTable, MANIFEST_FILE, StreamOptions, open_chunks};
pub use table::cache::{CacheOutcome, default_cache_dir};
pub use table::columns::{
    ColumnKind, ColumnSpec, DenseFill, DenseTransform, LabelTransform, LabelValue, MAX_HASH_BUCKETS, TaskColumn,
    fill_template, fnv1a64, hash_bucket, template_columns,
};
pub use table::dense_buckets::DenseBuckets;
pub use table::dense_fit;
pub use table::encoded::{EncodedTable, FunnelViolation, MtlDataset};
pub use table::file::{CsvOptions, TableFormat, read_column, resolve};
pub use table::label_space::{Comparison, LabelSpace};
pub use table::preprocessing::{FittedColumn, Preprocessing};
pub use table::source::{
    LoadedTable, NO_GROUP, SplitStats, TableFiles, TableSource, TextEmbedder, TextEmbedderFactory,
};
pub use table::split::{Cut, MissingTime, SplitName, SplitRule, splitmix64};
