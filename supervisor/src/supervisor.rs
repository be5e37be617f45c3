//! The supervisor's event loop.
//!
//! Theory of operation: one task owns all state and runs a loop over [`Event`]. Everything
//! else — the accept loop, one reader task per connection, one waiter task per child process,
//! the signal handlers — only turns what happens into events. Nothing a peer does can reach
//! the state except through this loop, and a peer that misbehaves loses its connection, never
//! the supervisor.
//!
//! This is the foundation slice: workers are spawned from the same executable with a one-time
//! token, say hello, and are shut down with a grace period; clients get status and can ask for
//! shutdown. Restart policy, heartbeats and sessions arrive with issue 4.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use interprocess::local_socket::tokio::{prelude::*, Stream};
use mate_protocol::{
    async_io,
    handshake::{HELLO_DEADLINE, TOKEN_ENV},
    AuthToken, Endpoint, ExitStatus, FromWorker, Hello, Limit, Profile, Rejection, Reply, Request,
    Role, StatusReport, ToWorker, WorkerKind, WorkerReport, WorkerState, WorkerVitals,
};
use tokio::{
    io::BufReader,
    sync::{mpsc, oneshot},
};
use tracing::{debug, info, warn};

use crate::config::Settings;

/// How long workers get to exit after a shutdown message before they are killed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// File in `<state>/run/` holding the token clients present.
pub const CONTROL_TOKEN_FILE: &str = "control.token";

pub fn control_token_path(state_dir: &Path) -> PathBuf {
    state_dir.join("run").join(CONTROL_TOKEN_FILE)
}

/// Everything that can happen to the supervisor.
#[derive(Debug)]
enum Event {
    WorkerConnected(WorkerKind, mpsc::Sender<ToWorker>),
    FromWorker(WorkerKind, FromWorker),
    WorkerExited(WorkerKind, ExitStatus),
    Request(Request, mpsc::Sender<Reply>),
    Stop(&'static str),
}

/// Who may say hello, with which token. Worker tokens are single-use.
#[derive(Debug)]
struct Auth {
    control: AuthToken,
    workers: Mutex<HashMap<WorkerKind, AuthToken>>,
}

impl Auth {
    fn verify(&self, hello: &Hello) -> Result<(), Rejection> {
        let kind = match hello.role {
            Role::Ctl | Role::Tui if hello.token.matches(&self.control) => return Ok(()),
            Role::Ctl | Role::Tui => return Err(Rejection::BadToken),
            Role::LlmWorker => WorkerKind::Llm,
            Role::BridgeWorker => WorkerKind::Bridge,
            role @ Role::Supervisor => return Err(Rejection::WrongRole { role }),
        };
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        match workers.get(&kind) {
            Some(expected) if expected.matches(&hello.token) => {
                workers.remove(&kind);
                Ok(())
            }
            _ => Err(Rejection::BadToken),
        }
    }

