use std::collections::HashMap;

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
        ExitStatus::Signal(9).describe(),
        "was killed by signal 9 (SIGKILL)"
    );
    assert_eq!(ExitStatus::Code(3).describe(), "exited with code 3");
}

// ---- the loop, in process ------------------------------------------------------------------
//
// A fake launcher stands in for processes: the tests say when a worker connects, what it
// sends, when it exits and how, and move the clock; they assert what the loop decided (what it
// sent each worker, spawned or killed, the states, the journal, the client's replies).

use std::sync::atomic::{AtomicU32, Ordering};

use mate_protocol::LoadReport;

#[derive(Debug)]
struct FakeChild {
    kind: WorkerKind,
    generation: u64,
    kill: oneshot::Receiver<()>,
    hide_gpu: bool,
}

#[derive(Debug, Clone, Default)]
struct FakeLauncher {
    children: Arc<Mutex<Vec<FakeChild>>>,
    next_pid: Arc<AtomicU32>,
}

impl Launcher for FakeLauncher {
    fn launch(&mut self, launch: Launch<'_>) -> anyhow::Result<Launched> {
        let (kill, killed) = oneshot::channel();
        let pid = 1000 + self.next_pid.fetch_add(1, Ordering::Relaxed);
        self.children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(FakeChild {
                kind: launch.kind,
                generation: launch.generation,
                kill: killed,
                hide_gpu: launch.hide_gpu,
            });
        Ok(Launched {
            pid: Some(pid),
            kill,
        })
    }
}

const SECOND: Duration = Duration::from_secs(1);
const LLM: WorkerKind = WorkerKind::Llm;
const BRIDGE: WorkerKind = WorkerKind::Bridge;
const API: WorkerKind = WorkerKind::Api;

/// The supervisor's loop without its task, its sockets or its children.
struct Loop {
    sup: Supervisor,
    launcher: FakeLauncher,
    now: Instant,
    /// The channel to each worker's current process.
    inbox: HashMap<WorkerKind, mpsc::Receiver<ToWorker>>,
    /// What the loop sent to each worker and the test has not looked at yet.
    unread: HashMap<WorkerKind, Vec<ToWorker>>,
    /// Workers that do not answer heartbeats (the others do, as live workers do).
    silent: Vec<WorkerKind>,
    _dir: tempfile::TempDir,
}

fn loaded(profile: &str) -> FromWorker {
    FromWorker::Loaded(LoadReport {
        profile: profile.into(),
        n_layers: 2,
        model_bytes: 1 << 20,
        load_ms: 10,
        warmup_ms: 1,
        n_threads: 2,
        model_template: false,
        restored_tokens: 0,
    })
}

fn stats(stop: StopReason) -> GenerationStats {
    GenerationStats {
        prompt_tokens: 10,
        generated_tokens: 5,
        ttft_ms: 1.0,
        prompt_tokens_per_s: 100.0,
        gen_tokens_per_s: 50.0,
        stop,
        cached_tokens: 0,
    }
}

impl Loop {
    /// A supervisor on `config` (TOML), its workers spawned but not connected.
    fn new(config: &str, profile: Option<&str>) -> Loop {
        let dir = tempfile::tempdir().expect("state dir");
        let file = crate::config::parse(config, Path::new("test.toml")).expect("config");
        let overrides = crate::config::Overrides {
            state_dir: Some(dir.path().to_path_buf()),
            profile: profile.map(str::to_string),
            ..Default::default()
        };
        let settings = crate::config::resolve(&overrides, file).expect("settings");
        let opts = Options {
            settings,
            model: dir.path().join("absent.gguf"),
            exe: PathBuf::from("mate"),
        };
        let launcher = FakeLauncher::default();
        let auth = Arc::new(Auth::new(AuthToken::generate().expect("token")));
        let gpu = gpu::FirstLook {
            info: None,
            reading: None,
            note: Some("no GPU in this test".into()),
        };
        let now = Instant::now();
        let mut sup =
            Supervisor::new(opts, Box::new(launcher.clone()), auth, gpu, now).expect("supervisor");
        sup.start(now);
        Loop {
            sup,
            launcher,
            now,
            inbox: HashMap::new(),
            unread: HashMap::new(),
            silent: Vec::new(),
            _dir: dir,
        }
    }

    /// Both workers connected and serving (the LLM with its model loaded).
    fn up() -> Loop {
        let mut l = Loop::new("", None);
        l.serve(LLM);
        l.serve(BRIDGE);
        l.serve(API);
        l
    }

