//! Property-based fuzzing of every parser that reads a user's bytes in the data crate: CSV
//! records, Parquet files, chunk files. The property: an input is either read correctly or
//! refused with an error naming it — never a panic, never a silently different table.
//!
//! A quick profile runs in `cargo test` (a few hundred cases a target); the long one is
//! `MTREC_FUZZ_CASES=20000 cargo test --release -p mtrec-data --test fuzz` (README, Tests).
//! A failing case is shrunk and saved by proptest under `proptest-regressions/`, and kept as a
//! regression test.

use std::{io::Write, path::Path};

use mtrec_data::{
    ColumnKind, ColumnSpec, CsvOptions, DataError, EncodedTable, LabelValue, RowWidths, SplitRule, TableFiles,
    TableFormat, TableSource, TaskColumn, TaskKind, TextEmbedder, read_chunk, read_column, write_chunk,
};
use proptest::prelude::*;

/// Cases a target: `MTREC_FUZZ_CASES`, else `quick`.
fn cases(quick: u32) -> ProptestConfig {
    let n = std::env::var("MTREC_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(quick);
    ProptestConfig { cases: n, failure_persistence: None, ..ProptestConfig::default() }
}

fn no_text(_: &Path) -> Result<Box<dyn TextEmbedder>, String> {
    Err("no encoder in the fuzz tests".into())
}

/// A table over columns `a` (categorical), `b` (dense, fill 0) and label `c` (binary, threshold
/// 0.5), split by row modulo 3, reading `file` in `dir`.
fn table(dir: &Path, file: &str) -> TableSource {
    TableSource {
        name: "fuzz".into(),
        dir: dir.to_path_buf(),
        files: TableFiles::Paths(vec![file.into()]),
        format: None,
        csv: CsvOptions::default(),
        split: Some(SplitRule::RowMod { modulus: 3, valid: vec![1], test: vec![2] }),
        columns: vec![
            ColumnSpec {
                name: "a".into(),
                kind: ColumnKind::Categorical { min_count: 1, hash_buckets: None, hash_table: None },
            },
            ColumnSpec {
                name: "b".into(),
                kind: ColumnKind::Dense {
                    transform: Default::default(),
                    fill: Some(mtrec_data::DenseFill::Value(0.0)),
                    clip_quantiles: None,
                },
            },
        ],
        tasks: vec![TaskColumn {
            name: "c".into(),
            column: None,
            kind: TaskKind::Binary,
            positive: vec![],
            negative: vec![],
            threshold: Some(0.5),
            transform: Default::default(),
            classes: vec![],
            n_classes: None,
            adversarial: false,
            space: None,
        }],
        group_by: None,
        score_only: false,
    }
}

/// An error must name the file it is about.
fn names_the_file(e: &DataError, file: &str) -> bool {
    e.to_string().contains(file) || matches!(e, DataError::Invalid(m) if m.starts_with("data"))
}

fn cell() -> impl Strategy<Value = String> {
    // quotes, delimiters, both line endings, tabs, spaces and non-ASCII: what CSV quoting must carry
    proptest::string::string_regex("[a-z0-9,\"\r\n é\t.-]{0,8}").unwrap()
}

proptest! {
    #![proptest_config(cases(256))]

    /// Any cells, written by a CSV writer (RFC 4180 quoting, LF or CRLF lines), read back as they
    /// were: the empty field as null, every other field exactly.
    #[test]
    fn csv_cells_round_trip(rows in prop::collection::vec([cell(), cell(), cell()], 1..20), crlf in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        let terminator = if crlf { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') };
        let mut w = csv::WriterBuilder::new().terminator(terminator).from_path(&path).unwrap();
        w.write_record(["a", "b", "c"]).unwrap();
        for r in &rows {
            w.write_record(r).unwrap();
        }
        w.flush().unwrap();
        drop(w);
        for (k, name) in ["a", "b", "c"].iter().enumerate() {
            let got = read_column(&path, None, &CsvOptions::default(), name).unwrap();
            let expected: Vec<Option<String>> =
                rows.iter().map(|r| (!r[k].is_empty()).then(|| r[k].clone())).collect();
            prop_assert_eq!(got, expected, "column {}", name);
        }
    }

    /// Arbitrary bytes after a header — quotes left open, ragged rows, non-UTF-8, bare CRs — load
    /// or are refused with an error naming the file; gzipped and cut short, too.
    #[test]
    fn csv_bytes_load_or_are_refused(body in prop::collection::vec(any::<u8>(), 0..400), gz in any::<bool>(), cut in 0usize..100) {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = b"a,b,c\n".to_vec();
        bytes.extend_from_slice(&body);
        let file = if gz { "t.csv.gz" } else { "t.csv" };
        if gz {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&bytes).unwrap();
            let mut packed = e.finish().unwrap();
            packed.truncate(packed.len().saturating_sub(cut % 4 * 7));
            bytes = packed;
        }
        std::fs::write(dir.path().join(file), &bytes).unwrap();
        if let Err(e) = table(dir.path(), file).load(None, &mut no_text) {
            prop_assert!(names_the_file(&e, file), "{}", e);
        }
    }

    /// A Parquet file with bytes flipped or cut short loads or is refused naming the file; cut
    /// short, it is always refused (its footer is gone).
    #[test]
    fn parquet_damage_loads_or_is_refused(flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4), cut in prop::option::of(any::<prop::sample::Index>())) {
        let original = parquet_fixture();
        let mut bytes = original.clone();
        for (at, mask) in &flips {
            let i = at.index(bytes.len());
            bytes[i] ^= mask;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.parquet"), &bytes).unwrap();
        match parquet_table(dir.path()).load(None, &mut no_text) {
            Ok(_) => prop_assert!(cut.is_none() || bytes.len() == original.len(), "a cut file loaded"),
            Err(e) => prop_assert!(names_the_file(&e, "t.parquet"), "{}", e),
        }
    }

    /// A chunk file with a byte flipped or cut short is refused (its MD5 trailer); intact, it
    /// reads back equal.
    #[test]
    fn chunk_files_are_read_exactly_or_refused(rows in 0usize..20, flip in prop::option::of((any::<prop::sample::Index>(), 1u8..=255)), cut in prop::option::of(any::<prop::sample::Index>())) {
        let widths = RowWidths { categorical: 2, multi: 1, dense: 1, text: 2, tasks: 1 };
        let table = EncodedTable {
            n_rows: rows,
            categorical: (0..rows as u32 * 2).collect(),
            multi: (0..rows as u32).map(|i| i % 3).collect(),
            dense: (0..rows).map(|i| i as f32 * 0.5).collect(),
            text: (0..rows * 2).map(|i| -(i as f32)).collect(),
            labels: (0..rows).map(|i| (i % 2) as f32).collect(),
            groups: (0..rows as u32).collect(),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.chunk");
        write_chunk(&path, &table, widths).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let damaged = flip.is_some() || cut.is_some();
        if let Some((at, mask)) = flip {
            let i = at.index(bytes.len());
            bytes[i] ^= mask;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        std::fs::write(&path, &bytes).unwrap();
        match read_chunk(&path, widths) {
            Ok(back) => {
                prop_assert!(!damaged, "a damaged chunk was read");
                prop_assert_eq!(back, table);
            }
            Err(e) => prop_assert!(damaged && e.to_string().contains("x.chunk"), "{}", e),
        }
    }
}

/// [`table`] over the Parquet fixture's columns (`user`, `price`, label `click` = 1), as `t.parquet`.
fn parquet_table(dir: &Path) -> TableSource {
    let mut source = table(dir, "t.parquet");
    source.columns[0].name = "user".into();
    source.columns[1].name = "price".into();
    source.tasks[0].name = "click".into();
    source.tasks[0].threshold = None;
    source.tasks[0].positive = vec![LabelValue::Int(1)];
    source
}

fn parquet_fixture() -> Vec<u8> {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    std::fs::read(Path::new(&dir).join("tests/fixtures/table-small/table.parquet")).unwrap()
}

/// The case fuzzing found (5,000 cases): byte 2816 of the fixture XOR 183 makes a column chunk's
/// metadata give a negative offset, and the `parquet` crate asserted (a panic) instead of
/// returning an error. Now refused with an error naming the file.
#[test]
fn regression_parquet_negative_column_offset() {
    let mut bytes = parquet_fixture();
    bytes[2816] ^= 183;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.parquet"), &bytes).unwrap();
    let e = parquet_table(dir.path()).load(None, &mut no_text).expect_err("refused").to_string();
    assert!(e.contains("t.parquet") && e.contains("not a readable Parquet file"), "{e}");
}

#[test]
fn the_fixture_is_parquet() {
    assert_eq!(TableFormat::of(Path::new("t.parquet")), Some(TableFormat::Parquet));
    assert_eq!(&parquet_fixture()[..4], b"PAR1");
}
