//! The workers table: one row per worker, columns dropped by priority until the rest fit, the
//! selected row in reverse video with a marker.

use mate_protocol::{WorkerReport, WorkerState};
use ratatui::{
    layout::{Constraint, Rect},
    style::Style,
    text::{Line, Span},
    widgets::{Cell, HighlightSpacing, Paragraph, Row, Table, TableState},
    Frame,
};

use super::{
    numbers::{bytes, duration, finite},
    text::str_width,
    theme::Theme,
    MARK,
};
use crate::app::{App, Link};

pub(super) fn workers(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
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
        (Some(e), Some(err)) => format!("{}: {err}", e.short()),
        (Some(e), None) => e.short(),
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
