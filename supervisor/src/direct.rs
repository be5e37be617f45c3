//! One worker driven directly, without the supervisor's event loop: spawn `mate worker <kind>`
//! with a one-time token, accept its hello, then send and receive, blocking. `mate bench llm`
//! measures the worker through this, and tests use it to talk to a real worker process.
//!
//! Frames are read by a thread of their own and handed over through a channel, so waiting has
//! a deadline on every platform: a socket's receive timeout would do on Unix, but Windows'
//! named pipes have no I/O timeouts.

use std::{
    io::BufReader,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use interprocess::local_socket::{
    traits::{Listener as _, ListenerExt as _},
    ListenerNonblockingMode, Stream,
};
use mate_protocol::{
    endpoint::accept_hello,
    frame::{read_frame, write_frame},
    handshake::TOKEN_ENV,
    AuthToken, Endpoint, Error, FromWorker, Limit, Rejection, ToWorker, WorkerKind,
};

/// A spawned worker and the supervisor end of its connection.
#[derive(Debug)]
pub struct DirectWorker {
    child: Child,
    stream: Arc<Stream>,
    /// What the reading thread got: frames, then the error that ended the connection.
    frames: mpsc::Receiver<Result<FromWorker, Error>>,
}

impl DirectWorker {
    /// Starts `exe worker <kind>` listening in `run_dir` (keep the path short: socket paths are
    /// limited to about 100 bytes), with the worker's stderr appended to `stderr_log`.
    pub fn spawn(
        exe: &Path,
        kind: WorkerKind,
        run_dir: &Path,
        stderr_log: &Path,
    ) -> anyhow::Result<DirectWorker> {
        let endpoint = Endpoint::for_state_dir(run_dir);
        let listener = endpoint.listen()?;
        listener.set_nonblocking(ListenerNonblockingMode::Accept)?;
        let token = AuthToken::generate()?;
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(stderr_log)
            .with_context(|| format!("opening {}", stderr_log.display()))?;
        let mut child = Command::new(exe)
            .args(["worker", kind.as_str(), "--endpoint"])
            .arg(endpoint.path())
            .env(TOKEN_ENV, token.to_hex())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut stream = loop {
            match listener.incoming().next() {
                Some(Ok(stream)) => break stream,
                Some(Err(e)) if e.kind() != std::io::ErrorKind::WouldBlock => return Err(e.into()),
                _ => {}
            }
            if let Some(status) = child.try_wait()? {
                bail!("the {kind} worker exited before connecting ({status})");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("the {kind} worker did not connect within 10 s");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        accept_hello(
            &mut stream,
            mate_protocol::handshake::HELLO_DEADLINE,
            |hello| {
                if hello.role != kind.role() {
                    Err(Rejection::WrongRole { role: hello.role })
                } else if hello.token.matches(&token) {
                    Ok(())
                } else {
                    Err(Rejection::BadToken)
                }
            },
        )?;
        let stream = Arc::new(stream);
        let (tx, frames) = mpsc::channel();
        let reading = Arc::clone(&stream);
        std::thread::Builder::new()
            .name(format!("direct-{kind}"))
            .spawn(move || {
                let mut reader = BufReader::new(&*reading);
                loop {
                    let frame = read_frame(&mut reader, Limit::Data);
                    let end = frame.is_err();
                    // Ends with the connection, or when nobody listens any more.
                    if tx.send(frame).is_err() || end {
                        break;
                    }
                }
            })?;
        Ok(DirectWorker {
            child,
            stream,
            frames,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn send(&mut self, msg: &ToWorker) -> anyhow::Result<()> {
        Ok(write_frame(&mut &*self.stream, msg, Limit::Data)?)
    }

    /// Receives until `pick` returns something, skipping other messages (heartbeat replies,
    /// notices), or fails once `limit` has passed.
    pub fn recv_until<T>(
        &mut self,
        limit: Duration,
        mut pick: impl FnMut(FromWorker) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = match self.frames.recv_timeout(left) {
                Ok(frame) => frame?,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("no expected message from the worker within {limit:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("the connection to the worker is closed")
                }
            };
            if let Some(found) = pick(frame) {
                return Ok(found);
            }
        }
    }

    /// Kills the worker (SIGKILL; TerminateProcess on Windows) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DirectWorker {
    fn drop(&mut self) {
        self.kill();
    }
}
