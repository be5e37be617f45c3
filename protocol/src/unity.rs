//! The Unity app's wire protocol, as the original Unity side speaks it: TCP, one JSON object
//! per line. The bridge sends `{"command": NAME, "data": {...}}`; Unity answers every line
//! with `{"type": "response", "command": NAME, "status": "success"|"error", ...}` (with
//! `count` for a batch).
//!
//! Lines are read with a length cap ([`read_line`]): an over-long line is skipped up to its
//! newline and reported, never buffered without bound. Parsing a reply never panics; a line
//! that is not a reply is an error that says why.

use std::io::{self, BufRead};

use serde::{Deserialize, Serialize};

use crate::AvatarCommand;

/// Default address of the Unity app's listener.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:5555";

/// Longest line either side accepts by default (a batch of a few hundred commands fits).
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// One command line as Unity reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", content = "data", rename_all = "snake_case")]
pub enum UnityCommand {
    LoadVrm {
        path: String,
    },
    SetExpression {
        expression: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        intensity: Option<f32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transition_ms: Option<u32>,
    },
    PlayAnimation {
        name: String,
        #[serde(rename = "loop", default)]
        looped: bool,
    },
    Blink {
        enabled: bool,
    },
    Batch {
        commands: Vec<UnityCommand>,
        count: u32,
    },
}

impl UnityCommand {
    /// The name on the wire, which the reply's `command` repeats.
    pub fn name(&self) -> &'static str {
        match self {
            UnityCommand::LoadVrm { .. } => "load_vrm",
            UnityCommand::SetExpression { .. } => "set_expression",
            UnityCommand::PlayAnimation { .. } => "play_animation",
            UnityCommand::Blink { .. } => "blink",
            UnityCommand::Batch { .. } => "batch",
        }
    }

    /// Several commands as one line (a single command goes as itself).
    pub fn batch(mut commands: Vec<UnityCommand>) -> UnityCommand {
        if commands.len() == 1 {
            if let Some(one) = commands.pop() {
                return one;
            }
        }
        UnityCommand::Batch {
            count: commands.len() as u32,
            commands,
        }
    }

    /// The line to write, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        json_line(self)
    }
}

/// `value` as one JSON line, newline included.
fn json_line(value: &impl Serialize) -> Vec<u8> {
    // Serializing plain strings, numbers and bools into a Vec cannot fail.
    let mut line = serde_json::to_vec(value).unwrap_or_default();
    line.push(b'\n');
    line
}

impl From<&AvatarCommand> for UnityCommand {
    fn from(cmd: &AvatarCommand) -> Self {
        match cmd.clone() {
            AvatarCommand::LoadVrm { path } => UnityCommand::LoadVrm { path },
            AvatarCommand::SetExpression {
                expression,
                intensity,
                transition_ms,
            } => UnityCommand::SetExpression {
                expression,
                intensity: Some(intensity),
                transition_ms: Some(transition_ms),
            },
            AvatarCommand::PlayAnimation { name, looped } => {
                UnityCommand::PlayAnimation { name, looped }
            }
            AvatarCommand::Blink { enabled } => UnityCommand::Blink { enabled },
        }
    }
}

/// The command a single (non-batch) line carries, with Unity's defaults filled in.
impl TryFrom<&UnityCommand> for AvatarCommand {
    type Error = ();

