//! The threads that talk to the supervisor for the console, each turning what it hears into
//! [`Input`]s: a status poll on one attached connection, the event journal followed on
//! another, and one short-lived thread per chat or command. None of them can block the
//! screen: the loop only ever reads their channel.

use std::{path::PathBuf, sync::mpsc, time::Duration};

use mate_protocol::{
    client::{ClientError, Connection},
    Reply, Request, Role,
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

/// Follows the journal (recent events first, then new ones), reconnecting when it breaks
/// (the status poll tells the user about that).
pub fn follow_events(state_dir: PathBuf, tx: mpsc::Sender<Msg>) {
    // After a reconnect the supervisor sends its recent events again; skip those seen.
    let mut last_seen = 0u64;
    let mut alive = true;
    while alive {
        let _ = mate_protocol::client::request(
            &state_dir,
            Role::Ctl,
            &Request::Events { follow: true },
            |reply| match reply {
                Reply::Event(e) if e.at_ms < last_seen => true,
                Reply::Event(e) => {
                    last_seen = e.at_ms;
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
                Reply::Event(_) => true,
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
