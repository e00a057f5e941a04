//! The embedding cache: every text is encoded once per model, and the cache costs memory for its
//! index only, whatever the number of texts.
//!
//! Entries are keyed by the model's identity (a folder per model) and the sha256 of the text. A
//! model's entries live in one append-only file, `embeddings-2.bin`: the magic `MTRECEM2` and the
//! dimension, then records of `(sha256, dim × f32, the first 8 bytes of the record's MD5)`. Opening
//! the cache reads the file once to index the records (key → offset; 40 bytes a text); an
//! embedding is read back by its offset when asked for. New embeddings are appended under an
//! exclusive lock on the file, so two processes sharing the cache (two runs, several MPI ranks)
//! never interleave their records; a record cut short by a killed writer is cut off before the
//! next append. A record whose checksum fails is ignored (with a warning) and encoded again, never
//! read; a file of another layout or width is set aside the same way.

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io::{BufReader, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::TextError;

const MAGIC: &[u8; 8] = b"MTRECEM2";
const HEADER: u64 = 16;
/// The cache file of a model, in the model's folder of the cache.
pub const CACHE_FILE: &str = "embeddings-2.bin";

/// The sha256 of a text: its key in the cache.
pub fn text_key(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Cached embeddings of one model (see the module docs of `cache.rs`).
pub struct EmbeddingCache {
    path: Option<PathBuf>,
    dim: usize,
    /// Where each text's record starts in the file.
    offsets: HashMap<[u8; 32], u64>,
    /// The embeddings of a cache without a file.
    memory: HashMap<[u8; 32], Vec<f32>>,
    /// The file, open for reading by offset.
    reader: Option<File>,
    /// Records added and not yet appended.
    pending: Vec<([u8; 32], Vec<f32>)>,
}

impl EmbeddingCache {
    /// The cache of model `model_id` under `dir` (`None`: in memory only).
    pub fn open(dir: Option<&Path>, model_id: &str, dim: usize) -> Self {
        let path = dir.map(|d| d.join(model_id).join(CACHE_FILE));
        let mut cache =
            Self { path, dim, offsets: HashMap::new(), memory: HashMap::new(), reader: None, pending: Vec::new() };
        if let Some(path) = cache.path.clone().filter(|p| p.exists())
            && let Err(reason) = cache.index(&path)
        {
            tracing::warn!("ignoring the embedding cache {}: {reason}", path.display());
            cache.offsets.clear();
        }
        cache
    }

    fn record_len(&self) -> u64 {
        32 + 4 * self.dim as u64 + 8
    }

    /// Reads every record's key and checks its checksum; the file stays open for reading.
    fn index(&mut self, path: &Path) -> Result<(), String> {
        let file = File::open(path).map_err(|e| e.to_string())?;
        let mut reader = BufReader::with_capacity(1 << 20, file.try_clone().map_err(|e| e.to_string())?);
        let mut header = [0u8; HEADER as usize];
        reader.read_exact(&mut header).map_err(|_| "shorter than its header".to_string())?;
        if &header[..8] != MAGIC {
            return Err("not an embedding cache of this layout".into());
        }
        let stored = u64::from_le_bytes(header[8..].try_into().expect("8 bytes")) as usize;
        if stored != self.dim {
            return Err(format!("embeddings of width {stored}, the model's are {}", self.dim));
        }
        let mut record = vec![0u8; self.record_len() as usize];
        let (mut at, mut damaged) = (HEADER, 0usize);
        while reader.read_exact(&mut record).is_ok() {
            let (body, sum) = record.split_at(record.len() - 8);
            if Md5::digest(body)[..8] == *sum {
                self.offsets.insert(body[..32].try_into().expect("32 bytes"), at);
            } else {
                damaged += 1;
            }
            at += self.record_len();
        }
        if damaged > 0 {
            tracing::warn!("{}: {damaged} damaged embedding records ignored (encoded again)", path.display());
        }
        self.reader = Some(file);
        Ok(())
    }

    /// Cached embeddings.
    pub fn len(&self) -> usize {
        self.offsets.len() + self.memory.len() + self.pending.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `text` is cached.
    pub fn contains(&self, text: &str) -> bool {
        let key = text_key(text);
        self.offsets.contains_key(&key) || self.memory.contains_key(&key) || self.pending.iter().any(|(k, _)| *k == key)
    }

    /// The cached embedding of `text`, read from the file by its offset.
    pub fn get(&self, text: &str) -> Option<Vec<f32>> {
        let key = text_key(text);
        if let Some(v) = self.memory.get(&key) {
            return Some(v.clone());
        }
        if let Some((_, v)) = self.pending.iter().find(|(k, _)| *k == key) {
            return Some(v.clone());
        }
        let offset = *self.offsets.get(&key)?;
        let mut file = self.reader.as_ref()?;
        let mut bytes = vec![0u8; 4 * self.dim];
        file.seek(SeekFrom::Start(offset + 32)).ok()?;
        file.read_exact(&mut bytes).ok()?;
        Some(bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect())
    }

    /// Adds an embedding (appended to the file by [`Self::save`]).
    pub fn insert(&mut self, text: &str, embedding: &[f32]) {
        assert_eq!(embedding.len(), self.dim, "an embedding of the cache's width");
        let key = text_key(text);
        if self.path.is_none() {
            self.memory.insert(key, embedding.to_vec());
        } else {
            self.pending.push((key, embedding.to_vec()));
        }
    }

    /// Appends the embeddings added since the last save, under an exclusive lock on the file.
    pub fn save(&mut self) -> Result<(), TextError> {
        let Some(path) = self.path.clone().filter(|_| !self.pending.is_empty()) else { return Ok(()) };
        let io = |e: std::io::Error| TextError::Corrupt { path: path.clone(), reason: format!("writing: {e}") };
        std::fs::create_dir_all(path.parent().expect("a file has a folder")).map_err(io)?;
        let mut file =
            OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).map_err(io)?;
        file.lock().map_err(io)?;
        // under the lock: a file of another layout or width is replaced, a record cut short by a
        // killed writer is cut off, and the records are appended after the last whole one
        let len = file.metadata().map_err(io)?.len();
        let mut header = [0u8; HEADER as usize];
        let ours = len >= HEADER
            && file.read_exact(&mut header).is_ok()
            && &header[..8] == MAGIC
            && u64::from_le_bytes(header[8..].try_into().expect("8 bytes")) == self.dim as u64;
        let end = if ours {
            HEADER + (len - HEADER) / self.record_len() * self.record_len()
        } else {
            file.set_len(0).map_err(io)?;
            file.seek(SeekFrom::Start(0)).map_err(io)?;
            file.write_all(MAGIC).map_err(io)?;
            file.write_all(&(self.dim as u64).to_le_bytes()).map_err(io)?;
            self.offsets.clear();
            HEADER
        };
        file.set_len(end).map_err(io)?;
        file.seek(SeekFrom::Start(end)).map_err(io)?;
        let mut bytes = Vec::with_capacity(self.pending.len() * self.record_len() as usize);
        let mut at = end;
        for (key, values) in &self.pending {
            let start = bytes.len();
            bytes.extend_from_slice(key);
            values.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
            let sum = Md5::digest(&bytes[start..]);
            bytes.extend_from_slice(&sum[..8]);
            self.offsets.insert(*key, at);
            at += self.record_len();
        }
        file.write_all(&bytes).map_err(io)?;
        file.sync_data().map_err(io)?;
        file.unlock().map_err(io)?;
        self.pending.clear();
        self.reader = Some(File::open(&path).map_err(io)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries survive a save and reopen under the same model; another model sees none; a damaged
    /// record is ignored, not read, and the rest still serve.
    #[test]
    fn entries_persist_per_model_and_damage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = EmbeddingCache::open(Some(dir.path()), "model-a", 3);
        cache.insert("hello", &[1.0, 2.0, 3.0]);
        cache.insert("", &[0.5, 0.0, -1.0]);
        cache.save().unwrap();
        let again = EmbeddingCache::open(Some(dir.path()), "model-a", 3);
        assert_eq!(again.len(), 2);
        assert_eq!(again.get("hello"), Some(vec![1.0f32, 2.0, 3.0]));
        assert_eq!(again.get(""), Some(vec![0.5f32, 0.0, -1.0]));
        assert!(again.get("hello ").is_none());
        assert!(EmbeddingCache::open(Some(dir.path()), "model-b", 3).is_empty());
        let file = dir.path().join("model-a").join(CACHE_FILE);
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[HEADER as usize + 40] ^= 1; // inside the first record's values
        std::fs::write(&file, &bytes).unwrap();
        let damaged = EmbeddingCache::open(Some(dir.path()), "model-a", 3);
        assert_eq!(damaged.len(), 1, "the damaged record is left out");
        let other = EmbeddingCache::open(Some(dir.path()), "model-a", 4);
        assert!(other.is_empty(), "a file of another width is not read");
    }

    /// Saving appends: the file grows by the new records only, and earlier records keep their
    /// bytes; a record cut short (a killed writer) is cut off before the next append.
    #[test]
    fn saves_append_and_a_torn_record_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m").join(CACHE_FILE);
        let mut cache = EmbeddingCache::open(Some(dir.path()), "m", 2);
        cache.insert("a", &[1.0, 2.0]);
        cache.save().unwrap();
        let first = std::fs::read(&file).unwrap();
        cache.insert("b", &[3.0, 4.0]);
        cache.save().unwrap();
        let second = std::fs::read(&file).unwrap();
        assert_eq!(&second[..first.len()], &first[..], "earlier records are not rewritten");
        assert_eq!(second.len() - first.len(), 32 + 8 + 8);
        // a writer killed mid-record
        std::fs::write(&file, &second[..second.len() - 5]).unwrap();
        let mut torn = EmbeddingCache::open(Some(dir.path()), "m", 2);
        assert_eq!((torn.get("a"), torn.get("b")), (Some(vec![1.0, 2.0]), None));
        torn.insert("c", &[5.0, 6.0]);
        torn.save().unwrap();
        let reopened = EmbeddingCache::open(Some(dir.path()), "m", 2);
        assert_eq!((reopened.get("a"), reopened.get("c")), (Some(vec![1.0, 2.0]), Some(vec![5.0, 6.0])));
    }

    /// Two caches appending to one file from two threads at once (two runs, two ranks): every
    /// record of both reads back.
    #[test]
    fn concurrent_writers_do_not_interleave() {
        let dir = tempfile::tempdir().unwrap();
        std::thread::scope(|s| {
            for w in 0..2 {
                let dir = dir.path();
                s.spawn(move || {
                    let mut cache = EmbeddingCache::open(Some(dir), "m", 4);
                    for i in 0..50 {
                        cache.insert(&format!("{w}-{i}"), &[w as f32, i as f32, 0.5, -0.5]);
                        cache.save().unwrap();
                    }
                });
            }
        });
        let cache = EmbeddingCache::open(Some(dir.path()), "m", 4);
        assert_eq!(cache.len(), 100);
        for w in 0..2 {
            for i in 0..50 {
                assert_eq!(cache.get(&format!("{w}-{i}")), Some(vec![w as f32, i as f32, 0.5, -0.5]));
            }
        }
    }
}
