//! A task's sample space (`space = "…"` of a `[[data.tasks]]` entry): the rows its label exists on.
//!
//! Real multi-task tables are not rectangles of labels: a rating exists only for purchased items, a
//! conversion only after a click. Outside its space a task's label is *absent* (`NaN` in an
//! [`EncodedTable`](crate::EncodedTable)): the row adds nothing to the task's loss or gradient and
//! is left out of its metrics, while the other tasks train on it as usual.
//!
//! Spellings:
//! - `"labelled"`: the rows whose label cell holds a value (a null label is absent, not an error);
//! - `"<column> <op> <value>"` with `op` one of `==`, `!=`, `<`, `<=`, `>`, `>=`: the rows where the
//!   condition holds, e.g. `"click == 1"`, `"recommended == 1"`, `"country != 'US'"`, `"age >= 18"`.
//!   A value is matched as label values are (`1` matches `1`, `1.0`, `True`; a quoted or non-numeric
//!   value matches the cell's text); order comparisons need numbers. A row whose `column` is null
//!   is outside the space. Inside a condition's space, a missing label is still an error.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::LabelValue;

use super::cell::Cell;

/// How a condition compares the cell with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
    /// `<`
    Less,
    /// `<=`
    LessOrEqual,
    /// `>`
    Greater,
    /// `>=`
    GreaterOrEqual,
}

impl Comparison {
    /// Two-character operators first, so that `<=` is not read as `<`.
    const ALL: [(&'static str, Comparison); 6] = [
        ("==", Comparison::Equal),
        ("!=", Comparison::NotEqual),
        ("<=", Comparison::LessOrEqual),
        (">=", Comparison::GreaterOrEqual),
        ("<", Comparison::Less),
        (">", Comparison::Greater),
    ];

    fn symbol(self) -> &'static str {
        Self::ALL.iter().find(|(_, c)| *c == self).map(|(s, _)| *s).expect("every comparison has a symbol")
    }
}

/// The rows a task's label exists on (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum LabelSpace {
    /// The rows whose label cell holds a value.
    Labelled,
    /// The rows where `column op value` holds.
    Condition {
        /// The column the condition reads.
        column: String,
        /// The comparison.
        op: Comparison,
        /// The value compared with.
        value: LabelValue,
    },
}

impl LabelSpace {
    /// The file column the condition reads (none for `labelled`).
    pub fn column(&self) -> Option<&str> {
        match self {
            Self::Labelled => None,
            Self::Condition { column, .. } => Some(column),
        }
    }

    /// Whether a row is in the space: `label` is the row's label cell, `condition` the cell of
    /// [`Self::column`] (`Null` when there is none). `Err` says why a cell cannot be compared.
    pub(crate) fn contains(&self, label: Cell, condition: Cell) -> Result<bool, String> {
        let Self::Condition { column, op, value } = self else {
            return Ok(label.text().is_some_and(|t| !t.trim().is_empty()));
        };
        if condition == Cell::Null {
            return Ok(false);
        }
        let equal = || super::scan::label_matches(value, condition);
        let order = || -> Result<std::cmp::Ordering, String> {
            let x = condition
                .number_f64()
                .map_err(|m| format!("space \"{self}\": column `{column}` {m}"))?
                .expect("null handled above");
            Ok(x.total_cmp(&value_number(value).expect("validated: order comparisons have numbers")))
        };
        use std::cmp::Ordering::*;
        Ok(match op {
            Comparison::Equal => equal(),
            Comparison::NotEqual => !equal(),
            Comparison::Less => order()? == Less,
            Comparison::LessOrEqual => order()? != Greater,
            Comparison::Greater => order()? == Greater,
            Comparison::GreaterOrEqual => order()? != Less,
        })
    }
}

fn value_number(value: &LabelValue) -> Option<f64> {
    match value {
        LabelValue::Int(i) => Some(*i as f64),
        LabelValue::Float(f) => Some(*f),
        LabelValue::Bool(b) => Some(f64::from(u8::from(*b))),
        LabelValue::Text(_) => None,
    }
}

