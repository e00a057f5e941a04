//! The experiment config: one TOML file with `[data]`, `[model]`, `[balance]` and `[train]`
//! sections. Unknown keys are errors that name the key; `--set section.key=value` overrides any
//! value before the file is checked.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use burn::{
    lr_scheduler::{
        LrSchedulerConfig,
        module_lr_scheduler::{ModuleLearningRate, ModuleLrSchedulerConfig},
    },
    module::ParamGroup,
};
use mtrec_balance::{BalanceConfig, BalanceContext, LossBalancer};
use mtrec_data::{CensusGroup, CensusIncome, MtlDataset, Schema, Synthetic, SyntheticConfig, TaskKind};
use mtrec_model::{ModelConfig, MultiTaskModel, MultiTaskNet};
use serde::{Deserialize, Serialize};

use crate::{DeviceChoice, TrainError};

/// A whole experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExperimentConfig {
    /// A name for the run (default output folder `runs/<name>`).
    pub name: String,
    /// Seed of parameter initialisation and batch order.
    pub seed: u64,
    /// Backend.
    pub device: DeviceChoice,
    /// The dataset.
    pub data: DataConfig,
    /// The architecture.
    pub model: ModelConfig,
    /// The loss-balancing method.
    pub balance: BalanceConfig,
    /// Optimisation and model selection.
    pub train: TrainConfig,
    /// Per-task options, `[tasks.<task name>]`.
    pub tasks: BTreeMap<String, TaskOptions>,
}

/// A `[tasks.<name>]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskOptions {
    /// Scale of the learning rate of the task's own parameters (its gate, tower and head).
    pub lr_scale: f64,
}

impl Default for TaskOptions {
    fn default() -> Self {
        Self { lr_scale: 1.0 }
    }
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        Self {
            name: "experiment".into(),
            seed: 42,
            device: DeviceChoice::Flex,
            data: DataConfig::default(),
            model: ModelConfig::default(),
            balance: BalanceConfig::default(),
            train: TrainConfig::default(),
            tasks: BTreeMap::new(),
        }
    }
}

/// Which dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    /// The MMoE paper's synthetic regression tasks (no download).
    #[default]
    Synthetic,
    /// UCI Census-Income (KDD) under the `census-mmoe` protocol.
    Census,
}

/// The `[data]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// `synthetic` or `census`.
    pub source: DataSource,
    /// Census: the folder holding `census-income.data.gz` and `census-income.test.gz`.
    pub dir: PathBuf,
    /// Census: `income` (group 1: income + never_married) or `college` (group 2).
    pub group: CensusGroup,
    /// Synthetic: the generator's parameters.
    pub synthetic: SyntheticConfig,
    /// Census: add an adversarial task, `"sex"` (removed from the inputs).
    pub adversarial: Option<String>,
    /// Turn the binary tasks into a funnel: task t's label is the AND of tasks 0..=t (ESMM, AITM).
    pub cascade: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            source: DataSource::Synthetic,
            dir: PathBuf::from("data/census-income"),
            group: CensusGroup::Income,
            synthetic: SyntheticConfig::default(),
            adversarial: None,
            cascade: false,
        }
    }
}

impl DataConfig {
    /// Loads (census) or generates (synthetic) the dataset.
    pub fn load(&self) -> Result<MtlDataset, TrainError> {
        let dataset = match self.source {
            DataSource::Census => {
                if !self.dir.join(mtrec_data::CENSUS_FILES[0].0).exists() {
                    return Err(TrainError::Config(format!(
                        "data.dir = {:?} has no {}: run `cargo xtask data census` or pass --data-dir",
                        self.dir,
                        mtrec_data::CENSUS_FILES[0].0
                    )));
                }
                let sex = match self.adversarial.as_deref() {
                    None => false,
                    Some("sex") => true,
                    Some(other) => {
                        return Err(TrainError::Config(format!(
                            "data.adversarial = {other:?}: the census data offers \"sex\""
                        )));
                    }
                };
                CensusIncome::new(&self.dir, self.group).with_adversarial_sex(sex).load()?
            }
            DataSource::Synthetic => {
                if let Some(a) = &self.adversarial {
                    return Err(TrainError::Config(format!("data.adversarial = {a:?}: synthetic data has none")));
                }
                Synthetic::new(self.synthetic.clone())?.generate()
            }
        };
        if self.cascade { Ok(dataset.into_cascade()?) } else { Ok(dataset) }
    }
}

