//! A model's predictions of every row of a scored table, written as CSV (`cargo xtask eval RUN_DIR
//! --file F --predictions OUT.csv`): what a researcher takes to another tool, a ranking or a
//! submission. One record a row of the file, in the file's order.

use std::{collections::HashMap, path::Path};

use mtrec_data::{LabelTransform, Schema, TaskColumn, TaskKind};

use crate::TrainError;

/// The classes of a table's multiclass tasks as their labels read (`classes = [...]`, in class
/// order), by task name; a task declared with `n_classes = N` has none (its classes are `0..N`).
pub fn class_names(tasks: &[TaskColumn]) -> HashMap<String, Vec<String>> {
    let declared = tasks.iter().filter(|t| t.kind == TaskKind::Multiclass && !t.classes.is_empty());
    declared.map(|t| (t.name.clone(), t.classes.iter().map(|c| c.as_text()).collect())).collect()
}

/// The CSV columns of the predictions of `schema`'s tasks: `row`, then a binary task's
/// probability `<task>`, a regression task's value `<task>` in the label's units, a multiclass
/// task's probability of each class `<task>=<class>` in class order (`class_names`' values,
/// else the class ids `0…k−1`).
pub fn prediction_columns(schema: &Schema, class_names: &HashMap<String, Vec<String>>) -> Vec<String> {
    let mut columns = vec!["row".to_string()];
    for task in &schema.tasks {
        match (task.kind, class_names.get(&task.name).filter(|n| n.len() == task.n_classes)) {
            (TaskKind::Multiclass, Some(names)) => columns.extend(names.iter().map(|c| format!("{}={c}", task.name))),
            (TaskKind::Multiclass, None) => columns.extend((0..task.n_classes).map(|c| format!("{}={c}", task.name))),
            _ => columns.push(task.name.clone()),
        }
    }
    columns
}

/// One row's predictions from the model's `outputs` (a vector a task, row-major, as
/// evaluation collects them: logits and values): a binary task's logit as its probability
/// (sigmoid), a regression's value (a `log1p` one back in the label's units, `expm1`), a
/// multiclass task's logits as softmax probabilities.
pub fn prediction_row(schema: &Schema, outputs: &[Vec<f32>], row: usize) -> Vec<f64> {
    let mut values = Vec::new();
    for (task, out) in schema.tasks.iter().zip(outputs) {
        let width = task.output_dim();
        let own = &out[row * width..(row + 1) * width];
        match task.kind {
            TaskKind::Multiclass => {
                let max = own.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let exp: Vec<f64> = own.iter().map(|&z| (z as f64 - max).exp()).collect();
                let sum: f64 = exp.iter().sum();
                values.extend(exp.iter().map(|e| e / sum));
            }
            TaskKind::Regression if task.label_transform == LabelTransform::Log1p => {
                values.push((own[0] as f64).exp_m1());
            }
            TaskKind::Binary => values.push(1.0 / (1.0 + (-(own[0] as f64)).exp())),
            TaskKind::Regression => values.push(own[0] as f64),
        }
    }
    values
}

/// Writes the predictions of every row to `path` as CSV ([`prediction_columns`],
/// [`prediction_row`]); returns the number of rows.
pub fn write_predictions(
    path: &Path,
    schema: &Schema,
    outputs: &[Vec<f32>],
    class_names: &HashMap<String, Vec<String>>,
) -> Result<usize, TrainError> {
    let io = |e: std::io::Error| TrainError::Io { path: path.to_path_buf(), source: e };
    let rows = match (schema.tasks.first(), outputs.first()) {
        (Some(task), Some(out)) => out.len() / task.output_dim(),
        _ => 0,
    };
    let mut writer = csv::Writer::from_path(path).map_err(|e| io(e.into()))?;
    writer.write_record(prediction_columns(schema, class_names)).map_err(|e| io(e.into()))?;
    for row in 0..rows {
        let values = prediction_row(schema, outputs, row);
        let record = std::iter::once(row.to_string()).chain(values.iter().map(|v| v.to_string()));
        writer.write_record(record).map_err(|e| io(e.into()))?;
    }
    writer.flush().map_err(io)?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use mtrec_data::TaskSpec;

    use super::*;

    /// By hand: a binary logit ln 4 → probability 0.8; a log1p regression's 0.6931… back to 1;
    /// logits (0, ln 3) → probabilities (0.25, 0.75).
    #[test]
    fn each_kind_of_task_is_written_in_its_own_units() {
        let mut rating = TaskSpec::new("watch", TaskKind::Regression);
        rating.label_transform = LabelTransform::Log1p;
        let schema = Schema {
            categorical: vec![],
            multi_categorical: vec![],
            dense: vec![],
            text: vec![],
            tasks: vec![TaskSpec::new("click", TaskKind::Binary), rating, TaskSpec::multiclass("stars", 2)],
            funnel: false,
            shared_tables: vec![],
        };
        let outputs = vec![vec![4f32.ln(), 0.0], vec![std::f32::consts::LN_2, 0.0], vec![0.0, 3f32.ln(), 1.0, 1.0]];
        let none = HashMap::new();
        assert_eq!(prediction_columns(&schema, &none), ["row", "click", "watch", "stars=0", "stars=1"]);
        let named = HashMap::from([("stars".to_string(), vec!["low".to_string(), "high".to_string()])]);
        assert_eq!(prediction_columns(&schema, &named), ["row", "click", "watch", "stars=low", "stars=high"]);
        let row = prediction_row(&schema, &outputs, 0);
        let want = [0.8, 1.0, 0.25, 0.75];
        assert!(row.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{row:?}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.csv");
        assert_eq!(write_predictions(&path, &schema, &outputs, &named).unwrap(), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "row,click,watch,stars=low,stars=high");
        assert_eq!(lines[2], "1,0.5,0,0.5,0.5");
    }
}
