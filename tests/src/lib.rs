//! Test support for driving the real `mate` binary: find (or build) it, give each test its own
//! state dir, run commands with a deadline, and poll for conditions instead of sleeping.
//! [`gguf`] writes the tiny random-weight model the engine tests run on.

pub mod gguf;
pub mod mono;
pub mod py;
pub mod wine;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

/// The `mate` executable of the same profile as this test binary, built on first use.
pub fn mate_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("MATE_BIN") {
            return PathBuf::from(bin);
        }
        // target/<profile>/deps/<this test> → target/<profile>/mate
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in target/<profile>/deps");
        let release = profile_dir.ends_with("release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "mate", "--bin", "mate"]);
        if release {
            build.arg("--release");
        }
        // Cheap when the binary is fresh; rebuilds it when the sources moved on.
        let status = build.status().expect("running cargo build");
        assert!(status.success(), "cargo build -p mate failed");
        profile_dir.join(format!("mate{}", std::env::consts::EXE_SUFFIX))
    })
}

/// The tiny random-weight model, written once per test binary.
pub fn tiny_model() -> &'static Path {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mate-tiny-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir for the tiny model");
        let path = dir.join("tiny.gguf");
        gguf::TinyModel::default()
            .write(&path)
            .expect("write tiny model");
        path
    })
}

