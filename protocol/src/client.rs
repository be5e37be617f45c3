//! The client side of a supervisor connection (`mate ctl`, the console): find the supervisor
//! of a state dir, present the control token, send one request and hand each reply to the
//! caller. Blocking, over the same endpoint and framing as everything else.

use std::path::{Path, PathBuf};

use crate::{frame, AuthToken, Endpoint, Hello, Limit, Reply, Request, Role};

/// File in `<state>/run/` holding the token clients present.
pub const CONTROL_TOKEN_FILE: &str = "control.token";

/// How long a client keeps trying a supervisor that is there but busy.
const BUSY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);
const BUSY_FIRST_RETRY: std::time::Duration = std::time::Duration::from_millis(20);
const BUSY_MAX_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

pub fn control_token_path(state_dir: &Path) -> PathBuf {
    state_dir.join("run").join(CONTROL_TOKEN_FILE)
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("no mate supervisor is running for state dir {state_dir} (start one with `mate up`)")]
    NotRunning { state_dir: PathBuf },
    #[error(
        "the mate supervisor for state dir {state_dir} is running but too busy to answer: \
         {why}"
    )]
    Busy { state_dir: PathBuf, why: String },
    #[error("cannot read the control token {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Protocol(#[from] crate::Error),
}

/// An open connection to a supervisor; requests go one after the other.
#[derive(Debug)]
pub struct Connection {
    stream: interprocess::local_socket::Stream,
}

impl Connection {
    /// Connects as `role` (`Ctl` or `Tui`) with the control token of `state_dir`.
    pub fn open(state_dir: &Path, role: Role) -> Result<Connection, ClientError> {
        let endpoint = Endpoint::for_state_dir(state_dir);
        let not_running = || ClientError::NotRunning {
            state_dir: state_dir.to_path_buf(),
        };
        let token_path = control_token_path(state_dir);
        let token = std::fs::read_to_string(&token_path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                not_running()
            } else {
                ClientError::Token {
                    path: token_path.clone(),
                    source,
                }
            }
        })?;
        let hello = Hello::new(role, AuthToken::from_hex(&token)?);
        // One connection attempt tells "nobody there" (refused, or no socket file after a
        // clean stop) from a live supervisor; a separate probe would only cost a connection.
        // A supervisor that accepted but closed before answering, or said it is full, is
        // there but busy (a flood of connections): that is worth a few more tries.
        let mut delay = BUSY_FIRST_RETRY;
        let started = std::time::Instant::now();
        let stream = loop {
            let why = match endpoint.connect(&hello) {
                Ok((stream, _pid)) => break stream,
                Err(crate::Error::Io(io))
                    if matches!(
                        io.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                    ) =>
                {
                    return Err(not_running())
                }
                Err(crate::Error::Rejected(r @ crate::Rejection::Busy { .. })) => r.to_string(),
                Err(e) if e.is_disconnect() || matches!(e, crate::Error::Timeout) => format!(
                    "it closed the connection before answering ({e}); too many connections?"
                ),
                Err(e) => return Err(ClientError::Protocol(e)),
            };
            if started.elapsed() + delay > BUSY_PATIENCE {
                return Err(ClientError::Busy {
                    state_dir: state_dir.to_path_buf(),
                    why,
                });
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(BUSY_MAX_RETRY);
        };
        Ok(Connection { stream })
    }

    /// Sends `request` and calls `on_reply` for each reply until it returns `false` or the
    /// supervisor closes the stream. Stopping early leaves the rest of the replies unread,
    /// so only the last request on a connection may stop early.
    pub fn request(
        &mut self,
        request: &Request,
        mut on_reply: impl FnMut(Reply) -> bool,
    ) -> Result<(), ClientError> {
        frame::write_frame(&mut self.stream, request, Limit::Control)?;
        loop {
            match frame::read_frame(&mut self.stream, Limit::Data) {
                Ok(reply) => {
                    if !on_reply(reply) {
                        return Ok(());
                    }
                }
                Err(e) if e.is_disconnect() => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends a request answered by exactly one reply (`Status`, `Restart`, …) and returns it;
    /// the connection stays usable.
    pub fn call(&mut self, req: &Request) -> Result<Reply, ClientError> {
        frame::write_frame(&mut self.stream, req, Limit::Control)?;
        Ok(frame::read_frame(&mut self.stream, Limit::Data)?)
    }
}

/// Sends `request` as `role` on a new connection and calls `on_reply` for each reply until it
/// returns `false` or the supervisor closes the stream.
pub fn request(
    state_dir: &Path,
    role: Role,
    request: &Request,
    on_reply: impl FnMut(Reply) -> bool,
) -> Result<(), ClientError> {
    Connection::open(state_dir, role)?.request(request, on_reply)
}

/// Sends `request` and returns the first reply.
pub fn call(state_dir: &Path, role: Role, req: &Request) -> Result<Reply, ClientError> {
    let mut first = None;
    request(state_dir, role, req, |reply| {
        first = Some(reply);
        false
    })?;
    first.ok_or(ClientError::Protocol(crate::Error::Closed))
}
