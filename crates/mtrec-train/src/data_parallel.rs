//! Data-parallel training: every rank holds the whole model, reads the same seeded batches, and
//! computes the gradients of its shard of each batch; the ranks sum the share-weighted gradients
//! (dense parameters as a few large buffers, row-sparse tables as (row id, gradient) pairs) before
//! the one optimizer step, which every rank applies identically. The trajectory is the one of a
//! single process with the whole batch, up to the rounding of the sums.
//!
//! Why shares: task losses are means over a batch's rows, so the batch's loss is
//! `Σ_r share_r · L_r` with `share_r` the rank's rows over the batch's, and its gradient the
//! share-weighted sum of the ranks' gradients. Balancers reduce what they decide from the same way
//! ([`TaskGraph::ranks`](mtrec_balance::TaskGraph::ranks)).
//!
//! Model state that is not a gradient is kept identical by construction: the initial parameters are
//! broadcast from rank 0, the optimizers see the same summed gradients, balancers the same reduced
//! values. Batch normalisation is refused (each rank's running statistics would differ), and dropout
//! draws masks per rank (as in any data-parallel engine): a run with dropout is not bit-comparable to
//! one process.

use std::{cell::Cell, ops::Range, time::Duration, time::Instant};

use burn::{
    lr_scheduler::module_lr_scheduler::ModuleLearningRate,
    module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId},
    optim::GradientsParams,
    tensor::{Device, Tensor, TensorData},
};
use mtrec_balance::LossBalancer;
use mtrec_data::{MtlBatch, TaskKind};
use mtrec_model::{MultiTaskModule, MultiTaskNet};

use crate::{
    Collective, Optimizers, SingleProcess, SparseGradients, TableGradient, TrainError,
    step::{StepGradients, step_gradients},
};

/// Dense gradients travel in buffers of at most this many floats (64 MiB): few messages, bounded
/// extra memory.
pub const BUCKET_FLOATS: usize = 1 << 24;

/// The ranks of a data-parallel run, and the time spent communicating.
pub struct DataParallel {
    collective: Box<dyn Collective>,
    communication: Cell<Duration>,
}

impl Default for DataParallel {
    fn default() -> Self {
        Self::single()
    }
}

impl DataParallel {
    /// Data parallelism over `collective`'s ranks.
    pub fn new(collective: Box<dyn Collective>) -> Self {
        Self { collective, communication: Cell::new(Duration::ZERO) }
    }

    /// One process.
    pub fn single() -> Self {
        Self::new(Box::new(SingleProcess))
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.collective.rank()
    }

    /// Number of ranks.
    pub fn size(&self) -> usize {
        self.collective.size()
    }

    /// Whether this is rank 0, the one that writes the run's files.
    pub fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// Time spent in collective operations so far.
    pub fn communication_time(&self) -> Duration {
        self.communication.get()
    }

    /// Waits for every rank.
    pub fn barrier(&self) {
        self.timed(|c| c.barrier());
    }

    /// Runs `work` on rank 0 before the other ranks start it: rank 0 writes what the others then
    /// read (a table cache, chunk files), or draws from a generator ranks that are threads share.
    pub fn root_first<R>(&self, work: impl FnOnce() -> R) -> R {
        if !self.is_root() {
            self.barrier();
        }
        let out = work();
        if self.is_root() {
            self.barrier();
        }
        out
    }

    fn timed<R>(&self, op: impl FnOnce(&dyn Collective) -> R) -> R {
        let start = Instant::now();
        let out = op(self.collective.as_ref());
        self.communication.set(self.communication.get() + start.elapsed());
        out
    }

    /// Sums `values` over the ranks, in place.
    pub fn sum_f64(&self, values: &mut [f64]) {
        if self.size() > 1 {
            self.timed(|c| c.sum_f64(values));
        }
    }

    /// Every rank's `values`, in rank order.
    pub fn gather_f32(&self, values: Vec<f32>) -> Vec<f32> {
        if self.size() == 1 { values } else { self.timed(|c| c.gather_f32(&values)) }
    }

    /// This rank's contiguous block of `n` items (rows of a batch, batches of an evaluation):
    /// blocks in rank order cover `0..n`, their sizes differ by at most one.
    pub fn block(&self, n: usize) -> Range<usize> {
        let (r, size) = (self.rank(), self.size());
        n * r / size..n * (r + 1) / size
    }

