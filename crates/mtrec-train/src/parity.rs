//! Cross-backend parity: the same weights (one saved record) must give the same predictions and
//! the same gradients on every backend, up to float rounding.
//!
//! The reference model is initialised on one device, saved to a burnpack record, and loaded into
//! the same architecture on the other device. Both then predict one batch (evaluation mode) and
//! compute one training step's gradients (equal task weights) on it.

use burn::{
    module::{Module, ModuleVisitor, Param},
    optim::GradientsParams,
    store::ModuleRecord,
    tensor::{Device, Tensor},
};
use mtrec_balance::FixedWeights;
use mtrec_data::{BatchOrder, MtlDataset, batches};
use mtrec_model::{MultiTaskModel, MultiTaskNet};

use crate::{ExperimentConfig, TrainError, step::step_gradients};

/// How far one backend is from the reference.
#[derive(Debug, Clone, PartialEq)]
pub struct ParityReport {
    /// Largest absolute difference of a model output (logit or value).
    pub max_output_diff: f64,
    /// Largest absolute difference of a gradient entry.
    pub max_gradient_diff: f64,
    /// Largest absolute gradient entry on the reference (the scale of the above).
    pub max_gradient_abs: f64,
    /// The parameter tensor holding the largest gradient difference.
    pub worst_parameter: String,
    /// Number of gradient entries compared.
    pub gradient_entries: usize,
}

/// Gradient of every float parameter, flattened, in module order, with its module path.
struct GradientCollector<'a> {
    grads: &'a GradientsParams,
    path: Vec<String>,
    out: Vec<(String, Vec<f32>)>,
}

impl ModuleVisitor for GradientCollector<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let values = self
            .grads
            .get::<D>(param.id)
            .map(|g| g.into_data().try_into_vec::<f32>().expect("f32 gradients"))
            .unwrap_or_default();
        self.out.push((self.path.join("."), values));
    }
}

struct Side {
    outputs: Vec<Vec<f32>>,
    gradients: Vec<(String, Vec<f32>)>,
}

fn run_side(model: &MultiTaskNet, dataset: &MtlDataset, device: &Device, rows: usize) -> Result<Side, TrainError> {
    let schema = &dataset.schema;
    let kinds = schema.task_kinds();
    let widths = schema.widths();
    let eval = model.valid();
    let batch = batches(&dataset.train, widths, rows, BatchOrder::Sequential, device).next().expect("non-empty split");
    let outputs = eval
        .forward(batch.features)
        .into_iter()
        .map(|o| o.output.into_data().try_into_vec::<f32>().expect("f32 outputs"))
        .collect();
    let ad = device.clone().autodiff();
    let batch = batches(&dataset.train, widths, rows, BatchOrder::Sequential, &ad).next().expect("non-empty split");
    let mut balancer = FixedWeights::new(vec![1.0; kinds.len()]);
    let (grads, _) = step_gradients(model, &mut balancer, &batch, &kinds, None)?;
    // row-sparse tables (none at census size) are compared through the outputs alone
    let mut collector = GradientCollector { grads: &grads.dense, path: vec![], out: vec![] };
    model.visit(&mut collector);
    Ok(Side { outputs, gradients: collector.out })
}

