//! The threads that talk to the supervisor for the console, each turning what it hears into
//! [`Input`]s: a status poll on one attached connection, the event journal followed on
//! another, and one short-lived thread per chat or command. None of them can block the
//! screen: the loop only ever reads their channel.

use std::{path::PathBuf, sync::mpsc, time::Duration};

use mate_protocol::{
    client::{ClientError, Connection},
    Event, Reply, Request, Role,
};

use crate::app::Input;

/// What the loop reads: inputs for the model, or a reason to stop.
#[derive(Debug)]
pub enum Msg {
    Input(Input),
    /// SIGTERM, SIGHUP or a panic in a thread: restore the terminal and leave.
    Terminate(String),
}

/// How often the status is asked for.
pub const POLL: Duration = Duration::from_millis(500);
/// Between attempts while the supervisor is unreachable.
const RETRY: Duration = Duration::from_secs(1);

fn why(e: &ClientError) -> String {
    match e {
        ClientError::NotRunning { .. } => "the supervisor is not running".into(),
        e => e.to_string(),
    }
}

/// Polls the status every [`POLL`] on one `Tui` connection (the supervisor records one
/// attach per connection), starting with `first` and reconnecting when it breaks.
pub fn poll_status(state_dir: PathBuf, tx: mpsc::Sender<Msg>, mut first: Option<Connection>) {
    loop {
        let opened = match first.take() {
            Some(conn) => Ok(conn),
            None => Connection::open(&state_dir, Role::Tui),
        };
        let mut conn = match opened {
            Ok(conn) => conn,
            Err(e) => {
                if tx.send(Msg::Input(Input::Disconnected(why(&e)))).is_err() {
                    return;
                }
                std::thread::sleep(RETRY);
                continue;
            }
        };
        if tx.send(Msg::Input(Input::Attached)).is_err() {
            return;
        }
        let lost = loop {
            match conn.call(&Request::Status) {
                Ok(Reply::Status(report)) => {
                    if tx.send(Msg::Input(Input::Status(report))).is_err() {
                        return;
                    }
                }
                Ok(other) => break format!("unexpected reply {other:?}"),
                Err(e) => break why(&e),
            }
            std::thread::sleep(POLL);
        };
        if tx.send(Msg::Input(Input::Disconnected(lost))).is_err() {
            return;
        }
        std::thread::sleep(RETRY);
    }
}

/// The events already shown. After a reconnect the supervisor sends its recent events again:
/// older ones are known by their time stamp, and those of the newest millisecond seen by
/// their message.
#[derive(Debug, Default)]
struct Seen {
    last_ms: u64,
    at_last_ms: Vec<String>,
}

impl Seen {
    /// Whether `e` is new, remembering it if so.
    fn is_new(&mut self, e: &Event) -> bool {
        if e.at_ms < self.last_ms
            || (e.at_ms == self.last_ms && self.at_last_ms.contains(&e.message))
        {
            return false;
        }
        if e.at_ms > self.last_ms {
            self.last_ms = e.at_ms;
            self.at_last_ms.clear();
        }
        self.at_last_ms.push(e.message.clone());
        true
    }
}

/// Follows the journal (recent events first, then new ones), reconnecting when it breaks
/// (the status poll tells the user about that).
pub fn follow_events(state_dir: PathBuf, tx: mpsc::Sender<Msg>) {
    let mut seen = Seen::default();
    let mut alive = true;
    while alive {
        let _ = mate_protocol::client::request(
            &state_dir,
            Role::Ctl,
            &Request::Events { follow: true },
            |reply| match reply {
                Reply::Event(e) if seen.is_new(&e) => {
                    alive = tx.send(Msg::Input(Input::Event(e))).is_ok();
                    alive
                }
                _ => true,
            },
        );
        std::thread::sleep(RETRY);
    }
}

/// Sends `request` on its own thread; what comes back (reply chunks, an error) is sent to
/// the loop.
pub fn act(state_dir: PathBuf, request: Request, tx: mpsc::Sender<Msg>) {
    let chat = matches!(request, Request::Chat { .. });
    std::thread::spawn(move || {
        let send = |input| tx.send(Msg::Input(input)).is_ok();
        let mut ended = false;
        let result =
            mate_protocol::client::request(&state_dir, Role::Ctl, &request, |reply| match reply {
                Reply::Chunk { text } => send(Input::Chunk(text)),
                Reply::ChatDone { stats } => {
                    ended = true;
                    send(Input::ChatDone(stats));
                    false
                }
                Reply::Error { message } => {
                    ended = true;
                    send(Input::ChatFailed(message));
                    false
                }
                Reply::Ok | Reply::Status(_) => {
                    ended = true;
                    false
                }
                Reply::Event(e) => match e.kind {
                    mate_protocol::EventKind::TurnQueued { ahead } => send(Input::Queued(ahead)),
                    _ => true,
                },
            });
        if let Err(e) = result {
            send(Input::ChatFailed(why(&e)));
        } else if chat && !ended {
            send(Input::ChatFailed(
                "the supervisor closed the chat before the reply ended".into(),
            ));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use mate_protocol::{EventKind, Level};

    fn event(at_ms: u64, message: &str) -> Event {
        Event {
            at_ms,
            level: Level::Info,
            worker: None,
            kind: EventKind::Notice,
            message: message.into(),
        }
    }

    #[test]
    fn events_sent_again_after_a_reconnect_are_shown_once() {
        let mut seen = Seen::default();
        let first = [event(10, "a"), event(20, "b"), event(20, "c")];
        assert!(first.iter().all(|e| seen.is_new(e)));
        // The supervisor's recent events again, then one more in the same millisecond and a
        // newer one.
        let again = [
            event(10, "a"),
            event(20, "b"),
            event(20, "c"),
            event(20, "d"),
            event(30, "e"),
        ];
        let shown: Vec<bool> = again.iter().map(|e| seen.is_new(e)).collect();
        assert_eq!(shown, [false, false, false, true, true]);
    }
}
