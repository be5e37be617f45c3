//! `mate bench all --out DIR`: every benchmark in one go, each result as JSON in DIR, SVG
//! plots, and a Markdown summary with the machine's facts (`summary`), written as soon as each
//! part is done (a long run that is interrupted keeps what it measured).

mod summary;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use mate_worker_llm::cpu::CpuFacts;
use serde::Serialize;
use serde_json::{json, Value};

use self::summary::{splice, summary, write_benchmarks};
use super::{
    bridge, llm, memory,
    plot::{cdf_svg, line_svg, timeline_svg},
    profiles, restart, threads, BridgeBench, LlmBench, MemoryBench, ProfilesBench, RestartBench,
    ThreadPoint,
};

/// Settings of `mate bench all`.
#[derive(Debug, Clone)]
pub struct AllBench {
    pub exe: PathBuf,
    pub model: PathBuf,
    pub out: PathBuf,
    /// Runs per measurement (the benches' own defaults with `--runs 3`).
    pub runs: usize,
    /// A Markdown file (BENCHMARKS.md) whose block between [`summary::BEGIN`] and
    /// [`summary::END`] gets the key
    /// figures of this run.
    pub benchmarks: Option<PathBuf>,
}

/// Every result of one run, as written to DIR, read back as JSON (`ipc` is another
/// program's).
struct Reports {
    machine: Value,
    llm: Value,
    ipc: Value,
    threads: Vec<ThreadPoint>,
    restart: Value,
    profiles: Value,
    bridge: Value,
    memory: Value,
}

fn write_json(dir: &Path, name: &str, value: &impl Serialize) -> anyhow::Result<()> {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// The distributions stored in `report` at each series' path, drawn by [`cdf_svg`].
fn distributions_svg(
    path: &Path,
    title: &str,
    x_label: &str,
    report: &Value,
    series: &[(&str, &[&str])],
) -> anyhow::Result<()> {
    let curves: Vec<_> = series
        .iter()
        .map(|(name, at)| (*name, curve(report, at)))
        .collect();
    cdf_svg(path, title, x_label, &curves)
}

/// The (x, percent) points of a distribution stored by [`super::quantiles`].
fn curve(v: &Value, path: &[&str]) -> Vec<(f64, f64)> {
    let points = path.iter().try_fold(v, |v, key| v.get(key));
    points
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
        .collect()
}

fn number(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, key| v.get(key))?.as_f64()
}

const RESTART_PHASES: [&str; 6] = [
    "kernel tears the process down",
    "supervisor notices the exit",
    "respawn and hello",
    "model load",
    "context, snapshot and the rest",
    "warm-up, then Loaded",
];

/// One row of [`RESTART_PHASES`] per kill of `mate bench restart`, in ms after the kill.
fn restart_rows(restart: &Value) -> Vec<Vec<Option<(f64, f64)>>> {
    let runs = restart["runs_detail"].as_array().into_iter().flatten();
    runs.map(|r| {
        let at = |key: &str| r[key].as_f64();
        let dead = at("dead_ms");
        let (Some(exited), Some(hello), Some(ready), Some(load), Some(warmup)) = (
            at("detection_ms"),
            at("hello_ms"),
            at("ready_ms"),
            at("load_ms"),
            at("warmup_ms"),
        ) else {
            return Vec::new();
        };
        let loaded = (hello + load).min(ready);
        let warm_from = (ready - warmup).max(loaded);
        vec![
            dead.map(|d| (0.0, d)),
            Some((dead.unwrap_or(0.0), exited)),
            Some((exited, hello)),
            Some((hello, loaded)),
            Some((loaded, warm_from)),
            Some((warm_from, ready)),
        ]
    })
    .collect()
}

/// What `mate bench all` prints: where the files went.
#[derive(Debug, Serialize)]
pub struct AllReport {
    out: PathBuf,
    files: [&'static str; 17],
    benchmarks: Option<PathBuf>,
}

/// `machine.json`: what the run ran on.
#[derive(Debug, Serialize)]
struct Machine<'a> {
    cpu: &'a CpuFacts,
    os: &'static str,
    mate: &'static str,
    model: &'a Path,
    gpu: String,
}

