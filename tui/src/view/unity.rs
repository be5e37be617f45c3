//! The Unity lines: the bridge's link to the Unity app, its last error, its queue and what the
//! avatar was told; trouble counters only when there is some.

use mate_protocol::{BridgeStatus, WorkerKind};
use ratatui::text::{Line, Span};

use super::{mid::worker, numbers::finite, theme::Theme};
use crate::app::App;

pub(super) fn unity_lines(app: &App, theme: &Theme) -> Vec<Line<'static>> {
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
