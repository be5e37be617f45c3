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

use mate_protocol::{
    BridgeStatus, Event, ExitStatus, GpuReport, Level, LlmPhase, LlmVitals, WorkerKind,
    WorkerReport, WorkerState,
};
use ratatui::{
    buffer::Buffer,
    layout::{Alignment, Constraint, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{
        Block, BorderType, Borders, Cell, Clear, HighlightSpacing, Paragraph, Row, Sparkline,
        SparklineBar, Table, TableState, Wrap,
    },
    Frame,
};

use crate::app::{App, Confirm, Focus, Link, Mode, Speaker};

/// The smallest terminal the dashboard draws itself in.
const MIN_WIDTH: u16 = 40;
const MIN_HEIGHT: u16 = 10;
/// From this height on, the GPU history and the tok/s sparkline are drawn.
const CHARTS_FROM: u16 = 24;
/// From this height on, the event log is shown.
const EVENTS_FROM: u16 = 16;
/// From this width on, GPU, LLM and Unity get a column each.
const THREE_COLUMNS_FROM: u16 = 110;
/// Speaker labels take this many columns; wrapped chat lines are indented by as much.
const LABEL: usize = 5;
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

/// Styles by meaning; every colour goes through here so `mono` can drop them all.
#[derive(Debug, Clone, Copy)]
struct Theme {
    mono: bool,
}

impl Theme {
    fn fg(self, color: Color) -> Style {
        if self.mono {
            Style::new()
        } else {
            Style::new().fg(color)
        }
    }

    fn bold(self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }

    /// Secondary text: dim grey, or nothing in mono (DIM is often invisible there).
    fn dim(self) -> Style {
        self.fg(Color::DarkGray)
    }

    fn border(self) -> Style {
        self.fg(Color::DarkGray)
    }

    fn focused(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    fn key(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    fn selected(self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    fn ok(self) -> Style {
        self.fg(Color::Green)
    }

    fn warn(self) -> Style {
        self.fg(Color::Yellow)
    }

    fn bad(self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    fn state(self, state: WorkerState) -> Style {
        match state {
            WorkerState::Running => self.ok(),
            WorkerState::Starting | WorkerState::Backoff | WorkerState::Stopping => self.warn(),
            WorkerState::Failed => self.bad(),
            WorkerState::Stopped => self.dim(),
        }
    }

    fn level(self, level: Level) -> Style {
        match level {
            Level::Info => Style::new(),
            Level::Warn => self.warn(),
            Level::Error => self.bad(),
        }
    }

    /// The banner for a lost link: reverse video in mono, white on red otherwise.
    fn alarm(self) -> Style {
        if self.mono {
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        } else {
            Style::new()
                .fg(Color::White)
                .bg(Color::Red)
                .add_modifier(Modifier::BOLD)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Too small, title

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

fn title_line(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let sep = || Span::styled(" · ", theme.dim());
    let mut spans = Vec::new();
    match &app.link {
        Link::Disconnected(why) => {
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(" ({why})")
            };
            spans.push(Span::styled(
                format!(" ✗ disconnected — retrying{why} "),
                theme.alarm(),
            ));
            spans.push(Span::raw(" "));
        }
        Link::Connecting => {
            spans.push(Span::styled(
                "connecting…",
                theme.warn().add_modifier(Modifier::BOLD),
            ));
            spans.push(sep());
        }
        Link::Attached => {}
    }
    spans.push(Span::styled("mate", theme.bold()));
    spans.push(sep());
    // What follows the state dir, longest first: the dir is shortened (from the left, its
    // last components are what tell dirs apart) before any of it is dropped.
    let mut tails: Vec<Vec<Span<'static>>> = vec![Vec::new()];
    if let Some(status) = &app.status {
        let up = vec![
            sep(),
            Span::raw(format!("up {}", duration(status.uptime_ms))),
        ];
        let profile = vec![
            sep(),
            Span::raw("profile "),
            Span::styled(status.profile.clone(), theme.bold()),
        ];
        let mut ceiling = Vec::new();
        if !status.ceiling.is_empty() && status.ceiling != status.profile {
            ceiling.push(Span::styled(
                format!(" (ceiling {})", status.ceiling),
                theme.dim(),
            ));
        }
        tails = vec![
            [up.clone(), profile.clone(), ceiling].concat(),
            [up, profile.clone()].concat(),
            profile,
            Vec::new(),
        ];
    }
    let width = usize::from(area.width);
    let head: usize = spans.iter().map(Span::width).sum();
    let dir = app.title.clone();
    let dir_w = str_width(&dir);
    let tails_w: Vec<usize> = tails
        .iter()
        .map(|t| t.iter().map(Span::width).sum())
        .collect();
    // The longest tail that leaves the dir 12 columns (or all it needs).
    let pick = (0..tails.len())
        .find(|&i| head + dir_w.min(12) + tails_w[i] <= width)
        .unwrap_or(tails.len() - 1);
    let room = width.saturating_sub(head + tails_w[pick]);
    spans.push(Span::raw(fit_left(&dir, room)));
    spans.extend(tails.swap_remove(pick));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
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

// ---------------------------------------------------------------------------------------------
// Workers

fn workers(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    if area.is_empty() {
        return;
    }
    let list = app.workers();
    if list.is_empty() {
        let text = match app.link {
            Link::Attached => "no workers reported",
            _ => "waiting for the supervisor's first status…",
        };
        frame.render_widget(Paragraph::new(Span::styled(text, theme.dim())), area);
        return;
    }
    // (header, width, priority, right-aligned): columns are dropped, lowest priority first,
    // until the rest fit; LAST EXIT takes what is left, and asks for room for an error before
    // RSS and PROFILE (which the title line shows too) get any.
    const COLS: [(&str, u16, u8, bool); 9] = [
        ("WORKER", 6, 0, false),
        ("STATE", 8, 0, false),
        ("PID", 6, 3, true),
        ("UPTIME", 6, 2, true),
        ("RESTARTS", 8, 1, true),
        ("PROFILE", 11, 7, false),
        ("CPU", 4, 4, true),
        ("RSS", 8, 6, true),
        ("LAST EXIT", 9, 5, false),
    ];
    let values: Vec<[(String, Style); 9]> = list.iter().map(|w| worker_cells(w, theme)).collect();
    let exit_w = values
        .iter()
        .map(|v| str_width(&v[8].0))
        .max()
        .unwrap_or(0)
        .clamp(9, 32) as u16;
    let room = area.width.saturating_sub(2);
    let narrow = room < 60;
    let cols = COLS.map(|(name, width, prio, right)| match name {
        "RESTARTS" if narrow => ("RST", 3, prio, right),
        "LAST EXIT" => (name, exit_w, prio, right),
        _ => (name, width, prio, right),
    });
    let mut keep = [false; COLS.len()];
    let mut used: u16 = 0;
    let mut by_priority: Vec<usize> = (0..COLS.len()).collect();
    by_priority.sort_by_key(|&i| cols[i].2);
    for i in by_priority {
        let need = cols[i].1 + u16::from(used > 0);
        if used + need <= room {
            keep[i] = true;
            used += need;
        }
    }
    let last = COLS.len() - 1;
    let widths: Vec<Constraint> = (0..COLS.len())
        .filter(|&i| keep[i])
        .map(|i| {
            if i == last {
                Constraint::Fill(1)
            } else {
                Constraint::Length(cols[i].1)
            }
        })
        .collect();
    let cell = |i: usize, text: String, style: Style| {
        let line = Line::styled(text, style);
        Cell::from(if cols[i].3 {
            line.right_aligned()
        } else {
            line
        })
    };
    let header = Row::new(
        (0..COLS.len())
            .filter(|&i| keep[i])
            .map(|i| cell(i, cols[i].0.to_string(), theme.bold())),
    );
    let rows = values.into_iter().map(|values| {
        Row::new(
            values
                .into_iter()
                .enumerate()
                .filter(|(i, _)| keep[*i])
                .map(|(i, (text, style))| cell(i, text, style)),
        )
    });
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .row_highlight_style(theme.selected())
        .highlight_symbol(format!("{MARK} "))
        .highlight_spacing(HighlightSpacing::Always);
    let mut state = TableState::default().with_selected(Some(app.selected.min(list.len() - 1)));
    frame.render_stateful_widget(table, area, &mut state);
}

fn worker_cells(w: &WorkerReport, theme: &Theme) -> [(String, Style); 9] {
    let plain = Style::new();
    let live = matches!(w.state, WorkerState::Running | WorkerState::Starting);
    let dash = || "-".to_string();
    let exit = match (&w.last_exit, &w.last_error) {
        (Some(e), Some(err)) => format!("{}: {err}", exit_text(*e)),
        (Some(e), None) => exit_text(*e),
        (None, Some(err)) => err.clone(),
        (None, None) => dash(),
    };
    let exit_style = if w.last_error.is_some() {
        theme.bad()
    } else {
        plain
    };
    [
        (w.kind.as_str().to_string(), theme.bold()),
        (w.state.as_str().to_string(), theme.state(w.state)),
        (w.pid.map_or_else(dash, |p| p.to_string()), plain),
        (if live { duration(w.uptime_ms) } else { dash() }, plain),
        (
            w.restarts.to_string(),
            if w.restarts > 0 { theme.warn() } else { plain },
        ),
        (w.profile.clone().unwrap_or_else(dash), plain),
        (
            if live {
                format!("{:.0}%", finite(w.vitals.cpu_percent))
            } else {
                dash()
            },
            plain,
        ),
        (
            if live {
                bytes(w.vitals.rss_bytes)
            } else {
                dash()
            },
            plain,
        ),
        (exit, exit_style),
    ]
}

fn exit_text(e: ExitStatus) -> String {
    match e {
        ExitStatus::Code(c) => format!("exit {c}"),
        ExitStatus::Signal(s) => format!("signal {s}"),
    }
}

// ---------------------------------------------------------------------------------------------
// GPU, LLM, Unity

#[allow(clippy::too_many_arguments)]
fn mid_section(
    frame: &mut Frame,
    area: Rect,
    top: u16,
    below: u16,
    rect: Rect,
    charts: u16,
    app: &App,
    theme: &Theme,
) {
    let three = area.width >= THREE_COLUMNS_FROM;
    let columns: u16 = if three { 3 } else { 2 };
    // Divider x positions, then each column's text area between them.
    let left = area.x;
    let right = area.right().saturating_sub(1);
    let span = right.saturating_sub(left);
    let mut bounds = vec![left];
    for i in 1..columns {
        bounds.push(left + span * i / columns);
    }
    bounds.push(right);

    let gpu = app.status.as_ref().map(|s| &s.gpu);
    let gpu_title = match gpu.and_then(|g| g.name.as_ref()) {
        Some(name) => {
            let sim = if gpu.is_some_and(|g| g.simulated) {
                " (simulated)"
            } else {
                ""
            };
            format!(" GPU · {}{sim} ", short_gpu_name(name))
        }
        None => " GPU ".into(),
    };
    let titles: Vec<String> = if three {
        vec![gpu_title, " LLM ".into(), " Unity ".into()]
    } else {
        vec![gpu_title, " LLM · Unity ".into()]
    };

    let buf = frame.buffer_mut();
    rule(buf, area, top, ("├", "┤"), Vec::new(), false, theme);
    let inner_bounds = &bounds[1..bounds.len() - 1];
    for &x in inner_bounds {
        put(buf, x, top, "┬", theme.border());
        for y in top + 1..below {
            put(buf, x, y, "│", theme.border());
        }
        // Not over the next section's title.
        if buf.cell((x, below)).is_some_and(|c| c.symbol() == "─") {
            put(buf, x, below, "┴", theme.border());
        }
    }
    let mut cols = Vec::new();
    for (i, title) in titles.into_iter().enumerate() {
        let (a, b) = (bounds[i], bounds[i + 1]);
        let width = b.saturating_sub(a);
        if width > 3 {
            buf.set_line(
                a + 1,
                top,
                &Line::styled(title, theme.bold()),
                width.saturating_sub(2),
            );
        }
        cols.push(Rect {
            x: a + 2,
            y: rect.y,
            width: width.saturating_sub(3),
            height: rect.height,
        });
    }

    let rows = rect.height.saturating_sub(charts);
    if let Some(&gpu_col) = cols.first() {
        gpu_panel(frame, gpu_col, app, charts, theme);
    }
    let llm = llm_lines(app, theme);
    let unity = unity_lines(app, theme);
    if three {
        if let (Some(&l), Some(&u)) = (cols.get(1), cols.get(2)) {
            llm_panel(frame, l, llm, app, charts, theme);
            frame.render_widget(Paragraph::new(unity), u);
        }
    } else if let Some(&col) = cols.get(1) {
        // Shared column: LLM lines, the sparkline, then Unity at the bottom. With a chart,
        // two LLM lines and three of Unity; short of rows, each keeps its headline first.
        let (mut l, mut u) = (llm, unity);
        let text_rows = usize::from(rows);
        if charts > 0 {
            u.truncate(3);
            l.truncate(2);
        } else {
            let keep_u = text_rows
                .saturating_sub(2)
                .clamp(usize::from(text_rows >= 2), 2);
            u.truncate(keep_u);
            l.truncate(text_rows.saturating_sub(u.len()));
        }
        let u_rows = (u.len() as u16).min(col.height);
        let top_part = Rect {
            height: col.height - u_rows,
            ..col
        };
        let spark_rows = if charts > 0 {
            top_part.height.saturating_sub(l.len() as u16)
        } else {
            0
        };
        llm_panel(frame, top_part, l, app, spark_rows, theme);
        let bottom_part = Rect {
            y: col.y + top_part.height,
            height: u_rows,
            ..col
        };
        frame.render_widget(Paragraph::new(u), bottom_part);
    }
}

/// "NVIDIA GeForce RTX 3060" → "RTX 3060": the column is narrow.
fn short_gpu_name(name: &str) -> &str {
    name.strip_prefix("NVIDIA ")
        .map(|n| n.strip_prefix("GeForce ").unwrap_or(n))
        .unwrap_or(name)
}

fn gpu_panel(frame: &mut Frame, area: Rect, app: &App, charts: u16, theme: &Theme) {
    if area.is_empty() {
        return;
    }
    let mut lines: Vec<Line> = Vec::new();
    let gpu = app.status.as_ref().map(|s| &s.gpu);
    match (gpu, gpu.and_then(|g| g.reading.as_ref())) {
        (None, _) => lines.push(Line::styled("no status yet", theme.dim())),
        (Some(g), Some(r)) => {
            lines.push(vram_gauge(
                g,
                r.used_bytes,
                r.total_bytes,
                area.width,
                theme,
            ));
            let mut facts = vec![format!(
                "{}/{} GiB",
                tenths(r.used_bytes),
                tenths(r.total_bytes)
            )];
            if let Some(b) = r.llm_bytes {
                facts.push(format!("llm {}", gib(b)));
            }
            if let Some(t) = r.temperature_c {
                facts.push(format!("{t} °C"));
            }
            lines.push(Line::raw(facts.join(" · ")));
            // What the two marks in the bar are.
            let mut third = Vec::new();
            if let Some(u) = r.utilization_percent {
                third.push(Span::raw(format!("util {u}% · ")));
            }
            third.push(Span::styled(
                format!(
                    "alert {:.0}% · critical {:.0}%",
                    finite(g.alert_percent),
                    finite(g.critical_percent)
                ),
                theme.dim(),
            ));
            if !g.auto_downgrade {
                third.push(Span::styled(" · no auto", theme.dim()));
            }
            lines.push(Line::from(third));
        }
        (Some(g), None) => {
            let note = g
                .note
                .as_deref()
                .map(str::to_string)
                .unwrap_or_else(|| match &g.name {
                    Some(name) => format!("{name}: no reading yet"),
                    None => "no NVIDIA GPU".into(),
                });
            lines.push(Line::styled(note, theme.warn()));
            lines.push(Line::styled("the LLM profile is not watched", theme.dim()));
        }
    }
    let text_rows = area.height.saturating_sub(charts);
    lines.truncate(usize::from(text_rows));
    let shown = lines.len() as u16;
    frame.render_widget(Paragraph::new(lines), area);
    let chart = Rect {
        y: area.y + shown,
        height: area.height.saturating_sub(shown),
        ..area
    };
    if charts > 0 && !chart.is_empty() && !app.vram.is_empty() {
        let chart = axis_labels(frame, chart, "100%", "VRAM", theme);
        let gpu = app.status.as_ref().map(|s| &s.gpu);
        let alert = gpu.map_or(90.0, |g| f64::from(finite(g.alert_percent)));
        let critical = gpu.map_or(95.0, |g| f64::from(finite(g.critical_percent)));
        // Newest first, drawn from the right edge: "now" is always at the right.
        let bars: Vec<SparklineBar> = app
            .vram
            .iter()
            .rev()
            .take(usize::from(chart.width))
            .map(|&pct| {
                let pct = if pct.is_finite() {
                    pct.clamp(0.0, 100.0)
                } else {
                    0.0
                };
                let style = if pct >= critical {
                    theme.bad()
                } else if pct >= alert {
                    theme.warn()
                } else {
                    theme.ok()
                };
                SparklineBar::from((pct * 10.0).round() as u64).style(style)
            })
            .collect();
        frame.render_widget(
            Sparkline::default()
                .data(bars)
                .max(1000)
                .direction(ratatui::widgets::RenderDirection::RightToLeft),
            chart,
        );
    }
}

/// A chart's scale in a column on its left: its top value on the first row, its unit on the
/// last (or only the unit, in one row). Returns what is left for the chart.
fn axis_labels(frame: &mut Frame, area: Rect, top: &str, unit: &str, theme: &Theme) -> Rect {
    const W: u16 = 6;
    if area.width < W * 2 || area.is_empty() {
        return area;
    }
    let row = |y| Rect {
        y,
        height: 1,
        width: W - 1,
        ..area
    };
    if area.height >= 2 {
        frame.render_widget(
            Paragraph::new(Span::styled(fit(top, 5), theme.dim())).right_aligned(),
            row(area.y),
        );
    }
    frame.render_widget(
        Paragraph::new(Span::styled(fit(unit, 5), theme.dim())).right_aligned(),
        row(area.bottom() - 1),
    );
    Rect {
        x: area.x + W,
        width: area.width - W,
        ..area
    }
}

/// `VRAM [████████░░░|░|] 82%`, with the alert and critical marks in the bar and
/// a word once used VRAM passes them.
fn vram_gauge(g: &GpuReport, used: u64, total: u64, width: u16, theme: &Theme) -> Line<'static> {
    let pct = if total == 0 {
        0.0
    } else {
        (used as f64 * 100.0 / total as f64).clamp(0.0, 100.0)
    };
    let alert = f64::from(finite(g.alert_percent));
    let critical = f64::from(finite(g.critical_percent));
    let (word, style) = if total > 0 && pct >= critical {
        (" CRITICAL", theme.bad())
    } else if total > 0 && pct >= alert {
        (" ALERT", theme.warn().add_modifier(Modifier::BOLD))
    } else {
        ("", theme.ok())
    };
    let label = "VRAM ".to_string();
    let tail = format!(" {pct:.0}%{word}");
    let room = usize::from(width).saturating_sub(label.chars().count() + tail.chars().count());
    let mut spans = vec![Span::raw(label)];
    // Brackets plus at least a few cells, or no bar at all.
    if room >= 6 {
        let cells = room - 2;
        let mark_at =
            |p: f64| ((p / 100.0 * cells as f64).floor().max(0.0) as usize).min(cells - 1);
        let (alert_at, critical_at) = (mark_at(alert), mark_at(critical));
        // Runs of one kind of cell: 0 filled, 1 empty, 2 the alert mark, 3 the critical one.
        let kind = |i: usize| {
            if i == critical_at {
                3
            } else if i == alert_at {
                2
            } else if (i as f64 + 0.5) * 100.0 / cells as f64 <= pct {
                0
            } else {
                1
            }
        };
        spans.push(Span::raw("["));
        let mut i = 0;
        while i < cells {
            let k = kind(i);
            let mut run = String::new();
            while i < cells && kind(i) == k {
                run.push(['█', '░', '|', '|'][k]);
                i += 1;
            }
            let s = [style, theme.dim(), theme.warn(), theme.bad()][k];
            spans.push(Span::styled(run, s));
        }
        spans.push(Span::raw("]"));
    }
    spans.push(Span::styled(tail, style));
    Line::from(spans)
}

fn worker(app: &App, kind: WorkerKind) -> Option<&WorkerReport> {
    app.workers().iter().find(|w| w.kind == kind)
}

fn llm_lines(app: &App, theme: &Theme) -> Vec<Line<'static>> {
    let Some(w) = worker(app, WorkerKind::Llm) else {
        let text = if app.status.is_some() {
            "no LLM worker"
        } else {
            "no status yet"
        };
        return vec![Line::styled(text, theme.dim())];
    };
    let Some(llm) = &w.vitals.llm else {
        return vec![Line::from(vec![
            Span::styled(w.state.as_str(), theme.state(w.state)),
            Span::styled(" · no vitals yet", theme.dim()),
        ])];
    };
    let tok_s = app
        .speeds
        .back()
        .copied()
        .or_else(|| llm.last.as_ref().map(|s| f64::from(s.gen_tokens_per_s)))
        .filter(|v| v.is_finite());
    let ttft = app
        .last_ttft_ms
        .or_else(|| llm.last.as_ref().map(|s| s.ttft_ms))
        .filter(|v| v.is_finite());
    let mut first = vec![Span::styled(phase(llm), phase_style(llm, theme))];
    first.push(Span::raw(match tok_s {
        Some(v) => format!(" · {v:.1} tok/s"),
        None => " · - tok/s".into(),
    }));
    first.push(Span::raw(match ttft {
        Some(v) => format!(" · TTFT {v:.0} ms"),
        None => " · TTFT -".into(),
    }));
    let ctx = if llm.n_ctx > 0 {
        let pct = f64::from(llm.ctx_used) * 100.0 / f64::from(llm.n_ctx);
        format!("context {}/{} ({pct:.0}%)", llm.ctx_used, llm.n_ctx)
    } else {
        format!("context {}/-", llm.ctx_used)
    };
    vec![
        Line::from(first),
        Line::raw(ctx),
        Line::styled(
            format!(
                "model {} · KV {}",
                bytes(llm.model_bytes),
                bytes(llm.kv_bytes)
            ),
            theme.dim(),
        ),
    ]
}

fn phase(llm: &LlmVitals) -> String {
    let name = match llm.phase {
        LlmPhase::NoModel => "no model",
        LlmPhase::Loading => "loading",
        LlmPhase::Ready => "ready",
        LlmPhase::Ingesting => "reading prompt",
        LlmPhase::Generating => "generating",
    };
    if stalled(llm) {
        format!("{name}, STALLED {}s", llm.stalled_ms / 1000)
    } else {
        name.into()
    }
}

fn stalled(llm: &LlmVitals) -> bool {
    matches!(llm.phase, LlmPhase::Ingesting | LlmPhase::Generating) && llm.stalled_ms >= 5000
}

fn phase_style(llm: &LlmVitals, theme: &Theme) -> Style {
    if stalled(llm) {
        theme.bad()
    } else {
        match llm.phase {
            LlmPhase::NoModel | LlmPhase::Loading => theme.warn(),
            _ => theme.ok(),
        }
    }
}

/// The LLM text lines, then the tok/s sparkline in the chart rows.
fn llm_panel(
    frame: &mut Frame,
    area: Rect,
    mut lines: Vec<Line<'static>>,
    app: &App,
    charts: u16,
    theme: &Theme,
) {
    if area.is_empty() {
        return;
    }
    let text_rows = area
        .height
        .saturating_sub(charts.min(area.height.saturating_sub(1)));
    // With a chart below, the model/KV line makes way for it when rows are short.
    lines.truncate(usize::from(text_rows));
    let shown = lines.len() as u16;
    frame.render_widget(Paragraph::new(lines), area);
    let chart = Rect {
        y: area.y + shown,
        height: area.height.saturating_sub(shown),
        ..area
    };
    if charts == 0 || chart.is_empty() || app.speeds.is_empty() {
        return;
    }
    let top = app
        .speeds
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let spark = axis_labels(frame, chart, &format!("{top:.0}"), "tok/s", theme);
    let bars: Vec<u64> = app
        .speeds
        .iter()
        .rev()
        .take(usize::from(spark.width))
        .map(|v| {
            if v.is_finite() {
                (v.clamp(0.0, 1e6) * 10.0).round() as u64
            } else {
                0
            }
        })
        .collect();
    frame.render_widget(
        Sparkline::default()
            .data(bars)
            .style(theme.fg(Color::Cyan))
            .direction(ratatui::widgets::RenderDirection::RightToLeft),
        spark,
    );
}

fn unity_lines(app: &App, theme: &Theme) -> Vec<Line<'static>> {
    let Some(w) = worker(app, WorkerKind::Bridge) else {
        let text = if app.status.is_some() {
            "Unity: no bridge worker"
        } else {
            "Unity: -"
        };
        return vec![Line::styled(text, theme.dim())];
    };
    let Some(b) = w.vitals.bridge.as_deref() else {
        return vec![Line::from(vec![
            Span::raw("Unity: bridge "),
            Span::styled(w.state.as_str(), theme.state(w.state)),
        ])];
    };
    let head = if b.connected {
        theme.ok()
    } else {
        theme.warn()
    };
    let said = b.describe();
    let said = if said.contains("Unity") {
        said
    } else {
        format!("Unity {said}")
    };
    let mut lines = vec![Line::styled(said, head)];
    // The error before the counters: short of rows, it is what matters.
    if let Some(err) = &b.last_error {
        lines.push(Line::styled(format!("last error: {err}"), theme.bad()));
    }
    lines.push(Line::raw(bridge_counts(b)));
    let mut totals = Vec::new();
    if let Some(e) = &b.expression {
        totals.push(format!("avatar {e}"));
    }
    totals.push(format!("sent {}", b.sent));
    totals.push(format!("acked {}", b.acked));
    // Trouble only when there is some.
    for (n, what) in [
        (b.errors, "errors"),
        (b.timeouts, "timeouts"),
        (b.dropped, "dropped"),
        (b.malformed, "malformed"),
    ] {
        if n > 0 {
            totals.push(format!("{n} {what}"));
        }
    }
    lines.push(Line::styled(totals.join(" · "), theme.dim()));
    lines
}

fn bridge_counts(b: &BridgeStatus) -> String {
    let pending = if b.acks_pending == 1 { "ack" } else { "acks" };
    format!(
        "queue {} · {:.1} cmd/s · {} {pending} pending",
        b.queue_depth,
        finite(b.commands_per_s),
        b.acks_pending
    )
}

// ---------------------------------------------------------------------------------------------
// Events

fn events(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
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

// ---------------------------------------------------------------------------------------------
// Chat

fn chat(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    if area.is_empty() {
        return;
    }
    let lines_h = usize::from(area.height.saturating_sub(1));
    let text_w = usize::from(area.width).saturating_sub(LABEL).max(1);
    // From the newest line back, as far as the rows go.
    let mut rows: Vec<Line> = Vec::new();
    let last = app.chat.len().saturating_sub(1);
    let waiting = app.streaming && app.chat.back().is_none_or(|l| l.who != Speaker::Mate);
    if waiting {
        rows.push(Line::from(vec![
            Span::styled(
                format!("{:<LABEL$}", "mate"),
                speaker_style(Speaker::Mate, theme),
            ),
            Span::styled("…", theme.dim()),
        ]));
    }
    for (i, line) in app.chat.iter().enumerate().rev() {
        if rows.len() >= lines_h {
            break;
        }
        let cursor = app.streaming && i == last && line.who == Speaker::Mate;
        let mut text = line.text.clone();
        if cursor {
            text.push('█');
        }
        let style = match line.who {
            Speaker::Note => theme.dim().add_modifier(Modifier::ITALIC),
            _ => Style::new(),
        };
        let label = match line.who {
            Speaker::You => "you",
            Speaker::Mate => "mate",
            Speaker::Note => "·",
        };
        let wrapped = wrap(&text, text_w);
        for (j, piece) in wrapped.into_iter().enumerate().rev() {
            let head = if j == 0 {
                Span::styled(format!("{label:<LABEL$}"), speaker_style(line.who, theme))
            } else {
                Span::raw(" ".repeat(LABEL))
            };
            rows.push(Line::from(vec![head, Span::styled(piece, style)]));
        }
    }
    if rows.is_empty() && lines_h > 0 {
        rows.push(Line::styled("no messages yet", theme.dim()));
    }
    let skip = rows.len().saturating_sub(lines_h);
    rows.reverse();
    let rows: Vec<Line> = rows.into_iter().skip(skip).collect();
    // Latest at the bottom, just above the input line.
    let top_pad = lines_h.saturating_sub(rows.len()) as u16;
    let text_area = Rect {
        y: area.y + top_pad,
        height: (rows.len() as u16).min(area.height.saturating_sub(1)),
        ..area
    };
    frame.render_widget(Paragraph::new(rows), text_area);

    let input = Rect {
        y: area.bottom() - 1,
        height: 1,
        ..area
    };
    frame.render_widget(Paragraph::new(input_line(app, input.width, theme)), input);
}

fn speaker_style(who: Speaker, theme: &Theme) -> Style {
    match who {
        Speaker::You => theme.fg(Color::Cyan).add_modifier(Modifier::BOLD),
        Speaker::Mate => theme.fg(Color::Green).add_modifier(Modifier::BOLD),
        Speaker::Note => theme.dim(),
    }
}

fn input_line(app: &App, width: u16, theme: &Theme) -> Line<'static> {
    let prompt = format!("{:<LABEL$}", ">");
    if app.mode == Mode::Typing {
        // The tail of the input, so the cursor stays in view.
        let room = usize::from(width).saturating_sub(LABEL + 1);
        let mut tail: Vec<char> = Vec::new();
        let mut used = 0;
        for c in app.input.chars().rev() {
            let w = char_width(c);
            if used + w > room {
                break;
            }
            used += w;
            tail.push(c);
        }
        let text: String = tail.into_iter().rev().collect();
        return Line::from(vec![
            Span::styled(prompt, theme.key()),
            Span::raw(text),
            Span::styled("█", theme.key()),
        ]);
    }
    let hint = if app.streaming {
        "streaming… (ctrl-c cancels)"
    } else if matches!(app.link, Link::Disconnected(_)) {
        "i to type (sent once reconnected)"
    } else {
        "i to type"
    };
    Line::from(vec![
        Span::styled(prompt, theme.dim()),
        Span::styled(hint, theme.dim().add_modifier(Modifier::ITALIC)),
    ])
}

/// Greedy word wrap to `width` columns; words longer than a line are broken.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut out = Vec::new();
    for para in text.split('\n') {
        let mut line = String::new();
        let mut used = 0;
        for (k, word) in para.split(' ').enumerate() {
            let ww = str_width(word);
            if k > 0 {
                if used + 1 + ww <= width {
                    line.push(' ');
                    used += 1;
                } else {
                    out.push(std::mem::take(&mut line));
                    used = 0;
                }
            }
            for c in word.chars() {
                let cw = char_width(c);
                if used + cw > width && used > 0 {
                    out.push(std::mem::take(&mut line));
                    used = 0;
                }
                line.push(c);
                used += cw;
            }
        }
        out.push(line);
    }
    out
}

/// `s` in `room` columns, cut at the end with "…" when it does not fit.
fn fit(s: &str, room: usize) -> String {
    if str_width(s) <= room {
        return s.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = char_width(c);
        if used + w + 1 > room {
            break;
        }
        used += w;
        out.push(c);
    }
    if room > 0 {
        out.push('…');
    }
    out
}

/// `s` in `room` columns, cut at the start with "…" when it does not fit.
fn fit_left(s: &str, room: usize) -> String {
    if str_width(s) <= room {
        return s.to_string();
    }
    let mut tail = Vec::new();
    let mut used = 0;
    for c in s.chars().rev() {
        let w = char_width(c);
        if used + w + 1 > room {
            break;
        }
        used += w;
        tail.push(c);
    }
    if room == 0 {
        return String::new();
    }
    std::iter::once('…').chain(tail.into_iter().rev()).collect()
}

fn str_width(s: &str) -> usize {
    Span::raw(s).width()
}

fn char_width(c: char) -> usize {
    let mut b = [0u8; 4];
    str_width(c.encode_utf8(&mut b))
}

// ---------------------------------------------------------------------------------------------
// Hints and overlays

const NORMAL_HINTS: [(&str, &str, u8); 9] = [
    ("?", "help", 0),
    ("q", "detach", 1),
    ("tab", "focus", 2),
    ("↑↓/jk", "move", 6),
    ("r", "restart", 4),
    ("p", "profile", 5),
    ("i", "chat", 3),
    ("S", "stop", 7),
    ("H", "hide hints", 8),
];
const TYPING_HINTS: [(&str, &str, u8); 3] = [
    ("enter", "send", 0),
    ("esc", "leave", 1),
    ("ctrl-c", "cancel reply", 2),
];

/// The hint bar for the mode, dropping the least needed hints until it fits `width`.
fn hint_spans(app: &App, width: u16, theme: &Theme) -> Vec<Span<'static>> {
    let hints: &[(&str, &str, u8)] = if app.mode == Mode::Typing {
        &TYPING_HINTS
    } else {
        &NORMAL_HINTS
    };
    let cost = |h: &(&str, &str, u8)| str_width(h.0) + 1 + str_width(h.1);
    let mut keep = vec![false; hints.len()];
    let mut order: Vec<usize> = (0..hints.len()).collect();
    order.sort_by_key(|&i| hints[i].2);
    let mut used = 0;
    for i in order {
        let need = cost(&hints[i]) + if used > 0 { 2 } else { 0 };
        if used + need > usize::from(width) {
            break;
        }
        keep[i] = true;
        used += need;
    }
    let mut spans = vec![Span::raw(" ")];
    let mut first = true;
    for (i, h) in hints.iter().enumerate() {
        if !keep[i] {
            continue;
        }
        if !first {
            spans.push(Span::raw("  "));
        }
        first = false;
        spans.push(Span::styled(h.0, theme.key()));
        spans.push(Span::raw(format!(" {}", h.1)));
    }
    spans.push(Span::raw(" "));
    spans
}

/// A `width`×`height` box in the middle of `area`, shrunk to fit.
fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}

fn overlay_block(title: &str, theme: &Theme) -> Block<'static> {
    Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Double)
        .border_style(theme.focused())
        .title(Span::styled(format!(" {title} "), theme.bold()))
}