    fn generation(&self, kind: WorkerKind) -> u64 {
        self.sup.workers[kind as usize].generation
    }

    fn worker(&self, kind: WorkerKind) -> &Worker {
        &self.sup.workers[kind as usize]
    }

    fn state(&self, kind: WorkerKind) -> WorkerState {
        self.worker(kind).state()
    }

    /// Handles an event, then what the real loop would do at once: ticks that are due.
    fn handle(&mut self, event: Event) {
        self.sup.handle(event, self.now);
        self.settle();
    }

    fn settle(&mut self) {
        while self.sup.next_deadline() <= self.now {
            self.sup.tick(self.now);
            self.pump();
            if self.sup.next_deadline() <= self.now {
                // A deadline the tick did not move (none today): do not spin.
                break;
            }
        }
        self.pump();
    }

    /// Collects what the loop sent each worker; live workers answer heartbeats.
    fn pump(&mut self) {
        let mut answers = Vec::new();
        for (&kind, rx) in &mut self.inbox {
            while let Ok(msg) = rx.try_recv() {
                if let ToWorker::Heartbeat { seq } = msg {
                    if !self.silent.contains(&kind) {
                        answers.push((kind, seq));
                    }
                }
                self.unread.entry(kind).or_default().push(msg);
            }
        }
        for (kind, seq) in answers {
            let generation = self.generation(kind);
            self.sup.handle(
                Event::FromWorker {
                    kind,
                    generation,
                    msg: FromWorker::Heartbeat {
                        seq,
                        vitals: WorkerVitals::default(),
                    },
                },
                self.now,
            );
        }
    }

    /// The restart the loop scheduled for `kind` happens, and the new process serves.
    fn restart(&mut self, kind: WorkerKind) {
        let before = self.spawned(kind);
        if let Some(at) = self.worker(kind).restart_at {
            let wait = at.saturating_duration_since(self.now);
            self.advance(wait);
        }
        assert_eq!(self.spawned(kind), before + 1, "a new {kind} process");
        self.serve(kind);
    }

    /// The current process of `kind` connects and says it is ready; an LLM also loads.
    fn serve(&mut self, kind: WorkerKind) {
        let generation = self.generation(kind);
        let (tx, rx) = mpsc::channel(1024);
        self.inbox.insert(kind, rx);
        self.unread.remove(&kind);
        self.handle(Event::WorkerConnected {
            kind,
            generation,
            tx,
        });
        self.send(kind, FromWorker::Ready);
        if kind == LLM {
            let load = self.sent(LLM);
            let Some(ToWorker::Load { profile, .. }) = load.first() else {
                panic!("the LLM is told to load first: {load:?}");
            };
            let profile = profile.name.clone();
            self.send(LLM, loaded(&profile));
        }
    }

    fn send(&mut self, kind: WorkerKind, msg: FromWorker) {
        let generation = self.generation(kind);
        self.handle(Event::FromWorker {
            kind,
            generation,
            msg,
        });
    }

    /// The LLM streams `text` for request `id`.
    fn chunk(&mut self, request_id: u64, text: &str) {
        let text = text.into();
        self.send(LLM, FromWorker::Chunk { request_id, text });
    }

    /// The LLM ends request `id`.
    fn done(&mut self, request_id: u64, stop: StopReason) {
        let stats = stats(stop);
        self.send(LLM, FromWorker::Done { request_id, stats });
    }

    /// The current process of `kind` exits.
    fn exit(&mut self, kind: WorkerKind, status: ExitStatus) {
        let generation = self.generation(kind);
        self.inbox.remove(&kind);
        self.unread.remove(&kind);
        self.handle(Event::WorkerExited {
            kind,
            generation,
            status,
        });
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.sup.tick(self.now);
        self.settle();
    }

    /// Runs the loop's timers over `span` the way its task does: at each deadline.
    fn run_for(&mut self, span: Duration) {
        let end = self.now + span;
        loop {
            let next = self
                .sup
                .next_deadline()
                .max(self.now + Duration::from_millis(1));
            if next > end {
                self.now = end;
                return;
            }
            self.now = next;
            self.sup.tick(self.now);
            self.pump();
        }
    }

    fn request(&mut self, request: Request) -> mpsc::Receiver<Reply> {
        let (reply, rx) = mpsc::channel(1024);
        self.handle(Event::Request {
            request,
            reply,
            pid: 42,
        });
        rx
    }

    /// What the loop sent to the current process of `kind` since the last look.
    fn sent(&mut self, kind: WorkerKind) -> Vec<ToWorker> {
        self.pump();
        self.unread.remove(&kind).unwrap_or_default()
    }

