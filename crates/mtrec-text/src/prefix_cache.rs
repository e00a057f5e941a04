//! The frozen prefix of a `top`-fine-tuned encoder, run once per distinct text: a training step
//! reads the states after the frozen layers from a [`PrefixStore`] and runs only the layers that
//! train.
//!
//! The prefix is the embeddings and the bottom layers, copied without autodiff and with their
//! dropout off (the frozen layers are a fixed feature extractor; without the cache, `top` runs them
//! in training mode, with dropout, as PyTorch does). A batch's texts missing from the store are run
//! through the prefix together (grouped by length) and stored; every text's states are then copied
//! into the batch's `[B·L, hidden]` tensor, zeros at padding — which the layers above never see,
//! as attention masks padded keys and pooling skips padded tokens. A store that cannot be written
//! (a full disk) is warned about once and the states are used without being kept.

use std::{
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use burn::{
    module::Module,
    tensor::{Bool, Int, Tensor, TensorData},
};
use sha2::{Digest, Sha256};

use crate::{
    BertModel,
    prefix_store::{PrefixCacheMode, PrefixStore, token_key},
};

/// Texts run through the frozen prefix at once when filling the store.
const FILL_BATCH: usize = 64;

/// The frozen prefix and its store (see the module docs of `prefix_cache.rs`); clones share both.
#[derive(Clone)]
pub struct PrefixCache {
    frozen: Arc<BertModel>,
    layers: usize,
    store: Arc<Mutex<PrefixStore>>,
    write_failed: Arc<AtomicBool>,
}

impl std::fmt::Debug for PrefixCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixCache").field("layers", &self.layers).field("store", &self.store).finish()
    }
}

/// The store's folder name for a prefix: the sha256 of the model's identity, the number of frozen
/// layers, the maximum length and the element type.
pub fn prefix_folder(model_id: &str, layers: usize, max_len: usize, mode: PrefixCacheMode) -> String {
    let mut id = Sha256::new();
    id.update(format!("{model_id}/layers={layers}/max_len={max_len}/{mode:?}").as_bytes());
    id.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl PrefixCache {
    /// The embeddings and first `layers` layers of `bert` (copied, frozen, not training), with the
    /// store in `dir` (`None`: in memory).
    pub fn new(bert: &BertModel, layers: usize, dir: Option<&Path>, mode: PrefixCacheMode) -> Self {
        let frozen = BertModel { embeddings: bert.embeddings.clone(), layers: bert.layers[..layers].to_vec() }.valid();
        let hidden = bert.embeddings.word_embeddings.weight.dims()[1];
        Self {
            frozen: Arc::new(frozen),
            layers,
            store: Arc::new(Mutex::new(PrefixStore::open(dir, hidden, mode))),
            write_failed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The frozen layers (the trained ones start at this index).
    pub fn layers(&self) -> usize {
        self.layers
    }

    /// Texts in the store.
    pub fn len(&self) -> usize {
        self.store.lock().expect("the prefix store's lock").len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The states after the frozen layers of a batch of token rows, as [`crate::TokenInput`]
    /// writes them (`id + 1`, `0` for padding), on the rows' device, not tracked.
    ///
    /// # Shapes
    /// - tokens: `[B, L]`; output: `[B·L, hidden]` (zeros at padding)
    pub fn states(&self, tokens: Tensor<2>) -> Tensor<2> {
        let [batch, length] = tokens.dims();
        let device = tokens.device();
        let values: Vec<f32> = tokens.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 token rows");
        let rows: Vec<Vec<u32>> = values
            .chunks_exact(length)
            .map(|row| row.iter().take_while(|&&v| v > 0.0).map(|&v| v as u32 - 1).collect())
            .collect();
        let keys: Vec<[u8; 32]> = rows.iter().map(|r| token_key(r)).collect();
        let hidden = self.frozen.embeddings.word_embeddings.weight.dims()[1];
        let mut store = self.store.lock().expect("the prefix store's lock");
        let mut found: Vec<Option<Vec<f32>>> = keys.iter().map(|k| store.get(k)).collect();
        let mut missing: Vec<usize> = (0..batch).filter(|&i| found[i].is_none() && !rows[i].is_empty()).collect();
        missing.sort_by_key(|&i| (rows[i].len(), keys[i]));
        missing.dedup_by_key(|&mut i| keys[i]);
        let mut computed = Vec::with_capacity(missing.len());
        for group in missing.chunks(FILL_BATCH) {
            for (i, states) in group.iter().zip(self.run_prefix(group.iter().map(|&i| rows[i].as_slice()), hidden)) {
                // used as a later read will give them back (an f16 store rounds)
                computed.push((keys[*i], store.as_stored(states)));
            }
        }
        for (key, states) in &computed {
            for (i, k) in keys.iter().enumerate() {
                if k == key && found[i].is_none() {
                    found[i] = Some(states.clone());
                }
            }
        }
        if !computed.is_empty()
            && let Err(e) = store.put(computed)
            && !self.write_failed.swap(true, Ordering::Relaxed)
        {
            tracing::warn!("the frozen-prefix store cannot be written ({e}); prefixes are computed again when needed");
        }
        drop(store);
        let mut out = vec![0.0f32; batch * length * hidden];
        for (r, states) in found.into_iter().enumerate() {
            if let Some(states) = states {
                out[r * length * hidden..][..states.len()].copy_from_slice(&states);
            }
        }
        Tensor::from_data(TensorData::new(out, [batch * length, hidden]), &device)
    }

    /// The frozen prefix's states of token-id rows (no padding), each `n × hidden`.
    fn run_prefix<'a>(&self, rows: impl Iterator<Item = &'a [u32]>, hidden: usize) -> Vec<Vec<f32>> {
        let rows: Vec<&[u32]> = rows.collect();
        let longest = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let device = self.frozen.embeddings.word_embeddings.weight.device();
        let mut ids = vec![0i64; rows.len() * longest];
        let mut pad = vec![true; rows.len() * longest];
        for (r, row) in rows.iter().enumerate() {
            for (t, &id) in row.iter().enumerate() {
                ids[r * longest + t] = id as i64;
                pad[r * longest + t] = false;
            }
        }
        let shape = [rows.len(), longest];
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, shape), &device);
        let padding = Tensor::<2, Bool>::from_data(TensorData::new(pad, shape), &device);
        let x = self.frozen.embed(ids);
        let states: Vec<f32> = self
            .frozen
            .forward_layers(x, padding, 0)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 states");
        rows.iter().enumerate().map(|(r, row)| states[r * longest * hidden..][..row.len() * hidden].to_vec()).collect()
    }
}
