//! A split too large for memory: its chunk files ([`crate::chunk_file`]), read a window of chunks at
//! a time by a background thread while the previous window trains.
//!
//! A shuffled epoch (seed `s`) permutes the chunks with `s`, reads them `window` at a time, and
//! permutes the rows of each window with a generator seeded from `s` and the window's index; a
//! batch may span two windows (every batch but the last has `batch_size` rows, as in memory). Every
//! row is visited once an epoch; the same seed gives the same order; memory holds at most three
//! windows (the one being batched, one read ahead, one being read), whatever the number of rows.
//! Sequential order (evaluation) reads the chunks in file order.

use std::{
    path::PathBuf,
    sync::mpsc::{Receiver, sync_channel},
};

use burn::tensor::Device;
use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};
use serde::{Deserialize, Serialize};

use crate::{
    BatchOrder, DataError, EncodedTable, MtlBatch, RowWidths, SplitRows, batch::BatchRows, splitmix64,
    stream::chunk_file::read_chunk,
};

/// One chunk file of a split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// The file.
    pub file: PathBuf,
    /// Its rows.
    pub rows: usize,
}

/// A split stored as chunk files.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkedSplit {
    /// The chunks, in file order.
    pub chunks: Vec<ChunkRef>,
    /// Rows in all chunks.
    pub n_rows: usize,
    /// The row widths of every chunk.
    pub widths: RowWidths,
    /// Chunks shuffled together (at least 1).
    pub window: usize,
    /// Whether the chunks hold group ids (`group_by`); without them [`SplitRows::group_ids`]
    /// reads nothing.
    pub grouped: bool,
}

/// A window's rows and the order to visit them in.
type Window = (EncodedTable, Vec<u32>);

impl ChunkedSplit {
    /// The split of these chunks, shuffled `window` chunks at a time; `grouped`: the chunks hold
    /// group ids.
    pub fn new(chunks: Vec<ChunkRef>, widths: RowWidths, window: usize, grouped: bool) -> Self {
        let n_rows = chunks.iter().map(|c| c.rows).sum();
        Self { chunks, n_rows, widths, window: window.max(1), grouped }
    }

    /// The chunk indices of each window of an epoch, in reading order, and each window's row
    /// shuffle seed (`None`: file order).
    fn windows(&self, order: BatchOrder) -> Vec<(Vec<usize>, Option<u64>)> {
        let mut ids: Vec<usize> = (0..self.chunks.len()).collect();
        if let BatchOrder::Shuffled(seed) = order {
            ids.shuffle(&mut StdRng::seed_from_u64(seed));
        }
        ids.chunks(self.window)
            .enumerate()
            .map(|(w, ids)| {
                let seed = match order {
                    BatchOrder::Shuffled(seed) => Some(splitmix64(seed ^ splitmix64(w as u64 + 1))),
                    BatchOrder::Sequential => None,
                };
                (ids.to_vec(), seed)
            })
            .collect()
    }

    /// Reads the chunks `ids` into one table (checking each chunk's row count against the manifest).
    fn read_window(chunks: &[ChunkRef], ids: &[usize], widths: RowWidths) -> Result<EncodedTable, DataError> {
        let mut table = EncodedTable::default();
        for &c in ids {
            let chunk = read_chunk(&chunks[c].file, widths)?;
            if chunk.n_rows != chunks[c].rows {
                return Err(DataError::Invalid(format!(
                    "chunk file {}: {} rows, the split's manifest says {}",
                    chunks[c].file.display(),
                    chunk.n_rows,
                    chunks[c].rows
                )));
            }
            table.append(chunk);
        }
        Ok(table)
    }

    /// Every row, in file order, as one table (for splits that fit in memory, and tests).
    pub fn read_all(&self) -> Result<EncodedTable, DataError> {
        let ids: Vec<usize> = (0..self.chunks.len()).collect();
        Self::read_window(&self.chunks, &ids, self.widths)
    }

