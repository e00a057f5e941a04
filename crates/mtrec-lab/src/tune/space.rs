//! A search space: which config keys a study varies, over what ranges, and the validation value it
//! optimises. Written in TOML beside the config:
//!
//! ```toml
//! [objective]                 # optional: default the config's train.early_stopping metric and task
//! metric = "auc"
//! task = "mean"
//!
//! [params]                    # any key `--set` takes; one distribution each
//! "train.lr" = { log_uniform = [1e-4, 1e-2] }
//! "model.dropout" = { uniform = [0.0, 0.3] }
//! "model.n_experts" = { int = [4, 16] }
//! "train.batch_size" = { int = [256, 4096], log = true }
//! "model.expert_hidden" = { choice = [[16], [32], [64, 32]] }
//! ```
//!
//! The objective is always a validation value (the monitored value of the model selected on
//! validation, as `train.early_stopping` computes it): the study sets `train.early_stopping` to it,
//! so selection within a trial and across trials agree. Every key is checked against the config
//! when the space is read (each bound and each choice applied as `--set` must give a valid config),
//! so a typo fails before any training, naming the file and the key.

use std::path::Path;

use rand::{Rng, SeedableRng, rngs::StdRng};

use mtrec_train::{ExperimentConfig, TrainError};

/// How one key is drawn.
#[derive(Debug, Clone, PartialEq)]
pub enum Distribution {
    /// A float uniform in `[low, high]`.
    Uniform {
        /// Lower bound.
        low: f64,
        /// Upper bound (> low).
        high: f64,
    },
    /// A float whose logarithm is uniform in `[ln low, ln high]` (`0 < low < high`).
    LogUniform {
        /// Lower bound (> 0).
        low: f64,
        /// Upper bound (> low).
        high: f64,
    },
    /// An integer uniform in `[low, high]` (both included), or log-uniform with `log = true`.
    Int {
        /// Lower bound.
        low: i64,
        /// Upper bound (≥ low).
        high: i64,
        /// Draw the logarithm uniformly (`low ≥ 1`).
        log: bool,
    },
    /// One of the listed TOML values (numbers, strings, booleans or arrays), each equally likely.
    Choice(Vec<toml::Value>),
}

/// One key of the space.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// The config key, as `--set` names it (`train.lr`, `model.expert_hidden`).
    pub key: String,
    /// How it is drawn.
    pub distribution: Distribution,
}

/// What a study optimises: a validation value, as `train.early_stopping` monitors it.
#[derive(Debug, Clone, PartialEq)]
pub struct Objective {
    /// `auc`, `gauc`, `logloss`, `mse`, `mae`, …
    pub metric: String,
    /// A task name, or `mean` over the tasks that have the metric.
    pub task: String,
}

impl Objective {
    /// Whether larger is better ([`mtrec_train::higher_is_better`]).
    pub fn maximise(&self) -> bool {
        mtrec_train::higher_is_better(&self.metric)
    }

    /// The `--set` overrides that make a run select its model on this objective.
    pub fn sets(&self) -> Vec<String> {
        vec![
            format!("train.early_stopping.metric={}", toml::Value::String(self.metric.clone())),
            format!("train.early_stopping.task={}", toml::Value::String(self.task.clone())),
        ]
    }
}

/// A search space over config keys, with its objective.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchSpace {
    /// The keys, in key order (as TOML tables are read).
    pub params: Vec<Param>,
    /// What the study optimises.
    pub objective: Objective,
}

/// One drawn point: `(key, value)` per parameter, in the space's (key) order.
pub type Point = Vec<(String, toml::Value)>;

