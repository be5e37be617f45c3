//! `mate bench all --out DIR`: every benchmark in one go, each result as JSON in DIR, SVG
//! plots, and a Markdown summary with the machine's facts, written as soon as each part is
//! done (a long run that is interrupted keeps what it measured).

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};
use mate_worker_llm::cpu::CpuFacts;
use serde_json::{json, Value};

use super::{
    bridge, llm,
    plot::{cdf_svg, line_svg, timeline_svg},
    profiles, restart, threads, BridgeBench, LlmBench, ProfilesBench, RestartBench,
};

/// Settings of `mate bench all`.
#[derive(Debug, Clone)]
pub struct AllBench {
    pub exe: PathBuf,
    pub model: PathBuf,
    pub out: PathBuf,
    /// Runs per measurement (the benches' own defaults with `--runs 3`).
    pub runs: usize,
    /// A Markdown file (BENCHMARKS.md) whose block between [`BEGIN`] and [`END`] gets the key
    /// figures of this run.
    pub benchmarks: Option<PathBuf>,
}

/// The markers of the generated block in BENCHMARKS.md.
pub const BEGIN: &str = "<!-- mate bench all: begin (generated, edits here are overwritten) -->";
pub const END: &str = "<!-- mate bench all: end -->";

/// Every result of one run, as written to DIR.
struct Reports {
    machine: Value,
    llm: Value,
    ipc: Value,
    threads: Vec<super::ThreadPoint>,
    restart: Value,
    profiles: Value,
    bridge: Value,
    memory: Value,
}

