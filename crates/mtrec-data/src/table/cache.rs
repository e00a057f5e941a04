//! The encoded-table cache: a second run on the same files and data config skips parsing.
//!
//! The key is the MD5 of the entry layout, of the data config (files, columns, tasks, split…), of every file's bytes,
//! of each text encoder's identity and of a saved preprocessing when one is applied — change any of
//! them and the cache misses. An entry is `MTRECTB1`, a JSON header (name, schema, preprocessing,
//! statistics, array lengths), the arrays little-endian, and the MD5 of everything before it; it is
//! written to a temporary file and renamed into place. An entry that is damaged or truncated is
//! ignored with a warning (and rewritten), never loaded.

use std::{
    fs::File,
    io::{BufReader, Read, Write},
    path::{Path, PathBuf},
};

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::{
    DataError, EncodedTable, LoadedTable, MtlDataset, Preprocessing, Schema, SplitStats, TableSource,
    TextEmbedderFactory, table::source::TextEmbedder,
};

// 2: cells render canonically whatever the file format (Parquet floats and booleans as pandas
// writes them), and tasks carry their label transform — entries of layout 1 miss the cache
const MAGIC: &[u8; 8] = b"MTRECTB2";

/// What happened to the cache on a load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// No cache folder (caching off).
    Disabled,
    /// Loaded from this entry.
    Hit(PathBuf),
    /// Parsed, and written to this entry.
    Written(PathBuf),
}

/// The default cache folder: `$MTREC_CACHE_DIR`, else `$XDG_CACHE_HOME/mtrec`, else
/// `$HOME/.cache/mtrec`; `None` when none is set.
pub fn default_cache_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("MTREC_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("mtrec")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("mtrec")))
}

/// MD5 of a file's bytes.
fn file_md5(path: &Path, into: &mut Md5) -> Result<(), DataError> {
    let io = |source| DataError::Io { path: path.to_path_buf(), source };
    let mut file = BufReader::with_capacity(1 << 20, File::open(path).map_err(io)?);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            return Ok(());
        }
        into.update(&buf[..n]);
    }
}

