//! Apache Parquet, read with the `parquet` crate's column readers (no Arrow: the Arrow layer
//! doubled the cold build and mtrec only needs flat columns), row group by row group, batch by
//! batch, decoding only the configured columns. Strings, integers (signed and unsigned, any
//! width), floats and booleans are read (rendered as [`crate::cell`] says), nullable or not; any
//! other column type (dates, decimals, timestamps, binary, lists, structs) is an error naming the
//! column and its type.

use std::{fs::File, path::Path};

use parquet::{
    basic::{ConvertedType, LogicalType, Repetition, Type as Physical},
    column::reader::{ColumnReader, ColumnReaderImpl},
    data_type::{ByteArray, DataType},
    errors::ParquetError,
    file::reader::{FileReader, SerializedFileReader},
    schema::types::Type,
};

use crate::{
    DataError,
    table::file::{Cell, Place, RowRef, column_places},
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
    may_lack: &[String],
    on_row: &mut dyn FnMut(&RowRef) -> Result<(), DataError>,
) -> Result<u64, DataError> {
    let scan = || scan_rows(path, wanted, may_lack, on_row);
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(scan)).unwrap_or_else(|panic| {
        let reason = (panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the reader failed".into());
        Err(DataError::Invalid(format!("{}: not a readable Parquet file: {reason}", path.display())))
    })
}

/// How a column's stored values become cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    /// A signed integer (INT32 or INT64).
    Int,
    /// An unsigned integer (INT32 or INT64 annotated unsigned): the bits reinterpreted.
    UInt,
    Float32,
    Float64,
    Text,
    /// Arrow's Null type (annotated `Unknown`): every cell is null.
    Null,
}

/// The kind of a top-level field, or its type in words when mtrec cannot read it.
fn kind_of(field: &Type) -> Result<Kind, String> {
    let info = field.get_basic_info();
    let logical = info.logical_type_ref();
    let converted = info.converted_type();
    if field.is_group() {
        let nested = match (logical, converted) {
            (Some(LogicalType::List), _) | (_, ConvertedType::LIST) => "List",
            (Some(LogicalType::Map), _) | (_, ConvertedType::MAP | ConvertedType::MAP_KEY_VALUE) => "Map",
            _ => "Struct",
        };
        return Err(format!("{nested} (a nested group)"));
    }
    let physical = field.get_physical_type();
    let words = || match logical {
        Some(l) => format!("{physical} ({l:?})"),
        None if converted != ConvertedType::NONE => format!("{physical} ({converted})"),
        None => physical.to_string(),
    };
    if info.has_repetition() && info.repetition() == Repetition::REPEATED {
        return Err(format!("repeated {} (a List)", words()));
    }
    use ConvertedType as C;
    let integer = || match (logical, converted) {
        (Some(LogicalType::Integer(int)), _) => Ok(if int.is_signed { Kind::Int } else { Kind::UInt }),
        (Some(LogicalType::Unknown), _) => Ok(Kind::Null),
        (Some(_), _) => Err(words()),
        (None, C::NONE | C::INT_8 | C::INT_16 | C::INT_32 | C::INT_64) => Ok(Kind::Int),
        (None, C::UINT_8 | C::UINT_16 | C::UINT_32 | C::UINT_64) => Ok(Kind::UInt),
        (None, _) => Err(words()),
    };
    match physical {
        Physical::BOOLEAN => Ok(Kind::Bool),
        Physical::INT32 | Physical::INT64 => integer(),
        Physical::FLOAT if logical.is_none() => Ok(Kind::Float32),
        Physical::DOUBLE if logical.is_none() => Ok(Kind::Float64),
        Physical::BYTE_ARRAY => match (logical, converted) {
            (Some(LogicalType::String | LogicalType::Enum | LogicalType::Json), _)
            | (None, C::UTF8 | C::ENUM | C::JSON) => Ok(Kind::Text),
            (None, C::NONE) => Err(format!("{physical} (binary)")),
            _ => Err(words()),
        },
        _ => Err(words()),
    }
}

