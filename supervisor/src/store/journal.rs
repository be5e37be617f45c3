//! The event journal: every state change, in memory for `mate ctl events` and the dashboard,
//! appended to `<state>/events.jsonl` (one [`Event`] per line, for `jq` and `tail -f`), and
//! pushed to every client that follows.
//!
//! The file is rotated to `events.jsonl.1` past [`ROTATE_BYTES`]. Writing it is best effort: a
//! full disk costs journal lines, never the supervisor.

use std::{
    collections::VecDeque,
    fs::File,
    io::Write as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use mate_protocol::{Event, EventKind, Level, Reply, WorkerKind};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::statedir::open_private;

/// Events kept in memory (and read back from the file at start).
pub const KEEP: usize = 1000;
/// The file is rotated past this size.
pub const ROTATE_BYTES: u64 = 8 << 20;
/// Longest message an event keeps, in bytes (a 60 KB avatar path is cut, not kept 1000 times).
pub const MAX_MESSAGE: usize = 1024;
/// At most one "client rejected" event per this period; the rest are counted.
const REJECTION_PERIOD: Duration = Duration::from_secs(1);

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Option<File>,
    written: u64,
    recent: VecDeque<Event>,
    followers: Vec<mpsc::Sender<Reply>>,
    rejections: Rejections,
}

#[derive(Debug, Default)]
struct Rejections {
    last: Option<tokio::time::Instant>,
    suppressed: u32,
}

