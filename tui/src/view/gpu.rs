//! The GPU panel: the VRAM gauge with its alert and critical marks, the card's figures, and the
//! VRAM history as a sparkline coloured by the same thresholds.

use mate_protocol::GpuReport;
use ratatui::{
    layout::Rect,
    style::Modifier,
    text::{Line, Span},
    widgets::{Sparkline, SparklineBar},
    Frame,
};

use super::{
    mid::{axis_labels, text_above_chart},
    numbers::{finite, gib, tenths},
    theme::Theme,
};
use crate::app::App;

pub(super) fn gpu_panel(frame: &mut Frame, area: Rect, app: &App, charts: u16, theme: &Theme) {
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
    let chart = text_above_chart(frame, area, lines, text_rows);
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
