//! The supervisor's event loop.
//!
//! Theory of operation: one task owns all state ([`Supervisor`]) and runs a loop over
//! [`Event`]. Everything else — the accept loop and one task per connection (`server`), one
//! waiter task per child process, the signal handlers — only turns what happens into events.
//! Nothing a peer does can reach the state except through this loop, the loop never waits on a
//! peer (every send is `try_send`), and a peer that misbehaves loses its connection, never the
//! supervisor. Timers (heartbeats, backoff, grace periods) are deadlines the loop sleeps until.
//!
//! Workers: each spawn is a new *generation* with a one-time token in its environment. A
//! worker's exit is noticed at once (its waiter task wakes on SIGCHLD); a worker that stops
//! answering heartbeats, or that makes no progress while decoding, is killed. What an exit
//! means depends on what the supervisor asked for ([`Intent`]); an unexpected exit goes to the
//! restart policy (`policy`), which backs off, escalates to a lower profile, or gives up.
//!
//! The conversation (`session`) belongs to the supervisor. A turn in progress survives the LLM
//! worker: when it dies mid-reply, the next worker gets the conversation plus the part of the
//! reply already streamed and continues it, and the client sees one answer and an event.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use mate_protocol::{
    handshake::TOKEN_ENV, AuthToken, ChatMessage, ChatRole, Endpoint, EventKind, ExitStatus,
    FromWorker, GenerationStats, Level, Profile, Reply, Request, Role, StatusReport, StopReason,
    ToWorker, WorkerKind, WorkerReport, WorkerState, WorkerVitals, EXIT_LOAD_FAILED,
};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tracing::{debug, info};

use crate::{
    config::Settings,
    journal::{now_ms, Journal},
    policy::{Decision, Restarts},
    server::{self, Auth},
    session::{self, Transcript},
};

/// File in `<state>/run/` holding the token clients present.
pub const CONTROL_TOKEN_FILE: &str = "control.token";
/// File in `<state>/run/` locked by the supervisor that owns the state dir.
pub const LOCK_FILE: &str = "mate.lock";

pub fn control_token_path(state_dir: &Path) -> PathBuf {
    state_dir.join("run").join(CONTROL_TOKEN_FILE)
}

/// How long the thread count the CPU rule chose for one LLM load is reused by the next.
const THREADS_REUSE: Duration = Duration::from_secs(120);

/// The profile ladder, highest first. Until the GPU issue computes real profiles, every rung
/// loads CPU-only; escalation already walks down it.
pub const LADDER: [&str; 4] = ["performance", "balanced", "low_memory", "cpu"];

/// The next lower rung, if any.
pub fn lower_profile(name: &str) -> Option<&'static str> {
    let at = LADDER.iter().position(|p| *p == name)?;
    LADDER.get(at + 1).copied()
}

fn check_profile(name: &str) -> Result<(), String> {
    if LADDER.contains(&name) {
        Ok(())
    } else {
        Err(format!(
            "unknown profile {name:?}: expected one of {}",
            LADDER.join(", ")
        ))
    }
}

/// Until the profile ladder exists (issue 5), every profile name loads CPU-only.
fn profile_named(name: &str) -> Profile {
    Profile {
        name: name.into(),
        ..Profile::cpu(4096)
    }
}

/// Everything that can happen to the supervisor.
#[derive(Debug)]
pub enum Event {
    WorkerConnected {
        kind: WorkerKind,
        generation: u64,
        tx: mpsc::Sender<ToWorker>,
    },
    FromWorker {
        kind: WorkerKind,
        generation: u64,
        msg: FromWorker,
    },
    WorkerExited {
        kind: WorkerKind,
        generation: u64,
        status: ExitStatus,
    },
    Request {
        request: Request,
        reply: mpsc::Sender<Reply>,
        pid: u32,
    },
    ClientAttached {
        role: Role,
        pid: u32,
    },
    /// A connection was refused (bad token, garbage, flood, foreign user).
    Rejected(String),
    Stop(&'static str),
}

/// What the exit of the current process means.
#[derive(Debug, Clone, PartialEq)]
enum Intent {
    /// Nothing asked for: a crash, or a kill for hanging.
    None,
    /// Start a new process at once (`ctl restart`, a profile change).
    Restart,
    /// Stay stopped (`ctl stop`, supervisor shutdown).
    Stop,
    /// A failure no restart can fix; stay failed with this reason.
    Fail(String),
}

/// A live worker process.
#[derive(Debug)]
struct Process {
    generation: u64,
    pid: Option<u32>,
    spawned_at: Instant,
    kill: Option<oneshot::Sender<()>>,
    tx: Option<mpsc::Sender<ToWorker>>,
    ready: bool,
    /// LLM: the model is loaded.
    loaded: bool,
    intent: Intent,
    last_answer: Instant,
    next_seq: u64,
    /// Heartbeats sent since the worker last said anything.
    unanswered: u32,
    /// SIGKILL at this instant (end of a grace period).
    kill_at: Option<Instant>,
    /// SIGKILL was sent: only its exit is still to come.
    killed: bool,
}

impl Process {
    fn send(&self, msg: ToWorker) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.try_send(msg).is_ok())
    }

    fn kill(&mut self) {
        self.killed = true;
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
    }
}

#[derive(Debug)]
struct Worker {
    kind: WorkerKind,
    state: WorkerState,
    process: Option<Process>,
    generation: u64,
    /// Processes started after the first.
    restarts: u32,
    last_exit: Option<ExitStatus>,
    last_error: Option<String>,
    history: Restarts,
    restart_at: Option<Instant>,
    vitals: WorkerVitals,
}

impl Worker {
    fn new(kind: WorkerKind) -> Worker {
        Worker {
            kind,
            state: WorkerState::Stopped,
            process: None,
            generation: 0,
            restarts: 0,
            last_exit: None,
            last_error: None,
            history: Restarts::default(),
            restart_at: None,
            vitals: WorkerVitals::default(),
        }
    }

