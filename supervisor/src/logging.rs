//! Each process logs to its own file under `<state>/logs/`, since stdout and the terminal
//! belong to the user (and later to the dashboard). `MATE_LOG` sets the filter.

use std::{fs::File, io::Write, path::Path, sync::Mutex};

use tracing_subscriber::EnvFilter;

/// Installs the subscriber for this process; `name` picks the file (`supervisor`,
/// `worker-llm`, …). Returns the log file's path.
pub fn init(state_dir: &Path, name: &str, filter: &str) -> std::io::Result<std::path::PathBuf> {
    let dir = state_dir.join("logs");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.log"));
    let file = Lossy(crate::statedir::open_private(&path, true)?);
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // A second init in the same process (tests) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(Mutex::new(file))
        .try_init();
    Ok(path)
}

/// The log file, where a failed write (a full disk) loses that line and nothing else. Without
/// it, tracing reports the failure on stderr with `eprintln!`, which panics when stderr is a
/// file on the same full disk, so a full disk would crash every worker as it logs.
struct Lossy(File);

impl Write for Lossy {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(self.0.write(buf).unwrap_or(buf.len()))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}
