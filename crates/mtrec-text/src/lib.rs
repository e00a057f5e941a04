//! Pretrained sentence encoders (BERT family) in Burn, with their tokenizer and an embedding cache:
//! what turns a table's text columns (titles, reviews, descriptions) into the vectors the shared
//! input layer of every architecture reads.
//!
//! [`SentenceEncoder`] loads a sentence-transformers model folder (`all-MiniLM-L6-v2`: 6 layers,
//! 384 wide) — weights from `model.safetensors` through burn-store, the tokenizer from
//! `tokenizer.json` through the `tokenizers` crate, pooling and normalisation from `modules.json` —
//! and encodes texts on any burn backend, batches grouped by length. [`CachedEncoder`] adds the
//! on-disk [`EmbeddingCache`] (each distinct text encoded once per model) and implements
//! [`mtrec_data::TextEmbedder`], the one way the data crate sees text.
//!
//! The encoder can also train with the tasks: [`TextEncoder`] is the same BERT as a module of the
//! model (wholly trainable, its top layers, or LoRA adapters, as [`TextTrainingConfig`] says), fed
//! with the token ids [`TokenInput`] puts into the table. Where only the top layers (or adapters in
//! them) train, [`PrefixCache`] stores the frozen layers' output once per text. Before the tasks, the
//! encoder can be pretrained on the table's own texts without labels ([`pretrain_simcse`]: the
//! serial stage of multi-task learning).
//!
//! # Guide
//!
//! A [`BertModel`] is plain burn modules; [`SentenceEncoder`] fills one from a model folder and adds
//! the tokenizer and pooling. The pieces on their own, on a tiny random BERT:
//!
//! ```
//! use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
//! use mtrec_text::{BertConfig, PoolingMode, SentencePooling};
//!
//! let device = Device::flex();
//! // 2 layers, 16 wide, 2 heads, a 64-token vocabulary
//! let bert = BertConfig::new(64, 16, 2, 2, 32, 12).init(&device);
//! let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 7, 9, 2, 1, 5, 2, 0], [2, 4]), &device);
//! let padding = Tensor::<2, Bool>::from_data(
//!     TensorData::new(vec![false, false, false, false, false, false, false, true], [2, 4]),
//!     &device,
//! );
//! let hidden = bert.forward(ids, padding.clone());
//! assert_eq!(hidden.dims(), [2, 4, 16]);
//! let pooling = SentencePooling { mode: PoolingMode::Mean, normalize: true };
//! let sentences = pooling.forward(hidden, padding);
//! let norms = sentences.powi_scalar(2).sum_dim(1).sqrt().into_data().to_vec::<f32>().unwrap();
//! assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5)); // unit vectors, one a sentence
//! ```

#![deny(missing_docs)]

mod bert;
mod cache;
mod embedder;
mod encoder;
mod error;
mod length_groups;
mod pooling;
mod prefix_cache;
mod prefix_store;
mod pretrained_export;
mod simcse;
mod text_encoder;
mod token_input;
mod tokenizer;

pub use bert::{BertAttention, BertConfig, BertEmbeddings, BertLayer, BertModel, hf_key_remapping};
pub use cache::{EmbeddingCache, text_key};
pub use embedder::CachedEncoder;
pub use encoder::{DEFAULT_BATCH, SentenceEncoder, sha256_file};
pub use error::TextError;
pub use length_groups::{GROUP_COST_ROWS, length_groups};
pub use pooling::{PoolingMode, SentencePooling};
pub use prefix_cache::{PrefixCache, prefix_folder};
pub use prefix_store::{PREFIX_FILE, PrefixCacheMode, PrefixStore, token_key};
pub use pretrained_export::hf_export_remapping;
pub use simcse::{SimCseConfig, SimCseReport, pretrain_simcse, simcse_loss};
pub use text_encoder::{Adapters, Finetune, LORA_TARGETS, LrDecay, TextEncoder, TextTrainingConfig};
pub use token_input::TokenInput;
pub use tokenizer::SentenceTokenizer;
