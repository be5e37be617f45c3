//! The conversation, kept by the supervisor so that no worker crash can lose it.
//!
//! On disk it is `<state>/session/transcript.jsonl`: one JSON object per message, two per turn
//! (the user's, then the reply), readable with `cat`, `jq` or `tail -f`. A turn is written when
//! it is complete, both lines in one write, then `fsync`ed, so a kill -9 of any process at any
//! moment leaves every completed turn on disk exactly once. A torn last write (power loss, a
//! full disk) is cut off when the file is opened again; a turn that could not be written stays
//! in memory and is written with the next one.

use std::{
    fs::File,
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
};

use mate_protocol::{ChatMessage, ChatRole};
use serde::{Deserialize, Serialize};
use tracing::warn;

/// One line of the transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub turn: u64,
    /// `"user"` or `"assistant"`.
    pub role: String,
    pub text: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Reply only: tokens generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u32>,
    /// Reply only: why it ended (`end_of_text`, `max_tokens`, `cancelled`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<String>,
    /// Reply only: how many times a worker crash interrupted it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resumed: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A completed turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub user: Line,
    pub reply: Line,
}

/// The transcript: every completed turn, and the file that holds them.
#[derive(Debug)]
pub struct Transcript {
    path: PathBuf,
    turns: Vec<Turn>,
    /// Turns `0..saved` are on disk.
    saved: usize,
    tokens: u64,
}

/// What opening the file found besides the turns.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Repairs {
    /// Bytes of a torn last write that were cut off.
    pub cut_bytes: u64,
    /// Lines in the middle that were not transcript lines (kept in the file, skipped).
    pub skipped_lines: usize,
}

