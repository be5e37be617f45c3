//! Supervision end to end: the real `mate up`, real worker processes, real signals (kill -9,
//! SIGSTOP, Ctrl-C) and real sockets. Every wait has a deadline; nothing sleeps to "let things
//! settle" except where a test asserts that something does *not* happen.
#![cfg(target_os = "linux")]

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    process::Stdio,
    sync::mpsc,
    time::Duration,
};

use mate_protocol::{AuthToken, Endpoint, Hello, Role};
use mate_tests::Mate as _;
use mate_tests::{
    default_model, event_kind, process_alive, signal, wait_until, ChatStream, StateDir, Supervisor,
};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(20);
/// For anything that loads or runs the default model on a busy 2-core machine.
const LONG: Duration = Duration::from_secs(120);

/// A long reply from the default model, deterministic, so there is time to interfere.
const STORY_CONFIG: &str = "[chat]\nmax_tokens = 160\ntemperature = 0.0\n";
const STORY: &str = "Tell me a long story about a cat who sails around the world.";

fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn events_of(state: &StateDir, worker: &str, kind: &str) -> Vec<Value> {
    state
        .events()
        .into_iter()
        .filter(|e| e["worker"] == worker && event_kind(e) == kind)
        .collect()
}

/// Starts a supervisor on the default model with `config` and waits for both workers.
fn on_default_model(state: &StateDir, config: &str) -> Supervisor {
    state.write_config(config);
    let sup = state.up(default_model(), &[]);
    state.wait_running(LONG);
    sup
}

#[test]
fn kill_9_of_the_llm_mid_reply_completes_the_same_reply() {
    let state = StateDir::new();
    let _sup = on_default_model(&state, STORY_CONFIG);
    ok(&state.run(&["ctl", "chat", "Hello!"], LONG));
    let llm = state.worker_pid("llm").expect("llm pid");

    let mut chat = ChatStream::start(state.mate(&["ctl", "chat", "--json", STORY]));
    let first = chat
        .next_text(LONG)
        .unwrap_or_else(|line| panic!("the reply starts with a chunk, got {line}"));
    signal(llm, "KILL");
    let (text, events, stats) = chat.finish(first, LONG);

    let kinds: Vec<String> = events.iter().map(event_kind).collect();
    assert!(kinds.contains(&"Exited".to_string()), "{kinds:?}");
    assert!(kinds.contains(&"ReplyResumed".to_string()), "{kinds:?}");
    assert!(stats["generated_tokens"].as_u64() > Some(0), "{stats}");

    // The transcript holds every turn once, and the reply exactly as the client saw it.
    let lines = state.transcript();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let users: Vec<_> = lines.iter().filter(|l| l["role"] == "user").collect();
    assert_eq!(users[0]["text"], "Hello!");
    assert_eq!(users[1]["text"], STORY);
    assert_eq!(lines[3]["text"], text.as_str());
    assert_eq!(lines[3]["resumed"], 1);

    let llm_after = state.worker("llm").expect("llm");
    assert_eq!(llm_after["restarts"], 1);
    assert_ne!(llm_after["pid"], llm);
    assert_eq!(state.status().expect("status")["turns"], 2);
}

#[test]
fn ctl_restart_of_the_llm_mid_reply_resumes_rather_than_cuts_the_reply() {
    let state = StateDir::new();
    let _sup = on_default_model(&state, STORY_CONFIG);
    let mut chat = ChatStream::start(state.mate(&["ctl", "chat", "--json", STORY]));
    let first = chat.next_text(LONG).unwrap_or_default();
    ok(&state.run(&["ctl", "restart", "llm"], LIMIT));
    let (text, events, stats) = chat.finish(first, LONG);

    let kinds: Vec<String> = events.iter().map(event_kind).collect();
    assert!(kinds.contains(&"ReplyResumed".to_string()), "{kinds:?}");
    assert_ne!(stats["stop"], "Cancelled", "{stats}");
    let lines = state.transcript();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(lines[1]["text"], text.as_str());
    assert_eq!(lines[1]["resumed"], 1);
    assert_ne!(lines[1]["stop"], "cancelled");
}

