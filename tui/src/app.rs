//! The console's model and its update: everything the screen shows, and what each key does.
//! Pure: inputs in (keys, replies from the supervisor, time passed in), actions out for the
//! runtime to carry out. Nothing here draws or does I/O.

use std::collections::VecDeque;

use mate_protocol::{Event, GenerationStats, StatusReport, WorkerKind, WorkerReport};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// Events kept for the log (newest first).
pub const EVENTS_KEPT: usize = 500;
/// Chat lines kept on screen (the transcript on disk keeps everything).
pub const CHAT_KEPT: usize = 200;
/// GPU readings kept for the history chart: five minutes at one reading per status poll.
pub const VRAM_KEPT: usize = 600;
/// Replies kept for the tok/s sparkline.
pub const SPEEDS_KEPT: usize = 60;

/// Which panel the arrows move in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Workers,
    Events,
    Chat,
}

impl Focus {
    const ORDER: [Focus; 3] = [Focus::Workers, Focus::Events, Focus::Chat];

    fn step(self, by: isize) -> Focus {
        let i = Focus::ORDER.iter().position(|f| *f == self).unwrap_or(0) as isize;
        Focus::ORDER[(i + by).rem_euclid(3) as usize]
    }
}

/// A destructive action waiting for its y/N.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirm {
    Restart(WorkerKind),
    Profile(String),
    Shutdown,
}

