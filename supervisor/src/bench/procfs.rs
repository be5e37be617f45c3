//! What the benches read of other processes in `/proc` (Linux): resident memory, CPU time and
//! whether a process is still alive. Every reader returns `None` (or nothing) where there is
//! no `/proc`, so the benches still run elsewhere, with those figures left null.

use std::{
    path::Path,
    time::{Duration, Instant},
};

/// Refuses, before any work, a bench that kills workers with SIGKILL and reads their memory
/// in `/proc`, where those do not exist.
pub(super) fn linux_only(bench: &str) -> anyhow::Result<()> {
    if cfg!(target_os = "linux") {
        return Ok(());
    }
    anyhow::bail!(
        "mate bench {bench} runs on Linux only: it kills workers with SIGKILL and reads their \
         memory and CPU time in /proc. `mate bench llm`, `bridge` and `profiles` run here"
    )
}

/// Ends process `pid` the way a crash does: SIGKILL on Unix, `taskkill /F` on Windows.
#[cfg(unix)]
pub(super) fn kill9(pid: u32) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use rustix::process::{kill_process, Pid, Signal};
    let target = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .with_context(|| format!("{pid} is not a pid"))?;
    kill_process(target, Signal::KILL).with_context(|| format!("kill -9 {pid}"))
}

#[cfg(not(unix))]
pub(super) fn kill9(pid: u32) -> anyhow::Result<()> {
    let status = std::process::Command::new("taskkill")
        .args(["/F", "/PID", &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "taskkill /F /PID {pid} failed");
    Ok(())
}

/// Fields of `/proc/<pid>/status` in KiB, in the order asked; `None` where unreadable.
pub(super) fn proc_status_kib(pid: u32, keys: &[&str]) -> Vec<Option<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    keys.iter()
        .map(|key| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
pub(super) struct IdleCpu {
    /// From the threads' run time in `/proc/<pid>/task/*/schedstat` (nanoseconds).
    pub(super) schedstat_percent: f64,
    /// From utime + stime in `/proc/<pid>/stat` (clock ticks of 10 ms: coarse over 5 s).
    pub(super) ticks_percent: f64,
}

/// CPU the process used over `window`, as a percentage of one core; `None` without `/proc`.
pub(super) fn idle_cpu(pid: u32, window: Duration) -> Option<IdleCpu> {
    let read = || Some((schedstat_ns(pid)?, stat_ticks(pid)?, Instant::now()));
    let (ns0, ticks0, t0) = read()?;
    std::thread::sleep(window);
    let (ns1, ticks1, t1) = read()?;
    let wall = (t1 - t0).as_secs_f64();
    Some(IdleCpu {
        schedstat_percent: ns1.saturating_sub(ns0) as f64 / 1e9 / wall * 100.0,
        ticks_percent: ticks1.saturating_sub(ticks0) as f64 / 100.0 / wall * 100.0,
    })
}

/// Time on CPU of all the process's threads, in nanoseconds.
fn schedstat_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        // A thread may end between the listing and the read.
        let Ok(text) = std::fs::read_to_string(task.ok()?.path().join("schedstat")) else {
            continue;
        };
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// utime + stime in clock ticks (USER_HZ, 100 on Linux).
fn stat_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces; utime and stime are fields 14
    // and 15, so 11 and 12 after the state (field 3).
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// When `pid` stopped being a live process, polled every 100 µs until `deadline`; `None`
/// without `/proc` or past the deadline.
pub(super) fn died(pid: u32, deadline: Instant) -> Option<Instant> {
    while Instant::now() < deadline {
        if !alive(pid)? {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    None
}

/// Whether `pid` is a live process; `None` without `/proc`. A zombie counts as dead only
/// once its last thread is gone: a killed group leader turns zombie before its other threads
/// have exited, and the parent hears of the exit only after the last one.
pub(super) fn alive(pid: u32) -> Option<bool> {
    if !Path::new("/proc/self").exists() {
        return None;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Some(false);
    };
    let zombie = stat
        .rfind(')')
        .is_some_and(|at| stat[at + 1..].trim_start().starts_with('Z'));
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count);
    Some(!zombie || threads > 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_uses_memory() {
        let pid = std::process::id();
        if Path::new("/proc/self").exists() {
            assert_eq!(alive(pid), Some(true));
            assert!(proc_status_kib(pid, &["VmRSS"])[0].is_some_and(|k| k > 0));
            assert!(stat_ticks(pid).is_some());
            // Some kernels (this project's VM) report 0 ns for short-lived processes.
            assert!(schedstat_ns(pid).is_some());
        }
    }
}
