//! Loading tables: CSV and Parquet encode alike, encoding rules by hand, saved preprocessing,
//! splits, hashed and text columns, named errors for bad inputs, and the table cache.

use std::collections::HashMap;

use super::*;
use crate::{Cut, fnv1a64};

pub(crate) fn fixture(file: &str) -> PathBuf {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    Path::new(&dir).join("tests/fixtures/table-small").join(file)
}

const COLUMNS: &str = r#"
    [[columns]]
    name = "user"
    kind = "categorical"

    [[columns]]
    name = "item"
    kind = "categorical"
    hash_buckets = 16

    [[columns]]
    name = "genres"
    kind = "multi_categorical"
    max_len = 2

    [[columns]]
    name = "age"
    kind = "dense"
    fill = 30.0

    [[columns]]
    name = "price"
    kind = "dense"
    transform = "standard"

    [[tasks]]
    name = "click"
    kind = "binary"
    positive = [1]
    negative = [0]

    [[tasks]]
    name = "stars"
    column = "rating"
    kind = "multiclass"
    classes = [1, 2, 3, 4, 5]

    [[tasks]]
    name = "rating"
    kind = "regression"
    transform = "log1p"
"#;

#[derive(serde::Deserialize)]
struct Parts {
    columns: Vec<ColumnSpec>,
    tasks: Vec<TaskColumn>,
}

pub(crate) fn source(file: &str) -> TableSource {
    let parts: Parts = toml::from_str(COLUMNS).unwrap();
    TableSource {
        name: "small".into(),
        dir: fixture(""),
        files: TableFiles::Paths(vec![file.into()]),
        format: None,
        csv: CsvOptions::default(),
        split: Some(SplitRule::RowMod { modulus: 5, valid: vec![3], test: vec![4] }),
        columns: parts.columns,
        tasks: parts.tasks,
        group_by: Some("user".into()),
        score_only: false,
    }
}

pub(crate) fn no_text(_: &Path) -> Result<Box<dyn TextEmbedder>, String> {
    Err("no encoder in this test".into())
}

/// The raw fixture rows, for expectations computed here.
pub(crate) fn rows() -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(fixture("table.csv")).unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    reader.records().map(|r| r.unwrap().iter().map(str::to_string).collect()).collect()
}

/// The same table as CSV and as Parquet encodes identically: every id, value, label and group.
#[test]
fn csv_and_parquet_encode_identically() {
    let csv = source("table.csv").load(None, &mut no_text).unwrap();
    let parquet = source("table.parquet").load(None, &mut no_text).unwrap();
    assert_eq!(csv.dataset.schema, parquet.dataset.schema);
    assert_eq!(csv.dataset.train, parquet.dataset.train);
    assert_eq!(csv.dataset.valid, parquet.dataset.valid);
    assert_eq!(csv.dataset.test, parquet.dataset.test);
    assert_eq!(csv.preprocessing, parquet.preprocessing);
    assert_eq!((csv.dataset.train.n_rows, csv.dataset.valid.n_rows, csv.dataset.test.n_rows), (72, 24, 24));
}

