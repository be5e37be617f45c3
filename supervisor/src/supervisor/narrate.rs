//! The words: exits, requests, GPU readings and the ladder as people read them in events and
//! in `mate ctl status`, and what a worker's last log lines say about how it died.

use super::*;

/// `3.2 GiB`.
pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

pub(super) fn describe_reading(r: &VramReading) -> String {
    let mut text = format!("{} of {} used", gib(r.used_bytes), gib(r.total_bytes));
    if let Some(llm) = r.llm_bytes {
        text.push_str(&format!(", {} by the LLM", gib(llm)));
    }
    text
}

pub(super) fn describe_gpu(gpu: &gpu::FirstLook) -> String {
    match &gpu.info {
        Some(g) => format!(
            "GPU {}{} with {}",
            g.name,
            if g.simulated { " (simulated)" } else { "" },
            gib(g.total_bytes)
        ),
        None => gpu.note.clone().unwrap_or_else(|| "no GPU".into()),
    }
}

pub(super) fn describe_ladder(ladder: &[Rung]) -> String {
    let rungs: Vec<String> = ladder
        .iter()
        .map(|r| format!("{} {}", r.profile.name, gib(r.estimated_vram_bytes)))
        .collect();
    rungs.join(" > ")
}

/// The worker's log files: its stderr, and its tracing log (where llama.cpp's own log lines
/// go).
pub(super) fn worker_logs(state_dir: &Path, kind: WorkerKind) -> [PathBuf; 2] {
    let logs = state_dir.join("logs");
    [
        logs.join(format!("worker-{kind}.stderr.log")),
        logs.join(format!("worker-{kind}.log")),
    ]
}

pub(super) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// What a GPU (or host) out-of-memory makes llama.cpp and its backends print.
pub(super) const OUT_OF_MEMORY: [&str; 5] = [
    "out of memory",
    "cudamalloc failed",
    "erroroutofdevicememory",
    "failed to allocate",
    "unable to allocate",
];

/// The line, among the last things the LLM process wrote, that says it ran out of memory.
pub(super) fn out_of_memory_line(state_dir: &Path, starts: &[u64; 2]) -> Option<String> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    const TAIL: u64 = 64 * 1024;
    worker_logs(state_dir, WorkerKind::Llm)
        .iter()
        .zip(starts)
        .find_map(|(path, &start)| {
            let mut file = File::open(path).ok()?;
            let len = file.metadata().ok()?.len();
            let from = start.max(len.saturating_sub(TAIL));
            file.seek(SeekFrom::Start(from)).ok()?;
            let mut bytes = Vec::new();
            file.take(TAIL).read_to_end(&mut bytes).ok()?;
            let text = String::from_utf8_lossy(&bytes);
            // The first such line names the failed allocation; later ones are its fallout.
            text.lines()
                .find(|line| {
                    let lower = line.to_lowercase();
                    // llama.cpp falls back from pinned host memory harmlessly.
                    OUT_OF_MEMORY.iter().any(|p| lower.contains(p)) && !lower.contains("pinned")
                })
                .map(|line| line.trim().chars().take(200).collect())
        })
}

/// The stats of a reply that ended by cancel while no worker was generating it.
pub(super) fn cancelled_stats() -> GenerationStats {
    GenerationStats {
        prompt_tokens: 0,
        generated_tokens: 0,
        ttft_ms: 0.0,
        prompt_tokens_per_s: 0.0,
        gen_tokens_per_s: 0.0,
        stop: StopReason::Cancelled,
        cached_tokens: 0,
    }
}

pub(super) fn ignored(kind: WorkerKind, what: &str) {
    tracing::warn!(worker = %kind, "ignored {what}");
}

/// `end_of_text`, `max_tokens`, … as the transcript writes it.
pub(super) fn stop_name(stop: &StopReason) -> String {
    match stop {
        StopReason::EndOfText => "end_of_text".into(),
        StopReason::MaxTokens => "max_tokens".into(),
        StopReason::StopString(_) => "stop_string".into(),
        StopReason::Cancelled => "cancelled".into(),
        StopReason::ContextFull => "context_full".into(),
    }
}

/// A request in a few words; what users say stays out (the transcript has it).
pub(super) fn describe_request(request: &Request) -> String {
    match request {
        Request::Chat { text } => format!("chat of {} chars", text.chars().count()),
        Request::Restart {
            worker,
            profile: Some(p),
        } => format!("restart {worker} with profile {p}"),
        Request::Restart { worker, .. } => format!("restart {worker}"),
        Request::Stop { worker } => format!("stop {worker}"),
        Request::Start { worker } => format!("start {worker}"),
        Request::SetProfile { name } => format!("profile {name}"),
        Request::Inject { worker, fault } => format!("inject {fault:?} into {worker}"),
        Request::Shutdown => "shutdown".into(),
        Request::Avatar(cmd) => format!("avatar {cmd}"),
        Request::ClearSession => "clear the session".into(),
        other => format!("{other:?}"),
    }
}
