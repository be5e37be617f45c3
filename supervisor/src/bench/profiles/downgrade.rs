//! The downgrade reaction of `mate bench profiles`: `mate up` on a simulated card, whose other
//! applications jump from calm to critical by a rename of its scenario file; the supervisor's
//! own event time stamps, against the bench's wall clock at the rename, time the detection
//! (`Downgraded`) and serving again (`Loaded` on the lower rung).

use std::{path::Path, time::Duration};

use anyhow::{bail, Context as _};
use mate_protocol::{EventKind, Reply, Request, WorkerKind};
use serde::Serialize;

use super::{profiles_config, ProfilesBench};
use crate::{
    bench::{
        stats::{median, spread, Spread},
        up::{
            await_event, await_loaded, follow_events, shut_down, start_up, status_now,
            wait_running, EXIT_LIMIT, READY_LIMIT, SETTLE, START_LIMIT,
        },
    },
    ctl,
};

/// The GPU sampling intervals the downgrade reaction is measured with: a fast one, and the
/// default (`[gpu] sample_ms`).
pub(super) const SAMPLE_INTERVALS_MS: [u64; 2] = [100, 500];
/// The simulated card of the downgrade runs, and what other applications hold on it before
/// and after they jump: 4000 of 4096 MiB is 97.7%, above the default critical 95% whatever
/// the LLM holds.
pub(super) const CARD_MB: u64 = 4096;
pub(super) const CALM_MB: u64 = 500;
pub(super) const CRITICAL_MB: u64 = 4000;
/// One jump of the other applications' VRAM to critical, in milliseconds after the scenario
/// file was renamed into place (the supervisor's event time stamps, 1 ms resolution).
#[derive(Debug, Clone, Serialize)]
pub(super) struct DowngradeRun {
    pub(super) from: String,
    pub(super) to: String,
    pub(super) cause: String,
    /// Used VRAM in the reading the decision was made on.
    pub(super) used_percent: Option<f32>,
    /// Rename → `Downgraded`: the probe's next sample, and the decision.
    pub(super) detection_ms: f64,
    /// Rename → the old worker's `Exited` (it stops gracefully), and → the new one's
    /// `Spawned`.
    pub(super) old_exited_ms: Option<f64>,
    pub(super) spawned_ms: Option<f64>,
    /// Rename → `Loaded` on the lower profile: serving again.
    pub(super) ready_ms: f64,
    /// `Downgraded` → `Loaded`: stopping the worker, starting the next, loading.
    pub(super) reload_ms: f64,
    /// The lower profile's own figures for loading and warming up.
    pub(super) load_ms: f64,
    pub(super) warmup_ms: f64,
}

/// The downgrade runs with one GPU sampling interval.
#[derive(Debug, Clone, Serialize)]
pub(super) struct DowngradeSeries {
    pub(super) sample_ms: u64,
    pub(super) runs: Vec<DowngradeRun>,
}

impl DowngradeSeries {
    /// Spreads and phases, with the config the supervisor ran with.
    pub(super) fn report(&self, config: String) -> DowngradeReport {
        let col = |f: fn(&DowngradeRun) -> f64| self.runs.iter().map(f).collect::<Vec<_>>();
        let phase =
            |f: fn(&DowngradeRun) -> Option<f64>| median(self.runs.iter().filter_map(f).collect());
        DowngradeReport {
            sample_ms: self.sample_ms,
            config,
            detection_ms: spread(&col(|r| r.detection_ms)),
            ready_ms: spread(&col(|r| r.ready_ms)),
            reload_ms: spread(&col(|r| r.reload_ms)),
            phases_median_ms: Phases {
                downgraded_to_old_exited: phase(|r| Some(r.old_exited_ms? - r.detection_ms)),
                old_exited_to_spawned: phase(|r| Some(r.spawned_ms? - r.old_exited_ms?)),
                spawned_to_loaded: phase(|r| Some(r.ready_ms - r.spawned_ms?)),
                load_and_warmup: median(col(|r| r.load_ms + r.warmup_ms)),
            },
            runs_detail: self.runs.clone(),
        }
    }
}

/// One sampling interval's downgrades in the report.
#[derive(Debug, Serialize)]
pub(super) struct DowngradeReport {
    sample_ms: u64,
    config: String,
    detection_ms: Spread,
    ready_ms: Spread,
    reload_ms: Spread,
    phases_median_ms: Phases,
    runs_detail: Vec<DowngradeRun>,
}

/// Medians of each step from the downgrade to serving again.
#[derive(Debug, Serialize)]
struct Phases {
    downgraded_to_old_exited: f64,
    old_exited_to_spawned: f64,
    spawned_to_loaded: f64,
    load_and_warmup: f64,
}