    /// This rank's rows of a batch of `batch_size` rows and its share of the batch. A rank whose
    /// block is empty (a last batch with fewer rows than ranks) forwards row 0 with share 0, so
    /// that every rank takes part in every collective operation of the step.
    pub fn shard(&self, batch_size: usize) -> (Range<usize>, f64) {
        let rows = self.block(batch_size);
        let share = rows.len() as f64 / batch_size as f64;
        if rows.is_empty() { (0..batch_size.min(1), 0.0) } else { (rows, share) }
    }

    /// `module` with rank 0's parameter values on every rank.
    pub fn broadcast_parameters<M: Module>(&self, module: M) -> M {
        if self.size() == 1 {
            return module;
        }
        module.map(&mut Broadcast { parallel: self })
    }

    /// The batch's dense gradients on every rank: each rank's gradients times `share`, summed.
    /// A parameter has a gradient when it has one on some rank.
    pub(crate) fn reduce_dense<C: MultiTaskModule>(
        &self,
        model: &MultiTaskNet<C>,
        grads: GradientsParams,
        share: f64,
    ) -> GradientsParams {
        let mut local = Extract { grads, share: share as f32, params: Vec::new() };
        model.visit(&mut local);
        let mut present: Vec<f32> = local.params.iter().map(|(_, g)| g.is_some() as u8 as f32).collect();
        self.timed(|c| c.sum_f32(&mut present));
        let mut values: Vec<f32> = Vec::new();
        for ((n, g), &p) in local.params.iter_mut().zip(&present) {
            if p > 0.0 {
                match g.take() {
                    Some(g) => values.extend(g),
                    None => values.extend(std::iter::repeat_n(0.0, *n)),
                }
            }
        }
        for bucket in values.chunks_mut(BUCKET_FLOATS) {
            self.timed(|c| c.sum_f32(bucket));
        }
        let mut insert =
            Insert { grads: local.grads, present: present.into_iter().map(|p| p > 0.0).collect(), values, at: 0, k: 0 };
        model.visit(&mut insert);
        insert.grads
    }

    /// The batch's row-sparse gradients on every rank: each rank's rows times `share`, gathered as
    /// (row id, gradient) pairs and summed by row.
    pub(crate) fn reduce_sparse<C: MultiTaskModule>(
        &self,
        model: &MultiTaskNet<C>,
        grads: SparseGradients,
        share: f64,
    ) -> SparseGradients {
        let mut params = ParamList::default();
        model.visit(&mut params);
        let mut tables = grads.tables;
        let mut local: Vec<Option<TableGradient>> = params
            .params
            .iter()
            .map(|(id, _)| tables.iter().position(|g| g.table == *id).map(|k| tables.swap_remove(k)))
            .collect();
        let mut present: Vec<f32> = local.iter().map(|g| g.is_some() as u8 as f32).collect();
        self.timed(|c| c.sum_f32(&mut present));
        let mut summed = Vec::new();
        for (k, (id, shape)) in params.params.iter().enumerate() {
            if present[k] == 0.0 {
                continue;
            }
            let width = shape.iter().skip(1).product::<usize>();
            let device = params.device.clone().expect("a model with a sparse table has parameters");
            let (ids, rows) = match local[k].take() {
                Some(g) => {
                    let rows = g.grad.into_data().try_into_vec::<f32>().expect("f32 gradients");
                    (g.ids, rows.into_iter().map(|v| v * share as f32).collect())
                }
                None => (Vec::new(), Vec::new()),
            };
            let all_ids = self.timed(|c| c.gather_i64(&ids));
            let all_rows = self.timed(|c| c.gather_f32(&rows));
            if all_ids.is_empty() {
                continue;
            }
            let mut merged: Vec<i64> = all_ids.clone();
            merged.sort_unstable();
            merged.dedup();
            let mut sum = vec![0.0f32; merged.len() * width];
            for (j, id) in all_ids.iter().enumerate() {
                let at = merged.binary_search(id).expect("a gathered id") * width;
                sum[at..at + width].iter_mut().zip(&all_rows[j * width..(j + 1) * width]).for_each(|(s, v)| *s += v);
            }
            let grad = Tensor::from_data(TensorData::new(sum, [merged.len(), width]), &device);
            summed.push(TableGradient { table: *id, ids: merged, grad });
        }
        SparseGradients { tables: summed }
    }
}

/// Each parameter's id and shape, in visiting order, and the gradients' device.
#[derive(Default)]
struct ParamList {
    params: Vec<(ParamId, Vec<usize>)>,
    device: Option<Device>,
}

impl ModuleVisitor for ParamList {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        self.params.push((param.id, value.shape().to_vec()));
        if self.device.is_none() {
            self.device = Some(value.inner().device());
        }
    }
}

