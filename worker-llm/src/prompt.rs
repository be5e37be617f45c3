//! From a conversation to the prompt the model sees: rendering with the fallback template,
//! and fitting a long conversation into the context by leaving out its oldest turns.
//!
//! A conversation that ends with an assistant message ends with a reply cut short (the worker
//! died mid-reply and the supervisor sends what was already streamed): it is rendered *open*,
//! up to and including its text and nothing after, so the model goes on with it instead of
//! starting another. [`render_open`] does this for any template, the model's own included:
//! it renders the conversation with a marker in place of that text, cuts at the marker and
//! appends the text.
//!
//! Fitting keeps the prompt's *start* stable from turn to turn, because the KV cache is reused
//! up to the first token that differs: when the conversation overflows, turns are dropped until
//! it fills only `target` of the budget (not just until it fits), and the next turns start from
//! the same first message until the budget is reached again. Dropping one turn per request
//! instead would change the start every time and re-decode the whole prompt on every turn.

use mate_protocol::{ChatMessage, ChatRole, ChatTemplate};

/// Renders `messages` with a plain-text template, ending with the generation prompt, or with
/// the unfinished reply the conversation ends with (see [`render_open`]).
pub fn render_fallback(template: &ChatTemplate, messages: &[ChatMessage]) -> String {
    let Ok(text) = render_open(messages, |messages| {
        let mut out = String::new();
        for m in messages {
            let part = match m.role {
                ChatRole::System => &template.system,
                ChatRole::User => &template.user,
                ChatRole::Assistant => &template.assistant,
            };
            out.push_str(&part.replace("{text}", &m.text));
        }
        out.push_str(&template.generation_prompt);
        Ok::<_, std::convert::Infallible>(out)
    });
    text
}

/// The text of the unfinished reply `messages` ends with: a last assistant message that is
/// not empty. An empty one asks for an ordinary reply.
pub fn partial_reply(messages: &[ChatMessage]) -> Option<&str> {
    messages
        .last()
        .filter(|m| m.role == ChatRole::Assistant && !m.text.is_empty())
        .map(|m| m.text.as_str())
}

/// Stands in for the unfinished reply while a template renders the conversation. No NUL (it
/// would be stripped before C sees it), no whitespace at its ends (templates trim messages),
/// and nothing a template would escape.
const OPEN_REPLY_MARKER: &str = "\u{1}mate:open-reply\u{1}";

/// Renders `messages` with `render`, which closes every message and ends with the generation
/// prompt. When the conversation ends with an assistant message, that reply is left open
/// instead: the result ends exactly with its text, with no end of turn and no new generation
/// prompt after it. An empty last assistant message is left out (an ordinary reply).
///
/// `render` sees the conversation with the reply's text replaced by a marker; the result is
/// cut at the marker's last occurrence, which is in the last message whatever the other
/// messages hold. A template that drops the marker gets the generation prompt instead, with the
/// text after it.
pub fn render_open<E>(
    messages: &[ChatMessage],
    mut render: impl FnMut(&[ChatMessage]) -> Result<String, E>,
) -> Result<String, E> {
    let Some((last, before)) = messages
        .split_last()
        .filter(|(last, _)| last.role == ChatRole::Assistant)
    else {
        return render(messages);
    };
    if last.text.is_empty() {
        return render(before);
    }
    let mut marked = messages.to_vec();
    if let Some(m) = marked.last_mut() {
        m.text = OPEN_REPLY_MARKER.into();
    }
    let mut text = render(&marked)?;
    match text.rfind(OPEN_REPLY_MARKER) {
        Some(at) => text.truncate(at),
        None => text = render(before)?,
    }
    text.push_str(&last.text);
    Ok(text)
}

/// The conversation as it will be decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted<T> {
    pub tokens: Vec<T>,
    /// Index in the conversation of the first non-system message kept.
    pub first: usize,
    /// Non-system messages left out.
    pub dropped: usize,
    /// Messages left out by this call that the previous call kept (0: nothing new dropped).
    pub newly_dropped: usize,
}

/// The conversation does not fit even with only the system prompt and the last message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLong {
    pub tokens: usize,
    pub budget: usize,
}

