//! Expert utilisation of gated models (MMoE, OMoE, PLE): on a split, each task's mean gate weight
//! per expert and the mean gate entropy. A gate that puts nearly all its weight on one expert has
//! collapsed: the mixture is then a single expert and the model a hard-shared one in disguise.

use std::collections::BTreeMap;

use burn::{
    module::Module,
    tensor::{Device, Tensor},
};
use mtrec_data::{BatchOrder, FeatureBatch, Schema, SplitRows};
use mtrec_model::{MultiTaskModel, MultiTaskModule, MultiTaskNet};
use serde::{Deserialize, Serialize};

/// Mean weight at or above which one expert is said to take all of a task's gate.
pub const COLLAPSE_THRESHOLD: f64 = 0.9;

/// One task's gate statistics over a split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateUtilisation {
    /// Mean gate weight of each expert (sums to 1).
    pub mean_weight: Vec<f64>,
    /// Mean over examples of the gate's entropy `−Σ w log w` (nats; `ln E` is uniform).
    pub mean_entropy: f64,
    /// Whether one expert takes at least [`COLLAPSE_THRESHOLD`] of the weight on average.
    pub collapsed: bool,
}

/// Each row's gate entropy `−Σ_e w_e log w_e` (nats), `[n, 1]`, of gate weights `[n, E]`.
pub(crate) fn gate_entropies(w: Tensor<2>) -> Tensor<2> {
    (w.clone() * w.clamp_min(1e-12).log()).sum_dim(1).neg()
}

/// Each task's mean gate entropy on one training batch (`None` for an ungated task), for the
/// TensorBoard step scalars: an inference forward of the model as it is (no dropout, and no draw
/// from the training generator, so logging does not change the run).
pub(crate) fn batch_gate_entropies<C: MultiTaskModule>(
    model: &MultiTaskNet<C>,
    features: &FeatureBatch,
) -> Vec<Option<f64>> {
    let features = FeatureBatch {
        categorical: features.categorical.clone().map(Tensor::inner),
        multi: features.multi.clone().map(Tensor::inner),
        dense: features.dense.clone().map(Tensor::inner),
        text: features.text.clone().map(Tensor::inner),
    };
    let outputs = model.valid().forward(features);
    let gated: Vec<Tensor<1>> =
        outputs.iter().filter_map(|o| o.gate.clone().map(|w| gate_entropies(w).mean())).collect();
    if gated.is_empty() {
        return vec![None; outputs.len()];
    }
    let mut host = Tensor::cat(gated, 0).into_data().try_into_vec::<f32>().expect("f32 gates").into_iter();
    outputs.iter().map(|o| o.gate.as_ref().map(|_| f64::from(host.next().expect("one entropy a gate")))).collect()
}

/// Gate statistics of every gated task of `model` on `table`; empty for ungated models.
pub fn expert_utilisation<C: MultiTaskModule>(
    model: &MultiTaskNet<C>,
    table: &impl SplitRows,
    schema: &Schema,
    device: &Device,
    batch_size: usize,
) -> Result<BTreeMap<String, GateUtilisation>, mtrec_data::DataError> {
    let mut sums: Vec<Option<(Tensor<1>, Tensor<1>)>> = vec![None; schema.n_tasks()];
    for batch in table.stream(schema.widths(), batch_size, BatchOrder::Sequential, device) {
        let batch = batch?;
        for (t, out) in model.forward(batch.features).into_iter().enumerate() {
            let Some(w) = out.gate else { continue };
            let [_, e] = w.dims();
            let weight = w.clone().sum_dim(0).reshape([e]);
            let entropy = gate_entropies(w).sum();
            sums[t] = Some(match sums[t].take() {
                Some((a, b)) => (a + weight, b + entropy),
                None => (weight, entropy),
            });
        }
    }
    let n = table.n_rows().max(1) as f64;
    Ok(sums
        .into_iter()
        .enumerate()
        .filter_map(|(t, s)| {
            let (weight, entropy) = s?;
            let mean_weight: Vec<f64> =
                weight.into_data().try_into_vec_as::<f64>().ok()?.into_iter().map(|v| v / n).collect();
            let mean_entropy = entropy.into_scalar::<f32>() as f64 / n;
            let collapsed = mean_weight.iter().any(|&w| w >= COLLAPSE_THRESHOLD);
            Some((schema.tasks[t].name.clone(), GateUtilisation { mean_weight, mean_entropy, collapsed }))
        })
        .collect())
}

