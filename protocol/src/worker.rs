//! The worker end of a supervisor connection, shared by every worker kind.
//!
//! A worker is started by the supervisor as `mate worker <kind> --endpoint PATH` with its
//! one-time token in [`TOKEN_ENV`]. It connects, says hello, reports [`FromWorker::Ready`],
//! then answers messages. Heartbeats, shutdown and fault injection mean the same to every
//! worker and are handled here; everything else goes to the worker's own code.
//!
//! A worker never outlives its supervisor: on Linux, [`die_with_parent`] asks the kernel to
//! kill it when the supervisor goes, even by `kill -9`, so a crashed supervisor leaves no
//! orphan holding the GPU.

use std::{
    io::{BufReader, Read},
    sync::{Arc, Mutex},
};

use interprocess::local_socket::Stream;

use crate::{
    frame::{read_frame, write_frame, Limit},
    handshake::TOKEN_ENV,
    AuthToken, Endpoint, Error, Fault, FromWorker, Hello, Role, ToWorker, WorkerKind, WorkerVitals,
};

/// Environment variable naming the worker kinds that crash during start-up, before they
/// connect: `llm`, `bridge`, or a comma-separated list such as `llm,bridge`.
///
/// A fault-injection hook for tests and demos (restart backoff, crash loops, escalation).
/// Workers inherit it from the supervisor's environment, so `MATE_FAULT_AT_START=llm mate up`
/// shows what a worker that never comes up looks like.
pub const FAULT_AT_START_ENV: &str = "MATE_FAULT_AT_START";

/// A worker's connection to its supervisor, split in two so that one thread can wait for
/// messages (and answer heartbeats) while another streams results through a [`LinkSender`].
#[derive(Debug)]
pub struct WorkerLink {
    rx: BufReader<Reading>,
    tx: LinkSender,
    supervisor_pid: u32,
}

/// The sending half of a [`WorkerLink`]; clones share one connection, and each frame is
/// written whole under a lock, so frames from several threads never interleave.
#[derive(Debug, Clone)]
pub struct LinkSender {
    // `&Stream` reads and writes, so sharing the stream is all the splitting it needs; the
    // mutex keeps each frame's bytes together.
    stream: Arc<Stream>,
    lock: Arc<Mutex<()>>,
}

/// The reading side: a shared stream that is only ever read here.
#[derive(Debug)]
struct Reading(Arc<Stream>);

impl Read for Reading {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl LinkSender {
    pub fn send(&self, msg: &FromWorker) -> Result<(), Error> {
        // A poisoned lock means another sender panicked between frames; the stream itself is
        // still whole, since frames are written with one `write_all`.
        let _frame = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        write_frame(&mut &*self.stream, msg, Limit::Data)
    }
}

/// What the worker's own code must deal with after [`WorkerLink::recv`].
// One message at a time, moved once: boxing would only add an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Next {
    /// A message only this worker kind understands.
    Message(ToWorker),
    /// The supervisor asked for a clean exit within `grace_ms`.
    Shutdown { grace_ms: u32 },
}

impl WorkerLink {
    /// Connects with the token from the environment and introduces itself as `role`.
    ///
    /// First it arranges to die with its parent ([`die_with_parent`]) and carries out a
    /// start-up fault asked for in [`FAULT_AT_START_ENV`].
    pub fn connect_from_env(endpoint: &Endpoint, role: Role) -> Result<Self, Error> {
        die_with_parent();
        if crash_at_start(role, std::env::var(FAULT_AT_START_ENV).ok().as_deref()) {
            inject(Fault::Crash);
        }
        let token = std::env::var(TOKEN_ENV).map_err(|_| {
            Error::BadToken(format!(
                "{TOKEN_ENV} is not set: workers are started by `mate up`, not by hand"
            ))
        })?;
        let token = AuthToken::from_hex(&token)?;
        let (stream, supervisor_pid) = endpoint.connect(&Hello::new(role, token))?;
        let stream = Arc::new(stream);
        Ok(WorkerLink {
            rx: BufReader::with_capacity(8 * 1024, Reading(Arc::clone(&stream))),
            tx: LinkSender {
                stream,
                lock: Arc::new(Mutex::new(())),
            },
            supervisor_pid,
        })
    }

    pub fn supervisor_pid(&self) -> u32 {
        self.supervisor_pid
    }

    /// A handle for sending from another thread.
    pub fn sender(&self) -> LinkSender {
        self.tx.clone()
    }

    pub fn send(&self, msg: &FromWorker) -> Result<(), Error> {
        self.tx.send(msg)
    }

    /// Waits for the next message, answering heartbeats with `vitals()` and carrying out
    /// injected faults on the way.
    pub fn recv(&mut self, vitals: &mut dyn FnMut() -> WorkerVitals) -> Result<Next, Error> {
        loop {
            match read_frame(&mut self.rx, Limit::Data)? {
                ToWorker::Heartbeat { seq } => self.send(&FromWorker::Heartbeat {
                    seq,
                    vitals: vitals(),
                })?,
                ToWorker::Inject(fault) => inject(fault),
                ToWorker::Shutdown { grace_ms } => return Ok(Next::Shutdown { grace_ms }),
                other => return Ok(Next::Message(other)),
            }
        }
    }
}

/// Measures this process's RSS and CPU for heartbeat replies.
#[cfg(feature = "meter")]
#[derive(Debug)]
pub struct SelfMeter {
    sys: sysinfo::System,
    pid: sysinfo::Pid,
}

