//! The frozen-prefix store: the hidden states a text leaves after the frozen bottom layers of a
//! fine-tuned encoder, computed once per distinct text and read back by offset.
//!
//! When only the top `k` layers of the encoder train (`finetune = "top"`), the layers below never
//! change, so their output for a text is the same at every step: storing it turns a training step
//! into `k` layers of work. Records are keyed by the sha256 of the text's token ids; a store lives in
//! a folder per frozen prefix (weights, config, tokenizer, number of frozen layers, maximum length
//! and element type, see [`crate::PrefixCache`]). A store's file, `prefix-1.bin`, holds the magic
//! `MTRECPF1`, the hidden width and the element type, then records of
//! `(sha256, token count n, n × hidden values as f32 or f16, the first 8 bytes of the record's MD5)`
//! — only the text's own tokens, never its padding. Opening reads each record's head and skips its
//! values (the index costs 48 bytes a text); values are read by offset when asked for and checked
//! against their checksum: a damaged record is computed again, never used. Appends happen under an
//! exclusive lock on the file, after indexing what other writers appended, and cut off a record
//! that a killed writer left short. Without a folder the store keeps its records in memory.

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io::{BufReader, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use burn::tensor::f16;
use md5::Md5;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::TextError;

const MAGIC: &[u8; 8] = b"MTRECPF1";
/// Magic, hidden width (u32), element type (u32: 4 = f32, 2 = f16).
const HEADER: u64 = 16;
/// The store's file in its folder.
pub const PREFIX_FILE: &str = "prefix-1.bin";

/// How the frozen-prefix store keeps hidden states (`model.text.prefix_cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PrefixCacheMode {
    /// No store: every step runs the frozen layers too (with their dropout, as PyTorch does).
    Off,
    /// 4 bytes a value: the cached forward equals the full one within float rounding.
    #[default]
    F32,
    /// 2 bytes a value: half the disk, states rounded to f16 (about 3 significant digits).
    F16,
}

impl PrefixCacheMode {
    /// Bytes of one stored value (`0` when off).
    pub fn bytes(self) -> usize {
        match self {
            Self::Off => 0,
            Self::F32 => 4,
            Self::F16 => 2,
        }
    }
}

/// The sha256 of a text's token ids (little-endian u32 each): its key in the store.
pub fn token_key(ids: &[u32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    ids.iter().for_each(|id| hasher.update(id.to_le_bytes()));
    hasher.finalize().into()
}

/// Hidden states of frozen prefixes, by token key (see the module docs of `prefix_store.rs`).
pub struct PrefixStore {
    path: Option<PathBuf>,
    hidden: usize,
    elt: usize,
    /// Where each record starts, and its token count.
    index: HashMap<[u8; 32], (u64, u32)>,
    /// Where the indexed part of the file ends (the next record to index starts there).
    indexed_end: u64,
    /// The file, open for reading by offset.
    reader: Option<File>,
    /// The records of a store without a folder.
    memory: HashMap<[u8; 32], Vec<f32>>,
}

impl std::fmt::Debug for PrefixStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixStore").field("path", &self.path).field("texts", &self.len()).finish()
    }
}

impl PrefixStore {
    /// The store in folder `dir` (`None`: in memory) of states `hidden` wide, kept as `mode` says
    /// (`f32` or `f16`).
    pub fn open(dir: Option<&Path>, hidden: usize, mode: PrefixCacheMode) -> Self {
        assert!(mode != PrefixCacheMode::Off, "a store keeps values as f32 or f16");
        let path = dir.map(|d| d.join(PREFIX_FILE));
        let mut store = Self {
            path,
            hidden,
            elt: mode.bytes(),
            index: HashMap::new(),
            indexed_end: HEADER,
            reader: None,
            memory: HashMap::new(),
        };
        if let Some(path) = store.path.clone().filter(|p| p.exists()) {
            match File::open(&path).map_err(|e| e.to_string()).and_then(|mut f| store.index_from(&mut f)) {
                Ok(()) => store.reader = File::open(&path).ok(),
                Err(reason) => {
                    tracing::warn!("ignoring the prefix store {}: {reason}", path.display());
                    store.index.clear();
                }
            }
        }
        store
    }

    fn header(&self) -> [u8; HEADER as usize] {
        let mut h = [0u8; HEADER as usize];
        h[..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&(self.hidden as u32).to_le_bytes());
        h[12..].copy_from_slice(&(self.elt as u32).to_le_bytes());
        h
    }

    fn record_len(&self, n: u32) -> u64 {
        36 + n as u64 * self.hidden as u64 * self.elt as u64 + 8
    }

