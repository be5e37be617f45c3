//! The worker end of a supervisor connection, shared by every worker kind.
//!
//! A worker is started by the supervisor as `mate worker <kind> --endpoint PATH` with its
//! one-time token in [`TOKEN_ENV`]. It connects, says hello, reports [`FromWorker::Ready`],
//! then answers messages. Heartbeats, shutdown and fault injection mean the same to every
//! worker and are handled here; everything else goes to the worker's own code.

use interprocess::local_socket::Stream;

use crate::{
    frame::{Framed, Limit},
    handshake::TOKEN_ENV,
    AuthToken, Endpoint, Error, Fault, FromWorker, Hello, Role, ToWorker, WorkerVitals,
};

/// A worker's connection to its supervisor.
#[derive(Debug)]
pub struct WorkerLink {
    conn: Framed<Stream>,
    supervisor_pid: u32,
}

/// What the worker's own code must deal with after [`WorkerLink::recv`].
#[derive(Debug)]
pub enum Next {
    /// A message only this worker kind understands.
    Message(ToWorker),
    /// The supervisor asked for a clean exit within `grace_ms`.
    Shutdown { grace_ms: u32 },
}

impl WorkerLink {
    /// Connects with the token from the environment and introduces itself as `role`.
    pub fn connect_from_env(endpoint: &Endpoint, role: Role) -> Result<Self, Error> {
        let token = std::env::var(TOKEN_ENV).map_err(|_| {
            Error::BadToken(format!(
                "{TOKEN_ENV} is not set: workers are started by `mate up`, not by hand"
            ))
        })?;
        let token = AuthToken::from_hex(&token)?;
        let (stream, supervisor_pid) = endpoint.connect(&Hello::new(role, token))?;
        Ok(WorkerLink {
            conn: Framed::new(stream, Limit::Data),
            supervisor_pid,
        })
    }

    pub fn supervisor_pid(&self) -> u32 {
        self.supervisor_pid
    }

    pub fn send(&mut self, msg: &FromWorker) -> Result<(), Error> {
        self.conn.send(msg)
    }

    /// Waits for the next message, answering heartbeats and carrying out injected faults on
    /// the way.
    pub fn recv(&mut self) -> Result<Next, Error> {
        loop {
            match self.conn.recv()? {
                ToWorker::Heartbeat { seq } => self.send(&FromWorker::Heartbeat {
                    seq,
                    vitals: WorkerVitals::default(),
                })?,
                ToWorker::Inject(fault) => inject(fault),
                ToWorker::Shutdown { grace_ms } => return Ok(Next::Shutdown { grace_ms }),
                other => return Ok(Next::Message(other)),
            }
        }
    }
}

/// Carries out an injected fault: `Crash` aborts like a real crash (no unwinding, no goodbye),
/// `Hang` stops answering anything while staying alive.
pub fn inject(fault: Fault) -> ! {
    match fault {
        Fault::Crash => std::process::abort(),
        Fault::Hang => loop {
            std::thread::park();
        },
    }
}
