//! `mate bench all --out DIR`: every benchmark in one go, each result as JSON in DIR, SVG
//! plots, and a Markdown summary with the machine's facts, written as soon as each part is
//! done (a long run that is interrupted keeps what it measured).

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use mate_worker_llm::cpu::CpuFacts;
use serde_json::{json, Value};

use super::{
    bridge, llm, profiles, restart, threads, BridgeBench, LlmBench, ProfilesBench, RestartBench,
};

/// Settings of `mate bench all`.
#[derive(Debug, Clone)]
pub struct AllBench {
    pub exe: PathBuf,
    pub model: PathBuf,
    pub out: PathBuf,
    /// Runs per measurement (the benches' own defaults with `--runs 3`).
    pub runs: usize,
}

fn write_json(dir: &Path, name: &str, value: &Value) -> anyhow::Result<()> {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// A line chart of `series` (name, points) as an SVG file.
pub(super) fn line_svg(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (x_max, y_max) = points.fold((1.0f64, 1.0f64), |(x, y), (px, py)| {
        (x.max(*px), y.max(*py))
    });
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max * 1.05, 0.0..y_max * 1.15)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 15))
        .draw()?;
    let colours = [BLUE, RED, GREEN, MAGENTA];
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = colours[i % colours.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, colour.filled())))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}

fn number(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, key| v.get(key))?.as_f64()
}

fn cell(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
}

pub fn all(b: &AllBench) -> anyhow::Result<Value> {
    let out = &b.out;
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

    eprintln!("mate bench all: memory");
    let memory = super::memory(&super::MemoryBench {
        exe: b.exe.clone(),
        model: b.model.clone(),
        turns: 500 * runs / 3,
        max_tokens: 16,
        out: Some(out.clone()),
    })?;

    let mut summary = summary(&machine, &llm, &points, &restart, &profiles, &bridge);
    memory_table(&mut summary, &memory);
    std::fs::write(out.join("summary.md"), &summary)
        .with_context(|| format!("writing {}", out.join("summary.md").display()))?;
    Ok(json!({
        "out": out,
        "files": ["machine.json", "llm.json", "threads.json", "threads.svg", "restart.json",
                  "profiles.json", "profiles.svg", "bridge.json", "bridge.svg", "memory.json",
                  "memory.svg", "summary.md"],
    }))
}

fn memory_table(md: &mut String, memory: &Value) {
    let _ = writeln!(
        md,
        "\n## Memory over {} turns (`memory.json`, `memory.svg`)\n\n![memory](memory.svg)\n\n\
         | process | after load MiB | after the turns MiB | growth MiB | bound MiB |\n\
         |---|---|---|---|---|",
        memory["turns"]
    );
    for g in memory["growth_over_turns"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            g["process"].as_str().unwrap_or("?"),
            cell(g["after_load_mib"].as_f64(), 1),
            cell(g["after_turns_mib"].as_f64(), 1),
            cell(g["growth_mib"].as_f64(), 1),
            cell(g["bound_mib"].as_f64(), 0),
        );
    }
    details(md, memory);
}

/// The whole result, folded away under its table.
fn details(md: &mut String, value: &Value) {
    let _ = writeln!(
        md,
        "\n<details><summary>all figures</summary>\n\n```json\n{}\n```\n\n</details>\n",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

fn summary(
    machine: &Value,
    llm: &Value,
    points: &[super::ThreadPoint],
    restart: &Value,
    profiles: &Value,
    bridge: &Value,
) -> String {
    let mut md = String::from("# mate benchmarks\n\n");
    let cpu = &machine["cpu"];
    let _ = writeln!(
        md,
        "Machine: {} ({} physical / {} logical cores), {:.1} GiB RAM, GPU: {}, {}. mate {}.\n\
         Regenerate with `mate bench all --out DIR`; every figure is a median, and comparisons \
         are made in the same run.\n",
        cpu["brand"].as_str().unwrap_or("?"),
        cpu["physical_cores"],
        cpu["logical_cores"],
        cpu["total_memory"].as_f64().unwrap_or(0.0) / f64::from(1u32 << 30),
        machine["gpu"].as_str().unwrap_or("?"),
        machine["os"].as_str().unwrap_or("?"),
        machine["mate"].as_str().unwrap_or("?"),
    );
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
    details(&mut md, llm);
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
        "\nBatched vs single: {}×.",
        cell(number(bridge, &["ratios", "batched_vs_single"]), 1)
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_reads_the_figures_and_says_when_one_is_missing() {
        let machine = json!({"cpu": {"brand": "Test CPU", "physical_cores": 2,
            "logical_cores": 4, "total_memory": 8u64 << 30}, "gpu": "none", "os": "linux",
            "mate": "0.1.0"});
        let llm = json!({"in_process": {"gen_tokens_per_s": 50.0}, "worker":
            {"gen_tokens_per_s": 49.5}, "ratios": {"worker_over_in_process_gen_tokens_per_s": 0.99}});
        let restart = json!({"detection_ms": {"median": 33.7, "p90": 40.0, "max": 41.0}});
        let bridge = json!({"single": {"p50_us": 30.1, "commands_per_s": 30000.0},
            "batched": {"us_per_command": 2.62}, "ratios": {"batched_vs_single": 12.6}});
        let points = [super::super::ThreadPoint {
            threads: 2,
            prompt_tokens_per_s: 300.0,
            gen_tokens_per_s: 45.5,
        }];
        let md = summary(&machine, &llm, &points, &restart, &json!({}), &bridge);
        assert!(md.contains("Test CPU (2 physical / 4 logical cores), 8.0 GiB RAM"));
        assert!(md.contains("| generation tok/s | 50.0 | 49.5 |"));
        assert!(
            md.contains("| TTFT ms (worker: warm) | – | – |"),
            "missing is a dash"
        );
        assert!(md.contains("| kill → exit noticed | 33.7 | 40.0 | 41.0 |"));
        assert!(md.contains("| 2 | 300.0 | 45.5 |"));
        assert!(md.contains("| single | 30.1 | – | 30000 | – |"));
        assert!(md.contains("Batched vs single: 12.6×."));
    }

    #[test]
    fn a_line_chart_is_an_svg_with_its_title() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.svg");
        line_svg(
            &path,
            "speed by threads",
            "threads",
            "tok/s",
            &[("generation", vec![(1.0, 20.0), (2.0, 38.0)])],
        )
        .expect("plot");
        let svg = std::fs::read_to_string(&path).expect("read");
        assert!(svg.starts_with("<svg") && svg.contains("speed by threads"));
    }
}