/// The default model (Gemma 3 270M) for integration tests: `$MATE_TEST_MODEL` (set by
/// `.ci/run`), else the installed default model, fetched through `mate model fetch` if missing.
pub fn default_model() -> &'static Path {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| {
        if let Some(path) = std::env::var_os("MATE_TEST_MODEL") {
            return PathBuf::from(path);
        }
        let out = Command::new(mate_bin())
            .args(["model", "fetch"])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("running mate model fetch");
        assert!(
            out.status.success(),
            "the default model is needed: `mate model fetch` failed"
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// The config of a state dir until a test writes its own: short replies. The tiny model
/// rarely ends a reply by itself, and its 256 default tokens from two llama.cpp threads that
/// spin on a busy 2-core machine took over 30 s (seen in CI, reproduced on one core).
pub const TEST_CONFIG: &str = "[chat]\nmax_tokens = 32\n";

/// Where every test's API worker listens: any free loopback port.
pub const TEST_API_ADDRESS: &str = "127.0.0.1:0";

/// A private state dir with a short path (Unix socket paths are limited to ~107 bytes).
#[derive(Debug)]
pub struct StateDir {
    dir: tempfile::TempDir,
}

impl StateDir {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("mate-t")
            .tempdir_in(std::env::temp_dir())
            .expect("temp state dir");
        StateDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `mate --state-dir <this> <args…>` with the test config ([`TEST_CONFIG`] until a test
    /// writes its own; a `--config` flag overrides it) and an empty models dir.
    pub fn mate(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(mate_bin());
        cmd.arg("--state-dir")
            .arg(self.path())
            .args(args)
            .env("MATE_CONFIG", self.config_file())
            .env_remove("MATE_MODEL")
            .env_remove("MATE_PROFILE")
            .env("MATE_MODELS_DIR", self.path().join("models"))
            // Tests run side by side: each API worker takes a free port (`api_url` finds it).
            .env("MATE_API_ADDRESS", TEST_API_ADDRESS)
            .env_remove("MATE_API_KEY")
            .stdin(Stdio::null());
        cmd
    }

    fn config_file(&self) -> PathBuf {
        let path = self.path().join("config.toml");
        if !path.exists() {
            std::fs::write(&path, TEST_CONFIG).expect("write the test config");
        }
        path
    }

    /// A real but tiny model (random weights, loads in milliseconds).
    pub fn fake_model(&self) -> PathBuf {
        let path = self.path().join("tiny.gguf");
        gguf::TinyModel::default()
            .write(&path)
            .expect("write tiny model");
        path
    }

    /// Runs `mate …` to completion, failing the test after `limit`.
    pub fn run(&self, args: &[&str], limit: Duration) -> Output {
        wait_output_or_explain(spawn_piped(self.mate(args)), limit, || {
            // Every log of the state dir: the supervisor's and each worker's.
            let mut logs: Vec<PathBuf> = std::fs::read_dir(self.path().join("logs"))
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            logs.sort();
            logs.iter()
                .map(|log| format!("--- {} (tail) ---\n{}\n", log.display(), log_tail(log, 30)))
                .collect()
        })
    }

    /// Starts `mate up` on a fake model and waits until both workers run.
    pub fn start_supervisor(&self) -> Supervisor {
        let model = self.fake_model();
        let sup = self.up(&model, &[]);
        self.wait_running(Duration::from_secs(20));
        sup
    }

    /// Replaces the config file (`[supervisor]`, `[chat]`, … tables).
    pub fn write_config(&self, text: &str) {
        std::fs::write(self.config_file(), text).expect("write config");
    }

    /// Starts `mate --model MODEL up` with extra environment; does not wait.
    pub fn up(&self, model: &Path, env: &[(&str, &str)]) -> Supervisor {
        let mut cmd = self.mate(&["--model", model.to_str().expect("utf-8 path"), "up"]);
        cmd.envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Supervisor {
            child: cmd.spawn().expect("spawn mate up"),
        }
    }
}

impl Mate for StateDir {
    fn run(&self, args: &[&str], limit: Duration) -> Output {
        StateDir::run(self, args, limit)
    }

    fn state_dir(&self) -> PathBuf {
        self.path().to_path_buf()
    }
}

/// What tests read through one mate installation, native ([`StateDir`]) or under Wine
/// ([`wine::WinePrefix`]): each runs `mate …` its way, and the rest is the same.
pub trait Mate {
    /// Runs `mate …` to completion, failing the test after `limit`.
    fn run(&self, args: &[&str], limit: Duration) -> Output;

    /// The state dir, as a host path.
    fn state_dir(&self) -> PathBuf;

    /// Said when a wait fails (a log mate's own files do not hold).
    fn explain(&self) -> String {
        String::new()
    }

    /// `mate ctl status --json`, parsed; `None` when it fails.
    fn status(&self) -> Option<serde_json::Value> {
        json_stdout(&self.run(&["ctl", "status", "--json"], CTL_LIMIT))
    }

    /// One worker's entry of `mate ctl status --json` (`"llm"`, `"bridge"` or `"api"`).
    fn worker(&self, kind: &str) -> Option<serde_json::Value> {
        worker_in(&self.status()?, kind).cloned()
    }

    /// The pid of a running worker (a Windows pid under Wine).
    fn worker_pid(&self, kind: &str) -> Option<u32> {
        running_pid(&self.worker(kind)?)
    }

    /// Waits until every worker runs (the LLM with its model loaded); returns that status.
    fn wait_running(&self, limit: Duration) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.status() {
                let running = s["workers"]
                    .as_array()
                    .is_some_and(|w| !w.is_empty() && w.iter().all(|w| w["state"] == "Running"));
                if running {
                    return s;
                }
                last = s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for every worker running; last status: \
                 {last}\n{}",
                self.explain()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://host:port` of the API worker, once it listens.
    fn api_url(&self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let address = self.worker("api").and_then(|w| {
                w["vitals"]["api"]["address"]
                    .as_str()
                    .filter(|a| !a.is_empty())
                    .map(str::to_string)
            });
            if let Some(address) = address {
                return format!("http://{address}");
            }
            assert!(
                Instant::now() < deadline,
                "the API worker did not listen within {limit:?}; api worker: {:?}\n{}",
                self.worker("api"),
                self.explain()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `mate ctl events --json`, parsed.
    fn events(&self) -> Vec<serde_json::Value> {
        json_lines(
            "ctl events --json",
            &self.run(&["ctl", "events", "--json"], CTL_LIMIT),
        )
    }

    /// The transcript's lines, parsed.
    fn transcript(&self) -> Vec<serde_json::Value> {
        transcript_in(&self.state_dir())
    }
}

/// For one `mate ctl` request in a test.
const CTL_LIMIT: Duration = Duration::from_secs(30);

impl Default for StateDir {
    fn default() -> Self {
        Self::new()
    }
}

/// The lines of a successful run that prints JSON lines (`ctl events --json`), parsed.
pub fn json_lines(what: &str, out: &Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// What a successful run printed, as one JSON value; `None` when it failed.
pub fn json_stdout(out: &Output) -> Option<serde_json::Value> {
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The transcript of a state dir, its lines parsed.
pub fn transcript_in(state_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(state_dir.join("session/transcript.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each transcript line is JSON"))
        .collect()
}

/// One worker's entry (`"llm"` or `"bridge"`) in a parsed `mate ctl status --json`.
pub fn worker_in<'a>(status: &'a serde_json::Value, kind: &str) -> Option<&'a serde_json::Value> {
    let kind = match kind {
        "llm" => "Llm",
        "bridge" => "Bridge",
        "api" => "Api",
        other => panic!("no worker kind {other:?}"),
    };
    status["workers"]
        .as_array()?
        .iter()
        .find(|w| w["kind"] == kind)
}

/// The pid of a worker entry, if it is running.
pub fn running_pid(worker: &serde_json::Value) -> Option<u32> {
    (worker["state"] == "Running")
        .then(|| worker["pid"].as_u64())
        .flatten()
        .map(|p| p as u32)
}

/// A running `mate up`; killed if the test ends without stopping it.
#[derive(Debug)]
pub struct Supervisor {
    pub child: Child,
}

impl Supervisor {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        wait_exit(&mut self.child, limit, "the supervisor")
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` every 20 ms until it holds, failing the test after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `command` with its stdout and stderr piped here.
pub fn spawn_piped(mut command: Command) -> Child {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", command.get_program()))
}

/// Waits for `child` (`what`, for the message) to exit, failing the test after `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The lines `pipe` gives, through a channel as they come (read on a thread of their own).
pub fn line_channel(
    pipe: impl std::io::Read + Send + 'static,
) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    lines
}

/// Starts a stand-in peer (an OSC receiver, the C# Unity end) that prints a line with
/// `ready` once it listens; its stdout lines from then on, as they come.
pub fn spawn_ready(
    command: Command,
    what: &str,
    limit: Duration,
) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = spawn_piped(command);
    let lines = line_channel(child.stdout.take().expect("piped stdout"));
    let ready = lines
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not say it was ready within {limit:?}"));
    assert!(ready.contains("ready"), "{what}: {ready}");
    (child, lines)
}

/// Collects a child's output, killing it and failing the test after `limit`.
pub fn wait_output(child: Child, limit: Duration) -> Output {
    wait_output_or_explain(child, limit, String::new)
}

/// [`wait_output`], adding what `explain` says (a log's tail) to the failure.
pub fn wait_output_or_explain(
    mut child: Child,
    limit: Duration,
    explain: impl FnOnce() -> String,
) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let stuck = where_stuck(child.id());
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "command did not finish within {limit:?} ({stuck}); stderr: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                explain()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Where a process waits, as Linux tells it: each thread's system call (its number first)
/// and kernel wait channel.
fn where_stuck(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return "no /proc".into();
    };
    tasks
        .flatten()
        .map(|task| {
            let read = |name: &str| {
                std::fs::read_to_string(task.path().join(name))
                    .map(|s| s.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
                    .unwrap_or_default()
            };
            format!("syscall {} wchan {}", read("syscall"), read("wchan"))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The last `lines` lines of a log file (empty when it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// True while a process with this pid exists (and is not a zombie we could reap).
#[cfg(unix)]
pub fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Field 3 is the state; Z is a zombie: dead, only not yet reaped.
    !stat
        .rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('Z'))
}

/// Sends a signal by name (`KILL`, `STOP`, `CONT`, `INT`, `TERM`) with kill(1).
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// The name of an event kind in `mate ctl events --json` (`"Exited"`, `"Ready"`, …).
pub fn event_kind(event: &serde_json::Value) -> String {
    match &event["kind"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) => o.keys().next().cloned().unwrap_or_default(),
        _ => String::new(),
    }
}

/// A `mate unity-sim --json` process standing in for the Unity app, with every event it
/// printed collected as it happens.
#[derive(Debug)]
pub struct UnitySim {
    child: Child,
    pub address: String,
    events: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl UnitySim {
    /// Starts one on a free port (see [`free_address`]), with extra fault options
    /// (`--drop-every 1`, ...).
    pub fn start(args: &[&str]) -> UnitySim {
        UnitySim::start_at(&free_address(), args)
    }

    /// Starts one listening on `address` (to stand in for a Unity app that came back).
    pub fn start_at(address: &str, args: &[&str]) -> UnitySim {
        let child = Command::new(mate_bin())
            .args(["unity-sim", "--json", "--listen", address])
            .args(args)
            .env("MATE_CONFIG", "/dev/null")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mate unity-sim");
        UnitySim::collect(child, Duration::from_secs(10))
    }

    /// Collects the events of a `unity-sim --json` child (stdout piped), waiting up to `limit`
    /// for it to listen (its `listening` event names the address).
    pub fn collect(mut child: Child, limit: Duration) -> UnitySim {
        use std::io::BufRead as _;
        let stdout = child.stdout.take().expect("piped stdout");
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&events);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Kept as an event the tests see, rather than a panic nobody hears.
                let event = serde_json::from_str(line.trim_end()).unwrap_or_else(
                    |e| serde_json::json!({"event": "non-json", "line": line, "error": e.to_string()}),
                );
                sink.lock().expect("events lock").push(event);
            }
        });
        let mut sim = UnitySim {
            child,
            address: String::new(),
            events,
        };
        sim.wait_for(limit, "unity-sim listening", |events| {
            events.iter().any(|e| e["event"] == "listening")
        });
        sim.address = sim.events()[0]["address"]
            .as_str()
            .expect("listening address")
            .to_string();
        sim
    }

    /// Everything printed so far; fails the test on a line that was not JSON.
    pub fn events(&self) -> Vec<serde_json::Value> {
        let events = self.events.lock().expect("events lock").clone();
        if let Some(bad) = events.iter().find(|e| e["event"] == "non-json") {
            panic!("unity-sim printed a line that is not JSON: {bad}");
        }
        events
    }

    /// How many times a bridge connected.
    pub fn connections(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| e["event"] == "connected")
            .count()
    }

    /// The command lines it read, as JSON (`{"command": …, "data": …}`).
    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == "line")
            .map(|e| e["line"].clone())
            .collect()
    }

    /// Waits until `cond` holds for the events so far.
    pub fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        mut cond: impl FnMut(&[serde_json::Value]) -> bool,
    ) {
        wait_until(limit, what, || cond(&self.events()));
    }

    /// kill -9, as a crashing Unity app goes.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for UnitySim {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The commands of one Unity line, flattened: `["set_expression:happy", "blink:true", …]`.
