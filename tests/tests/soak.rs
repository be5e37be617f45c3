//! The soak: chat turns against a real supervisor while faults are injected at random points
//! (kill -9 of the LLM worker, SIGSTOP of it, kill -9 of the bridge worker, the Unity peer
//! killed and started again), then the invariants a long session relies on, printed as one
//! summary line.
//!
//! Short by default (CI); `MATE_SOAK_TURNS=500 cargo test --release -p mate-tests --test soak
//! -- --nocapture` for the long mode. `MATE_SOAK_SEED` replays a run (the seed is printed).
#![cfg(target_os = "linux")]

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use mate_tests::Mate as _;
use mate_tests::{process_alive, running_pid, signal, wait_until, worker_in, StateDir, UnitySim};

const LIMIT: Duration = Duration::from_secs(60);

/// xorshift64*: enough randomness for fault timing, and replayable from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A worker's restart count in a parsed status.
fn restarts(status: &serde_json::Value, kind: &str) -> Option<u64> {
    worker_in(status, kind)?["restarts"].as_u64()
}

/// Connections the Unity peers saw, all of them together.
fn total_connections(sims: &[UnitySim]) -> usize {
    sims.iter().map(UnitySim::connections).sum()
}

#[derive(Debug, Default)]
struct Faults {
    llm_kill: u32,
    llm_hang: u32,
    bridge_kill: u32,
    unity_restart: u32,
}