/// The stored (non-null) values of one batch of one column.
enum Values {
    Bool(Vec<bool>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bytes(Vec<ByteArray>),
}

/// One wanted column: where it is in the file, how to read it, and the current batch.
struct Column {
    name: String,
    leaf: usize,
    kind: Kind,
    /// 0 for a required column (no definition levels), 1 for a nullable one.
    max_def: i16,
    defs: Vec<i16>,
    values: Values,
}

impl Column {
    /// Reads up to [`BATCH_ROWS`] rows into the batch; returns how many.
    fn read_batch(&mut self, reader: &mut ColumnReader) -> Result<usize, ParquetError> {
        self.defs.clear();
        let defs = (self.max_def > 0).then_some(&mut self.defs);
        match (reader, &mut self.values) {
            (ColumnReader::BoolColumnReader(r), Values::Bool(v)) => read_into(r, defs, v),
            (ColumnReader::Int32ColumnReader(r), Values::I32(v)) => read_into(r, defs, v),
            (ColumnReader::Int64ColumnReader(r), Values::I64(v)) => read_into(r, defs, v),
            (ColumnReader::FloatColumnReader(r), Values::F32(v)) => read_into(r, defs, v),
            (ColumnReader::DoubleColumnReader(r), Values::F64(v)) => read_into(r, defs, v),
            (ColumnReader::ByteArrayColumnReader(r), Values::Bytes(v)) => read_into(r, defs, v),
            _ => Err(ParquetError::General(format!("column {:?} changed its type", self.name))),
        }
    }

    /// Row `i` of the batch; `next` is the batch's next stored value (rows are taken in order).
    fn cell(&self, i: usize, next: &mut usize) -> Result<Cell<'_>, String> {
        if self.kind == Kind::Null || (self.max_def > 0 && self.defs[i] < self.max_def) {
            return Ok(Cell::Null);
        }
        let j = *next;
        *next += 1;
        let missing = || format!("column {:?} has fewer values than rows", self.name);
        Ok(match (&self.values, self.kind) {
            (Values::Bool(v), _) => Cell::Bool(*v.get(j).ok_or_else(missing)?),
            (Values::I32(v), Kind::UInt) => Cell::UInt(*v.get(j).ok_or_else(missing)? as u32 as u64),
            (Values::I32(v), _) => Cell::Int(*v.get(j).ok_or_else(missing)? as i64),
            (Values::I64(v), Kind::UInt) => Cell::UInt(*v.get(j).ok_or_else(missing)? as u64),
            (Values::I64(v), _) => Cell::Int(*v.get(j).ok_or_else(missing)?),
            (Values::F32(v), _) => Cell::float32(*v.get(j).ok_or_else(missing)?),
            (Values::F64(v), _) => Cell::float(*v.get(j).ok_or_else(missing)?),
            (Values::Bytes(v), _) => Cell::Text(
                v.get(j)
                    .ok_or_else(missing)?
                    .as_utf8()
                    .map_err(|_| format!("column {:?} holds text that is not UTF-8", self.name))?,
            ),
        })
    }
}

/// Reads up to [`BATCH_ROWS`] rows of one typed column into `values` (and `defs`); returns how
/// many.
fn read_into<T: DataType>(
    reader: &mut ColumnReaderImpl<T>,
    defs: Option<&mut Vec<i16>>,
    values: &mut Vec<T::T>,
) -> Result<usize, ParquetError> {
    values.clear();
    Ok(reader.read_records(BATCH_ROWS, defs, None, values)?.0)
}