    fn expect_worker(&self, kind: WorkerKind, token: AuthToken) {
        self.workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(kind, token);
    }
}

#[derive(Debug)]
struct Worker {
    kind: WorkerKind,
    state: WorkerState,
    pid: Option<u32>,
    started: Instant,
    last_exit: Option<ExitStatus>,
    last_error: Option<String>,
    tx: Option<mpsc::Sender<ToWorker>>,
    kill: Option<oneshot::Sender<()>>,
}

impl Worker {
    fn report(&self, profile: &str) -> WorkerReport {
        let alive = matches!(self.state, WorkerState::Starting | WorkerState::Running);
        WorkerReport {
            kind: self.kind,
            state: self.state,
            pid: self.pid.filter(|_| alive),
            uptime_ms: if alive {
                self.started.elapsed().as_millis() as u64
            } else {
                0
            },
            restarts: 0,
            profile: (self.kind == WorkerKind::Llm).then(|| profile.to_string()),
            last_exit: self.last_exit,
            last_error: self.last_error.clone(),
            vitals: WorkerVitals::default(),
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

/// Runs the supervisor until a signal or `mate ctl shutdown`.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let state_dir = &opts.settings.state_dir;
    let endpoint = Endpoint::for_state_dir(state_dir);
    let listener = endpoint.listen_tokio()?;
    let auth = Arc::new(Auth {
        control: AuthToken::generate()?,
        workers: Mutex::new(HashMap::new()),
    });
    let token_path = control_token_path(state_dir);
    write_private(&token_path, &auth.control.to_hex())
        .with_context(|| format!("writing {}", token_path.display()))?;
    info!(endpoint = %endpoint.path().display(), "listening");

    let (events, mut inbox) = mpsc::channel::<Event>(256);
    tokio::spawn(accept_loop(listener, auth.clone(), events.clone()));
    tokio::spawn(forward_signals(events.clone()));

    let started = Instant::now();
    let mut workers = HashMap::new();
    for kind in WorkerKind::ALL {
        let worker = spawn_worker(kind, &opts, &endpoint, &auth, events.clone())?;
        workers.insert(kind, worker);
    }

    let mut stopping: Option<Instant> = None;
    loop {
        let timeout = stopping.map_or(Duration::from_secs(3600), |since| {
            SHUTDOWN_GRACE.saturating_sub(since.elapsed())
        });
        let event = match tokio::time::timeout(timeout, inbox.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => break,
            Err(_) if stopping.is_some() => {
                for w in workers.values_mut().filter(|w| w.kill.is_some()) {
                    warn!(worker = %w.kind, "did not exit within the grace period; killing");
                    if let Some(kill) = w.kill.take() {
                        let _ = kill.send(());
                    }
                }
                stopping = Some(Instant::now());
                continue;
            }
            Err(_) => continue,
        };
        match event {
            Event::WorkerConnected(kind, tx) => {
                if let Some(w) = workers.get_mut(&kind) {
                    w.tx = Some(tx);
                }
            }
            Event::FromWorker(kind, msg) => {
                on_worker_message(&mut workers, kind, msg, &opts).await;
            }
            Event::WorkerExited(kind, status) => {
                if let Some(w) = workers.get_mut(&kind) {
                    info!(worker = %kind, ?status, "exited");
                    w.state = if stopping.is_some() {
                        WorkerState::Stopped
                    } else {
                        WorkerState::Failed
                    };
                    w.last_exit = Some(status);
                    w.kill = None;
                    w.tx = None;
                }
                if stopping.is_some() && workers.values().all(|w| w.kill.is_none()) {
                    break;
                }
            }
            Event::Request(request, reply) => {
                let answer = match request {
                    Request::Status => Reply::Status(StatusReport {
                        supervisor_pid: std::process::id(),
                        uptime_ms: started.elapsed().as_millis() as u64,
                        workers: WorkerKind::ALL
                            .iter()
                            .filter_map(|k| workers.get(k))
                            .map(|w| w.report(&opts.settings.profile))
                            .collect(),
                        turns: 0,
                        tokens: 0,
                    }),
                    Request::Shutdown => {
                        let _ = events.send(Event::Stop("ctl shutdown")).await;
                        Reply::Ok
                    }
                    other => Reply::Error {
                        message: format!(
                            "{other:?} is not supported by this supervisor yet (issue 4)"
                        ),
                    },
                };
                let _ = reply.send(answer).await;
            }
            Event::Stop(why) => {
                if stopping.is_none() {
                    info!(reason = why, "shutting down");
                    stopping = Some(Instant::now());
                    for w in workers.values_mut() {
                        w.state = WorkerState::Stopping;
                        if let Some(tx) = &w.tx {
                            let _ = tx
                                .send(ToWorker::Shutdown {
                                    grace_ms: SHUTDOWN_GRACE.as_millis() as u32,
                                })
                                .await;
                        }
                    }
                    if workers.values().all(|w| w.kill.is_none()) {
                        break;
                    }
                }
            }
        }
    }
    let _ = std::fs::remove_file(&token_path);
    info!("stopped");
    Ok(())
}

async fn on_worker_message(
    workers: &mut HashMap<WorkerKind, Worker>,
    kind: WorkerKind,
    msg: FromWorker,
    opts: &Options,
) {
    let Some(w) = workers.get_mut(&kind) else {
        return;
    };
    match msg {
        FromWorker::Ready => {
            info!(worker = %kind, pid = ?w.pid, "ready");
            if w.state == WorkerState::Starting {
                w.state = WorkerState::Running;
            }
            if kind == WorkerKind::Llm {
                if let Some(tx) = &w.tx {
                    let mut profile = profile_named(&opts.settings.profile);
                    profile.n_threads = opts.settings.threads;
                    let load = ToWorker::Load {
                        model_path: opts.model.to_string_lossy().into_owned(),
                        profile,
                        options: opts.settings.llm.clone(),
                    };
                    let _ = tx.send(load).await;
                }
            }
        }
        FromWorker::Fatal { reason } => {
            warn!(worker = %kind, %reason, "fatal start-up error");
            w.last_error = Some(reason);
        }
        FromWorker::Notice { level, message } => {
            info!(worker = %kind, ?level, %message, "notice");
        }
        FromWorker::BridgeStatus(status) => {
            w.last_error = status.last_error;
        }
        FromWorker::Loaded(report) => {
            info!(worker = %kind, ?report, "model loaded");
        }
        FromWorker::ContextTrimmed {
            dropped_messages,
            prompt_tokens,
            n_ctx,
            ..
        } => {
            info!(
                worker = %kind,
                dropped_messages, prompt_tokens, n_ctx,
                "conversation outgrew the context: oldest turns left out of the prompt"
            );
        }
        other => debug!(worker = %kind, ?other, "message"),
    }
}

/// Until the profile ladder exists (issue 5), every profile name loads CPU-only.
fn profile_named(name: &str) -> Profile {
    Profile {
        name: name.into(),
        ..Profile::cpu(4096)
    }
}

fn spawn_worker(
    kind: WorkerKind,
    opts: &Options,
    endpoint: &Endpoint,
    auth: &Auth,
    events: mpsc::Sender<Event>,
) -> anyhow::Result<Worker> {
    let token = AuthToken::generate()?;
    let logs = opts.settings.state_dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join(format!("worker-{kind}.stderr.log")))?;
    auth.expect_worker(kind, token.clone());
    let mut child = tokio::process::Command::new(&opts.exe)
        .arg("worker")
        .arg(kind.as_str())
        .arg("--endpoint")
        .arg(endpoint.path())
        .env(TOKEN_ENV, token.to_hex())
        .env("MATE_STATE_DIR", &opts.settings.state_dir)
        .env("MATE_LOG", &opts.settings.log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting the {kind} worker from {}", opts.exe.display()))?;
    let pid = child.id();
    info!(worker = %kind, ?pid, "spawned");
    let (kill, killed) = oneshot::channel::<()>();
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
        let _ = events.send(Event::WorkerExited(kind, status)).await;
    });
    Ok(Worker {
        kind,
        state: WorkerState::Starting,
        pid,
        started: Instant::now(),
        last_exit: None,
        last_error: None,
        tx: None,
        kill: Some(kill),
    })
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

async fn accept_loop(
    listener: interprocess::local_socket::tokio::Listener,
    auth: Arc<Auth>,
    events: mpsc::Sender<Event>,
) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                tokio::spawn(serve_connection(stream, auth.clone(), events.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off rather than spin.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_connection(stream: Stream, auth: Arc<Auth>, events: mpsc::Sender<Event>) {
    let stream = Arc::new(stream);
    let hello =
        match async_io::server_handshake(&mut &*stream, HELLO_DEADLINE, |h| auth.verify(h)).await {
            Ok(hello) => hello,
            Err(e) => {
                debug!(error = %e, "handshake failed");
                return;
            }
        };
    debug!(role = %hello.role, pid = hello.pid, "connected");
    let result = match hello.role {
        Role::LlmWorker => serve_worker(WorkerKind::Llm, stream, events).await,
        Role::BridgeWorker => serve_worker(WorkerKind::Bridge, stream, events).await,
        _ => serve_client(stream, events).await,
    };
    if let Err(e) = result {
        if !e.is_disconnect() {
            warn!(role = %hello.role, pid = hello.pid, error = %e, "dropping connection");
        }
    }
}

async fn serve_worker(
    kind: WorkerKind,
    stream: Arc<Stream>,
    events: mpsc::Sender<Event>,
) -> Result<(), mate_protocol::Error> {
    let (tx, mut rx) = mpsc::channel::<ToWorker>(64);
    let writer = stream.clone();
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if async_io::write_frame(&mut &*writer, &msg, Limit::Data)
                .await
                .is_err()
            {
                break;
            }
        }
    });
    if events.send(Event::WorkerConnected(kind, tx)).await.is_err() {
        return Ok(());
    }
    let mut reader = BufReader::new(&*stream);
    loop {
        let msg: FromWorker = async_io::read_frame(&mut reader, Limit::Data).await?;
        if events.send(Event::FromWorker(kind, msg)).await.is_err() {
            return Ok(());
        }
    }
}

async fn serve_client(
    stream: Arc<Stream>,
    events: mpsc::Sender<Event>,
) -> Result<(), mate_protocol::Error> {
    let mut reader = BufReader::new(&*stream);
    loop {
        let request: Request = async_io::read_frame(&mut reader, Limit::Control).await?;
        let (tx, mut rx) = mpsc::channel(64);
        if events.send(Event::Request(request, tx)).await.is_err() {
            return Ok(());
        }
        while let Some(reply) = rx.recv().await {
            async_io::write_frame(&mut &*stream, &reply, Limit::Data).await?;
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
            warn!("cannot install signal handlers");
            return;
        };
        let why = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        let _ = events.send(Event::Stop(why)).await;
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = events.send(Event::Stop("Ctrl-C")).await;
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

    fn auth() -> (Auth, AuthToken) {
        let control = AuthToken::generate().expect("token");
        let auth = Auth {
            control: control.clone(),
            workers: Mutex::new(HashMap::new()),
        };
        (auth, control)
    }

    #[test]
    fn clients_need_the_control_token() {
        let (auth, control) = auth();
        assert_eq!(auth.verify(&Hello::new(Role::Ctl, control.clone())), Ok(()));
        assert_eq!(auth.verify(&Hello::new(Role::Tui, control)), Ok(()));
        let other = AuthToken::generate().expect("token");
        assert_eq!(
            auth.verify(&Hello::new(Role::Ctl, other)),
            Err(Rejection::BadToken)
        );
    }

    #[test]
    fn worker_tokens_are_single_use_and_per_kind() {
        let (auth, control) = auth();
        let token = AuthToken::generate().expect("token");
        auth.expect_worker(WorkerKind::Llm, token.clone());
        // Not valid for the other worker kind, nor is the control token valid for a worker.
        assert_eq!(
            auth.verify(&Hello::new(Role::BridgeWorker, token.clone())),
            Err(Rejection::BadToken)
        );
        assert_eq!(
            auth.verify(&Hello::new(Role::LlmWorker, control)),
            Err(Rejection::BadToken)
        );
        assert_eq!(
            auth.verify(&Hello::new(Role::LlmWorker, token.clone())),
            Ok(())
        );
        assert_eq!(
            auth.verify(&Hello::new(Role::LlmWorker, token)),
            Err(Rejection::BadToken),
            "a replayed worker token is refused"
        );
    }

    #[test]
    fn nobody_may_pose_as_a_supervisor() {
        let (auth, control) = auth();
        assert_eq!(
            auth.verify(&Hello::new(Role::Supervisor, control)),
            Err(Rejection::WrongRole {
                role: Role::Supervisor
            })
        );
    }
}
