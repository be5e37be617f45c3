//! The Unity bridge end to end: the real `mate up` with its bridge worker against
//! `mate unity-sim` (the Unity stand-in) with its fault options, and real kills.
#![cfg(target_os = "linux")]

use std::{process::Stdio, time::Duration};

use mate_tests::Mate as _;
use mate_tests::{
    default_model, free_address, signal, unity_commands, wait_until, StateDir, Supervisor, UnitySim,
};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

/// A supervisor on the tiny model whose bridge talks to `address`, with extra `[unity]` keys.
fn up(state: &StateDir, address: &str, unity: &str) -> Supervisor {
    state.write_config(&format!("[unity]\naddress = \"{address}\"\n{unity}"));
    state.start_supervisor()
}

/// The bridge's status (`vitals.bridge` of `mate ctl status --json`).
fn bridge(state: &StateDir) -> Value {
    state
        .worker("bridge")
        .map(|w| w["vitals"]["bridge"].clone())
        .unwrap_or(Value::Null)
}

fn wait_bridge(state: &StateDir, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    wait_until(LIMIT, what, || {
        last = bridge(state);
        cond(&last)
    });
    last
}

fn avatar(state: &StateDir, args: &[&str]) {
    let mut all = vec!["ctl", "avatar"];
    all.extend_from_slice(args);
    let out = state.run(&all, LIMIT);
    assert!(
        out.status.success(),
        "ctl avatar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every command the simulator read, in order, batches flattened.
fn received(sim: &UnitySim) -> Vec<String> {
    sim.lines().iter().flat_map(unity_commands).collect()
}

#[test]
fn unity_absent_at_start_is_waited_for_and_gets_the_state_when_it_comes() {
    let state = StateDir::new();
    let vrm = state.path().join("mate.vrm");
    std::fs::write(&vrm, b"glTF").expect("write a VRM stand-in");
    let address = free_address();
    let _sup = up(&state, &address, &format!("vrm = \"{}\"\n", vrm.display()));
    let waiting = wait_bridge(&state, "the bridge waiting for Unity", |b| {
        b["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("waiting for Unity"))
    });
    assert_eq!(waiting["connected"], false);
    assert_eq!(waiting["peer"], address.as_str());
    // Commands while Unity is away are kept, not refused.
    avatar(&state, &["expression", "happy"]);
    wait_bridge(&state, "the expression queued", |b| {
        b["expression"] == "happy" && b["queue_depth"].as_u64() >= Some(1)
    });

    let sim = UnitySim::start_at(&address, &[]);
    sim.wait_for(LIMIT, "the bridge to connect and restore", |events| {
        events.iter().any(|e| e["event"] == "line")
    });
    let first = &sim.lines()[0];
    assert_eq!(first["command"], "batch", "the state goes as one batch");
    assert_eq!(
        unity_commands(first),
        [
            format!("load_vrm:{}", vrm.display()),
            "blink:true".to_string(),
            "set_expression:happy".to_string()
        ]
    );
    let b = wait_bridge(&state, "connected, acked and idle", |b| {
        b["connected"] == true && b["acked"] == 3 && b["queue_depth"] == 0
    });
    assert_eq!(b["last_error"], Value::Null, "a connection clears the wait");
    assert_eq!(b["connects"], 1);
    // Idle, the bridge sleeps until its next timer. A busy loop shows as ~100% of a core;
    // the bound leaves room for a loaded machine.
    std::thread::sleep(Duration::from_millis(1500));
    let cpu = state.worker("bridge").expect("bridge")["vitals"]["cpu_percent"]
        .as_f64()
        .unwrap_or(100.0);
    assert!(cpu < 50.0, "an idle bridge worker uses {cpu}% of a core");
}

#[test]
fn commands_within_the_window_leave_as_one_batch_and_a_newer_expression_wins() {
    let sim = UnitySim::start(&[]);
    let state = StateDir::new();
    // A wide window, so three `mate ctl` processes fit in it on a busy machine.
    let _sup = up(&state, &sim.address, "batch_window_ms = 3000\n");
    sim.wait_for(LIMIT, "the restore line", |e| {
        e.iter().any(|e| e["event"] == "line")
    });
    assert_eq!(received(&sim), ["blink:true"]);
    avatar(&state, &["expression", "happy"]);
    avatar(&state, &["animation", "wave"]);
    avatar(&state, &["expression", "sad", "--intensity", "0.5"]);
    sim.wait_for(LIMIT, "the batch", |e| {
        e.iter().filter(|e| e["event"] == "line").count() >= 2
    });
    let lines = sim.lines();
    assert_eq!(lines[1]["command"], "batch");
    assert_eq!(lines[1]["data"]["count"], 2);
    assert_eq!(
        unity_commands(&lines[1]),
        ["play_animation:wave", "set_expression:sad"],
        "happy was replaced before it was sent"
    );
    assert_eq!(lines[1]["data"]["commands"][1]["data"]["intensity"], 0.5);
    let b = wait_bridge(&state, "all acked", |b| b["acked"] == 3);
    assert_eq!(
        (b["sent"].as_u64(), b["lines"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(b["expression"], "sad");
    assert_eq!(b["errors"], 0);
}

#[test]
fn unity_killed_mid_session_is_reconnected_and_the_avatar_restored() {
    let mut sim = UnitySim::start(&[]);
    let state = StateDir::new();
    let _sup = up(&state, &sim.address, "");
    wait_bridge(&state, "connected", |b| b["connected"] == true);
    avatar(&state, &["expression", "happy"]);
    avatar(&state, &["animation", "idle", "--loop"]);
    sim.wait_for(LIMIT, "the looping animation", |_| {
        received(&sim).contains(&"play_animation:idle:loop".to_string())
    });

    sim.kill();
    wait_bridge(&state, "the loss noticed", |b| b["connected"] == false);
    avatar(&state, &["expression", "sad"]);
    let back = UnitySim::start_at(&sim.address, &[]);
    back.wait_for(LIMIT, "the restore after the reconnect", |e| {
        e.iter().any(|e| e["event"] == "line")
    });
    assert_eq!(
        received(&back),
        [
            "blink:true",
            "play_animation:idle:loop",
            "set_expression:sad"
        ],
        "the avatar's state, newest expression included"
    );
    let b = wait_bridge(&state, "reconnected", |b| {
        b["connected"] == true && b["connects"] == 2
    });
    assert_eq!(b["expression"], "sad");
    let events = state.events();
    let said = |what: &str| {
        events
            .iter()
            .filter(|e| e["message"].as_str().is_some_and(|m| m.contains(what)))
            .count()
    };
    assert_eq!(said("lost Unity"), 1);
    assert_eq!(said("connected to Unity"), 2);
}

#[test]
fn the_bridge_worker_killed_comes_back_and_restores_the_avatar() {
    let sim = UnitySim::start(&[]);
    let state = StateDir::new();
    let _sup = up(&state, &sim.address, "");
    wait_bridge(&state, "connected", |b| b["connected"] == true);
    avatar(&state, &["expression", "surprised"]);
    avatar(&state, &["blink", "off"]);
    wait_bridge(&state, "acked", |b| b["acked"] == 3);
    let pid = state.worker_pid("bridge").expect("bridge pid");
    signal(pid, "KILL");
    sim.wait_for(LIMIT, "a second connection", |_| sim.connections() == 2);
    // What the new bridge sent: the blink it is configured with, then the supervisor's
    // state, which wins.
    let since_reconnect = || -> Vec<String> {
        let events = sim.events();
        let second = events
            .iter()
            .enumerate()
            .filter(|(_, e)| e["event"] == "connected")
            .nth(1)
            .map_or(events.len(), |(i, _)| i);
        events[second..]
            .iter()
            .filter(|e| e["event"] == "line")
            .flat_map(|e| unity_commands(&e["line"]))
            .collect()
    };
    wait_until(LIMIT, "the restore from the new bridge", || {
        let got = since_reconnect();
        got.contains(&"set_expression:surprised".to_string())
            && got.iter().rev().find(|c| c.starts_with("blink:")) == Some(&"blink:false".into())
    });
    let w = state.worker("bridge").expect("bridge");
    assert_eq!(w["restarts"], 1);
}

#[test]
fn unanswered_lines_time_out_and_are_counted_without_dropping_the_connection() {
    let sim = UnitySim::start(&["--drop-every", "1"]);
    let state = StateDir::new();
    let _sup = up(&state, &sim.address, "ack_timeout_ms = 300\n");
    wait_bridge(&state, "connected", |b| b["connected"] == true);
    avatar(&state, &["expression", "happy"]);
    let b = wait_bridge(&state, "two timeouts", |b| {
        b["timeouts"] == 2 && b["acks_pending"] == 0
    });
    assert!(
        b["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no reply from Unity")),
        "{b}"
    );
    assert_eq!(b["connected"], true);
    assert_eq!(b["acked"], 0);
    assert_eq!(sim.connections(), 1);
}

#[test]
fn malformed_and_over_long_replies_are_dropped_and_counted() {
    let sim = UnitySim::start(&["--garbage-every", "1", "--oversize-every", "2"]);
    let state = StateDir::new();
    let _sup = up(&state, &sim.address, "");
    wait_bridge(&state, "the restore acked", |b| b["acked"] == 1);
    avatar(&state, &["expression", "happy"]);
    let b = wait_bridge(&state, "both acked", |b| b["acked"] == 2);
    // Two garbage lines and one 256 KiB line, each dropped; the real answers still counted.
    assert_eq!(b["malformed"], 3, "{b}");
    assert_eq!(b["connected"], true);
    assert_eq!(b["timeouts"], 0);
    let errors: Vec<String> = state
        .events()
        .iter()
        .filter_map(|e| e["message"].as_str().map(String::from))
        .filter(|m| m.contains("bad reply from Unity"))
        .collect();
    assert_eq!(errors.len(), 1, "told once, then counted: {errors:?}");
}

#[test]
fn a_reply_drives_the_avatar_thinking_then_its_words() {
    let sim = UnitySim::start(&[]);
    let state = StateDir::new();
    // Greedy decoding, and a lexicon of words nearly every English reply contains.
    let words = [
        "i", "you", "the", "a", "is", "to", "and", "it", "my", "am", "are",
    ];
    let lexicon: String = words.iter().map(|w| format!("{w} = \"happy\"\n")).collect();
    // No coalescing window, so "thinking" is sent even if the reply starts at once.
    state.write_config(&format!(
        "[unity]\naddress = \"{}\"\nbatch_window_ms = 0\n\
         [chat]\nmax_tokens = 32\ntemperature = 0.0\n\
         [avatar.lexicon]\n{lexicon}",
        sim.address
    ));
    let _sup = state.up(default_model(), &[]);
    state.wait_running(Duration::from_secs(120));
    let out = state.run(
        &["ctl", "chat", "Hello! How are you today?"],
        Duration::from_secs(120),
    );
    assert!(out.status.success());
    let reply = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(!reply.trim().is_empty());
    wait_until(LIMIT, "the reply's expression", || {
        received(&sim).contains(&"set_expression:happy".to_string())
    });
    let got = received(&sim);
    let thinking = got.iter().position(|c| c == "set_expression:thinking");
    let happy = got.iter().position(|c| c == "set_expression:happy");
    assert!(
        thinking.is_some() && thinking < happy,
        "thinking first, then the reply's expression: {got:?} (reply: {reply})"
    );
}

#[test]
fn run_demo_starts_the_unity_stand_in_and_the_whole_pipeline_works() {
    let state = StateDir::new();
    let address = free_address();
    state.write_config(&format!("[unity]\naddress = \"{address}\"\n"));
    let model = state.fake_model();
    let child = state
        .mate(&["--model", model.to_str().expect("utf-8"), "run", "--demo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mate run --demo");
    let mut sup = Supervisor { child };
    // Drained as it comes, so the simulator never blocks on a full pipe.
    let mut stdout = sup.child.stdout.take().expect("stdout");
    let printed = std::thread::spawn(move || {
        let mut text = String::new();
        use std::io::Read as _;
        let _ = stdout.read_to_string(&mut text);
        text
    });
    state.wait_running(LIMIT);
    wait_bridge(&state, "connected to the built-in peer", |b| {
        b["connected"] == true
    });
    let out = state.run(&["ctl", "chat", "hi"], LIMIT);
    assert!(out.status.success());
    let out = state.run(&["ctl", "shutdown"], LIMIT);
    assert!(out.status.success());
    assert!(sup.wait_exit(LIMIT).success());
    let stdout = printed.join().expect("stdout reader");
    assert!(
        stdout.contains(&format!("unity-sim listening on {address}")),
        "{stdout}"
    );
    // "thinking", unless the tiny model's reply began within the same 16 ms window and its
    // "neutral" replaced it before it was sent.
    assert!(
        stdout.contains("avatar: expression thinking")
            || stdout.contains("avatar: expression neutral"),
        "{stdout}"
    );
}
