//! Length-prefixed frames over `std::io::Read`/`Write`.
//!
//! A frame is a 4-byte little-endian payload length followed by the payload. The length is
//! checked against the connection's [`Limit`] **before** anything is allocated, so a hostile
//! prefix of `u32::MAX` costs four bytes of reading and nothing else.

use std::io::{self, BufReader, Read, Write};

use serde::{de::DeserializeOwned, Serialize};

use crate::{codec, Error};

/// Largest frame on a control connection (handshakes, `mate ctl` requests).
pub const CONTROL_MAX_FRAME: u32 = 64 * 1024;
/// Largest frame on a data connection (worker traffic, transcripts, status for clients).
pub const DATA_MAX_FRAME: u32 = 16 * 1024 * 1024;
/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Which frame cap applies to what a side reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Control,
    Data,
}

impl Limit {
    pub const fn max_frame(self) -> u32 {
        match self {
            Limit::Control => CONTROL_MAX_FRAME,
            Limit::Data => DATA_MAX_FRAME,
        }
    }
}

/// Encodes `msg` as one complete frame (header and payload) into a fresh buffer.
pub fn encode_frame<T: Serialize + ?Sized>(msg: &T, limit: Limit) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(&[0; HEADER_LEN]);
    codec::encode(msg, &mut buf)?;
    let len = buf.len() - HEADER_LEN;
    if len > limit.max_frame() as usize {
        return Err(Error::FrameTooLarge {
            len: len as u64,
            max: limit.max_frame(),
        });
    }
    buf[..HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(buf)
}

/// Checks a received length prefix against the cap and returns the payload length.
pub fn payload_len(header: [u8; HEADER_LEN], limit: Limit) -> Result<usize, Error> {
    let len = u32::from_le_bytes(header);
    if len > limit.max_frame() {
        return Err(Error::FrameTooLarge {
            len: u64::from(len),
            max: limit.max_frame(),
        });
    }
    Ok(len as usize)
}

/// Decodes a payload received whole.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8], limit: Limit) -> Result<T, Error> {
    codec::decode(payload, limit)
}

/// Writes `msg` as one frame with a single `write_all`, then flushes.
pub fn write_frame<W: Write + ?Sized, T: Serialize + ?Sized>(
    w: &mut W,
    msg: &T,
    limit: Limit,
) -> Result<(), Error> {
    let buf = encode_frame(msg, limit)?;
    w.write_all(&buf).map_err(io_error)?;
    w.flush().map_err(io_error)?;
    Ok(())
}

/// Reads one frame and decodes it.
pub fn read_frame<R: Read + ?Sized, T: DeserializeOwned>(
    r: &mut R,
    limit: Limit,
) -> Result<T, Error> {
    decode_payload(&read_payload(r, limit)?, limit)
}

/// Reads one frame's payload without decoding it.
pub fn read_payload<R: Read + ?Sized>(r: &mut R, limit: Limit) -> Result<Vec<u8>, Error> {
    let mut header = [0; HEADER_LEN];
    let got = read_full(r, &mut header)?;
    let mut payload = vec![0; header_len(got, header, limit)?];
    let got = read_full(r, &mut payload)?;
    whole_payload(got, payload)
}

/// Judges the first read of a frame: nothing at all is a clean close, part of a header a
/// truncated frame; a whole header gives the payload length, checked against the cap.
pub(crate) fn header_len(
    got: usize,
    header: [u8; HEADER_LEN],
    limit: Limit,
) -> Result<usize, Error> {
    match got {
        0 => Err(Error::Closed),
        n if n < HEADER_LEN => Err(Error::Truncated {
            expected: HEADER_LEN,
            got: n,
        }),
        _ => payload_len(header, limit),
    }
}

/// The payload, if all of it arrived.
pub(crate) fn whole_payload(got: usize, payload: Vec<u8>) -> Result<Vec<u8>, Error> {
    if got < payload.len() {
        return Err(Error::Truncated {
            expected: payload.len(),
            got,
        });
    }
    Ok(payload)
}

/// Fills `buf` unless the stream ends first; returns how many bytes arrived.
fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> Result<usize, Error> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(e)),
        }
    }
    Ok(filled)
}

/// Maps a read timeout (set with `set_recv_timeout`) to [`Error::Timeout`].
pub(crate) fn io_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout,
        _ => Error::Io(e),
    }
}

/// A connection after its handshake: reads go through a buffer, so a frame usually costs one
/// `read` call instead of two (header, then payload); writes go straight out, one `write_all`
/// per frame. Wrap a stream only after the handshake, which reads exactly its own bytes.
#[derive(Debug)]
pub struct Framed<S> {
    io: BufReader<S>,
    limit: Limit,
}

impl<S: Read + Write> Framed<S> {
    /// `limit` caps frames in both directions.
    pub fn new(stream: S, limit: Limit) -> Self {
        Framed {
            io: BufReader::with_capacity(8 * 1024, stream),
            limit,
        }
    }

    pub fn send<T: Serialize + ?Sized>(&mut self, msg: &T) -> Result<(), Error> {
        write_frame(self.io.get_mut(), msg, self.limit)
    }

    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<T, Error> {
        read_frame(&mut self.io, self.limit)
    }

    pub fn get_ref(&self) -> &S {
        self.io.get_ref()
    }
}
