//! The worker process: `mate worker llm --endpoint PATH`.
//!
//! Two threads. The **reader** owns the receiving half of the supervisor connection: it answers
//! heartbeats itself (with vitals that include how long the engine has made no progress, so a
//! long prompt decode is not mistaken for a hang, and a stuck llama.cpp still shows), records
//! cancels in an atomic that the engine polls between tokens, and queues everything else. The
//! **engine** (the main thread) owns the model and runs one request at a time.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc, Mutex,
    },
    time::Instant,
};

use mate_protocol::{
    worker::{LinkSender, Next, SelfMeter, WorkerLink},
    ChatMessage, Endpoint, Error, FromWorker, GenerationStats, Level, LlmOptions, LlmPhase,
    LlmVitals, LoadReport, Profile, Role, Sampling, ToWorker, WorkerVitals,
};
use tracing::{info, warn};

use crate::{
    cpu::CpuFacts,
    engine::{Listener, Model, Restore, Session, Threads},
    to_u32, LlmError,
};

/// Arguments of `mate worker llm`.
#[derive(Debug, Clone)]
pub struct Args {
    pub endpoint: PathBuf,
}

/// State the reader thread and the engine share.
#[derive(Debug)]
struct Shared {
    /// `request_id + 1` of the last cancel asked for (0: none).
    cancel: AtomicU64,
    /// The supervisor is gone or asked to shut down: stop at the next token.
    closing: AtomicBool,
    vitals: Mutex<LlmVitals>,
    progress_at: Mutex<Instant>,
}

impl Shared {
    fn set_phase(&self, phase: LlmPhase) {
        self.update(|v| v.phase = phase);
    }

