//! The two request/reply loops the IPC benchmarks compare, each with its own server thread.
//!
//! [`MateLoop`] is what the supervisor and a worker do: a real [`Endpoint`] in a private temp
//! dir, the `Hello` handshake once, then a [`Framed`] connection (buffered reads) carrying a typed heartbeat and its
//! typed answer. [`RawLoop`] sends the byte-for-byte same frames over a `std` `UnixStream` with
//! one `write_all` and one `read_exact` per direction and no encoding at all. The server threads
//! sleep in `read` between round trips, so running both loops in one process, interleaved,
//! lets them share the machine's noise instead of one of them getting a quieter minute.

use std::{
    io::{Read, Write},
    os::unix::net::{UnixListener, UnixStream},
    thread::{self, JoinHandle},
};

use interprocess::local_socket::{traits::Listener as _, Stream};
use mate_protocol::{
    endpoint::accept_hello,
    frame::{encode_frame, Framed},
    handshake::HELLO_DEADLINE,
    Endpoint, Error, FromWorker, Limit, Rejection, ToWorker,
};
use tempfile::TempDir;

use crate::samples::{heartbeat, heartbeat_reply, hello, HEARTBEAT_SEQ};

/// Worker traffic travels on data connections.
const LIMIT: Limit = Limit::Data;

/// The request and reply frames of one heartbeat round trip, header included, as mate
/// encodes them. [`RawLoop`] sends exactly these bytes.
pub fn heartbeat_frames() -> Result<(Vec<u8>, Vec<u8>), Error> {
    Ok((
        encode_frame(&heartbeat(HEARTBEAT_SEQ), LIMIT)?,
        encode_frame(&heartbeat_reply(HEARTBEAT_SEQ), LIMIT)?,
    ))
}

/// A supervisor-side client and a worker-side server thread on a real mate endpoint.
#[derive(Debug)]
pub struct MateLoop {
    /// `None` only while dropping: closing it is what ends the server thread.
    client: Option<Framed<Stream>>,
    seq: u64,
    server: Option<JoinHandle<Result<(), Error>>>,
    _dir: TempDir,
}

impl MateLoop {
    /// Listens in a fresh temp dir, starts the answering thread and completes the handshake.
    pub fn start() -> Result<Self, Error> {
        let dir = tempfile::tempdir()?;
        let endpoint = Endpoint::at(dir.path().join("run").join("mate.sock"));
        let listener = endpoint.listen()?;
        let token = hello().token;
        let server = thread::Builder::new().name("mate-server".into()).spawn(
            move || -> Result<(), Error> {
                let mut stream = listener.accept()?;
                drop(listener);
                accept_hello(&mut stream, HELLO_DEADLINE, |peer| {
                    if peer.token.matches(&token) {
                        Ok(())
                    } else {
                        Err(Rejection::BadToken)
                    }
                })?;
                answer_heartbeats(&mut Framed::new(stream, LIMIT))
            },
        )?;
        let (client, _pid) = endpoint.connect(&hello())?;
        Ok(MateLoop {
            client: Some(Framed::new(client, LIMIT)),
            // Starting here keeps every frame the size of [`heartbeat_frames`].
            seq: HEARTBEAT_SEQ,
            server: Some(server),
            _dir: dir,
        })
    }

    /// Sends one heartbeat and waits for its answer.
    pub fn round_trip(&mut self) -> Result<(), Error> {
        let client = self.client.as_mut().ok_or(Error::Closed)?;
        self.seq += 1;
        client.send(&heartbeat(self.seq))?;
        match client.recv()? {
            FromWorker::Heartbeat { seq, .. } if seq == self.seq => Ok(()),
            other => Err(Error::Protocol(format!(
                "expected heartbeat {}, got {other:?}",
                self.seq
            ))),
        }
    }
}

/// The worker's side: answer each heartbeat until the supervisor hangs up.
fn answer_heartbeats(conn: &mut Framed<Stream>) -> Result<(), Error> {
    loop {
        match conn.recv() {
            Ok(ToWorker::Heartbeat { seq }) => conn.send(&heartbeat_reply(seq))?,
            Ok(other) => return Err(Error::Protocol(format!("unexpected {other:?}"))),
            Err(Error::Closed) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

impl Drop for MateLoop {
    fn drop(&mut self) {
        drop(self.client.take());
        if let Some(server) = self.server.take() {
            // A server error after the benchmark has nothing left to spoil; just end the thread.
            let _ = server.join();
        }
    }
}

/// A bare `UnixStream` ping-pong of the same bytes as [`MateLoop`], with no framing code.
#[derive(Debug)]
pub struct RawLoop {
    client: Option<UnixStream>,
    request: Vec<u8>,
    reply: Vec<u8>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    _dir: TempDir,
}

impl RawLoop {
    /// Binds a socket file in a fresh temp dir and starts the echoing thread.
    pub fn start() -> Result<Self, Error> {
        let (request, reply) = heartbeat_frames()?;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("raw.sock");
        let listener = UnixListener::bind(&path)?;
        let (request_len, answer) = (request.len(), reply.clone());
        let server = thread::Builder::new().name("raw-server".into()).spawn(
            move || -> std::io::Result<()> {
                let (mut stream, _) = listener.accept()?;
                drop(listener);
                let mut buf = vec![0; request_len];
                loop {
                    match stream.read_exact(&mut buf) {
                        Ok(()) => stream.write_all(&answer)?,
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                        Err(e) => return Err(e),
                    }
                }
            },
        )?;
        let client = UnixStream::connect(&path)?;
        Ok(RawLoop {
            client: Some(client),
            request,
            reply,
            server: Some(server),
            _dir: dir,
        })
    }

    /// Writes the request bytes and reads back as many bytes as the reply has.
    pub fn round_trip(&mut self) -> Result<(), Error> {
        let client = self.client.as_mut().ok_or(Error::Closed)?;
        client.write_all(&self.request)?;
        client.read_exact(&mut self.reply)?;
        Ok(())
    }
}

impl Drop for RawLoop {
    fn drop(&mut self) {
        drop(self.client.take());
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mate_frames_are_the_raw_frames_in_size() -> Result<(), Error> {
        let (request, reply) = heartbeat_frames()?;
        for seq in [HEARTBEAT_SEQ + 1, HEARTBEAT_SEQ + 1_000_000] {
            assert_eq!(encode_frame(&heartbeat(seq), LIMIT)?.len(), request.len());
            assert_eq!(
                encode_frame(&heartbeat_reply(seq), LIMIT)?.len(),
                reply.len()
            );
        }
        Ok(())
    }

    #[test]
    fn both_loops_round_trip_and_shut_down() -> Result<(), Error> {
        let (mut mate, mut raw) = (MateLoop::start()?, RawLoop::start()?);
        for _ in 0..100 {
            mate.round_trip()?;
            raw.round_trip()?;
        }
        Ok(())
    }
}
