//! `cargo xtask mlflow RUN_DIR... [--uri URI] [--experiment NAME]`: logs run folders to an MLflow
//! tracking server (or any MLflow tracking URI: `http(s)://…`, `sqlite:///…`, Databricks), so that
//! mtrec runs sit in a team's MLflow beside its other experiments.
//!
//! What one run folder becomes, one MLflow run (named after the folder; a comparison's
//! `<config name>/seed<k>` keeps its config's name):
//! - **params**: every key of its `config.toml`, flattened with dots (`model.n_experts`,
//!   `train.lr`); arrays of tables are keyed by their entries' `name` (`data.tasks.income.kind`),
//!   or by index when names are missing or repeated; other arrays as TOML text (`[32, 16]`).
//! - **metrics**: every epoch scalar of `metrics.jsonl` at step = epoch, with the names TensorBoard
//!   shows (`valid/income/auc`, `gradient_cosine/income-vs-never_married`, …; [`epoch_scalars`]),
//!   the every-N-steps `step/…` scalars of its TensorBoard event file at step = the global step,
//!   and from `summary.json` the selected model's `selected_valid/<task>/<metric>` and
//!   `test/<task>/<metric>` at step = its epoch. Timestamps are the event file's wall times.
//! - **tags**: the dataset, model, balancer, device, seed and best epoch (`mtrec.*`), the folder's
//!   absolute path (`mtrec.run_dir`) and a fingerprint of its records (`mtrec.fingerprint`).
//! - **artifacts**: `config.toml`, `summary.json`, `metrics.jsonl`, `preprocessing.json`,
//!   `report.html` and the figures (not the weights or checkpoints).
//!
//! A folder without `metrics.jsonl` is searched for run folders (a `compare` or `tune` output). A
//! folder logged before with the same records is skipped; one whose records changed since (a
//! resumed run, one still training when it was logged) replaces its earlier MLflow run. A run
//! without `summary.json` (still training, or killed) stays RUNNING in MLflow.
//!
//! MLflow names allow letters, digits, `_ - . / :` and spaces: a pair's `~` becomes `-vs-`, any
//! other character `_` (two names that would then collide are refused, naming both).
//!
//! The logging itself is MLflow's own Python client (`xtask/python/mlflow_bridge.py`, `MlflowClient`
//! over MLflow's REST API), so every tracking URI, authentication and artifact store MLflow knows
//! works: `pip install -r xtask/python/requirements.txt`.

use std::{
    collections::{BTreeMap, HashMap},
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::UNIX_EPOCH,
};

use anyhow::{Context, bail};
use clap::Args;
use mtrec_train::{epoch_scalars, event_files, read_epochs, read_scalars, read_summary};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Arguments of `cargo xtask mlflow`.
#[derive(Args, Debug)]
pub struct MlflowArgs {
    /// Run folders, or folders holding run folders (`compare`, `tune` outputs, `runs/`).
    #[arg(required = true)]
    run_dirs: Vec<PathBuf>,
    /// MLflow tracking URI (`http://127.0.0.1:5000` of `mlflow server`, `sqlite:///mlflow.db`, …).
    /// Default: `$MLFLOW_TRACKING_URI`.
    #[arg(long)]
    uri: Option<String>,
    /// MLflow experiment (created when missing). Default: each run's config `name`.
    #[arg(long)]
    experiment: Option<String>,
    /// Python with the `mlflow` package (default `$MTREC_PYTHON`, else `python3`).
    #[arg(long)]
    python: Option<PathBuf>,
}

/// `--mlflow URI` of `train`, `compare` and `tune`: their run folders logged to MLflow at the end,
/// as `cargo xtask mlflow` would.
#[derive(Args, Debug, Clone, Default)]
pub struct MlflowLogging {
    /// Log the run folder(s) to this MLflow tracking URI when done (as `cargo xtask mlflow`;
    /// Python with mlflow from `$MTREC_PYTHON`, else `python3`).
    #[arg(long, value_name = "URI")]
    mlflow: Option<String>,
    /// MLflow experiment for `--mlflow` (default: the config's name; for `compare`, the output
    /// folder's name).
    #[arg(long, value_name = "NAME", requires = "mlflow")]
    mlflow_experiment: Option<String>,
}