/// `--set` assignments for a point.
pub fn point_sets(point: &Point) -> Vec<String> {
    point.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

impl SearchSpace {
    /// Reads a space file and checks every key against `config` (the config file the study runs,
    /// with the study's other `--set` overrides): errors name the file and the key.
    pub fn from_file(path: &Path, config: &Path, sets: &[String]) -> Result<Self, TrainError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| TrainError::Io { path: path.to_path_buf(), source })?;
        let base = ExperimentConfig::from_file(config, sets)?;
        Self::parse(
            &text,
            &path.display().to_string(),
            |extra| {
                let mut all = sets.to_vec();
                all.extend_from_slice(extra);
                ExperimentConfig::from_file(config, &all).map(|_| ())
            },
            &base,
        )
    }

    /// Parses a space from TOML text; `check` tries a list of `--set` overrides on the study's
    /// config; `base` gives the default objective. `origin` names the text in errors.
    pub fn parse(
        text: &str,
        origin: &str,
        check: impl Fn(&[String]) -> Result<(), TrainError>,
        base: &ExperimentConfig,
    ) -> Result<Self, TrainError> {
        let bad = |m: String| TrainError::Config(format!("{origin}: {m}"));
        let table: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        for key in table.keys() {
            if key != "params" && key != "objective" {
                return Err(bad(format!("unknown section `{key}` (a space has [objective] and [params])")));
            }
        }
        let es = &base.train.early_stopping;
        let mut objective = Objective { metric: es.metric.clone(), task: es.task.clone() };
        if let Some(o) = table.get("objective") {
            let o = o.as_table().ok_or_else(|| bad("[objective] must be a table".into()))?;
            for (k, v) in o {
                let s = v.as_str().ok_or_else(|| bad(format!("objective.{k} must be a string")))?.to_string();
                match k.as_str() {
                    "metric" => objective.metric = s,
                    "task" => objective.task = s,
                    _ => return Err(bad(format!("objective.{k}: unknown key (metric, task)"))),
                }
            }
        }
        check(&objective.sets()).map_err(|e| bad(format!("[objective]: {e}")))?;
        let params = table
            .get("params")
            .and_then(toml::Value::as_table)
            .ok_or_else(|| bad("no [params]: name at least one key to search".into()))?;
        if params.is_empty() {
            return Err(bad("[params] is empty: name at least one key to search".into()));
        }
        let mut out = Vec::new();
        for (key, spec) in params {
            let at = |m: String| bad(format!("params.\"{key}\": {m}"));
            let distribution = parse_distribution(spec).map_err(&at)?;
            // every bound and choice must make a valid config (unknown keys, wrong types, ranges)
            for value in distribution.probes() {
                check(&[format!("{key}={value}")]).map_err(|e| at(format!("{value} does not fit the config: {e}")))?;
            }
            out.push(Param { key: key.clone(), distribution });
        }
        Ok(Self { params: out, objective })
    }

    /// Trial `number`'s point: drawn from a generator seeded by `(seed, number)` alone, so a
    /// resumed study draws every trial as it did.
    pub fn sample(&self, seed: u64, number: usize) -> Point {
        let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(number as u64));
        self.params.iter().map(|p| (p.key.clone(), p.distribution.draw(&mut rng))).collect()
    }
}

fn pair_f64(v: &toml::Value) -> Result<(f64, f64), String> {
    let a = v.as_array().filter(|a| a.len() == 2).ok_or("expects [low, high]")?;
    let num = |x: &toml::Value| x.as_float().or_else(|| x.as_integer().map(|i| i as f64)).ok_or("bounds are numbers");
    Ok((num(&a[0])?, num(&a[1])?))
}

fn parse_distribution(spec: &toml::Value) -> Result<Distribution, String> {
    let t = spec.as_table().ok_or("expects an inline table, e.g. { uniform = [0.0, 1.0] }")?;
    let log = match t.get("log") {
        None => false,
        Some(v) => v.as_bool().ok_or("`log` is true or false")?,
    };
    let kinds: Vec<&String> = t.keys().filter(|k| *k != "log").collect();
    let [kind] = kinds.as_slice() else {
        return Err(format!("name one distribution (uniform, log_uniform, int, choice); found {kinds:?}"));
    };
    let value = &t[kind.as_str()];
    if log && kind.as_str() != "int" {
        return Err("`log = true` goes with `int` (floats: log_uniform)".into());
    }
    let d = match kind.as_str() {
        "uniform" => {
            let (low, high) = pair_f64(value)?;
            if !(low.is_finite() && high.is_finite() && low < high) {
                return Err(format!("uniform needs finite low < high, got [{low}, {high}]"));
            }
            Distribution::Uniform { low, high }
        }
        "log_uniform" => {
            let (low, high) = pair_f64(value)?;
            if !(low > 0.0 && high.is_finite() && low < high) {
                return Err(format!("log_uniform needs 0 < low < high, got [{low}, {high}]"));
            }
            Distribution::LogUniform { low, high }
        }
        "int" => {
            let a = value.as_array().filter(|a| a.len() == 2).ok_or("int expects [low, high]")?;
            let (Some(low), Some(high)) = (a[0].as_integer(), a[1].as_integer()) else {
                return Err("int bounds are integers".into());
            };
            if low > high {
                return Err(format!("int needs low ≤ high, got [{low}, {high}]"));
            }
            if log && low < 1 {
                return Err(format!("int with log = true needs low ≥ 1, got {low}"));
            }
            Distribution::Int { low, high, log }
        }
        "choice" => {
            let values = value.as_array().filter(|a| !a.is_empty()).ok_or("choice expects a non-empty list")?;
            Distribution::Choice(values.clone())
        }
        other => return Err(format!("unknown distribution `{other}` (uniform, log_uniform, int, choice)")),
    };
    Ok(d)
}

