//! `mate bench llm` and `mate bench threads`: the LLM worker measured through its process and
//! the protocol, side by side in the same run with the same work done directly with
//! `llama-cpp-2` in this process. Machines are noisy, so every figure is a median of several
//! runs and comparisons are ratios.
//!
//! `mate bench restart`: the supervisor's restart path from the outside, as a user sees it. A
//! real `mate up` runs as a child; its LLM worker is killed with SIGKILL again and again, and
//! the events it streams are timestamped here on receipt: kill → `Exited` is detection, kill →
//! `Loaded` is ready.
//!
//! `mate bench profiles`: the same greedy reply under each rung of the profile ladder, each
//! in a fresh `mate up`, then the downgrade reaction on a simulated card whose other
//! applications jump to critical: the scenario file's rename → `Downgraded` is detection,
//! → `Loaded` on the lower rung is serving again (the supervisor's event time stamps against
//! the bench's wall clock). JSON, and an SVG drawn with `plotters`.
//!
//! `mate bench bridge` (`bridge`): single, pipelined and batched senders on the Unity wire.
//! `mate bench memory` (`memory`): RSS of every process over a long session and a clear.
//! `mate bench all` (`all`): everything, as JSON, SVG plots and a Markdown summary.

mod all;
pub mod bridge;
mod memory;
mod plot;

pub use all::{all, AllBench};
pub use bridge::{bridge, BridgeBench};
pub use memory::{memory, MemoryBench};
pub use plot::quantiles;

