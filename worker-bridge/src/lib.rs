//! The Unity-bridge worker: owns the connection to the avatar so that a stuck or restarted
//! Unity app never blocks the conversation.
//!
//! Theory of operation: the main thread reads the supervisor's messages (answering heartbeats
//! with the bridge's status) and hands avatar commands to the Unity thread ([`unity`]), which
//! owns the TCP connection and the [`outbox::Outbox`]: commands are coalesced within a
//! frame-sized window into one `batch` line, answers are matched to what was sent, and after
//! a reconnect the avatar is brought back to its state. The Unity wire format lives in
//! [`mate_protocol::unity`]; [`sim`] is a Unity-side peer for demos, tests and benchmarks.

pub mod outbox;
pub mod sim;
mod unity;
pub mod vmc;

use std::{
    path::PathBuf,
    sync::{mpsc, Arc, Mutex},
};

use mate_protocol::{
    worker::{Next, SelfMeter, WorkerLink},
    BridgeStatus, Endpoint, Error, FromWorker, Role, ToWorker, WorkerVitals,
};
use tracing::debug;

use crate::unity::Input;

/// Arguments of `mate worker bridge`.
#[derive(Debug, Clone)]
pub struct Args {
    pub endpoint: PathBuf,
}

/// How many inputs may wait for the Unity thread. The reader threads block beyond it (TCP
/// then pushes back on a flooding peer); the main thread too, which a stuck Unity thread
/// deserves: its heartbeats stop and the supervisor restarts the worker.
const INPUTS: usize = 1024;

/// Runs until the supervisor says shutdown or goes away.
pub fn run(args: &Args) -> Result<(), Error> {
    let mut link = WorkerLink::connect_from_env(&Endpoint::at(&args.endpoint), Role::BridgeWorker)?;
    link.send(&FromWorker::Ready)?;
    let shared = Arc::new(Mutex::new(BridgeStatus::default()));
    let mut meter = SelfMeter::default();
    let mut vitals = || WorkerVitals {
        bridge: shared.lock().ok().map(|s| Box::new(s.clone())),
        ..meter.vitals()
    };
    // Nothing to do until the supervisor says where Unity is. It does so as soon as this worker
    // is ready, before any avatar command, which it sends only to a ready bridge.
    let (options, avatar) = loop {
        match link.recv(&mut vitals) {
            Ok(Next::Message(ToWorker::Unity { options, avatar })) => break (options, avatar),
            Ok(Next::Message(other)) => debug!(?other, "not for the bridge; ignored"),
            Ok(Next::Shutdown { .. }) => return Ok(()),
            Err(e) if e.is_disconnect() => return Ok(()),
            Err(e) => return Err(e),
        }
    };
    // The VMC sink, when asked for: its own thread, the same commands.
    let vmc = match options.vmc.clone() {
        Some(vmc_options) => {
            let (vmc_tx, vmc_rx) = mpsc::channel();
            let avatar = avatar.clone();
            std::thread::Builder::new()
                .name("vmc".into())
                .spawn(move || vmc::run(vmc_options, avatar, vmc_rx))
                .map_err(Error::Io)?;
            Some(vmc_tx)
        }
        None => None,
    };
    let (tx, rx) = mpsc::sync_channel(INPUTS);
    let unity = {
        let (tx, sender, shared) = (tx.clone(), link.sender(), Arc::clone(&shared));
        std::thread::Builder::new()
            .name("unity".into())
            .spawn(move || unity::run(options, avatar, rx, tx, sender, shared))
            .map_err(Error::Io)?
    };
    let result = loop {
        let input = match link.recv(&mut vitals) {
            Ok(Next::Message(ToWorker::Avatar(cmd))) => {
                if let Some(vmc) = &vmc {
                    let _ = vmc.send(cmd.clone());
                }
                Input::Command(cmd)
            }
            Ok(Next::Message(other)) => {
                debug!(?other, "not for the bridge; ignored");
                continue;
            }
            Ok(Next::Shutdown { .. }) => break Ok(()),
            Err(e) if e.is_disconnect() => break Ok(()),
            Err(e) => break Err(e),
        };
        if tx.send(input).is_err() {
            break Ok(());
        }
    };
    // Dropping the VMC sender (with `vmc`) ends that thread.
    drop(vmc);
    let _ = tx.send(Input::Shutdown);
    // Connecting and writing have timeouts, so this ends within a few seconds at worst.
    let _ = unity.join();
    result
}