#[test]
fn turns_survive_random_faults_and_the_session_stays_whole() {
    let turns = env_number("MATE_SOAK_TURNS").unwrap_or(12);
    let seed = env_number("MATE_SOAK_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1
    });
    println!("soak: {turns} turns, seed {seed} (MATE_SOAK_SEED={seed} replays it)");
    let mut rng = Rng(seed);

    let mut sims = vec![UnitySim::start(&[])];
    let address = sims[0].address.clone();
    let state = StateDir::new();
    // Fast hang detection; restarts never back off for long, never escalate, never downgrade:
    // the soak counts restarts, so every fault must cost exactly one.
    state.write_config(&format!(
        "[supervisor]\nheartbeat_ms = 100\nmissed_heartbeats = 3\nbackoff_initial_ms = 10\n\
         backoff_max_ms = 50\nrestart_intensity = 100000\n\
         [gpu]\ncrash_limit = 100000\n\
         [chat]\nmax_tokens = 48\n\
         [unity]\naddress = \"{address}\"\n"
    ));
    let mut sup = state.start_supervisor();
    let sup_pid = sup.pid();
    let rss_start = rss_kib(sup_pid);

    let mut faults = Faults::default();
    let mut pids = BTreeSet::new();
    let (mut answered, mut failed) = (0u64, Vec::new());
    for turn in 1..=turns {
        let status = state.wait_running(LIMIT);
        let pid = |kind| worker_in(&status, kind).and_then(running_pid);
        let (llm, bridge) = (
            pid("llm").expect("llm pid"),
            pid("bridge").expect("bridge pid"),
        );
        pids.extend([llm, bridge]);
        let chat = state
            .mate(&[
                "ctl",
                "chat",
                "--json",
                &format!("turn {turn}: how are you?"),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn ctl chat");
        // A fault at a random point of the reply, or none (one turn in five).
        std::thread::sleep(Duration::from_millis(rng.below(150)));
        match rng.below(5) {
            0 => {
                signal(llm, "KILL");
                faults.llm_kill += 1;
            }
            1 => {
                signal(llm, "STOP");
                faults.llm_hang += 1;
            }
            2 => {
                signal(bridge, "KILL");
                faults.bridge_kill += 1;
            }
            3 => {
                sims.last_mut().expect("a sim").kill();
                sims.push(UnitySim::start_at(&address, &[]));
                faults.unity_restart += 1;
            }
            _ => {}
        }
        let out = mate_tests::wait_output(chat, LIMIT);
        // The fault's recovery is seen before the next turn (a fault injected into a process
        // whose exit was not noticed yet would otherwise not count).
        let (want_llm, want_bridge) = (
            u64::from(faults.llm_kill + faults.llm_hang),
            u64::from(faults.bridge_kill),
        );
        wait_until(LIMIT, "the fault's restart", || {
            state.status().is_some_and(|s| {
                restarts(&s, "llm") == Some(want_llm) && restarts(&s, "bridge") == Some(want_bridge)
            })
        });
        let connections = 1 + faults.unity_restart + faults.bridge_kill;
        wait_until(LIMIT, "the bridge connected to the current peer", || {
            total_connections(&sims) == connections as usize
        });
        let stdout = String::from_utf8_lossy(&out.stdout);
        let done = stdout.lines().any(|l| l.starts_with("{\"ChatDone\""));
        if out.status.success() && done {
            answered += 1;
        } else {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
            assert!(
                !why.is_empty(),
                "turn {turn} neither answered nor failed with a reason (seed {seed})"
            );
            failed.push(format!("turn {turn}: {why}"));
        }
    }
    let status = state.wait_running(LIMIT);
    pids.extend(
        ["llm", "bridge"]
            .iter()
            .filter_map(|k| worker_in(&status, k).and_then(running_pid)),
    );

    // Restarts: exactly one per injected worker fault.
    let count = |kind| restarts(&status, kind).unwrap_or(u64::MAX);
    let (llm_restarts, bridge_restarts) = (count("llm"), count("bridge"));
    assert_eq!(
        llm_restarts,
        u64::from(faults.llm_kill + faults.llm_hang),
        "{faults:?} (seed {seed})"
    );
    assert_eq!(
        bridge_restarts,
        u64::from(faults.bridge_kill),
        "{faults:?} (seed {seed})"
    );
    // Every Unity peer was found again: one connection to start, one per new peer, one per new
    // bridge worker.
    assert_eq!(
        total_connections(&sims),
        (1 + faults.unity_restart + faults.bridge_kill) as usize,
        "seed {seed}"
    );

    // The transcript: every answered turn once, in order, user then assistant.
    let lines = state.transcript();
    assert_eq!(lines.len() as u64, 2 * answered, "seed {seed}");
    for (i, pair) in lines.chunks(2).enumerate() {
        let n = i as u64 + 1;
        assert_eq!(pair[0]["role"], "user", "seed {seed}");
        assert_eq!(pair[1]["role"], "assistant", "seed {seed}");
        assert_eq!(pair[0]["turn"], n, "seed {seed}");
        assert_eq!(pair[1]["turn"], n, "seed {seed}");
    }

    let rss_end = rss_kib(sup_pid);
    // Stated bound: the supervisor grows by less than 32 MiB over the soak.
    assert!(
        rss_end < rss_start + 32 * 1024,
        "supervisor RSS {rss_start} → {rss_end} KiB (seed {seed})"
    );

    let out = state.run(&["ctl", "shutdown"], LIMIT);
    assert!(out.status.success());
    assert!(sup.wait_exit(LIMIT).success());
    let started = Instant::now();
    wait_until(LIMIT, "every worker process gone", || {
        pids.iter().all(|p| !process_alive(*p))
    });
    println!(
        "soak: {turns} turns, {answered} answered, {} failed with a reason; faults: {} llm \
         kill -9, {} llm SIGSTOP, {} bridge kill -9, {} Unity restarts; restarts llm \
         {llm_restarts}, bridge {bridge_restarts}; transcript {} lines, well-formed; \
         supervisor RSS {} → {} MiB; {} worker pids, none left ({} ms after exit); seed {seed}",
        failed.len(),
        faults.llm_kill,
        faults.llm_hang,
        faults.bridge_kill,
        faults.unity_restart,
        lines.len(),
        rss_start / 1024,
        rss_end / 1024,
        pids.len(),
        started.elapsed().as_millis()
    );
    for why in &failed {
        println!("soak: {why}");
    }
}
