//! One cell of a table file, and its one canonical rendering as text.
//!
//! Ids, hashes, label sets, split values and groups are computed from a cell's text, so a cell must
//! render the same whether the table was read from CSV or from Parquet. The canonical rendering is
//! what pandas' `DataFrame.to_csv` writes for the same value, so that a vocabulary fitted on a CSV
//! file applies to the Parquet file of the same frame and the other way round:
//!
//! | cell | rendering |
//! |---|---|
//! | text (every CSV field, Parquet strings) | the text as it is |
//! | signed or unsigned integer | its decimal digits (`18446744073709551615` stays unsigned) |
//! | float64 | Python's `repr`: the shortest digits that read back to the same value, with `.0` on integral values and an exponent outside `1e-4 ≤ |x| < 1e16` (`1.0`, `0.1`, `1e+20`, `1.5e-05`, `inf`) |
//! | float32 | the same with the shortest digits of the *f32* value (`0.1`, not `0.10000000149011612`) |
//! | float NaN | null (pandas writes a missing float as an empty field) |
//! | boolean | `True` / `False` |
//!
//! As a number, a cell reads its text with Rust's `f64` parser (`True`/`False` are 1 and 0); a
//! value beyond the range of `f32`, where the model computes, is an error rather than an infinity.

use std::borrow::Cow;

/// A cell of a configured column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Cell<'a> {
    /// No value.
    Null,
    /// Text (every CSV value; Parquet strings).
    Text(&'a str),
    /// A Parquet signed integer.
    Int(i64),
    /// A Parquet unsigned integer.
    UInt(u64),
    /// A Parquet float64.
    Float(f64),
    /// A Parquet float32.
    Float32(f32),
    /// A Parquet boolean.
    Bool(bool),
}

impl Cell<'_> {
    /// A float cell: NaN is null (see the module docs of `cell.rs`).
    pub(crate) fn float(v: f64) -> Self {
        if v.is_nan() { Cell::Null } else { Cell::Float(v) }
    }

    /// A float32 cell: NaN is null.
    pub(crate) fn float32(v: f32) -> Self {
        if v.is_nan() { Cell::Null } else { Cell::Float32(v) }
    }

    /// The cell's canonical text (see the module docs of `cell.rs`); `None` for null.
    pub(crate) fn text(&self) -> Option<Cow<'_, str>> {
        match *self {
            Cell::Null => None,
            Cell::Text(s) => Some(s.into()),
            Cell::Int(i) => Some(i.to_string().into()),
            Cell::UInt(u) => Some(u.to_string().into()),
            Cell::Float(f) => Some(python_repr(&format!("{f:e}")).into()),
            Cell::Float32(f) => Some(python_repr(&format!("{f:e}")).into()),
            Cell::Bool(b) => Some(if b { "True" } else { "False" }.into()),
        }
    }

    /// The cell as a 64-bit number: `Ok(None)` for null; `Err` names the text that is not one.
    /// `True`/`False` (text or boolean) are 1 and 0.
    pub(crate) fn number_f64(&self) -> Result<Option<f64>, String> {
        match *self {
            Cell::Null => Ok(None),
            Cell::Text(s) => match s.trim() {
                "True" | "true" => Ok(Some(1.0)),
                "False" | "false" => Ok(Some(0.0)),
                t => t.parse::<f64>().map(Some).map_err(|_| format!("not a number: {s:?}")),
            },
            Cell::Int(i) => Ok(Some(i as f64)),
            Cell::UInt(u) => Ok(Some(u as f64)),
            Cell::Float(f) => Ok(Some(f)),
            Cell::Float32(f) => Ok(Some(f as f64)),
            Cell::Bool(b) => Ok(Some(f64::from(u8::from(b)))),
        }
    }

    /// The cell as the `f32` the model reads: `Ok(None)` for null; `Err` for text that is not a
    /// number and for a finite value beyond `f32`'s range (it would become an infinity). NaN and
    /// infinities are returned as they are (the caller decides).
    pub(crate) fn number(&self) -> Result<Option<f32>, String> {
        let Some(v) = self.number_f64()? else { return Ok(None) };
        if v.is_finite() && v.abs() > f32::MAX as f64 {
            return Err(format!("{v:e} overflows f32 (largest {:e})", f32::MAX));
        }
        Ok(Some(v as f32))
    }
}