/// Chooses which messages to keep. Leading system messages are always kept, and so is the last
/// turn: the last user message and whatever follows it (an unfinished reply); the rest starts
/// at `hint` (the previous turn's start) or later. `render` turns a list of messages into
/// tokens.
pub fn fit<T>(
    messages: &[ChatMessage],
    hint: usize,
    budget: usize,
    target: usize,
    mut render: impl FnMut(&[ChatMessage]) -> Vec<T>,
) -> Result<Fitted<T>, TooLong> {
    let system_end = messages
        .iter()
        .position(|m| m.role != ChatRole::System)
        .unwrap_or(messages.len());
    // Where the kept part may start at the latest.
    let last = messages
        .iter()
        .rposition(|m| m.role == ChatRole::User)
        .unwrap_or(messages.len().saturating_sub(1))
        .max(system_end);
    let mut first = hint.clamp(system_end, last);
    let mut limit = budget;
    let mut newly_dropped = 0;
    loop {
        let kept: Vec<ChatMessage> = messages[..system_end]
            .iter()
            .chain(&messages[first..])
            .cloned()
            .collect();
        let tokens = render(&kept);
        if tokens.len() <= limit {
            return Ok(Fitted {
                tokens,
                first,
                dropped: first - system_end,
                newly_dropped,
            });
        }
        if first >= last {
            return Err(TooLong {
                tokens: tokens.len(),
                budget,
            });
        }
        // Over budget: drop down to `target`, a whole turn at a time, so the kept part starts
        // with a user message.
        limit = target.min(budget);
        let next = messages[first + 1..=last]
            .iter()
            .position(|m| m.role == ChatRole::User)
            .map_or(last, |i| first + 1 + i);
        newly_dropped += next - first;
        first = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: ChatRole, text: &str) -> ChatMessage {
        ChatMessage {
            role,
            text: text.into(),
        }
    }

    fn conversation(turns: usize) -> Vec<ChatMessage> {
        let mut m = vec![msg(ChatRole::System, "Be kind.")];
        for i in 0..turns {
            m.push(msg(ChatRole::User, &format!("question {i}")));
            m.push(msg(ChatRole::Assistant, &format!("answer {i}")));
        }
        m.push(msg(ChatRole::User, "last question"));
        m
    }

    /// One "token" per character of the fallback rendering.
    fn chars(messages: &[ChatMessage]) -> Vec<char> {
        render_fallback(&ChatTemplate::default(), messages)
            .chars()
            .collect()
    }

    #[test]
    fn fallback_template_renders_roles_and_opens_the_reply() {
        let text = render_fallback(&ChatTemplate::default(), &conversation(1));
        assert_eq!(
            text,
            "Be kind.\n\nUser: question 0\nMate: answer 0\nUser: last question\nMate:"
        );
    }

    fn continuing(partial: &str) -> Vec<ChatMessage> {
        let mut c = conversation(1);
        c.push(msg(ChatRole::Assistant, partial));
        c
    }

    #[test]
    fn a_reply_cut_short_is_rendered_open_ending_exactly_with_its_text() {
        let t = ChatTemplate::default();
        let text = render_fallback(&t, &continuing("Hello, wor"));
        assert_eq!(
            text,
            "Be kind.\n\nUser: question 0\nMate: answer 0\nUser: last question\nMate: Hello, wor"
        );
        // Trailing whitespace is part of what was streamed, and stays.
        assert!(render_fallback(&t, &continuing("Hello ")).ends_with("\nMate: Hello "));
        // The rest of the conversation renders as it would for a new reply.
        let fresh = render_fallback(&t, &conversation(1));
        assert!(text.starts_with(fresh.strip_suffix("Mate:").expect("generation prompt")));
    }

    #[test]
    fn an_empty_partial_reply_is_an_ordinary_generation() {
        let t = ChatTemplate::default();
        assert_eq!(
            render_fallback(&t, &continuing("")),
            render_fallback(&t, &conversation(1))
        );
        assert_eq!(partial_reply(&continuing("")), None);
        assert_eq!(partial_reply(&conversation(1)), None);
        assert_eq!(partial_reply(&continuing(" wor")), Some(" wor"));
    }

    #[test]
    fn the_open_reply_is_found_whatever_the_template_and_the_other_messages_hold() {
        // A template that wraps and trims messages, closes turns and opens a new one.
        let chatml = |messages: &[ChatMessage]| -> Result<String, ()> {
            let mut out = String::new();
            for m in messages {
                out.push_str(&format!("<|{:?}|>\n{}<|end|>\n", m.role, m.text.trim()));
            }
            out.push_str("<|Assistant|>\n");
            Ok(out)
        };
        let mut c = conversation(1);
        // A user who types the marker does not move the cut.
        c[1].text = OPEN_REPLY_MARKER.into();
        c.push(msg(ChatRole::Assistant, "It is "));
        let text = render_open(&c, chatml).expect("render");
        assert!(text.ends_with("<|Assistant|>\nIt is "), "{text:?}");
        assert_eq!(text.matches("<|end|>").count(), 4, "{text:?}");
        // A template that leaves the marker out: the reply goes after a generation prompt.
        let forgetful = |messages: &[ChatMessage]| -> Result<String, ()> {
            Ok(format!("{} messages\n>", messages.len()))
        };
        assert_eq!(
            render_open(&c, forgetful).expect("render"),
            "4 messages\n>It is "
        );
        // Errors come through.
        assert_eq!(render_open(&c, |_| Err::<String, _>(7)), Err(7));
    }

    #[test]
    fn fitting_a_continuation_keeps_the_question_and_the_partial_reply() {
        let mut c = conversation(40);
        c.push(msg(ChatRole::Assistant, "the answer is"));
        let budget = 400;
        let f = fit(&c, 0, budget, budget * 3 / 4, chars).expect("fits after dropping");
        let text: String = f.tokens.iter().collect();
        assert!(text.starts_with("Be kind.\n\nUser: "), "{text}");
        assert!(
            text.ends_with("User: last question\nMate: the answer is"),
            "{text}"
        );
        assert!(f.first > 1);
        // Even when nothing else fits, the last question stays with its reply.
        let f = fit(&c, 0, 70, 60, chars).expect("the last turn fits");
        let text: String = f.tokens.iter().collect();
        assert_eq!(text, "Be kind.\n\nUser: last question\nMate: the answer is");
        assert_eq!(f.first, c.len() - 2);
    }

    #[test]
    fn a_conversation_that_fits_is_kept_whole() {
        let c = conversation(3);
        let f = fit(&c, 0, 10_000, 5_000, chars).expect("fits");
        assert_eq!(f.first, 1);
        assert_eq!(f.newly_dropped, 0);
        assert_eq!(f.tokens, chars(&c));
    }

    #[test]
    fn overflow_drops_whole_old_turns_keeps_the_system_prompt_and_leaves_room() {
        let c = conversation(40);
        let budget = 400;
        let f = fit(&c, 0, budget, budget * 3 / 4, chars).expect("fits after dropping");
        let text: String = f.tokens.iter().collect();
        assert!(text.starts_with("Be kind.\n\nUser: "), "{text}");
        assert!(text.ends_with("User: last question\nMate:"));
        assert!(f.tokens.len() <= budget * 3 / 4);
        assert_eq!(c[f.first].role, ChatRole::User);
        assert_eq!(f.newly_dropped, f.first - 1);
        // The next turn starts from the same message while it fits: a stable prefix.
        let mut longer = c.clone();
        longer.push(msg(ChatRole::Assistant, "fine"));
        longer.push(msg(ChatRole::User, "and now?"));
        let g = fit(&longer, f.first, budget, budget * 3 / 4, chars).expect("fits");
        assert_eq!(g.first, f.first);
        assert_eq!(g.newly_dropped, 0);
    }

    #[test]
    fn a_last_message_longer_than_the_context_is_an_error_not_a_crash() {
        let mut c = conversation(2);
        c.push(msg(ChatRole::User, &"x".repeat(1_000)));
        let err = fit(&c, 0, 100, 75, chars).expect_err("cannot fit");
        assert!(err.tokens > 1_000);
        assert_eq!(err.budget, 100);
    }
}
