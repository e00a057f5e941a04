//! One optimisation step, shared by the training loop, the benchmark and the parity check: the
//! balancer runs the forward and backward passes through [`TaskGraph`], Adam applies the result to
//! the dense parameters and the [`SparseRowOptimizer`] to the rows of row-sparse tables the batch
//! read.

use burn::{
    lr_scheduler::module_lr_scheduler::ModuleLearningRate,
    optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer},
    tensor::{Gradients, Tensor},
};
use mtrec_balance::{CutForward, LossBalancer, ProbedForward, TaskGraph};
use mtrec_data::{MtlBatch, TaskKind};
use mtrec_model::{MultiTaskModel, MultiTaskModule, MultiTaskNet, SharedTensors, SparseRows};

use crate::{DataParallel, SparseGradients, SparseRowOptimizer, TrainError, batch_task_loss};

/// The optimizers of a model: Adam (or what `train.*` chose) for the dense parameters, a row-wise
/// rule for row-sparse tables.
#[derive(Clone)]
pub struct Optimizers {
    /// The dense parameters' optimizer.
    pub dense: ModuleOptimizer,
    /// The row-sparse tables' optimizer.
    pub sparse: SparseRowOptimizer,
}

/// One training step as the balancer sees it: the model, the batch, the task kinds.
pub(crate) struct StepGraph<'a, C: MultiTaskModule> {
    pub(crate) model: &'a MultiTaskNet<C>,
    pub(crate) batch: &'a MtlBatch,
    pub(crate) kinds: &'a [TaskKind],
    /// The sparse rows every forward of the step read.
    pub(crate) sparse_rows: Vec<SparseRows>,
    /// In a data-parallel step: the ranks, and this rank's share of the batch (`batch` is its shard).
    pub(crate) parallel: Option<(&'a DataParallel, f64)>,
}

impl<'a, C: MultiTaskModule> StepGraph<'a, C> {
    pub(crate) fn new(model: &'a MultiTaskNet<C>, batch: &'a MtlBatch, kinds: &'a [TaskKind]) -> Self {
        Self { model, batch, kinds, sparse_rows: Vec::new(), parallel: None }
    }
}

impl<C: MultiTaskModule> StepGraph<'_, C> {
    fn loss_of(&self, t: usize, shared: &SharedTensors) -> Tensor<1> {
        let out = self.model.forward_task(t, shared);
        let loss = batch_task_loss(self.kinds[t], out.output, self.batch, t);
        match out.auxiliary_loss {
            Some(extra) => loss + extra,
            None => loss,
        }
    }

    fn losses_from(&self, shared: &SharedTensors) -> Vec<Tensor<1>> {
        (0..self.kinds.len()).map(|t| self.loss_of(t, shared)).collect()
    }

    fn shared(&mut self) -> SharedTensors {
        let shared = self.model.forward_shared(self.batch.features.clone());
        self.sparse_rows.extend(shared.sparse_rows.iter().cloned());
        shared
    }
}

impl<C: MultiTaskModule> TaskGraph for StepGraph<'_, C> {
    fn n_tasks(&self) -> usize {
        self.kinds.len()
    }

    fn task_losses(&mut self) -> Vec<Tensor<1>> {
        let shared = self.shared();
        self.losses_from(&shared)
    }

    fn cut_forward(&mut self) -> CutForward {
        let shared = self.shared();
        let leaves = shared.detached_leaves();
        let losses = self.losses_from(&leaves);
        CutForward { shared: shared.tensors, leaves: leaves.tensors, losses }
    }

    fn probed_forward(&mut self, probe: &[bool]) -> ProbedForward {
        let shared = self.shared();
        let (losses, probes) = (0..self.kinds.len())
            .map(|t| match probe.get(t) {
                Some(true) => {
                    let (probed, probes) = shared.probed();
                    (self.loss_of(t, &probed), probes)
                }
                _ => (self.loss_of(t, &shared), Vec::new()),
            })
            .unzip();
        ProbedForward { losses, points: shared.probe_points(), probes, last_layer: shared.last_layer }
    }

    fn task_present(&self) -> Vec<bool> {
        self.batch.task_present(self.kinds.len())
    }

    fn ranks(&self) -> usize {
        self.parallel.map_or(1, |(p, _)| p.size())
    }

    fn batch_share(&self) -> f64 {
        self.parallel.map_or(1.0, |(_, share)| share)
    }

    fn sum_over_ranks(&mut self, values: &mut [f64]) {
        if let Some((p, _)) = self.parallel {
            p.sum_f64(values);
        }
    }
}

