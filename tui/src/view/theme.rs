//! Every style the dashboard uses, named by what it means (ok, warn, bad, focused…), so
//! `NO_COLOR` (`app.mono`) is dealt with here and nowhere else. A colour never says anything
//! alone: the words or a marker say it too.

use mate_protocol::{Level, WorkerState};
use ratatui::style::{Color, Modifier, Style};

/// Styles by meaning; every colour goes through here so `mono` can drop them all.
#[derive(Debug, Clone, Copy)]
pub(super) struct Theme {
    pub(super) mono: bool,
}

impl Theme {
    pub(super) fn fg(self, color: Color) -> Style {
        if self.mono {
            Style::new()
        } else {
            Style::new().fg(color)
        }
    }

    pub(super) fn bold(self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }

    /// Secondary text: dim grey, or nothing in mono (DIM is often invisible there).
    pub(super) fn dim(self) -> Style {
        self.fg(Color::DarkGray)
    }

    pub(super) fn border(self) -> Style {
        self.fg(Color::DarkGray)
    }

    pub(super) fn focused(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    pub(super) fn key(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    pub(super) fn selected(self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    pub(super) fn ok(self) -> Style {
        self.fg(Color::Green)
    }

    pub(super) fn warn(self) -> Style {
        self.fg(Color::Yellow)
    }

    pub(super) fn bad(self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    pub(super) fn state(self, state: WorkerState) -> Style {
        match state {
            WorkerState::Running => self.ok(),
            WorkerState::Starting | WorkerState::Backoff | WorkerState::Stopping => self.warn(),
            WorkerState::Failed => self.bad(),
            WorkerState::Stopped => self.dim(),
        }
    }

    pub(super) fn level(self, level: Level) -> Style {
        match level {
            Level::Info => Style::new(),
            Level::Warn => self.warn(),
            Level::Error => self.bad(),
        }
    }

    /// The banner for a lost link: reverse video in mono, white on red otherwise.
    pub(super) fn alarm(self) -> Style {
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
