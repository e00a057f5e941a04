//! A dataset built from Rust vectors — no file — with a column encoding of your own:
//! `cargo run -p mtrec-examples --example rows_in_memory`.
//!
//! The rows are a shop's sessions held in a `Vec` (here drawn from a seeded generator; in an
//! application, whatever the program already holds). Two encodings the config-driven tables do not
//! have are written here: the hour of day as a point on a circle (`sin`, `cos`: 23:00 is next to
//! 00:00), and the price as its logarithm standardised with the *training* rows' mean and spread.
//! The encoded splits are [`EncodedTable`]s under a [`Schema`]; the trainer takes them like any
//! table (anything implementing [`mtrec_data::SplitRows`] trains, in memory or streamed).

use mtrec_data::{CategoricalField, EncodedTable, MtlDataset, Schema, TaskKind, TaskSpec};
use mtrec_train::{ExperimentConfig, TrainConfig, Trainer};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// One session, as the application holds it.
struct Session {
    device: &'static str,
    hour: u32,
    price: f32,
    returning: bool,
    /// Did the session end in a purchase?
    bought: bool,
    /// Minutes spent.
    minutes: f32,
}

const DEVICES: [&str; 3] = ["phone", "tablet", "desktop"];

/// `n` sessions whose purchases depend on the evening hours, the price and returning customers.
fn sessions(n: usize, seed: u64) -> Vec<Session> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let device = DEVICES[rng.random_range(0..DEVICES.len())];
            let hour = rng.random_range(0..24);
            let price = (rng.random_range(1.0f32..7.0)).exp();
            let returning = rng.random_bool(0.3);
            let evening = ((hour as f32 - 20.0) / 24.0 * std::f32::consts::TAU).cos();
            let score = 1.2 * evening - 0.6 * price.ln() + 1.5 * f32::from(returning) + rng.random_range(-1.0..1.0);
            let minutes = 5.0 + 3.0 * evening + 4.0 * f32::from(device == "desktop") + rng.random_range(-2.0..2.0);
            Session { device, hour, price, returning, bought: score > -0.5, minutes }
        })
        .collect()
}

/// The custom encoding: fitted on the training rows, applied to every split.
struct Encoding {
    log_price_mean: f32,
    log_price_std: f32,
}

impl Encoding {
    fn fit(train: &[Session]) -> Self {
        let logs: Vec<f32> = train.iter().map(|s| s.price.ln()).collect();
        let mean = logs.iter().sum::<f32>() / logs.len() as f32;
        let var = logs.iter().map(|l| (l - mean).powi(2)).sum::<f32>() / logs.len() as f32;
        Self { log_price_mean: mean, log_price_std: var.sqrt().max(1e-6) }
    }

    /// The schema the encoding produces: two categorical fields, three dense features, two tasks.
    fn schema() -> Schema {
        Schema::new(
            vec![
                // id 0 is reserved for a missing or unseen value
                CategoricalField { name: "device".into(), vocab_size: DEVICES.len() + 1 },
                CategoricalField { name: "returning".into(), vocab_size: 3 },
            ],
            vec!["hour_sin".into(), "hour_cos".into(), "log_price".into()],
            vec![TaskSpec::new("bought", TaskKind::Binary), TaskSpec::new("minutes", TaskKind::Regression)],
        )
    }

    fn encode(&self, rows: &[Session]) -> EncodedTable {
        let mut table = EncodedTable { n_rows: rows.len(), ..Default::default() };
        for s in rows {
            let device = DEVICES.iter().position(|d| *d == s.device).map_or(0, |i| i as u32 + 1);
            table.categorical.extend([device, 1 + u32::from(s.returning)]);
            let angle = s.hour as f32 / 24.0 * std::f32::consts::TAU;
            let price = (s.price.ln() - self.log_price_mean) / self.log_price_std;
            table.dense.extend([angle.sin(), angle.cos(), price]);
            table.labels.extend([f32::from(s.bought), s.minutes]);
        }
        table
    }
}

fn main() -> Result<(), mtrec_train::TrainError> {
    let (train, valid, test) = (sessions(8_000, 1), sessions(2_000, 2), sessions(2_000, 3));
    let encoding = Encoding::fit(&train);
    let dataset = MtlDataset {
        name: "shop-sessions".into(),
        schema: Encoding::schema(),
        train: encoding.encode(&train),
        valid: encoding.encode(&valid),
        test: encoding.encode(&test),
    };
    let mut config = ExperimentConfig {
        train: TrainConfig { epochs: 8, batch_size: 256, ..Default::default() },
        ..Default::default()
    };
    config.name = "rows_in_memory".into();
    config.model.expert_hidden = vec![16];
    config.train.early_stopping.task = "bought".into();
    let (summary, records, _) = Trainer::new(&config, &dataset, burn::tensor::Device::flex()).verbose(false).run()?;
    let (first, last) = (&records[0], &records[records.len() - 1]);
    println!(
        "{} on {} rows from vectors: training loss {:.4} → {:.4} over {} epochs",
        summary.model,
        dataset.train.n_rows,
        first.train_loss.values().sum::<f64>(),
        last.train_loss.values().sum::<f64>(),
        records.len()
    );
    println!(
        "test: bought AUC {:.4}, minutes MSE {:.4} (label variance {:.4})",
        summary.test["bought"]["auc"],
        summary.test["minutes"]["mse"],
        variance(&test.iter().map(|s| s.minutes).collect::<Vec<_>>())
    );
    assert!(summary.test["bought"]["auc"] > 0.75, "the purchase signal is learnt");
    Ok(())
}

fn variance(values: &[f32]) -> f64 {
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64;
    values.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / values.len() as f64
}
