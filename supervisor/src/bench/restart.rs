//! `mate bench restart`: the supervisor's restart path from the outside, as a user sees it. A
//! real `mate up` runs as a child; its LLM worker is killed with SIGKILL again and again, and
//! the events it streams are timestamped here on receipt: kill → `Exited` is detection, kill →
//! `Loaded` is ready.

use std::{
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use mate_protocol::{EventKind, ExitStatus, WorkerKind};
use mate_worker_llm::cpu::CpuFacts;
use serde::Serialize;

use super::{
    ms,
    procfs::{died, idle_cpu, kill9, proc_status_kib},
    stats::{median, spread, Spread},
    up::{
        follow_events, in_state_dir, shut_down, start_up, wait_running, worker_pid, Seen, Shutdown,
        EXIT_LIMIT, READY_LIMIT, SETTLE, START_LIMIT,
    },
};

/// Settings of `mate bench restart`.
#[derive(Debug, Clone)]
pub struct RestartBench {
    pub exe: PathBuf,
    pub model: PathBuf,
    pub runs: usize,
    /// `[llm] threads` of the supervisor under test; 0: by the CPU rule.
    pub threads: u32,
}

/// The targets: a crash is noticed within 10 ms, and a restart costs at most 150 ms
/// more than loading the model.
const DETECTION_TARGET_MS: f64 = 10.0;
const OVERHEAD_TARGET_MS: f64 = 150.0;
/// How long the idle supervisor's CPU is measured, after the kills.
const IDLE_WINDOW: Duration = Duration::from_secs(5);

/// The default restart policy, except that any number of kills in a row neither escalates nor
/// grows the backoff: every kill counts as the first crash after a healthy run, which is what
/// a user sees when a worker that ran for a while dies (and restarts at once).
fn restart_config(threads: u32) -> String {
    let mut text = String::from(
        "# Written by `mate bench restart`.\n\
         [supervisor]\nrestart_intensity = 1000\nbackoff_reset_s = 0\n",
    );
    if threads > 0 {
        text.push_str(&format!("\n[llm]\nthreads = {threads}\n"));
    }
    text
}

/// One kill and what followed, in milliseconds after the kill unless named otherwise.
#[derive(Debug, Clone, Serialize)]
pub struct RestartRun {
    pub pid: u32,
    /// The killed worker's resident memory just before the kill.
    pub worker_rss_kib: Option<u64>,
    /// The kernel is done with the process (zombie or reaped), seen in `/proc`.
    pub dead_ms: Option<f64>,
    pub detection_ms: f64,
    pub spawned_ms: f64,
    /// The new worker's `Ready` (hello done, model not yet loaded).
    pub hello_ms: f64,
    pub ready_ms: f64,
    /// The new worker's own figures for loading the model file and warming it up.
    pub load_ms: f64,
    pub warmup_ms: f64,
    /// Ready minus load and warm-up: what supervision and restarting add.
    pub overhead_ms: f64,
    pub backoff_ms: u64,
    pub attempt: u32,
}

/// What `mate bench restart` prints: spreads over the kills, the median of each phase, the
/// targets, the supervisor's own footprint, and every kill's figures.
#[derive(Debug, Serialize)]
pub struct RestartReport {
    model: PathBuf,
    runs: usize,
    threads: u32,
    machine: CpuFacts,
    config: String,
    detection_ms: Spread,
    ready_ms: Spread,
    load_ms: Spread,
    warmup_ms: Spread,
    /// ready − load − warm-up: detection, backoff, spawn, hello, and what loading does
    /// besides reading the model (CPU sampling, context).
    overhead_ms: Spread,
    backoff_ms: f64,
    backoff_ms_all_equal: bool,
    phases_median_ms: Phases,
    targets: Targets,
    supervisor: SupervisorFigures,
    llm_worker_rss_kib_median: f64,
    shutdown: Shutdown,
    pub runs_detail: Vec<RestartRun>,
}

/// Medians of each step from the kill to `Loaded`; the first two need `/proc`.
#[derive(Debug, Serialize)]
struct Phases {
    kill_to_dead: Option<f64>,
    dead_to_exited: Option<f64>,
    kill_to_exited: f64,
    exited_to_spawned: f64,
    spawned_to_hello: f64,
    hello_to_loaded: f64,
    hello_to_loaded_minus_load_and_warmup: f64,
}

#[derive(Debug, Serialize)]
struct Targets {
    detection_ms: f64,
    ready_minus_load_and_warmup_ms: f64,
    detection_within_target: bool,
    ready_within_target: bool,
}

/// The supervisor process itself, after the kills.
#[derive(Debug, Serialize)]
struct SupervisorFigures {
    pid: u32,
    rss_kib: Option<u64>,
    rss_peak_kib: Option<u64>,
    idle_window_s: f64,
    idle_cpu_percent_of_one_core: Option<f64>,
    idle_cpu_percent_of_one_core_ticks: Option<f64>,
    llm_restarts_reported: Option<u32>,
}

/// `mate bench restart`: returns the report. On failure the state dir (logs, event
/// journal) is kept and named in the error.
pub fn restart(b: &RestartBench) -> anyhow::Result<RestartReport> {
    super::procfs::linux_only("restart")?;
    let facts = CpuFacts::sample(Duration::from_millis(300));
    in_state_dir("restart", |dir| measure_restarts(b, dir, facts))
}

fn measure_restarts(
    b: &RestartBench,
    dir: &Path,
    facts: CpuFacts,
) -> anyhow::Result<RestartReport> {
    let config = dir.join("config.toml");
    std::fs::write(&config, restart_config(b.threads))?;
    let mut up = start_up(&b.exe, dir, &config, &b.model, &[])?;
    let supervisor_pid = up.0.id();
    let both = [WorkerKind::Llm, WorkerKind::Bridge];
    wait_running(dir, &mut up, &both, START_LIMIT).context("starting the supervisor")?;

    let events = follow_events(dir);

    let mut runs = Vec::with_capacity(b.runs);
    for run in 1..=b.runs {
        eprintln!("mate bench restart: run {run}/{}", b.runs);
        let status = wait_running(dir, &mut up, &[WorkerKind::Llm], READY_LIMIT)
            .with_context(|| format!("run {run}: waiting for the LLM worker"))?;
        let pid = worker_pid(&status, WorkerKind::Llm)?;
        std::thread::sleep(SETTLE);
        // What the kernel must free when the worker dies.
        let worker_rss_kib = proc_status_kib(pid, &["VmRSS"])[0];
        // Whatever came before the kill is not about it.
        while events.try_recv().is_ok() {}
        let killed = Instant::now();
        kill9(pid)?;
        // The events queue up meanwhile, timestamped by the reading thread.
        let dead = died(pid, killed + EXIT_LIMIT).map(|at| ms(at - killed));
        let mut r = follow_restart(&events, pid, killed)
            .with_context(|| format!("run {run}: kill -9 of LLM worker pid {pid}"))?;
        r.dead_ms = dead;
        r.worker_rss_kib = worker_rss_kib;
        runs.push(r);
    }

    let status = wait_running(dir, &mut up, &both, READY_LIMIT)
        .context("after the runs, waiting for both workers")?;
    std::thread::sleep(Duration::from_secs(1));
    let idle = idle_cpu(supervisor_pid, IDLE_WINDOW);
    let memory = proc_status_kib(supervisor_pid, &["VmRSS", "VmHWM"]);
    let restarts_reported = status
        .workers
        .iter()
        .find(|w| w.kind == WorkerKind::Llm)
        .map(|w| w.restarts);
    let worker_pids: Vec<u32> = status.workers.iter().filter_map(|w| w.pid).collect();
    let shutdown = shut_down(dir, &mut up, &worker_pids)?;

    let col = |f: fn(&RestartRun) -> f64| runs.iter().map(f).collect::<Vec<_>>();
    let detection = col(|r| r.detection_ms);
    let ready = col(|r| r.ready_ms);
    let load = col(|r| r.load_ms);
    let overhead = col(|r| r.overhead_ms);
    let detection_median = median(detection.clone());
    let dead: Option<Vec<f64>> = runs.iter().map(|r| r.dead_ms).collect();
    let dead_to_exited: Option<Vec<f64>> = runs
        .iter()
        .map(|r| Some(r.detection_ms - r.dead_ms?))
        .collect();
    let overhead_median = median(overhead.clone());
    let backoffs: Vec<u64> = runs.iter().map(|r| r.backoff_ms).collect();
    Ok(RestartReport {
        model: b.model.clone(),
        runs: runs.len(),
        threads: b.threads,
        machine: facts,
        config: restart_config(b.threads),
        detection_ms: spread(&detection),
        ready_ms: spread(&ready),
        load_ms: spread(&load),
        warmup_ms: spread(&col(|r| r.warmup_ms)),
        overhead_ms: spread(&overhead),
        backoff_ms: median(backoffs.iter().map(|&d| d as f64).collect()),
        backoff_ms_all_equal: backoffs.windows(2).all(|w| w[0] == w[1]),
        phases_median_ms: Phases {
            kill_to_dead: dead.map(median),
            dead_to_exited: dead_to_exited.map(median),
            kill_to_exited: detection_median,
            exited_to_spawned: median(col(|r| r.spawned_ms - r.detection_ms)),
            spawned_to_hello: median(col(|r| r.hello_ms - r.spawned_ms)),
            hello_to_loaded: median(col(|r| r.ready_ms - r.hello_ms)),
            hello_to_loaded_minus_load_and_warmup: median(col(|r| {
                r.ready_ms - r.hello_ms - r.load_ms - r.warmup_ms
            })),
        },
        targets: Targets {
            detection_ms: DETECTION_TARGET_MS,
            ready_minus_load_and_warmup_ms: OVERHEAD_TARGET_MS,
            detection_within_target: detection_median <= DETECTION_TARGET_MS,
            ready_within_target: overhead_median <= OVERHEAD_TARGET_MS,
        },
        supervisor: SupervisorFigures {
            pid: supervisor_pid,
            rss_kib: memory.first().copied().flatten(),
            rss_peak_kib: memory.get(1).copied().flatten(),
            idle_window_s: IDLE_WINDOW.as_secs_f64(),
            idle_cpu_percent_of_one_core: idle.map(|i| i.schedstat_percent),
            idle_cpu_percent_of_one_core_ticks: idle.map(|i| i.ticks_percent),
            llm_restarts_reported: restarts_reported,
        },
        llm_worker_rss_kib_median: median(
            runs.iter()
                .filter_map(|r| r.worker_rss_kib)
                .map(|k| k as f64)
                .collect(),
        ),
        shutdown,
        runs_detail: runs,
    })
}

/// Reads the LLM worker's events after a kill at `killed`, up to the new worker's `Loaded`.
fn follow_restart(
    events: &mpsc::Receiver<Seen>,
    pid: u32,
    killed: Instant,
) -> anyhow::Result<RestartRun> {
    let mut seen: Vec<String> = Vec::new();
    let (mut exited, mut restarting, mut spawned, mut hello) = (None, None, None, None);
    loop {
        let (limit, waiting_for) = if exited.is_none() {
            (EXIT_LIMIT, "Exited")
        } else {
            (READY_LIMIT, "Loaded")
        };
        let timeout = (killed + limit).saturating_duration_since(Instant::now());
        let e = match events.recv_timeout(timeout) {
            Ok(e) => e,
            Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                "no {waiting_for} event within {} s of the kill; LLM events since: [{}]",
                limit.as_secs(),
                seen.join("; ")
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!(
                "the event stream ended while waiting for {waiting_for}; LLM events since the \
                 kill: [{}]",
                seen.join("; ")
            ),
        };
        if e.worker != Some(WorkerKind::Llm) || e.at < killed {
            continue;
        }
        let after = ms(e.at - killed);
        seen.push(format!("+{after:.1} ms {:?}", e.kind));
        match e.kind {
            EventKind::Exited { status, expected } if exited.is_none() => {
                if expected || status != ExitStatus::Signal(9) {
                    bail!(
                        "the worker's exit reads {status:?} (expected: {expected}), not an \
                         unexpected SIGKILL"
                    );
                }
                exited = Some(after);
            }
            EventKind::Restarting { delay_ms, attempt } => restarting = Some((delay_ms, attempt)),
            EventKind::Spawned { .. } => spawned = Some(after),
            EventKind::Ready => hello = Some(after),
            EventKind::Loaded {
                load_ms, warmup_ms, ..
            } => {
                let (
                    Some(detection_ms),
                    Some((backoff_ms, attempt)),
                    Some(spawned_ms),
                    Some(hello_ms),
                ) = (exited, restarting, spawned, hello)
                else {
                    bail!(
                        "Loaded before the Exited, Restarting, Spawned and Ready of the \
                         restart: [{}]",
                        seen.join("; ")
                    );
                };
                let load_ms = f64::from(load_ms);
                let warmup_ms = f64::from(warmup_ms);
                return Ok(RestartRun {
                    pid,
                    worker_rss_kib: None,
                    dead_ms: None,
                    detection_ms,
                    spawned_ms,
                    hello_ms,
                    ready_ms: after,
                    load_ms,
                    warmup_ms,
                    overhead_ms: after - load_ms - warmup_ms,
                    backoff_ms,
                    attempt,
                });
            }
            EventKind::Failed { .. }
            | EventKind::Downgraded { .. }
            | EventKind::Stopping { .. } => {
                bail!("the restart did not go through: [{}]", seen.join("; "))
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restart_config_only_lifts_escalation_and_backoff_growth() {
        let path = Path::new("bench.toml");
        let file = crate::config::parse(&restart_config(0), path).expect("valid config");
        let settings =
            crate::config::resolve(&crate::config::Overrides::default(), file).expect("resolves");
        let default = crate::policy::Policy::default();
        assert_eq!(settings.policy.intensity, 1000);
        assert_eq!(settings.policy.backoff.reset_after, Duration::ZERO);
        assert_eq!(settings.policy.backoff.initial, default.backoff.initial);
        assert_eq!(settings.policy.heartbeat, default.heartbeat);
        assert_eq!(settings.threads, 0);
        let file = crate::config::parse(&restart_config(3), path).expect("valid config");
        assert_eq!(file.llm.threads, Some(3));
    }
}
