//! One file of a table, read row by row as the cells of the configured columns only — the
//! common ground of the CSV and Parquet readers, so that the same table encodes identically from
//! either format.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::DataError;
pub(crate) use crate::table::cell::Cell;

/// A file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableFormat {
    /// Delimited text (CSV, TSV), optionally gzipped.
    Csv,
    /// Apache Parquet.
    Parquet,
}

impl TableFormat {
    /// The format a file name implies: `.parquet`/`.pq` → Parquet; `.csv`, `.tsv`, `.txt`, `.data`,
    /// `.test` (optionally `.gz`) → CSV.
    pub fn of(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        let ext = Path::new(name).extension()?.to_str()?;
        match ext {
            "parquet" | "pq" => Some(Self::Parquet),
            "csv" | "tsv" | "txt" | "data" | "test" => Some(Self::Csv),
            _ => None,
        }
    }
}

/// `[data.csv]`: how delimited text is read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsvOptions {
    /// The field delimiter (default `,`, or a tab for `.tsv` files).
    pub delimiter: Option<char>,
    /// Whether the first row names the columns.
    pub header: bool,
    /// The column names, for files without a header row (or to replace it).
    pub names: Vec<String>,
    /// RFC 4180 quoting: `"a, b"` is one field, `""` a quote (off: quotes are ordinary characters).
    pub quoting: bool,
    /// Strip spaces around every field.
    pub trim: bool,
    /// Field values read as null.
    pub null_values: Vec<String>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            delimiter: None,
            header: true,
            names: vec![],
            quoting: true,
            trim: false,
            null_values: vec![String::new()],
        }
    }
}

/// Where a row is in its file: the CSV line it starts on, or the Parquet row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// 1-based line.
    Line(u64),
    /// 0-based data row.
    Row(u64),
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Line(l) => write!(f, "line {l}"),
            Place::Row(r) => write!(f, "row {r}"),
        }
    }
}

/// One row of a file: its place, and the cells of the wanted columns (in the order they were asked
/// for).
pub(crate) struct RowRef<'r, 'c> {
    pub(crate) place: Place,
    pub(crate) cells: &'r [Cell<'c>],
}

/// An error about one cell.
pub(crate) fn cell_error(path: &Path, place: Place, column: &str, message: impl Into<String>) -> DataError {
    DataError::Cell {
        path: path.to_path_buf(),
        place: place.to_string(),
        column: column.to_string(),
        message: message.into(),
    }
}

/// A configured column the file lacks: the error lists the columns it has, and where the file
/// seems to have one column whose name holds another common delimiter (`;`, tab, `|`), names
/// `data.csv.delimiter`.
fn missing_column(path: &Path, column: &str, present: &[String]) -> DataError {
    let hint = match present {
        [only] => [';', '\t', '|'].into_iter().find(|d| only.contains(*d)).map(|d| {
            format!("; the header reads as one column: is the file separated by {d:?}? set data.csv.delimiter = {d:?}")
        }),
        _ => None,
    };
    DataError::Invalid(format!(
        "{}: no column {column:?} (the file has: {}){}",
        path.display(),
        present.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", "),
        hint.unwrap_or_default()
    ))
}

/// Reads every row of `path`, calling `on_row` with the cells of `wanted` (column names); returns
/// the number of rows. A wanted column the file lacks is an error ([`missing_column`]), unless
/// `may_lack` names it: its cells are then null.
pub(crate) fn scan_file(
    path: &Path,
    format: TableFormat,
    csv: &CsvOptions,
    wanted: &[String],
    may_lack: &[String],
    on_row: &mut dyn FnMut(&RowRef) -> Result<(), DataError>,
) -> Result<u64, DataError> {
    if !path.is_file() {
        return Err(DataError::Io { path: path.to_path_buf(), source: std::io::ErrorKind::NotFound.into() });
    }
    match format {
        TableFormat::Csv => crate::table::csv::scan(path, csv, wanted, may_lack, on_row),
        TableFormat::Parquet => crate::table::parquet::scan(path, wanted, may_lack, on_row),
    }
}

/// Where each wanted column is among the file's `present` ones (`None`: absent, and `may_lack`
/// names it); an absent column `may_lack` does not name is an error.
pub(crate) fn column_places(
    path: &Path,
    wanted: &[String],
    may_lack: &[String],
    present: &[String],
) -> Result<Vec<Option<usize>>, DataError> {
    (wanted.iter())
        .map(|w| match present.iter().position(|n| n == w) {
            Some(i) => Ok(Some(i)),
            None if may_lack.contains(w) => Ok(None),
            None => Err(missing_column(path, w, present)),
        })
        .collect()
}

/// Every value of `column` in `path` (format from the name unless given), as text; `None` for nulls.
pub fn read_column(
    path: &Path,
    format: Option<TableFormat>,
    csv: &CsvOptions,
    column: &str,
) -> Result<Vec<Option<String>>, DataError> {
    let mut out = Vec::new();
    let wanted = [column.to_string()];
    scan_file(path, format_of(path, format)?, csv, &wanted, &[], &mut |row| {
        out.push(row.cells[0].text().map(|t| t.into_owned()));
        Ok(())
    })?;
    Ok(out)
}

/// The file's format: `format` when given, else from its name.
pub(crate) fn format_of(path: &Path, format: Option<TableFormat>) -> Result<TableFormat, DataError> {
    format.or_else(|| TableFormat::of(path)).ok_or_else(|| {
        DataError::Invalid(format!(
            "{}: cannot tell the format from the name; set data.format = \"csv\" or \"parquet\"",
            path.display()
        ))
    })
}

/// `path` relative to `dir` (absolute paths stay): how a table resolves its files and encoders.
pub fn resolve(dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() { path.to_path_buf() } else { dir.join(path) }
}
