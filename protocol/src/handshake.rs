//! The first exchange on every connection.
//!
//! The connecting side sends a [`Hello`]; the accepting side answers [`HelloReply::Accepted`] or
//! [`HelloReply::Rejected`] with the reason, then closes if it rejected. Nothing else may be
//! sent before the reply. Both frames use the control limit, whatever the connection carries
//! afterwards.
//!
//! `Hello` starts with the magic and the version, and those two fields keep their place in
//! every future version, so a peer from another version is told "version mismatch" rather than
//! "malformed".

use std::{
    fmt,
    io::{Read, Write},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::{
    frame::{self, Limit},
    Error, Role,
};

/// First four bytes of every `Hello`.
pub const MAGIC: [u8; 4] = *b"MATE";
/// Bumped whenever an existing encoding changes (see `message.rs`).
pub const PROTOCOL_VERSION: u16 = 7;
/// How long the accepting side waits for a `Hello` before dropping the peer.
pub const HELLO_DEADLINE: Duration = Duration::from_secs(5);
/// Environment variable that carries a worker's one-time token from the supervisor.
pub const TOKEN_ENV: &str = "MATE_AUTH_TOKEN";

/// A 256-bit secret. Compared in constant time; never printed.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthToken([u8; 32]);

impl AuthToken {
    /// A fresh random token from the operating system's generator.
    pub fn generate() -> Result<Self, Error> {
        let mut bytes = [0; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| Error::BadToken(format!("no randomness available: {e}")))?;
        Ok(AuthToken(bytes))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        AuthToken(bytes)
    }

    /// Constant-time comparison, so timing does not leak how many bytes matched.
    pub fn matches(&self, other: &AuthToken) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// Lowercase hex, for the environment and the token file.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        if text.len() != 64 || !text.is_ascii() {
            return Err(Error::BadToken(format!(
                "expected 64 hex digits, got {} characters",
                text.len()
            )));
        }
        let mut bytes = [0; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|_| Error::BadToken("not hexadecimal".into()))?;
        }
        Ok(AuthToken(bytes))
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

/// Sent first by the connecting side.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub magic: [u8; 4],
    pub version: u16,
    pub role: Role,
    pub pid: u32,
    pub token: AuthToken,
}

impl Hello {
    pub fn new(role: Role, token: AuthToken) -> Self {
        Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            role,
            pid: std::process::id(),
            token,
        }
    }
}

/// The accepting side's answer to a [`Hello`].
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HelloReply {
    Accepted { version: u16, pid: u32 },
    Rejected(Rejection),
}

/// Why a `Hello` was refused. Shown to the user as is.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    BadMagic,
    VersionMismatch {
        ours: u16,
        theirs: u16,
    },
    BadToken,
    WrongRole {
        role: Role,
    },
    Malformed,
    /// The supervisor serves as many clients as it allows at once; try again later.
    Busy {
        limit: u32,
    },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::BadMagic => f.write_str("not a mate peer (bad magic)"),
            Rejection::VersionMismatch { ours, theirs } => write!(
                f,
                "protocol version mismatch: this side speaks v{ours}, the peer v{theirs}; \
                 run the same mate build on both sides"
            ),
            Rejection::BadToken => f.write_str(
                "bad auth token (is the token file from another supervisor? \
                 check --state-dir)",
            ),
            Rejection::WrongRole { role } => write!(f, "a {role} is not accepted here"),
            Rejection::Malformed => f.write_str("malformed hello"),
            Rejection::Busy { limit } => write!(
                f,
                "the supervisor already serves {limit} clients, its limit (consoles, \
                 `ctl events --follow`, or a flood of connections); close some or try again"
            ),
        }
    }
}

/// Checks magic and version, then lets `verify` judge role and token.
pub fn judge(
    payload: &[u8],
    verify: impl FnOnce(&Hello) -> Result<(), Rejection>,
) -> Result<Hello, Rejection> {
    let hello: Hello = match frame::decode_payload(payload, Limit::Control) {
        Ok(hello) => hello,
        // Tell a peer of another version so, if its prefix is readable.
        Err(_) => {
            return Err(
                match crate::codec::decode_prefix::<([u8; 4], u16)>(payload) {
                    Some((magic, _)) if magic != MAGIC => Rejection::BadMagic,
                    Some((_, theirs)) if theirs != PROTOCOL_VERSION => Rejection::VersionMismatch {
                        ours: PROTOCOL_VERSION,
                        theirs,
                    },
                    _ => Rejection::Malformed,
                },
            )
        }
    };
    if hello.magic != MAGIC {
        return Err(Rejection::BadMagic);
    }
    if hello.version != PROTOCOL_VERSION {
        return Err(Rejection::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: hello.version,
        });
    }
    verify(&hello)?;
    Ok(hello)
}

/// The reply that announces `verdict` to the peer.
pub fn reply_for(verdict: &Result<Hello, Rejection>) -> HelloReply {
    match verdict {
        Ok(_) => HelloReply::Accepted {
            version: PROTOCOL_VERSION,
            pid: std::process::id(),
        },
        Err(r) => HelloReply::Rejected(r.clone()),
    }
}

/// Interprets the accepting side's reply on the connecting side.
pub fn accepted(reply: HelloReply) -> Result<u32, Error> {
    match reply {
        HelloReply::Accepted { pid, .. } => Ok(pid),
        HelloReply::Rejected(r) => Err(Error::Rejected(r)),
    }
}

/// Connecting side, blocking: sends `hello`, returns the accepting process's pid.
pub fn client<S: Read + Write + ?Sized>(stream: &mut S, hello: &Hello) -> Result<u32, Error> {
    frame::write_frame(stream, hello, Limit::Control)?;
    accepted(frame::read_frame(stream, Limit::Control)?)
}

/// Accepting side, blocking. The caller bounds the wait for the `Hello` (a receive timeout on
/// the stream, see [`crate::endpoint::accept`]).
pub fn server<S: Read + Write + ?Sized>(
    stream: &mut S,
    verify: impl FnOnce(&Hello) -> Result<(), Rejection>,
) -> Result<Hello, Error> {
    let payload = frame::read_payload(stream, Limit::Control)?;
    let verdict = judge(&payload, verify);
    frame::write_frame(stream, &reply_for(&verdict), Limit::Control)?;
    verdict.map_err(Error::Rejected)
}
