//! The model's update: keys → actions, confirm dialogs, chat input mode.

use mate_protocol::WorkerKind;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::{
    app::{Action, Confirm, Focus, Input, Link, Mode, Speaker},
    fixture,
};

fn key(code: KeyCode) -> Input {
    Input::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn ch(c: char) -> Input {
    key(KeyCode::Char(c))
}

fn ctrl_c() -> Input {
    Input::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL))
}

#[test]
fn q_detaches_and_question_mark_opens_help_that_any_key_closes() {
    let mut app = fixture::app(false);
    app.streaming = false;
    assert_eq!(app.update(ch('?')), None);
    assert_eq!(app.mode, Mode::Help);
    assert_eq!(
        app.update(ch('q')),
        None,
        "q closes the help, it does not quit"
    );
    assert_eq!(app.mode, Mode::Normal);
    assert_eq!(app.update(ch('q')), Some(Action::Quit));
    assert_eq!(
        app.update(ctrl_c()),
        Some(Action::Quit),
        "Ctrl-C with nothing to cancel"
    );
}

#[test]
fn restart_asks_first_and_defaults_to_no() {
    let mut app = fixture::app(false);
    app.update(ch('j'));
    assert_eq!(app.selected, 1);
    assert_eq!(app.update(ch('r')), None);
    assert_eq!(
        app.mode,
        Mode::Confirm(Confirm::Restart(WorkerKind::Bridge))
    );
    // Enter is not a yes.
    assert_eq!(app.update(key(KeyCode::Enter)), None);
    assert_eq!(app.mode, Mode::Normal);
    app.update(ch('k'));
    app.update(ch('r'));
    assert_eq!(app.update(ch('y')), Some(Action::Restart(WorkerKind::Llm)));
    app.update(ch('S'));
    assert_eq!(app.mode, Mode::Confirm(Confirm::Shutdown));
    assert_eq!(app.update(ch('n')), None);
    app.update(ch('S'));
    assert_eq!(app.update(ch('Y')), Some(Action::Shutdown));
}

#[test]
fn a_profile_is_picked_from_the_ladder_then_confirmed() {
    let mut app = fixture::app(false);
    app.update(ch('p'));
    // The cursor starts on the active profile.
    assert_eq!(app.mode, Mode::PickProfile(1));
    app.update(key(KeyCode::Down));
    app.update(ch('j'));
    app.update(ch('j'));
    app.update(ch('j'));
    assert_eq!(
        app.mode,
        Mode::PickProfile(4),
        "auto is last, and the cursor stops there"
    );
    app.update(ch('k'));
    app.update(key(KeyCode::Enter));
    assert_eq!(app.mode, Mode::Confirm(Confirm::Profile("cpu".into())));
    assert_eq!(app.update(ch('y')), Some(Action::SetProfile("cpu".into())));
    app.update(ch('p'));
    app.update(key(KeyCode::Esc));
    assert_eq!(app.mode, Mode::Normal);
}

#[test]
fn typing_takes_every_letter_until_esc_and_enter_sends() {
    let mut app = fixture::app(false);
    app.streaming = false;
    app.update(ch('i'));
    assert_eq!((app.mode.clone(), app.focus), (Mode::Typing, Focus::Chat));
    for c in "quit? r p".chars() {
        assert_eq!(app.update(ch(c)), None, "{c} is text while typing");
    }
    app.update(key(KeyCode::Backspace));
    assert_eq!(app.input, "quit? r ");
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        Some(Action::Chat("quit? r".into()))
    );
    assert!(app.streaming && app.input.is_empty());
    assert_eq!(app.chat.back().map(|l| l.who), Some(Speaker::You));
    // A second message while the reply streams is held back with a note.
    for c in "more".chars() {
        app.update(ch(c));
    }
    assert_eq!(app.update(key(KeyCode::Enter)), None);
    assert_eq!(app.chat.back().map(|l| l.who), Some(Speaker::Note));
    assert_eq!(app.update(ctrl_c()), Some(Action::Cancel));
    app.update(key(KeyCode::Esc));
    assert_eq!(app.mode, Mode::Normal);
    // Enter in normal mode starts typing too.
    app.update(key(KeyCode::Enter));
    assert_eq!(app.mode, Mode::Typing);
}