    /// Indexes the records from `self.indexed_end` to the last whole one (checks the header when
    /// starting from it); returns with `indexed_end` after that record.
    fn index_from(&mut self, file: &mut File) -> Result<(), String> {
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        if self.indexed_end == HEADER {
            let mut header = [0u8; HEADER as usize];
            file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
            file.read_exact(&mut header).map_err(|_| "shorter than its header".to_string())?;
            if header != self.header() {
                return Err(format!(
                    "not a prefix store of this layout, width {} and {}-byte values",
                    self.hidden, self.elt
                ));
            }
        }
        let mut reader = BufReader::with_capacity(1 << 16, &mut *file);
        reader.seek(SeekFrom::Start(self.indexed_end)).map_err(|e| e.to_string())?;
        let mut head = [0u8; 36];
        let mut at = self.indexed_end;
        while at + 36 <= len && reader.read_exact(&mut head).is_ok() {
            let n = u32::from_le_bytes(head[32..].try_into().expect("4 bytes"));
            let end = at + self.record_len(n);
            if end > len {
                break; // a record cut short by a killed writer
            }
            self.index.insert(head[..32].try_into().expect("32 bytes"), (at, n));
            reader.seek_relative((end - at - 36) as i64).map_err(|e| e.to_string())?;
            at = end;
        }
        self.indexed_end = at;
        Ok(())
    }

