//! The embedding cache: every text is encoded once per model. Entries are keyed by the model's
//! identity (a folder per model) and the sha256 of the text; a model's entries live in one file,
//! `MTRECEM1`, the dimension, then `(sha256, dim × f32)` records, then the MD5 of it all. New
//! embeddings are merged in and the file is rewritten atomically; a damaged file is ignored (with a
//! warning) and rebuilt, never read.

use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
};

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::TextError;

const MAGIC: &[u8; 8] = b"MTRECEM1";

/// The sha256 of a text: its key in the cache.
pub fn text_key(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Cached embeddings of one model.
pub struct EmbeddingCache {
    path: Option<PathBuf>,
    dim: usize,
    entries: HashMap<[u8; 32], Vec<f32>>,
    dirty: bool,
}

impl EmbeddingCache {
    /// The cache of model `model_id` under `dir` (`None`: in memory only).
    pub fn open(dir: Option<&Path>, model_id: &str, dim: usize) -> Self {
        let path = dir.map(|d| d.join(model_id).join("embeddings.bin"));
        let entries = match path.as_deref().filter(|p| p.exists()).map(|p| (p, read(p, dim))) {
            Some((_, Ok(e))) => e,
            Some((p, Err(reason))) => {
                tracing::warn!("ignoring the damaged embedding cache {}: {reason}", p.display());
                HashMap::new()
            }
            None => HashMap::new(),
        };
        Self { path, dim, entries, dirty: false }
    }

    /// Cached embeddings.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The cached embedding of `text`.
    pub fn get(&self, text: &str) -> Option<&[f32]> {
        self.entries.get(&text_key(text)).map(Vec::as_slice)
    }

    /// Adds an embedding.
    pub fn insert(&mut self, text: &str, embedding: &[f32]) {
        assert_eq!(embedding.len(), self.dim, "an embedding of the cache's width");
        self.entries.insert(text_key(text), embedding.to_vec());
        self.dirty = true;
    }

    /// Writes the cache file if anything was added.
    pub fn save(&mut self) -> Result<(), TextError> {
        let Some(path) = self.path.clone().filter(|_| self.dirty) else { return Ok(()) };
        let io = |e: std::io::Error| TextError::Corrupt { path: path.clone(), reason: format!("writing: {e}") };
        std::fs::create_dir_all(path.parent().expect("a file has a folder")).map_err(io)?;
        let mut bytes = Vec::with_capacity(16 + self.entries.len() * (32 + 4 * self.dim) + 16);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(self.dim as u64).to_le_bytes());
        let mut keys: Vec<&[u8; 32]> = self.entries.keys().collect();
        keys.sort_unstable();
        for key in keys {
            bytes.extend_from_slice(key);
            self.entries[key].iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        }
        let digest = Md5::digest(&bytes);
        bytes.extend_from_slice(&digest);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        self.dirty = false;
        Ok(())
    }
}

fn read(path: &Path, dim: usize) -> Result<HashMap<[u8; 32], Vec<f32>>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if bytes.len() < 32 || &bytes[..8] != MAGIC {
        return Err("not an embedding cache".into());
    }
    let (body, digest) = bytes.split_at(bytes.len() - 16);
    if Md5::digest(body).as_slice() != digest {
        return Err("checksum mismatch (damaged or truncated)".into());
    }
    let stored = u64::from_le_bytes(body[8..16].try_into().expect("8 bytes")) as usize;
    if stored != dim {
        return Err(format!("embeddings of width {stored}, the model's are {dim}"));
    }
    let record = 32 + 4 * dim;
    let records = &body[16..];
    if records.len() % record != 0 {
        return Err("truncated record".into());
    }
    Ok(records
        .chunks_exact(record)
        .map(|r| {
            let key: [u8; 32] = r[..32].try_into().expect("32 bytes");
            let v = r[32..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
            (key, v)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries survive a save and reopen under the same model; another model sees none; a damaged
    /// file is ignored, not read.
    #[test]
    fn entries_persist_per_model_and_damage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = EmbeddingCache::open(Some(dir.path()), "model-a", 3);
        cache.insert("hello", &[1.0, 2.0, 3.0]);
        cache.insert("", &[0.5, 0.0, -1.0]);
        cache.save().unwrap();
        let again = EmbeddingCache::open(Some(dir.path()), "model-a", 3);
        assert_eq!(again.len(), 2);
        assert_eq!(again.get("hello"), Some(&[1.0f32, 2.0, 3.0][..]));
        assert_eq!(again.get(""), Some(&[0.5f32, 0.0, -1.0][..]));
        assert!(again.get("hello ").is_none());
        assert!(EmbeddingCache::open(Some(dir.path()), "model-b", 3).is_empty());
        let file = dir.path().join("model-a/embeddings.bin");
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[40] ^= 1;
        std::fs::write(&file, &bytes).unwrap();
        assert!(EmbeddingCache::open(Some(dir.path()), "model-a", 3).is_empty());
    }
}
