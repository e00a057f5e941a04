//! Warnings about tasks that stopped learning: an adversarial head gone dead, a main task whose
//! predictions went constant. The run prints them and its summary keeps them.

use mtrec_data::Schema;
use mtrec_model::MultiTaskModule;

use super::LoopState;
use crate::TaskMetrics;

/// Feeds one epoch's validation metrics (by task index) to the dead-head detector; returns the
/// tasks whose head it found dead with their warnings, which the summary keeps.
pub(super) fn dead_head_warnings<C: MultiTaskModule>(
    state: &mut LoopState<C>,
    schema: &Schema,
    epoch: usize,
    valid: &[TaskMetrics],
) -> Vec<(usize, String)> {
    let fired = state.dead_heads.update(valid);
    let warnings: Vec<(usize, String)> = fired
        .into_iter()
        .map(|t| {
            let name = &schema.tasks[t].name;
            let warning = format!(
                "warning: epoch {epoch}: the adversarial head `{name}` is dead: its validation logloss has been within \
                 {} nats of its label entropy (a constant output, no reversed gradient) for {} validations; try \
                 model.adversary_restart, a larger tasks.{name}.lr_scale, model.adversary_steps, \
                 model.adversary_hidden or a smaller λ",
                crate::DEAD_HEAD_NATS,
                crate::DEAD_HEAD_EPOCHS,
            );
            (t, warning)
        })
        .collect();
    state.warnings.extend(warnings.iter().map(|(_, w)| w.clone()));
    warnings
}

/// Warnings for main tasks whose predictions went constant ([`crate::dead_task`]), kept with the
/// run's warnings.
pub(super) fn dead_task_warnings<C: MultiTaskModule>(
    state: &mut LoopState<C>,
    schema: &Schema,
    epoch: usize,
    valid: &[TaskMetrics],
) -> Vec<String> {
    let warnings: Vec<String> = state
        .dead_tasks
        .update(valid)
        .into_iter()
        .map(|t| crate::dead_task::DeadTaskDetector::warning(schema, t, epoch))
        .collect();
    state.warnings.extend(warnings.iter().cloned());
    warnings
}
