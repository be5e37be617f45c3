//! Text in terminal columns: word wrapping, and cutting with "…" at either end. Widths are
//! ratatui's, so a wide character takes two columns.

use ratatui::text::Span;

/// Greedy word wrap to `width` columns; words longer than a line are broken.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut out = Vec::new();
    for para in text.split('\n') {
        let mut line = String::new();
        let mut used = 0;
        for (k, word) in para.split(' ').enumerate() {
            let ww = str_width(word);
            if k > 0 {
                if used + 1 + ww <= width {
                    line.push(' ');
                    used += 1;
                } else {
                    out.push(std::mem::take(&mut line));
                    used = 0;
                }
            }
            for c in word.chars() {
                let cw = char_width(c);
                if used + cw > width && used > 0 {
                    out.push(std::mem::take(&mut line));
                    used = 0;
                }
                line.push(c);
                used += cw;
            }
        }
        out.push(line);
    }
    out
}

/// `s` in `room` columns, cut at the end with "…" when it does not fit.
pub(super) fn fit(s: &str, room: usize) -> String {
    if str_width(s) <= room {
        return s.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = char_width(c);
        if used + w + 1 > room {
            break;
        }
        used += w;
        out.push(c);
    }
    if room > 0 {
        out.push('…');
    }
    out
}

/// `s` in `room` columns, cut at the start with "…" when it does not fit.
pub(super) fn fit_left(s: &str, room: usize) -> String {
    if str_width(s) <= room {
        return s.to_string();
    }
    let mut tail = Vec::new();
    let mut used = 0;
    for c in s.chars().rev() {
        let w = char_width(c);
        if used + w + 1 > room {
            break;
        }
        used += w;
        tail.push(c);
    }
    if room == 0 {
        return String::new();
    }
    std::iter::once('…').chain(tail.into_iter().rev()).collect()
}

pub(super) fn str_width(s: &str) -> usize {
    Span::raw(s).width()
}

pub(super) fn char_width(c: char) -> usize {
    let mut b = [0u8; 4];
    str_width(c.encode_utf8(&mut b))
}
