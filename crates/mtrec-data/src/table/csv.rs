//! Delimited text (CSV, TSV), read with the `csv` crate: header row or configured names, RFC 4180
//! quoting (fields with delimiters, quotes and line breaks), optional trimming, `.gz` read
//! directly. Only the configured columns are looked at; every record must have the header's
//! number of fields.

use std::{fs::File, io::BufReader, path::Path};

use flate2::read::MultiGzDecoder;

use crate::{
    CsvOptions, DataError,
    table::file::{Cell, Place, RowRef, missing_column},
};

/// Reads `path` row by row (see [`crate::table::file::scan_file`]).
pub(crate) fn scan(
    path: &Path,
    options: &CsvOptions,
    wanted: &[String],
    on_row: &mut dyn FnMut(&RowRef) -> Result<(), DataError>,
) -> Result<u64, DataError> {
    let io = |source| DataError::Io { path: path.to_path_buf(), source };
    let file = BufReader::with_capacity(1 << 20, File::open(path).map_err(io)?);
    let gz = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    let reader: Box<dyn std::io::Read> = if gz { Box::new(MultiGzDecoder::new(file)) } else { Box::new(file) };
    let tsv = path.to_string_lossy().to_ascii_lowercase().trim_end_matches(".gz").ends_with(".tsv");
    let delimiter = options.delimiter.unwrap_or(if tsv { '\t' } else { ',' });
    if !delimiter.is_ascii() {
        return Err(DataError::Invalid(format!("data.csv.delimiter {delimiter:?} must be one ASCII character")));
    }
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter as u8)
        .quoting(options.quoting)
        .trim(if options.trim { csv::Trim::All } else { csv::Trim::None })
        .from_reader(reader);
    let malformed = |e: csv::Error| {
        let line = e.position().map_or(0, |p| p.line());
        let message = match e.kind() {
            csv::ErrorKind::Io(io) => format!("read error: {io}"),
            csv::ErrorKind::Utf8 { err, .. } => format!("not UTF-8 text: {err}"),
            _ => e.to_string(),
        };
        DataError::Malformed { path: path.to_path_buf(), line, message }
    };
    let mut record = csv::StringRecord::new();
    let header: Vec<String> = if options.header {
        if !csv.read_record(&mut record).map_err(malformed)? {
            return Err(DataError::Invalid(format!("{}: the file is empty (no header row)", path.display())));
        }
        record.iter().map(str::to_string).collect()
    } else {
        vec![]
    };
    let names: Vec<String> = if options.names.is_empty() { header.clone() } else { options.names.clone() };
    if names.is_empty() {
        return Err(DataError::Invalid(format!(
            "{}: no column names: the file has no header row (data.csv.header = false) and data.csv.names is empty",
            path.display()
        )));
    }
    let index: Vec<usize> = wanted
        .iter()
        .map(|w| names.iter().position(|n| n == w).ok_or_else(|| missing_column(path, w, &names)))
        .collect::<Result<_, _>>()?;
    let null = |s: &str| options.null_values.iter().any(|n| n == s);
    let mut row = 0u64;
    loop {
        if !csv.read_record(&mut record).map_err(malformed)? {
            return Ok(row);
        }
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != names.len() {
            return Err(DataError::Malformed {
                path: path.to_path_buf(),
                line,
                message: format!(
                    "expected {} fields separated by {delimiter:?} (as the {}), found {}",
                    names.len(),
                    if options.names.is_empty() { "header" } else { "configured names" },
                    record.len()
                ),
            });
        }
        let cells: Vec<Cell> = index
            .iter()
            .map(|&i| {
                let v = &record[i];
                if null(v) { Cell::Null } else { Cell::Text(v) }
            })
            .collect();
        on_row(&RowRef { place: Place::Line(line), cells: &cells })?;
        row += 1;
    }
}