/// Sums gradient sets of the model's parameters.
fn merge_gradients<C: MultiTaskModule>(parts: Vec<Gradients>, model: &MultiTaskNet<C>) -> GradientsParams {
    let mut parts = parts.into_iter().map(|g| GradientsParams::from_grads(g, model)).peekable();
    let first = parts.next().expect("a balancer returns at least one gradient set");
    if parts.peek().is_none() {
        return first;
    }
    let mut acc = GradientsAccumulator::<MultiTaskNet<C>>::new();
    acc.accumulate(model, first);
    for gp in parts {
        acc.accumulate(model, gp);
    }
    acc.grads()
}

/// A step's gradients: the dense parameters' and the rows of row-sparse tables.
pub(crate) struct StepGradients {
    pub(crate) dense: GradientsParams,
    pub(crate) sparse: SparseGradients,
}

/// The balanced gradients of one batch, without updating anything.
pub(crate) fn step_gradients<C: MultiTaskModule>(
    model: &MultiTaskNet<C>,
    balancer: &mut dyn LossBalancer,
    batch: &MtlBatch,
    kinds: &[TaskKind],
    parallel: Option<(&DataParallel, f64)>,
) -> Result<(StepGradients, Vec<Tensor<1>>), TrainError> {
    let mut graph = StepGraph::new(model, batch, kinds);
    graph.parallel = parallel;
    let out = balancer.backward(&mut graph).map_err(|e| TrainError::Config(e.to_string()))?;
    let sparse = SparseGradients::collect(&graph.sparse_rows, &out.parts);
    Ok((StepGradients { dense: merge_gradients(out.parts, model), sparse }, out.task_losses))
}

/// When the balancer asks for them (FAMO), each task's loss on `batch` (this rank's shard) under
/// the updated `model` — one more forward, no backward — reduced to the whole batch's over the
/// ranks and handed to [`LossBalancer::after_step`].
pub(crate) fn report_losses_after_step<C: MultiTaskModule>(
    model: &MultiTaskNet<C>,
    balancer: &mut dyn LossBalancer,
    batch: &MtlBatch,
    kinds: &[TaskKind],
    parallel: Option<(&DataParallel, f64)>,
) -> Result<(), TrainError> {
    if !balancer.needs_losses_after_step() {
        return Ok(());
    }
    let losses = StepGraph::new(model, batch, kinds).task_losses();
    let mut host = mtrec_balance::kit::to_host(losses.into_iter().map(|l| l.detach()).collect());
    if let Some((ranks, share)) = parallel {
        host.iter_mut().for_each(|v| *v *= share);
        ranks.sum_f64(&mut host);
    }
    balancer.after_step(&host).map_err(|e| TrainError::Config(e.to_string()))
}

