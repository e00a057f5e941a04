//! The one error type of the data crate: every variant names the file (and line) at fault.

use std::path::PathBuf;

/// What can go wrong while reading or generating a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be opened or read (a missing one says `no such file` and its path).
    #[error("{}", io_message(path, source))]
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

/// `no such file: PATH` for a missing file, else `PATH: the error`.
fn io_message(path: &std::path::Path, source: &std::io::Error) -> String {
    if source.kind() == std::io::ErrorKind::NotFound {
        format!("no such file: {}", path.display())
    } else {
        format!("{}: {source}", path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A missing file says so and names the path, instead of the OS's "entity not found".
    #[test]
    fn a_missing_file_is_named() {
        let e = DataError::Io { path: "data/shop.csv".into(), source: std::io::ErrorKind::NotFound.into() };
        assert_eq!(e.to_string(), "no such file: data/shop.csv");
        let e = DataError::Io { path: "x".into(), source: std::io::Error::other("disk on fire") };
        assert_eq!(e.to_string(), "x: disk on fire");
    }
}
