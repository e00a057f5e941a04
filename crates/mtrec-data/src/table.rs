//! Tables described by configuration: the source (files, split rule, typed columns, tasks:
//! [`TableSource`](crate::TableSource)), reading CSV/TSV and Parquet, the columns' encodings and
//! their fitted preprocessing, the split, the encoded-table cache, and the encoded table itself.

pub(crate) mod cache;
pub(crate) mod cell;
pub(crate) mod columns;
pub(crate) mod csv;
pub(crate) mod dense_buckets;
pub mod dense_fit;
pub(crate) mod encoded;
pub(crate) mod file;
pub(crate) mod label_space;
pub(crate) mod parquet;
pub(crate) mod preprocessing;
pub(crate) mod scan;
pub(crate) mod source;
pub(crate) mod split;
