//! One LLM worker process driven straight from the bench, without a supervisor: spawned as
//! the supervisor spawns one (through [`crate::direct`]), loaded, and asked for greedy replies
//! timed on arrival. `mate bench llm` and the criterion benches measure the worker this way.

use std::{path::Path, time::Instant};

use anyhow::Context as _;
use mate_protocol::{FromWorker, LlmOptions, LoadReport, Profile, Sampling, ToWorker, WorkerKind};
use serde::Serialize;

use super::{ms, user, LIMIT, PROMPT};
use crate::direct::DirectWorker;

/// A worker in its own short-pathed temp dir.
#[derive(Debug)]
pub struct Spawned {
    pub worker: DirectWorker,
    _dir: tempfile::TempDir,
}

/// An LLM worker process of `exe`, as the supervisor starts one, driven from this process.
pub fn spawn(exe: &Path) -> anyhow::Result<Spawned> {
    let dir = tempfile::Builder::new().prefix("mate-b").tempdir()?;
    let worker = DirectWorker::spawn(exe, WorkerKind::Llm, dir.path(), &dir.path().join("w.log"))?;
    Ok(Spawned { worker, _dir: dir })
}

/// Waits for the worker's hello, then loads `model` and waits for `Loaded`.
pub fn load(
    w: &mut DirectWorker,
    model: &Path,
    profile: Profile,
    options: LlmOptions,
) -> anyhow::Result<LoadReport> {
    w.recv_until(LIMIT, |m| matches!(m, FromWorker::Ready).then_some(()))?;
    w.send(&ToWorker::Load {
        model_path: model.to_string_lossy().into_owned(),
        profile,
        options,
    })?;
    let loaded = w.recv_until(LIMIT, |m| match m {
        FromWorker::Loaded(r) => Some(Ok(r)),
        FromWorker::Fatal { reason } => Some(Err(reason)),
        _ => None,
    })?;
    loaded.map_err(|reason| anyhow::anyhow!("the worker could not load the model: {reason}"))
}

/// One generation seen from the supervisor's side of the socket.
#[derive(Debug, Clone, Serialize)]
pub struct Observed {
    pub ttft_ms: f64,
    pub gen_tokens_per_s: f64,
    pub generated_tokens: u32,
    pub worker_reported_gen_tokens_per_s: f32,
    /// Milliseconds between one chunk's arrival and the next (one token each, coalescing off).
    /// Left out of the JSON of a run: reports carry the distribution.
    #[serde(skip)]
    pub token_gaps_ms: Vec<f64>,
}

/// A greedy reply of at most `max_tokens` to the bench's prompt, timed on arrival.
pub fn generate(w: &mut DirectWorker, max_tokens: u32) -> anyhow::Result<Observed> {
    let sent = Instant::now();
    w.send(&ToWorker::Generate {
        request_id: 1,
        messages: vec![user(PROMPT)],
        sampling: Sampling::greedy(max_tokens),
        snapshot: true,
    })?;
    let mut first = None;
    let mut last: Option<Instant> = None;
    let mut token_gaps_ms = Vec::new();
    let stats = w.recv_until(LIMIT, |m| match m {
        FromWorker::Chunk { .. } => {
            let now = Instant::now();
            first.get_or_insert(now);
            if let Some(last) = last.replace(now) {
                token_gaps_ms.push(ms(now - last));
            }
            None
        }
        FromWorker::Done { stats, .. } => Some(Ok(stats)),
        FromWorker::Failed { reason, .. } => Some(Err(reason)),
        _ => None,
    })?;
    let stats = stats.map_err(|r| anyhow::anyhow!("generation failed: {r}"))?;
    let done = Instant::now();
    let first = first.context("the reply had no text")?;
    Ok(Observed {
        ttft_ms: (first - sent).as_secs_f64() * 1e3,
        gen_tokens_per_s: f64::from(stats.generated_tokens.saturating_sub(1))
            / (done - first).as_secs_f64().max(1e-9),
        generated_tokens: stats.generated_tokens,
        worker_reported_gen_tokens_per_s: stats.gen_tokens_per_s,
        token_gaps_ms,
    })
}