impl Confirm {
    /// The question, as the dialog asks it.
    pub fn question(&self) -> String {
        match self {
            Confirm::Restart(kind) => format!("Restart the {kind} worker?"),
            Confirm::Profile(name) => format!("Switch the LLM to profile {name} (it reloads)?"),
            Confirm::Shutdown => "Stop the supervisor and its workers?".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Keys go to the chat input line.
    Typing,
    Help,
    /// Choosing a profile from the ladder (index into [`App::profiles`]).
    PickProfile(usize),
    Confirm(Confirm),
}

/// Where the connection to the supervisor stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    Connecting,
    Attached,
    /// Lost; retrying. Why, as the last attempt said.
    Disconnected(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    You,
    Mate,
    /// A line from the console itself (an error, a restart during the reply).
    Note,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatLine {
    pub who: Speaker,
    pub text: String,
}

/// What happened, for [`App::update`].
#[derive(Debug, Clone)]
pub enum Input {
    Key(KeyEvent),
    /// The terminal changed size: draw again.
    Resize,
    Attached,
    Disconnected(String),
    /// A status poll's answer.
    Status(Box<StatusReport>),
    /// A journal event (history first, then as they happen).
    Event(Event),
    /// The console's chat waits for another client's reply: `ahead` turns go first.
    Queued(u32),
    Chunk(String),
    ChatDone(GenerationStats),
    ChatFailed(String),
}

/// What the runtime must do for the user.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Quit,
    Chat(String),
    Cancel,
    Restart(WorkerKind),
    SetProfile(String),
    Shutdown,
}

/// Everything the screen shows.
#[derive(Debug)]
pub struct App {
    /// Shown in the title (the state dir).
    pub title: String,
    pub link: Link,
    pub status: Option<StatusReport>,
    /// Newest first.
    pub events: VecDeque<Event>,
    /// How many events the log is scrolled down by.
    pub event_scroll: usize,
    pub chat: VecDeque<ChatLine>,
    pub input: String,
    /// A reply is streaming in (or the console's chat waits for its turn).
    pub streaming: bool,
    /// The console's chat waits in the queue for another client's reply.
    pub waiting: bool,
    /// (seconds since start, used VRAM %), oldest first.
    pub vram: VecDeque<f64>,
    /// Generation tok/s of recent replies, oldest first.
    pub speeds: VecDeque<f64>,
    pub last_ttft_ms: Option<f32>,
    pub selected: usize,
    pub focus: Focus,
    pub mode: Mode,
    pub hints: bool,
    /// `NO_COLOR`: reverse video and words instead of colours.
    pub mono: bool,
    /// Something changed since the last frame.
    pub dirty: bool,
}

impl App {
    pub fn new(title: String, mono: bool) -> App {
        App {
            title: one_line(&title),
            link: Link::Connecting,
            status: None,
            events: VecDeque::new(),
            event_scroll: 0,
            chat: VecDeque::new(),
            input: String::new(),
            streaming: false,
            waiting: false,
            vram: VecDeque::new(),
            speeds: VecDeque::new(),
            last_ttft_ms: None,
            selected: 0,
            focus: Focus::Workers,
            mode: Mode::Normal,
            hints: true,
            mono,
            dirty: true,
        }
    }

    pub fn workers(&self) -> &[WorkerReport] {
        self.status.as_ref().map_or(&[], |s| &s.workers[..])
    }

    /// The profiles `p` offers: the ladder's rungs, then `auto`.
    pub fn profiles(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .status
            .as_ref()
            .map(|s| s.ladder.iter().map(|r| r.profile.name.clone()).collect())
            .unwrap_or_default();
        names.push("auto".into());
        names
    }

    pub fn update(&mut self, input: Input) -> Option<Action> {
        self.dirty = true;
        match input {
            Input::Key(key) if key.kind != KeyEventKind::Release => self.key(key),
            Input::Key(_) => {
                self.dirty = false;
                None
            }
            Input::Resize => None,
            Input::Attached => {
                self.link = Link::Attached;
                None
            }
            Input::Disconnected(why) => {
                self.link = Link::Disconnected(one_line(&why));
                if self.streaming {
                    self.streaming = false;
                    self.say(
                        Speaker::Note,
                        "the connection to the supervisor was lost".into(),
                    );
                }
                None
            }
            Input::Status(mut report) => {
                self.link = Link::Attached;
                clean_status(&mut report);
                if let Some(r) = &report.gpu.reading {
                    push_capped(&mut self.vram, f64::from(r.used_percent()), VRAM_KEPT);
                }
                let n = report.workers.len();
                self.selected = self.selected.min(n.saturating_sub(1));
                self.status = Some(*report);
                None
            }
            Input::Event(mut event) => {
                event.message = one_line(&event.message);
                self.events.push_front(event);
                self.events.truncate(EVENTS_KEPT);
                if self.event_scroll > 0 {
                    // Keep the lines in view where they are while new ones arrive on top.
                    self.event_scroll = (self.event_scroll + 1).min(EVENTS_KEPT - 1);
                }
                None
            }
            Input::Queued(ahead) => {
                self.waiting = true;
                self.say(
                    Speaker::Note,
                    format!("another client's reply streams: yours waits its turn ({ahead} ahead)"),
                );
                None
            }
            Input::Chunk(text) => {
                self.waiting = false;
                let text = printable(&text);
                match self.chat.back_mut() {
                    Some(line) if line.who == Speaker::Mate && self.streaming => {
                        line.text.push_str(&text)
                    }
                    _ => self.say(Speaker::Mate, text),
                }
                None
            }
            Input::ChatDone(stats) => {
                self.streaming = false;
                self.waiting = false;
                if stats.generated_tokens > 1 {
                    push_capped(
                        &mut self.speeds,
                        f64::from(stats.gen_tokens_per_s),
                        SPEEDS_KEPT,
                    );
                }
                self.last_ttft_ms = Some(stats.ttft_ms);
                None
            }
            Input::ChatFailed(why) => {
                self.streaming = false;
                self.waiting = false;
                self.say(Speaker::Note, printable(&why));
                None
            }
        }
    }

    fn say(&mut self, who: Speaker, text: String) {
        push_capped(&mut self.chat, ChatLine { who, text }, CHAT_KEPT);
    }

    fn key(&mut self, key: KeyEvent) -> Option<Action> {
        let ctrl_c =
            key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl_c && self.waiting {
            // A cancel now would stop another client's reply.
            self.say(
                Speaker::Note,
                "the reply streaming now is another client's; yours starts when it ends".into(),
            );
            return None;
        }
        if ctrl_c && self.streaming {
            return Some(Action::Cancel);
        }
        match self.mode.clone() {
            Mode::Typing => self.typing(key, ctrl_c),
            Mode::Help => {
                self.mode = Mode::Normal;
                None
            }
            Mode::Confirm(what) => {
                self.mode = Mode::Normal;
                // Anything but an explicit yes is a no.
                matches!(key.code, KeyCode::Char('y' | 'Y')).then(|| match what {
                    Confirm::Restart(kind) => Action::Restart(kind),
                    Confirm::Profile(name) => Action::SetProfile(name),
                    Confirm::Shutdown => Action::Shutdown,
                })
            }
            Mode::PickProfile(i) => {
                let names = self.profiles();
                match key.code {
                    KeyCode::Up | KeyCode::Char('k') => {
                        self.mode = Mode::PickProfile(i.saturating_sub(1))
                    }
                    KeyCode::Down | KeyCode::Char('j') => {
                        self.mode = Mode::PickProfile((i + 1).min(names.len().saturating_sub(1)))
                    }
                    KeyCode::Enter => {
                        self.mode = match names.get(i) {
                            Some(name) => Mode::Confirm(Confirm::Profile(name.clone())),
                            None => Mode::Normal,
                        }
                    }
                    _ => self.mode = Mode::Normal,
                }
                None
            }
            Mode::Normal if ctrl_c => Some(Action::Quit),
            Mode::Normal => self.normal(key),
        }
    }

    fn typing(&mut self, key: KeyEvent, ctrl_c: bool) -> Option<Action> {
        match key.code {
            _ if ctrl_c => self.mode = Mode::Normal,
            KeyCode::Esc => self.mode = Mode::Normal,
            KeyCode::Enter => {
                let text = self.input.trim().to_string();
                if text.is_empty() {
                    return None;
                }
                if self.streaming {
                    self.say(
                        Speaker::Note,
                        "a reply is still streaming: wait for it, or Ctrl-C to cancel it".into(),
                    );
                    return None;
                }
                self.input.clear();
                self.streaming = true;
                self.say(Speaker::You, text.clone());
                return Some(Action::Chat(text));
            }
            KeyCode::Backspace => {
                self.input.pop();
            }
            // Esc then a key in quick succession reads as Alt+key: leave, then the key.
            KeyCode::Char(c) if key.modifiers.contains(KeyModifiers::ALT) => {
                self.mode = Mode::Normal;
                return self.normal(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
            }
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
                self.input.push(c)
            }
            _ => self.dirty = false,
        }
        None
    }

    fn normal(&mut self, key: KeyEvent) -> Option<Action> {
        match key.code {
            KeyCode::Char('q') => return Some(Action::Quit),
            KeyCode::Char('?') => self.mode = Mode::Help,
            KeyCode::Char('H') => self.hints = !self.hints,
            KeyCode::Tab => self.focus = self.focus.step(1),
            KeyCode::BackTab => self.focus = self.focus.step(-1),
            KeyCode::Char('i') | KeyCode::Enter => {
                self.focus = Focus::Chat;
                self.mode = Mode::Typing;
            }
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::Char('r') => match self.workers().get(self.selected) {
                Some(w) => self.mode = Mode::Confirm(Confirm::Restart(w.kind)),
                None => self.dirty = false,
            },
            KeyCode::Char('p') => {
                let names = self.profiles();
                let current = self.status.as_ref().map(|s| s.profile.clone());
                let at = names.iter().position(|n| Some(n) == current.as_ref());
                self.mode = Mode::PickProfile(at.unwrap_or(0));
            }
            KeyCode::Char('S') => self.mode = Mode::Confirm(Confirm::Shutdown),
            _ => self.dirty = false,
        }
        None
    }

    fn move_by(&mut self, by: isize) {
        match self.focus {
            Focus::Workers => {
                let n = self.workers().len();
                self.selected = step(self.selected, by, n);
            }
            Focus::Events => {
                self.event_scroll = step(self.event_scroll, by, self.events.len());
            }
            Focus::Chat => self.dirty = false,
        }
    }
}

/// Chat text from the supervisor or the model, safe to put on a terminal: control characters
/// (escape sequences, carriage returns, tabs) would move the cursor and break the layout, so
/// each becomes a space; newlines stay, for the chat's wrapping.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
        .collect()
}

/// Text from outside shown on one line (messages, errors, names): every control character,
/// newlines too, becomes a space.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// [`one_line`] over every text field of a status, once, as it arrives.
fn clean_status(report: &mut StatusReport) {
    let clean = |s: &mut String| *s = one_line(s);
    clean(&mut report.profile);
    clean(&mut report.ceiling);
    for rung in &mut report.ladder {
        clean(&mut rung.profile.name);
    }
    for w in &mut report.workers {
        w.last_error.as_mut().map(clean);
        w.profile.as_mut().map(clean);
        if let Some(b) = &mut w.vitals.bridge {
            b.last_error.as_mut().map(clean);
            b.expression.as_mut().map(clean);
            clean(&mut b.peer);
        }
    }
    report.gpu.note.as_mut().map(clean);
    report.gpu.name.as_mut().map(clean);
    if let Some(d) = &mut report.last_decision {
        clean(&mut d.message);
    }
}

fn step(at: usize, by: isize, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    (at as isize + by).clamp(0, len as isize - 1) as usize
}

fn push_capped<T>(list: &mut VecDeque<T>, item: T, cap: usize) {
    list.push_back(item);
    while list.len() > cap {
        list.pop_front();
    }
}
