//! The LLM worker: the process that may crash or run out of memory, so it holds nothing the
//! supervisor cannot rebuild.
//!
//! Today it is the skeleton every later piece hangs on: it connects to the supervisor, says
//! hello as [`Role::LlmWorker`], reports ready, answers heartbeats, shutdown and fault
//! injection, and refuses generation requests with a reason. Inference through llama.cpp
//! arrives with issue 3.

use std::path::PathBuf;

use mate_protocol::{
    worker::{Next, WorkerLink},
    Endpoint, Error, FromWorker, Role, ToWorker,
};

/// Arguments of `mate worker llm`.
#[derive(Debug, Clone)]
pub struct Args {
    pub endpoint: PathBuf,
}

/// Runs until the supervisor says shutdown or goes away.
pub fn run(args: &Args) -> Result<(), Error> {
    let mut link = WorkerLink::connect_from_env(&Endpoint::at(&args.endpoint), Role::LlmWorker)?;
    link.send(&FromWorker::Ready)?;
    loop {
        match link.recv() {
            Ok(Next::Shutdown { .. }) => return Ok(()),
            Ok(Next::Message(msg)) => handle(&mut link, msg)?,
            // The supervisor is gone: nothing left to work for.
            Err(e) if e.is_disconnect() => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

fn handle(link: &mut WorkerLink, msg: ToWorker) -> Result<(), Error> {
    match msg {
        ToWorker::Generate { request_id, .. } => link.send(&FromWorker::Failed {
            request_id,
            reason: "this build has no inference yet (llama.cpp arrives with issue 3)".into(),
        }),
        ToWorker::Cancel { .. } | ToWorker::Load { .. } => Ok(()),
        other => link.send(&FromWorker::Notice {
            level: mate_protocol::Level::Warn,
            message: format!("llm worker ignores {other:?}"),
        }),
    }
}
