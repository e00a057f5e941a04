//! Checkpoints: what a run needs to continue after an interruption exactly as if it had not
//! stopped.
//!
//! After every epoch the trainer writes `checkpoint.bin` into the run folder: the model, Adam's
//! state, the selected (best) model so far, and a JSON [`TrainingState`] (epochs done, the
//! balancer's state, early stopping, throughput counters). Randomness needs no generator internals:
//! every epoch reseeds the backend's generator (dropout) and the balancer's from the run's seed and
//! the epoch, and the batch order is a function of them too — so the epoch *is* the RNG state.
//!
//! The file is written to a temporary file in the same folder, flushed to disk and renamed over
//! the previous checkpoint (an atomic replace), so a process killed while writing leaves the old
//! checkpoint in place. The file ends with the MD5 of everything before it and states each
//! section's length, so a truncated or damaged file is refused with an error — it never loads as
//! a valid but wrong checkpoint.
//!
//! Layout: `MTRECCK2`, then five sections (state JSON, model, optimizer, best model — may be empty
//! —, the row-sparse tables' optimizer state — empty without sparse tables), each a little-endian
//! `u64` length and its bytes, then the 16-byte MD5. Files of the first layout (`MTRECCK1`, the
//! first four sections) still load.

use std::{io::Write, path::Path};

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::{EarlyStopping, TaskMetrics, TrainError};

const MAGIC: &[u8; 8] = b"MTRECCK2";
const MAGIC_V1: &[u8; 8] = b"MTRECCK1";
const SECTIONS: usize = 5;

/// The file name of a run's checkpoint.
pub const CHECKPOINT_FILE: &str = "checkpoint.bin";

/// The loop's state after an epoch, besides the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingState {
    /// Epochs completed.
    pub epoch: usize,
    /// The run's resolved config (TOML); a resume checks it against the run folder's.
    pub config: String,
    /// The balancer's state ([`mtrec_balance::LossBalancer::state`]).
    pub balancer: serde_json::Value,
    /// Early stopping's state.
    pub early_stopping: EarlyStopping,
    /// Validation metrics of the best model so far, per task in task order.
    pub best_valid: Option<Vec<TaskMetrics>>,
    /// Seconds spent in training steps so far.
    pub train_seconds: f64,
    /// Training samples processed so far.
    pub samples: usize,
    /// Wall seconds of the run so far.
    pub wall_seconds: f64,
}

/// A checkpoint: the state and the serialised records (burnpack bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The loop's state.
    pub state: TrainingState,
    /// The model's parameters (`ModuleRecord::into_bytes`), with their parameter ids.
    pub model: Vec<u8>,
    /// The optimizer's state (`OptimizerRecord::into_bytes`), keyed by parameter id.
    pub optimizer: Vec<u8>,
    /// The best model so far (evaluation mode); empty before the first improvement.
    pub best_model: Vec<u8>,
    /// The row-sparse tables' optimizer state
    /// ([`SparseRowOptimizer::state_bytes`](crate::SparseRowOptimizer::state_bytes)).
    pub sparse_optimizer: Vec<u8>,
}

