//! The Windows build end to end under Wine: the real `mate.exe` (named by `MATE_WINDOWS_EXE`,
//! built by `tools/windows/cross-build`) in a throwaway Wine prefix, with its named pipe, its Job
//! Object, `taskkill /F` (TerminateProcess) instead of signals, and the bridge against
//! `mate.exe unity-sim` over loopback TCP, and `mate.exe bench llm`, which drives a worker through
//! `mate::direct` over a named pipe. See `mate_tests::wine` for the prefix and the
//! Wine-only workarounds.
//!
//! Without `MATE_WINDOWS_EXE` the tests print `SKIPPED: …` and pass, except under CI (`CI` set),
//! where they fail: CI must run them.
//!
//! Every step prints its timing to stderr (`--nocapture` shows it), and a failed step says which
//! step it was, with the tail of the supervisor's log.
#![cfg(target_os = "linux")]

use std::{
    io::{Read as _, Write as _},
    panic::AssertUnwindSafe,
    path::PathBuf,
    sync::Mutex,
    time::{Duration, Instant},
};

use mate_tests::Mate as _;
use mate_tests::{
    default_model, event_kind, free_address, gguf, signal, unity_commands, wait_until,
    wine::WinePrefix, ChatStream, UnitySim,
};
use serde_json::Value;

/// For a `mate.exe` request, or for a worker to be replaced.
const LIMIT: Duration = Duration::from_secs(60);
/// For anything that loads or runs the default model under Wine on a busy 2-core machine.
const LONG: Duration = Duration::from_secs(180);

/// A long reply from the default model, deterministic, so there is time to kill the worker
/// after its first chunk (~10 tokens/s on 2 cores under Wine).
const STORY: &str = "Tell me a long story about a cat who sails around the world.";

/// One Wine prefix at a time: two of them (and two models) on a 2-core machine only slow each
/// other down past their deadlines.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A new prefix for `exe`, its creation timed on stderr.
fn prefix(exe: &std::path::Path) -> WinePrefix {
    let wine = WinePrefix::create(exe);
    eprintln!(
        "[wine] prefix created: wineboot {:.1} s, stand-in DLLs {:.1} s",
        wine.boot_time.as_secs_f64(),
        wine.standins_time.as_secs_f64()
    );
    wine
}

/// The Windows executable under test, or `None` (test skipped) when `MATE_WINDOWS_EXE` is not
/// set outside CI.
fn windows_exe(test: &str) -> Option<PathBuf> {
    match std::env::var_os("MATE_WINDOWS_EXE") {
        Some(exe) if !exe.is_empty() => Some(PathBuf::from(exe)),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "MATE_WINDOWS_EXE is not set, and CI must run the Wine end-to-end test: build \
                 mate.exe with tools/windows/cross-build and pass its path in MATE_WINDOWS_EXE"
            );
            eprintln!(
                "SKIPPED: {test}: MATE_WINDOWS_EXE is not set (build mate.exe with \
                 tools/windows/cross-build, then run with MATE_WINDOWS_EXE=<path to mate.exe>)"
            );
            None
        }
    }
}

/// Times the steps of a scenario and names the one that failed.
struct Steps<'a> {
    wine: &'a WinePrefix,
    started: Instant,
}

impl<'a> Steps<'a> {
    fn new(wine: &'a WinePrefix) -> Self {
        Steps {
            wine,
            started: Instant::now(),
        }
    }

    /// Runs one step; prints its time, or fails with its name and the supervisor's log.
    fn run<T>(&self, name: &str, f: impl FnOnce() -> T) -> T {
        eprintln!("[wine] {name} ...");
        let started = Instant::now();
        match std::panic::catch_unwind(AssertUnwindSafe(f)) {
            Ok(value) => {
                eprintln!(
                    "[wine] {name}: ok in {:.1} s (total {:.1} s)",
                    started.elapsed().as_secs_f64(),
                    self.started.elapsed().as_secs_f64()
                );
                value
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                    .unwrap_or_default();
                panic!(
                    "step `{name}` failed after {:.1} s: {message}\n--- supervisor.log (tail) \
                     ---\n{}\n--- up's stderr ---\n{}",
                    started.elapsed().as_secs_f64(),
                    self.wine.supervisor_log_tail(40),
                    self.wine.up_log()
                );
            }
        }
    }
}

