//! A real `mate up` under test, driven from the outside as a user or a script would: started
//! in a throwaway state dir with the bench's own config, watched through `mate ctl status`
//! and its event stream (each event timestamped on receipt), chatted with, and shut down with
//! a check that no worker outlived it. Shared by the restart, profiles and memory benches.

use std::{
    fmt,
    path::Path,
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use mate_protocol::{EventKind, Reply, Request, StatusReport, WorkerKind, WorkerState};
use serde::Serialize;

use super::{ms, procfs::alive};
use crate::ctl;

/// From `mate up` to both workers running.
pub(super) const START_LIMIT: Duration = Duration::from_secs(120);
/// From the kill to the `Exited` event, and to the `Loaded` event.
pub(super) const EXIT_LIMIT: Duration = Duration::from_secs(10);
pub(super) const READY_LIMIT: Duration = Duration::from_secs(60);
/// Between a loaded worker and the next kill, so each run starts from an idle machine.
pub(super) const SETTLE: Duration = Duration::from_millis(250);

/// The supervisor under test. Killed if still running when dropped, so no error path leaves
/// it behind; its workers die with it (parent-death signal).
pub(super) struct UpProcess(pub(super) std::process::Child);

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
pub(super) struct Seen {
    pub(super) at: Instant,
    /// The supervisor's own time stamp, milliseconds since the Unix epoch.
    pub(super) at_ms: u64,
    pub(super) worker: Option<WorkerKind>,
    pub(super) kind: EventKind,
}

/// Runs `f` in a fresh temp state dir; on failure the dir (logs, event journal, the
/// supervisor's stderr) is kept and named in the error.
pub(super) fn in_state_dir<T>(
    bench: &str,
    f: impl FnOnce(&Path) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
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
pub(super) fn start_up(
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
pub(super) fn follow_events(dir: &Path) -> mpsc::Receiver<Seen> {
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

/// Polls `mate ctl status` until every worker in `kinds` runs with a pid.
pub(super) fn wait_running(
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

pub(super) fn worker_pid(status: &StatusReport, kind: WorkerKind) -> anyhow::Result<u32> {
    status
        .workers
        .iter()
        .find(|w| w.kind == kind)
        .and_then(|w| w.pid)
        .with_context(|| format!("the status names no {kind} worker pid"))
}

/// How the supervisor stopped when the bench asked it to.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Shutdown {
    pub(super) clean: bool,
    exit: Option<String>,
    ms: f64,
    pub(super) workers_left_running: Vec<u32>,
}

/// As its JSON, the way failures name it.
impl fmt::Display for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| fmt::Error)?)
    }
}

/// `mate ctl shutdown`, then waits for the supervisor to exit (killing it after a while) and
/// checks that no worker outlived it.
pub(super) fn shut_down(
    dir: &Path,
    up: &mut UpProcess,
    worker_pids: &[u32],
) -> anyhow::Result<Shutdown> {
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
    Ok(Shutdown {
        clean: exit.is_some_and(|e| e.success()),
        exit: exit.map(|e| e.to_string()),
        ms: stopped_ms,
        workers_left_running: left,
    })
}

/// One `mate ctl chat` as the bench saw it.
#[derive(Debug, Clone, Serialize)]
pub(super) struct ChatRun {
    /// The worker's figures.
    pub(super) ttft_ms: f64,
    pub(super) gen_tokens_per_s: f64,
    pub(super) prompt_tokens_per_s: f64,
    pub(super) prompt_tokens: u32,
    pub(super) cached_tokens: u32,
    pub(super) generated_tokens: u32,
    pub(super) stop: String,
    /// From sending the request to the first chunk, on this side of the socket.
    pub(super) client_ttft_ms: Option<f64>,
}

/// Waits up to `limit` for the first event `pick` accepts; the LLM worker failing ends the
/// wait early. The error lists what came instead.
pub(super) fn await_event<T>(
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
pub(super) fn await_loaded(
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

pub(super) fn status_now(dir: &Path) -> anyhow::Result<StatusReport> {
    match ctl::call(dir, &Request::Status)? {
        Reply::Status(report) => Ok(*report),
        other => bail!("unexpected reply to status: {other:?}"),
    }
}

/// `mate ctl chat TEXT`, timed.
pub(super) fn chat(dir: &Path, text: &str) -> anyhow::Result<ChatRun> {
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
