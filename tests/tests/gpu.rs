//! The GPU monitor and the profile ladder end to end, on a simulated GPU (a scenario file the
//! tests rewrite to change the pressure) with the real `mate up` and real LLM workers.
#![cfg(target_os = "linux")]

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::Stdio,
    time::Duration,
};

use mate_tests::Mate as _;
use mate_tests::{default_model, event_kind, wait_until, StateDir, Supervisor};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);
/// For anything that loads the default model several times on a busy 2-core machine.
const LONG: Duration = Duration::from_secs(180);

/// Samples every 100 ms; upgrades after 2 s of calm.
const GPU_CONFIG: &str = "[gpu]\nsample_ms = 100\ncooldown_s = 2\n";

/// Writes the scenario: a 4 GiB card whose other applications use `points` (seconds, MiB).
fn scenario(state: &StateDir, points: &[(f32, u32)]) -> PathBuf {
    let path = state.path().join("gpu.toml");
    let mut text = String::from("name = \"Test card\"\ntotal_mb = 4096\n");
    for (at_s, mb) in points {
        text.push_str(&format!("[[other]]\nat_s = {at_s:.1}\nmb = {mb}\n"));
    }
    // Written whole, then renamed: the sampler never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write scenario");
    std::fs::rename(&tmp, &path).expect("rename scenario");
    path
}

fn up(
    state: &StateDir,
    model: &std::path::Path,
    scenario: &std::path::Path,
    args: &[&str],
) -> Supervisor {
    let mut all = vec![
        "--model",
        model.to_str().expect("utf-8"),
        "--gpu-scenario",
        scenario.to_str().expect("utf-8"),
        "up",
    ];
    all.extend_from_slice(args);
    let child = state
        .mate(&all)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mate up");
    Supervisor { child }
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The LLM's profile decisions and loads, in order: `("Downgraded", from, to)`,
/// `("Upgraded", …)`, `("ProfileChanged", …)`, `("Loaded", profile, "")`.
fn ladder_events(state: &StateDir) -> Vec<(String, String, String)> {
    state
        .events()
        .iter()
        .filter(|e| e["worker"] == "Llm")
        .filter_map(|e| {
            let kind = event_kind(e);
            let body = &e["kind"][&kind];
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            match kind.as_str() {
                "Downgraded" | "Upgraded" | "ProfileChanged" => {
                    Some((kind, s(&body["from"]), s(&body["to"])))
                }
                "Loaded" => Some((kind, s(&body["profile"]), String::new())),
                _ => None,
            }
        })
        .collect()
}

fn llm_running_on(state: &StateDir, profile: &str) -> bool {
    state
        .worker("llm")
        .is_some_and(|w| w["state"] == "Running" && w["profile"] == profile)
}

fn count(events: &[(String, String, String)], kind: &str) -> usize {
    events.iter().filter(|e| e.0 == kind).count()
}

#[test]
fn a_pressure_ramp_walks_down_one_rung_per_decision_while_the_chat_completes() {
    let state = StateDir::new();
    state.write_config(&format!(
        "{GPU_CONFIG}[chat]\nmax_tokens = 200\ntemperature = 0.0\n"
    ));
    let gpu = scenario(&state, &[(0.0, 500)]);
    let _sup = up(&state, default_model(), &gpu, &["--profile", "performance"]);
    state.wait_running(LONG);
    assert!(llm_running_on(&state, "performance"));

    let mut chat = state
        .mate(&[
            "ctl",
            "chat",
            "--json",
            "Tell me a long story about a cat who sails around the world.",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ctl chat");
    let stdout = chat.stdout.take().expect("stdout");
    let (tx, lines) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let value = serde_json::from_str(&line).expect("chat --json lines are JSON");
            if tx.send(value).is_err() {
                return;
            }
        }
    });
    // The reply streams; then other applications take the card to the critical zone at
    // once and on to 4000 MiB within 2 s, and stay there.
    let first = lines.recv_timeout(LONG).expect("a first line");
    assert!(first.get("Chunk").is_some(), "{first}");
    scenario(&state, &[(0.0, 2800), (2.0, 4000)]);
    let stats = loop {
        let line = lines
            .recv_timeout(LONG)
            .expect("the chat goes on to ChatDone");
        if let Some(done) = line.get("ChatDone") {
            break done["stats"].clone();
        }
    };
    assert_ne!(stats["stop"], "Cancelled", "{stats}");
    let _ = chat.kill();
    let _ = chat.wait();

    wait_until(LONG, "the llm to reach the cpu rung", || {
        llm_running_on(&state, "cpu")
    });
    let events = ladder_events(&state);
    let steps: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.0 == "Downgraded")
        .map(|e| (e.1.as_str(), e.2.as_str()))
        .collect();
    assert_eq!(
        steps,
        [
            ("performance", "balanced"),
            ("balanced", "low_memory"),
            ("low_memory", "cpu")
        ],
        "{events:#?}"
    );
    // Each decision was made on a worker serving the rung it left: a Loaded of that rung
    // comes between one downgrade and the next.
    let mut serving = String::new();
    for (kind, a, b) in &events {
        match kind.as_str() {
            "Loaded" => serving = a.clone(),
            "Downgraded" => {
                assert_eq!(&serving, a, "downgrade from {a} to {b} before {a} served");
                serving.clear();
            }
            _ => {}
        }
    }
    // Every step carries the reading it was made on, at or near the critical threshold.
    for e in state
        .events()
        .iter()
        .filter(|e| event_kind(e) == "Downgraded")
    {
        let body = &e["kind"]["Downgraded"];
        assert!(
            matches!(body["cause"].as_str(), Some("Critical" | "Trend")),
            "{e}"
        );
        let used = body["reading"]["used_bytes"].as_f64().expect("reading");
        assert!(used / (4096.0 * 1048576.0) > 0.8, "{e}");
        assert!(
            e["message"].as_str().expect("message").contains("VRAM"),
            "{e}"
        );
    }
    // On the lowest rung the pressure stays: an alert says so, and nothing flaps.
    wait_until(LIMIT, "an alert that the lowest rung is reached", || {
        state.events().iter().any(|e| {
            event_kind(e) == "VramAlert"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("lowest profile"))
        })
    });
    assert_eq!(count(&ladder_events(&state), "Upgraded"), 0);
    // The reply is in the transcript once.
    let transcript = state.transcript();
    assert_eq!(transcript.len(), 2, "{transcript:#?}");
    assert_eq!(transcript[1]["role"], "assistant");
    // It was cut by at least one downgrade and continued.
    assert!(
        transcript[1]["resumed"].as_u64() >= Some(1),
        "{transcript:#?}"
    );
    let status = state.status().expect("status");
    assert_eq!(status["profile"], "cpu");
    assert_eq!(status["ladder"].as_array().map(Vec::len), Some(4));
    assert_eq!(status["gpu"]["simulated"], true);
    assert_eq!(event_kind(&status["last_decision"]), "VramAlert");
}