/// One pandas frame written as CSV (`to_csv`) and as Parquet (`to_parquet`) by
/// `tests/fixtures/pandas-frame/make_frame.py` — float ids, float32 values, booleans, uint64
/// above i64::MAX, nulls — encodes identically from either file, whichever was fitted on
/// (what `eval --file` of the other format relies on). Before the canonical rendering, Parquet
/// gave `8` for pandas' `8.0`, `0.20000000298023224` for `0.2`, `1` for `True`, and a negative
/// id for 2⁶³.
#[test]
fn csv_and_parquet_of_one_frame_encode_identically() {
    let toml = r#"
        [[columns]]
        name = "user"
        kind = "categorical"
        [[columns]]
        name = "code"
        kind = "categorical"
        [[columns]]
        name = "flag"
        kind = "categorical"
        [[columns]]
        name = "big"
        kind = "categorical"
        [[columns]]
        name = "price"
        kind = "dense"
        transform = "standard"
        fill = 0.0
        [[tasks]]
        name = "click"
        kind = "binary"
        positive = [true]
        negative = [0]
        [[tasks]]
        name = "rating"
        kind = "regression"
    "#;
    let parts: Parts = toml::from_str(toml).unwrap();
    let dir = fixture("").parent().unwrap().join("pandas-frame");
    let frame = |file: &str| TableSource {
        name: "frame".into(),
        dir: dir.clone(),
        files: TableFiles::Paths(vec![file.into()]),
        format: None,
        csv: CsvOptions::default(),
        split: Some(SplitRule::RowMod { modulus: 6, valid: vec![3], test: vec![4] }),
        columns: parts.columns.clone(),
        tasks: parts.tasks.clone(),
        group_by: Some("shop".into()),
        score_only: false,
    };
    let csv = frame("frame.csv").load(None, &mut no_text).unwrap();
    let parquet = frame("frame.parquet").load(None, &mut no_text).unwrap();
    assert_eq!(csv.preprocessing, parquet.preprocessing, "the same vocabularies from either file");
    for (a, b) in [(&csv, &parquet), (&parquet, &csv)] {
        let again = (if std::ptr::eq(a, &csv) { frame("frame.parquet") } else { frame("frame.csv") })
            .load(Some(&a.preprocessing), &mut no_text)
            .unwrap();
        assert_eq!(again.dataset.schema, b.dataset.schema);
        for (x, y) in [(&again.dataset.train, &a.dataset.train), (&again.dataset.test, &a.dataset.test)] {
            assert_eq!(x, y, "applying one file's preprocessing to the other encodes the same rows");
        }
    }
    let vocabulary = |c: usize| match &csv.preprocessing.columns[c] {
        FittedColumn::Vocabulary { values, .. } => values.clone(),
        other => panic!("{other:?}"),
    };
    assert!(vocabulary(0).contains(&"8.0".to_string()), "{:?}", vocabulary(0));
    assert!(vocabulary(1).contains(&"0.2".to_string()), "{:?}", vocabulary(1));
    assert!(vocabulary(2).contains(&"True".to_string()), "{:?}", vocabulary(2));
    assert!(vocabulary(3).iter().all(|v| v.parse::<u64>().is_ok_and(|u| u >= 1 << 63)), "{:?}", vocabulary(3));
    // the frame's null users are null, not an id of "" or "nan"
    assert!(!vocabulary(0).iter().any(|v| v.is_empty() || v == "nan"));
    // click = True is 1 in either file (positive = [true]); nulls in `shop` belong to no group
    let d = &parquet.dataset;
    assert_eq!(d.train.label_column(0, 2), csv.dataset.train.label_column(0, 2));
    assert!(d.train.label_column(0, 2).contains(&1.0) && d.train.label_column(0, 2).contains(&0.0));
    assert!(d.train.groups.contains(&NO_GROUP), "a null group is no group");
}

/// A null `group_by` cell is in no group ([`NO_GROUP`]), not in a pseudo-user `""` that GAUC
/// would average in; the statistics count only real groups.
#[test]
fn null_groups_are_no_group() {
    let csv = csv_with(|r| r[0] = String::new()); // record 2's user (the group) is null
    let loaded = load_text(&csv, |_| {}).unwrap();
    let train = &loaded.dataset.train;
    assert_eq!(train.groups[2], NO_GROUP, "record 2 trains and has no group");
    assert_eq!(train.groups.iter().filter(|&&g| g == NO_GROUP).count(), 1);
    let real: std::collections::HashSet<u32> = train.groups.iter().copied().filter(|&g| g != NO_GROUP).collect();
    assert_eq!(loaded.stats[0].groups, real.len());
}

/// A time split: a NaN or null time is an error naming file, line and column (it went to test
/// before), or trains / is dropped as `missing` says; a value beyond f32 is an error naming file,
/// line and column (it became an infinity).
#[test]
fn missing_times_and_overflowing_values_are_named() {
    let time = |missing| {
        move |s: &mut TableSource| {
            s.split = Some(SplitRule::Time {
                column: "day".into(),
                valid_from: Cut::Text("2024-02-01".into()),
                test_from: Cut::Text("2024-03-01".into()),
                missing,
            })
        }
    };
    let no_day = csv_with(|r| r[9] = String::new());
    let e = load_text(&no_day, time(crate::MissingTime::Error)).err().unwrap().to_string();
    assert!(e.contains("t.csv: line 4: column \"day\"") && e.contains("null"), "{e}");
    let all = load_text(&std::fs::read_to_string(fixture("table.csv")).unwrap(), time(crate::MissingTime::Error))
        .unwrap()
        .dataset;
    let trained = load_text(&no_day, time(crate::MissingTime::Train)).unwrap().dataset;
    let dropped = load_text(&no_day, time(crate::MissingTime::Drop)).unwrap().dataset;
    let rows = |d: &MtlDataset| d.train.n_rows + d.valid.n_rows + d.test.n_rows;
    assert_eq!((rows(&trained), rows(&dropped)), (rows(&all), rows(&all) - 1));
    let huge = csv_with(|r| r[4] = "1e39".into());
    let e = load_text(&huge, |_| {}).err().unwrap().to_string();
    assert!(e.contains("t.csv: line 4: column \"price\"") && e.contains("overflows f32"), "{e}");
}

