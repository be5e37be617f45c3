//! The foundation, end to end: the real `mate` binary, its workers as real processes, real
//! sockets and real signals.
#![cfg(target_os = "linux")]

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use interprocess::local_socket::traits::Listener as _;
use mate_protocol::{
    endpoint::accept_hello, frame, handshake::TOKEN_ENV, AuthToken, Endpoint, FromWorker, Limit,
    Rejection, Role, ToWorker,
};
use mate_tests::Mate as _;
use mate_tests::{mate_bin, process_alive, wait_output, wait_until, StateDir};

const LIMIT: Duration = Duration::from_secs(20);

fn worker_pids(status: &serde_json::Value) -> Vec<u32> {
    status["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .filter_map(|w| w["pid"].as_u64())
        .map(|p| p as u32)
        .collect()
}

#[test]
fn up_status_and_clean_shutdown() {
    let state = StateDir::new();
    let mut sup = state.start_supervisor();

    let status = state.status().expect("status");
    assert_eq!(status["supervisor_pid"], sup.pid());
    let kinds: Vec<_> = status["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| w["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(kinds, ["Llm", "Bridge", "Api"]);
    let pids = worker_pids(&status);
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|&p| process_alive(p) && p != sup.pid()));

    // The human table names every worker.
    let table = state.run(&["ctl", "status"], LIMIT);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("llm")
            && text.contains("bridge")
            && text.contains("api ")
            && text.contains("running"),
        "{text}"
    );

    let out = state.run(&["ctl", "shutdown"], LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(sup.wait_exit(LIMIT).success());
    wait_until(LIMIT, "workers to exit", || {
        pids.iter().all(|&p| !process_alive(p))
    });
    let run = state.path().join("run");
    assert!(!run.join("mate.sock").exists(), "socket removed");
    assert!(!run.join("control.token").exists(), "token removed");
    assert!(!run.join("mate.lock").exists(), "lock file removed");
}

#[test]
fn sigterm_stops_workers_too() {
    let state = StateDir::new();
    let mut sup = state.start_supervisor();
    let pids = worker_pids(&state.status().expect("status"));
    // SAFETY: plain kill(2) on a child we own.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(sup.pid() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    assert!(sup.wait_exit(LIMIT).success());
    wait_until(LIMIT, "workers to exit", || {
        pids.iter().all(|&p| !process_alive(p))
    });
}

#[test]
fn a_second_supervisor_on_the_same_state_dir_is_refused() {
    let state = StateDir::new();
    let _sup = state.start_supervisor();
    let model = state.fake_model();
    let out = state.run(&["--model", model.to_str().expect("utf-8"), "up"], LIMIT);
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another mate supervisor"), "{err}");
    assert!(err.contains("mate ctl shutdown"), "{err}");
    // The first one is untouched.
    assert!(state.status().is_some());
}

#[test]
fn after_kill_9_a_new_supervisor_takes_over_the_stale_socket() {
    let state = StateDir::new();
    let mut sup = state.start_supervisor();
    let pids = worker_pids(&state.status().expect("status"));
    sup.child.kill().expect("kill -9");
    sup.wait_exit(LIMIT);
    assert!(
        state.path().join("run/mate.sock").exists(),
        "crash leaves the socket file"
    );
    // Workers notice the supervisor is gone (their socket closes) and leave.
    wait_until(LIMIT, "orphaned workers to exit", || {
        pids.iter().all(|&p| !process_alive(p))
    });
    let out = state.run(&["ctl", "status"], LIMIT);
    assert_eq!(out.status.code(), Some(3), "no supervisor: exit code 3");

    let _again = state.start_supervisor();
    assert!(state.status().is_some());
}

#[test]
fn ctl_without_a_supervisor_exits_3_with_advice() {
    let state = StateDir::new();
    let out = state.run(&["ctl", "status", "--json"], LIMIT);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no mate supervisor is running") && err.contains("mate up"),
        "{err}"
    );
}

