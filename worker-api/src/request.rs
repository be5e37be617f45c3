//! What clients send, parsed leniently where OpenAI's clients differ (unknown fields are
//! ignored, `content` may be a string, an array of text parts or null) and checked strictly
//! where mate cannot do what was asked (`n` other than 1, images, tool messages): those get a
//! 400 that names the field and says why, never a silent change.

use mate_protocol::{ChatMessage, ChatRole, Sampling};
use serde::Deserialize;
use serde_json::Value;

use crate::ApiError;

/// Most stop sequences one request may give.
pub const MAX_STOPS: usize = 16;

/// The body of `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// Ignored: mate serves the one model it loaded (as llama-server does).
    #[serde(default)]
    pub model: Option<String>,
    /// Checked by [`ChatRequest::generation`], so a wrong one gets a message that says where.
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(flatten)]
    pub options: Options,
}

/// One message as sent: its role and content unchecked.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub content: Value,
}

/// The body of `POST /v1/completions` (a plain prompt, no chat template).
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub prompt: Value,
    #[serde(flatten)]
    pub options: Options,
}

/// The generation options both endpoints share.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Options {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_tokens: Option<u32>,
    /// OpenAI's newer name for `max_tokens`; wins when both are there.
    pub max_completion_tokens: Option<u32>,
    /// A string or an array of strings.
    #[serde(default)]
    pub stop: Value,
    /// Any integer; llama.cpp's seed is 32 bits, so it is taken modulo 2^32.
    pub seed: Option<i64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    /// A last chunk, with no choices, carries the usage.
    #[serde(default)]
    pub include_usage: bool,
}

/// What to generate from: a conversation (the model's chat template applies) or a plain
/// prompt (`/v1/completions`).
pub use mate_protocol::ApiInput as Input;

/// A checked request, in mate's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub input: Input,
    pub sampling: Sampling,
    pub stream: bool,
    /// Streaming: end with a chunk that carries the usage.
    pub include_usage: bool,
}

/// Parses a JSON body; what is wrong with it becomes a 400 that says so.
fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::malformed(format!("a field has the wrong type: {e}")),
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::malformed(format!("the body is not valid JSON: {e}"))
            }
        }
    })
}

impl ChatRequest {
    pub fn parse(body: &[u8]) -> Result<ChatRequest, ApiError> {
        parse(body)
    }

    /// The conversation and sampling to generate with; `defaults` are mate's `[chat]`
    /// settings, which the request's options override.
    pub fn generation(&self, defaults: &Sampling) -> Result<Generation, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid(
                "messages",
                "messages must hold at least one message",
            ));
        }
        let messages = self
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| message(i, m))
            .collect::<Result<Vec<_>, _>>()?;
        self.options.generation(Input::Chat(messages), defaults)
    }
}

impl CompletionRequest {
    pub fn parse(body: &[u8]) -> Result<CompletionRequest, ApiError> {
        parse(body)
    }

    pub fn generation(&self, defaults: &Sampling) -> Result<Generation, ApiError> {
        let prompt = match &self.prompt {
            Value::String(s) => s.clone(),
            Value::Array(items) => match items.as_slice() {
                [Value::String(s)] => s.clone(),
                [] => return Err(ApiError::invalid("prompt", "prompt is empty")),
                [_] => {
                    return Err(ApiError::invalid(
                        "prompt",
                        "prompt must be text: token arrays are not supported",
                    ))
                }
                _ => {
                    return Err(ApiError::invalid(
                        "prompt",
                        "mate completes one prompt per request: send them one at a time",
                    ))
                }
            },
            Value::Null => return Err(ApiError::invalid("prompt", "prompt is missing")),
            _ => return Err(ApiError::invalid("prompt", "prompt must be a string")),
        };
        self.options.generation(Input::Prompt(prompt), defaults)
    }
}

impl Options {
    fn generation(&self, input: Input, defaults: &Sampling) -> Result<Generation, ApiError> {
        if let Some(n) = self.n.filter(|&n| n != 1) {
            return Err(ApiError::invalid(
                "n",
                format!("mate generates one choice per request: n must be 1, not {n}"),
            ));
        }
        let mut sampling = defaults.clone();
        if let Some(t) = self.temperature {
            if !(0.0..=2.0).contains(&t) {
                return Err(ApiError::invalid(
                    "temperature",
                    format!("temperature must be between 0 and 2, not {t}"),
                ));
            }
            sampling.temperature = t;
        }
        if let Some(p) = self.top_p {
            if !(0.0..=1.0).contains(&p) {
                return Err(ApiError::invalid(
                    "top_p",
                    format!("top_p must be between 0 and 1, not {p}"),
                ));
            }
            sampling.top_p = p;
        }
        let (param, max) = match (self.max_completion_tokens, self.max_tokens) {
            (Some(m), _) => ("max_completion_tokens", Some(m)),
            (None, m) => ("max_tokens", m),
        };
        if let Some(max) = max {
            if max == 0 {
                return Err(ApiError::invalid(
                    param,
                    format!("{param} must be at least 1"),
                ));
            }
            sampling.max_tokens = max;
        }
        if let Some(seed) = self.seed {
            sampling.seed = seed.rem_euclid(1 << 32) as u32;
        }
        let stops = stops(&self.stop)?;
        if !stops.is_empty() {
            sampling.stop = stops;
        }
        let stream = self.stream.unwrap_or(false);
        Ok(Generation {
            input,
            sampling,
            stream,
            include_usage: stream
                && self
                    .stream_options
                    .as_ref()
                    .is_some_and(|o| o.include_usage),
        })
    }
}

