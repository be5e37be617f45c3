//! `mate bench memory`: the memory profile of a long session. A real `mate up` on the model
//! runs `turns` chat turns; the RSS of the supervisor and of each worker (and the LLM's VRAM,
//! on a GPU) is read at start, after the model is loaded, every tenth of the way, after
//! `mate ctl clear`, and after a few more turns. Growth is reported against the after-load
//! figures and the stated bounds.

use std::{path::PathBuf, time::Duration};

use anyhow::bail;
use mate_protocol::{Profile, Reply, Request, StatusReport, WorkerKind};
use serde::Serialize;

use super::{
    mib,
    procfs::proc_status_kib,
    up::{chat, in_state_dir, shut_down, start_up, status_now, wait_running, worker_pid, Shutdown},
};
use crate::ctl;

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

/// Growth from load to the last turn that counts as a leak, in MiB, for the supervisor and the
/// bridge. The LLM worker's comes from [`llm_bound_mib`].
const BOUNDS_MIB: [(&str, f64); 2] = [("supervisor", 16.0), ("bridge", 8.0)];

/// The LLM worker's bound, and why. llama.cpp reserves its compute buffer at load but touches
/// it only as batches and the context grow. Once the conversation fills the context, trimmed
/// prompts are decoded again in full batches, and without flash attention each writes its
/// attention scores over the whole context (n_ubatch × n_ctx × heads × 4 bytes) and their
/// softmax as much again: 64 MiB for the default model on the `cpu` rung. With flash attention
/// the scores are never all in memory, so this stays an upper bound. Not less than 16 MiB.
fn llm_bound_mib(profile: Option<&Profile>, n_head: Option<u32>) -> (f64, String) {
    let (Some(p), Some(n_head)) = (profile, n_head) else {
        return (
            64.0,
            "the default model's figure (profile or model header unreadable)".into(),
        );
    };
    let scores = 2.0 * f64::from(p.n_ubatch) * f64::from(p.n_ctx) * f64::from(n_head) * 4.0;
    let mib = (scores / f64::from(1u32 << 20)).max(16.0);
    let why = format!(
        "attention scores and their softmax of one full batch over the whole context: 2 × {} \
         × {} × {n_head} heads × 4 B",
        p.n_ubatch, p.n_ctx
    );
    (mib, why)
}

/// Growth over the second half of the turns, when every buffer has had its largest use: a
/// leak, however slow, shows here.
const SECOND_HALF_BOUNDS_MIB: [(&str, f64); 3] =
    [("supervisor", 4.0), ("llm", 4.0), ("bridge", 2.0)];

/// What `mate bench memory` prints (and writes to `memory.json`).
#[derive(Debug, Serialize)]
pub struct MemoryReport {
    model: PathBuf,
    turns: usize,
    max_tokens: u32,
    samples: Vec<Sample>,
    growth_over_turns: Vec<Growth>,
    growth_over_second_half: Vec<Growth>,
    llm_bound: String,
    shutdown: Shutdown,
}

/// One reading of every process: RSS in MiB, `None` where unreadable.
#[derive(Debug, Serialize)]
struct Sample {
    at: &'static str,
    turn: usize,
    supervisor: Option<f64>,
    llm: Option<f64>,
    bridge: Option<f64>,
    llm_vram_mib: Option<f64>,
}

impl Sample {
    /// The RSS of `process`: `supervisor`, `llm` or `bridge`.
    fn rss(&self, process: &str) -> Option<f64> {
        match process {
            "supervisor" => self.supervisor,
            "llm" => self.llm,
            "bridge" => self.bridge,
            _ => None,
        }
    }
}

/// One process's growth between two readings, against its bound.
#[derive(Debug, Serialize)]
struct Growth {
    process: &'static str,
    from_turn: Option<usize>,
    from_mib: Option<f64>,
    after_turns_mib: Option<f64>,
    growth_mib: Option<f64>,
    bound_mib: f64,
    within_bound: Option<bool>,
}

