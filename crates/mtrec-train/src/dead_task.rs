//! A main task whose branch died: when every ReLU unit of a tower (or of what feeds it) is
//! inactive on nearly every row, the task learns only its output bias — its validation AUC sits at
//! ½ and its logloss is no better than a constant's at the label rate, validation after
//! validation, while the run looks healthy on its other tasks. STEM on census, seed 44, did this
//! under three balancers of the benchmark grid (AUC 0.49999 for 30 epochs); nothing said so.
//!
//! That branch was born dead: its tower (8 ReLU units on the experts' non-negative mixture) is
//! inactive on nearly every row from initialisation — the first validation's AUC is already
//! 0.5003 — and its validation logloss, read back as a constant logit, falls by 0.18 an epoch at
//! first (0.10 by epoch 13): Adam moving the output bias alone, by about `lr` a step. No gradient
//! of its own task reaches a dead unit; only the shared experts, moved by the other task, can
//! shift its input until a unit wakes — which happened under uncertainty and Aligned-MTL, not
//! under fixed weights, DB-MTL or CAGrad.
//!
//! The run warns once per task after [`DEAD_TASK_VALIDATIONS`] such validations in a row: AUC
//! within [`DEAD_TASK_AUC`] of ½ and logloss at or above the label entropy less
//! [`DEAD_HEAD_NATS`](crate::DEAD_HEAD_NATS) (the adversarial heads' rule).

use mtrec_data::{Schema, TaskKind};

use crate::TaskMetrics;

/// Validations in a row that look dead before the warning.
pub const DEAD_TASK_VALIDATIONS: usize = 3;

/// How close to ½ a dead task's validation AUC is.
pub const DEAD_TASK_AUC: f64 = 0.005;

/// Counts, for each binary main task, the validations in a row that look dead.
#[derive(Debug, Clone, Default)]
pub struct DeadTaskDetector {
    /// `(task index, validation label rate, validations in a row, warned)`.
    tasks: Vec<(usize, f64, usize, bool)>,
}

impl DeadTaskDetector {
    /// A detector for the binary main (not adversarial) tasks of `schema`, `rates` the validation
    /// label rate of every task.
    pub fn new(schema: &Schema, rates: &[f64]) -> Self {
        let tasks = (0..schema.n_tasks())
            .filter(|&t| schema.tasks[t].kind == TaskKind::Binary && !schema.tasks[t].adversarial)
            .map(|t| (t, rates[t], 0, false))
            .collect();
        Self { tasks }
    }

    /// Takes one validation's metrics (by task index); returns the tasks that have now looked dead
    /// for [`DEAD_TASK_VALIDATIONS`] validations in a row (once a task).
    pub fn update(&mut self, valid: &[TaskMetrics]) -> Vec<usize> {
        let mut fired = Vec::new();
        for (t, rate, count, warned) in &mut self.tasks {
            let Some(m) = valid.get(*t) else { continue };
            let (Some(&auc), Some(&logloss)) = (m.get("auc"), m.get("logloss")) else { continue };
            let constant = crate::DeadHeadDetector::label_entropy(*rate) - crate::DEAD_HEAD_NATS;
            let dead = (auc - 0.5).abs() < DEAD_TASK_AUC && logloss >= constant;
            *count = if dead { *count + 1 } else { 0 };
            if *count >= DEAD_TASK_VALIDATIONS && !*warned {
                *warned = true;
                fired.push(*t);
            }
        }
        fired
    }

    /// The warning for task `t`.
    pub fn warning(schema: &Schema, t: usize, epoch: usize) -> String {
        format!(
            "warning: epoch {epoch}: task `{}` looks dead: for {DEAD_TASK_VALIDATIONS} validations its AUC has been \
             within {DEAD_TASK_AUC} of 0.5 and its logloss no better than a constant at its label rate — its branch \
             (ReLU units inactive on nearly every row) learns only its output bias. Another seed, a balancer that \
             rescales the tasks (uncertainty), a smaller train.lr or model.batch_norm may train it",
            schema.tasks[t].name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::task_metrics;
    use mtrec_data::TaskSpec;

    /// A constant predictor (AUC ½, logloss at or above the label entropy) fires after three
    /// validations, once; a learning task and an adversarial one never do; a live validation
    /// resets the count.
    #[test]
    fn fires_once_on_a_constant_task_only() {
        let mut adversarial = TaskSpec::new("sex", TaskKind::Binary);
        adversarial.adversarial = true;
        let schema = Schema::new(
            vec![],
            vec![],
            vec![TaskSpec::new("dead", TaskKind::Binary), TaskSpec::new("live", TaskKind::Binary), adversarial],
        );
        let labels: Vec<f32> = (0..100).map(|i| (i % 4 == 0) as u8 as f32).collect();
        let constant = task_metrics(&schema.tasks[0], &vec![-2.0; 100], &labels);
        assert_eq!(constant["auc"], 0.5);
        let scores: Vec<f32> = labels.iter().enumerate().map(|(i, y)| y + (i % 3) as f32 * 0.1).collect();
        let live = task_metrics(&schema.tasks[1], &scores, &labels);
        let rate = 0.25;
        let mut d = DeadTaskDetector::new(&schema, &[rate, rate, rate]);
        assert!(constant["logloss"] > crate::DeadHeadDetector::label_entropy(rate), "logit −2 is off the rate");
        let all_dead = [constant.clone(), constant.clone(), constant.clone()];
        assert_eq!(d.update(&[constant.clone(), live.clone(), constant.clone()]), Vec::<usize>::new());
        assert_eq!(d.update(&[live.clone(), live.clone(), constant.clone()]), Vec::<usize>::new(), "reset");
        assert_eq!(d.update(&all_dead), Vec::<usize>::new());
        assert_eq!(d.update(&all_dead), Vec::<usize>::new());
        assert_eq!(d.update(&all_dead), vec![0, 1], "the adversarial head is the dead-head detector's");
        assert_eq!(d.update(&all_dead), Vec::<usize>::new(), "once a task");
        assert!(DeadTaskDetector::warning(&schema, 0, 7).contains("task `dead`"));
    }
}