    /// Ready to serve (the bridge on hello, the LLM once its model is loaded); a worker
    /// being stopped stays `Stopping`.
    fn started(&mut self) {
        if self.state == WorkerState::Starting {
            self.state = WorkerState::Running;
        }
    }

    fn report(&self, profile: &str) -> WorkerReport {
        WorkerReport {
            kind: self.kind,
            state: self.state,
            pid: self.process.as_ref().and_then(|p| p.pid),
            uptime_ms: self
                .process
                .as_ref()
                .map_or(0, |p| p.spawned_at.elapsed().as_millis() as u64),
            restarts: self.restarts,
            profile: (self.kind == WorkerKind::Llm).then(|| profile.to_string()),
            last_exit: self.last_exit,
            last_error: self.last_error.clone(),
            vitals: self.vitals.clone(),
        }
    }
}

/// A user turn whose reply is not complete.
#[derive(Debug)]
struct ActiveTurn {
    number: u64,
    user: String,
    user_at_ms: u64,
    /// The reply so far, exactly as streamed to the client.
    partial: String,
    /// The request the current LLM process works on; `None` until it has been sent.
    request_id: Option<u64>,
    /// The request of a process that just died: what it streamed before dying may still be
    /// on its way, and counts until the next process takes the turn over.
    orphan: Option<u64>,
    client: Option<mpsc::Sender<Reply>>,
    /// Times a worker crash interrupted the reply.
    resumed: u32,
    cancelled: bool,
}

impl ActiveTurn {
    fn tell(&mut self, reply: Reply) {
        if let Some(client) = &self.client {
            if client.try_send(reply).is_err() {
                // Gone or too far behind: the turn goes on without it.
                self.client = None;
            }
        }
    }
}

/// What `mate up` needs beyond the settings.
#[derive(Debug, Clone)]
pub struct Options {
    pub settings: Settings,
    pub model: PathBuf,
    /// The executable workers are started from (normally this one).
    pub exe: PathBuf,
}

/// The exclusive claim on a state dir: an OS file lock, released by the kernel when the
/// process dies in any way, so a crashed supervisor never blocks the next one.
#[derive(Debug)]
pub struct StateLock {
    file: File,
    path: PathBuf,
}

/// Another supervisor owns the state dir.
#[derive(Debug, thiserror::Error)]
#[error(
    "another mate supervisor{} is running on state dir {state_dir}: `mate ctl status` talks \
     to it and `mate ctl shutdown` stops it; or pass a different --state-dir",
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
)]
pub struct AlreadyRunning {
    pub state_dir: PathBuf,
    pub pid: Option<u32>,
}

impl StateLock {
    pub fn acquire(state_dir: &Path) -> anyhow::Result<StateLock> {
        use std::io::{Read as _, Seek as _, Write as _};
        let run = state_dir.join("run");
        mate_protocol::endpoint::private_dir(&run)
            .with_context(|| format!("creating {}", run.display()))?;
        let path = run.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(AlreadyRunning {
                    state_dir: state_dir.to_path_buf(),
                    pid: text.trim().parse().ok(),
                }
                .into());
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        Ok(StateLock { file, path })
    }

    /// Removes the lock file, then lets go of the lock.
    fn release(self) {
        let _ = std::fs::remove_file(&self.path);
        drop(self.file);
    }
}

/// Runs the supervisor until a signal or `mate ctl shutdown`.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let state_dir = opts.settings.state_dir.clone();
    let lock = StateLock::acquire(&state_dir)?;
    let endpoint = Endpoint::for_state_dir(&state_dir);
    let listener = endpoint.listen_tokio()?;
    let auth = Arc::new(Auth::new(AuthToken::generate()?));
    let token_path = control_token_path(&state_dir);
    write_private(&token_path, &auth.control().to_hex())
        .with_context(|| format!("writing {}", token_path.display()))?;
    info!(endpoint = %endpoint.path().display(), "listening");

    let (events, mut inbox) = mpsc::channel::<Event>(1024);
    let accept = tokio::spawn(server::accept_loop(listener, auth.clone(), events.clone()));
    tokio::spawn(forward_signals(events.clone()));

    let mut sup = Supervisor::new(opts, endpoint.clone(), auth, events)?;
    sup.start();
    while !sup.finished() {
        let deadline = sup.next_deadline();
        tokio::select! {
            event = inbox.recv() => match event {
                Some(event) => sup.handle(event),
                None => break,
            },
            () = tokio::time::sleep_until(deadline) => sup.tick(),
        }
    }
    sup.journal
        .record(Level::Info, None, EventKind::Stopped, "supervisor stopped");
    accept.abort();
    let _ = accept.await;
    let _ = std::fs::remove_file(&token_path);
    #[cfg(unix)]
    let _ = std::fs::remove_file(endpoint.path());
    lock.release();
    info!("stopped");
    Ok(())
}

