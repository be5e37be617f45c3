//! What the API worker (the OpenAI-compatible HTTP front door) and the supervisor say to each
//! other. The API worker holds no conversation and no model: each HTTP request becomes an
//! [`ApiCall`] to the supervisor, which queues a generation with every other client's chats
//! (one FIFO), sends it to the LLM worker, resumes it after a crash, and streams it back as
//! [`ApiEvent`]s under the call's id.

use serde::{Deserialize, Serialize};

use crate::{ChatMessage, GenerationStats, Sampling};

/// Where and how the API worker serves; sent by the supervisor when the worker is ready.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiOptions {
    /// `host:port` to listen on (port 0: any free port, reported in [`ApiVitals::address`]).
    pub address: String,
    /// Bearer token every request must carry; `None` lets any local client in.
    pub api_key: Option<String>,
    /// Largest request body accepted (413 beyond it).
    pub max_body_bytes: u32,
    /// Origins browser front ends may call from (`*` for any); empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// The model's name, as `/v1/models` lists it and responses carry it.
    pub model: String,
    /// Most connections open at once; more wait in the kernel's accept queue.
    pub max_connections: u32,
    /// A client that takes longer than this to send its request (headers and body) is dropped.
    pub request_timeout_ms: u32,
    /// What a request leaves out is generated with (mate's `[chat]` settings).
    pub sampling: Sampling,
}

/// What a generation starts from.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ApiInput {
    /// `/v1/chat/completions`: the whole conversation, as the client sent it.
    Chat(Vec<ChatMessage>),
    /// `/v1/completions`: plain text the model continues.
    Prompt(String),
}

/// API worker → supervisor, each with an id the worker chose; the answers carry it back.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ApiCall {
    /// Generate (queued behind the reply in progress): answered by [`ApiEvent::Queued`],
    /// [`ApiEvent::Chunk`]s and one [`ApiEvent::Done`], or an [`ApiEvent::Failed`].
    Generate {
        id: u64,
        input: ApiInput,
        sampling: Sampling,
    },
    /// The client went away: stop generating (or leave the queue).
    Cancel { id: u64 },
    /// Whether the LLM serves: answered by [`ApiEvent::Health`].
    Health { id: u64 },
    /// The Prometheus text: answered by [`ApiEvent::Metrics`].
    Metrics { id: u64 },
}

/// Supervisor → API worker, about the call with the same id.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ApiEvent {
    /// The generation waits: `ahead` replies go first.
    Queued {
        ahead: u32,
    },
    /// The next piece of the reply.
    Chunk {
        text: String,
    },
    /// The LLM worker died mid-reply; a new one continues after `streamed_chars`.
    Resumed {
        streamed_chars: u32,
    },
    Done {
        stats: GenerationStats,
    },
    /// The generation cannot happen or cannot complete: `status` is the HTTP status to answer
    /// with (429 queue full, 503 no LLM, 500 the LLM failed), `retry_after_s` a hint for 429
    /// and 503.
    Failed {
        status: u16,
        message: String,
        retry_after_s: u32,
    },
    Health(Health),
    Metrics {
        text: String,
    },
}

/// The LLM's readiness, llama-server's `/health` convention: serving, or why not.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// The LLM worker has a model loaded and takes requests.
    pub ok: bool,
    /// `ok`, `loading`, `restarting`, `failed`, `stopped` or `stopping`.
    pub status: String,
    /// Why it does not serve, or the empty string.
    pub reason: String,
    /// The profile the LLM runs (or will run) on.
    pub profile: String,
    /// Chats waiting for the reply in progress.
    pub queued: u32,
}

/// The API worker's figures, sent with each heartbeat.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiVitals {
    /// The address it listens on (the real port when the config said 0); empty until bound.
    pub address: String,
    /// Connections open now.
    pub connections: u32,
    /// Requests answered since the worker started, and the errors among them (4xx and 5xx).
    pub requests: u64,
    pub errors: u64,
    /// Generations streaming or waiting now.
    pub in_flight: u32,
}
