//! The API worker (`mate worker api`): an OpenAI-compatible HTTP front door. What chat front
//! ends (SillyTavern, Open WebUI, bots written with the `openai` package) send to
//! `/v1/chat/completions` and `/v1/completions` is parsed and checked here and turned into
//! mate's own [`mate_protocol::ChatMessage`]s and [`mate_protocol::Sampling`]; replies go back
//! as OpenAI's response objects, streamed as server-sent events, and failures in OpenAI's
//! error shape with the HTTP status clients act on.
//!
//! Theory of operation: the worker holds no conversation and no model. The main thread reads
//! the supervisor link (answering heartbeats with the worker's figures) and hands each answer
//! to the HTTP request waiting for it ([`calls`]); a tokio runtime serves HTTP ([`listen`],
//! [`server`]). Every generation is a call to the supervisor, which queues it with every other
//! client's chats, streams it from the LLM worker, and resumes it there after a crash, so the
//! client's stream only pauses. A client that disconnects drops its call, which cancels the
//! generation. A crash of this worker loses only its open HTTP connections.

pub mod calls;
pub mod error;
mod listen;
pub mod request;
pub mod response;
pub mod server;

use std::{
    path::PathBuf,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use mate_protocol::{
    worker::{Next, SelfMeter, WorkerLink},
    ApiVitals, Endpoint, Error, FromWorker, Level, Role, ToWorker, WorkerVitals,
};
use tracing::{debug, info};

pub use error::ApiError;
pub use request::{ChatRequest, CompletionRequest, Generation};

use crate::{calls::Calls, server::Stats};

/// Arguments of `mate worker api`.
#[derive(Debug, Clone)]
pub struct Args {
    pub endpoint: PathBuf,
}

/// Runs until the supervisor says shutdown or goes away.
pub fn run(args: &Args) -> Result<(), Error> {
    let mut link = WorkerLink::connect_from_env(&Endpoint::at(&args.endpoint), Role::ApiWorker)?;
    link.send(&FromWorker::Ready)?;
    let stats = Arc::new(Stats::default());
    let calls = Calls::new(link.sender());
    let mut meter = SelfMeter::default();
    let mut vitals = {
        let (stats, calls) = (Arc::clone(&stats), Arc::clone(&calls));
        move || WorkerVitals {
            api: Some(Box::new(ApiVitals {
                address: stats.address.lock().map(|a| a.clone()).unwrap_or_default(),
                connections: stats.connections.load(Ordering::Relaxed),
                requests: stats.requests.load(Ordering::Relaxed),
                errors: stats.errors.load(Ordering::Relaxed),
                in_flight: u32::try_from(calls.in_flight()).unwrap_or(u32::MAX),
            })),
            ..meter.vitals()
        }
    };
    // Nothing to serve until the supervisor says where; it does as soon as this worker is ready.
    let options = loop {
        match link.recv(&mut vitals) {
            Ok(Next::Message(ToWorker::ApiStart(options))) => break *options,
            Ok(Next::Message(other)) => debug!(?other, "not for the api worker; ignored"),
            Ok(Next::Shutdown { .. }) => return Ok(()),
            Err(e) if e.is_disconnect() => return Ok(()),
            Err(e) => return Err(e),
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("api")
        .enable_all()
        .build()
        .map_err(Error::Io)?;
    let listener = match runtime.block_on(tokio::net::TcpListener::bind(&options.address)) {
        Ok(listener) => listener,
        Err(e) => {
            // A restart would find the port taken too: a failure the user must fix.
            link.send(&FromWorker::Fatal {
                reason: format!(
                    "cannot listen on {}: {e}; set `[api] address` to a free port, or \
                     `[api] enabled = false`",
                    options.address
                ),
            })?;
            return wait_for_shutdown(&mut link, &mut vitals);
        }
    };
    let address = listener
        .local_addr()
        .map_or_else(|_| options.address.clone(), |a| a.to_string());
    if let Ok(mut a) = stats.address.lock() {
        a.clone_from(&address);
    }
    info!(%address, "serving");
    link.send(&FromWorker::Notice {
        level: Level::Info,
        message: format!("serving the OpenAI API at http://{address}/v1"),
    })?;
    // The address, for `mate ctl status`, before the first heartbeat asks.
    link.send(&FromWorker::Heartbeat {
        seq: 0,
        vitals: vitals(),
    })?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let shared = server::Shared {
        calls: Arc::clone(&calls),
        created: server::unix_now(),
        stats: Arc::clone(&stats),
        options: Arc::new(options.clone()),
    };
    let mut stopped_rx = stopped.clone();
    runtime.spawn(listen::serve(
        listener,
        server::router(shared),
        options.max_connections as usize,
        Duration::from_millis(u64::from(options.request_timeout_ms)),
        stats,
        async move {
            let _ = stopped_rx.wait_for(|s| *s).await;
        },
    ));
    let (result, grace) = loop {
        match link.recv(&mut vitals) {
            Ok(Next::Message(ToWorker::Api { id, event })) => calls.deliver(id, event),
            Ok(Next::Message(other)) => debug!(?other, "not for the api worker; ignored"),
            Ok(Next::Shutdown { grace_ms }) => {
                break (Ok(()), Duration::from_millis(u64::from(grace_ms)))
            }
            Err(e) if e.is_disconnect() => break (Ok(()), Duration::ZERO),
            Err(e) => break (Err(e), Duration::ZERO),
        }
    };
    // No new connections; replies in flight have the grace period (their answers no longer
    // come, so they end with an error event rather than hang).
    let _ = stop.send(true);
    calls.close_all();
    drop(stopped);
    runtime.shutdown_timeout(grace.min(Duration::from_secs(2)));
    result
}

fn wait_for_shutdown(
    link: &mut WorkerLink,
    vitals: &mut dyn FnMut() -> WorkerVitals,
) -> Result<(), Error> {
    loop {
        match link.recv(vitals) {
            Ok(Next::Shutdown { .. }) => return Ok(()),
            Ok(Next::Message(_)) => {}
            Err(e) if e.is_disconnect() => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}
