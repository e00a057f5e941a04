//! Row-wise optimizers for row-sparse embedding tables: a step updates the rows its batch read,
//! and only those.
//!
//! A sparse table ([`mtrec_model::SparseRows`]) gets its gradient as the gradient of a leaf of the
//! batch's unique rows. [`SparseGradients::collect`] reads those leaves' gradients from the
//! balancer's gradient sets (summing sets, merging leaves of the same table);
//! [`SparseRowOptimizer::step`] applies one of:
//!
//! - `lazy_adam` (TensorFlow's `LazyAdam`, PyTorch's `SparseAdam`, checked against the latter's
//!   numbers): Adam's moments per row, updated when the row is read; one step count per table
//!   (steps in which the table had a gradient), and their update rule
//!   `row −= lr·√(1−β₂ᵗ)/(1−β₁ᵗ) · m/(√v + ε)` — so a row first read at step 2 moves by
//!   0.744·lr, less than a row read from the start;
//! - `lazy_adam_per_row`: the same moments, bias-corrected by each row's own update count
//!   (`m̂/(√v̂ + ε)` with `t` = how often the row was read), so a rare id's first update has the
//!   size of a frequent id's first — mtrec's `lazy_adam` before it followed `SparseAdam`;
//! - `adagrad`: Adagrad's squared-gradient sum per element;
//! - `rowwise_adagrad` (FBGEMM/TorchRec's default for large tables): one sum per row, of the mean
//!   squared gradient over the row — at dim 16, 1/32 of lazy Adam's state;
//! - `sgd`: `row −= lr·g` (what the dense step does, restricted to the rows with a gradient).
//!
//! The update reads and writes `U` rows of the table and of its state (`select` /
//! `select_assign`, in place on flex when the tensor is not shared), so its cost follows the batch,
//! not the vocabulary. L2 weight decay applies to the rows updated.

use std::collections::HashMap;

use burn::{
    lr_scheduler::module_lr_scheduler::ModuleLearningRate,
    module::{Module, ModuleMapper, Param, ParamId},
    tensor::{Gradients, IndexingUpdateOp, Int, Tensor, TensorData},
};
use mtrec_model::SparseRows;
use serde::{Deserialize, Serialize};

/// The update rule of row-sparse tables (`train.sparse_optimizer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SparseRule {
    /// Adam with per-row moments and one step count per table (PyTorch's `SparseAdam`).
    #[default]
    LazyAdam,
    /// Adam with per-row moments and per-row step counts.
    LazyAdamPerRow,
    /// Adagrad, one squared-gradient sum per element.
    Adagrad,
    /// Adagrad with one squared-gradient sum per row (the mean over the row).
    RowwiseAdagrad,
    /// Plain gradient descent.
    Sgd,
}

impl SparseRule {
    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Self::LazyAdam => "lazy_adam",
            Self::LazyAdamPerRow => "lazy_adam_per_row",
            Self::Adagrad => "adagrad",
            Self::RowwiseAdagrad => "rowwise_adagrad",
            Self::Sgd => "sgd",
        }
    }
}

/// One sparse table's gradient: rows `ids` (ascending, each once) and their gradient `[U, D]`.
#[derive(Debug, Clone)]
pub struct TableGradient {
    /// The table's parameter id.
    pub table: ParamId,
    /// The rows with a gradient.
    pub ids: Vec<i64>,
    /// Their gradient (off autodiff), `[ids.len(), D]`.
    pub grad: Tensor<2>,
}

/// The gradients of every row-sparse table of a step.
#[derive(Debug, Clone, Default)]
pub struct SparseGradients {
    /// One entry a table.
    pub tables: Vec<TableGradient>,
}