    fn try_from(cmd: &UnityCommand) -> Result<Self, ()> {
        Ok(match cmd.clone() {
            UnityCommand::LoadVrm { path } => AvatarCommand::LoadVrm { path },
            UnityCommand::SetExpression {
                expression,
                intensity,
                transition_ms,
            } => AvatarCommand::SetExpression {
                expression,
                intensity: intensity.unwrap_or(1.0),
                transition_ms: transition_ms.unwrap_or(0),
            },
            UnityCommand::PlayAnimation { name, looped } => {
                AvatarCommand::PlayAnimation { name, looped }
            }
            UnityCommand::Blink { enabled } => AvatarCommand::Blink { enabled },
            UnityCommand::Batch { .. } => return Err(()),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyStatus {
    Success,
    Error,
}

/// Unity's answer to one command line. Fields Unity adds beyond these are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnityReply {
    /// Always `"response"`.
    #[serde(rename = "type")]
    pub kind: String,
    pub command: String,
    pub status: ReplyStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Commands carried out, for a batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// For a batch: each refused command, which one and why (the Unity package's C# core
    /// says so; an older peer does not, and the batch's message is all there is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<BatchError>>,
}

/// One refused command of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchError {
    /// Its place in the batch, from 0.
    pub index: u32,
    pub command: String,
    pub message: String,
}

impl UnityReply {
    pub fn success(command: &str, count: Option<u32>) -> UnityReply {
        UnityReply {
            kind: "response".into(),
            command: command.into(),
            status: ReplyStatus::Success,
            message: None,
            count,
            errors: None,
        }
    }

    pub fn error(command: &str, message: String) -> UnityReply {
        UnityReply {
            kind: "response".into(),
            command: command.into(),
            status: ReplyStatus::Error,
            message: Some(message),
            count: None,
            errors: None,
        }
    }

    /// The line to write, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        json_line(self)
    }
}

/// Parses one reply line (without its newline). The error says what was wrong, short enough
/// for a log line.
pub fn parse_reply(line: &[u8]) -> Result<UnityReply, String> {
    let reply: UnityReply = serde_json::from_slice(line).map_err(|e| {
        format!(
            "not a Unity reply ({e}): {}",
            preview(line, 80).escape_debug()
        )
    })?;
    if reply.kind != "response" {
        return Err(format!(
            "unexpected message type {:?} (expected \"response\")",
            reply.kind
        ));
    }
    Ok(reply)
}

/// Parses one command line, as the Unity side does.
pub fn parse_command(line: &[u8]) -> Result<UnityCommand, String> {
    serde_json::from_slice(line).map_err(|e| format!("invalid command ({e})"))
}

/// What [`read_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line, now in the buffer (newline and a trailing `\r` removed).
    Complete,
    /// A line longer than the cap; its bytes (this many) were skipped up to its newline.
    TooLong(usize),
    /// End of stream (a partial last line without newline is dropped).
    Eof,
}

/// Reads one line into `buf` (cleared first), holding at most `max` bytes of it. A longer
/// line is skipped up to and including its newline without being buffered.
pub fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    buf.clear();
    let mut skipped = 0usize;
    loop {
        let available = match reader.fill_buf() {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(Line::Eof);
        }
        let newline = available.iter().position(|&b| b == b'\n');
        let take = newline.map_or(available.len(), |i| i + 1);
        let body = newline.unwrap_or(available.len());
        if skipped > 0 || buf.len() + body > max {
            skipped += buf.len() + body;
            buf.clear();
        } else {
            buf.extend_from_slice(&available[..body]);
        }
        reader.consume(take);
        if newline.is_some() {
            if skipped > 0 {
                return Ok(Line::TooLong(skipped));
            }
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(Line::Complete);
        }
    }
}

