//! Short training runs that data-parallel ranks must reproduce: one epoch of 20 steps each (the
//! selected model is then the last step's), on the fixtures in mtrec-data.

use std::path::{Path, PathBuf};

use burn::{
    module::{Module, ModuleVisitor, Param},
    tensor::{Device, Tensor},
};
use mtrec_model::MultiTaskNet;
use mtrec_train::{DataParallel, ExperimentConfig, Summary, Trainer};

/// The fixtures folder of mtrec-data.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../mtrec-data/tests/fixtures")
}

/// `(name, config)` of every scenario: fixed weights, uncertainty weighting and GradNorm on MMoE
/// (synthetic regression, 1,280 rows in batches of 64), a row-sparse census model with lazy Adam
/// (batches of 11: the last has 2 rows), PCGrad on a sparse table model with a multi-valued
/// column, a 5-class task and GAUC groups (batches of 5), PCGrad, GradNorm and FAMO on that table with two
/// tasks labelled on clicked rows only, and PCGrad on a model whose text encoder (a tiny BERT) is
/// fine-tuned fully with the tasks.
pub fn scenarios() -> Vec<(String, ExperimentConfig)> {
    let synthetic = |method: &str, extra: &str| {
        format!(
            r#"
            name = "dp-{method}"
            seed = 7
            [data]
            source = "synthetic"
            [data.synthetic]
            dim = 12
            n_train = 1280
            n_valid = 200
            n_test = 200
            [model]
            architecture = "mmoe"
            n_experts = 3
            expert_hidden = [16]
            tower_hidden = [8]
            [balance]
            method = "{method}"
            {extra}
            [train]
            epochs = 1
            batch_size = 64
            lr = 0.003
            [train.early_stopping]
            metric = "mse"
            "#
        )
    };
    let census = format!(
        r#"
        name = "dp-sparse-census"
        seed = 3
        [data]
        source = "census"
        dir = {:?}
        [model]
        architecture = "mmoe"
        sparse_embeddings = true
        n_experts = 3
        expert_hidden = [16]
        tower_hidden = [8]
        [balance]
        method = "uncertainty"
        [train]
        epochs = 1
        batch_size = 11
        lr = 0.01
        sparse_optimizer = "lazy_adam"
        "#,
        fixtures().join("census-small").display().to_string()
    );
    let configs = [
        ("fixed".to_string(), synthetic("fixed", "")),
        ("uncertainty".to_string(), synthetic("uncertainty", "")),
        ("gradnorm".to_string(), synthetic("gradnorm", "alpha = 1.5")),
        ("gradnorm-representation".to_string(), synthetic("gradnorm", "gradnorm_layer = \"representation\"")),
        ("sparse-census".to_string(), census),
    ];
    let mut scenarios: Vec<(String, ExperimentConfig)> = configs
        .into_iter()
        .map(|(name, text)| {
            let cfg = ExperimentConfig::from_toml(&text, &name, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, cfg)
        })
        .collect();
    let dir = toml::Value::String(fixtures().join("table-small").display().to_string());
    let sets = [
        format!("data.dir={dir}"),
        "name=\"dp-sparse-table\"".into(),
        "seed=5".into(),
        "model.architecture=\"shared_bottom\"".into(),
        "model.sparse_embeddings=true".into(),
        "balance.method=\"pcgrad\"".into(),
        "train.epochs=1".into(),
        "train.batch_size=5".into(),
        "train.sparse_optimizer=\"adagrad\"".into(),
    ];
    let text = include_str!("../fixtures/table_small.toml");
    scenarios
        .push(("sparse-table-pcgrad".into(), ExperimentConfig::from_toml(text, "table_small.toml", &sets).unwrap()));
    // tasks with their own sample spaces: the 5-class `stars` and a binary `buy` labelled only on
    // clicked rows; shards of 1–3 rows often hold none of a task's labels, and each rank's loss is
    // its share of the batch's labelled rows
    for method in ["pcgrad", "gradnorm", "famo"] {
        let sets = [
            format!("data.dir={dir}"),
            format!("name=\"dp-spaces-{method}\""),
            "seed=11".into(),
            format!("balance.method=\"{method}\""),
            "train.epochs=1".into(),
            "train.batch_size=5".into(),
        ];
        let spaced = with_sample_spaces(text);
        scenarios.push((format!("spaces-{method}"), ExperimentConfig::from_toml(&spaced, "spaces", &sets).unwrap()));
    }
    // the language model trains with the tasks: the tiny BERT of mtrec-text's fixtures, fully
    // fine-tuned on the titles, its parameters shared ones that PCGrad projects (no dropout: each
    // rank would draw its own masks)
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mtrec-text/tests/fixtures/tiny-bert/model");
    let text = format!(
        "{text}\n[[data.columns]]\nname = \"title\"\nkind = \"text\"\nencoder = {:?}\n\n[model.text]\n\
         finetune = \"full\"\ndropout = 0.0\nlr = 0.01\n",
        tiny.display().to_string()
    );
    let sets = [
        format!("data.dir={dir}"),
        "name=\"dp-finetune-text\"".into(),
        "seed=9".into(),
        "balance.method=\"pcgrad\"".into(),
        "train.epochs=1".into(),
        "train.batch_size=5".into(),
    ];
    scenarios.push((
        "finetune-text-pcgrad".into(),
        ExperimentConfig::from_toml(&text, "table_small.toml + title", &sets).unwrap(),
    ));
    scenarios
}

