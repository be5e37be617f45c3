//! The Unity side of the bridge worker: one thread that owns the TCP connection and the
//! [`Outbox`], driven by one closed [`Input`] enum.
//!
//! While Unity is not there it retries with backoff (100 ms doubling up to
//! `reconnect_max_ms`), keeping commands queued. A reader thread per connection turns reply
//! lines into inputs; writes have a timeout, so a Unity that stops reading costs a reconnect,
//! never a stuck worker. The supervisor hears about every change of connection through
//! [`FromWorker::BridgeStatus`] and a notice; heartbeats carry the same status.

use std::{
    io::{BufReader, Write},
    net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use mate_protocol::{
    unity::{self, Line},
    worker::LinkSender,
    AvatarCommand, BridgeStatus, FromWorker, Level, UnityOptions,
};
use tracing::{debug, info, warn};

use crate::outbox::{Answer, Outbox, Timing};

/// Everything that can happen to the Unity thread.
#[derive(Debug)]
pub enum Input {
    Configure(UnityOptions),
    Command(AvatarCommand),
    /// A line read on connection `conn`: a reply, or why it is not one.
    Line {
        conn: u64,
        reply: Result<unity::UnityReply, String>,
    },
    /// Connection `conn` ended (Unity closed it, or reading failed).
    Closed {
        conn: u64,
        why: String,
    },
    Shutdown,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Counter-only changes reach the supervisor at most this often (heartbeats carry them too).
const STATUS_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Connection {
    id: u64,
    stream: TcpStream,
}

/// Unity issues noticed on this connection, told to the supervisor once each (the counters
/// in the status carry the rest).
#[derive(Debug, Default)]
struct Told {
    refused: bool,
    timeout: bool,
    malformed: bool,
}

#[derive(Debug)]
struct Bridge {
    opts: Option<UnityOptions>,
    outbox: Outbox,
    conn: Option<Connection>,
    conns: u64,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// The reason of the last failed attempt, told once until it changes.
    waiting_why: Option<String>,
    told: Told,
    status: BridgeStatus,
    shared: Arc<Mutex<BridgeStatus>>,
    sent_status: (BridgeStatus, Instant),
    link: LinkSender,
    inputs: mpsc::Sender<Input>,
}

/// Runs the Unity thread until [`Input::Shutdown`] or until every sender is gone.
pub fn run(
    rx: mpsc::Receiver<Input>,
    inputs: mpsc::Sender<Input>,
    link: LinkSender,
    shared: Arc<Mutex<BridgeStatus>>,
) {
    let mut bridge = Bridge {
        outbox: Outbox::new(Timing::from(&UnityOptions::default())),
        opts: None,
        conn: None,
        conns: 0,
        retry_at: None,
        backoff: FIRST_RETRY,
        waiting_why: None,
        told: Told::default(),
        status: BridgeStatus::default(),
        shared,
        sent_status: (BridgeStatus::default(), Instant::now()),
        link,
        inputs,
    };
    loop {
        let input = match bridge.next_deadline() {
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match input {
            Ok(Input::Shutdown) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Ok(input) => bridge.handle(input),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        bridge.tick(Instant::now());
        bridge.publish();
    }
    bridge.close("the bridge worker is stopping");
}

impl Bridge {
    fn handle(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::Configure(opts) => self.configure(opts, now),
            Input::Command(cmd) => self.outbox.push(cmd, now),
            Input::Line { conn, reply } if self.is_current(conn) => self.on_line(reply),
            Input::Closed { conn, why } if self.is_current(conn) => self.lost(&why),
            // From a connection already replaced.
            Input::Line { .. } | Input::Closed { .. } => {}
            Input::Shutdown => {}
        }
    }

    fn configure(&mut self, opts: UnityOptions, now: Instant) {
        self.outbox.set_timing(Timing::from(&opts));
        if let Some(path) = &opts.vrm {
            self.outbox
                .push(AvatarCommand::LoadVrm { path: path.clone() }, now);
        }
        if opts.blink {
            self.outbox
                .push(AvatarCommand::Blink { enabled: true }, now);
        }
        if self.opts.as_ref().map(|o| &o.address) != Some(&opts.address) {
            self.close("the Unity address changed");
            self.status.peer = opts.address.clone();
            self.retry_at = Some(now);
            self.backoff = FIRST_RETRY;
        }
        self.opts = Some(opts);
    }

    fn is_current(&self, conn: u64) -> bool {
        self.conn.as_ref().is_some_and(|c| c.id == conn)
    }

    fn next_deadline(&self) -> Option<Instant> {
        let outbox = self.outbox.next_deadline();
        let retry = if self.conn.is_none() {
            self.retry_at
        } else {
            None
        };
        // Wake at least once per status period while something may have changed.
        let status = Some(self.sent_status.1 + STATUS_EVERY);
        [outbox, retry, status].into_iter().flatten().min()
    }

    fn tick(&mut self, now: Instant) {
        if self.conn.is_none() && self.retry_at.is_some_and(|at| at <= now) {
            self.connect(now);
        }
        for name in self.outbox.expire(now) {
            let why = format!(
                "no reply from Unity to {name} within {} ms",
                self.opts.as_ref().map_or(0, |o| o.ack_timeout_ms)
            );
            warn!("{why}");
            if !std::mem::replace(&mut self.told.timeout, true) {
                self.notice(
                    Level::Warn,
                    format!("{why} (further timeouts are only counted)"),
                );
            }
            self.status.last_error = Some(why);
        }
        if self.conn.is_none() {
            return;
        }
        while let Some(line) = self.outbox.take_due(now) {
            debug!(command = line.name(), "to Unity");
            let written = self
                .conn
                .as_mut()
                .map(|c| (&c.stream).write_all(&line.to_line()));
            if let Some(Err(e)) = written {
                self.lost(&format!("writing to Unity failed: {e}"));
                return;
            }
        }
    }

    fn connect(&mut self, now: Instant) {
        let Some(opts) = &self.opts else { return };
        let address = opts.address.clone();
        match open(&address) {
            Ok((stream, peer)) => {
                let reader = match stream.try_clone() {
                    Ok(reader) => reader,
                    Err(e) => return self.retry(now, format!("cannot read the socket: {e}")),
                };
                self.conns += 1;
                let id = self.conns;
                let inputs = self.inputs.clone();
                let max = opts.max_line_bytes as usize;
                let spawned = std::thread::Builder::new()
                    .name("unity-reader".into())
                    .spawn(move || read_replies(reader, id, max, &inputs));
                if let Err(e) = spawned {
                    return self.retry(now, format!("cannot start a reader thread: {e}"));
                }
                self.conn = Some(Connection { id, stream });
                self.backoff = FIRST_RETRY;
                self.retry_at = None;
                self.waiting_why = None;
                self.told = Told::default();
                self.outbox.connected(now);
                self.status.connected = true;
                self.status.connects += 1;
                // Errors are about the current connection, or the wait for one.
                self.status.last_error = None;
                self.status.peer = if peer.to_string() == address {
                    address.clone()
                } else {
                    format!("{address} ({peer})")
                };
                let restored = self.outbox.describe_state();
                info!(%peer, restored, "connected to Unity");
                self.notice(
                    Level::Info,
                    format!("connected to Unity at {address}; restoring {restored}"),
                );
            }
            Err(why) => self.retry(now, why),
        }
    }

    fn retry(&mut self, now: Instant, why: String) {
        let max = Duration::from_millis(
            self.opts
                .as_ref()
                .map_or(2000, |o| o.reconnect_max_ms.into()),
        )
        .max(FIRST_RETRY);
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(max);
        if self.waiting_why.as_deref() != Some(why.as_str()) {
            let address = self.opts.as_ref().map_or("", |o| o.address.as_str());
            info!(address, why, "waiting for Unity");
            self.notice(
                Level::Info,
                format!(
                    "waiting for Unity at {address}: {why}; retrying every {} ms at most",
                    max.as_millis()
                ),
            );
            self.status.last_error = Some(format!("waiting for Unity: {why}"));
            self.waiting_why = Some(why);
        }
    }

    fn on_line(&mut self, reply: Result<unity::UnityReply, String>) {
        let answer = match reply {
            Ok(reply) => self.outbox.on_reply(&reply),
            Err(why) => {
                self.outbox.malformed();
                Err(why)
            }
        };
        match answer {
            Ok(Answer::Done { .. }) => {}
            Ok(Answer::Refused { command, message }) => {
                let why = format!("Unity refused {command}: {message}");
                warn!("{why}");
                if !std::mem::replace(&mut self.told.refused, true) {
                    self.notice(
                        Level::Warn,
                        format!("{why} (further refusals are only counted)"),
                    );
                }
                self.status.last_error = Some(why);
            }
            Err(why) => {
                let why = format!("bad reply from Unity: {why}");
                warn!("{why}");
                if !std::mem::replace(&mut self.told.malformed, true) {
                    self.notice(
                        Level::Warn,
                        format!("{why} (ignored; further bad replies are only counted)"),
                    );
                }
                self.status.last_error = Some(why);
            }
        }
    }

    /// The connection is gone: queue what was unanswered and start reconnecting.
    fn lost(&mut self, why: &str) {
        self.close(why);
        self.outbox.disconnected();
        let now = Instant::now();
        self.retry_at = Some(now + FIRST_RETRY);
        let address = self.opts.as_ref().map_or("", |o| o.address.as_str());
        let mut status = BridgeStatus::default();
        self.outbox.report(&mut status, now);
        warn!(address, why, "lost Unity");
        self.notice(
            Level::Warn,
            format!(
                "lost Unity at {address}: {why}; reconnecting ({} commands queued)",
                status.queue_depth
            ),
        );
        self.status.last_error = Some(format!("lost Unity: {why}"));
    }

    fn close(&mut self, why: &str) {
        if let Some(conn) = self.conn.take() {
            debug!(why, "closing the Unity connection");
            // Wakes the reader thread, which then ends.
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
        self.status.connected = false;
        if let Some(opts) = &self.opts {
            self.status.peer = opts.address.clone();
        }
    }

    fn notice(&self, level: Level, message: String) {
        // The supervisor being gone ends the worker through its main thread.
        let _ = self.link.send(&FromWorker::Notice { level, message });
    }

    /// Shares the status with heartbeats, and sends it when something a user watches changed
    /// (at most every second for counters alone).
    fn publish(&mut self) {
        let now = Instant::now();
        self.outbox.report(&mut self.status, now);
        if let Ok(mut shared) = self.shared.lock() {
            shared.clone_from(&self.status);
        }
        let (last, at) = &self.sent_status;
        let s = &self.status;
        // Whether anything waits is visible too; how much is a counter.
        let idle = |s: &BridgeStatus| s.queue_depth == 0 && s.acks_pending == 0;
        let visible = (s.connected, &s.peer, &s.last_error, &s.expression, idle(s))
            != (
                last.connected,
                &last.peer,
                &last.last_error,
                &last.expression,
                idle(last),
            );
        let counters = s != last && now.duration_since(*at) >= STATUS_EVERY;
        if visible || counters {
            let _ = self
                .link
                .send(&FromWorker::BridgeStatus(Box::new(self.status.clone())));
            self.sent_status = (self.status.clone(), now);
        }
    }
}

/// Connects to the first address `address` resolves to, with the timeouts set.
fn open(address: &str) -> Result<(TcpStream, SocketAddr), String> {
    let addrs: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {address}: {e}"))?
        .collect();
    let mut last = format!("{address} resolves to no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => {
                // Small lines must leave at once, not wait for Nagle's algorithm.
                stream
                    .set_nodelay(true)
                    .and_then(|()| stream.set_write_timeout(Some(WRITE_TIMEOUT)))
                    .map_err(|e| format!("cannot set up the socket: {e}"))?;
                return Ok((stream, addr));
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// The reader thread of connection `conn`: every line becomes an [`Input::Line`], the end an
/// [`Input::Closed`].
fn read_replies(stream: TcpStream, conn: u64, max: usize, inputs: &mpsc::Sender<Input>) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    let why = loop {
        let reply = match unity::read_line(&mut reader, &mut buf, max) {
            Ok(Line::Complete) if buf.is_empty() => continue,
            Ok(Line::Complete) => unity::parse_reply(&buf),
            Ok(Line::TooLong(n)) => Err(format!(
                "a reply line of {n} bytes is over the {max}-byte limit; dropped"
            )),
            Ok(Line::Eof) => break "Unity closed the connection".to_string(),
            Err(e) => break format!("reading from Unity failed: {e}"),
        };
        if inputs.send(Input::Line { conn, reply }).is_err() {
            return;
        }
    };
    let _ = inputs.send(Input::Closed { conn, why });
}
