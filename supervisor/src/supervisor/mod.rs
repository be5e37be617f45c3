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
    GenerationStats, GpuReport, Level, Reply, Request, Rung, StatusReport, StopReason, ToWorker,
    VramReading, WorkerKind, WorkerReport, WorkerState, WorkerVitals, EXIT_LOAD_FAILED,
};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tracing::{debug, info, warn};

use crate::{
    config::Settings,
    cues::CueFilter,
    gpu::ladder::{self, unknown_profile},
    gpu::pressure::{Pressure, Verdict},
    gpu::{self, GpuError, LlmFootprint},
    metrics::Metrics,
    policy::{Decision, Restarts},
    server::{self, Auth},
    store::journal::{now_ms, Journal},
    store::session::{self, Transcript},
};

use mate_protocol::client::control_token_path;

mod api;
mod launcher;
mod narrate;
mod process;
mod profile;
mod requests;
mod state_files;
#[cfg(test)]
mod tests;
mod timers;
mod turn;
mod workers;

pub use crate::event::Event;
pub use launcher::{Launch, Launched, Launcher, ProcessLauncher};
pub use narrate::gib;
use narrate::*;
use process::*;
use state_files::{remove_interrupted_writes, write_private};
pub use state_files::{AlreadyRunning, StateLock};
use turn::{ActiveTurn, QueuedTurn};
/// File in `<state>/run/` locked by the supervisor that owns the state dir.
pub const LOCK_FILE: &str = "mate.lock";

/// How long the thread count the CPU rule chose for one LLM load is reused by the next.
const THREADS_REUSE: Duration = Duration::from_secs(120);

/// What `mate up` needs beyond the settings.
#[derive(Debug, Clone)]
pub struct Options {
    pub settings: Settings,
    pub model: PathBuf,
    /// The executable workers are started from (normally this one).
    pub exe: PathBuf,
}

/// Runs the supervisor until a signal or `mate ctl shutdown`.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let state_dir = opts.settings.state_dir.clone();
    // Before anything is created in the state dir: a broken scenario file leaves nothing behind.
    let (probe, gpu) = gpu::first_look(&opts.settings.gpu.choice)?;
    let lock = StateLock::acquire(&state_dir)?;
    // No worker runs on this state dir now: half-written snapshots of earlier ones can go.
    remove_interrupted_writes(&state_dir);
    crate::platform::contain_workers();
    let endpoint = Endpoint::for_state_dir(&state_dir);
    let listener = endpoint.listen_tokio()?;
    let auth = Arc::new(Auth::new(AuthToken::generate()?));
    let token_path = control_token_path(&state_dir);
    write_private(&token_path, &auth.control().to_hex())
        .with_context(|| format!("writing {}", token_path.display()))?;
    info!(endpoint = %endpoint.path().display(), "listening");

    let (events, mut inbox) = mpsc::channel::<Event>(1024);
    let launcher = ProcessLauncher {
        exe: opts.exe.clone(),
        endpoint: endpoint.path().to_path_buf(),
        state_dir: state_dir.clone(),
        log: opts.settings.log.clone(),
        events: events.clone(),
    };
    let mut sup = Supervisor::new(opts, Box::new(launcher), auth.clone(), gpu, Instant::now())?;
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
    sup.start(Instant::now());
    while !sup.finished() {
        let deadline = sup.next_deadline();
        tokio::select! {
            event = inbox.recv() => match event {
                Some(event) => sup.handle(event, Instant::now()),
                None => break,
            },
            () = tokio::time::sleep_until(deadline) => sup.tick(Instant::now()),
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
    /// Starts and kills worker processes (a fake one in the loop's unit tests).
    launcher: Box<dyn Launcher>,
    auth: Arc<Auth>,
    /// The time of the event or tick being handled: handlers read the clock only here, so
    /// tests can drive time.
    now: Instant,
    journal: Journal,
    transcript: Transcript,
    /// Indexed by `WorkerKind as usize`, in `WorkerKind::ALL` order.
    workers: [Worker; 3],
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
    /// Chats waiting for `turn` to end, first come first served.
    queue: std::collections::VecDeque<QueuedTurn>,
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
    /// What `/metrics` reports beyond the status.
    metrics: Metrics,
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
        launcher: Box<dyn Launcher>,
        auth: Arc<Auth>,
        gpu: gpu::FirstLook,
        now: Instant,
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
            launcher,
            auth,
            now,
            journal,
            transcript,
            profile,
            turn: None,
            queue: Default::default(),
            next_request: 1,
            started: now,
            stopping: false,
            threads_chosen: None,
            avatar,
            avatar_behind: false,
            metrics: Metrics::default(),
        })
    }

    fn start(&mut self, now: Instant) {
        self.now = now;
        for kind in WorkerKind::ALL {
            if kind == WorkerKind::Api && !self.opts.settings.api.enabled {
                continue;
            }
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

    fn handle(&mut self, event: Event, now: Instant) {
        self.now = now;
        match event {
            Event::WorkerConnected {
                kind,
                generation,
                tx,
            } => {
                if let Some(p) = self.process(kind, generation) {
                    p.tx = Some(tx);
                    p.last_answer = now;
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
    #[cfg(windows)]
    {
        use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close, ctrl_shutdown};
        let (Ok(mut c), Ok(mut brk), Ok(mut close), Ok(mut shutdown)) =
            (ctrl_c(), ctrl_break(), ctrl_close(), ctrl_shutdown())
        else {
            tracing::warn!("cannot install console control handlers");
            return;
        };
        loop {
            // Windows gives a closing console about 5 s: the workers' grace is cut short then,
            // and the Job Object ends whatever is left.
            let why = tokio::select! {
                _ = c.recv() => "Ctrl-C",
                _ = brk.recv() => "Ctrl-Break",
                _ = close.recv() => "the console closing",
                _ = shutdown.recv() => "Windows shutting down",
            };
            if events.send(Event::Stop(why)).await.is_err() {
                return;
            }
        }
    }
}