/// `threads.json`.
#[derive(Debug, Serialize)]
struct Threads<'a> {
    points: &'a [ThreadPoint],
}

pub fn all(b: &AllBench) -> anyhow::Result<AllReport> {
    super::procfs::linux_only("all")?;
    let out = &b.out;
    // A file without the markers is refused now, not after the long run.
    if let Some(file) = &b.benchmarks {
        let doc =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        splice(&doc, "").with_context(|| file.display().to_string())?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let facts = CpuFacts::sample(std::time::Duration::from_millis(300));
    let machine = Machine {
        cpu: &facts,
        os: std::env::consts::OS,
        mate: env!("CARGO_PKG_VERSION"),
        model: &b.model,
        gpu: crate::gpu::first_look(&crate::gpu::GpuChoice::Auto).map_or_else(
            |note| note.to_string(),
            |(_, look)| look.info.map_or_else(|| "none".into(), |i| i.name),
        ),
    };
    write_json(out, "machine", &machine)?;
    // The summary reads every report as JSON, as a script would.
    let machine = serde_json::to_value(&machine)?;
    let runs = b.runs.max(1);

    eprintln!("mate bench all: llm");
    let llm = llm(&LlmBench {
        exe: b.exe.clone(),
        model: b.model.clone(),
        runs,
        max_tokens: 64,
        threads: 0,
        conversation_tokens: 1500,
    })?;
    write_json(out, "llm", &llm)?;
    let llm = serde_json::to_value(&llm)?;
    distributions_svg(
        &out.join("tokens.svg"),
        "time between streamed tokens, ms: llama.cpp in-process vs through the LLM worker",
        "ms between one token and the next",
        &llm,
        &[
            ("in-process", &["token_gap_distribution_ms", "in_process"]),
            (
                "worker, seen by the supervisor",
                &["token_gap_distribution_ms", "worker"],
            ),
        ],
    )?;

    eprintln!("mate bench all: ipc");
    let ipc = ipc_latency(&b.exe)?;
    write_json(out, "ipc", &ipc)?;
    distributions_svg(
        &out.join("ipc.svg"),
        "heartbeat round trip, µs: mate's framed local socket vs the same bytes on a bare socket",
        "µs",
        &ipc,
        &[
            ("mate", &["mate_distribution_us"]),
            ("bare UnixStream", &["raw_distribution_us"]),
        ],
    )?;

    eprintln!("mate bench all: threads");
    let counts: Vec<u32> = (1..=facts.logical_cores.max(1) as u32).collect();
    let points = threads(&b.model, &counts, runs)?;
    write_json(out, "threads", &Threads { points: &points })?;
    line_svg(
        &out.join("threads.svg"),
        "tokens per second by thread count (medians)",
        "threads",
        "tokens/s",
        &[
            (
                "generation",
                points
                    .iter()
                    .map(|p| (f64::from(p.threads), p.gen_tokens_per_s))
                    .collect(),
            ),
            (
                "prompt / 10",
                points
                    .iter()
                    .map(|p| (f64::from(p.threads), p.prompt_tokens_per_s / 10.0))
                    .collect(),
            ),
        ],
    )?;

    eprintln!("mate bench all: restart");
    let restart = restart(&RestartBench {
        exe: b.exe.clone(),
        model: b.model.clone(),
        runs: 20 * runs / 3,
        threads: 0,
    })?;
    write_json(out, "restart", &restart)?;
    let restart = serde_json::to_value(&restart)?;
    timeline_svg(
        &out.join("restart.svg"),
        "each kill -9 of the LLM worker until it serves again, ms after the kill",
        "ms after kill -9",
        &RESTART_PHASES,
        &restart_rows(&restart),
    )?;

    eprintln!("mate bench all: profiles");
    let profiles = profiles(&ProfilesBench {
        exe: b.exe.clone(),
        model: b.model.clone(),
        runs,
        max_tokens: 64,
        threads: 0,
        out: Some(out.clone()),
    })?;
    let profiles = serde_json::to_value(&profiles)?;

    eprintln!("mate bench all: bridge");
    let bridge = bridge(&BridgeBench {
        unity: None,
        commands: 5000,
        runs: runs.max(3),
        batch: 16,
    })?;
    write_json(out, "bridge", &bridge)?;
    let bridge = serde_json::to_value(&bridge)?;
    line_svg(
        &out.join("bridge.svg"),
        "Unity wire: microseconds per command (single, pipelined, batched 16/line)",
        "sender (1 single, 2 pipelined, 3 batched)",
        "µs per command",
        &[(
            "µs per command",
            ["single", "pipelined", "batched"]
                .iter()
                .enumerate()
                .filter_map(|(i, k)| {
                    Some((i as f64 + 1.0, number(&bridge, &[k, "us_per_command"])?))
                })
                .collect(),
        )],
    )?;
    distributions_svg(
        &out.join("bridge-latency.svg"),
        "Unity wire round trips, µs: one command on an idle wire vs batch lines of 16 on a full one",
        "µs from write to answer",
        &bridge,
        &[
            ("single command", &["single", "distribution_us"]),
            (
                "batch line of 16 (32 lines in flight: queueing included)",
                &["batched", "line_distribution_us"],
            ),
        ],
    )?;

    eprintln!("mate bench all: memory");
    let memory = memory(&MemoryBench {
        exe: b.exe.clone(),
        model: b.model.clone(),
        turns: 500 * runs / 3,
        max_tokens: 16,
        out: Some(out.clone()),
    })?;
    let memory = serde_json::to_value(&memory)?;

    let reports = Reports {
        machine,
        llm,
        ipc,
        threads: points,
        restart,
        profiles,
        bridge,
        memory,
    };
    std::fs::write(out.join("summary.md"), summary(&reports))
        .with_context(|| format!("writing {}", out.join("summary.md").display()))?;
    if let Some(file) = &b.benchmarks {
        write_benchmarks(file, out, &reports, runs)?;
    }
    Ok(AllReport {
        out: out.clone(),
        files: [
            "machine.json",
            "llm.json",
            "tokens.svg",
            "ipc.json",
            "ipc.svg",
            "threads.json",
            "threads.svg",
            "restart.json",
            "restart.svg",
            "profiles.json",
            "profiles.svg",
            "bridge.json",
            "bridge.svg",
            "bridge-latency.svg",
            "memory.json",
            "memory.svg",
            "summary.md",
        ],
        benchmarks: b.benchmarks.clone(),
    })
}

/// `ipc-latency` (built beside `mate` by `cargo build --release --workspace`): mate's framed
/// socket against a bare one. Missing, it is skipped with what to do.
fn ipc_latency(exe: &Path) -> anyhow::Result<Value> {
    let bin = exe.with_file_name(format!("ipc-latency{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        return Ok(json!({
            "skipped": format!("{} not found: `cargo build --release -p mate-benches` builds it",
                               bin.display()),
        }));
    }
    let output = std::process::Command::new(&bin)
        .args(["--iterations", "20000"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !output.status.success() {
        bail!("{} failed: {}", bin.display(), output.status);
    }
    serde_json::from_slice(&output.stdout)
        .with_context(|| format!("reading the JSON of {}", bin.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_row_splits_each_kill_into_its_phases() {
        let restart = json!({"runs_detail": [
            {"dead_ms": 34.0, "detection_ms": 34.2, "hello_ms": 40.0, "ready_ms": 860.0,
             "load_ms": 700.0, "warmup_ms": 40.0},
            {"detection_ms": 35.0, "hello_ms": 41.0, "ready_ms": 900.0, "load_ms": 700.0,
             "warmup_ms": 40.0},
        ]});
        let rows = restart_rows(&restart);
        assert_eq!(
            rows[0],
            vec![
                Some((0.0, 34.0)),
                Some((34.0, 34.2)),
                Some((34.2, 40.0)),
                Some((40.0, 740.0)),
                Some((740.0, 820.0)),
                Some((820.0, 860.0))
            ]
        );
        assert_eq!(rows[1][0], None, "no /proc reading: no teardown bar");
        assert_eq!(rows[1][1], Some((0.0, 35.0)));
        assert_eq!(rows[0].len(), RESTART_PHASES.len());
    }
}
