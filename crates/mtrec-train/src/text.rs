//! Text columns' encoders, opened for the table loader: a [`CachedEncoder`] of the model folder,
//! on the CPU backend, its embeddings cached under the table cache's folder (`text/<model>/`).

use std::path::Path;

use burn::tensor::Device;
use mtrec_data::TextEmbedder;
use mtrec_text::CachedEncoder;

/// Opens the sentence encoder in `dir` for a text column (see the module docs).
pub fn open_text_encoder(dir: &Path) -> Result<Box<dyn TextEmbedder>, String> {
    let cache = mtrec_data::default_cache_dir().map(|d| d.join("text"));
    CachedEncoder::open(dir, &Device::flex(), cache.as_deref())
        .map(|e| Box::new(e) as Box<dyn TextEmbedder>)
        .map_err(|e| e.to_string())
}