impl SparseGradients {
    /// The gradient of each table read through `rows`, summed over the gradient sets `parts`
    /// (a balancer may return several); leaves of the same table (several forwards in one step)
    /// are merged.
    pub fn collect(rows: &[SparseRows], parts: &[Gradients]) -> Self {
        // each table's (ids, gradient) parts, in order of first appearance
        let mut by_table: Vec<(ParamId, Vec<IdRows>)> = Vec::new();
        for leaf in rows {
            let grad = parts.iter().filter_map(|g| leaf.rows.grad(g)).reduce(|a, b| a + b);
            let Some(grad) = grad else { continue };
            match by_table.iter_mut().find(|(id, _)| *id == leaf.table) {
                Some((_, list)) => list.push((leaf.ids.clone(), grad)),
                None => by_table.push((leaf.table, vec![(leaf.ids.clone(), grad)])),
            }
        }
        let tables = by_table
            .into_iter()
            .map(|(table, mut list)| {
                if list.len() == 1 {
                    let (ids, grad) = list.pop().expect("one entry");
                    return TableGradient { table, ids, grad };
                }
                let mut ids: Vec<i64> = list.iter().flat_map(|(ids, _)| ids.iter().copied()).collect();
                ids.sort_unstable();
                ids.dedup();
                let (device, d) = (list[0].1.device(), list[0].1.dims()[1]);
                let mut grad = Tensor::<2>::zeros([ids.len(), d], &device);
                for (part_ids, part) in list {
                    let at: Vec<i64> =
                        part_ids.iter().map(|i| ids.binary_search(i).expect("a merged id") as i64).collect();
                    let at = Tensor::<1, Int>::from_data(TensorData::new(at, [part_ids.len()]), &device);
                    grad = grad.select_assign(0, at, part, IndexingUpdateOp::Add);
                }
                TableGradient { table, ids, grad }
            })
            .collect();
        Self { tables }
    }

    /// Whether no table has a gradient.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}

/// Row ids and their gradient rows.
type IdRows = (Vec<i64>, Tensor<2>);

/// A table's optimizer state: per-row step counts (lazy Adam) and up to two `[V, ·]`
/// accumulators. SGD keeps none.
#[derive(Debug, Clone)]
struct RowState {
    /// The table's rows `V`.
    rows: usize,
    /// Lazy Adam's bias correction: the table's step count (`lazy_adam`, one entry) or how often
    /// each row was updated (`lazy_adam_per_row`, one a row); empty for the other rules.
    steps: Vec<u32>,
    /// Lazy Adam's first moment `[V, D]`.
    first: Option<Tensor<2>>,
    /// Lazy Adam's second moment `[V, D]`, Adagrad's sums `[V, D]`, row-wise Adagrad's `[V, 1]`.
    second: Option<Tensor<2>>,
}

/// The optimizer of row-sparse tables (see the module docs of `sparse_optimizer.rs`).
#[derive(Debug, Clone)]
pub struct SparseRowOptimizer {
    rule: SparseRule,
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: f32,
    states: HashMap<ParamId, RowState>,
}

impl SparseRowOptimizer {
    /// `rule` with `epsilon` (Adam's and Adagrad's) and L2 `weight_decay` (0: none); Adam's β₁ 0.9,
    /// β₂ 0.999 as the dense Adam.
    pub fn new(rule: SparseRule, epsilon: f32, weight_decay: f32) -> Self {
        Self { rule, beta_1: 0.9, beta_2: 0.999, epsilon, weight_decay, states: HashMap::new() }
    }

    /// The update rule.
    pub fn rule(&self) -> SparseRule {
        self.rule
    }

    /// The state (every table's step counts and accumulators) as bytes for a checkpoint: `MTRECSP1`,
    /// the table count, then per table its parameter id, rows, width and three arrays (each a
    /// little-endian `u64` length and its values).
    pub fn state_bytes(&self) -> Vec<u8> {
        let mut out = b"MTRECSP1".to_vec();
        let mut ids: Vec<&ParamId> = self.states.keys().collect();
        ids.sort_by_key(|id| id.val());
        out.extend_from_slice(&(ids.len() as u64).to_le_bytes());
        for id in ids {
            let state = &self.states[id];
            out.extend_from_slice(&id.val().to_le_bytes());
            out.extend_from_slice(&(state.rows as u64).to_le_bytes());
            out.extend_from_slice(&(state.steps.len() as u64 * 4).to_le_bytes());
            state.steps.iter().for_each(|s| out.extend_from_slice(&s.to_le_bytes()));
            for tensor in [&state.first, &state.second] {
                // one copy of the values (the tensor's data), written as little-endian f32
                let data = tensor.as_ref().map(|t| t.clone().into_data().convert::<f32>());
                let values: &[f32] = data.as_ref().map_or(&[], |d| d.as_slice::<f32>().expect("f32 state"));
                let width = tensor.as_ref().map_or(0, |t| t.dims()[1] as u64);
                out.extend_from_slice(&width.to_le_bytes());
                out.extend_from_slice(&(values.len() as u64 * 4).to_le_bytes());
                out.reserve(values.len() * 4);
                values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
            }
        }
        out
    }

