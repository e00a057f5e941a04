//! Tables too large for memory: encoded once into chunk files per split, then streamed a window of
//! chunks at a time ([`ChunkedSplit`](crate::ChunkedSplit), [`ChunkedDataset`](crate::ChunkedDataset)).

pub(crate) mod chunk_file;
pub(crate) mod chunked_split;
pub(crate) mod chunked_table;
