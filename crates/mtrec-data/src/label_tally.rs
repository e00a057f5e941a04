//! Per-task label statistics of a split, over the rows each label is present on (a task with its
//! own sample space has absent labels, `NaN`, elsewhere): binary rate, regression mean, multiclass
//! class shares, and how many rows hold a label. One tally for tables in memory and streamed ones.

use crate::{TaskKind, TaskSpec};

/// Label sums (per class for multiclass tasks) and labelled-row counts, accumulated row by row.
#[derive(Debug, Clone, Default)]
pub(crate) struct LabelTally {
    kinds: Vec<(TaskKind, usize)>,
    sums: Vec<Vec<f64>>,
    labelled: Vec<usize>,
    rows: usize,
}

impl LabelTally {
    /// An empty tally for `tasks`.
    pub(crate) fn new(tasks: &[TaskSpec]) -> Self {
        Self {
            kinds: tasks.iter().map(|t| (t.kind, t.n_classes)).collect(),
            sums: tasks
                .iter()
                .map(|t| vec![0.0; if t.kind == TaskKind::Multiclass { t.n_classes } else { 1 }])
                .collect(),
            labelled: vec![0; tasks.len()],
            rows: 0,
        }
    }

    /// Adds row-major labels (`[rows, T]`, `NaN` = absent).
    pub(crate) fn add(&mut self, labels: &[f32]) {
        let n_tasks = self.kinds.len();
        for row in labels.chunks_exact(n_tasks.max(1)) {
            for (t, &y) in row.iter().enumerate() {
                if y.is_nan() {
                    continue;
                }
                self.labelled[t] += 1;
                match self.kinds[t] {
                    (TaskKind::Multiclass, n) if (y as usize) < n => self.sums[t][y as usize] += 1.0,
                    (TaskKind::Multiclass, _) => {}
                    _ => self.sums[t][0] += y as f64,
                }
            }
            self.rows += 1;
        }
    }

    /// Per task: binary rate / regression mean / multiclass class shares, over its labelled rows.
    pub(crate) fn rates(&self) -> Vec<Vec<f64>> {
        self.sums.iter().zip(&self.labelled).map(|(s, &n)| s.iter().map(|v| v / n.max(1) as f64).collect()).collect()
    }

    /// `(task, labelled rows)` of the tasks whose label is absent somewhere (empty when every
    /// label is present: a rectangular table's statistics stay as they were).
    pub(crate) fn partial(&self, tasks: &[TaskSpec]) -> Vec<(String, usize)> {
        tasks.iter().zip(&self.labelled).filter(|(_, n)| **n < self.rows).map(|(t, n)| (t.name.clone(), *n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rates by hand over the labelled rows only, four rows: click (1, 0, 1) present, rating (4, 2),
    /// stars (0, 2, 2).
    #[test]
    fn rates_count_only_labelled_rows() {
        let tasks = [
            TaskSpec::new("click", TaskKind::Binary),
            TaskSpec::new("rating", TaskKind::Regression),
            TaskSpec::multiclass("stars", 3),
        ];
        let mut tally = LabelTally::new(&tasks);
        let nan = f32::NAN;
        tally.add(&[1.0, 4.0, 0.0, nan, nan, 2.0]);
        tally.add(&[0.0, 2.0, 2.0, 1.0, nan, nan]);
        assert_eq!((tally.rows, tally.labelled.as_slice()), (4, &[3, 2, 3][..]));
        let rates = tally.rates();
        assert_eq!(rates[0], vec![2.0 / 3.0]);
        assert_eq!(rates[1], vec![3.0]);
        assert_eq!(rates[2], vec![1.0 / 3.0, 0.0, 2.0 / 3.0]);
        let partial = tally.partial(&tasks);
        assert_eq!(partial, vec![("click".to_string(), 3), ("rating".to_string(), 2), ("stars".to_string(), 3)]);
        let mut full = LabelTally::new(&tasks[..1]);
        full.add(&[1.0, 0.0]);
        assert!(full.partial(&tasks[..1]).is_empty(), "a rectangular table reports no labelled counts");
    }
}
