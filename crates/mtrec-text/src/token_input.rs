//! A text column's input for an encoder the model trains: each text's token ids, as the table
//! loader's [`mtrec_data::TextEmbedder`] delivers values.
//!
//! A frozen encoder's texts are encoded once, and the table holds their embeddings. An encoder
//! that learns must see the tokens at every step, so the table holds them instead: `max_len`
//! values a text, `id + 1` for each token (`[CLS] … [SEP]`, truncated at `max_len`) and `0` for
//! padding — exact in `f32` for any vocabulary below 2²⁴ ids. The values travel through every
//! path a table takes (in memory, streamed chunks, `eval --file`), and the embedding cache is
//! never involved.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::{SentenceTokenizer, TextError, encoder::SentenceBertConfig, pooling::read_json, sha256_file};

/// The largest token id the `f32` values hold exactly.
const LARGEST_EXACT_ID: u32 = (1 << 24) - 2;

/// Token ids of texts for a trainable encoder (see the module docs of `token_input.rs`).
pub struct TokenInput {
    tokenizer: SentenceTokenizer,
    id: String,
}

impl TokenInput {
    /// The tokenizer of the sentence-transformers folder `dir`, truncating at `max_len` tokens
    /// (`None`: the model's `max_seq_length`; never more).
    pub fn open(dir: &Path, max_len: Option<usize>) -> Result<Self, TextError> {
        let sbert: SentenceBertConfig = read_json(&dir.join("sentence_bert_config.json"))?;
        let model_max: crate::BertConfig = read_json(&dir.join("config.json"))?;
        let longest = sbert.max_seq_length.min(model_max.max_position_embeddings);
        let len = max_len.map_or(longest, |m| m.min(longest)).max(2);
        let path = dir.join("tokenizer.json");
        let tokenizer = SentenceTokenizer::from_file(&path, len)?;
        let mut id = Sha256::new();
        id.update(sha256_file(&path)?.as_bytes());
        let hex: String = id.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect();
        Ok(Self { tokenizer, id: format!("tokens-{hex}-{len}") })
    }

    /// Values a text: the longest sequence.
    pub fn len(&self) -> usize {
        self.tokenizer.max_len()
    }

    /// Never empty (a sequence holds at least `[CLS]` and `[SEP]`).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The values of `texts`, row-major `[texts, len]`.
    pub fn values(&self, texts: &[String]) -> Result<Vec<f32>, TextError> {
        let len = self.len();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let ids = self.tokenizer.encode(&refs)?;
        let mut out = vec![0.0f32; texts.len() * len];
        for (row, ids) in out.chunks_exact_mut(len).zip(&ids) {
            for (slot, &id) in row.iter_mut().zip(ids) {
                if id > LARGEST_EXACT_ID {
                    return Err(TextError::Tokenize {
                        text: String::new(),
                        reason: format!("token id {id} is beyond what the table's f32 values hold exactly"),
                    });
                }
                *slot = (id + 1) as f32;
            }
        }
        Ok(out)
    }
}

impl mtrec_data::TextEmbedder for TokenInput {
    fn model_id(&self) -> String {
        self.id.clone()
    }

    fn dim(&self) -> usize {
        self.len()
    }

    fn embed(&mut self, texts: &[String]) -> Result<Vec<f32>, String> {
        self.values(texts).map_err(|e| e.to_string())
    }

    fn tokens(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With the model folder (`MTREC_MINILM_DIR`): ids + 1 then zeros, truncated at `max_len`
    /// with `[SEP]` last, the same ids as the tokenizer gives.
    #[test]
    fn token_values_are_ids_plus_one_then_padding() {
        let Some(dir) = std::env::var_os("MTREC_MINILM_DIR").map(std::path::PathBuf::from) else {
            eprintln!("SKIP token_values_are_ids_plus_one_then_padding: set MTREC_MINILM_DIR");
            return;
        };
        let input = TokenInput::open(&dir, Some(8)).unwrap();
        assert_eq!(mtrec_data::TextEmbedder::dim(&input), 8);
        let texts = vec!["soft".to_string(), "a long text that goes on and on past eight tokens".to_string()];
        let v = input.values(&texts).unwrap();
        // [CLS] = 101, [SEP] = 102 in BERT's uncased vocabulary
        assert_eq!(v[0], 102.0);
        let short: Vec<f32> = v[..8].to_vec();
        let n = short.iter().filter(|&&x| x > 0.0).count();
        assert_eq!(short[n - 1], 103.0, "[SEP] closes the text: {short:?}");
        assert!(short[n..].iter().all(|&x| x == 0.0));
        assert!(v[8..].iter().all(|&x| x > 0.0) && v[15] == 103.0, "truncated with [SEP] last: {:?}", &v[8..]);
        let ids = input.tokenizer.encode(&["soft"]).unwrap();
        assert_eq!(short[..n].iter().map(|&x| x as u32 - 1).collect::<Vec<_>>(), ids[0]);
    }
}
