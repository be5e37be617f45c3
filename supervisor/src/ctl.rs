//! The client side of `mate ctl`: connect to the supervisor of a state dir, send one request,
//! hand each reply to the caller.

use std::path::{Path, PathBuf};

use mate_protocol::{frame, AuthToken, Endpoint, Hello, Limit, Reply, Request, Role};

use crate::supervisor::control_token_path;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CtlError {
    #[error("no mate supervisor is running for state dir {state_dir} (start one with `mate up`)")]
    NotRunning { state_dir: PathBuf },
    #[error("cannot read the control token {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Protocol(#[from] mate_protocol::Error),
}

/// Sends `request` and calls `on_reply` for each reply until it returns `false` or the
/// supervisor closes the stream.
pub fn request(
    state_dir: &Path,
    request: &Request,
    mut on_reply: impl FnMut(Reply) -> bool,
) -> Result<(), CtlError> {
    let endpoint = Endpoint::for_state_dir(state_dir);
    let not_running = || CtlError::NotRunning {
        state_dir: state_dir.to_path_buf(),
    };
    let token_path = control_token_path(state_dir);
    let token = std::fs::read_to_string(&token_path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            not_running()
        } else {
            CtlError::Token {
                path: token_path.clone(),
                source,
            }
        }
    })?;
    let hello = Hello::new(Role::Ctl, AuthToken::from_hex(&token)?);
    // One connection attempt tells "nobody there" (refused, or no socket file after a clean
    // stop) from a live supervisor; a separate liveness probe would only cost it a connection.
    let (mut stream, _pid) = endpoint.connect(&hello).map_err(|e| match e {
        mate_protocol::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ) =>
        {
            not_running()
        }
        e if e.is_disconnect() => not_running(),
        e => CtlError::Protocol(e),
    })?;
    frame::write_frame(&mut stream, request, Limit::Control)?;
    loop {
        match frame::read_frame(&mut stream, Limit::Data) {
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

/// Sends `request` and returns the first reply.
pub fn call(state_dir: &Path, req: &Request) -> Result<Reply, CtlError> {
    let mut first = None;
    request(state_dir, req, |reply| {
        first = Some(reply);
        false
    })?;
    first.ok_or(CtlError::Protocol(mate_protocol::Error::Closed))
}