    /// Processes started so far for `kind`.
    fn spawned(&self, kind: WorkerKind) -> usize {
        self.children().iter().filter(|c| c.kind == kind).count()
    }

    fn children(&self) -> std::sync::MutexGuard<'_, Vec<FakeChild>> {
        self.launcher
            .children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the loop asked to kill the current process of `kind`.
    fn kill_asked(&self, kind: WorkerKind) -> bool {
        let generation = self.generation(kind);
        self.children()
            .iter_mut()
            .find(|c| c.kind == kind && c.generation == generation)
            .is_some_and(|c| c.kill.try_recv().is_ok())
    }

    fn events(&self) -> Vec<JournalEvent> {
        self.sup.journal.recent().cloned().collect()
    }

    fn has_event(&self, f: impl Fn(&EventKind) -> bool) -> bool {
        self.events().iter().any(|e| f(&e.kind))
    }

    /// The bridge restarts; the avatar's state its first message carries.
    fn restarted_bridge_avatar(&mut self) -> Vec<AvatarCommand> {
        self.restart(BRIDGE);
        let sent = self.sent(BRIDGE);
        match sent.into_iter().next() {
            Some(ToWorker::Unity { avatar, .. }) => avatar,
            other => panic!("the bridge first gets the Unity settings, not {other:?}"),
        }
    }

    /// The one `Generate` the LLM was sent since the last look.
    fn generate(&mut self) -> (u64, Vec<ChatMessage>) {
        let sent = self.sent(LLM);
        let mut generates = sent.into_iter().filter_map(|m| match m {
            ToWorker::Generate {
                request_id,
                messages,
                ..
            } => Some((request_id, messages)),
            _ => None,
        });
        let first = generates.next().expect("a Generate was sent");
        assert!(generates.next().is_none(), "one Generate");
        first
    }
}

fn replies(rx: &mut mpsc::Receiver<Reply>) -> Vec<Reply> {
    let mut out = Vec::new();
    while let Ok(r) = rx.try_recv() {
        out.push(r);
    }
    out
}

