//! The encoder as the table loader sees it ([`mtrec_data::TextEmbedder`]): distinct texts are
//! looked up in the embedding cache, the missing ones encoded (with a progress bar in texts/s on a
//! terminal) and added to it.

use std::path::Path;

use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};

use crate::{EmbeddingCache, SentenceEncoder, TextError};

/// A [`SentenceEncoder`] behind an [`EmbeddingCache`].
pub struct CachedEncoder {
    encoder: SentenceEncoder,
    cache: EmbeddingCache,
    /// Texts encoded (cache misses) so far.
    pub encoded: usize,
    /// Texts found in the cache so far.
    pub hits: usize,
}

impl CachedEncoder {
    /// The encoder in `dir` on `device`, its cache under `cache_dir` (`None`: memory only).
    pub fn open(dir: &Path, device: &Device, cache_dir: Option<&Path>) -> Result<Self, TextError> {
        let encoder = SentenceEncoder::open(dir, device)?;
        let cache = EmbeddingCache::open(cache_dir, encoder.model_id(), encoder.dim());
        Ok(Self { encoder, cache, encoded: 0, hits: 0 })
    }

    /// The encoder.
    pub fn encoder(&self) -> &SentenceEncoder {
        &self.encoder
    }

    /// The embeddings of `texts` (row-major `[texts, dim]`), from the cache where it has them.
    pub fn embed_texts(&mut self, texts: &[String]) -> Result<Vec<f32>, TextError> {
        let dim = self.encoder.dim();
        let missing: Vec<&str> = {
            let mut seen = std::collections::HashSet::new();
            texts.iter().filter(|t| !self.cache.contains(t) && seen.insert(t.as_str())).map(String::as_str).collect()
        };
        self.hits += texts.len() - missing.len();
        if !missing.is_empty() {
            let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                let bar = ProgressBar::new(missing.len() as u64);
                bar.set_style(
                    ProgressStyle::with_template("encoding texts [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                        .expect("valid template")
                        .progress_chars("=> "),
                );
                bar
            } else {
                ProgressBar::hidden()
            };
            let start = std::time::Instant::now();
            let vectors = self.encoder.encode(&missing, &mut |done, _| bar.set_position(done as u64))?;
            bar.finish_and_clear();
            tracing::info!(
                "encoded {} texts in {:.1} s ({:.0} texts/s)",
                missing.len(),
                start.elapsed().as_secs_f64(),
                missing.len() as f64 / start.elapsed().as_secs_f64()
            );
            for (t, v) in missing.iter().zip(vectors.chunks_exact(dim)) {
                self.cache.insert(t, v);
            }
            self.encoded += missing.len();
            self.cache.save()?;
        }
        let mut out = Vec::with_capacity(texts.len() * dim);
        for t in texts {
            let v = self.cache.get(t).ok_or_else(|| TextError::Corrupt {
                path: self.encoder.dir().to_path_buf(),
                reason: "an embedding just cached could not be read back from the embedding cache".into(),
            })?;
            out.extend_from_slice(&v);
        }
        Ok(out)
    }
}

impl mtrec_data::TextEmbedder for CachedEncoder {
    fn model_id(&self) -> String {
        self.encoder.model_id().to_string()
    }

    fn dim(&self) -> usize {
        self.encoder.dim()
    }

    fn embed(&mut self, texts: &[String]) -> Result<Vec<f32>, String> {
        self.embed_texts(texts).map_err(|e| e.to_string())
    }
}
