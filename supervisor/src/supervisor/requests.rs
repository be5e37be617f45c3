//! Client requests (`mate ctl`, the console): status, restarts, stop and start, profiles,
//! the session, fault injection, the avatar, and shutting down.

use super::*;

impl Supervisor {
    pub(super) fn on_request(&mut self, request: Request, reply: mpsc::Sender<Reply>, pid: u32) {
        // Formatted only when debug logging is on.
        debug!(pid, request = describe_request(&request), "request");
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
                    let state = match (w.state(), w.process.as_ref().is_some_and(Process::ready)) {
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
    pub(super) fn clear_session(&mut self) -> Result<Option<Reply>, String> {
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

    pub(super) fn status(&self) -> StatusReport {
        StatusReport {
            supervisor_pid: std::process::id(),
            uptime_ms: (self.now - self.started).as_millis() as u64,
            workers: self
                .workers
                .iter()
                .map(|w| w.report(&self.profile, self.now))
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
            queued: self.queued() as u32,
        }
    }

    pub(super) fn restart(
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
    pub(super) fn respawn(&mut self, kind: WorkerKind) {
        let w = self.worker(kind);
        w.history.clear();
        if w.process.is_some() {
            self.shut_down(kind, Intent::Restart);
        } else {
            w.restarts += 1;
            self.spawn(kind);
        }
    }

    pub(super) fn stop_worker(&mut self, kind: WorkerKind) {
        let w = self.worker(kind);
        w.restart_at = None;
        if w.process.is_some() {
            self.shut_down(kind, Intent::Stop);
        } else {
            w.failed = false;
            self.end_turn_if_llm_gone(kind);
        }
    }

    /// `Ok(true)` when the start waits for the current process to exit (it was being
    /// stopped: the start wins, and a new process follows the old one).
    pub(super) fn start_worker(&mut self, kind: WorkerKind) -> Result<bool, String> {
        if self.stopping {
            return Err("the supervisor is shutting down".into());
        }
        let w = self.worker(kind);
        match &mut w.process {
            Some(Process {
                stage: Stage::Stopping { intent, .. } | Stage::Killed { intent },
                ..
            }) if matches!(intent, Intent::Stop | Intent::Fail(_)) => {
                *intent = Intent::Restart;
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
    pub(super) fn answer_when_exited(
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

    pub(super) fn set_profile(&mut self, name: String) -> Result<Option<Reply>, String> {
        if self.change_profile(name, "asked for by ctl profile")? {
            let llm = self.worker(WorkerKind::Llm);
            if !matches!(llm.state(), WorkerState::Stopped | WorkerState::Failed) {
                self.respawn(WorkerKind::Llm);
            }
        }
        Ok(Some(Reply::Ok))
    }

    pub(super) fn stop(&mut self, why: &'static str) {
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
        self.fail_turn("the supervisor is shutting down".into(), 503);
        for kind in WorkerKind::ALL {
            self.stop_worker(kind);
        }
    }
}