    fn update(&self, f: impl FnOnce(&mut LlmVitals)) {
        f(&mut self.vitals.lock().unwrap_or_else(|p| p.into_inner()));
        *self.progress_at.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn snapshot(&self) -> LlmVitals {
        let mut v = self
            .vitals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if matches!(
            v.phase,
            LlmPhase::Loading | LlmPhase::Ingesting | LlmPhase::Generating
        ) {
            let since = self
                .progress_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .elapsed();
            v.stalled_ms = u64::try_from(since.as_millis()).unwrap_or(u64::MAX);
        }
        v
    }
}

/// What the reader hands the engine: a message, or `None` when the supervisor asked for
/// shutdown or went away.
type Job = Option<ToWorker>;

/// Runs until the supervisor says shutdown or goes away.
pub fn run(args: &Args) -> Result<(), Error> {
    let mut link = WorkerLink::connect_from_env(&Endpoint::at(&args.endpoint), Role::LlmWorker)?;
    let tx = link.sender();
    let shared = Arc::new(Shared {
        cancel: AtomicU64::new(0),
        closing: AtomicBool::new(false),
        vitals: Mutex::new(LlmVitals::default()),
        progress_at: Mutex::new(Instant::now()),
    });
    let (jobs_tx, jobs) = mpsc::channel();
    let reader_shared = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("llm-reader".into())
        .spawn(move || read(&mut link, &reader_shared, &jobs_tx))
        .map_err(Error::Io)?;
    tx.send(&FromWorker::Ready)?;
    serve(&jobs, &tx, &shared)
}

fn read(link: &mut WorkerLink, shared: &Shared, jobs: &mpsc::Sender<Job>) {
    let mut meter = SelfMeter::default();
    let mut vitals = || WorkerVitals {
        llm: Some(shared.snapshot()),
        ..meter.vitals()
    };
    loop {
        let job = match link.recv(&mut vitals) {
            Ok(Next::Message(ToWorker::Cancel { request_id })) => {
                shared
                    .cancel
                    .store(request_id.wrapping_add(1), Ordering::SeqCst);
                continue;
            }
            Ok(Next::Message(msg)) => Some(msg),
            Ok(Next::Shutdown { .. }) => None,
            Err(e) => {
                if !e.is_disconnect() {
                    warn!(error = %e, "supervisor connection failed");
                }
                None
            }
        };
        let stop = job.is_none();
        if stop {
            shared.closing.store(true, Ordering::SeqCst);
        }
        if jobs.send(job).is_err() || stop {
            return;
        }
    }
}

/// The engine loop: load, then serve requests until a reload, a shutdown or a lost supervisor.
fn serve(jobs: &mpsc::Receiver<Job>, tx: &LinkSender, shared: &Shared) -> Result<(), Error> {
    let mut next_load = None;
    loop {
        let (model_path, profile, options) = match next_load.take() {
            Some(load) => load,
            None => match jobs.recv() {
                Ok(Some(ToWorker::Load {
                    model_path,
                    profile,
                    options,
                })) => (model_path, profile, options),
                Ok(Some(other)) => {
                    refuse(tx, other, "no model is loaded yet")?;
                    continue;
                }
                Ok(None) | Err(_) => return Ok(()),
            },
        };
        shared.set_phase(LlmPhase::Loading);
        let loaded = match load(Path::new(&model_path), profile, tx) {
            Ok(loaded) => loaded,
            Err(e) if e.is_permanent() => {
                shared.set_phase(LlmPhase::NoModel);
                tx.send(&FromWorker::Fatal {
                    reason: e.to_string(),
                })?;
                continue;
            }
            Err(e) => return Err(exit_load_failed(tx, e.to_string())),
        };
        let (model, profile, threads, mut report) = loaded;
        let mut session = match model.session(&profile, threads) {
            Ok(s) => s,
            Err(e) => return Err(exit_load_failed(tx, e.to_string())),
        };
        session.set_stash_bytes(usize::try_from(options.stash_bytes).unwrap_or(usize::MAX));
        if options.warmup {
            match session.warmup() {
                Ok(d) => report.warmup_ms = to_u32(d.as_millis()),
                Err(e) => warn!(error = %e, "warm-up failed"),
            }
        }
        if let Some(dir) = &options.snapshot_dir {
            match session.restore_snapshot(Path::new(dir)) {
                Restore::Restored(n) => report.restored_tokens = to_u32(n),
                Restore::Skipped(why) => tx.send(&FromWorker::Notice {
                    level: Level::Warn,
                    message: format!("conversation snapshot not used: {why}"),
                })?,
                Restore::None => {}
            }
        }
        info!(?report, "model loaded");
        shared.update(|v| {
            v.phase = LlmPhase::Ready;
            v.model_bytes = model.size_bytes();
            v.kv_bytes = session.state_bytes();
            v.n_ctx = to_u32(session.n_ctx());
            v.ctx_used = to_u32(session.cached().len());
        });
        tx.send(&FromWorker::Loaded(report))?;

        let request = |id, snapshot| Request {
            id,
            snapshot,
            options: &options,
            tx,
            shared,
        };
        loop {
            match jobs.recv() {
                Ok(Some(ToWorker::Load {
                    model_path,
                    profile,
                    options,
                })) => {
                    next_load = Some((model_path, profile, options));
                    break;
                }
                Ok(Some(ToWorker::Generate {
                    request_id,
                    messages,
                    sampling,
                    snapshot,
                })) => {
                    request(request_id, snapshot).generate(&mut session, &messages, &sampling)?
                }
                Ok(Some(ToWorker::Ingest {
                    request_id,
                    messages,
                })) => request(request_id, true).ingest(&mut session, &messages)?,
                Ok(Some(ToWorker::Complete {
                    request_id,
                    prompt,
                    sampling,
                })) => request(request_id, false).complete(&mut session, &prompt, &sampling)?,
                Ok(Some(other)) => refuse(tx, other, "the llm worker does not do this")?,
                Ok(None) | Err(_) => return Ok(()),
            }
        }
    }
}

/// Exit code of a worker whose model could not be loaded for a reason a smaller profile may
/// fix (context allocation failed, out of memory); the supervisor restarts it one rung lower.
pub use mate_protocol::EXIT_LOAD_FAILED;

type Loaded = (Model, Profile, Threads, LoadReport);

fn load(path: &Path, mut profile: Profile, tx: &LinkSender) -> Result<Loaded, LlmError> {
    // Sampling the CPU takes 200 ms of start-up: only when the profile leaves a choice to it.
    let facts = (profile.mlock || profile.n_threads == 0)
        .then(|| CpuFacts::sample(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL));
    if let Some(facts) = facts.as_ref().filter(|_| profile.mlock) {
        let file_bytes = std::fs::metadata(path).map_or(0, |m| m.len());
        if !facts.mlock_is_safe(file_bytes) {
            profile.mlock = false;
            let _ = tx.send(&FromWorker::Notice {
                level: Level::Warn,
                message: format!(
                    "mlock left off: {} MiB of RAM is not comfortably more than the {} MiB model",
                    facts.total_memory >> 20,
                    file_bytes >> 20
                ),
            });
        }
    }
    let threads = match &facts {
        Some(facts) if profile.n_threads == 0 => Threads {
            generation: facts.generation_threads(),
            batch: facts.batch_threads(),
        },
        _ => Threads {
            generation: profile.n_threads.max(1),
            batch: profile.n_threads.max(1),
        },
    };
    let start = Instant::now();
    let model = Model::load(path, &profile)?;
    let report = LoadReport {
        profile: profile.name.clone(),
        n_layers: model.n_layers(),
        model_bytes: model.size_bytes(),
        load_ms: to_u32(start.elapsed().as_millis()),
        warmup_ms: 0,
        n_threads: threads.generation,
        model_template: model.has_template(),
        restored_tokens: 0,
    };
    Ok((model, profile, threads, report))
}

/// Out of memory and the like while loading: a restart on a smaller profile may help, which
/// is the supervisor's call. Says why, then ends the process (the error only if saying failed).
fn exit_load_failed(tx: &LinkSender, message: String) -> Error {
    if let Err(e) = tx.send(&FromWorker::Notice {
        level: Level::Error,
        message,
    }) {
        return e;
    }
    std::process::exit(EXIT_LOAD_FAILED)
}

fn refuse(tx: &LinkSender, msg: ToWorker, why: &str) -> Result<(), Error> {
    match msg {
        ToWorker::Generate { request_id, .. }
        | ToWorker::Ingest { request_id, .. }
        | ToWorker::Complete { request_id, .. } => tx.send(&FromWorker::Failed {
            request_id,
            reason: why.into(),
            client_error: false,
        }),
        other => tx.send(&FromWorker::Notice {
            level: Level::Warn,
            message: format!("llm worker ignored {}: {why}", name(&other)),
        }),
    }
}

fn name(msg: &ToWorker) -> &'static str {
    match msg {
        ToWorker::Avatar(_) => "an avatar command",
        ToWorker::Load { .. } => "a load",
        _ => "a message",
    }
}