pub fn unity_commands(line: &serde_json::Value) -> Vec<String> {
    let data = &line["data"];
    match line["command"].as_str().unwrap_or_default() {
        "batch" => data["commands"]
            .as_array()
            .map(|c| c.iter().flat_map(unity_commands).collect())
            .unwrap_or_default(),
        "set_expression" => vec![format!(
            "set_expression:{}",
            data["expression"].as_str().unwrap_or("?")
        )],
        "play_animation" => vec![format!(
            "play_animation:{}{}",
            data["name"].as_str().unwrap_or("?"),
            if data["loop"] == true { ":loop" } else { "" }
        )],
        "blink" => vec![format!("blink:{}", data["enabled"])],
        "load_vrm" => vec![format!("load_vrm:{}", data["path"].as_str().unwrap_or("?"))],
        other => vec![other.to_string()],
    }
}

/// A local address nothing listens on (yet), below Linux's ephemeral port range
/// (32768 and up), so no outgoing connection can take it (or connect to itself on it) while
/// a bridge keeps trying it.
pub fn free_address() -> String {
    use std::hash::{BuildHasher as _, RandomState};
    let seed = RandomState::new().hash_one(std::process::id());
    (0..1000u64)
        .map(|i| 20_000 + (seed.wrapping_add(i * 7919) % 12_000) as u16)
        .find_map(|port| {
            let address = format!("127.0.0.1:{port}");
            std::net::TcpListener::bind(&address).ok().map(|_| address)
        })
        .expect("a free port between 20000 and 32000")
}