/// `mate up` on a simulated card sampled every `sample_ms`, starting on `performance`; then
/// `runs` times: the other applications jump to critical, the LLM steps down and serves
/// again, the pressure goes and the bench puts it back on `performance`.
pub(super) fn measure_downgrades(
    b: &ProfilesBench,
    dir: &Path,
    sample_ms: u64,
) -> anyhow::Result<DowngradeSeries> {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        profiles_config(b.threads, b.max_tokens, Some(sample_ms)),
    )?;
    let scenario = dir.join("gpu.toml");
    write_scenario(&scenario, CALM_MB)?;
    let top = crate::gpu::ladder::DEFAULT_LADDER[0];
    let mut up = start_up(
        &b.exe,
        dir,
        &config,
        &b.model,
        &[
            "--profile".as_ref(),
            top.as_ref(),
            "--gpu-scenario".as_ref(),
            scenario.as_os_str(),
        ],
    )?;
    wait_running(dir, &mut up, &[WorkerKind::Llm], START_LIMIT).context("starting mate up")?;
    let events = follow_events(dir);
    await_loaded(&events, top)?;
    let sample = Duration::from_millis(sample_ms);

    let mut runs = Vec::with_capacity(b.runs);
    for run in 1..=b.runs {
        eprintln!(
            "mate bench profiles: sample_ms {sample_ms}, downgrade {run}/{}",
            b.runs
        );
        // A calm reading or two on the loaded profile first, as in normal operation; then a
        // jitter, so the jump falls at a random point of the sampling interval (the runs'
        // rhythm would otherwise keep it at much the same point).
        std::thread::sleep(SETTLE + 2 * sample + jitter(sample));
        while events.try_recv().is_ok() {}
        let written = write_scenario(&scenario, CRITICAL_MB)?;
        let (from, to, cause, used_percent, downgraded_ms) =
            await_event(&events, EXIT_LIMIT + sample, "Downgraded", |e| {
                match &e.kind {
                    EventKind::Downgraded {
                        from,
                        to,
                        cause,
                        reading,
                    } => Some((
                        from.clone(),
                        to.clone(),
                        format!("{cause:?}"),
                        reading.map(|r| r.used_percent()),
                        e.at_ms,
                    )),
                    _ => None,
                }
            })
            .with_context(|| format!("run {run}: after other apps took {CRITICAL_MB} MiB"))?;
        if from != top {
            bail!("run {run}: the LLM stepped down from {from}, not {top}");
        }
        // The old worker stops before the new one starts: its VRAM must be free first.
        let (mut exited_ms, mut spawned_ms) = (None, None);
        let (load_ms, warmup_ms, loaded_ms) = await_event(
            &events,
            READY_LIMIT,
            &format!("Loaded {to}"),
            |e| match &e.kind {
                EventKind::Loaded {
                    profile,
                    load_ms,
                    warmup_ms,
                    ..
                } if *profile == to => Some((f64::from(*load_ms), f64::from(*warmup_ms), e.at_ms)),
                EventKind::Exited { .. } if e.worker == Some(WorkerKind::Llm) => {
                    exited_ms.get_or_insert(e.at_ms);
                    None
                }
                EventKind::Spawned { .. } if e.worker == Some(WorkerKind::Llm) => {
                    spawned_ms.get_or_insert(e.at_ms);
                    None
                }
                _ => None,
            },
        )
        .with_context(|| format!("run {run}: after the downgrade to {to}"))?;
        let after = |at_ms: u64| at_ms as f64 - written;
        let (detection_ms, ready_ms) = (after(downgraded_ms), after(loaded_ms));
        runs.push(DowngradeRun {
            from,
            to,
            cause,
            used_percent,
            detection_ms,
            old_exited_ms: exited_ms.map(after),
            spawned_ms: spawned_ms.map(after),
            ready_ms,
            reload_ms: ready_ms - detection_ms,
            load_ms,
            warmup_ms,
        });

        // Back up: calm again (the LLM may have stepped further down meanwhile), then the
        // top profile by hand, as a user would.
        write_scenario(&scenario, CALM_MB)?;
        std::thread::sleep(2 * sample + Duration::from_millis(100));
        while events.try_recv().is_ok() {}
        match ctl::call(dir, &Request::SetProfile { name: top.into() })? {
            Reply::Ok => {}
            Reply::Error { message } => bail!("run {run}: `mate ctl profile {top}`: {message}"),
            other => bail!("unexpected reply to profile: {other:?}"),
        }
        await_loaded(&events, top).with_context(|| format!("run {run}: back to {top}"))?;
    }
    let worker_pids: Vec<u32> = status_now(dir)?
        .workers
        .iter()
        .filter_map(|w| w.pid)
        .collect();
    let shutdown = shut_down(dir, &mut up, &worker_pids)?;
    if !shutdown.clean {
        bail!("the supervisor did not shut down cleanly: {shutdown}");
    }
    Ok(DowngradeSeries { sample_ms, runs })
}

/// A pseudo-random duration below `max`, from the clock's nanoseconds.
fn jitter(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    let max = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX).max(1);
    Duration::from_nanos(nanos % max)
}

/// Writes the simulated card with other applications holding `other_mb`, the way an editor
/// saves (a new file renamed over the old), and returns when it was in place, in
/// milliseconds since the Unix epoch.
fn write_scenario(path: &Path, other_mb: u64) -> anyhow::Result<f64> {
    let text = format!(
        "# Written by `mate bench profiles`.\nname = \"mate bench card\"\ntotal_mb = {CARD_MB}\n\n\
         [[other]]\nat_s = 0.0\nmb = {other_mb}\n"
    );
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    Ok(now.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scenario_jumps_from_calm_to_critical() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gpu.toml");
        let critical = crate::gpu::pressure::Thresholds::default().critical_percent;
        write_scenario(&path, CALM_MB).expect("write");
        let mut probe =
            crate::gpu::open(&crate::gpu::GpuChoice::Simulated(path.clone())).expect("opens");
        let calm = probe.sample(None).expect("reads");
        assert_eq!(calm.total_bytes, CARD_MB << 20);
        assert_eq!(calm.used_bytes, CALM_MB << 20);
        write_scenario(&path, CRITICAL_MB).expect("rewrite");
        let jumped = probe.sample(None).expect("reads again");
        assert_eq!(jumped.used_bytes, CRITICAL_MB << 20);
        assert!(
            jumped.used_percent() >= critical,
            "{}",
            jumped.used_percent()
        );
    }
}