#[test]
fn two_clients_chatting_at_once_each_get_their_whole_reply_in_turn() {
    let state = StateDir::new();
    let _sup = on_default_model(&state, STORY_CONFIG);
    let mut first = ChatStream::start(state.mate(&["ctl", "chat", "--json", STORY]));
    let start = first.next_text(LONG).unwrap_or_default();
    // A second client while the first reply streams: it waits, and hears so.
    let mut second = ChatStream::start(state.mate(&["ctl", "chat", "--json", "Hello there"]));
    let queued = second.next(LIMIT);
    assert_eq!(
        queued["Event"]["kind"]["TurnQueued"]["ahead"], 1,
        "the waiting client first hears it waits: {queued}"
    );
    assert_eq!(state.status().expect("status")["queued"], 1);
    let (story, _, _) = first.finish(start, LONG);
    let (hello, _, stats) = second.finish(String::new(), LONG);
    assert!(stats["generated_tokens"].as_u64() > Some(0), "{stats}");

    let lines = state.transcript();
    let said: Vec<&str> = lines.iter().filter_map(|l| l["text"].as_str()).collect();
    assert_eq!(said, [STORY, story.as_str(), "Hello there", hello.as_str()]);
    assert_eq!(state.status().expect("status")["queued"], 0);
}

#[test]
fn a_stopped_or_hung_worker_is_detected_by_heartbeats_and_replaced() {
    let state = StateDir::new();
    let _sup = state.start_supervisor();

    let bridge = state.worker_pid("bridge").expect("bridge pid");
    signal(bridge, "STOP");
    wait_until(LIMIT, "the stopped bridge to be replaced", || {
        state.worker_pid("bridge").is_some_and(|p| p != bridge)
    });
    wait_until(LIMIT, "the stopped bridge to be killed", || {
        !process_alive(bridge)
    });
    let hangs = events_of(&state, "Bridge", "HangDetected");
    assert_eq!(hangs.len(), 1, "{hangs:#?}");
    assert!(
        hangs[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("missed 3 heartbeats")),
        "{hangs:#?}"
    );

    // The same through fault injection, on the LLM worker.
    let llm = state.worker_pid("llm").expect("llm pid");
    ok(&state.run(&["ctl", "hang", "llm"], LIMIT));
    wait_until(LIMIT, "the hung llm worker to be replaced", || {
        state.worker_pid("llm").is_some_and(|p| p != llm)
    });
    assert!(!process_alive(llm));
    assert_eq!(events_of(&state, "Llm", "HangDetected").len(), 1);

    // The API worker is watched the same way, and comes back listening.
    let api = state.worker_pid("api").expect("api pid");
    signal(api, "STOP");
    wait_until(LIMIT, "the stopped api worker to be replaced", || {
        state.worker_pid("api").is_some_and(|p| p != api)
    });
    state.api_url(LIMIT);
    let status = state.status().expect("status");
    for w in status["workers"].as_array().expect("workers") {
        assert_eq!(w["restarts"], 1, "{w}");
    }
}