impl MlflowLogging {
    /// The experiment `--mlflow-experiment` named.
    pub fn experiment(&self) -> Option<&str> {
        self.mlflow_experiment.as_deref()
    }

    /// The same, logging into `experiment`.
    pub fn with_experiment(self, experiment: String) -> MlflowLogging {
        MlflowLogging { mlflow_experiment: Some(experiment), ..self }
    }

    /// Logs the run folders in or below `paths` when `--mlflow` was given.
    pub fn log(&self, paths: &[PathBuf]) -> anyhow::Result<()> {
        match &self.mlflow {
            Some(uri) => log_folders(paths, uri, self.mlflow_experiment.as_deref(), None),
            None => Ok(()),
        }
    }
}

pub fn run(args: MlflowArgs) -> anyhow::Result<()> {
    let uri = match args.uri.clone().or_else(|| std::env::var("MLFLOW_TRACKING_URI").ok()) {
        Some(uri) => uri,
        None => bail!(
            "no MLflow tracking URI: give --uri (e.g. http://127.0.0.1:5000 of `mlflow server`) or set MLFLOW_TRACKING_URI"
        ),
    };
    log_folders(&args.run_dirs, &uri, args.experiment.as_deref(), args.python.as_deref())
}

/// Logs the run folders in or below `paths` to `uri` and prints what became of each.
fn log_folders(paths: &[PathBuf], uri: &str, experiment: Option<&str>, python: Option<&Path>) -> anyhow::Result<()> {
    let python = crate::python(python);
    let dirs = find_runs(paths)?;
    let runs = dirs.iter().map(|d| mlflow_run(d, experiment)).collect::<anyhow::Result<Vec<_>>>()?;
    for outcome in log_runs(&python, uri, runs)? {
        println!(
            "{} {} → experiment {} run {}",
            outcome["action"].as_str().unwrap_or("?"),
            outcome["run_dir"].as_str().unwrap_or("?"),
            outcome["experiment_id"].as_str().unwrap_or("?"),
            outcome["run_id"].as_str().unwrap_or("?"),
        );
    }
    Ok(())
}

/// The run folders in `paths`: each path that holds `metrics.jsonl`, else the run folders below it
/// (sorted). A path with none is an error naming it.
pub fn find_runs(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        if dir.join("metrics.jsonl").is_file() {
            out.push(dir.to_path_buf());
            return Ok(());
        }
        if depth == 0 {
            return Ok(());
        }
        let mut children: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        children.sort();
        for child in children {
            walk(&child, depth - 1, out)?;
        }
        Ok(())
    }
    let mut out = Vec::new();
    for path in paths {
        if !path.is_dir() {
            bail!("{}: not a folder", path.display());
        }
        let before = out.len();
        walk(path, 4, &mut out)?;
        if out.len() == before {
            bail!("{}: no run folder (one with metrics.jsonl) in it or below it", path.display());
        }
    }
    Ok(out)
}

/// A name as MLflow accepts it (letters, digits, `_ - . / :`, spaces): a pair's `~` becomes
/// `-vs-`, any other character `_`.
pub fn mlflow_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '~' => out.push_str("-vs-"),
            c if c.is_alphanumeric() || "_-./: ".contains(c) => out.push(c),
            _ => out.push('_'),
        }
    }
    out
}