/// One warning line per collapsed gate.
pub fn collapse_warnings(utilisation: &BTreeMap<String, GateUtilisation>) -> Vec<String> {
    utilisation
        .iter()
        .filter(|(_, u)| u.collapsed)
        .map(|(task, u)| {
            let (k, w) = u.mean_weight.iter().enumerate().fold((0, 0.0), |m, (k, &w)| if w > m.1 { (k, w) } else { m });
            format!(
                "warning: experts collapsed for task `{task}`: expert {k} takes {:.0}% of its gate weight \
                 (gate entropy {:.3} nats)",
                100.0 * w,
                u.mean_entropy
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mtrec_data::batches;
    use mtrec_data::{CategoricalField, EncodedTable, TaskKind, TaskSpec};
    use mtrec_model::{Architecture, ModelConfig};

    #[test]
    fn gate_statistics_are_means_over_the_split_and_collapse_is_flagged() {
        let device = Device::flex();
        let schema = Schema::new(
            vec![CategoricalField { name: "a".into(), vocab_size: 4 }],
            vec!["x".into()],
            vec![TaskSpec::new("t0", TaskKind::Binary), TaskSpec::new("t1", TaskKind::Binary)],
        );
        let table = EncodedTable {
            n_rows: 5,
            categorical: vec![1, 2, 3, 1, 2],
            dense: vec![0.1, 0.5, 0.9, 0.3, 0.7],
            labels: vec![0.0; 10],
            ..Default::default()
        };
        let cfg = ModelConfig { n_experts: 3, ..Default::default() };
        let model = cfg.init(&schema, &device);
        let u = expert_utilisation(&model, &table, &schema, &device, 2).unwrap();
        // reference: the gates over all rows at once
        let batch = batches(&table, schema.widths(), 5, BatchOrder::Sequential, &device).next().unwrap();
        let outs = model.forward(batch.features);
        for (t, name) in ["t0", "t1"].iter().enumerate() {
            let w = outs[t].gate.clone().unwrap().into_data().try_into_vec::<f32>().unwrap();
            for e in 0..3 {
                let mean = (0..5).map(|b| w[b * 3 + e] as f64).sum::<f64>() / 5.0;
                assert!((u[*name].mean_weight[e] - mean).abs() < 1e-6);
            }
            let entropy = (0..5)
                .map(|b| -(0..3).map(|e| w[b * 3 + e] as f64 * (w[b * 3 + e] as f64).ln()).sum::<f64>())
                .sum::<f64>()
                / 5.0;
            assert!((u[*name].mean_entropy - entropy).abs() < 1e-5);
            assert!(!u[*name].collapsed, "a fresh gate is near uniform");
        }
        // the step scalar: the same entropy, from a training (autodiff) batch of a model with
        // dropout, which the inference forward leaves out; an ungated model has none
        let ad = device.clone().autodiff();
        let dropped = ModelConfig { n_experts: 3, dropout: 0.5, ..Default::default() }.init(&schema, &ad);
        let batch = batches(&table, schema.widths(), 5, BatchOrder::Sequential, &ad).next().unwrap();
        let step = batch_gate_entropies(&dropped, &batch.features);
        let outs = dropped
            .valid()
            .forward(batches(&table, schema.widths(), 5, BatchOrder::Sequential, &device).next().unwrap().features);
        for t in 0..2 {
            let w = outs[t].gate.clone().unwrap().into_data().try_into_vec::<f32>().unwrap();
            let entropy = (0..5)
                .map(|b| -(0..3).map(|e| w[b * 3 + e] as f64 * (w[b * 3 + e] as f64).ln()).sum::<f64>())
                .sum::<f64>()
                / 5.0;
            assert!((step[t].unwrap() - entropy).abs() < 1e-5, "{step:?} {entropy}");
        }
        let shared_bottom =
            ModelConfig { architecture: Architecture::SharedBottom, ..Default::default() }.init(&schema, &ad);
        assert_eq!(batch_gate_entropies(&shared_bottom, &batch.features), vec![None, None]);
        let mut collapsed = u.clone();
        collapsed.get_mut("t1").unwrap().mean_weight = vec![0.95, 0.03, 0.02];
        collapsed.get_mut("t1").unwrap().collapsed = true;
        let lines = collapse_warnings(&collapsed);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("`t1`") && lines[0].contains("expert 0") && lines[0].contains("95%"), "{}", lines[0]);
        let ungated =
            ModelConfig { architecture: Architecture::SharedBottom, ..Default::default() }.init(&schema, &device);
        assert!(expert_utilisation(&ungated, &table, &schema, &device, 2).unwrap().is_empty());
    }
}