impl Journal {
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join("events.jsonl")
    }

    /// Opens the journal, reading back the last [`KEEP`] events of earlier runs.
    pub fn open(path: PathBuf) -> Journal {
        let text = std::fs::read(&path).unwrap_or_default();
        // A torn last line (a crash or a full disk mid-write) is cut off, so the next event
        // starts a line of its own instead of being glued to it.
        let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let torn = text.len() - whole;
        // Only the newest lines are parsed: a full file holds tens of thousands.
        let mut recent: VecDeque<Event> = String::from_utf8_lossy(&text[..whole])
            .lines()
            .rev()
            .filter_map(|line| serde_json::from_str(line).ok())
            .take(KEEP)
            .collect();
        recent.make_contiguous().reverse();
        let file = open_private(&path, true).and_then(|f| {
            if torn > 0 {
                f.set_len(whole as u64)?;
                warn!(path = %path.display(), bytes = torn, "cut off a torn last line");
            }
            Ok(f)
        });
        let (file, written) = match file {
            Ok(f) => {
                let len = f.metadata().map_or(0, |m| m.len());
                (Some(f), len)
            }
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot open the event journal");
                (None, 0)
            }
        };
        Journal {
            path,
            file,
            written,
            recent,
            followers: Vec::new(),
            rejections: Rejections::default(),
        }
    }

    /// Records an event: memory, file, followers, and the log.
    pub fn record(
        &mut self,
        level: Level,
        worker: Option<WorkerKind>,
        kind: EventKind,
        message: impl Into<String>,
    ) -> Event {
        let mut message = message.into();
        cap(&mut message, MAX_MESSAGE);
        let event = Event {
            at_ms: now_ms(),
            level,
            worker,
            kind,
            message,
        };
        match level {
            Level::Info => info!(worker = ?worker, "{}", event.message),
            Level::Warn | Level::Error => warn!(worker = ?worker, "{}", event.message),
        }
        if self.recent.len() == KEEP {
            self.recent.pop_front();
        }
        self.recent.push_back(event.clone());
        self.append(&event);
        self.followers
            .retain(|f| f.try_send(Reply::Event(event.clone())).is_ok());
        event
    }

    /// Records a refused connection, at most once per second; floods are summed up.
    pub fn rejected(&mut self, reason: &str) {
        let now = tokio::time::Instant::now();
        let r = &mut self.rejections;
        if r.last.is_some_and(|t| now - t < REJECTION_PERIOD) {
            r.suppressed += 1;
            return;
        }
        let more = std::mem::take(&mut r.suppressed);
        r.last = Some(now);
        let message = if more > 0 {
            format!("client rejected: {reason} (and {more} more in the last second)")
        } else {
            format!("client rejected: {reason}")
        };
        self.record(
            Level::Warn,
            None,
            EventKind::ClientRejected {
                reason: reason.into(),
            },
            message,
        );
    }

    pub fn recent(&self) -> impl Iterator<Item = &Event> {
        self.recent.iter()
    }

    /// Sends every new event to `client` until it goes away or falls too far behind.
    pub fn follow(&mut self, client: mpsc::Sender<Reply>) {
        self.followers.push(client);
    }

    fn append(&mut self, event: &Event) {
        let Some(file) = &mut self.file else {
            return;
        };
        let Ok(mut line) = serde_json::to_string(event) else {
            return;
        };
        line.push('\n');
        // One write per event; if it fails partway (a full disk), the part that made it is
        // taken back, so the file only ever holds whole lines.
        if let Err(e) = file.write_all(line.as_bytes()) {
            warn!(error = %e, "cannot append to the event journal");
            if let Err(e) = file.set_len(self.written) {
                warn!(error = %e, "cannot take back a partial journal line; closing the file");
                self.file = None;
            }
            return;
        }
        self.written += line.len() as u64;
        if self.written > ROTATE_BYTES {
            self.rotate();
        }
    }

    fn rotate(&mut self) {
        let old = self.path.with_extension("jsonl.1");
        self.file = None;
        if let Err(e) = std::fs::rename(&self.path, &old) {
            warn!(error = %e, "cannot rotate the event journal");
        }
        self.file = open_private(&self.path, true).ok();
        self.written = 0;
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut with `…`.
fn cap(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_reach_memory_the_file_and_followers_and_survive_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        let path = Journal::path_in(dir.path());
        let mut j = Journal::open(path.clone());
        let (tx, mut rx) = mpsc::channel(8);
        j.follow(tx);
        j.record(
            Level::Info,
            Some(WorkerKind::Llm),
            EventKind::Spawned { pid: 42 },
            "spawned",
        );
        assert!(matches!(
            rx.recv().await,
            Some(Reply::Event(Event {
                kind: EventKind::Spawned { pid: 42 },
                ..
            }))
        ));
        drop(rx);
        // A follower that left is dropped on the next event, not an error.
        j.record(Level::Info, None, EventKind::Stopped, "stopped");
        assert!(j.followers.is_empty());

        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 2);
        let again = Journal::open(path);
        assert_eq!(again.recent().count(), 2);
    }

    #[tokio::test]
    async fn a_flood_of_rejections_is_one_event_per_second() {
        let dir = tempfile::tempdir().expect("dir");
        let mut j = Journal::open(Journal::path_in(dir.path()));
        for _ in 0..500 {
            j.rejected("bad token");
        }
        assert_eq!(j.recent().count(), 1);
        assert_eq!(j.rejections.suppressed, 499);
    }

    #[tokio::test]
    async fn messages_are_capped_in_memory_and_on_disk() {
        let dir = tempfile::tempdir().expect("dir");
        let path = Journal::path_in(dir.path());
        let mut j = Journal::open(path.clone());
        let long = format!("ctl: avatar load {}", "é".repeat(30_000));
        for _ in 0..50 {
            j.record(Level::Info, None, EventKind::Notice, long.clone());
        }
        assert!(j.recent().all(|e| e.message.len() <= MAX_MESSAGE));
        assert!(j.recent().all(|e| e.message.ends_with('…')));
        let size = std::fs::metadata(&path).expect("meta").len();
        assert!(size < 50 * 2 * MAX_MESSAGE as u64, "{size} bytes on disk");
    }

    #[tokio::test]
    async fn a_torn_last_line_is_cut_off_at_start_and_the_next_event_is_a_line_of_its_own() {
        let dir = tempfile::tempdir().expect("dir");
        let path = Journal::path_in(dir.path());
        let mut j = Journal::open(path.clone());
        j.record(Level::Info, None, EventKind::Stopped, "first");
        drop(j);
        // What a full disk left: half an event, no newline.
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.push_str(r#"{"at_ms":1,"level":"info","worker":null,"kind":"#);
        std::fs::write(&path, &text).expect("write");

        let mut j = Journal::open(path.clone());
        assert_eq!(j.recent().count(), 1);
        j.record(Level::Info, None, EventKind::Stopped, "second");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<Event> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("every line is an event"))
            .collect();
        assert_eq!(
            lines.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
            ["first", "second"]
        );
    }
}
