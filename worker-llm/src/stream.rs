//! From token bytes to the chunks the supervisor sees, in four steps:
//!
//! 1. [`Utf8Stream`] turns each token's bytes into text, carrying a multibyte character that
//!    is split across tokens until it is whole (byte-fallback vocabularies split emoji into
//!    four tokens).
//! 2. [`ReplyStart`] drops the whitespace a new reply opens with, and nothing of a continued
//!    one.
//! 3. [`StopMatcher`] holds back text that might be the start of a stop string, so a stop
//!    string never reaches the user, not even half of it.
//! 4. [`Coalescer`] groups what is left into chunks by the 3–5 tokens / 50 ms / boundary rule.
//!
//! All four are plain state machines with no llama.cpp in them, so they are unit-tested here.

use std::time::{Duration, Instant};

use mate_protocol::Coalesce;

/// Incremental UTF-8 decoding across token boundaries.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Appends the text that `bytes` completes to `out`. Bytes of a character that is not yet
    /// complete stay here; bytes that can never be valid become U+FFFD.
    pub fn push(&mut self, bytes: &[u8], out: &mut String) {
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = start + e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[start..valid]));
                    match e.error_len() {
                        // Incomplete sequence at the end: wait for the next token.
                        None => {
                            start = valid;
                            break;
                        }
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start = valid + n;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
    }

    /// Ends the stream: an incomplete character left over becomes U+FFFD.
    pub fn finish(&mut self, out: &mut String) {
        if !self.pending.is_empty() {
            self.pending.clear();
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
}

/// Where a reply's text starts. Templates end the prompt with "Mate:" or a newline, so a new
/// reply's leading whitespace is only the gap after it and goes. A reply continued after a
/// crash goes on mid-text, where " world" after "Hello" is the text itself: nothing goes.
#[derive(Debug, Clone, Copy)]
pub struct ReplyStart {
    started: bool,
}

impl ReplyStart {
    /// For a new reply, or for the continuation of a reply cut short.
    pub fn new(continuing: bool) -> Self {
        ReplyStart {
            started: continuing,
        }
    }

    /// Trims the next piece of text while nothing but whitespace has come.
    pub fn push(&mut self, text: &mut String) {
        if !self.started {
            let trimmed = text.trim_start();
            self.started = !trimmed.is_empty();
            *text = trimmed.to_string();
        }
    }
}

/// Finds stop strings in streamed text without ever releasing part of one.
#[derive(Debug)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What [`StopMatcher::push`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Matched {
    /// Text that is safe to show; generation goes on.
    Continue(String),
    /// A stop string was found: show the text before it, then stop.
    Stop { text: String, stop: String },
}

impl StopMatcher {
    pub fn new(stops: impl IntoIterator<Item = String>) -> Self {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> Matched {
        self.held.push_str(text);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|(at, _)| *at);
        if let Some((at, stop)) = first {
            let stop = stop.clone();
            let mut text = std::mem::take(&mut self.held);
            text.truncate(at);
            return Matched::Stop { text, stop };
        }
        let keep = self.held.len() - self.partial_suffix();
        let rest = self.held.split_off(keep);
        Matched::Continue(std::mem::replace(&mut self.held, rest))
    }

    /// The end of generation: whatever was held back was not a stop string after all.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length of the longest end of `held` that is a proper start of some stop string.
    fn partial_suffix(&self) -> usize {
        let mut longest = 0;
        for stop in &self.stops {
            for (i, _) in stop.char_indices().skip(1) {
                if i > longest && self.held.ends_with(&stop[..i]) {
                    longest = i;
                }
            }
        }
        longest
    }
}

/// Groups streamed text into chunks.
///
/// A chunk is sent when it holds `max_tokens` tokens; or once it holds `min_tokens` and ends
/// at a word or punctuation boundary; or when waiting for one more token would keep its first
/// token longer than `max_delay` (judged by the mean time between tokens so far, so a slow
/// model does not hold text back past the promise). The first text of a reply always goes out
/// at once, so coalescing never adds to the time to first token.
#[derive(Debug)]
pub struct Coalescer {
    rule: Coalesce,
    text: String,
    tokens: u32,
    first_at: Option<Instant>,
    sent_any: bool,
    last_token_at: Option<Instant>,
    mean_gap: Option<Duration>,
}

impl Coalescer {
    pub fn new(rule: Coalesce) -> Self {
        Coalescer {
            rule,
            text: String::new(),
            tokens: 0,
            first_at: None,
            sent_any: false,
            last_token_at: None,
            mean_gap: None,
        }
    }

    /// Adds one token's worth of text (possibly empty) at time `now`; returns a chunk when
    /// one is due.
    pub fn push(&mut self, text: &str, now: Instant) -> Option<String> {
        if let Some(last) = self.last_token_at {
            let gap = now.saturating_duration_since(last);
            // Exponential moving average: follows a model that speeds up or slows down.
            self.mean_gap = Some(match self.mean_gap {
                Some(mean) => (mean * 3 + gap) / 4,
                None => gap,
            });
        }
        self.last_token_at = Some(now);
        self.text.push_str(text);
        self.tokens += 1;
        if self.text.is_empty() {
            return None;
        }
        let first_at = *self.first_at.get_or_insert(now);
        let age = now.saturating_duration_since(first_at);
        let max_delay = Duration::from_millis(u64::from(self.rule.max_delay_ms));
        let due = !self.sent_any
            || self.tokens >= self.rule.max_tokens.max(1)
            || (self.tokens >= self.rule.min_tokens && ends_at_boundary(&self.text))
            || age + self.mean_gap.unwrap_or_default() >= max_delay;
        due.then(|| self.take())
    }

