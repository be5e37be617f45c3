//! Worker processes: spawning one, what its messages mean, and what its exit means (a restart,
//! a backoff, a rung down, or a failure).

use super::*;

impl Supervisor {
    pub(super) fn spawn(&mut self, kind: WorkerKind) {
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
                w.failed = false;
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

    pub(super) fn spawn_process(
        &mut self,
        kind: WorkerKind,
        generation: u64,
    ) -> anyhow::Result<Process> {
        let token = AuthToken::generate()?;
        let log_starts = worker_logs(&self.opts.settings.state_dir, kind).map(|p| file_len(&p));
        self.auth.expect_worker(kind, token.clone(), generation);
        let offloads = self
            .rung(&self.profile)
            .is_some_and(|r| r.profile.n_gpu_layers > 0);
        let launched = self.launcher.launch(Launch {
            kind,
            generation,
            token: &token,
            hide_gpu: kind == WorkerKind::Llm && !offloads,
        });
        let Launched { pid, kill } = match launched {
            Ok(launched) => launched,
            Err(e) => {
                self.auth.forget(kind, generation);
                return Err(e);
            }
        };
        self.auth.spawned(kind, generation, pid);
        let now = self.now;
        Ok(Process {
            generation,
            pid,
            spawned_at: now,
            kill: Some(kill),
            tx: None,
            reached: Reached::Spawned,
            stage: Stage::Running,
            last_answer: now,
            next_seq: 0,
            unanswered: 0,
            profile: None,
            log_starts,
        })
    }

    /// Asks the process to exit within the grace period; SIGKILL after it.
    pub(super) fn shut_down(&mut self, kind: WorkerKind, intent: Intent) {
        let grace = self.opts.settings.policy.grace;
        let now = self.now;
        let w = self.worker(kind);
        let Some(p) = &mut w.process else {
            return;
        };
        match &mut p.stage {
            // Already on its way out: only what its exit means changes.
            Stage::Stopping {
                intent: current, ..
            } => {
                *current = intent;
                return;
            }
            Stage::Killed { intent: current } => {
                *current = intent;
                w.failed = false;
                return;
            }
            Stage::Running => {}
        }
        w.failed = false;
        let asked = p.send(ToWorker::Shutdown {
            grace_ms: grace.as_millis() as u32,
        });
        p.stage = Stage::Stopping {
            intent,
            kill_at: now + grace,
        };
        if !asked {
            // Not connected yet (or its queue is full): nothing to wait for.
            p.kill();
        }
    }

    pub(super) fn on_message(&mut self, kind: WorkerKind, generation: u64, msg: FromWorker) {
        // Reply traffic is matched by request id, so a late chunk from a process that just
        // died still counts (it was streamed before the crash).
        match msg {
            FromWorker::Chunk { .. } | FromWorker::Done { .. } | FromWorker::Failed { .. }
                if kind != WorkerKind::Llm =>
            {
                return ignored(kind, "reply traffic from a worker that is not the LLM")
            }
            FromWorker::Api(_) if kind != WorkerKind::Api => {
                return ignored(kind, "API calls from a worker that is not the API's")
            }
            FromWorker::Api(call) => return self.on_api_call(generation, call),
            FromWorker::Chunk { request_id, text } => return self.on_chunk(request_id, text),
            FromWorker::Done { request_id, stats } => return self.on_done(request_id, stats),
            FromWorker::Failed {
                request_id,
                reason,
                client_error,
            } => {
                if self.is_turn_request(request_id) {
                    let status = if client_error { 400 } else { 500 };
                    self.fail_turn(format!("the LLM could not answer: {reason}"), status);
                }
                return;
            }
            _ => {}
        }
        let now = self.now;
        let Some(p) = self.process(kind, generation) else {
            return;
        };
        p.last_answer = now;
        p.unanswered = 0;
        match msg {
            FromWorker::Ready => {
                p.reached = p.reached.max(Reached::Ready);
                let pid = p.pid.unwrap_or(0);
                let start = match kind {
                    WorkerKind::Llm => self.load_message(),
                    WorkerKind::Bridge => {
                        self.avatar_behind = false;
                        ToWorker::Unity {
                            options: self.opts.settings.unity.options.clone(),
                            avatar: self.avatar.clone(),
                        }
                    }
                    WorkerKind::Api => ToWorker::ApiStart(Box::new(self.api_options())),
                };
                if let Some(p) = self.process(kind, generation) {
                    p.send(start);
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
                p.reached = Reached::Loaded;
                p.profile = Some(report.profile.clone());
                let pid = p.pid.unwrap_or(0);
                self.threads_chosen = Some((report.n_threads, self.now));
                let estimated_bytes = self
                    .rung(&report.profile)
                    .map_or(0, |r| r.estimated_vram_bytes);
                self.set_footprint(Some(LlmFootprint {
                    pid,
                    estimated_bytes,
                }));
                self.pressure.settled();
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
    pub(super) fn load_message(&self) -> ToWorker {
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
                if self.now - at < THREADS_REUSE {
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

    pub(super) fn on_exit(&mut self, kind: WorkerKind, generation: u64, status: ExitStatus) {
        let now = self.now;
        self.auth.forget(kind, generation);
        let w = self.worker(kind);
        let Some(p) = w.process.take_if(|p| p.generation == generation) else {
            return;
        };
        let ran_for = now - p.spawned_at;
        w.last_exit = Some(status);
        // A dead process has no RSS, and a dead bridge no Unity connection.
        w.vitals = WorkerVitals::default();
        let killed = matches!(p.stage, Stage::Killed { .. });
        let intent = p.intent().clone();
        let expected = intent != Intent::None;
        let level = if expected { Level::Info } else { Level::Warn };
        self.record(
            level,
            Some(kind),
            EventKind::Exited { status, expected },
            format!(
                "{kind} worker (pid {}) {} after {:.1} s",
                p.pid.unwrap_or(0),
                status.describe(),
                ran_for.as_secs_f32()
            ),
        );
        if kind == WorkerKind::Api {
            self.api_worker_gone();
        }
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
        match intent {
            Intent::Restart if !self.stopping => {
                self.worker(kind).restarts += 1;
                self.spawn(kind);
            }
            Intent::Fail(reason) => self.fail(kind, reason),
            Intent::Stop | Intent::Restart => {
                self.worker(kind).failed = false;
                self.end_turn_if_llm_gone(kind);
            }
            Intent::None if self.stopping => self.worker(kind).failed = false,
            // A process killed for hanging did not die of what its logs say.
            Intent::None => {
                let logs = (!killed).then_some(&p.log_starts);
                self.after_crash(kind, status, ran_for, logs)
            }
        }
        self.answer_waiters(kind);
    }

    /// The process clients waited for has exited: a stop is done, and a start is done when a
    /// new process runs.
    pub(super) fn answer_waiters(&mut self, kind: WorkerKind) {
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
                            w.last_error.as_deref().unwrap_or(w.state().as_str())
                        )
                    },
                },
            };
            let _ = client.try_send(reply);
        }
    }

    pub(super) fn after_crash(
        &mut self,
        kind: WorkerKind,
        status: ExitStatus,
        ran_for: Duration,
        log_starts: Option<&[u64; 2]>,
    ) {
        let policy = self.opts.settings.policy;
        let now = self.now;
        // A process killed for hanging (no `log_starts`) keeps the last error that says so.
        if log_starts.is_some() {
            self.worker(kind).last_error = Some(format!("{} unexpectedly", status.describe()));
        }
        if kind == WorkerKind::Llm {
            let oom = if status == ExitStatus::Code(EXIT_LOAD_FAILED) {
                Some("could not create its context".to_string())
            } else if status.is_out_of_memory() {
                Some(status.describe())
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
                w.failed = false;
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

    pub(super) fn fail(&mut self, kind: WorkerKind, reason: String) {
        let w = self.worker(kind);
        w.failed = true;
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
}
