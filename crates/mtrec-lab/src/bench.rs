//! Throughput and latency of training and inference on one device and batch size: what
//! `cargo xtask bench` measures (one configuration per process, so peak memory is its own).

use std::time::{Duration, Instant};

use burn::{module::Module, tensor::Device};
use mtrec_data::{BatchOrder, MtlDataset, batches};
use mtrec_model::MultiTaskModel;
use serde::{Deserialize, Serialize};

use mtrec_train::{ExperimentConfig, TrainError, train_step};

/// How long to measure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BenchOptions {
    /// Training batch size (also the inference batch size).
    pub batch_size: usize,
    /// Steps run before measuring (first-step costs: allocation, shader compilation).
    pub warmup_steps: usize,
    /// Steps timed for throughput, and again one by one for latency.
    pub measure_steps: usize,
}

/// One device × batch size measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    /// Backend name.
    pub device: String,
    /// Batch size.
    pub batch_size: usize,
    /// The balancing method of the measured steps.
    #[serde(default)]
    pub balance: String,
    /// Steady-state training throughput: samples per second over `measure_steps` steps after warm-up
    /// (batch assembly, forward, backward and Adam update included).
    pub train_samples_per_sec: f64,
    /// Inference throughput in evaluation mode, outputs read back to the host.
    pub inference_samples_per_sec: f64,
    /// Median training step latency (each step synchronised), milliseconds.
    pub step_ms_p50: f64,
    /// 95th percentile training step latency, milliseconds.
    pub step_ms_p95: f64,
    /// Seconds the warm-up steps took (includes model initialisation and shader compilation).
    pub warmup_seconds: f64,
    /// Peak resident memory of the process, MiB (Linux `VmHWM`; `None` elsewhere).
    pub peak_rss_mib: Option<f64>,
    /// Largest device memory reserved by burn's allocator, MiB (`None` where the backend does not report it).
    pub device_memory_mib: Option<f64>,
    /// Steps measured.
    pub measure_steps: usize,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[idx]
}