fn ok(what: &str, out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every command the simulator read since the `n`-th connection (0-based), batches flattened.
fn received_since_connection(sim: &UnitySim, n: usize) -> Vec<String> {
    let events = sim.events();
    let start = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e["event"] == "connected")
        .nth(n)
        .map_or(events.len(), |(i, _)| i);
    events[start..]
        .iter()
        .filter(|e| e["event"] == "line")
        .flat_map(|e| unity_commands(&e["line"]))
        .collect()
}

/// The bridge's status (`vitals.bridge` of `ctl status --json`).
fn bridge_vitals(wine: &WinePrefix) -> Value {
    wine.worker("bridge")
        .map(|w| w["vitals"]["bridge"].clone())
        .unwrap_or(Value::Null)
}

/// The events of one worker (`"Llm"`, `"Bridge"`) and kind (`"HangDetected"`, …).
fn events_of(wine: &WinePrefix, worker: &str, kind: &str) -> Vec<Value> {
    wine.events()
        .into_iter()
        .filter(|e| e["worker"] == worker && event_kind(e) == kind)
        .collect()
}

fn describe(processes: &[mate_tests::wine::WineProcess]) -> Vec<String> {
    processes
        .iter()
        .map(|p| format!("{} {}", p.pid, p.cmdline))
        .collect()
}

