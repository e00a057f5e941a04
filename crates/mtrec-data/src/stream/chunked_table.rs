//! Out-of-core encoding: a table too large for memory is encoded into chunk files, and training
//! streams them ([`ChunkedSplit`]).
//!
//! Two passes over the files, each holding one chunk of rows at a time: the first fits the
//! preprocessing on the training rows (vocabularies with their counts, dense sums — the same
//! values an in-memory load fits), the second encodes each chunk of rows and appends every row to
//! its split's chunk files. A `manifest.json` written last (atomically) lists the chunks, schema,
//! preprocessing and statistics; its presence marks a complete encoding, which later runs open
//! instead of encoding again. Memory stays that of a chunk plus the vocabularies, whatever the
//! number of rows. The splits' rows are those of [`TableSource::load`], in the same order.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    ChunkRef, ChunkedSplit, DataError, EncodedTable, FolderLock, MtlDataset, Preprocessing, RowWidths, Schema,
    SplitName, SplitStats, TableSource, TaskKind, TextEmbedderFactory,
    folder_lock::unique_temporary,
    stream::chunk_file::write_chunk,
    table::dense_fit::DenseFit,
    table::{scan::Scan, source::check_split_stats},
};

/// The manifest's file name in a chunk folder.
pub const MANIFEST_FILE: &str = "manifest.json";

/// How a table is streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// Rows per chunk file (and per encoding step).
    pub chunk_rows: usize,
    /// Chunks a training epoch shuffles together.
    pub window: usize,
    /// The main binary tasks are a funnel (checked on every row, as [`MtlDataset::into_funnel`]).
    pub funnel: bool,
    /// Turn the main binary tasks into a funnel (as [`MtlDataset::into_cascade`]).
    pub cascade: bool,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self { chunk_rows: 1 << 18, window: 4, funnel: false, cascade: false }
    }
}

/// A dataset whose splits are chunk files on disk.
pub type ChunkedDataset = MtlDataset<ChunkedSplit>;

/// A table encoded into chunk files: the dataset, its preprocessing, statistics per split.
#[derive(Debug, Clone)]
pub struct ChunkedTable {
    /// The dataset.
    pub dataset: ChunkedDataset,
    /// The preprocessing the splits were encoded with.
    pub preprocessing: Preprocessing,
    /// Train, valid, test statistics.
    pub stats: [SplitStats; 3],
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    version: u32,
    name: String,
    schema: Schema,
    preprocessing: Preprocessing,
    stats: [SplitStats; 3],
    chunk_rows: usize,
    /// Per split, its chunks (file names relative to the folder).
    splits: [Vec<ChunkRef>; 3],
}

/// One split's chunk files being written, and its statistics.
struct SplitWriter {
    split: SplitName,
    dir: PathBuf,
    chunk_rows: usize,
    pending: EncodedTable,
    chunks: Vec<ChunkRef>,
    rows: usize,
    /// Per task: label sums or class counts, and labelled rows.
    labels: Option<crate::label_tally::LabelTally>,
    groups: HashSet<u32>,
}

impl SplitWriter {
    fn new(split: SplitName, dir: &Path, chunk_rows: usize) -> Self {
        Self {
            split,
            dir: dir.to_path_buf(),
            chunk_rows,
            pending: EncodedTable::default(),
            chunks: Vec::new(),
            rows: 0,
            labels: None,
            groups: HashSet::new(),
        }
    }

    /// Appends encoded rows; writes every full chunk.
    fn append(&mut self, table: EncodedTable, schema: &Schema, widths: RowWidths) -> Result<(), DataError> {
        self.labels.get_or_insert_with(|| crate::label_tally::LabelTally::new(&schema.tasks)).add(&table.labels);
        self.groups.extend(table.groups.iter().copied().filter(|&g| g != crate::NO_GROUP));
        self.rows += table.n_rows;
        self.pending.append(table);
        while self.pending.n_rows >= self.chunk_rows {
            let rest = split_off(&mut self.pending, self.chunk_rows, widths);
            let full = std::mem::replace(&mut self.pending, rest);
            self.write(full, widths)?;
        }
        Ok(())
    }

    fn write(&mut self, table: EncodedTable, widths: RowWidths) -> Result<(), DataError> {
        let name = format!("{}-{:05}.chunk", self.split.as_str(), self.chunks.len());
        write_chunk(&self.dir.join(&name), &table, widths)?;
        self.chunks.push(ChunkRef { file: PathBuf::from(name), rows: table.n_rows });
        Ok(())
    }