struct Supervisor {
    opts: Options,
    endpoint: Endpoint,
    auth: Arc<Auth>,
    events: mpsc::Sender<Event>,
    journal: Journal,
    transcript: Transcript,
    /// Indexed by `WorkerKind as usize`, in `WorkerKind::ALL` order.
    workers: [Worker; 2],
    profile: String,
    turn: Option<ActiveTurn>,
    next_request: u64,
    started: Instant,
    stopping: bool,
    next_heartbeat: Instant,
    /// Threads the last LLM load chose by the CPU rule, and when.
    threads_chosen: Option<(u32, Instant)>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("profile", &self.profile)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    fn new(
        opts: Options,
        endpoint: Endpoint,
        auth: Arc<Auth>,
        events: mpsc::Sender<Event>,
    ) -> anyhow::Result<Supervisor> {
        let state_dir = &opts.settings.state_dir;
        let mut journal = Journal::open(Journal::path_in(state_dir));
        let path = Transcript::path_in(state_dir);
        let (transcript, repairs) = Transcript::open(path.clone())
            .with_context(|| format!("reading the transcript {}", path.display()))?;
        journal.record(
            Level::Info,
            None,
            EventKind::SupervisorStarted {
                pid: std::process::id(),
            },
            format!("supervisor {} started", std::process::id()),
        );
        if !transcript.is_empty() || repairs.cut_bytes > 0 {
            let mut message = format!(
                "session restored: {} turns from {}",
                transcript.len(),
                path.display()
            );
            if repairs.cut_bytes > 0 {
                message.push_str(&format!(
                    " ({} bytes of a torn last write cut off)",
                    repairs.cut_bytes
                ));
            }
            if repairs.skipped_lines > 0 {
                message.push_str(&format!(
                    " ({} lines that are not turns skipped)",
                    repairs.skipped_lines
                ));
            }
            journal.record(
                Level::Info,
                None,
                EventKind::SessionRestored {
                    turns: transcript.len(),
                },
                message,
            );
        }
        let profile = opts.settings.profile.clone();
        if let Err(e) = check_profile(&profile) {
            anyhow::bail!("{e} (from --profile, MATE_PROFILE or the config file)");
        }
        let now = Instant::now();
        Ok(Supervisor {
            workers: WorkerKind::ALL.map(Worker::new),
            next_heartbeat: now + opts.settings.policy.heartbeat,
            opts,
            endpoint,
            auth,
            events,
            journal,
            transcript,
            profile,
            turn: None,
            next_request: 1,
            started: now,
            stopping: false,
            threads_chosen: None,
        })
    }

    fn start(&mut self) {
        for kind in WorkerKind::ALL {
            self.spawn(kind);
        }
    }

    fn finished(&self) -> bool {
        self.stopping && self.workers.iter().all(|w| w.process.is_none())
    }

    fn worker(&mut self, kind: WorkerKind) -> &mut Worker {
        &mut self.workers[kind as usize]
    }

    /// The process of `kind` if it is the generation an event is about.
    fn process(&mut self, kind: WorkerKind, generation: u64) -> Option<&mut Process> {
        self.worker(kind)
            .process
            .as_mut()
            .filter(|p| p.generation == generation)
    }