#[cfg(feature = "meter")]
impl Default for SelfMeter {
    fn default() -> Self {
        SelfMeter {
            sys: sysinfo::System::new(),
            pid: sysinfo::Pid::from_u32(std::process::id()),
        }
    }
}

#[cfg(feature = "meter")]
impl SelfMeter {
    /// RSS and CPU% (of one core, since the last call); the worker-specific parts are empty.
    pub fn vitals(&mut self) -> WorkerVitals {
        use sysinfo::{ProcessRefreshKind, ProcessesToUpdate};
        self.sys.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[self.pid]),
            true,
            ProcessRefreshKind::nothing().with_memory().with_cpu(),
        );
        let (rss_bytes, cpu_percent) = self
            .sys
            .process(self.pid)
            .map_or((0, 0.0), |p| (p.memory(), p.cpu_usage()));
        WorkerVitals {
            rss_bytes,
            cpu_percent,
            ..WorkerVitals::default()
        }
    }
}

/// Makes the kernel send this process `SIGKILL` when its parent goes (Linux
/// `PR_SET_PDEATHSIG`); a no-op elsewhere. If the parent is already gone by the time the
/// request is in place, the process exits at once (code 1, with a line on stderr).
///
/// The signal fires when the *thread* that spawned this process exits, not only when the
/// whole parent process does: the supervisor must spawn workers from threads that live as long
/// as it does (not from a short-lived or pooled blocking thread), or its workers die with that
/// thread.
pub fn die_with_parent() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getppid, set_parent_process_death_signal, Signal};
        // The parent may die between our start and the prctl, in which case no signal will
        // ever come: compare the parent before and after to close that window.
        let parent = getppid();
        if let Err(e) = set_parent_process_death_signal(Some(Signal::KILL)) {
            eprintln!("mate worker: cannot ask to die with the supervisor: {e}");
            return;
        }
        if getppid() != parent {
            eprintln!("mate worker: the supervisor that started this worker is gone; exiting");
            std::process::exit(1);
        }
    }
}

/// Whether `fault_at_start` (the value of [`FAULT_AT_START_ENV`]) names `role`'s kind.
fn crash_at_start(role: Role, fault_at_start: Option<&str>) -> bool {
    let kind = match role {
        Role::LlmWorker => WorkerKind::Llm,
        Role::BridgeWorker => WorkerKind::Bridge,
        Role::ApiWorker => WorkerKind::Api,
        _ => return false,
    };
    fault_at_start.is_some_and(|list| list.split(',').any(|k| k.trim() == kind.as_str()))
}

/// Carries out an injected fault: `Crash` aborts like a real crash (no unwinding, no goodbye),
/// `Hang` stops answering anything while staying alive, `OutOfMemory` prints what llama.cpp's
/// CUDA backend prints when an allocation fails, then aborts as its error path does.
pub fn inject(fault: Fault) -> ! {
    match fault {
        Fault::Crash => std::process::abort(),
        Fault::OutOfMemory => {
            eprintln!(
                "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 512.00 MiB on device 0: \
                 cudaMalloc failed: out of memory"
            );
            eprintln!("CUDA error: out of memory (injected by mate ctl crash --oom)");
            std::process::abort()
        }
        Fault::Hang => loop {
            std::thread::park();
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_fault_names_worker_kinds() {
        let crash = crash_at_start;
        assert!(crash(Role::LlmWorker, Some("llm")));
        assert!(crash(Role::BridgeWorker, Some("llm, bridge")));
        assert!(crash(Role::LlmWorker, Some("bridge,llm")));
        assert!(!crash(Role::LlmWorker, Some("bridge")));
        assert!(!crash(Role::LlmWorker, Some("llm worker")));
        assert!(!crash(Role::LlmWorker, Some("")));
        assert!(!crash(Role::LlmWorker, None));
        assert!(!crash(Role::Ctl, Some("llm,bridge,ctl")));
    }

    /// Set in the copy of the test binary that plays the worker.
    #[cfg(target_os = "linux")]
    const CHILD_ENV: &str = "MATE_TEST_DIE_WITH_PARENT_CHILD";

    /// The test binary runs this test again as a child, spawned from a thread that ends as
    /// soon as the child is set up: the kernel must then kill the child, which otherwise
    /// sleeps for a minute.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_worker_dies_when_the_thread_that_spawned_it_ends() {
        use std::{
            io::BufRead,
            os::unix::process::ExitStatusExt,
            process::{Command, Stdio},
            time::{Duration, Instant},
        };
        const READY: &str = "mate-test-child-ready";
        if std::env::var_os(CHILD_ENV).is_some() {
            die_with_parent();
            println!("{READY}");
            std::thread::sleep(Duration::from_secs(60));
            return;
        }
        let exe = std::env::current_exe().expect("test binary");
        let spawner = std::thread::spawn(move || {
            let mut child = Command::new(exe)
                .args([
                    "--exact",
                    "worker::tests::a_worker_dies_when_the_thread_that_spawned_it_ends",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, "1")
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn the child");
            let out = child.stdout.take().expect("piped stdout");
            let ready = std::io::BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .any(|line| line.contains(READY));
            (child, ready)
        });
        let (mut child, ready) = spawner.join().expect("spawner thread");
        assert!(ready, "the child never got ready");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for the child") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the child outlived the thread that spawned it");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.signal(), Some(9), "{status:?}");
    }
}