/// `mate ctl chat --json …` as a child (native or under Wine), its lines delivered through a
/// channel as they come.
#[derive(Debug)]
pub struct ChatStream {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl ChatStream {
    /// Starts `command`; its stdout is piped here, a line that is not JSON fails the stream.
    pub fn start(mut command: Command) -> ChatStream {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn ctl chat --json");
        let lines = line_channel(child.stdout.take().expect("piped stdout"));
        ChatStream { child, lines }
    }

    /// The next line, failing the test after `limit`.
    pub fn next(&self, limit: Duration) -> serde_json::Value {
        let line = self
            .lines
            .recv_timeout(limit)
            .expect("the next `ctl chat --json` line within the deadline");
        serde_json::from_str(line.trim_end())
            .unwrap_or_else(|_| serde_json::json!({ "NotJson": line }))
    }

    /// The next line's text when it is a chunk (a reply starts with one), failing the test
    /// after `limit`; `Err` with the line otherwise.
    pub fn next_text(&self, limit: Duration) -> Result<String, serde_json::Value> {
        let line = self.next(limit);
        match line["Chunk"]["text"].as_str() {
            Some(text) => Ok(text.to_string()),
            None => Err(line),
        }
    }

    /// Reads to the end of the stream, each line within `limit`: (text, events, the ChatDone
    /// stats). Fails unless the stream is one answer: chunks and events, exactly one ChatDone,
    /// then the end, and `ctl chat` exits 0.
    pub fn finish(
        &mut self,
        mut text: String,
        limit: Duration,
    ) -> (String, Vec<serde_json::Value>, serde_json::Value) {
        let mut events = Vec::new();
        let stats = loop {
            let line = self.next(limit);
            if let Some(chunk) = line["Chunk"]["text"].as_str() {
                text.push_str(chunk);
            } else if let Some(event) = line.get("Event") {
                events.push(event.clone());
            } else if let Some(done) = line.get("ChatDone") {
                break done["stats"].clone();
            } else {
                panic!("unexpected `ctl chat --json` line: {line}");
            }
        };
        let status = wait_exit(&mut self.child, limit, "ctl chat --json after its ChatDone");
        assert!(status.success(), "ctl chat --json exited with {status}");
        // Not `iter()`: under Wine a process it started may hold the pipe open.
        let rest: Vec<String> =
            std::iter::from_fn(|| self.lines.recv_timeout(Duration::from_secs(2)).ok()).collect();
        assert!(
            rest.is_empty(),
            "lines after the ChatDone (one answer expected): {rest:?}"
        );
        (text, events, stats)
    }
}

impl Drop for ChatStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