#[test]
fn pressure_clearing_upgrades_after_the_cool_down_and_oscillation_never_flaps() {
    let state = StateDir::new();
    state.write_config(GPU_CONFIG);
    let model = state.fake_model();
    // Other applications hold 96% of the card from the start.
    let gpu = scenario(&state, &[(0.0, 3930)]);
    let _sup = up(&state, &model, &gpu, &["--profile", "performance"]);
    wait_until(LIMIT, "the llm down to cpu", || {
        llm_running_on(&state, "cpu")
    });
    assert_eq!(count(&ladder_events(&state), "Downgraded"), 3);

    // The pressure clears: one rung up per cool-down, back to where the user started.
    scenario(&state, &[(0.0, 400)]);
    wait_until(LIMIT, "the llm back on performance", || {
        llm_running_on(&state, "performance")
    });
    let events = state.events();
    let at = |e: &Value| e["at_ms"].as_u64().expect("at_ms");
    let mut last_load = None;
    let mut ups = Vec::new();
    for e in &events {
        match event_kind(e).as_str() {
            "Loaded" if e["worker"] == "Llm" => last_load = Some(at(e)),
            "Upgraded" => {
                let since = at(e) - last_load.expect("a load before the upgrade");
                assert!(
                    since >= 2000,
                    "upgraded {since} ms after the last load: {e}"
                );
                let body = &e["kind"]["Upgraded"];
                ups.push((body["from"].clone(), body["to"].clone()));
            }
            _ => {}
        }
    }
    assert_eq!(
        ups,
        [
            (Value::from("cpu"), Value::from("low_memory")),
            (Value::from("low_memory"), Value::from("balanced")),
            (Value::from("balanced"), Value::from("performance"))
        ]
    );

    // Now usage swings between calm and critical every second: the policy steps down on
    // the peaks and never climbs back in between (calm never lasts the cool-down).
    let swings: Vec<(f32, u32)> = (0..12)
        .flat_map(|i| {
            let t = i as f32;
            let mb = if i % 2 == 0 { 400 } else { 3930 };
            [(t, mb), (t + 1.0, mb)]
        })
        .collect();
    let before = ladder_events(&state).len();
    scenario(&state, &swings);
    std::thread::sleep(Duration::from_secs(12));
    let during: Vec<_> = ladder_events(&state).split_off(before);
    assert_eq!(count(&during, "Upgraded"), 0, "{during:#?}");
    assert!(count(&during, "Downgraded") >= 1, "{during:#?}");
}

