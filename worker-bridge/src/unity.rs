//! The Unity side of the bridge worker: one thread that owns the TCP connection and the
//! [`Outbox`], driven by one closed [`Input`] enum and its own timers.
//!
//! While Unity is not there it retries with backoff (100 ms doubling up to
//! `reconnect_max_ms`), keeping commands queued. A reader thread per connection turns reply
//! lines into inputs; writes have a timeout, so a Unity that stops reading costs a reconnect,
//! never a stuck worker. The backoff starts over only once Unity has answered, so a peer that
//! accepts and hangs up is not hammered. The supervisor hears about every change of
//! connection through [`FromWorker::BridgeStatus`] and a notice; heartbeats carry the same
//! status.

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
/// Bad reply lines logged at warn level per connection (the rest at debug).
const LOGGED_BAD_LINES: u32 = 10;

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
    /// Bad lines logged on this connection.
    logged: u32,
}

#[derive(Debug)]
struct Bridge {
    opts: UnityOptions,
    outbox: Outbox,
    conn: Option<Connection>,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// The reason of the last failed attempt, told once until it changes.
    waiting_why: Option<String>,
    /// Unity answered on this connection.
    answered: bool,
    /// A connection was lost before Unity answered: connects and losses are only counted
    /// (`connects` in the status) until one gets an answer.
    quiet: bool,
    told: Told,
    status: BridgeStatus,
    shared: Arc<Mutex<BridgeStatus>>,
    sent_status: BridgeStatus,
    status_due: Instant,
    link: LinkSender,
    inputs: mpsc::SyncSender<Input>,
}

/// Runs the Unity thread until [`Input::Shutdown`]: connects to `opts.address`, brings the
/// avatar to `avatar` (the latest command per part), then serves commands.
pub fn run(
    opts: UnityOptions,
    avatar: Vec<AvatarCommand>,
    rx: mpsc::Receiver<Input>,
    inputs: mpsc::SyncSender<Input>,
    link: LinkSender,
    shared: Arc<Mutex<BridgeStatus>>,
) {
    let now = Instant::now();
    let mut outbox = Outbox::new(Timing::from(&opts));
    for cmd in avatar {
        outbox.push(cmd, now);
    }
    let mut bridge = Bridge {
        status: BridgeStatus {
            peer: opts.address.clone(),
            ..BridgeStatus::default()
        },
        opts,
        outbox,
        conn: None,
        retry_at: Some(now),
        backoff: FIRST_RETRY,
        waiting_why: None,
        answered: false,
        quiet: false,
        told: Told::default(),
        shared,
        sent_status: BridgeStatus::default(),
        status_due: now,
        link,
        inputs,
    };
    loop {
        bridge.tick(Instant::now());
        bridge.publish();
        let wait = bridge
            .next_deadline()
            .saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Input::Shutdown) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Ok(input) => bridge.handle(input),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    bridge.close("the bridge worker is stopping");
}

impl Bridge {
    fn handle(&mut self, input: Input) {
        match input {
            Input::Command(cmd) => self.outbox.push(cmd, Instant::now()),
            Input::Line { conn, reply } if self.is_current(conn) => self.on_line(reply),
            Input::Closed { conn, why } if self.is_current(conn) => self.lost(&why),
            // From a connection already replaced.
            Input::Line { .. } | Input::Closed { .. } | Input::Shutdown => {}
        }
    }

    fn is_current(&self, conn: u64) -> bool {
        self.conn.as_ref().is_some_and(|c| c.id == conn)
    }

    /// The next timer: the outbox's (only while connected: nothing is sent otherwise), the
    /// next connection attempt, or the next status.
    fn next_deadline(&self) -> Instant {
        let (outbox, retry) = match self.conn {
            Some(_) => (self.outbox.next_deadline(), None),
            None => (None, self.retry_at),
        };
        [outbox, retry]
            .into_iter()
            .flatten()
            .fold(self.status_due, Instant::min)
    }