#[test]
fn a_worker_that_crashes_at_start_backs_off_then_fails_after_the_intensity_limit() {
    let state = StateDir::new();
    let model = state.fake_model();
    let _sup = state.up(&model, &[("MATE_FAULT_AT_START", "bridge")]);
    wait_until(LIMIT, "the bridge to fail", || {
        state
            .worker("bridge")
            .is_some_and(|w| w["state"] == "Failed")
    });
    let bridge = state.worker("bridge").expect("bridge");
    assert_eq!(bridge["restarts"], 5, "{bridge}");
    assert_eq!(bridge["last_exit"]["Signal"], 6, "aborted: {bridge}");
    let error = bridge["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("crashed 6 times"), "{error}");

    let delays: Vec<u64> = events_of(&state, "Bridge", "Restarting")
        .iter()
        .filter_map(|e| e["kind"]["Restarting"]["delay_ms"].as_u64())
        .collect();
    assert_eq!(delays, [100, 200, 400, 800, 1600]);
    assert_eq!(events_of(&state, "Bridge", "Failed").len(), 1);
    // The other worker is not affected.
    assert_eq!(state.worker("llm").expect("llm")["state"], "Running");

    // `ctl start` tries again with a fresh history (and fails the same way here).
    ok(&state.run(&["ctl", "start", "bridge"], LIMIT));
    wait_until(LIMIT, "a second round of restarts", || {
        state
            .worker("bridge")
            .is_some_and(|w| w["restarts"].as_u64() > Some(6))
    });
}

#[test]
fn an_llm_crash_loop_walks_down_the_profile_ladder_then_fails() {
    let state = StateDir::new();
    state.write_config(
        "[supervisor]\nbackoff_initial_ms = 10\nrestart_intensity = 2\nrestart_period_s = 60\n",
    );
    let model = state.fake_model();
    let _sup = state.up(
        &model,
        &[
            ("MATE_FAULT_AT_START", "llm"),
            ("MATE_PROFILE", "low_memory"),
        ],
    );
    wait_until(LIMIT, "the llm to fail", || {
        state.worker("llm").is_some_and(|w| w["state"] == "Failed")
    });
    let escalations = events_of(&state, "Llm", "Downgraded");
    assert_eq!(escalations.len(), 1, "{escalations:#?}");
    assert_eq!(escalations[0]["kind"]["Downgraded"]["from"], "low_memory");
    assert_eq!(escalations[0]["kind"]["Downgraded"]["to"], "cpu");
    assert_eq!(escalations[0]["kind"]["Downgraded"]["cause"], "CrashLoop");
    let llm = state.worker("llm").expect("llm");
    assert_eq!(llm["profile"], "cpu");
    // 2 restarts on low_memory, the escalation's restart, 2 on cpu.
    assert_eq!(llm["restarts"], 5, "{llm}");
}

#[test]
fn a_model_no_restart_can_fix_fails_at_once_without_restarts() {
    let state = StateDir::new();
    let broken = state.path().join("broken.gguf");
    std::fs::write(&broken, "this is not a model").expect("write");
    let _sup = state.up(&broken, &[]);
    wait_until(LIMIT, "the llm to fail", || {
        state.worker("llm").is_some_and(|w| w["state"] == "Failed")
    });
    let llm = state.worker("llm").expect("llm");
    let error = llm["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("not a GGUF model"), "{error}");
    assert_eq!(llm["restarts"], 0);
    assert_eq!(llm["pid"], Value::Null, "the process is gone");
    // No restart storm: still failed a moment later, nothing restarted.
    std::thread::sleep(Duration::from_millis(700));
    let llm = state.worker("llm").expect("llm");
    assert_eq!(llm["restarts"], 0);
    assert!(events_of(&state, "Llm", "Restarting").is_empty());
    assert_eq!(events_of(&state, "Llm", "Failed").len(), 1);
    assert_eq!(state.worker("bridge").expect("bridge")["state"], "Running");

    // A chat says why and what to do, and the supervisor stays up.
    let out = state.run(&["ctl", "chat", "hello?"], LIMIT);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a GGUF model") && err.contains("mate ctl start llm"),
        "{err}"
    );
    assert!(state.status().is_some());
}

#[test]
fn kill_9_of_the_supervisor_leaves_no_worker_and_the_next_one_restores_the_session() {
    let state = StateDir::new();
    let model = state.fake_model();
    let mut sup = state.up(&model, &[]);
    state.wait_running(LIMIT);
    for text in ["first", "second"] {
        ok(&state.run(&["ctl", "chat", text], LIMIT));
    }
    let pids: Vec<u32> = ["llm", "bridge"]
        .iter()
        .map(|k| state.worker_pid(k).expect("pid"))
        .collect();
    sup.child.kill().expect("kill -9");
    sup.wait_exit(LIMIT);
    wait_until(LIMIT, "no worker to survive the supervisor", || {
        pids.iter().all(|&p| !process_alive(p))
    });

    let _sup = state.up(&model, &[]);
    state.wait_running(LIMIT);
    assert_eq!(state.status().expect("status")["turns"], 2);
    let restored = state
        .events()
        .into_iter()
        .filter(|e| event_kind(e) == "SessionRestored")
        .count();
    assert_eq!(restored, 1);
    ok(&state.run(&["ctl", "chat", "third"], LIMIT));
    let users: Vec<String> = state
        .transcript()
        .iter()
        .filter(|l| l["role"] == "user")
        .map(|l| l["text"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(users, ["first", "second", "third"]);
}

#[test]
fn hostile_clients_are_dropped_while_a_chat_streams_undisturbed() {
    let state = StateDir::new();
    let _sup = on_default_model(&state, STORY_CONFIG);
    let endpoint = Endpoint::for_state_dir(state.path());
    let mut chat = ChatStream::start(state.mate(&["ctl", "chat", "--json", STORY]));
    let first = chat
        .next_text(LONG)
        .unwrap_or_else(|line| panic!("the reply starts with a chunk, got {line}"));

    // A wrong token, garbage, a huge length prefix, half frames that stall, and a flood.
    let wrong = Hello::new(Role::Ctl, AuthToken::generate().expect("token"));
    let err = endpoint
        .connect(&wrong)
        .expect_err("a wrong token is refused");
    assert!(err.to_string().contains("token"), "{err}");
    let mut held = Vec::new();
    for bytes in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0xff, 0xff, 0xff, 0xff, 1, 2, 3][..],
        &[8, 0][..],
    ] {
        let mut s = endpoint.connect_raw().expect("connect");
        let _ = s.write_all(bytes);
        held.push(s);
    }
    for _ in 0..300 {
        if let Ok(s) = endpoint.connect_raw() {
            held.push(s);
        }
    }
    let (text, _, stats) = chat.finish(first, LONG);
    assert!(stats["generated_tokens"].as_u64() > Some(1), "{stats}");
    assert!(!text.is_empty());
    drop(held);

    // The garbage was answered by closing those connections; the session is intact.
    let rejected = state
        .events()
        .into_iter()
        .filter(|e| event_kind(e) == "ClientRejected")
        .count();
    assert!(rejected >= 1);
    let status = state.status().expect("status");
    assert_eq!(status["turns"], 1);
    for w in status["workers"].as_array().expect("workers") {
        assert_eq!(w["restarts"], 0, "{w}");
    }
    ok(&state.run(&["ctl", "chat", "Still there?"], LONG));
}

#[test]
fn two_supervisors_with_different_state_dirs_run_side_by_side() {
    let (a, b) = (StateDir::new(), StateDir::new());
    let _sa = a.start_supervisor();
    let _sb = b.start_supervisor();
    let (pa, pb) = (
        a.status().expect("a")["supervisor_pid"].clone(),
        b.status().expect("b")["supervisor_pid"].clone(),
    );
    assert_ne!(pa, pb);
    ok(&a.run(&["ctl", "chat", "to a"], LIMIT));
    ok(&b.run(&["ctl", "shutdown"], LIMIT));
    wait_until(LIMIT, "b to stop", || b.status().is_none());
    assert_eq!(a.status().expect("a still runs")["turns"], 1);
    assert_eq!(b.transcript().len(), 0);
}

#[test]
fn restart_stop_start_and_profile_are_scriptable() {
    let state = StateDir::new();
    let _sup = state.start_supervisor();
    let llm = state.worker_pid("llm").expect("llm");

    ok(&state.run(&["ctl", "restart", "llm", "--profile", "balanced"], LIMIT));
    wait_until(LIMIT, "the llm to come back on balanced", || {
        state.worker("llm").is_some_and(|w| {
            w["state"] == "Running" && w["profile"] == "balanced" && w["pid"] != llm
        })
    });
    assert_eq!(state.worker("llm").expect("llm")["restarts"], 1);
    let changes = events_of(&state, "Llm", "ProfileChanged");
    assert_eq!(changes.len(), 1);
    let exits = events_of(&state, "Llm", "Exited");
    assert_eq!(exits[0]["kind"]["Exited"]["expected"], true, "{exits:#?}");

    ok(&state.run(&["ctl", "profile", "low_memory"], LIMIT));
    wait_until(LIMIT, "the llm on low_memory", || {
        state
            .worker("llm")
            .is_some_and(|w| w["state"] == "Running" && w["profile"] == "low_memory")
    });

    let out = state.run(&["ctl", "profile", "turbo"], LIMIT);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("low_memory"));
    let out = state.run(&["ctl", "restart", "bridge", "--profile", "cpu"], LIMIT);
    assert_eq!(out.status.code(), Some(1));

    ok(&state.run(&["ctl", "stop", "bridge"], LIMIT));
    wait_until(LIMIT, "the bridge to stop", || {
        state
            .worker("bridge")
            .is_some_and(|w| w["state"] == "Stopped" && w["pid"].is_null())
    });
    ok(&state.run(&["ctl", "start", "bridge"], LIMIT));
    wait_until(LIMIT, "the bridge to run again", || {
        state.worker_pid("bridge").is_some()
    });
    assert_eq!(state.worker("bridge").expect("bridge")["restarts"], 1);

    // Crash injection restarts it on its own.
    let bridge = state.worker_pid("bridge").expect("bridge");
    ok(&state.run(&["ctl", "crash", "bridge"], LIMIT));
    wait_until(LIMIT, "the crashed bridge to be replaced", || {
        state.worker_pid("bridge").is_some_and(|p| p != bridge)
    });
    let exits = events_of(&state, "Bridge", "Exited");
    let last = exits.last().expect("an exit");
    assert_eq!(last["kind"]["Exited"]["expected"], false);
    assert_eq!(last["kind"]["Exited"]["status"]["Signal"], 6);
}

