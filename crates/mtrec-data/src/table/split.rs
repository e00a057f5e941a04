//! Split rules: which rows of a table are training, validation and test rows.
//!
//! Every rule is deterministic and decides each row on its own (from its position or its cells),
//! so a file read batch by batch is split exactly as one read whole, and the three splits are
//! disjoint by construction:
//! - `row_mod`: row `i` (0-based, in file order, counted over all the files of `path` in order)
//!   goes to validation if `i % modulus` is in `valid`, to test if it is in `test`, else to train;
//! - `random`: row `i` draws `u = splitmix64(seed ⊕ i) / 2⁶⁴`; `u < test` is test,
//!   `u < test + valid` validation, the rest train (a fixed, documented generator: the same seed
//!   gives the same split on every machine and in every language);
//! - `column`: a column whose value names the split (`train`, `valid`, `test`, or the values
//!   configured for each);
//! - `time`: a column compared with two cuts, `train < valid_from ≤ valid < test_from ≤ test` (numbers,
//!   or strings compared as text, e.g. ISO dates). A row whose time is missing (null, or NaN for
//!   numeric cuts) has no place on the time line: an error naming file, line and column, unless
//!   `missing = "train"` (such rows train) or `missing = "drop"` (they are left out, counted in a
//!   warning). A time that is not a number where the cuts are numbers is always an error.

use serde::{Deserialize, Serialize};

/// One of the three splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitName {
    /// Training rows (vocabularies and scalers are fitted here).
    Train,
    /// Validation rows (model selection).
    Valid,
    /// Test rows (evaluated once).
    Test,
}

impl SplitName {
    /// All three, in order.
    pub const ALL: [SplitName; 3] = [Self::Train, Self::Valid, Self::Test];

    /// `train`, `valid` or `test`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Valid => "valid",
            Self::Test => "test",
        }
    }
}

/// A cut of a `time` rule: a number, or a string compared as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Cut {
    /// Compared numerically with the column's values (which must parse as numbers).
    Number(f64),
    /// Compared as text (ISO dates and times order correctly).
    Text(String),
}

fn train_names() -> Vec<String> {
    vec!["train".into()]
}
fn valid_names() -> Vec<String> {
    vec!["valid".into()]
}
fn test_names() -> Vec<String> {
    vec!["test".into()]
}

/// How rows are split (`[data.split]`, `rule = "…"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum SplitRule {
    /// By row index modulo `modulus`.
    RowMod {
        /// The modulus.
        modulus: u64,
        /// Remainders that go to validation.
        valid: Vec<u64>,
        /// Remainders that go to test.
        test: Vec<u64>,
    },
    /// A seeded random draw per row.
    Random {
        /// Fraction of rows in validation.
        valid: f64,
        /// Fraction of rows in test.
        test: f64,
        /// The seed.
        seed: u64,
    },
    /// A column naming each row's split.
    Column {
        /// The column.
        column: String,
        /// Values meaning train (default `["train"]`).
        #[serde(default = "train_names")]
        train: Vec<String>,
        /// Values meaning validation (default `["valid"]`).
        #[serde(default = "valid_names")]
        valid: Vec<String>,
        /// Values meaning test (default `["test"]`).
        #[serde(default = "test_names")]
        test: Vec<String>,
    },
    /// A time column and two cuts.
    Time {
        /// The column.
        column: String,
        /// First value of validation.
        valid_from: Cut,
        /// First value of test.
        test_from: Cut,
        /// Where a row without a time goes (default: it is an error).
        #[serde(default, skip_serializing_if = "MissingTime::is_error")]
        missing: MissingTime,
    },
}

/// Where a `time` rule puts a row whose time is missing (null, or NaN for numeric cuts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingTime {
    /// An error naming file, line and column.
    #[default]
    Error,
    /// The row trains.
    Train,
    /// The row is in no split.
    Drop,
}

impl MissingTime {
    fn is_error(&self) -> bool {
        *self == Self::Error
    }
}