/// Takes each parameter's gradient to the host, times `share`: `(elements, values)` in visiting
/// order.
struct Extract {
    grads: GradientsParams,
    share: f32,
    params: Vec<(usize, Option<Vec<f32>>)>,
}

impl ModuleVisitor for Extract {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let n = param.val().shape().num_elements();
        let values = self.grads.remove::<D>(param.id).map(|g| {
            let v = g.into_data().try_into_vec::<f32>().expect("f32 gradients");
            v.into_iter().map(|x| x * self.share).collect()
        });
        self.params.push((n, values));
    }
}

/// Puts the summed gradients back, in the same visiting order.
struct Insert {
    grads: GradientsParams,
    present: Vec<bool>,
    values: Vec<f32>,
    at: usize,
    k: usize,
}

impl ModuleVisitor for Insert {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let k = self.k;
        self.k += 1;
        if !self.present[k] {
            return;
        }
        let value = param.val();
        let shape = value.shape();
        let n = shape.num_elements();
        let data = TensorData::new(self.values[self.at..self.at + n].to_vec(), shape);
        self.at += n;
        self.grads.register::<D>(param.id, Tensor::from_data(data, &value.inner().device()));
    }
}

/// Replaces every parameter's value with rank 0's.
struct Broadcast<'a> {
    parallel: &'a DataParallel,
}