#[test]
fn a_missing_model_exits_4_and_says_how_to_fix_it() {
    let state = StateDir::new();
    let out = state.run(&["--model", "/nonexistent/model.gguf", "up"], LIMIT);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/model.gguf") && err.contains("--model"),
        "{err}"
    );
    assert!(!state.path().join("run/mate.sock").exists());

    let out = state.run(&["model", "path"], LIMIT);
    assert_eq!(
        out.status.code(),
        Some(4),
        "default model not installed in the empty models dir"
    );
}

#[test]
fn a_bad_config_file_is_named_in_the_error() {
    let state = StateDir::new();
    let config = state.path().join("bad.toml");
    std::fs::write(&config, "modle = 3\n").expect("write");
    let out = state.run(
        &["--config", config.to_str().expect("utf-8"), "ctl", "status"],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("modle"), "{err}");
}

/// Starts `mate worker KIND` the way the supervisor does, with `token` in the environment.
fn spawn_worker(kind: &str, endpoint: &Endpoint, token: Option<&AuthToken>) -> std::process::Child {
    let mut cmd = Command::new(mate_bin());
    cmd.args(["worker", kind, "--endpoint"])
        .arg(endpoint.path())
        .env_remove(TOKEN_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        cmd.env(TOKEN_ENV, token.to_hex());
    }
    cmd.spawn().expect("spawn worker")
}

/// The worker side of the handshake, from a separate process: this test is the listener,
/// `mate worker bridge` the peer.
#[test]
fn a_worker_process_handshakes_reports_ready_and_obeys_shutdown() {
    let state = StateDir::new();
    let endpoint = Endpoint::for_state_dir(state.path());
    let listener = endpoint.listen().expect("listen");
    let token = AuthToken::generate().expect("token");

    let child = spawn_worker("bridge", &endpoint, Some(&token));
    let child_pid = child.id();

    let mut stream = listener.accept().expect("accept");
    let hello = accept_hello(&mut stream, Duration::from_secs(5), |h| {
        if h.token.matches(&token) {
            Ok(())
        } else {
            Err(Rejection::BadToken)
        }
    })
    .expect("handshake");
    assert_eq!(hello.role, Role::BridgeWorker);
    assert_eq!(hello.pid, child_pid);
    let ready: FromWorker = frame::read_frame(&mut stream, Limit::Data).expect("ready");
    assert_eq!(ready, FromWorker::Ready);

    frame::write_frame(&mut stream, &ToWorker::Heartbeat { seq: 41 }, Limit::Data).expect("send");
    loop {
        match frame::read_frame(&mut stream, Limit::Data).expect("reply") {
            FromWorker::Heartbeat { seq, .. } => {
                assert_eq!(seq, 41);
                break;
            }
            FromWorker::BridgeStatus(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    frame::write_frame(
        &mut stream,
        &ToWorker::Shutdown { grace_ms: 1000 },
        Limit::Data,
    )
    .expect("send");
    let out = wait_output(child, LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_worker_with_the_wrong_token_is_turned_away() {
    let state = StateDir::new();
    let endpoint = Endpoint::for_state_dir(state.path());
    let listener = endpoint.listen().expect("listen");
    let right = AuthToken::generate().expect("token");
    let wrong = AuthToken::generate().expect("token");

    let child = spawn_worker("llm", &endpoint, Some(&wrong));
    let mut stream = listener.accept().expect("accept");
    let err = accept_hello(&mut stream, Duration::from_secs(5), |h| {
        if h.token.matches(&right) {
            Ok(())
        } else {
            Err(Rejection::BadToken)
        }
    })
    .expect_err("rejected");
    assert!(matches!(
        err,
        mate_protocol::Error::Rejected(Rejection::BadToken)
    ));
    let out = wait_output(child, LIMIT);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad auth token"), "{err}");
}

#[test]
fn a_worker_started_by_hand_explains_itself() {
    let state = StateDir::new();
    let endpoint = Endpoint::for_state_dir(state.path());
    let out = wait_output(spawn_worker("llm", &endpoint, None), LIMIT);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mate up"));
}
