//! One chunk of an encoded split on disk: a fixed-layout binary file a streaming reader loads in
//! one read, with the MD5 of its contents at the end so a truncated or damaged chunk is an error
//! naming the file — never rows of wrong numbers.
//!
//! Layout (little-endian): `MTRECCH1`; `u64` rows `n`; the row widths `F M D X T` (`u64` each,
//! [`RowWidths`]); `u64` 1 when the chunk has group ids, else 0; then the columns, each contiguous:
//! categorical ids `n·F` `u32`, multi-valued slots `n·M` `u32`, dense features `n·D` `f32`, text
//! embeddings `n·X` `f32`, labels `n·T` `f32`, group ids `n` `u32` (if any); then the 16-byte MD5
//! of everything before it.

use std::path::Path;

use md5::{Digest, Md5};

use crate::{DataError, EncodedTable, RowWidths};

const MAGIC: &[u8; 8] = b"MTRECCH1";
const HEADER: usize = 8 + 8 * 7;

fn bad(path: &Path, reason: impl std::fmt::Display) -> DataError {
    DataError::Invalid(format!("chunk file {}: {reason}", path.display()))
}

/// The bytes of a chunk holding `table` (rows of the given widths).
pub fn chunk_bytes(table: &EncodedTable, widths: RowWidths) -> Vec<u8> {
    let n = table.n_rows;
    let has_groups = !table.groups.is_empty();
    let values = n * (widths.categorical + widths.multi + widths.dense + widths.text + widths.tasks)
        + if has_groups { n } else { 0 };
    let mut out = Vec::with_capacity(HEADER + 4 * values + 16);
    out.extend_from_slice(MAGIC);
    for word in [n, widths.categorical, widths.multi, widths.dense, widths.text, widths.tasks, has_groups as usize] {
        out.extend_from_slice(&(word as u64).to_le_bytes());
    }
    let ints = |out: &mut Vec<u8>, v: &[u32]| v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
    let floats = |out: &mut Vec<u8>, v: &[f32]| v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
    ints(&mut out, &table.categorical);
    ints(&mut out, &table.multi);
    floats(&mut out, &table.dense);
    floats(&mut out, &table.text);
    floats(&mut out, &table.labels);
    ints(&mut out, &table.groups);
    let digest = Md5::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// Writes `table` as a chunk file at `path` (through a temporary file renamed into place, so a
/// killed writer leaves no half chunk under the final name).
pub fn write_chunk(path: &Path, table: &EncodedTable, widths: RowWidths) -> Result<(), DataError> {
    let io = |source| DataError::Io { path: path.to_path_buf(), source };
    let partial = crate::unique_temporary(path);
    std::fs::write(&partial, chunk_bytes(table, widths)).map_err(io)?;
    std::fs::rename(&partial, path).map_err(io)
}

/// Reads the chunk file at `path`, whose rows must have `widths`.
///
/// A missing, truncated or damaged file, or one of other widths, is an error naming it.
pub fn read_chunk(path: &Path, widths: RowWidths) -> Result<EncodedTable, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    parse_chunk(&bytes, widths).map_err(|reason| bad(path, reason))
}