#[test]
fn ctrl_c_while_the_chat_waits_in_the_queue_never_cancels_another_clients_reply() {
    let mut app = fixture::app(false);
    app.streaming = false;
    app.update(ch('i'));
    for c in "hi".chars() {
        app.update(ch(c));
    }
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        Some(Action::Chat("hi".into()))
    );
    app.update(Input::Queued(1));
    assert!(app.waiting);
    assert_eq!(app.update(ctrl_c()), None, "not another client's reply");
    assert_eq!(app.chat.back().map(|l| l.who), Some(Speaker::Note));
    // Its own reply starts: now Ctrl-C cancels it.
    app.update(Input::Chunk("Hello".into()));
    assert!(!app.waiting);
    assert_eq!(app.update(ctrl_c()), Some(Action::Cancel));
}

#[test]
fn a_streamed_reply_grows_one_line_and_its_stats_feed_the_sparkline() {
    let mut app = fixture::app(false);
    let lines = app.chat.len();
    app.update(Input::Chunk(" in the garden.".into()));
    assert_eq!(app.chat.len(), lines);
    assert_eq!(
        app.chat.back().map(|l| l.text.as_str()),
        Some("Pretty good! I spent most of it in the garden.")
    );
    let speeds = app.speeds.len();
    app.update(Input::ChatDone(fixture::stats(44.0)));
    assert!(!app.streaming);
    assert_eq!(app.speeds.len(), speeds + 1);
    assert_eq!(app.last_ttft_ms, Some(180.0));
}

#[test]
fn tab_cycles_focus_and_arrows_scroll_the_event_log() {
    let mut app = fixture::app(false);
    app.update(key(KeyCode::Tab));
    assert_eq!(app.focus, Focus::Events);
    app.update(ch('j'));
    app.update(ch('j'));
    assert_eq!(app.event_scroll, 2);
    app.update(ch('j'));
    assert_eq!(
        app.event_scroll, 2,
        "three events: the scroll stops at the last"
    );
    app.update(key(KeyCode::BackTab));
    app.update(key(KeyCode::BackTab));
    assert_eq!(app.focus, Focus::Chat);
    app.update(ch('H'));
    assert!(!app.hints);
}

#[test]
fn a_lost_connection_ends_the_reply_and_says_so() {
    let mut app = fixture::app(false);
    app.update(Input::Disconnected("connection refused".into()));
    assert_eq!(app.link, Link::Disconnected("connection refused".into()));
    assert!(!app.streaming);
    assert_eq!(app.chat.back().map(|l| l.who), Some(Speaker::Note));
    app.update(Input::Status(Box::new(fixture::status(30))));
    assert_eq!(app.link, Link::Attached);
}

#[test]
fn control_characters_from_the_model_never_reach_the_terminal() {
    let mut app = fixture::app(false);
    app.update(Input::Chunk(" \x1b[2J\rgone\tx\u{7}\nnext".into()));
    let text = &app.chat.back().map(|l| l.text.clone()).unwrap_or_default();
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{text:?}"
    );
    assert!(text.ends_with("  [2J gone x \nnext"), "{text:?}");
}

#[test]
fn esc_then_a_key_in_quick_succession_leaves_typing_and_acts() {
    let mut app = fixture::app(false);
    app.streaming = false;
    app.update(ch('i'));
    // The terminal reports Esc followed at once by `q` as Alt+q.
    let alt_q = Input::Key(KeyEvent::new(KeyCode::Char('q'), KeyModifiers::ALT));
    assert_eq!(app.update(alt_q), Some(Action::Quit));
    assert!(app.input.is_empty());
}
