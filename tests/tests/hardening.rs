//! mate in a hostile local environment: a connection flood, other users on the machine, a
//! quick stop/start, a full disk. Each test drives the real `mate up` as an attacker or an
//! unlucky user would, and checks what a user relies on: the LLM keeps serving, nothing of the
//! conversation is readable by others or lost, and no command claims what it did not do.
#![cfg(target_os = "linux")]

use std::{
    os::unix::{
        fs::{MetadataExt as _, PermissionsExt as _},
        net::UnixStream,
        process::CommandExt as _,
    },
    path::Path,
    process::Stdio,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use mate_tests::Mate as _;
use mate_tests::{event_kind, process_alive, signal, wait_output, wait_until, StateDir};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);
/// `mate ctl`'s exit code for "running but busy" (README, "Exit codes").
const BUSY: i32 = 6;
/// A user that is not the one running the tests (root only).
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // `/proc/self` belongs to the effective user of the process looking at it.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `mate up` on a fake model, started by bash after `setup` (a umask, a ulimit), which the
/// supervisor and its workers inherit.
fn up_under(state: &StateDir, setup: &str) -> mate_tests::Supervisor {
    let model = state.fake_model();
    let mate = state.mate(&["--model", model.to_str().expect("utf-8"), "up"]);
    let mut cmd = std::process::Command::new("bash");
    cmd.arg("-c")
        .arg(format!("{setup}; exec \"$@\""))
        .arg("bash")
        .arg(mate.get_program())
        .args(mate.get_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (key, value) in mate.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    mate_tests::Supervisor {
        child: cmd.spawn().expect("bash … mate up"),
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).expect("metadata").mode() & 0o777
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).expect("chown");
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Opens connections to the supervisor's socket as fast as it can, ~500 open at any time,
/// never saying hello: each slot is closed and opened again in turn.
struct Flood {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Flood {
    fn start(socket: &Path) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let socket = socket.to_path_buf();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut open: Vec<Option<UnixStream>> = (0..500).map(|_| None).collect();
            let mut opened = 0u64;
            while !flag.load(Ordering::Relaxed) {
                for slot in &mut open {
                    *slot = UnixStream::connect(&socket).ok();
                    opened += 1;
                }
            }
            opened
        });
        Flood {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops and returns how many connections it opened.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `mate ctl status --json` during a flood: the status, or `None` for a documented "busy";
/// "not running" fails the test.
fn status_under_flood(state: &StateDir) -> Option<Value> {
    let out = state.run(&["ctl", "status", "--json"], LIMIT);
    match out.status.code() {
        Some(0) => Some(serde_json::from_slice(&out.stdout).expect("status JSON")),
        Some(BUSY) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("busy"), "{stderr}");
            None
        }
        code => panic!(
            "ctl status during a flood exited {code:?} (3 would read as 'not started'): {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn a_connection_flood_never_fails_a_worker_and_ctl_says_busy_not_gone() {
    let state = StateDir::new();
    let _sup = state.start_supervisor();
    let mut pid = state.worker_pid("llm").expect("llm pid");
    let flood = Flood::start(&state.path().join("run/mate.sock"));

    // Three crashes of the LLM worker while the flood goes on: each time a new worker gets in
    // (it never competes with connections that have not said hello).
    let mut answered = 0;
    for _ in 0..3 {
        signal(pid, "KILL");
        let old = pid;
        wait_until(LIMIT, "a new LLM worker running during the flood", || {
            let Some(status) = status_under_flood(&state) else {
                return false;
            };
            answered += 1;
            let llm = mate_tests::worker_in(&status, "llm").expect("llm entry");
            assert_ne!(llm["state"], "Failed", "the flood failed the LLM: {llm}");
            match mate_tests::running_pid(llm) {
                Some(new) if new != old => {
                    pid = new;
                    true
                }
                _ => false,
            }
        });
    }
    let opened = flood.stop();
    assert!(answered >= 3, "ctl got answers during the flood");
    assert!(
        opened > 1000,
        "the flood opened only {opened} connections, not a flood"
    );
    let status = state.wait_running(LIMIT);
    let llm = mate_tests::worker_in(&status, "llm").expect("llm");
    assert_eq!(llm["restarts"], 3, "{llm}");
    let out = state.run(&["ctl", "chat", "Hello"], LIMIT);
    assert!(out.status.success(), "chat after the flood");
    eprintln!("flood: {opened} connections opened, {answered} status answers during it");
}

#[test]
fn state_files_are_private_whatever_the_umask_and_no_half_snapshot_is_left() {
    let state = StateDir::new();
    let session = state.path().join("session");
    std::fs::create_dir_all(&session).expect("session dir");
    // What a worker killed mid-snapshot leaves behind.
    let leftover = session.join("conversation-1.kv.tmp");
    std::fs::write(&leftover, vec![0u8; 4096]).expect("leftover");
    chmod(state.path(), 0o755);
    let mut sup = up_under(&state, "umask 022");
    state.wait_running(LIMIT);
    assert!(
        !leftover.exists(),
        "a half-written snapshot is removed at start"
    );
    for text in ["Hello there", "How are you?"] {
        let out = state.run(&["ctl", "chat", text], LIMIT);
        assert!(out.status.success(), "chat");
    }
    let out = state.run(&["ctl", "clear"], LIMIT);
    assert!(out.status.success(), "clear");
    let out = state.run(&["ctl", "chat", "A new conversation"], LIMIT);
    assert!(out.status.success(), "chat");
    // Shut down right after a turn, while the worker may be writing its snapshot.
    let out = state.run(&["ctl", "shutdown"], LIMIT);
    assert!(out.status.success(), "shutdown");
    assert!(sup.wait_exit(LIMIT).success());

    let mut seen = Vec::new();
    let mut stack = vec![state.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        assert_eq!(mode(&dir), 0o700, "{} is not private", dir.display());
        for entry in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            if meta.is_dir() {
                stack.push(path);
            } else {
                assert_eq!(
                    mode(&path) & 0o077,
                    0,
                    "{} is readable by others",
                    path.display()
                );
                assert!(
                    path.extension().is_none_or(|e| e != "tmp"),
                    "{} was left behind",
                    path.display()
                );
                seen.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    for name in ["transcript.jsonl", "events.jsonl", "supervisor.log"] {
        assert!(seen.iter().any(|s| s == name), "{name} in {seen:?}");
    }
    assert!(
        seen.iter().any(|s| s.starts_with("transcript-")),
        "the archive from ctl clear in {seen:?}"
    );
    assert!(
        seen.iter().any(|s| s.starts_with("conversation-")),
        "a KV snapshot in {seen:?}"
    );
}

/// `mate up` on `dir` must fail, with `expect` in its message, before writing anything.
fn refused(state: &StateDir, model: &Path, expect: &str) {
    let out = state.run(
        &["--model", model.to_str().expect("utf-8"), "up"],
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "refused: {stderr}");
    assert!(stderr.contains(expect), "'{expect}' in: {stderr}");
}

#[test]
fn a_state_dir_others_can_write_or_with_links_is_refused_and_nothing_is_followed() {
    let outside = tempfile::tempdir().expect("dir");
    let model = outside.path().join("tiny.gguf");
    mate_tests::gguf::TinyModel::default()
        .write(&model)
        .expect("model");
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "not mate's\n").expect("victim");

    // Writable by every user.
    let state = StateDir::new();
    chmod(state.path(), 0o777);
    refused(&state, &model, "every user (mode 777)");
    assert!(!state.path().join("run").exists(), "nothing created");

    // Ours and private, but the log is a link to someone's file.
    let state = StateDir::new();
    std::fs::create_dir(state.path().join("logs")).expect("logs");
    std::os::unix::fs::symlink(&victim, state.path().join("logs/supervisor.log")).expect("link");
    refused(&state, &model, "symbolic link");

    // A linked folder.
    let state = StateDir::new();
    std::os::unix::fs::symlink(outside.path(), state.path().join("session")).expect("link");
    refused(&state, &model, "symbolic link");
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "not mate's\n",
        "the link's target is untouched"
    );

    if !is_root() {
        eprintln!("SKIPPED the foreign owner case: it needs root to give a dir to another user");
        return;
    }
    // Root on a world-writable state dir that another user owns and has prepared: their
    // `logs/supervisor.log` links to root's file, and `run/` is theirs.
    let state = StateDir::new();
    let (logs, run) = (state.path().join("logs"), state.path().join("run"));
    for dir in [&logs, &run] {
        std::fs::create_dir(dir).expect("mkdir");
        chmod(dir, 0o777);
        chown(dir, NOBODY);
    }
    std::os::unix::fs::symlink(&victim, logs.join("supervisor.log")).expect("link");
    chmod(state.path(), 0o777);
    chown(state.path(), NOBODY);
    refused(&state, &model, &format!("belongs to uid {NOBODY}"));
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "not mate's\n"
    );
    assert_eq!(mode(&run), 0o777, "their run/ is not chmodded");
    assert!(!run.join("mate.sock").exists(), "no socket in their run/");
}

#[test]
fn ctl_never_sends_its_token_to_a_socket_of_another_user() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to listen as another user");
        return;
    }
    let python = Path::new("/usr/bin/python3");
    if !python.exists() {
        eprintln!("SKIPPED: needs /usr/bin/python3 to listen as another user");
        return;
    }
    let state = StateDir::new();
    chmod(state.path(), 0o755);
    let run = state.path().join("run");
    std::fs::create_dir(&run).expect("run");
    chmod(&run, 0o777);
    std::fs::write(run.join("control.token"), "ab".repeat(32)).expect("token");
    let socket = run.join("mate.sock");
    // Another user's process on the socket, counting the bytes it is sent.
    let listener = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1]); s.listen(4)
