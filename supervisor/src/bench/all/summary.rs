//! The Markdown of `mate bench all`: `summary.md` with every section and its plots, and the
//! generated block of BENCHMARKS.md with the headline table (each figure beside its baseline
//! from the same run). Reads the reports as JSON, so a missing figure shows as a dash.

use std::{fmt::Write as _, path::Path};

use anyhow::{bail, Context as _};
use serde_json::Value;

use super::{curve, number, Reports};

/// The markers of the generated block in BENCHMARKS.md.
pub const BEGIN: &str = "<!-- mate bench all: begin (generated, edits here are overwritten) -->";
pub const END: &str = "<!-- mate bench all: end -->";

fn cell(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
}

/// `doc` with the text between [`BEGIN`] and [`END`] replaced by `block`.
pub(super) fn splice(doc: &str, block: &str) -> anyhow::Result<String> {
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
pub(super) fn write_benchmarks(
    file: &Path,
    out: &Path,
    r: &Reports,
    runs: usize,
) -> anyhow::Result<()> {
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

pub(super) fn summary(r: &Reports) -> String {
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
    use serde_json::json;

    use super::*;
    use crate::bench::ThreadPoint;

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
            threads: vec![ThreadPoint {
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
}