    /// Whatever is left at the end of the reply.
    pub fn finish(&mut self) -> Option<String> {
        (!self.text.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> String {
        self.tokens = 0;
        self.first_at = None;
        self.sent_any = true;
        std::mem::take(&mut self.text)
    }
}

fn ends_at_boundary(text: &str) -> bool {
    text.chars().next_back().is_some_and(|c| {
        c.is_whitespace()
            || matches!(
                c,
                '.' | ',' | '!' | '?' | ';' | ':' | '…' | '。' | '、' | '！' | '？' | ')' | '"'
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_reply_loses_its_leading_whitespace_a_continued_one_keeps_it() {
        let stream = |mut start: ReplyStart, pieces: &[&str]| -> String {
            pieces
                .iter()
                .map(|p| {
                    let mut text = (*p).to_string();
                    start.push(&mut text);
                    text
                })
                .collect()
        };
        let pieces = [" ", "\n", " Hello", " world", "\n", " again"];
        assert_eq!(
            stream(ReplyStart::new(false), &pieces),
            "Hello world\n again"
        );
        assert_eq!(
            stream(ReplyStart::new(true), &pieces),
            " \n Hello world\n again"
        );
        assert_eq!(stream(ReplyStart::new(true), &[" world"]), " world");
    }

    #[test]
    fn utf8_carries_split_characters_across_tokens() {
        let text = "héllo 😀 ok";
        // Feed one byte at a time: the worst split a byte-fallback vocab can produce.
        let mut s = Utf8Stream::default();
        let mut out = String::new();
        let mut seen = Vec::new();
        for b in text.as_bytes() {
            s.push(&[*b], &mut out);
            seen.push(out.clone());
        }
        s.finish(&mut out);
        assert_eq!(out, text);
        assert!(seen.iter().all(|s| !s.contains('\u{FFFD}')));
    }

    #[test]
    fn utf8_replaces_bytes_that_can_never_be_valid() {
        let mut s = Utf8Stream::default();
        let mut out = String::new();
        s.push(&[b'a', 0xff, b'b', 0xf0, 0x9f], &mut out);
        assert_eq!(out, "a\u{FFFD}b");
        s.finish(&mut out);
        assert_eq!(out, "a\u{FFFD}b\u{FFFD}");
    }

    #[test]
    fn stop_strings_never_leak_even_in_part() {
        let mut m = StopMatcher::new(["\nUser:".to_string()]);
        let mut shown = String::new();
        for piece in ["Hi", " there", "\n", "Us", "er", ": more"] {
            match m.push(piece) {
                Matched::Continue(t) => shown.push_str(&t),
                Matched::Stop { text, stop } => {
                    shown.push_str(&text);
                    assert_eq!(stop, "\nUser:");
                    assert_eq!(shown, "Hi there");
                    return;
                }
            }
            assert!(!shown.contains('\n'), "held-back text leaked: {shown:?}");
        }
        panic!("stop string not found");
    }

    #[test]
    fn held_text_is_released_when_it_turns_out_not_to_stop() {
        let mut m = StopMatcher::new(["\nUser:".to_string()]);
        assert_eq!(m.push("a\nU"), Matched::Continue("a".into()));
        assert_eq!(m.push("p"), Matched::Continue("\nUp".into()));
        assert_eq!(m.push("\n"), Matched::Continue(String::new()));
        assert_eq!(m.finish(), "\n");
    }

    #[test]
    fn coalescer_sends_the_first_token_at_once_then_groups() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut c = Coalescer::new(Coalesce::default());
        assert_eq!(c.push("Hel", ms(0)), Some("Hel".into()));
        assert_eq!(c.push("lo", ms(1)), None);
        assert_eq!(c.push("wor", ms(2)), None);
        assert_eq!(c.push("ld", ms(3)), None);
        assert_eq!(c.push("s", ms(4)), None);
        // Fifth token since the last chunk: max_tokens.
        assert_eq!(c.push("ing", ms(5)), Some("loworldsing".into()));
        // A boundary after min_tokens.
        c.push("a", ms(6));
        c.push("b", ms(7));
        assert_eq!(c.push(" ", ms(8)), Some("ab ".into()));
        assert_eq!(c.push("x", ms(9)), None);
        assert_eq!(c.finish(), Some("x".into()));
    }

    #[test]
    fn coalescer_keeps_the_delay_promise_for_slow_models() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut c = Coalescer::new(Coalesce::default());
        c.push("a", ms(0));
        // 40 ms per token: "b" may wait for "c" (40 ms < 50 ms), but waiting for a third
        // token would hold "b" 80 ms, so "bc" goes out now.
        assert_eq!(c.push("b", ms(40)), None);
        assert_eq!(c.push("c", ms(80)), Some("bc".into()));
    }

    #[test]
    fn coalescing_off_sends_every_token() {
        let now = Instant::now();
        let mut c = Coalescer::new(Coalesce::OFF);
        for t in ["a", "b", "c"] {
            assert_eq!(c.push(t, now), Some(t.into()));
        }
    }
}