/// `config.toml`'s keys flattened with dots (module docs), as MLflow params.
pub fn flatten_config(config: &toml::Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
        let key = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
        match value {
            toml::Value::Table(table) => {
                for (k, v) in table {
                    walk(&key(k), v, out);
                }
            }
            toml::Value::Array(items) if !items.is_empty() && items.iter().all(toml::Value::is_table) => {
                let names: Vec<Option<&str>> =
                    items.iter().map(|t| t.get("name").and_then(toml::Value::as_str)).collect();
                let distinct = names.iter().all(Option::is_some)
                    && names.iter().collect::<std::collections::BTreeSet<_>>().len() == names.len();
                for (i, item) in items.iter().enumerate() {
                    let label = if distinct { names[i].unwrap_or_default().to_string() } else { i.to_string() };
                    walk(&key(&label), item, out);
                }
            }
            toml::Value::String(s) => out.push((prefix.to_string(), s.clone())),
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let mut out = Vec::new();
    walk("", config, &mut out);
    out
}

/// A float for the bridge: finite ones as numbers, the others as `"nan"`, `"inf"`, `"-inf"`.
fn json_float(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else if v.is_nan() {
        json!("nan")
    } else if v > 0.0 {
        json!("inf")
    } else {
        json!("-inf")
    }
}

/// Names mapped by [`mlflow_name`]; two source names onto one is an error naming both.
struct Names {
    seen: HashMap<String, String>,
    dir: PathBuf,
}

impl Names {
    fn map(&mut self, what: &str, name: &str) -> anyhow::Result<String> {
        let mapped = mlflow_name(name);
        match self.seen.get(&mapped) {
            Some(other) if other != name => bail!(
                "{}: {what} `{name}` and `{other}` are both `{mapped}` in MLflow's characters; rename one",
                self.dir.display()
            ),
            _ => {
                self.seen.insert(mapped.clone(), name.to_string());
                Ok(mapped)
            }
        }
    }
}

/// What the bridge logs for the run folder `dir` (module docs), into `experiment` or the config's name.
pub fn mlflow_run(dir: &Path, experiment: Option<&str>) -> anyhow::Result<Value> {
    let dir = std::path::absolute(dir)?;
    let config_path = dir.join("config.toml");
    let config_text =
        std::fs::read_to_string(&config_path).with_context(|| format!("reading {}", config_path.display()))?;
    let config: toml::Value =
        toml::from_str(&config_text).with_context(|| format!("parsing {}", config_path.display()))?;
    let summary = read_summary(&dir)?;
    let records = read_epochs(&dir)?;
    // wall times (ms) of every scalar the event files hold, and their step scalars
    let mut wall: HashMap<(String, i64), i64> = HashMap::new();
    let mut step_scalars = Vec::new();
    for file in event_files(&dir)? {
        for s in read_scalars(&file)? {
            let ms = (s.wall_time * 1000.0) as i64;
            wall.insert((s.tag.clone(), s.step), ms);
            if s.tag.starts_with("step/") {
                step_scalars.push((s.tag, f64::from(s.value), ms, s.step));
            }
        }
    }
    let modified = |name: &str| -> Option<i64> {
        let t = std::fs::metadata(dir.join(name)).ok()?.modified().ok()?;
        Some(t.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64)
    };
    let end_ms = modified("metrics.jsonl").or_else(|| modified("config.toml")).unwrap_or(0);
    let start_ms = wall.values().copied().min().or_else(|| modified("config.toml")).unwrap_or(end_ms).min(end_ms);

    let mut names = Names { seen: HashMap::new(), dir: dir.clone() };
    let mut metrics = Vec::new();
    for record in &records {
        let step = record.epoch as i64;
        for (tag, value) in epoch_scalars(record) {
            let ms = wall.get(&(tag.clone(), step)).copied().unwrap_or(end_ms);
            metrics.push(json!([names.map("metric", &tag)?, json_float(value), ms, step]));
        }
    }
    for (tag, value, ms, step) in step_scalars {
        metrics.push(json!([names.map("metric", &tag)?, json_float(value), ms, step]));
    }
    let mut tags = BTreeMap::new();
    tags.insert("mtrec.run_dir".to_string(), dir.display().to_string());
    if let Some(s) = &summary {
        let step = s.best_epoch as i64;
        for (split, metrics_of) in [("selected_valid", &s.valid), ("test", &s.test)] {
            for (task, values) in metrics_of {
                for (metric, value) in values {
                    let tag = format!("{split}/{task}/{metric}");
                    metrics.push(json!([names.map("metric", &tag)?, json_float(*value), end_ms, step]));
                }
            }
        }
        for (key, value) in [
            ("dataset", s.dataset.clone()),
            ("model", s.model.clone()),
            ("balance", s.balance.clone()),
            ("device", s.device.clone()),
            ("seed", s.seed.to_string()),
            ("best_epoch", s.best_epoch.to_string()),
            ("parameters", s.parameters.to_string()),
        ] {
            tags.insert(format!("mtrec.{key}"), value);
        }
    }
    let mut params_names = Names { seen: HashMap::new(), dir: dir.clone() };
    let params = flatten_config(&config)
        .into_iter()
        .map(|(k, v)| Ok(json!([params_names.map("config key", &k)?, v])))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let mut artifacts: Vec<String> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            p.is_file()
                && (["config.toml", "summary.json", "metrics.jsonl", "preprocessing.json", "report.html"]
                    .contains(&name)
                    || name.ends_with(".svg")
                    || name.ends_with(".png"))
        })
        .map(|p| p.display().to_string())
        .collect();
    artifacts.sort();
    let config_name = config.get("name").and_then(toml::Value::as_str).unwrap_or("mtrec");
    let experiment = experiment.unwrap_or(config_name);
    // the folder's name; a comparison's `<config name>/seed<k>` keeps its config's name
    let folder = |d: &Path| d.file_name().and_then(|n| n.to_str()).map(str::to_string);
    let run_name = match (folder(&dir), dir.parent().and_then(folder)) {
        (Some(seed), Some(parent)) if seed.strip_prefix("seed").is_some_and(|k| k.parse::<u64>().is_ok()) => {
            format!("{parent}/{seed}")
        }
        (Some(name), _) => name,
        (None, _) => config_name.to_string(),
    };
    // the fingerprint: what the MLflow run is made of
    let mut hasher = Sha256::new();
    hasher.update(run_name.as_bytes());
    for file in ["config.toml", "metrics.jsonl", "summary.json"] {
        hasher.update(file.as_bytes());
        hasher.update(std::fs::read(dir.join(file)).unwrap_or_default());
    }
    let fingerprint = crate::data::hex(&hasher.finalize());
    tags.insert("mtrec.fingerprint".to_string(), fingerprint);

    Ok(json!({
        "run_dir": dir.display().to_string(),
        "experiment": experiment,
        "name": run_name,
        "start_ms": start_ms,
        "end_ms": end_ms,
        "finished": summary.is_some(),
        "params": params,
        "tags": tags,
        "metrics": metrics,
        "artifacts": artifacts,
    }))
}