/// One reading of every process.
fn sample(label: &'static str, turn: usize, sup: u32, status: &StatusReport) -> Sample {
    let pid = |kind| worker_pid(status, kind).ok();
    let rss = |pid: Option<u32>| {
        pid.and_then(|p| proc_status_kib(p, &["VmRSS"])[0])
            .map(|kib| mib(kib * 1024))
    };
    Sample {
        at: label,
        turn,
        supervisor: rss(Some(sup)),
        llm: rss(pid(WorkerKind::Llm)),
        bridge: rss(pid(WorkerKind::Bridge)),
        llm_vram_mib: status.gpu.reading.and_then(|r| r.llm_bytes).map(mib),
    }
}

pub fn memory(b: &MemoryBench) -> anyhow::Result<MemoryReport> {
    super::procfs::linux_only("memory")?;
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
        let last = status_now(dir)?;
        samples.push(sample("cleared+10", b.turns + 10, sup, &last));
        let pids: Vec<u32> = last.workers.iter().filter_map(|w| w.pid).collect();
        let shutdown = shut_down(dir, &mut up, &pids)?;

        let at = |label: &str| samples.iter().find(|s| s.at == label);
        let last_turns = samples.iter().rev().find(|s| s.at == "turns");
        // The reading nearest the middle of the turns, at or after it.
        let middle = samples
            .iter()
            .find(|s| s.at == "turns" && s.turn * 2 >= b.turns);
        // The profile the LLM worker runs and the model's heads give its bound.
        let profile = loaded
            .ladder
            .iter()
            .find(|r| r.profile.name == loaded.profile)
            .map(|r| &r.profile);
        let n_head = crate::gpu::gguf::read(&b.model).ok().map(|f| f.n_head);
        let (llm_bound, llm_bound_why) = llm_bound_mib(profile, n_head);
        let bounds = [BOUNDS_MIB[0], ("llm", llm_bound), BOUNDS_MIB[1]];
        let growth = |from: Option<&Sample>, bounds: &[(&'static str, f64)]| -> Vec<Growth> {
            bounds
                .iter()
                .map(|&(name, bound)| {
                    let base = from.and_then(|s| s.rss(name));
                    let end = last_turns.and_then(|s| s.rss(name));
                    let grew = base.zip(end).map(|(a, z)| z - a);
                    Growth {
                        process: name,
                        from_turn: from.map(|s| s.turn),
                        from_mib: base,
                        after_turns_mib: end,
                        growth_mib: grew,
                        bound_mib: bound,
                        within_bound: grew.map(|g| g <= bound),
                    }
                })
                .collect()
        };
        let second_half = growth(middle, &SECOND_HALF_BOUNDS_MIB);
        let growth = growth(at("loaded"), &bounds);
        let report = MemoryReport {
            model: b.model.clone(),
            turns: b.turns,
            max_tokens: b.max_tokens,
            samples,
            growth_over_turns: growth,
            growth_over_second_half: second_half,
            llm_bound: llm_bound_why,
            shutdown,
        };
        if let Some(out) = &b.out {
            std::fs::create_dir_all(out)?;
            std::fs::write(
                out.join("memory.json"),
                serde_json::to_string_pretty(&report)?,
            )?;
            let series = |name: &'static str| {
                let points = report
                    .samples
                    .iter()
                    .filter_map(|s| Some((s.turn as f64, s.rss(name)?)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_llm_bound_is_one_full_batch_of_attention_scores_twice() {
        // The default model (4 heads) on the default `cpu` rung: 64 MiB.
        let (mib, why) = llm_bound_mib(Some(&Profile::cpu(4096)), Some(4));
        assert_eq!(mib, 64.0);
        assert!(why.contains("2 × 512 × 4096 × 4 heads"), "{why}");
        // A larger model and context need more; a tiny one still gets 16 MiB of slack.
        assert_eq!(llm_bound_mib(Some(&Profile::cpu(8192)), Some(32)).0, 1024.0);
        assert_eq!(llm_bound_mib(Some(&Profile::cpu(256)), Some(2)).0, 16.0);
        assert_eq!(llm_bound_mib(None, Some(4)).0, 64.0);
    }
}