    /// Starts the reader thread: windows in `order`, one read ahead.
    fn reader(&self, order: BatchOrder) -> Receiver<Result<Window, DataError>> {
        let (tx, rx) = sync_channel(1);
        let (chunks, widths, windows) = (self.chunks.clone(), self.widths, self.windows(order));
        std::thread::spawn(move || {
            for (ids, seed) in windows {
                let window = Self::read_window(&chunks, &ids, widths).map(|table| {
                    let mut rows: Vec<u32> = (0..table.n_rows as u32).collect();
                    if let Some(seed) = seed {
                        rows.shuffle(&mut StdRng::seed_from_u64(seed));
                    }
                    (table, rows)
                });
                let failed = window.is_err();
                // a closed channel: the consumer stopped early
                if tx.send(window).is_err() || failed {
                    break;
                }
            }
        });
        rx
    }
}

/// Batches of a chunked split (see the module docs of `chunked_split.rs`).
struct WindowBatches<'a> {
    reader: Receiver<Result<Window, DataError>>,
    current: Option<Window>,
    cursor: usize,
    remaining: usize,
    batch_size: usize,
    widths: RowWidths,
    device: &'a Device,
}

impl Iterator for WindowBatches<'_> {
    type Item = Result<MtlBatch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let target = self.batch_size.min(self.remaining);
        let mut batch = BatchRows::new(self.widths, target);
        while batch.len() < target {
            let exhausted = self.current.as_ref().is_none_or(|(_, rows)| self.cursor == rows.len());
            if exhausted {
                match self.reader.recv() {
                    Ok(Ok(window)) => (self.current, self.cursor) = (Some(window), 0),
                    Ok(Err(e)) => {
                        self.remaining = 0;
                        return Some(Err(e));
                    }
                    Err(_) => {
                        self.remaining = 0;
                        return Some(Err(DataError::Invalid("the chunk reader stopped before the split's end".into())));
                    }
                }
                continue;
            }
            let (table, rows) = self.current.as_ref().expect("a window");
            let take = (target - batch.len()).min(rows.len() - self.cursor);
            for &r in &rows[self.cursor..self.cursor + take] {
                batch.push(table, r as usize);
            }
            self.cursor += take;
        }
        self.remaining -= target;
        Some(Ok(batch.finish(self.device)))
    }
}

impl SplitRows for ChunkedSplit {
    fn n_rows(&self) -> usize {
        self.n_rows
    }

