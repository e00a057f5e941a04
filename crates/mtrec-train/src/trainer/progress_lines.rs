//! The console lines of a run: an epoch's, a validation's within an epoch.

use std::collections::BTreeMap;

use crate::{EpochRecord, TaskMetrics, WithinEpochValidation};

/// `task metric value` for each task's validation: the monitored metric, else its first.
pub(super) fn valid_line(valid: &BTreeMap<String, TaskMetrics>, metric: &str) -> String {
    let valid: Vec<String> = valid
        .iter()
        .map(|(t, m)| {
            let (name, v) =
                m.get_key_value(metric).or_else(|| m.iter().next()).map_or(("-", f64::NAN), |(k, v)| (k.as_str(), *v));
            format!("{t} {name} {v:.4}")
        })
        .collect();
    valid.join(", ")
}

/// The line printed after an epoch: its losses, validation, time, speed, and whether it is the best.
pub(super) fn epoch_line(r: &EpochRecord, epochs: usize, metric: &str) -> String {
    let losses: Vec<String> = r.train_loss.iter().map(|(t, v)| format!("{t} {v:.4}")).collect();
    format!(
        "epoch {:>3}/{epochs}  train loss: {}  valid: {}  {:.1}s  {:.0} samples/s{}",
        r.epoch,
        losses.join(", "),
        valid_line(&r.valid, metric),
        r.seconds,
        r.samples_per_sec,
        if r.best { "  *best" } else { "" }
    )
}

/// The line printed after a validation within an epoch.
pub(super) fn within_epoch_line(v: &WithinEpochValidation, metric: &str) -> String {
    format!(
        "  after {:.2} epochs ({} batches)  valid: {}{}",
        v.epochs,
        v.batches,
        valid_line(&v.valid, metric),
        if v.best { "  *best" } else { "" }
    )
}
