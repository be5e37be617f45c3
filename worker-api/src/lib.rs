//! The OpenAI-compatible front door (issue 19), first part: the wire. What chat front ends
//! (SillyTavern, Open WebUI, bots written with the `openai` package) send to
//! `/v1/chat/completions` and `/v1/completions` is parsed and checked here and turned into
//! mate's own [`mate_protocol::ChatMessage`]s and [`mate_protocol::Sampling`]; replies go back
//! as OpenAI's response objects, streamed as server-sent events, and failures in OpenAI's
//! error shape with the HTTP status clients act on.
//!
//! Nothing here does I/O: the HTTP server of the `api` worker (next) calls it, and its tests
//! pin the shapes real clients rely on.

pub mod error;
pub mod request;
pub mod response;

pub use error::ApiError;
pub use request::{ChatRequest, CompletionRequest, Generation};