#[test]
fn an_out_of_memory_exit_restarts_on_the_next_lower_profile() {
    let state = StateDir::new();
    state.write_config(GPU_CONFIG);
    let model = state.fake_model();
    let gpu = scenario(&state, &[(0.0, 500)]);
    let _sup = up(&state, &model, &gpu, &["--profile", "balanced"]);
    state.wait_running(LIMIT);
    ok(&state.run(&["ctl", "crash", "llm", "--oom"], LIMIT));
    wait_until(LIMIT, "the llm on low_memory", || {
        llm_running_on(&state, "low_memory")
    });
    let down: Vec<Value> = state
        .events()
        .into_iter()
        .filter(|e| event_kind(e) == "Downgraded")
        .collect();
    assert_eq!(down.len(), 1, "{down:#?}");
    assert_eq!(down[0]["kind"]["Downgraded"]["cause"], "OutOfMemory");
    let message = down[0]["message"].as_str().expect("message");
    assert!(message.contains("cudaMalloc failed"), "{message}");
    let llm = state.worker("llm").expect("llm");
    assert_eq!(
        llm["restarts"], 1,
        "straight to the lower rung, no backoff: {llm}"
    );
    assert!(
        llm["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("out of memory")),
        "{llm}"
    );
}

#[test]
fn without_auto_downgrade_pressure_alerts_and_an_out_of_memory_fails_loudly() {
    let state = StateDir::new();
    state.write_config(GPU_CONFIG);
    let model = state.fake_model();
    let gpu = scenario(&state, &[(0.0, 3930)]);
    let _sup = up(
        &state,
        &model,
        &gpu,
        &["--profile", "balanced", "--no-auto-downgrade"],
    );
    state.wait_running(LIMIT);
    wait_until(LIMIT, "an alert that downgrades are off", || {
        state.events().iter().any(|e| {
            event_kind(e) == "VramAlert"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("--no-auto-downgrade"))
        })
    });
    assert!(llm_running_on(&state, "balanced"));
    assert_eq!(count(&ladder_events(&state), "Downgraded"), 0);
    let status = state.status().expect("status");
    assert_eq!(status["gpu"]["auto_downgrade"], false);

    ok(&state.run(&["ctl", "crash", "llm", "--oom"], LIMIT));
    wait_until(LIMIT, "the llm to fail", || {
        state.worker("llm").is_some_and(|w| w["state"] == "Failed")
    });
    let llm = state.worker("llm").expect("llm");
    let error = llm["last_error"].as_str().expect("last error");
    assert!(
        error.contains("out of memory") && error.contains("downgrades are off"),
        "{error}"
    );
}