/// Streams one request's events to the supervisor.
struct Relay<'a> {
    request_id: u64,
    tx: &'a LinkSender,
    shared: &'a Shared,
    /// A send failed: the supervisor is gone, so stop generating.
    broken: Option<Error>,
}

impl Relay<'_> {
    fn send(&mut self, msg: FromWorker) {
        if self.broken.is_none() {
            if let Err(e) = self.tx.send(&msg) {
                self.broken = Some(e);
            }
        }
    }
}

impl Listener for Relay<'_> {
    fn cancelled(&self) -> bool {
        self.broken.is_some()
            || self.shared.closing.load(Ordering::SeqCst)
            || self.shared.cancel.load(Ordering::SeqCst) == self.request_id.wrapping_add(1)
    }

    fn progress(&mut self, phase: LlmPhase, ctx_used: usize) {
        self.shared.update(|v| {
            v.phase = phase;
            v.ctx_used = to_u32(ctx_used);
        });
    }

    fn text(&mut self, chunk: &str) {
        self.send(FromWorker::Chunk {
            request_id: self.request_id,
            text: chunk.to_string(),
        });
    }

    fn trimmed(&mut self, dropped: usize, prompt_tokens: usize) {
        let n_ctx = self
            .shared
            .vitals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .n_ctx;
        self.send(FromWorker::ContextTrimmed {
            request_id: self.request_id,
            dropped_messages: to_u32(dropped),
            prompt_tokens: to_u32(prompt_tokens),
            n_ctx,
        });
    }
}

