//! What the training loop does for adversarial tasks besides the ordinary step: the adversary's
//! extra updates (`model.adversary_steps`), the refit of the concept erasers (`model.erasure`)
//! and the dead-head detector.
//!
//! The min–max game of gradient reversal needs an adversary that keeps up: if the head falls
//! behind (or collapses to a constant, whose reversed gradient is zero), the representation is no
//! longer pushed and the attribute stays in it. Extra adversary updates on the same batch let it
//! catch up; the detector says when it has died anyway.

use burn::{module::Module, optim::GradientsParams};
use mtrec_data::{BatchOrder, MtlBatch, SplitRows, TaskKind};
use mtrec_model::{CovarianceSums, LeaceFit, MultiTaskModel, MultiTaskModule, MultiTaskNet};

use crate::{DataParallel, Optimizers, TaskMetrics, TrainError, batch_task_loss};
use burn::lr_scheduler::module_lr_scheduler::ModuleLearningRate;

/// Validations in a row with a dead adversarial head before the warning.
pub const DEAD_HEAD_EPOCHS: usize = 3;
/// How close (in nats) a head's validation logloss must come to the label entropy to count as a
/// constant output.
pub const DEAD_HEAD_NATS: f64 = 1e-3;

/// `steps` updates of the adversarial heads alone on `batch` (after the training step on it): the
/// representation they read is computed once and detached, so nothing below the heads moves. In a
/// data-parallel run each rank takes its shard and the gradients are reduced as the step's are.
pub fn adversary_steps<C: MultiTaskModule>(
    mut model: MultiTaskNet<C>,
    optim: &mut Optimizers,
    batch: &MtlBatch,
    kinds: &[TaskKind],
    lr: &ModuleLearningRate,
    parallel: &DataParallel,
    steps: usize,
) -> MultiTaskNet<C> {
    if steps == 0 || model.adversaries.is_empty() {
        return model;
    }
    let (rows, share) = parallel.shard(batch.size);
    let shard = if parallel.size() > 1 { batch.rows(rows) } else { batch.clone() };
    let main = model.n_tasks() - model.adversaries.len();
    let representation = model.representation(&model.forward_shared(shard.features.clone())).detach();
    for _ in 0..steps {
        let loss = (model.adversaries.iter().enumerate())
            .map(|(a, head)| {
                let t = main + a;
                batch_task_loss(kinds[t], head.tower.forward(representation.clone()), &shard, t)
            })
            .reduce(|a, b| a + b)
            .expect("an adversarial head");
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let grads = if parallel.size() > 1 { parallel.reduce_dense(&model, grads, share) } else { grads };
        model = optim.dense.step(lr.clone(), model, grads);
    }
    model
}

/// Replaces the adversarial heads of `tasks` (task indices) by freshly initialised ones
/// (`model.adversary_restart`); their optimiser state starts anew with their new parameters.
pub fn restart_heads<C: MultiTaskModule>(
    model: &mut MultiTaskNet<C>,
    tasks: &[usize],
    config: &mtrec_model::ModelConfig,
    schema: &mtrec_data::Schema,
    device: &burn::tensor::Device,
) {
    let main = schema.n_tasks() - model.adversaries.len();
    for &t in tasks {
        let width = model.adversaries[t - main].d_input;
        model.adversaries[t - main] = config.adversarial_head(schema, t, width, device);
    }
}

/// Refits every concept eraser of `model` (`model.erasure = "leace"`) on the tower inputs of all
/// rows of `train` before any erasure, with the adversarial tasks' labels as the concepts; does
/// nothing for a model without erasers. Every data-parallel rank reads the whole split, so all fit
/// the same eraser.
pub fn refit_erasers<C: MultiTaskModule>(
    model: &mut MultiTaskNet<C>,
    train: &impl SplitRows,
    widths: mtrec_data::RowWidths,
    n_tasks: usize,
    batch_size: usize,
) -> Result<(), TrainError> {
    if model.erasers.is_empty() {
        return Ok(());
    }
    let eval = model.valid();
    let device = eval.erasers[0].mean.val().device();
    let concepts: Vec<usize> = (n_tasks - model.adversaries.len()..n_tasks).collect();
    let mut sums: Vec<CovarianceSums> =
        eval.erasers.iter().map(|e| CovarianceSums::new(e.mean.val().dims()[1], concepts.len())).collect();
    for batch in train.stream(widths, batch_size, BatchOrder::Sequential, &device) {
        let batch = batch?;
        let labels = batch.labels.into_data().try_into_vec::<f32>().expect("f32 labels");
        let z: Vec<f32> = labels.chunks_exact(n_tasks).flat_map(|row| concepts.iter().map(|&t| row[t])).collect();
        for (part, x) in sums.iter_mut().zip(eval.tower_inputs_unerased(batch.features)) {
            part.add_rows(&x.into_data().try_into_vec::<f32>().expect("f32 representation"), &z);
        }
    }
    let fits: Vec<LeaceFit> = sums
        .iter()
        .map(|s| s.fit().map_err(|e| TrainError::Config(format!("model.erasure: {e}"))))
        .collect::<Result<_, _>>()?;
    let train_device = model.erasers[0].mean.val().device();
    model.set_erasers(&fits, &train_device);
    Ok(())
}