/// splitmix64 (Steele, Lea & Flood 2014): a fixed 64-bit mixing function.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl SplitRule {
    /// Checks the rule's parameters; the message names the key (`data.split.*`).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::RowMod { modulus, valid, test } => {
                if *modulus == 0 {
                    return Err("data.split.modulus must be positive".into());
                }
                if let Some(r) = valid.iter().chain(test).find(|&&r| r >= *modulus) {
                    return Err(format!("data.split: remainder {r} is not below modulus {modulus}"));
                }
                if let Some(r) = valid.iter().find(|r| test.contains(r)) {
                    return Err(format!("data.split: remainder {r} is in both valid and test"));
                }
                Ok(())
            }
            Self::Random { valid, test, .. } => {
                let ok = |f: f64| f.is_finite() && (0.0..=1.0).contains(&f);
                if !ok(*valid) || !ok(*test) || valid + test > 1.0 {
                    return Err(format!(
                        "data.split: valid = {valid} and test = {test} must be fractions in [0, 1] summing to at most 1"
                    ));
                }
                Ok(())
            }
            Self::Column { train, valid, test, .. } => {
                let all: Vec<&String> = train.iter().chain(valid).chain(test).collect();
                match all.iter().enumerate().find(|(i, v)| all[..*i].contains(v)) {
                    Some((_, v)) => Err(format!("data.split: value {v:?} names two splits")),
                    None => Ok(()),
                }
            }
            Self::Time { valid_from, test_from, .. } => match (valid_from, test_from) {
                (Cut::Number(a), Cut::Number(b)) if a.is_nan() || b.is_nan() => {
                    Err("data.split: valid_from and test_from must be numbers, not NaN".into())
                }
                (Cut::Number(a), Cut::Number(b)) if a <= b => Ok(()),
                (Cut::Text(a), Cut::Text(b)) if a <= b => Ok(()),
                _ => Err(format!(
                    "data.split: valid_from ({valid_from:?}) and test_from ({test_from:?}) must be of one kind \
                     (numbers or strings) with valid_from ≤ test_from"
                )),
            },
        }
    }

    /// The column the rule reads, if any.
    pub fn column(&self) -> Option<&str> {
        match self {
            Self::Column { column, .. } | Self::Time { column, .. } => Some(column),
            _ => None,
        }
    }

    /// The split of row `row` (0-based), whose rule column holds `cell` (`None`: null, or no rule
    /// column); `None` when the row is in no split (`missing = "drop"`). An `Err` says why the row
    /// cannot be placed (the caller adds file and line).
    pub fn assign(&self, row: u64, cell: Option<&str>) -> Result<Option<SplitName>, String> {
        if let Self::Time { column, valid_from, missing, .. } = self {
            let nan = matches!(valid_from, Cut::Number(_))
                && cell.is_some_and(|v| v.trim().parse::<f64>().is_ok_and(f64::is_nan));
            if cell.is_none() || nan {
                let what = if nan { "NaN" } else { "null" };
                return match missing {
                    MissingTime::Error => Err(format!(
                        "the time column {column:?} is {what}: a row without a time has no split (set \
                         data.split.missing = \"train\" or \"drop\" to place such rows)"
                    )),
                    MissingTime::Train => Ok(Some(SplitName::Train)),
                    MissingTime::Drop => Ok(None),
                };
            }
        }
        self.place(row, cell).map(Some)
    }

    fn place(&self, row: u64, cell: Option<&str>) -> Result<SplitName, String> {
        match self {
            Self::RowMod { modulus, valid, test } => {
                let r = row % modulus;
                Ok(if valid.contains(&r) {
                    SplitName::Valid
                } else if test.contains(&r) {
                    SplitName::Test
                } else {
                    SplitName::Train
                })
            }
            Self::Random { valid, test, seed } => {
                let u = (splitmix64(seed ^ row) >> 11) as f64 / (1u64 << 53) as f64;
                Ok(if u < *test {
                    SplitName::Test
                } else if u < test + valid {
                    SplitName::Valid
                } else {
                    SplitName::Train
                })
            }
            Self::Column { column, train, valid, test } => {
                let value = cell.ok_or_else(|| format!("the split column {column:?} is null"))?;
                if train.iter().any(|v| v == value) {
                    Ok(SplitName::Train)
                } else if valid.iter().any(|v| v == value) {
                    Ok(SplitName::Valid)
                } else if test.iter().any(|v| v == value) {
                    Ok(SplitName::Test)
                } else {
                    Err(format!(
                        "the split column {column:?} holds {value:?}, which names no split (train {train:?}, valid \
                         {valid:?}, test {test:?})"
                    ))
                }
            }
            Self::Time { column, valid_from, test_from, .. } => {
                let value = cell.ok_or_else(|| format!("the time column {column:?} is null"))?;
                let before = |cut: &Cut| -> Result<bool, String> {
                    match cut {
                        Cut::Number(c) => value
                            .trim()
                            .parse::<f64>()
                            .map(|v| v < *c)
                            .map_err(|_| format!("the time column {column:?} holds {value:?}, not a number")),
                        Cut::Text(c) => Ok(value < c.as_str()),
                    }
                };
                Ok(if before(valid_from)? {
                    SplitName::Train
                } else if before(test_from)? {
                    SplitName::Valid
                } else {
                    SplitName::Test
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assign_all(rule: &SplitRule, n: u64, cell: impl Fn(u64) -> Option<String>) -> Vec<SplitName> {
        (0..n).map(|i| rule.assign(i, cell(i).as_deref()).unwrap().unwrap()).collect()
    }

    #[test]
    fn row_mod_is_the_wcr_rule() {
        let rule = SplitRule::RowMod { modulus: 10, valid: vec![8], test: vec![9] };
        rule.validate().unwrap();
        let got = assign_all(&rule, 23_486, |_| None);
        let count = |s| got.iter().filter(|&&g| g == s).count();
        // the wcr-mtl protocol's counts
        assert_eq!((count(SplitName::Train), count(SplitName::Valid), count(SplitName::Test)), (18_790, 2_348, 2_348));
        assert_eq!(&got[7..11], &[SplitName::Train, SplitName::Valid, SplitName::Test, SplitName::Train]);
    }

    /// The same seed gives the same split, another seed another; fractions hold; the generator's
    /// first values are pinned (so the split is the same everywhere).
    #[test]
    fn random_split_is_seeded_and_pinned() {
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(1), 0x910a_2dec_8902_5cc1);
        let rule = SplitRule::Random { valid: 0.1, test: 0.2, seed: 7 };
        rule.validate().unwrap();
        let a = assign_all(&rule, 20_000, |_| None);
        assert_eq!(a, assign_all(&rule, 20_000, |_| None));
        let other = assign_all(&SplitRule::Random { valid: 0.1, test: 0.2, seed: 8 }, 20_000, |_| None);
        assert_ne!(a, other);
        let share = |s| a.iter().filter(|&&g| g == s).count() as f64 / 20_000.0;
        assert!((share(SplitName::Test) - 0.2).abs() < 0.01 && (share(SplitName::Valid) - 0.1).abs() < 0.01);
    }

    #[test]
    fn column_and_time_rules() {
        let rule = SplitRule::Column {
            column: "fold".into(),
            train: vec!["a".into()],
            valid: vec!["b".into()],
            test: vec!["c".into(), "d".into()],
        };
        assert_eq!(rule.assign(0, Some("d")), Ok(Some(SplitName::Test)));
        assert!(rule.assign(0, Some("e")).unwrap_err().contains("\"e\""));
        assert!(rule.assign(0, None).unwrap_err().contains("null"));
        let rule = SplitRule::Time {
            column: "t".into(),
            valid_from: Cut::Number(10.0),
            test_from: Cut::Number(20.0),
            missing: MissingTime::Error,
        };
        let got: Vec<SplitName> =
            ["9.5", "10", "19", "20", "31"].iter().map(|v| rule.assign(0, Some(v)).unwrap().unwrap()).collect();
        use SplitName::*;
        assert_eq!(got, vec![Train, Valid, Valid, Test, Test]);
        assert!(rule.assign(0, Some("soon")).unwrap_err().contains("not a number"));
        let rule = SplitRule::Time {
            column: "day".into(),
            valid_from: Cut::Text("2024-03-01".into()),
            test_from: Cut::Text("2024-04-01".into()),
            missing: MissingTime::Error,
        };
        assert_eq!(rule.assign(0, Some("2024-02-29")), Ok(Some(Train)));
        assert_eq!(rule.assign(0, Some("2024-03-15")), Ok(Some(Valid)));
        assert_eq!(rule.assign(0, Some("2024-04-01")), Ok(Some(Test)));
    }

    /// A missing or NaN time is an error naming the column (it went to test before: `NaN < cut` is
    /// false), or goes where `missing` says; an unparseable time is an error whatever `missing` is.
    #[test]
    fn a_row_without_a_time_is_an_error_or_goes_where_missing_says() {
        let rule = |missing| SplitRule::Time {
            column: "t".into(),
            valid_from: Cut::Number(10.0),
            test_from: Cut::Number(20.0),
            missing,
        };
        for cell in [None, Some("NaN"), Some("nan")] {
            let e = rule(MissingTime::Error).assign(0, cell).unwrap_err();
            assert!(e.contains("\"t\"") && e.contains("data.split.missing"), "{cell:?}: {e}");
            assert_eq!(rule(MissingTime::Train).assign(0, cell), Ok(Some(SplitName::Train)), "{cell:?}");
            assert_eq!(rule(MissingTime::Drop).assign(0, cell), Ok(None), "{cell:?}");
        }
        assert!(rule(MissingTime::Drop).assign(0, Some("soon")).unwrap_err().contains("not a number"));
        let text = SplitRule::Time {
            column: "day".into(),
            valid_from: Cut::Text("2024-03-01".into()),
            test_from: Cut::Text("2024-04-01".into()),
            missing: MissingTime::Error,
        };
        assert!(text.assign(0, None).unwrap_err().contains("null"));
        let parsed: SplitRule =
            toml::from_str("rule = \"time\"\ncolumn = \"t\"\nvalid_from = 1\ntest_from = 2\nmissing = \"drop\"\n")
                .unwrap();
        assert!(matches!(parsed, SplitRule::Time { missing: MissingTime::Drop, .. }));
    }

    #[test]
    fn bad_rules_name_the_key() {
        assert!(SplitRule::RowMod { modulus: 0, valid: vec![], test: vec![] }.validate().is_err());
        let e = SplitRule::RowMod { modulus: 2, valid: vec![1], test: vec![1] }.validate().unwrap_err();
        assert!(e.contains("both"), "{e}");
        let e = SplitRule::Random { valid: 0.7, test: 0.5, seed: 1 }.validate().unwrap_err();
        assert!(e.contains("data.split"), "{e}");
        let e = SplitRule::Time {
            column: "t".into(),
            valid_from: Cut::Number(3.0),
            test_from: Cut::Text("x".into()),
            missing: MissingTime::Error,
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("one kind"), "{e}");
    }
}
