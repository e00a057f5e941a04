//! Delimited text (CSV, TSV), read with the `csv` crate: header row or configured names, RFC 4180
//! quoting (fields with delimiters, quotes and line breaks), optional trimming, `.gz` read
//! directly. Only the configured columns are looked at; every record must have the header's
//! number of fields. Errors name the line a record starts on, in files with CRLF line breaks too.

use std::{
    fs::File,
    io::{BufRead, BufReader},
    path::Path,
};

use flate2::read::MultiGzDecoder;

use crate::{
    CsvOptions, DataError,
    table::file::{Cell, Place, RowRef, column_places},
};

/// Reads `path` row by row (see [`crate::table::file::scan_file`]).
pub(crate) fn scan(
    path: &Path,
    options: &CsvOptions,
    wanted: &[String],
    may_lack: &[String],
    on_row: &mut dyn FnMut(&RowRef) -> Result<(), DataError>,
) -> Result<u64, DataError> {
    let io = |source| DataError::Io { path: path.to_path_buf(), source };
    let file = BufReader::with_capacity(1 << 20, File::open(path).map_err(io)?);
    let gz = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    let reader: Box<dyn std::io::Read> = if gz { Box::new(MultiGzDecoder::new(file)) } else { Box::new(file) };
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    let lines = LineNumbers::of(reader.fill_buf().map_err(io)?);
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
        let line = e.position().map_or(0, |p| lines.line(p));
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
    let index = column_places(path, wanted, may_lack, &names)?;
    let null = |s: &str| options.null_values.iter().any(|n| n == s);
    let mut row = 0u64;
    loop {
        if !csv.read_record(&mut record).map_err(malformed)? {
            return Ok(row);
        }
        let line = record.position().map_or(0, |p| lines.line(p));
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
            .map(|&i| match i.map(|i| &record[i]) {
                Some(v) if !null(v) => Cell::Text(v),
                _ => Cell::Null,
            })
            .collect();
        on_row(&RowRef { place: Place::Line(line), cells: &cells })?;
        row += 1;
    }
}

/// A record's line as a person counts it. The `csv` crate places a record that follows a CRLF
/// break at that break's `\n`, before it counts the line (BurntSushi/rust-csv#395, open in
/// csv 1.4): in a file with CRLF breaks every record but the first is one line short.
struct LineNumbers {
    /// The file's first line break is CRLF.
    crlf: bool,
    /// Where the first record starts at the latest: after a UTF-8 byte-order mark, if any.
    first_record: u64,
}

impl LineNumbers {
    /// From the file's first bytes.
    fn of(head: &[u8]) -> Self {
        let first_break = head.iter().position(|&b| b == b'\n');
        let crlf = first_break.is_some_and(|i| i > 0 && head[i - 1] == b'\r');
        Self { crlf, first_record: if head.starts_with(b"\xEF\xBB\xBF") { 3 } else { 0 } }
    }

    fn line(&self, position: &csv::Position) -> u64 {
        position.line() + u64::from(self.crlf && position.byte() > self.first_record)
    }
}
