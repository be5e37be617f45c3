//! The process seam: the loop decides, a [`Launcher`] starts worker processes and kills them
//! when asked. [`ProcessLauncher`] is the real one (the `mate` executable re-run with a hidden
//! subcommand, on tokio); the loop's unit tests put a fake in its place and deliver exits as
//! events themselves, so every decision can be tested without a process (zellij's
//! `ServerOsApi` does the same for its server).

use super::*;

/// What to start.
#[derive(Debug)]
pub struct Launch<'a> {
    pub kind: WorkerKind,
    pub generation: u64,
    /// The one-time token the process says hello with.
    pub token: &'a AuthToken,
    /// Hide the GPU from the process (an LLM rung that offloads nothing).
    pub hide_gpu: bool,
}

/// A started process.
#[derive(Debug)]
pub struct Launched {
    pub pid: Option<u32>,
    /// Sending (or dropping) it kills the process. However it ends, its exit must arrive as
    /// one [`Event::WorkerExited`] with the launch's kind and generation.
    pub kill: oneshot::Sender<()>,
}

/// Starts worker processes for the loop.
pub trait Launcher: Send + std::fmt::Debug {
    fn launch(&mut self, launch: Launch<'_>) -> anyhow::Result<Launched>;
}

/// The real launcher: `mate worker KIND --endpoint …` as a child process, its stderr appended
/// to the worker's log, and a waiter task that turns its exit into an event.
#[derive(Debug)]
pub struct ProcessLauncher {
    pub exe: PathBuf,
    pub endpoint: PathBuf,
    pub state_dir: PathBuf,
    /// `MATE_LOG` for the workers.
    pub log: String,
    pub events: mpsc::Sender<Event>,
}

impl Launcher for ProcessLauncher {
    fn launch(&mut self, launch: Launch<'_>) -> anyhow::Result<Launched> {
        let Launch {
            kind,
            generation,
            token,
            hide_gpu,
        } = launch;
        let logs = self.state_dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let stderr =
            crate::statedir::open_private(&logs.join(format!("worker-{kind}.stderr.log")), true)?;
        // Spawned from this task's thread, a runtime worker thread that lives as long as the
        // supervisor: the children's parent-death signal fires when the spawning thread exits.
        let mut command = std::process::Command::new(&self.exe);
        // Only the supervisor hears Ctrl-C; it stops the workers with their grace period.
        crate::platform::away_from_terminal(&mut command);
        if hide_gpu {
            // A GPU build of llama.cpp still sets up CUDA (a context and compute buffers on
            // the card) with no layers offloaded; a rung that offloads nothing hides the GPU.
            command.env("CUDA_VISIBLE_DEVICES", "");
        }
        let mut command = tokio::process::Command::from(command);
        let mut child = command
            .arg("worker")
            .arg(kind.as_str())
            .arg("--endpoint")
            .arg(&self.endpoint)
            .env(TOKEN_ENV, token.to_hex())
            .env("MATE_STATE_DIR", &self.state_dir)
            .env("MATE_LOG", &self.log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("running {}", self.exe.display()))?;
        let pid = child.id();
        let (kill, killed) = oneshot::channel::<()>();
        let events = self.events.clone();
        tokio::spawn(async move {
            let (status, by_us) = tokio::select! {
                status = child.wait() => (status, false),
                _ = killed => {
                    let _ = child.start_kill();
                    (child.wait().await, true)
                }
            };
            let status = match status {
                // Windows has no signal to tell a kill by: a process ended with
                // TerminateProcess just has an exit code (1 from tokio).
                Ok(_) if by_us && cfg!(windows) => ExitStatus::Terminated,
                Ok(status) => crate::platform::exit_status(status),
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
        Ok(Launched { pid, kill })
    }
}