/// Logs `runs` ([`mlflow_run`]s) through `xtask/python/mlflow_bridge.py`; returns one outcome per
/// run (`run_dir`, `action` = logged | replaced | unchanged, `experiment_id`, `run_id`).
pub fn log_runs(python: &Path, uri: &str, runs: Vec<Value>) -> anyhow::Result<Vec<Value>> {
    let bridge = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/mlflow_bridge.py");
    let mut child = Command::new(python)
        .arg(&bridge)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {} (a Python with mlflow: --python or MTREC_PYTHON)", python.display()))?;
    let request = json!({ "tracking_uri": uri, "runs": runs });
    child.stdin.take().expect("piped").write_all(request.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
        if last.contains("No module named 'mlflow'") {
            bail!("{} has no mlflow: pip install -r xtask/python/requirements.txt (or --python)", python.display());
        }
        tracing::debug!("mlflow_bridge.py: {stderr}");
        bail!("logging to MLflow at {uri} failed (RUST_LOG=debug shows the bridge's whole output): {last}");
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("the bridge's answer `{l}`")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_mlflows_characters_and_spell_pairs() {
        assert_eq!(mlflow_name("gradient_cosine/income~never_married"), "gradient_cosine/income-vs-never_married");
        assert_eq!(mlflow_name("valid/Clothing ID: é/auc"), "valid/Clothing ID: é/auc");
        assert_eq!(mlflow_name("a+b(c)"), "a_b_c_");
    }

    #[test]
    fn config_keys_flatten_with_names_of_array_entries() {
        let config: toml::Value = toml::from_str(
            r#"
            name = "x"
            [model]
            expert_hidden = [32, 16]
            [[data.tasks]]
            name = "income"
            kind = "binary"
            [[data.tasks]]
            name = "married"
            kind = "binary"
            [[data.columns]]
            kind = "dense"
            "#,
        )
        .unwrap();
        let flat: BTreeMap<String, String> = flatten_config(&config).into_iter().collect();
        assert_eq!(flat["name"], "x");
        assert_eq!(flat["model.expert_hidden"], "[32, 16]");
        assert_eq!(flat["data.tasks.income.kind"], "binary");
        assert_eq!(flat["data.tasks.married.name"], "married");
        assert_eq!(flat["data.columns.0.kind"], "dense", "no names: by index");
        assert_eq!(flat.len(), 7, "{flat:?}");
    }

    #[test]
    fn names_that_collide_in_mlflows_characters_are_refused() {
        let mut names = Names { seen: HashMap::new(), dir: PathBuf::from("run") };
        assert_eq!(names.map("metric", "a+b").unwrap(), "a_b");
        assert_eq!(names.map("metric", "a+b").unwrap(), "a_b", "the same name again is fine");
        let err = names.map("metric", "a_b").unwrap_err().to_string();
        assert!(err.contains("`a_b` and `a+b`"), "{err}");
    }

    #[test]
    fn folders_without_runs_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("compare/seed42")).unwrap();
        let err = find_runs(&[dir.path().to_path_buf()]).unwrap_err().to_string();
        assert!(err.contains("no run folder") && err.contains(&dir.path().display().to_string()), "{err}");
        std::fs::write(dir.path().join("compare/seed42/metrics.jsonl"), "").unwrap();
        std::fs::create_dir_all(dir.path().join("compare/seed43")).unwrap();
        std::fs::write(dir.path().join("compare/seed43/metrics.jsonl"), "").unwrap();
        let runs = find_runs(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(runs, vec![dir.path().join("compare/seed42"), dir.path().join("compare/seed43")]);
    }
}