/// `table_small.toml` with two tasks on clicked rows only: `stars` gets `space = "click == 1"`, and
/// a binary `buy` task with the same space is added.
pub fn with_sample_spaces(table_small: &str) -> String {
    let stars = "classes = [1, 2, 3, 4, 5]";
    assert!(table_small.contains(stars), "table_small.toml names the stars classes");
    table_small.replace(stars, &format!("{stars}\nspace = \"click == 1\""))
        + "\n[[data.tasks]]\nname = \"buy\"\nkind = \"binary\"\npositive = [1]\nspace = \"click == 1\"\n"
}

/// Each parameter's values, in visiting order.
pub fn parameters(model: &MultiTaskNet) -> Vec<Vec<f32>> {
    struct Values(Vec<Vec<f32>>);
    impl ModuleVisitor for Values {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.val().into_data().try_into_vec::<f32>().expect("f32 parameters"));
        }
    }
    let mut values = Values(Vec::new());
    model.visit(&mut values);
    values.0
}

/// Trains `cfg` over `parallel`'s ranks; the summary and the parameters after the epoch.
pub fn train(cfg: &ExperimentConfig, parallel: DataParallel) -> (Summary, Vec<Vec<f32>>) {
    let ds = cfg.data.load().unwrap_or_else(|e| panic!("{}: {e}", cfg.name));
    let (summary, _, model) =
        Trainer::new(cfg, &ds, Device::flex()).verbose(false).with_data_parallel(parallel).run().unwrap();
    (summary, parameters(&model))
}

/// The largest relative difference of a parameter tensor, `‖a − b‖ / max(‖b‖, 0.01)`: a tensor of
/// norm below 0.01 is compared absolutely (BERT's key bias has a gradient of 0 in exact arithmetic —
/// softmax ignores a constant added to every key's score — so it holds rounding noise of 1e-9,
/// different in every summation order).
pub fn largest_relative_difference(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    assert_eq!(a.len(), b.len(), "the same parameters");
    a.iter()
        .zip(b)
        .map(|(a, b)| {
            assert_eq!(a.len(), b.len(), "the same shapes");
            let diff: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>().sqrt();
            let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>().sqrt();
            diff / norm.max(1e-2)
        })
        .fold(0.0, f64::max)
}

/// Every test metric of `a` equals `b`'s within `tolerance`.
pub fn assert_same_metrics(name: &str, a: &Summary, b: &Summary, tolerance: f64) {
    assert_eq!(a.test.keys().collect::<Vec<_>>(), b.test.keys().collect::<Vec<_>>(), "{name}");
    for (task, metrics) in &b.test {
        for (metric, value) in metrics {
            let got = a.test[task][metric];
            assert!(
                (got - value).abs() <= tolerance * value.abs().max(1.0),
                "{name}: test {task} {metric}: {got} vs {value}"
            );
        }
    }
}
