//! The hint bar in the box's bottom border: the keys of the mode, the least needed dropped
//! until the rest fit.

use ratatui::text::Span;

use super::{text::str_width, theme::Theme};
use crate::app::{App, Mode};

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
pub(super) fn hint_spans(app: &App, width: u16, theme: &Theme) -> Vec<Span<'static>> {
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
