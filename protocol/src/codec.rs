//! The one place that knows the payload encoding (bincode 2.0.1 through serde).
//!
//! bincode 2.0.1 is the last real release (3.0.0 is an empty placeholder) and is flagged
//! unmaintained (RUSTSEC-2025-0141). Everything else in mate sees only [`encode`] and
//! [`decode`], so swapping the codec is a change to this file and the golden bytes.
//!
//! Decoding is always bounded: bincode's `with_limit` caps every allocation a payload can claim
//! at the frame limit of its connection. Without it, a 9-byte payload claiming a huge `Vec`
//! makes bincode try to allocate it and abort the process.

use bincode::config::{self, Configuration};
use serde::{de::DeserializeOwned, Serialize};

use crate::{frame::Limit, Error, CONTROL_MAX_FRAME, DATA_MAX_FRAME};

/// Little-endian, variable-length integers, no limit: the limit is added per connection.
fn base() -> Configuration {
    config::standard()
}

/// Appends the encoding of `msg` to `buf`.
pub(crate) fn encode<T: Serialize + ?Sized>(msg: &T, buf: &mut Vec<u8>) -> Result<(), Error> {
    bincode::serde::encode_into_std_write(msg, buf, base())
        .map(drop)
        .map_err(|e| Error::Encode(e.to_string()))
}

/// Decodes exactly one message filling all of `bytes`.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], limit: Limit) -> Result<T, Error> {
    let result = match limit {
        Limit::Control => bincode::serde::decode_from_slice(
            bytes,
            base().with_limit::<{ CONTROL_MAX_FRAME as usize }>(),
        ),
        Limit::Data => bincode::serde::decode_from_slice(
            bytes,
            base().with_limit::<{ DATA_MAX_FRAME as usize }>(),
        ),
    };
    let (msg, used) = result.map_err(|e| Error::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(Error::Decode(format!(
            "{} trailing bytes after the message",
            bytes.len() - used
        )));
    }
    Ok(msg)
}

/// Decodes a message from the start of `bytes`, ignoring what follows. Used only to read the
/// fixed prefix of a `Hello` whose full form this version cannot parse.
pub(crate) fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    bincode::serde::decode_from_slice(bytes, base().with_limit::<{ CONTROL_MAX_FRAME as usize }>())
        .ok()
        .map(|(msg, _)| msg)
}
