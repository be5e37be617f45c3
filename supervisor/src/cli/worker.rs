//! `mate worker llm|bridge`, hidden: the supervisor re-executes its own binary with it, so one
//! build and one install carry every worker, each in its own process.

use std::path::PathBuf;

use mate::{logging, statedir};
use mate_protocol::WorkerKind;

use crate::Failure;

/// `mate worker llm|bridge`: logs to its own file in the state dir the supervisor passes in
/// `MATE_STATE_DIR`, then serves the supervisor at `endpoint` until told to stop.
pub fn run(kind: WorkerKind, endpoint: PathBuf) -> Result<(), Failure> {
    // What it writes (logs, KV snapshots) is private like the rest of the state dir.
    statedir::private_umask();
    if let Ok(state_dir) = std::env::var("MATE_STATE_DIR") {
        let filter = std::env::var("MATE_LOG").unwrap_or_else(|_| "info".into());
        let _ = logging::init(state_dir.as_ref(), &format!("worker-{kind}"), &filter);
    }
    match kind {
        #[cfg(feature = "llm")]
        WorkerKind::Llm => mate_worker_llm::run(&mate_worker_llm::Args { endpoint })?,
        #[cfg(not(feature = "llm"))]
        WorkerKind::Llm => {
            let _ = endpoint;
            return Err(anyhow::anyhow!(
                "this mate was built without the `llm` feature; rebuild with default features"
            )
            .into());
        }
        WorkerKind::Bridge => mate_worker_bridge::run(&mate_worker_bridge::Args { endpoint })?,
        WorkerKind::Api => mate_worker_api::run(&mate_worker_api::Args { endpoint })?,
    }
    Ok(())
}
