//! Just enough of an HTTP/1.1 client for `mate bench api`: one POST, a streamed reply read as
//! server-sent events through chunked transfer coding, each event timestamped on arrival. Both
//! servers under test are driven by the same code, so neither gets a faster client.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

/// One `data:` event (or the stream's end) as the bench saw it.
#[derive(Debug)]
pub(super) enum Sse {
    Data {
        at: Instant,
        json: serde_json::Value,
    },
    Done,
}

/// A streamed POST in progress.
pub(super) struct Stream {
    reader: BufReader<TcpStream>,
    /// Decoded body bytes not yet split into lines.
    pending: Vec<u8>,
    ended: bool,
}

/// Sends `body` to `url` (`http://host:port`) + `path` and reads the response head.
pub(super) fn post_stream(
    url: &str,
    path: &str,
    body: &serde_json::Value,
) -> anyhow::Result<Stream> {
    let address = url.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(address).with_context(|| format!("connecting to {url}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(120)))?;
    tcp.set_nodelay(true)?;
    let body = body.to_string();
    write!(
        tcp,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Accept: text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut reader = BufReader::new(tcp);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    if !status.contains(" 200 ") {
        bail!("{url}{path} answered {}", status.trim());
    }
    let mut chunked = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("{url} closed the connection in the response head");
        }
        let line = line.trim();
        if line.is_empty() {
            break;
        }
        if line.to_ascii_lowercase().starts_with("transfer-encoding:") && line.contains("chunked") {
            chunked = true;
        }
    }
    if !chunked {
        bail!("{url} did not stream with chunked transfer coding");
    }
    Ok(Stream {
        reader,
        pending: Vec::new(),
        ended: false,
    })
}

impl Stream {
    /// The next event; an error when the connection breaks before `[DONE]`.
    pub(super) fn next(&mut self) -> anyhow::Result<Sse> {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let Some(data) = line.trim().strip_prefix("data:") else {
                    continue;
                };
                let data = data.trim();
                if data == "[DONE]" {
                    return Ok(Sse::Done);
                }
                let json = serde_json::from_str(data)
                    .with_context(|| format!("an event that is not JSON: {data}"))?;
                return Ok(Sse::Data {
                    at: Instant::now(),
                    json,
                });
            }
            if self.ended {
                bail!("the stream ended without [DONE]");
            }
            self.read_chunk()?;
        }
    }

    fn read_chunk(&mut self) -> anyhow::Result<()> {
        let mut size = String::new();
        if self.reader.read_line(&mut size)? == 0 {
            bail!("the connection closed in the middle of the stream");
        }
        let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
            .with_context(|| format!("a bad chunk size {size:?}"))?;
        if size == 0 {
            self.ended = true;
            return Ok(());
        }
        let start = self.pending.len();
        self.pending.resize(start + size, 0);
        self.reader.read_exact(&mut self.pending[start..])?;
        let mut crlf = [0u8; 2];
        self.reader.read_exact(&mut crlf)?;
        Ok(())
    }
}

/// A GET's status code, 0 when nothing answered.
pub(super) fn get_status(url: &str, path: &str) -> u16 {
    let address = url.trim_start_matches("http://");
    let Ok(mut tcp) = TcpStream::connect(address) else {
        return 0;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return 0;
    }
    let mut status = String::new();
    let _ = BufReader::new(tcp).read_line(&mut status);
    status
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