/// Logging to a real `mlflow server` (started here) and reading it back through MLflow's client.
/// Needs a Python with mlflow in `MTREC_PYTHON` (`.ci/run` makes one); prints SKIP without it.
#[cfg(test)]
mod server_tests {
    use std::{
        net::{TcpListener, TcpStream},
        process::Child,
        time::{Duration, Instant},
    };

    use burn::tensor::Device;
    use mtrec_balance::{BalanceConfig, BalanceMethod};
    use mtrec_data::SyntheticConfig;
    use mtrec_train::{
        DataConfig, DataSource, EarlyStoppingConfig, ExperimentConfig, RunDirectory, TrainConfig, Trainer,
    };

    use super::*;

    /// A Python with mlflow, or None (the test then skips).
    fn python_with_mlflow() -> Option<PathBuf> {
        let python = PathBuf::from(std::env::var_os("MTREC_PYTHON")?);
        let ok = Command::new(&python).args(["-c", "import mlflow"]).output().is_ok_and(|o| o.status.success());
        ok.then_some(python)
    }

    /// `mlflow server` on a free port of localhost, stopped when dropped.
    struct Server {
        child: Child,
        uri: String,
    }

    impl Server {
        fn start(python: &Path, dir: &Path) -> Server {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = Command::new(python)
                .args(["-m", "mlflow", "server", "--host", "127.0.0.1", "--port", &port.to_string(), "--workers", "1"])
                .arg("--backend-store-uri")
                .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
                .arg("--artifacts-destination")
                .arg(dir.join("artifacts"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("server.log")).unwrap())
                .spawn()
                .unwrap();
            let server = Server { child, uri: format!("http://127.0.0.1:{port}") };
            let start = Instant::now();
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    start.elapsed() < Duration::from_secs(180),
                    "mlflow server did not listen within 180 s: {}",
                    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(250));
            }
            server
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// A tiny synthetic MMoE run with PCGrad (its records hold task-pair cosines: `~` names).
    fn train(dir: &Path) {
        let cfg = ExperimentConfig {
            name: "mlflow-test".into(),
            data: DataConfig {
                source: DataSource::Synthetic,
                synthetic: SyntheticConfig { dim: 8, n_train: 320, n_valid: 100, n_test: 100, ..Default::default() },
                ..Default::default()
            },
            model: mtrec_model::ModelConfig {
                architecture: mtrec_model::Architecture::Mmoe,
                n_experts: 3,
                expert_hidden: vec![8],
                ..Default::default()
            },
            balance: BalanceConfig { method: BalanceMethod::Pcgrad, ..Default::default() },
            train: TrainConfig {
                epochs: 2,
                batch_size: 32,
                log_every_steps: 4,
                evaluate_test: true,
                early_stopping: EarlyStoppingConfig { metric: "mse".into(), patience: 100, ..Default::default() },
                ..Default::default()
            },
            ..Default::default()
        };
        let ds = cfg.data.load().unwrap();
        Trainer::new(&cfg, &ds, Device::flex())
            .with_run_dir(RunDirectory::create(dir, &cfg).unwrap())
            .verbose(false)
            .run()
            .unwrap();
    }

