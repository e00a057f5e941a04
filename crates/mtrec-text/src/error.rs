//! The one error type of the text crate: every variant names the file at fault and, for model
//! files, how to get them.

use std::path::PathBuf;

/// What can go wrong while loading or running a sentence encoder.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// A model file or folder is missing.
    #[error(
        "{}: not found. Get the encoder with `cargo xtask data minilm` (downloads all-MiniLM-L6-v2 into \
         models/all-MiniLM-L6-v2), or copy a sentence-transformers model folder there with \
         `cargo xtask data minilm --from DIR`",
        path.display()
    )]
    Missing {
        /// The file or folder.
        path: PathBuf,
    },
    /// A model file does not parse or does not fit the model.
    #[error(
        "{}: {reason}. Re-fetch the encoder with `cargo xtask data minilm` (it checks the files' sha256)",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The tokenizer refused a text.
    #[error("tokenizing {text:?}…: {reason}")]
    Tokenize {
        /// The text's beginning.
        text: String,
        /// The tokenizer's message.
        reason: String,
    },
    /// A training setting or input that cannot work (the message names it).
    #[error("{0}")]
    Config(String),
}
