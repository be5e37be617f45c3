//! `mate unity-sim`: a Unity-side peer that speaks the avatar protocol exactly as the Unity
//! app does, and prints what the avatar would do. The demo, the tests and `mate bench bridge`
//! use it; users connect the real Unity app.
//!
//! Fault options make it misbehave on purpose: answer late, drop answers, hang up every N
//! lines, or send malformed or over-long lines before an answer. Lines are counted across
//! connections, so "every N" goes on after the bridge reconnects.

use std::{
    io::{self, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use mate_protocol::{
    unity::{self, Line, UnityCommand, UnityReply},
    AvatarCommand,
};
use serde_json::json;

/// How the simulated Unity app behaves. Zero means "never" for the `*_every` options.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Wait this long before answering each line (a busy Unity main thread).
    pub latency: Duration,
    /// Do not answer every Nth line.
    pub drop_every: u64,
    /// Hang up on reading every Nth line, without answering it.
    pub disconnect_every: u64,
    /// Send a line that is not JSON before answering every Nth line.
    pub garbage_every: u64,
    /// Send a line longer than any reply limit before answering every Nth line.
    pub oversize_every: u64,
    /// Longest command line accepted.
    pub max_line: usize,
    /// Print one JSON object per event instead of sentences.
    pub json: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            latency: Duration::ZERO,
            drop_every: 0,
            disconnect_every: 0,
            garbage_every: 0,
            oversize_every: 0,
            max_line: unity::DEFAULT_MAX_LINE * 16,
            json: false,
        }
    }
}

/// Length of the over-long line `oversize_every` sends: four times the bridge's default limit.
pub const OVERSIZE: usize = unity::DEFAULT_MAX_LINE * 4;

type Output = Arc<Mutex<Box<dyn Write + Send>>>;

/// A running simulator.
#[derive(Debug)]
pub struct Sim {
    address: SocketAddr,
}

