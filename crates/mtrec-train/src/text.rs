//! Text columns' encoders, opened for the table loader: a [`CachedEncoder`] of the model folder,
//! on the CPU backend, its embeddings cached under the table cache's folder (`text/<model>/`).
//! Within a process each folder is opened once (the loader asks for it to key its cache, to fit
//! and to encode). A trainable encoder's columns hold token ids instead ([`open_text_input`]).

use std::{cell::RefCell, collections::HashMap, path::Path, path::PathBuf, rc::Rc};

use burn::tensor::Device;
use mtrec_data::TextEmbedder;
use mtrec_text::{CachedEncoder, TokenInput};

thread_local! {
    static OPENED: RefCell<HashMap<PathBuf, Rc<RefCell<CachedEncoder>>>> = RefCell::new(HashMap::new());
}

/// An encoder shared by the loader's requests.
struct SharedEncoder(Rc<RefCell<CachedEncoder>>);

impl TextEmbedder for SharedEncoder {
    fn model_id(&self) -> String {
        self.0.borrow().model_id()
    }

    fn dim(&self) -> usize {
        self.0.borrow().dim()
    }

    fn embed(&mut self, texts: &[String]) -> Result<Vec<f32>, String> {
        self.0.borrow_mut().embed(texts)
    }
}

/// What a text column's values are: token ids of at most `tokens` tokens for a trainable encoder
/// (`Some`: [`TokenInput`]), else the sentence embeddings of [`open_text_encoder`].
pub fn open_text_input(dir: &Path, tokens: Option<usize>) -> Result<Box<dyn TextEmbedder>, String> {
    match tokens {
        Some(max_len) => Ok(Box::new(TokenInput::open(dir, Some(max_len)).map_err(|e| e.to_string())?)),
        None => open_text_encoder(dir),
    }
}

/// Opens the sentence encoder in `dir` for a text column (see the module docs).
pub fn open_text_encoder(dir: &Path) -> Result<Box<dyn TextEmbedder>, String> {
    let key = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    if let Some(shared) = OPENED.with(|o| o.borrow().get(&key).cloned()) {
        return Ok(Box::new(SharedEncoder(shared)));
    }
    let cache = mtrec_data::default_cache_dir().map(|d| d.join("text"));
    let encoder = CachedEncoder::open(dir, &Device::flex(), cache.as_deref()).map_err(|e| e.to_string())?;
    let shared = Rc::new(RefCell::new(encoder));
    OPENED.with(|o| o.borrow_mut().insert(key, shared.clone()));
    Ok(Box::new(SharedEncoder(shared)))
}
