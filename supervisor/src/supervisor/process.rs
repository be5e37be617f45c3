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

/// How far a process got in starting; each step implies the ones before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Reached {
    Spawned,
    /// It said `Ready`: the bridge serves; the LLM loads its model.
    Ready,
    /// LLM: the model is loaded; it serves.
    Loaded,
}

/// Where a process is on its way out, each stage with its own data, so a kill deadline
/// without an intent, or a kill with a deadline still pending, cannot be written.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Stage {
    /// Nothing asked of it: starting or serving (see [`Reached`]).
    Running,
    /// Asked to exit; SIGKILL at `kill_at` if it has not.
    Stopping { intent: Intent, kill_at: Instant },
    /// SIGKILL sent (the grace period ended, it hung, or it could not be asked): only its
    /// exit is still to come. `Intent::None` when it was killed for hanging.
    Killed { intent: Intent },
}

/// A live worker process.
#[derive(Debug)]
pub(super) struct Process {
    pub(super) generation: u64,
    pub(super) pid: Option<u32>,
    pub(super) spawned_at: Instant,
    pub(super) kill: Option<oneshot::Sender<()>>,
    pub(super) tx: Option<mpsc::Sender<ToWorker>>,
    pub(super) reached: Reached,
    pub(super) stage: Stage,
    pub(super) last_answer: Instant,
    pub(super) next_seq: u64,
    /// Heartbeats sent since the worker last said anything.
    pub(super) unanswered: u32,
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

    /// Sends SIGKILL (through the launcher); what its exit means stays as it was.
    pub(super) fn kill(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        let intent = match std::mem::replace(&mut self.stage, Stage::Running) {
            Stage::Running => Intent::None,
            Stage::Stopping { intent, .. } | Stage::Killed { intent } => intent,
        };
        self.stage = Stage::Killed { intent };
    }

    /// What its exit will mean.
    pub(super) fn intent(&self) -> &Intent {
        match &self.stage {
            Stage::Running => &Intent::None,
            Stage::Stopping { intent, .. } | Stage::Killed { intent } => intent,
        }
    }

    pub(super) fn ready(&self) -> bool {
        self.reached >= Reached::Ready
    }

    /// The LLM serves on it: loaded, and not on its way out.
    pub(super) fn serving_model(&self) -> bool {
        self.reached == Reached::Loaded && self.stage == Stage::Running
    }
}

#[derive(Debug)]
pub(super) struct Worker {
    pub(super) kind: WorkerKind,
    /// It failed and stays failed until started again (its state is otherwise derived from
    /// its process, or the restart it waits for: see [`Worker::state`]).
    pub(super) failed: bool,
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
            failed: false,
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

    /// The state users see, derived from the process's lifecycle: running once it serves
    /// (the bridge on hello, the LLM once its model is loaded), stopping once asked to exit
    /// (a process killed for hanging keeps the state it had), backoff while a restart waits.
    pub(super) fn state(&self) -> WorkerState {
        if self.failed {
            return WorkerState::Failed;
        }
        let serves = match self.kind {
            WorkerKind::Llm => Reached::Loaded,
            WorkerKind::Bridge | WorkerKind::Api => Reached::Ready,
        };
        match &self.process {
            None if self.restart_at.is_some() => WorkerState::Backoff,
            None => WorkerState::Stopped,
            Some(p) => match p.stage {
                Stage::Stopping { .. } => WorkerState::Stopping,
                Stage::Killed { ref intent } if *intent != Intent::None => WorkerState::Stopping,
                _ if p.reached >= serves => WorkerState::Running,
                _ => WorkerState::Starting,
            },
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
            state: self.state(),
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
