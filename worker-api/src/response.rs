//! What goes back: OpenAI's response objects for whole replies, the chunks of a streamed one
//! as server-sent events (`data: {…}` lines, then `data: [DONE]`), and the model list.

use mate_protocol::{GenerationStats, StopReason};
use serde_json::{json, Value};

/// The last event of every stream.
pub const SSE_DONE: &str = "data: [DONE]\n\n";

/// One server-sent event carrying `value`.
pub fn sse(value: &Value) -> String {
    format!("data: {value}\n\n")
}

/// What every object of one reply repeats: its id, when it was created (Unix seconds) and
/// the model that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub id: String,
    pub created: u64,
    pub model: String,
}

/// OpenAI's `finish_reason`: `length` when a token limit (the request's or the context's)
/// cut the reply, `stop` otherwise.
pub fn finish_reason(stop: &StopReason) -> &'static str {
    match stop {
        StopReason::MaxTokens | StopReason::ContextFull => "length",
        StopReason::EndOfText | StopReason::StopString(_) | StopReason::Cancelled => "stop",
    }
}

/// Token counts as OpenAI reports them; `cached_tokens` are prompt tokens found in the KV
/// cache and not decoded again.
pub fn usage(stats: &GenerationStats) -> Value {
    json!({
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.generated_tokens,
        "total_tokens": stats.prompt_tokens + stats.generated_tokens,
        "prompt_tokens_details": { "cached_tokens": stats.cached_tokens },
    })
}

/// A whole chat reply (`stream` false).
pub fn chat_completion(meta: &Meta, text: &str, stats: &GenerationStats) -> Value {
    json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": text },
            "logprobs": null,
            "finish_reason": finish_reason(&stats.stop),
        }],
        "usage": usage(stats),
    })
}

/// One chunk of a streamed chat reply. The first carries the role, the last (with a
/// `finish`) an empty delta.
pub fn chat_chunk(meta: &Meta, delta: Delta<'_>) -> Value {
    let (delta, finish) = match delta {
        Delta::Role => (json!({ "role": "assistant", "content": "" }), None),
        Delta::Text(text) => (json!({ "content": text }), None),
        Delta::Finish(stop) => (json!({}), Some(finish_reason(stop))),
    };
    json!({
        "id": meta.id,
        "object": "chat.completion.chunk",
        "created": meta.created,
        "model": meta.model,
        "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
    })
}

/// What a chat chunk carries.
#[derive(Debug, Clone, Copy)]
pub enum Delta<'a> {
    Role,
    Text(&'a str),
    Finish(&'a StopReason),
}

/// The chunk after the last one when `stream_options.include_usage` asked for it: no
/// choices, the usage (`object` as the stream's other chunks).
pub fn usage_chunk(meta: &Meta, object: &str, stats: &GenerationStats) -> Value {
    json!({
        "id": meta.id,
        "object": object,
        "created": meta.created,
        "model": meta.model,
        "choices": [],
        "usage": usage(stats),
    })
}

/// A whole text completion (`/v1/completions`), or with `stats` absent one streamed chunk
/// of it; `finish` ends the stream.
pub fn text_completion(
    meta: &Meta,
    text: &str,
    finish: Option<&StopReason>,
    stats: Option<&GenerationStats>,
) -> Value {
    let mut value = json!({
        "id": meta.id,
        "object": "text_completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [{
            "index": 0,
            "text": text,
            "logprobs": null,
            "finish_reason": finish.map(finish_reason),
        }],
    });
    if let Some(stats) = stats {
        value["usage"] = usage(stats);
    }
    value
}

/// `GET /v1/models`: the one model mate serves.
pub fn models(model: &str, created: u64) -> Value {
    json!({
        "object": "list",
        "data": [{ "id": model, "object": "model", "created": created, "owned_by": "mate" }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            id: "chatcmpl-7".into(),
            created: 1_764_806_400,
            model: "gemma-3-270m-q4_k_m".into(),
        }
    }

    fn stats(stop: StopReason) -> GenerationStats {
        GenerationStats {
            prompt_tokens: 30,
            generated_tokens: 12,
            ttft_ms: 80.0,
            prompt_tokens_per_s: 300.0,
            gen_tokens_per_s: 40.0,
            stop,
            cached_tokens: 24,
        }
    }

    #[test]
    fn a_whole_reply_has_one_choice_its_finish_reason_and_the_usage() {
        let v = chat_completion(&meta(), "Hello!", &stats(StopReason::MaxTokens));
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert_eq!(v["choices"][0]["message"]["content"], "Hello!");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["total_tokens"], 42);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 24);
        let reasons: Vec<&str> = [
            StopReason::EndOfText,
            StopReason::StopString("\n".into()),
            StopReason::Cancelled,
            StopReason::ContextFull,
        ]
        .iter()
        .map(finish_reason)
        .collect();
        assert_eq!(reasons, ["stop", "stop", "stop", "length"]);
    }

    #[test]
    fn a_stream_is_role_text_finish_usage_then_done_as_server_sent_events() {
        let m = meta();
        let done = StopReason::EndOfText;
        let s = stats(done.clone());
        let events = [
            chat_chunk(&m, Delta::Role),
            chat_chunk(&m, Delta::Text("Hel")),
            chat_chunk(&m, Delta::Text("lo")),
            chat_chunk(&m, Delta::Finish(&done)),
            usage_chunk(&m, "chat.completion.chunk", &s),
        ];
        let wire: String = events.iter().map(sse).collect::<String>() + SSE_DONE;
        let mut text = String::new();
        let mut finishes = Vec::new();
        let mut usage = None;
        let mut ended = false;
        for event in wire.split("\n\n").filter(|e| !e.is_empty()) {
            let data = event.strip_prefix("data: ").expect("a data line");
            assert!(!ended, "nothing after [DONE]");
            if data == "[DONE]" {
                ended = true;
                continue;
            }
            let v: Value = serde_json::from_str(data).expect("each event is JSON");
            assert_eq!(v["id"], "chatcmpl-7");
            assert_eq!(v["object"], "chat.completion.chunk");
            if let Some(choice) = v["choices"].get(0) {
                text.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
                if let Some(f) = choice["finish_reason"].as_str() {
                    finishes.push(f.to_string());
                }
            } else {
                usage = Some(v["usage"].clone());
            }
        }
        assert!(ended);
        assert_eq!(text, "Hello");
        assert_eq!(finishes, ["stop"]);
        assert_eq!(usage.expect("a usage chunk")["completion_tokens"], 12);
    }

    #[test]
    fn text_completions_and_the_model_list() {
        let whole = text_completion(
            &meta(),
            " there was a cat",
            Some(&StopReason::EndOfText),
            Some(&stats(StopReason::EndOfText)),
        );
        assert_eq!(whole["object"], "text_completion");
        assert_eq!(whole["choices"][0]["text"], " there was a cat");
        assert_eq!(whole["choices"][0]["finish_reason"], "stop");
        assert_eq!(whole["usage"]["prompt_tokens"], 30);
        let chunk = text_completion(&meta(), " there", None, None);
        assert!(chunk["choices"][0]["finish_reason"].is_null());
        assert!(chunk.get("usage").is_none());
        let list = models("gemma-3-270m-q4_k_m", 1);
        assert_eq!(list["object"], "list");
        assert_eq!(list["data"][0]["id"], "gemma-3-270m-q4_k_m");
        assert_eq!(list["data"][0]["object"], "model");
    }
}
