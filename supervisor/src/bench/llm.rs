//! `mate bench llm`: the LLM worker measured through its process and the protocol, side by
//! side in the same run with the same work done directly with `llama-cpp-2` in this process
//! (`mate_worker_llm::baseline`). Machines are noisy, so every figure is a median of several
//! runs and comparisons are ratios. Also restart-to-ready with a KV snapshot against decoding
//! the whole conversation again.
//!
//! Both arms do the same work: the same prompt, greedy, up to `max_tokens` or the end of
//! text. The worker's stop strings are off here, since the in-process loop has none: with
//! them, a base model's reply ends at its first "\nUser:" and the two rates would come from
//! replies of different lengths. The report says how many tokens each arm generated.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::bail;
use mate_protocol::{
    ChatMessage, ChatRole, ChatTemplate, Coalesce, FromWorker, LlmOptions, ToWorker,
};
use mate_worker_llm::{
    baseline::{self, BaselineRun},
    cpu::CpuFacts,
    prompt::render_fallback,
};
use serde::Serialize;

use super::{
    generate, load, profile, spawn,
    stats::{median, quantiles},
    user, Observed, LIMIT, PROMPT,
};
use crate::direct::DirectWorker;

/// Settings of `mate bench llm`.
#[derive(Debug, Clone)]
pub struct LlmBench {
    pub exe: PathBuf,
    pub model: PathBuf,
    pub runs: usize,
    pub max_tokens: u32,
    /// 0: by the CPU rule.
    pub threads: u32,
    /// Minimum tokens of the conversation for the restart benchmark.
    pub conversation_tokens: usize,
}

/// What `mate bench llm` prints: medians of every run, ratios, and each run's figures.
#[derive(Debug, Serialize)]
pub struct LlmReport {
    model: PathBuf,
    model_template: bool,
    threads: u32,
    runs: usize,
    max_tokens: u32,
    machine: CpuFacts,
    in_process: InProcess,
    worker: ThroughWorker,
    ratios: Ratios,
    restart: SnapshotRestart,
    /// (ms, percent) points of the gaps between tokens, all runs pooled.
    token_gap_distribution_ms: TokenGaps,
    runs_detail: RunsDetail,
}

/// llama.cpp in this process, nothing of mate in between.
#[derive(Debug, Serialize)]
struct InProcess {
    load_ms: f64,
    ttft_ms: f64,
    prompt_tokens: Option<usize>,
    prompt_tokens_per_s: f64,
    gen_tokens_per_s: f64,
    /// Median over the runs; the worker's must match it for the rates to compare.
    generated_tokens: f64,
}

/// A `mate worker llm` process, timed on this side of its socket.
#[derive(Debug, Serialize)]
struct ThroughWorker {
    spawn_to_loaded_ms: f64,
    load_ms: f64,
    ttft_cold_ms: f64,
    ttft_warm_ms: f64,
    gen_tokens_per_s: f64,
    gen_tokens_per_s_cold_worker: f64,
    gen_tokens_per_s_warm_worker: f64,
    worker_reported_gen_tokens_per_s: f64,
    /// Median over the cold and warm runs.
    generated_tokens: f64,
}

#[derive(Debug, Serialize)]
struct Ratios {
    /// The default configuration (warm-up on) against the same work in-process.
    worker_over_in_process_gen_tokens_per_s: f64,
    cold_worker_over_in_process_gen_tokens_per_s: f64,
    warm_over_cold_ttft: f64,
}

#[derive(Debug, Serialize)]
struct TokenGaps {
    in_process: Vec<(f64, f64)>,
    worker: Vec<(f64, f64)>,
}

#[derive(Debug, Serialize)]
struct RunsDetail {
    in_process: Vec<BaselineRun>,
    worker_cold: Vec<Observed>,
    worker_warm: Vec<Observed>,
}

/// A new worker until the conversation is in its cache, with the snapshot and without.
#[derive(Debug, Serialize)]
struct SnapshotRestart {
    conversation_tokens: u32,
    with_snapshot_ms: f64,
    with_snapshot_cached_tokens: Option<u32>,
    reingest_ms: f64,
    reingest_cached_tokens: Option<u32>,
    reingest_over_snapshot: f64,
}

