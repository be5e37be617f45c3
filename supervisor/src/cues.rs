//! Expression cues in a streamed reply: what the avatar should show while the LLM talks.
//!
//! The model may write explicit tags such as `[happy]`; they are taken out of the text the
//! user sees (the transcript keeps the reply as the model wrote it, so the model keeps seeing
//! its own tags). A reply without tags falls back to a small lexicon of keywords and emoji.
//! Chunks arrive split at arbitrary points, so a `[` with no `]` yet is held back until the
//! tag is complete or can no longer be one; nothing else is ever delayed.

use std::{collections::BTreeMap, sync::Arc};

/// Which tags and words mean which expression.
#[derive(Debug, Clone, PartialEq)]
pub struct CueMap {
    /// Tag name (lowercase, without brackets) → expression.
    pub tags: BTreeMap<String, String>,
    /// Keyword or emoji (keywords lowercase) → expression, for replies without tags.
    pub lexicon: BTreeMap<String, String>,
}

impl Default for CueMap {
    fn default() -> Self {
        let pairs = |list: &[(&str, &str)]| {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        CueMap {
            // The VRM 1.0 preset expressions, and common synonyms.
            tags: pairs(&[
                ("happy", "happy"),
                ("joy", "happy"),
                ("smile", "happy"),
                ("laugh", "happy"),
                ("sad", "sad"),
                ("sorrow", "sad"),
                ("angry", "angry"),
                ("surprised", "surprised"),
                ("surprise", "surprised"),
                ("relaxed", "relaxed"),
                ("calm", "relaxed"),
                ("neutral", "neutral"),
                ("thinking", "thinking"),
            ]),
            lexicon: pairs(&[
                ("😊", "happy"),
                ("😄", "happy"),
                ("😀", "happy"),
                ("🙂", "happy"),
                ("😂", "happy"),
                ("haha", "happy"),
                ("glad", "happy"),
                ("yay", "happy"),
                ("😢", "sad"),
                ("😭", "sad"),
                ("☹", "sad"),
                ("sorry", "sad"),
                ("😠", "angry"),
                ("😡", "angry"),
                ("😮", "surprised"),
                ("😲", "surprised"),
                ("wow", "surprised"),
                ("😌", "relaxed"),
            ]),
        }
    }
}

/// Longest tag name held back while waiting for its `]`.
pub const MAX_TAG: usize = 24;
/// Longest word (in bytes) the lexicon is looked up with; longer ones are cut there.
pub const MAX_WORD: usize = 32;

fn tag_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

/// A character the lexicon looks up on its own (an emoji or another symbol).
fn emoji_char(c: char) -> bool {
    !c.is_ascii() && !c.is_alphanumeric()
}

impl CueMap {
    /// Whether the filter can ever match `key` (lowercase) as a tag name.
    pub fn can_match_tag(key: &str) -> bool {
        !key.is_empty() && key.len() <= MAX_TAG && key.chars().all(tag_char)
    }

    /// Whether the filter can ever match `key` (lowercase) as a lexicon entry: one word of
    /// letters and digits, or one emoji.
    pub fn can_match_word(key: &str) -> bool {
        let mut chars = key.chars();
        let emoji = chars.next().is_some_and(emoji_char) && chars.next().is_none();
        let word =
            !key.is_empty() && key.len() <= MAX_WORD && key.chars().all(char::is_alphanumeric);
        word || emoji
    }
}

/// Filters one reply as it streams.
#[derive(Debug)]
pub struct CueFilter {
    map: Arc<CueMap>,
    /// A `[` and what followed it, not yet known to be a tag.
    held: String,
    saw_tag: bool,
    /// The current word (for the lexicon), lowercase.
    word: String,
    last: Option<String>,
}

impl CueFilter {
    pub fn new(map: Arc<CueMap>) -> CueFilter {
        CueFilter {
            map,
            held: String::new(),
            saw_tag: false,
            word: String::new(),
            last: None,
        }
    }

    /// The visible part of `chunk` (tags removed) and the cues it carried.
    pub fn push(&mut self, chunk: &str) -> (String, Vec<String>) {
        let mut visible = String::with_capacity(chunk.len());
        let mut cues = Vec::new();
        for c in chunk.chars() {
            if !self.held.is_empty() && c == '[' {
                // "[[happy]": the first one was text.
                self.release(&mut visible, &mut cues);
            }
            if !self.held.is_empty() {
                self.held.push(c);
                if c == ']' {
                    let name = self.held[1..self.held.len() - 1].to_lowercase();
                    if let Some(expression) = self.map.tags.get(&name).cloned() {
                        self.saw_tag = true;
                        self.held.clear();
                        self.cue(expression, &mut cues);
                        continue;
                    }
                    self.release(&mut visible, &mut cues);
                } else if !tag_char(c) || self.held.len() > MAX_TAG + 1 {
                    self.release(&mut visible, &mut cues);
                }
                continue;
            }
            if c == '[' {
                self.held.push(c);
                continue;
            }
            visible.push(c);
            self.scan(c, &mut cues);
        }
        (visible, cues)
    }

