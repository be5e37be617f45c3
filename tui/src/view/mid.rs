//! The middle section: GPU, LLM and Unity side by side from 110 columns on; below that, LLM
//! and Unity share the second column. It draws its own rule, with the column junctions. Also
//! what its panels share: a chart's axis labels and the lookup of a worker's report.

use mate_protocol::{WorkerKind, WorkerReport};
use ratatui::{
    layout::Rect,
    text::{Line, Span},
    widgets::Paragraph,
    Frame,
};

use super::{
    gpu::gpu_panel,
    llm::{llm_lines, llm_panel},
    put, rule,
    text::fit,
    theme::Theme,
    unity::unity_lines,
    THREE_COLUMNS_FROM,
};
use crate::app::App;

#[allow(clippy::too_many_arguments)]
pub(super) fn mid_section(
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

/// Draws `lines` at the top of `area`, at most `text_rows` of them, and returns the rest of
/// the area, where a panel puts its chart.
pub(super) fn text_above_chart(
    frame: &mut Frame,
    area: Rect,
    mut lines: Vec<Line<'_>>,
    text_rows: u16,
) -> Rect {
    lines.truncate(usize::from(text_rows));
    let shown = lines.len() as u16;
    frame.render_widget(Paragraph::new(lines), area);
    Rect {
        y: area.y + shown,
        height: area.height.saturating_sub(shown),
        ..area
    }
}

/// A chart's scale in a column on its left: its top value on the first row, its unit on the
/// last (or only the unit, in one row). Returns what is left for the chart.
pub(super) fn axis_labels(
    frame: &mut Frame,
    area: Rect,
    top: &str,
    unit: &str,
    theme: &Theme,
) -> Rect {
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

pub(super) fn worker(app: &App, kind: WorkerKind) -> Option<&WorkerReport> {
    app.workers().iter().find(|w| w.kind == kind)
}
