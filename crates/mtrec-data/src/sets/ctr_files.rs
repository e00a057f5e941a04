//! Writing a [`SyntheticCtr`] dataset to disk, chunk by chunk: one Parquet file (a row group per
//! chunk, zstd) or one CSV file, plus `synthetic_ctr.json` with the generator's config and the
//! realised click and purchase rates. Memory stays at one chunk whatever the number of rows.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use parquet::{
    basic::{Compression, LogicalType, Repetition, Type as Physical, ZstdLevel},
    data_type::{FloatType, Int32Type, Int64Type},
    errors::ParquetError,
    file::{properties::WriterProperties, writer::SerializedFileWriter},
    schema::types::Type,
};
use serde::{Deserialize, Serialize};

use crate::{CtrChunk, DataError, SyntheticCtr, SyntheticCtrConfig, TableFormat};

/// What [`write_synthetic_ctr`] wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CtrSummary {
    /// The generator's config.
    pub config: SyntheticCtrConfig,
    /// The data file.
    pub file: PathBuf,
    /// Rows written.
    pub rows: u64,
    /// Clicks / rows.
    pub ctr: f64,
    /// Purchases / clicks.
    pub cvr: f64,
    /// Purchases / rows.
    pub ctcvr: f64,
}

fn io_error(path: &Path, source: impl Into<std::io::Error>) -> DataError {
    DataError::Io { path: path.to_path_buf(), source: source.into() }
}

fn other(path: &Path, e: impl std::fmt::Display) -> DataError {
    io_error(path, std::io::Error::other(e.to_string()))
}

/// The file's schema: four required INT64 ids, `n_dense` FLOATs and two INT32 labels annotated
/// as 8-bit integers (what Arrow's Int8 is in Parquet).
fn parquet_schema(names: &[String], n_dense: usize) -> Result<Arc<Type>, ParquetError> {
    let fields = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let field = match i {
                0..4 => Type::primitive_type_builder(name, Physical::INT64),
                i if i < 4 + n_dense => Type::primitive_type_builder(name, Physical::FLOAT),
                _ => Type::primitive_type_builder(name, Physical::INT32)
                    .with_logical_type(Some(LogicalType::integer(8, true))),
            };
            field.with_repetition(Repetition::REQUIRED).build().map(Arc::new)
        })
        .collect::<Result<_, _>>()?;
    Ok(Arc::new(Type::group_type_builder("synthetic_ctr").with_fields(fields).build()?))
}

/// Writes one chunk as one row group.
fn write_row_group(
    writer: &mut SerializedFileWriter<File>,
    chunk: &CtrChunk,
    n_dense: usize,
) -> Result<(), ParquetError> {
    let mut group = writer.next_row_group()?;
    for ids in [&chunk.user, &chunk.item, &chunk.category, &chunk.context] {
        let mut column = group.next_column()?.expect("a column per id");
        column.typed::<Int64Type>().write_batch(ids, None, None)?;
        column.close()?;
    }
    for j in 0..n_dense {
        let values: Vec<f32> = chunk.dense.iter().skip(j).step_by(n_dense).copied().collect();
        let mut column = group.next_column()?.expect("a column per dense feature");
        column.typed::<FloatType>().write_batch(&values, None, None)?;
        column.close()?;
    }
    for labels in [&chunk.click, &chunk.purchase] {
        let values: Vec<i32> = labels.iter().map(|&v| v as i32).collect();
        let mut column = group.next_column()?.expect("a column per label");
        column.typed::<Int32Type>().write_batch(&values, None, None)?;
        column.close()?;
    }
    group.close()?;
    Ok(())
}