/// `mate bench llm`: returns the report.
pub fn llm(b: &LlmBench) -> anyhow::Result<LlmReport> {
    let facts = CpuFacts::sample(Duration::from_millis(300));
    let threads = if b.threads > 0 {
        b.threads
    } else {
        facts.generation_threads()
    };
    let n_ctx = 2048;
    let no_coalescing = LlmOptions {
        fallback_template: ChatTemplate {
            stop: Vec::new(),
            ..ChatTemplate::default()
        },
        coalesce: Coalesce::OFF,
        warmup: false,
        ..LlmOptions::default()
    };
    let rendered = render_fallback(&ChatTemplate::default(), &[user(PROMPT)]);

    let (mut base, mut cold, mut warm, mut loads) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut model_template = false;
    for run in 0..b.runs {
        eprintln!("mate bench llm: run {}/{}", run + 1, b.runs);
        base.push(baseline::generate_greedy(
            &b.model,
            &rendered,
            n_ctx,
            512,
            threads,
            b.max_tokens as usize,
        )?);
        let mut w = spawn(&b.exe)?;
        let spawned = Instant::now();
        let report = load(
            &mut w.worker,
            &b.model,
            profile(n_ctx, threads),
            no_coalescing.clone(),
        )?;
        loads.push((
            spawned.elapsed().as_secs_f64() * 1e3,
            f64::from(report.load_ms),
        ));
        model_template = report.model_template;
        cold.push(generate(&mut w.worker, b.max_tokens)?);
        drop(w);
        let mut w = spawn(&b.exe)?;
        let warm_options = LlmOptions {
            warmup: true,
            ..no_coalescing.clone()
        };
        load(
            &mut w.worker,
            &b.model,
            profile(n_ctx, threads),
            warm_options,
        )?;
        warm.push(generate(&mut w.worker, b.max_tokens)?);
    }
    let base_tokens: Vec<f64> = base.iter().map(|r| r.generated_tokens as f64).collect();
    let worker_tokens: Vec<f64> = cold
        .iter()
        .chain(&warm)
        .map(|o| f64::from(o.generated_tokens))
        .collect();
    let first = base_tokens.first().copied();
    if base_tokens
        .iter()
        .chain(&worker_tokens)
        .any(|&n| Some(n) != first)
    {
        eprintln!(
            "mate bench llm: the arms generated different numbers of tokens (in-process \
             {base_tokens:?}, worker {worker_tokens:?}), so their rates are not of the same work"
        );
    }
    let base_gen = median(base.iter().map(|r| r.gen_tokens_per_s).collect());
    let cold_gen = median(cold.iter().map(|o| o.gen_tokens_per_s).collect());
    let warm_gen = median(warm.iter().map(|o| o.gen_tokens_per_s).collect());
    let cold_ttft = median(cold.iter().map(|o| o.ttft_ms).collect());
    let warm_ttft = median(warm.iter().map(|o| o.ttft_ms).collect());
    let restart = restart_with_snapshot(b, threads)?;
    Ok(LlmReport {
        model: b.model.clone(),
        model_template,
        threads,
        runs: b.runs,
        max_tokens: b.max_tokens,
        machine: facts,
        in_process: InProcess {
            load_ms: median(base.iter().map(|r| r.load_ms).collect()),
            ttft_ms: median(base.iter().map(|r| r.ttft_ms).collect()),
            prompt_tokens: base.first().map(|r| r.prompt_tokens),
            prompt_tokens_per_s: median(base.iter().map(|r| r.prompt_tokens_per_s).collect()),
            gen_tokens_per_s: base_gen,
            generated_tokens: median(base_tokens),
        },
        worker: ThroughWorker {
            spawn_to_loaded_ms: median(loads.iter().map(|l| l.0).collect()),
            load_ms: median(loads.iter().map(|l| l.1).collect()),
            ttft_cold_ms: cold_ttft,
            ttft_warm_ms: warm_ttft,
            gen_tokens_per_s: median(
                cold.iter()
                    .chain(&warm)
                    .map(|o| o.gen_tokens_per_s)
                    .collect(),
            ),
            gen_tokens_per_s_cold_worker: cold_gen,
            gen_tokens_per_s_warm_worker: warm_gen,
            worker_reported_gen_tokens_per_s: median(
                cold.iter()
                    .map(|o| f64::from(o.worker_reported_gen_tokens_per_s))
                    .collect(),
            ),
            generated_tokens: median(worker_tokens),
        },
        ratios: Ratios {
            worker_over_in_process_gen_tokens_per_s: warm_gen / base_gen,
            cold_worker_over_in_process_gen_tokens_per_s: cold_gen / base_gen,
            warm_over_cold_ttft: warm_ttft / cold_ttft,
        },
        restart,
        token_gap_distribution_ms: TokenGaps {
            in_process: quantiles(
                &base
                    .iter()
                    .flat_map(|r| r.token_gaps_ms.clone())
                    .collect::<Vec<_>>(),
            ),
            worker: quantiles(
                &warm
                    .iter()
                    .flat_map(|o| o.token_gaps_ms.clone())
                    .collect::<Vec<_>>(),
            ),
        },
        runs_detail: RunsDetail {
            in_process: base,
            worker_cold: cold,
            worker_warm: warm,
        },
    })
}