impl ModuleMapper for Broadcast<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let (shape, device) = (tensor.shape(), tensor.device());
        let mut values = tensor.into_data().try_into_vec::<f32>().expect("f32 parameters");
        self.parallel.timed(|c| c.broadcast_f32(&mut values, 0));
        let mut tensor = Tensor::from_data(TensorData::new(values, shape), &device);
        if require_grad {
            tensor = tensor.require_grad();
        }
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// One data-parallel step: this rank's shard of the (global) `batch`, its balanced gradients, their
/// sum over the ranks, and the optimizers' update — identical on every rank. In one process it is
/// [`train_step`](crate::train_step).
///
/// Returns the updated model, each task's loss on this rank's shard (detached) and the shard's
/// weight in the batch's mean loss (its rows; 0 for a rank without rows).
pub fn data_parallel_step<C: MultiTaskModule>(
    model: MultiTaskNet<C>,
    optim: &mut Optimizers,
    balancer: &mut dyn LossBalancer,
    batch: &MtlBatch,
    kinds: &[TaskKind],
    lr: ModuleLearningRate,
    parallel: &DataParallel,
) -> Result<(MultiTaskNet<C>, Vec<Tensor<1>>, f64), TrainError> {
    if parallel.size() == 1 {
        let (model, losses) = crate::train_step(model, optim, balancer, batch, kinds, lr)?;
        return Ok((model, losses, batch.size as f64));
    }
    let (rows, share) = parallel.shard(batch.size);
    let shard = batch.rows(rows);
    let (grads, losses) = step_gradients(&model, balancer, &shard, kinds, Some((parallel, share)))?;
    let StepGradients { dense, sparse } = grads;
    let dense = parallel.reduce_dense(&model, dense, share);
    let sparse = parallel.reduce_sparse(&model, sparse, share);
    let model = optim.sparse.step(&lr, model, sparse);
    let model = optim.dense.step(lr, model, dense);
    crate::step::report_losses_after_step(&model, balancer, &shard, kinds, Some((parallel, share)))?;
    Ok((model, losses, share * batch.size as f64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ThreadGroup;
    use burn::tensor::Int;
    use mtrec_data::{CategoricalField, FeatureBatch, Schema, TaskSpec};
    use mtrec_model::{Architecture, ModelConfig, MultiTaskModel};

    /// Two ranks with shares ¼ and ¾: each dense gradient is the share-weighted sum (a parameter
    /// with a gradient on rank 0 only gets ¼ of it; one with none anywhere stays without), and the
    /// sparse rows are summed by id — all by hand.
    #[test]
    fn gradients_are_share_weighted_sums_by_hand() {
        let device = Device::flex().autodiff();
        let schema = Schema::new(
            vec![CategoricalField { name: "a".into(), vocab_size: 6 }],
            vec!["x".into()],
            vec![TaskSpec::new("t0", TaskKind::Binary), TaskSpec::new("t1", TaskKind::Binary)],
        );
        let cfg = ModelConfig {
            architecture: Architecture::SharedBottom,
            sparse_embeddings: Some(true),
            embedding_dim: 3,
            bottom_hidden: vec![4],
            tower_hidden: vec![2],
            ..Default::default()
        };
        let model = cfg.init(&schema, &device);
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![1i32, 3], [2, 1]), &device);
        let features = FeatureBatch::new(Some(ids), Some(Tensor::zeros([2, 1], &device)));
        let table = model.forward_shared(features).sparse_rows[0].table;
        let mut list = ParamList::default();
        model.visit(&mut list);
        let dense: Vec<(ParamId, Vec<usize>)> = list.params.into_iter().filter(|(id, _)| *id != table).collect();
        let inner = Device::flex();
        let results: Vec<(GradientsParams, SparseGradients)> = std::thread::scope(|s| {
            let handles: Vec<_> = ThreadGroup::new(2)
                .into_iter()
                .map(|g| {
                    let (model, dense, inner) = (model.clone(), dense.clone(), inner.clone());
                    s.spawn(move || {
                        let rank = g.rank();
                        let parallel = DataParallel::new(Box::new(g));
                        let mut grads = GradientsParams::new();
                        // parameter k: (rank + 1)·(k + 1) everywhere; parameter 0 on rank 0 only,
                        // the last one nowhere
                        for (k, (id, shape)) in dense.iter().enumerate().take(dense.len() - 1) {
                            if k == 0 && rank == 1 || shape.len() > 2 {
                                continue;
                            }
                            let value = ((rank + 1) * (k + 1)) as f32;
                            let n = shape.iter().product::<usize>();
                            let data = TensorData::new(vec![value; n], shape.clone());
                            match shape.len() {
                                1 => grads.register::<1>(*id, Tensor::from_data(data, &inner)),
                                _ => grads.register::<2>(*id, Tensor::from_data(data, &inner)),
                            }
                        }
                        let (ids, rows) = if rank == 0 {
                            (vec![1i64, 3], vec![1.0f32, 1.0, 1.0, 2.0, 2.0, 2.0])
                        } else {
                            (vec![3i64, 5], vec![10.0f32, 10.0, 10.0, 20.0, 20.0, 20.0])
                        };
                        let grad = Tensor::from_data(TensorData::new(rows, [2, 3]), &inner);
                        let sparse = SparseGradients { tables: vec![TableGradient { table, ids, grad }] };
                        let share = if rank == 0 { 0.25 } else { 0.75 };
                        let dense_sum = parallel.reduce_dense(&model, grads, share);
                        (dense_sum, parallel.reduce_sparse(&model, sparse, share))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (grads, sparse) in &results {
            for (k, (id, shape)) in dense.iter().enumerate() {
                let got = match shape.len() {
                    1 => grads.get::<1>(*id).map(|t| t.into_data().try_into_vec::<f32>().unwrap()),
                    2 => grads.get::<2>(*id).map(|t| t.into_data().try_into_vec::<f32>().unwrap()),
                    _ => continue,
                };
                let w = (k + 1) as f32;
                let expected = match k {
                    0 => Some(0.25 * w),
                    _ if k == dense.len() - 1 => None,
                    _ => Some(0.25 * w + 0.75 * 2.0 * w),
                };
                match (got, expected) {
                    (None, None) => {}
                    (Some(got), Some(e)) => assert!(got.iter().all(|v| (v - e).abs() < 1e-6), "parameter {k}: {got:?}"),
                    (got, e) => panic!("parameter {k}: {got:?}, expected {e:?}"),
                }
            }
            let [t] = &sparse.tables[..] else { panic!("one table") };
            assert_eq!(t.table, table);
            assert_eq!(t.ids, vec![1, 3, 5]);
            let rows = t.grad.clone().into_data().try_into_vec::<f32>().unwrap();
            let (a, b, c) = (0.25f32, 0.25 * 2.0 + 0.75 * 10.0, 0.75 * 20.0);
            assert_eq!(rows, vec![a, a, a, b, b, b, c, c, c]);
        }
    }

    /// Blocks cover the items in rank order; an empty shard forwards row 0 with share 0.
    #[test]
    fn blocks_and_shards_by_hand() {
        let groups = ThreadGroup::new(3);
        let parallel: Vec<DataParallel> = groups.into_iter().map(|g| DataParallel::new(Box::new(g))).collect();
        let blocks: Vec<Range<usize>> = parallel.iter().map(|p| p.block(10)).collect();
        assert_eq!(blocks, vec![0..3, 3..6, 6..10]);
        let shards: Vec<(Range<usize>, f64)> = parallel.iter().map(|p| p.shard(2)).collect();
        assert_eq!(shards, vec![(0..1, 0.0), (0..1, 0.5), (1..2, 0.5)]);
        assert_eq!(parallel[1].shard(1), (0..1, 0.0));
        assert_eq!(parallel[2].shard(1), (0..1, 1.0));
    }
}
