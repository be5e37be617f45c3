//! The OpenAI-compatible front door end to end: the real `mate up`, its API worker on a real
//! TCP port, and real clients: the `openai` Python package, `prometheus_client`'s parsers,
//! and raw sockets for what no polite client sends.
#![cfg(target_os = "linux")]

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use mate_tests::{
    default_model, event_kind, json_lines, line_channel, py::PyClients, signal, spawn_piped,
    wait_exit, wait_until, Mate as _, StateDir, Supervisor,
};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);
/// For anything that loads or runs the default model on a busy 2-core machine.
const LONG: Duration = Duration::from_secs(120);
const KEY: &str = "test-key-7";

/// `mate up` on `model` with `config`, every worker running; the API's base URL.
fn up(state: &StateDir, model: &std::path::Path, config: &str) -> (Supervisor, String) {
    state.write_config(config);
    let sup = state.up(model, &[]);
    state.wait_running(LONG);
    let url = state.api_url(LIMIT);
    (sup, url)
}

/// What one raw HTTP exchange gave: the status (0 when the server closed without one) and
/// the body.
fn http(url: &str, request: &[u8]) -> (u16, String) {
    let mut stream = connect(url);
    stream.write_all(request).expect("send the request");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn connect(url: &str) -> TcpStream {
    let address = url.trim_start_matches("http://");
    let stream = TcpStream::connect(address).expect("connect to the API");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    stream
}

/// A POST with `body`, the connection closed after the answer.
fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: mate\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn get(path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: mate\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

fn error_message(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("OpenAI's error shape: {body}"))
        .to_string()
}

/// Runs a scenario of the Python client to the end; its JSON lines by step.
fn scenario(py: &PyClients, args: &[&str]) -> Vec<Value> {
    let out = mate_tests::wait_output(spawn_piped(py.scenario(args)), LONG);
    json_lines(&format!("python {args:?}"), &out)
}

fn step<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["step"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {lines:#?}"))
}

#[test]
fn the_openai_package_chats_streams_completes_and_lists_models_and_prometheus_parses_metrics() {
    let Some(py) = PyClients::find("the_openai_package_chats…") else {
        return;
    };
    let state = StateDir::new();
    let model = state.fake_model();
    let (_sup, url) = up(
        &state,
        &model,
        &format!("[chat]\nmax_tokens = 16\n[api]\napi_key = \"{KEY}\"\n"),
    );
    let lines = scenario(&py, &["basics", &url, KEY]);

    assert_eq!(step(&lines, "models")["ids"], serde_json::json!(["tiny"]));
    let chat = step(&lines, "chat");
    assert_eq!(chat["role"], "assistant");
    assert!(
        matches!(chat["finish"].as_str(), Some("stop" | "length")),
        "{chat}"
    );
    assert!(
        chat["usage"]["completion_tokens"].as_u64() <= Some(8),
        "{chat}"
    );
    assert!(chat["usage"]["prompt_tokens"].as_u64() > Some(0), "{chat}");
    let stream = step(&lines, "stream");
    assert!(
        stream["usage"]["completion_tokens"].as_u64() > Some(0),
        "usage chunk: {stream}"
    );
    assert!(stream["finish"].is_string(), "{stream}");
    assert!(step(&lines, "completion")["finish"].is_string());
    let n2 = step(&lines, "n=2");
    assert_eq!(
        (&n2["error"], &n2["status"], &n2["param"]),
        (&"BadRequestError".into(), &400.into(), &"n".into())
    );
    let too_long = step(&lines, "too long");
    assert_eq!(
        (&too_long["error"], &too_long["status"], &too_long["code"]),
        (
            &"BadRequestError".into(),
            &400.into(),
            &"context_length_exceeded".into()
        ),
        "{too_long}"
    );
    let bad_key = step(&lines, "bad key");
    assert_eq!(
        (&bad_key["error"], &bad_key["status"]),
        (&"AuthenticationError".into(), &401.into())
    );

    // API requests are stateless: the companion's session did not grow.
    assert!(state.transcript().is_empty());

    let metrics = scenario(&py, &["metrics", &url, KEY]);
    let families = &step(&metrics, "openmetrics")["families"];
    let samples = |name: &str| -> Vec<Value> {
        families[name]["samples"]
            .as_array()
            .unwrap_or_else(|| panic!("no family {name}: {families}"))
            .clone()
    };
    let up: Vec<_> = samples("mate_worker_up")
        .into_iter()
        .map(|s| (s[1]["worker"].clone(), s[2].as_f64()))
        .collect();
    for worker in ["llm", "bridge", "api"] {
        assert!(up.contains(&(worker.into(), Some(1.0))), "{up:?}");
    }
    assert_eq!(
        families["mate_llm_time_to_first_token_seconds"]["type"],
        "histogram"
    );
    let count = |family: &str, sample: &str| {
        samples(family)
            .iter()
            .filter(|s| s[0] == sample)
            .filter_map(|s| s[2].as_f64())
            .sum::<f64>()
    };
    assert!(
        count(
            "mate_llm_time_to_first_token_seconds",
            "mate_llm_time_to_first_token_seconds_count"
        ) >= 3.0
    );
    assert!(count("mate_queue_wait_seconds", "mate_queue_wait_seconds_count") >= 3.0);
    // Chat, stream and completion: three API turns (the refused n=2 is none).
    let api_turns: f64 = samples("mate_turns")
        .iter()
        .filter(|s| s[1]["source"] == "api")
        .filter_map(|s| s[2].as_f64())
        .sum();
    assert_eq!(api_turns, 3.0);
    assert_eq!(samples("mate_queue_depth")[0][2].as_f64(), Some(0.0));
    assert!(samples("mate_api_requests")[0][2].as_f64() >= Some(5.0));
    // The classic Prometheus text parser reads it as well.
    let classic = step(&metrics, "classic")["names"].to_string();
    assert!(classic.contains("mate_worker_restarts"), "{classic}");
}

#[test]
fn hostile_http_leaves_the_api_worker_the_supervisor_and_the_session_untouched() {
    let state = StateDir::new();
    let model = state.fake_model();
    let (_sup, url) = up(
        &state,
        &model,
        &format!(
            "[chat]\nmax_tokens = 8\n[api]\napi_key = \"{KEY}\"\nmax_body_bytes = 2048\n\
             request_timeout_ms = 1000\nmax_connections = 32\n"
        ),
    );
    let said = state.run(&["ctl", "chat", "Hello"], LIMIT);
    assert!(said.status.success());

    let (status, body) = http(&url, &post("/v1/chat/completions", "{\"messages\": [}"));
    assert_eq!(status, 400, "{body}");
    assert!(error_message(&body).contains("not valid JSON"), "{body}");
    let (status, body) = http(
        &url,
        &post("/v1/chat/completions", "{\"messages\": \"hi\"}"),
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = http(
        &url,
        &post(
            "/v1/chat/completions",
            &format!("{{\"x\": \"{}\"}}", "a".repeat(10_000)),
        ),
    );
    assert_eq!(status, 413, "{body}");
    assert!(error_message(&body).contains("max_body_bytes"), "{body}");
    let (status, body) = http(&url, &get("/v1/engines"));
    assert_eq!(status, 404, "{body}");
    let (status, _) = http(&url, b"\x00\xff\x13garbage that is not HTTP\r\n\r\n");
    assert!(status == 0 || status == 400, "{status}");
    let (status, body) = http(
        &url,
        b"GET /v1/models HTTP/1.1\r\nHost: m\r\nAuthorization: Bearer nope\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 401, "{body}");
    // /health answers without the key, as front ends poll it before they are set up.
    let (status, body) = http(
        &url,
        b"GET /health HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{body}");

    // A client that starts a request and never finishes it is dropped after the timeout.
    let mut slow = connect(&url);
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: m\r\n")
        .expect("half a request");
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let n = slow.read(&mut buf).unwrap_or(0);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a dawdling client was dropped after {:?} ({n} bytes answered)",
        started.elapsed()
    );

    // Hundreds of idle connections, more than the cap: they time out, and a real client
    // gets through.
    let idle: Vec<TcpStream> = (0..300).map(|_| connect(&url)).collect();
    let started = Instant::now();
    let (status, body) = http(&url, &get("/v1/models"));
    assert_eq!(status, 200, "{body}");
    eprintln!(
        "with 300 idle connections open, /v1/models answered in {:?}",
        started.elapsed()
    );
    drop(idle);

    let api = state.worker("api").expect("api worker");
    assert_eq!(
        (&api["state"], &api["restarts"]),
        (&"Running".into(), &0.into()),
        "{api}"
    );
    let llm = state.worker("llm").expect("llm worker");
    assert_eq!(llm["restarts"], 0, "{llm}");
    assert!(state
        .run(&["ctl", "chat", "Still there?"], LIMIT)
        .status
        .success());
    assert_eq!(state.transcript().len(), 4, "two turns, nothing else");
}

#[test]
fn a_kill_9_of_the_llm_mid_stream_costs_the_openai_client_nothing_and_health_follows() {
    let Some(py) = PyClients::find("a_kill_9_of_the_llm_mid_stream…") else {
        return;
    };
    let state = StateDir::new();
    let (_sup, url) = up(&state, default_model(), "[api]\n");
    let llm = state.worker_pid("llm").expect("llm pid");

    let mut client = spawn_piped(py.scenario(&["stream", &url, "", "120"]));
    let lines = line_channel(client.stdout.take().expect("stdout"));
    let mut seen = String::new();
    let mut pieces = 0;
    while pieces < 3 {
        let line = lines.recv_timeout(LONG).expect("a streamed piece");
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["step"], "piece", "the stream ended before the kill: {v}");
        seen.push_str(v["text"].as_str().unwrap_or_default());
        pieces += 1;
    }
    signal(llm, "KILL");
    let end = loop {
        let line = lines.recv_timeout(LONG).expect("the rest of the stream");
        let v: Value = serde_json::from_str(&line).expect("json");
        if v["step"] == "end" {
            break v;
        }
    };
    let status = wait_exit(&mut client, LIMIT, "the python client");
    assert!(status.success(), "the client raised nothing: {status:?}");
    let text = end["text"].as_str().unwrap_or_default();
    assert!(
        text.starts_with(&seen) && text.len() > seen.len(),
        "{seen:?} then {text:?}"
    );
    assert!(end["finish"].is_string(), "{end}");

    let events = state.events();
    let resumed: Vec<_> = events
        .iter()
        .filter(|e| event_kind(e) == "ReplyResumed")
        .collect();
    assert_eq!(resumed.len(), 1, "{events:#?}");
    let llm_after = state.worker("llm").expect("llm");
    assert_eq!(llm_after["restarts"], 1);
    assert!(
        state.transcript().is_empty(),
        "an API reply is not a companion turn"
    );

    // /health: 503 with the reason while the LLM is away, 200 again once it serves.
    let health = || {
        http(
            &url,
            b"GET /health HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
        )
    };
    assert!(state.run(&["ctl", "stop", "llm"], LIMIT).status.success());
    let (status, body) = health();
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["status"], "stopped", "{body}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("ctl start llm"));
    let (status, body) = http(
        &url,
        &post(
            "/v1/chat/completions",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}",
        ),
    );
    assert_eq!(status, 503, "{body}");
    assert!(state.run(&["ctl", "start", "llm"], LIMIT).status.success());
    wait_until(LONG, "/health 200 after the start", || health().0 == 200);
}

#[test]
fn a_client_that_disconnects_mid_stream_cancels_its_generation() {
    let state = StateDir::new();
    let (_sup, url) = up(&state, default_model(), "[api]\n");
    let mut stream = connect(&url);
    let body =
        "{\"messages\": [{\"role\": \"user\", \"content\": \"Tell me a very long story.\"}], \
                \"max_tokens\": 400, \"temperature\": 0, \"stream\": true}";
    stream
        .write_all(&post("/v1/chat/completions", body))
        .expect("send");
    // Read until the first piece of text, then hang up.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\"content\":\"")
        || String::from_utf8_lossy(&got).matches("data:").count() < 3
    {
        let n = stream.read(&mut buf).expect("read the stream");
        assert!(
            n > 0,
            "the stream ended early: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    drop(stream);
    let left = Instant::now();
    wait_until(LONG, "the generation to stop", || {
        state
            .worker("llm")
            .is_some_and(|w| w["vitals"]["llm"]["last"]["stop"] == "Cancelled")
    });
    let last = state.worker("llm").expect("llm")["vitals"]["llm"]["last"].clone();
    let generated = last["generated_tokens"].as_u64().unwrap_or(u64::MAX);
    assert!(generated < 400, "stopped early: {last}");
    eprintln!(
        "cancelled {:?} after the client left, after {generated} of 400 tokens",
        left.elapsed()
    );
    assert_eq!(state.status().expect("status")["queued"], 0);
}