impl Checkpoint {
    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out).expect("writing to memory");
        out
    }

    /// Writes the file to `out` section by section, hashing as it goes (no copy of the whole file
    /// in memory: a large model's checkpoint costs its sections, not twice them).
    pub fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        let state = serde_json::to_vec(&self.state).expect("the training state serialises");
        let sections: [&[u8]; SECTIONS] =
            [&state, &self.model, &self.optimizer, &self.best_model, &self.sparse_optimizer];
        let mut hasher = Md5::new();
        let mut put = |bytes: &[u8]| -> std::io::Result<()> {
            hasher.update(bytes);
            out.write_all(bytes)
        };
        put(MAGIC)?;
        for section in sections {
            put(&(section.len() as u64).to_le_bytes())?;
            put(section)?;
        }
        out.write_all(&hasher.finalize())
    }

    /// Parses a checkpoint file's bytes; any damage is an error saying what is wrong.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let n_sections = match bytes.get(..MAGIC.len()) {
            Some(m) if m == MAGIC && bytes.len() >= MAGIC.len() + 16 => SECTIONS,
            Some(m) if m == MAGIC_V1 && bytes.len() >= MAGIC.len() + 16 => SECTIONS - 1,
            _ => return Err("not an mtrec checkpoint (bad header)".into()),
        };
        let (body, digest) = bytes.split_at(bytes.len() - 16);
        if Md5::digest(body).as_slice() != digest {
            return Err("checksum mismatch: the file is truncated or damaged".into());
        }
        let mut rest = &body[MAGIC.len()..];
        let mut sections = Vec::with_capacity(SECTIONS);
        for _ in 0..n_sections {
            if rest.len() < 8 {
                return Err("truncated section header".into());
            }
            let (len, tail) = rest.split_at(8);
            let len = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
            if tail.len() < len {
                return Err("truncated section".into());
            }
            let (section, tail) = tail.split_at(len);
            sections.push(section.to_vec());
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(format!("{} unexpected bytes after the last section", rest.len()));
        }
        let sparse_optimizer = if n_sections == SECTIONS { sections.pop().expect("five sections") } else { vec![] };
        let best_model = sections.pop().expect("four sections");
        let optimizer = sections.pop().expect("four sections");
        let model = sections.pop().expect("four sections");
        let state =
            serde_json::from_slice(&sections[0]).map_err(|e| format!("the training state does not parse: {e}"))?;
        Ok(Self { state, model, optimizer, best_model, sparse_optimizer })
    }

    /// Writes the checkpoint to `path` atomically (temporary file, flush to disk, rename).
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        crate::run_dir::write_atomically_with(path, |file| {
            let mut writer = std::io::BufWriter::new(file);
            self.write_to(&mut writer)?;
            writer.flush()
        })
    }

    /// Reads the checkpoint at `path`.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let bytes = std::fs::read(path).map_err(|source| TrainError::Io { path: path.to_path_buf(), source })?;
        Self::from_bytes(&bytes).map_err(|reason| TrainError::Checkpoint { path: path.to_path_buf(), reason })
    }
}

/// The seed of the backend's generator for epoch `epoch` (1-based) of a run seeded with `seed`.
pub(crate) fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    seed.wrapping_mul(0x2545_f491_4f6c_dd1d).wrapping_add((epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let mut early_stopping = EarlyStopping::new(true, 3, 0.0);
        early_stopping.update(1, 0.7);
        Checkpoint {
            state: TrainingState {
                epoch: 4,
                config: "name = \"x\"\n".into(),
                balancer: serde_json::json!({"weights": [1.5, 0.5]}),
                early_stopping,
                best_valid: Some(vec![TaskMetrics::from([("auc".to_string(), 0.7)])]),
                train_seconds: 1.5,
                samples: 4000,
                wall_seconds: 2.0,
            },
            model: (0..200u8).collect(),
            optimizer: vec![7; 300],
            best_model: vec![],
            sparse_optimizer: vec![3; 40],
        }
    }

    /// A file of the first layout (four sections) loads, with no sparse optimizer state.
    #[test]
    fn first_layout_files_load() {
        let c = Checkpoint { sparse_optimizer: vec![], ..sample() };
        let state = serde_json::to_vec(&c.state).unwrap();
        let mut bytes = MAGIC_V1.to_vec();
        for section in [&state[..], &c.model, &c.optimizer, &c.best_model] {
            bytes.extend_from_slice(&(section.len() as u64).to_le_bytes());
            bytes.extend_from_slice(section);
        }
        let digest = Md5::digest(&bytes);
        bytes.extend_from_slice(&digest);
        assert_eq!(Checkpoint::from_bytes(&bytes).unwrap(), c);
    }

    #[test]
    fn round_trips() {
        let c = sample();
        assert_eq!(Checkpoint::from_bytes(&c.to_bytes()).unwrap(), c);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CHECKPOINT_FILE);
        c.save(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap(), c);
        // the only file left is the checkpoint (the temporary file was renamed)
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// Every truncation and every single flipped byte is refused.
    #[test]
    fn a_truncated_or_damaged_file_never_loads() {
        let bytes = sample().to_bytes();
        for len in 0..bytes.len() {
            assert!(Checkpoint::from_bytes(&bytes[..len]).is_err(), "a file cut at {len} bytes loaded");
        }
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x20;
            assert!(Checkpoint::from_bytes(&damaged).is_err(), "a file with byte {i} changed loaded");
        }
        let err = Checkpoint::load(Path::new("/nonexistent/checkpoint.bin")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/checkpoint.bin"), "{err}");
    }
}