/// Compares `other` against `reference` on the first `rows` training rows of `dataset`, for the
/// architecture of `config` initialised with `config.seed` on the reference device.
pub fn check_parity(
    config: &ExperimentConfig,
    dataset: &MtlDataset,
    reference: &Device,
    other: &Device,
    rows: usize,
) -> Result<ParityReport, TrainError> {
    let schema = &dataset.schema;
    let record_error = |e: burn::store::RecordError| TrainError::Config(format!("model record: {e}"));
    reference.seed(config.seed);
    let model_ref = config.build_model(schema, &reference.clone().autodiff())?;
    let bytes = model_ref.clone().into_record().into_bytes().map_err(record_error)?;
    let model_other = config
        .model
        .init(schema, &other.clone().autodiff())
        .try_load_record(ModuleRecord::from_bytes(bytes).map_err(record_error)?)
        .map_err(record_error)?;
    let a = run_side(&model_ref, dataset, reference, rows)?;
    let b = run_side(&model_other, dataset, other, rows)?;
    let max_diff = |x: &[f32], y: &[f32]| -> f64 {
        assert_eq!(x.len(), y.len(), "shapes differ across backends");
        x.iter().zip(y).map(|(p, q)| (*p as f64 - *q as f64).abs()).fold(0.0, f64::max)
    };
    let max_output_diff = a.outputs.iter().zip(&b.outputs).map(|(x, y)| max_diff(x, y)).fold(0.0, f64::max);
    let mut report = ParityReport {
        max_output_diff,
        max_gradient_diff: 0.0,
        max_gradient_abs: 0.0,
        worst_parameter: String::new(),
        gradient_entries: 0,
    };
    assert_eq!(a.gradients.len(), b.gradients.len(), "parameter lists differ");
    for ((name, ga), (_, gb)) in a.gradients.iter().zip(&b.gradients) {
        let d = max_diff(ga, gb);
        if d >= report.max_gradient_diff {
            report.max_gradient_diff = d;
            report.worst_parameter = name.clone();
        }
        report.max_gradient_abs = ga.iter().fold(report.max_gradient_abs, |m, v| m.max(v.abs() as f64));
        report.gradient_entries += ga.len();
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DataConfig, DataSource, DeviceChoice};
    use mtrec_model::Architecture;

    /// The committed fixture, found from the package directory at run time: a test binary reused
    /// from a shared target directory may have been compiled in another checkout.
    fn fixture() -> std::path::PathBuf {
        let dir = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
        std::path::Path::new(&dir).join("../mtrec-data/tests/fixtures/census-small")
    }

    /// Same record → same outputs (|Δ| ≤ 1e-4) and same gradients (|Δ| ≤ 1e-4 · max |g| + 1e-6)
    /// on ndarray and (with `MTREC_TEST_WGPU`) wgpu as on flex, for every architecture with an
    /// adversarial head, on real census rows (categorical embeddings and dense features).
    #[test]
    fn backends_agree_on_outputs_and_gradients() {
        let mut others = DeviceChoice::cpu_backends_under_test("backends_agree_on_outputs_and_gradients");
        others.extend(DeviceChoice::gpu_backends_under_test("backends_agree_on_outputs_and_gradients"));
        // with the adversarial `sex` head, so that the gradient-reversal path is compared too
        let data = DataConfig {
            source: DataSource::Census,
            dir: fixture(),
            adversarial: Some("sex".into()),
            ..Default::default()
        };
        let dataset = data.load().unwrap();
        for arch in Architecture::ALL {
            let mut config = ExperimentConfig { data: data.clone(), ..Default::default() };
            config.model.architecture = arch.clone();
            // covers batch statistics in training, running ones in evaluation, where supported
            config.model.batch_norm =
                !matches!(arch, Architecture::CrossStitch | Architecture::Esmm | Architecture::Aitm);
            for other in &others {
                let r = check_parity(&config, &dataset, &Device::flex(), &other.device().unwrap(), 128).unwrap();
                eprintln!("{arch:?} flex vs {other:?}: {r:?}");
                assert!(r.gradient_entries > 1000, "{r:?}");
                assert!(r.max_gradient_abs > 0.0, "{r:?}");
                assert!(r.max_output_diff <= 1e-4, "{arch:?} {other:?} outputs differ: {r:?}");
                assert!(
                    r.max_gradient_diff <= 1e-4 * r.max_gradient_abs + 1e-6,
                    "{arch:?} {other:?} gradients differ: {r:?}"
                );
            }
        }
    }

    /// Every float parameter shifted by 0.5, still trainable.
    struct Shift;
    impl burn::module::ModuleMapper for Shift {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.map(|t| {
                let require_grad = t.is_require_grad();
                let shifted = t.add_scalar(0.5).detach();
                if require_grad { shifted.require_grad() } else { shifted }
            })
        }
    }

    /// The comparison is not vacuous: models with different weights give clearly different outputs.
    /// The second is the first with every weight shifted, not a second draw: the backend's generator
    /// is one per process, and a test beside this one reseeding it could make two draws equal.
    #[test]
    fn different_weights_are_detected() {
        use burn::module::Module;
        let data = DataConfig { source: DataSource::Census, dir: fixture(), ..Default::default() };
        let dataset = data.load().unwrap();
        let config = ExperimentConfig { data, ..Default::default() };
        let device = Device::flex();
        let model_a = config.model.init(&dataset.schema, &device.clone().autodiff());
        let a = run_side(&model_a, &dataset, &device, 64).unwrap();
        let model_b = model_a.clone().map(&mut Shift);
        let b = run_side(&model_b, &dataset, &device, 64).unwrap();
        let diff: f64 = a.outputs[0].iter().zip(&b.outputs[0]).map(|(x, y)| (x - y).abs() as f64).sum();
        assert!(diff > 1e-3, "independently initialised models gave equal outputs");
    }
}