    fn record(&mut self, level: Level, worker: Option<WorkerKind>, kind: EventKind, msg: String) {
        let event = self.journal.record(level, worker, kind, msg);
        // The client of a turn hears what happens to the LLM worker while it waits.
        if worker == Some(WorkerKind::Llm) {
            if let Some(turn) = &mut self.turn {
                turn.tell(Reply::Event(event));
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::WorkerConnected {
                kind,
                generation,
                tx,
            } => {
                if let Some(p) = self.process(kind, generation) {
                    p.tx = Some(tx);
                    p.last_answer = Instant::now();
                }
            }
            Event::FromWorker {
                kind,
                generation,
                msg,
            } => self.on_message(kind, generation, msg),
            Event::WorkerExited {
                kind,
                generation,
                status,
            } => self.on_exit(kind, generation, status),
            Event::Request {
                request,
                reply,
                pid,
            } => self.on_request(request, reply, pid),
            Event::ClientAttached { role, pid } => self.record(
                Level::Info,
                None,
                EventKind::ClientAttached { role, pid },
                format!("{role} attached (pid {pid})"),
            ),
            Event::Rejected(reason) => self.journal.rejected(&reason),
            Event::Stop(why) => self.stop(why),
        }
    }

    // ---- workers -------------------------------------------------------------------------

    fn spawn(&mut self, kind: WorkerKind) {
        let w = self.worker(kind);
        if w.process.is_some() {
            return;
        }
        w.generation += 1;
        let generation = w.generation;
        w.restart_at = None;
        match self.spawn_process(kind, generation) {
            Ok(process) => {
                let pid = process.pid.unwrap_or(0);
                let w = self.worker(kind);
                w.state = WorkerState::Starting;
                w.vitals = WorkerVitals::default();
                w.process = Some(process);
                self.record(
                    Level::Info,
                    Some(kind),
                    EventKind::Spawned { pid },
                    format!("{kind} worker spawned (pid {pid})"),
                );
            }
            Err(e) => {
                let reason = format!("cannot start the {kind} worker: {e:#}");
                self.fail(kind, reason);
            }
        }
    }

    fn spawn_process(&mut self, kind: WorkerKind, generation: u64) -> anyhow::Result<Process> {
        let token = AuthToken::generate()?;
        let state_dir = &self.opts.settings.state_dir;
        let logs = state_dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("worker-{kind}.stderr.log")))?;
        self.auth.expect_worker(kind, token.clone(), generation);
        // Spawned from this task's thread, a runtime worker thread that lives as long as the
        // supervisor: the children's parent-death signal fires when the spawning thread exits.
        let mut child = tokio::process::Command::new(&self.opts.exe)
            .arg("worker")
            .arg(kind.as_str())
            .arg("--endpoint")
            .arg(self.endpoint.path())
            .env(TOKEN_ENV, token.to_hex())
            .env("MATE_STATE_DIR", state_dir)
            .env("MATE_LOG", &self.opts.settings.log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("running {}", self.opts.exe.display()))?;
        let pid = child.id();
        self.auth.spawned(kind, generation, pid);
        let (kill, killed) = oneshot::channel::<()>();
        let events = self.events.clone();
        tokio::spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status,
                _ = killed => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            let status = match status {
                Ok(status) => exit_status(status),
                Err(_) => ExitStatus::Code(-1),
            };
            let _ = events
                .send(Event::WorkerExited {
                    kind,
                    generation,
                    status,
                })
                .await;
        });
        let now = Instant::now();
        Ok(Process {
            generation,
            pid,
            spawned_at: now,
            kill: Some(kill),
            tx: None,
            ready: false,
            loaded: false,
            intent: Intent::None,
            last_answer: now,
            next_seq: 0,
            unanswered: 0,
            kill_at: None,
            killed: false,
        })
    }

    /// Asks the process to exit within the grace period; SIGKILL after it.
    fn shut_down(&mut self, kind: WorkerKind, intent: Intent) {
        let grace = self.opts.settings.policy.grace;
        let w = self.worker(kind);
        let Some(p) = &mut w.process else {
            return;
        };
        p.intent = intent;
        if p.kill_at.is_some() {
            return;
        }
        w.state = WorkerState::Stopping;
        let asked = p.send(ToWorker::Shutdown {
            grace_ms: grace.as_millis() as u32,
        });
        if asked {
            p.kill_at = Some(Instant::now() + grace);
        } else {
            // Not connected yet (or its queue is full): nothing to wait for.
            p.kill();
            p.kill_at = Some(Instant::now() + grace);
        }
    }

    fn on_message(&mut self, kind: WorkerKind, generation: u64, msg: FromWorker) {
        // Reply traffic is matched by request id, so a late chunk from a process that just
        // died still counts (it was streamed before the crash).
        match msg {
            FromWorker::Chunk { .. } | FromWorker::Done { .. } | FromWorker::Failed { .. }
                if kind != WorkerKind::Llm =>
            {
                return ignored(kind, "reply traffic from a worker that is not the LLM")
            }
            FromWorker::Chunk { request_id, text } => return self.on_chunk(request_id, text),
            FromWorker::Done { request_id, stats } => return self.on_done(request_id, stats),
            FromWorker::Failed { request_id, reason } => {
                if self.is_turn_request(request_id) {
                    self.fail_turn(format!("the LLM could not answer: {reason}"));
                }
                return;
            }
            _ => {}
        }
        let Some(p) = self.process(kind, generation) else {
            return;
        };
        p.last_answer = Instant::now();
        p.unanswered = 0;
        match msg {
            FromWorker::Ready => {
                p.ready = true;
                let pid = p.pid.unwrap_or(0);
                if kind == WorkerKind::Llm {
                    let load = self.load_message();
                    if let Some(p) = self.process(kind, generation) {
                        p.send(load);
                    }
                } else {
                    self.worker(kind).started();
                }
                self.record(
                    Level::Info,
                    Some(kind),
                    EventKind::Ready,
                    format!("{kind} worker ready (pid {pid})"),
                );
            }
            FromWorker::Heartbeat { vitals, .. } => self.worker(kind).vitals = vitals,
            FromWorker::Loaded(report) => {
                p.loaded = true;
                self.threads_chosen = Some((report.n_threads, Instant::now()));
                self.worker(kind).started();
                self.record(
                    Level::Info,
                    Some(kind),
                    EventKind::Loaded {
                        profile: report.profile.clone(),
                        load_ms: report.load_ms,
                        warmup_ms: report.warmup_ms,
                        restored_tokens: report.restored_tokens,
                    },
                    format!(
                        "model loaded with profile {} in {} ms ({} threads, {} tokens restored \
                         from the snapshot)",
                        report.profile, report.load_ms, report.n_threads, report.restored_tokens
                    ),
                );
                self.after_load();
            }
            FromWorker::Fatal { reason } => {
                // A failure no restart can fix: stop the process and stay failed.
                self.shut_down(kind, Intent::Fail(reason));
            }
            FromWorker::Notice { level, message } => {
                self.record(level, Some(kind), EventKind::Notice, message)
            }
            FromWorker::BridgeStatus(status) => {
                self.worker(kind).last_error = status.last_error;
            }
            FromWorker::ContextTrimmed {
                dropped_messages,
                prompt_tokens,
                n_ctx,
                ..
            } => self.record(
                Level::Info,
                Some(kind),
                EventKind::Notice,
                format!(
                    "the conversation outgrew the context ({n_ctx} tokens): the oldest \
                     {dropped_messages} messages are left out of the prompt ({prompt_tokens} \
                     tokens); the transcript keeps them"
                ),
            ),
            FromWorker::Ingested {
                prompt_tokens,
                cached_tokens,
                elapsed_ms,
                ..
            } => info!(
                prompt_tokens,
                cached_tokens, elapsed_ms, "conversation ingested by the new LLM worker"
            ),
            other => debug!(worker = %kind, ?other, "message"),
        }
    }

    /// What the LLM worker loads: the model with the current profile.
    fn load_message(&self) -> ToWorker {
        let mut profile = profile_named(&self.profile);
        profile.n_threads = self.opts.settings.threads;
        if profile.n_threads == 0 {
            // A restart soon after a load reuses that load's choice instead of sampling the
            // CPU again (a fifth of a second on every restart).
            if let Some((threads, at)) = self.threads_chosen {
                if at.elapsed() < THREADS_REUSE {
                    profile.n_threads = threads;
                }
            }
        }
        ToWorker::Load {
            model_path: self.opts.model.to_string_lossy().into_owned(),
            profile,
            options: self.opts.settings.llm.clone(),
        }
    }

    fn on_exit(&mut self, kind: WorkerKind, generation: u64, status: ExitStatus) {
        self.auth.forget(kind, generation);
        let w = self.worker(kind);
        let Some(p) = w.process.take_if(|p| p.generation == generation) else {
            return;
        };
        let ran_for = p.spawned_at.elapsed();
        w.last_exit = Some(status);
        let expected = p.intent != Intent::None;
        let level = if expected { Level::Info } else { Level::Warn };
        self.record(
            level,
            Some(kind),
            EventKind::Exited { status, expected },
            format!(
                "{kind} worker (pid {}) {} after {:.1} s",
                p.pid.unwrap_or(0),
                describe_exit(status),
                ran_for.as_secs_f32()
            ),
        );
        if kind == WorkerKind::Llm {
            if let Some(turn) = &mut self.turn {
                // Whatever it was working on is lost; the next process continues the reply.
                if let Some(id) = turn.request_id.take() {
                    turn.orphan = Some(id);
                    turn.resumed += 1;
                }
            }
            if self.turn.as_ref().is_some_and(|t| t.cancelled) {
                // The user asked for the reply to stop: it ends here, not in the next process.
                self.complete_turn(cancelled_stats());
            }
        }
        match p.intent {
            Intent::Restart if !self.stopping => {
                self.worker(kind).restarts += 1;
                self.spawn(kind);
            }
            Intent::Fail(reason) => self.fail(kind, reason),
            Intent::Stop | Intent::Restart => {
                self.worker(kind).state = WorkerState::Stopped;
                self.end_turn_if_llm_gone(kind);
            }
            Intent::None if self.stopping => self.worker(kind).state = WorkerState::Stopped,
            Intent::None => self.after_crash(kind, status, ran_for),
        }
    }

    fn after_crash(&mut self, kind: WorkerKind, status: ExitStatus, ran_for: Duration) {
        let policy = self.opts.settings.policy;
        let w = self.worker(kind);
        w.last_error = Some(format!("{} unexpectedly", describe_exit(status)));
        if kind == WorkerKind::Llm && status == ExitStatus::Code(EXIT_LOAD_FAILED) {
            // Out of memory creating the context: the same profile would fail again.
            return self.escalate(kind, "could not create its context (out of memory)");
        }
        match w.history.after_crash(&policy, Instant::now(), ran_for) {
            Decision::Restart { delay, attempt } => {
                w.state = WorkerState::Backoff;
                w.restart_at = Some(Instant::now() + delay);
                let delay_ms = delay.as_millis() as u64;
                self.record(
                    Level::Warn,
                    Some(kind),
                    EventKind::Restarting { delay_ms, attempt },
                    format!("restarting the {kind} worker in {delay_ms} ms (attempt {attempt})"),
                );
            }
            Decision::Escalate { restarts } => {
                let why = format!(
                    "crashed {} times within {} s",
                    restarts + 1,
                    policy.period.as_secs()
                );
                self.escalate(kind, &why);
            }
        }
    }

    /// The restart policy gave up on this profile: the LLM goes one rung down the ladder,
    /// anything else (or the LLM on the last rung) fails.
    fn escalate(&mut self, kind: WorkerKind, why: &str) {
        let lower = (kind == WorkerKind::Llm)
            .then(|| lower_profile(&self.profile))
            .flatten();
        let Some(lower) = lower else {
            let last = self.worker(kind).last_error.clone().unwrap_or_default();
            return self.fail(kind, format!("the {kind} worker {why} ({last})"));
        };
        let from = std::mem::replace(&mut self.profile, lower.to_string());
        self.record(
            Level::Warn,
            Some(kind),
            EventKind::Escalated {
                from: from.clone(),
                to: lower.to_string(),
            },
            format!("the {kind} worker {why}: lowering the profile from {from} to {lower}"),
        );
        let w = self.worker(kind);
        w.history.clear();
        w.restarts += 1;
        self.spawn(kind);
    }

    fn fail(&mut self, kind: WorkerKind, reason: String) {
        let w = self.worker(kind);
        w.state = WorkerState::Failed;
        w.restart_at = None;
        w.last_error = Some(reason.clone());
        let message =
            format!("{kind} worker failed: {reason}. Fix the cause, then `mate ctl start {kind}`");
        self.record(
            Level::Error,
            Some(kind),
            EventKind::Failed { reason },
            message,
        );
        self.end_turn_if_llm_gone(kind);
    }

    // ---- timers --------------------------------------------------------------------------

    fn next_deadline(&self) -> Instant {
        let policy = &self.opts.settings.policy;
        let mut next = self.next_heartbeat;
        for w in &self.workers {
            next = next.min(w.restart_at.unwrap_or(next));
            if let Some(p) = &w.process {
                next = next.min(p.kill_at.unwrap_or(next));
                if !p.ready {
                    next = next.min(p.spawned_at + policy.start_deadline);
                }
            }
        }
        next
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let policy = self.opts.settings.policy;
        for kind in WorkerKind::ALL {
            let stopping = self.stopping;
            let w = self.worker(kind);
            if w.restart_at.is_some_and(|t| t <= now) && !stopping {
                w.restarts += 1;
                self.spawn(kind);
                continue;
            }
            let Some(p) = &mut self.worker(kind).process else {
                continue;
            };
            if p.kill_at.is_some_and(|t| t <= now) {
                p.kill_at = None;
                p.kill();
            } else if !p.ready && now - p.spawned_at >= policy.start_deadline {
                let secs = policy.start_deadline.as_secs();
                self.hung(kind, now, format!("did not start within {secs} s"));
            }
        }
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + policy.heartbeat;
            self.heartbeats(now);
        }
    }

    /// Sends heartbeats and kills workers that stopped answering or stopped making progress.
    fn heartbeats(&mut self, now: Instant) {
        let policy = self.opts.settings.policy;
        for kind in WorkerKind::ALL {
            let w = self.worker(kind);
            let stalled = w.vitals.llm.as_ref().filter(|v| {
                matches!(
                    v.phase,
                    mate_protocol::LlmPhase::Ingesting | mate_protocol::LlmPhase::Generating
                )
            });
            let stalled_ms = stalled.map_or(0, |v| v.stalled_ms);
            let Some(p) = &mut w.process else { continue };
            if p.tx.is_none() || p.kill_at.is_some() || p.killed {
                continue;
            }
            let silent = now - p.last_answer;
            // Both: enough heartbeats went out unanswered (a stalled supervisor sent none, so
            // it never blames a worker for its own pause), and for long enough.
            if p.unanswered >= policy.missed_heartbeats && silent > policy.silence_limit() {
                let missed = policy.missed_heartbeats;
                let ms = silent.as_millis();
                self.hung(
                    kind,
                    now,
                    format!("missed {missed} heartbeats (silent for {ms} ms)"),
                );
            } else if stalled_ms > policy.stall.as_millis() as u64 {
                self.hung(
                    kind,
                    now,
                    format!("made no progress for {stalled_ms} ms while decoding"),
                );
            } else {
                p.next_seq += 1;
                p.unanswered += 1;
                let seq = p.next_seq;
                p.send(ToWorker::Heartbeat { seq });
            }
        }
    }

    fn hung(&mut self, kind: WorkerKind, now: Instant, why: String) {
        let Some(p) = &mut self.worker(kind).process else {
            return;
        };
        let silent_ms = (now - p.last_answer).as_millis() as u64;
        let pid = p.pid.unwrap_or(0);
        p.kill();
        // Stop watching it; the exit comes as an event.
        p.tx = None;
        p.kill_at = None;
        p.ready = true;
        self.worker(kind).last_error = Some(format!("hung: {why}"));
        self.record(
            Level::Warn,
            Some(kind),
            EventKind::HangDetected { silent_ms },
            format!("{kind} worker (pid {pid}) {why}: killing it"),
        );
    }

    // ---- the conversation ----------------------------------------------------------------

    fn llm_loaded(&mut self) -> bool {
        self.worker(WorkerKind::Llm)
            .process
            .as_ref()
            .is_some_and(|p| p.loaded && p.kill_at.is_none() && !p.killed)
    }

    /// The conversation as the LLM sees it: system prompt and every completed turn.
    fn conversation(&self) -> Vec<ChatMessage> {
        let system = &self.opts.settings.chat.system;
        let mut messages = Vec::new();
        if !system.is_empty() {
            messages.push(ChatMessage {
                role: ChatRole::System,
                text: system.clone(),
            });
        }
        messages.extend(self.transcript.messages());
        messages
    }

    /// A model was loaded: continue the turn in progress, or warm the cache with the session.
    fn after_load(&mut self) {
        if self.turn.is_some() {
            return self.send_turn();
        }
        if !self.transcript.is_empty() {
            let request_id = self.next_request;
            self.next_request += 1;
            let messages = self.conversation();
            if let Some(p) = &self.worker(WorkerKind::Llm).process {
                p.send(ToWorker::Ingest {
                    request_id,
                    messages,
                });
            }
        }
    }

    /// Sends the turn in progress to the LLM worker: the whole conversation, the user's
    /// message, and the reply so far when it resumes.
    fn send_turn(&mut self) {
        if !self.llm_loaded() {
            return;
        }
        let mut messages = self.conversation();
        let request_id = self.next_request;
        self.next_request += 1;
        let Some(turn) = &mut self.turn else { return };
        messages.push(ChatMessage {
            role: ChatRole::User,
            text: turn.user.clone(),
        });
        let resuming = turn.request_id.is_none() && turn.resumed > 0;
        if !turn.partial.is_empty() {
            messages.push(ChatMessage {
                role: ChatRole::Assistant,
                text: turn.partial.clone(),
            });
        }
        let streamed = turn.partial.chars().count() as u32;
        let generate = ToWorker::Generate {
            request_id,
            messages,
            sampling: self.opts.settings.chat.sampling.clone(),
        };
        let sent = self
            .worker(WorkerKind::Llm)
            .process
            .as_ref()
            .is_some_and(|p| p.send(generate));
        // Not sent (the worker is being replaced): the next one gets it after loading.
        if let Some(turn) = &mut self.turn {
            turn.request_id = sent.then_some(request_id);
        }
        if resuming && sent {
            self.record(
                Level::Info,
                Some(WorkerKind::Llm),
                EventKind::ReplyResumed {
                    streamed_chars: streamed,
                },
                format!("resuming the reply after {streamed} characters"),
            );
        }
    }

    /// Whether `request_id` is the turn's: the one the LLM works on, or, until the next
    /// process takes over, the one of the process that just died.
    fn is_turn_request(&self, request_id: u64) -> bool {
        self.turn.as_ref().is_some_and(|t| match t.request_id {
            Some(id) => id == request_id,
            None => t.orphan == Some(request_id),
        })
    }

    fn on_chunk(&mut self, request_id: u64, text: String) {
        if !self.is_turn_request(request_id) {
            return;
        }
        if let Some(turn) = &mut self.turn {
            turn.partial.push_str(&text);
            turn.tell(Reply::Chunk { text });
        }
    }

    fn on_done(&mut self, request_id: u64, stats: GenerationStats) {
        if !self.is_turn_request(request_id) {
            return;
        }
        let restarting = self
            .worker(WorkerKind::Llm)
            .process
            .as_ref()
            .is_some_and(|p| p.intent == Intent::Restart);
        let Some(turn) = &mut self.turn else { return };
        if stats.stop == StopReason::Cancelled && !turn.cancelled && restarting {
            // Stopped by the restart we asked for, not by the user: the next process
            // continues the reply.
            if turn.request_id.take().is_some() {
                turn.resumed += 1;
            }
            return;
        }
        if turn.request_id.is_none() {
            // The dying process finished after all: nothing was resumed.
            turn.resumed = turn.resumed.saturating_sub(1);
        }
        self.complete_turn(stats);
    }

    /// The reply is complete (or cancelled): record the turn and tell the client.
    fn complete_turn(&mut self, stats: GenerationStats) {
        let Some(mut turn) = self.turn.take() else {
            return;
        };
        let number = turn.number;
        let record = session::Turn {
            user: session::Line {
                turn: number,
                role: "user".into(),
                text: turn.user.clone(),
                at_ms: turn.user_at_ms,
                tokens: None,
                stop: None,
                resumed: 0,
            },
            reply: session::Line {
                turn: number,
                role: "assistant".into(),
                text: turn.partial.clone(),
                at_ms: now_ms(),
                tokens: Some(stats.generated_tokens),
                stop: Some(stop_name(&stats.stop)),
                resumed: turn.resumed,
            },
        };
        if let Err(e) = self.transcript.push(record) {
            let path = Transcript::path_in(&self.opts.settings.state_dir);
            let unsaved = self.transcript.unsaved();
            self.record(
                Level::Error,
                None,
                EventKind::Notice,
                format!(
                    "cannot save turn {number} to {}: {e}. {unsaved} turns are kept in memory \
                     and written with the next turn; free disk space (or fix the permissions) \
                     to keep them",
                    path.display()
                ),
            );
        }
        turn.tell(Reply::ChatDone { stats });
    }

    fn fail_turn(&mut self, reason: String) {
        let Some(mut turn) = self.turn.take() else {
            return;
        };
        self.journal.record(
            Level::Warn,
            Some(WorkerKind::Llm),
            EventKind::TurnFailed {
                reason: reason.clone(),
            },
            format!("turn {} failed: {reason}", turn.number),
        );
        turn.tell(Reply::Error { message: reason });
    }

    /// The LLM worker will not come back on its own: the turn cannot complete.
    fn end_turn_if_llm_gone(&mut self, kind: WorkerKind) {
        if kind != WorkerKind::Llm || self.turn.is_none() {
            return;
        }
        let w = self.worker(kind);
        if matches!(w.state, WorkerState::Failed | WorkerState::Stopped) {
            let why = match &w.last_error {
                Some(e) if w.state == WorkerState::Failed => format!("the LLM worker failed: {e}"),
                _ => "the LLM worker was stopped".to_string(),
            };
            self.fail_turn(why);
        }
    }

    fn chat(&mut self, text: String, reply: mpsc::Sender<Reply>) -> Result<(), String> {
        if self.stopping {
            return Err("the supervisor is shutting down".into());
        }
        if let Some(turn) = &self.turn {
            return Err(format!(
                "a reply is still streaming (turn {}); wait for it or `mate ctl cancel`",
                turn.number
            ));
        }
        if text.trim().is_empty() {
            return Err("nothing to say: the message is empty".into());
        }
        let w = self.worker(WorkerKind::Llm);
        if matches!(w.state, WorkerState::Failed | WorkerState::Stopped) {
            let why = w.last_error.clone().unwrap_or_else(|| "stopped".into());
            return Err(format!(
                "the LLM worker is {}: {why}; `mate ctl start llm` starts it again",
                w.state.as_str()
            ));
        }
        self.turn = Some(ActiveTurn {
            number: self.transcript.len() + 1,
            user: text,
            user_at_ms: now_ms(),
            partial: String::new(),
            request_id: None,
            orphan: None,
            client: Some(reply),
            resumed: 0,
            cancelled: false,
        });
        // If the worker is (re)starting, the turn goes out once the model is loaded.
        self.send_turn();
        Ok(())
    }

    fn cancel(&mut self) {
        let loaded = self.llm_loaded();
        let Some(turn) = &mut self.turn else { return };
        turn.cancelled = true;
        match turn.request_id {
            Some(request_id) if loaded => {
                if let Some(p) = &self.worker(WorkerKind::Llm).process {
                    p.send(ToWorker::Cancel { request_id });
                }
            }
            // Nobody is generating it (the worker is restarting): it ends here.
            _ => self.complete_turn(cancelled_stats()),
        }
    }

    // ---- requests ------------------------------------------------------------------------

    fn on_request(&mut self, request: Request, reply: mpsc::Sender<Reply>, pid: u32) {
        if !matches!(
            request,
            Request::Status | Request::Events { .. } | Request::Chat { .. } | Request::Cancel
        ) {
            self.journal.record(
                Level::Info,
                None,
                EventKind::Notice,
                format!("ctl (pid {pid}): {}", describe_request(&request)),
            );
        }
        let answer = match request {
            Request::Status => Ok(Some(Reply::Status(self.status()))),
            Request::Events { follow } => {
                for event in self.journal.recent() {
                    if reply.try_send(Reply::Event(event.clone())).is_err() {
                        break;
                    }
                }
                if follow {
                    self.journal.follow(reply.clone());
                    Ok(None)
                } else {
                    // The end of the list.
                    Ok(Some(Reply::Ok))
                }
            }
            Request::Chat { text } => self.chat(text, reply.clone()).map(|()| None),
            Request::Cancel => {
                self.cancel();
                Ok(Some(Reply::Ok))
            }
            Request::Restart { worker, profile } => self.restart(worker, profile),
            Request::Stop { worker } => {
                self.stop_worker(worker);
                Ok(Some(Reply::Ok))
            }
            Request::Start { worker } => self.start_worker(worker),
            Request::SetProfile { name } => self.set_profile(name),
            Request::Inject { worker, fault } => {
                let sent = self
                    .worker(worker)
                    .process
                    .as_ref()
                    .is_some_and(|p| p.send(ToWorker::Inject(fault)));
                if sent {
                    Ok(Some(Reply::Ok))
                } else {
                    Err(format!("the {worker} worker is not running"))
                }
            }
            Request::Shutdown => {
                self.stop("ctl shutdown");
                Ok(Some(Reply::Ok))
            }
        };
        match answer {
            Ok(Some(answer)) => {
                let _ = reply.try_send(answer);
            }
            Ok(None) => {}
            Err(message) => {
                let _ = reply.try_send(Reply::Error { message });
            }
        }
    }

    fn status(&self) -> StatusReport {
        StatusReport {
            supervisor_pid: std::process::id(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            workers: self
                .workers
                .iter()
                .map(|w| w.report(&self.profile))
                .collect(),
            turns: self.transcript.len(),
            tokens: self.transcript.tokens(),
        }
    }

    fn restart(
        &mut self,
        kind: WorkerKind,
        profile: Option<String>,
    ) -> Result<Option<Reply>, String> {
        if self.stopping {
            return Err("the supervisor is shutting down".into());
        }
        if let Some(name) = profile {
            if kind != WorkerKind::Llm {
                return Err(format!(
                    "profiles are for the llm worker, not the {kind} worker"
                ));
            }
            check_profile(&name)?;
            self.change_profile(name, "asked for by ctl restart");
        }
        self.respawn(kind);
        Ok(Some(Reply::Ok))
    }

    /// A new process now: the running one is shut down first.
    fn respawn(&mut self, kind: WorkerKind) {
        let w = self.worker(kind);
        w.history.clear();
        if w.process.is_some() {
            self.shut_down(kind, Intent::Restart);
        } else {
            w.restarts += 1;
            self.spawn(kind);
        }
    }

    fn stop_worker(&mut self, kind: WorkerKind) {
        let w = self.worker(kind);
        w.restart_at = None;
        if w.process.is_some() {
            self.shut_down(kind, Intent::Stop);
        } else {
            w.state = WorkerState::Stopped;
            self.end_turn_if_llm_gone(kind);
        }
    }

    fn start_worker(&mut self, kind: WorkerKind) -> Result<Option<Reply>, String> {
        if self.stopping {
            return Err("the supervisor is shutting down".into());
        }
        let w = self.worker(kind);
        if w.process.is_none() {
            w.history.clear();
            w.last_error = None;
            if w.generation > 0 {
                w.restarts += 1;
            }
            self.spawn(kind);
        }
        Ok(Some(Reply::Ok))
    }

    fn set_profile(&mut self, name: String) -> Result<Option<Reply>, String> {
        check_profile(&name)?;
        if name != self.profile {
            self.change_profile(name, "asked for by ctl profile");
            let llm = self.worker(WorkerKind::Llm);
            if !matches!(llm.state, WorkerState::Stopped | WorkerState::Failed) {
                self.respawn(WorkerKind::Llm);
            }
        }
        Ok(Some(Reply::Ok))
    }

    fn change_profile(&mut self, to: String, why: &str) {
        if to == self.profile {
            return;
        }
        let from = std::mem::replace(&mut self.profile, to.clone());
        self.record(
            Level::Info,
            Some(WorkerKind::Llm),
            EventKind::ProfileChanged {
                from: from.clone(),
                to: to.clone(),
            },
            format!("profile {from} → {to} ({why})"),
        );
    }

    fn stop(&mut self, why: &'static str) {
        if self.stopping {
            // Asked twice (a second Ctrl-C): no more grace.
            for w in &mut self.workers {
                if let Some(p) = &mut w.process {
                    p.kill();
                }
            }
            return;
        }
        self.stopping = true;
        self.record(
            Level::Info,
            None,
            EventKind::Stopping { reason: why.into() },
            format!("shutting down ({why})"),
        );
        self.fail_turn("the supervisor is shutting down".into());
        for kind in WorkerKind::ALL {
            self.stop_worker(kind);
        }
    }
}

