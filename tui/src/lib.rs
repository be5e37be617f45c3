//! The monitoring console (ratatui) that attaches to a running supervisor over its control
//! endpoint, like `tmux attach`. It arrives with issue 7; until then `mate run` behaves as
//! `mate up`. Like the workers, it depends on `mate-protocol` only.
