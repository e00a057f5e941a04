//! A run's `report.html` opened in a real headless browser: the page renders its figures (each
//! with a size) and tables, and no script fails.
//!
//! Needs Chromium in `MTREC_CHROMIUM` (Debian's `chromium`; `.ci/run` installs it); prints SKIP
//! without it. The page's own script marks `<body data-rendered="{figures, tables, ok}">` once
//! loaded; the test reads the DOM Chromium dumps after running it.

use std::process::Command;

use burn::tensor::Device;
use mtrec_balance::BalanceMethod;
use mtrec_data::SyntheticConfig;
use mtrec_train::{DataConfig, DataSource, EarlyStoppingConfig, ExperimentConfig, RunDirectory, TrainConfig, Trainer};

/// Renders `page` in Chromium; returns the `data-rendered` JSON and Chromium's log.
fn render(chromium: &str, page: &std::path::Path) -> (serde_json::Value, String) {
    let out = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0", "--dump-dom"])
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("runs MTREC_CHROMIUM");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    let marked = dom.split("data-rendered=\"").nth(1).and_then(|rest| rest.split('"').next());
    let json = marked.unwrap_or_else(|| panic!("the page's script did not run:\n{log}")).replace("&quot;", "\"");
    (serde_json::from_str(&json).unwrap(), log)
}

#[test]
fn a_runs_report_renders_in_a_browser() {
    let Ok(chromium) = std::env::var("MTREC_CHROMIUM") else {
        eprintln!("SKIP: set MTREC_CHROMIUM to a Chromium (Debian's chromium) to render report.html");
        return;
    };
    let cfg = ExperimentConfig {
        data: DataConfig {
            source: DataSource::Synthetic,
            synthetic: SyntheticConfig { dim: 8, n_train: 400, n_valid: 100, n_test: 100, ..Default::default() },
            ..Default::default()
        },
        model: mtrec_model::ModelConfig { n_experts: 3, expert_hidden: vec![8], ..Default::default() },
        balance: mtrec_balance::BalanceConfig { method: BalanceMethod::Pcgrad, ..Default::default() },
        train: TrainConfig {
            epochs: 2,
            batch_size: 50,
            early_stopping: EarlyStoppingConfig { metric: "mse".into(), ..Default::default() },
            ..Default::default()
        },
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let ds = cfg.data.load().unwrap();
    Trainer::new(&cfg, &ds, Device::flex())
        .with_run_dir(RunDirectory::create(dir.path(), &cfg).unwrap())
        .verbose(false)
        .run()
        .unwrap();
    let page = dir.path().join("report.html");
    let (rendered, log) = render(&chromium, &page);
    // learning curves, task weights (with gradient cosines), gate utilisation; summary, test,
    // validation, gradient conflict, gate and epoch tables
    assert_eq!(rendered["ok"], true, "a figure has no size: {rendered}");
    assert!(rendered["figures"].as_u64().unwrap() >= 3, "{rendered}");
    assert!(rendered["tables"].as_u64().unwrap() >= 6, "{rendered}");
    assert!(!log.contains("Uncaught"), "a script failed:\n{log}");
    // the check itself fails on a page whose script breaks
    let broken = dir.path().join("broken.html");
    std::fs::write(&broken, std::fs::read_to_string(&page).unwrap().replace("<script>", "<script>nothing.here();"))
        .unwrap();
    let out = Command::new(&chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0", "--dump-dom"])
        .arg(format!("file://{}", broken.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(!dom.contains("data-rendered=\""), "a broken script marks nothing");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Uncaught"));
}