/// Peak resident set size of this process in MiB, from `/proc/self/status`.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Measures training and inference of `config`'s model on `dataset.train` / `dataset.valid`.
pub fn bench(
    config: &ExperimentConfig,
    dataset: &MtlDataset,
    device: &Device,
    device_name: &str,
    opts: BenchOptions,
) -> Result<BenchResult, TrainError> {
    let schema = &dataset.schema;
    let kinds = schema.task_kinds();
    let widths = schema.widths();
    let mut balancer = config.balancer(schema)?;
    let ad = device.clone().autodiff();
    let sync = || ad.sync().map_err(|e| TrainError::Config(format!("device sync: {e:?}")));
    let mut device_bytes: Option<u64> = None;
    let mut sample_memory = |d: &Device| {
        if let Some(u) = d.memory_pool_usage() {
            device_bytes = Some(device_bytes.unwrap_or(0).max(u.bytes_reserved));
        }
    };

    let warm_start = Instant::now();
    device.seed(config.seed);
    let mut model = config.build_model(schema, &ad)?;
    let mut optim = config.train.optimizer();
    let total = opts.warmup_steps + 2 * opts.measure_steps;
    let mut stream = (0u64..)
        .flat_map(|epoch| batches(&dataset.train, widths, opts.batch_size, BatchOrder::Shuffled(epoch), &ad))
        .filter(|b| b.size == opts.batch_size)
        .take(total);
    let lr = config.learning_rates(schema, &model)?;
    for batch in stream.by_ref().take(opts.warmup_steps) {
        (model, _) = train_step(model, &mut optim, balancer.as_mut(), &batch, &kinds, lr.clone())?;
    }
    sync()?;
    let warmup_seconds = warm_start.elapsed().as_secs_f64();
    sample_memory(device);

    // Throughput: steps back to back, one synchronisation at the end.
    let start = Instant::now();
    for batch in stream.by_ref().take(opts.measure_steps) {
        (model, _) = train_step(model, &mut optim, balancer.as_mut(), &batch, &kinds, lr.clone())?;
    }
    sync()?;
    let train_secs = start.elapsed().as_secs_f64();
    sample_memory(device);

    // Latency: each step synchronised.
    let mut step_ms = Vec::with_capacity(opts.measure_steps);
    for batch in stream.by_ref().take(opts.measure_steps) {
        let t = Instant::now();
        (model, _) = train_step(model, &mut optim, balancer.as_mut(), &batch, &kinds, lr.clone())?;
        sync()?;
        step_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    sample_memory(device);
    step_ms.sort_by(f64::total_cmp);

    // Inference: evaluation mode over the validation split, outputs read back.
    let eval = model.valid();
    let mut rows = 0usize;
    let mut infer = Duration::ZERO;
    let eval_batches: Vec<_> = batches(&dataset.valid, widths, opts.batch_size, BatchOrder::Sequential, device)
        .take(opts.measure_steps)
        .collect();
    // one untimed pass to warm up the evaluation kernels
    if let Some(b) = eval_batches.first() {
        for out in eval.forward(b.features.clone()) {
            out.output.into_data();
        }
    }
    for b in eval_batches {
        let t = Instant::now();
        for out in eval.forward(b.features) {
            out.output.into_data();
        }
        infer += t.elapsed();
        rows += b.size;
    }
    sample_memory(device);

    Ok(BenchResult {
        device: device_name.to_string(),
        batch_size: opts.batch_size,
        balance: config.balance.method.as_str().to_string(),
        train_samples_per_sec: (opts.measure_steps * opts.batch_size) as f64 / train_secs,
        inference_samples_per_sec: rows as f64 / infer.as_secs_f64(),
        step_ms_p50: percentile(&step_ms, 0.5),
        step_ms_p95: percentile(&step_ms, 0.95),
        warmup_seconds,
        peak_rss_mib: peak_rss_mib(),
        device_memory_mib: device_bytes.map(|b| b as f64 / (1024.0 * 1024.0)),
        measure_steps: opts.measure_steps,
    })
}

/// Step times of several configs (one per balancer, kernel switch, vocabulary…) taking turns in
/// one process.
///
/// Each config trains its own model on batches of its own dataset (`datasets[i]` for
/// `configs[i]`; configs that differ only in the model share one); every round, each runs `steps`
/// synchronised steps in turn (after `warmup` steps each), so a slow spell of the machine hits all
/// of them alike. Returns, per config, the mean step time (ms) of each round.
pub fn interleaved_step_ms(
    configs: &[ExperimentConfig],
    datasets: &[&MtlDataset],
    device: &Device,
    batch_size: usize,
    warmup: usize,
    steps: usize,
    rounds: usize,
) -> Result<Vec<Vec<f64>>, TrainError> {
    assert_eq!(configs.len(), datasets.len(), "one dataset a config");
    let ad = device.clone().autodiff();
    let sync = || ad.sync().map_err(|e| TrainError::Config(format!("device sync: {e:?}")));
    let mut runs = Vec::new();
    for (config, dataset) in configs.iter().zip(datasets) {
        let schema = &dataset.schema;
        let batches: Vec<_> = batches(&dataset.train, schema.widths(), batch_size, BatchOrder::Shuffled(0), &ad)
            .filter(|b| b.size == batch_size)
            .take(steps.max(warmup))
            .collect();
        device.seed(config.seed);
        let model = config.build_model(schema, &ad)?;
        let lr = config.learning_rates(schema, &model)?;
        runs.push((Some(model), config.train.optimizer(), config.balancer(schema)?, lr, batches, schema.task_kinds()));
    }
    let mut times = vec![Vec::with_capacity(rounds); configs.len()];
    for round in 0..=rounds {
        for (run, (model, optim, balancer, lr, batches, kinds)) in runs.iter_mut().enumerate() {
            let n = if round == 0 { warmup } else { steps };
            // the kernels switch is process-wide: each config runs with its own
            mtrec_kernels::set_fused_kernels(configs[run].model.fused_kernels);
            sync()?;
            let start = Instant::now();
            for batch in batches.iter().cycle().take(n) {
                // moved, not cloned: a shared table would be copied by the in-place row updates
                let m = model.take().expect("the model is put back after every step");
                *model = Some(train_step(m, optim, balancer.as_mut(), batch, kinds, lr.clone())?.0);
                sync()?;
            }
            if round > 0 {
                times[run].push(start.elapsed().as_secs_f64() * 1e3 / n as f64);
            }
        }
    }
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mtrec_data::SyntheticConfig;
    use mtrec_train::{DataConfig, DataSource};

    #[test]
    fn percentiles_of_hand_made_latencies() {
        let v: Vec<f64> = (1..=101).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.95), 96.0);
    }

    #[test]
    fn bench_reports_consistent_numbers() {
        let config = ExperimentConfig {
            data: DataConfig {
                source: DataSource::Synthetic,
                synthetic: SyntheticConfig { dim: 8, n_train: 512, n_valid: 256, n_test: 16, ..Default::default() },
                ..Default::default()
            },
            ..Default::default()
        };
        let ds = config.data.load().unwrap();
        let opts = BenchOptions { batch_size: 64, warmup_steps: 2, measure_steps: 10 };
        let r = bench(&config, &ds, &Device::flex(), "flex", opts).unwrap();
        assert!(r.train_samples_per_sec > 0.0 && r.inference_samples_per_sec > 0.0);
        assert!(r.step_ms_p50 > 0.0 && r.step_ms_p50 <= r.step_ms_p95);
        // a synchronised step cannot be faster than the throughput implies by orders of magnitude
        let implied_ms = 64.0 / r.train_samples_per_sec * 1e3;
        assert!(r.step_ms_p50 < 100.0 * implied_ms && implied_ms < 100.0 * r.step_ms_p50, "{r:?}");
        assert!(r.peak_rss_mib.unwrap() > 1.0);
    }
}
