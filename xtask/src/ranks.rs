//! `cargo xtask train --ranks N`: relaunching the command under Open MPI's `mpirun`, and the MPI
//! world of each rank it starts.

use std::path::Path;

#[cfg(feature = "mpi")]
use std::rc::Rc;

#[cfg(feature = "mpi")]
use mtrec_train::MpiCollective;

/// How this process takes part in a run.
pub enum Start {
    /// One process.
    Single,
    /// This process launched the ranks under `mpirun`, which have finished.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    Launched,
    /// One rank of an MPI job.
    #[cfg(feature = "mpi")]
    Rank(Rc<MpiCollective>),
}

/// Decides how this process runs: a rank of the MPI job that started it, the launcher of
/// `ranks` ranks, or one process.
pub fn start(ranks: Option<usize>, hostfile: Option<&Path>) -> anyhow::Result<Start> {
    let launched = mtrec_train::launcher_ranks();
    if let (Some(n), Some(wanted)) = (launched, ranks)
        && n != wanted
    {
        anyhow::bail!("--ranks {wanted}, but the MPI launcher started {n} ranks");
    }
    match (launched, ranks) {
        (Some(_), _) => world(),
        (None, Some(0)) => anyhow::bail!("--ranks must be at least 1"),
        (None, None | Some(1)) => Ok(Start::Single),
        (None, Some(n)) => launch(n, hostfile),
    }
}

#[cfg(feature = "mpi")]
fn world() -> anyhow::Result<Start> {
    Ok(Start::Rank(Rc::new(MpiCollective::init().map_err(anyhow::Error::msg)?)))
}

#[cfg(not(feature = "mpi"))]
fn world() -> anyhow::Result<Start> {
    anyhow::bail!(
        "started by an MPI launcher as one of several ranks, but this xtask was built without MPI: each rank would \
         train alone. Build it with the `mpi` feature: `cargo xtask-mpi train --ranks N …` (README, Multi-process \
         training)"
    )
}

/// Runs this command again under `mpirun -n n` and waits for it.
#[cfg(feature = "mpi")]
fn launch(n: usize, hostfile: Option<&Path>) -> anyhow::Result<Start> {
    use std::process::Command;
    let exe = std::env::current_exe()?;
    let mut mpirun = Command::new("mpirun");
    mpirun.args(["-n", &n.to_string()]);
    match hostfile {
        Some(file) => {
            mpirun.arg("--hostfile").arg(file);
        }
        None => {
            // one machine: more ranks than cores is allowed, and each rank gets its share of the
            // cores for its matrix products (unless RAYON_NUM_THREADS says otherwise)
            mpirun.arg("--oversubscribe");
            if std::env::var_os("RAYON_NUM_THREADS").is_none() {
                let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
                mpirun.env("RAYON_NUM_THREADS", (cores / n).max(1).to_string());
            }
        }
    }
    for var in ["RAYON_NUM_THREADS", "MTREC_CACHE_DIR", "BURN_DEVICE"] {
        if std::env::var_os(var).is_some() || var == "RAYON_NUM_THREADS" && hostfile.is_none() {
            mpirun.args(["-x", var]);
        }
    }
    if running_as_root() {
        // Open MPI refuses to start ranks as root (containers) unless told
        mpirun.env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    }
    mpirun.arg(exe).args(std::env::args_os().skip(1));
    println!("mtrec: launching {n} ranks: mpirun -n {n} … {}", std::env::args().skip(1).collect::<Vec<_>>().join(" "));
    let status = mpirun.status().map_err(|e| {
        anyhow::anyhow!("mpirun does not start ({e}): install Open MPI (`apt install openmpi-bin libopenmpi-dev`)")
    })?;
    if !status.success() {
        anyhow::bail!("the {n} ranks failed ({status}); mpirun's message above names the rank");
    }
    Ok(Start::Launched)
}

#[cfg(not(feature = "mpi"))]
fn launch(n: usize, _hostfile: Option<&Path>) -> anyhow::Result<Start> {
    anyhow::bail!(
        "--ranks {n} needs MPI, which this xtask was built without: `cargo xtask-mpi train --ranks {n} …` (needs Open \
         MPI and libclang: README, Multi-process training)"
    )
}

/// Whether this process runs as root (uid 0).
#[cfg(feature = "mpi")]
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .is_some_and(|uid| uid == "0")
    })
}
