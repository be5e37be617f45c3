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
//! restart policy (`policy`), which backs off, lowers the profile, or gives up.
//!
//! GPU: a sampler thread reads the GPU (`gpu`) and hands each reading to the loop, where the
//! VRAM policy (`pressure`) may raise an alert or move the LLM one rung down or up the profile
//! ladder (`ladder`). A rung change restarts the LLM at its next token boundary and the reply
//! in progress resumes, as after a crash. Every decision is an event with its reason and the
//! reading it was made on.
//!
//! The conversation (`session`) belongs to the supervisor. A turn in progress survives the LLM
//! worker: when it dies mid-reply, the next worker gets the conversation plus the part of the
//! reply already streamed and continues it, and the client sees one answer and an event.
//!
//! The avatar: a turn sets the "thinking" expression; the reply's expression tags and keywords
//! (`cues`) become expressions as it streams, and its tags never reach the client. Avatar
//! commands go to the bridge worker, which owns the Unity connection; the supervisor keeps the
//! latest command per part of the avatar, so a restarted bridge brings the avatar back.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use anyhow::Context as _;
use mate_protocol::{
    handshake::TOKEN_ENV, set_avatar_part, AuthToken, AvatarCommand, ChatMessage, ChatRole,
    DowngradeCause, Endpoint, Event as JournalEvent, EventKind, ExitStatus, FromWorker,
    GenerationStats, GpuReport, Level, Reply, Request, Role, Rung, StatusReport, StopReason,
    ToWorker, VramReading, WorkerKind, WorkerReport, WorkerState, WorkerVitals, EXIT_LOAD_FAILED,
};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tracing::{debug, info, warn};

use crate::{
    config::Settings,
    cues::CueFilter,
    gpu::{self, LlmFootprint},
    journal::{now_ms, Journal},
    ladder::{self, unknown_profile},
    policy::{Decision, Restarts},
    pressure::{Pressure, Verdict},
    server::{self, Auth},
    session::{self, Transcript},
};

use mate_protocol::client::control_token_path;
/// File in `<state>/run/` locked by the supervisor that owns the state dir.
pub const LOCK_FILE: &str = "mate.lock";

/// How long the thread count the CPU rule chose for one LLM load is reused by the next.
const THREADS_REUSE: Duration = Duration::from_secs(120);

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
    /// A GPU reading, or why there is none this time.
    Gpu(Result<VramReading, String>),
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
    /// LLM: the profile it loaded.
    profile: Option<String>,
    /// Where this process's output starts in the worker's log files (stderr, tracing), so an
    /// exit can be explained from what it wrote last.
    log_starts: [u64; 2],
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
    /// `ctl stop` and `ctl start` clients answered when the current process has exited.
    waiters: Vec<(Awaited, mpsc::Sender<Reply>)>,
}

