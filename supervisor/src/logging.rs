//! Each process logs to its own file under `<state>/logs/`, since stdout and the terminal
//! belong to the user (and later to the dashboard). `MATE_LOG` sets the filter.

use std::{path::Path, sync::Mutex};

use tracing_subscriber::EnvFilter;

/// Installs the subscriber for this process; `name` picks the file (`supervisor`,
/// `worker-llm`, …). Returns the log file's path.
pub fn init(state_dir: &Path, name: &str, filter: &str) -> std::io::Result<std::path::PathBuf> {
    let dir = state_dir.join("logs");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.log"));
    let file = crate::statedir::open_private(&path, true)?;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // A second init in the same process (tests) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(Mutex::new(file))
        .try_init();
    Ok(path)
}
