//! The turn in progress: sending it to the LLM worker (again after a restart, with the reply
//! so far), streaming the reply to its client and the avatar, and recording it when complete.
//!
//! A turn is asked for by a chat client (`ctl chat`, the console: a companion turn, which
//! goes into the transcript) or by an HTTP client of the API worker (stateless: the client
//! sends the history, and nothing is recorded). Both wait in one FIFO and resume the same way.

use mate_protocol::{ApiEvent, ApiInput, Sampling};

use super::*;

/// What a turn answers.
#[derive(Debug, Clone)]
pub(super) enum Asked {
    /// A companion turn: the user's message, answered in the conversation.
    Chat(String),
    /// An API generation: the client's own conversation or prompt.
    Api { input: ApiInput, sampling: Sampling },
}

/// Where a turn's reply goes.
#[derive(Debug, Clone)]
pub(super) enum Client {
    /// `ctl chat` or the console.
    Chat(mpsc::Sender<Reply>),
    /// An HTTP client of the API worker: events under the call's id.
    Api { id: u64, tx: mpsc::Sender<ToWorker> },
}

impl Client {
    pub(super) fn is_closed(&self) -> bool {
        match self {
            Client::Chat(tx) => tx.is_closed(),
            Client::Api { tx, .. } => tx.is_closed(),
        }
    }

    /// Passes `reply` on as the client understands it; `false` when it is gone or too far
    /// behind.
    pub(super) fn tell(&self, reply: Reply) -> bool {
        let (id, tx) = match self {
            Client::Chat(tx) => return tx.try_send(reply).is_ok(),
            Client::Api { id, tx } => (*id, tx),
        };
        let event = match reply {
            Reply::Chunk { text } => ApiEvent::Chunk { text },
            Reply::ChatDone { stats } => ApiEvent::Done { stats },
            Reply::Event(event) => match event.kind {
                EventKind::TurnQueued { ahead } => ApiEvent::Queued { ahead },
                EventKind::ReplyResumed { streamed_chars } => ApiEvent::Resumed { streamed_chars },
                _ => return true,
            },
            // Refusals go through `refuse`, with their status.
            Reply::Error { .. } | Reply::Ok | Reply::Status(_) => return true,
        };
        tx.try_send(ToWorker::Api { id, event }).is_ok()
    }

    /// The turn cannot happen or complete: `status` is what an HTTP client is answered with.
    pub(super) fn refuse(&self, refusal: Refusal) {
        let Refusal { status, message } = refusal;
        match self {
            Client::Chat(tx) => {
                let _ = tx.try_send(Reply::Error { message });
            }
            Client::Api { id, tx } => {
                let retry_after_s = if matches!(status, 429 | 503) { 2 } else { 0 };
                let event = ApiEvent::Failed {
                    status,
                    message,
                    retry_after_s,
                };
                let _ = tx.try_send(ToWorker::Api { id: *id, event });
            }
        }
    }

    fn api_id(&self) -> Option<u64> {
        match self {
            Client::Api { id, .. } => Some(*id),
            Client::Chat(_) => None,
        }
    }
}

/// Why a turn was refused, with the HTTP status an API client gets: 429 for a full queue,
/// 503 for an LLM that is not there, 500 for one that failed the request.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Refusal {
    pub(super) status: u16,
    pub(super) message: String,
}