    /// Restores a state written by [`Self::state_bytes`] onto `device`; damage is an error saying
    /// what is wrong.
    pub fn load_state_bytes(&mut self, bytes: &[u8], device: &burn::tensor::Device) -> Result<(), String> {
        let mut reader =
            StateReader(bytes.strip_prefix(b"MTRECSP1").ok_or("the sparse optimizer state has a bad header")?);
        let mut states = HashMap::new();
        for _ in 0..reader.word("the table count")? {
            let id = ParamId::from(reader.word("a table id")?);
            let vocab = reader.word("a table size")? as usize;
            let steps: Vec<u32> = reader
                .array("the step counts")?
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect();
            let needed = self.step_counts(vocab);
            if self.rule == SparseRule::LazyAdam && steps.len() == vocab && vocab > 1 {
                return Err(format!(
                    "table {id}: the state holds a step count per row: it was written by an mtrec whose lazy_adam \
                     corrected each row by its own count (now `lazy_adam_per_row`); lazy_adam now follows \
                     PyTorch's SparseAdam, so this checkpoint cannot continue under it"
                ));
            }
            if steps.len() != needed {
                return Err(format!(
                    "table {id}: {} step counts for {vocab} rows ({} keeps {needed})",
                    steps.len(),
                    self.rule.name()
                ));
            }
            let mut tensor = |what: &str| -> Result<Option<Tensor<2>>, String> {
                let width = reader.word(what)? as usize;
                let values: Vec<f32> = reader
                    .array(what)?
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                    .collect();
                match (width, values.len()) {
                    (0, 0) => Ok(None),
                    (w, n) if w > 0 && vocab.checked_mul(w) == Some(n) => {
                        Ok(Some(Tensor::from_data(TensorData::new(values, [vocab, w]), device)))
                    }
                    (w, n) => Err(format!("table {id}: {what} holds {n} values, not {vocab} × {w}")),
                }
            };
            let first = tensor("the first accumulator")?;
            let second = tensor("the second accumulator")?;
            states.insert(id, RowState { rows: vocab, steps, first, second });
        }
        if !reader.0.is_empty() {
            return Err(format!("{} unexpected bytes after the sparse optimizer state", reader.0.len()));
        }
        self.states = states;
        Ok(())
    }

    /// The step counts the rule keeps for a table of `rows` rows.
    fn step_counts(&self, rows: usize) -> usize {
        match self.rule {
            SparseRule::LazyAdam => 1,
            SparseRule::LazyAdamPerRow => rows,
            _ => 0,
        }
    }

    /// Applies `grads` to the sparse tables of `module`, each at the learning rate `lr` gives its
    /// parameter.
    pub fn step<M: Module>(&mut self, lr: &ModuleLearningRate, module: M, grads: SparseGradients) -> M {
        if grads.is_empty() {
            return module;
        }
        let mut mapper = RowUpdate { optimizer: self, lr, grads: grads.tables };
        module.map(&mut mapper)
    }

