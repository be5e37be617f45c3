//! The LLM panel: the phase (a stall said in words), tok/s, time to first token, context and
//! memory, then the tok/s sparkline.

use mate_protocol::{LlmPhase, LlmVitals, WorkerKind};
use ratatui::{
    layout::Rect,
    style::{Color, Style},
    text::{Line, Span},
    widgets::Sparkline,
    Frame,
};

use super::{
    mid::{axis_labels, text_above_chart, worker},
    numbers::bytes,
    theme::Theme,
};
use crate::app::App;

pub(super) fn llm_lines(app: &App, theme: &Theme) -> Vec<Line<'static>> {
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
pub(super) fn llm_panel(
    frame: &mut Frame,
    area: Rect,
    lines: Vec<Line<'static>>,
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
    let chart = text_above_chart(frame, area, lines, text_rows);
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