/// Restart-to-ready: spawn → loaded → conversation in the cache, with the snapshot and
/// without (re-ingesting the whole conversation).
fn restart_with_snapshot(b: &LlmBench, threads: u32) -> anyhow::Result<SnapshotRestart> {
    let n_ctx = 4096;
    let snapshots = tempfile::tempdir()?;
    let empty = tempfile::tempdir()?;
    let options = |dir: &Path| LlmOptions {
        snapshot_dir: Some(dir.to_string_lossy().into_owned()),
        warmup: false,
        ..LlmOptions::default()
    };
    let conversation = long_conversation(b.conversation_tokens);
    let ingest = |w: &mut DirectWorker| -> anyhow::Result<(u32, u32)> {
        w.send(&ToWorker::Ingest {
            request_id: 1,
            messages: conversation.clone(),
        })?;
        let r = w.recv_until(LIMIT, |m| match m {
            FromWorker::Ingested {
                prompt_tokens,
                cached_tokens,
                ..
            } => Some(Ok((prompt_tokens, cached_tokens))),
            FromWorker::Failed { reason, .. } => Some(Err(reason)),
            _ => None,
        })?;
        r.map_err(|reason| anyhow::anyhow!("ingest failed: {reason}"))
    };
    // Prepare the snapshot once.
    let mut w = spawn(&b.exe)?;
    load(
        &mut w.worker,
        &b.model,
        profile(n_ctx, threads),
        options(snapshots.path()),
    )?;
    let (prompt_tokens, _) = ingest(&mut w.worker)?;
    let meta = snapshots.path().join("conversation.json");
    let deadline = Instant::now() + LIMIT;
    while !meta.is_file() {
        if Instant::now() > deadline {
            bail!("the worker wrote no snapshot");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(w);
    if (prompt_tokens as usize) < b.conversation_tokens {
        bail!("the conversation has only {prompt_tokens} tokens");
    }
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..b.runs {
        for (dir, out) in [(snapshots.path(), &mut with), (empty.path(), &mut without)] {
            let start = Instant::now();
            let mut w = spawn(&b.exe)?;
            load(
                &mut w.worker,
                &b.model,
                profile(n_ctx, threads),
                options(dir),
            )?;
            let (_, cached) = ingest(&mut w.worker)?;
            out.push((start.elapsed().as_secs_f64() * 1e3, cached));
            if dir == empty.path() {
                // Start each re-ingest run from nothing again.
                let _ = std::fs::remove_file(dir.join("conversation.json"));
            }
        }
    }
    let with_ms = median(with.iter().map(|r| r.0).collect());
    let without_ms = median(without.iter().map(|r| r.0).collect());
    Ok(SnapshotRestart {
        conversation_tokens: prompt_tokens,
        with_snapshot_ms: with_ms,
        with_snapshot_cached_tokens: with.first().map(|r| r.1),
        reingest_ms: without_ms,
        reingest_cached_tokens: without.first().map(|r| r.1),
        reingest_over_snapshot: without_ms / with_ms,
    })
}

/// A made-up chat of at least `tokens` tokens (about four characters a token).
fn long_conversation(tokens: usize) -> Vec<ChatMessage> {
    let mut messages = vec![ChatMessage {
        role: ChatRole::System,
        text: "You are mate, a cheerful desktop companion.".into(),
    }];
    let mut chars = 0;
    let mut i = 0;
    while chars < tokens * 5 {
        let q = format!("Tell me fact number {i} about lighthouses, and keep it short please.");
        let a = format!(
            "Fact {i}: lighthouse keepers once trimmed the wicks of the lamps every few hours \
             through the night, so that the light stayed bright and ships could find the harbour."
        );
        chars += q.len() + a.len();
        messages.push(user(&q));
        messages.push(ChatMessage {
            role: ChatRole::Assistant,
            text: a,
        });
        i += 1;
    }
    messages.push(user("And what do you think of that?"));
    messages
}