#[test]
fn the_windows_build_runs_supervises_and_recovers_under_wine() {
    let Some(exe) = windows_exe("the_windows_build_runs_supervises_and_recovers_under_wine") else {
        return;
    };
    let _one = one_at_a_time();
    let model = default_model();
    let total = Instant::now();
    let wine = prefix(&exe);
    let steps = Steps::new(&wine);

    steps.run("a. mate.exe doctor", || {
        let out = wine.run(&["doctor"], LIMIT);
        ok("mate.exe doctor", &out);
    });

    // The Unity stand-in first, so the bridge connects at once; under Wine too.
    let sim = steps.run("f0. mate.exe unity-sim listening", || {
        wine.unity_sim(&free_address())
    });
    wine.write_config(&format!(
        "[chat]\nmax_tokens = 160\ntemperature = 0.0\n[unity]\naddress = \"{}\"\n",
        sim.address
    ));

    let mut sup = steps.run("b. mate.exe up, every worker running", || {
        let sup = wine.up(model);
        let status = wine.wait_running(LONG);
        let workers = wine.mate_processes("worker");
        assert_eq!(
            workers.len(),
            3,
            "three worker processes in the prefix (llm, bridge, api): {:?}\nstatus: {status}",
            describe(&workers)
        );
        sup
    });

    steps.run("c. ctl status and ctl chat", || {
        let out = wine.run(&["ctl", "status"], LIMIT);
        ok("ctl status", &out);
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(
            printed.contains("llm") && printed.contains("bridge"),
            "ctl status names both workers: {printed}"
        );
        let out = wine.run(&["ctl", "chat", "Hello!"], LONG);
        ok("ctl chat", &out);
        let reply = String::from_utf8_lossy(&out.stdout);
        assert!(!reply.trim().is_empty(), "an empty reply");
    });

    steps.run(
        "c2. the OpenAI API of mate.exe, from a Linux client",
        || {
            let url = wine.api_url(LIMIT);
            let address = url.trim_start_matches("http://");
            let body = r#"{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}"#;
            let mut tcp = std::net::TcpStream::connect(address).expect("connect to the API");
            tcp.set_read_timeout(Some(LONG)).expect("timeout");
            write!(
                tcp,
                "POST /v1/chat/completions HTTP/1.1\r\nHost: m\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
                body.len()
            )
            .expect("send");
            let mut answer = String::new();
            let _ = tcp.read_to_string(&mut answer);
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            assert!(answer.contains("\"chat.completion\""), "{answer}");
        },
    );

    steps.run("d. taskkill /F of the llm worker mid-reply", || {
        let llm = wine.worker_pid("llm").expect("the llm worker's pid");
        let mut chat = ChatStream::start(wine.mate(&["ctl", "chat", "--json", STORY]));
        let first = chat
            .next_text(LONG)
            .unwrap_or_else(|line| panic!("the reply starts with a chunk, got {line}"));
        ok("taskkill /F /PID <llm>", &wine.taskkill(llm));
        let (text, events, stats) = chat.finish(first, LONG);

        let kinds: Vec<String> = events.iter().map(event_kind).collect();
        assert!(
            kinds.contains(&"Exited".to_string()),
            "the worker's exit is told: {kinds:?}"
        );
        assert!(
            kinds.contains(&"ReplyResumed".to_string()),
            "the reply resumed: {kinds:?}"
        );
        assert!(stats["generated_tokens"].as_u64() > Some(0), "{stats}");
        let lines = wine.transcript();
        assert_eq!(lines.len(), 4, "two turns in the transcript: {lines:#?}");
        assert_eq!(lines[2]["text"], STORY);
        assert_eq!(
            lines[3]["text"],
            text.as_str(),
            "the transcript keeps the reply as the client saw it"
        );
        assert_eq!(lines[3]["resumed"], 1, "{}", lines[3]);
        let after = wine.worker("llm").expect("the llm worker");
        assert_eq!(after["restarts"], 1, "{after}");
        assert_ne!(after["pid"], llm, "{after}");
        eprintln!(
            "[wine]   reply of {} chars, {} tokens after the resume; events {kinds:?}; the \
             killed worker's exit: {}",
            text.chars().count(),
            stats["generated_tokens"],
            after["last_exit"]
        );
    });

    steps.run("e. ctl hang llm: replaced after missed heartbeats", || {
        let llm = wine.worker_pid("llm").expect("the llm worker's pid");
        ok("ctl hang llm", &wine.run(&["ctl", "hang", "llm"], LIMIT));
        wait_until(LIMIT, "the hung llm worker replaced and running", || {
            wine.worker_pid("llm").is_some_and(|p| p != llm)
        });
        let hangs = events_of(&wine, "Llm", "HangDetected");
        assert_eq!(hangs.len(), 1, "{hangs:#?}");
        eprintln!("[wine]   {}", hangs[0]["message"]);
        wait_until(LIMIT, "one llm worker process left", || {
            wine.mate_processes("worker llm").len() == 1
        });
        let after = wine.worker("llm").expect("the llm worker");
        assert_eq!(after["restarts"], 2, "{after}");
    });

    steps.run(
        "f. the bridge against unity-sim; taskkill /F of the bridge",
        || {
            sim.wait_for(LIMIT, "the bridge connected to unity-sim", |events| {
                events.iter().any(|e| e["event"] == "line")
            });
            let out = wine.run(&["ctl", "avatar", "expression", "happy"], LIMIT);
            ok("ctl avatar expression happy", &out);
            sim.wait_for(LIMIT, "set_expression:happy at unity-sim", |_| {
                received_since_connection(&sim, 0).contains(&"set_expression:happy".to_string())
            });
            let mut acked = Value::Null;
            wait_until(LIMIT, "the bridge connected with nothing pending", || {
                acked = bridge_vitals(&wine);
                acked["connected"] == true
                    && acked["queue_depth"] == 0
                    && acked["acks_pending"] == 0
            });
            let bridge = wine.worker_pid("bridge").expect("the bridge worker's pid");
            ok("taskkill /F /PID <bridge>", &wine.taskkill(bridge));
            sim.wait_for(LIMIT, "a second connection from a new bridge", |_| {
                sim.connections() == 2
            });
            wait_until(LIMIT, "the avatar's state from the new bridge", || {
                received_since_connection(&sim, 1).contains(&"set_expression:happy".to_string())
            });
            wait_until(LIMIT, "the new bridge worker running", || {
                wine.worker_pid("bridge").is_some_and(|p| p != bridge)
            });
            let after = wine.worker("bridge").expect("the bridge worker");
            assert_eq!(after["restarts"], 1, "{after}");
            eprintln!(
                "[wine]   the killed bridge's exit: {}; commands since the reconnect: {:?}",
                after["last_exit"],
                received_since_connection(&sim, 1)
            );
        },
    );

    steps.run(
        "g. a second mate.exe up is refused with exit code 5",
        || {
            let model = wine.windows_path(model);
            let out = wine.run(&["--model", &model, "up"], LIMIT);
            assert_eq!(
                out.status.code(),
                Some(5),
                "a second up on the same state dir: stdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                wine.worker_pid("llm").is_some() && wine.worker_pid("bridge").is_some(),
                "the first supervisor and its workers carry on"
            );
        },
    );

    steps.run("h. ctl shutdown: up exits 0, no mate process left", || {
        ok("ctl shutdown", &wine.run(&["ctl", "shutdown"], LIMIT));
        let status = sup.wait_exit(LIMIT);
        assert!(status.success(), "mate.exe up exited with {status}");
        let supervised = || -> Vec<_> {
            wine.mate_processes("")
                .into_iter()
                .filter(|p| !p.cmdline.contains("unity-sim"))
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !supervised().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let left = supervised();
        assert!(
            left.is_empty(),
            "mate processes left after the shutdown: {:?}\ntasklist:\n{}",
            describe(&left),
            wine.tasklist()
        );
    });
    drop(sim);

    steps.run(
        "i. mate.exe bench llm: a worker driven through mate::direct",
        || {
            let model = wine.windows_path(model);
            let out = wine.run(
                &[
                    "bench",
                    "llm",
                    "--runs",
                    "1",
                    "--max-tokens",
                    "8",
                    "--conversation-tokens",
                    "64",
                    "--model",
                    &model,
                ],
                LONG,
            );
            ok("mate.exe bench llm", &out);
            let report: Value = serde_json::from_slice(&out.stdout).expect("bench llm prints JSON");
            let worker = &report["worker"];
            assert!(worker["generated_tokens"].as_f64() > Some(0.0), "{report}");
            assert!(
                report["restart"]["with_snapshot_cached_tokens"].as_f64() > Some(0.0),
                "the restarted worker reused its snapshot: {report}"
            );
            eprintln!(
                "[wine]   worker: load {} ms, ttft {} ms, {:.1} tok/s; worker over in-process \
                 {:.2}",
                worker["load_ms"],
                worker["ttft_warm_ms"],
                worker["gen_tokens_per_s"].as_f64().unwrap_or(0.0),
                report["ratios"]["worker_over_in_process_gen_tokens_per_s"]
                    .as_f64()
                    .unwrap_or(0.0)
            );
        },
    );
    eprintln!(
        "[wine] scenario done in {:.1} s (prefix included)",
        total.elapsed().as_secs_f64()
    );
}

#[test]
fn workers_die_with_a_killed_supervisor_under_wine() {
    let Some(exe) = windows_exe("workers_die_with_a_killed_supervisor_under_wine") else {
        return;
    };
    let _one = one_at_a_time();
    let total = Instant::now();
    let wine = prefix(&exe);
    let steps = Steps::new(&wine);
    // The tiny random-weight model: this test is about processes, not replies.
    let model = wine.drive_c().join("mate/tiny.gguf");
    gguf::TinyModel::default()
        .write(&model)
        .expect("write the tiny model");

    let mut sup = steps.run("up, every worker running", || {
        let sup = wine.up(&model);
        wine.wait_running(LONG);
        sup
    });
    let workers = wine.mate_processes("worker");
    assert_eq!(workers.len(), 3, "{:?}", describe(&workers));

    steps.run("ctl hang llm, then kill -9 of the supervisor", || {
        ok("ctl hang llm", &wine.run(&["ctl", "hang", "llm"], LIMIT));
        // The Linux process behind `wine mate.exe up` is the supervisor itself.
        let supervisors = wine.mate_processes(" up");
        assert!(
            supervisors.iter().any(|p| p.pid == sup.pid()),
            "the supervisor is the process wine started: {:?} (wine's pid {})",
            describe(&supervisors),
            sup.pid()
        );
        signal(sup.pid(), "KILL");
        sup.wait_exit(LIMIT);
    });

    steps.run("no worker left within 10 s", || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !wine.mate_processes("").is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let left = wine.mate_processes("");
        assert!(
            left.is_empty(),
            "mate processes outlived their supervisor by 10 s: {:?}\ntasklist:\n{}",
            describe(&left),
            wine.tasklist()
        );
    });
    eprintln!(
        "[wine] done in {:.1} s (prefix included)",
        total.elapsed().as_secs_f64()
    );
}
