//! Drawing the model: one frame of the dashboard from an [`App`], nothing else.
//!
//! Layout, top to bottom: a title line (state dir, uptime, profile, link state), then one box
//! whose sections share their borders: workers, GPU | LLM | Unity (two columns below 110
//! columns, LLM and Unity share one), events, chat. Hints sit in the box's bottom border.
//! Small terminals give up the charts first (below 24 rows), then the event log (below 16),
//! then the GPU/LLM section; below 40×10 only a "too small" message is left.
//!
//! Nothing is told by colour alone: states and levels are words, the selection is reverse video
//! with a marker, the focused panel has a `▸` and a bold border. With `app.mono` (`NO_COLOR`) no
//! colour is used at all.
//!
//! One file per panel or concern: `title`, `workers`, `mid` (the GPU, LLM and Unity columns,
//! drawn by `gpu`, `llm` and `unity`), `events`, `chat`, the `hints` in the bottom border and the
//! `overlays`; `theme` holds every style, `text` and `numbers` how text and figures are fitted
//! and written. This file lays out the box and draws its borders.

mod chat;
mod events;
mod gpu;
mod hints;
mod llm;
mod mid;
mod numbers;
mod overlays;
mod text;
mod theme;
mod title;
mod unity;
mod workers;

pub use text::wrap;

use ratatui::{
    buffer::Buffer,
    layout::{Alignment, Rect},
    style::Style,
    text::{Line, Span},
    widgets::{Paragraph, Wrap},
    Frame,
};

use self::{
    chat::chat,
    events::events,
    hints::hint_spans,
    mid::mid_section,
    overlays::{confirm, help, pick_profile},
    theme::Theme,
    title::title_line,
    workers::workers,
};
use crate::app::{App, Focus, Mode};

/// The smallest terminal the dashboard draws itself in.
const MIN_WIDTH: u16 = 40;
const MIN_HEIGHT: u16 = 10;
/// From this height on, the GPU history and the tok/s sparkline are drawn.
const CHARTS_FROM: u16 = 24;
/// From this height on, the event log is shown.
const EVENTS_FROM: u16 = 16;
/// From this width on, GPU, LLM and Unity get a column each.
const THREE_COLUMNS_FROM: u16 = 110;
/// The selection marker and the focused panel's marker.
const MARK: &str = "▸";

pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    let theme = Theme { mono: app.mono };
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        too_small(frame, area);
        return;
    }
    title_line(frame, Rect { height: 1, ..area }, app, &theme);
    let boxed = Rect {
        y: area.y + 1,
        height: area.height - 1,
        ..area
    };
    dashboard(frame, boxed, app, &theme);
    match &app.mode {
        Mode::Help => help(frame, area, &theme),
        Mode::Confirm(what) => confirm(frame, area, what, &theme),
        Mode::PickProfile(at) => pick_profile(frame, area, app, *at, &theme),
        Mode::Normal | Mode::Typing => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Too small

fn too_small(frame: &mut Frame, area: Rect) {
    let lines: Vec<Line> = if area.width >= 31 {
        vec![Line::from("terminal too small (need 40×10)")]
    } else {
        vec![Line::from("terminal too small"), Line::from("(need 40×10)")]
    };
    let height = (lines.len() as u16).min(area.height);
    let y = area.y + area.height.saturating_sub(height) / 2;
    let rect = Rect {
        y,
        height: area.bottom().saturating_sub(y),
        ..area
    };
    frame.render_widget(
        Paragraph::new(lines)
            .alignment(Alignment::Center)
            .wrap(Wrap { trim: true }),
        rect,
    );
}

// ---------------------------------------------------------------------------------------------
// The box and its sections

/// How the box's rows are shared out, in content rows per section (separators not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    workers: u16,
    /// GPU / LLM / Unity, 0 when hidden.
    mid: u16,
    /// Rows of the mid section given to charts (0: text only).
    charts: u16,
    /// 0 when hidden.
    events: u16,
    /// Chat lines plus the input line.
    chat: u16,
}

/// Rows for each section of a box `height` rows high (its borders included).
fn plan(height: u16, workers: usize, events: usize) -> Plan {
    // Top and bottom border.
    let body = height.saturating_sub(2);
    let mut rest = body;
    let chat_min = 2;
    let workers = (1 + workers.max(1) as u16)
        .min(body.saturating_sub(chat_min + 1))
        .max(1);
    rest = rest.saturating_sub(workers);
    let mut chat = chat_min.min(rest.saturating_sub(1));
    rest = rest.saturating_sub(chat + 1);
    let mut events_rows = 0;
    // The whole terminal is one row taller than the box (the title line).
    let term = height + 1;
    if term >= EVENTS_FROM && rest >= 2 {
        events_rows = 1;
        rest -= 2;
    }
    let mut mid = 0;
    if rest >= 3 {
        mid = (rest - 1).min(4);
        rest -= mid + 1;
    }
    let mut charts = 0;
    if term >= CHARTS_FROM && mid == 4 {
        charts = (3 + (term - CHARTS_FROM) / 4).min(8).min(rest);
        mid += charts;
        rest -= charts;
    }
    if events_rows > 0 {
        // The log gets what it can show, up to two fifths of what is left for it and the chat.
        let share = ((rest + events_rows + chat) * 2 / 5).max(2);
        let want = (events.max(2) as u16).min(share);
        let more = want.saturating_sub(events_rows).min(rest);
        events_rows += more;
        rest -= more;
    }
    chat += rest;
    Plan {
        workers,
        mid,
        charts,
        events: events_rows,
        chat,
    }
}

