//! Data-parallel training on MPI ranks (feature `mpi`; needs Open MPI's `mpirun`).
//!
//! This test has its own `main`: run by cargo, it launches itself under `mpirun -n 2` and checks
//! what the ranks wrote.
//! - The ranks end every scenario of `scenarios/` where one process does (≤ 1e-5 relative, every
//!   parameter tensor) with the same test metrics.
//! - A rank killed (SIGKILL) in the middle of a run ends the job within seconds, with mpirun's
//!   error naming the dead rank and a failing exit status; `--resume`-style restarts from the run
//!   folder's last checkpoint on 2 ranks then finish the run as the uninterrupted one-process run
//!   does.

mod scenarios;

use std::{
    cell::Cell,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    rc::Rc,
    time::{Duration, Instant, SystemTime},
};

use mtrec_train::{
    Collective, DataParallel, ExperimentConfig, MpiCollective, RunDirectory, Summary, TrainError, Trainer,
};
use scenarios::{assert_same_metrics, largest_relative_difference, parameters, scenarios, train};

const CHILD: &str = "MTREC_MPI_TEST_CHILD";
const OUT: &str = "MTREC_MPI_TEST_OUT";
/// The rank that dies, and the training step it dies at (epoch 3 of 4, 20 steps an epoch).
const DYING_RANK: usize = 1;
const DYING_STEP: usize = 45;

fn main() {
    match std::env::var(CHILD).as_deref() {
        Ok("match") => child_match(),
        Ok("kill") => child_kill(),
        Ok("resume") => child_resume(),
        _ => {
            ranks_match_one_process();
            a_killed_rank_ends_the_run_and_the_run_resumes();
            println!("mpi: all checks passed");
        }
    }
}

