//! From a conversation to the prompt the model sees: rendering with the fallback template,
//! and fitting a long conversation into the context by leaving out its oldest turns.
//!
//! Fitting keeps the prompt's *start* stable from turn to turn, because the KV cache is reused
//! up to the first token that differs: when the conversation overflows, turns are dropped until
//! it fills only `target` of the budget (not just until it fits), and the next turns start from
//! the same first message until the budget is reached again. Dropping one turn per request
//! instead would change the start every time and re-decode the whole prompt on every turn.

use mate_protocol::{ChatMessage, ChatRole, ChatTemplate};

/// Renders `messages` with a plain-text template, ending with the generation prompt.
pub fn render_fallback(template: &ChatTemplate, messages: &[ChatMessage]) -> String {
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
    out
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

/// Chooses which messages to keep. Leading system messages are always kept; the rest starts at
/// `hint` (the previous turn's start) or later. `render` turns a list of messages into tokens.
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
    let last = messages.len().saturating_sub(1).max(system_end);
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
