//! What the supervisor keeps in the state dir besides the session: the lock that makes it the
//! only supervisor there, the control token, and cleaning up what killed workers left.

use super::*;

/// The exclusive claim on a state dir: an OS file lock, released by the kernel when the
/// process dies in any way, so a crashed supervisor never blocks the next one.
#[derive(Debug)]
pub struct StateLock {
    file: File,
    path: PathBuf,
}

/// Another supervisor owns the state dir.
#[derive(Debug, thiserror::Error)]
#[error(
    "another mate supervisor{} is running on state dir {state_dir}: `mate ctl status` talks \
     to it and `mate ctl shutdown` stops it; or pass a different --state-dir",
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
)]
pub struct AlreadyRunning {
    pub state_dir: PathBuf,
    pub pid: Option<u32>,
}

impl StateLock {
    pub fn acquire(state_dir: &Path) -> anyhow::Result<StateLock> {
        use std::io::{Read as _, Seek as _, Write as _};
        let run = state_dir.join("run");
        mate_protocol::endpoint::private_dir(&run)
            .with_context(|| format!("creating {}", run.display()))?;
        let path = run.join(LOCK_FILE);
        let mut file = crate::statedir::open_private(&path, false)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(AlreadyRunning {
                    state_dir: state_dir.to_path_buf(),
                    pid: text.trim().parse().ok(),
                }
                .into());
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        Ok(StateLock { file, path })
    }

    /// Removes the lock file, then lets go of the lock.
    pub(super) fn release(self) {
        let _ = std::fs::remove_file(&self.path);
        drop(self.file);
    }
}

/// Removes the `*.tmp` files of `<state>/session`: what a worker was writing (a KV snapshot
/// is written to a temporary file first, then renamed) when it was killed. Only called while
/// no worker runs.
pub(super) fn remove_interrupted_writes(state_dir: &Path) {
    let dir = state_dir.join("session");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && path.extension().is_some_and(|e| e == "tmp") {
            match std::fs::remove_file(&path) {
                Ok(()) => info!(path = %path.display(), "removed an interrupted write"),
                Err(e) => warn!(path = %path.display(), error = %e, "cannot remove"),
            }
        }
    }
}

/// Writes a secret readable by the owner only.
pub(super) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A new file each time: whatever was there (even a link) is replaced, never written through.
    let _ = std::fs::remove_file(path);
    crate::statedir::open_private(path, false)?.write_all(text.as_bytes())
}
