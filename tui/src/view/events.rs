//! The event log: newest first, one line each, the time in UTC, warnings and errors said in
//! words.

use mate_protocol::{Event, Level, WorkerKind};
use ratatui::{
    layout::Rect,
    text::{Line, Span},
    widgets::Paragraph,
    Frame,
};

use super::{text::fit, theme::Theme};
use crate::app::App;

pub(super) fn events(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    if area.is_empty() {
        return;
    }
    if app.events.is_empty() {
        frame.render_widget(
            Paragraph::new(Span::styled("no events yet", theme.dim())),
            area,
        );
        return;
    }
    let lines: Vec<Line> = app
        .events
        .iter()
        .skip(app.event_scroll)
        .take(usize::from(area.height))
        .map(|e| event_line(e, usize::from(area.width), theme))
        .collect();
    frame.render_widget(Paragraph::new(lines), area);
}

fn event_line(e: &Event, width: usize, theme: &Theme) -> Line<'static> {
    let who = e.worker.map_or("mate", WorkerKind::as_str);
    let mut spans = vec![
        Span::styled(clock(e.at_ms), theme.dim()),
        Span::raw(format!(" {who:<6} ")),
    ];
    match e.level {
        Level::Info => {}
        Level::Warn => spans.push(Span::styled("warn: ", theme.level(e.level))),
        Level::Error => spans.push(Span::styled("ERROR: ", theme.level(e.level))),
    }
    let used: usize = spans.iter().map(Span::width).sum();
    spans.push(Span::styled(
        fit(&e.message, width.saturating_sub(used)),
        theme.level(e.level),
    ));
    Line::from(spans)
}

/// HH:MM:SS (UTC) of a Unix time in milliseconds.
fn clock(at_ms: u64) -> String {
    let s = at_ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}