    /// The new values of `table`'s rows `ids` from their gradient `grad`, updating the state.
    fn update(&mut self, id: ParamId, table: Tensor<2>, ids: &[i64], grad: Tensor<2>, lr: f64) -> Tensor<2> {
        let device = table.device();
        let [vocab, d] = table.dims();
        let n = ids.len();
        let index = Tensor::<1, Int>::from_data(TensorData::new(ids.to_vec(), [n]), &device);
        let rows = table.clone().select(0, index.clone());
        let grad = if self.weight_decay > 0.0 { grad + rows.clone().mul_scalar(self.weight_decay) } else { grad };
        let (b1, b2, eps, rule) = (self.beta_1, self.beta_2, self.epsilon, self.rule);
        // SGD keeps no state; the others start from none
        let new_state = || RowState { rows: vocab, steps: vec![], first: None, second: None };
        let zeros = |width| Tensor::<2>::zeros([vocab, width], &device);
        let counts = self.step_counts(vocab);
        let step = match rule {
            SparseRule::Sgd => grad,
            SparseRule::LazyAdam | SparseRule::LazyAdamPerRow => {
                let state = self.states.entry(id).or_insert_with(new_state);
                if state.steps.is_empty() {
                    state.steps = vec![0; counts];
                }
                let m = state.first.take().unwrap_or_else(|| zeros(d));
                let v = state.second.take().unwrap_or_else(|| zeros(d));
                let m_rows = m.clone().select(0, index.clone()).mul_scalar(b1) + grad.clone().mul_scalar(1.0 - b1);
                let v_rows = v.clone().select(0, index.clone()).mul_scalar(b2)
                    + grad.clone().powi_scalar(2).mul_scalar(1.0 - b2);
                let step = if rule == SparseRule::LazyAdam {
                    // SparseAdam: the table's step, ε outside the bias correction
                    state.steps[0] += 1;
                    let t = state.steps[0] as i32;
                    let size = (1.0 - (b2 as f64).powi(t)).sqrt() / (1.0 - (b1 as f64).powi(t));
                    (m_rows.clone() / v_rows.clone().sqrt().add_scalar(eps)).mul_scalar(size)
                } else {
                    let (mut c1, mut c2) = (Vec::with_capacity(n), Vec::with_capacity(n));
                    for &i in ids {
                        let t = &mut state.steps[i as usize];
                        *t += 1;
                        c1.push(1.0 / (1.0 - b1.powi(*t as i32)));
                        c2.push(1.0 / (1.0 - b2.powi(*t as i32)));
                    }
                    let c1 = Tensor::<2>::from_data(TensorData::new(c1, [n, 1]), &device);
                    let c2 = Tensor::<2>::from_data(TensorData::new(c2, [n, 1]), &device);
                    (m_rows.clone() * c1) / ((v_rows.clone() * c2).sqrt().add_scalar(eps))
                };
                state.first = Some(m.select_assign(0, index.clone(), m_rows, IndexingUpdateOp::Assign));
                state.second = Some(v.select_assign(0, index.clone(), v_rows, IndexingUpdateOp::Assign));
                step
            }
            SparseRule::Adagrad | SparseRule::RowwiseAdagrad => {
                let state = self.states.entry(id).or_insert_with(new_state);
                let width = if rule == SparseRule::Adagrad { d } else { 1 };
                let sums = state.second.take().unwrap_or_else(|| zeros(width));
                let squares = grad.clone().powi_scalar(2);
                let squares = if width == 1 { squares.mean_dim(1) } else { squares };
                let rows_sum = sums.clone().select(0, index.clone()) + squares;
                let step = grad / rows_sum.clone().sqrt().add_scalar(eps);
                state.second = Some(sums.select_assign(0, index.clone(), rows_sum, IndexingUpdateOp::Assign));
                step
            }
        };
        let new_rows = rows - step.mul_scalar(lr);
        table.select_assign(0, index, new_rows, IndexingUpdateOp::Assign)
    }
}

/// Reads the sparse state's words and arrays.
struct StateReader<'a>(&'a [u8]);

impl<'a> StateReader<'a> {
    fn word(&mut self, what: &str) -> Result<u64, String> {
        let (head, tail) = self.0.split_first_chunk::<8>().ok_or(format!("the sparse state ends inside {what}"))?;
        self.0 = tail;
        Ok(u64::from_le_bytes(*head))
    }

    fn array(&mut self, what: &str) -> Result<&'a [u8], String> {
        let len = self.word(what)? as usize;
        if self.0.len() < len || !len.is_multiple_of(4) {
            return Err(format!("the sparse state ends inside {what}"));
        }
        let (array, tail) = self.0.split_at(len);
        self.0 = tail;
        Ok(array)
    }
}

/// Maps a module's sparse tables through the optimizer.
struct RowUpdate<'a> {
    optimizer: &'a mut SparseRowOptimizer,
    lr: &'a ModuleLearningRate,
    grads: Vec<TableGradient>,
}

