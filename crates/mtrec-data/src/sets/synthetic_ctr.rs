//! `synthetic-ctr`: an impression → click → purchase funnel at the shape of production
//! recommendation logs, from a known latent model — the scale test bed of mtrec.
//!
//! Each row is one impression: a user, an item, the item's category and a context slot (ids drawn
//! Zipf-distributed, as popularity is in real logs, from vocabularies of any size up to 10⁷ and
//! beyond), `n_dense` dense features, and two labels:
//!
//! - `click` ~ Bernoulli(σ(a + s·⟨u, i⟩/√k + c_cat + c_ctx + w·d)),
//! - `purchase` = `click` · Bernoulli(σ(b + s·⟨u, i'⟩/√k + c'_cat + w'·d)),
//!
//! where `u`, `i`, `i'` are `k`-dimensional standard-normal latent vectors of the user and the item
//! (two per item: what makes it clicked differs from what makes it bought), `c` are per-category and
//! per-context offsets, `d` the dense features and `a`, `b` the logits of `base_ctr` and `base_cvr`.
//! Purchases happen only after clicks (a funnel: ESMM and AITM have a CTCVR target), and the two
//! steps share the user but not the item factors (MTL has something to share and something not to).
//!
//! Latent vectors are not stored: each is a hash of (seed, kind, id), so generating 10⁸ rows over
//! 10⁷ ids needs no memory beyond one chunk of rows. Rows come in chunks of `chunk_rows`, each drawn
//! from its own seeded generator: the same config gives the same rows, chunk by chunk.

use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, Zipf};
use serde::{Deserialize, Serialize};

use crate::{DataError, splitmix64 as mix};

/// Parameters of the generator (`cargo xtask data synthetic-ctr`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticCtrConfig {
    /// Impressions (rows).
    pub rows: u64,
    /// User vocabulary (ids 1..=users).
    pub users: u64,
    /// Item vocabulary.
    pub items: u64,
    /// Category vocabulary (each item belongs to one).
    pub categories: u64,
    /// Context slots (position × hour, say).
    pub contexts: u64,
    /// Zipf exponent of user, item and context popularity (0: uniform).
    pub zipf_exponent: f64,
    /// Width `k` of the latent vectors.
    pub latent_dim: usize,
    /// Dense features per row (standard normal).
    pub n_dense: usize,
    /// Click rate at a zero latent score.
    pub base_ctr: f64,
    /// Purchase rate of a click at a zero latent score.
    pub base_cvr: f64,
    /// Scale `s` of the latent interaction (0: labels ignore user and item).
    pub signal: f64,
    /// Rows per chunk (and Parquet row group).
    pub chunk_rows: usize,
    /// Seed of every draw and latent vector.
    pub seed: u64,
}

impl Default for SyntheticCtrConfig {
    fn default() -> Self {
        Self {
            rows: 1_000_000,
            users: 100_000,
            items: 100_000,
            categories: 1_000,
            contexts: 100,
            zipf_exponent: 1.05,
            latent_dim: 8,
            n_dense: 4,
            base_ctr: 0.05,
            base_cvr: 0.1,
            signal: 1.5,
            chunk_rows: 1 << 18,
            seed: 1,
        }
    }
}

/// One chunk of rows, column by column.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CtrChunk {
    /// Index of the chunk's first row.
    pub first_row: u64,
    /// `user_id` per row (1-based).
    pub user: Vec<i64>,
    /// `item_id`.
    pub item: Vec<i64>,
    /// `category_id` of the item.
    pub category: Vec<i64>,
    /// `context_id`.
    pub context: Vec<i64>,
    /// Dense features, `n_dense` per row, row-major.
    pub dense: Vec<f32>,
    /// `click` (0/1).
    pub click: Vec<i8>,
    /// `purchase` (0/1; 1 only where `click` is 1).
    pub purchase: Vec<i8>,
    /// The true click logit of each row (what a perfect model would score).
    pub click_logit: Vec<f32>,
    /// The true purchase logit of each row, given a click.
    pub purchase_logit: Vec<f32>,
}