use std::{
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use mate_protocol::{
    ChatMessage, ChatRole, ChatTemplate, Coalesce, EventKind, ExitStatus, FromWorker, LlmOptions,
    LoadReport, Profile, Reply, Request, Sampling, StatusReport, ToWorker, WorkerKind, WorkerState,
};
use mate_worker_llm::{baseline, cpu::CpuFacts, prompt::render_fallback};
use serde::Serialize;
use serde_json::json;

use crate::{ctl, direct::DirectWorker};

pub const PROMPT: &str =
    "Write a short story about a lighthouse keeper who finds a message in a bottle.";
const LIMIT: Duration = Duration::from_secs(300);

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

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

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

/// `mate bench llm`: returns the JSON report.
pub fn llm(b: &LlmBench) -> anyhow::Result<serde_json::Value> {
    let facts = CpuFacts::sample(Duration::from_millis(300));
    let threads = if b.threads > 0 {
        b.threads
    } else {
        facts.generation_threads()
    };
    let n_ctx = 2048;
    let no_coalescing = LlmOptions {
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
    let base_gen = median(base.iter().map(|r| r.gen_tokens_per_s).collect());
    let cold_gen = median(cold.iter().map(|o| o.gen_tokens_per_s).collect());
    let warm_gen = median(warm.iter().map(|o| o.gen_tokens_per_s).collect());
    let cold_ttft = median(cold.iter().map(|o| o.ttft_ms).collect());
    let warm_ttft = median(warm.iter().map(|o| o.ttft_ms).collect());
    let restart = restart_with_snapshot(b, threads)?;
    Ok(json!({
        "model": b.model,
        "model_template": model_template,
        "threads": threads,
        "runs": b.runs,
        "max_tokens": b.max_tokens,
        "machine": facts,
        "in_process": {
            "load_ms": median(base.iter().map(|r| r.load_ms).collect()),
            "ttft_ms": median(base.iter().map(|r| r.ttft_ms).collect()),
            "prompt_tokens": base.first().map(|r| r.prompt_tokens),
            "prompt_tokens_per_s": median(base.iter().map(|r| r.prompt_tokens_per_s).collect()),
            "gen_tokens_per_s": base_gen,
        },
        "worker": {
            "spawn_to_loaded_ms": median(loads.iter().map(|l| l.0).collect()),
            "load_ms": median(loads.iter().map(|l| l.1).collect()),
            "ttft_cold_ms": cold_ttft,
            "ttft_warm_ms": warm_ttft,
            "gen_tokens_per_s": median(cold.iter().chain(&warm).map(|o| o.gen_tokens_per_s).collect()),
            "gen_tokens_per_s_cold_worker": cold_gen,
            "gen_tokens_per_s_warm_worker": warm_gen,
            "worker_reported_gen_tokens_per_s": median(cold.iter().map(|o| f64::from(o.worker_reported_gen_tokens_per_s)).collect()),
        },
        "ratios": {
            // The default configuration (warm-up on) against the same work in-process.
            "worker_over_in_process_gen_tokens_per_s": warm_gen / base_gen,
            "cold_worker_over_in_process_gen_tokens_per_s": cold_gen / base_gen,
            "warm_over_cold_ttft": warm_ttft / cold_ttft,
        },
        "restart": restart,
        // (ms, percent) points of the gaps between tokens, all runs pooled.
        "token_gap_distribution_ms": {
            "in_process": plot::quantiles(&base.iter().flat_map(|r| r.token_gaps_ms.clone()).collect::<Vec<_>>()),
            "worker": plot::quantiles(&warm.iter().flat_map(|o| o.token_gaps_ms.clone()).collect::<Vec<_>>()),
        },
        "runs_detail": {
            "in_process": base,
            "worker_cold": cold,
            "worker_warm": warm,
        },
    }))
}

/// Restart-to-ready: spawn → loaded → conversation in the cache, with the snapshot and
/// without (re-ingesting the whole conversation).
fn restart_with_snapshot(b: &LlmBench, threads: u32) -> anyhow::Result<serde_json::Value> {
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
    Ok(json!({
        "conversation_tokens": prompt_tokens,
        "with_snapshot_ms": with_ms,
        "with_snapshot_cached_tokens": with.first().map(|r| r.1),
        "reingest_ms": without_ms,
        "reingest_cached_tokens": without.first().map(|r| r.1),
        "reingest_over_snapshot": without_ms / with_ms,
    }))
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

/// Settings of `mate bench restart`.
#[derive(Debug, Clone)]
pub struct RestartBench {
    pub exe: PathBuf,
    pub model: PathBuf,
    pub runs: usize,
    /// `[llm] threads` of the supervisor under test; 0: by the CPU rule.
    pub threads: u32,
}

/// The issue's targets: a crash is noticed within 10 ms, and a restart costs at most 150 ms
/// more than loading the model.
const DETECTION_TARGET_MS: f64 = 10.0;
const OVERHEAD_TARGET_MS: f64 = 150.0;
/// From `mate up` to both workers running.
const START_LIMIT: Duration = Duration::from_secs(120);
/// From the kill to the `Exited` event, and to the `Loaded` event.
const EXIT_LIMIT: Duration = Duration::from_secs(10);
const READY_LIMIT: Duration = Duration::from_secs(60);
/// Between a loaded worker and the next kill, so each run starts from an idle machine.
const SETTLE: Duration = Duration::from_millis(250);
const IDLE_WINDOW: Duration = Duration::from_secs(5);

/// The default restart policy, except that any number of kills in a row neither escalates nor
/// grows the backoff: every kill counts as the first crash after a healthy run, which is what
/// a user sees when a worker that ran for a while dies (and restarts at once).
fn restart_config(threads: u32) -> String {
    let mut text = String::from(
        "# Written by `mate bench restart`.\n\
         [supervisor]\nrestart_intensity = 1000\nbackoff_reset_s = 0\n",
    );
    if threads > 0 {
        text.push_str(&format!("\n[llm]\nthreads = {threads}\n"));
    }
    text
}

/// The supervisor under test. Killed if still running when dropped, so no error path leaves
/// it behind; its workers die with it (parent-death signal).
struct UpProcess(std::process::Child);

impl Drop for UpProcess {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// An event as the bench received it.
#[derive(Debug)]
struct Seen {
    at: Instant,
    /// The supervisor's own time stamp, milliseconds since the Unix epoch.
    at_ms: u64,
    worker: Option<WorkerKind>,
    kind: EventKind,
}

/// One kill and what followed, in milliseconds after the kill unless named otherwise.
#[derive(Debug, Clone, Serialize)]
struct RestartRun {
    pid: u32,
    /// The killed worker's resident memory just before the kill.
    worker_rss_kib: Option<u64>,
    /// The kernel is done with the process (zombie or reaped), seen in `/proc`.
    dead_ms: Option<f64>,
    detection_ms: f64,
    spawned_ms: f64,
    /// The new worker's `Ready` (hello done, model not yet loaded).
    hello_ms: f64,
    ready_ms: f64,
    /// The new worker's own figures for loading the model file and warming it up.
    load_ms: f64,
    warmup_ms: f64,
    /// Ready minus load and warm-up: what supervision and restarting add.
    overhead_ms: f64,
    backoff_ms: u64,
    attempt: u32,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `mate bench restart`: returns the JSON report. On failure the state dir (logs, event
/// journal) is kept and named in the error.
pub fn restart(b: &RestartBench) -> anyhow::Result<serde_json::Value> {
    let facts = CpuFacts::sample(Duration::from_millis(300));
    in_state_dir("restart", |dir| measure_restarts(b, dir, facts))
}

/// Runs `f` in a fresh temp state dir; on failure the dir (logs, event journal, the
/// supervisor's stderr) is kept and named in the error.
fn in_state_dir<T>(bench: &str, f: impl FnOnce(&Path) -> anyhow::Result<T>) -> anyhow::Result<T> {
    // Unix socket paths are short (≤ 107 bytes): stay out of a long $TMPDIR.
    let builder = {
        let mut builder = tempfile::Builder::new();
        builder.prefix("mate-r");
        builder
    };
    let dir = if cfg!(unix) {
        builder.tempdir_in("/tmp")?
    } else {
        builder.tempdir()?
    };
    match f(dir.path()) {
        Ok(report) => Ok(report),
        Err(e) => {
            let kept = dir.keep();
            Err(e.context(format!(
                "mate bench {bench} failed; the supervisor's state dir is kept in {} (logs/, \
                 events.jsonl, up.stderr)",
                kept.display()
            )))
        }
    }
}

/// Starts `mate up` on state dir `dir` with `config`, `model` and `args` (global flags),
/// its stderr in `<dir>/up.stderr`. The bench's own flags and config decide everything:
/// `MATE_PROFILE` and `MATE_GPU_SCENARIO` from the caller's environment are not passed on.
fn start_up(
    exe: &Path,
    dir: &Path,
    config: &Path,
    model: &Path,
    args: &[&std::ffi::OsStr],
) -> anyhow::Result<UpProcess> {
    let stderr = std::fs::File::create(dir.join("up.stderr"))?;
    let child = std::process::Command::new(exe)
        .arg("--state-dir")
        .arg(dir)
        .arg("--config")
        .arg(config)
        .arg("--model")
        .arg(model)
        .args(args)
        .arg("up")
        .env_remove("MATE_PROFILE")
        .env_remove("MATE_GPU_SCENARIO")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("running {} up", exe.display()))?;
    Ok(UpProcess(child))
}

/// Follows the supervisor's events (the recent ones first) on a thread, each timestamped on
/// receipt. The stream ends when the supervisor closes it (it stops or is killed).
fn follow_events(dir: &Path) -> mpsc::Receiver<Seen> {
    let (tx, events) = mpsc::channel::<Seen>();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let _ = ctl::request(&dir, &Request::Events { follow: true }, |reply| {
            let at = Instant::now();
            match reply {
                Reply::Event(e) => tx
                    .send(Seen {
                        at,
                        at_ms: e.at_ms,
                        worker: e.worker,
                        kind: e.kind,
                    })
                    .is_ok(),
                _ => true,
            }
        });
    });
    events
}

fn measure_restarts(
    b: &RestartBench,
    dir: &Path,
    facts: CpuFacts,
) -> anyhow::Result<serde_json::Value> {
    let config = dir.join("config.toml");
    std::fs::write(&config, restart_config(b.threads))?;
    let mut up = start_up(&b.exe, dir, &config, &b.model, &[])?;
    let supervisor_pid = up.0.id();
    let both = [WorkerKind::Llm, WorkerKind::Bridge];
    wait_running(dir, &mut up, &both, START_LIMIT).context("starting the supervisor")?;

    let events = follow_events(dir);

    let mut runs = Vec::with_capacity(b.runs);
    for run in 1..=b.runs {
        eprintln!("mate bench restart: run {run}/{}", b.runs);
        let status = wait_running(dir, &mut up, &[WorkerKind::Llm], READY_LIMIT)
            .with_context(|| format!("run {run}: waiting for the LLM worker"))?;
        let pid = worker_pid(&status, WorkerKind::Llm)?;
        std::thread::sleep(SETTLE);
        // What the kernel must free when the worker dies.
        let worker_rss_kib = proc_status_kib(pid, &["VmRSS"])[0];
        // Whatever came before the kill is not about it.
        while events.try_recv().is_ok() {}
        let killed = Instant::now();
        kill9(pid)?;
        // The events queue up meanwhile, timestamped by the reading thread.
        let dead = died(pid, killed + EXIT_LIMIT).map(|at| ms(at - killed));
        let mut r = follow_restart(&events, pid, killed)
            .with_context(|| format!("run {run}: kill -9 of LLM worker pid {pid}"))?;
        r.dead_ms = dead;
        r.worker_rss_kib = worker_rss_kib;
        runs.push(r);
    }

    let status = wait_running(dir, &mut up, &both, READY_LIMIT)
        .context("after the runs, waiting for both workers")?;
    std::thread::sleep(Duration::from_secs(1));
    let idle = idle_cpu(supervisor_pid, IDLE_WINDOW);
    let memory = proc_status_kib(supervisor_pid, &["VmRSS", "VmHWM"]);
    let restarts_reported = status
        .workers
        .iter()
        .find(|w| w.kind == WorkerKind::Llm)
        .map(|w| w.restarts);
    let worker_pids: Vec<u32> = status.workers.iter().filter_map(|w| w.pid).collect();
    let shutdown = shut_down(dir, &mut up, &worker_pids)?;

    let col = |f: fn(&RestartRun) -> f64| runs.iter().map(f).collect::<Vec<_>>();
    let detection = col(|r| r.detection_ms);
    let ready = col(|r| r.ready_ms);
    let load = col(|r| r.load_ms);
    let overhead = col(|r| r.overhead_ms);
    let detection_median = median(detection.clone());
    let dead: Option<Vec<f64>> = runs.iter().map(|r| r.dead_ms).collect();
    let dead_to_exited: Option<Vec<f64>> = runs
        .iter()
        .map(|r| Some(r.detection_ms - r.dead_ms?))
        .collect();
    let overhead_median = median(overhead.clone());
    let backoffs: Vec<u64> = runs.iter().map(|r| r.backoff_ms).collect();
    Ok(json!({
        "model": b.model,
        "runs": runs.len(),
        "threads": b.threads,
        "machine": facts,
        "config": restart_config(b.threads),
        "detection_ms": spread(&detection),
        "ready_ms": spread(&ready),
        "load_ms": spread(&load),
        "warmup_ms": spread(&col(|r| r.warmup_ms)),
        // ready − load − warm-up: detection, backoff, spawn, hello, and what loading does
        // besides reading the model (CPU sampling, context).
        "overhead_ms": spread(&overhead),
        "backoff_ms": median(backoffs.iter().map(|&d| d as f64).collect()),
        "backoff_ms_all_equal": backoffs.windows(2).all(|w| w[0] == w[1]),
        "phases_median_ms": {
            "kill_to_dead": dead.map(median),
            "dead_to_exited": dead_to_exited.map(median),
            "kill_to_exited": detection_median,
            "exited_to_spawned": median(col(|r| r.spawned_ms - r.detection_ms)),
            "spawned_to_hello": median(col(|r| r.hello_ms - r.spawned_ms)),
            "hello_to_loaded": median(col(|r| r.ready_ms - r.hello_ms)),
            "hello_to_loaded_minus_load_and_warmup": median(col(|r| {
                r.ready_ms - r.hello_ms - r.load_ms - r.warmup_ms
            })),
        },
        "targets": {
            "detection_ms": DETECTION_TARGET_MS,
            "ready_minus_load_and_warmup_ms": OVERHEAD_TARGET_MS,
            "detection_within_target": detection_median <= DETECTION_TARGET_MS,
            "ready_within_target": overhead_median <= OVERHEAD_TARGET_MS,
        },
        "supervisor": {
            "pid": supervisor_pid,
            "rss_kib": memory.first().copied().flatten(),
            "rss_peak_kib": memory.get(1).copied().flatten(),
            "idle_window_s": IDLE_WINDOW.as_secs_f64(),
            "idle_cpu_percent_of_one_core": idle.map(|i| i.schedstat_percent),
            "idle_cpu_percent_of_one_core_ticks": idle.map(|i| i.ticks_percent),
            "llm_restarts_reported": restarts_reported,
        },
        "llm_worker_rss_kib_median": median(
            runs.iter().filter_map(|r| r.worker_rss_kib).map(|k| k as f64).collect()
        ),
        "shutdown": shutdown,
        "runs_detail": runs,
    }))
}

/// Polls `mate ctl status` until every worker in `kinds` runs with a pid.
fn wait_running(
    dir: &Path,
    up: &mut UpProcess,
    kinds: &[WorkerKind],
    limit: Duration,
) -> anyhow::Result<StatusReport> {
    let deadline = Instant::now() + limit;
    let mut last = None;
    loop {
        if let Some(exit) = up.0.try_wait()? {
            let stderr = std::fs::read_to_string(dir.join("up.stderr")).unwrap_or_default();
            bail!("the supervisor exited ({exit}): {}", stderr.trim());
        }
        match ctl::call(dir, &Request::Status) {
            Ok(Reply::Status(report)) => {
                let running = kinds.iter().all(|k| {
                    report
                        .workers
                        .iter()
                        .any(|w| w.kind == *k && w.state == WorkerState::Running && w.pid.is_some())
                });
                if running {
                    return Ok(*report);
                }
                last = Some(report);
            }
            Ok(other) => bail!("unexpected reply to status: {other:?}"),
            // Still starting: no token or socket yet.
            Err(ctl::CtlError::NotRunning { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if Instant::now() > deadline {
            bail!(
                "{kinds:?} not running within {} s; last status: {last:?}",
                limit.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn worker_pid(status: &StatusReport, kind: WorkerKind) -> anyhow::Result<u32> {
    status
        .workers
        .iter()
        .find(|w| w.kind == kind)
        .and_then(|w| w.pid)
        .with_context(|| format!("the status names no {kind} worker pid"))
}

#[cfg(unix)]
fn kill9(pid: u32) -> anyhow::Result<()> {
    use rustix::process::{kill_process, Pid, Signal};
    let target = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .with_context(|| format!("{pid} is not a pid"))?;
    kill_process(target, Signal::KILL).with_context(|| format!("kill -9 {pid}"))
}

#[cfg(not(unix))]
fn kill9(_pid: u32) -> anyhow::Result<()> {
    bail!("mate bench restart kills workers with SIGKILL, which only Unix has")
}

/// Reads the LLM worker's events after a kill at `killed`, up to the new worker's `Loaded`.
fn follow_restart(
    events: &mpsc::Receiver<Seen>,
    pid: u32,
    killed: Instant,
) -> anyhow::Result<RestartRun> {
    let mut seen: Vec<String> = Vec::new();
    let (mut exited, mut restarting, mut spawned, mut hello) = (None, None, None, None);
    loop {
        let (limit, waiting_for) = if exited.is_none() {
            (EXIT_LIMIT, "Exited")
        } else {
            (READY_LIMIT, "Loaded")
        };
        let timeout = (killed + limit).saturating_duration_since(Instant::now());
        let e = match events.recv_timeout(timeout) {
            Ok(e) => e,
            Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                "no {waiting_for} event within {} s of the kill; LLM events since: [{}]",
                limit.as_secs(),
                seen.join("; ")
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!(
                "the event stream ended while waiting for {waiting_for}; LLM events since the \
                 kill: [{}]",
                seen.join("; ")
            ),
        };
        if e.worker != Some(WorkerKind::Llm) || e.at < killed {
            continue;
        }
        let after = ms(e.at - killed);
        seen.push(format!("+{after:.1} ms {:?}", e.kind));
        match e.kind {
            EventKind::Exited { status, expected } if exited.is_none() => {
                if expected || status != ExitStatus::Signal(9) {
                    bail!(
                        "the worker's exit reads {status:?} (expected: {expected}), not an \
                         unexpected SIGKILL"
                    );
                }
                exited = Some(after);
            }
            EventKind::Restarting { delay_ms, attempt } => restarting = Some((delay_ms, attempt)),
            EventKind::Spawned { .. } => spawned = Some(after),
            EventKind::Ready => hello = Some(after),
            EventKind::Loaded {
                load_ms, warmup_ms, ..
            } => {
                let (
                    Some(detection_ms),
                    Some((backoff_ms, attempt)),
                    Some(spawned_ms),
                    Some(hello_ms),
                ) = (exited, restarting, spawned, hello)
                else {
                    bail!(
                        "Loaded before the Exited, Restarting, Spawned and Ready of the \
                         restart: [{}]",
                        seen.join("; ")
                    );
                };
                let load_ms = f64::from(load_ms);
                let warmup_ms = f64::from(warmup_ms);
                return Ok(RestartRun {
                    pid,
                    worker_rss_kib: None,
                    dead_ms: None,
                    detection_ms,
                    spawned_ms,
                    hello_ms,
                    ready_ms: after,
                    load_ms,
                    warmup_ms,
                    overhead_ms: after - load_ms - warmup_ms,
                    backoff_ms,
                    attempt,
                });
            }
            EventKind::Failed { .. }
            | EventKind::Downgraded { .. }
            | EventKind::Stopping { .. } => {
                bail!("the restart did not go through: [{}]", seen.join("; "))
            }
            _ => {}
        }
    }
}

/// The nearest-rank percentile `p` (0..=1) of `sorted`; NaN (null in JSON) when empty.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Median, p90 (nearest rank), min and max.
fn spread(v: &[f64]) -> serde_json::Value {
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    json!({
        "median": median(sorted.clone()),
        "p90": percentile(&sorted, 0.9),
        "min": sorted.first(),
        "max": sorted.last(),
    })
}

/// Fields of `/proc/<pid>/status` in KiB, in the order asked; `None` where unreadable.
fn proc_status_kib(pid: u32, keys: &[&str]) -> Vec<Option<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    keys.iter()
        .map(|key| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
struct IdleCpu {
    /// From the threads' run time in `/proc/<pid>/task/*/schedstat` (nanoseconds).
    schedstat_percent: f64,
    /// From utime + stime in `/proc/<pid>/stat` (clock ticks of 10 ms: coarse over 5 s).
    ticks_percent: f64,
}

/// CPU the process used over `window`, as a percentage of one core; `None` without `/proc`.
fn idle_cpu(pid: u32, window: Duration) -> Option<IdleCpu> {
    let read = || Some((schedstat_ns(pid)?, stat_ticks(pid)?, Instant::now()));
    let (ns0, ticks0, t0) = read()?;
    std::thread::sleep(window);
    let (ns1, ticks1, t1) = read()?;
    let wall = (t1 - t0).as_secs_f64();
    Some(IdleCpu {
        schedstat_percent: ns1.saturating_sub(ns0) as f64 / 1e9 / wall * 100.0,
        ticks_percent: ticks1.saturating_sub(ticks0) as f64 / 100.0 / wall * 100.0,
    })
}

/// Time on CPU of all the process's threads, in nanoseconds.
fn schedstat_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        // A thread may end between the listing and the read.
        let Ok(text) = std::fs::read_to_string(task.ok()?.path().join("schedstat")) else {
            continue;
        };
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// utime + stime in clock ticks (USER_HZ, 100 on Linux).
fn stat_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces; utime and stime are fields 14
    // and 15, so 11 and 12 after the state (field 3).
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// When `pid` stopped being a live process, polled every 100 µs until `deadline`; `None`
/// without `/proc` or past the deadline.
fn died(pid: u32, deadline: Instant) -> Option<Instant> {
    while Instant::now() < deadline {
        if !alive(pid)? {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    None
}

/// Whether `pid` is a live process; `None` without `/proc`. A zombie counts as dead only
/// once its last thread is gone: a killed group leader turns zombie before its other threads
/// have exited, and the parent hears of the exit only after the last one.
fn alive(pid: u32) -> Option<bool> {
    if !Path::new("/proc/self").exists() {
        return None;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Some(false);
    };
    let zombie = stat
        .rfind(')')
        .is_some_and(|at| stat[at + 1..].trim_start().starts_with('Z'));
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count);
    Some(!zombie || threads > 1)
}

/// `mate ctl shutdown`, then waits for the supervisor to exit (killing it after a while) and
/// checks that no worker outlived it.
fn shut_down(
    dir: &Path,
    up: &mut UpProcess,
    worker_pids: &[u32],
) -> anyhow::Result<serde_json::Value> {
    let asked = Instant::now();
    match ctl::call(dir, &Request::Shutdown)? {
        Reply::Ok => {}
        other => bail!("unexpected reply to shutdown: {other:?}"),
    }
    // The workers' grace period (5 s by default) plus some.
    let deadline = asked + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = up.0.try_wait()? {
            break Some(exit);
        }
        if Instant::now() > deadline {
            eprintln!("mate bench: the supervisor did not stop within 15 s; killing it");
            let _ = up.0.kill();
            let _ = up.0.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stopped_ms = ms(asked.elapsed());
    // Orphaned workers would be reparented, not killed: give them a moment, then look.
    let look = Instant::now() + Duration::from_secs(2);
    let mut left: Vec<u32> = worker_pids.to_vec();
    while !left.is_empty() && Instant::now() < look {
        left.retain(|&pid| alive(pid) == Some(true));
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(json!({
        "clean": exit.is_some_and(|e| e.success()),
        "exit": exit.map(|e| e.to_string()),
        "ms": stopped_ms,
        "workers_left_running": left,
    }))
}

/// One thread count's figures in `mate bench threads`.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadPoint {
    pub threads: u32,
    pub prompt_tokens_per_s: f64,
    pub gen_tokens_per_s: f64,
}

/// `mate bench threads`: prompt and generation speed for each thread count, medians of `runs`.
pub fn threads(model: &Path, counts: &[u32], runs: usize) -> anyhow::Result<Vec<ThreadPoint>> {
    let rendered = render_fallback(&ChatTemplate::default(), &[user(PROMPT)]).repeat(4);
    let mut points = Vec::new();
    for &t in counts {
        let (mut p, mut g) = (Vec::new(), Vec::new());
        for _ in 0..runs.max(1) {
            let r = baseline::generate_greedy(model, &rendered, 2048, 512, t, 48)?;
            p.push(r.prompt_tokens_per_s);
            g.push(r.gen_tokens_per_s);
        }
        let point = ThreadPoint {
            threads: t,
            prompt_tokens_per_s: median(p),
            gen_tokens_per_s: median(g),
        };
        eprintln!(
            "mate bench threads: {t:>2} threads  prompt {:>8.1} tok/s  generation {:>6.1} tok/s",
            point.prompt_tokens_per_s, point.gen_tokens_per_s
        );
        points.push(point);
    }
    Ok(points)
}

/// Sets `[llm] threads` in the config file, keeping its comments and layout.
pub fn write_threads(config: &Path, threads: u32) -> anyhow::Result<()> {
    let text = match std::fs::read_to_string(config) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", config.display())),
    };
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", config.display()))?;
    if !doc.contains_table("llm") {
        doc["llm"] = toml_edit::table();
    }
    doc["llm"]["threads"] = toml_edit::value(i64::from(threads));
    if let Some(dir) = config.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = config.with_extension("toml.tmp");
    std::fs::write(&tmp, doc.to_string())?;
    std::fs::rename(&tmp, config)?;
    Ok(())
}

/// Settings of `mate bench profiles`.
#[derive(Debug, Clone)]
pub struct ProfilesBench {
    pub exe: PathBuf,
    pub model: PathBuf,
    /// Replies per rung, and downgrades per sample interval (medians are reported).
    pub runs: usize,
    pub max_tokens: u32,
    /// `[llm] threads` of the supervisors under test; 0: by the CPU rule, applied once here
    /// so that every rung runs with the same count (each worker would otherwise apply it at
    /// its own load, and a busy moment would give one rung fewer threads).
    pub threads: u32,
    /// Where `profiles.json` and `profiles.svg` go, if anywhere.
    pub out: Option<PathBuf>,
}

/// The GPU sampling intervals the downgrade reaction is measured with: a fast one, and the
/// default (`[gpu] sample_ms`).
const SAMPLE_INTERVALS_MS: [u64; 2] = [100, 500];
/// The simulated card of the downgrade runs, and what other applications hold on it before
/// and after they jump: 4000 of 4096 MiB is 97.7%, above the default critical 95% whatever
/// the LLM holds.
const CARD_MB: u64 = 4096;
const CALM_MB: u64 = 500;
const CRITICAL_MB: u64 = 4000;
/// The profile named as the baseline of the ratios.
const BASELINE: &str = "cpu";

/// The config of every supervisor `mate bench profiles` starts: greedy replies of
/// `max_tokens`, and no KV snapshots (each turn would write one while the next is timed).
/// With `sample_ms` (the downgrade runs), the GPU is sampled that often and the LLM never
/// climbs back on its own, so only the bench moves it up again.
fn profiles_config(threads: u32, max_tokens: u32, sample_ms: Option<u64>) -> String {
    let mut text = format!(
        "# Written by `mate bench profiles`.\n\
         [chat]\ntemperature = 0.0\nmax_tokens = {max_tokens}\n\n[llm]\nsnapshots = false\n"
    );
    if threads > 0 {
        text.push_str(&format!("threads = {threads}\n"));
    }
    if let Some(sample_ms) = sample_ms {
        text.push_str(&format!(
            "\n[gpu]\nsample_ms = {sample_ms}\nauto_upgrade = false\n"
        ));
    }
    text
}

/// One `mate ctl chat` as the bench saw it.
#[derive(Debug, Clone, Serialize)]
struct ChatRun {
    /// The worker's figures.
    ttft_ms: f64,
    gen_tokens_per_s: f64,
    prompt_tokens_per_s: f64,
    prompt_tokens: u32,
    cached_tokens: u32,
    generated_tokens: u32,
    stop: String,
    /// From sending the request to the first chunk, on this side of the socket.
    client_ttft_ms: Option<f64>,
}

/// Everything measured on one rung.
#[derive(Debug, Clone, Serialize)]
struct RungMeasure {
    profile: Profile,
    estimated_vram_bytes: u64,
    /// From the `Loaded` event.
    load_ms: f64,
    warmup_ms: f64,
    /// From starting `mate up` to receiving `Loaded`.
    up_to_loaded_ms: f64,
    chats: Vec<ChatRun>,
    /// The LLM worker after the replies.
    rss_kib: Option<u64>,
    rss_peak_kib: Option<u64>,
    /// The LLM worker's VRAM as the driver reports it; `None` without a real GPU.
    vram_bytes: Option<u64>,
}

/// One rung's medians, and its ratios to the baseline rung.
#[derive(Debug, Clone, Serialize)]
struct RungSummary {
    profile: String,
    n_gpu_layers: u32,
    n_ctx: u32,
    n_batch: u32,
    kv_type: String,
    flash_attention: bool,
    estimated_vram_mib: f64,
    vram_mib: Option<f64>,
    load_ms: f64,
    warmup_ms: f64,
    up_to_loaded_ms: f64,
    ttft_ms: f64,
    client_ttft_ms: Option<f64>,
    gen_tokens_per_s: f64,
    /// Replies may end early (a stop string), and differ between rungs: flash attention
    /// changes the arithmetic, so greedy decoding may pick other tokens.
    generated_tokens: f64,
    rss_mib: Option<f64>,
    rss_peak_mib: Option<f64>,
    /// This rung over the baseline (`cpu`): above 1 is faster generation, and slower TTFT.
    gen_tokens_per_s_vs_baseline: Option<f64>,
    ttft_vs_baseline: Option<f64>,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Medians per rung and ratios to the `cpu` rung (none when it was not measured).
fn summarize(rungs: &[RungMeasure]) -> Vec<RungSummary> {
    let mut out: Vec<RungSummary> = rungs
        .iter()
        .map(|r| {
            let col = |f: fn(&ChatRun) -> f64| median(r.chats.iter().map(f).collect());
            let client: Vec<f64> = r.chats.iter().filter_map(|c| c.client_ttft_ms).collect();
            RungSummary {
                profile: r.profile.name.clone(),
                n_gpu_layers: r.profile.n_gpu_layers,
                n_ctx: r.profile.n_ctx,
                n_batch: r.profile.n_batch,
                kv_type: format!("{:?}", r.profile.kv_type),
                flash_attention: r.profile.flash_attention,
                estimated_vram_mib: mib(r.estimated_vram_bytes),
                vram_mib: r.vram_bytes.map(mib),
                load_ms: r.load_ms,
                warmup_ms: r.warmup_ms,
                up_to_loaded_ms: r.up_to_loaded_ms,
                ttft_ms: col(|c| c.ttft_ms),
                client_ttft_ms: (!client.is_empty()).then(|| median(client)),
                gen_tokens_per_s: col(|c| c.gen_tokens_per_s),
                generated_tokens: col(|c| f64::from(c.generated_tokens)),
                rss_mib: r.rss_kib.map(|k| k as f64 / 1024.0),
                rss_peak_mib: r.rss_peak_kib.map(|k| k as f64 / 1024.0),
                gen_tokens_per_s_vs_baseline: None,
                ttft_vs_baseline: None,
            }
        })
        .collect();
    if let Some(base) = out.iter().find(|s| s.profile == BASELINE).cloned() {
        for s in &mut out {
            s.gen_tokens_per_s_vs_baseline = Some(s.gen_tokens_per_s / base.gen_tokens_per_s);
            s.ttft_vs_baseline = Some(s.ttft_ms / base.ttft_ms);
        }
    }
    out
}

/// One jump of the other applications' VRAM to critical, in milliseconds after the scenario
/// file was renamed into place (the supervisor's event time stamps, 1 ms resolution).
#[derive(Debug, Clone, Serialize)]
struct DowngradeRun {
    from: String,
    to: String,
    cause: String,
    /// Used VRAM in the reading the decision was made on.
    used_percent: Option<f32>,
    /// Rename → `Downgraded`: the probe's next sample, and the decision.
    detection_ms: f64,
    /// Rename → the old worker's `Exited` (it stops gracefully), and → the new one's
    /// `Spawned`.
    old_exited_ms: Option<f64>,
    spawned_ms: Option<f64>,
    /// Rename → `Loaded` on the lower profile: serving again.
    ready_ms: f64,
    /// `Downgraded` → `Loaded`: stopping the worker, starting the next, loading.
    reload_ms: f64,
    /// The lower profile's own figures for loading and warming up.
    load_ms: f64,
    warmup_ms: f64,
}

/// The downgrade runs with one GPU sampling interval.
#[derive(Debug, Clone, Serialize)]
struct DowngradeSeries {
    sample_ms: u64,
    runs: Vec<DowngradeRun>,
}

impl DowngradeSeries {
    /// Spreads and phases, with the config the supervisor ran with.
    fn report(&self, config: String) -> serde_json::Value {
        let col = |f: fn(&DowngradeRun) -> f64| self.runs.iter().map(f).collect::<Vec<_>>();
        let phase =
            |f: fn(&DowngradeRun) -> Option<f64>| median(self.runs.iter().filter_map(f).collect());
        json!({
            "sample_ms": self.sample_ms,
            "config": config,
            "detection_ms": spread(&col(|r| r.detection_ms)),
            "ready_ms": spread(&col(|r| r.ready_ms)),
            "reload_ms": spread(&col(|r| r.reload_ms)),
            "phases_median_ms": {
                "downgraded_to_old_exited": phase(|r| Some(r.old_exited_ms? - r.detection_ms)),
                "old_exited_to_spawned": phase(|r| Some(r.spawned_ms? - r.old_exited_ms?)),
                "spawned_to_loaded": phase(|r| Some(r.ready_ms - r.spawned_ms?)),
                "load_and_warmup": median(col(|r| r.load_ms + r.warmup_ms)),
            },
            "runs_detail": self.runs,
        })
    }
}

/// `mate bench profiles`: returns the JSON report, and writes it with the plot to `out`.
pub fn profiles(b: &ProfilesBench) -> anyhow::Result<serde_json::Value> {
    let facts = CpuFacts::sample(Duration::from_millis(300));
    let b = &ProfilesBench {
        threads: if b.threads > 0 {
            b.threads
        } else {
            facts.generation_threads()
        },
        ..b.clone()
    };
    let devices = mate_worker_llm::engine::devices()
        .context("listing llama.cpp's devices (`mate doctor` shows them)")?;
    // ggml's CPU backend, and BLAS when built with it, compute on the CPU.
    let offload = devices
        .iter()
        .any(|d| !matches!(d.backend.to_ascii_uppercase().as_str(), "CPU" | "BLAS"));

    let mut rungs = Vec::new();
    let mut first_status = None;
    for name in crate::ladder::DEFAULT_LADDER {
        eprintln!("mate bench profiles: {name}");
        let (rung, status) = in_state_dir("profiles", |dir| measure_rung(b, dir, name))
            .with_context(|| format!("profile {name}"))?;
        first_status.get_or_insert(status);
        rungs.push(rung);
    }
    let summary = summarize(&rungs);
    let mut downgrades = Vec::new();
    for sample_ms in SAMPLE_INTERVALS_MS {
        eprintln!("mate bench profiles: downgrade reaction, GPU sampled every {sample_ms} ms");
        downgrades.push(in_state_dir("profiles", |dir| {
            measure_downgrades(b, dir, sample_ms)
        })?);
    }

    let gpu = first_status.as_ref().map(|s| &s.gpu);
    let report = json!({
        "model": b.model,
        "runs": b.runs,
        "max_tokens": b.max_tokens,
        "prompt": PROMPT,
        "threads": b.threads,
        "machine": facts,
        "backend": {
            "llama_cpp_devices": devices,
            "gpu_offload": offload,
            "note": if offload {
                "llama.cpp has a GPU backend: rungs differ in the layers offloaded as well"
            } else {
                "this build of llama.cpp has no GPU backend: every rung runs on the CPU and \
                 n_gpu_layers offloads nothing, so the rungs differ only in n_ctx, \
                 n_batch/n_ubatch, KV cache type and flash attention"
            },
        },
        "gpu": gpu.map(|g| json!({ "name": g.name, "simulated": g.simulated, "note": g.note })),
        "config": profiles_config(b.threads, b.max_tokens, None),
        "baseline": BASELINE,
        "profiles": summary,
        "downgrade": {
            "card_mb": CARD_MB,
            "other_apps_mb": { "calm": CALM_MB, "critical": CRITICAL_MB },
            "series": downgrades
                .iter()
                .map(|d| d.report(profiles_config(b.threads, b.max_tokens, Some(d.sample_ms))))
                .collect::<Vec<_>>(),
        },
        "runs_detail": rungs,
    });
    if let Some(out) = &b.out {
        std::fs::create_dir_all(out)
            .with_context(|| format!("creating {} (pass another --out DIR)", out.display()))?;
        let json_path = out.join("profiles.json");
        std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", json_path.display()))?;
        let svg_path = out.join("profiles.svg");
        plot(&svg_path, &summary, &downgrades)
            .with_context(|| format!("drawing {}", svg_path.display()))?;
        eprintln!(
            "mate bench profiles: wrote {} and {}",
            json_path.display(),
            svg_path.display()
        );
    }
    Ok(report)
}

/// One rung in its own `mate up`: load, `runs` replies to the same prompt, memory, shutdown.
fn measure_rung(
    b: &ProfilesBench,
    dir: &Path,
    name: &str,
) -> anyhow::Result<(RungMeasure, StatusReport)> {
    let config = dir.join("config.toml");
    std::fs::write(&config, profiles_config(b.threads, b.max_tokens, None))?;
    let started = Instant::now();
    let mut up = start_up(
        &b.exe,
        dir,
        &config,
        &b.model,
        &["--profile".as_ref(), name.as_ref()],
    )?;
    wait_running(dir, &mut up, &[WorkerKind::Llm], START_LIMIT).context("starting mate up")?;
    let events = follow_events(dir);
    let (load_ms, warmup_ms, loaded_at) = await_loaded(&events, name)?;
    let status = status_now(dir)?;
    let rung = status
        .ladder
        .iter()
        .find(|r| r.profile.name == name)
        .with_context(|| format!("the ladder has no rung {name}"))?
        .clone();
    let pid = worker_pid(&status, WorkerKind::Llm)?;

    let mut chats = Vec::with_capacity(b.runs);
    for run in 1..=b.runs {
        chats.push(chat(dir, PROMPT).with_context(|| format!("{name}: reply {run}"))?);
    }
    let memory = proc_status_kib(pid, &["VmRSS", "VmHWM"]);
    let after = status_now(dir)?;
    let vram_bytes = after
        .gpu
        .reading
        .filter(|_| after.gpu.name.is_some() && !after.gpu.simulated)
        .and_then(|r| r.llm_bytes);
    let worker_pids: Vec<u32> = after.workers.iter().filter_map(|w| w.pid).collect();
    let shutdown = shut_down(dir, &mut up, &worker_pids)?;
    if !(shutdown["clean"] == true && shutdown["workers_left_running"] == json!([])) {
        bail!("{name}: the supervisor did not shut down cleanly: {shutdown}");
    }
    Ok((
        RungMeasure {
            profile: rung.profile,
            estimated_vram_bytes: rung.estimated_vram_bytes,
            load_ms,
            warmup_ms,
            up_to_loaded_ms: ms(loaded_at - started),
            chats,
            rss_kib: memory.first().copied().flatten(),
            rss_peak_kib: memory.get(1).copied().flatten(),
            vram_bytes,
        },
        status,
    ))
}

/// `mate up` on a simulated card sampled every `sample_ms`, starting on `performance`; then
/// `runs` times: the other applications jump to critical, the LLM steps down and serves
/// again, the pressure goes and the bench puts it back on `performance`.
fn measure_downgrades(
    b: &ProfilesBench,
    dir: &Path,
    sample_ms: u64,
) -> anyhow::Result<DowngradeSeries> {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        profiles_config(b.threads, b.max_tokens, Some(sample_ms)),
    )?;
    let scenario = dir.join("gpu.toml");
    write_scenario(&scenario, CALM_MB)?;
    let top = crate::ladder::DEFAULT_LADDER[0];
    let mut up = start_up(
        &b.exe,
        dir,
        &config,
        &b.model,
        &[
            "--profile".as_ref(),
            top.as_ref(),
            "--gpu-scenario".as_ref(),
            scenario.as_os_str(),
        ],
    )?;
    wait_running(dir, &mut up, &[WorkerKind::Llm], START_LIMIT).context("starting mate up")?;
    let events = follow_events(dir);
    await_loaded(&events, top)?;
    let sample = Duration::from_millis(sample_ms);

    let mut runs = Vec::with_capacity(b.runs);
    for run in 1..=b.runs {
        eprintln!(
            "mate bench profiles: sample_ms {sample_ms}, downgrade {run}/{}",
            b.runs
        );
        // A calm reading or two on the loaded profile first, as in normal operation; then a
        // jitter, so the jump falls at a random point of the sampling interval (the runs'
        // rhythm would otherwise keep it at much the same point).
        std::thread::sleep(SETTLE + 2 * sample + jitter(sample));
        while events.try_recv().is_ok() {}
        let written = write_scenario(&scenario, CRITICAL_MB)?;
        let (from, to, cause, used_percent, downgraded_ms) =
            await_event(&events, EXIT_LIMIT + sample, "Downgraded", |e| {
                match &e.kind {
                    EventKind::Downgraded {
                        from,
                        to,
                        cause,
                        reading,
                    } => Some((
                        from.clone(),
                        to.clone(),
                        format!("{cause:?}"),
                        reading.map(|r| r.used_percent()),
                        e.at_ms,
                    )),
                    _ => None,
                }
            })
            .with_context(|| format!("run {run}: after other apps took {CRITICAL_MB} MiB"))?;
        if from != top {
            bail!("run {run}: the LLM stepped down from {from}, not {top}");
        }
        // The old worker stops before the new one starts: its VRAM must be free first.
        let (mut exited_ms, mut spawned_ms) = (None, None);
        let (load_ms, warmup_ms, loaded_ms) = await_event(
            &events,
            READY_LIMIT,
            &format!("Loaded {to}"),
            |e| match &e.kind {
                EventKind::Loaded {
                    profile,
                    load_ms,
                    warmup_ms,
                    ..
                } if *profile == to => Some((f64::from(*load_ms), f64::from(*warmup_ms), e.at_ms)),
                EventKind::Exited { .. } if e.worker == Some(WorkerKind::Llm) => {
                    exited_ms.get_or_insert(e.at_ms);
                    None
                }
                EventKind::Spawned { .. } if e.worker == Some(WorkerKind::Llm) => {
                    spawned_ms.get_or_insert(e.at_ms);
                    None
                }
                _ => None,
            },
        )
        .with_context(|| format!("run {run}: after the downgrade to {to}"))?;
        let after = |at_ms: u64| at_ms as f64 - written;
        let (detection_ms, ready_ms) = (after(downgraded_ms), after(loaded_ms));
        runs.push(DowngradeRun {
            from,
            to,
            cause,
            used_percent,
            detection_ms,
            old_exited_ms: exited_ms.map(after),
            spawned_ms: spawned_ms.map(after),
            ready_ms,
            reload_ms: ready_ms - detection_ms,
            load_ms,
            warmup_ms,
        });

        // Back up: calm again (the LLM may have stepped further down meanwhile), then the
        // top profile by hand, as a user would.
        write_scenario(&scenario, CALM_MB)?;
        std::thread::sleep(2 * sample + Duration::from_millis(100));
        while events.try_recv().is_ok() {}
        match ctl::call(dir, &Request::SetProfile { name: top.into() })? {
            Reply::Ok => {}
            Reply::Error { message } => bail!("run {run}: `mate ctl profile {top}`: {message}"),
            other => bail!("unexpected reply to profile: {other:?}"),
        }
        await_loaded(&events, top).with_context(|| format!("run {run}: back to {top}"))?;
    }
    let worker_pids: Vec<u32> = status_now(dir)?
        .workers
        .iter()
        .filter_map(|w| w.pid)
        .collect();
    let shutdown = shut_down(dir, &mut up, &worker_pids)?;
    if shutdown["clean"] != true {
        bail!("the supervisor did not shut down cleanly: {shutdown}");
    }
    Ok(DowngradeSeries { sample_ms, runs })
}

/// A pseudo-random duration below `max`, from the clock's nanoseconds.
fn jitter(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    let max = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX).max(1);
    Duration::from_nanos(nanos % max)
}

/// Writes the simulated card with other applications holding `other_mb`, the way an editor
/// saves (a new file renamed over the old), and returns when it was in place, in
/// milliseconds since the Unix epoch.
fn write_scenario(path: &Path, other_mb: u64) -> anyhow::Result<f64> {
    let text = format!(
        "# Written by `mate bench profiles`.\nname = \"mate bench card\"\ntotal_mb = {CARD_MB}\n\n\
         [[other]]\nat_s = 0.0\nmb = {other_mb}\n"
    );
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    Ok(now.as_secs_f64() * 1e3)
}

/// Waits up to `limit` for the first event `pick` accepts; the LLM worker failing ends the
/// wait early. The error lists what came instead.
fn await_event<T>(
    events: &mpsc::Receiver<Seen>,
    limit: Duration,
    what: &str,
    mut pick: impl FnMut(&Seen) -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + limit;
    let mut seen: Vec<String> = Vec::new();
    loop {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let e = match events.recv_timeout(timeout) {
            Ok(e) => e,
            Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                "no {what} event within {} s; events meanwhile: [{}]",
                limit.as_secs_f64(),
                seen.join("; ")
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!(
                "the event stream ended while waiting for {what}; events before: [{}]",
                seen.join("; ")
            ),
        };
        if let Some(found) = pick(&e) {
            return Ok(found);
        }
        if let EventKind::Failed { reason } = &e.kind {
            bail!(
                "the {:?} worker failed while waiting for {what}: {reason}",
                e.worker
            );
        }
        seen.push(format!("{:?}", e.kind));
    }
}

/// Waits for the LLM's `Loaded` on `profile`: its load and warm-up times, and when it came.
fn await_loaded(
    events: &mpsc::Receiver<Seen>,
    profile: &str,
) -> anyhow::Result<(f64, f64, Instant)> {
    await_event(
        events,
        READY_LIMIT,
        &format!("Loaded {profile}"),
        |e| match &e.kind {
            EventKind::Loaded {
                profile: p,
                load_ms,
                warmup_ms,
                ..
            } if p == profile => Some((f64::from(*load_ms), f64::from(*warmup_ms), e.at)),
            _ => None,
        },
    )
}

fn status_now(dir: &Path) -> anyhow::Result<StatusReport> {
    match ctl::call(dir, &Request::Status)? {
        Reply::Status(report) => Ok(*report),
        other => bail!("unexpected reply to status: {other:?}"),
    }
}

/// `mate ctl chat TEXT`, timed.
fn chat(dir: &Path, text: &str) -> anyhow::Result<ChatRun> {
    let sent = Instant::now();
    let (mut first, mut done, mut error) = (None, None, None);
    ctl::request(
        dir,
        &Request::Chat { text: text.into() },
        |reply| match reply {
            Reply::Chunk { .. } => {
                first.get_or_insert_with(Instant::now);
                true
            }
            Reply::ChatDone { stats } => {
                done = Some(stats);
                false
            }
            Reply::Error { message } => {
                error = Some(message);
                false
            }
            _ => true,
        },
    )?;
    if let Some(message) = error {
        bail!("the chat failed: {message}");
    }
    let stats = done.context("the supervisor closed the chat without a reply")?;
    Ok(ChatRun {
        ttft_ms: f64::from(stats.ttft_ms),
        gen_tokens_per_s: f64::from(stats.gen_tokens_per_s),
        prompt_tokens_per_s: f64::from(stats.prompt_tokens_per_s),
        prompt_tokens: stats.prompt_tokens,
        cached_tokens: stats.cached_tokens,
        generated_tokens: stats.generated_tokens,
        stop: format!("{:?}", stats.stop),
        client_ttft_ms: first.map(|at| ms(at - sent)),
    })
}

/// Draws the report: a bar chart per metric with a bar per profile, and below them the
/// downgrade reaction of every run for each sampling interval. SVG only, text as `<text>`.
fn plot(path: &Path, rungs: &[RungSummary], downgrades: &[DowngradeSeries]) -> anyhow::Result<()> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};

    let root = SVGBackend::new(path, (1200, 960)).into_drawing_area();
    root.fill(&WHITE)?;
    let (metrics_area, downgrade_area) = root.split_vertically(620);

    type Metric = (&'static str, fn(&RungSummary) -> Option<f64>);
    let metrics: [Metric; 6] = [
        ("generation tok/s (higher is better)", |r| {
            Some(r.gen_tokens_per_s)
        }),
        ("time to first token, ms (lower is better)", |r| {
            Some(r.ttft_ms)
        }),
        ("load ms (model + context)", |r| Some(r.load_ms)),
        ("LLM worker RSS, MiB", |r| r.rss_mib),
        ("LLM VRAM, MiB (measured; GPU only)", |r| r.vram_mib),
        ("LLM VRAM, MiB (the ladder's estimate)", |r| {
            Some(r.estimated_vram_mib)
        }),
    ];
    let names: Vec<&str> = rungs.iter().map(|r| r.profile.as_str()).collect();
    let last = names.len().saturating_sub(1);
    let label_style =
        TextStyle::from(("sans-serif", 15).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (area, (title, value)) in metrics_area.split_evenly((2, 3)).iter().zip(metrics) {
        let values: Vec<Option<f64>> = rungs
            .iter()
            .map(|r| value(r).filter(|v| v.is_finite()))
            .collect();
        let highest = values.iter().flatten().copied().fold(0.0, f64::max);
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(56)
            .build_cartesian_2d((0..last).into_segmented(), 0.0..(highest * 1.2).max(1.0))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .label_style(("sans-serif", 16))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                    names.get(*i).map_or_else(String::new, |n| (*n).to_string())
                }
                SegmentValue::Last => String::new(),
            })
            .draw()?;
        let bars = values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| Some((i, (*v)?)));
        chart.draw_series(bars.clone().map(|(i, v)| {
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), v),
                ],
                BLUE.mix(0.55).filled(),
            );
            bar.set_margin(0, 0, 14, 14);
            bar
        }))?;
        chart.draw_series(bars.map(|(i, v)| {
            Text::new(
                format!("{v:.1}"),
                (SegmentValue::CenterOf(i), v),
                label_style.clone(),
            )
        }))?;
    }

    let n_runs = downgrades.iter().map(|d| d.runs.len()).max().unwrap_or(0) as i32;
    let highest = downgrades
        .iter()
        .flat_map(|d| &d.runs)
        .map(|r| r.ready_ms)
        .fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(&downgrade_area)
        .caption(
            "downgrade reaction, ms from VRAM critical to Downgraded (detection) and to the \
             lower profile Loaded (serving)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        // Head room above the lines for the legend.
        .build_cartesian_2d(0..n_runs + 1, 0.0..(highest * 1.6).max(1.0))?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .label_style(("sans-serif", 16))
        .x_desc("run")
        .x_label_formatter(&|x| {
            if (1..=n_runs).contains(x) {
                x.to_string()
            } else {
                String::new()
            }
        })
        .draw()?;
    let colors = [BLUE, RED, GREEN, MAGENTA];
    for (series, color) in downgrades.iter().zip(colors) {
        let points = |value: fn(&DowngradeRun) -> f64| -> Vec<(i32, f64)> {
            series
                .runs
                .iter()
                .zip(1..)
                .map(|(r, x)| (x, value(r)))
                .collect()
        };
        let lines = [
            (
                "detection",
                points(|r| r.detection_ms),
                color.mix(0.5).stroke_width(2),
            ),
            ("serving", points(|r| r.ready_ms), color.stroke_width(2)),
        ];
        for (what, points, style) in lines {
            chart
                .draw_series(LineSeries::new(points, style).point_size(4))?
                .label(format!("sample_ms = {}: {what}", series.sample_ms))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writing_threads_keeps_comments_and_other_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "# mine\nprofile = \"cpu\"\n\n[llm]\nwarmup = false\n",
        )
        .expect("write");
        write_threads(&path, 3).expect("write threads");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("# mine\nprofile = \"cpu\""), "{text}");
        let parsed = crate::config::parse(&text, &path).expect("still a valid config");
        assert_eq!(parsed.llm.threads, Some(3));
        assert_eq!(parsed.llm.warmup, Some(false));
    }

    #[test]
    fn the_restart_config_only_lifts_escalation_and_backoff_growth() {
        let path = Path::new("bench.toml");
        let file = crate::config::parse(&restart_config(0), path).expect("valid config");
        let settings =
            crate::config::resolve(&crate::config::Overrides::default(), file).expect("resolves");
        let default = crate::policy::Policy::default();
        assert_eq!(settings.policy.intensity, 1000);
        assert_eq!(settings.policy.backoff.reset_after, Duration::ZERO);
        assert_eq!(settings.policy.backoff.initial, default.backoff.initial);
        assert_eq!(settings.policy.heartbeat, default.heartbeat);
        assert_eq!(settings.threads, 0);
        let file = crate::config::parse(&restart_config(3), path).expect("valid config");
        assert_eq!(file.llm.threads, Some(3));
    }

    #[test]
    fn spread_reports_nearest_rank_p90() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        let s = spread(&v);
        assert_eq!(s["median"], 10.5);
        assert_eq!(s["p90"], 18.0);
        assert_eq!(s["min"], 1.0);
        assert_eq!(s["max"], 20.0);
        assert_eq!(spread(&[7.0])["p90"], 7.0);
    }

    #[test]
    fn this_process_is_alive_and_uses_memory() {
        let pid = std::process::id();
        if Path::new("/proc/self").exists() {
            assert_eq!(alive(pid), Some(true));
            assert!(proc_status_kib(pid, &["VmRSS"])[0].is_some_and(|k| k > 0));
            assert!(stat_ticks(pid).is_some());
            // Some kernels (this project's VM) report 0 ns for short-lived processes.
            assert!(schedstat_ns(pid).is_some());
        }
    }

    #[test]
    fn the_profiles_config_is_greedy_without_snapshots_and_samples_when_asked() {
        let path = Path::new("bench.toml");
        let resolve = |text: &str| {
            let file = crate::config::parse(text, path).expect("valid config");
            crate::config::resolve(&crate::config::Overrides::default(), file).expect("resolves")
        };
        let s = resolve(&profiles_config(0, 64, None));
        assert_eq!(s.chat.sampling.temperature, 0.0);
        assert_eq!(s.chat.sampling.max_tokens, 64);
        assert_eq!(s.llm.snapshot_dir, None);
        assert_eq!(s.threads, 0);
        assert!(
            s.gpu.auto_upgrade,
            "only the downgrade runs turn upgrades off"
        );
        let s = resolve(&profiles_config(2, 16, Some(100)));
        assert_eq!(s.threads, 2);
        assert_eq!(s.gpu.sample, Duration::from_millis(100));
        assert!(!s.gpu.auto_upgrade);
        assert!(s.gpu.auto_downgrade);
    }

    #[test]
    fn the_scenario_jumps_from_calm_to_critical() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gpu.toml");
        let critical = crate::pressure::Thresholds::default().critical_percent;
        write_scenario(&path, CALM_MB).expect("write");
        let mut probe =
            crate::gpu::open(&crate::gpu::GpuChoice::Simulated(path.clone())).expect("opens");
        let calm = probe.sample(None).expect("reads");
        assert_eq!(calm.total_bytes, CARD_MB << 20);
        assert_eq!(calm.used_bytes, CALM_MB << 20);
        write_scenario(&path, CRITICAL_MB).expect("rewrite");
        let jumped = probe.sample(None).expect("reads again");
        assert_eq!(jumped.used_bytes, CRITICAL_MB << 20);
        assert!(
            jumped.used_percent() >= critical,
            "{}",
            jumped.used_percent()
        );
    }

    fn fake_rung(name: &str, tok_s: [f64; 3], ttft: [f64; 3]) -> RungMeasure {
        RungMeasure {
            profile: Profile {
                name: name.into(),
                ..Profile::cpu(4096)
            },
            estimated_vram_bytes: 300 << 20,
            load_ms: 700.0,
            warmup_ms: 40.0,
            up_to_loaded_ms: 900.0,
            chats: tok_s
                .iter()
                .zip(ttft)
                .map(|(&t, ttft_ms)| ChatRun {
                    ttft_ms,
                    gen_tokens_per_s: t,
                    prompt_tokens_per_s: 100.0,
                    prompt_tokens: 30,
                    cached_tokens: 0,
                    generated_tokens: 64,
                    stop: "MaxTokens".into(),
                    client_ttft_ms: Some(ttft_ms + 1.0),
                })
                .collect(),
            rss_kib: Some(400 * 1024),
            rss_peak_kib: Some(410 * 1024),
            vram_bytes: None,
        }
    }

    #[test]
    fn the_summary_takes_medians_and_ratios_to_the_cpu_rung() {
        let rungs = [
            fake_rung("performance", [30.0, 50.0, 40.0], [200.0, 100.0, 150.0]),
            fake_rung("cpu", [20.0, 21.0, 19.0], [100.0, 110.0, 90.0]),
        ];
        let s = summarize(&rungs);
        assert_eq!(s[0].gen_tokens_per_s, 40.0);
        assert_eq!(s[0].ttft_ms, 150.0);
        assert_eq!(s[0].client_ttft_ms, Some(151.0));
        assert_eq!(s[0].generated_tokens, 64.0);
        assert_eq!(s[0].estimated_vram_mib, 300.0);
        assert_eq!(s[0].rss_mib, Some(400.0));
        assert_eq!(s[0].vram_mib, None);
        assert_eq!(s[0].gen_tokens_per_s_vs_baseline, Some(2.0));
        assert_eq!(s[0].ttft_vs_baseline, Some(1.5));
        assert_eq!(s[1].gen_tokens_per_s_vs_baseline, Some(1.0));
        let without_cpu = summarize(&rungs[..1]);
        assert_eq!(without_cpu[0].gen_tokens_per_s_vs_baseline, None);
    }

    #[test]
    fn the_plot_names_every_profile_and_sampling_interval() {
        let rungs = summarize(&[
            fake_rung("performance", [31.5; 3], [100.0; 3]),
            fake_rung("low_memory", [25.0; 3], [120.0; 3]),
            fake_rung("cpu", [20.0; 3], [140.0; 3]),
        ]);
        let run = |detection_ms: f64| DowngradeRun {
            from: "performance".into(),
            to: "balanced".into(),
            cause: "Critical".into(),
            used_percent: Some(97.0),
            detection_ms,
            old_exited_ms: Some(detection_ms + 50.0),
            spawned_ms: Some(detection_ms + 55.0),
            ready_ms: detection_ms + 800.0,
            reload_ms: 800.0,
            load_ms: 700.0,
            warmup_ms: 40.0,
        };
        let downgrades = [
            DowngradeSeries {
                sample_ms: 100,
                runs: vec![run(50.0), run(80.0)],
            },
            DowngradeSeries {
                sample_ms: 500,
                runs: vec![run(250.0), run(400.0)],
            },
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("profiles.svg");
        plot(&path, &rungs, &downgrades).expect("plots");
        let svg = std::fs::read_to_string(&path).expect("read");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        // plotters writes each text on a line of its own.
        let texts: Vec<&str> = svg.lines().map(str::trim).collect();
        for name in ["performance", "low_memory", "cpu"] {
            assert!(texts.contains(&name), "no label {name} in the SVG");
        }
        for sample_ms in [100, 500] {
            let legend = format!("sample_ms = {sample_ms}: detection");
            assert!(texts.contains(&legend.as_str()), "no legend {legend}");
        }
        // Each bar's value is written on it (not a tick of the axis).
        assert!(texts.contains(&"31.5"));
        assert!(
            texts.contains(&"LLM VRAM, MiB (measured; GPU only)"),
            "a VRAM panel, empty without a GPU"
        );
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