/// The stats of a reply that ended by cancel while no worker was generating it.
fn cancelled_stats() -> GenerationStats {
    GenerationStats {
        prompt_tokens: 0,
        generated_tokens: 0,
        ttft_ms: 0.0,
        prompt_tokens_per_s: 0.0,
        gen_tokens_per_s: 0.0,
        stop: StopReason::Cancelled,
        cached_tokens: 0,
    }
}

fn ignored(kind: WorkerKind, what: &str) {
    tracing::warn!(worker = %kind, "ignored {what}");
}

/// `end_of_text`, `max_tokens`, … as the transcript writes it.
fn stop_name(stop: &StopReason) -> String {
    match stop {
        StopReason::EndOfText => "end_of_text".into(),
        StopReason::MaxTokens => "max_tokens".into(),
        StopReason::StopString(_) => "stop_string".into(),
        StopReason::Cancelled => "cancelled".into(),
        StopReason::ContextFull => "context_full".into(),
    }
}

fn describe_request(request: &Request) -> String {
    match request {
        Request::Restart {
            worker,
            profile: Some(p),
        } => format!("restart {worker} with profile {p}"),
        Request::Restart { worker, .. } => format!("restart {worker}"),
        Request::Stop { worker } => format!("stop {worker}"),
        Request::Start { worker } => format!("start {worker}"),
        Request::SetProfile { name } => format!("profile {name}"),
        Request::Inject { worker, fault } => format!("inject {fault:?} into {worker}"),
        Request::Shutdown => "shutdown".into(),
        other => format!("{other:?}"),
    }
}