fn write_json(dir: &Path, name: &str, value: &Value) -> anyhow::Result<()> {
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

/// The (x, percent) points of a distribution stored by [`super::plot::quantiles`].
fn curve(v: &Value, path: &[&str]) -> Vec<(f64, f64)> {
    let points = path.iter().try_fold(v, |v, key| v.get(key));
    points
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
        .collect()
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

fn number(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, key| v.get(key))?.as_f64()
}

fn cell(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
}

pub fn all(b: &AllBench) -> anyhow::Result<Value> {
    let out = &b.out;
    // A file without the markers is refused now, not after the long run.
    if let Some(file) = &b.benchmarks {
        let doc =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        splice(&doc, "").with_context(|| file.display().to_string())?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let facts = CpuFacts::sample(std::time::Duration::from_millis(300));
    let machine = json!({
        "cpu": facts,
        "os": std::env::consts::OS,
        "mate": env!("CARGO_PKG_VERSION"),
        "model": b.model,
        "gpu": crate::gpu::first_look(&crate::gpu::GpuChoice::Auto)
            .map_or_else(|note| note, |(_, look)| {
                look.info.map_or_else(|| "none".into(), |i| i.name)
            }),
    });
    write_json(out, "machine", &machine)?;
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
    write_json(out, "threads", &json!({ "points": points }))?;
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

    eprintln!("mate bench all: bridge");
    let bridge = bridge(&BridgeBench {
        unity: None,
        commands: 5000,
        runs: runs.max(3),
        batch: 16,
    })?;
    write_json(out, "bridge", &bridge)?;
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
    let memory = super::memory(&super::MemoryBench {
        exe: b.exe.clone(),
        model: b.model.clone(),
        turns: 500 * runs / 3,
        max_tokens: 16,
        out: Some(out.clone()),
    })?;

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
    Ok(json!({
        "out": out,
        "files": ["machine.json", "llm.json", "tokens.svg", "ipc.json", "ipc.svg", "threads.json",
                  "threads.svg", "restart.json", "restart.svg", "profiles.json", "profiles.svg",
                  "bridge.json", "bridge.svg", "bridge-latency.svg", "memory.json", "memory.svg",
                  "summary.md"],
        "benchmarks": b.benchmarks,
    }))
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

/// `doc` with the text between [`BEGIN`] and [`END`] replaced by `block`.
fn splice(doc: &str, block: &str) -> anyhow::Result<String> {
    let (Some(begin), Some(end)) = (doc.find(BEGIN), doc.find(END)) else {
        bail!("no generated block: put the lines\n{BEGIN}\n{END}\nwhere the figures go");
    };
    if end < begin {
        bail!("the end marker comes before the begin marker");
    }
    let head = &doc[..begin + BEGIN.len()];
    Ok(format!("{head}\n{block}{}", &doc[end..]))
}

/// Rewrites the generated block of `file` with this run's key figures and plots (linked
/// relative to the file), atomically.
fn write_benchmarks(file: &Path, out: &Path, r: &Reports, runs: usize) -> anyhow::Result<()> {
    let doc =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (dir_abs, out_abs) = (std::fs::canonicalize(dir)?, std::fs::canonicalize(out)?);
    let rel = out_abs.strip_prefix(&dir_abs).unwrap_or(&out_abs);
    let prefix = format!("{}/", rel.display()).replace('\\', "/");
    let mut block = String::new();
    let _ = writeln!(
        block,
        "{}\nRegenerate with `mate bench all --runs {runs} --out {} --benchmarks {}` \
         (about {} minutes here). Every plot and figure of that run, with its JSON, is in \
         [`{prefix}summary.md`]({prefix}summary.md).\n",
        machine_line(&r.machine),
        prefix.trim_end_matches('/'),
        file.file_name().map_or_else(
            || file.display().to_string(),
            |n| n.to_string_lossy().into()
        ),
        5 + 10 * runs / 3,
    );
    headline(&mut block, r);
    for (svg, alt) in PLOTS {
        let _ = writeln!(block, "\n![{alt}]({prefix}{svg})");
    }
    let text = splice(&doc, &block)?;
    let tmp = file.with_extension("md.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("replacing {}", file.display()))
}

/// The plots of a run, in the order a reader wants them.
const PLOTS: [(&str, &str); 8] = [
    ("tokens.svg", "time between streamed tokens"),
    ("ipc.svg", "heartbeat round trips"),
    ("restart.svg", "restart timeline"),
    ("bridge-latency.svg", "Unity wire round trips"),
    ("memory.svg", "memory over a long session"),
    ("threads.svg", "tokens per second by thread count"),
    ("profiles.svg", "profiles"),
    ("bridge.svg", "Unity wire cost per command"),
];

fn machine_line(machine: &Value) -> String {
    let cpu = &machine["cpu"];
    format!(
        "Machine: {} ({} physical / {} logical cores), {:.1} GiB RAM, GPU: {}, {}. mate {}.",
        cpu["brand"].as_str().unwrap_or("?"),
        cpu["physical_cores"],
        cpu["logical_cores"],
        cpu["total_memory"].as_f64().unwrap_or(0.0) / f64::from(1u32 << 30),
        machine["gpu"].as_str().unwrap_or("?"),
        machine["os"].as_str().unwrap_or("?"),
        machine["mate"].as_str().unwrap_or("?"),
    )
}

/// The latency at `percent` of a stored distribution.
fn at_percent(v: &Value, path: &[&str], percent: f64) -> Option<f64> {
    curve(v, path)
        .into_iter()
        .find(|p| p.1 >= percent)
        .map(|p| p.0)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    a.zip(b).map(|(a, b)| a / b).filter(|r| r.is_finite())
}

/// The key figures, each beside its baseline from the same run, as a Markdown table.
fn headline(md: &mut String, r: &Reports) {
    let _ = writeln!(
        md,
        "| measure | mate | baseline, same run | mate ÷ baseline |\n|---|---|---|---|"
    );
    let mut row = |what: &str, mate: String, base: String, ratio: Option<f64>| {
        let _ = writeln!(md, "| {what} | {mate} | {base} | {} |", cell(ratio, 2));
    };
    let (llm, ipc, restart, bridge) = (&r.llm, &r.ipc, &r.restart, &r.bridge);
    let worker_gen = number(llm, &["worker", "gen_tokens_per_s_warm_worker"]);
    let base_gen = number(llm, &["in_process", "gen_tokens_per_s"]);
    row(
        "generation, tok/s",
        format!("{} (LLM worker)", cell(worker_gen, 1)),
        format!("{} (llama.cpp in-process)", cell(base_gen, 1)),
        ratio(worker_gen, base_gen),
    );
    let gaps = |who: &str, p: f64| at_percent(llm, &["token_gap_distribution_ms", who], p);
    row(
        "time between tokens p50 / p99, ms",
        format!(
            "{} / {}",
            cell(gaps("worker", 50.0), 2),
            cell(gaps("worker", 99.0), 2)
        ),
        format!(
            "{} / {}",
            cell(gaps("in_process", 50.0), 2),
            cell(gaps("in_process", 99.0), 2)
        ),
        ratio(gaps("worker", 50.0), gaps("in_process", 50.0)),
    );
    let (ttft, base_ttft) = (
        number(llm, &["worker", "ttft_warm_ms"]),
        number(llm, &["in_process", "ttft_ms"]),
    );
    row(
        "time to first token, ms",
        cell(ttft, 1),
        cell(base_ttft, 1),
        ratio(ttft, base_ttft),
    );
    let us = |k: &str| number(ipc, &[k]);
    row(
        "heartbeat round trip p50 / p99, µs",
        format!(
            "{} / {} (framed local socket)",
            cell(us("mate_p50_us"), 1),
            cell(us("mate_p99_us"), 1)
        ),
        format!(
            "{} / {} (bare UnixStream)",
            cell(us("raw_p50_us"), 1),
            cell(us("raw_p99_us"), 1)
        ),
        us("p50_ratio"),
    );
    let ready = number(restart, &["ready_ms", "median"]);
    let load = number(restart, &["load_ms", "median"])
        .zip(number(restart, &["warmup_ms", "median"]))
        .map(|(l, w)| l + w);
    row(
        "kill -9 of the LLM worker → serving again, ms",
        cell(ready, 0),
        format!("{} (its model load + warm-up)", cell(load, 0)),
        ratio(ready, load),
    );
    let (snap, reingest) = (
        number(llm, &["restart", "with_snapshot_ms"]),
        number(llm, &["restart", "reingest_ms"]),
    );
    row(
        &format!(
            "restart with a {}-token conversation, ms",
            cell(number(llm, &["restart", "conversation_tokens"]), 0)
        ),
        format!("{} (KV snapshot)", cell(snap, 0)),
        format!("{} (decoding it again)", cell(reingest, 0)),
        ratio(snap, reingest),
    );
    let (batched, single) = (
        number(bridge, &["batched", "us_per_command"]),
        number(bridge, &["single", "us_per_command"]),
    );
    row(
        "Unity wire, µs per command",
        format!("{} (batched)", cell(batched, 2)),
        format!("{} (one per round trip)", cell(single, 2)),
        ratio(batched, single),
    );
    let turns = &r.memory["turns"];
    for g in r.memory["growth_over_turns"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = g["process"].as_str().unwrap_or("?");
        let grew = g["growth_mib"].as_f64();
        let bound = g["bound_mib"].as_f64();
        row(
            &format!("{name} RSS growth over {turns} turns, MiB"),
            format!(
                "{} → {} (+{})",
                cell(g["from_mib"].as_f64(), 1),
                cell(g["after_turns_mib"].as_f64(), 1),
                cell(grew, 1)
            ),
            format!("bound {}", cell(bound, 0)),
            ratio(grew, bound),
        );
    }
}

fn memory_table(md: &mut String, memory: &Value) {
    let _ = writeln!(
        md,
        "\n## Memory over {} turns (`memory.json`, `memory.svg`)\n\n![memory](memory.svg)\n\n\
         | process | growth MiB: load → last turn (bound) | second half of the turns (bound) |\n\
         |---|---|---|",
        memory["turns"]
    );
    let halves = memory["growth_over_second_half"].as_array();
    for (i, g) in memory["growth_over_turns"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let half = halves.and_then(|h| h.get(i));
        let _ = writeln!(
            md,
            "| {} | {} → {}: +{} ({}) | +{} ({}) |",
            g["process"].as_str().unwrap_or("?"),
            cell(g["from_mib"].as_f64(), 1),
            cell(g["after_turns_mib"].as_f64(), 1),
            cell(g["growth_mib"].as_f64(), 1),
            cell(g["bound_mib"].as_f64(), 0),
            cell(half.and_then(|h| h["growth_mib"].as_f64()), 1),
            cell(half.and_then(|h| h["bound_mib"].as_f64()), 0),
        );
    }
    details(md, memory);
}

/// The whole result, folded away under its table; distributions are left to the JSON files
/// and their plots.
fn details(md: &mut String, value: &Value) {
    fn drop_distributions(v: &Value) -> Value {
        match v {
            Value::Object(map) => map
                .iter()
                .filter(|(key, _)| !key.contains("distribution"))
                .map(|(key, v)| (key.clone(), drop_distributions(v)))
                .collect(),
            Value::Array(items) => items.iter().map(drop_distributions).collect(),
            other => other.clone(),
        }
    }
    let _ = writeln!(
        md,
        "\n<details><summary>all figures</summary>\n\n```json\n{}\n```\n\n</details>\n",
        serde_json::to_string_pretty(&drop_distributions(value)).unwrap_or_default()
    );
}

fn summary(r: &Reports) -> String {
    let (llm, points, restart, profiles, bridge) =
        (&r.llm, &r.threads, &r.restart, &r.profiles, &r.bridge);
    let mut md = String::from("# mate benchmarks\n\n");
    let _ = writeln!(
        md,
        "{}\nRegenerate with `mate bench all --out DIR`; every figure is a median, and \
         comparisons are made in the same run.\n",
        machine_line(&r.machine)
    );
    headline(&mut md, r);
    md.push('\n');
    let _ = writeln!(md, "## LLM worker vs llama.cpp in-process (`llm.json`)\n");
    let _ = writeln!(md, "| | in-process | worker |\n|---|---|---|");
    for (name, a, b) in [
        (
            "generation tok/s",
            ["in_process", "gen_tokens_per_s"],
            ["worker", "gen_tokens_per_s"],
        ),
        (
            "TTFT ms (worker: warm)",
            ["in_process", "ttft_ms"],
            ["worker", "ttft_warm_ms"],
        ),
        ("load ms", ["in_process", "load_ms"], ["worker", "load_ms"]),
    ] {
        let _ = writeln!(
            md,
            "| {name} | {} | {} |",
            cell(number(llm, &a), 1),
            cell(number(llm, &b), 1)
        );
    }
    let _ = writeln!(
        md,
        "\nWorker over in-process generation speed: {}. Restart with a KV snapshot vs \
         decoding the conversation again: {} ms vs {} ms.",
        cell(
            number(llm, &["ratios", "worker_over_in_process_gen_tokens_per_s"]),
            3
        ),
        cell(number(llm, &["restart", "with_snapshot_ms"]), 0),
        cell(number(llm, &["restart", "reingest_ms"]), 0),
    );
    let _ = writeln!(md, "\n![time between streamed tokens](tokens.svg)");
    details(&mut md, llm);
    let _ = writeln!(
        md,
        "## Heartbeat round trip, mate's socket vs a bare one (`ipc.json`, `ipc.svg`)\n"
    );
    if let Some(why) = r.ipc["skipped"].as_str() {
        let _ = writeln!(md, "Skipped: {why}.\n");
    } else {
        let _ = writeln!(md, "![heartbeat round trips](ipc.svg)");
        details(&mut md, &r.ipc);
    }
    let _ = writeln!(md, "## Threads (`threads.json`, `threads.svg`)\n");
    let _ = writeln!(md, "![threads](threads.svg)\n");
    let _ = writeln!(
        md,
        "| threads | prompt tok/s | generation tok/s |\n|---|---|---|"
    );
    for p in points {
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.1} |",
            p.threads, p.prompt_tokens_per_s, p.gen_tokens_per_s
        );
    }
    let _ = writeln!(
        md,
        "\n## Restart after kill -9 of the LLM worker (`restart.json`)\n"
    );
    let _ = writeln!(md, "| ms | median | p90 | max |\n|---|---|---|---|");
    for (name, key) in [
        ("kill → exit noticed", "detection_ms"),
        ("kill → serving again", "ready_ms"),
        ("… minus load and warm-up", "overhead_ms"),
        ("load", "load_ms"),
    ] {
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} |",
            cell(number(restart, &[key, "median"]), 1),
            cell(number(restart, &[key, "p90"]), 1),
            cell(number(restart, &[key, "max"]), 1),
        );
    }
    let _ = writeln!(md, "\n![restart timeline](restart.svg)");
    details(&mut md, restart);
    let _ = writeln!(md, "## Profiles (`profiles.json`, `profiles.svg`)\n");
    let _ = writeln!(md, "![profiles](profiles.svg)\n");
    details(&mut md, profiles);
    let _ = writeln!(md, "## Unity bridge (`bridge.json`, `bridge.svg`)\n");
    let _ = writeln!(
        md,
        "| sender | p50 µs | p99 µs | commands/s | µs/command |\n|---|---|---|---|---|"
    );
    for k in ["single", "pipelined", "batched"] {
        let _ = writeln!(
            md,
            "| {k} | {} | {} | {} | {} |",
            cell(number(bridge, &[k, "p50_us"]), 1),
            cell(number(bridge, &[k, "p99_us"]), 1),
            cell(number(bridge, &[k, "commands_per_s"]), 0),
            cell(number(bridge, &[k, "us_per_command"]), 2),
        );
    }
    let _ = writeln!(
        md,
        "\nBatched vs single: {}×. A batch line's round trip (16 commands, up to 32 lines in \
         flight) p50 / p99: {} / {} µs.\n\n![Unity wire round trips](bridge-latency.svg)\n\n\
         ![Unity wire cost per command](bridge.svg)",
        cell(number(bridge, &["ratios", "batched_vs_single"]), 1),
        cell(number(bridge, &["batched", "line_p50_us"]), 1),
        cell(number(bridge, &["batched", "line_p99_us"]), 1),
    );
    details(&mut md, bridge);
    memory_table(&mut md, &r.memory);
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reports() -> Reports {
        let distribution = |scale: f64| -> Vec<(f64, f64)> {
            (0..=200)
                .map(|i| (f64::from(i) * scale, f64::from(i) / 2.0))
                .collect()
        };
        Reports {
            machine: json!({"cpu": {"brand": "Test CPU", "physical_cores": 2,
                "logical_cores": 4, "total_memory": 8u64 << 30}, "gpu": "none", "os": "linux",
                "mate": "0.1.0"}),
            llm: json!({"in_process": {"gen_tokens_per_s": 50.0}, "worker":
                {"gen_tokens_per_s_warm_worker": 49.5},
                "token_gap_distribution_ms": {"in_process": distribution(0.2),
                    "worker": distribution(0.21)},
                "restart": {"conversation_tokens": 1951, "with_snapshot_ms": 700.0,
                    "reingest_ms": 9800.0}}),
            ipc: json!({"skipped": "ipc-latency not found"}),
            threads: vec![super::super::ThreadPoint {
                threads: 2,
                prompt_tokens_per_s: 300.0,
                gen_tokens_per_s: 45.5,
            }],
            restart: json!({"detection_ms": {"median": 33.7, "p90": 40.0, "max": 41.0},
                "ready_ms": {"median": 860.0}, "load_ms": {"median": 700.0},
                "warmup_ms": {"median": 40.0}}),
            profiles: json!({}),
            bridge: json!({"single": {"p50_us": 30.1, "commands_per_s": 30000.0,
                "us_per_command": 33.0}, "batched": {"us_per_command": 2.64},
                "ratios": {"batched_vs_single": 12.5}}),
            memory: json!({"turns": 500, "growth_over_turns": [{"process": "llm",
                "from_mib": 379.0, "after_turns_mib": 441.0, "growth_mib": 62.0,
                "bound_mib": 64.0}], "growth_over_second_half": [{"process": "llm",
                "growth_mib": 0.4, "bound_mib": 4.0}]}),
        }
    }

    #[test]
    fn the_summary_reads_the_figures_and_says_when_one_is_missing() {
        let md = summary(&reports());
        assert!(md.contains("Test CPU (2 physical / 4 logical cores), 8.0 GiB RAM"));
        // The key figures, each against its baseline.
        assert!(
            md.contains(
                "| generation, tok/s | 49.5 (LLM worker) | 50.0 (llama.cpp in-process) | 0.99 |"
            ),
            "{md}"
        );
        assert!(md.contains(
            "| time between tokens p50 / p99, ms | 21.00 / 41.58 | 20.00 / 39.60 | 1.05 |"
        ));
        assert!(
            md.contains("| time to first token, ms | – | – | – |"),
            "missing is a dash"
        );
        assert!(md.contains("| kill -9 of the LLM worker → serving again, ms | 860 | 740 (its model load + warm-up) | 1.16 |"));
        assert!(md.contains("| restart with a 1951-token conversation, ms | 700 (KV snapshot) | 9800 (decoding it again) | 0.07 |"));
        assert!(md.contains(
            "| Unity wire, µs per command | 2.64 (batched) | 33.00 (one per round trip) | 0.08 |"
        ));
        assert!(md.contains(
            "| llm RSS growth over 500 turns, MiB | 379.0 → 441.0 (+62.0) | bound 64 | 0.97 |"
        ));
        // The sections.
        assert!(md.contains("| kill → exit noticed | 33.7 | 40.0 | 41.0 |"));
        assert!(md.contains("| 2 | 300.0 | 45.5 |"));
        assert!(md.contains("| single | 30.1 | – | 30000 | 33.00 |"));
        assert!(md.contains("Batched vs single: 12.5×."));
        assert!(md.contains("Skipped: ipc-latency not found."));
        assert!(md.contains("| llm | 379.0 → 441.0: +62.0 (64) | +0.4 (4) |"));
        assert!(
            !md.contains("token_gap_distribution_ms"),
            "distributions are plotted, not printed"
        );
    }

    #[test]
    fn the_benchmarks_block_is_replaced_and_the_rest_of_the_file_kept() {
        let doc =
            format!("# Benchmarks\n\nintro\n\n{BEGIN}\nold figures\n{END}\n\n## Notes\nkept\n");
        let new = splice(&doc, "new figures\n").expect("splice");
        assert_eq!(
            new,
            format!("# Benchmarks\n\nintro\n\n{BEGIN}\nnew figures\n{END}\n\n## Notes\nkept\n")
        );
        assert_eq!(
            splice(&new, "new figures\n").expect("again"),
            new,
            "idempotent"
        );
        let e = splice("# Benchmarks\n", "x").expect_err("no markers");
        assert!(e.to_string().contains(BEGIN), "{e}");
        assert!(splice(&format!("{END}\n{BEGIN}\n"), "x").is_err());

        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("BENCHMARKS.md");
        let out = dir.path().join("benches/report");
        std::fs::create_dir_all(&out).expect("out");
        std::fs::write(&file, &doc).expect("write");
        write_benchmarks(&file, &out, &reports(), 3).expect("benchmarks");
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(text.starts_with("# Benchmarks\n\nintro\n") && text.ends_with("## Notes\nkept\n"));
        assert!(!text.contains("old figures"));
        assert!(
            text.contains(
                "`mate bench all --runs 3 --out benches/report --benchmarks BENCHMARKS.md`"
            ),
            "{text}"
        );
        assert!(text.contains("![restart timeline](benches/report/restart.svg)"));
        assert!(text.contains("| Unity wire, µs per command | 2.64 (batched)"));
    }

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