/// What every request shares: its id, where its messages go, and the snapshot after it.
struct Request<'a> {
    id: u64,
    /// Save the conversation's KV snapshot after it (the companion's conversation).
    snapshot: bool,
    options: &'a LlmOptions,
    tx: &'a LinkSender,
    shared: &'a Shared,
}

impl Request<'_> {
    fn generate(
        &self,
        session: &mut Session<'_>,
        messages: &[ChatMessage],
        sampling: &Sampling,
    ) -> Result<(), Error> {
        let options = self.options;
        self.run(
            session,
            |session, relay| {
                session.generate(
                    messages,
                    sampling,
                    &options.fallback_template,
                    options.coalesce,
                    relay,
                )
            },
            |stats| self.done(stats),
        )
    }

    fn complete(
        &self,
        session: &mut Session<'_>,
        prompt: &str,
        sampling: &Sampling,
    ) -> Result<(), Error> {
        let coalesce = self.options.coalesce;
        self.run(
            session,
            |session, relay| session.complete(prompt, sampling, coalesce, relay),
            |stats| self.done(stats),
        )
    }

    /// A reply is complete: its figures go into the vitals and to the supervisor.
    fn done(&self, stats: GenerationStats) -> FromWorker {
        self.shared.update(|v| v.last = Some(stats.clone()));
        FromWorker::Done {
            request_id: self.id,
            stats,
        }
    }

    fn ingest(&self, session: &mut Session<'_>, messages: &[ChatMessage]) -> Result<(), Error> {
        let request_id = self.id;
        let template = &self.options.fallback_template;
        self.run(
            session,
            |session, relay| session.ingest_conversation(messages, template, relay),
            |r| FromWorker::Ingested {
                request_id,
                prompt_tokens: to_u32(r.prompt_tokens),
                cached_tokens: to_u32(r.cached_tokens),
                elapsed_ms: to_u32(r.elapsed.as_millis()),
            },
        )
    }

    /// Runs `work` with a relay streaming its events, then reports `done(result)` and saves
    /// the snapshot, or reports the failure. A lost supervisor ends the worker.
    fn run<T>(
        &self,
        session: &mut Session<'_>,
        work: impl FnOnce(&mut Session<'_>, &mut Relay<'_>) -> Result<T, LlmError>,
        done: impl FnOnce(T) -> FromWorker,
    ) -> Result<(), Error> {
        let mut relay = Relay {
            request_id: self.id,
            tx: self.tx,
            shared: self.shared,
            broken: None,
        };
        self.shared.set_phase(LlmPhase::Ingesting);
        let result = work(session, &mut relay);
        if let Some(e) = relay.broken {
            return Err(e);
        }
        self.shared.update(|v| {
            v.phase = LlmPhase::Ready;
            v.ctx_used = to_u32(session.cached().len());
        });
        match result {
            Ok(out) => {
                self.tx.send(&done(out))?;
                if !self.snapshot {
                    return Ok(());
                }
                save_snapshot(session, self.options, self.tx)
            }
            Err(e) => self.tx.send(&FromWorker::Failed {
                request_id: self.id,
                client_error: matches!(e, LlmError::PromptTooLong { .. }),
                reason: e.to_string(),
            }),
        }
    }
}

/// Saves the conversation's cache after a turn. A failure (a full disk, say) costs only the
/// fast restart, never the conversation, which the supervisor keeps: say so and go on.
fn save_snapshot(
    session: &mut Session<'_>,
    options: &LlmOptions,
    tx: &LinkSender,
) -> Result<(), Error> {
    let Some(dir) = &options.snapshot_dir else {
        return Ok(());
    };
    let start = Instant::now();
    match session.save_snapshot(Path::new(dir)) {
        Ok(saved) => {
            tracing::debug!(saved, elapsed = ?start.elapsed(), tokens = session.cached().len(), "snapshot");
            Ok(())
        }
        Err(e) => tx.send(&FromWorker::Notice {
            level: Level::Warn,
            message: format!("{e}; a restart will decode the conversation again"),
        }),
    }
}