/// The `[train]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Maximum number of epochs.
    pub epochs: usize,
    /// Training batch size.
    pub batch_size: usize,
    /// Batch size for evaluation.
    pub eval_batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// L2 weight decay added to the gradients (Adam, as PyTorch's `weight_decay`).
    pub weight_decay: f64,
    /// Adam's epsilon.
    pub adam_epsilon: f64,
    /// Model selection on the validation split.
    pub early_stopping: EarlyStoppingConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 50,
            batch_size: 1024,
            eval_batch_size: 8192,
            lr: 1e-3,
            weight_decay: 0.0,
            adam_epsilon: 1e-8,
            early_stopping: EarlyStoppingConfig::default(),
        }
    }
}

/// `[train.early_stopping]`: which validation metric selects the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EarlyStoppingConfig {
    /// `auc`, `logloss` (binary tasks), `mse` or `mae` (regression tasks).
    pub metric: String,
    /// A task name, or `mean` for the mean over the tasks that have the metric.
    pub task: String,
    /// Stop after this many epochs in a row without improvement (at least 1; to train every epoch,
    /// set it to `train.epochs`). The best epoch is selected either way.
    pub patience: usize,
    /// An epoch improves when it beats the best so far by more than this (≥ 0; 0: any strict
    /// improvement).
    pub min_delta: f64,
}

impl Default for EarlyStoppingConfig {
    fn default() -> Self {
        Self { metric: "auc".into(), task: "mean".into(), patience: 5, min_delta: 0.0 }
    }
}

impl TrainConfig {
    /// Adam with this section's epsilon and weight decay.
    pub fn optimizer(&self) -> burn::optim::ModuleOptimizer {
        let weight_decay =
            (self.weight_decay > 0.0).then(|| burn::optim::decay::WeightDecayConfig::new(self.weight_decay as f32));
        burn::optim::AdamConfig::new().with_epsilon(self.adam_epsilon as f32).with_weight_decay(weight_decay).init()
    }
}

impl EarlyStoppingConfig {
    /// Whether a larger value of the metric is better.
    pub fn higher_is_better(&self) -> bool {
        self.metric == "auc"
    }

    /// Indices of the tasks whose values are averaged into the monitored value.
    pub fn monitored_tasks(&self, schema: &Schema) -> Result<Vec<usize>, TrainError> {
        let kind = match self.metric.as_str() {
            "auc" | "logloss" => TaskKind::Binary,
            "mse" | "mae" => TaskKind::Regression,
            other => {
                return Err(TrainError::Config(format!(
                    "train.early_stopping.metric = {other:?}: expected auc, logloss, mse or mae"
                )));
            }
        };
        let tasks: Vec<usize> = if self.task == "mean" {
            (0..schema.n_tasks()).filter(|&t| schema.tasks[t].kind == kind && !schema.tasks[t].adversarial).collect()
        } else {
            let t = schema.task_index(&self.task).ok_or_else(|| {
                let names: Vec<&str> = schema.tasks.iter().map(|t| t.name.as_str()).collect();
                TrainError::Config(format!(
                    "train.early_stopping.task = {:?}: tasks are {names:?} or \"mean\"",
                    self.task
                ))
            })?;
            if schema.tasks[t].kind == kind { vec![t] } else { vec![] }
        };
        if tasks.is_empty() {
            return Err(TrainError::Config(format!(
                "train.early_stopping: no task {:?} has metric {:?}",
                self.task, self.metric
            )));
        }
        Ok(tasks)
    }
}

impl ExperimentConfig {
    /// Parses a TOML config, applies `section.key=value` overrides, and checks the values.
    ///
    /// `origin` names the text in error messages (usually the file path).
    pub fn from_toml(text: &str, origin: &str, overrides: &[String]) -> Result<Self, TrainError> {
        let bad = |e: toml::de::Error| TrainError::Config(format!("{origin}: {e}"));
        let config: Self = if overrides.is_empty() {
            toml::from_str(text).map_err(bad)?
        } else {
            let mut table: toml::Table = toml::from_str(text).map_err(bad)?;
            for o in overrides {
                apply_override(&mut table, o)?;
            }
            toml::Value::Table(table)
                .try_into::<Self>()
                .map_err(|e| TrainError::Config(format!("{origin} with --set {overrides:?}: {e}")))?
        };
        config.validate()?;
        Ok(config)
    }

