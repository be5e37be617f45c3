//! `mate bench api`: the same streamed completions through mate's API and through llama.cpp's
//! own `llama-server`, interleaved in one run (same model, threads, context, prompt, greedy
//! sampling): time to first token and tokens/s, each with its ratio. Then a kill -9 of each
//! server's inference process mid-stream (llama-server's stream breaks; mate's completes), and
//! the mixed-workload cache figure: companion turns and an API conversation taking turns, with
//! the conversation stash on and off.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use mate_protocol::WorkerKind;
use serde::Serialize;
use serde_json::{json, Value};

use super::{
    http::{get_status, post_stream, Sse},
    ms,
    procfs::kill9,
    stats::{median, spread, Spread},
    up::{
        chat, in_state_dir, shut_down, start_up, status_now, wait_running, worker_pid, UpProcess,
    },
};

/// Settings of `mate bench api`.
#[derive(Debug, Clone)]
pub struct ApiBench {
    pub exe: PathBuf,
    pub model: PathBuf,
    pub runs: usize,
    pub max_tokens: u32,
    /// Both servers' generation threads (0: mate's CPU rule picks, and llama-server gets the
    /// same number).
    pub threads: u32,
    /// llama-server's executable; `None` skips that arm (the report says how to build it).
    pub llama_server: Option<PathBuf>,
}

/// The targets, against llama-server in the same run.
const TOKENS_PER_S_TARGET: f64 = 0.95;
const TTFT_TARGET: f64 = 1.15;
/// Context for both servers.
const N_CTX: u32 = 4096;
/// Pieces of the reply read before the kill.
const PIECES_BEFORE_KILL: usize = 8;
const LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Serialize)]
pub struct ApiReport {
    pub model: String,
    pub threads: u32,
    pub max_tokens: u32,
    pub runs: usize,
    pub mate: Arm,
    pub llama_server: Option<Arm>,
    /// Why there is no llama-server arm.
    pub llama_server_skipped: Option<String>,
    /// mate's medians over llama-server's: tokens/s (target ≥ 0.95) and TTFT (target ≤ 1.15).
    pub tokens_per_s_ratio: Option<f64>,
    pub ttft_ratio: Option<f64>,
    pub targets_met: Option<bool>,
    pub kills: Vec<KillRun>,
    pub mixed: Vec<Mixed>,
}

/// One server's streamed completions.
#[derive(Debug, Clone, Serialize)]
pub struct Arm {
    pub server: &'static str,
    ttft_ms: Spread,
    tokens_per_s: Spread,
    pub runs: Vec<Run>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// From sending the request to the first text, on the client's side.
    pub ttft_ms: f64,
    pub tokens: u64,
    /// Tokens after the first over the time from the first text to the last.
    pub tokens_per_s: f64,
}

/// A kill -9 of the inference process after a few pieces of a streamed reply.
#[derive(Debug, Clone, Serialize)]
pub struct KillRun {
    pub server: &'static str,
    /// Whether the client got the whole reply and `[DONE]`.
    pub completed: bool,
    /// What the client got instead.
    pub error: Option<String>,
    pub chars: usize,
    /// The longest gap between two pieces (the restart, for mate).
    pub longest_pause_ms: f64,
}

/// Companion turns and an API conversation taking turns on one mate.
#[derive(Debug, Clone, Serialize)]
pub struct Mixed {
    pub stash: bool,
    /// Prompt tokens found in the KV cache, over all prompt tokens, for the turns after each
    /// conversation's first.
    pub cached_fraction: f64,
    /// Prompt tokens decoded again, summed over those turns.
    pub decoded_tokens: u64,
    /// Median time to first token of those turns (the worker's figure).
    pub ttft_ms: f64,
}

