//! UCI Census-Income (KDD) under the `census-mmoe` protocol of the MMoE paper (Ma et al., KDD 2018).
//!
//! The protocol, exactly as in `PROTOCOL.md` beside the data:
//! - tasks (group 1): `income` (field 41 starts with `50000+`) and `never_married` (field 7 is
//!   `Never married`); group 2 replaces `income` by `college` (field 4, education, is any college
//!   level: some college, associates, bachelors, masters, professional school or doctorate);
//! - inputs: every field except 4 (education), 7 (marital status), 24 (instance weight) and 41 (label);
//!   7 dense fields min-max scaled with the TRAIN min/max and clipped to `[0, 1]`; the 31 others are
//!   categorical, vocabulary from TRAIN only in order of first appearance, unseen values map to id 0;
//! - splits: train = `census-income.data`; the rows of `census-income.test` with even 0-based index
//!   form the validation split, the odd ones the test split.
//!
//! The gzipped files are read directly; every malformed record is reported with its file and line.

use std::{
    collections::HashMap,
    fs::File,
    io::{BufReader, Read},
    path::{Path, PathBuf},
};

use flate2::read::GzDecoder;
use md5::{Digest, Md5};

use crate::{CategoricalField, DataError, EncodedTable, MtlDataset, Schema, TaskKind, TaskSpec};

/// The two data files, their expected md5 (of the decompressed bytes) and row counts.
pub const CENSUS_FILES: [(&str, &str, usize); 2] = [
    ("census-income.data.gz", "887f4dc410a99bc332bddbb0a4195b88", 199_523),
    ("census-income.test.gz", "b82952d217858365c8e597827e3e5468", 99_762),
];

/// The 42 column names, in file order.
const COLUMNS: [&str; 42] = [
    "age",
    "class_of_worker",
    "detailed_industry_recode",
    "detailed_occupation_recode",
    "education",
    "wage_per_hour",
    "enroll_in_edu_inst_last_wk",
    "marital_stat",
    "major_industry_code",
    "major_occupation_code",
    "race",
    "hispanic_origin",
    "sex",
    "member_of_a_labor_union",
    "reason_for_unemployment",
    "full_or_part_time_employment_stat",
    "capital_gains",
    "capital_losses",
    "dividends_from_stocks",
    "tax_filer_stat",
    "region_of_previous_residence",
    "state_of_previous_residence",
    "detailed_household_and_family_stat",
    "detailed_household_summary_in_household",
    "instance_weight",
    "migration_code_change_in_msa",
    "migration_code_change_in_reg",
    "migration_code_move_within_reg",
    "live_in_this_house_1_year_ago",
    "migration_prev_res_in_sunbelt",
    "num_persons_worked_for_employer",
    "family_members_under_18",
    "country_of_birth_father",
    "country_of_birth_mother",
    "country_of_birth_self",
    "citizenship",
    "own_business_or_self_employed",
    "fill_inc_questionnaire_for_veterans_admin",
    "veterans_benefits",
    "weeks_worked_in_year",
    "year",
    "income_label",
];
const EDUCATION: usize = 4;
const MARITAL: usize = 7;
const INSTANCE_WEIGHT: usize = 24;
const LABEL: usize = 41;
const SEX: usize = 12;
const DENSE: [usize; 7] = [0, 5, 16, 17, 18, 30, 39];
const COLLEGE: [&str; 7] = [
    "Some college but no degree",
    "Associates degree-academic program",
    "Associates degree-occup /vocational",
    "Bachelors degree(BA AB BS)",
    "Masters degree(MA MS MEng MEd MSW MBA)",
    "Prof school degree (MD DDS DVM LLB JD)",
    "Doctorate degree(PhD EdD)",
];

/// Which task pair of the MMoE paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CensusGroup {
    /// `income` and `never_married`.
    #[default]
    Income,
    /// `college` and `never_married`.
    College,
}

/// Loader of the census data under the `census-mmoe` protocol.
#[derive(Debug, Clone)]
pub struct CensusIncome {
    dir: PathBuf,
    group: CensusGroup,
    adversarial_sex: bool,
}

impl CensusIncome {
    /// A loader reading `census-income.data.gz` and `census-income.test.gz` from `dir`.
    pub fn new(dir: impl Into<PathBuf>, group: CensusGroup) -> Self {
        Self { dir: dir.into(), group, adversarial_sex: false }
    }

