//! The tasks' gradients on a fine-tuned text encoder (`train.encoder_gradients_every`) are taken
//! through the same dropout masks for every task: the Gram matrix equals the one computed apart
//! from each task's own backward with the generator seeded alike, and differs from one whose tasks
//! draw masks of their own.
//!
//! A test binary of its own with one test: the backend's generator is one per process, and a test
//! drawing from it on another thread between a seeding and a forward would change the masks.

use burn::{
    module::{Module, ModuleVisitor, Param},
    optim::GradientsParams,
    tensor::{Device, Tensor},
};
use mtrec_data::{BatchOrder, MtlBatch, TaskKind, batches};
use mtrec_model::{MultiTaskModel, MultiTaskNet};
use mtrec_train::{ExperimentConfig, batch_task_loss, encoder_gradient_gram};

/// The small table with a `title` text column read by the tiny BERT (dropout 0.1 in every layer),
/// fully fine-tuned.
fn config() -> ExperimentConfig {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let table = root.join("../mtrec-data/tests/fixtures/table-small");
    let tiny = root.join("../mtrec-text/tests/fixtures/tiny-bert/model");
    let text = format!(
        "{}\n[[data.columns]]\nname = \"title\"\nkind = \"text\"\nencoder = {:?}\n\n[model.text]\nfinetune = \"full\"\n",
        include_str!("fixtures/table_small.toml"),
        tiny.display().to_string()
    );
    ExperimentConfig::from_toml(&text, "text table config", &[format!("data.dir={:?}", table.display().to_string())])
        .unwrap()
}

/// Task `t`'s gradient on the encoder's parameters (flattened to the host), its forward's masks
/// drawn after seeding the generator with `seed`.
fn own_gradient(model: &MultiTaskNet, batch: &MtlBatch, kinds: &[TaskKind], t: usize, seed: u64) -> Vec<f64> {
    struct Host(Vec<f64>, GradientsParams);
    impl ModuleVisitor for Host {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.1.get::<D>(param.id) {
                self.0.extend(g.into_data().convert::<f64>().try_into_vec::<f64>().unwrap());
            }
        }
    }
    let encoder = model.text_encoder().unwrap();
    batch.labels.device().seed(seed);
    let shared = model.forward_shared(batch.features.clone());
    let losses: Vec<Tensor<1>> =
        (0..kinds.len()).map(|k| batch_task_loss(kinds[k], model.forward_task(k, &shared).output, batch, k)).collect();
    let mut host = Host(Vec::new(), GradientsParams::from_grads(losses[t].clone().backward(), &encoder));
    encoder.visit(&mut host);
    host.0
}

#[test]
fn every_task_is_measured_through_the_same_dropout_masks() {
    let cfg = config();
    let ds = cfg.data.load().unwrap();
    let kinds = ds.schema.task_kinds();
    let ad = Device::flex().autodiff();
    ad.seed(3);
    let model = cfg.build_model(&ds.schema, &ad).unwrap();
    let batch = batches(&ds.train, ds.schema.widths(), 16, BatchOrder::Sequential, &ad).next().unwrap();
    // burn draws lazily initialised parameters at their first use: a first measurement draws them
    encoder_gradient_gram(&model, &batch, &kinds, 11).unwrap();
    let (gram, measured) = encoder_gradient_gram(&model, &batch, &kinds, 11).unwrap();
    assert_eq!(measured, vec![true, true]);

    let own = [own_gradient(&model, &batch, &kinds, 0, 11), own_gradient(&model, &batch, &kinds, 1, 11)];
    assert!(own[0].len() > 1000, "every encoder parameter: {}", own[0].len());
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    for (i, j) in [(0, 0), (0, 1), (1, 1)] {
        let expected = dot(&own[i], &own[j]);
        let close = (gram[i][j] - expected).abs() <= 1e-4 * expected.abs().max(1e-8);
        assert!(close, "gram[{i}][{j}] {} vs the same masks' {expected}", gram[i][j]);
    }
    // the masks matter: task 1 through masks of its own gives another norm and inner product
    let other = own_gradient(&model, &batch, &kinds, 1, 12);
    for (name, measured, with_other_masks) in
        [("⟨g0, g1⟩", gram[0][1], dot(&own[0], &other)), ("‖g1‖²", gram[1][1], dot(&other, &other))]
    {
        let apart = (measured - with_other_masks).abs() > 1e-3 * measured.abs();
        assert!(apart, "{name}: {measured} with the same masks, {with_other_masks} with task 1's own");
    }
}