pub fn api(bench: &ApiBench) -> anyhow::Result<ApiReport> {
    let threads = match bench.threads {
        0 => {
            mate_worker_llm::cpu::CpuFacts::sample(Duration::from_millis(300)).generation_threads()
        }
        n => n,
    };
    let (mate_runs, server_runs, skipped, kills) = in_state_dir("api", |dir| {
        let (mut up, pids, mate_url) = mate_up(bench, dir, threads, true)?;
        let mut server = match &bench.llama_server {
            Some(exe) => Some(LlamaServer::start(exe, &bench.model, threads)?),
            None => None,
        };
        let mut mate_runs = Vec::new();
        let mut server_runs = Vec::new();
        // Interleaved, each round in turn order, so drift in the machine hits both.
        for round in 0..bench.runs + 1 {
            let prompt = prompt(round);
            let mut arms: Vec<(&str, &mut Vec<Run>)> = vec![(&mate_url, &mut mate_runs)];
            if let Some(s) = &server {
                arms.push((&s.url, &mut server_runs));
            }
            if round % 2 == 1 {
                arms.reverse();
            }
            for (url, runs) in arms {
                let run = stream_once(url, &prompt, bench.max_tokens)?;
                // Round 0 warms both up and is not counted.
                if round > 0 {
                    runs.push(run);
                }
            }
        }
        let mut kills = vec![kill_mate(dir, &mate_url, bench.max_tokens)?];
        if let Some(s) = &mut server {
            kills.push(s.kill_mid_stream(bench.max_tokens));
        }
        let skipped = server.is_none().then(|| {
            "no llama-server: build it with benches/llama-server/build, then pass \
             --llama-server target/llama-server/bin/llama-server"
                .to_string()
        });
        shut_down(dir, &mut up, &pids)?;
        Ok((mate_runs, server_runs, skipped, kills))
    })?;
    let mut mixed = Vec::new();
    for stash in [true, false] {
        mixed.push(in_state_dir("api", |dir| {
            mixed_workload(bench, dir, threads, stash)
        })?);
    }
    let mate = arm("mate", mate_runs);
    let llama_server = (!server_runs.is_empty()).then(|| arm("llama-server", server_runs));
    let ratio = |f: fn(&Arm) -> f64| llama_server.as_ref().map(|s| f(&mate) / f(s));
    let tokens_per_s_ratio = ratio(|a| a.tokens_per_s.median);
    let ttft_ratio = ratio(|a| a.ttft_ms.median);
    Ok(ApiReport {
        model: bench.model.display().to_string(),
        threads,
        max_tokens: bench.max_tokens,
        runs: bench.runs,
        targets_met: tokens_per_s_ratio
            .zip(ttft_ratio)
            .map(|(t, f)| t >= TOKENS_PER_S_TARGET && f <= TTFT_TARGET),
        tokens_per_s_ratio,
        ttft_ratio,
        mate,
        llama_server,
        llama_server_skipped: skipped,
        kills,
        mixed,
    })
}

/// `mate up` in `dir` on the bench's config, every worker running: the process, the workers'
/// pids (to check at shutdown) and the API's base URL. `stash` false turns the conversation
/// stash off.
fn mate_up(
    bench: &ApiBench,
    dir: &Path,
    threads: u32,
    stash: bool,
) -> anyhow::Result<(UpProcess, Vec<u32>, String)> {
    let stash_mb = if stash { "" } else { "stash_mb = 0\n" };
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "# Written by `mate bench api`.\n[llm]\nthreads = {threads}\nsnapshots = false\n\
             {stash_mb}[chat]\nrepeat_penalty = 1.0\nmax_tokens = 32\n\
             [api]\naddress = \"127.0.0.1:0\"\navatar = false\n[gpu]\nmonitor = \"off\"\n"
        ),
    )?;
    let mut up = start_up(&bench.exe, dir, &config, &bench.model, &[])?;
    let status = wait_running(dir, &mut up, &WorkerKind::ALL, LIMIT)?;
    let pids = status.workers.iter().filter_map(|w| w.pid).collect();
    Ok((up, pids, api_url(dir)?))
}

/// A prompt that differs from the start in every round, so no server answers from its cache.
fn prompt(round: usize) -> String {
    format!(
        "Story number {round}. Once upon a time, in a small town by the sea, there lived an old \
         clockmaker who"
    )
}