    /// Reads a config file; see [`from_toml`](Self::from_toml).
    pub fn from_file(path: &Path, overrides: &[String]) -> Result<Self, TrainError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| TrainError::Io { path: path.to_path_buf(), source })?;
        Self::from_toml(&text, &path.display().to_string(), overrides)
    }

    /// Whether a checkpoint written under `other` can continue under `self`: everything equal but
    /// `train.epochs` (a resumed run may go on for longer) and `data.dir` (the data may have moved).
    pub fn same_run_as(&self, other: &Self) -> bool {
        let normalise = |c: &Self| {
            let mut c = c.clone();
            c.train.epochs = 1;
            c.data.dir = PathBuf::new();
            c
        };
        normalise(self) == normalise(other)
    }

    /// The config as TOML (what a run records as `config.toml`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("configs serialise")
    }

    /// Range checks that need no dataset; messages name the key.
    pub fn validate(&self) -> Result<(), TrainError> {
        let t = &self.train;
        let err = |m: &str| Err(TrainError::Config(m.into()));
        if t.epochs == 0 {
            return err("train.epochs must be at least 1");
        }
        if t.batch_size == 0 || t.eval_batch_size == 0 {
            return err("train.batch_size and train.eval_batch_size must be positive");
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            return err("train.lr must be a positive number");
        }
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
            return err("train.weight_decay must be ≥ 0");
        }
        if !(t.adam_epsilon.is_finite() && t.adam_epsilon > 0.0) {
            return err("train.adam_epsilon must be positive");
        }
        let es = &t.early_stopping;
        if es.patience == 0 {
            return err(
                "train.early_stopping.patience must be at least 1 (epochs in a row without improvement before \
                 stopping); to train every epoch, set it to train.epochs",
            );
        }
        if !(es.min_delta.is_finite() && es.min_delta >= 0.0) {
            return Err(TrainError::Config(format!(
                "train.early_stopping.min_delta must be ≥ 0 (a negative one would count worse epochs as \
                 improvements), got {}",
                es.min_delta
            )));
        }
        if let Some((name, o)) = self.tasks.iter().find(|(_, o)| !(o.lr_scale.is_finite() && o.lr_scale > 0.0)) {
            return Err(TrainError::Config(format!("tasks.{name}.lr_scale must be positive, got {}", o.lr_scale)));
        }
        self.model.validate().map_err(TrainError::Config)
    }

    /// The model of `[model]` for a dataset's schema, on `device`; the schema is checked first.
    pub fn build_model(&self, schema: &Schema, device: &burn::tensor::Device) -> Result<MultiTaskNet, TrainError> {
        self.model.check_schema(schema).map_err(TrainError::Config)?;
        Ok(self.model.init(schema, device))
    }

    /// Checks the architecture against the dataset's labels: ESMM and AITM model the steps of a
    /// funnel, so a later step must never be positive where the earlier one is not (on the
    /// training rows); the error counts the rows that break it and points to `data.cascade`.
    pub fn check_dataset(&self, dataset: &MtlDataset) -> Result<(), TrainError> {
        if !self.model.needs_funnel() {
            return Ok(());
        }
        let schema = &dataset.schema;
        let steps: Vec<usize> = (0..schema.n_tasks()).filter(|&t| !schema.tasks[t].adversarial).collect();
        let Some(v) = dataset.train.funnel_violation(&steps, schema.n_tasks()) else { return Ok(()) };
        let name = |t: usize| schema.tasks[t].name.as_str();
        Err(TrainError::Config(format!(
            "model.architecture = {:?} needs funnel labels (a step positive only where the step before it is), but \
             task `{}` is 1 where `{}` is 0 on {} of {} training rows (first: row {}); set data.cascade = true to \
             train on the funnel of the tasks, or choose another architecture",
            self.model.architecture.name(),
            name(v.task),
            name(v.previous),
            v.rows,
            dataset.train.n_rows,
            v.first_row
        )))
    }

    /// The balancer of `[balance]` for a dataset's tasks.
    pub fn balancer(&self, schema: &Schema) -> Result<Box<dyn LossBalancer>, TrainError> {
        let names = schema.tasks.iter().map(|t| t.name.clone()).collect();
        let ctx = BalanceContext { names, kinds: schema.task_kinds(), lr: self.train.lr, seed: self.seed };
        self.balance.init(&ctx).map_err(TrainError::Config)
    }

    /// The learning rate of every parameter: `train.lr`, times `tasks.<name>.lr_scale` for each
    /// task's own parameters. Unknown task names are errors naming the key.
    pub fn learning_rates(
        &self,
        schema: &Schema,
        model: &impl MultiTaskModel,
    ) -> Result<ModuleLearningRate, TrainError> {
        let mut policy = ModuleLrSchedulerConfig::new(LrSchedulerConfig::Constant(self.train.lr));
        for (name, options) in &self.tasks {
            let task = schema.task_index(name).ok_or_else(|| {
                let names: Vec<&str> = schema.tasks.iter().map(|t| t.name.as_str()).collect();
                TrainError::Config(format!("tasks.{name}: no task of that name (tasks: {})", names.join(", ")))
            })?;
            let group: ParamGroup = model.task_parameters(task);
            policy = policy.with_group(group, LrSchedulerConfig::Constant(self.train.lr * options.lr_scale));
        }
        Ok(policy.init().map_err(TrainError::Config)?.step())
    }
}