impl Transcript {
    /// The transcript file of a state dir.
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join("session").join("transcript.jsonl")
    }

    /// Reads the transcript back (an absent file is an empty session), cutting off a torn
    /// last write so that the next turn starts on a line of its own.
    pub fn open(path: PathBuf) -> std::io::Result<(Transcript, Repairs)> {
        let mut repairs = Repairs::default();
        let mut turns = Vec::new();
        let text = match File::open(&path) {
            Ok(mut f) => {
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes)?;
                bytes
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        // Everything after the end of the last complete turn may be a torn write.
        let mut good_end = 0usize;
        let mut pending_user: Option<Line> = None;
        let mut skipped_at = Vec::new();
        let mut offset = 0usize;
        for raw in text.split_inclusive(|&b| b == b'\n') {
            offset += raw.len();
            // A line without its newline is a torn write, whatever it holds.
            let line = std::str::from_utf8(raw)
                .ok()
                .filter(|s| s.ends_with('\n'))
                .and_then(|s| serde_json::from_str::<Line>(s.trim_end()).ok());
            match line {
                Some(line) if line.role == "user" => pending_user = Some(line),
                Some(line) if line.role == "assistant" => match pending_user.take() {
                    Some(user) if user.turn == line.turn => {
                        turns.push(Turn { user, reply: line });
                        good_end = offset;
                    }
                    _ => skipped_at.push(offset),
                },
                _ if raw.iter().all(u8::is_ascii_whitespace) => {}
                _ => skipped_at.push(offset),
            }
        }
        // Torn: a last line without its newline, or a user line whose reply never made it.
        let tail = &text[good_end..];
        let torn = !tail.is_empty() && (!tail.ends_with(b"\n") || pending_user.is_some());
        if torn {
            repairs.cut_bytes = tail.len() as u64;
            skipped_at.retain(|&at| at <= good_end);
            crate::statedir::open_private(&path, false)?.set_len(good_end as u64)?;
            warn!(
                path = %path.display(),
                bytes = tail.len(),
                "cut off a torn write at the end of the transcript"
            );
        }
        repairs.skipped_lines = skipped_at.len();
        let tokens = turns
            .iter()
            .map(|t| u64::from(t.reply.tokens.unwrap_or(0)))
            .sum();
        let saved = turns.len();
        Ok((
            Transcript {
                path,
                turns,
                saved,
                tokens,
            },
            repairs,
        ))
    }

    pub fn turns(&self) -> &[Turn] {
        &self.turns
    }

    /// Completed turns.
    pub fn len(&self) -> u64 {
        self.turns.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    /// Tokens generated over the whole session.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// The conversation as the LLM worker sees it.
    pub fn messages(&self) -> Vec<ChatMessage> {
        let mut out = Vec::with_capacity(self.turns.len() * 2);
        for t in &self.turns {
            out.push(ChatMessage {
                role: ChatRole::User,
                text: t.user.text.clone(),
            });
            out.push(ChatMessage {
                role: ChatRole::Assistant,
                text: t.reply.text.clone(),
            });
        }
        out
    }

    /// Adds a completed turn and writes every unsaved turn. On a write error the turn is kept
    /// in memory (and written with the next one) and the file is rolled back to whole lines.
    pub fn push(&mut self, turn: Turn) -> std::io::Result<()> {
        self.tokens += u64::from(turn.reply.tokens.unwrap_or(0));
        self.turns.push(turn);
        self.save()
    }

    /// Writes the turns not on disk yet.
    pub fn save(&mut self) -> std::io::Result<()> {
        if self.saved == self.turns.len() {
            return Ok(());
        }
        let mut text = String::new();
        for t in &self.turns[self.saved..] {
            for line in [&t.user, &t.reply] {
                text.push_str(&serde_json::to_string(line).map_err(std::io::Error::other)?);
                text.push('\n');
            }
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = crate::statedir::open_private(&self.path, true)?;
        let before = file.seek(SeekFrom::End(0))?;
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_data());
        if let Err(e) = written {
            // Leave whole lines only, so the next write starts cleanly.
            let _ = file.set_len(before);
            return Err(e);
        }
        self.saved = self.turns.len();
        Ok(())
    }

    /// Ends the conversation: what is not on disk is written first (a failure clears
    /// nothing), then the file is renamed to `transcript-<ms>.jsonl` beside it and a new,
    /// empty transcript begins. Returns the archive's path, if there was a file.
    pub fn archive(&mut self, now_ms: u64) -> std::io::Result<Option<PathBuf>> {
        self.save()?;
        let archived = self
            .path
            .with_file_name(format!("transcript-{now_ms}.jsonl"));
        let moved = match std::fs::rename(&self.path, &archived) {
            Ok(()) => Some(archived),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        self.turns.clear();
        self.saved = 0;
        self.tokens = 0;
        Ok(moved)
    }

    /// Turns in memory that are not on disk (after a write error).
    pub fn unsaved(&self) -> usize {
        self.turns.len() - self.saved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(n: u64, user: &str, reply: &str) -> Turn {
        let line = |role: &str, text: &str| Line {
            turn: n,
            role: role.into(),
            text: text.into(),
            at_ms: 1_700_000_000_000 + n,
            tokens: (role == "assistant").then_some(3),
            stop: (role == "assistant").then(|| "end_of_text".into()),
            resumed: 0,
        };
        Turn {
            user: line("user", user),
            reply: line("assistant", reply),
        }
    }

    fn open(path: &Path) -> (Transcript, Repairs) {
        Transcript::open(path.to_path_buf()).expect("open")
    }

    #[test]
    fn clearing_archives_the_file_whole_and_starts_empty() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("session/transcript.jsonl");
        let (mut t, _) = open(&path);
        assert_eq!(
            t.archive(1).expect("archive"),
            None,
            "nothing to archive yet"
        );
        t.push(turn(1, "hi", "hello")).expect("push");
        t.push(turn(2, "and?", "fine")).expect("push");
        let archived = t.archive(42).expect("archive").expect("a file");
        assert!(archived.ends_with("session/transcript-42.jsonl"));
        assert_eq!(
            std::fs::read_to_string(&archived)
                .expect("read")
                .lines()
                .count(),
            4
        );
        assert!(t.is_empty() && t.tokens() == 0 && !path.exists());
        t.push(turn(1, "again", "yes")).expect("push");
        let (back, _) = open(&path);
        assert_eq!(back.len(), 1);
    }

    #[test]
    fn turns_survive_reopening_and_read_as_json_lines() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("session/transcript.jsonl");
        let (mut t, _) = open(&path);
        assert!(t.is_empty());
        t.push(turn(1, "hi", "hello")).expect("push");
        t.push(turn(2, "multi\nline \"quoted\"", "ok ✓"))
            .expect("push");

        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 4, "{text}");
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).expect("each line is JSON");
        }
        let (again, repairs) = open(&path);
        assert_eq!(repairs, Repairs::default());
        assert_eq!(again.turns(), t.turns());
        assert_eq!(again.tokens(), 6);
        assert_eq!(again.messages().len(), 4);
        assert_eq!(again.messages()[2].text, "multi\nline \"quoted\"");
    }

    #[test]
    fn a_torn_last_write_is_cut_off_and_the_next_turn_starts_cleanly() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("transcript.jsonl");
        let (mut t, _) = open(&path);
        t.push(turn(1, "a", "b")).expect("push");
        let good = std::fs::read(&path).expect("read");
        // A user line made it, its reply only half.
        let mut torn = good.clone();
        torn.extend_from_slice(b"{\"turn\":2,\"role\":\"user\",\"text\":\"c\",\"at_ms\":1}\n");
        torn.extend_from_slice(b"{\"turn\":2,\"role\":\"assis");
        std::fs::write(&path, &torn).expect("write");

        let (mut t, repairs) = open(&path);
        assert_eq!(repairs.cut_bytes as usize, torn.len() - good.len());
        assert_eq!(t.len(), 1);
        assert_eq!(std::fs::read(&path).expect("read"), good);
        t.push(turn(2, "c", "d")).expect("push");
        let (t, repairs) = open(&path);
        assert_eq!(repairs, Repairs::default());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn foreign_lines_in_the_middle_are_skipped_not_destroyed() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("transcript.jsonl");
        let (mut t, _) = open(&path);
        t.push(turn(1, "a", "b")).expect("push");
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.push_str("# a note someone added\n");
        std::fs::write(&path, &text).expect("write");
        let (mut t, _) = open(&path);
        t.push(turn(2, "c", "d")).expect("push");
        let (t, repairs) = open(&path);
        assert_eq!(t.len(), 2);
        assert_eq!(repairs.skipped_lines, 1);
        assert!(std::fs::read_to_string(&path)
            .expect("read")
            .contains("# a note"));
    }

    #[test]
    fn a_failed_write_keeps_the_turn_for_the_next_one() {
        let dir = tempfile::tempdir().expect("dir");
        let blocker = dir.path().join("session");
        let (mut t, _) = open(&blocker.join("transcript.jsonl"));
        // The transcript's folder is a file: every write fails until it is moved away.
        std::fs::write(&blocker, "not a dir").expect("write");
        assert!(t.push(turn(1, "a", "b")).is_err());
        assert_eq!(t.len(), 1);
        assert_eq!(t.unsaved(), 1);
        std::fs::remove_file(&blocker).expect("rm");
        t.push(turn(2, "c", "d")).expect("push");
        assert_eq!(t.unsaved(), 0);
        let (again, _) = open(&blocker.join("transcript.jsonl"));
        assert_eq!(again.len(), 2);
    }
}