fn help(frame: &mut Frame, area: Rect, theme: &Theme) {
    const KEYS: [(&str, &str); 11] = [
        ("?", "this help (any key closes it)"),
        ("q", "detach: the supervisor keeps running"),
        ("Tab/Shift-Tab", "focus the next / previous panel"),
        ("↑↓ / j k", "move the selection, scroll the log"),
        ("r", "restart the selected worker (asks)"),
        ("p", "pick the LLM profile (asks)"),
        ("i / Enter", "type a chat message"),
        ("Esc", "leave the chat input"),
        ("Ctrl-C", "cancel the reply (idle: leave input, detach)"),
        ("S", "stop the supervisor and workers (asks)"),
        ("H", "hide / show the hint bar"),
    ];
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!("{k:<14}"), theme.key()),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        "Closing the console never stops the session.",
        theme.dim(),
    ));
    let width = lines.iter().map(Line::width).max().unwrap_or(0) as u16 + 4;
    let rect = centered(area, width, lines.len() as u16 + 2);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines)
            .block(overlay_block("Keys", theme).padding(ratatui::widgets::Padding::horizontal(1))),
        rect,
    );
}

fn confirm(frame: &mut Frame, area: Rect, what: &Confirm, theme: &Theme) {
    let question = what.question();
    let lines = vec![
        Line::styled(question.clone(), theme.bold()),
        Line::raw(""),
        Line::from(vec![
            Span::styled("y/N", theme.key()),
            Span::raw("  y: yes · any other key: no"),
        ]),
    ];
    let width = (str_width(&question).max(32) + 4) as u16;
    let rect = centered(area, width, 5);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: true }).block(
            overlay_block("Confirm", theme).padding(ratatui::widgets::Padding::horizontal(1)),
        ),
        rect,
    );
}

