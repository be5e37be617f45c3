//! `mate bench llm` and `mate bench threads`: the LLM worker measured through its process and
//! the protocol, side by side in the same run with the same work done directly with
//! `llama-cpp-2` in this process. Machines are noisy, so every figure is a median of several
//! runs and comparisons are ratios.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use mate_protocol::{
    ChatMessage, ChatRole, ChatTemplate, Coalesce, FromWorker, LlmOptions, LoadReport, Profile,
    Sampling, ToWorker, WorkerKind,
};
use mate_worker_llm::{baseline, cpu::CpuFacts, prompt::render_fallback};
use serde::Serialize;
use serde_json::json;

use crate::direct::DirectWorker;

const PROMPT: &str =
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

fn profile(n_ctx: u32, threads: u32) -> Profile {
    Profile {
        n_threads: threads,
        ..Profile::cpu(n_ctx)
    }
}

fn user(text: &str) -> ChatMessage {
    ChatMessage {
        role: ChatRole::User,
        text: text.into(),
    }
}

/// A worker in its own short-pathed temp dir.
struct Spawned {
    worker: DirectWorker,
    _dir: tempfile::TempDir,
}

fn spawn(exe: &Path) -> anyhow::Result<Spawned> {
    let dir = tempfile::Builder::new().prefix("mate-b").tempdir()?;
    let worker = DirectWorker::spawn(exe, WorkerKind::Llm, dir.path(), &dir.path().join("w.log"))?;
    Ok(Spawned { worker, _dir: dir })
}

fn load(
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
struct Observed {
    ttft_ms: f64,
    gen_tokens_per_s: f64,
    generated_tokens: u32,
    worker_reported_gen_tokens_per_s: f32,
}

fn generate(w: &mut DirectWorker, max_tokens: u32) -> anyhow::Result<Observed> {
    let sent = Instant::now();
    w.send(&ToWorker::Generate {
        request_id: 1,
        messages: vec![user(PROMPT)],
        sampling: Sampling::greedy(max_tokens),
    })?;
    let mut first = None;
    let stats = w.recv_until(LIMIT, |m| match m {
        FromWorker::Chunk { .. } => {
            first.get_or_insert_with(Instant::now);
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
    let restart = restart(b, threads)?;
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
        "runs_detail": {
            "in_process": base,
            "worker_cold": cold,
            "worker_warm": warm,
        },
    }))
}

/// Restart-to-ready: spawn → loaded → conversation in the cache, with the snapshot and
/// without (re-ingesting the whole conversation).
fn restart(b: &LlmBench, threads: u32) -> anyhow::Result<serde_json::Value> {
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
    fn median_of_even_and_odd() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
