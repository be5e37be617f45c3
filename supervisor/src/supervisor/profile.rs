//! The profile ladder in action: the VRAM policy's verdicts on each GPU reading, downgrades
//! and upgrades, and explicit profile changes.

use super::*;

impl Supervisor {
    pub(super) fn rung(&self, name: &str) -> Option<&Rung> {
        self.ladder.iter().find(|r| r.profile.name == name)
    }

    pub(super) fn rung_index(&self) -> usize {
        self.ladder
            .iter()
            .position(|r| r.profile.name == self.profile)
            .unwrap_or(self.ladder.len() - 1)
    }

    /// Why a downgrade that is due cannot happen.
    pub(super) fn why_no_downgrade(&self) -> String {
        if self.opts.settings.gpu.auto_downgrade {
            format!(
                "the LLM is already on the lowest profile that helps ({})",
                self.profile
            )
        } else {
            "automatic downgrades are off (--no-auto-downgrade): `mate ctl profile NAME` lowers \
             it by hand"
                .to_string()
        }
    }

    pub(super) fn can_downgrade(&self) -> bool {
        self.opts.settings.gpu.auto_downgrade && self.rung_index() + 1 < self.ladder.len()
    }

    /// The next rung down that is estimated to need less VRAM than the current one.
    pub(super) fn lower_with_less_vram(&self) -> Option<usize> {
        let at = self.rung_index();
        let now = self.ladder[at].estimated_vram_bytes;
        (at + 1..self.ladder.len()).find(|&i| self.ladder[i].estimated_vram_bytes < now)
    }

    /// The next rung up, no higher than the ceiling, that is estimated to need more VRAM
    /// (a rung that needs the same would only reload the model).
    pub(super) fn higher_with_more_vram(&self) -> Option<usize> {
        let at = self.rung_index();
        let now = self.ladder[at].estimated_vram_bytes;
        (self.ceiling..at)
            .rev()
            .find(|&i| self.ladder[i].estimated_vram_bytes > now)
    }

    pub(super) fn set_footprint(&self, llm: Option<LlmFootprint>) {
        *self
            .footprint
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = llm;
    }