impl TryFrom<String> for LabelSpace {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let spelled = text.trim();
        if spelled == "labelled" || spelled == "labeled" {
            return Ok(Self::Labelled);
        }
        let usage = "a space is \"labelled\" or \"<column> <op> <value>\" with op one of ==, !=, <, <=, >, >=";
        let Some((at, symbol, op)) =
            Comparison::ALL.iter().filter_map(|(s, op)| spelled.find(s).map(|at| (at, *s, *op))).min_by_key(|m| m.0)
        else {
            return Err(format!("space {text:?}: no comparison; {usage}"));
        };
        let column = spelled[..at].trim().trim_matches('`');
        let raw = spelled[at + symbol.len()..].trim();
        if column.is_empty() || raw.is_empty() {
            return Err(format!("space {text:?}: a column and a value are needed on either side of {symbol}; {usage}"));
        }
        if raw.starts_with(['=', '<', '>', '!']) {
            return Err(format!("space {text:?}: unknown comparison; {usage}"));
        }
        let quoted = raw.len() >= 2
            && ((raw.starts_with('"') && raw.ends_with('"')) || (raw.starts_with('\'') && raw.ends_with('\'')));
        let value = if quoted {
            LabelValue::Text(raw[1..raw.len() - 1].to_string())
        } else if let Ok(i) = raw.parse::<i64>() {
            LabelValue::Int(i)
        } else if let Ok(f) = raw.parse::<f64>() {
            LabelValue::Float(f)
        } else {
            match raw {
                "true" | "True" => LabelValue::Bool(true),
                "false" | "False" => LabelValue::Bool(false),
                _ => LabelValue::Text(raw.to_string()),
            }
        };
        if !matches!(op, Comparison::Equal | Comparison::NotEqual) && value_number(&value).is_none() {
            return Err(format!("space {text:?}: {symbol} compares numbers, and {raw} is not one"));
        }
        Ok(Self::Condition { column: column.to_string(), op, value })
    }
}

impl fmt::Display for LabelSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Labelled => f.write_str("labelled"),
            Self::Condition { column, op, value: LabelValue::Text(t) } => write!(f, "{column} {} '{t}'", op.symbol()),
            Self::Condition { column, op, value } => write!(f, "{column} {} {}", op.symbol(), value.as_text()),
        }
    }
}

