//! A worker's processes as the loop sees them: the live process and what its exit will mean,
//! and the worker across its processes (state, restarts, history, waiting clients).

use super::*;

/// What the exit of the current process means.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Intent {
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
pub(super) struct Process {
    pub(super) generation: u64,
    pub(super) pid: Option<u32>,
    pub(super) spawned_at: Instant,
    pub(super) kill: Option<oneshot::Sender<()>>,
    pub(super) tx: Option<mpsc::Sender<ToWorker>>,
    pub(super) ready: bool,
    /// LLM: the model is loaded.
    pub(super) loaded: bool,
    pub(super) intent: Intent,
    pub(super) last_answer: Instant,
    pub(super) next_seq: u64,
    /// Heartbeats sent since the worker last said anything.
    pub(super) unanswered: u32,
    /// SIGKILL at this instant (end of a grace period).
    pub(super) kill_at: Option<Instant>,
    /// SIGKILL was sent: only its exit is still to come.
    pub(super) killed: bool,
    /// LLM: the profile it loaded.
    pub(super) profile: Option<String>,
    /// Where this process's output starts in the worker's log files (stderr, tracing), so an
    /// exit can be explained from what it wrote last.
    pub(super) log_starts: [u64; 2],
}

impl Process {
    pub(super) fn send(&self, msg: ToWorker) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.try_send(msg).is_ok())
    }

    pub(super) fn kill(&mut self) {
        self.killed = true;
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
    }
}

#[derive(Debug)]
pub(super) struct Worker {
    pub(super) kind: WorkerKind,
    pub(super) state: WorkerState,
    pub(super) process: Option<Process>,
    pub(super) generation: u64,
    /// Processes started after the first.
    pub(super) restarts: u32,
    pub(super) last_exit: Option<ExitStatus>,
    pub(super) last_error: Option<String>,
    pub(super) history: Restarts,
    pub(super) restart_at: Option<Instant>,
    pub(super) vitals: WorkerVitals,
    /// `ctl stop` and `ctl start` clients answered when the current process has exited.
    pub(super) waiters: Vec<(Awaited, mpsc::Sender<Reply>)>,
}

/// What a client waits for when its command has to wait for a process to exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Awaited {
    Stopped,
    Started,
}

impl Worker {
    pub(super) fn new(kind: WorkerKind) -> Worker {
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
    pub(super) fn started(&mut self) {
        if self.state == WorkerState::Starting {
            self.state = WorkerState::Running;
        }
    }

    pub(super) fn report(&self, profile: &str, now: Instant) -> WorkerReport {
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
                .map_or(0, |p| (now - p.spawned_at).as_millis() as u64),
            restarts: self.restarts,
            profile: (self.kind == WorkerKind::Llm).then(|| profile.to_string()),
            last_exit: self.last_exit,
            last_error: self.last_error.clone(),
            vitals: self.vitals.clone(),
        }
    }
}
