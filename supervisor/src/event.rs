//! What can happen to the supervisor: the one closed enum its loop runs over. The server,
//! the child waiters, the GPU sampler and the signal handlers produce these; only the loop
//! (`supervisor`) consumes them.

use mate_protocol::{
    ExitStatus, FromWorker, Reply, Request, Role, ToWorker, VramReading, WorkerKind,
};
use tokio::sync::mpsc;

use crate::gpu::GpuError;

/// Everything that can happen to the supervisor.
#[derive(Debug)]
pub enum Event {
    WorkerConnected {
        kind: WorkerKind,
        generation: u64,
        tx: mpsc::Sender<ToWorker>,
    },
    FromWorker {
        kind: WorkerKind,
        generation: u64,
        msg: FromWorker,
    },
    WorkerExited {
        kind: WorkerKind,
        generation: u64,
        status: ExitStatus,
    },
    Request {
        request: Request,
        reply: mpsc::Sender<Reply>,
        pid: u32,
    },
    ClientAttached {
        role: Role,
        pid: u32,
    },
    /// A connection was refused (bad token, garbage, flood, foreign user).
    Rejected(String),
    /// A GPU reading, or why there is none this time.
    Gpu(Result<VramReading, GpuError>),
    Stop(&'static str),
}