/// Generates `config`'s rows into `dir` as `synthetic_ctr.parquet` (or `.csv`), and
/// `synthetic_ctr.json`; `progress` is called after each chunk with the rows written so far.
pub fn write_synthetic_ctr(
    config: SyntheticCtrConfig,
    dir: &Path,
    format: TableFormat,
    mut progress: impl FnMut(u64),
) -> Result<CtrSummary, DataError> {
    let generator = SyntheticCtr::new(config)?;
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let names = generator.column_names();
    let n_dense = generator.config().n_dense;
    let (mut rows, mut clicks, mut buys) = (0u64, 0u64, 0u64);
    let mut count = |chunk: &CtrChunk| {
        rows += chunk.len() as u64;
        clicks += chunk.click.iter().map(|&v| v as u64).sum::<u64>();
        buys += chunk.purchase.iter().map(|&v| v as u64).sum::<u64>();
        rows
    };
    let file = match format {
        TableFormat::Parquet => {
            let path = dir.join("synthetic_ctr.parquet");
            let schema = parquet_schema(&names, n_dense).map_err(|e| other(&path, e))?;
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).map_err(|e| other(&path, e))?))
                .build();
            let out = File::create(&path).map_err(|e| io_error(&path, e))?;
            let mut writer = SerializedFileWriter::new(out, schema, Arc::new(props)).map_err(|e| other(&path, e))?;
            for chunk in generator.chunks() {
                write_row_group(&mut writer, &chunk, n_dense).map_err(|e| other(&path, e))?;
                progress(count(&chunk));
            }
            writer.close().map_err(|e| other(&path, e))?;
            path
        }
        TableFormat::Csv => {
            let path = dir.join("synthetic_ctr.csv");
            let out = File::create(&path).map_err(|e| io_error(&path, e))?;
            let mut writer = csv::Writer::from_writer(BufWriter::new(out));
            writer.write_record(&names).map_err(|e| other(&path, e))?;
            let mut record = Vec::with_capacity(names.len());
            for chunk in generator.chunks() {
                for i in 0..chunk.len() {
                    record.clear();
                    for id in [chunk.user[i], chunk.item[i], chunk.category[i], chunk.context[i]] {
                        record.push(id.to_string());
                    }
                    record.extend(chunk.dense[i * n_dense..(i + 1) * n_dense].iter().map(|v| v.to_string()));
                    record.push(chunk.click[i].to_string());
                    record.push(chunk.purchase[i].to_string());
                    writer.write_record(&record).map_err(|e| other(&path, e))?;
                }
                progress(count(&chunk));
            }
            writer.into_inner().map_err(|e| other(&path, e))?.flush().map_err(|e| io_error(&path, e))?;
            path
        }
    };
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let summary = CtrSummary {
        config: generator.config().clone(),
        file,
        rows,
        ctr: ratio(clicks, rows),
        cvr: ratio(buys, clicks),
        ctcvr: ratio(buys, rows),
    };
    let json_path = dir.join("synthetic_ctr.json");
    let json = serde_json::to_string_pretty(&summary).map_err(|e| other(&json_path, e))?;
    std::fs::write(&json_path, json + "\n").map_err(|e| io_error(&json_path, e))?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read_column;

    fn config() -> SyntheticCtrConfig {
        SyntheticCtrConfig { rows: 3_000, users: 500, items: 400, chunk_rows: 1_024, ..Default::default() }
    }

    /// Parquet and CSV hold the generator's rows (read back through the table readers), and the
    /// summary's rates are those of the rows.
    #[test]
    fn written_files_hold_the_generated_rows() {
        let dir = tempfile::tempdir().unwrap();
        let generator = SyntheticCtr::new(config()).unwrap();
        let chunks: Vec<CtrChunk> = generator.chunks().collect();
        let users: Vec<i64> = chunks.iter().flat_map(|c| c.user.clone()).collect();
        let buys: Vec<i8> = chunks.iter().flat_map(|c| c.purchase.clone()).collect();
        for format in [TableFormat::Parquet, TableFormat::Csv] {
            let mut seen = Vec::new();
            let summary =
                write_synthetic_ctr(config(), &dir.path().join(format!("{format:?}")), format, |n| seen.push(n))
                    .unwrap();
            assert_eq!(seen, vec![1_024, 2_048, 3_000]);
            assert_eq!(summary.rows, 3_000);
            let purchases = buys.iter().map(|&v| v as f64).sum::<f64>();
            assert!((summary.ctcvr - purchases / 3_000.0).abs() < 1e-12);
            let read = |name: &str| -> Vec<String> {
                let column = read_column(&summary.file, None, &Default::default(), name).unwrap();
                column.into_iter().map(|v| v.expect("no nulls")).collect()
            };
            let user_col = read("user_id");
            assert_eq!(user_col.len(), 3_000, "{format:?}");
            assert!(user_col.iter().zip(&users).all(|(a, &b)| a.parse::<i64>().unwrap() == b), "{format:?} user_id");
            let bought = read("purchase");
            assert!(bought.iter().zip(&buys).all(|(a, &b)| a.parse::<i8>().unwrap() == b), "{format:?} purchase");
            let json: CtrSummary = serde_json::from_str(
                &std::fs::read_to_string(summary.file.with_file_name("synthetic_ctr.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(json, summary);
        }
    }
}
