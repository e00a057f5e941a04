//! An exclusive lock on a folder that processes write into (a chunk folder, an embedding cache):
//! two runs sharing `MTREC_CACHE_DIR`, or several MPI ranks on one machine, take turns instead of
//! deleting each other's files. The lock is the operating system's advisory file lock
//! (`flock` on Unix, `LockFileEx` on Windows) on a `.lock` file in the folder, released when the
//! [`FolderLock`] is dropped or the process ends (a killed process leaves no stale lock).

use std::{
    fs::{File, OpenOptions},
    path::{Path, PathBuf},
};

use crate::DataError;

/// The lock file's name in a locked folder.
pub const LOCK_FILE: &str = ".lock";

/// An exclusive lock on a folder, held until dropped.
#[derive(Debug)]
pub struct FolderLock {
    dir: PathBuf,
    _file: File,
}

impl FolderLock {
    /// Creates `dir` if needed and locks it, waiting (with a log line) while another process or
    /// thread holds it.
    pub fn exclusive(dir: &Path) -> Result<Self, DataError> {
        let io = |source| DataError::Io { path: dir.join(LOCK_FILE), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(LOCK_FILE)).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                tracing::info!("waiting for another process writing into {}", dir.display());
                file.lock().map_err(io)?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        Ok(Self { dir: dir.to_path_buf(), _file: file })
    }

    /// The locked folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A file name no other writer uses at the same time: `stem.PID-N.tmp` (N counts within the
/// process), for a temporary file renamed into place once complete.
pub fn unique_temporary(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{name}.{}-{n}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Two holders never overlap: a second locker waits until the first lets go.
    #[test]
    fn holders_take_turns() {
        let dir = tempfile::tempdir().unwrap();
        let inside = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..5 {
                        let _lock = FolderLock::exclusive(dir.path()).unwrap();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(2));
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 1, "never two holders at once");
        assert_ne!(unique_temporary(Path::new("a/m.json")), unique_temporary(Path::new("a/m.json")));
    }
}
