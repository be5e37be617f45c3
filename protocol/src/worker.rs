//! The worker end of a supervisor connection, shared by every worker kind.
//!
//! A worker is started by the supervisor as `mate worker <kind> --endpoint PATH` with its
//! one-time token in [`TOKEN_ENV`]. It connects, says hello, reports [`FromWorker::Ready`],
//! then answers messages. Heartbeats, shutdown and fault injection mean the same to every
//! worker and are handled here; everything else goes to the worker's own code.

use std::{
    io::{BufReader, Read},
    sync::{Arc, Mutex},
};

use interprocess::local_socket::Stream;

use crate::{
    frame::{read_frame, write_frame, Limit},
    handshake::TOKEN_ENV,
    AuthToken, Endpoint, Error, Fault, FromWorker, Hello, Role, ToWorker, WorkerVitals,
};

/// A worker's connection to its supervisor, split in two so that one thread can wait for
/// messages (and answer heartbeats) while another streams results through a [`LinkSender`].
#[derive(Debug)]
pub struct WorkerLink {
    rx: BufReader<Reading>,
    tx: LinkSender,
    supervisor_pid: u32,
}

/// The sending half of a [`WorkerLink`]; clones share one connection, and each frame is
/// written whole under a lock, so frames from several threads never interleave.
#[derive(Debug, Clone)]
pub struct LinkSender {
    // `&Stream` reads and writes, so sharing the stream is all the splitting it needs; the
    // mutex keeps each frame's bytes together.
    stream: Arc<Stream>,
    lock: Arc<Mutex<()>>,
}

/// The reading side: a shared stream that is only ever read here.
#[derive(Debug)]
struct Reading(Arc<Stream>);

impl Read for Reading {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl LinkSender {
    pub fn send(&self, msg: &FromWorker) -> Result<(), Error> {
        // A poisoned lock means another sender panicked between frames; the stream itself is
        // still whole, since frames are written with one `write_all`.
        let _frame = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        write_frame(&mut &*self.stream, msg, Limit::Data)
    }
}

/// What the worker's own code must deal with after [`WorkerLink::recv`].
// One message at a time, moved once: boxing would only add an allocation per message.
#[allow(clippy::large_enum_variant)]
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
        let stream = Arc::new(stream);
        Ok(WorkerLink {
            rx: BufReader::with_capacity(8 * 1024, Reading(Arc::clone(&stream))),
            tx: LinkSender {
                stream,
                lock: Arc::new(Mutex::new(())),
            },
            supervisor_pid,
        })
    }

    pub fn supervisor_pid(&self) -> u32 {
        self.supervisor_pid
    }

    /// A handle for sending from another thread.
    pub fn sender(&self) -> LinkSender {
        self.tx.clone()
    }

    pub fn send(&self, msg: &FromWorker) -> Result<(), Error> {
        self.tx.send(msg)
    }

    /// Waits for the next message, answering heartbeats with `vitals()` and carrying out
    /// injected faults on the way.
    pub fn recv(&mut self, vitals: &mut dyn FnMut() -> WorkerVitals) -> Result<Next, Error> {
        loop {
            match read_frame(&mut self.rx, Limit::Data)? {
                ToWorker::Heartbeat { seq } => self.send(&FromWorker::Heartbeat {
                    seq,
                    vitals: vitals(),
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