impl TableSource {
    /// The cache key of this table with `fitted` applied (see the module docs).
    pub fn cache_key(
        &self,
        fitted: Option<&Preprocessing>,
        text: &mut TextEmbedderFactory,
    ) -> Result<String, DataError> {
        let mut hasher = Md5::new();
        hasher.update(MAGIC);
        let mut config = self.clone();
        config.dir = PathBuf::new(); // where the files are does not matter, their bytes do
        hasher.update(serde_json::to_vec(&config).expect("configs serialise"));
        for (path, _) in self.files() {
            file_md5(&path, &mut hasher)?;
        }
        for column in &self.columns {
            if let crate::ColumnKind::Text { encoder, .. } = &column.kind {
                let embedder: Box<dyn TextEmbedder> = text(&crate::table::file::resolve(&self.dir, encoder))
                    .map_err(|e| DataError::Invalid(format!("text column `{}`: {e}", column.name)))?;
                hasher.update(embedder.model_id().as_bytes());
            }
        }
        if let Some(p) = fitted {
            hasher.update(serde_json::to_vec(p).expect("preprocessing serialises"));
        }
        Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// [`TableSource::load`] through the cache in `cache_dir` (`None`: no cache).
    pub fn load_cached(
        &self,
        fitted: Option<&Preprocessing>,
        cache_dir: Option<&Path>,
        text: &mut TextEmbedderFactory,
    ) -> Result<(LoadedTable, CacheOutcome), DataError> {
        let Some(dir) = cache_dir else {
            return Ok((self.load(fitted, text)?, CacheOutcome::Disabled));
        };
        self.validate()?;
        let path = dir.join(format!("{}.mtrec-table", self.cache_key(fitted, text)?));
        if path.exists() {
            match read_entry(&path) {
                Ok(table) => return Ok((table, CacheOutcome::Hit(path))),
                Err(e) => tracing::warn!("ignoring the damaged table cache entry: {e}"),
            }
        }
        let table = self.load(fitted, text)?;
        match write_entry(&path, &table) {
            Ok(()) => Ok((table, CacheOutcome::Written(path))),
            Err(e) => {
                tracing::warn!("could not write the table cache ({e}); continuing without it");
                Ok((table, CacheOutcome::Disabled))
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    name: String,
    schema: Schema,
    preprocessing: Preprocessing,
    stats: [SplitStats; 3],
    /// Per split: rows and the lengths of categorical, multi, dense, text, labels, groups.
    lengths: [(usize, [usize; 6]); 3],
}

fn tables(d: &MtlDataset) -> [&EncodedTable; 3] {
    [&d.train, &d.valid, &d.test]
}

/// The bytes of a cache entry.
pub(crate) fn entry_bytes(table: &LoadedTable) -> Vec<u8> {
    let d = &table.dataset;
    let lengths = tables(d).map(|t| {
        (t.n_rows, [t.categorical.len(), t.multi.len(), t.dense.len(), t.text.len(), t.labels.len(), t.groups.len()])
    });
    let header = Header {
        name: d.name.clone(),
        schema: d.schema.clone(),
        preprocessing: table.preprocessing.clone(),
        stats: table.stats.clone(),
        lengths,
    };
    let json = serde_json::to_vec(&header).expect("headers serialise");
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for t in tables(d) {
        t.categorical.iter().chain(&t.multi).for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        t.dense.iter().chain(&t.text).chain(&t.labels).for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        t.groups.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    }
    let digest = Md5::digest(&out);
    out.extend_from_slice(&digest);
    out
}

fn write_entry(path: &Path, table: &LoadedTable) -> Result<(), DataError> {
    let io = |source| DataError::Io { path: path.to_path_buf(), source };
    let dir = path.parent().expect("an entry is in a folder");
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = crate::unique_temporary(path);
    let mut file = File::create(&tmp).map_err(io)?;
    file.write_all(&entry_bytes(table)).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Reads a cache entry; any damage is an error naming the file.
pub(crate) fn read_entry(path: &Path) -> Result<LoadedTable, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    parse_entry(&bytes).map_err(|m| DataError::Invalid(format!("{}: {m}", path.display())))
}

fn parse_entry(bytes: &[u8]) -> Result<LoadedTable, String> {
    if bytes.len() < MAGIC.len() + 8 + 16 || &bytes[..8] != MAGIC {
        return Err("not a table cache entry".into());
    }
    let (body, digest) = bytes.split_at(bytes.len() - 16);
    if Md5::digest(body).as_slice() != digest {
        return Err("checksum mismatch (damaged or truncated)".into());
    }
    let json_len = u64::from_le_bytes(body[8..16].try_into().expect("8 bytes")) as usize;
    let json = body.get(16..16 + json_len).ok_or("truncated header")?;
    let header: Header = serde_json::from_slice(json).map_err(|e| format!("header: {e}"))?;
    let mut offset = 16 + json_len;
    fn take<'b>(body: &'b [u8], offset: &mut usize, n: usize) -> Result<&'b [u8], String> {
        let end = offset.checked_add(n.checked_mul(4).ok_or("bad length")?).ok_or("bad length")?;
        let part = body.get(*offset..end).ok_or("truncated arrays")?;
        *offset = end;
        Ok(part)
    }
    let u32s = |b: &[u8]| b.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
    let f32s = |b: &[u8]| b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
    let mut splits = Vec::with_capacity(3);
    for (n_rows, [cat, multi, dense, text, labels, groups]) in header.lengths {
        splits.push(EncodedTable {
            n_rows,
            categorical: u32s(take(body, &mut offset, cat)?),
            multi: u32s(take(body, &mut offset, multi)?),
            dense: f32s(take(body, &mut offset, dense)?),
            text: f32s(take(body, &mut offset, text)?),
            labels: f32s(take(body, &mut offset, labels)?),
            groups: u32s(take(body, &mut offset, groups)?),
        });
    }
    if offset != body.len() {
        return Err("trailing bytes".into());
    }
    let [train, valid, test]: [EncodedTable; 3] = splits.try_into().map_err(|_| "three splits")?;
    Ok(LoadedTable {
        dataset: MtlDataset { name: header.name, schema: header.schema, train, valid, test },
        preprocessing: header.preprocessing,
        stats: header.stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CategoricalField, TaskKind, TaskSpec};

    fn small() -> LoadedTable {
        let table = |n: usize| EncodedTable {
            n_rows: n,
            categorical: (0..n as u32).collect(),
            dense: (0..n).map(|i| i as f32 / 3.0).collect(),
            labels: (0..n).map(|i| (i % 2) as f32).collect(),
            groups: (0..n as u32).map(|i| i / 2).collect(),
            ..Default::default()
        };
        let schema = Schema::new(
            vec![CategoricalField { name: "c".into(), vocab_size: 9 }],
            vec!["x".into()],
            vec![TaskSpec::new("y", TaskKind::Binary)],
        );
        LoadedTable {
            dataset: MtlDataset { name: "t".into(), schema, train: table(5), valid: table(3), test: table(2) },
            preprocessing: Preprocessing::default(),
            stats: Default::default(),
        }
    }

    /// An entry reads back as the table it was written from; every truncation and every flipped
    /// byte is refused.
    #[test]
    fn entries_round_trip_and_damage_is_refused() {
        let t = small();
        let bytes = entry_bytes(&t);
        let back = parse_entry(&bytes).unwrap();
        assert_eq!(back.dataset.train, t.dataset.train);
        assert_eq!(back.dataset.test, t.dataset.test);
        assert_eq!(back.dataset.schema, t.dataset.schema);
        for cut in [0, 8, 20, bytes.len() / 2, bytes.len() - 1] {
            assert!(parse_entry(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        for i in (0..bytes.len()).step_by(7) {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x10;
            assert!(parse_entry(&damaged).is_err(), "byte {i} flipped");
        }
    }
}