impl Distribution {
    /// The values a space check applies: the bounds, or every choice.
    fn probes(&self) -> Vec<toml::Value> {
        match self {
            Self::Uniform { low, high } | Self::LogUniform { low, high } => {
                vec![toml::Value::Float(*low), toml::Value::Float(*high)]
            }
            Self::Int { low, high, .. } => vec![toml::Value::Integer(*low), toml::Value::Integer(*high)],
            Self::Choice(values) => values.clone(),
        }
    }

    /// One draw.
    pub fn draw(&self, rng: &mut impl Rng) -> toml::Value {
        match self {
            Self::Uniform { low, high } => toml::Value::Float(rng.random_range(*low..=*high)),
            Self::LogUniform { low, high } => toml::Value::Float(rng.random_range(low.ln()..=high.ln()).exp()),
            Self::Int { low, high, log: false } => toml::Value::Integer(rng.random_range(*low..=*high)),
            Self::Int { low, high, log: true } => {
                // uniform in log over [low − ½, high + ½), rounded: each integer gets its share
                let (a, b) = ((*low as f64 - 0.5).max(0.5).ln(), (*high as f64 + 0.5).ln());
                let v = rng.random_range(a..b).exp().round() as i64;
                toml::Value::Integer(v.clamp(*low, *high))
            }
            Self::Choice(values) => values[rng.random_range(0..values.len())].clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ExperimentConfig {
        ExperimentConfig::default()
    }

    /// The check a study runs: each override on the default config.
    fn check(sets: &[String]) -> Result<(), TrainError> {
        ExperimentConfig::from_toml("", "config", sets).map(|_| ())
    }

    fn parse(text: &str) -> Result<SearchSpace, TrainError> {
        SearchSpace::parse(text, "space.toml", check, &base())
    }

    #[test]
    fn reads_every_distribution_and_the_objective() {
        let space = parse(
            r#"
            [objective]
            metric = "mse"
            task = "task1"
            [params]
            "train.lr" = { log_uniform = [1e-4, 1e-2] }
            "model.dropout" = { uniform = [0, 0.5] }
            "model.n_experts" = { int = [2, 8] }
            "train.batch_size" = { int = [64, 4096], log = true }
            "model.expert_hidden" = { choice = [[16], [32, 16]] }
            "#,
        )
        .unwrap();
        assert_eq!(space.objective, Objective { metric: "mse".into(), task: "task1".into() });
        assert!(!space.objective.maximise());
        let keys: Vec<&str> = space.params.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["model.dropout", "model.expert_hidden", "model.n_experts", "train.batch_size", "train.lr"]);
        assert_eq!(space.params[0].distribution, Distribution::Uniform { low: 0.0, high: 0.5 });
        assert_eq!(space.params[3].distribution, Distribution::Int { low: 64, high: 4096, log: true });
        assert_eq!(space.params[4].distribution, Distribution::LogUniform { low: 1e-4, high: 1e-2 });
        // a drawn point is a config: every draw applies
        for n in 0..20 {
            let point = space.sample(7, n);
            check(&point_sets(&point)).unwrap();
            assert_eq!(point, space.sample(7, n), "trial {n} is drawn the same every time");
        }
        assert_ne!(space.sample(7, 0), space.sample(7, 1));
        assert_ne!(space.sample(7, 0), space.sample(8, 0));
        // without [objective]: the config's own early-stopping metric and task
        let plain = parse("[params]\n\"train.lr\" = { uniform = [0.001, 0.01] }").unwrap();
        assert_eq!(plain.objective, Objective { metric: "auc".into(), task: "mean".into() });
    }

    /// Every shipped space (`configs/spaces/<config>.toml`) reads against its config.
    #[test]
    fn shipped_spaces_read_against_their_configs() {
        let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut n = 0;
        for entry in std::fs::read_dir(configs.join("spaces")).unwrap() {
            let space = entry.unwrap().path();
            let config = configs.join(space.file_name().unwrap());
            let read = SearchSpace::from_file(&space, &config, &[]).unwrap_or_else(|e| panic!("{e}"));
            assert!(!read.params.is_empty());
            n += 1;
        }
        assert!(n >= 2, "the shipped spaces");
    }

    #[test]
    fn draws_stay_in_range_and_cover_it() {
        let mut rng = StdRng::seed_from_u64(1);
        let d = Distribution::LogUniform { low: 1e-4, high: 1e-2 };
        let draws: Vec<f64> = (0..2000).map(|_| d.draw(&mut rng).as_float().unwrap()).collect();
        assert!(draws.iter().all(|&x| (1e-4..=1e-2).contains(&x)));
        // log-uniform: half the draws below the geometric mean 1e-3
        let below = draws.iter().filter(|&&x| x < 1e-3).count() as f64 / 2000.0;
        assert!((below - 0.5).abs() < 0.05, "{below}");
        let d = Distribution::Int { low: 2, high: 4, log: false };
        let mut seen = [0; 3];
        (0..300).for_each(|_| seen[(d.draw(&mut rng).as_integer().unwrap() - 2) as usize] += 1);
        assert!(seen.iter().all(|&n| n > 60), "{seen:?}");
        let d = Distribution::Int { low: 1, high: 1000, log: true };
        let draws: Vec<i64> = (0..2000).map(|_| d.draw(&mut rng).as_integer().unwrap()).collect();
        assert!(draws.iter().all(|&x| (1..=1000).contains(&x)));
        // x < 32 ⟺ the continuous draw < 31.5: P = ln(31.5/0.5) / ln(1000.5/0.5) = 0.5451 (σ 0.011)
        let below = draws.iter().filter(|&&x| x < 32).count() as f64 / 2000.0;
        assert!((below - 0.5451).abs() < 0.035, "{below}");
    }

    #[test]
    fn refuses_unknown_keys_and_bad_ranges_naming_them() {
        let cases = [
            ("[params]\n\"model.n_expert\" = { int = [2, 8] }", "params.\"model.n_expert\""),
            ("[params]\n\"train.lr\" = { uniform = [0.1, 0.01] }", "low < high"),
            ("[params]\n\"train.lr\" = { log_uniform = [0, 0.01] }", "0 < low < high"),
            ("[params]\n\"model.n_experts\" = { int = [8, 2] }", "low ≤ high"),
            ("[params]\n\"model.n_experts\" = { int = [2.5, 8] }", "integers"),
            ("[params]\n\"model.n_experts\" = { choice = [] }", "non-empty"),
            ("[params]\n\"train.lr\" = { normal = [0, 1] }", "unknown distribution `normal`"),
            ("[params]\n\"train.lr\" = { uniform = [0.1, 0.2], choice = [1] }", "name one distribution"),
            ("[params]\n\"train.lr\" = { uniform = [0.1, 0.2], log = true }", "`log = true` goes with `int`"),
            ("[params]\n\"train.batch_size\" = { int = [0, 8], log = true }", "low ≥ 1"),
            ("[params]\n\"model.expert_hidden\" = { choice = [[16], \"wide\"] }", "\"wide\" does not fit"),
            ("[params]\n\"train.epochs\" = { int = [0, 3] }", "train.epochs must be at least 1"),
            ("[params]", "[params] is empty"),
            ("[objective]\nmetric = \"auc\"", "no [params]"),
            ("[objective]\nmetrik = \"auc\"\n[params]\n\"train.lr\" = { uniform = [0.1, 0.2] }", "objective.metrik"),
            ("[search]\n", "unknown section `search`"),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains("space.toml: ") && err.contains(want), "{text}\n→ {err}");
        }
        // the first case names the key the config does not know
        let err = parse(cases[0].0).unwrap_err().to_string();
        assert!(err.contains("n_expert"), "{err}");
    }
}