/// What a client waits for when its command has to wait for a process to exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaited {
    Stopped,
    Started,
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
            waiters: Vec::new(),
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
        let profile = self
            .process
            .as_ref()
            .and_then(|p| p.profile.as_deref())
            .unwrap_or(profile);
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
    /// Takes expression tags out of the reply and turns tags and keywords into expressions.
    cues: CueFilter,
    /// The avatar has left "thinking" for this reply.
    talking: bool,
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
        let mut file = crate::statedir::open_private(&path, false)
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
    // Before anything is created in the state dir: a broken scenario file leaves nothing behind.
    let (probe, gpu) = gpu::first_look(&opts.settings.gpu.choice).map_err(anyhow::Error::msg)?;
    let lock = StateLock::acquire(&state_dir)?;
    // No worker runs on this state dir now: half-written snapshots of earlier ones can go.
    remove_interrupted_writes(&state_dir);
    let endpoint = Endpoint::for_state_dir(&state_dir);
    let listener = endpoint.listen_tokio()?;
    let auth = Arc::new(Auth::new(AuthToken::generate()?));
    let token_path = control_token_path(&state_dir);
    write_private(&token_path, &auth.control().to_hex())
        .with_context(|| format!("writing {}", token_path.display()))?;
    info!(endpoint = %endpoint.path().display(), "listening");

    let (events, mut inbox) = mpsc::channel::<Event>(1024);
    let mut sup = Supervisor::new(opts, endpoint.clone(), auth.clone(), events.clone(), gpu)?;
    let accept = tokio::spawn(server::accept_loop(listener, auth, events.clone()));
    tokio::spawn(forward_signals(events.clone()));
    if let Some(probe) = probe {
        let footprint = sup.footprint.clone();
        let every = sup.opts.settings.gpu.sample;
        let events = events.clone();
        gpu::sample_every(probe, every, footprint, move |reading| {
            events.blocking_send(Event::Gpu(reading)).is_ok()
        })
        .context("starting the GPU sampler thread")?;
    }
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
    // Every worker has exited: a snapshot the LLM worker was writing when its grace period
    // ended is only a partial file.
    remove_interrupted_writes(&state_dir);
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
    /// The profile ladder, highest first.
    ladder: Vec<Rung>,
    /// The rung the LLM loads now.
    profile: String,
    /// The highest rung automatic upgrades go back to: the one the user asked for.
    ceiling: usize,
    pressure: Pressure,
    /// The card, its last reading, and why either is missing (or the last sample's error).
    gpu: gpu::FirstLook,
    /// What the GPU sampler needs to know about the LLM worker.
    footprint: Arc<Mutex<Option<LlmFootprint>>>,
    last_decision: Option<JournalEvent>,
    turn: Option<ActiveTurn>,
    next_request: u64,
    started: Instant,
    stopping: bool,
    next_heartbeat: Instant,
    /// Threads the last LLM load chose by the CPU rule, and when.
    threads_chosen: Option<(u32, Instant)>,
    /// The latest avatar command for each part of the avatar (expression, blink, ...), sent
    /// again to a new bridge worker.
    avatar: Vec<AvatarCommand>,
    /// A state command did not reach the running bridge (its queue was full): the whole state
    /// goes again at its next heartbeat.
    avatar_behind: bool,
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
        gpu: gpu::FirstLook,
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
        let gpu_settings = &opts.settings.gpu;
        let plan = ladder::plan(
            &gpu_settings.ladder,
            &opts.model,
            gpu.info.as_ref().map(|g| g.total_bytes),
            gpu.reading.as_ref(),
            &opts.settings.profile,
            gpu_settings.thresholds.upgrade_below_percent,
        )
        .map_err(|e| anyhow::anyhow!("{e} (from --profile, MATE_PROFILE or the config file)"))?;
        if let Err(e) = &plan.facts {
            // The LLM worker will say what is wrong with the file when it loads it.
            journal.record(
                Level::Warn,
                None,
                EventKind::Notice,
                format!("cannot estimate VRAM per profile: {e}"),
            );
        }
        let ladder::Plan {
            ladder,
            start: profile,
            ceiling,
            suggested,
            ..
        } = plan;
        let how = if suggested {
            "suggested for this GPU"
        } else {
            "asked for"
        };
        journal.record(
            Level::Info,
            None,
            EventKind::Notice,
            format!(
                "{}; ladder: {}; starting on {profile} ({how})",
                describe_gpu(&gpu),
                describe_ladder(&ladder)
            ),
        );
        // Where the avatar starts: the configured model and blink.
        let unity = &opts.settings.unity;
        let mut avatar = Vec::new();
        if let Some(path) = &unity.vrm {
            avatar.push(AvatarCommand::LoadVrm { path: path.clone() });
        }
        avatar.push(AvatarCommand::Blink {
            enabled: unity.blink,
        });
        let now = Instant::now();
        Ok(Supervisor {
            ladder,
            ceiling,
            pressure: Pressure::new(gpu_settings.thresholds),
            gpu,
            footprint: Arc::new(Mutex::new(None)),
            last_decision: None,
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
            avatar,
            avatar_behind: false,
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
            Event::Gpu(reading) => self.on_gpu(reading),
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
        let log_starts = worker_logs(state_dir, kind).map(|p| file_len(&p));
        let stderr =
            crate::statedir::open_private(&logs.join(format!("worker-{kind}.stderr.log")), true)?;
        self.auth.expect_worker(kind, token.clone(), generation);
        // Spawned from this task's thread, a runtime worker thread that lives as long as the
        // supervisor: the children's parent-death signal fires when the spawning thread exits.
        let mut command = tokio::process::Command::new(&self.opts.exe);
        let offloads = self
            .rung(&self.profile)
            .is_some_and(|r| r.profile.n_gpu_layers > 0);
        if kind == WorkerKind::Llm && !offloads {
            // A GPU build of llama.cpp still sets up CUDA (a context and compute buffers on
            // the card) with no layers offloaded; a rung that offloads nothing hides the GPU.
            command.env("CUDA_VISIBLE_DEVICES", "");
        }
        let mut child = command
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
            profile: None,
            log_starts,
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
                    let unity = ToWorker::Unity {
                        options: self.opts.settings.unity.options.clone(),
                        avatar: self.avatar.clone(),
                    };
                    self.avatar_behind = false;
                    if let Some(p) = self.process(kind, generation) {
                        p.send(unity);
                    }
                    self.worker(kind).started();
                }
                self.record(
                    Level::Info,
                    Some(kind),
                    EventKind::Ready,
                    format!("{kind} worker ready (pid {pid})"),
                );
            }
            FromWorker::Heartbeat { vitals, .. } => {
                self.worker(kind).vitals = vitals;
                if kind == WorkerKind::Bridge {
                    self.catch_up_avatar();
                }
            }
            FromWorker::Loaded(report) => {
                p.loaded = true;
                p.profile = Some(report.profile.clone());
                let pid = p.pid.unwrap_or(0);
                self.threads_chosen = Some((report.n_threads, Instant::now()));
                let estimated_bytes = self
                    .rung(&report.profile)
                    .map_or(0, |r| r.estimated_vram_bytes);
                self.set_footprint(Some(LlmFootprint {
                    pid,
                    estimated_bytes,
                }));
                self.pressure.settled();
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
                let log_starts = p.log_starts;
                let offloads = self
                    .rung(&self.profile)
                    .is_some_and(|r| r.profile.n_gpu_layers > 0);
                let oom = (kind == WorkerKind::Llm && offloads)
                    .then(|| out_of_memory_line(&self.opts.settings.state_dir, &log_starts))
                    .flatten();
                match oom {
                    // llama.cpp reports a GPU allocation failure while loading the weights
                    // as a failed load: a lower rung needs less.
                    Some(line) => {
                        self.worker(kind).last_error = Some(format!("out of memory: {line}"));
                        let why = format!("ran out of memory loading the model ({line})");
                        self.downgrade_or_fail(DowngradeCause::OutOfMemory, None, &why);
                    }
                    // A failure no restart can fix: stop the process and stay failed.
                    None => self.shut_down(kind, Intent::Fail(reason)),
                }
            }
            FromWorker::Notice { level, message } => {
                self.record(level, Some(kind), EventKind::Notice, message)
            }
            FromWorker::BridgeStatus(status) => self.worker(kind).vitals.bridge = Some(status),
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
        let mut profile = match self.rung(&self.profile) {
            Some(rung) => rung.profile.clone(),
            // Never: the current profile is always a rung.
            None => mate_protocol::Profile::cpu(ladder::DEFAULT_N_CTX),
        };
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
        // A dead process has no RSS, and a dead bridge no Unity connection.
        w.vitals = WorkerVitals::default();
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
            self.set_footprint(None);
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
            // A process killed for hanging did not die of what its logs say.
            Intent::None => {
                let logs = (!p.killed).then_some(&p.log_starts);
                self.after_crash(kind, status, ran_for, logs)
            }
        }
        self.answer_waiters(kind);
    }

    /// The process clients waited for has exited: a stop is done, and a start is done when a
    /// new process runs.
    fn answer_waiters(&mut self, kind: WorkerKind) {
        let stopping = self.stopping;
        let w = self.worker(kind);
        for (awaited, client) in std::mem::take(&mut w.waiters) {
            let reply = match awaited {
                Awaited::Stopped => Reply::Ok,
                Awaited::Started if w.process.is_some() => Reply::Ok,
                Awaited::Started => Reply::Error {
                    message: if stopping {
                        "the supervisor is shutting down".into()
                    } else {
                        format!(
                            "the {kind} worker did not start: {}",
                            w.last_error.as_deref().unwrap_or(w.state.as_str())
                        )
                    },
                },
            };
            let _ = client.try_send(reply);
        }
    }

    fn after_crash(
        &mut self,
        kind: WorkerKind,
        status: ExitStatus,
        ran_for: Duration,
        log_starts: Option<&[u64; 2]>,
    ) {
        let policy = self.opts.settings.policy;
        let now = Instant::now();
        self.worker(kind).last_error = Some(format!("{} unexpectedly", describe_exit(status)));
        if kind == WorkerKind::Llm {
            let oom = if status == ExitStatus::Code(EXIT_LOAD_FAILED) {
                Some("could not create its context".to_string())
            } else {
                log_starts
                    .and_then(|starts| out_of_memory_line(&self.opts.settings.state_dir, starts))
            };
            if let Some(line) = oom {
                // The same profile would run out again: straight to the next lower one.
                self.worker(kind).last_error = Some(format!("out of memory: {line}"));
                let why = format!("ran out of memory ({line})");
                return self.downgrade_or_fail(DowngradeCause::OutOfMemory, None, &why);
            }
            let th = *self.pressure.thresholds();
            if self.pressure.crashed(now.into_std()) && self.can_downgrade() {
                let why = format!(
                    "crashed {} times within {} s",
                    th.crash_limit,
                    th.crash_window.as_secs()
                );
                return self.downgrade_or_fail(DowngradeCause::CrashLoop, None, &why);
            }
        }
        let w = self.worker(kind);
        match w.history.after_crash(&policy, now, ran_for) {
            Decision::Restart { delay, attempt } => {
                w.state = WorkerState::Backoff;
                w.restart_at = Some(now + delay);
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
                if kind == WorkerKind::Llm {
                    self.downgrade_or_fail(DowngradeCause::CrashLoop, None, &why);
                } else {
                    let last = self.worker(kind).last_error.clone().unwrap_or_default();
                    self.fail(kind, format!("the {kind} worker {why} ({last})"));
                }
            }
        }
    }

    // ---- the profile ladder --------------------------------------------------------------

    fn rung(&self, name: &str) -> Option<&Rung> {
        self.ladder.iter().find(|r| r.profile.name == name)
    }

    fn rung_index(&self) -> usize {
        self.ladder
            .iter()
            .position(|r| r.profile.name == self.profile)
            .unwrap_or(self.ladder.len() - 1)
    }

    /// Why a downgrade that is due cannot happen.
    fn why_no_downgrade(&self) -> String {
        if self.opts.settings.gpu.auto_downgrade {
            format!(
                "the LLM is already on the lowest profile that helps ({})",
                self.profile
            )
        } else {
            "automatic downgrades are off (--no-auto-downgrade): `mate ctl profile NAME` lowers \
             it by hand"
                .to_string()
        }
    }

    fn can_downgrade(&self) -> bool {
        self.opts.settings.gpu.auto_downgrade && self.rung_index() + 1 < self.ladder.len()
    }

    /// The next rung down that is estimated to need less VRAM than the current one.
    fn lower_with_less_vram(&self) -> Option<usize> {
        let at = self.rung_index();
        let now = self.ladder[at].estimated_vram_bytes;
        (at + 1..self.ladder.len()).find(|&i| self.ladder[i].estimated_vram_bytes < now)
    }

    /// The next rung up, no higher than the ceiling, that is estimated to need more VRAM
    /// (a rung that needs the same would only reload the model).
    fn higher_with_more_vram(&self) -> Option<usize> {
        let at = self.rung_index();
        let now = self.ladder[at].estimated_vram_bytes;
        (self.ceiling..at)
            .rev()
            .find(|&i| self.ladder[i].estimated_vram_bytes > now)
    }

    fn set_footprint(&self, llm: Option<LlmFootprint>) {
        *self
            .footprint
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = llm;
    }

    fn footprint(&self) -> Option<LlmFootprint> {
        *self
            .footprint
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a profile decision: an event, and the status's last decision.
    fn decide(&mut self, level: Level, kind: EventKind, message: String) {
        let event = self
            .journal
            .record(level, Some(WorkerKind::Llm), kind, message);
        if let Some(turn) = &mut self.turn {
            turn.tell(Reply::Event(event.clone()));
        }
        self.last_decision = Some(event);
    }

    /// Moves the LLM one rung down and restarts it there (at its next token boundary when
    /// it is generating). On the lowest rung, or with automatic downgrades off, the worker
    /// fails instead: the failure is loud, as those users asked. After a downgrade for VRAM
    /// pressure the LLM may climb back when the pressure clears; after one for a crash of the
    /// rung itself (out of memory, a crash loop), it stays below that rung until the user
    /// picks a profile.
    fn downgrade_or_fail(
        &mut self,
        cause: DowngradeCause,
        reading: Option<VramReading>,
        why: &str,
    ) {
        if !self.can_downgrade() {
            let last = self.worker(WorkerKind::Llm).last_error.clone();
            let hint = self.why_no_downgrade();
            let mut reason = format!("the llm worker {why}; {hint}");
            if let Some(last) = last.filter(|l| !why.contains(l.as_str())) {
                reason.push_str(&format!(" (last error: {last})"));
            }
            return self.fail(WorkerKind::Llm, reason);
        }
        let failed = matches!(
            cause,
            DowngradeCause::OutOfMemory | DowngradeCause::CrashLoop
        );
        let lower = if failed {
            self.rung_index() + 1
        } else {
            // For room, only a rung that needs less VRAM helps.
            let Some(lower) = self.lower_with_less_vram() else {
                return;
            };
            lower
        };
        if failed {
            // The rung itself failed, not the room around it: automatic upgrades stop below
            // it until the user picks a profile again.
            self.ceiling = self.ceiling.max(lower);
        }
        let to = self.ladder[lower].profile.name.clone();
        let from = std::mem::replace(&mut self.profile, to.clone());
        self.pressure.rung_changed();
        self.decide(
            Level::Warn,
            EventKind::Downgraded {
                from: from.clone(),
                to: to.clone(),
                cause,
                reading,
            },
            format!("the llm worker {why}: lowering the profile from {from} to {to}"),
        );
        self.respawn(WorkerKind::Llm);
    }

    /// The LLM runs, on the current profile, and is not being replaced: readings describe it.
    fn llm_settled(&self) -> bool {
        self.workers[WorkerKind::Llm as usize]
            .process
            .as_ref()
            .is_some_and(|p| {
                p.loaded
                    && p.intent == Intent::None
                    && p.kill_at.is_none()
                    && !p.killed
                    && p.profile.as_deref() == Some(self.profile.as_str())
            })
    }

    fn on_gpu(&mut self, reading: Result<VramReading, String>) {
        let reading = match reading {
            Ok(reading) => reading,
            Err(e) => {
                if self.gpu.note.as_ref() != Some(&e) {
                    self.journal.record(
                        Level::Warn,
                        None,
                        EventKind::Notice,
                        format!("cannot read the GPU: {e}"),
                    );
                    self.gpu.note = Some(e);
                }
                return;
            }
        };
        self.gpu.note = None;
        self.gpu.reading = Some(reading);
        if !self.llm_settled() {
            return;
        }
        let at = self.rung_index();
        let higher = self.higher_with_more_vram();
        let extra = higher.map(|h| {
            self.ladder[h]
                .estimated_vram_bytes
                .saturating_sub(self.ladder[at].estimated_vram_bytes)
        });
        // Readings are described only when a decision is made, not on every sample.
        match self
            .pressure
            .sample(Instant::now().into_std(), &reading, extra)
        {
            Verdict::Nothing => {}
            Verdict::Alert(why) => self.decide(
                Level::Warn,
                EventKind::VramAlert { reading },
                format!("{why} ({})", describe_reading(&reading)),
            ),
            Verdict::Downgrade { cause, why }
                if self.can_downgrade() && self.lower_with_less_vram().is_some() =>
            {
                self.downgrade_or_fail(
                    cause,
                    Some(reading),
                    &format!("needs room: {why} ({})", describe_reading(&reading)),
                );
            }
            Verdict::Downgrade { why, .. } => {
                if self.pressure.hold() {
                    let hint = self.why_no_downgrade();
                    self.decide(
                        Level::Warn,
                        EventKind::VramAlert { reading },
                        format!("{why} ({}); {hint}", describe_reading(&reading)),
                    );
                }
            }
            // Not in the middle of a reply: an upgrade is never urgent (the next reading asks
            // again).
            Verdict::Upgrade { why }
                if self.opts.settings.gpu.auto_upgrade && self.turn.is_none() =>
            {
                let Some(higher) = higher else { return };
                let to = self.ladder[higher].profile.name.clone();
                let from = std::mem::replace(&mut self.profile, to.clone());
                self.pressure.rung_changed();
                self.decide(
                    Level::Info,
                    EventKind::Upgraded {
                        from: from.clone(),
                        to: to.clone(),
                        reading,
                    },
                    format!(
                        "raising the LLM profile from {from} to {to}: {why} ({})",
                        describe_reading(&reading)
                    ),
                );
                self.respawn(WorkerKind::Llm);
            }
            Verdict::Upgrade { .. } => {}
        }
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
        let Some(turn) = &mut self.turn else { return };
        // The model keeps seeing its own tags (resumes and the transcript get the text as it
        // was written); the client sees it without them.
        turn.partial.push_str(&text);
        let (visible, cues) = turn.cues.push(&text);
        self.show(visible, cues, false);
    }

    /// Sends the client the visible part of the reply and the avatar its cues. The first text
    /// without a cue ends "thinking", and so does the `end` of the turn (failed, cancelled, or
    /// no text) if nothing did before.
    fn show(&mut self, visible: String, cues: Vec<String>, end: bool) {
        let Some(turn) = &mut self.turn else { return };
        let avatar = &self.opts.settings.avatar;
        let mut show: Vec<AvatarCommand> = cues.iter().map(|e| avatar.expression(e)).collect();
        let started = end || !(visible.is_empty() && show.is_empty());
        let first = started && !std::mem::replace(&mut turn.talking, true);
        if first && show.is_empty() && !avatar.talking.is_empty() {
            show.push(avatar.expression(&avatar.talking));
        }
        if !visible.is_empty() {
            turn.tell(Reply::Chunk { text: visible });
        }
        for cmd in show {
            self.tell_avatar(cmd);
        }
    }

    /// Sends a command to the bridge worker and remembers it as the avatar's state. A bridge
    /// that is not running gets the state when it comes back, and one that is behind at its
    /// next heartbeat.
    fn tell_avatar(&mut self, cmd: AvatarCommand) -> bool {
        let state = cmd.part().is_some();
        if state {
            set_avatar_part(&mut self.avatar, cmd.clone(), |c| c);
        }
        let sent = self.send_avatar(cmd);
        self.avatar_behind |= state && !sent;
        sent
    }

    fn send_avatar(&mut self, cmd: AvatarCommand) -> bool {
        self.worker(WorkerKind::Bridge)
            .process
            .as_ref()
            .is_some_and(|p| p.ready && p.send(ToWorker::Avatar(cmd)))
    }

    /// The avatar's whole state again, for a bridge that missed part of it (Unity may be told a
    /// part it already shows; setting it again changes nothing).
    fn catch_up_avatar(&mut self) {
        if self.avatar_behind {
            let state = self.avatar.clone();
            self.avatar_behind = !state.into_iter().all(|cmd| self.send_avatar(cmd));
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
        // What the filter held back (a `[` that never became a tag) is text after all.
        if let Some(turn) = &mut self.turn {
            let (rest, cues) = turn.cues.finish();
            self.show(rest, cues, true);
        }
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
            let unsaved = self.transcript.unsaved() as u64;
            let event = self.journal.record(
                Level::Error,
                None,
                EventKind::TurnNotSaved {
                    turn: number,
                    unsaved,
                },
                format!(
                    "turn {number} is not saved: cannot write {}: {e}. Unsaved turns ({unsaved}) are kept \
                     in memory and written with the next turn; free disk space (or fix the \
                     permissions) before the supervisor stops, or they are lost",
                    path.display()
                ),
            );
            // The client whose turn it is hears it, not only the journal's followers.
            turn.tell(Reply::Event(event));
        }
        turn.tell(Reply::ChatDone { stats });
    }

    fn fail_turn(&mut self, reason: String) {
        self.show(String::new(), Vec::new(), true);
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
            cues: CueFilter::new(self.opts.settings.avatar.cues.clone()),
            talking: false,
        });
        let thinking = &self.opts.settings.avatar.thinking;
        if !thinking.is_empty() {
            let cmd = self.opts.settings.avatar.expression(thinking);
            self.tell_avatar(cmd);
        }
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
            Request::Status => Ok(Some(Reply::Status(Box::new(self.status())))),
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
            // Answered once it is true: a stop when the process has exited, a start that had
            // to wait for a stopping process when the new one runs.
            Request::Stop { worker } => {
                self.stop_worker(worker);
                Ok(self.answer_when_exited(worker, Awaited::Stopped, &reply))
            }
            Request::Start { worker } => self.start_worker(worker).map(|waits| {
                if waits {
                    self.answer_when_exited(worker, Awaited::Started, &reply)
                } else {
                    Some(Reply::Ok)
                }
            }),
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
            Request::ClearSession => self.clear_session(),
            Request::Avatar(cmd) => {
                let kept = cmd.part().is_some();
                if self.tell_avatar(cmd) {
                    Ok(Some(Reply::Ok))
                } else {
                    let w = self.worker(WorkerKind::Bridge);
                    let state = match (w.state, w.process.as_ref().is_some_and(|p| p.ready)) {
                        (WorkerState::Running, true) => "too far behind".to_string(),
                        (state, _) => state.as_str().to_string(),
                    };
                    Err(format!(
                        "the bridge worker is {state}; {} (`mate ctl start bridge` starts a \
                         stopped one)",
                        if kept {
                            "the avatar gets this when it is back"
                        } else {
                            "a one-shot animation is not kept, send it again then"
                        }
                    ))
                }
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

    /// A new conversation; the old one is archived beside the transcript.
    fn clear_session(&mut self) -> Result<Option<Reply>, String> {
        if let Some(turn) = &self.turn {
            return Err(format!(
                "a reply is still streaming (turn {}); wait for it or `mate ctl cancel` first",
                turn.number
            ));
        }
        let turns = self.transcript.len();
        let archived = self.transcript.archive(now_ms()).map_err(|e| {
            format!(
                "cannot archive the transcript {}: {e}; nothing was cleared",
                Transcript::path_in(&self.opts.settings.state_dir).display()
            )
        })?;
        let message = match archived {
            Some(path) => format!(
                "session cleared: {turns} turns archived to {}",
                path.display()
            ),
            None => "session cleared (it was empty)".into(),
        };
        self.record(Level::Info, None, EventKind::Notice, message);
        Ok(Some(Reply::Ok))
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
            profile: self.profile.clone(),
            ceiling: self.ladder[self.ceiling].profile.name.clone(),
            ladder: self.ladder.clone(),
            gpu: GpuReport {
                name: self.gpu.info.as_ref().map(|g| g.name.clone()),
                simulated: self.gpu.info.as_ref().is_some_and(|g| g.simulated),
                note: self.gpu.note.clone(),
                reading: self.gpu.reading,
                alert_percent: self.pressure.thresholds().alert_percent,
                upgrade_below_percent: self.pressure.thresholds().upgrade_below_percent,
                critical_percent: self.pressure.thresholds().critical_percent,
                auto_downgrade: self.opts.settings.gpu.auto_downgrade,
                auto_upgrade: self.opts.settings.gpu.auto_upgrade,
            },
            last_decision: self.last_decision.clone(),
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
            self.change_profile(name, "asked for by ctl restart")?;
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

    /// `Ok(true)` when the start waits for the current process to exit (it was being
    /// stopped: the start wins, and a new process follows the old one).
    fn start_worker(&mut self, kind: WorkerKind) -> Result<bool, String> {
        if self.stopping {
            return Err("the supervisor is shutting down".into());
        }
        let w = self.worker(kind);
        match &mut w.process {
            Some(p) if matches!(p.intent, Intent::Stop | Intent::Fail(_)) => {
                p.intent = Intent::Restart;
                w.history.clear();
                Ok(true)
            }
            // Running, starting, or already restarting.
            Some(_) => Ok(false),
            None => {
                w.history.clear();
                w.last_error = None;
                if w.generation > 0 {
                    w.restarts += 1;
                }
                self.spawn(kind);
                let w = self.worker(kind);
                match (&w.process, &w.last_error) {
                    (Some(_), _) => Ok(false),
                    (None, Some(e)) => Err(e.clone()),
                    (None, None) => Err(format!("the {kind} worker did not start")),
                }
            }
        }
    }

    /// The reply now if the worker has no process left to wait for; otherwise the client is
    /// answered when it exits.
    fn answer_when_exited(
        &mut self,
        kind: WorkerKind,
        awaited: Awaited,
        client: &mpsc::Sender<Reply>,
    ) -> Option<Reply> {
        let w = self.worker(kind);
        if w.process.is_none() {
            return Some(Reply::Ok);
        }
        w.waiters.push((awaited, client.clone()));
        None
    }

    fn set_profile(&mut self, name: String) -> Result<Option<Reply>, String> {
        if self.change_profile(name, "asked for by ctl profile")? {
            let llm = self.worker(WorkerKind::Llm);
            if !matches!(llm.state, WorkerState::Stopped | WorkerState::Failed) {
                self.respawn(WorkerKind::Llm);
            }
        }
        Ok(Some(Reply::Ok))
    }

    /// An explicit profile: it becomes the highest rung automatic upgrades return to, and
    /// the VRAM policy starts over from it. Whether the profile changed.
    fn change_profile(&mut self, to: String, why: &str) -> Result<bool, String> {
        let auto = to == "auto";
        let to = if auto {
            // The suggestion for what the card holds without the LLM's own share; upgrades
            // may go all the way up again.
            let card = self.gpu.reading.map(|r| {
                let llm = self.footprint().map_or(0, |f| f.estimated_bytes);
                (r.total_bytes, r.used_bytes.saturating_sub(llm))
            });
            let below = self.pressure.thresholds().upgrade_below_percent;
            ladder::suggest(&self.ladder, card, below)
                .profile
                .name
                .clone()
        } else {
            to
        };
        let Some(at) = self.ladder.iter().position(|r| r.profile.name == to) else {
            return Err(unknown_profile(&self.ladder, &to));
        };
        self.ceiling = if auto { 0 } else { at };
        self.pressure.rung_changed();
        if to == self.profile {
            return Ok(false);
        }
        let from = std::mem::replace(&mut self.profile, to.clone());
        let estimate = gib(self.ladder[at].estimated_vram_bytes);
        self.decide(
            Level::Info,
            EventKind::ProfileChanged {
                from: from.clone(),
                to: to.clone(),
            },
            format!("profile {from} → {to} ({why}; estimated {estimate} of VRAM)"),
        );
        Ok(true)
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

/// `3.2 GiB`.
pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

fn describe_reading(r: &VramReading) -> String {
    let mut text = format!("{} of {} used", gib(r.used_bytes), gib(r.total_bytes));
    if let Some(llm) = r.llm_bytes {
        text.push_str(&format!(", {} by the LLM", gib(llm)));
    }
    text
}

fn describe_gpu(gpu: &gpu::FirstLook) -> String {
    match &gpu.info {
        Some(g) => format!(
            "GPU {}{} with {}",
            g.name,
            if g.simulated { " (simulated)" } else { "" },
            gib(g.total_bytes)
        ),
        None => gpu.note.clone().unwrap_or_else(|| "no GPU".into()),
    }
}

fn describe_ladder(ladder: &[Rung]) -> String {
    let rungs: Vec<String> = ladder
        .iter()
        .map(|r| format!("{} {}", r.profile.name, gib(r.estimated_vram_bytes)))
        .collect();
    rungs.join(" > ")
}

/// The worker's log files: its stderr, and its tracing log (where llama.cpp's own log lines
/// go).
fn worker_logs(state_dir: &Path, kind: WorkerKind) -> [PathBuf; 2] {
    let logs = state_dir.join("logs");
    [
        logs.join(format!("worker-{kind}.stderr.log")),
        logs.join(format!("worker-{kind}.log")),
    ]
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// What a GPU (or host) out-of-memory makes llama.cpp and its backends print.
const OUT_OF_MEMORY: [&str; 5] = [
    "out of memory",
    "cudamalloc failed",
    "erroroutofdevicememory",
    "failed to allocate",
    "unable to allocate",
];

/// The line, among the last things the LLM process wrote, that says it ran out of memory.
fn out_of_memory_line(state_dir: &Path, starts: &[u64; 2]) -> Option<String> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    const TAIL: u64 = 64 * 1024;
    worker_logs(state_dir, WorkerKind::Llm)
        .iter()
        .zip(starts)
        .find_map(|(path, &start)| {
            let mut file = File::open(path).ok()?;
            let len = file.metadata().ok()?.len();
            let from = start.max(len.saturating_sub(TAIL));
            file.seek(SeekFrom::Start(from)).ok()?;
            let mut bytes = Vec::new();
            file.take(TAIL).read_to_end(&mut bytes).ok()?;
            let text = String::from_utf8_lossy(&bytes);
            // The first such line names the failed allocation; later ones are its fallout.
            text.lines()
                .find(|line| {
                    let lower = line.to_lowercase();
                    // llama.cpp falls back from pinned host memory harmlessly.
                    OUT_OF_MEMORY.iter().any(|p| lower.contains(p)) && !lower.contains("pinned")
                })
                .map(|line| line.trim().chars().take(200).collect())
        })
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
        Request::Avatar(cmd) => format!("avatar {cmd}"),
        Request::ClearSession => "clear the session".into(),
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
/// Removes the `*.tmp` files of `<state>/session`: what a worker was writing (a KV snapshot
/// is written to a temporary file first, then renamed) when it was killed. Only called while
/// no worker runs.
fn remove_interrupted_writes(state_dir: &Path) {
    let dir = state_dir.join("session");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && path.extension().is_some_and(|e| e == "tmp") {
            match std::fs::remove_file(&path) {
                Ok(()) => info!(path = %path.display(), "removed an interrupted write"),
                Err(e) => warn!(path = %path.display(), error = %e, "cannot remove"),
            }
        }
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A new file each time: whatever was there (even a link) is replaced, never written through.
    let _ = std::fs::remove_file(path);
    crate::statedir::open_private(path, false)?.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_out_of_memory_is_found_in_what_the_process_wrote_last() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).expect("logs");
        let [stderr, log] = worker_logs(dir.path(), WorkerKind::Llm);
        // An earlier process ran out of memory; this one wrote something else.
        std::fs::write(&stderr, "CUDA error: out of memory\n").expect("write");
        let starts = [file_len(&stderr), file_len(&log)];
        std::fs::write(
            &stderr,
            "CUDA error: out of memory\nggml.c:123: fatal error\n",
        )
        .expect("write");
        assert_eq!(out_of_memory_line(dir.path(), &starts), None);
        std::fs::write(
            &log,
            "INFO llama: load\nERROR ggml_backend_cuda_buffer_type_alloc_buffer: allocating \
             512.00 MiB on device 0: cudaMalloc failed: out of memory\n",
        )
        .expect("write");
        let line = out_of_memory_line(dir.path(), &starts).expect("found");
        assert!(line.contains("cudaMalloc failed"), "{line}");
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
