//! `mate bench …`: each bench measures one thing beside its baseline from the same run, and
//! reports medians and ratios as JSON (machines are noisy, so no figure rests on one sample).
//!
//! - `llm`: the LLM worker through its process and the protocol against the same work with
//!   `llama-cpp-2` in this process; `threads`: llama.cpp's speed by thread count.
//! - `restart`: kill -9 of a real `mate up`'s LLM worker until it serves again.
//! - `profiles`: each rung of the profile ladder, and the downgrade reaction on a simulated card.
//! - `bridge`: single, pipelined and batched senders on the Unity wire.
//! - `memory`: RSS of every process over a long session and a clear.
//! - `all`: everything, as JSON, SVG plots (`plot`) and a Markdown summary.
//!
//! Shared: `worker` drives one LLM worker without a supervisor, `up` a whole `mate up` from
//! the outside, `procfs` reads other processes' memory and CPU, `stats` holds the statistics.

mod all;
mod api;
pub mod bridge;
mod http;
mod llm;
mod memory;
mod plot;
mod procfs;
mod profiles;
mod restart;
mod stats;
mod threads;
mod up;
mod worker;

pub use all::{all, AllBench, AllReport};
pub use api::{api, ApiBench, ApiReport};
pub use bridge::{bridge, BridgeBench, BridgeReport};
pub use llm::{llm, LlmBench, LlmReport};
pub use memory::{memory, MemoryBench, MemoryReport};
pub use profiles::{profiles, ProfilesBench, ProfilesReport};
pub use restart::{restart, RestartBench, RestartReport, RestartRun};
pub use stats::quantiles;
pub use threads::{threads, write_threads, ThreadPoint};
pub use worker::{generate, load, spawn, Observed, Spawned};

use std::time::Duration;

use mate_protocol::{ChatMessage, ChatRole, Profile};

pub const PROMPT: &str =
    "Write a short story about a lighthouse keeper who finds a message in a bottle.";
/// The longest the bench waits for a worker's answer (a load, a reply, an ingest).
const LIMIT: Duration = Duration::from_secs(300);

/// The `cpu` rung with `n_ctx` and `threads` (0: the worker's CPU rule).
pub fn profile(n_ctx: u32, threads: u32) -> Profile {
    Profile {
        n_threads: threads,
        ..Profile::cpu(n_ctx)
    }
}

/// A user message.
pub fn user(text: &str) -> ChatMessage {
    ChatMessage {
        role: ChatRole::User,
        text: text.into(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
