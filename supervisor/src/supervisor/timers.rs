//! Deadlines: backoff restarts, grace periods, start deadlines and heartbeats, and killing a
//! worker that hangs.

use super::*;

impl Supervisor {
    pub(super) fn next_deadline(&self) -> Instant {
        let policy = &self.opts.settings.policy;
        let mut next = self.next_heartbeat;
        for w in &self.workers {
            next = next.min(w.restart_at.unwrap_or(next));
            match w.process.as_ref().map(|p| (&p.stage, p)) {
                Some((Stage::Stopping { kill_at, .. }, _)) => next = next.min(*kill_at),
                Some((Stage::Running, p)) if !p.ready() => {
                    next = next.min(p.spawned_at + policy.start_deadline);
                }
                _ => {}
            }
        }
        next
    }

    pub(super) fn tick(&mut self, now: Instant) {
        self.now = now;
        let policy = self.opts.settings.policy;
        for kind in WorkerKind::ALL {
            let stopping = self.stopping;
            let w = self.worker(kind);
            if w.restart_at.is_some_and(|t| t <= now) && !stopping {
                w.restarts += 1;
                self.spawn(kind);
                continue;
            }
            let Some(p) = &mut self.worker(kind).process else {
                continue;
            };
            match p.stage {
                Stage::Stopping { kill_at, .. } if kill_at <= now => p.kill(),
                Stage::Running if !p.ready() && now - p.spawned_at >= policy.start_deadline => {
                    let secs = policy.start_deadline.as_secs();
                    self.hung(kind, now, format!("did not start within {secs} s"));
                }
                _ => {}
            }
        }
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + policy.heartbeat;
            self.heartbeats(now);
        }
    }

    /// Sends heartbeats and kills workers that stopped answering or stopped making progress.
    pub(super) fn heartbeats(&mut self, now: Instant) {
        let policy = self.opts.settings.policy;
        for kind in WorkerKind::ALL {
            let w = self.worker(kind);
            let stalled = w.vitals.llm.as_ref().filter(|v| {
                matches!(
                    v.phase,
                    mate_protocol::LlmPhase::Ingesting | mate_protocol::LlmPhase::Generating
                )
            });
            let stalled_ms = stalled.map_or(0, |v| v.stalled_ms);
            let Some(p) = &mut w.process else { continue };
            if p.tx.is_none() || p.stage != Stage::Running {
                continue;
            }
            let silent = now - p.last_answer;
            // Both: enough heartbeats went out unanswered (a stalled supervisor sent none, so
            // it never blames a worker for its own pause), and for long enough.
            if p.unanswered >= policy.missed_heartbeats && silent > policy.silence_limit() {
                let missed = policy.missed_heartbeats;
                let ms = silent.as_millis();
                self.hung(
                    kind,
                    now,
                    format!("missed {missed} heartbeats (silent for {ms} ms)"),
                );
            } else if stalled_ms > policy.stall.as_millis() as u64 {
                self.hung(
                    kind,
                    now,
                    format!("made no progress for {stalled_ms} ms while decoding"),
                );
            } else {
                p.next_seq += 1;
                p.unanswered += 1;
                let seq = p.next_seq;
                p.send(ToWorker::Heartbeat { seq });
            }
        }
    }

    pub(super) fn hung(&mut self, kind: WorkerKind, now: Instant, why: String) {
        let Some(p) = &mut self.worker(kind).process else {
            return;
        };
        let silent_ms = (now - p.last_answer).as_millis() as u64;
        let pid = p.pid.unwrap_or(0);
        p.kill();
        // Stop watching it; the exit comes as an event.
        p.tx = None;
        self.worker(kind).last_error = Some(format!("hung: {why}"));
        self.record(
            Level::Warn,
            Some(kind),
            EventKind::HangDetected { silent_ms },
            format!("{kind} worker (pid {pid}) {why}: killing it"),
        );
    }
}
