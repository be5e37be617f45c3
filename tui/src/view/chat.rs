//! The chat: the conversation wrapped under speaker labels, newest at the bottom just above the
//! input line; a reply being streamed ends in a cursor.

use ratatui::{
    layout::Rect,
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::Paragraph,
    Frame,
};

use super::{
    text::{char_width, wrap},
    theme::Theme,
};
use crate::app::{App, Link, Mode, Speaker};

/// Speaker labels take this many columns; wrapped chat lines are indented by as much.
const LABEL: usize = 5;

pub(super) fn chat(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
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
