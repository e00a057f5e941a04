//! Tasks with their own sample spaces, end to end: the small mixed table of mtrec-data with `stars`
//! (5 classes) and a binary `buy` labelled only on clicked rows (`space = "click == 1"`), trained
//! with every balancer, in memory and streamed; the reported metrics are those of the labelled
//! rows, recomputed here by hand from the model's outputs.

use std::path::Path;

use burn::tensor::Device;
use mtrec_data::{BatchOrder, MtlDataset, SplitRows};
use mtrec_model::MultiTaskModel;
use mtrec_train::{ExperimentConfig, Split, Summary, Trainer, evaluate};

#[allow(dead_code)] // the data-parallel helpers of the module
mod scenarios;

fn config(sets: &[String]) -> ExperimentConfig {
    let dir = toml::Value::String(scenarios::fixtures().join("table-small").display().to_string());
    let text = scenarios::with_sample_spaces(include_str!("fixtures/table_small.toml"));
    let mut all = vec![format!("data.dir={dir}"), "train.epochs=2".into()];
    all.extend_from_slice(sets);
    ExperimentConfig::from_toml(&text, "table_small.toml with spaces", &all).unwrap()
}

/// Fraction of (positive, negative) pairs ordered correctly, ties ½ — AUC by its definition.
fn pairwise_auc(scores: &[f64], labels: &[f64]) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for (i, &si) in scores.iter().enumerate() {
        for (j, &sj) in scores.iter().enumerate() {
            if labels[i] == 1.0 && labels[j] == 0.0 {
                den += 1.0;
                num += if si > sj {
                    1.0
                } else if si == sj {
                    0.5
                } else {
                    0.0
                };
            }
        }
    }
    num / den
}

