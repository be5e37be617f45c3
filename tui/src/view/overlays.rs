//! Dialogs drawn over the dashboard: the keys (help), the y/N question before a destructive
//! action (the default is No) and the LLM profile picker.

use ratatui::{
    layout::Rect,
    text::{Line, Span},
    widgets::{Block, BorderType, Borders, Clear, Paragraph, Wrap},
    Frame,
};

use super::{numbers::gib, text::str_width, theme::Theme, MARK};
use crate::app::{App, Confirm};

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

pub(super) fn help(frame: &mut Frame, area: Rect, theme: &Theme) {
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

pub(super) fn confirm(frame: &mut Frame, area: Rect, what: &Confirm, theme: &Theme) {
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

pub(super) fn pick_profile(frame: &mut Frame, area: Rect, app: &App, at: usize, theme: &Theme) {
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