fn scan_rows(
    path: &Path,
    wanted: &[String],
    may_lack: &[String],
    on_row: &mut dyn FnMut(&RowRef) -> Result<(), DataError>,
) -> Result<u64, DataError> {
    let bad = |e: ParquetError| DataError::Invalid(format!("{}: not a readable Parquet file: {e}", path.display()));
    let file = File::open(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    let reader = SerializedFileReader::new(file).map_err(bad)?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let fields = schema.root_schema().get_fields();
    let names: Vec<String> = fields.iter().map(|f| f.name().to_string()).collect();
    let places = column_places(path, wanted, may_lack, &names)?;
    let mut columns = Vec::with_capacity(wanted.len());
    for (w, root) in wanted.iter().zip(&places).filter_map(|(w, p)| Some((w, (*p)?))) {
        let kind = kind_of(&fields[root]).map_err(|t| {
            DataError::Invalid(format!(
                "{}: column {w:?} has Parquet type {t}; mtrec reads strings, integers, floats and booleans",
                path.display()
            ))
        })?;
        let leaf = (0..schema.num_columns())
            .find(|&l| schema.get_column_root_idx(l) == root)
            .ok_or_else(|| bad(ParquetError::General(format!("column {w:?} has no data"))))?;
        let descr = schema.column(leaf);
        let values = match descr.physical_type() {
            Physical::BOOLEAN => Values::Bool(vec![]),
            Physical::INT32 => Values::I32(vec![]),
            Physical::INT64 => Values::I64(vec![]),
            Physical::FLOAT => Values::F32(vec![]),
            Physical::DOUBLE => Values::F64(vec![]),
            _ => Values::Bytes(vec![]),
        };
        columns.push(Column { name: w.clone(), leaf, kind, max_def: descr.max_def_level(), defs: vec![], values });
    }
    let mut row = 0u64;
    for g in 0..reader.num_row_groups() {
        let group = reader.get_row_group(g).map_err(bad)?;
        let expected = group.metadata().num_rows().max(0) as u64;
        let mut readers: Vec<ColumnReader> =
            columns.iter().map(|c| group.get_column_reader(c.leaf)).collect::<Result<_, _>>().map_err(bad)?;
        let at_row = |row: u64, e: String| DataError::Invalid(format!("{}: row {row}: {e}", path.display()));
        let group_start = row;
        loop {
            let mut batch_rows = None;
            for (column, reader) in columns.iter_mut().zip(&mut readers) {
                let n = column.read_batch(reader).map_err(|e| bad(ParquetError::General(format!("row {row}: {e}"))))?;
                if *batch_rows.get_or_insert(n) != n {
                    return Err(at_row(row, format!("column {:?} has a different number of rows", column.name)));
                }
            }
            // With no wanted columns, the row group's row count still counts.
            let n = batch_rows.unwrap_or_else(|| (expected - (row - group_start)).min(BATCH_ROWS as u64) as usize);
            if n == 0 {
                break;
            }
            let mut next = vec![0usize; columns.len()];
            let mut cells: Vec<Cell> = Vec::with_capacity(columns.len());
            for i in 0..n {
                cells.clear();
                for (column, next) in columns.iter().zip(&mut next) {
                    cells.push(column.cell(i, next).map_err(|e| at_row(row, e))?);
                }
                // the absent columns' cells are null, in their places among the wanted ones
                for (k, _) in places.iter().enumerate().filter(|(_, p)| p.is_none()) {
                    cells.insert(k, Cell::Null);
                }
                on_row(&RowRef { place: Place::Row(row), cells: &cells })?;
                row += 1;
            }
        }
        if row - group_start != expected {
            return Err(at_row(
                row,
                format!("row group {g} holds {} rows, its metadata says {expected}", row - group_start),
            ));
        }
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parquet::{
        basic::{ConvertedType, LogicalType, Repetition, Type as Physical},
        data_type::{BoolType, ByteArray, ByteArrayType, DataType, DoubleType, FloatType, Int32Type, Int64Type},
        file::{properties::WriterProperties, writer::SerializedFileWriter},
        schema::types::Type,
    };

    use super::*;

    /// One column to write: its name, physical type, annotation, and whether it may be null.
    struct Spec {
        name: &'static str,
        physical: Physical,
        logical: Option<LogicalType>,
        converted: ConvertedType,
        nullable: bool,
    }

    fn spec(name: &'static str, physical: Physical, logical: Option<LogicalType>, nullable: bool) -> Spec {
        Spec { name, physical, logical, converted: ConvertedType::NONE, nullable }
    }

    fn schema(specs: &[Spec]) -> Arc<Type> {
        let fields = specs
            .iter()
            .map(|s| {
                let repetition = if s.nullable { Repetition::OPTIONAL } else { Repetition::REQUIRED };
                let mut b = Type::primitive_type_builder(s.name, s.physical).with_repetition(repetition);
                if s.logical.is_some() {
                    b = b.with_logical_type(s.logical.clone());
                } else {
                    b = b.with_converted_type(s.converted);
                }
                if matches!(s.logical, Some(LogicalType::Decimal(_))) {
                    b = b.with_precision(9).with_scale(2);
                }
                Arc::new(b.build().unwrap())
            })
            .collect();
        Arc::new(Type::group_type_builder("t").with_fields(fields).build().unwrap())
    }

    /// A writer of `specs`' columns to `path`.
    fn writer(path: &Path, specs: &[Spec], properties: WriterProperties) -> SerializedFileWriter<std::fs::File> {
        SerializedFileWriter::new(std::fs::File::create(path).unwrap(), schema(specs), Arc::new(properties)).unwrap()
    }

    /// Writes one column's values (`None` = null) as the next column of a row group.
    fn put<T: DataType>(
        group: &mut parquet::file::writer::SerializedRowGroupWriter<'_, std::fs::File>,
        values: &[Option<T::T>],
        nullable: bool,
    ) where
        T::T: Clone,
    {
        let mut column = group.next_column().unwrap().unwrap();
        let stored: Vec<T::T> = values.iter().flatten().cloned().collect();
        let defs: Vec<i16> = values.iter().map(|v| v.is_some() as i16).collect();
        column.typed::<T>().write_batch(&stored, nullable.then_some(&defs[..]), None).unwrap();
        column.close().unwrap();
    }

    /// Every row of `path`'s `wanted` columns, each cell as its debug rendering.
    fn rows(path: &Path, wanted: &[&str]) -> Result<Vec<Vec<String>>, DataError> {
        rows_lacking(path, wanted, &[])
    }

    /// [`rows`], the columns `may_lack` names allowed to be absent (null cells).
    fn rows_lacking(path: &Path, wanted: &[&str], may_lack: &[&str]) -> Result<Vec<Vec<String>>, DataError> {
        let wanted: Vec<String> = wanted.iter().map(|w| w.to_string()).collect();
        let may_lack: Vec<String> = may_lack.iter().map(|w| w.to_string()).collect();
        let mut out = vec![];
        let mut places = vec![];
        scan(path, &wanted, &may_lack, &mut |r: &RowRef| {
            places.push(r.place);
            out.push(r.cells.iter().map(|c| format!("{c:?}")).collect());
            Ok(())
        })?;
        assert!(places.iter().enumerate().all(|(i, p)| *p == Place::Row(i as u64)), "rows numbered in order");
        Ok(out)
    }

    /// Every readable type, nullable and required, signed and unsigned, read back as the values
    /// written; nulls where the definition levels say; NaN as null; the stored bits of unsigned
    /// integers above the signed range kept.
    #[test]
    fn reads_every_readable_type() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let specs = [
            spec("i8", Physical::INT32, Some(LogicalType::integer(8, true)), true),
            spec("u32", Physical::INT32, Some(LogicalType::integer(32, false)), false),
            Spec { converted: ConvertedType::UINT_16, ..spec("u16_legacy", Physical::INT32, None, false) },
            spec("i64", Physical::INT64, None, true),
            spec("u64", Physical::INT64, Some(LogicalType::integer(64, false)), false),
            spec("f32", Physical::FLOAT, None, true),
            spec("f64", Physical::DOUBLE, None, false),
            spec("flag", Physical::BOOLEAN, None, true),
            spec("name", Physical::BYTE_ARRAY, Some(LogicalType::String), true),
            spec("kind", Physical::BYTE_ARRAY, Some(LogicalType::Enum), false),
            spec("nothing", Physical::INT32, Some(LogicalType::Unknown), true),
        ];
        let mut writer = writer(&path, &specs, WriterProperties::builder().build());
        let mut group = writer.next_row_group().unwrap();
        put::<Int32Type>(&mut group, &[Some(-3), None, Some(127)], true);
        put::<Int32Type>(&mut group, &[Some(-1), Some(0), Some(7)], false); // -1 is u32::MAX
        put::<Int32Type>(&mut group, &[Some(65535), Some(1), Some(2)], false);
        put::<Int64Type>(&mut group, &[None, Some(i64::MIN), Some(5)], true);
        put::<Int64Type>(&mut group, &[Some(i64::MIN), Some(1), Some(-1)], false); // 2^63 and u64::MAX
        put::<FloatType>(&mut group, &[Some(0.1), Some(f32::NAN), None], true);
        put::<DoubleType>(&mut group, &[Some(2.5), Some(f64::NAN), Some(-0.0)], false);
        put::<BoolType>(&mut group, &[Some(true), None, Some(false)], true);
        let text = |s: &str| Some(ByteArray::from(s));
        put::<ByteArrayType>(&mut group, &[text("café"), None, text("")], true);
        put::<ByteArrayType>(&mut group, &[text("a"), text("b"), text("a")], false);
        put::<Int32Type>(&mut group, &[None, None, None], true);
        group.close().unwrap();
        writer.close().unwrap();

        let names: Vec<&str> = specs.iter().map(|s| s.name).collect();
        let got = rows(&path, &names).unwrap();
        let want = [
            [
                "Int(-3)",
                "UInt(4294967295)",
                "UInt(65535)",
                "Null",
                "UInt(9223372036854775808)",
                "Float32(0.1)",
                "Float(2.5)",
                "Bool(true)",
                "Text(\"café\")",
                "Text(\"a\")",
                "Null",
            ],
            [
                "Null",
                "UInt(0)",
                "UInt(1)",
                "Int(-9223372036854775808)",
                "UInt(1)",
                "Null",
                "Null",
                "Null",
                "Null",
                "Text(\"b\")",
                "Null",
            ],
            [
                "Int(127)",
                "UInt(7)",
                "UInt(2)",
                "Int(5)",
                "UInt(18446744073709551615)",
                "Null",
                "Float(-0.0)",
                "Bool(false)",
                "Text(\"\")",
                "Text(\"a\")",
                "Null",
            ],
        ];
        assert_eq!(got, want.map(|r| r.map(String::from).to_vec()).to_vec());
        // A projection in another order reads only those columns, in that order.
        assert_eq!(rows(&path, &["kind", "i8"]).unwrap()[2], ["Text(\"a\")", "Int(127)"]);
        // An absent column that may be absent reads as nulls, in its place; one that may not is
        // an error naming it.
        let lacking = rows_lacking(&path, &["label", "kind", "score", "i8"], &["label", "score"]).unwrap();
        assert_eq!(lacking[2], ["Null", "Text(\"a\")", "Null", "Int(127)"]);
        let e = rows_lacking(&path, &["label", "kind"], &["score"]).unwrap_err().to_string();
        assert!(e.contains("no column \"label\""), "{e}");
    }

    /// Files from older writers carry only converted types: their signedness is kept and dates
    /// stay refused.
    #[test]
    fn legacy_converted_types_choose_signedness() {
        let ty = |converted| {
            Type::primitive_type_builder("c", Physical::INT32).with_converted_type(converted).build().unwrap()
        };
        assert_eq!(kind_of(&ty(ConvertedType::UINT_16)), Ok(Kind::UInt));
        assert_eq!(kind_of(&ty(ConvertedType::INT_8)), Ok(Kind::Int));
        assert_eq!(kind_of(&ty(ConvertedType::NONE)), Ok(Kind::Int));
        assert_eq!(kind_of(&ty(ConvertedType::DATE)), Err("INT32 (DATE)".into()));
    }

    /// Types mtrec cannot read are refused naming the file, the column and the type; a column
    /// that is not wanted is never looked at, whatever its type.
    #[test]
    fn refuses_unreadable_types_naming_column_and_type() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let specs = [
            spec("day", Physical::INT32, Some(LogicalType::Date), true),
            spec("blob", Physical::BYTE_ARRAY, None, true),
            spec("amount", Physical::INT32, Some(LogicalType::decimal(2, 9)), true),
            spec("legacy_ts", Physical::INT96, None, true),
            spec("ok", Physical::DOUBLE, None, false),
        ];
        let mut writer = writer(&path, &specs, WriterProperties::builder().build());
        let mut group = writer.next_row_group().unwrap();
        put::<Int32Type>(&mut group, &[Some(19000)], true);
        put::<ByteArrayType>(&mut group, &[Some(ByteArray::from(vec![0xff, 0x00]))], true);
        put::<Int32Type>(&mut group, &[Some(1234)], true);
        put::<parquet::data_type::Int96Type>(&mut group, &[None], true);
        put::<DoubleType>(&mut group, &[Some(1.0)], false);
        group.close().unwrap();
        writer.close().unwrap();

        assert_eq!(rows(&path, &["ok"]).unwrap(), [["Float(1.0)"]]);
        for (column, words) in
            [("day", "INT32 (Date)"), ("blob", "BYTE_ARRAY (binary)"), ("amount", "Decimal"), ("legacy_ts", "INT96")]
        {
            let e = rows(&path, &["ok", column]).unwrap_err().to_string();
            assert!(e.contains("t.parquet") && e.contains(&format!("{column:?}")) && e.contains(words), "{e}");
        }
        let e = rows(&path, &["okay"]).unwrap_err().to_string();
        assert!(e.contains("t.parquet") && e.contains("okay") && e.contains("ok"), "{e}");
    }

    /// Rows across row groups and batch boundaries (a group longer than a batch, an empty group)
    /// arrive once each, in order, nulls in place.
    #[test]
    fn reads_across_row_groups_and_batches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let specs =
            [spec("x", Physical::INT64, None, true), spec("s", Physical::BYTE_ARRAY, Some(LogicalType::String), false)];
        let mut writer = writer(&path, &specs, WriterProperties::builder().set_data_page_row_count_limit(1000).build());
        let sizes = [BATCH_ROWS + 17, 0, 3, 2 * BATCH_ROWS];
        let mut start = 0i64;
        for &n in &sizes {
            let mut group = writer.next_row_group().unwrap();
            let xs: Vec<Option<i64>> = (start..start + n as i64).map(|i| (i % 5 != 0).then_some(i)).collect();
            let ss: Vec<Option<ByteArray>> =
                (start..start + n as i64).map(|i| Some(ByteArray::from(format!("r{i}").as_str()))).collect();
            put::<Int64Type>(&mut group, &xs, true);
            put::<ByteArrayType>(&mut group, &ss, false);
            group.close().unwrap();
            start += n as i64;
        }
        writer.close().unwrap();
        let got = rows(&path, &["s", "x"]).unwrap();
        assert_eq!(got.len(), sizes.iter().sum::<usize>());
        for (i, row) in got.iter().enumerate() {
            let x = if i % 5 == 0 { "Null".to_string() } else { format!("Int({i})") };
            assert_eq!(row, &[format!("Text(\"r{i}\")"), x], "row {i}");
        }
        // No wanted columns: the rows are still counted.
        assert_eq!(rows(&path, &[]).unwrap().len(), got.len());
    }
}
