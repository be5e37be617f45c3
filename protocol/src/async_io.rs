//! The tokio flavour of framing and handshake (feature `tokio`). Same bytes as the blocking
//! core in [`crate::frame`] and [`crate::handshake`].

use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{
    frame::{self, Limit, HEADER_LEN},
    handshake::{self, Hello, HelloReply, Rejection},
    Error,
};

/// Writes `msg` as one frame and flushes.
pub async fn write_frame<W: AsyncWrite + Unpin + ?Sized, T: Serialize + ?Sized>(
    w: &mut W,
    msg: &T,
    limit: Limit,
) -> Result<(), Error> {
    let buf = frame::encode_frame(msg, limit)?;
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame's payload; the length is checked before the buffer is allocated.
pub async fn read_payload<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    limit: Limit,
) -> Result<Vec<u8>, Error> {
    let mut header = [0; HEADER_LEN];
    let got = read_full(r, &mut header).await?;
    let mut payload = vec![0; frame::header_len(got, header, limit)?];
    let got = read_full(r, &mut payload).await?;
    frame::whole_payload(got, payload)
}

/// Reads and decodes one frame.
pub async fn read_frame<R: AsyncRead + Unpin + ?Sized, T: DeserializeOwned>(
    r: &mut R,
    limit: Limit,
) -> Result<T, Error> {
    frame::decode_payload(&read_payload(r, limit).await?, limit)
}

async fn read_full<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    buf: &mut [u8],
) -> Result<usize, Error> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Connecting side: sends `hello` and waits up to `deadline` for the answer.
pub async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    hello: &Hello,
    deadline: Duration,
) -> Result<u32, Error> {
    write_frame(stream, hello, Limit::Control).await?;
    let reply: HelloReply = tokio::time::timeout(deadline, read_frame(stream, Limit::Control))
        .await
        .map_err(|_| Error::Timeout)??;
    handshake::accepted(reply)
}

/// Accepting side: a peer that sends no complete `Hello` within `deadline` gets
/// [`Error::Timeout`] and should be dropped.
pub async fn server_handshake<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    deadline: Duration,
    verify: impl FnOnce(&Hello) -> Result<(), Rejection>,
) -> Result<Hello, Error> {
    let payload = tokio::time::timeout(deadline, read_payload(stream, Limit::Control))
        .await
        .map_err(|_| Error::Timeout)??;
    let verdict = handshake::judge(&payload, verify);
    write_frame(stream, &handshake::reply_for(&verdict), Limit::Control).await?;
    verdict.map_err(Error::Rejected)
}