print("ready", flush=True)
c, _ = s.accept(); c.settimeout(5); got = 0
try:
    while True:
        d = c.recv(4096)
        if not d: break
        got += len(d)
except OSError:
    pass
print(got, flush=True)
"#;
    let mut child = std::process::Command::new(python)
        .args(["-c", listener])
        .arg(&socket)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python listener");
    // Its lines as they come: "ready" once it listens (the socket file exists from bind on,
    // a moment before), then how many bytes it was sent.
    let said = mate_tests::line_channel(child.stdout.take().expect("piped stdout"));
    let next = || said.recv_timeout(LIMIT).unwrap_or_default();
    assert_eq!(next(), "ready", "the foreign listener listens");
    let out = state.run(&["ctl", "status"], LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("uid {NOBODY}")) && stderr.contains("token"),
        "{stderr}"
    );
    let got = next();
    let out = wait_output(child, LIMIT);
    assert_eq!(
        got,
        "0",
        "the listener got nothing: {got} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn stop_then_start_leaves_the_worker_running_and_stop_reports_only_a_done_stop() {
    let state = StateDir::new();
    let _sup = state.start_supervisor();

    // In a row: when `ctl stop` returns, the worker has stopped; `ctl start` starts it.
    let old = state.worker_pid("llm").expect("llm");
    let out = state.run(&["ctl", "stop", "llm"], LIMIT);
    assert!(out.status.success());
    let llm = state.worker("llm").expect("llm");
    assert_eq!(
        llm["state"], "Stopped",
        "stop returned before it was done: {llm}"
    );
    assert!(!process_alive(old), "the old process is gone");
    let out = state.run(&["ctl", "start", "llm"], LIMIT);
    assert!(out.status.success());
    state.wait_running(LIMIT);

    // A start during the stop's grace period (the worker is frozen, so it takes the whole
    // grace period and a SIGKILL): the start wins once the old process is gone.
    let old = state.worker_pid("llm").expect("llm");
    signal(old, "STOP");
    let stop = state
        .mate(&["ctl", "stop", "llm"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ctl stop");
    wait_until(LIMIT, "the LLM worker stopping", || {
        state
            .worker("llm")
            .is_some_and(|w| w["state"] == "Stopping")
    });
    let started = Instant::now();
    let out = state.run(&["ctl", "start", "llm"], LIMIT);
    assert!(
        out.status.success(),
        "start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !process_alive(old),
        "start returned once the old one was gone"
    );
    let llm = state.worker("llm").expect("llm");
    assert_ne!(llm["pid"].as_u64(), Some(u64::from(old)), "{llm}");
    assert!(
        matches!(llm["state"].as_str(), Some("Starting" | "Running")),
        "{llm}"
    );
    assert!(
        wait_output(stop, LIMIT).status.success(),
        "the stop was done too"
    );
    state.wait_running(LIMIT);
    eprintln!("start waited {:?} for the frozen worker", started.elapsed());
}

/// The lines of a JSON-lines file; fails on a line that is not JSON (torn or two glued).
fn json_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends mid-line",
        path.display()
    );
    text.lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("torn or merged line in {}: {e}: {l}", path.display()))
        })
        .collect()
}