/// One step: balanced gradients of `batch`, then the optimiser's update with learning rate `lr`
/// (one rate, or per-parameter rates from [`ExperimentConfig::learning_rates`](crate::ExperimentConfig::learning_rates)).
///
/// Returns the updated model and each task's (detached) loss on the batch.
pub fn train_step<C: MultiTaskModule>(
    model: MultiTaskNet<C>,
    optim: &mut Optimizers,
    balancer: &mut dyn LossBalancer,
    batch: &MtlBatch,
    kinds: &[TaskKind],
    lr: impl Into<ModuleLearningRate>,
) -> Result<(MultiTaskNet<C>, Vec<Tensor<1>>), TrainError> {
    let lr = lr.into();
    let (grads, losses) = step_gradients(&model, balancer, batch, kinds, None)?;
    let model = optim.sparse.step(&lr, model, grads.sparse);
    let model = optim.dense.step(lr, model, grads.dense);
    report_losses_after_step(&model, balancer, batch, kinds, None)?;
    Ok((model, losses))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, Int, TensorData};
    use mtrec_balance::{FixedWeights, GradientCombination, PcGrad, TaskGradients};
    use mtrec_data::{CategoricalField, Schema, TaskSpec};
    use mtrec_model::{Architecture, ModelConfig};

    fn schema() -> Schema {
        Schema::new(
            vec![CategoricalField { name: "a".into(), vocab_size: 6 }],
            vec!["x".into(), "y".into(), "z".into()],
            vec![TaskSpec::new("t0", TaskKind::Binary), TaskSpec::new("t1", TaskKind::Binary)],
        )
    }

    /// 64 rows whose second label is the complement of the first: the tasks pull apart.
    fn conflicting_batch(device: &Device) -> MtlBatch {
        let b = 64;
        let ids: Vec<i32> = (0..b).map(|i| (i % 6) as i32).collect();
        let y0: Vec<f32> = (0..b).map(|i| ((i * 7) % 3 == 0) as u8 as f32).collect();
        let labels: Vec<f32> = y0.iter().flat_map(|&y| [y, 1.0 - y]).collect();
        MtlBatch {
            features: mtrec_data::FeatureBatch::new(
                Some(Tensor::<2, Int>::from_data(TensorData::new(ids, [b, 1]), device)),
                Some(Tensor::random([b, 3], Distribution::Default, device)),
            ),
            labels: Tensor::from_data(TensorData::new(labels, [b, 2]), device),
            size: b,
            labelled: None,
        }
    }

    fn config(arch: Architecture) -> ModelConfig {
        ModelConfig {
            architecture: arch,
            n_experts: 3,
            n_task_experts: 2,
            expert_hidden: vec![8],
            bottom_hidden: vec![8, 6],
            tower_hidden: vec![4],
            ..Default::default()
        }
    }

    /// Every architecture that shares anything shows the gradient balancers each task's gradient on
    /// the tensors the tasks share: the Gram matrix of a conflicting batch has non-zero off-diagonal
    /// terms (cross-stitch and PLE used to expose per-task copies, which made it diagonal). PLE is
    /// checked without shared experts, two levels with them, and as CGC.
    #[test]
    fn shared_tensors_carry_every_tasks_gradient() {
        let device = Device::flex().autodiff();
        let kinds = [TaskKind::Binary, TaskKind::Binary];
        let mut cases: Vec<(String, ModelConfig)> = Architecture::ALL
            .into_iter()
            .filter(|a| *a != Architecture::SingleTask) // shares nothing, by design
            .map(|a| (a.name().to_string(), config(a)))
            .collect();
        for (shared, levels) in [(0, 1), (0, 2), (2, 2)] {
            let c = ModelConfig { n_shared_experts: shared, levels, ..config(Architecture::Ple) };
            cases.push((format!("ple shared {shared} levels {levels}"), c));
        }
        for (name, cfg) in cases {
            // a tiny ReLU tower (4 units) can start dead on all 64 rows, its task's gradient then
            // exactly 0 — an initialisation, not what is tested: the first of a few draws whose
            // towers both pass a gradient
            let gram = (0..8)
                .map(|_| {
                    let model = cfg.init(&schema(), &device);
                    let batch = conflicting_batch(&device);
                    let mut graph = StepGraph::new(&model, &batch, &kinds);
                    TaskGradients::compute(graph.cut_forward(), &[1.0, 1.0]).gram()
                })
                .find(|gram| gram[0][0] > 0.0 && gram[1][1] > 0.0)
                .unwrap_or_else(|| panic!("{name}: a task gets no gradient in 8 initialisations"));
            let cosine = gram[0][1] / (gram[0][0] * gram[1][1]).sqrt();
            assert!(cosine.abs() > 1e-4, "{name}: the tasks' gradients never meet: {gram:?}");
        }
    }

    /// On cross-stitch, PCGrad now sees the conflict and projects: its step differs from fixed
    /// weights' on the shared columns (it used to be identical).
    #[test]
    fn pcgrad_differs_from_fixed_weights_on_cross_stitch() {
        let device = Device::flex().autodiff();
        let kinds = [TaskKind::Binary, TaskKind::Binary];
        let conflicted = (0..20).find_map(|seed| {
            device.seed(seed);
            let model = config(Architecture::CrossStitch).init(&schema(), &device);
            let batch = conflicting_batch(&device);
            let mut graph = StepGraph::new(&model, &batch, &kinds);
            let gram = TaskGradients::compute(graph.cut_forward(), &[1.0, 1.0]).gram();
            (gram[0][1] < 0.0).then_some((model, batch))
        });
        let (model, batch) = conflicted.expect("some initialisation makes the tasks conflict");
        let mut pcgrad = GradientCombination::new(PcGrad::new(1), 2);
        let mut fixed = FixedWeights::new(vec![1.0, 1.0]);
        let (pc, _) = step_gradients(&model, &mut pcgrad, &batch, &kinds, None).unwrap();
        let (fx, _) = step_gradients(&model, &mut fixed, &batch, &kinds, None).unwrap();
        let (pc, fx) = (pc.dense, fx.dense);
        let mtrec_model::ArchitectureNet::CrossStitch(net) = &model.body else { unreachable!("cross-stitch") };
        let column = &net.columns[0][0].weight;
        let a = pc.get::<2>(column.id).unwrap().into_data().try_into_vec::<f32>().unwrap();
        let b = fx.get::<2>(column.id).unwrap().into_data().try_into_vec::<f32>().unwrap();
        let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        let scale = b.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        assert!(diff > 1e-3 * scale, "PCGrad's step equals fixed weights' ({diff} vs scale {scale})");
        assert!(pcgrad.task_weights().iter().any(|c| (c - 1.0).abs() > 1e-6), "{:?}", pcgrad.task_weights());
    }

    /// A task whose gradient at the shared tensors is exactly zero (its tower's head zeroed: no
    /// gradient passes) is left out of the combination: MGDA gives it 0 and the other task its whole
    /// gradient — read as a direction, the zero vector is the hull's min-norm point and MGDA's
    /// shared update would be zero, stalling every task.
    #[test]
    fn a_zero_gradient_task_does_not_stall_mgda() {
        let device = Device::flex().autodiff();
        let kinds = [TaskKind::Binary, TaskKind::Binary];
        let mut model = config(Architecture::Mmoe).init(&schema(), &device);
        let mtrec_model::ArchitectureNet::Mmoe(net) = &mut model.body else { unreachable!("mmoe") };
        let head = &mut net.towers[1].head;
        head.weight = burn::module::Param::from_tensor(head.weight.val().zeros_like().detach());
        let batch = conflicting_batch(&device);
        let mut mgda = GradientCombination::new(mtrec_balance::Mgda::new(Default::default()), 2);
        let (grads, _) = step_gradients(&model, &mut mgda, &batch, &kinds, None).unwrap();
        assert_eq!(mgda.task_weights(), vec![1.0, 0.0]);
        let mtrec_model::ArchitectureNet::Mmoe(net) = &model.body else { unreachable!("mmoe") };
        let shared: Vec<f32> =
            parameter_ids(&net.experts).into_iter().flat_map(|(id, d)| gradient(&grads.dense, id, d)).collect();
        assert!(shared.iter().any(|g| *g != 0.0), "the experts still learn from task 0");
    }

    /// Parameter ids of a module (to read its gradients).
    fn parameter_ids<M: burn::module::Module>(module: &M) -> Vec<(burn::module::ParamId, usize)> {
        struct Ids(Vec<(burn::module::ParamId, usize)>);
        impl burn::module::ModuleVisitor for Ids {
            fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
                self.0.push((param.id, D));
            }
        }
        let mut ids = Ids(Vec::new());
        module.visit(&mut ids);
        ids.0
    }

    /// The gradient of parameter `id` (of rank `d`), flattened; empty when it has none.
    fn gradient(grads: &GradientsParams, id: burn::module::ParamId, d: usize) -> Vec<f32> {
        let v = |t: Option<burn::tensor::TensorData>| t.map(|t| t.try_into_vec::<f32>().unwrap()).unwrap_or_default();
        match d {
            1 => v(grads.get::<1>(id).map(|t| t.into_data())),
            2 => v(grads.get::<2>(id).map(|t| t.into_data())),
            _ => v(grads.get::<3>(id).map(|t| t.into_data())),
        }
    }

    /// Every balancer on batches where task 1's label is absent on every row (its own sample space
    /// leaves the batch out): the step succeeds with finite gradients, task 1's loss is exactly 0
    /// and its tower gets no gradient, task 0's tower does; the learned weights of task 1 do not
    /// move (uncertainty's `s_1`, GradNorm's `w_1`); the gradient combiners give it coefficient 0;
    /// and the next batch, with both tasks labelled, steps finitely again — three rounds, so that
    /// GradNorm's `L(0)` of task 1 comes from a batch that holds it.
    #[test]
    fn every_balancer_steps_on_a_batch_without_a_task() {
        let device = Device::flex().autodiff();
        let kinds = [TaskKind::Binary, TaskKind::Binary];
        let ctx = mtrec_balance::BalanceContext {
            names: vec!["t0".into(), "t1".into()],
            kinds: kinds.to_vec(),
            lr: 0.01,
            seed: 3,
        };
        let full = conflicting_batch(&device);
        let mut absent = full.clone();
        let labels = absent.labels.clone().into_data().try_into_vec::<f32>().unwrap();
        let labels: Vec<f32> = labels.chunks(2).flat_map(|r| [r[0], f32::NAN]).collect();
        absent.labels = Tensor::from_data(TensorData::new(labels, [full.size, 2]), &device);
        absent.labelled = Some(mtrec_data::LabelledRows { per_task: vec![full.size, 0], batch_rows: full.size });
        for method in mtrec_balance::BalanceMethod::ALL {
            let mut balancer = mtrec_balance::BalanceConfig { method: method.clone(), ..Default::default() }
                .init(&ctx)
                .unwrap_or_else(|e| panic!("{method:?}: {e}"));
            let mut model = config(Architecture::Mmoe).init(&schema(), &device);
            let mut optim: ModuleOptimizer = burn::optim::AdamConfig::new().init();
            for round in 0..3 {
                let weights_before = balancer.task_weights();
                let (grads, losses) = step_gradients(&model, balancer.as_mut(), &absent, &kinds, None)
                    .unwrap_or_else(|e| panic!("{method:?} round {round}: {e}"));
                let losses: Vec<f32> = losses.into_iter().map(|l| l.into_scalar::<f32>()).collect();
                assert!(losses[0] > 0.0 && losses[1] == 0.0, "{method:?}: losses {losses:?}");
                let mtrec_model::ArchitectureNet::Mmoe(net) = &model.body else { unreachable!("mmoe") };
                let tower = |t: usize| -> Vec<f32> {
                    parameter_ids(&net.towers[t])
                        .into_iter()
                        .flat_map(|(id, d)| gradient(&grads.dense, id, d))
                        .collect()
                };
                assert!(tower(1).iter().all(|g| *g == 0.0), "{method:?}: task 1's tower moved without labels");
                assert!(tower(0).iter().any(|g| *g != 0.0), "{method:?}: task 0's tower got no gradient");
                let all: Vec<f32> =
                    parameter_ids(&model).into_iter().flat_map(|(id, d)| gradient(&grads.dense, id, d)).collect();
                assert!(all.iter().all(|g| g.is_finite()), "{method:?}: non-finite gradients");
                let weights = balancer.task_weights();
                assert!(weights.iter().all(|w| w.is_finite()), "{method:?}: weights {weights:?}");
                let name = method.as_str();
                if ["uncertainty", "gradnorm"].contains(&name) && round > 0 {
                    // (GradNorm renormalises Σw = T every step: equal up to rounding)
                    let moved = (weights[1] - weights_before[1]).abs();
                    assert!(moved < 1e-12, "{method:?}: task 1's learned weight moved by {moved}");
                }
                let combiners = [
                    "pcgrad",
                    "mgda",
                    "cagrad",
                    "imtl_g",
                    "gradvac",
                    "aligned_mtl",
                    "upgrad",
                    "nash_mtl",
                    "fairgrad",
                    "db_mtl",
                ];
                if combiners.contains(&name) {
                    assert_eq!(weights[1], 0.0, "{method:?}: an absent task's coefficient");
                    assert!(weights[0] > 0.0, "{method:?}: the present task's coefficient {weights:?}");
                }
                model = optim.step(1e-3, model, grads.dense);
                let (grads, losses) = step_gradients(&model, balancer.as_mut(), &full, &kinds, None)
                    .unwrap_or_else(|e| panic!("{method:?} round {round}, full batch: {e}"));
                assert!(losses.into_iter().all(|l| l.into_scalar::<f32>() > 0.0));
                model = optim.step(1e-3, model, grads.dense);
                balancer.end_epoch(&[0.5, 0.5]);
            }
        }
    }
}