    fn tick(&mut self, now: Instant) {
        if self.conn.is_none() && self.retry_at.is_some_and(|at| at <= now) {
            self.connect(now);
        }
        if self.conn.is_none() {
            return;
        }
        for name in self.outbox.expire(now) {
            let why = format!(
                "no reply from Unity to {name} within {} ms",
                self.opts.ack_timeout_ms
            );
            warn!("{why}");
            let first = !std::mem::replace(&mut self.told.timeout, true);
            self.trouble(first, why, "further timeouts are only counted");
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
        let address = self.opts.address.clone();
        let (stream, peer) = match open(&address) {
            Ok(opened) => opened,
            Err(why) => return self.retry(now, why),
        };
        let reader = match stream.try_clone() {
            Ok(reader) => reader,
            Err(e) => return self.retry(now, format!("cannot read the socket: {e}")),
        };
        // Connection ids: the successful connections so far, this one included.
        let id = u64::from(self.status.connects) + 1;
        let (inputs, max) = (self.inputs.clone(), self.opts.max_line_bytes as usize);
        let spawned = std::thread::Builder::new()
            .name("unity-reader".into())
            .spawn(move || read_replies(reader, id, max, &inputs));
        if let Err(e) = spawned {
            return self.retry(now, format!("cannot start a reader thread: {e}"));
        }
        self.conn = Some(Connection { id, stream });
        self.retry_at = None;
        self.waiting_why = None;
        self.answered = false;
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
        if !self.quiet {
            self.notice(
                Level::Info,
                format!("connected to Unity at {address}; restoring {restored}"),
            );
        }
    }

    /// Schedules the next attempt, doubling the wait up to `reconnect_max_ms`.
    fn schedule_retry(&mut self, now: Instant) {
        let max = Duration::from_millis(self.opts.reconnect_max_ms.into()).max(FIRST_RETRY);
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(max);
    }

    fn retry(&mut self, now: Instant, why: String) {
        self.schedule_retry(now);
        if self.waiting_why.as_deref() != Some(why.as_str()) {
            let address = &self.opts.address;
            info!(address, why, "waiting for Unity");
            self.notice(
                Level::Info,
                format!(
                    "waiting for Unity at {address}: {why}; retrying every {} ms at most",
                    self.opts.reconnect_max_ms
                ),
            );
            self.status.last_error = Some(format!("waiting for Unity: {why}"));
            self.waiting_why = Some(why);
        }
    }

    fn on_line(&mut self, reply: Result<unity::UnityReply, String>) {
        let answer = match reply {
            Ok(reply) => {
                if !std::mem::replace(&mut self.answered, true) {
                    // A peer that answers is a working Unity: quick reconnects again.
                    self.backoff = FIRST_RETRY;
                    self.quiet = false;
                }
                self.outbox.on_reply(&reply, Instant::now())
            }
            Err(why) => {
                self.outbox.malformed();
                Err(why)
            }
        };
        match answer {
            Ok(Answer::Done { .. } | Answer::Late) => {}
            Ok(Answer::Refused { command, message }) => {
                let why = format!("Unity refused {command}: {message}");
                warn!("{why}");
                let first = !std::mem::replace(&mut self.told.refused, true);
                self.trouble(first, why, "further refusals are only counted");
            }
            Err(why) => {
                let why = format!("bad reply from Unity: {why}");
                self.told.logged += 1;
                if self.told.logged <= LOGGED_BAD_LINES {
                    warn!("{why}");
                } else {
                    debug!("{why}");
                }
                let first = !std::mem::replace(&mut self.told.malformed, true);
                self.trouble(first, why, "ignored; further bad replies are only counted");
            }
        }
    }

    /// The connection is gone: queue what was unanswered and start reconnecting.
    fn lost(&mut self, why: &str) {
        self.close(why);
        self.outbox.disconnected();
        let now = Instant::now();
        self.schedule_retry(now);
        let queued = self.outbox.queue_depth();
        let address = &self.opts.address;
        warn!(address, why, "lost Unity");
        if !self.quiet {
            let unanswered = if self.answered {
                ""
            } else {
                "; it never answered, so further reconnects are only counted until it does"
            };
            self.notice(
                Level::Warn,
                format!(
                    "lost Unity at {address}: {why}; reconnecting ({queued} commands queued){unanswered}"
                ),
            );
        }
        self.quiet = !self.answered;
        self.status.last_error = Some(format!("lost Unity: {why}"));
    }

    fn close(&mut self, why: &str) {
        if let Some(conn) = self.conn.take() {
            debug!(why, "closing the Unity connection");
            // Wakes the reader thread, which then ends.
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
        self.status.connected = false;
        self.status.peer = self.opts.address.clone();
    }

    /// A problem on this connection: the last error, and a notice the first time (`first`).
    fn trouble(&mut self, first: bool, why: String, further: &str) {
        if first {
            self.notice(Level::Warn, format!("{why} ({further})"));
        }
        self.status.last_error = Some(why);
    }

    fn notice(&self, level: Level, message: String) {
        // The supervisor being gone ends the worker through its main thread.
        let _ = self.link.send(&FromWorker::Notice { level, message });
    }

    /// Sends the status when something a user watches changed (and once a second when only
    /// counters did), and shares what it sent with heartbeats.
    fn publish(&mut self) {
        let now = Instant::now();
        self.outbox.report(&mut self.status, now);
        let (s, last) = (&self.status, &self.sent_status);
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
        let due = now >= self.status_due;
        if visible || (due && s != last) {
            let _ = self
                .link
                .send(&FromWorker::BridgeStatus(Box::new(self.status.clone())));
            self.sent_status = self.status.clone();
            if let Ok(mut shared) = self.shared.lock() {
                shared.clone_from(&self.status);
            }
        }
        if due {
            self.status_due = now + STATUS_EVERY;
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
fn read_replies(stream: TcpStream, conn: u64, max: usize, inputs: &mpsc::SyncSender<Input>) {
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