/// Every test metric of the labelled rows, by hand from the outputs of `model` on the test split
/// read in one batch: `buy` AUC and logloss, `stars` accuracy and logloss, and their row counts.
fn check_by_hand(name: &str, summary: &Summary, model: &mtrec_model::MultiTaskNet, ds: &MtlDataset) {
    let device = Device::flex();
    let n = ds.test.n_rows();
    let batch = ds.test.stream(ds.schema.widths(), n, BatchOrder::Sequential, &device).next().unwrap().unwrap();
    let n_tasks = ds.schema.n_tasks();
    let labels = batch.labels.clone().into_data().try_into_vec::<f32>().unwrap();
    let outputs: Vec<Vec<f32>> = model
        .forward(batch.features)
        .into_iter()
        .map(|o| o.output.into_data().try_into_vec::<f32>().unwrap())
        .collect();
    let task = |name: &str| ds.schema.task_index(name).unwrap();
    let column = |t: usize| -> Vec<f64> { labels.iter().skip(t).step_by(n_tasks).map(|&y| y as f64).collect() };
    let close = |metric: &str, task: &str, want: f64| {
        let got = summary.test[task][metric];
        assert!((got - want).abs() < 1e-5, "{name}: test {task} {metric}: reported {got}, by hand {want}");
    };
    // buy: binary, on the clicked rows only
    let (b, s, click) = (task("buy"), task("stars"), task("click"));
    let y = column(b);
    let rows: Vec<usize> = (0..n).filter(|&i| !y[i].is_nan()).collect();
    let clicked: Vec<usize> = (0..n).filter(|&i| column(click)[i] == 1.0).collect();
    assert_eq!(rows, clicked, "{name}: buy is labelled exactly on the clicked rows");
    assert!(rows.len() < n && rows.len() > 4, "{name}: the test split has rows of both kinds");
    let z: Vec<f64> = rows.iter().map(|&i| outputs[b][i] as f64).collect();
    let yl: Vec<f64> = rows.iter().map(|&i| y[i]).collect();
    close("auc", "buy", pairwise_auc(&z, &yl));
    let logloss = z.iter().zip(&yl).map(|(z, y)| -(y * sigmoid(*z).ln() + (1.0 - y) * (1.0 - sigmoid(*z)).ln()));
    close("logloss", "buy", logloss.sum::<f64>() / rows.len() as f64);
    close("labelled_rows", "buy", rows.len() as f64);
    // stars: 5 classes, on the clicked rows only
    let y = column(s);
    let (mut correct, mut nll) = (0usize, 0.0);
    for &i in &rows {
        let logits: Vec<f64> = outputs[s][i * 5..i * 5 + 5].iter().map(|&v| v as f64).collect();
        let max = logits.iter().copied().fold(f64::MIN, f64::max);
        let log_total = logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln() + max;
        let class = y[i] as usize;
        nll += log_total - logits[class];
        let best = (0..5).fold(0, |a, k| if logits[k] > logits[a] { k } else { a });
        correct += usize::from(best == class);
    }
    close("accuracy", "stars", correct as f64 / rows.len() as f64);
    close("logloss", "stars", nll / rows.len() as f64);
    close("labelled_rows", "stars", rows.len() as f64);
    // click keeps every row
    let z: Vec<f64> = outputs[click].iter().map(|&v| v as f64).collect();
    close("auc", "click", pairwise_auc(&z, &column(click)));
    assert!(!summary.test["click"].contains_key("labelled_rows"), "{name}: click is labelled on every row");
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Every balancer trains the table whose `stars` and `buy` exist only on clicked rows (42 % of the
/// training rows without them): finite losses that fall for the labelled tasks, and test metrics that
/// equal those recomputed by hand over the labelled rows from the selected model's outputs.
#[test]
fn every_balancer_trains_tasks_with_their_own_spaces() {
    let base = config(&[]);
    let ds = base.data.load().unwrap();
    let n = ds.train.n_rows;
    let labelled =
        ds.train.label_column(ds.schema.task_index("buy").unwrap(), 3).iter().filter(|y| !y.is_nan()).count();
    assert!((n - labelled) * 3 > n, "buy is missing on over a third of the rows: {labelled} of {n} labelled");
    for method in mtrec_balance::BalanceMethod::ALL {
        let mut cfg = base.clone();
        cfg.balance.method = method.clone();
        let name = method.as_str().to_string();
        let (summary, records, model) =
            Trainer::new(&cfg, &ds, Device::flex()).verbose(false).run().unwrap_or_else(|e| panic!("{name}: {e}"));
        for r in &records {
            assert!(r.train_loss.values().all(|l| l.is_finite() && *l > 0.0), "{name}: {:?}", r.train_loss);
        }
        check_by_hand(&name, &summary, &model, &ds);
    }
}

/// Streamed from chunk files (chunks of 20 rows, a shuffle window of 2), the same spaces train and
/// evaluate: the metrics of the streamed test split equal those of the split in memory, row counts
/// included, and the run's reported metrics match the hand computation.
#[test]
fn streamed_tasks_with_their_own_spaces_match_memory() {
    let chunks = tempfile::tempdir().unwrap();
    let cfg = config(&[
        "data.stream=true".into(),
        format!("data.chunk_dir={:?}", chunks.path().display().to_string()),
        "data.chunk_rows=20".into(),
        "data.shuffle_window=2".into(),
    ]);
    let (streamed, _) = cfg.data.load_streamed(None).unwrap();
    let memory = cfg.data.load().unwrap();
    let (summary, _, model) = Trainer::new(&cfg, &streamed, Device::flex()).verbose(false).run().unwrap();
    let device = Device::flex();
    let on_chunks = evaluate(&model, &streamed.test, Split::Test, &streamed.schema, &device, 7).unwrap();
    let in_memory = evaluate(&model, &memory.test, Split::Test, &memory.schema, &device, 1000).unwrap();
    assert_eq!(on_chunks, in_memory, "the same metrics whichever way the rows are read");
    assert!(on_chunks[memory.schema.task_index("buy").unwrap()].contains_key("labelled_rows"));
    check_by_hand("streamed", &summary, &model, &memory);
    assert!(Path::new(&chunks.path()).read_dir().unwrap().next().is_some(), "the chunks were written");
}