    fn stream<'a>(
        &'a self,
        widths: RowWidths,
        batch_size: usize,
        order: BatchOrder,
        device: &'a Device,
    ) -> Box<dyn Iterator<Item = Result<MtlBatch, DataError>> + 'a> {
        assert!(batch_size > 0, "batch_size must be positive");
        assert_eq!(widths, self.widths, "the schema's widths are the chunks' widths");
        Box::new(WindowBatches {
            reader: self.reader(order),
            current: None,
            cursor: 0,
            remaining: self.n_rows,
            batch_size,
            widths,
            device,
        })
    }

    fn group_ids(&self) -> Result<Vec<u32>, DataError> {
        let mut groups = Vec::new();
        if !self.grouped {
            return Ok(groups);
        }
        for chunk in &self.chunks {
            groups.extend(read_chunk(&chunk.file, self.widths)?.groups);
        }
        Ok(groups)
    }

    fn in_memory(&self) -> Option<&EncodedTable> {
        None
    }

    fn label_means(&self, n_tasks: usize) -> Result<Vec<f64>, DataError> {
        let mut sums = vec![(0.0, 0); n_tasks];
        for chunk in &self.chunks {
            crate::split_rows::label_sums(&read_chunk(&chunk.file, self.widths)?, n_tasks, &mut sums);
        }
        Ok(crate::split_rows::label_means_of(&sums))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::chunk_file::write_chunk;

    const WIDTHS: RowWidths = RowWidths { categorical: 1, multi: 0, dense: 1, text: 0, tasks: 1 };

    /// A split of `sizes` chunks whose row `i` (across chunks) holds `i` in every column.
    fn split(dir: &std::path::Path, sizes: &[usize], window: usize) -> ChunkedSplit {
        let mut next = 0u32;
        let chunks = sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| {
                let ids: Vec<u32> = (next..next + n as u32).collect();
                next += n as u32;
                let table = EncodedTable {
                    n_rows: n,
                    categorical: ids.clone(),
                    dense: ids.iter().map(|&i| i as f32).collect(),
                    labels: ids.iter().map(|&i| (i % 2) as f32).collect(),
                    groups: ids.iter().map(|&i| i / 10).collect(),
                    ..Default::default()
                };
                let file = dir.join(format!("train-{k:05}.chunk"));
                write_chunk(&file, &table, WIDTHS).unwrap();
                ChunkRef { file, rows: n }
            })
            .collect();
        ChunkedSplit::new(chunks, WIDTHS, window, true)
    }

    fn rows_of(split: &ChunkedSplit, batch: usize, order: BatchOrder) -> (Vec<usize>, Vec<u32>) {
        let device = Device::flex();
        let mut sizes = Vec::new();
        let mut rows = Vec::new();
        for b in split.stream(WIDTHS, batch, order, &device) {
            let b = b.unwrap();
            sizes.push(b.size);
            let ids = b.features.categorical.unwrap().into_data().try_into_vec_as::<i64>().unwrap();
            let dense = b.features.dense.unwrap().into_data().try_into_vec::<f32>().unwrap();
            for (id, d) in ids.iter().zip(&dense) {
                assert_eq!(*id as f32, *d, "a row's columns stay together");
            }
            rows.extend(ids.iter().map(|&i| i as u32));
        }
        (sizes, rows)
    }

    /// A shuffled epoch visits every row exactly once, in full batches but the last (batches span
    /// windows); the same seed gives the same order, another seed another; the order is not file
    /// order; sequential order is file order.
    #[test]
    fn a_shuffled_streaming_epoch_visits_every_row_once_in_a_seeded_order() {
        let dir = tempfile::tempdir().unwrap();
        let split = split(dir.path(), &[40, 33, 40, 17, 40, 25], 2);
        assert_eq!(split.n_rows, 195);
        let (sizes, a) = rows_of(&split, 16, BatchOrder::Shuffled(7));
        assert_eq!(sizes.len(), 195usize.div_ceil(16));
        assert!(sizes[..sizes.len() - 1].iter().all(|&s| s == 16) && *sizes.last().unwrap() == 195 % 16);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..195).collect::<Vec<u32>>(), "every row once");
        assert_eq!(rows_of(&split, 16, BatchOrder::Shuffled(7)).1, a, "same seed, same order");
        let b = rows_of(&split, 16, BatchOrder::Shuffled(8)).1;
        assert_ne!(b, a, "another seed, another order");
        assert_ne!(a, sorted, "shuffled");
        // rows are mixed within windows: the first 30 rows (fewer than any two chunks hold) come
        // from the first window's two chunks, both
        let first_chunk = |r: u32| {
            split
                .chunks
                .iter()
                .scan(0u32, |s, c| {
                    *s += c.rows as u32;
                    Some(*s)
                })
                .position(|end| r < end)
        };
        let mut chunks_seen: Vec<usize> = a[..30].iter().map(|&r| first_chunk(r).unwrap()).collect();
        chunks_seen.sort_unstable();
        chunks_seen.dedup();
        assert!(chunks_seen.len() == 2, "one window of two chunks first: {chunks_seen:?}");
        let (_, sequential) = rows_of(&split, 50, BatchOrder::Sequential);
        assert_eq!(sequential, sorted);
        assert_eq!(split.read_all().unwrap().categorical, sorted);
        assert_eq!(split.group_ids().unwrap(), sorted.iter().map(|i| i / 10).collect::<Vec<_>>());
    }

    /// A damaged chunk met mid-epoch is an error naming it (after the batches before it), and the
    /// stream ends there; a chunk whose row count disagrees with the manifest too.
    #[test]
    fn a_damaged_chunk_mid_epoch_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut split = split(dir.path(), &[20, 20, 20], 1);
        let damaged = split.chunks[2].file.clone();
        let mut bytes = std::fs::read(&damaged).unwrap();
        bytes.truncate(bytes.len() - 9);
        std::fs::write(&damaged, bytes).unwrap();
        let device = Device::flex();
        let results: Vec<_> = split.stream(WIDTHS, 10, BatchOrder::Sequential, &device).collect();
        assert_eq!(results.len(), 5, "four good batches, then the error");
        assert!(results[..4].iter().all(Result::is_ok));
        let err = results[4].as_ref().unwrap_err().to_string();
        assert!(err.contains(&damaged.display().to_string()), "{err}");
        split.chunks[1].rows = 21;
        let err = split.read_all().unwrap_err().to_string();
        assert!(err.contains("train-00001.chunk") && err.contains("manifest"), "{err}");
    }
}