#[test]
fn an_explicit_profile_overrides_the_policy_and_is_reported() {
    let state = StateDir::new();
    state.write_config(GPU_CONFIG);
    let model = state.fake_model();
    let gpu = scenario(&state, &[(0.0, 1000)]);
    let _sup = up(&state, &model, &gpu, &[]);
    state.wait_running(LIMIT);
    // `auto`: the highest rung that fits next to 1 GiB of other applications.
    assert!(llm_running_on(&state, "performance"));

    ok(&state.run(&["ctl", "profile", "low_memory"], LIMIT));
    wait_until(LIMIT, "the llm on low_memory", || {
        llm_running_on(&state, "low_memory")
    });
    let status = state.status().expect("status");
    assert_eq!(status["profile"], "low_memory");
    let decision = &status["last_decision"];
    assert_eq!(event_kind(decision), "ProfileChanged");
    assert_eq!(decision["kind"]["ProfileChanged"]["to"], "low_memory");
    assert!(decision["message"]
        .as_str()
        .is_some_and(|m| m.contains("ctl profile")));
    // Calm for longer than the cool-down: the choice holds, no upgrade above it.
    std::thread::sleep(Duration::from_secs(4));
    assert!(llm_running_on(&state, "low_memory"));
    assert_eq!(count(&ladder_events(&state), "Upgraded"), 0);

    ok(&state.run(
        &["ctl", "restart", "llm", "--profile", "performance"],
        LIMIT,
    ));
    wait_until(LIMIT, "the llm on performance", || {
        llm_running_on(&state, "performance")
    });
    let out = state.run(&["ctl", "profile", "turbo"], LIMIT);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("performance, balanced, low_memory, cpu"),
        "{err}"
    );
    // The plain status shows the ladder with the active rung marked.
    let text = ok(&state.run(&["ctl", "status"], LIMIT));
    assert!(text.contains("*performance"), "{text}");
    assert!(text.contains("Test card (simulated)"), "{text}");
}

#[test]
fn doctor_shows_the_gpu_the_ladder_and_the_suggested_profile() {
    let state = StateDir::new();
    let model = default_model();
    let gpu = scenario(&state, &[(0.0, 3000)]);
    let out = state.run(
        &[
            "--model",
            model.to_str().expect("utf-8"),
            "--gpu-scenario",
            gpu.to_str().expect("utf-8"),
            "doctor",
            "--json",
        ],
        LIMIT,
    );
    let report: Value = serde_json::from_str(&ok(&out)).expect("doctor --json");
    assert_eq!(report["gpu"]["name"], "Test card");
    assert_eq!(report["model_facts"]["n_layer"], 18);
    let ladder = report["ladder"].as_array().expect("ladder");
    let names: Vec<&str> = ladder
        .iter()
        .filter_map(|r| r["profile"]["name"].as_str())
        .collect();
    assert_eq!(names, ["performance", "balanced", "low_memory", "cpu"]);
    let estimates: Vec<u64> = ladder
        .iter()
        .filter_map(|r| r["estimated_vram_bytes"].as_u64())
        .collect();
    assert!(estimates.windows(2).all(|w| w[1] < w[0]), "{estimates:?}");
    assert_eq!(
        ladder[0]["profile"]["n_gpu_layers"], 19,
        "all 18 layers and the head"
    );
    // 3000 MiB of 4096 are taken: only a rung that keeps usage below 80% is suggested.
    let suggested = report["recommended"]["profile"]
        .as_str()
        .expect("suggested");
    let at = names.iter().position(|n| *n == suggested).expect("a rung");
    let fits = |bytes: u64| (3000 << 20) + bytes <= (4096u64 << 20) * 8 / 10;
    assert!(fits(estimates[at]), "{suggested} does not fit");
    assert!(at == 0 || !fits(estimates[at - 1]), "a higher rung fits");

    // Without a scenario this machine has no NVIDIA GPU: said, not an error.
    if !std::path::Path::new("/proc/driver/nvidia").exists() {
        let out = state.run(
            &["--model", model.to_str().expect("utf-8"), "doctor"],
            LIMIT,
        );
        let text = ok(&out);
        assert!(text.contains("no NVIDIA GPU"), "{text}");
        assert!(text.contains("suggest  profile cpu"), "{text}");
    }
}

#[test]
fn a_broken_scenario_file_stops_mate_up_with_a_clear_error() {
    let state = StateDir::new();
    let model = state.fake_model();
    let gpu = state.path().join("gpu.toml");
    std::fs::write(&gpu, "total_mb = \"lots\"\n").expect("write");
    let mut sup = up(&state, &model, &gpu, &[]);
    let status = sup.wait_exit(LIMIT);
    assert_eq!(status.code(), Some(1));
    let out = state.run(
        &[
            "--model",
            model.to_str().expect("utf-8"),
            "--gpu-scenario",
            gpu.to_str().expect("utf-8"),
            "up",
        ],
        LIMIT,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gpu.toml") && err.contains("total_mb"),
        "{err}"
    );
    // Nothing was left running or half set up.
    assert!(state.status().is_none());
}