impl ModuleMapper for RowUpdate<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(k) = self.grads.iter().position(|g| g.table == param.id) else { return param };
        let TableGradient { ids, grad, .. } = self.grads.swap_remove(k);
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let shape = tensor.shape();
        let table: Tensor<2> = tensor.inner().reshape([shape[0], shape.num_elements() / shape[0].max(1)]);
        let lr = self.lr.lr_from_param(id, None);
        let updated = self.optimizer.update(id, table, &ids, grad, lr).reshape(shape);
        let mut tensor = Tensor::from_inner(updated);
        if require_grad {
            tensor = tensor.require_grad();
        }
        Param::from_mapped_value(id, tensor, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::{
        module::ModuleVisitor,
        optim::SgdConfig,
        tensor::{Device, Distribution},
    };
    use mtrec_balance::{FixedWeights, GradientCombination, LossBalancer, PcGrad};
    use mtrec_data::{CategoricalField, FeatureBatch, MtlBatch, Schema, TaskKind, TaskSpec};
    use mtrec_model::{Architecture, ModelConfig, MultiTaskNet};

    use crate::{Optimizers, train_step};

    fn schema() -> Schema {
        Schema::new(
            vec![
                CategoricalField { name: "user".into(), vocab_size: 30 },
                CategoricalField { name: "item".into(), vocab_size: 20 },
            ],
            vec!["x".into(), "y".into(), "z".into()],
            vec![TaskSpec::new("t0", TaskKind::Binary), TaskSpec::new("t1", TaskKind::Binary)],
        )
    }

    /// 64 rows reading 9 of the 30 users and 3 of the 20 items, each many times.
    fn batch(device: &Device) -> MtlBatch {
        let b = 64;
        let ids: Vec<i32> = (0..b).flat_map(|i| [((i * i) % 17) as i32, ((3 * i) % 9) as i32]).collect();
        let labels: Vec<f32> = (0..2 * b).map(|k| ((k * 7) % 3 == 0) as u8 as f32).collect();
        MtlBatch {
            features: FeatureBatch::new(
                Some(Tensor::<2, Int>::from_data(TensorData::new(ids, [b, 2]), device)),
                Some(Tensor::random([b, 3], Distribution::Default, device)),
            ),
            labels: Tensor::from_data(TensorData::new(labels, [b, 2]), device),
            size: b,
            labelled: None,
        }
    }

    /// Every float parameter's values, by parameter id.
    struct Values(Vec<(ParamId, Vec<f32>)>);
    impl ModuleVisitor for Values {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push((param.id, param.val().into_data().convert::<f32>().try_into_vec::<f32>().unwrap()));
        }
    }
    fn values(model: &MultiTaskNet) -> Vec<(ParamId, Vec<f32>)> {
        let mut v = Values(vec![]);
        model.visit(&mut v);
        v.0
    }

    /// With SGD, a row-sparse step and the dense step leave every parameter bit for bit the same
    /// (the table's untouched rows too), for a balancer with one backward and one with per-task
    /// gradients; the table is updated (the step did something) and only on the rows read.
    #[test]
    fn a_sparse_sgd_step_equals_the_dense_step() {
        let device = Device::flex().autodiff();
        let kinds = [TaskKind::Binary, TaskKind::Binary];
        let config = |sparse| ModelConfig {
            architecture: Architecture::Mmoe,
            n_experts: 3,
            expert_hidden: vec![8],
            tower_hidden: vec![4],
            sparse_embeddings: Some(sparse),
            ..Default::default()
        };
        let balancers: [fn() -> Box<dyn LossBalancer>; 2] =
            [|| Box::new(FixedWeights::new(vec![1.0, 0.5])), || Box::new(GradientCombination::new(PcGrad::new(3), 2))];
        for make_balancer in balancers {
            let dense = config(false).init(&schema(), &device);
            let sparse = config(true).init(&schema(), &device).load_record(dense.clone().into_record());
            let table = match &sparse.body {
                mtrec_model::ArchitectureNet::Mmoe(m) => m.input.table.as_ref().unwrap().weight.id,
                _ => unreachable!("mmoe"),
            };
            let batch = batch(&device);
            let sgd = || Optimizers {
                dense: SgdConfig::new().init(),
                sparse: SparseRowOptimizer::new(SparseRule::Sgd, 1e-8, 0.0),
            };
            let before = values(&dense);
            let step = |model, optim: &mut Optimizers| {
                train_step(model, optim, make_balancer().as_mut(), &batch, &kinds, 0.5).unwrap().0
            };
            let (dense, sparse) = (step(dense, &mut sgd()), step(sparse, &mut sgd()));
            let (a, b) = (values(&dense), values(&sparse));
            assert_eq!(a.len(), b.len());
            for ((id, x), (_, y)) in a.iter().zip(&b) {
                assert_eq!(x, y, "parameter {id} differs between the dense and the sparse step");
            }
            let (_, old) = before.iter().find(|(id, _)| *id == table).unwrap();
            let (_, new) = b.iter().find(|(id, _)| *id == table).unwrap();
            let changed: Vec<usize> = (0..50).filter(|r| old[r * 4..r * 4 + 4] != new[r * 4..r * 4 + 4]).collect();
            // user i²·mod 17 (the squares mod 17: 9 rows), item 3i mod 9 (rows 30 + 0, 3, 6)
            let mut read: Vec<usize> = (0..64).map(|i| (i * i) % 17).chain((0..64).map(|i| 30 + (3 * i) % 9)).collect();
            read.sort_unstable();
            read.dedup();
            assert_eq!(changed, read, "the rows read, and only those, move");
        }
    }

    /// A one-parameter module for the hand-written checks.
    #[derive(Module, Debug)]
    struct Table {
        weight: Param<Tensor<2>>,
    }

    fn table(values: &[f32], device: &Device) -> Table {
        let rows = values.len() / 2;
        Table { weight: Param::from_tensor(Tensor::from_data(TensorData::new(values.to_vec(), [rows, 2]), device)) }
    }

    fn grads(table: &Table, ids: &[i64], g: &[f32], device: &Device) -> SparseGradients {
        let grad = Tensor::from_data(TensorData::new(g.to_vec(), [ids.len(), 2]), device);
        SparseGradients { tables: vec![TableGradient { table: table.weight.id, ids: ids.to_vec(), grad }] }
    }

    fn assert_close(got: &[f32], expected: &[f64], what: &str) {
        for (k, (g, e)) in got.iter().zip(expected).enumerate() {
            assert!((*g as f64 - e).abs() <= 1e-6 * e.abs().max(1.0), "{what}[{k}]: {g} vs {e}");
        }
    }

    /// The table after each step of `reference/sparse_adam.py`: `torch.optim.SparseAdam` (PyTorch
    /// 2.15) on the hand-made rows of the tests below.
    #[allow(clippy::excessive_precision)] // pasted as the script prints them
    const SPARSE_ADAM: [[f32; 10]; 3] = [
        [
            -3.000000119e-01,
            -2.000000030e-01,
            -1.099999920e-01,
            9.999996051e-03,
            1.000000015e-01,
            2.000000030e-01,
            2.900000215e-01,
            3.900000155e-01,
            5.000000000e-01,
            6.000000238e-01,
        ],
        [
            -3.000000119e-01,
            -2.000000030e-01,
            -1.099999920e-01,
            9.999996051e-03,
            1.000000015e-01,
            2.000000030e-01,
            2.863404453e-01,
            3.815587759e-01,
            4.925586581e-01,
            6.074413657e-01,
        ],
        [
            -3.000000119e-01,
            -2.000000030e-01,
            -1.182196811e-01,
            1.164393406e-02,
            1.000000015e-01,
            2.000000030e-01,
            2.863404453e-01,
            3.815587759e-01,
            4.925586581e-01,
            6.074413657e-01,
        ],
    ];

    /// The steps of the hand-made tests: rows 1 and 3, then rows 3 and 4, then row 1.
    const STEPS: [(&[i64], [f32; 4]); 3] =
        [(&[1, 3], [0.5, -1.0, 2.0, 0.25]), (&[3, 4], [-0.75, 1.5, 0.1, -0.2]), (&[1], [0.3, 0.6, 0.0, 0.0])];

    /// `lazy_adam` is PyTorch's SparseAdam: the table after each step equals SparseAdam's (row 4,
    /// first read at step 2, moves by 0.744·lr, not lr), and a saved and restored state continues
    /// identically. (The per-row rule it had before is 7 % off SparseAdam on row 4 after step 2.)
    #[test]
    fn lazy_adam_follows_sparse_adam() {
        let device = Device::flex();
        let start: Vec<f32> = (0..10).map(|k| 0.1 * k as f32 - 0.3).collect();
        let lrs = ModuleLearningRate::from(0.01);
        let run = |rule| {
            let mut optim = SparseRowOptimizer::new(rule, 1e-8, 0.0);
            let mut module = table(&start, &device);
            let mut after = Vec::new();
            let mut saved = None;
            for (k, (ids, g)) in STEPS.iter().enumerate() {
                let gradient = grads(&module, ids, &g[..ids.len() * 2], &device);
                module = optim.step(&lrs, module, gradient);
                after.push(module.weight.val().into_data().try_into_vec::<f32>().unwrap());
                if k == 1 {
                    saved = Some((optim.state_bytes(), module.clone()));
                }
            }
            (after, saved.unwrap(), module)
        };
        let (after, (bytes, resumed), end) = run(SparseRule::LazyAdam);
        for (k, (got, expected)) in after.iter().zip(SPARSE_ADAM).enumerate() {
            for (j, (g, e)) in got.iter().zip(expected).enumerate() {
                assert!((g - e).abs() <= 2e-7, "step {}: [{j}] {g} vs SparseAdam {e}", k + 1);
            }
        }
        assert!(((0.5 - after[1][8]) / 0.01 - 0.744).abs() < 1e-3, "row 4's first move: {}", after[1][8]);
        let mut fresh = SparseRowOptimizer::new(SparseRule::LazyAdam, 1e-8, 0.0);
        fresh.load_state_bytes(&bytes, &device).unwrap();
        let (ids, g) = STEPS[2];
        let resumed = fresh.step(&lrs, resumed.clone(), grads(&resumed, ids, &g[..2], &device));
        assert_eq!(resumed.weight.val().into_data(), end.weight.val().into_data(), "restored state continues");
        // the per-row rule is another optimizer (and its state does not load as lazy_adam's)
        let (per_row, (per_row_bytes, _), _) = run(SparseRule::LazyAdamPerRow);
        assert!((per_row[1][8] - SPARSE_ADAM[1][8]).abs() > 1e-3, "per-row correction differs: {}", per_row[1][8]);
        let e = SparseRowOptimizer::new(SparseRule::LazyAdam, 1e-8, 0.0)
            .load_state_bytes(&per_row_bytes, &device)
            .unwrap_err();
        assert!(e.contains("lazy_adam_per_row"), "{e}");
    }

    /// `lazy_adam_per_row` on hand-made rows: rows 1 and 3 at step 1, rows 3 and 4 at step 2, row 1
    /// at step 3 — each row's moments and bias correction count its own updates (row 1's second
    /// update is bias-corrected as a second step although it is the run's third), untouched rows
    /// keep their values, and a state saved and restored continues identically.
    #[test]
    fn lazy_adam_per_row_follows_the_rule_written_out() {
        let device = Device::flex();
        let start: Vec<f32> = (0..10).map(|k| 0.1 * k as f32 - 0.3).collect();
        let steps = STEPS;
        let (lr, eps, b1, b2) = (0.01f64, 1e-8f64, 0.9f64, 0.999f64);
        // by hand, in f64
        let mut w: Vec<f64> = start.iter().map(|&v| v as f64).collect();
        let (mut m, mut v, mut t) = (vec![0.0f64; 10], vec![0.0f64; 10], [0i32; 5]);
        let mut expected = Vec::new();
        for (ids, g) in &steps {
            for (k, &r) in ids.iter().enumerate() {
                let r = r as usize;
                t[r] += 1;
                for j in 0..2 {
                    let (e, g) = (2 * r + j, g[2 * k + j] as f64);
                    m[e] = b1 * m[e] + (1.0 - b1) * g;
                    v[e] = b2 * v[e] + (1.0 - b2) * g * g;
                    let (mh, vh) = (m[e] / (1.0 - b1.powi(t[r])), v[e] / (1.0 - b2.powi(t[r])));
                    w[e] -= lr * mh / (vh.sqrt() + eps);
                }
            }
            expected.push(w.clone());
        }
        let mut optim = SparseRowOptimizer::new(SparseRule::LazyAdamPerRow, eps as f32, 0.0);
        let lrs = ModuleLearningRate::from(lr);
        let mut module = table(&start, &device);
        let mut saved = None;
        for (k, (ids, g)) in steps.iter().enumerate() {
            let n = ids.len() * 2;
            let gradient = grads(&module, ids, &g[..n], &device);
            module = optim.step(&lrs, module, gradient);
            let got: Vec<f32> = module.weight.val().into_data().try_into_vec().unwrap();
            assert_close(&got, &expected[k], &format!("lazy adam after step {}", k + 1));
            assert_eq!(got[0..2], start[0..2], "row 0 is never read");
            if k == 1 {
                saved = Some((optim.state_bytes(), module.clone()));
            }
        }
        let (bytes, resumed) = saved.unwrap();
        let mut fresh = SparseRowOptimizer::new(SparseRule::LazyAdamPerRow, eps as f32, 0.0);
        fresh.load_state_bytes(&bytes, &device).unwrap();
        let (ids, g) = steps[2];
        let resumed = fresh.step(&lrs, resumed.clone(), grads(&resumed, ids, &g[..2], &device));
        assert_eq!(resumed.weight.val().into_data(), module.weight.val().into_data(), "restored state continues");
        assert!(fresh.load_state_bytes(&bytes[..bytes.len() - 3], &device).is_err(), "a truncated state is refused");
    }

    /// Row-wise Adagrad keeps one sum a row (of the mean squared gradient), element-wise Adagrad
    /// one an element; SGD is `w − lr·g`; L2 weight decay is added to the rows' gradient.
    #[test]
    fn adagrad_rules_follow_the_rules_written_out() {
        let device = Device::flex();
        let start = [0.5f32, -0.5, 1.0, 2.0, -1.0, 0.25];
        let g1 = [0.3f32, -0.4, 1.0, 2.0];
        let g2 = [0.5f32, 0.1];
        let (lr, eps, wd) = (0.1f64, 1e-8f64, 0.01f64);
        let lrs = ModuleLearningRate::from(lr);
        for rule in [SparseRule::Adagrad, SparseRule::RowwiseAdagrad, SparseRule::Sgd] {
            let mut w: Vec<f64> = start.iter().map(|&v| v as f64).collect();
            let mut sums = [0.0f64; 6];
            let mut by_hand = |ids: &[usize], g: &[f32]| {
                for (k, &r) in ids.iter().enumerate() {
                    let gr: Vec<f64> = (0..2).map(|j| g[2 * k + j] as f64 + wd * w[2 * r + j]).collect();
                    let mean_sq = (gr[0] * gr[0] + gr[1] * gr[1]) / 2.0;
                    for (j, &gj) in gr.iter().enumerate() {
                        let e = 2 * r + j;
                        let scale = match rule {
                            SparseRule::Adagrad => {
                                sums[e] += gj * gj;
                                sums[e].sqrt() + eps
                            }
                            SparseRule::RowwiseAdagrad => {
                                if j == 0 {
                                    sums[2 * r] += mean_sq;
                                }
                                sums[2 * r].sqrt() + eps
                            }
                            _ => 1.0,
                        };
                        w[e] -= lr * gj / scale;
                    }
                }
                w.clone()
            };
            let first = by_hand(&[0, 2], &g1);
            let second = by_hand(&[2], &g2);
            let mut optim = SparseRowOptimizer::new(rule, eps as f32, wd as f32);
            let module = table(&start, &device);
            let module = optim.step(&lrs, module.clone(), grads(&module, &[0, 2], &g1, &device));
            let got: Vec<f32> = module.weight.val().into_data().try_into_vec().unwrap();
            assert_close(&got, &first, rule.name());
            // the second step from a saved and restored state is the same step
            let mut restored = SparseRowOptimizer::new(rule, eps as f32, wd as f32);
            restored.load_state_bytes(&optim.state_bytes(), &device).unwrap();
            let again = restored.step(&lrs, module.clone(), grads(&module, &[2], &g2, &device));
            let module = optim.step(&lrs, module.clone(), grads(&module, &[2], &g2, &device));
            assert_eq!(again.weight.val().into_data(), module.weight.val().into_data(), "{}", rule.name());
            let got: Vec<f32> = module.weight.val().into_data().try_into_vec().unwrap();
            assert_close(&got, &second, rule.name());
            assert_eq!(got[2..4], start[2..4], "{}: row 1 is never read", rule.name());
        }
    }

    /// Two leaves of one table (two forwards in a step) merge: shared rows add.
    #[test]
    fn gradients_of_two_leaves_of_a_table_merge() {
        let device = Device::flex().autodiff();
        let table = Param::from_tensor(Tensor::<2>::random([8, 2], Distribution::Default, &device));
        let ids_a = Tensor::<2, Int>::from_data(TensorData::new(vec![5i64, 2], [1, 2]), &device);
        let ids_b = Tensor::<2, Int>::from_data(TensorData::new(vec![2i64, 7], [1, 2]), &device);
        let (a, leaf_a) = mtrec_model::sparse_lookup(&table, ids_a);
        let (b, leaf_b) = mtrec_model::sparse_lookup(&table, ids_b);
        let grads = (a.sum() + b.mul_scalar(2.0).sum()).backward();
        let merged = SparseGradients::collect(&[leaf_a.unwrap(), leaf_b.unwrap()], &[grads]);
        assert_eq!(merged.tables.len(), 1);
        assert_eq!(merged.tables[0].ids, vec![2, 5, 7]);
        let g: Vec<f32> = merged.tables[0].grad.clone().into_data().try_into_vec().unwrap();
        assert_eq!(g, vec![3.0, 3.0, 1.0, 1.0, 2.0, 2.0]);
    }
}
