//! `cargo xtask embed --encoder DIR --input FILE --column NAME --out FILE`: the sentence embeddings
//! of a column of a CSV or Parquet file (nulls as empty texts), for use outside mtrec: `.npy`
//! (float32 `[rows, dim]`) or `.safetensors` (one F32 tensor `embeddings`), rows in file order.

use std::{collections::BTreeMap, path::PathBuf, time::Instant};

use anyhow::{Context, bail};
use burn::tensor::Device;
use clap::Args;
use mtrec_data::CsvOptions;
use mtrec_text::CachedEncoder;

/// Arguments of `cargo xtask embed`.
#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// The sentence-transformers model folder (e.g. models/all-MiniLM-L6-v2).
    #[arg(long)]
    encoder: PathBuf,
    /// A CSV (header row) or Parquet file.
    #[arg(long)]
    input: PathBuf,
    /// The text column.
    #[arg(long)]
    column: String,
    /// The output: `.npy` or `.safetensors`.
    #[arg(long)]
    out: PathBuf,
    /// Skip the embedding cache.
    #[arg(long)]
    no_cache: bool,
}

pub fn run(args: EmbedArgs) -> anyhow::Result<()> {
    let ext = args.out.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    if ext != "npy" && ext != "safetensors" {
        bail!("--out {}: the output is .npy or .safetensors", args.out.display());
    }
    let texts: Vec<String> = mtrec_data::read_column(&args.input, None, &CsvOptions::default(), &args.column)?
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect();
    let cache = if args.no_cache { None } else { mtrec_data::default_cache_dir().map(|d| d.join("text")) };
    let mut encoder = CachedEncoder::open(&args.encoder, &Device::flex(), cache.as_deref())?;
    let dim = encoder.encoder().dim();
    let start = Instant::now();
    let vectors = encoder.embed_texts(&texts)?;
    println!(
        "{} texts ({} encoded, {} from the cache) in {:.1} s",
        texts.len(),
        encoder.encoded,
        encoder.hits,
        start.elapsed().as_secs_f64()
    );
    let bytes = if ext == "npy" {
        npy_f32(&vectors, texts.len(), dim)
    } else {
        let metadata = BTreeMap::from([
            ("encoder".to_string(), args.encoder.display().to_string()),
            ("model_id".to_string(), encoder.encoder().model_id().to_string()),
            ("column".to_string(), args.column.clone()),
        ]);
        mtrec_train::tensors_to_safetensors(&[("embeddings".into(), vec![texts.len(), dim], vectors)], &metadata)
    };
    std::fs::write(&args.out, bytes).with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {} ({} × {dim})", args.out.display(), texts.len());
    Ok(())
}

/// A NumPy `.npy` file (format 1.0) of a C-order float32 matrix.
fn npy_f32(values: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64
    let pad = 64 - (10 + header.len() + 1) % 64;
    header.push_str(&" ".repeat(pad % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 4 * values.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header is the format's: aligned to 64 bytes, the shape and dtype NumPy reads.
    #[test]
    fn npy_header_by_hand() {
        let bytes = npy_f32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3);
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + len) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
        assert!(
            header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }") && header.ends_with('\n')
        );
        assert_eq!(f32::from_le_bytes(bytes[10 + len + 20..10 + len + 24].try_into().unwrap()), 6.0);
    }
}