    /// Writes the last, partial chunk.
    fn finish(&mut self, widths: RowWidths) -> Result<(), DataError> {
        if self.pending.n_rows > 0 {
            let last = std::mem::take(&mut self.pending);
            self.write(last, widths)?;
        }
        Ok(())
    }

    fn stats(&self, schema: &Schema, nulls: &[(String, usize)]) -> SplitStats {
        let tally = self.labels.clone().unwrap_or_else(|| crate::label_tally::LabelTally::new(&schema.tasks));
        SplitStats {
            rows: self.rows,
            nulls: nulls.to_vec(),
            labels: schema.tasks.iter().map(|t| t.name.clone()).zip(tally.rates()).collect(),
            labelled: tally.partial(&schema.tasks),
            groups: self.groups.len(),
        }
    }
}

/// Splits `table` after `rows` rows: `table` keeps the first, the rest is returned.
fn split_off(table: &mut EncodedTable, rows: usize, w: RowWidths) -> EncodedTable {
    let rest = EncodedTable {
        n_rows: table.n_rows - rows,
        categorical: table.categorical.split_off(rows * w.categorical),
        multi: table.multi.split_off(rows * w.multi),
        dense: table.dense.split_off(rows * w.dense),
        text: table.text.split_off(rows * w.text),
        labels: table.labels.split_off(rows * w.tasks),
        groups: if table.groups.is_empty() { vec![] } else { table.groups.split_off(rows) },
    };
    table.n_rows = rows;
    rest
}

/// The main (non-adversarial) tasks, checked binary for a funnel or cascade.
fn funnel_steps(schema: &Schema, key: &str) -> Result<Vec<usize>, DataError> {
    let main: Vec<usize> = (0..schema.n_tasks()).filter(|&t| !schema.tasks[t].adversarial).collect();
    match main.iter().find(|&&t| schema.tasks[t].kind != TaskKind::Binary) {
        Some(&t) => {
            Err(DataError::Invalid(format!("data.{key} needs binary tasks; `{}` is not", schema.tasks[t].name)))
        }
        None => Ok(main),
    }
}

impl TableSource {
    /// Encodes the table into chunk files in `dir` (read back by [`open_chunks`](crate::open_chunks)), with `fitted`
    /// when given; `progress` hears the rows read so far in each pass. The folder is locked while
    /// it is written ([`FolderLock`]): a second encoder into it waits.
    pub fn write_chunks(
        &self,
        dir: &Path,
        fitted: Option<&Preprocessing>,
        options: StreamOptions,
        text: &mut TextEmbedderFactory,
        progress: &mut dyn FnMut(&str, u64),
    ) -> Result<ChunkedTable, DataError> {
        let lock = FolderLock::exclusive(dir)?;
        self.write_chunks_locked(&lock, fitted, options, text, progress)
    }

