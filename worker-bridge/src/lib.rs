//! The Unity-bridge worker: owns the connection to the avatar so that a stuck or restarted
//! Unity app never blocks the conversation.
//!
//! Today it is the skeleton: it connects to the supervisor, says hello as
//! [`Role::BridgeWorker`], reports ready and answers heartbeats, shutdown and fault injection.
//! The Unity wire protocol, batching and reconnection arrive with issue 6.

use std::path::PathBuf;

use mate_protocol::{
    worker::{Next, WorkerLink},
    BridgeStatus, Endpoint, Error, FromWorker, Role, WorkerVitals,
};

/// Arguments of `mate worker bridge`.
#[derive(Debug, Clone)]
pub struct Args {
    pub endpoint: PathBuf,
}

/// Runs until the supervisor says shutdown or goes away.
pub fn run(args: &Args) -> Result<(), Error> {
    let mut link = WorkerLink::connect_from_env(&Endpoint::at(&args.endpoint), Role::BridgeWorker)?;
    link.send(&FromWorker::Ready)?;
    link.send(&FromWorker::BridgeStatus(BridgeStatus {
        last_error: Some("Unity bridge not implemented yet (issue 6)".into()),
        ..BridgeStatus::default()
    }))?;
    loop {
        match link.recv(&mut WorkerVitals::default) {
            Ok(Next::Shutdown { .. }) => return Ok(()),
            // Avatar commands have nowhere to go until the Unity connection exists.
            Ok(Next::Message(_)) => {}
            Err(e) if e.is_disconnect() => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}
