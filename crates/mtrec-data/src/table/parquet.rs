//! Apache Parquet, read with the `parquet` crate (arrow-rs) batch by batch with column
//! projection: only the configured columns are decoded. Strings, integers, floats and booleans are
//! read (rendered as [`crate::cell`] says); any other column type is an error naming the column and
//! its type.

use std::{fs::File, path::Path};

use arrow_array::{Array, ArrayRef, cast::AsArray, types};
use arrow_schema::DataType;
use parquet::arrow::{ProjectionMask, arrow_reader::ParquetRecordBatchReaderBuilder};

use crate::{
    DataError,
    table::file::{Cell, Place, RowRef, missing_column},
};

const BATCH_ROWS: usize = 8192;

/// Reads `path` row by row (see [`crate::table::file::scan_file`]).
///
/// The `parquet` crate asserts on some damaged files instead of returning an error (fuzzing
/// found one: a column chunk whose metadata gives a negative offset); such a panic is turned into
/// an error naming the file, as any other unreadable file.
pub(crate) fn scan(
    path: &Path,
    wanted: &[String],
    on_row: &mut dyn FnMut(&RowRef) -> Result<(), DataError>,
) -> Result<u64, DataError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scan_rows(path, wanted, on_row))).unwrap_or_else(|panic| {
        let reason = (panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the reader failed".into());
        Err(DataError::Invalid(format!("{}: not a readable Parquet file: {reason}", path.display())))
    })
}

fn scan_rows(
    path: &Path,
    wanted: &[String],
    on_row: &mut dyn FnMut(&RowRef) -> Result<(), DataError>,
) -> Result<u64, DataError> {
    let bad = |e: parquet::errors::ParquetError| {
        DataError::Invalid(format!("{}: not a readable Parquet file: {e}", path.display()))
    };
    let file = File::open(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(bad)?;
    let fields: Vec<String> = builder.schema().fields().iter().map(|f| f.name().clone()).collect();
    let roots: Vec<usize> = wanted
        .iter()
        .map(|w| fields.iter().position(|n| n == w).ok_or_else(|| missing_column(path, w, &fields)))
        .collect::<Result<_, _>>()?;
    for (&r, w) in roots.iter().zip(wanted) {
        let t = builder.schema().field(r).data_type();
        if !readable(t) {
            return Err(DataError::Invalid(format!(
                "{}: column {w:?} has Parquet (arrow) type {t}; mtrec reads strings, integers, floats and booleans",
                path.display()
            )));
        }
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
    let reader = builder.with_projection(mask).with_batch_size(BATCH_ROWS).build().map_err(bad)?;
    let mut row = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| DataError::Invalid(format!("{}: row {row}: {e}", path.display())))?;
        let columns: Vec<&ArrayRef> =
            wanted.iter().map(|w| batch.column_by_name(w).expect("a projected column is in the batch")).collect();
        let mut cells: Vec<Cell> = Vec::with_capacity(wanted.len());
        for i in 0..batch.num_rows() {
            cells.clear();
            cells.extend(columns.iter().map(|c| cell(c, i)));
            on_row(&RowRef { place: Place::Row(row), cells: &cells })?;
            row += 1;
        }
    }
    Ok(row)
}

fn readable(t: &DataType) -> bool {
    use DataType::*;
    matches!(
        t,
        Utf8 | LargeUtf8
            | Utf8View
            | Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Float32
            | Float64
            | Boolean
            | Null
    )
}

/// Row `i` of a column of a readable type.
fn cell(column: &ArrayRef, i: usize) -> Cell<'_> {
    if column.is_null(i) {
        return Cell::Null;
    }
    use DataType::*;
    match column.data_type() {
        Utf8 => Cell::Text(column.as_string::<i32>().value(i)),
        LargeUtf8 => Cell::Text(column.as_string::<i64>().value(i)),
        Utf8View => Cell::Text(column.as_string_view().value(i)),
        Int8 => Cell::Int(column.as_primitive::<types::Int8Type>().value(i) as i64),
        Int16 => Cell::Int(column.as_primitive::<types::Int16Type>().value(i) as i64),
        Int32 => Cell::Int(column.as_primitive::<types::Int32Type>().value(i) as i64),
        Int64 => Cell::Int(column.as_primitive::<types::Int64Type>().value(i)),
        UInt8 => Cell::UInt(column.as_primitive::<types::UInt8Type>().value(i) as u64),
        UInt16 => Cell::UInt(column.as_primitive::<types::UInt16Type>().value(i) as u64),
        UInt32 => Cell::UInt(column.as_primitive::<types::UInt32Type>().value(i) as u64),
        UInt64 => Cell::UInt(column.as_primitive::<types::UInt64Type>().value(i)),
        Float32 => Cell::float32(column.as_primitive::<types::Float32Type>().value(i)),
        Float64 => Cell::float(column.as_primitive::<types::Float64Type>().value(i)),
        Boolean => Cell::Bool(column.as_boolean().value(i)),
        _ => Cell::Null,
    }
}