    /// Adds the adversarial task `sex` (1 = female, field 12) after the two tasks, and removes `sex`
    /// from the inputs (30 categorical fields): the fairness use, where the shared representation
    /// should not let a head recover it.
    pub fn with_adversarial_sex(mut self, on: bool) -> Self {
        self.adversarial_sex = on;
        self
    }

    /// The categorical input columns (field indices), in encoding order.
    fn categorical_columns(without_sex: bool) -> Vec<usize> {
        (0..42)
            .filter(|c| ![EDUCATION, MARITAL, INSTANCE_WEIGHT, LABEL].contains(c) && !DENSE.contains(c))
            .filter(|&c| !(without_sex && c == SEX))
            .collect()
    }

    /// Reads, encodes and splits the data.
    pub fn load(&self) -> Result<MtlDataset, DataError> {
        let train_path = self.dir.join(CENSUS_FILES[0].0);
        let test_path = self.dir.join(CENSUS_FILES[1].0);
        let mut encoder = Encoder::new(self.group, self.adversarial_sex);
        let mut train = EncodedTable::default();
        let mut raw_dense_train = Vec::new();
        for_each_record(&train_path, |fields, line| {
            encoder.encode(fields, line, &train_path, true, &mut train, &mut raw_dense_train)
        })?;
        let mut test = EncodedTable::default();
        let mut raw_dense_test = Vec::new();
        for_each_record(&test_path, |fields, line| {
            encoder.encode(fields, line, &test_path, false, &mut test, &mut raw_dense_test)
        })?;
        if train.n_rows == 0 {
            return Err(DataError::Invalid(format!("{} holds no records", train_path.display())));
        }
        let (lo, hi) = min_max(&raw_dense_train, DENSE.len());
        train.dense = scale(&raw_dense_train, &lo, &hi);
        test.dense = scale(&raw_dense_test, &lo, &hi);
        let widths = crate::RowWidths {
            categorical: encoder.vocabs.len(),
            dense: DENSE.len(),
            tasks: 2 + usize::from(self.adversarial_sex),
            ..Default::default()
        };
        let valid = test.filter_rows(widths, |i| i % 2 == 0);
        let test = test.filter_rows(widths, |i| i % 2 == 1);
        let first_task = match self.group {
            CensusGroup::Income => "income",
            CensusGroup::College => "college",
        };
        let schema = Schema::new(
            Self::categorical_columns(self.adversarial_sex)
                .iter()
                .zip(&encoder.vocabs)
                .map(|(&c, v)| CategoricalField { name: COLUMNS[c].to_string(), vocab_size: v.len() + 1 })
                .collect(),
            DENSE.iter().map(|&c| COLUMNS[c].to_string()).collect(),
            [first_task, "never_married"]
                .iter()
                .map(|n| TaskSpec::new(*n, TaskKind::Binary))
                .chain(
                    self.adversarial_sex
                        .then(|| TaskSpec { adversarial: true, ..TaskSpec::new("sex", TaskKind::Binary) }),
                )
                .collect(),
        );
        let name = match self.group {
            CensusGroup::Income => "census-mmoe",
            CensusGroup::College => "census-mmoe-college",
        };
        Ok(MtlDataset { name: name.into(), schema, train, valid, test })
    }

    /// Checks that both files exist in `dir` and have the md5s of the protocol; names the first
    /// file that does not.
    pub fn verify(dir: &Path) -> Result<(), DataError> {
        for (file, md5, _) in CENSUS_FILES {
            let path = dir.join(file);
            let got = census_md5_hex(&path)?;
            if got != md5 {
                return Err(DataError::Invalid(format!(
                    "{}: md5 of the decompressed data is {got}, expected {md5}",
                    path.display()
                )));
            }
        }
        Ok(())
    }
}