/// `mpirun -n 2` of this executable in child `mode`, writing into `out`; its exit status and
/// output (stdout and stderr), killed after `timeout`.
fn mpirun(mode: &str, out: &Path, timeout: Duration) -> (ExitStatus, String, Duration) {
    let log = out.join(format!("{mode}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let start = Instant::now();
    let mut child = Command::new("mpirun")
        .args(["-n", "2", "--oversubscribe"])
        .arg(std::env::current_exe().unwrap())
        .env(CHILD, mode)
        .env(OUT, out)
        // Open MPI refuses root without these (containers, CI)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap_or_else(|e| panic!("mpirun (Open MPI's launcher; README, Multi-process training) does not start: {e}"));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > timeout {
            child.kill().ok();
            panic!("mpirun {mode} still runs after {timeout:?}: {}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(&log).unwrap_or_default(), start.elapsed())
}

fn out_dir() -> PathBuf {
    PathBuf::from(std::env::var_os(OUT).expect("the parent sets the output folder"))
}

fn world() -> Rc<MpiCollective> {
    Rc::new(MpiCollective::init().expect("MPI initialises once"))
}

/// Each scenario on the ranks; rank 0 writes the summary and parameters.
fn child_match() {
    let world = world();
    for (name, cfg) in scenarios() {
        let (summary, params) = train(&cfg, DataParallel::new(Box::new(world.clone())));
        if world.rank() == 0 {
            let json = serde_json::to_vec(&(summary, params)).unwrap();
            std::fs::write(out_dir().join(format!("{name}.json")), json).unwrap();
        }
    }
}

fn read_result(path: &Path) -> (Summary, Vec<Vec<f32>>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

fn ranks_match_one_process() {
    let out = tempfile::tempdir().unwrap();
    let (status, log, took) = mpirun("match", out.path(), Duration::from_secs(600));
    assert!(status.success(), "the ranks failed ({status}):\n{log}");
    println!("mpi: 2 ranks trained {} scenarios in {:.1}s", scenarios().len(), took.as_secs_f64());
    for (name, cfg) in scenarios() {
        let (summary, params) = read_result(&out.path().join(format!("{name}.json")));
        let (one_summary, one) = train(&cfg, DataParallel::single());
        let diff = largest_relative_difference(&params, &one);
        println!("mpi: {name}: 2 MPI ranks vs one process: largest relative parameter difference {diff:.2e}");
        assert!(diff <= 1e-5, "{name}: {diff:e}");
        assert_same_metrics(&name, &summary, &one_summary, 1e-4);
        assert_eq!(summary.data_parallel.map(|d| d.ranks), Some(2), "{name}");
    }
}

/// The run of the kill and resume checks: fixed weights on MMoE, 4 epochs of 20 steps.
fn long_config() -> ExperimentConfig {
    let (_, mut cfg) = scenarios().remove(0);
    cfg.train.epochs = 4;
    cfg.train.early_stopping.patience = 10;
    cfg
}

/// Counts the steps (one dense all-reduce of the parameters' presence each) and kills its own
/// process at [`DYING_STEP`] on [`DYING_RANK`], after writing the time.
struct Dying {
    inner: Rc<MpiCollective>,
    sums: Cell<usize>,
}

impl Collective for Dying {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn sum_f32(&self, values: &mut [f32]) {
        self.sums.set(self.sums.get() + 1);
        // three f32 sums a step: dense presence, dense buckets (one here), sparse presence
        if self.rank() == DYING_RANK && self.sums.get() == 3 * DYING_STEP {
            let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
            std::fs::write(out_dir().join("killed_at"), now.to_string()).unwrap();
            let pid = std::process::id().to_string();
            Command::new("kill").args(["-9", &pid]).status().unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
        self.inner.sum_f32(values)
    }
    fn sum_f64(&self, values: &mut [f64]) {
        self.inner.sum_f64(values)
    }
    fn gather_f32(&self, values: &[f32]) -> Vec<f32> {
        self.inner.gather_f32(values)
    }
    fn gather_i64(&self, values: &[i64]) -> Vec<i64> {
        self.inner.gather_i64(values)
    }
    fn broadcast_f32(&self, values: &mut [f32], root: usize) {
        self.inner.broadcast_f32(values, root)
    }
    fn barrier(&self) {
        self.inner.barrier()
    }
}

fn run_in_folder(cfg: &ExperimentConfig, parallel: DataParallel, resume: bool) -> Result<Vec<Vec<f32>>, TrainError> {
    let ds = cfg.data.load()?;
    let dir = RunDirectory::for_rank(out_dir().join("run"), cfg, resume, &parallel)?;
    let mut trainer = Trainer::new(cfg, &ds, burn::tensor::Device::flex()).verbose(false);
    if let Some(dir) = dir {
        trainer = trainer.with_run_dir(dir);
    }
    let (_, _, model) = trainer.resume(resume).with_data_parallel(parallel).run()?;
    Ok(parameters(&model))
}

fn child_kill() {
    let world = world();
    let parallel = DataParallel::new(Box::new(Dying { inner: world.clone(), sums: Cell::new(0) }));
    run_in_folder(&long_config(), parallel, false).unwrap();
    // not reached: rank 1 dies and mpirun ends rank 0
    std::fs::write(out_dir().join(format!("finished-{}", world.rank())), b"").unwrap();
}

fn child_resume() {
    let world = world();
    let params = run_in_folder(&long_config(), DataParallel::new(Box::new(world.clone())), true).unwrap();
    if world.rank() == 0 {
        std::fs::write(out_dir().join("resumed.json"), serde_json::to_vec(&params).unwrap()).unwrap();
    }
}

fn a_killed_rank_ends_the_run_and_the_run_resumes() {
    let out = tempfile::tempdir().unwrap();
    let (status, log, _) = mpirun("kill", out.path(), Duration::from_secs(300));
    let ended = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
    let killed: f64 = std::fs::read_to_string(out.path().join("killed_at"))
        .unwrap_or_else(|_| panic!("rank {DYING_RANK} never reached step {DYING_STEP}:\n{log}"))
        .parse()
        .unwrap();
    let after = ended - killed;
    println!("mpi: rank {DYING_RANK} killed at step {DYING_STEP}; mpirun ended {after:.1}s later ({status})");
    println!("mpi: mpirun said: {}", log.lines().filter(|l| l.contains("rank")).collect::<Vec<_>>().join(" | "));
    assert!(!status.success(), "mpirun succeeded although a rank died:\n{log}");
    assert!(after < 15.0, "the run took {after:.1}s to end after the kill");
    assert!(log.contains(&format!("rank {DYING_RANK}")), "mpirun's error names the dead rank:\n{log}");
    assert!(!out.path().join("finished-0").exists(), "rank 0 went on without rank {DYING_RANK}");
    let checkpoint = out.path().join("run").join(mtrec_train::CHECKPOINT_FILE);
    assert!(checkpoint.is_file(), "rank 0 checkpointed the first epochs:\n{log}");

    let (status, log, _) = mpirun("resume", out.path(), Duration::from_secs(600));
    assert!(status.success(), "resuming on 2 ranks failed ({status}):\n{log}");
    let resumed: Vec<Vec<f32>> =
        serde_json::from_slice(&std::fs::read(out.path().join("resumed.json")).unwrap()).unwrap();
    let (_, one) = train(&long_config(), DataParallel::single());
    let diff = largest_relative_difference(&resumed, &one);
    println!("mpi: killed at step {DYING_STEP}, resumed on 2 ranks vs uninterrupted one process: {diff:.2e}");
    assert!(diff <= 1e-5, "the resumed run ends elsewhere: {diff:e}");
}