/// `stop`: absent, a string, or an array of strings (empty ones dropped).
fn stops(stop: &Value) -> Result<Vec<String>, ApiError> {
    let wrong = || ApiError::invalid("stop", "stop must be a string or an array of strings");
    let stops: Vec<String> = match stop {
        Value::Null => Vec::new(),
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(wrong))
            .collect::<Result<_, _>>()?,
        _ => return Err(wrong()),
    };
    let stops: Vec<String> = stops.into_iter().filter(|s| !s.is_empty()).collect();
    if stops.len() > MAX_STOPS {
        return Err(ApiError::invalid(
            "stop",
            format!("at most {MAX_STOPS} stop sequences, not {}", stops.len()),
        ));
    }
    Ok(stops)
}

/// Message `i` in mate's terms: `system` and `developer` are the system prompt; text parts
/// are joined with newlines; null content (an assistant turn that only called tools) is
/// empty.
fn message(i: usize, m: &Message) -> Result<ChatMessage, ApiError> {
    let role = match m.role.as_str() {
        "system" | "developer" => ChatRole::System,
        "user" => ChatRole::User,
        "assistant" => ChatRole::Assistant,
        "tool" | "function" => {
            return Err(ApiError::invalid(
                &format!("messages[{i}].role"),
                format!(
                    "messages[{i}] is a {} message: mate serves text chat without tools",
                    m.role
                ),
            ))
        }
        "" => {
            return Err(ApiError::invalid(
                &format!("messages[{i}].role"),
                format!("messages[{i}] has no role (system, user or assistant)"),
            ))
        }
        other => {
            return Err(ApiError::invalid(
                &format!("messages[{i}].role"),
                format!(
                    "messages[{i}] has the role {other:?}: mate knows system, developer, user \
                     and assistant"
                ),
            ))
        }
    };
    let param = || format!("messages[{i}].content");
    let text = match &m.content {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            let mut texts = Vec::with_capacity(parts.len());
            for part in parts {
                match (part["type"].as_str(), part["text"].as_str()) {
                    (Some("text"), Some(text)) => texts.push(text),
                    (Some("text"), None) => {
                        return Err(ApiError::invalid(
                            &param(),
                            format!("a text part of messages[{i}] has no text"),
                        ))
                    }
                    (Some(kind), _) => {
                        return Err(ApiError::invalid(
                            &param(),
                            format!(
                                "messages[{i}] has a {kind} part: mate's model reads text parts \
                                 only"
                            ),
                        ))
                    }
                    (None, _) => {
                        return Err(ApiError::invalid(
                            &param(),
                            format!("a part of messages[{i}] has no type"),
                        ))
                    }
                }
            }
            texts.join("\n")
        }
        _ => {
            return Err(ApiError::invalid(
                &param(),
                format!("messages[{i}].content must be a string or an array of text parts"),
            ))
        }
    };
    Ok(ChatMessage { role, text })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Result<Generation, ApiError> {
        ChatRequest::parse(body.as_bytes())?.generation(&Sampling::default())
    }

    fn param_of(result: Result<Generation, ApiError>) -> (u16, Option<String>, String) {
        let e = result.expect_err("refused");
        (e.status, e.param, e.message)
    }

    #[test]
    fn a_request_as_the_openai_package_sends_it_becomes_mates_conversation() {
        let g = chat(
            r#"{"model": "anything", "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"},
                                             {"type": "text", "text": "there"}]},
                {"role": "assistant", "content": null, "refusal": null},
                {"role": "user", "content": "Bye", "name": "kim"}],
              "temperature": 0, "top_p": 0.5, "max_tokens": 20, "max_completion_tokens": 12,
              "stop": "\nUser:", "seed": -1, "stream": true,
              "stream_options": {"include_usage": true},
              "n": 1, "presence_penalty": 0.3, "logit_bias": {}, "user": "x"}"#,
        )
        .expect("accepted");
        let Input::Chat(messages) = &g.input else {
            panic!("a chat: {g:?}")
        };
        let said: Vec<(ChatRole, &str)> =
            messages.iter().map(|m| (m.role, m.text.as_str())).collect();
        assert_eq!(
            said,
            [
                (ChatRole::System, "Be brief."),
                (ChatRole::User, "Hi\nthere"),
                (ChatRole::Assistant, ""),
                (ChatRole::User, "Bye"),
            ]
        );
        assert_eq!(g.sampling.temperature, 0.0);
        assert_eq!(g.sampling.top_p, 0.5);
        assert_eq!(g.sampling.max_tokens, 12, "max_completion_tokens wins");
        assert_eq!(g.sampling.stop, ["\nUser:"]);
        assert_eq!(g.sampling.seed, u32::MAX, "-1 modulo 2^32");
        assert!(g.stream && g.include_usage);
    }

    #[test]
    fn what_the_request_leaves_out_comes_from_mates_settings() {
        let defaults = Sampling {
            temperature: 0.3,
            stop: vec!["\nMate:".into()],
            ..Sampling::default()
        };
        let g = ChatRequest::parse(br#"{"messages": [{"role": "user", "content": "Hi"}]}"#)
            .and_then(|r| r.generation(&defaults))
            .expect("accepted");
        assert_eq!(g.sampling, defaults);
        assert!(!g.stream && !g.include_usage);
        let g = chat(
            r#"{"messages": [{"role": "user", "content": "Hi"}],
                "stream_options": {"include_usage": true}}"#,
        )
        .expect("accepted");
        assert!(!g.include_usage, "usage chunks only when streaming");
    }

    #[test]
    fn what_mate_cannot_do_is_refused_with_the_field_and_the_reason() {
        let cases = [
            (
                r#"{"messages": [{"role": "user", "content": "Hi"}], "n": 2}"#,
                "n",
                "n must be 1",
            ),
            (r#"{"messages": []}"#, "messages", "at least one"),
            (r#"{}"#, "messages", "at least one"),
            (
                r#"{"messages": [{"role": "user", "content": [{"type": "image_url",
                    "image_url": {"url": "data:"}}]}]}"#,
                "messages[0].content",
                "image_url part",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "a"}, {"role": "tool",
                    "content": "42", "tool_call_id": "1"}]}"#,
                "messages[1].role",
                "without tools",
            ),
            (
                r#"{"messages": [{"role": "robot", "content": "a"}]}"#,
                "messages[0].role",
                "robot",
            ),
            (
                r#"{"messages": [{"content": "a"}]}"#,
                "messages[0].role",
                "no role",
            ),
            (
                r#"{"messages": [{"role": "user", "content": 5}]}"#,
                "messages[0].content",
                "string",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "a"}], "temperature": 3}"#,
                "temperature",
                "between 0 and 2",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "a"}], "top_p": 1.5}"#,
                "top_p",
                "between 0 and 1",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "a"}], "max_tokens": 0}"#,
                "max_tokens",
                "at least 1",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "a"}], "stop": [1]}"#,
                "stop",
                "array of strings",
            ),
        ];
        for (body, param, why) in cases {
            let (status, got, message) = param_of(chat(body));
            assert_eq!(status, 400, "{body}");
            assert_eq!(got.as_deref(), Some(param), "{body}: {message}");
            assert!(message.contains(why), "{body}: {message}");
        }
    }

    #[test]
    fn malformed_json_and_wrong_types_are_told_apart() {
        let (status, param, message) = param_of(chat(r#"{"messages": [}"#));
        assert_eq!((status, param), (400, None));
        assert!(message.contains("not valid JSON"), "{message}");
        let (status, _, message) = param_of(chat(r#"{"messages": "hi"}"#));
        assert_eq!(status, 400);
        assert!(message.contains("wrong type"), "{message}");
        let (_, _, message) = param_of(chat(
            r#"{"messages": [{"role": "user", "content": "a"}], "max_tokens": -5}"#,
        ));
        assert!(message.contains("wrong type"), "{message}");
    }

    #[test]
    fn a_plain_prompt_is_one_string() {
        let complete = |body: &str| {
            CompletionRequest::parse(body.as_bytes())?.generation(&Sampling::default())
        };
        let g = complete(r#"{"model": "m", "prompt": ["Once upon"], "max_tokens": 5}"#)
            .expect("accepted");
        assert_eq!(g.input, Input::Prompt("Once upon".into()));
        assert_eq!(g.sampling.max_tokens, 5);
        for (body, why) in [
            (r#"{"prompt": ["a", "b"]}"#, "one prompt per request"),
            (r#"{"prompt": [[1, 2, 3]]}"#, "token arrays"),
            (r#"{"prompt": 7}"#, "must be a string"),
            (r#"{"max_tokens": 5}"#, "missing"),
        ] {
            let e = complete(body).expect_err("refused");
            assert_eq!(e.param.as_deref(), Some("prompt"), "{body}");
            assert!(e.message.contains(why), "{body}: {}", e.message);
        }
    }
}
