//! Property-based fuzzing of the parsers of the training crate: the TOML experiment config with
//! `--set` overrides, checkpoint files and the row-sparse optimizer's state. The property: an
//! input is either read correctly or refused with an error — never a panic, never a silently
//! different value.
//!
//! A quick profile runs in `cargo test`; the long one is
//! `MTREC_FUZZ_CASES=20000 cargo test --release -p mtrec-train --test fuzz` (README, Tests).

use burn::tensor::Device;
use mtrec_train::{Checkpoint, EarlyStopping, ExperimentConfig, SparseRowOptimizer, SparseRule, TrainingState};
use proptest::prelude::*;

fn cases(quick: u32) -> ProptestConfig {
    let n = std::env::var("MTREC_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(quick);
    ProptestConfig { cases: n, failure_persistence: None, ..ProptestConfig::default() }
}

/// Keys a `--set` names: real ones of every section, list indexes, and near misses.
const KEYS: [&str; 16] = [
    "train.lr",
    "train.epochs",
    "train.batch_size",
    "train.sparse_optimizer",
    "train.early_stopping.metric",
    "model.architecture",
    "model.tower_hidden",
    "model.dropout",
    "model.sparse_embeddings",
    "data.columns.0.hash_buckets",
    "data.columns.9.name",
    "data.split.valid",
    "balance.method",
    "seed",
    "train",
    "model.expert_hidden.0",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:e}")),
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("[16, 8]".to_string()),
        Just("[]".to_string()),
        Just("\"mmoe\"".to_string()),
        Just("pcgrad".to_string()),
        Just("{ a = 1 }".to_string()),
        "[a-z0-9_\\[\\]{}=,.\" -]{0,12}",
    ]
}

const BASE: &str = include_str!("../../../configs/ctr_vocab.toml");

proptest! {
    #![proptest_config(cases(256))]

    /// Any text as a config file: parsed or refused, never a panic.
    #[test]
    fn any_config_text_parses_or_is_refused(text in "(\\[[a-z._]{0,12}\\]\n|[a-z_.]{1,12} = [-+0-9a-z.\"\\[\\], ]{0,14}\n){0,8}") {
        let _ = ExperimentConfig::from_toml(&text, "fuzz.toml", &[]);
    }

    /// `--set` of real and near-miss keys with any values: applied exactly, or refused with an
    /// error naming the key or the value.
    #[test]
    fn overrides_apply_exactly_or_are_refused(sets in prop::collection::vec((prop::sample::select(KEYS.to_vec()), value()), 1..4)) {
        let assignments: Vec<String> = sets.iter().map(|(k, v)| format!("{k}={v}")).collect();
        match ExperimentConfig::from_toml(BASE, "base.toml", &assignments) {
            Ok(config) => {
                // the last assignment of train.lr is the config's learning rate
                if let Some((_, v)) = sets.iter().rev().find(|(k, _)| *k == "train.lr") {
                    let parsed = toml::from_str::<toml::Table>(&format!("v = {v}")).ok().and_then(|t| match t.get("v") {
                        Some(toml::Value::Float(f)) => Some(*f),
                        Some(toml::Value::Integer(i)) => Some(*i as f64),
                        _ => None,
                    });
                    prop_assert_eq!(Some(config.train.lr), parsed, "train.lr={} was accepted", v);
                }
            }
            Err(e) => {
                let e = e.to_string();
                prop_assert!(!e.is_empty());
            }
        }
    }

    /// A checkpoint with a byte flipped or cut short is refused (its MD5 trailer); intact, it
    /// reads back equal.
    #[test]
    fn checkpoints_read_exactly_or_are_refused(sections in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 4), flip in prop::option::of((any::<prop::sample::Index>(), 1u8..=255)), cut in prop::option::of(any::<prop::sample::Index>())) {
        let checkpoint = Checkpoint {
            state: TrainingState {
                epoch: 3,
                config: "name = \"x\"".into(),
                balancer: serde_json::json!({"w": [1.0, 2.0]}),
                early_stopping: EarlyStopping::new(true, 5, 0.0),
                best_valid: None,
                train_seconds: 1.5,
                samples: 10,
                wall_seconds: 2.0,
            },
            model: sections[0].clone(),
            optimizer: sections[1].clone(),
            best_model: sections[2].clone(),
            sparse_optimizer: sections[3].clone(),
        };
        let mut bytes = checkpoint.to_bytes();
        let damaged = flip.is_some() || cut.is_some();
        if let Some((at, mask)) = flip {
            let i = at.index(bytes.len());
            bytes[i] ^= mask;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        match Checkpoint::from_bytes(&bytes) {
            Ok(back) => {
                prop_assert!(!damaged, "a damaged checkpoint was read");
                prop_assert_eq!(back, checkpoint);
            }
            Err(e) => prop_assert!(damaged, "{}", e),
        }
    }

    /// Arbitrary bytes after the sparse state's header — huge counts and sizes included — are
    /// refused or read, never a panic or an allocation of what a length field claims.
    #[test]
    fn sparse_state_bytes_are_read_or_refused(words in prop::collection::vec(prop_oneof![any::<u64>(), 0u64..8, Just(u64::MAX), Just(1u64 << 62)], 0..12), tail in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut bytes = b"MTRECSP1".to_vec();
        words.iter().for_each(|w| bytes.extend_from_slice(&w.to_le_bytes()));
        bytes.extend_from_slice(&tail);
        for rule in [SparseRule::LazyAdam, SparseRule::LazyAdamPerRow, SparseRule::Adagrad, SparseRule::Sgd] {
            let _ = SparseRowOptimizer::new(rule, 1e-8, 0.0).load_state_bytes(&bytes, &Device::flex());
        }
    }
}
