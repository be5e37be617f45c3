//! The LLM worker: llama.cpp in a process of its own, because it is the part that may crash or
//! run out of memory. It holds nothing the supervisor cannot rebuild: the supervisor keeps the
//! transcript and sends the whole conversation with every request; the worker keeps only the
//! KV cache for it, and a snapshot of that cache on disk so a restart does not have to decode
//! the conversation again.
//!
//! - [`engine`]: [`engine::Model`] and [`engine::Session`] over `llama-cpp-2` (load, prefix
//!   reuse, chunked decoding, sampling, snapshots).
//! - [`prompt`]: chat rendering with the fallback template, fitting long conversations.
//! - [`stream`]: UTF-8 across tokens, stop strings, chunk coalescing.
//! - [`cpu`]: machine facts and the thread rule.
//! - [`worker`]: the process: a reader thread that answers heartbeats and cancels at once, and
//!   the engine loop that runs requests.
//! - [`baseline`]: the same generation done directly with `llama-cpp-2`, for benchmarks.

pub mod baseline;
pub mod cpu;
pub mod engine;
pub mod prompt;
pub mod stash;
pub mod stream;
pub mod worker;

use std::path::PathBuf;

pub use worker::{run, Args};

/// Everything that can go wrong in the LLM worker. Each message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    #[error("model file {path} does not exist: run `mate model fetch`, or pass --model PATH")]
    ModelMissing { path: PathBuf },
    #[error(
        "model file {path} cannot be read ({reason}): check its permissions, or pass --model PATH"
    )]
    ModelUnreadable { path: PathBuf, reason: String },
    #[error("{path} is not a GGUF model (it does not start with \"GGUF\"): pass a .gguf file with --model")]
    NotGguf { path: PathBuf },
    #[error(
        "llama.cpp could not load {path}: the file is truncated, damaged, or of an architecture \
         this build does not know; fetch it again (`mate model fetch`) or pass another --model"
    )]
    LoadFailed { path: PathBuf },
    #[error("cannot create a context of {n_ctx} tokens: {reason}")]
    Context { n_ctx: u32, reason: String },
    #[error("{0}")]
    Profile(String),
    #[error(
        "the prompt needs {tokens} tokens but only {budget} of the {n_ctx}-token context are \
         left for it, even with all earlier turns left out: shorten the system prompt or the \
         message, or use a profile with a larger n_ctx"
    )]
    PromptTooLong {
        tokens: usize,
        budget: usize,
        n_ctx: usize,
    },
    #[error("chat template: {0}")]
    Template(String),
    #[error("llama.cpp decode failed: {0}")]
    Decode(String),
    #[error("session snapshot: {0}")]
    Snapshot(String),
    #[error("llama.cpp backend: {0}")]
    Backend(String),
}

/// Counts and durations on the wire are `u32`; anything larger says "at least this much".
pub(crate) fn to_u32<T: TryInto<u32>>(n: T) -> u32 {
    n.try_into().unwrap_or(u32::MAX)
}

impl LlmError {
    /// Whether restarting the worker cannot help (the supervisor should not retry).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            LlmError::ModelMissing { .. }
                | LlmError::ModelUnreadable { .. }
                | LlmError::NotGguf { .. }
                | LlmError::LoadFailed { .. }
                | LlmError::Profile(_)
        )
    }
}
