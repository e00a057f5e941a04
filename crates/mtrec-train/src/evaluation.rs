//! Evaluating a model on a split: every metric of every task, sharded over data-parallel ranks.

use std::borrow::Cow;

use burn::tensor::Device;
use mtrec_data::{BatchOrder, MtlDataset, Schema, SplitRows, TaskKind};
use mtrec_model::{MultiTaskModel, MultiTaskModule, MultiTaskNet};

use crate::{
    DataParallel, TaskMetrics, TrainError,
    metrics::{conditional_auc, first_non_finite, group_auc, task_metrics},
};

/// Runs `model` (in evaluation mode) over `table` and computes every metric of every task: `auc` and
/// `logloss` (binary; `gauc` and `gauc_groups` when the table has groups), `mse` and `mae`
/// (regression), `accuracy`, `logloss` and `macro_auc` (multiclass), and for the later steps of a
/// funnel dataset `cvr_auc` (see [`Schema::funnel`](mtrec_data::Schema)), each over the rows holding the
/// task's label (with `labelled_rows`, their number, where some are absent). A non-finite output is an error naming the
/// split, task and row: its metrics would be meaningless.
pub fn evaluate<C: MultiTaskModule>(
    model: &MultiTaskNet<C>,
    table: &impl SplitRows,
    split: Split,
    schema: &Schema,
    device: &Device,
    batch_size: usize,
) -> Result<Vec<TaskMetrics>, TrainError> {
    Ok(evaluate_sharded(model, table, split, schema, device, batch_size, &DataParallel::single(), None)?.0)
}

