use std::{io, path::PathBuf};

use crate::handshake::Rejection;

/// Everything that can go wrong talking the mate protocol.
///
/// A peer that misbehaves produces one of these, never a panic: the caller drops that
/// connection and carries on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection between two frames.
    #[error("connection closed by peer")]
    Closed,
    /// The connection ended in the middle of a frame.
    #[error("connection closed mid-frame: expected {expected} bytes, got {got}")]
    Truncated { expected: usize, got: usize },
    #[error("frame of {len} bytes exceeds the {max}-byte limit for this connection")]
    FrameTooLarge { len: u64, max: u32 },
    #[error("malformed message: {0}")]
    Decode(String),
    #[error("message could not be encoded: {0}")]
    Encode(String),
    #[error("timed out waiting for the peer")]
    Timeout,
    #[error("handshake rejected: {0}")]
    Rejected(Rejection),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error(
        "another process is already listening on {path}; stop it first (`mate ctl shutdown`) \
         or use a different --state-dir"
    )]
    EndpointInUse { path: PathBuf },
    #[error(
        "socket path {path} is {len} bytes, longer than the system allows ({max}); \
         choose a shorter --state-dir"
    )]
    PathTooLong {
        path: PathBuf,
        len: usize,
        max: usize,
    },
    #[error(
        "{path} is served by a process of {theirs}, not of {ours} who runs this command: \
         mate does not send its token to another user. Someone else owns or replaced the \
         socket; check who owns the state dir (`ls -la`), or use a state dir of your own"
    )]
    ForeignListener {
        path: PathBuf,
        theirs: String,
        ours: String,
    },
    #[error("invalid auth token: {0}")]
    BadToken(String),
}

impl Error {
    /// True when the error means "the other side is gone", as opposed to "it misbehaved".
    pub fn is_disconnect(&self) -> bool {
        match self {
            Error::Closed | Error::Truncated { .. } => true,
            Error::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }
}
