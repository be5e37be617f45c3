//! The client side of `mate ctl`: [`mate_protocol::client`] as the `Ctl` role.

use std::path::Path;

pub use mate_protocol::client::ClientError as CtlError;
use mate_protocol::{client, Reply, Request, Role};

/// Sends `request` and calls `on_reply` for each reply until it returns `false` or the
/// supervisor closes the stream.
pub fn request(
    state_dir: &Path,
    request: &Request,
    on_reply: impl FnMut(Reply) -> bool,
) -> Result<(), CtlError> {
    client::request(state_dir, Role::Ctl, request, on_reply)
}

/// Sends `request` and returns the first reply.
pub fn call(state_dir: &Path, req: &Request) -> Result<Reply, CtlError> {
    client::call(state_dir, Role::Ctl, req)
}

/// Text from the model made safe for a terminal: control characters other than newline and
/// tab (a `\r` that rewrites the line, an escape sequence that moves the cursor or sets the
/// title) are shown in caret notation, as `cat -v` does (`^M`, `^[`); C1 controls become
/// `�`. Printable text, multibyte characters included, passes as it is.
pub fn visible_controls(text: &str) -> std::borrow::Cow<'_, str> {
    let harmless = |c: char| !c.is_control() || c == '\n' || c == '\t';
    if text.chars().all(harmless) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if harmless(c) => out.push(c),
            '\u{7f}' => out.push_str("^?"),
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from(b'@' + c as u8));
            }
            _ => out.push('\u{fffd}'),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_made_visible_and_text_is_kept() {
        assert_eq!(visible_controls("héllo\n\tworld 😊"), "héllo\n\tworld 😊");
        assert_eq!(
            visible_controls("done\rEVIL \u{1b}]0;title\u{7}x\u{7f}\u{9b}2J"),
            "done^MEVIL ^[]0;title^Gx^?\u{fffd}2J"
        );
    }
}