/// [`evaluate`] with the batches split over the ranks of `parallel` (each forwards its contiguous
/// block of batches): the outputs and labels are gathered in row order, so every rank computes the
/// metrics over all rows — the same numbers as one process. With `fairness`, every binary main task
/// also gets the group-fairness metrics by that column ([`crate::fairness_metrics`]).
///
/// Returns the metrics and the model's outputs of every row, a vector a task in row order
/// (row-major `[rows, output width]`: a binary task's logit, a regression task's value in its
/// training space, a multiclass task's logits).
#[allow(clippy::too_many_arguments)]
pub(crate) fn evaluate_sharded<C: MultiTaskModule>(
    model: &MultiTaskNet<C>,
    table: &impl SplitRows,
    split: Split,
    schema: &Schema,
    device: &Device,
    batch_size: usize,
    parallel: &DataParallel,
    fairness: Option<crate::GroupColumn>,
) -> Result<(Vec<TaskMetrics>, Vec<Vec<f32>>), TrainError> {
    let n_tasks = schema.n_tasks();
    let mut field_groups: Vec<f32> = Vec::new();
    let mut outputs: Vec<Vec<f32>> = vec![Vec::with_capacity(table.n_rows()); n_tasks];
    let mut conditional: Vec<Option<Vec<f32>>> = vec![None; n_tasks];
    // the labels come with the batches (a streamed split is read once)
    let mut labels: Vec<Vec<f32>> = vec![Vec::with_capacity(table.n_rows()); n_tasks];
    // gated tasks: the sum over rows of the gate's entropy −Σ w log w, and the rows
    let mut gate_entropy: Vec<Option<(f64, f64)>> = vec![None; n_tasks];
    let widths = schema.widths();
    let mine = parallel.block(table.n_rows().div_ceil(batch_size));
    // the batches after this rank's block are not read
    for (b, batch) in table.stream(widths, batch_size, BatchOrder::Sequential, device).enumerate().take(mine.end) {
        let batch = batch?;
        if !mine.contains(&b) {
            continue;
        }
        let rows = batch.labels.into_data().try_into_vec::<f32>().expect("f32 labels");
        for (t, column) in labels.iter_mut().enumerate() {
            column.extend(rows.iter().skip(t).step_by(n_tasks));
        }
        if let (Some(crate::GroupColumn::Categorical(f)), Some(ids)) = (fairness, &batch.features.categorical) {
            let width = ids.dims()[1];
            let ids = ids.clone().into_data().convert::<i64>().try_into_vec::<i64>().expect("integer ids");
            field_groups.extend(ids.iter().skip(f).step_by(width).map(|&id| id as f32));
        }
        for (t, out) in model.forward(batch.features).into_iter().enumerate() {
            if let Some(w) = out.gate {
                let rows = w.dims()[0] as f64;
                // per row on the device, summed in f64 in row order: the same whatever the batch size
                let per_row =
                    crate::utilisation::gate_entropies(w).into_data().try_into_vec::<f32>().expect("f32 gates");
                let entropy: f64 = per_row.iter().map(|&e| f64::from(e)).sum();
                let (sum, n) = gate_entropy[t].unwrap_or((0.0, 0.0));
                gate_entropy[t] = Some((sum + entropy, n + rows));
            }
            outputs[t].extend(out.output.into_data().try_into_vec::<f32>().expect("f32 outputs"));
            if let Some(c) = out.conditional {
                let c = c.into_data().try_into_vec::<f32>().expect("f32 outputs");
                conditional[t].get_or_insert_with(Vec::new).extend(c);
            }
        }
    }
    if parallel.size() > 1 {
        // every rank's rows, in row order (blocks are in rank order)
        for t in 0..n_tasks {
            outputs[t] = parallel.gather_f32(std::mem::take(&mut outputs[t]));
            labels[t] = parallel.gather_f32(std::mem::take(&mut labels[t]));
            let c = parallel.gather_f32(conditional[t].take().unwrap_or_default());
            conditional[t] = (!c.is_empty()).then_some(c);
        }
        if matches!(fairness, Some(crate::GroupColumn::Categorical(_))) {
            field_groups = parallel.gather_f32(field_groups);
        }
        // every rank's entropy sums (tasks without a gate, and a rank whose block is empty, add zeros)
        let mut sums: Vec<f64> = gate_entropy.iter().flat_map(|g| <[f64; 2]>::from(g.unwrap_or((0.0, 0.0)))).collect();
        parallel.sum_f64(&mut sums);
        gate_entropy = sums.chunks(2).map(|c| (c[1] > 0.0).then_some((c[0], c[1]))).collect();
    }
    let fairness_groups: Option<Vec<i64>> = match fairness {
        Some(crate::GroupColumn::Task(g)) => Some(labels[g].iter().map(|&v| v.round() as i64).collect()),
        Some(crate::GroupColumn::Categorical(_)) => Some(field_groups.iter().map(|&v| v as i64).collect()),
        None => None,
    };
    let groups = table.group_ids()?;
    (0..n_tasks)
        .map(|t| {
            let task = &schema.tasks[t];
            for scores in std::iter::once(&outputs[t]).chain(conditional[t].as_ref()) {
                if let Some((row, value)) = first_non_finite(scores) {
                    return Err(TrainError::NonFiniteOutput { split, task: task.name.clone(), row, value });
                }
            }
            // a task with its own sample space is measured on the rows holding its label
            let rows = labelled_rows(&labels[t]);
            let rows = rows.as_deref();
            let (out, y) = (subset(&outputs[t], task.output_dim(), rows), subset(&labels[t], 1, rows));
            // a scored file may hold no label of a task: no metric of its labels then
            let mut metrics = if y.is_empty() { TaskMetrics::new() } else { task_metrics(task, &out, &y) };
            if let Some(r) = rows {
                metrics.insert("labelled_rows".into(), r.len() as f64);
            }
            let grouped = task.kind == TaskKind::Binary && !groups.is_empty();
            let task_groups = if grouped { subset(&groups, 1, rows) } else { Cow::Borrowed(&groups[..]) };
            if let Some((gauc, groups)) = grouped.then(|| group_auc(&out, &y, &task_groups)).flatten() {
                metrics.insert("gauc".into(), gauc);
                metrics.insert("gauc_groups".into(), groups as f64);
            }
            if grouped {
                let without = task_groups.iter().filter(|&&g| g == mtrec_data::NO_GROUP).count();
                metrics.insert("gauc_rows_without_group".into(), without as f64);
            }
            let judged =
                task.kind == TaskKind::Binary && !task.adversarial && fairness != Some(crate::GroupColumn::Task(t));
            if let Some(g) = fairness_groups.as_ref().filter(|_| judged) {
                metrics.extend(crate::fairness_metrics(&out, &y, &subset(g, 1, rows)));
            }
            // over every row of the split (the gate does not depend on the label)
            if let Some((sum, n)) = gate_entropy[t].filter(|&(_, n)| n > 0.0) {
                metrics.insert("gate_entropy".into(), sum / n);
            }
            if schema.funnel && t > 0 && !task.adversarial {
                let scores = subset(conditional[t].as_deref().unwrap_or(&outputs[t]), 1, rows);
                if let Some(auc) = conditional_auc(&scores, &y, &subset(&labels[t - 1], 1, rows)) {
                    metrics.insert("cvr_auc".into(), auc);
                }
            }
            Ok(metrics)
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|metrics| (metrics, outputs))
}

/// The rows whose label is present (not `NaN`), when some are absent; `None` when all are.
fn labelled_rows(labels: &[f32]) -> Option<Vec<usize>> {
    labels.iter().any(|y| y.is_nan()).then(|| (0..labels.len()).filter(|&i| !labels[i].is_nan()).collect())
}

/// Rows `rows` of row-major `values` with `width` values a row (all of them for `None`).
fn subset<'a, T: Copy>(values: &'a [T], width: usize, rows: Option<&[usize]>) -> Cow<'a, [T]> {
    match rows {
        None => Cow::Borrowed(values),
        Some(rows) => {
            Cow::Owned(rows.iter().flat_map(|&i| values[i * width..(i + 1) * width].iter().copied()).collect())
        }
    }
}

/// Which split to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The training split.
    Train,
    /// The validation split (model selection).
    Valid,
    /// The test split.
    Test,
}

impl Split {
    /// This split of `dataset`.
    pub fn of<S>(self, dataset: &MtlDataset<S>) -> &S {
        match self {
            Split::Train => &dataset.train,
            Split::Valid => &dataset.valid,
            Split::Test => &dataset.test,
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        })
    }
}