fn dashboard(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let plan = plan(area.height, app.workers().len(), app.events.len());
    let left = area.x;
    let right = area.right().saturating_sub(1);
    let inner_width = area.width.saturating_sub(2);
    let buf = frame.buffer_mut();

    // Borders first: verticals down both sides, then each section's top line.
    for y in area.y..area.bottom() {
        put(buf, left, y, "│", theme.border());
        put(buf, right, y, "│", theme.border());
    }
    let mut y = area.y;
    let workers_title = section_title("Workers", Vec::new(), app.focus == Focus::Workers, theme);
    rule(
        buf,
        area,
        y,
        ("┌", "┐"),
        workers_title,
        app.focus == Focus::Workers,
        theme,
    );
    let workers_rect = content(area, y + 1, plan.workers);
    y += 1 + plan.workers;

    let mut mid_rect = None;
    if plan.mid > 0 {
        mid_rect = Some((y, content(area, y + 1, plan.mid)));
        y += 1 + plan.mid;
    }
    let mut events_rect = None;
    if plan.events > 0 {
        let focused = app.focus == Focus::Events;
        let extra = if app.event_scroll > 0 {
            format!("UTC · newest first · {} newer above", app.event_scroll)
        } else {
            "UTC · newest first".into()
        };
        let title = section_title(
            "Events",
            vec![Span::styled(format!(" · {extra}"), theme.dim())],
            focused,
            theme,
        );
        rule(buf, area, y, ("├", "┤"), title, focused, theme);
        events_rect = Some(content(area, y + 1, plan.events));
        y += 1 + plan.events;
    }
    let focused = app.focus == Focus::Chat;
    let streaming = if app.streaming {
        vec![Span::styled(" · streaming…", theme.warn())]
    } else {
        Vec::new()
    };
    let chat_title = section_title("Chat", streaming, focused, theme);
    rule(buf, area, y, ("├", "┤"), chat_title, focused, theme);
    let chat_rect = content(area, y + 1, plan.chat);
    let bottom = area.bottom().saturating_sub(1);
    let hints = if app.hints {
        hint_spans(app, inner_width.saturating_sub(3), theme)
    } else {
        Vec::new()
    };
    rule(buf, area, bottom, ("└", "┘"), hints, false, theme);

    // The mid section draws its own rule (with the column junctions), after the one below it.
    if let Some((top, rect)) = mid_rect {
        let below = top + 1 + plan.mid;
        mid_section(frame, area, top, below, rect, plan.charts, app, theme);
    }
    workers(frame, pad(workers_rect), app, theme);
    if let Some(rect) = events_rect {
        events(frame, pad(rect), app, theme);
    }
    chat(frame, pad(chat_rect), app, theme);
}

/// The rows `y..y+height` inside the box's side borders.
fn content(area: Rect, y: u16, height: u16) -> Rect {
    Rect {
        x: area.x + 1,
        y,
        width: area.width.saturating_sub(2),
        height,
    }
}

/// One column of padding on each side.
fn pad(rect: Rect) -> Rect {
    Rect {
        x: rect.x.saturating_add(1),
        width: rect.width.saturating_sub(2),
        ..rect
    }
}

/// A cell, if it is on the buffer.
fn put(buf: &mut Buffer, x: u16, y: u16, symbol: &str, style: Style) {
    if let Some(cell) = buf.cell_mut((x, y)) {
        cell.set_symbol(symbol).set_style(style);
    }
}

/// A horizontal border across the box at `y`, with `ends`, and `title` from the third column.
fn rule(
    buf: &mut Buffer,
    area: Rect,
    y: u16,
    ends: (&str, &str),
    title: Vec<Span<'static>>,
    focused: bool,
    theme: &Theme,
) {
    let style = if focused {
        theme.focused()
    } else {
        theme.border()
    };
    let right = area.right().saturating_sub(1);
    for x in area.x..=right {
        put(buf, x, y, "─", style);
    }
    put(buf, area.x, y, ends.0, style);
    put(buf, right, y, ends.1, style);
    if !title.is_empty() && area.width > 4 {
        buf.set_line(area.x + 1, y, &Line::from(title), area.width - 3);
    }
}

/// " ▸ Name · extra " for a section's border: the marker, bold and colour when focused.
fn section_title(
    name: &str,
    extra: Vec<Span<'static>>,
    focused: bool,
    theme: &Theme,
) -> Vec<Span<'static>> {
    let mut spans = if focused {
        vec![Span::styled(format!(" {MARK} {name}"), theme.focused())]
    } else {
        vec![Span::styled(format!(" {name}"), theme.bold())]
    };
    spans.extend(extra);
    spans.push(Span::raw(" "));
    spans
}

#[cfg(test)]
mod tests;
