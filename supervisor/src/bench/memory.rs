//! `mate bench memory`: the memory profile of a long session. A real `mate up` on the model
//! runs `turns` chat turns; the RSS of the supervisor and of each worker (and the LLM's VRAM,
//! on a GPU) is read at start, after the model is loaded, every tenth of the way, after
//! `mate ctl clear`, and after a few more turns. Growth is reported against the after-load
//! figures and the stated bounds.

use std::{path::PathBuf, time::Duration};

use anyhow::bail;
use mate_protocol::{Reply, Request, StatusReport, WorkerKind};
use serde_json::{json, Value};

use super::{
    chat, ctl, in_state_dir, proc_status_kib, shut_down, start_up, status_now, wait_running,
};

/// Settings of `mate bench memory`.
#[derive(Debug, Clone)]
pub struct MemoryBench {
    pub exe: PathBuf,
    pub model: PathBuf,
    pub turns: usize,
    pub max_tokens: u32,
    /// Also write memory.json and memory.svg here.
    pub out: Option<PathBuf>,
}

/// Growth from load to the last turn that counts as a leak, per process, in MiB. The LLM
/// worker's is larger because llama.cpp reserves its compute buffer at load but touches it only
/// as batches and the context grow: without flash attention (the `cpu` rung), the first full
/// batch of 512 tokens over a full 4096-token context writes its attention scores, 512 × 4096
/// × 4 heads × 4 bytes = 32 MiB for the default model, and their softmax as much again.
const BOUNDS_MIB: [(&str, f64); 3] = [("supervisor", 16.0), ("llm", 64.0), ("bridge", 8.0)];
/// Growth over the second half of the turns, when every buffer has had its largest use: a
/// leak, however slow, shows here.
const SECOND_HALF_BOUNDS_MIB: [(&str, f64); 3] =
    [("supervisor", 4.0), ("llm", 4.0), ("bridge", 2.0)];

fn mib(kib: Option<u64>) -> Option<f64> {
    kib.map(|k| k as f64 / 1024.0)
}

/// One reading of every process.
fn sample(label: &str, turn: usize, sup: u32, status: &StatusReport) -> Value {
    let pid = |kind| {
        status
            .workers
            .iter()
            .find(|w| w.kind == kind)
            .and_then(|w| w.pid)
    };
    let rss = |pid: Option<u32>| mib(pid.and_then(|p| proc_status_kib(p, &["VmRSS"])[0]));
    json!({
        "at": label,
        "turn": turn,
        "supervisor": rss(Some(sup)),
        "llm": rss(pid(WorkerKind::Llm)),
        "bridge": rss(pid(WorkerKind::Bridge)),
        "llm_vram_mib": status.gpu.reading.and_then(|r| r.llm_bytes).map(|b| b as f64 / f64::from(1u32 << 20)),
    })
}

pub fn memory(b: &MemoryBench) -> anyhow::Result<Value> {
    in_state_dir("memory", |dir| {
        let config = dir.join("bench.toml");
        std::fs::write(
            &config,
            format!(
                "[chat]\nmax_tokens = {}\ntemperature = 0.0\n[gpu]\nauto_upgrade = false\n",
                b.max_tokens
            ),
        )?;
        let mut up = start_up(&b.exe, dir, &config, &b.model, &[])?;
        let sup = up.0.id();
        // As soon as both workers exist, before the model is in.
        let started = std::time::Instant::now();
        let first = loop {
            if let Ok(s) = status_now(dir) {
                if s.workers.iter().all(|w| w.pid.is_some()) {
                    break s;
                }
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the workers did not start within 60 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut samples = vec![sample("start", 0, sup, &first)];
        let loaded = wait_running(dir, &mut up, &WorkerKind::ALL, Duration::from_secs(300))?;
        samples.push(sample("loaded", 0, sup, &loaded));
        let every = (b.turns / 10).max(1);
        for turn in 1..=b.turns {
            chat(
                dir,
                &format!("Turn {turn}. Tell me one thing about the sea."),
            )?;
            if turn % every == 0 || turn == b.turns {
                samples.push(sample("turns", turn, sup, &status_now(dir)?));
            }
        }
        match ctl::call(dir, &Request::ClearSession)? {
            Reply::Ok => {}
            other => bail!("unexpected reply to clear: {other:?}"),
        }
        samples.push(sample("cleared", b.turns, sup, &status_now(dir)?));
        for turn in 1..=10 {
            chat(dir, &format!("New session, turn {turn}."))?;
        }
        samples.push(sample("cleared+10", b.turns + 10, sup, &status_now(dir)?));
        let pids: Vec<u32> = status_now(dir)?
            .workers
            .iter()
            .filter_map(|w| w.pid)
            .collect();
        let shutdown = shut_down(dir, &mut up, &pids)?;

        let at = |label: &str| samples.iter().find(|s| s["at"] == label);
        let last_turns = samples.iter().rev().find(|s| s["at"] == "turns");
        // The reading nearest the middle of the turns, at or after it.
        let middle = samples
            .iter()
            .find(|s| s["at"] == "turns" && s["turn"].as_u64().unwrap_or(0) * 2 >= b.turns as u64);
        let growth = |from: Option<&Value>, bounds: &[(&str, f64)]| -> Vec<Value> {
            bounds
                .iter()
                .map(|(name, bound)| {
                    let base = from.and_then(|s| s[name].as_f64());
                    let end = last_turns.and_then(|s| s[name].as_f64());
                    let grew = base.zip(end).map(|(a, z)| z - a);
                    json!({
                        "process": name,
                        "from_turn": from.map(|s| &s["turn"]),
                        "from_mib": base,
                        "after_turns_mib": end,
                        "growth_mib": grew,
                        "bound_mib": bound,
                        "within_bound": grew.map(|g| g <= *bound),
                    })
                })
                .collect()
        };
        let second_half = growth(middle, &SECOND_HALF_BOUNDS_MIB);
        let growth = growth(at("loaded"), &BOUNDS_MIB);
        let report = json!({
            "model": b.model,
            "turns": b.turns,
            "max_tokens": b.max_tokens,
            "samples": samples,
            "growth_over_turns": growth,
            "growth_over_second_half": second_half,
            "shutdown": shutdown,
        });
        if let Some(out) = &b.out {
            std::fs::create_dir_all(out)?;
            std::fs::write(
                out.join("memory.json"),
                serde_json::to_string_pretty(&report)?,
            )?;
            let series = |name: &'static str| {
                let points = samples
                    .iter()
                    .filter_map(|s| Some((s["turn"].as_f64()?, s[name].as_f64()?)))
                    .collect();
                (name, points)
            };
            super::plot::line_svg(
                &out.join("memory.svg"),
                "RSS by turn (MiB): start and after load at turn 0, clear at the end",
                "turn",
                "MiB",
                &[series("llm"), series("supervisor"), series("bridge")],
            )?;
        }
        Ok(report)
    })
}