#[test]
fn a_full_disk_is_reported_to_the_client_and_never_tears_a_journal_line() {
    let state = StateDir::new();
    state.write_config("[chat]\nmax_tokens = 24\n");
    // A file-size limit stands in for a full disk: every write past 6 KiB fails (EFBIG), in
    // the supervisor and its workers alike, the way ENOSPC fails them. SIGXFSZ is ignored so
    // that the write fails instead of the process dying.
    let _sup = up_under(&state, "trap '' XFSZ; ulimit -f 6");
    state.wait_running(LIMIT);

    let mut warned = None;
    for turn in 1..=60u64 {
        let out = state.run(&["ctl", "chat", &format!("Turn {turn}: hello")], LIMIT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "turn {turn}: {stderr}");
        if stderr.contains("warning:") && stderr.contains("not saved") {
            warned = Some(turn);
            break;
        }
    }
    let warned = warned.expect("a turn that could not be saved was reported to ctl chat");
    // More turns, each with its "not saved" event, fill the journal up to the limit too.
    let more = 12;
    for turn in 1..=more {
        let out = state.run(&["ctl", "chat", &format!("And {turn}")], LIMIT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("not saved"), "still unsaved: {stderr}");
    }
    // --json carries it as an event of its own.
    let out = state.run(&["ctl", "chat", "--json", "One more"], LIMIT);
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| event_kind(&l["Event"]) == "TurnNotSaved"),
        "{lines:?}"
    );
    // The supervisor is still there, the turns are still in the conversation.
    let status = state.status().expect("status");
    assert_eq!(status["turns"], warned + more + 1, "{status}");

    let transcript = json_lines(&state.path().join("session/transcript.jsonl"));
    assert_eq!(transcript.len() % 2, 0, "whole turns only");
    assert!((transcript.len() as u64 / 2) < warned);
    let journal = state.path().join("events.jsonl");
    let size = std::fs::metadata(&journal).expect("journal").len();
    // Whole events only, right up to the limit: the write that did not fit was taken back.
    let events = json_lines(&journal);
    assert!(!events.is_empty());
    assert!(
        size > 6144 - 1500,
        "the journal reached the limit, where a write fails partway ({size} bytes)"
    );
}