impl CtrChunk {
    /// Rows in the chunk.
    pub fn len(&self) -> usize {
        self.user.len()
    }

    /// Whether the chunk has no rows.
    pub fn is_empty(&self) -> bool {
        self.user.is_empty()
    }
}

/// A uniform in (0, 1) from a hash.
fn unit(h: u64) -> f64 {
    ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// The latent kinds, each its own hash stream.
#[derive(Clone, Copy)]
enum Latent {
    User = 1,
    ItemClick = 2,
    ItemPurchase = 3,
    Category = 4,
    Context = 5,
    ItemCategory = 6,
}

/// The generator: a config and its derived constants.
#[derive(Debug, Clone)]
pub struct SyntheticCtr {
    config: SyntheticCtrConfig,
    click_bias: f64,
    purchase_bias: f64,
    dense_click: Vec<f64>,
    dense_purchase: Vec<f64>,
}

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl SyntheticCtr {
    /// Checks `config` (every vocabulary ≥ 1, rates in (0, 1), chunks ≥ 1 row).
    pub fn new(config: SyntheticCtrConfig) -> Result<Self, DataError> {
        let bad = |msg: String| Err(DataError::Invalid(format!("synthetic-ctr: {msg}")));
        for (name, v) in [
            ("users", config.users),
            ("items", config.items),
            ("categories", config.categories),
            ("contexts", config.contexts),
        ] {
            if v == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        for (name, p) in [("base_ctr", config.base_ctr), ("base_cvr", config.base_cvr)] {
            if !(p > 0.0 && p < 1.0) {
                return bad(format!("{name} = {p} must lie strictly between 0 and 1"));
            }
        }
        if config.chunk_rows == 0 || config.latent_dim == 0 {
            return bad("chunk_rows and latent_dim must be at least 1".into());
        }
        if !(config.zipf_exponent >= 0.0 && config.zipf_exponent.is_finite() && config.signal.is_finite()) {
            return bad("zipf_exponent must be ≥ 0 and signal finite".into());
        }
        let weight = |j: usize, kind: u64| 0.3 * (2.0 * unit(mix(config.seed ^ (kind << 56) ^ j as u64)) - 1.0);
        Ok(Self {
            click_bias: logit(config.base_ctr),
            purchase_bias: logit(config.base_cvr),
            dense_click: (0..config.n_dense).map(|j| weight(j, 7)).collect(),
            dense_purchase: (0..config.n_dense).map(|j| weight(j, 8)).collect(),
            config,
        })
    }

    /// The config.
    pub fn config(&self) -> &SyntheticCtrConfig {
        &self.config
    }

    /// Number of chunks.
    pub fn n_chunks(&self) -> u64 {
        self.config.rows.div_ceil(self.config.chunk_rows as u64)
    }

    /// Component `j` of a standard-normal latent vector of `id` (Box–Muller on two hashes).
    fn latent(&self, kind: Latent, id: u64, j: usize) -> f64 {
        let h = mix(self.config.seed ^ ((kind as u64) << 56) ^ mix(id.wrapping_mul(64).wrapping_add(j as u64)));
        let (u1, u2) = (unit(h), unit(mix(h)));
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn dot(&self, a: Latent, ida: u64, b: Latent, idb: u64) -> f64 {
        let k = self.config.latent_dim;
        (0..k).map(|j| self.latent(a, ida, j) * self.latent(b, idb, j)).sum::<f64>() / (k as f64).sqrt()
    }

    /// The category of an item (uniform over categories, fixed per item).
    pub fn category_of(&self, item: u64) -> u64 {
        1 + mix(self.config.seed ^ ((Latent::ItemCategory as u64) << 56) ^ item) % self.config.categories
    }

    /// Chunk `index` (rows `index·chunk_rows ..`), the same for the same config.
    pub fn chunk(&self, index: u64) -> CtrChunk {
        let c = &self.config;
        let first = index * c.chunk_rows as u64;
        let n = (c.rows.saturating_sub(first)).min(c.chunk_rows as u64) as usize;
        let mut rng = StdRng::seed_from_u64(mix(c.seed ^ mix(index.wrapping_add(0xC7_1C))));
        let zipf = |v: u64| Zipf::new(v as f64, c.zipf_exponent).expect("validated: vocabulary ≥ 1, exponent ≥ 0");
        let (users, items, contexts) = (zipf(c.users), zipf(c.items), zipf(c.contexts));
        let mut out = CtrChunk { first_row: first, ..Default::default() };
        for _ in 0..n {
            let user = users.sample(&mut rng) as u64;
            let item = items.sample(&mut rng) as u64;
            let context = contexts.sample(&mut rng) as u64;
            let category = self.category_of(item);
            let dense: Vec<f64> =
                (0..c.n_dense).map(|_| rand_distr::StandardNormal.sample(&mut rng)).collect::<Vec<f64>>();
            let dense_term = |w: &[f64]| w.iter().zip(&dense).map(|(a, b)| a * b).sum::<f64>();
            let click_logit = self.click_bias
                + c.signal * self.dot(Latent::User, user, Latent::ItemClick, item)
                + 0.5 * self.latent(Latent::Category, category, 0)
                + 0.3 * self.latent(Latent::Context, context, 0)
                + dense_term(&self.dense_click);
            let purchase_logit = self.purchase_bias
                + c.signal * self.dot(Latent::User, user, Latent::ItemPurchase, item)
                + 0.5 * self.latent(Latent::Category, category, 1)
                + dense_term(&self.dense_purchase);
            let click = rng.random::<f64>() < sigmoid(click_logit);
            let bought = rng.random::<f64>() < sigmoid(purchase_logit);
            out.user.push(user as i64);
            out.item.push(item as i64);
            out.category.push(category as i64);
            out.context.push(context as i64);
            out.dense.extend(dense.iter().map(|&v| v as f32));
            out.click.push(click as i8);
            out.purchase.push((click && bought) as i8);
            out.click_logit.push(click_logit as f32);
            out.purchase_logit.push(purchase_logit as f32);
        }
        out
    }

    /// Every chunk in order.
    pub fn chunks(&self) -> impl Iterator<Item = CtrChunk> + '_ {
        (0..self.n_chunks()).map(|i| self.chunk(i))
    }

    /// Column names, in the order the writers use.
    pub fn column_names(&self) -> Vec<String> {
        let mut names: Vec<String> = ["user_id", "item_id", "category_id", "context_id"].map(String::from).into();
        names.extend((0..self.config.n_dense).map(|j| format!("dense_{j}")));
        names.extend(["click", "purchase"].map(String::from));
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64) -> SyntheticCtr {
        SyntheticCtr::new(SyntheticCtrConfig {
            rows: 50_000,
            users: 10_000,
            items: 5_000,
            chunk_rows: 16_384,
            seed,
            ..Default::default()
        })
        .unwrap()
    }

    /// AUC of scores against 0/1 labels (ties count half), by ranks.
    fn auc(scores: &[f32], labels: &[i8]) -> f64 {
        let mut idx: Vec<usize> = (0..scores.len()).collect();
        idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
        let (mut rank_sum, mut pos) = (0.0, 0.0);
        for (r, &i) in idx.iter().enumerate() {
            if labels[i] == 1 {
                rank_sum += (r + 1) as f64;
                pos += 1.0;
            }
        }
        let neg = scores.len() as f64 - pos;
        (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
    }

    #[test]
    fn the_same_seed_gives_the_same_rows_chunk_by_chunk() {
        let (a, b, c) = (small(3), small(3), small(4));
        assert_eq!(a.n_chunks(), 4);
        assert_eq!(a.chunk(2), b.chunk(2));
        assert_ne!(a.chunk(2).user, c.chunk(2).user);
        let sizes: Vec<usize> = a.chunks().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![16_384, 16_384, 16_384, 50_000 - 3 * 16_384]);
        assert_eq!(a.chunk(3).first_row, 3 * 16_384);
    }

    #[test]
    fn purchases_follow_clicks_and_rates_are_near_the_base() {
        let g = small(5);
        let rows: Vec<CtrChunk> = g.chunks().collect();
        let clicks: usize = rows.iter().flat_map(|c| &c.click).map(|&v| v as usize).sum();
        let buys: usize = rows.iter().flat_map(|c| &c.purchase).map(|&v| v as usize).sum();
        for c in &rows {
            assert!(c.purchase.iter().zip(&c.click).all(|(&p, &k)| p <= k), "a purchase without a click");
            assert!(c.category.iter().zip(&c.item).all(|(&cat, &item)| cat as u64 == g.category_of(item as u64)));
            assert_eq!(c.dense.len(), c.len() * 4);
        }
        let ctr = clicks as f64 / 50_000.0;
        let cvr = buys as f64 / clicks as f64;
        // the latent terms spread the logits around the base: the mean rate rises above it
        assert!((0.05..0.25).contains(&ctr), "ctr {ctr}");
        assert!((0.1..0.45).contains(&cvr), "cvr {cvr}");
    }

    #[test]
    fn ids_are_zipf_distributed() {
        let g = small(6);
        let mut counts = vec![0usize; 10_001];
        for c in g.chunks() {
            for &u in &c.user {
                assert!((1..=10_000).contains(&u));
                counts[u as usize] += 1;
            }
        }
        // Zipf(1.05) over 10⁴ ids: P(1) = 1/H ≈ 0.11, P(2) ≈ P(1)/2^1.05; the tail is thin
        let p1 = counts[1] as f64 / 50_000.0;
        assert!((0.08..0.15).contains(&p1), "P(user 1) = {p1}");
        let ratio = counts[1] as f64 / counts[2] as f64;
        assert!((1.7..2.5).contains(&ratio), "P(1)/P(2) = {ratio}");
        assert!(counts[9_000..].iter().sum::<usize>() < 500);
    }

    #[test]
    fn the_labels_carry_the_planted_signal() {
        let g = small(7);
        let rows: Vec<CtrChunk> = g.chunks().collect();
        let (scores, clicks): (Vec<f32>, Vec<i8>) =
            rows.iter().flat_map(|c| c.click_logit.iter().copied().zip(c.click.iter().copied())).unzip();
        let click_auc = auc(&scores, &clicks);
        assert!(click_auc > 0.75, "the true click logit ranks clicks: AUC {click_auc}");
        let (scores, buys): (Vec<f32>, Vec<i8>) = rows
            .iter()
            .flat_map(|c| (0..c.len()).filter(|&i| c.click[i] == 1).map(|i| (c.purchase_logit[i], c.purchase[i])))
            .unzip();
        let cvr_auc = auc(&scores, &buys);
        assert!(cvr_auc > 0.7, "the true purchase logit ranks purchases among clicks: AUC {cvr_auc}");
        // without signal the click logit knows only category, context and dense features
        let flat = SyntheticCtr::new(SyntheticCtrConfig { signal: 0.0, ..g.config().clone() }).unwrap();
        let c = flat.chunk(0);
        let user_only: Vec<f32> = c.user.iter().map(|&u| g.latent(Latent::User, u as u64, 0) as f32).collect();
        assert!((auc(&user_only, &c.click) - 0.5).abs() < 0.03, "no user effect without signal");
    }

    #[test]
    fn bad_configs_are_named_errors() {
        let err = |c: SyntheticCtrConfig| SyntheticCtr::new(c).unwrap_err().to_string();
        assert!(err(SyntheticCtrConfig { users: 0, ..Default::default() }).contains("users must be at least 1"));
        assert!(err(SyntheticCtrConfig { base_ctr: 1.0, ..Default::default() }).contains("base_ctr = 1"));
        assert!(err(SyntheticCtrConfig { chunk_rows: 0, ..Default::default() }).contains("chunk_rows"));
    }
}