fn preview(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]);
    if bytes.len() > max {
        format!("{text}…")
    } else {
        text.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(cmd: &UnityCommand) -> String {
        String::from_utf8(cmd.to_line()).expect("utf-8")
    }

    #[test]
    fn commands_are_written_as_unity_reads_them() {
        assert_eq!(
            line(&UnityCommand::LoadVrm {
                path: "/m/a.vrm".into()
            }),
            "{\"command\":\"load_vrm\",\"data\":{\"path\":\"/m/a.vrm\"}}\n"
        );
        let happy = UnityCommand::from(&AvatarCommand::SetExpression {
            expression: "happy".into(),
            intensity: 0.5,
            transition_ms: 200,
        });
        assert_eq!(
            line(&happy),
            "{\"command\":\"set_expression\",\"data\":{\"expression\":\"happy\",\
             \"intensity\":0.5,\"transition_ms\":200}}\n"
        );
        let wave = UnityCommand::PlayAnimation {
            name: "wave".into(),
            looped: true,
        };
        assert_eq!(
            line(&wave),
            "{\"command\":\"play_animation\",\"data\":{\"name\":\"wave\",\"loop\":true}}\n"
        );
        let batch = UnityCommand::batch(vec![happy.clone(), UnityCommand::Blink { enabled: true }]);
        assert_eq!(
            line(&batch),
            "{\"command\":\"batch\",\"data\":{\"commands\":[{\"command\":\"set_expression\",\
             \"data\":{\"expression\":\"happy\",\"intensity\":0.5,\"transition_ms\":200}},\
             {\"command\":\"blink\",\"data\":{\"enabled\":true}}],\"count\":2}}\n"
        );
        // One command needs no batch around it.
        assert_eq!(UnityCommand::batch(vec![happy.clone()]), happy);
    }

    #[test]
    fn optional_fields_may_be_left_out_by_the_sender() {
        let cmd = parse_command(br#"{"command":"set_expression","data":{"expression":"sad"}}"#)
            .expect("parse");
        assert_eq!(
            cmd,
            UnityCommand::SetExpression {
                expression: "sad".into(),
                intensity: None,
                transition_ms: None
            }
        );
        let cmd = parse_command(br#"{"command":"play_animation","data":{"name":"idle"}}"#)
            .expect("parse");
        assert_eq!(
            cmd,
            UnityCommand::PlayAnimation {
                name: "idle".into(),
                looped: false
            }
        );
        assert!(parse_command(br#"{"command":"dance","data":{}}"#)
            .expect_err("unknown command")
            .contains("unknown variant"));
    }

    #[test]
    fn replies_parse_and_bad_ones_say_why() {
        let ok = parse_reply(
            br#"{"type":"response","command":"batch","status":"success","count":3,"extra":1}"#,
        )
        .expect("parse");
        assert_eq!(ok, UnityReply::success("batch", Some(3)));
        let err = parse_reply(
            br#"{"type":"response","command":"load_vrm","status":"error","message":"no file"}"#,
        )
        .expect("parse");
        assert_eq!(err.status, ReplyStatus::Error);
        assert_eq!(err.message.as_deref(), Some("no file"));
        assert!(parse_reply(b"hello")
            .expect_err("not JSON")
            .contains("not a Unity reply"));
        assert!(
            parse_reply(br#"{"type":"event","command":"x","status":"success"}"#)
                .expect_err("not a response")
                .contains("unexpected message type")
        );
        assert!(parse_reply(br#"{"type":"response","command":"x","status":"maybe"}"#).is_err());
        let written = UnityReply::error("blink", "x".into()).to_line();
        let read = parse_reply(written.trim_ascii_end()).expect("parse");
        assert_eq!(read, UnityReply::error("blink", "x".into()));
    }

    #[test]
    fn lines_are_capped_and_long_ones_skipped_whole() {
        let long = "x".repeat(100);
        let input = format!("short\r\n{long}\nnext\npartial");
        // A tiny read buffer, so lines span several fills.
        let mut reader = io::BufReader::with_capacity(7, input.as_bytes());
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut reader, &mut buf, 10).expect("read"),
            Line::Complete
        );
        assert_eq!(buf, b"short");
        assert_eq!(
            read_line(&mut reader, &mut buf, 10).expect("read"),
            Line::TooLong(100)
        );
        assert_eq!(
            read_line(&mut reader, &mut buf, 10).expect("read"),
            Line::Complete
        );
        assert_eq!(buf, b"next");
        assert_eq!(
            read_line(&mut reader, &mut buf, 10).expect("read"),
            Line::Eof
        );
        assert!(buf.capacity() < 64, "the long line was never buffered");
    }
}