    /// [`Self::write_chunks`] into the folder of a lock the caller holds (to decide under the
    /// same lock whether an earlier encoding serves).
    pub fn write_chunks_locked(
        &self,
        lock: &FolderLock,
        fitted: Option<&Preprocessing>,
        options: StreamOptions,
        text: &mut TextEmbedderFactory,
        progress: &mut dyn FnMut(&str, u64),
    ) -> Result<ChunkedTable, DataError> {
        let dir = lock.dir();
        self.validate()?;
        if options.chunk_rows == 0 || options.window == 0 {
            return Err(DataError::Invalid("data.chunk_rows and data.shuffle_window must be positive".into()));
        }
        let io = |source| DataError::Io { path: dir.to_path_buf(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        // the manifest marks a complete encoding: gone until this one completes; an earlier
        // encoding's chunks go too
        let _ = std::fs::remove_file(dir.join(MANIFEST_FILE));
        for entry in std::fs::read_dir(dir).map_err(io)?.flatten() {
            if entry.path().extension().is_some_and(|e| e == "chunk" || e == "partial" || e == "tmp") {
                std::fs::remove_file(entry.path()).map_err(io)?;
            }
        }
        let chunk_rows = options.chunk_rows;
        let preprocessing = match fitted {
            Some(p) => p.clone(),
            None => {
                // pass 1: vocabularies and dense sums over the training rows, a chunk at a time
                let mut scan = Scan::new(self);
                let mut fits = vec![DenseFit::default(); self.columns.len()];
                let mut read = 0u64;
                self.scan(&mut scan, &mut |scan| {
                    if scan.pending() >= chunk_rows {
                        read += scan.pending() as u64;
                        progress("fit", read);
                        scan.fit_dense_rows(&mut fits);
                        scan.clear_rows();
                    }
                    Ok(())
                })?;
                scan.fit_dense_rows(&mut fits);
                self.fit(scan.raws(), &fits, text)?
            }
        };
        // pass 2: encode a chunk of rows at a time into each split's chunk files
        let mut embedders = self.open_embedders(&preprocessing, text)?;
        let mut writers = SplitName::ALL.map(|s| SplitWriter::new(s, dir, chunk_rows));
        let mut schema: Option<Schema> = None;
        let mut read = 0u64;
        let mut flush = |scan: &mut Scan, schema: &mut Option<Schema>| -> Result<(), DataError> {
            read += scan.pending() as u64;
            progress("encode", read);
            let (encoded_schema, tables) = self.encode_rows(scan.take_rows(), &preprocessing, &mut embedders)?;
            let widths = encoded_schema.widths();
            let n_tasks = encoded_schema.n_tasks();
            let steps = match (options.funnel, options.cascade) {
                (false, false) => None,
                (_, true) => Some(funnel_steps(&encoded_schema, "cascade")?),
                (true, false) => Some(funnel_steps(&encoded_schema, "funnel")?),
            };
            for (mut table, writer) in tables.into_iter().zip(writers.iter_mut()) {
                if let Some(steps) = &steps {
                    if options.cascade {
                        table.cascade_labels(steps, n_tasks);
                    } else if let Some(v) = table.funnel_violation(steps, n_tasks) {
                        return Err(DataError::Invalid(format!(
                            "data.funnel: in the {} split, task `{}` is 1 where `{}` is 0 (first: row {})",
                            writer.split.as_str(),
                            encoded_schema.tasks[v.task].name,
                            encoded_schema.tasks[v.previous].name,
                            writer.rows + v.first_row
                        )));
                    }
                }
                writer.append(table, &encoded_schema, widths)?;
            }
            *schema = Some(encoded_schema);
            Ok(())
        };
        let mut scan = Scan::new(self);
        self.scan(&mut scan, &mut |scan| if scan.pending() >= chunk_rows { flush(scan, &mut schema) } else { Ok(()) })?;
        if scan.pending() > 0 || schema.is_none() {
            flush(&mut scan, &mut schema)?;
        }
        scan.report_dropped(self);
        let mut schema = schema.expect("encoded at least once");
        let widths = schema.widths();
        for writer in &mut writers {
            writer.finish(widths)?;
        }
        let mut name = self.name.clone();
        if options.cascade {
            let steps = funnel_steps(&schema, "cascade")?;
            schema.cascade_names(&steps);
            name = format!("{name}-cascade");
        }
        schema.funnel |= options.funnel || options.cascade;
        let stats = std::array::from_fn(|s| {
            let nulls: Vec<(String, usize)> =
                self.columns.iter().zip(&scan.nulls).map(|(c, n)| (c.name.clone(), n[s])).collect();
            writers[s].stats(&schema, &nulls)
        });
        check_split_stats(&stats, &schema, self.score_only)?;
        let manifest =
            Manifest { version: 1, name, schema, preprocessing, stats, chunk_rows, splits: writers.map(|w| w.chunks) };
        let json = serde_json::to_vec_pretty(&manifest).expect("the manifest serialises");
        let partial = unique_temporary(&dir.join(MANIFEST_FILE));
        std::fs::write(&partial, json).map_err(io)?;
        std::fs::rename(&partial, dir.join(MANIFEST_FILE)).map_err(io)?;
        open_chunks(dir, options.window)
    }
}

/// Opens the chunk folder `dir` written by [`TableSource::write_chunks`]; a missing or damaged
/// manifest is an error naming it (the chunks themselves are checked as they are read).
pub fn open_chunks(dir: &Path, window: usize) -> Result<ChunkedTable, DataError> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = std::fs::read(&path).map_err(|source| DataError::Io { path: path.clone(), source })?;
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| DataError::Invalid(format!("{}: not a chunk manifest: {e}", path.display())))?;
    let widths = manifest.schema.widths();
    let mut grouped = manifest.stats.iter().map(|s| s.groups > 0);
    let [train, valid, test] = manifest.splits.map(|chunks| {
        let chunks = chunks.into_iter().map(|c| ChunkRef { file: dir.join(c.file), rows: c.rows }).collect();
        ChunkedSplit::new(chunks, widths, window, grouped.next().expect("three splits"))
    });
    let dataset = MtlDataset { name: manifest.name, schema: manifest.schema, train, valid, test };
    Ok(ChunkedTable { dataset, preprocessing: manifest.preprocessing, stats: manifest.stats })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ColumnKind, ColumnSpec, SplitRows, TableFormat, TextEmbedder,
        table::source::tests::{FakeEncoder, source},
    };

    fn fake_text(_: &Path) -> Result<Box<dyn TextEmbedder>, String> {
        Ok(Box::new(FakeEncoder))
    }

    /// Streamed in chunks of 7 rows, the fixture (categorical, hashed, bag, dense, text columns,
    /// groups; binary, multiclass and regression tasks; its 7 missing ages filled with the
    /// training median) encodes to exactly the in-memory splits: same preprocessing, schema,
    /// statistics, rows in the same order. The manifest reopens.
    #[test]
    fn streamed_splits_equal_the_in_memory_load() {
        let mut s = source("table.csv");
        let age = s.columns.iter_mut().find(|c| c.name == "age").unwrap();
        let ColumnKind::Dense { fill, .. } = &mut age.kind else { panic!("age is dense") };
        *fill = Some(crate::DenseFill::Median);
        s.columns.push(ColumnSpec {
            name: "review".into(),
            kind: ColumnKind::Text { template: Some("{title} ({user})".into()), encoder: "enc".into() },
        });
        let memory = s.load(None, &mut fake_text).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let options = StreamOptions { chunk_rows: 7, window: 2, ..Default::default() };
        let mut passes = Vec::new();
        let streamed = s
            .write_chunks(dir.path(), None, options, &mut fake_text, &mut |pass, _| passes.push(pass.to_string()))
            .unwrap();
        assert!(passes.contains(&"fit".to_string()) && passes.contains(&"encode".to_string()));
        assert_eq!(streamed.preprocessing, memory.preprocessing);
        assert_eq!(streamed.dataset.schema, memory.dataset.schema);
        let d = &streamed.dataset;
        for (chunked, table) in
            [(&d.train, &memory.dataset.train), (&d.valid, &memory.dataset.valid), (&d.test, &memory.dataset.test)]
        {
            assert_eq!(&chunked.read_all().unwrap(), table);
            assert!(chunked.chunks.iter().all(|c| c.rows <= 7));
            assert_eq!(chunked.n_rows(), table.n_rows);
        }
        for (a, b) in streamed.stats.iter().zip(&memory.stats) {
            assert_eq!((a.rows, &a.nulls, a.groups), (b.rows, &b.nulls, b.groups));
            for ((ta, ra), (tb, rb)) in a.labels.iter().zip(&b.labels) {
                assert_eq!(ta, tb);
                assert!(ra.iter().zip(rb).all(|(x, y)| (x - y).abs() < 1e-9), "{ta}: {ra:?} vs {rb:?}");
            }
        }
        let reopened = open_chunks(dir.path(), 2).unwrap();
        assert_eq!(reopened.dataset.train, d.train);
        assert_eq!(reopened.dataset.valid.group_ids().unwrap(), memory.dataset.valid.groups);
        // applying a saved preprocessing streams the same rows
        let again = tempfile::tempdir().unwrap();
        let applied =
            s.write_chunks(again.path(), Some(&memory.preprocessing), options, &mut fake_text, &mut |_, _| {}).unwrap();
        assert_eq!(applied.dataset.valid.read_all().unwrap(), memory.dataset.valid);
        std::fs::write(dir.path().join(MANIFEST_FILE), b"{").unwrap();
        let err = open_chunks(dir.path(), 2).unwrap_err().to_string();
        assert!(err.contains(MANIFEST_FILE), "{err}");
    }

    /// Two encoders into one chunk folder at once (two runs sharing `MTREC_CACHE_DIR`, two ranks)
    /// take turns: both succeed and the folder holds one complete encoding equal to the in-memory
    /// load (unlocked, each deleted the other's chunk files mid-write).
    #[test]
    fn concurrent_encoders_into_one_folder_take_turns() {
        let s = source("table.csv");
        let memory = s.load(None, &mut fake_text).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let options = StreamOptions { chunk_rows: 3, window: 2, ..Default::default() };
        let results: Vec<Result<ChunkedTable, DataError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    scope.spawn(|| {
                        s.write_chunks(dir.path(), None, options, &mut fake_text, &mut |_, _| {
                            std::thread::sleep(std::time::Duration::from_millis(1))
                        })
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in results {
            let table = r.unwrap();
            assert_eq!(table.dataset.train.read_all().unwrap(), memory.dataset.train);
        }
        let reopened = open_chunks(dir.path(), 2).unwrap();
        assert_eq!(reopened.dataset.test.read_all().unwrap(), memory.dataset.test);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "tmp" || x == "partial"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    /// An encoder waits for the folder's lock: while another holder has it, nothing is read or
    /// written (no progress in 300 ms); once it is let go, the encoding completes. (The test above
    /// can pass without the lock when the threads happen not to overlap; this one cannot.)
    #[test]
    fn an_encoder_waits_while_the_folder_is_locked() {
        let s = source("table.csv");
        let dir = tempfile::tempdir().unwrap();
        let held = FolderLock::exclusive(dir.path()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            let encoder = scope.spawn(|| {
                let options = StreamOptions { chunk_rows: 3, window: 2, ..Default::default() };
                s.write_chunks(dir.path(), None, options, &mut fake_text, &mut |_, _| {
                    let _ = tx.send(());
                })
            });
            let waited = rx.recv_timeout(std::time::Duration::from_millis(300));
            assert!(waited.is_err(), "the encoder ran while the folder was locked");
            drop(held);
            encoder.join().unwrap().unwrap();
        });
        assert!(dir.path().join(MANIFEST_FILE).exists());
    }

    /// A funnel streams as `into_funnel` loads it; a cascade as `into_cascade`; a row breaking the
    /// funnel is an error naming the split and the row.
    #[test]
    fn funnels_and_cascades_stream_as_they_load() {
        let data = tempfile::tempdir().unwrap();
        let generator = crate::SyntheticCtrConfig { rows: 3_000, users: 200, items: 100, ..Default::default() };
        crate::write_synthetic_ctr(generator, data.path(), TableFormat::Csv, |_| {}).unwrap();
        let toml = format!(
            r#"
            name = "ctr"
            dir = {dir:?}
            files = {{ Paths = ["synthetic_ctr.csv"] }}
            csv = {{}}
            split = {{ rule = "random", valid = 0.2, test = 0.2, seed = 3 }}
            [[columns]]
            name = "user_id"
            kind = "categorical"
            [[columns]]
            name = "dense_0"
            kind = "dense"
            [[tasks]]
            name = "click"
            kind = "binary"
            positive = [1]
            [[tasks]]
            name = "purchase"
            kind = "binary"
            positive = [1]
            "#,
            dir = data.path().display().to_string()
        );
        let s: TableSource = toml::from_str(&toml).unwrap();
        let memory = s.load(None, &mut fake_text).unwrap().dataset;
        for cascade in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let options = StreamOptions { chunk_rows: 500, window: 3, funnel: !cascade, cascade };
            let streamed = s.write_chunks(dir.path(), None, options, &mut fake_text, &mut |_, _| {}).unwrap().dataset;
            let expected = if cascade { memory.clone().into_cascade() } else { memory.clone().into_funnel() }.unwrap();
            assert_eq!(streamed.schema, expected.schema);
            assert_eq!(streamed.name, expected.name);
            assert_eq!(streamed.test.read_all().unwrap(), expected.test);
            assert!(!streamed.test.grouped && streamed.test.group_ids().unwrap().is_empty(), "no group_by");
        }
        // purchase without click: swap the tasks' columns
        let mut broken = s.clone();
        broken.tasks.swap(0, 1);
        let err = broken
            .write_chunks(
                data.path().join("x").as_path(),
                None,
                StreamOptions { funnel: true, ..Default::default() },
                &mut fake_text,
                &mut |_, _| {},
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("data.funnel") && err.contains("split") && err.contains("row"), "{err}");
    }
}
