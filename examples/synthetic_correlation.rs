//! Shared-bottom vs MMoE on the MMoE paper's synthetic tasks at two task correlations, through the
//! library API (no config file): `cargo run -p mtrec-examples --example synthetic_correlation`.
//!
//! The paper's finding (§3.3) is that shared-bottom suffers more than MMoE as the tasks become
//! less correlated; this prints the test MSE of both models at p = 0.9 and p = 0.1.

use mtrec_data::SyntheticConfig;
use mtrec_model::Architecture;
use mtrec_train::{DataConfig, DataSource, ExperimentConfig, TrainConfig, Trainer};

fn main() -> Result<(), mtrec_train::TrainError> {
    println!("{:>6} {:>14} {:>12} {:>12}", "p", "model", "task1 mse", "task2 mse");
    for p in [0.9, 0.1] {
        for arch in [Architecture::SharedBottom, Architecture::Mmoe] {
            let mut config = ExperimentConfig {
                data: DataConfig {
                    source: DataSource::Synthetic,
                    synthetic: SyntheticConfig { correlation: p, n_train: 10_000, ..Default::default() },
                    ..Default::default()
                },
                train: TrainConfig { epochs: 15, batch_size: 128, ..Default::default() },
                ..Default::default()
            };
            config.model.architecture = arch;
            config.model.bottom_hidden = vec![128];
            config.train.early_stopping.metric = "mse".into();
            let dataset = config.data.load()?;
            let (summary, _, _) = Trainer::new(&config, &dataset, burn::tensor::Device::flex()).verbose(false).run()?;
            println!(
                "{p:>6} {:>14} {:>12.4} {:>12.4}",
                summary.model, summary.test["task1"]["mse"], summary.test["task2"]["mse"]
            );
        }
    }
    Ok(())
}