impl From<LabelSpace> for String {
    fn from(space: LabelSpace) -> String {
        space.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<LabelSpace, String> {
        LabelSpace::try_from(s.to_string())
    }

    #[test]
    fn spaces_parse_and_print_back() {
        for (text, printed) in [
            ("labelled", "labelled"),
            ("click == 1", "click == 1"),
            ("  recommended==1 ", "recommended == 1"),
            ("age >= 18.5", "age >= 18.5"),
            ("age<=3", "age <= 3"),
            ("country != 'US'", "country != 'US'"),
            ("country == \"a b\"", "country == 'a b'"),
            ("flag == true", "flag == true"),
            ("`Division Name` == General", "Division Name == 'General'"),
        ] {
            let space = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(space.to_string(), printed, "{text}");
            assert_eq!(parse(printed).unwrap(), space, "{printed} reads back");
        }
        assert_eq!(
            parse("x < 2").unwrap(),
            LabelSpace::Condition { column: "x".into(), op: Comparison::Less, value: LabelValue::Int(2) }
        );
    }

    #[test]
    fn bad_spaces_are_refused_with_the_reason() {
        for (text, says) in [
            ("click", "no comparison"),
            ("== 1", "a column and a value"),
            ("click ==", "a column and a value"),
            ("click === 1", "unknown comparison"),
            ("age > young", "compares numbers"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(says) && e.contains(text), "{text}: {e}");
        }
    }

    /// Membership by hand: equality by value whatever the rendering, order on numbers, null
    /// conditions outside, `labelled` = the label cell holds a value.
    #[test]
    fn rows_are_in_the_space_by_hand() {
        let click = parse("click == 1").unwrap();
        let inside = |s: &LabelSpace, c: Cell| s.contains(Cell::Null, c).unwrap();
        assert!(inside(&click, Cell::Text("1")) && inside(&click, Cell::Text("1.0")) && inside(&click, Cell::Int(1)));
        assert!(inside(&click, Cell::Bool(true)) && !inside(&click, Cell::Text("0")) && !inside(&click, Cell::Null));
        let not_us = parse("country != 'US'").unwrap();
        assert!(inside(&not_us, Cell::Text("FR")) && !inside(&not_us, Cell::Text("US")));
        assert!(!inside(&not_us, Cell::Null), "a null condition is outside, also for !=");
        let adult = parse("age >= 18").unwrap();
        assert!(inside(&adult, Cell::Text("18")) && inside(&adult, Cell::Float(40.5)) && !inside(&adult, Cell::Int(3)));
        let e = adult.contains(Cell::Null, Cell::Text("old")).unwrap_err();
        assert!(e.contains("`age`") && e.contains("old"), "{e}");
        let labelled = LabelSpace::Labelled;
        assert!(labelled.contains(Cell::Text("4"), Cell::Null).unwrap());
        assert!(!labelled.contains(Cell::Null, Cell::Null).unwrap());
        assert!(!labelled.contains(Cell::Text(" "), Cell::Null).unwrap());
    }

    /// A condition on the fixture: `stars` (the rating as a class) only on clicked rows. Its label
    /// is NaN exactly on the rows whose `click` is not 1, the class elsewhere, from CSV and from
    /// Parquet alike; the other tasks keep every label; the statistics count the labelled rows and
    /// take the class shares over them — all by hand from the raw rows.
    #[test]
    fn a_condition_leaves_labels_absent_outside_it() {
        use crate::table::source::tests::{no_text, rows, source};
        use crate::{SplitName, TaskSpec};
        let raw = rows();
        let (rating, click) = (6, 7);
        for file in ["table.csv", "table.parquet"] {
            let mut s = source(file);
            s.tasks[1].space = Some(parse("click == 1").unwrap());
            let loaded = s.load(None, &mut no_text).unwrap_or_else(|e| panic!("{file}: {e}"));
            for split in SplitName::ALL {
                let k = split as usize;
                // the fixture's row_mod rule: row i goes to valid where i % 5 = 3, to test where 4
                let mine: Vec<&Vec<String>> = (0..raw.len())
                    .filter(|i| match i % 5 {
                        3 => split == SplitName::Valid,
                        4 => split == SplitName::Test,
                        _ => split == SplitName::Train,
                    })
                    .map(|i| &raw[i])
                    .collect();
                let table = [&loaded.dataset.train, &loaded.dataset.valid, &loaded.dataset.test][k];
                let stars = table.label_column(1, 3);
                assert_eq!(stars.len(), mine.len());
                for (got, row) in stars.iter().zip(&mine) {
                    if row[click].parse::<f64>().ok() == Some(1.0) {
                        assert_eq!(*got, row[rating].parse::<f32>().unwrap() - 1.0, "{file} {split:?}");
                    } else {
                        assert!(got.is_nan(), "{file} {split:?}: a row outside the space has label {got}");
                    }
                }
                assert!(table.label_column(0, 3).iter().all(|y| !y.is_nan()), "click keeps every label");
                let labelled: Vec<f32> = stars.iter().copied().filter(|y| !y.is_nan()).collect();
                let stats = &loaded.stats[k];
                assert_eq!(stats.labelled, vec![("stars".to_string(), labelled.len())], "{file} {split:?}");
                let share_4 = labelled.iter().filter(|&&y| y == 3.0).count() as f64 / labelled.len() as f64;
                assert!((stats.labels[1].1[3] - share_4).abs() < 1e-12, "{file} {split:?}");
                assert!(labelled.len() < mine.len() && !labelled.is_empty(), "the fixture has both kinds of rows");
            }
            let means = crate::SplitRows::label_means(&loaded.dataset.train, 3).unwrap();
            let labelled: Vec<f32> =
                loaded.dataset.train.label_column(1, 3).into_iter().filter(|y| !y.is_nan()).collect();
            let mean = labelled.iter().map(|&y| y as f64).sum::<f64>() / labelled.len() as f64;
            assert!((means[1] - mean).abs() < 1e-9, "label means over the labelled rows: {} vs {mean}", means[1]);
            assert_eq!(loaded.dataset.schema.tasks[1], TaskSpec::multiclass("stars", 5));
        }
    }

    /// `labelled` turns a null label into an absent one (without it, the null is an error that
    /// names the line and the column and points to `space`); a condition on a column the file lacks,
    /// a space that leaves a split without labels, and a space on an adversarial task are refused,
    /// naming what is wrong.
    #[test]
    fn spaces_are_checked_with_named_errors() {
        use crate::table::source::tests::{csv_with, load_text};
        let text = csv_with(|r| r[6] = String::new());
        let e = load_text(&text, |_| {}).unwrap_err().to_string();
        assert!(e.contains("line 4") && e.contains("\"rating\"") && e.contains("space = \"labelled\""), "{e}");
        // the rating column feeds two tasks (stars and rating): both take the space
        let both =
            |s: &mut crate::TableSource| s.tasks[1..].iter_mut().for_each(|t| t.space = Some(LabelSpace::Labelled));
        let loaded = load_text(&text, both).unwrap();
        let rating = loaded.dataset.train.label_column(2, 3);
        assert!(rating[2].is_nan() && rating.iter().filter(|y| y.is_nan()).count() == 1, "{rating:?}");
        let n = rating.len() - 1;
        assert_eq!(loaded.stats[0].labelled, vec![("stars".to_string(), n), ("rating".to_string(), n)]);
        let e = load_text(&csv_with(|_| {}), |s| s.tasks[1].space = Some(parse("missing_column == 1").unwrap()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing_column"), "{e}");
        let rows = csv_with(|_| {});
        let e = load_text(&rows, |s| s.tasks[1].space = Some(parse("price > 1e9").unwrap())).unwrap_err().to_string();
        assert!(e.contains("`stars`") && e.contains("train split holds its label"), "{e}");
        let mut task: crate::TaskColumn = toml::from_str(
            "name = \"s\"\nkind = \"binary\"\npositive = [1]\nadversarial = true\nspace = \"click == 1\"\n",
        )
        .unwrap();
        assert!(task.validate().unwrap_err().contains("adversarial"));
        task.adversarial = false;
        assert_eq!(task.validate(), Ok(()));
        assert_eq!(task.space, Some(parse("click == 1").unwrap()), "read from TOML");
        let bad: Result<crate::TaskColumn, _> = toml::from_str("name = \"s\"\nkind = \"binary\"\nspace = \"click\"\n");
        assert!(bad.unwrap_err().to_string().contains("no comparison"));
    }
}