/// Parses a chunk's bytes; `Err` says what is wrong.
fn parse_chunk(bytes: &[u8], widths: RowWidths) -> Result<EncodedTable, String> {
    if bytes.len() < HEADER + 16 || &bytes[..8] != MAGIC {
        return Err(format!("not a chunk file (bad header or {} bytes only)", bytes.len()));
    }
    let (body, digest) = bytes.split_at(bytes.len() - 16);
    if Md5::digest(body).as_slice() != digest {
        return Err("checksum mismatch: the file is truncated or damaged".into());
    }
    let word = |k: usize| u64::from_le_bytes(body[8 + 8 * k..16 + 8 * k].try_into().expect("8 bytes")) as usize;
    let n = word(0);
    let found = RowWidths { categorical: word(1), multi: word(2), dense: word(3), text: word(4), tasks: word(5) };
    if found != widths {
        return Err(format!("rows of widths {found:?}, expected {widths:?} (a chunk of another dataset?)"));
    }
    let has_groups = word(6) == 1;
    let counts = [
        n * widths.categorical,
        n * widths.multi,
        n * widths.dense,
        n * widths.text,
        n * widths.tasks,
        if has_groups { n } else { 0 },
    ];
    if body.len() != HEADER + 4 * counts.iter().sum::<usize>() {
        return Err(format!("{} bytes of columns for {n} rows: the layout does not add up", body.len() - HEADER));
    }
    let mut at = HEADER;
    let mut words = |count: usize| {
        let slice = &body[at..at + 4 * count];
        at += 4 * count;
        slice.chunks_exact(4).map(|b| <[u8; 4]>::try_from(b).expect("4 bytes"))
    };
    let categorical = words(counts[0]).map(u32::from_le_bytes).collect();
    let multi = words(counts[1]).map(u32::from_le_bytes).collect();
    let dense = words(counts[2]).map(f32::from_le_bytes).collect();
    let text = words(counts[3]).map(f32::from_le_bytes).collect();
    let labels = words(counts[4]).map(f32::from_le_bytes).collect();
    let groups = words(counts[5]).map(u32::from_le_bytes).collect();
    Ok(EncodedTable { n_rows: n, categorical, multi, dense, text, labels, groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIDTHS: RowWidths = RowWidths { categorical: 2, multi: 3, dense: 1, text: 2, tasks: 2 };

    pub(crate) fn sample(n: usize, groups: bool) -> EncodedTable {
        EncodedTable {
            n_rows: n,
            categorical: (0..2 * n as u32).collect(),
            multi: (0..3 * n as u32).map(|v| v * 7).collect(),
            dense: (0..n).map(|i| i as f32 * 0.5).collect(),
            text: (0..2 * n).map(|i| -(i as f32)).collect(),
            labels: (0..2 * n).map(|i| (i % 2) as f32).collect(),
            groups: if groups { (0..n as u32).map(|g| g / 3).collect() } else { vec![] },
        }
    }

    #[test]
    fn chunks_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        for groups in [false, true] {
            let path = dir.path().join(format!("c{groups}.chunk"));
            let table = sample(37, groups);
            write_chunk(&path, &table, WIDTHS).unwrap();
            assert_eq!(read_chunk(&path, WIDTHS).unwrap(), table);
            assert!(!path.with_extension("partial").exists());
        }
    }

    /// Every truncation and every flipped byte is an error naming the file; so are other widths
    /// and a missing file.
    #[test]
    fn a_truncated_or_damaged_chunk_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train-00003.chunk");
        let bytes = chunk_bytes(&sample(5, true), WIDTHS);
        let name = path.display().to_string();
        for len in (0..bytes.len()).step_by(7) {
            std::fs::write(&path, &bytes[..len]).unwrap();
            let err = read_chunk(&path, WIDTHS).unwrap_err().to_string();
            assert!(err.contains(&name), "cut at {len}: {err}");
        }
        for k in (0..bytes.len()).step_by(5) {
            let mut damaged = bytes.clone();
            damaged[k] ^= 0x10;
            std::fs::write(&path, &damaged).unwrap();
            let err = read_chunk(&path, WIDTHS).unwrap_err().to_string();
            assert!(err.contains(&name), "byte {k}: {err}");
        }
        std::fs::write(&path, &bytes).unwrap();
        let other = RowWidths { dense: 4, ..WIDTHS };
        let err = read_chunk(&path, other).unwrap_err().to_string();
        assert!(err.contains(&name) && err.contains("widths"), "{err}");
        std::fs::remove_file(&path).unwrap();
        assert!(read_chunk(&path, WIDTHS).unwrap_err().to_string().contains(&name));
    }
}
