//! The monitoring console (ratatui) that attaches to a running supervisor over its control
//! endpoint, like `tmux attach`: closing or crashing it never touches the session. Like the
//! workers, it depends on `mate-protocol` only.
//!
//! Theory of operation: one loop owns the model ([`app::App`]) and runs over one closed
//! input enum ([`app::Input`]): keys from a terminal thread, and status polls, journal events
//! and chat replies from feed threads that talk to the supervisor. `App::update` is pure and
//! returns the [`app::Action`] the loop carries out; the loop draws ([`view`]) only when
//! something changed, at most 30 frames a second, so a streaming reply is coalesced into
//! frames and an idle console sleeps.

pub mod app;
pub mod view;

/// Fixed data (a supervisor with both workers, a GPU, events, a chat) for the snapshot tests
/// and the render benchmark.
#[doc(hidden)]
pub mod fixture;
#[cfg(test)]
mod tests;

mod feed;

use std::{
    path::PathBuf,
    sync::mpsc,
    time::{Duration, Instant},
};

use mate_protocol::{
    client::{self, ClientError, Connection},
    Reply, Request, Role,
};
use ratatui::crossterm::event::{self, Event as TermEvent};

use crate::{
    app::{Action, App, Input},
    feed::Msg,
};

/// At most this many frames a second.
const FRAME: Duration = Duration::from_millis(33);

/// What `mate tui` needs.
#[derive(Debug, Clone)]
pub struct Options {
    pub state_dir: PathBuf,
    /// `NO_COLOR` is set.
    pub mono: bool,
}

/// How the console ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `q`: the supervisor goes on.
    Detached,
    /// The user confirmed stopping the supervisor.
    Stopped,
    /// SIGTERM, SIGHUP, or a thread that panicked; the terminal was restored.
    Terminated(String),
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TuiError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
}

/// Attaches to the supervisor of `opts.state_dir` until the user detaches. Fails at once
/// with [`ClientError::NotRunning`] when none runs there.
pub fn run(opts: &Options) -> Result<Outcome, TuiError> {
    // Refuse before touching the terminal: a clear message and exit code when none runs.
    // The connection and its first answer then start the status poll.
    let mut first = Connection::open(&opts.state_dir, Role::Tui)?;
    let reply = first.call(&Request::Status)?;
    let (tx, rx) = mpsc::channel();
    if let Reply::Status(report) = reply {
        let _ = tx.send(Msg::Input(Input::Status(report)));
    }
    {
        // ratatui's hook (installed by `init`) restores the terminal; this one also tells the
        // loop, so a panic in a feed thread ends the console instead of drawing over a shell.
        let tx = tx.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = tx.send(Msg::Terminate("a console thread panicked".into()));
            previous(info);
        }));
    }
    let mut terminal = ratatui::init();
    {
        let tx = tx.clone();
        // SIGTERM and SIGHUP (and SIGINT, which raw mode turns into a key anyway).
        let _ = ctrlc::set_handler(move || {
            let _ = tx.send(Msg::Terminate("terminated by a signal".into()));
        });
    }
    spawn(tx.clone(), move |tx| keys(&tx));
    let dir = opts.state_dir.clone();
    spawn(tx.clone(), move |tx| {
        feed::poll_status(dir, tx, Some(first))
    });
    let dir = opts.state_dir.clone();
    spawn(tx.clone(), move |tx| feed::follow_events(dir, tx));
    let mut app = App::new(opts.state_dir.display().to_string(), opts.mono);
    let outcome = run_loop(&mut terminal, &mut app, &rx, &tx, &opts.state_dir);
    ratatui::restore();
    outcome
}

fn spawn(tx: mpsc::Sender<Msg>, f: impl FnOnce(mpsc::Sender<Msg>) + Send + 'static) {
    std::thread::spawn(move || f(tx));
}

/// The terminal thread: keys and resizes.
fn keys(tx: &mpsc::Sender<Msg>) {
    loop {
        let input = match event::read() {
            Ok(TermEvent::Key(key)) => Input::Key(key),
            Ok(TermEvent::Resize(..)) => Input::Resize,
            Ok(_) => continue,
            Err(e) => {
                let _ = tx.send(Msg::Terminate(format!("reading the terminal failed: {e}")));
                return;
            }
        };
        if tx.send(Msg::Input(input)).is_err() {
            return;
        }
    }
}

fn run_loop(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    rx: &mpsc::Receiver<Msg>,
    tx: &mpsc::Sender<Msg>,
    state_dir: &std::path::Path,
) -> Result<Outcome, TuiError> {
    let mut last_frame = Instant::now() - FRAME;
    loop {
        if app.dirty && last_frame.elapsed() >= FRAME {
            terminal.draw(|frame| view::draw(frame, app))?;
            app.dirty = false;
            last_frame = Instant::now();
        }
        // Sleep until the next frame is allowed (something to draw) or an input comes. This
        // loop holds a sender itself, so the channel never disconnects.
        let msg = if app.dirty {
            match rx.recv_timeout(FRAME.saturating_sub(last_frame.elapsed())) {
                Ok(msg) => msg,
                Err(_) => continue,
            }
        } else {
            match rx.recv() {
                Ok(msg) => msg,
                Err(_) => return Ok(Outcome::Detached),
            }
        };
        let input = match msg {
            Msg::Input(input) => input,
            Msg::Terminate(why) => return Ok(Outcome::Terminated(why)),
        };
        let request = match app.update(input) {
            None => continue,
            Some(Action::Quit) => return Ok(Outcome::Detached),
            Some(Action::Shutdown) => {
                // Asked here, not on a thread: the console ends right after.
                client::call(state_dir, Role::Ctl, &Request::Shutdown)?;
                return Ok(Outcome::Stopped);
            }
            Some(Action::Chat(text)) => Request::Chat { text },
            Some(Action::Cancel) => Request::Cancel,
            Some(Action::Restart(worker)) => Request::Restart {
                worker,
                profile: None,
            },
            Some(Action::SetProfile(name)) => Request::SetProfile { name },
        };
        feed::act(state_dir.to_path_buf(), request, tx.clone());
    }
}