/// "exited with code 1", "was killed by signal 9 (SIGKILL)".
pub fn describe_exit(status: ExitStatus) -> String {
    match status {
        ExitStatus::Code(code) => format!("exited with code {code}"),
        ExitStatus::Signal(signal) => {
            let name = match signal {
                6 => " (SIGABRT)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV)",
                15 => " (SIGTERM)",
                _ => "",
            };
            format!("was killed by signal {signal}{name}")
        }
    }
}

fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return ExitStatus::Signal(signal);
        }
    }
    ExitStatus::Code(status.code().unwrap_or(-1))
}

async fn forward_signals(events: mpsc::Sender<Event>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot install signal handlers");
            return;
        };
        loop {
            let why = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if events.send(Event::Stop(why)).await.is_err() {
                return;
            }
        }
    }
    #[cfg(not(unix))]
    {
        while tokio::signal::ctrl_c().await.is_ok() {
            if events.send(Event::Stop("Ctrl-C")).await.is_err() {
                return;
            }
        }
    }
}

/// Writes a secret readable by the owner only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ladder_goes_down_one_rung_at_a_time_and_ends_at_cpu() {
        assert_eq!(lower_profile("performance"), Some("balanced"));
        assert_eq!(lower_profile("balanced"), Some("low_memory"));
        assert_eq!(lower_profile("low_memory"), Some("cpu"));
        assert_eq!(lower_profile("cpu"), None);
        assert!(check_profile("turbo").is_err_and(|e| e.contains("low_memory")));
    }

    #[test]
    fn a_second_supervisor_on_the_same_state_dir_is_refused_with_the_pid() {
        let dir = tempfile::tempdir().expect("dir");
        let first = StateLock::acquire(dir.path()).expect("first");
        let err = StateLock::acquire(dir.path()).expect_err("second");
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("mate ctl shutdown"), "{text}");
        first.release();
        StateLock::acquire(dir.path()).expect("free again after release");
    }

    #[test]
    fn exits_read_as_words() {
        assert_eq!(
            describe_exit(ExitStatus::Signal(9)),
            "was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(describe_exit(ExitStatus::Code(3)), "exited with code 3");
    }
}
