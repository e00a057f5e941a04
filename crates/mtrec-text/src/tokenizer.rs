//! The model's tokenizer (`tokenizer.json`, through the `tokenizers` crate), set up as
//! sentence-transformers uses it: the file's fixed padding and its truncation are turned off,
//! texts are truncated at the model's `max_seq_length` (`[CLS]` and `[SEP]` included) and batches
//! are padded by the encoder to their own longest text.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::TextError;

/// A sentence tokenizer.
pub struct SentenceTokenizer {
    inner: Tokenizer,
    max_len: usize,
}

impl SentenceTokenizer {
    /// Reads `tokenizer.json` and truncates at `max_len` tokens.
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self, TextError> {
        let bad = |e: tokenizers::Error| TextError::Corrupt { path: path.to_path_buf(), reason: e.to_string() };
        if !path.is_file() {
            return Err(TextError::Missing { path: path.to_path_buf() });
        }
        let mut inner = Tokenizer::from_file(path).map_err(bad)?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(bad)?;
        Ok(Self { inner, max_len })
    }

    /// Longest sequence, special tokens included.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The token ids of each text, `[CLS] … [SEP]`, at most [`Self::max_len`] each.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, TextError> {
        texts
            .iter()
            .map(|t| {
                self.inner
                    .encode(*t, true)
                    .map(|e| e.get_ids().to_vec())
                    .map_err(|e| TextError::Tokenize { text: t.chars().take(40).collect(), reason: e.to_string() })
            })
            .collect()
    }
}