    pub(super) fn footprint(&self) -> Option<LlmFootprint> {
        *self
            .footprint
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a profile decision: an event, and the status's last decision.
    pub(super) fn decide(&mut self, level: Level, kind: EventKind, message: String) {
        match &kind {
            EventKind::Downgraded { cause, .. } => self.metrics.downgraded(*cause),
            EventKind::Upgraded { .. } => self.metrics.upgraded(),
            EventKind::VramAlert { .. } => self.metrics.alerted(),
            _ => {}
        }
        let event = self
            .journal
            .record(level, Some(WorkerKind::Llm), kind, message);
        if let Some(turn) = &mut self.turn {
            turn.tell(Reply::Event(event.clone()));
        }
        self.last_decision = Some(event);
    }

    /// Moves the LLM one rung down and restarts it there (at its next token boundary when
    /// it is generating). On the lowest rung, or with automatic downgrades off, the worker
    /// fails instead: the failure is loud, as those users asked. After a downgrade for VRAM
    /// pressure the LLM may climb back when the pressure clears; after one for a crash of the
    /// rung itself (out of memory, a crash loop), it stays below that rung until the user
    /// picks a profile.
    pub(super) fn downgrade_or_fail(
        &mut self,
        cause: DowngradeCause,
        reading: Option<VramReading>,
        why: &str,
    ) {
        if !self.can_downgrade() {
            let last = self.worker(WorkerKind::Llm).last_error.clone();
            let hint = self.why_no_downgrade();
            let mut reason = format!("the llm worker {why}; {hint}");
            if let Some(last) = last.filter(|l| !why.contains(l.as_str())) {
                reason.push_str(&format!(" (last error: {last})"));
            }
            return self.fail(WorkerKind::Llm, reason);
        }
        let failed = matches!(
            cause,
            DowngradeCause::OutOfMemory | DowngradeCause::CrashLoop
        );
        let lower = if failed {
            self.rung_index() + 1
        } else {
            // For room, only a rung that needs less VRAM helps.
            let Some(lower) = self.lower_with_less_vram() else {
                return;
            };
            lower
        };
        if failed {
            // The rung itself failed, not the room around it: automatic upgrades stop below
            // it until the user picks a profile again.
            self.ceiling = self.ceiling.max(lower);
        }
        let to = self.ladder[lower].profile.name.clone();
        let from = std::mem::replace(&mut self.profile, to.clone());
        self.pressure.rung_changed();
        self.decide(
            Level::Warn,
            EventKind::Downgraded {
                from: from.clone(),
                to: to.clone(),
                cause,
                reading,
            },
            format!("the llm worker {why}: lowering the profile from {from} to {to}"),
        );
        self.respawn(WorkerKind::Llm);
    }

    /// The LLM runs, on the current profile, and is not being replaced: readings describe it.
    pub(super) fn llm_settled(&self) -> bool {
        self.workers[WorkerKind::Llm as usize]
            .process
            .as_ref()
            .is_some_and(|p| {
                p.serving_model() && p.profile.as_deref() == Some(self.profile.as_str())
            })
    }

    pub(super) fn on_gpu(&mut self, reading: Result<VramReading, GpuError>) {
        let reading = match reading {
            Ok(reading) => reading,
            Err(e) => {
                let e = e.to_string();
                if self.gpu.note.as_ref() != Some(&e) {
                    self.journal.record(
                        Level::Warn,
                        None,
                        EventKind::Notice,
                        format!("cannot read the GPU: {e}"),
                    );
                    self.gpu.note = Some(e);
                }
                return;
            }
        };
        self.gpu.note = None;
        self.gpu.reading = Some(reading);
        if !self.llm_settled() {
            return;
        }
        let at = self.rung_index();
        let higher = self.higher_with_more_vram();
        let extra = higher.map(|h| {
            self.ladder[h]
                .estimated_vram_bytes
                .saturating_sub(self.ladder[at].estimated_vram_bytes)
        });
        // Readings are described only when a decision is made, not on every sample.
        match self.pressure.sample(self.now.into_std(), &reading, extra) {
            Verdict::Nothing => {}
            Verdict::Alert(why) => self.decide(
                Level::Warn,
                EventKind::VramAlert { reading },
                format!("{why} ({})", describe_reading(&reading)),
            ),
            Verdict::Downgrade { cause, why }
                if self.can_downgrade() && self.lower_with_less_vram().is_some() =>
            {
                self.downgrade_or_fail(
                    cause,
                    Some(reading),
                    &format!("needs room: {why} ({})", describe_reading(&reading)),
                );
            }
            Verdict::Downgrade { why, .. } => {
                if self.pressure.hold() {
                    let hint = self.why_no_downgrade();
                    self.decide(
                        Level::Warn,
                        EventKind::VramAlert { reading },
                        format!("{why} ({}); {hint}", describe_reading(&reading)),
                    );
                }
            }
            // Not in the middle of a reply: an upgrade is never urgent (the next reading asks
            // again).
            Verdict::Upgrade { why }
                if self.opts.settings.gpu.auto_upgrade && self.turn.is_none() =>
            {
                let Some(higher) = higher else { return };
                let to = self.ladder[higher].profile.name.clone();
                let from = std::mem::replace(&mut self.profile, to.clone());
                self.pressure.rung_changed();
                self.decide(
                    Level::Info,
                    EventKind::Upgraded {
                        from: from.clone(),
                        to: to.clone(),
                        reading,
                    },
                    format!(
                        "raising the LLM profile from {from} to {to}: {why} ({})",
                        describe_reading(&reading)
                    ),
                );
                self.respawn(WorkerKind::Llm);
            }
            Verdict::Upgrade { .. } => {}
        }
    }

    /// An explicit profile: it becomes the highest rung automatic upgrades return to, and
    /// the VRAM policy starts over from it. Whether the profile changed.
    pub(super) fn change_profile(&mut self, to: String, why: &str) -> Result<bool, String> {
        let auto = to == "auto";
        let to = if auto {
            // The suggestion for what the card holds without the LLM's own share; upgrades
            // may go all the way up again.
            let card = self.gpu.reading.map(|r| {
                let llm = self.footprint().map_or(0, |f| f.estimated_bytes);
                (r.total_bytes, r.used_bytes.saturating_sub(llm))
            });
            let below = self.pressure.thresholds().upgrade_below_percent;
            ladder::suggest(&self.ladder, card, below)
                .profile
                .name
                .clone()
        } else {
            to
        };
        let Some(at) = self.ladder.iter().position(|r| r.profile.name == to) else {
            return Err(unknown_profile(&self.ladder, &to));
        };
        self.ceiling = if auto { 0 } else { at };
        self.pressure.rung_changed();
        if to == self.profile {
            return Ok(false);
        }
        let from = std::mem::replace(&mut self.profile, to.clone());
        let estimate = gib(self.ladder[at].estimated_vram_bytes);
        self.decide(
            Level::Info,
            EventKind::ProfileChanged {
                from: from.clone(),
                to: to.clone(),
            },
            format!("profile {from} → {to} ({why}; estimated {estimate} of VRAM)"),
        );
        Ok(true)
    }
}