/// Sets `a.b.c = value` in `table`; the value is read as TOML (`3`, `1e-3`, `true`, `[16, 8]`,
/// `"mmoe"`) and otherwise taken as a bare string (`mmoe`).
fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<(), TrainError> {
    let (path, raw) = assignment
        .split_once('=')
        .ok_or_else(|| TrainError::Config(format!("--set {assignment:?}: expected section.key=value")))?;
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.trim().to_string()));
    let keys: Vec<&str> = path.trim().split('.').collect();
    let (last, parents) = keys.split_last().expect("split yields one item");
    let mut node = table;
    for key in parents {
        node = node
            .entry(key.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| TrainError::Config(format!("--set {assignment:?}: {key} is not a section")))?;
    }
    node.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = ExperimentConfig::from_toml("[train]\nlearning_rate = 0.1\n", "x.toml", &[]).unwrap_err().to_string();
        assert!(err.contains("x.toml") && err.contains("learning_rate"), "{err}");
        let err = ExperimentConfig::from_toml("[modle]\n", "x.toml", &[]).unwrap_err().to_string();
        assert!(err.contains("modle"), "{err}");
    }

    #[test]
    fn overrides_apply_and_are_checked() {
        let sets = [
            "train.lr=0.01".to_string(),
            "model.architecture=shared_bottom".into(),
            "model.tower_hidden=[4, 2]".into(),
        ];
        let c = ExperimentConfig::from_toml("[train]\nlr = 0.1\n", "x.toml", &sets).unwrap();
        assert_eq!(c.train.lr, 0.01);
        assert_eq!(c.model.architecture, mtrec_model::Architecture::SharedBottom);
        assert_eq!(c.model.tower_hidden, vec![4, 2]);
        let err = ExperimentConfig::from_toml("", "x.toml", &["train.lrr=1".into()]).unwrap_err().to_string();
        assert!(err.contains("lrr"), "{err}");
        let err = ExperimentConfig::from_toml("", "x.toml", &["train.epochs=0".into()]).unwrap_err().to_string();
        assert!(err.contains("train.epochs"), "{err}");
    }

    /// `patience = 0` used to train exactly one epoch; a negative `min_delta` counted worse epochs
    /// as improvements. Both are refused, naming the key.
    #[test]
    fn early_stopping_patience_and_min_delta_are_validated() {
        let err = ExperimentConfig::from_toml("[train.early_stopping]\npatience = 0\n", "x.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("train.early_stopping.patience"), "{err}");
        let err = ExperimentConfig::from_toml("[train.early_stopping]\nmin_delta = -0.01\n", "x.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("train.early_stopping.min_delta"), "{err}");
        let ok = "[train.early_stopping]\npatience = 1\nmin_delta = 0.001\n";
        assert!(ExperimentConfig::from_toml(ok, "x.toml", &[]).is_ok());
    }

    /// The options added from the papers parse, and belong to their methods.
    #[test]
    fn paper_options_parse() {
        let c = ExperimentConfig::from_toml(
            "[model]\nadversarial_schedule = \"dann\"\n[balance]\nmethod = \"mgda\"\nmgda_normalization = \"loss+\"\n",
            "x.toml",
            &[],
        )
        .unwrap();
        assert_eq!(c.model.adversarial_schedule, mtrec_model::AdversarialSchedule::Dann);
        assert_eq!(c.balance.mgda_normalization, Some(mtrec_balance::MgdaNormalization::LossPlus));
        let c = ExperimentConfig::from_toml("[balance]\nmethod = \"cagrad\"\ncagrad_scale = \"mean\"\n", "x", &[])
            .unwrap();
        assert_eq!(c.balance.cagrad_scale, Some(mtrec_balance::CaGradScale::Mean));
    }

    #[test]
    fn round_trips_through_toml() {
        let c = ExperimentConfig::default();
        assert_eq!(ExperimentConfig::from_toml(&c.to_toml(), "rt", &[]).unwrap(), c);
    }

    #[test]
    fn shipped_configs_parse() {
        let manifest = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
        let dir = Path::new(&manifest).join("../../configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                ExperimentConfig::from_file(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 3, "expected the shipped configs in {}", dir.display());
    }
}