impl Sim {
    /// Listens on `listen` (port 0 picks a free one) and serves every connection in its own
    /// thread until the process exits. Events go to `out`.
    pub fn start(listen: &str, opts: SimOptions, out: Box<dyn Write + Send>) -> io::Result<Sim> {
        let listener = TcpListener::bind(listen)?;
        let address = listener.local_addr()?;
        let out: Output = Arc::new(Mutex::new(out));
        say(
            &out,
            opts.json,
            || json!({"event": "listening", "address": address.to_string()}),
            || format!("unity-sim listening on {address} (the avatar's actions follow)"),
        );
        std::thread::Builder::new()
            .name("unity-sim".into())
            .spawn(move || accept(&listener, &opts, &out))?;
        Ok(Sim { address })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

fn accept(listener: &TcpListener, opts: &SimOptions, out: &Output) {
    let lines = Arc::new(AtomicU64::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                say(
                    out,
                    opts.json,
                    || json!({"event": "error", "message": e.to_string()}),
                    || format!("accept failed: {e}"),
                );
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let (opts, out, lines) = (opts.clone(), Arc::clone(out), Arc::clone(&lines));
        let _ = std::thread::Builder::new()
            .name("unity-sim-conn".into())
            .spawn(move || serve(stream, &opts, &out, &lines));
    }
}

fn serve(stream: TcpStream, opts: &SimOptions, out: &Output, lines: &AtomicU64) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    let _ = stream.set_nodelay(true);
    say(
        out,
        opts.json,
        || json!({"event": "connected", "peer": peer}),
        || format!("bridge connected from {peer}"),
    );
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    let every = |n: u64, k: u64| k > 0 && n.is_multiple_of(k);
    let why = loop {
        let reply = match unity::read_line(&mut reader, &mut buf, opts.max_line) {
            Ok(Line::Complete) if buf.is_empty() => continue,
            Ok(Line::Complete) => match unity::parse_command(&buf) {
                Ok(cmd) => {
                    say(
                        out,
                        opts.json,
                        || json!({"event": "line", "line": &cmd}),
                        || format!("avatar: {}", describe(&cmd)),
                    );
                    carry_out(&cmd)
                }
                Err(e) => {
                    say(
                        out,
                        opts.json,
                        || json!({"event": "error", "message": &e}),
                        || format!("bad line: {e}"),
                    );
                    UnityReply::error("unknown", e)
                }
            },
            Ok(Line::TooLong(n)) => UnityReply::error(
                "unknown",
                format!("line of {n} bytes is over the {}-byte limit", opts.max_line),
            ),
            Ok(Line::Eof) => break "the bridge closed the connection".to_string(),
            Err(e) => break format!("reading failed: {e}"),
        };
        let n = lines.fetch_add(1, Ordering::SeqCst) + 1;
        if every(n, opts.disconnect_every) {
            fault(out, opts.json, format!("hanging up on line {n}"));
            let _ = writer.shutdown(std::net::Shutdown::Both);
            break format!("fault: hung up on line {n}");
        }
        if !opts.latency.is_zero() {
            std::thread::sleep(opts.latency);
        }
        let mut bytes = Vec::new();
        if every(n, opts.garbage_every) {
            fault(
                out,
                opts.json,
                format!("garbage before the answer to line {n}"),
            );
            bytes.extend_from_slice(b"{this is not json\n");
        }
        if every(n, opts.oversize_every) {
            fault(
                out,
                opts.json,
                format!("{OVERSIZE}-byte line before the answer to line {n}"),
            );
            bytes.resize(bytes.len() + OVERSIZE, b'x');
            bytes.push(b'\n');
        }
        if every(n, opts.drop_every) {
            fault(out, opts.json, format!("no answer to line {n}"));
        } else {
            bytes.extend_from_slice(&reply.to_line());
        }
        if let Err(e) = writer.write_all(&bytes) {
            break format!("writing failed: {e}");
        }
    };
    say(
        out,
        opts.json,
        || json!({"event": "disconnected", "peer": peer, "why": why}),
        || format!("bridge at {peer} gone: {why}"),
    );
}

/// What the Unity app would answer to `cmd`.
fn carry_out(cmd: &UnityCommand) -> UnityReply {
    match cmd {
        UnityCommand::Batch { commands, count } => {
            let failures: Vec<String> = commands
                .iter()
                .filter_map(|c| match c {
                    UnityCommand::Batch { .. } => Some("a batch inside a batch".to_string()),
                    c => check(c).err(),
                })
                .collect();
            let done = (commands.len() - failures.len()) as u32;
            if *count as usize != commands.len() {
                UnityReply::error(
                    "batch",
                    format!("count {count} but {} commands", commands.len()),
                )
            } else if let Some(first) = failures.first() {
                UnityReply {
                    count: Some(done),
                    ..UnityReply::error("batch", first.clone())
                }
            } else {
                UnityReply::success("batch", Some(done))
            }
        }
        cmd => match check(cmd) {
            Ok(()) => UnityReply::success(cmd.name(), None),
            Err(e) => UnityReply::error(cmd.name(), e),
        },
    }
}

fn check(cmd: &UnityCommand) -> Result<(), String> {
    match cmd {
        UnityCommand::LoadVrm { path } if !Path::new(path).is_file() => {
            Err(format!("VRM file not found: {path}"))
        }
        UnityCommand::SetExpression { expression, .. } if expression.is_empty() => {
            Err("empty expression name".into())
        }
        UnityCommand::SetExpression {
            intensity: Some(i), ..
        } if !(0.0..=1.0).contains(i) => Err(format!("intensity {i} is outside 0..1")),
        UnityCommand::PlayAnimation { name, .. } if name.is_empty() => {
            Err("empty animation name".into())
        }
        _ => Ok(()),
    }
}

/// What a line does to the avatar, in words.
fn describe(cmd: &UnityCommand) -> String {
    match (cmd, AvatarCommand::try_from(cmd)) {
        (UnityCommand::Batch { commands, .. }, _) => {
            let each: Vec<String> = commands.iter().map(describe).collect();
            format!("batch of {}: {}", commands.len(), each.join("; "))
        }
        (_, Ok(one)) => one.to_string(),
        (_, Err(())) => cmd.name().to_string(),
    }
}

fn fault(out: &Output, json: bool, what: String) {
    say(
        out,
        json,
        || json!({"event": "fault", "what": &what}),
        || format!("fault: {what}"),
    );
}

/// Writes one event, as JSON or as text; only the form written is built.
fn say(
    out: &Output,
    json: bool,
    event: impl FnOnce() -> serde_json::Value,
    text: impl FnOnce() -> String,
) {
    let Ok(mut out) = out.lock() else { return };
    let _ = if json {
        writeln!(out, "{}", event())
    } else {
        writeln!(out, "{}", text())
    };
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use mate_protocol::unity::ReplyStatus;

    #[test]
    fn batches_are_answered_with_their_count_and_bad_commands_refused() {
        let good = UnityCommand::Blink { enabled: true };
        let bad = UnityCommand::SetExpression {
            expression: "happy".into(),
            intensity: Some(2.0),
            transition_ms: None,
        };
        assert_eq!(
            carry_out(&UnityCommand::batch(vec![good.clone(), good.clone()])),
            UnityReply::success("batch", Some(2))
        );
        let mixed = carry_out(&UnityCommand::batch(vec![good.clone(), bad.clone()]));
        assert_eq!(mixed.status, ReplyStatus::Error);
        assert_eq!(mixed.count, Some(1));
        assert!(mixed.message.unwrap_or_default().contains("outside 0..1"));
        let missing = carry_out(&UnityCommand::LoadVrm {
            path: "/nonexistent/a.vrm".into(),
        });
        assert_eq!(missing.command, "load_vrm");
        assert!(missing.message.unwrap_or_default().contains("not found"));
        let lying = carry_out(&UnityCommand::Batch {
            commands: vec![good],
            count: 3,
        });
        assert_eq!(lying.status, ReplyStatus::Error);
    }
}