/// md5 (hex) of the decompressed content of a gzipped file.
pub fn census_md5_hex(path: &Path) -> Result<String, DataError> {
    let io = |source| DataError::Io { path: path.to_path_buf(), source };
    let mut gz = GzDecoder::new(BufReader::new(File::open(path).map_err(io)?));
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = gz.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Calls `f(fields, line)` for every record of a gzipped census file, after checking its field count.
fn for_each_record(
    path: &Path,
    mut f: impl FnMut(&csv::StringRecord, u64) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let file = File::open(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .quoting(false)
        .trim(csv::Trim::All)
        .from_reader(GzDecoder::new(BufReader::new(file)));
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                let line = record.position().map_or(0, |p| p.line());
                if record.len() != COLUMNS.len() {
                    return Err(DataError::Malformed {
                        path: path.to_path_buf(),
                        line,
                        message: format!(
                            "expected {} fields separated by \", \", found {}",
                            COLUMNS.len(),
                            record.len()
                        ),
                    });
                }
                f(&record, line)?;
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                let message = match e.kind() {
                    csv::ErrorKind::Io(io) => format!("read error: {io}"),
                    _ => e.to_string(),
                };
                return Err(DataError::Malformed { path: path.to_path_buf(), line, message });
            }
        }
    }
}

/// Builds the train vocabularies while encoding train, then encodes test with them frozen.
struct Encoder {
    group: CensusGroup,
    sex_label: bool,
    columns: Vec<usize>,
    vocabs: Vec<HashMap<String, u32>>,
}

impl Encoder {
    fn new(group: CensusGroup, sex_label: bool) -> Self {
        let columns = CensusIncome::categorical_columns(sex_label);
        let vocabs = vec![HashMap::new(); columns.len()];
        Self { group, sex_label, columns, vocabs }
    }

    fn encode(
        &mut self,
        fields: &csv::StringRecord,
        line: u64,
        path: &Path,
        grow_vocab: bool,
        table: &mut EncodedTable,
        raw_dense: &mut Vec<f32>,
    ) -> Result<(), DataError> {
        let malformed = |message: String| DataError::Malformed { path: path.to_path_buf(), line, message };
        for &c in &DENSE {
            let value: f32 = fields[c]
                .parse()
                .map_err(|_| malformed(format!("field {c} ({}) is not a number: {:?}", COLUMNS[c], &fields[c])))?;
            if !value.is_finite() {
                return Err(malformed(format!("field {c} ({}) is not finite: {:?}", COLUMNS[c], &fields[c])));
            }
            raw_dense.push(value);
        }
        for (vocab, &c) in self.vocabs.iter_mut().zip(&self.columns) {
            let value = &fields[c];
            let id = match vocab.get(value) {
                Some(&id) => id,
                None if grow_vocab => {
                    let id = vocab.len() as u32 + 1;
                    vocab.insert(value.to_string(), id);
                    id
                }
                None => 0,
            };
            table.categorical.push(id);
        }
        let label = &fields[LABEL];
        let income = match label {
            "50000+." => 1.0,
            "- 50000." => 0.0,
            other => {
                return Err(malformed(format!(
                    "field 41 (income label) is {other:?}, expected \"- 50000.\" or \"50000+.\""
                )));
            }
        };
        let first = match self.group {
            CensusGroup::Income => income,
            CensusGroup::College => f32::from(COLLEGE.contains(&&fields[EDUCATION])),
        };
        table.labels.push(first);
        table.labels.push(f32::from(&fields[MARITAL] == "Never married"));
        if self.sex_label {
            let female = match &fields[SEX] {
                "Female" => 1.0,
                "Male" => 0.0,
                other => {
                    return Err(malformed(format!("field 12 (sex) is {other:?}, expected \"Female\" or \"Male\"")));
                }
            };
            table.labels.push(female);
        }
        table.n_rows += 1;
        Ok(())
    }
}

fn min_max(raw: &[f32], width: usize) -> (Vec<f32>, Vec<f32>) {
    let mut lo = vec![f32::INFINITY; width];
    let mut hi = vec![f32::NEG_INFINITY; width];
    for row in raw.chunks_exact(width) {
        for (j, &v) in row.iter().enumerate() {
            lo[j] = lo[j].min(v);
            hi[j] = hi[j].max(v);
        }
    }
    (lo, hi)
}

