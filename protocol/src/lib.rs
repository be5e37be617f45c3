//! The language every mate process speaks.
//!
//! Theory of operation: peers meet at an [`Endpoint`] (a private Unix socket or a named pipe
//! per state dir). The connecting side opens with a [`Hello`] (magic, version, role, pid, auth
//! token) and the accepting side answers with an ack or a [`Rejection`] that says why. After
//! that, each side sends typed messages ([`message`]) as frames: a 4-byte little-endian length,
//! checked against a hard cap before anything is allocated, then a bincode payload decoded
//! with a size limit. Malformed input of any kind is an [`Error`], never a panic.
//!
//! The core is blocking, over `std::io::Read`/`Write`; feature `tokio` adds the same framing
//! and handshake over tokio's `AsyncRead`/`AsyncWrite` ([`async_io`]).

pub mod api;
pub mod client;
mod codec;
pub mod endpoint;
mod error;
pub mod frame;
pub mod handshake;
pub mod message;
pub mod peer;
pub mod unity;
pub mod vmc;
pub mod worker;

#[cfg(feature = "tokio")]
pub mod async_io;

pub use api::{ApiCall, ApiEvent, ApiInput, ApiOptions, ApiVitals, Health};
pub use endpoint::Endpoint;
pub use error::Error;
pub use frame::{Limit, CONTROL_MAX_FRAME, DATA_MAX_FRAME};
pub use handshake::{AuthToken, Hello, HelloReply, Rejection, MAGIC, PROTOCOL_VERSION};
pub use message::*;
pub use vmc::VmcOptions;

#[cfg(test)]
mod tests;