impl Refusal {
    fn new(status: u16, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

/// A turn waiting in the queue for the reply in progress.
#[derive(Debug)]
pub(super) struct QueuedTurn {
    pub(super) asked: Asked,
    pub(super) client: Client,
    pub(super) since: Instant,
}

/// A turn whose reply is not complete.
#[derive(Debug)]
pub(super) struct ActiveTurn {
    /// The transcript's turn number (0 for an API turn, which is not recorded).
    pub(super) number: u64,
    pub(super) asked: Asked,
    pub(super) user_at_ms: u64,
    /// The reply so far, exactly as streamed to the client.
    pub(super) partial: String,
    /// The request the current LLM process works on; `None` until it has been sent.
    pub(super) request_id: Option<u64>,
    /// The request of a process that just died: what it streamed before dying may still be
    /// on its way, and counts until the next process takes the turn over.
    pub(super) orphan: Option<u64>,
    pub(super) client: Option<Client>,
    /// Times a worker crash interrupted the reply.
    pub(super) resumed: u32,
    pub(super) cancelled: bool,
    /// Takes expression tags out of the reply and turns tags and keywords into expressions;
    /// `None` for a turn that does not drive the avatar (its text goes out untouched).
    pub(super) cues: Option<CueFilter>,
    /// The avatar has left "thinking" for this reply.
    pub(super) talking: bool,
}

impl ActiveTurn {
    pub(super) fn tell(&mut self, reply: Reply) {
        if let Some(client) = &self.client {
            if !client.tell(reply) {
                // Gone or too far behind: the turn goes on without it.
                self.client = None;
            }
        }
    }

    /// "turn 7", or "an API request".
    pub(super) fn name(&self) -> String {
        match self.asked {
            Asked::Chat(_) => format!("turn {}", self.number),
            Asked::Api { .. } => "an API request".into(),
        }
    }

    /// The API call this turn answers, if it is one.
    pub(super) fn api_id(&self) -> Option<u64> {
        self.client.as_ref().and_then(Client::api_id)
    }
}

impl Supervisor {
    pub(super) fn llm_loaded(&mut self) -> bool {
        self.worker(WorkerKind::Llm)
            .process
            .as_ref()
            .is_some_and(Process::serving_model)
    }

    /// The conversation as the LLM sees it: system prompt and every completed turn.
    pub(super) fn conversation(&self) -> Vec<ChatMessage> {
        let system = &self.opts.settings.chat.system;
        let mut messages = Vec::new();
        if !system.is_empty() {
            messages.push(ChatMessage {
                role: ChatRole::System,
                text: system.clone(),
            });
        }
        messages.extend(self.transcript.messages());
        messages
    }

    /// A model was loaded: continue the turn in progress, or warm the cache with the session.
    pub(super) fn after_load(&mut self) {
        if self.turn.is_some() {
            return self.send_turn();
        }
        if !self.transcript.is_empty() {
            let request_id = self.next_request;
            self.next_request += 1;
            let messages = self.conversation();
            if let Some(p) = &self.worker(WorkerKind::Llm).process {
                p.send(ToWorker::Ingest {
                    request_id,
                    messages,
                });
            }
        }
    }

    /// Sends the turn in progress to the LLM worker: the whole conversation, the user's
    /// message, and the reply so far when it resumes.
    pub(super) fn send_turn(&mut self) {
        if !self.llm_loaded() {
            debug!("the turn waits for the model to load");
            return;
        }
        let request_id = self.next_request;
        self.next_request += 1;
        let Some(turn) = &self.turn else { return };
        let resuming = turn.request_id.is_none() && turn.resumed > 0;
        let streamed = turn.partial.chars().count() as u32;
        let generate = match &turn.asked {
            Asked::Chat(user) => {
                let mut messages = self.conversation();
                messages.push(ChatMessage {
                    role: ChatRole::User,
                    text: user.clone(),
                });
                ToWorker::Generate {
                    request_id,
                    messages: with_partial(messages, &turn.partial),
                    sampling: self.opts.settings.chat.sampling.clone(),
                    snapshot: true,
                }
            }
            Asked::Api {
                input: ApiInput::Chat(messages),
                sampling,
            } => ToWorker::Generate {
                request_id,
                messages: with_partial(messages.clone(), &turn.partial),
                sampling: sampling.clone(),
                snapshot: false,
            },
            Asked::Api {
                input: ApiInput::Prompt(prompt),
                sampling,
            } => ToWorker::Complete {
                request_id,
                prompt: format!("{prompt}{}", turn.partial),
                sampling: sampling.clone(),
            },
        };
        let sent = self
            .worker(WorkerKind::Llm)
            .process
            .as_ref()
            .is_some_and(|p| p.send(generate));
        debug!(request_id, sent, "the turn sent to the LLM worker");
        // Not sent (the worker is being replaced): the next one gets it after loading.
        if let Some(turn) = &mut self.turn {
            turn.request_id = sent.then_some(request_id);
        }
        if resuming && sent {
            self.metrics.resumed();
            self.record(
                Level::Info,
                Some(WorkerKind::Llm),
                EventKind::ReplyResumed {
                    streamed_chars: streamed,
                },
                format!("resuming the reply after {streamed} characters"),
            );
        }
    }

    /// Whether `request_id` is the turn's: the one the LLM works on, or, until the next
    /// process takes over, the one of the process that just died.
    pub(super) fn is_turn_request(&self, request_id: u64) -> bool {
        self.turn.as_ref().is_some_and(|t| match t.request_id {
            Some(id) => id == request_id,
            None => t.orphan == Some(request_id),
        })
    }

    pub(super) fn on_chunk(&mut self, request_id: u64, text: String) {
        if !self.is_turn_request(request_id) {
            return;
        }
        let Some(turn) = &mut self.turn else { return };
        // The model keeps seeing its own tags (resumes and the transcript get the text as it
        // was written); the client sees it without them.
        turn.partial.push_str(&text);
        match &mut turn.cues {
            Some(cues) => {
                let (visible, cues) = cues.push(&text);
                self.show(visible, cues, false);
            }
            None => turn.tell(Reply::Chunk { text }),
        }
    }

    /// Sends the client the visible part of the reply and the avatar its cues. The first text
    /// without a cue ends "thinking", and so does the `end` of the turn (failed, cancelled, or
    /// no text) if nothing did before.
    pub(super) fn show(&mut self, visible: String, cues: Vec<String>, end: bool) {
        let Some(turn) = self.turn.as_mut().filter(|t| t.cues.is_some()) else {
            return;
        };
        let avatar = &self.opts.settings.avatar;
        let mut show: Vec<AvatarCommand> = cues.iter().map(|e| avatar.expression(e)).collect();
        let started = end || !(visible.is_empty() && show.is_empty());
        let first = started && !std::mem::replace(&mut turn.talking, true);
        if first && show.is_empty() && !avatar.talking.is_empty() {
            show.push(avatar.expression(&avatar.talking));
        }
        if !visible.is_empty() {
            turn.tell(Reply::Chunk { text: visible });
        }
        for cmd in show {
            self.tell_avatar(cmd);
        }
    }

    /// Sends a command to the bridge worker and remembers it as the avatar's state. A bridge
    /// that is not running gets the state when it comes back, and one that is behind at its
    /// next heartbeat.
    pub(super) fn tell_avatar(&mut self, cmd: AvatarCommand) -> bool {
        let state = cmd.part().is_some();
        if state {
            set_avatar_part(&mut self.avatar, cmd.clone(), |c| c);
        }
        let sent = self.send_avatar(cmd);
        self.avatar_behind |= state && !sent;
        sent
    }

    pub(super) fn send_avatar(&mut self, cmd: AvatarCommand) -> bool {
        self.worker(WorkerKind::Bridge)
            .process
            .as_ref()
            .is_some_and(|p| p.ready() && p.send(ToWorker::Avatar(cmd)))
    }

    /// The avatar's whole state again, for a bridge that missed part of it (Unity may be told a
    /// part it already shows; setting it again changes nothing).
    pub(super) fn catch_up_avatar(&mut self) {
        if self.avatar_behind {
            let state = self.avatar.clone();
            self.avatar_behind = !state.into_iter().all(|cmd| self.send_avatar(cmd));
        }
    }

    pub(super) fn on_done(&mut self, request_id: u64, stats: GenerationStats) {
        if !self.is_turn_request(request_id) {
            return;
        }
        let restarting = self
            .worker(WorkerKind::Llm)
            .process
            .as_ref()
            .is_some_and(|p| *p.intent() == Intent::Restart);
        let Some(turn) = &mut self.turn else { return };
        if stats.stop == StopReason::Cancelled && !turn.cancelled && restarting {
            // Stopped by the restart we asked for, not by the user: the next process
            // continues the reply.
            if turn.request_id.take().is_some() {
                turn.resumed += 1;
            }
            return;
        }
        if turn.request_id.is_none() {
            // The dying process finished after all: nothing was resumed.
            turn.resumed = turn.resumed.saturating_sub(1);
        }
        self.complete_turn(stats);
    }

    /// The reply is complete (or cancelled): record the turn and tell the client.
    pub(super) fn complete_turn(&mut self, stats: GenerationStats) {
        // What the filter held back (a `[` that never became a tag) is text after all.
        if let Some(cues) = self.turn.as_mut().and_then(|t| t.cues.as_mut()) {
            let (rest, cues) = cues.finish();
            self.show(rest, cues, true);
        }
        let Some(mut turn) = self.turn.take() else {
            return;
        };
        self.metrics
            .turn_done(&stats, matches!(turn.asked, Asked::Api { .. }));
        let user = match &turn.asked {
            Asked::Chat(user) => user.clone(),
            // Stateless: the client keeps its own history.
            Asked::Api { .. } => {
                turn.tell(Reply::ChatDone { stats });
                return self.next_turn();
            }
        };
        let number = turn.number;
        let record = session::Turn {
            user: session::Line {
                turn: number,
                role: "user".into(),
                text: user,
                at_ms: turn.user_at_ms,
                tokens: None,
                stop: None,
                resumed: 0,
            },
            reply: session::Line {
                turn: number,
                role: "assistant".into(),
                text: turn.partial.clone(),
                at_ms: now_ms(),
                tokens: Some(stats.generated_tokens),
                stop: Some(stop_name(&stats.stop)),
                resumed: turn.resumed,
            },
        };
        if let Err(e) = self.transcript.push(record) {
            let path = Transcript::path_in(&self.opts.settings.state_dir);
            let unsaved = self.transcript.unsaved() as u64;
            let event = self.journal.record(
                Level::Error,
                None,
                EventKind::TurnNotSaved {
                    turn: number,
                    unsaved,
                },
                format!(
                    "turn {number} is not saved: cannot write {}: {e}. Unsaved turns ({unsaved}) are kept \
                     in memory and written with the next turn; free disk space (or fix the \
                     permissions) before the supervisor stops, or they are lost",
                    path.display()
                ),
            );
            // The client whose turn it is hears it, not only the journal's followers.
            turn.tell(Reply::Event(event));
        }
        turn.tell(Reply::ChatDone { stats });
        self.next_turn();
    }

    /// The turn cannot complete: `status` is what an API client is answered with (503 when
    /// the LLM is gone, 500 when it failed the request).
    pub(super) fn fail_turn(&mut self, reason: String, status: u16) {
        self.show(String::new(), Vec::new(), true);
        let Some(turn) = self.turn.take() else {
            return;
        };
        self.journal.record(
            Level::Warn,
            Some(WorkerKind::Llm),
            EventKind::TurnFailed {
                reason: reason.clone(),
            },
            format!("{} failed: {reason}", turn.name()),
        );
        if let Some(client) = &turn.client {
            client.refuse(Refusal::new(status, reason));
        }
        self.next_turn();
    }

    /// The LLM worker will not come back on its own: the turn cannot complete.
    pub(super) fn end_turn_if_llm_gone(&mut self, kind: WorkerKind) {
        if kind != WorkerKind::Llm || self.turn.is_none() {
            return;
        }
        if let Some(why) = self.llm_gone() {
            self.fail_turn(why, 503);
        }
    }

    /// Why no turn can be answered until someone starts the LLM worker again (failed or
    /// stopped); `None` while it serves or will on its own (starting, restarting).
    pub(super) fn llm_gone(&mut self) -> Option<String> {
        let w = self.worker(WorkerKind::Llm);
        match w.state() {
            WorkerState::Failed => Some(format!(
                "the LLM worker failed: {}; fix the cause, then `mate ctl start llm`",
                w.last_error.as_deref().unwrap_or("unknown")
            )),
            WorkerState::Stopped => {
                Some("the LLM worker is stopped; `mate ctl start llm` starts it again".to_string())
            }
            _ => None,
        }
    }

    /// A chat from `ctl chat` or the console.
    pub(super) fn chat(&mut self, text: String, reply: mpsc::Sender<Reply>) -> Result<(), String> {
        if text.trim().is_empty() {
            return Err("nothing to say: the message is empty".into());
        }
        self.enqueue(Asked::Chat(text), Client::Chat(reply))
            .map_err(|r| r.message)
    }

    /// A turn from any client: it starts now, or waits in the one FIFO for every client while
    /// a reply streams (its client hears how many turns go first).
    pub(super) fn enqueue(&mut self, asked: Asked, client: Client) -> Result<(), Refusal> {
        if self.stopping {
            return Err(Refusal::new(503, "the supervisor is shutting down"));
        }
        let Some(turn) = &self.turn else {
            return self.start_turn(asked, client, self.now);
        };
        let name = turn.name();
        let limit = self.opts.settings.chat.queue;
        self.queue.retain(|q| !q.client.is_closed());
        if self.queue.len() >= limit {
            return Err(Refusal::new(
                429,
                if limit == 0 {
                    format!("a reply is still streaming ({name}); wait for it or `mate ctl cancel`")
                } else {
                    format!(
                        "{limit} requests already wait for the reply in progress ({name}), as \
                         many as `[chat] queue` allows; try again when it is done"
                    )
                },
            ));
        }
        let ahead = self.queue.len() as u32 + 1;
        let event = self.journal.record(
            Level::Info,
            None,
            EventKind::TurnQueued { ahead },
            format!("a chat waits for its turn: {ahead} ahead"),
        );
        client.tell(Reply::Event(event));
        self.queue.push_back(QueuedTurn {
            asked,
            client,
            since: self.now,
        });
        Ok(())
    }

    /// The waiting turns whose clients are still there.
    pub(super) fn queued(&self) -> usize {
        self.queue.iter().filter(|q| !q.client.is_closed()).count()
    }

    /// The turn ended: the next waiting turn whose client is still there starts, or hears
    /// why it cannot.
    pub(super) fn next_turn(&mut self) {
        while self.turn.is_none() {
            let Some(QueuedTurn {
                asked,
                client,
                since,
            }) = self.queue.pop_front()
            else {
                return;
            };
            if client.is_closed() {
                continue;
            }
            if let Err(refusal) = self.start_turn(asked, client.clone(), since) {
                client.refuse(refusal);
            }
        }
    }

    fn start_turn(&mut self, asked: Asked, client: Client, since: Instant) -> Result<(), Refusal> {
        if self.stopping {
            return Err(Refusal::new(503, "the supervisor is shutting down"));
        }
        if let Some(why) = self.llm_gone() {
            return Err(Refusal::new(503, why));
        }
        self.metrics.turn_started(self.now - since);
        let (number, avatar) = match &asked {
            Asked::Chat(_) => (self.transcript.len() + 1, true),
            Asked::Api { .. } => (0, self.opts.settings.api.avatar),
        };
        self.turn = Some(ActiveTurn {
            number,
            asked,
            user_at_ms: now_ms(),
            partial: String::new(),
            request_id: None,
            orphan: None,
            client: Some(client),
            resumed: 0,
            cancelled: false,
            cues: avatar.then(|| CueFilter::new(self.opts.settings.avatar.cues.clone())),
            talking: false,
        });
        let thinking = &self.opts.settings.avatar.thinking;
        if avatar && !thinking.is_empty() {
            let cmd = self.opts.settings.avatar.expression(thinking);
            self.tell_avatar(cmd);
        }
        // If the worker is (re)starting, the turn goes out once the model is loaded.
        self.send_turn();
        Ok(())
    }

    pub(super) fn cancel(&mut self) {
        let loaded = self.llm_loaded();
        let Some(turn) = &mut self.turn else { return };
        turn.cancelled = true;
        match turn.request_id {
            Some(request_id) if loaded => {
                if let Some(p) = &self.worker(WorkerKind::Llm).process {
                    p.send(ToWorker::Cancel { request_id });
                }
            }
            // Nobody is generating it (the worker is restarting): it ends here.
            _ => self.complete_turn(cancelled_stats()),
        }
    }
}

/// `messages` with the reply streamed so far as the assistant's last message, which the LLM
/// continues: appended to one the client left open (a prefill), or as a new message.
fn with_partial(mut messages: Vec<ChatMessage>, partial: &str) -> Vec<ChatMessage> {
    if partial.is_empty() {
        return messages;
    }
    match messages.last_mut() {
        Some(last) if last.role == ChatRole::Assistant => last.text.push_str(partial),
        _ => messages.push(ChatMessage {
            role: ChatRole::Assistant,
            text: partial.to_string(),
        }),
    }
    messages
}