    fn read_back(python: &Path, uri: &str, experiment: &str) -> Value {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/read_mlflow.py");
        let out = Command::new(python).arg(script).args([uri, experiment]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `read`'s history of `key` as (step, value).
    fn history(run: &Value, key: &str) -> Vec<(i64, f64)> {
        let h = run["metrics"][key].as_array().unwrap_or_else(|| panic!("no metric `{key}`: {:?}", run["metrics"]));
        h.iter().map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap())).collect()
    }

    #[test]
    fn a_run_folder_logged_to_mlflow_reads_back_as_its_records() {
        let Some(python) = python_with_mlflow() else {
            eprintln!("SKIP: set MTREC_PYTHON to a Python with the mlflow package");
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let run_dir = tmp.path().join("mmoe/seed42");
        train(&run_dir);
        let server = Server::start(&python, tmp.path());
        let log = || log_runs(&python, &server.uri, vec![mlflow_run(&run_dir, Some("t")).unwrap()]).unwrap();
        let first = log();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0]["action"], "logged", "{first:?}");

        let read = read_back(&python, &server.uri, "t");
        let runs = read["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1, "{read}");
        let run = &runs[0];
        assert_eq!(run["name"], "mmoe/seed42");
        assert_eq!(run["status"], "FINISHED");
        // params: the config, flattened
        assert_eq!(run["params"]["train.batch_size"], "32");
        assert_eq!(run["params"]["model.n_experts"], "3");
        assert_eq!(run["params"]["balance.method"], "pcgrad");
        assert_eq!(run["tags"]["mtrec.seed"], "42");
        // every epoch scalar of metrics.jsonl, at step = epoch, exactly
        let records = read_epochs(&run_dir).unwrap();
        assert_eq!(records.len(), 2);
        let mut n_epoch_keys = 0;
        let mut expected: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
        for record in &records {
            for (tag, v) in epoch_scalars(record) {
                expected.entry(mlflow_name(&tag)).or_default().push((record.epoch as i64, v));
            }
        }
        assert!(expected.contains_key("gradient_cosine/task1-vs-task2"), "{:?}", expected.keys());
        for (key, values) in &expected {
            let got = history(run, key);
            assert_eq!(got.len(), values.len(), "{key}");
            for ((se, ve), (sg, vg)) in values.iter().zip(&got) {
                assert_eq!(se, sg, "{key}");
                assert!((ve - vg).abs() <= 1e-12 * ve.abs().max(1.0), "{key} at {se}: {vg} ≠ {ve}");
            }
            n_epoch_keys += 1;
        }
        // the step scalars of the event file, every 4 steps
        let file = &event_files(&run_dir).unwrap()[0];
        let steps: Vec<(i64, f64)> = read_scalars(file)
            .unwrap()
            .into_iter()
            .filter(|s| s.tag == "step/loss/task1")
            .map(|s| (s.step, f64::from(s.value)))
            .collect();
        assert_eq!(steps.len(), 2 * 320 / 32 / 4);
        assert_eq!(history(run, "step/loss/task1"), steps);
        // the selected model's test metrics
        let summary = read_summary(&run_dir).unwrap().expect("a finished run");
        let mse = summary.test["task1"]["mse"];
        assert_eq!(history(run, "test/task1/mse"), vec![(summary.best_epoch as i64, mse)]);
        let n_step_keys = run["metrics"].as_object().unwrap().keys().filter(|k| k.starts_with("step/")).count();
        let n_summary_keys = summary.valid.values().chain(summary.test.values()).map(BTreeMap::len).sum::<usize>();
        assert_eq!(run["metrics"].as_object().unwrap().len(), n_epoch_keys + n_step_keys + n_summary_keys);
        for file in ["config.toml", "metrics.jsonl", "report.html", "summary.json"] {
            assert!(run["artifacts"].as_array().unwrap().iter().any(|a| a == file), "{file}: {}", run["artifacts"]);
        }

        // again: nothing new; after the folder changed: its MLflow run is replaced, not duplicated
        assert_eq!(log()[0]["action"], "unchanged");
        let mut config = std::fs::read_to_string(run_dir.join("config.toml")).unwrap();
        config.push_str("\n# edited\n");
        std::fs::write(run_dir.join("config.toml"), config).unwrap();
        let replaced = log();
        assert_eq!(replaced[0]["action"], "replaced");
        assert_ne!(replaced[0]["run_id"], first[0]["run_id"]);
        assert_eq!(read_back(&python, &server.uri, "t")["runs"].as_array().unwrap().len(), 1);
    }
}