/// Lays out the shortest round-trip digits of Rust's `{:e}` (`1.5e-5`, `-1e20`, `inf`, `NaN`) as
/// Python's `repr` does: fixed notation with at least one decimal when the decimal exponent is in
/// `-4..16`, else `d.ddde±XX` (two exponent digits at least).
fn python_repr(scientific: &str) -> String {
    match scientific {
        "inf" => return "inf".into(),
        "-inf" => return "-inf".into(),
        "NaN" => return "nan".into(),
        _ => {}
    }
    let (mantissa, exponent) = scientific.split_once('e').expect("`{:e}` writes an exponent");
    let exponent: i32 = exponent.parse().expect("`{:e}` writes an integer exponent");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exponent) {
        let point = exponent + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            format!("{}.{}", &digits[..point as usize], &digits[point as usize..])
        };
        format!("{sign}{body}")
    } else {
        let mantissa = if digits.len() > 1 { format!("{}.{}", &digits[..1], &digits[1..]) } else { digits };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exponent.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(cell: Cell) -> String {
        cell.text().unwrap().into_owned()
    }

    /// Python's `repr` of each value, as Python 3 prints it (checked there by hand).
    #[test]
    fn floats_render_as_python_repr() {
        let cases: [(f64, &str); 16] = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (100.0, "100.0"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e20, "1e+20"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-5, "1.5e-05"),
            (123456.789, "123456.789"),
            (1e-300, "1e-300"),
            (f64::INFINITY, "inf"),
        ];
        for (v, expected) in cases {
            assert_eq!(text(Cell::Float(v)), expected, "{v:e}");
        }
        assert_eq!(text(Cell::Float(f64::NEG_INFINITY)), "-inf");
        assert_eq!(text(Cell::Float(0.30000000000000004)), "0.30000000000000004");
    }

    /// A float32 renders with its own shortest digits (numpy's `repr(np.float32(0.1))`), integers
    /// and booleans as pandas writes them, NaN as null.
    #[test]
    fn other_cells_render_as_pandas_writes_them() {
        assert_eq!(text(Cell::Float32(0.1)), "0.1");
        assert_eq!(text(Cell::Float32(1.0)), "1.0");
        assert_eq!(text(Cell::Float32(16_777_216.0)), "16777216.0");
        assert_eq!(text(Cell::UInt(u64::MAX)), "18446744073709551615");
        assert_eq!(text(Cell::Int(-7)), "-7");
        assert_eq!((text(Cell::Bool(true)), text(Cell::Bool(false))), ("True".into(), "False".into()));
        assert_eq!(Cell::float(f64::NAN), Cell::Null);
        assert_eq!(Cell::float32(f32::NAN), Cell::Null);
        assert_eq!(Cell::Null.text(), None);
    }

    /// Numbers: booleans are 1/0, text parses, a finite value beyond f32 is an error naming it.
    #[test]
    fn numbers_read_and_overflow_is_an_error() {
        assert_eq!(Cell::Text(" 2.5 ").number(), Ok(Some(2.5)));
        assert_eq!(Cell::Text("True").number(), Ok(Some(1.0)));
        assert_eq!(Cell::Bool(false).number(), Ok(Some(0.0)));
        assert_eq!(Cell::UInt(u64::MAX).number_f64(), Ok(Some(u64::MAX as f64)));
        assert!(Cell::Text("cheap").number().unwrap_err().contains("not a number: \"cheap\""));
        let e = Cell::Text("1e39").number().unwrap_err();
        assert!(e.contains("1e39") && e.contains("overflows f32"), "{e}");
        assert!(Cell::Float(-4e38).number().unwrap_err().contains("overflows f32"));
        assert_eq!(Cell::Float(3e38).number(), Ok(Some(3e38)));
        assert!(Cell::Text("inf").number().unwrap().unwrap().is_infinite(), "infinities are the caller's to refuse");
    }
}