fn pick_profile(frame: &mut Frame, area: Rect, app: &App, at: usize, theme: &Theme) {
    let names = app.profiles();
    let status = app.status.as_ref();
    let active = status.map(|s| s.profile.as_str());
    let ceiling = status.map(|s| s.ceiling.as_str());
    let name_w = names.iter().map(|n| str_width(n)).max().unwrap_or(0);
    let mut lines: Vec<Line> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let vram = status
                .and_then(|s| s.ladder.iter().find(|r| &r.profile.name == name))
                .map(|r| {
                    if r.estimated_vram_bytes == 0 {
                        "no VRAM".to_string()
                    } else {
                        format!("~{}", gib(r.estimated_vram_bytes))
                    }
                })
                .unwrap_or_else(|| "follows VRAM".into());
            let mut notes = Vec::new();
            if Some(name.as_str()) == active {
                notes.push("active");
            }
            if Some(name.as_str()) == ceiling && ceiling != active {
                notes.push("ceiling");
            }
            let mark = if i == at { MARK } else { " " };
            let notes = if notes.is_empty() {
                String::new()
            } else {
                format!("  ({})", notes.join(", "))
            };
            let text = format!("{mark} {name:<name_w$}  {vram:<12}{notes}");
            if i == at {
                Line::styled(text, theme.selected())
            } else {
                Line::raw(text)
            }
        })
        .collect();
    lines.push(Line::raw(""));
    lines.push(Line::from(vec![
        Span::styled("↑↓", theme.key()),
        Span::raw(" move  "),
        Span::styled("enter", theme.key()),
        Span::raw(" choose  "),
        Span::styled("esc", theme.key()),
        Span::raw(" cancel"),
    ]));
    let width = lines.iter().map(Line::width).max().unwrap_or(0).max(24) as u16 + 4;
    let rect = centered(area, width, lines.len() as u16 + 2);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).block(
            overlay_block("LLM profile", theme).padding(ratatui::widgets::Padding::horizontal(1)),
        ),
        rect,
    );
}

// ---------------------------------------------------------------------------------------------
// Numbers

fn finite(v: f32) -> f32 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

/// "612 MiB", "1.2 GiB".
fn bytes(b: u64) -> String {
    const MIB: u64 = 1 << 20;
    if b < 1 << 30 {
        format!("{} MiB", b / MIB)
    } else {
        gib(b)
    }
}

fn gib(b: u64) -> String {
    format!("{} GiB", tenths(b))
}

/// GiB with one decimal, without a float for the integer part.
fn tenths(b: u64) -> String {
    let t = (u128::from(b) * 10 + (1 << 29)) / (1 << 30);
    format!("{}.{}", t / 10, t % 10)
}

/// "45s", "3m05s", "2h14m", "3d04h".
fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d{:02}h", s / 86_400, s / 3600 % 24),
    }
}

#[cfg(test)]
mod tests {
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
}