/// Counts validations in a row at which an adversarial head's logloss is within
/// [`DEAD_HEAD_NATS`] of the entropy of its label rate (or above it): a head that does no better
/// than a constant passes no useful reversed gradient back.
#[derive(Debug, Clone, Default)]
pub struct DeadHeadDetector {
    /// Per adversarial task: `(task index, label rate, validations dead in a row)`.
    heads: Vec<(usize, f64, usize)>,
}

impl DeadHeadDetector {
    /// A detector for the binary tasks `tasks` with validation label rates `rates`.
    pub fn new(tasks: impl IntoIterator<Item = (usize, f64)>) -> Self {
        Self { heads: tasks.into_iter().map(|(t, rate)| (t, rate, 0)).collect() }
    }

    /// The entropy (nats) of a binary label with positive rate `p`: a constant predictor's best
    /// logloss.
    pub fn label_entropy(p: f64) -> f64 {
        let h = |q: f64| if q > 0.0 { -q * q.ln() } else { 0.0 };
        h(p) + h(1.0 - p)
    }

    /// Takes one validation's metrics (by task index); returns the tasks whose head has now been
    /// dead for [`DEAD_HEAD_EPOCHS`] validations in a row (the count then starts again).
    pub fn update(&mut self, valid: &[TaskMetrics]) -> Vec<usize> {
        let mut fired = Vec::new();
        for (t, rate, dead) in &mut self.heads {
            let Some(&logloss) = valid.get(*t).and_then(|m| m.get("logloss")) else { continue };
            if logloss >= Self::label_entropy(*rate) - DEAD_HEAD_NATS {
                *dead += 1;
                if *dead == DEAD_HEAD_EPOCHS {
                    fired.push(*t);
                    *dead = 0; // counts again: a restarted head that dies again fires again
                }
            } else {
                *dead = 0;
            }
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::task_metrics;
    use burn::tensor::Tensor;
    use burn::tensor::{Device, Distribution, Int, TensorData};
    use mtrec_data::{CategoricalField, FeatureBatch, Schema, TaskSpec};
    use mtrec_model::{Architecture, ModelConfig};

    /// A head whose output is forced constant (at the label rate, or anywhere) is reported after
    /// [`DEAD_HEAD_EPOCHS`] validations; a learning one (logits that separate the classes) never.
    #[test]
    fn the_dead_head_detector_fires_on_a_constant_head_and_not_on_a_learning_one() {
        let task = TaskSpec::new("sex", TaskKind::Binary);
        let labels: Vec<f32> = (0..1000).map(|i| (i % 3 == 0) as u8 as f32).collect();
        let rate = labels.iter().sum::<f32>() as f64 / labels.len() as f64;
        let at_rate = (rate / (1.0 - rate)).ln() as f32;
        let constant = task_metrics(&task, &vec![at_rate; labels.len()], &labels);
        let off_rate = task_metrics(&task, &vec![0.0; labels.len()], &labels);
        let learning: Vec<f32> =
            labels.iter().enumerate().map(|(i, &y)| (2.0 * y - 1.0) * ((i % 7) as f32 * 0.2)).collect();
        let learning = task_metrics(&task, &learning, &labels);
        assert!((constant["logloss"] - DeadHeadDetector::label_entropy(rate)).abs() < 1e-6);
        let main = TaskMetrics::new();
        let mut dead = DeadHeadDetector::new([(1, rate)]);
        let mut alive = DeadHeadDetector::new([(1, rate)]);
        for v in 1..=5 {
            let fired = dead.update(&[main.clone(), if v % 2 == 0 { constant.clone() } else { off_rate.clone() }]);
            assert_eq!(fired, if v == DEAD_HEAD_EPOCHS { vec![1] } else { vec![] }, "validation {v}");
            assert!(alive.update(&[main.clone(), learning.clone()]).is_empty());
        }
        // a head that learns again resets the count
        let mut d = DeadHeadDetector::new([(0, rate)]);
        for m in [&constant, &constant, &learning] {
            d.update(std::slice::from_ref(m));
        }
        assert!(d.update(std::slice::from_ref(&constant)).is_empty() && d.update(&[constant]).is_empty());
    }

    /// A restarted head has new parameters (new values, new ids) of the same shapes; the rest of the
    /// model is untouched.
    #[test]
    fn a_restarted_head_is_fresh_and_alone() {
        let device = Device::flex().autodiff();
        let mut schema = Schema::new(
            vec![CategoricalField { name: "a".into(), vocab_size: 6 }],
            vec!["x".into()],
            vec![TaskSpec::new("t0", TaskKind::Binary), TaskSpec::new("s", TaskKind::Binary)],
        );
        schema.tasks[1].adversarial = true;
        let cfg = ModelConfig { adversary_hidden: Some(vec![6, 3]), ..Default::default() };
        let mut model = cfg.init(&schema, &device);
        let head = |m: &MultiTaskNet| m.adversaries[0].tower.head.weight.clone();
        let body = |m: &MultiTaskNet| burn::module::list_param_ids(&m.body);
        let (before, body_before) = (head(&model), body(&model));
        restart_heads(&mut model, &[1], &cfg, &schema, &device);
        let after = head(&model);
        assert_eq!(after.val().dims(), before.val().dims());
        assert_eq!(model.adversaries[0].tower.mlp.layers.len(), 2, "adversary_hidden kept");
        assert_ne!(after.id, before.id, "new parameters");
        let values = |p: &burn::module::Param<Tensor<2>>| p.val().into_data().try_into_vec::<f32>().unwrap();
        assert_ne!(values(&after), values(&before), "fresh values");
        assert_eq!(body(&model), body_before, "the body is untouched");
    }

    /// `adversary_steps` moves the adversarial head and nothing else: every other parameter is
    /// where it was, the head's are not.
    #[test]
    fn adversary_steps_update_only_the_adversary() {
        let values = crate::trainer::tests::parameter_values;
        let device = Device::flex().autodiff();
        device.seed(3);
        let mut schema = Schema::new(
            vec![CategoricalField { name: "a".into(), vocab_size: 6 }],
            vec!["x".into(), "y".into()],
            vec![
                TaskSpec::new("t0", TaskKind::Binary),
                TaskSpec::new("t1", TaskKind::Binary),
                TaskSpec::new("s", TaskKind::Binary),
            ],
        );
        schema.tasks[2].adversarial = true;
        let cfg = ModelConfig {
            architecture: Architecture::Mmoe,
            n_experts: 3,
            expert_hidden: vec![5],
            ..Default::default()
        };
        let model = cfg.init(&schema, &device);
        let b = 16;
        let ids: Vec<i32> = (0..b).map(|i| (i % 6) as i32).collect();
        let labels: Vec<f32> = (0..b * 3).map(|i| ((i * 7) % 5 < 2) as u8 as f32).collect();
        let batch = MtlBatch {
            features: FeatureBatch::new(
                Some(Tensor::<2, Int>::from_data(TensorData::new(ids, [b, 1]), &device)),
                Some(Tensor::random([b, 2], Distribution::Default, &device)),
            ),
            labels: Tensor::from_data(TensorData::new(labels, [b, 3]), &device),
            size: b,
            labelled: None,
        };
        let mut optim = crate::ExperimentConfig::default().train.optimizer();
        let lr = ModuleLearningRate::from(1e-2);
        let before = values(&model);
        let head = burn::module::ParamGroup::ids_from_module(model.adversaries[0].clone());
        let after =
            values(&adversary_steps(model, &mut optim, &batch, &schema.task_kinds(), &lr, &DataParallel::single(), 3));
        assert_eq!(before.len(), after.len());
        let mut head_moved = false;
        for ((id, a), (id2, b)) in before.iter().zip(&after) {
            assert_eq!(id, id2);
            if head.matches(id, None) {
                head_moved |= a != b;
            } else {
                assert_eq!(a, b, "a parameter outside the adversary moved");
            }
        }
        assert!(head_moved, "the adversary's parameters moved");
    }
}