/// Every rule on the fixture, recomputed by hand from the raw rows: vocabulary ids in order of
/// first appearance in training (validation-only values → 0), hashed ids, bag slots, min-max with
/// the fill, standardisation with the training mean and deviation, labels, groups.
#[test]
fn encoding_rules_by_hand() {
    let loaded = source("table.csv").load(None, &mut no_text).unwrap();
    let d = &loaded.dataset;
    let raw = rows();
    let (train, valid): (Vec<&Vec<String>>, Vec<&Vec<String>>) = (
        raw.iter().enumerate().filter(|(i, _)| i % 5 < 3).map(|(_, r)| r).collect(),
        raw.iter().enumerate().filter(|(i, _)| i % 5 == 3).map(|(_, r)| r).collect(),
    );
    // user: ids by first appearance in training
    let mut vocab: Vec<&str> = Vec::new();
    for r in &train {
        if !vocab.contains(&r[0].as_str()) {
            vocab.push(&r[0]);
        }
    }
    assert_eq!(d.schema.categorical[0].vocab_size, vocab.len() + 1);
    let id = |v: &str| vocab.iter().position(|u| *u == v).map_or(0, |p| p as u32 + 1);
    let w = d.schema.widths();
    for (k, r) in valid.iter().enumerate() {
        let row = &d.valid.categorical[k * w.categorical..(k + 1) * w.categorical];
        assert_eq!(row[0], id(&r[0]), "user of valid row {k}");
        assert_eq!(row[1], 1 + (fnv1a64(r[1].as_bytes()) % 16) as u32, "hashed item of valid row {k}");
    }
    // genres: a bag of 2 slots, vocabulary ids from 2 by first appearance in training
    let mut genres: Vec<&str> = Vec::new();
    for r in &train {
        for g in r[2].split('|').filter(|g| !g.is_empty()) {
            if !genres.contains(&g) {
                genres.push(g);
            }
        }
    }
    assert_eq!(d.schema.multi_categorical[0].vocab_size, genres.len() + 2);
    for (k, r) in train.iter().enumerate() {
        let expected: Vec<u32> = r[2]
            .split('|')
            .filter(|g| !g.is_empty())
            .take(2)
            .map(|g| genres.iter().position(|x| *x == g).unwrap() as u32 + 2)
            .chain(std::iter::repeat(0))
            .take(2)
            .collect();
        assert_eq!(&d.train.multi[k * 2..k * 2 + 2], expected.as_slice(), "genres of train row {k}");
    }
    // age: min-max over training with missing = 30; price: standardised
    let age = |r: &Vec<String>| if r[3].is_empty() { 30.0 } else { r[3].parse::<f32>().unwrap() };
    let (lo, hi) = train.iter().map(|r| age(r)).fold((f32::MAX, f32::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let prices: Vec<f64> = train.iter().map(|r| r[4].parse::<f32>().unwrap() as f64).collect();
    let mean = prices.iter().sum::<f64>() / prices.len() as f64;
    let sd = (prices.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / prices.len() as f64).sqrt();
    for (k, r) in valid.iter().enumerate() {
        let got = &d.valid.dense[k * 2..k * 2 + 2];
        assert!((got[0] - ((age(r) - lo) / (hi - lo)).clamp(0.0, 1.0)).abs() < 1e-6, "age of valid row {k}");
        let p = r[4].parse::<f32>().unwrap() as f64;
        assert!(
            (got[1] as f64 - (p - mean) / sd).abs() < 1e-4,
            "price of valid row {k}: {} vs {}",
            got[1],
            (p - mean) / sd
        );
    }
    // labels: click 0/1, stars a class index, rating log1p
    for (k, r) in valid.iter().enumerate() {
        let labels = &d.valid.labels[k * 3..k * 3 + 3];
        let rating: f32 = r[6].parse().unwrap();
        assert_eq!(labels[0], r[7].parse::<f32>().unwrap());
        assert_eq!(labels[1], rating - 1.0);
        assert!((labels[2] - rating.ln_1p()).abs() < 1e-6);
    }
    assert_eq!(d.schema.tasks[1].n_classes, 5);
    // groups: one id per user, the same id for the same user in every split
    let users: Vec<&str> = raw.iter().map(|r| r[0].as_str()).collect();
    let by_group = |t: &EncodedTable, rows: &[&Vec<String>]| {
        t.groups.iter().zip(rows).map(|(g, r)| (*g, r[0].clone())).collect::<Vec<_>>()
    };
    let mut seen = HashMap::new();
    for (g, u) in by_group(&d.train, &train).into_iter().chain(by_group(&d.valid, &valid)) {
        assert_eq!(seen.entry(g).or_insert_with(|| u.clone()), &u, "group {g}");
    }
    assert!(seen.len() <= users.len());
    assert_eq!(
        loaded.stats[1].nulls.iter().find(|(c, _)| c == "age").unwrap().1,
        valid.iter().filter(|r| r[3].is_empty()).count()
    );
}

/// A saved preprocessing reproduces the encoding (what `eval` and `--resume` rely on), and
/// `min_count` sends rare training values to id 0.
#[test]
fn saved_preprocessing_reproduces_the_encoding_and_min_count_applies() {
    let fitted = source("table.csv").load(None, &mut no_text).unwrap();
    let again = source("table.parquet").load(Some(&fitted.preprocessing), &mut no_text).unwrap();
    assert_eq!(fitted.dataset.test, again.dataset.test);
    let mut rare = source("table.csv");
    rare.columns[0].kind = ColumnKind::Categorical { min_count: 6, hash_buckets: None, hash_table: None };
    let loaded = rare.load(None, &mut no_text).unwrap();
    let FittedColumn::Vocabulary { values, .. } = &loaded.preprocessing.columns[0] else { panic!("vocabulary") };
    let raw = rows();
    for v in values {
        let n = raw.iter().enumerate().filter(|(i, r)| i % 5 < 3 && r[0] == *v).count();
        assert!(n >= 6, "{v} seen {n} times in training");
    }
    assert!(values.len() < fitted.dataset.schema.categorical[0].vocab_size - 1);
    let mismatched = source("table.csv").load(Some(&Preprocessing::default()), &mut no_text).unwrap_err().to_string();
    assert!(mismatched.contains("saved preprocessing"), "{mismatched}");
}

/// Split rules give disjoint splits that cover every row, the same on every load.
#[test]
fn splits_are_disjoint_cover_every_row_and_repeat() {
    let mut s = source("table.parquet");
    s.split = Some(SplitRule::Random { valid: 0.2, test: 0.2, seed: 9 });
    let a = s.load(None, &mut no_text).unwrap().dataset;
    let b = s.load(None, &mut no_text).unwrap().dataset;
    assert_eq!(a.test, b.test);
    assert_eq!(a.train.n_rows + a.valid.n_rows + a.test.n_rows, 120);
    // the group column carries each row's user: the multiset of users is the file's
    let mut users: Vec<u32> = [&a.train, &a.valid, &a.test].iter().flat_map(|t| t.groups.clone()).collect();
    users.sort_unstable();
    let mut all = s.clone();
    all.split = Some(SplitRule::RowMod { modulus: 5, valid: vec![3], test: vec![4] });
    let c = all.load(None, &mut no_text).unwrap().dataset;
    let mut expected: Vec<u32> = [&c.train, &c.valid, &c.test].iter().flat_map(|t| t.groups.clone()).collect();
    expected.sort_unstable();
    assert_eq!(users.len(), expected.len());
    s.split = Some(SplitRule::Time {
        column: "day".into(),
        valid_from: Cut::Text("2024-02-01".into()),
        test_from: Cut::Text("2024-03-01".into()),
        missing: crate::MissingTime::Error,
    });
    let t = s.load(None, &mut no_text).unwrap().dataset;
    assert_eq!((t.train.n_rows, t.valid.n_rows, t.test.n_rows), (40, 40, 40));
}

pub(crate) struct FakeEncoder;
impl TextEmbedder for FakeEncoder {
    fn model_id(&self) -> String {
        "fake".into()
    }
    fn dim(&self) -> usize {
        2
    }
    fn embed(&mut self, texts: &[String]) -> Result<Vec<f32>, String> {
        Ok(texts.iter().flat_map(|t| [t.len() as f32, t.matches(' ').count() as f32]).collect())
    }
}

/// Hashed fields naming one `hash_table` share its rows: the schema lists them, each value
/// is salted with its field's name; fields of one table with different bucket counts are an
/// error naming the column.
#[test]
fn hashed_fields_can_share_a_table() {
    let mut s = source("table.csv");
    for c in &mut s.columns[..2] {
        c.kind = ColumnKind::Categorical { min_count: 1, hash_buckets: Some(64), hash_table: Some("ids".into()) };
    }
    let loaded = s.load(None, &mut no_text).unwrap();
    assert_eq!(loaded.dataset.schema.shared_tables, vec![vec![0, 1]]);
    let raw = rows();
    let first = &raw[0];
    let salted = |field: &str, v: &str| 1 + (fnv1a64(format!("{field}\u{1f}{v}").as_bytes()) % 64) as u32;
    assert_eq!(loaded.dataset.train.categorical[0], salted("user", &first[0]));
    assert_eq!(loaded.dataset.train.categorical[1], salted("item", &first[1]));
    s.columns[1].kind =
        ColumnKind::Categorical { min_count: 1, hash_buckets: Some(32), hash_table: Some("ids".into()) };
    let err = s.load(None, &mut no_text).unwrap_err().to_string();
    assert!(err.contains("`item`") && err.contains("hash_buckets"), "{err}");
}

/// A text column fills its template per row (nulls as empty strings) and gets the encoder's
/// vector for that text.
#[test]
fn text_columns_embed_their_template() {
    let mut s = source("table.csv");
    s.columns.push(ColumnSpec {
        name: "review".into(),
        kind: ColumnKind::Text { template: Some("{title} ({user})".into()), encoder: "enc".into() },
    });
    let mut opened = 0;
    let loaded = s
        .load(None, &mut |dir: &Path| {
            assert!(dir.ends_with("enc"));
            opened += 1;
            Ok(Box::new(FakeEncoder) as Box<dyn TextEmbedder>)
        })
        .unwrap();
    assert!(opened >= 1);
    let d = &loaded.dataset;
    assert_eq!(d.schema.text[0].dim, 2);
    let raw = rows();
    let train: Vec<&Vec<String>> = raw.iter().enumerate().filter(|(i, _)| i % 5 < 3).map(|(_, r)| r).collect();
    for (k, r) in train.iter().enumerate() {
        let text = format!("{} ({})", r[5], r[0]);
        assert_eq!(&d.train.text[k * 2..k * 2 + 2], &[text.len() as f32, text.matches(' ').count() as f32], "{text:?}");
    }
}

/// Writes `csv` as a file and loads it with the fixture's columns (possibly changed by `edit`).
pub(crate) fn load_text(csv: &str, edit: impl Fn(&mut TableSource)) -> Result<LoadedTable, DataError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.csv"), csv).unwrap();
    let mut s = source("t.csv");
    s.dir = dir.path().to_path_buf();
    edit(&mut s);
    s.load(None, &mut no_text)
}

/// The fixture as CSV text, record 2 (line 4: the records before it are one line each)
/// changed by `edit` (its cells in file order).
pub(crate) fn csv_with(edit: impl Fn(&mut Vec<String>)) -> String {
    let text = std::fs::read_to_string(fixture("table.csv")).unwrap();
    let header = text.lines().next().unwrap().to_string();
    let mut records = rows();
    edit(&mut records[2]);
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(header.split(',')).unwrap();
    for r in &records {
        w.write_record(r).unwrap();
    }
    String::from_utf8(w.into_inner().unwrap()).unwrap()
}

/// One case per bad input; each error names the file, the line or row, and the column.
#[test]
fn bad_inputs_are_named_errors() {
    let good = std::fs::read_to_string(fixture("table.csv")).unwrap();
    let set = |col: usize, value: &'static str| csv_with(move |r| r[col] = value.to_string());
    let short = csv_with(|_| {})
        .lines()
        .enumerate()
        .map(|(i, l)| if i == 3 { "u1,101".to_string() } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    let cases: Vec<(&str, Result<LoadedTable, DataError>, Vec<&str>)> = vec![
        ("wrong field count", load_text(&short, |_| {}), vec!["t.csv:4:", "expected 10 fields", "found 2"]),
        ("unterminated quote", load_text(&(good.clone() + "u2,\"never closed,1\n"), |_| {}), vec!["t.csv:"]),
        (
            "missing column",
            load_text(&good.replacen("price", "cost", 1), |_| {}),
            vec!["t.csv", "no column \"price\"", "\"cost\""],
        ),
        (
            "another delimiter",
            load_text(&good.replace(',', ";"), |_| {}),
            vec!["t.csv", "no column", "separated by ';'", "data.csv.delimiter = ';'"],
        ),
        (
            "not a number",
            load_text(&set(4, "cheap"), |_| {}),
            vec!["t.csv: line 4: column \"price\"", "not a number: \"cheap\""],
        ),
        (
            "not a number, CRLF line breaks",
            load_text(&set(4, "cheap").replace('\n', "\r\n"), |_| {}),
            vec!["t.csv: line 4: column \"price\"", "not a number: \"cheap\""],
        ),
        (
            "not a number, byte-order mark and CRLF",
            load_text(&format!("\u{feff}{}", set(4, "cheap").replace('\n', "\r\n")), |_| {}),
            vec!["t.csv: line 4: column \"price\"", "not a number: \"cheap\""],
        ),
        (
            "NaN without fill",
            load_text(&set(4, "NaN"), |_| {}),
            vec!["line 4: column \"price\"", "missing value (NaN)", "fill"],
        ),
        ("inf", load_text(&set(3, "inf"), |_| {}), vec!["line 4: column \"age\"", "not finite"]),
        ("null without fill", load_text(&set(4, ""), |_| {}), vec!["line 4: column \"price\"", "missing value (null)"]),
        (
            "label outside the set",
            load_text(&set(7, "2"), |_| {}),
            vec!["line 4: column \"click\"", "\"2\" is neither positive"],
        ),
        ("unknown class", load_text(&set(6, "6"), |_| {}), vec!["line 4: column \"rating\"", "not one of the classes"]),
        ("missing label", load_text(&set(6, ""), |_| {}), vec!["line 4: column \"rating\"", "missing"]),
        (
            "empty split",
            load_text(&good, |s| s.split = Some(SplitRule::RowMod { modulus: 5, valid: vec![3], test: vec![] })),
            vec!["the test split is empty"],
        ),
        (
            "one class in validation",
            load_text(&good, |s| {
                s.tasks[0].positive = vec![crate::LabelValue::Int(7)];
                s.tasks[0].negative = vec![];
            }),
            vec!["`click`", "valid split holds only label 0"],
        ),
    ];
    for (name, result, expected) in cases {
        let message = match result {
            Ok(_) => panic!("{name}: loaded"),
            Err(e) => e.to_string(),
        };
        for part in expected {
            assert!(message.contains(part), "{name}: {message:?} lacks {part:?}");
        }
    }
    // a Parquet column of a type mtrec does not read
    let mut s = source("list_column.parquet");
    s.columns = vec![ColumnSpec {
        name: "tags".into(),
        kind: ColumnKind::Categorical { min_count: 1, hash_buckets: None, hash_table: None },
    }];
    s.tasks.truncate(1);
    s.group_by = None;
    let e = s.load(None, &mut no_text).unwrap_err().to_string();
    assert!(e.contains("list_column.parquet") && e.contains("\"tags\"") && e.contains("List"), "{e}");
    // a missing file
    let e = source("nothing.csv").load(None, &mut no_text).unwrap_err().to_string();
    assert!(e.contains("nothing.csv"), "{e}");
}

/// The second load of the same table comes from the cache, equal to the first; a changed file
/// misses it.
#[test]
fn the_cache_is_hit_then_missed_when_a_file_changes() {
    let cache = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("table.csv"), data.path().join("t.csv")).unwrap();
    let mut s = source("t.csv");
    s.dir = data.path().to_path_buf();
    let (first, outcome) = s.load_cached(None, Some(cache.path()), &mut no_text).unwrap();
    assert!(matches!(outcome, crate::CacheOutcome::Written(_)), "{outcome:?}");
    let (second, outcome) = s.load_cached(None, Some(cache.path()), &mut no_text).unwrap();
    assert!(matches!(outcome, crate::CacheOutcome::Hit(_)), "{outcome:?}");
    assert_eq!(first.dataset.train, second.dataset.train);
    assert_eq!(first.preprocessing, second.preprocessing);
    let text = std::fs::read_to_string(data.path().join("t.csv")).unwrap().replacen("u3,118", "u3,119", 1);
    std::fs::write(data.path().join("t.csv"), text).unwrap();
    let (_, outcome) = s.load_cached(None, Some(cache.path()), &mut no_text).unwrap();
    assert!(matches!(outcome, crate::CacheOutcome::Written(_)), "a changed file must miss: {outcome:?}");
}

/// `fill = "mean"` / `"median"`: a missing price takes the mean or median of the present prices of
/// the training rows (validation and test rows never count), in the training and the validation
/// split alike; the fitted value is saved with the preprocessing, and a file scored with it fills
/// its missing cells with that value. Another name is an error naming it; `fill = 0` is a number.
#[test]
fn dense_fill_statistics_come_from_the_training_rows() {
    let mut records = rows();
    let price = 4; // the file's price column
    (records[2][price], records[3][price]) = (String::new(), String::new()); // a train and a valid row
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(std::fs::read_to_string(fixture("table.csv")).unwrap().lines().next().unwrap().split(',')).unwrap();
    records.iter().for_each(|r| w.write_record(r).unwrap());
    let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
    let mut train: Vec<f32> = (records.iter().enumerate())
        .filter(|(i, r)| i % 5 < 3 && !r[price].is_empty())
        .map(|(_, r)| r[price].parse().unwrap())
        .collect();
    train.sort_unstable_by(f32::total_cmp);
    let mean = train.iter().map(|&v| v as f64).sum::<f64>() / train.len() as f64;
    let at = 0.5 * (train.len() - 1) as f64;
    let (i, frac) = (at.floor() as usize, at.fract());
    let median = train[i] as f64 + frac * (train[i + 1] as f64 - train[i] as f64);
    for (fill, want) in [(crate::DenseFill::Mean, mean), (crate::DenseFill::Median, median)] {
        let with_fill = |s: &mut TableSource| {
            let column = s.columns.iter_mut().find(|c| c.name == "price").unwrap();
            column.kind =
                ColumnKind::Dense { transform: crate::DenseTransform::None, fill: Some(fill), clip_quantiles: None };
        };
        let loaded = load_text(&text, with_fill).unwrap();
        let (train_row, valid_row) = (&loaded.dataset.train.dense[2 * 2 + 1], &loaded.dataset.valid.dense[1]);
        assert!(((*train_row as f64) - want).abs() < 1e-4 * want, "{fill:?}: train {train_row} vs {want}");
        assert!(((*valid_row as f64) - want).abs() < 1e-4 * want, "{fill:?}: valid {valid_row} vs {want}");
        let saved = loaded.preprocessing.columns.iter().find(|c| c.name() == "price").unwrap();
        assert!(matches!(saved, FittedColumn::Dense { fill: Some(f), .. } if (f - want).abs() < 1e-9), "{saved:?}");
        // a file whose other prices are all 1, scored with the saved preprocessing: its missing
        // price takes the saved value, not one fitted on this file (1)
        let dir = tempfile::tempdir().unwrap();
        let mut w = csv::Writer::from_writer(Vec::new());
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        w.write_record(reader.headers().unwrap()).unwrap();
        for record in reader.records() {
            let mut r: Vec<String> = record.unwrap().iter().map(str::to_string).collect();
            if !r[price].is_empty() {
                r[price] = "1".into();
            }
            w.write_record(&r).unwrap();
        }
        std::fs::write(dir.path().join("t.csv"), w.into_inner().unwrap()).unwrap();
        let mut scored = source("t.csv");
        scored.dir = dir.path().to_path_buf();
        with_fill(&mut scored);
        let again = scored.load(Some(&loaded.preprocessing), &mut no_text).unwrap();
        assert_eq!(again.dataset.valid.dense[1], loaded.dataset.valid.dense[1], "{fill:?}: the saved value");
        assert_eq!(again.dataset.valid.dense[3], 1.0, "{fill:?}: a present price as it is");
    }
    let spelled = |fill: &str| toml::from_str::<ColumnSpec>(&format!("name = \"x\"\nkind = \"dense\"\nfill = {fill}"));
    let e = spelled("\"mode\"").unwrap_err().to_string();
    assert!(e.contains("fill = \"mode\"") && e.contains("\"median\""), "{e}");
    let zero = spelled("0").unwrap();
    assert!(matches!(zero.kind, ColumnKind::Dense { fill: Some(crate::DenseFill::Value(v)), .. } if v == 0.0));
}
