//! A training loop of your own over `train_step`, for a schedule the trainer does not have — here
//! a cosine learning-rate decay per step and validation every half epoch, keeping the best model:
//! `cargo run -p mtrec-examples --example own_loop` (burn's `custom-training-loop`, in mtrec terms).
//!
//! The pieces are the ones [`Trainer`](mtrec_train::Trainer) uses: the model, optimisers and
//! balancer the config names, [`train_step`] (the balancer's forward and backward, then the
//! optimisers' update) and [`evaluate`].

use burn::{module::Module, tensor::Device};
use mtrec_data::{BatchOrder, SplitRows, SyntheticConfig};
use mtrec_train::{DataConfig, DataSource, ExperimentConfig, Split, evaluate, train_step};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = ExperimentConfig {
        data: DataConfig {
            source: DataSource::Synthetic,
            synthetic: SyntheticConfig { correlation: 0.5, n_train: 4_000, ..Default::default() },
            ..Default::default()
        },
        ..Default::default()
    };
    config.balance.method = mtrec_balance::BalanceMethod::Pcgrad;
    let dataset = config.data.load()?;
    let schema = &dataset.schema;
    let device = Device::flex();
    let training = device.clone().autodiff();
    let mut model = config.build_model(schema, &training)?;
    let mut optim = config.optimizers(&model);
    let mut balancer = config.balancer(schema)?;
    let kinds = schema.task_kinds();

    let (epochs, batch_size, peak_lr) = (6, 128, 3e-3);
    let steps_per_epoch = dataset.train.n_rows().div_ceil(batch_size);
    let total = (epochs * steps_per_epoch) as f64;
    let validate_every = steps_per_epoch / 2;
    let mut best: Option<(f64, usize, _)> = None;
    for epoch in 0..epochs {
        let order = BatchOrder::Shuffled(config.seed + epoch as u64);
        let batches = dataset.train.stream(schema.widths(), batch_size, order, &training);
        let mut loss_sums = vec![0.0; kinds.len()];
        for (b, batch) in batches.enumerate() {
            let step = epoch * steps_per_epoch + b;
            // cosine decay from the peak to 0 over the run
            let lr = peak_lr * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total).cos());
            let losses;
            (model, losses) = train_step(model, &mut optim, balancer.as_mut(), &batch?, &kinds, lr)?;
            for (sum, loss) in loss_sums.iter_mut().zip(losses) {
                *sum += loss.into_scalar::<f32>() as f64 / steps_per_epoch as f64;
            }
            if (step + 1) % validate_every == 0 {
                let valid = evaluate(&model.valid(), &dataset.valid, Split::Valid, schema, &device, 1024)?;
                let mse = (valid[0]["mse"] + valid[1]["mse"]) / 2.0;
                println!("step {:>4} (lr {lr:.5}): validation mean MSE {mse:.4}", step + 1);
                if best.as_ref().is_none_or(|(m, _, _)| mse < *m) {
                    best = Some((mse, step + 1, model.valid()));
                }
            }
        }
        // DWA reads the epoch's mean losses (batch means averaged: close to the row mean)
        balancer.end_epoch(&loss_sums);
    }
    let (mse, step, best_model) = best.expect("validated at least once");
    let test = evaluate(&best_model, &dataset.test, Split::Test, schema, &device, 1024)?;
    println!(
        "best validation MSE {mse:.4} after step {step}; its test MSE: task1 {:.4}, task2 {:.4}",
        test[0]["mse"], test[1]["mse"]
    );
    println!(
        "what Trainer adds to this: checkpoints and resume, early stopping, the run folder (config, epochs, \
         summary, figures), data parallelism, the adversarial probe and gate diagnostics"
    );
    Ok(())
}