    /// The end of the reply: whatever was held back is text after all.
    pub fn finish(&mut self) -> (String, Vec<String>) {
        let mut visible = String::new();
        let mut cues = Vec::new();
        self.release(&mut visible, &mut cues);
        self.scan(' ', &mut cues);
        (visible, cues)
    }

    /// Held text that turned out not to be a tag becomes visible (and is scanned).
    fn release(&mut self, visible: &mut String, cues: &mut Vec<String>) {
        let held = std::mem::take(&mut self.held);
        for c in held.chars() {
            visible.push(c);
            self.scan(c, cues);
        }
    }

    /// The lexicon, for replies without tags: emoji at once, words when they end.
    fn scan(&mut self, c: char, cues: &mut Vec<String>) {
        if self.saw_tag {
            return;
        }
        if emoji_char(c) {
            let mut one = [0; 4];
            if let Some(e) = self.map.lexicon.get(&*c.encode_utf8(&mut one)).cloned() {
                self.cue(e, cues);
            }
        }
        if c.is_alphanumeric() {
            if self.word.len() < MAX_WORD {
                self.word.extend(c.to_lowercase());
            }
            return;
        }
        if let Some(e) = self.map.lexicon.get(&self.word).cloned() {
            self.cue(e, cues);
        }
        self.word.clear();
    }

    fn cue(&mut self, expression: String, cues: &mut Vec<String>) {
        if self.last.as_ref() == Some(&expression) {
            return;
        }
        self.last = Some(expression.clone());
        cues.push(expression);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&str]) -> (String, Vec<String>) {
        let mut f = CueFilter::new(Arc::new(CueMap::default()));
        let mut text = String::new();
        let mut cues = Vec::new();
        for chunk in chunks {
            let (t, c) = f.push(chunk);
            text.push_str(&t);
            cues.extend(c);
        }
        let (t, c) = f.finish();
        text.push_str(&t);
        cues.extend(c);
        (text, cues)
    }

    #[test]
    fn tags_are_removed_and_become_cues() {
        let (text, cues) = run(&["[happy] Hello! [Sad]Oh no."]);
        assert_eq!(text, " Hello! Oh no.");
        assert_eq!(cues, ["happy", "sad"]);
    }

    #[test]
    fn a_tag_split_at_every_point_is_still_found() {
        let reply = "Well [surprised]really? [happy]yes";
        for cut in 1..reply.len() {
            if !reply.is_char_boundary(cut) {
                continue;
            }
            let (text, cues) = run(&[&reply[..cut], &reply[cut..]]);
            assert_eq!(text, "Well really? yes", "cut at {cut}");
            assert_eq!(cues, ["surprised", "happy"], "cut at {cut}");
        }
        // One character at a time.
        let chars: Vec<String> = reply.chars().map(String::from).collect();
        let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(run(&refs).0, "Well really? yes");
    }

    #[test]
    fn brackets_that_are_not_tags_stay_visible() {
        let (text, cues) = run(&["see [1], [not a tag] and [unknown] or [", "x"]);
        assert_eq!(text, "see [1], [not a tag] and [unknown] or [x");
        assert!(cues.is_empty(), "{cues:?}");
        let (text, cues) = run(&["[[happy]] (wow)"]);
        assert_eq!(text, "[] (wow)");
        assert_eq!(cues, ["happy"]);
        let long = format!("[{}]", "a".repeat(40));
        assert_eq!(run(&[&long]).0, long);
    }

    #[test]
    fn without_tags_keywords_and_emoji_set_the_expression() {
        let (text, cues) = run(&["Wow, that is great 😊. Sor", "ry to hear"]);
        assert_eq!(text, "Wow, that is great 😊. Sorry to hear");
        assert_eq!(cues, ["surprised", "happy", "sad"]);
        // Once the model uses tags, the lexicon stays quiet.
        let (_, cues) = run(&["[relaxed] sorry, wow 😊"]);
        assert_eq!(cues, ["relaxed"]);
    }

    #[test]
    fn the_same_expression_twice_in_a_row_is_one_cue() {
        let (_, cues) = run(&["[happy] a [happy] b [joy] c"]);
        assert_eq!(cues, ["happy"]);
    }
}