fn api_url(dir: &Path) -> anyhow::Result<String> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let status = status_now(dir)?;
        let address = status
            .workers
            .iter()
            .find_map(|w| w.vitals.api.as_ref())
            .map(|a| a.address.clone())
            .filter(|a| !a.is_empty());
        if let Some(address) = address {
            return Ok(format!("http://{address}"));
        }
        if Instant::now() > deadline {
            bail!("the API worker did not listen");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn completion(prompt: &str, max_tokens: u32) -> Value {
    json!({
        "model": "bench",
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": true,
        "stream_options": { "include_usage": true },
    })
}

fn piece(json: &Value) -> Option<&str> {
    let choice = &json["choices"][0];
    choice["text"]
        .as_str()
        .or_else(|| choice["delta"]["content"].as_str())
        .filter(|t| !t.is_empty())
}

/// One streamed reply read to its `[DONE]`, as the client saw it.
struct Streamed {
    sent: Instant,
    text: String,
    /// When the first and the last text arrived.
    first: Option<Instant>,
    last: Instant,
    pieces: u64,
    /// The final chunk's `usage`, when the server sent one.
    usage: Value,
}

fn read_stream(url: &str, path: &str, body: &Value) -> anyhow::Result<Streamed> {
    let sent = Instant::now();
    let mut stream = post_stream(url, path, body)?;
    let mut got = Streamed {
        sent,
        text: String::new(),
        first: None,
        last: sent,
        pieces: 0,
        usage: Value::Null,
    };
    while let Sse::Data { at, json } = stream.next()? {
        if let Some(p) = piece(&json) {
            got.first.get_or_insert(at);
            got.last = at;
            got.pieces += 1;
            got.text.push_str(p);
        }
        if !json["usage"].is_null() {
            got.usage = json["usage"].clone();
        }
    }
    Ok(got)
}

fn stream_once(url: &str, prompt: &str, max_tokens: u32) -> anyhow::Result<Run> {
    let got = read_stream(url, "/v1/completions", &completion(prompt, max_tokens))?;
    let first = got
        .first
        .with_context(|| format!("{url} streamed no text"))?;
    // llama-server streams one token per event; mate groups a few, and says how many in all.
    let tokens = got.usage["completion_tokens"]
        .as_u64()
        .unwrap_or(got.pieces);
    let (sent, last) = (got.sent, got.last);
    let span = (last - first).as_secs_f64();
    Ok(Run {
        ttft_ms: ms(first - sent),
        tokens,
        tokens_per_s: if span > 0.0 {
            tokens.saturating_sub(1) as f64 / span
        } else {
            f64::NAN
        },
    })
}

fn arm(server: &'static str, runs: Vec<Run>) -> Arm {
    let ttft: Vec<f64> = runs.iter().map(|r| r.ttft_ms).collect();
    let tps: Vec<f64> = runs.iter().map(|r| r.tokens_per_s).collect();
    Arm {
        server,
        ttft_ms: spread(&ttft),
        tokens_per_s: spread(&tps),
        runs,
    }
}

/// Reads a streamed reply, running `kill` after a few pieces; what the client got.
fn read_through_kill(
    server: &'static str,
    url: &str,
    max_tokens: u32,
    kill: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<KillRun> {
    let mut stream = post_stream(url, "/v1/completions", &completion(&prompt(99), max_tokens))?;
    let (mut text, mut pieces, mut last, mut longest) = (String::new(), 0, None, 0.0f64);
    let mut kill = Some(kill);
    let result = loop {
        match stream.next() {
            Ok(Sse::Data { at, json }) => {
                if let Some(p) = piece(&json) {
                    text.push_str(p);
                    pieces += 1;
                    if let Some(prev) = last.replace(at) {
                        longest = longest.max(ms(at - prev));
                    }
                }
                if let Some(message) = json["error"]["message"].as_str() {
                    break Err(message.to_string());
                }
                if pieces == PIECES_BEFORE_KILL {
                    if let Some(kill) = kill.take() {
                        kill()?;
                    }
                }
            }
            Ok(Sse::Done) => break Ok(()),
            Err(e) => break Err(format!("{e:#}")),
        }
    };
    Ok(KillRun {
        server,
        completed: result.is_ok(),
        error: result.err(),
        chars: text.chars().count(),
        longest_pause_ms: longest,
    })
}

fn kill_mate(dir: &Path, url: &str, max_tokens: u32) -> anyhow::Result<KillRun> {
    let pid = worker_pid(&status_now(dir)?, WorkerKind::Llm)?;
    read_through_kill("mate", url, max_tokens.max(64), || kill9(pid))
}

/// llama.cpp's own server on a free port.
struct LlamaServer {
    child: Child,
    url: String,
}

impl LlamaServer {
    fn start(exe: &Path, model: &Path, threads: u32) -> anyhow::Result<LlamaServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let t = threads.to_string();
        let child = Command::new(exe)
            .arg("-m")
            .arg(model)
            .args(["-t", &t, "-tb", &t, "-c", &N_CTX.to_string(), "-np", "1"])
            // As mate's `cpu` rung: no flash attention (llama-server's default is `auto`).
            .args(["-fa", "off"])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("running {}", exe.display()))?;
        let mut server = LlamaServer {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + LIMIT;
        while get_status(&server.url, "/health") != 200 {
            if let Some(exit) = server.child.try_wait()? {
                bail!("llama-server exited at start ({exit})");
            }
            if Instant::now() > deadline {
                bail!("llama-server did not become healthy");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    fn kill_mid_stream(&mut self, max_tokens: u32) -> KillRun {
        let pid = self.child.id();
        let url = self.url.clone();
        read_through_kill("llama-server", &url, max_tokens.max(64), || kill9(pid)).unwrap_or_else(
            |e| KillRun {
                server: "llama-server",
                completed: false,
                error: Some(format!("{e:#}")),
                chars: 0,
                longest_pause_ms: 0.0,
            },
        )
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Companion turns (`ctl chat`) and an API conversation, taking turns: without the stash each
/// one displaces the other from the KV cache and is decoded again at its next turn.
fn mixed_workload(
    bench: &ApiBench,
    dir: &Path,
    threads: u32,
    stash: bool,
) -> anyhow::Result<Mixed> {
    const ROUNDS: usize = 5;
    let (mut up, pids, url) = mate_up(bench, dir, threads, stash)?;
    let mut history = vec![
        json!({"role": "system", "content": "You are a helpful assistant who writes about ships."}),
    ];
    let (mut prompt, mut cached, mut ttft) = (0u64, 0u64, Vec::new());
    for round in 0..ROUNDS {
        let turn = chat(dir, &format!("Tell me about your day, part {round}."))?;
        history.push(json!({"role": "user", "content": format!("Describe ship number {round}.")}));
        let (reply, usage, api_ttft) = api_chat(&url, &history)?;
        history.push(json!({"role": "assistant", "content": reply}));
        if round > 0 {
            prompt += u64::from(turn.prompt_tokens) + usage.0;
            cached += u64::from(turn.cached_tokens) + usage.1;
            ttft.push(turn.ttft_ms);
            ttft.push(api_ttft);
        }
    }
    shut_down(dir, &mut up, &pids)?;
    Ok(Mixed {
        stash,
        cached_fraction: cached as f64 / prompt.max(1) as f64,
        decoded_tokens: prompt - cached,
        ttft_ms: median(ttft),
    })
}

/// One streamed API chat turn: the reply, (prompt tokens, cached tokens), and the client's
/// time to first text.
fn api_chat(url: &str, messages: &[Value]) -> anyhow::Result<(String, (u64, u64), f64)> {
    let body = json!({
        "model": "bench",
        "messages": messages,
        "max_tokens": 32,
        "temperature": 0,
        "stream": true,
        "stream_options": { "include_usage": true },
    });
    let got = read_stream(url, "/v1/chat/completions", &body)?;
    let usage = (
        got.usage["prompt_tokens"].as_u64().unwrap_or(0),
        got.usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or(0),
    );
    let ttft = got.first.map_or(f64::NAN, |f| ms(f - got.sent));
    Ok((got.text, usage, ttft))
}