fn text_of(replies: &[Reply]) -> String {
    replies
        .iter()
        .filter_map(|r| match r {
            Reply::Chunk { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn both_workers_start_and_the_llm_serves_once_loaded() {
    let mut l = Loop::new("", None);
    assert_eq!(l.state(LLM), WorkerState::Starting);
    assert_eq!(l.state(BRIDGE), WorkerState::Starting);
    l.serve(BRIDGE);
    assert_eq!(l.state(BRIDGE), WorkerState::Running);
    let to_bridge = l.sent(BRIDGE);
    assert!(
        matches!(to_bridge.as_slice(), [ToWorker::Unity { .. }]),
        "the bridge gets the Unity settings and the avatar: {to_bridge:?}"
    );
    l.serve(LLM);
    assert_eq!(l.state(LLM), WorkerState::Running);
    assert!(
        l.children().iter().any(|c| c.kind == LLM && c.hide_gpu),
        "the cpu rung hides the GPU from the LLM worker"
    );
}

#[test]
fn a_crash_after_a_healthy_run_restarts_at_once() {
    let mut l = Loop::up();
    l.run_for(60 * SECOND);
    l.exit(LLM, ExitStatus::Signal(9));
    assert_eq!(l.spawned(LLM), 2, "restarted without a delay");
    assert_eq!(l.state(LLM), WorkerState::Starting);
    assert_eq!(l.worker(LLM).restarts, 1);
    l.serve(LLM);
    assert_eq!(l.state(LLM), WorkerState::Running);
}

#[test]
fn a_crash_loop_backs_off_with_growing_delays_then_fails_on_the_lowest_rung() {
    let mut l = Loop::up();
    let mut delays = Vec::new();
    for _ in 0..5 {
        l.exit(LLM, ExitStatus::Code(101));
        if l.state(LLM) == WorkerState::Failed {
            break;
        }
        assert_eq!(l.state(LLM), WorkerState::Backoff);
        let at = l.worker(LLM).restart_at.expect("a restart is due");
        delays.push(at - l.now);
        let before = l.spawned(LLM);
        l.advance(at - l.now);
        assert_eq!(l.spawned(LLM), before + 1, "restarted when the delay ended");
        l.serve(LLM);
    }
    assert!(delays.len() >= 2, "{delays:?}");
    assert!(
        delays.windows(2).all(|d| d[1] > d[0]),
        "each delay longer than the one before: {delays:?}"
    );
    // Still crashing: with no lower rung than cpu, it fails and stays failed.
    while l.state(LLM) != WorkerState::Failed {
        l.exit(LLM, ExitStatus::Code(101));
        if let Some(at) = l.worker(LLM).restart_at {
            l.advance(at - l.now);
            l.serve(LLM);
        }
    }
    let spawned = l.spawned(LLM);
    l.run_for(600 * SECOND);
    assert_eq!(l.spawned(LLM), spawned, "a failed worker is not restarted");
    assert!(l.worker(LLM).last_error.is_some());
    assert!(l.has_event(|k| matches!(k, EventKind::Failed { .. })));
}

#[test]
fn a_crash_loop_on_a_higher_rung_goes_one_rung_down() {
    let mut l = Loop::new("", Some("balanced"));
    l.serve(LLM);
    l.serve(BRIDGE);
    assert_eq!(l.sup.profile, "balanced");
    for _ in 0..3 {
        l.exit(LLM, ExitStatus::Code(101));
        if let Some(at) = l.worker(LLM).restart_at {
            l.advance(at - l.now);
        }
        if l.sup.profile != "balanced" {
            break;
        }
        l.serve(LLM);
    }
    assert_eq!(
        l.sup.profile, "low_memory",
        "one rung down after the crash loop"
    );
    assert!(l.has_event(|k| matches!(
        k,
        EventKind::Downgraded {
            cause: DowngradeCause::CrashLoop,
            ..
        }
    )));
    l.serve(LLM);
    assert_eq!(
        l.worker(LLM)
            .process
            .as_ref()
            .and_then(|p| p.profile.clone()),
        Some("low_memory".into())
    );
}

#[test]
fn an_out_of_memory_exit_goes_straight_to_the_next_rung() {
    let mut l = Loop::new("", Some("performance"));
    l.serve(LLM);
    l.exit(LLM, ExitStatus::Code(EXIT_LOAD_FAILED));
    assert_eq!(l.sup.profile, "balanced");
    assert_eq!(l.spawned(LLM), 2, "the next rung starts at once");
    assert!(l.has_event(|k| matches!(
        k,
        EventKind::Downgraded {
            cause: DowngradeCause::OutOfMemory,
            ..
        }
    )));
    // Automatic upgrades stop below the rung that ran out of memory.
    assert_eq!(l.sup.ladder[l.sup.ceiling].profile.name, "balanced");

    // Windows' own word for it, STATUS_NO_MEMORY, does the same.
    l.serve(LLM);
    l.exit(LLM, ExitStatus::Code(0xC000_0017_u32 as i32));
    assert_eq!(l.sup.profile, "low_memory");
    assert_eq!(l.spawned(LLM), 3);

    // A plain abort (Windows' fast fail) is a crash like any other, not a rung that does not fit.
    l.serve(LLM);
    l.exit(LLM, ExitStatus::Code(0xC000_0409_u32 as i32));
    assert_eq!(l.sup.profile, "low_memory");
}

#[test]
fn three_missed_heartbeats_get_a_worker_killed_and_restarted() {
    let mut l = Loop::up();
    // Answering every heartbeat keeps it alive, for longer than a healthy run.
    l.run_for(40 * SECOND);
    let _ = l.sent(BRIDGE);
    assert!(!l.kill_asked(BRIDGE));
    // Silent from now on: killed after three unanswered heartbeats.
    l.silent.push(BRIDGE);
    let silent_from = l.now;
    while !l.kill_asked(BRIDGE) {
        l.run_for(Duration::from_millis(100));
        assert!(l.now - silent_from < 10 * SECOND, "killed in time");
    }
    let beats = l
        .sent(BRIDGE)
        .iter()
        .filter(|m| matches!(m, ToWorker::Heartbeat { .. }))
        .count();
    assert_eq!(beats, 3, "three heartbeats went unanswered");
    assert!(l.has_event(|k| matches!(k, EventKind::HangDetected { .. })));
    assert!(!l.kill_asked(LLM), "the LLM answered: left alone");
    l.exit(BRIDGE, ExitStatus::Signal(9));
    assert_eq!(l.spawned(BRIDGE), 2, "a healthy run: restarted at once");
}

#[test]
fn a_worker_that_never_says_hello_is_killed_at_the_start_deadline() {
    let mut l = Loop::new("[supervisor]\nstart_deadline_s = 10\n", None);
    l.serve(BRIDGE);
    l.run_for(9 * SECOND);
    assert!(!l.kill_asked(LLM));
    l.run_for(2 * SECOND);
    assert!(l.kill_asked(LLM));
}

#[test]
fn an_llm_death_mid_reply_resumes_the_reply_in_the_next_worker() {
    let mut l = Loop::up();
    let mut client = l.request(Request::Chat {
        text: "Tell me a story".into(),
    });
    let (id, messages) = l.generate();
    assert_eq!(messages.last().map(|m| m.role), Some(ChatRole::User));
    for text in ["Once upon ", "a time"] {
        l.chunk(id, text);
    }
    l.exit(LLM, ExitStatus::Signal(9));
    l.restart(LLM);
    let (id2, messages) = l.generate();
    assert_ne!(id2, id);
    let last = messages.last().expect("messages");
    assert_eq!(last.role, ChatRole::Assistant);
    assert_eq!(
        last.text, "Once upon a time",
        "the new worker continues the reply"
    );
    l.chunk(id2, ", a cat.");
    l.done(id2, StopReason::EndOfText);
    let got = replies(&mut client);
    assert_eq!(
        text_of(&got),
        "Once upon a time, a cat.",
        "one answer, nothing repeated"
    );
    assert!(matches!(got.last(), Some(Reply::ChatDone { .. })));
    let turn = &l.sup.transcript.turns()[0];
    assert_eq!(turn.reply.text, "Once upon a time, a cat.");
    assert_eq!(turn.reply.resumed, 1);
}

#[test]
fn a_late_done_from_the_process_that_died_completes_the_turn_once() {
    let mut l = Loop::up();
    let mut client = l.request(Request::Chat { text: "Hi".into() });
    let (id, _) = l.generate();
    l.chunk(id, "Hello!");
    // The process exits, and its last words (sent before it died) arrive after the exit.
    let old = l.generation(LLM);
    l.exit(LLM, ExitStatus::Code(0));
    l.handle(Event::FromWorker {
        kind: LLM,
        generation: old,
        msg: FromWorker::Done {
            request_id: id,
            stats: stats(StopReason::EndOfText),
        },
    });
    assert!(l.sup.turn.is_none(), "the turn is complete");
    l.restart(LLM);
    assert!(
        !l.sent(LLM)
            .iter()
            .any(|m| matches!(m, ToWorker::Generate { .. })),
        "nothing to resume"
    );
    let got = replies(&mut client);
    assert_eq!(text_of(&got), "Hello!");
    let done: Vec<_> = got
        .iter()
        .filter(|r| matches!(r, Reply::ChatDone { .. }))
        .collect();
    assert_eq!(done.len(), 1);
    assert_eq!(l.sup.transcript.turns()[0].reply.resumed, 0);
}

#[test]
fn ctl_restart_mid_reply_resumes_in_the_new_process() {
    let mut l = Loop::up();
    let mut client = l.request(Request::Chat { text: "Hi".into() });
    let (id, _) = l.generate();
    l.chunk(id, "Well, ");
    let mut ok = l.request(Request::Restart {
        worker: LLM,
        profile: None,
    });
    assert!(matches!(replies(&mut ok).as_slice(), [Reply::Ok]));
    assert!(
        l.sent(LLM)
            .iter()
            .any(|m| matches!(m, ToWorker::Shutdown { .. })),
        "the running process is asked to stop"
    );
    // It stops at the next token boundary: its reply ends as cancelled, and it exits.
    l.done(id, StopReason::Cancelled);
    assert!(l.sup.turn.is_some(), "the turn goes on");
    l.exit(LLM, ExitStatus::Code(0));
    assert_eq!(l.spawned(LLM), 2);
    l.serve(LLM);
    let (id2, messages) = l.generate();
    assert_eq!(messages.last().map(|m| m.text.as_str()), Some("Well, "));
    l.chunk(id2, "hello.");
    l.done(id2, StopReason::EndOfText);
    assert_eq!(text_of(&replies(&mut client)), "Well, hello.");
    assert_eq!(l.worker(LLM).restarts, 1);
}

#[test]
fn stop_is_answered_when_the_process_has_exited_and_start_brings_it_back() {
    let mut l = Loop::up();
    let mut stop = l.request(Request::Stop { worker: BRIDGE });
    assert!(replies(&mut stop).is_empty(), "not stopped yet");
    assert_eq!(l.state(BRIDGE), WorkerState::Stopping);
    l.exit(BRIDGE, ExitStatus::Code(0));
    assert!(matches!(replies(&mut stop).as_slice(), [Reply::Ok]));
    assert_eq!(l.state(BRIDGE), WorkerState::Stopped);
    l.run_for(60 * SECOND);
    assert_eq!(l.spawned(BRIDGE), 1, "a stopped worker stays stopped");
    let mut start = l.request(Request::Start { worker: BRIDGE });
    assert!(matches!(replies(&mut start).as_slice(), [Reply::Ok]));
    assert_eq!(l.spawned(BRIDGE), 2);
    assert_eq!(l.state(BRIDGE), WorkerState::Starting);
}

#[test]
fn a_start_during_the_stops_grace_period_wins() {
    let mut l = Loop::up();
    let mut stop = l.request(Request::Stop { worker: LLM });
    let mut start = l.request(Request::Start { worker: LLM });
    assert!(
        replies(&mut start).is_empty(),
        "answered when the new one runs"
    );
    // The old process ignores the request; the grace period ends in a kill.
    l.run_for(l.sup.opts.settings.policy.grace + SECOND);
    assert!(l.kill_asked(LLM));
    l.exit(LLM, ExitStatus::Signal(9));
    assert!(matches!(replies(&mut stop).as_slice(), [Reply::Ok]));
    assert!(matches!(replies(&mut start).as_slice(), [Reply::Ok]));
    assert_eq!(l.spawned(LLM), 2);
    assert_eq!(l.state(LLM), WorkerState::Starting);
}

#[test]
fn a_profile_change_reloads_the_llm_on_the_new_rung() {
    let mut l = Loop::up();
    assert_eq!(l.sup.profile, "cpu");
    let mut ok = l.request(Request::SetProfile {
        name: "low_memory".into(),
    });
    assert!(matches!(replies(&mut ok).as_slice(), [Reply::Ok]));
    assert!(l.has_event(|k| matches!(k, EventKind::ProfileChanged { .. })));
    l.exit(LLM, ExitStatus::Code(0));
    l.serve(LLM);
    assert_eq!(l.sup.profile, "low_memory");
    assert!(
        !l.children().last().is_some_and(|c| c.hide_gpu),
        "a rung that offloads sees the GPU"
    );
    let mut err = l.request(Request::SetProfile {
        name: "turbo".into(),
    });
    assert!(matches!(
        replies(&mut err).as_slice(),
        [Reply::Error { .. }]
    ));
}

#[test]
fn shutdown_gives_a_grace_period_then_kills_and_restarts_nothing() {
    let mut l = Loop::up();
    let mut ok = l.request(Request::Shutdown);
    assert!(matches!(replies(&mut ok).as_slice(), [Reply::Ok]));
    for kind in [LLM, BRIDGE, API] {
        assert!(l
            .sent(kind)
            .iter()
            .any(|m| matches!(m, ToWorker::Shutdown { .. })));
    }
    // The bridge and the API leave in time; the LLM does not.
    l.exit(BRIDGE, ExitStatus::Code(0));
    l.exit(API, ExitStatus::Code(0));
    assert!(!l.sup.finished());
    let grace = l.sup.opts.settings.policy.grace;
    l.run_for(grace - Duration::from_millis(10));
    assert!(!l.kill_asked(LLM), "not before the grace period ends");
    l.run_for(Duration::from_millis(20));
    assert!(l.kill_asked(LLM));
    l.exit(LLM, ExitStatus::Signal(9));
    assert!(l.sup.finished());
    assert_eq!(l.spawned(LLM), 1);
    assert_eq!(l.spawned(BRIDGE), 1);
}

#[test]
fn a_second_stop_signal_kills_at_once() {
    let mut l = Loop::up();
    l.handle(Event::Stop("SIGTERM"));
    assert!(!l.kill_asked(LLM));
    l.handle(Event::Stop("SIGTERM"));
    assert!(l.kill_asked(LLM));
    assert!(l.kill_asked(BRIDGE));
}

#[test]
fn a_chat_during_shutdown_or_with_the_llm_stopped_is_refused_with_the_way_out() {
    let mut l = Loop::up();
    let mut stop = l.request(Request::Stop { worker: LLM });
    l.exit(LLM, ExitStatus::Code(0));
    assert!(matches!(replies(&mut stop).as_slice(), [Reply::Ok]));
    let mut chat = l.request(Request::Chat { text: "Hi".into() });
    let got = replies(&mut chat);
    let [Reply::Error { message }] = got.as_slice() else {
        panic!("{got:?}");
    };
    assert!(message.contains("mate ctl start llm"), "{message}");
}

#[test]
fn a_bridge_restart_gets_the_avatar_back() {
    let mut l = Loop::up();
    let expression = AvatarCommand::SetExpression {
        expression: "happy".into(),
        intensity: 1.0,
        transition_ms: 0,
    };
    let mut ok = l.request(Request::Avatar(expression.clone()));
    assert!(matches!(replies(&mut ok).as_slice(), [Reply::Ok]));
    l.exit(BRIDGE, ExitStatus::Signal(9));
    let avatar = l.restarted_bridge_avatar();
    assert!(avatar.contains(&expression), "{avatar:?}");
}

#[test]
fn an_avatar_command_while_the_bridge_is_away_is_kept_for_it() {
    let mut l = Loop::up();
    l.exit(BRIDGE, ExitStatus::Signal(9));
    let blink = AvatarCommand::Blink { enabled: false };
    let mut err = l.request(Request::Avatar(blink.clone()));
    let got = replies(&mut err);
    assert!(
        matches!(got.as_slice(), [Reply::Error { message }] if message.contains("gets this when it is back")),
        "{got:?}"
    );
    let avatar = l.restarted_bridge_avatar();
    assert!(avatar.contains(&blink), "{avatar:?}");
}

#[test]
fn a_cancel_ends_the_reply_even_when_the_worker_dies_first() {
    let mut l = Loop::up();
    let mut client = l.request(Request::Chat { text: "Hi".into() });
    let (id, _) = l.generate();
    l.chunk(id, "Hm");
    let _ = l.request(Request::Cancel);
    assert!(l
        .sent(LLM)
        .iter()
        .any(|m| matches!(m, ToWorker::Cancel { request_id } if *request_id == id)));
    l.exit(LLM, ExitStatus::Signal(9));
    assert!(l.sup.turn.is_none(), "not resumed in the next worker");
    let got = replies(&mut client);
    assert!(matches!(
        got.last(),
        Some(Reply::ChatDone { stats }) if stats.stop == StopReason::Cancelled
    ));
    assert_eq!(l.sup.transcript.turns()[0].reply.text, "Hm");
}

fn chat(l: &mut Loop, text: &str) -> mpsc::Receiver<Reply> {
    l.request(Request::Chat { text: text.into() })
}

/// How many turns go first, as a queued chat's client hears it.
fn queued_ahead(replies: &[Reply]) -> Option<u32> {
    replies.iter().find_map(|r| match r {
        Reply::Event(JournalEvent {
            kind: EventKind::TurnQueued { ahead },
            ..
        }) => Some(*ahead),
        _ => None,
    })
}

#[test]
fn chats_that_arrive_while_a_reply_streams_wait_their_turn_in_order() {
    let mut l = Loop::up();
    let mut first = chat(&mut l, "Hi");
    let (id1, _) = l.generate();
    let mut second = chat(&mut l, "Second");
    let mut third = chat(&mut l, "Third");
    assert_eq!(queued_ahead(&replies(&mut second)), Some(1));
    assert_eq!(queued_ahead(&replies(&mut third)), Some(2));
    assert_eq!(l.sup.status().queued, 2);
    assert!(l.sent(LLM).is_empty(), "nothing else generates meanwhile");

    l.chunk(id1, "Hello");
    l.done(id1, StopReason::EndOfText);
    assert_eq!(text_of(&replies(&mut first)), "Hello");
    // The second starts at once, with the first turn in its history.
    let (id2, messages) = l.generate();
    assert_eq!(messages.last().map(|m| m.text.as_str()), Some("Second"));
    assert!(messages.iter().any(|m| m.text == "Hello"), "{messages:?}");
    assert_eq!(l.sup.status().queued, 1);
    l.chunk(id2, "Two");
    l.done(id2, StopReason::EndOfText);
    assert_eq!(text_of(&replies(&mut second)), "Two");
    let (id3, messages) = l.generate();
    assert_eq!(messages.last().map(|m| m.text.as_str()), Some("Third"));
    l.done(id3, StopReason::EndOfText);
    assert!(matches!(
        replies(&mut third).last(),
        Some(Reply::ChatDone { .. })
    ));
    let users: Vec<String> = l
        .sup
        .transcript
        .turns()
        .iter()
        .map(|t| t.user.text.clone())
        .collect();
    assert_eq!(users, ["Hi", "Second", "Third"]);
    assert_eq!(l.sup.status().queued, 0);
}

#[test]
fn a_full_queue_refuses_and_a_waiting_client_that_leaves_is_skipped() {
    let mut l = Loop::new("[chat]\nqueue = 1\n", None);
    l.serve(LLM);
    l.serve(BRIDGE);
    let _first = chat(&mut l, "Hi");
    let (id1, _) = l.generate();
    let gone = chat(&mut l, "Never mind");
    let mut refused = chat(&mut l, "One too many");
    assert!(matches!(
        replies(&mut refused).as_slice(),
        [Reply::Error { message }] if message.contains("`[chat] queue`")
    ));
    // The waiting client leaves (Ctrl-C): its place goes to the next one.
    drop(gone);
    assert_eq!(l.sup.status().queued, 0);
    let mut next = chat(&mut l, "Me next");
    assert_eq!(queued_ahead(&replies(&mut next)), Some(1));
    l.done(id1, StopReason::EndOfText);
    let (_, messages) = l.generate();
    assert_eq!(messages.last().map(|m| m.text.as_str()), Some("Me next"));
}

#[test]
fn with_no_queue_a_second_chat_while_one_streams_is_refused() {
    let mut l = Loop::new("[chat]\nqueue = 0\n", None);
    l.serve(LLM);
    l.serve(BRIDGE);
    let _first = chat(&mut l, "Hi");
    let mut second = chat(&mut l, "Again");
    assert!(matches!(
        replies(&mut second).as_slice(),
        [Reply::Error { message }] if message.contains("still streaming")
    ));
}

#[test]
fn waiting_chats_hear_why_when_the_llm_fails_or_the_supervisor_stops() {
    let mut l = Loop::up();
    let _first = chat(&mut l, "Hi");
    let _ = l.generate();
    let mut waiting = chat(&mut l, "Later");
    let _ = replies(&mut waiting);
    l.request(Request::Shutdown);
    l.run_for(Duration::from_secs(10));
    let got = replies(&mut waiting);
    assert!(
        matches!(got.last(), Some(Reply::Error { message }) if message.contains("shutting down")),
        "{got:?}"
    );
}

#[test]
fn a_fatal_load_error_fails_the_llm_without_restarts() {
    let mut l = Loop::new("", None);
    let generation = l.generation(LLM);
    let (tx, rx) = mpsc::channel(64);
    l.inbox.insert(LLM, rx);
    l.handle(Event::WorkerConnected {
        kind: LLM,
        generation,
        tx,
    });
    l.send(LLM, FromWorker::Ready);
    l.send(
        LLM,
        FromWorker::Fatal {
            reason: "no such model file".into(),
        },
    );
    l.exit(LLM, ExitStatus::Code(1));
    assert_eq!(l.state(LLM), WorkerState::Failed);
    assert_eq!(l.spawned(LLM), 1);
    l.run_for(60 * SECOND);
    assert_eq!(
        l.spawned(LLM),
        1,
        "nothing to retry until the cause is fixed"
    );
    assert!(l
        .worker(LLM)
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("no such model file")));
}

#[test]
fn the_status_reports_states_restarts_and_the_session() {
    let mut l = Loop::up();
    l.run_for(60 * SECOND);
    l.exit(BRIDGE, ExitStatus::Signal(9));
    let mut rx = l.request(Request::Status);
    let got = replies(&mut rx);
    let [Reply::Status(status)] = got.as_slice() else {
        panic!("{got:?}");
    };
    let bridge = status
        .workers
        .iter()
        .find(|w| w.kind == BRIDGE)
        .expect("bridge");
    assert_eq!(bridge.restarts, 1);
    assert_eq!(bridge.last_exit, Some(ExitStatus::Signal(9)));
    assert_eq!(status.uptime_ms, 60_000);
    assert_eq!(status.profile, "cpu");
}

#[test]
fn a_stop_that_arrives_after_a_hang_kill_keeps_the_worker_stopped() {
    let mut l = Loop::up();
    l.silent.push(BRIDGE);
    while !l.kill_asked(BRIDGE) {
        l.run_for(Duration::from_millis(100));
    }
    // Killed for hanging, its exit not seen yet: a stop now decides what the exit means.
    let mut stop = l.request(Request::Stop { worker: BRIDGE });
    assert_eq!(l.state(BRIDGE), WorkerState::Stopping);
    l.exit(BRIDGE, ExitStatus::Signal(9));
    assert!(matches!(replies(&mut stop).as_slice(), [Reply::Ok]));
    assert_eq!(l.state(BRIDGE), WorkerState::Stopped);
    l.run_for(60 * SECOND);
    assert_eq!(l.spawned(BRIDGE), 1, "not restarted as a crash");
}

mod api;