    /// Texts stored.
    pub fn len(&self) -> usize {
        self.index.len() + self.memory.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The states of the text with token key `key`: `n × hidden` values, token by token; `None`
    /// when not stored, or when the record fails its checksum (then it is dropped from the index
    /// with a warning, to be computed again).
    pub fn get(&mut self, key: &[u8; 32]) -> Option<Vec<f32>> {
        if let Some(v) = self.memory.get(key) {
            return Some(v.clone());
        }
        let (offset, n) = *self.index.get(key)?;
        let mut record = vec![0u8; self.record_len(n) as usize];
        let read = self.reader.as_mut().and_then(|f| {
            f.seek(SeekFrom::Start(offset)).ok()?;
            f.read_exact(&mut record).ok()
        });
        let (body, sum) = record.split_at(record.len() - 8);
        if read.is_none() || Md5::digest(body)[..8] != *sum || body[..32] != key[..] {
            tracing::warn!(
                "{}: a damaged prefix record at byte {offset} is computed again",
                self.path.as_deref().unwrap_or(Path::new("?")).display()
            );
            self.index.remove(key);
            return None;
        }
        let values = &body[36..];
        Some(match self.elt {
            4 => values.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect(),
            _ => values.chunks_exact(2).map(|c| f16::from_le_bytes(c.try_into().expect("2 bytes")).to_f32()).collect(),
        })
    }

    /// `values` as [`Self::get`] would give them back once stored: rounded to half precision by
    /// an f16 store, unchanged by an f32 one. States computed on a miss go through this before
    /// they are used, so that a text's states do not change between its first and later reads.
    pub fn as_stored(&self, values: Vec<f32>) -> Vec<f32> {
        if self.elt == 2 { values.iter().map(|&v| f16::from_f32(v).to_f32()).collect() } else { values }
    }

    /// Stores texts' states (`(key, n × hidden values)` each); with a folder, appended to the file
    /// under an exclusive lock.
    pub fn put(&mut self, entries: Vec<([u8; 32], Vec<f32>)>) -> Result<(), TextError> {
        if let Some(bad) = entries.iter().find(|(_, v)| v.is_empty() || v.len() % self.hidden != 0) {
            return Err(TextError::Corrupt {
                path: self.path.clone().unwrap_or_default(),
                reason: format!(
                    "prefix states of {} values are not whole tokens of width {}",
                    bad.1.len(),
                    self.hidden
                ),
            });
        }
        let Some(path) = self.path.clone() else {
            for (key, values) in entries {
                // an f16 store rounds in memory as on disk
                let values = self.as_stored(values);
                self.memory.insert(key, values);
            }
            return Ok(());
        };
        if entries.is_empty() {
            return Ok(());
        }
        let io = |e: std::io::Error| TextError::Corrupt { path: path.clone(), reason: format!("writing: {e}") };
        std::fs::create_dir_all(path.parent().expect("a file has a folder")).map_err(io)?;
        let mut file =
            OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).map_err(io)?;
        file.lock().map_err(io)?;
        // under the lock: index what other writers appended, start a file of another layout
        // afresh, cut off a torn record, then append after the last whole one
        let fresh = file.metadata().map_err(io)?.len() < HEADER || self.index_from(&mut file).is_err();
        if fresh {
            file.set_len(0).map_err(io)?;
            file.seek(SeekFrom::Start(0)).map_err(io)?;
            file.write_all(&self.header()).map_err(io)?;
            self.index.clear();
            self.indexed_end = HEADER;
        }
        file.set_len(self.indexed_end).map_err(io)?;
        file.seek(SeekFrom::Start(self.indexed_end)).map_err(io)?;
        let mut bytes = Vec::new();
        let mut at = self.indexed_end;
        for (key, values) in entries {
            if self.index.contains_key(&key) {
                continue;
            }
            let n = (values.len() / self.hidden) as u32;
            let start = bytes.len();
            bytes.extend_from_slice(&key);
            bytes.extend_from_slice(&n.to_le_bytes());
            if self.elt == 4 {
                values.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
            } else {
                values.iter().for_each(|&v| bytes.extend_from_slice(&f16::from_f32(v).to_le_bytes()));
            }
            let sum = Md5::digest(&bytes[start..]);
            bytes.extend_from_slice(&sum[..8]);
            self.index.insert(key, (at, n));
            at += self.record_len(n);
        }
        file.write_all(&bytes).map_err(io)?;
        file.unlock().map_err(io)?;
        self.indexed_end = at;
        self.reader = Some(File::open(&path).map_err(io)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(n: usize, hidden: usize, seed: f32) -> Vec<f32> {
        (0..n * hidden).map(|i| seed + i as f32 * 0.125).collect()
    }

    /// Records survive a reopen; f16 rounds to half precision; another width or element type
    /// does not read the file; a damaged record is dropped, the rest still serve.
    #[test]
    fn records_persist_and_damage_is_recomputed() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (token_key(&[101, 7, 102]), token_key(&[101, 102]));
        let mut store = PrefixStore::open(Some(dir.path()), 3, PrefixCacheMode::F32);
        store.put(vec![(a, states(3, 3, 1.0)), (b, states(2, 3, -4.0))]).unwrap();
        let mut again = PrefixStore::open(Some(dir.path()), 3, PrefixCacheMode::F32);
        assert_eq!(again.len(), 2);
        assert_eq!(again.get(&a), Some(states(3, 3, 1.0)));
        assert_eq!(again.get(&b), Some(states(2, 3, -4.0)));
        assert_eq!(again.get(&token_key(&[101, 8, 102])), None);
        assert!(PrefixStore::open(Some(dir.path()), 4, PrefixCacheMode::F32).is_empty(), "another width");
        assert!(PrefixStore::open(Some(dir.path()), 3, PrefixCacheMode::F16).is_empty(), "another element type");
        let file = dir.path().join(PREFIX_FILE);
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[HEADER as usize + 40] ^= 1; // inside the first record's values
        std::fs::write(&file, &bytes).unwrap();
        let mut damaged = PrefixStore::open(Some(dir.path()), 3, PrefixCacheMode::F32);
        assert_eq!(damaged.get(&a), None, "a damaged record is not used");
        assert_eq!(damaged.get(&b), Some(states(2, 3, -4.0)));
        assert_eq!(damaged.len(), 1);

        let half = tempfile::tempdir().unwrap();
        let mut store = PrefixStore::open(Some(half.path()), 2, PrefixCacheMode::F16);
        store.put(vec![(a, vec![0.1, 1.0, -3.3, 65504.0])]).unwrap();
        let got = PrefixStore::open(Some(half.path()), 2, PrefixCacheMode::F16).get(&a).unwrap();
        let want: Vec<f32> = [0.1f32, 1.0, -3.3, 65504.0].iter().map(|&v| f16::from_f32(v).to_f32()).collect();
        assert_eq!(got, want);
        assert_ne!(got[0], 0.1, "f16 rounds");
        let mut memory = PrefixStore::open(None, 2, PrefixCacheMode::F16);
        memory.put(vec![(a, vec![0.1, 1.0, -3.3, 65504.0])]).unwrap();
        assert_eq!(memory.get(&a).unwrap(), want, "in memory as on disk");
        assert!(store.put(vec![(b, vec![1.0; 3])]).is_err(), "3 values are not whole tokens of width 2");
    }

    /// Two stores appending to one file (two runs, two ranks): every record of both reads back,
    /// and a record torn by a killed writer is cut off before the next append.
    #[test]
    fn concurrent_writers_and_a_torn_record() {
        let dir = tempfile::tempdir().unwrap();
        std::thread::scope(|s| {
            for w in 0..2u32 {
                let dir = dir.path();
                s.spawn(move || {
                    let mut store = PrefixStore::open(Some(dir), 4, PrefixCacheMode::F32);
                    for i in 0..40u32 {
                        let n = 1 + (i as usize % 3);
                        store.put(vec![(token_key(&[w, i]), states(n, 4, (w * 100 + i) as f32))]).unwrap();
                    }
                });
            }
        });
        let mut store = PrefixStore::open(Some(dir.path()), 4, PrefixCacheMode::F32);
        assert_eq!(store.len(), 80);
        for w in 0..2u32 {
            for i in 0..40u32 {
                let n = 1 + (i as usize % 3);
                assert_eq!(store.get(&token_key(&[w, i])), Some(states(n, 4, (w * 100 + i) as f32)));
            }
        }
        let file = dir.path().join(PREFIX_FILE);
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() - 5]).unwrap();
        let mut torn = PrefixStore::open(Some(dir.path()), 4, PrefixCacheMode::F32);
        assert_eq!(torn.len(), 79, "the torn record is not indexed");
        torn.put(vec![(token_key(&[9]), states(2, 4, 0.5))]).unwrap();
        let mut reopened = PrefixStore::open(Some(dir.path()), 4, PrefixCacheMode::F32);
        assert_eq!(reopened.len(), 80);
        assert_eq!(reopened.get(&token_key(&[9])), Some(states(2, 4, 0.5)));
    }
}