fn scale(raw: &[f32], lo: &[f32], hi: &[f32]) -> Vec<f32> {
    let width = lo.len();
    raw.iter()
        .enumerate()
        .map(|(i, &v)| {
            let j = i % width;
            ((v - lo[j]) / (hi[j] - lo[j]).max(1e-12)).clamp(0.0, 1.0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;

    /// The committed fixture, found from the package directory at run time: a test binary reused
    /// from a shared target directory may have been compiled in another checkout.
    fn fixture() -> std::path::PathBuf {
        let dir = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
        std::path::Path::new(&dir).join("tests/fixtures/census-small")
    }

    fn write_gz(path: &Path, text: &str) {
        let mut gz = GzEncoder::new(File::create(path).unwrap(), Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        gz.finish().unwrap();
    }

    #[test]
    fn fixture_rows_parse_into_the_protocol_layout() {
        let ds = CensusIncome::new(fixture(), CensusGroup::Income).load().unwrap();
        assert_eq!(ds.schema.categorical.len(), 31);
        assert_eq!(ds.schema.dense.len(), 7);
        assert_eq!(ds.train.n_rows, 200);
        assert_eq!(ds.valid.n_rows + ds.test.n_rows, 100);
        assert_eq!(ds.valid.n_rows, 50);
        assert_eq!(ds.train.categorical.len(), 200 * 31);
        // Dense features are min-max scaled on train: each column spans exactly [0, 1] there.
        for j in 0..7 {
            let col: Vec<f32> = ds.train.dense.iter().skip(j).step_by(7).copied().collect();
            let (lo, hi) = col.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            assert_eq!(lo, 0.0, "column {j}");
            assert!(hi == 1.0 || hi == 0.0, "column {j}: max {hi}");
        }
        // The first train row is a 73-year-old widow earning below 50k: labels (0, 0).
        assert_eq!(&ds.train.labels[0..2], &[0.0, 0.0]);
        // Train ids are never out of vocabulary; first appearance gets id 1.
        assert!(ds.train.categorical.iter().all(|&id| id >= 1));
        assert!(ds.train.categorical[..31].iter().all(|&id| id == 1));
        for (f, field) in ds.schema.categorical.iter().enumerate() {
            let max = ds.train.categorical.iter().skip(f).step_by(31).max().unwrap();
            assert_eq!(*max as usize + 1, field.vocab_size, "{}", field.name);
        }
    }

    /// The adversarial variant: `sex` leaves the inputs and becomes a third, adversarial task; the
    /// other labels are unchanged; `cascade` turns task 2 into income AND never married.
    #[test]
    fn adversarial_sex_and_cascade_variants() {
        let plain = CensusIncome::new(fixture(), CensusGroup::Income).load().unwrap();
        let ds = CensusIncome::new(fixture(), CensusGroup::Income).with_adversarial_sex(true).load().unwrap();
        assert_eq!(ds.schema.categorical.len(), 30);
        assert!(ds.schema.categorical.iter().all(|f| f.name != "sex"));
        assert_eq!(ds.schema.tasks.len(), 3);
        assert!(ds.schema.tasks[2].adversarial && ds.schema.tasks[2].name == "sex");
        assert_eq!(ds.train.label_column(0, 3), plain.train.label_column(0, 2));
        assert_eq!(ds.train.label_column(1, 3), plain.train.label_column(1, 2));
        // the first train row is a woman
        assert_eq!(ds.train.labels[2], 1.0);
        let female = ds.train.label_column(2, 3).iter().sum::<f32>() / 200.0;
        assert!((0.3..0.7).contains(&female), "female share {female}");

        let cascade = ds.into_cascade().unwrap();
        assert_eq!(cascade.schema.tasks[1].name, "income_and_never_married");
        assert_eq!(cascade.schema.tasks[2].name, "sex");
        let (y0, y1) = (plain.test.label_column(0, 2), plain.test.label_column(1, 2));
        let both: Vec<f32> = y0.iter().zip(&y1).map(|(a, b)| a * b).collect();
        assert_eq!(cascade.test.label_column(1, 3), both);
        assert_eq!(cascade.test.label_column(0, 3), y0);
    }

    #[test]
    fn unseen_test_values_map_to_the_reserved_id() {
        let dir = tempfile::tempdir().unwrap();
        let train = "73, Not in universe, 0, 0, High school graduate, 0, Not in universe, Widowed, Not in universe or children, Not in universe, White, All other, Female, Not in universe, Not in universe, Not in labor force, 0, 0, 0, Nonfiler, Not in universe, Not in universe, Other Rel 18+ ever marr not in subfamily, Other relative of householder, 1700.09, ?, ?, ?, Not in universe under 1 year old, ?, 0, Not in universe, United-States, United-States, United-States, Native- Born in the United States, 0, Not in universe, 2, 0, 95, - 50000.\n";
        let test = train.replace("White", "Martian").replace("Widowed", "Never married").replace("- 50000.", "50000+.");
        write_gz(&dir.path().join(CENSUS_FILES[0].0), train);
        write_gz(&dir.path().join(CENSUS_FILES[1].0), &format!("{test}{test}"));
        let ds = CensusIncome::new(dir.path(), CensusGroup::Income).load().unwrap();
        let race = ds.schema.categorical.iter().position(|f| f.name == "race").unwrap();
        assert_eq!(ds.valid.categorical[race], 0);
        assert_eq!(ds.valid.categorical.iter().filter(|&&id| id == 0).count(), 1);
        assert_eq!(ds.valid.labels, vec![1.0, 1.0]);
    }

    #[test]
    fn malformed_line_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let good = std::fs::read(fixture().join(CENSUS_FILES[0].0)).unwrap();
        let mut text = String::new();
        GzDecoder::new(&good[..]).read_to_string(&mut text).unwrap();
        let mut lines: Vec<String> = text.lines().take(5).map(String::from).collect();
        lines[3] = lines[3].rsplitn(3, ", ").last().unwrap().to_string(); // last two fields cut: 40 fields
        write_gz(&dir.path().join(CENSUS_FILES[0].0), &(lines.join("\n") + "\n"));
        write_gz(&dir.path().join(CENSUS_FILES[1].0), &(lines[0].clone() + "\n"));
        let err = CensusIncome::new(dir.path(), CensusGroup::Income).load().unwrap_err().to_string();
        assert!(err.contains("census-income.data.gz:4:"), "{err}");
        assert!(err.contains("found 40"), "{err}");

        lines[3] = lines[0].replacen("73,", "seventy,", 1);
        write_gz(&dir.path().join(CENSUS_FILES[0].0), &(lines.join("\n") + "\n"));
        let err = CensusIncome::new(dir.path(), CensusGroup::Income).load().unwrap_err().to_string();
        assert!(err.contains(":4: field 0 (age) is not a number"), "{err}");

        lines[3] = lines[0].replacen("73,", "NaN,", 1);
        write_gz(&dir.path().join(CENSUS_FILES[0].0), &(lines.join("\n") + "\n"));
        let err = CensusIncome::new(dir.path(), CensusGroup::Income).load().unwrap_err().to_string();
        assert!(err.contains(":4: field 0 (age) is not finite"), "{err}");
    }

    #[test]
    fn missing_file_is_named() {
        let err = CensusIncome::new("/nonexistent/census", CensusGroup::Income).load().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/census/census-income.data.gz"), "{err}");
    }

    /// The full data, from `MTREC_CENSUS_DIR` (set by `.ci/run`); skipped with a message otherwise.
    #[test]
    fn full_census_counts_and_positive_rates() {
        let Some(dir) = std::env::var_os("MTREC_CENSUS_DIR") else {
            eprintln!("SKIP full_census_counts_and_positive_rates: set MTREC_CENSUS_DIR to the census-income folder");
            return;
        };
        CensusIncome::verify(Path::new(&dir)).unwrap();
        let ds = CensusIncome::new(&dir, CensusGroup::Income).load().unwrap();
        assert_eq!((ds.train.n_rows, ds.valid.n_rows, ds.test.n_rows), (199_523, 49_881, 49_881));
        let rate = |t: usize| ds.train.label_column(t, 2).iter().sum::<f32>() / ds.train.n_rows as f32;
        assert!((rate(0) - 0.062).abs() < 0.002, "income rate {}", rate(0));
        assert!((rate(1) - 0.43).abs() < 0.01, "never married rate {}", rate(1));
        assert_eq!(ds.schema.categorical.len(), 31);
        let college = CensusIncome::new(&dir, CensusGroup::College).load().unwrap();
        assert_eq!(college.schema.tasks[0].name, "college");
        let c = college.train.label_column(0, 2).iter().sum::<f32>() / college.train.n_rows as f32;
        assert!(c > 0.2 && c < 0.45, "college rate {c}");
    }
}
