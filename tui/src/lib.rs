//! The monitoring console (ratatui) that attaches to a running supervisor over its control
//! endpoint, like `tmux attach`: closing or crashing it never touches the session. Like the
//! workers, it depends on `mate-protocol` only.
//!
//! Theory of operation: one loop owns the model ([`app::App`]) and runs over one closed
//! input enum ([`app::Input`]): keys from a terminal thread, and status polls, journal events
//! and chat replies from feed threads that talk to the supervisor. `App::update` is pure and
//! returns the [`app::Action`] the loop carries out; the loop draws ([`view`]) only when
//! something changed, at most 30 frames a second, so a streaming reply is coalesced into
//! frames and an idle console sleeps.

pub mod app;
pub mod view;

#[cfg(test)]
mod fixture;
#[cfg(test)]
mod tests;
