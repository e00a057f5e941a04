//! The one error type of the data crate: every variant names the file (and line) at fault.

use std::path::PathBuf;

/// What can go wrong while reading or generating a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A record of a data file is malformed.
    #[error("{}:{line}: {message}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong with it.
        message: String,
    },
    /// A cell of a table is bad (not a number, an unknown label, a missing value…).
    #[error("{}: {place}: column {column:?}: {message}", path.display())]
    Cell {
        /// The file.
        path: PathBuf,
        /// `line N` (CSV) or `row N` (Parquet).
        place: String,
        /// The column.
        column: String,
        /// What is wrong.
        message: String,
    },
    /// A dataset parameter is out of range.
    #[error("invalid dataset parameter: {0}")]
    Invalid(String),
}