#[test]
fn ctrl_c_cancels_the_reply_and_the_turn_is_kept() {
    let state = StateDir::new();
    let _sup = on_default_model(&state, STORY_CONFIG);
    let mut chat = state
        .mate(&["ctl", "chat", STORY])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ctl chat");
    let mut stdout = chat.stdout.take().expect("stdout");
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).expect("the reply starts");
    signal(chat.id(), "INT");
    let out = mate_tests::wait_output(chat, LONG);
    assert_eq!(out.status.code(), Some(130));

    let lines = state.transcript();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(lines[1]["stop"], "cancelled");
    assert!(
        lines[1]["tokens"].as_u64() < Some(160),
        "stopped early: {lines:#?}"
    );
    // The worker carries on with the next turn.
    ok(&state.run(&["ctl", "chat", "Hello again"], LONG));
}

#[test]
fn events_follow_and_read_as_json_lines() {
    let state = StateDir::new();
    let _sup = state.start_supervisor();
    let mut follow = state
        .mate(&["ctl", "events", "--follow", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn ctl events");
    let stdout = follow.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(serde_json::from_str(&line).expect("JSON")).is_err() {
                return;
            }
        }
    });
    ok(&state.run(&["ctl", "restart", "bridge"], LIMIT));
    let deadline = std::time::Instant::now() + LIMIT;
    let mut seen: Vec<Value> = Vec::new();
    let bridge_ready = |seen: &[Value]| {
        seen.iter()
            .filter(|e| e["worker"] == "Bridge" && event_kind(e) == "Ready")
            .count()
    };
    // The recent events first (one Ready of the bridge), then the restart's (a second one).
    while bridge_ready(&seen) < 2 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        seen.push(rx.recv_timeout(left).expect("events follow"));
    }
    let kinds: Vec<String> = seen.iter().map(event_kind).collect();
    assert!(
        kinds.contains(&"SupervisorStarted".to_string()),
        "{kinds:?}"
    );
    assert!(kinds.contains(&"Spawned".to_string()), "{kinds:?}");
    let _ = follow.kill();
    let _ = follow.wait();

    // Also on disk, one event per line.
    let journal = std::fs::read_to_string(state.path().join("events.jsonl")).expect("journal");
    assert!(journal.lines().count() >= seen.len());
    for line in journal.lines() {
        let event: Value = serde_json::from_str(line).expect("journal lines are JSON");
        assert!(event["at_ms"].as_u64() > Some(1_600_000_000_000));
    }
}

#[test]
fn clearing_the_session_archives_the_transcript_and_starts_over() {
    let state = StateDir::new();
    state.write_config("[chat]\nmax_tokens = 4\n");
    let _sup = state.start_supervisor();
    ok(&state.run(&["ctl", "chat", "first"], LIMIT));
    ok(&state.run(&["ctl", "clear"], LIMIT));
    assert!(state.transcript().is_empty());
    let session = state.path().join("session");
    let archives: Vec<_> = std::fs::read_dir(&session)
        .expect("session dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("transcript-"))
        .collect();
    assert_eq!(archives.len(), 1);
    let archived = std::fs::read_to_string(archives[0].path()).expect("archive");
    assert_eq!(archived.lines().count(), 2);
    assert!(archived.contains("first"));
    assert_eq!(state.status().expect("status")["turns"], 0);
    ok(&state.run(&["ctl", "chat", "second"], LIMIT));
    let lines = state.transcript();
    assert_eq!((lines.len(), lines[0]["turn"].as_u64()), (2, Some(1)));
}
