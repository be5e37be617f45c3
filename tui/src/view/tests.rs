//! Snapshots of the dashboard at fixed sizes with fixed data, the layout plan, wrapping, and
//! drawing that never panics.

use mate_protocol::{BridgeStatus, Event, EventKind, Level, VramReading, WorkerKind};
use ratatui::{
    backend::TestBackend,
    buffer::Buffer,
    style::{Color, Modifier},
    Terminal,
};

use super::{plan, wrap, Plan};
use crate::{
    app::{App, Confirm, Focus, Input, Mode},
    fixture,
};

/// insta's `assert_snapshot!`, reading and writing the snapshots in `src/snapshots/`, where
/// they were before `view` became a folder (insta looks next to the test's file by default).
macro_rules! assert_snapshot {
    ($($arg:tt)*) => {
        insta::with_settings!({ snapshot_path => "../snapshots" }, {
            insta::assert_snapshot!($($arg)*)
        })
    };
}

fn render(app: &App, width: u16, height: u16) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
    terminal
        .draw(|frame| super::draw(frame, app))
        .expect("draw");
    terminal.backend().buffer().clone()
}

/// The buffer's symbols, one line per row (trailing spaces trimmed).
fn text(buf: &Buffer) -> String {
    let mut out = String::new();
    for y in 0..buf.area.height {
        let line: String = (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn screen(app: &App, width: u16, height: u16) -> String {
    text(&render(app, width, height))
}

#[test]
fn dashboard_80x24() {
    assert_snapshot!(screen(&fixture::app(false), 80, 24));
}

#[test]
fn dashboard_120x40() {
    assert_snapshot!(screen(&fixture::app(false), 120, 40));
}

#[test]
fn no_color_uses_no_colour_and_reverse_video_for_the_selection() {
    let app = fixture::app(true);
    let buf = render(&app, 80, 24);
    assert_snapshot!(text(&buf));
    for cell in buf.content() {
        assert_eq!(
            (cell.fg, cell.bg),
            (Color::Reset, Color::Reset),
            "{:?} has a colour",
            cell.symbol()
        );
    }
    let row = (0..buf.area.height)
        .find(|&y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol())
                .collect::<String>()
                .contains("41207")
        })
        .expect("the llm worker's row");
    // The whole row inside the box, not just the name.
    for x in 2..buf.area.width - 2 {
        assert!(
            buf[(x, row)].modifier.contains(Modifier::REVERSED),
            "column {x} of the selected row is not reversed"
        );
    }
    let other = (0..buf.area.width)
        .map(|x| buf[(x, row + 1)].modifier)
        .any(|m| m.contains(Modifier::REVERSED));
    assert!(!other, "only the selected row is reversed");
}

#[test]
fn minimal_40x10() {
    assert_snapshot!(screen(&fixture::app(false), 40, 10));
}

#[test]
fn too_small_30x8() {
    assert_snapshot!(screen(&fixture::app(false), 30, 8));
}

#[test]
fn without_charts_80x20_and_without_events_80x15() {
    let app = fixture::app(false);
    assert_snapshot!("text_only_80x20", screen(&app, 80, 20));
    assert_snapshot!("no_events_80x15", screen(&app, 80, 15));
}

#[test]
fn the_title_shows_the_chats_that_wait_and_keeps_them_when_narrow() {
    let mut app = fixture::app(false);
    let title = |app: &App, width| {
        screen(app, width, 24)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    };
    assert!(!title(&app, 120).contains("queue"), "{}", title(&app, 120));
    if let Some(status) = &mut app.status {
        status.queued = 3;
    }
    for width in [120, 80] {
        let line = title(&app, width);
        assert!(line.contains("queue 3"), "{width} columns: {line}");
    }
}

#[test]
fn help_overlay() {
    let mut app = fixture::app(false);
    app.mode = Mode::Help;
    assert_snapshot!(screen(&app, 80, 24));
}

#[test]
fn confirm_dialog() {
    let mut app = fixture::app(false);
    app.mode = Mode::Confirm(Confirm::Restart(WorkerKind::Llm));
    assert_snapshot!(screen(&app, 80, 24));
}

#[test]
fn pick_profile_overlay() {
    let mut app = fixture::app(false);
    app.mode = Mode::PickProfile(2);
    assert_snapshot!(screen(&app, 80, 24));
}

#[test]
fn disconnected_banner() {
    let mut app = fixture::app(false);
    app.update(Input::Disconnected("connection refused".into()));
    assert_snapshot!(screen(&app, 80, 24));
}

#[test]
fn typing_with_events_focused_and_scrolled() {
    let mut app = fixture::app(false);
    app.streaming = false;
    app.focus = Focus::Events;
    app.event_scroll = 1;
    app.mode = Mode::Typing;
    app.input = "tell me more".into();
    assert_snapshot!(screen(&app, 80, 24));
}

#[test]
fn no_status_yet() {
    assert_snapshot!(screen(
        &App::new("~/.local/state/mate".into(), false),
        80,
        24
    ));
}

#[test]
fn trouble_is_told_in_words() {
    let mut app = fixture::app(true);
    let mut status = fixture::status(58);
    status.workers[0].state = mate_protocol::WorkerState::Backoff;
    status.workers[0].last_error = Some("out of memory".into());
    if let Some(b) = status.workers[1].vitals.bridge.as_deref_mut() {
        *b = BridgeStatus {
            peer: "127.0.0.1:5555".into(),
            last_error: Some("connection refused".into()),
            queue_depth: 7,
            ..BridgeStatus::default()
        };
    }
    app.update(Input::Status(Box::new(status)));
    app.update(Input::Event(Event {
        at_ms: 1_795_442_650_000,
        level: Level::Error,
        worker: Some(WorkerKind::Llm),
        kind: EventKind::Notice,
        message: "ggml_cuda: out of memory".into(),
    }));
    let screen = screen(&app, 80, 24);
    assert_snapshot!(screen);
    for word in [
        "backoff",
        "out of memory",
        "CRITICAL",
        "ERROR",
        "waiting for Unity",
        "last error: connection refused",
        "queue 7",
    ] {
        assert!(screen.contains(word), "{word:?} missing:\n{screen}");
    }
    let row = screen.lines().find(|l| l.contains("backoff"));
    assert!(
        row.is_some_and(|r| r.contains("signal 9: out of memory")),
        "the error is in the worker's row:\n{screen}"
    );
}

/// Any size, any mode, odd data: drawing never panics.
#[test]
fn never_panics() {
    let mut odd = fixture::app(false);
    let mut status = fixture::status(0);
    status.gpu.reading = Some(VramReading {
        total_bytes: 0,
        used_bytes: u64::MAX,
        llm_bytes: Some(u64::MAX),
        temperature_c: None,
        utilization_percent: None,
    });
    status.gpu.alert_percent = f32::NAN;
    status.gpu.critical_percent = f32::INFINITY;
    status.workers[0].vitals.cpu_percent = f32::NAN;
    status.workers[0].vitals.rss_bytes = u64::MAX;
    status.workers[0].uptime_ms = u64::MAX;
    if let Some(llm) = status.workers[0].vitals.llm.as_mut() {
        llm.n_ctx = 0;
        llm.ctx_used = u32::MAX;
    }
    status.workers[1].vitals.bridge = None;
    status.ladder.clear();
    odd.update(Input::Status(Box::new(status)));
    odd.vram.push_back(f64::NAN);
    odd.vram.push_back(1e300);
    odd.speeds.push_back(f64::INFINITY);
    odd.speeds.push_back(-5.0);
    odd.last_ttft_ms = Some(f32::NAN);
    odd.input = "字".repeat(300);
    odd.title = "x".repeat(500);
    odd.chat.push_back(crate::app::ChatLine {
        who: crate::app::Speaker::Note,
        text: format!("{}\n\n{}", "w".repeat(1000), "字 ".repeat(100)),
    });
    odd.event_scroll = 10_000;
    let mut gone = fixture::app(false);
    if let Some(s) = gone.status.as_mut() {
        s.workers.clear();
        s.gpu.reading = None;
    }
    let apps = [
        fixture::app(false),
        App::new(String::new(), true),
        odd,
        gone,
    ];
    let modes = [
        Mode::Normal,
        Mode::Typing,
        Mode::Help,
        Mode::PickProfile(99),
        Mode::Confirm(Confirm::Profile("x".repeat(300))),
    ];
    let mut sizes: Vec<(u16, u16)> = Vec::new();
    for w in [0, 1, 2, 20, 39, 40, 41, 60, 79, 80, 109, 110, 200] {
        for h in 0..=45 {
            sizes.push((w, h));
        }
    }
    for mut app in apps {
        for mode in &modes {
            app.mode = mode.clone();
            for &(w, h) in &sizes {
                render(&app, w, h);
            }
        }
    }
}

#[test]
fn the_plan_fills_the_box_exactly() {
    for height in 9..=60 {
        for workers in 0..4 {
            let p: Plan = plan(height, workers, 3);
            let seps = 1 + u16::from(p.mid > 0) + u16::from(p.events > 0) + 1 + 1;
            assert_eq!(
                p.workers + p.mid + p.events + p.chat + seps,
                height,
                "{p:?} for {height} rows"
            );
            assert!(p.chat >= 2, "{p:?}: a chat line and the input");
            assert_eq!(p.events > 0, height + 1 >= 16, "{p:?} at {height}");
            assert_eq!(p.charts > 0, height + 1 >= 24, "{p:?} at {height}");
        }
    }
}

#[test]
fn wrapping_keeps_words_and_breaks_long_ones() {
    assert_eq!(wrap("how was your day?", 8), ["how was", "your", "day?"]);
    assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
    assert_eq!(wrap("a\nb", 0), ["a", "b"]);
    assert_eq!(wrap("", 5), [""]);
}
