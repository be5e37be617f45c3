//! The title line above the box: the link state, the state dir, uptime and profile. When the
//! line is short of columns, the state dir is cut from the left before anything else goes.

use ratatui::{
    layout::Rect,
    style::Modifier,
    text::{Line, Span},
    widgets::Paragraph,
    Frame,
};

use super::{
    numbers::duration,
    text::{fit_left, str_width},
    theme::Theme,
};
use crate::app::{App, Link};

pub(super) fn title_line(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
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
        // Chats waiting for the reply in progress, from any client.
        let mut queue = Vec::new();
        if status.queued > 0 {
            queue.push(sep());
            queue.push(Span::styled(
                format!("queue {}", status.queued),
                theme.warn(),
            ));
        }
        tails = vec![
            [up.clone(), profile.clone(), ceiling, queue.clone()].concat(),
            [up.clone(), profile.clone(), queue.clone()].concat(),
            [profile.clone(), queue].concat(),
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
