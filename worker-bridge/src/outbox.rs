//! What goes to Unity, and when: the bridge's bookkeeping, with no I/O and time passed in.
//!
//! Commands wait one coalescing window (a frame, 16 ms by default) after the first of them
//! and then leave as one line: a single command as itself, several as a `batch`. Within the
//! window a newer command for the same part of the avatar (its model, blink, looping
//! animation or expression) replaces the unsent older one. One-shot animations are kept in
//! order; when too many wait (Unity away), the oldest go first.
//!
//! Every line sent waits for its answer, in order. Unity answers in the order it reads, so a
//! reply to a later line means the earlier unanswered ones were lost, and a line's answer is
//! overdue `ack_timeout` after both its sending and the last answer (a busy Unity that keeps
//! answering is not timing out). An overdue line is counted and kept as a *ghost* that a late
//! answer still consumes, so late answers never shift the matching; it is not re-sent,
//! because Unity may have done it.
//!
//! The avatar's state is the latest command for each part. After a (re)connect it is sent
//! first, in part order (the model first: loading one resets the rest), followed by the
//! one-shot animations still queued that are younger than the TTL. A state command Unity
//! refuses falls back to the last one it accepted, so a typo is never restored for ever.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use mate_protocol::{
    set_avatar_part,
    unity::{ReplyStatus, UnityCommand, UnityReply},
    AvatarCommand, AvatarPart, BridgeStatus, UnityOptions,
};

/// The time limits and sizes, from [`UnityOptions`].
#[derive(Debug, Clone)]
pub struct Timing {
    pub window: Duration,
    pub ack_timeout: Duration,
    pub ttl: Duration,
    /// Most one-shot commands waiting.
    pub queue_limit: usize,
    /// Most commands in one batch line.
    pub max_batch: usize,
    /// Most lines sent and not answered (ghosts aside); more wait in the queue.
    pub max_inflight: usize,
}

impl From<&UnityOptions> for Timing {
    fn from(o: &UnityOptions) -> Self {
        Timing {
            window: Duration::from_millis(o.batch_window_ms.into()),
            ack_timeout: Duration::from_millis(o.ack_timeout_ms.max(1).into()),
            ttl: Duration::from_millis(o.ttl_ms.into()),
            queue_limit: (o.queue_limit as usize).max(1),
            max_batch: 64,
            max_inflight: 32,
        }
    }
}

#[derive(Debug, Clone)]
struct Queued {
    cmd: AvatarCommand,
    at: Instant,
}

/// A line on its way, waiting for its answer.
#[derive(Debug)]
struct Sent {
    name: &'static str,
    commands: Vec<Queued>,
    at: Instant,
    /// Overdue and counted as a timeout; only a late answer is still expected.
    ghost: bool,
}

/// What an answer from Unity meant.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// Unity did the line's `commands`.
    Done { commands: usize },
    /// Unity refused the line.
    Refused { command: String, message: String },
    /// The answer to a line already counted as timed out.
    Late,
}

/// The queue, the lines in flight, the avatar's state and the counters.
#[derive(Debug)]
pub struct Outbox {
    timing: Timing,
    unsent: VecDeque<Queued>,
    flush_at: Option<Instant>,
    inflight: VecDeque<Sent>,
    /// The latest command for each [`AvatarPart`], in part order.
    state: Vec<Queued>,
    /// The latest command for each part that Unity accepted.
    accepted: Vec<AvatarCommand>,
    /// The last answer (or the connection), for ack deadlines.
    progress: Option<Instant>,
    /// Commands sent per instant, for the rate.
    recent: VecDeque<(Instant, usize)>,
    /// The commands in `recent`, summed.
    recent_total: usize,
    counters: BridgeStatus,
}

/// Span of the commands/s figure.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// Ghosts older than this many ack timeouts are forgotten (their answers will not come).
const GHOST_TIMEOUTS: u32 = 10;

impl Outbox {
    pub fn new(timing: Timing) -> Outbox {
        Outbox {
            timing,
            unsent: VecDeque::new(),
            flush_at: None,
            inflight: VecDeque::new(),
            state: Vec::new(),
            accepted: Vec::new(),
            progress: None,
            recent: VecDeque::new(),
            recent_total: 0,
            counters: BridgeStatus::default(),
        }
    }

    /// Queues a command; it leaves with the next line once the window has passed.
    pub fn push(&mut self, cmd: AvatarCommand, now: Instant) {
        let queued = Queued { cmd, at: now };
        match queued.cmd.part() {
            Some(part) => {
                set_avatar_part(&mut self.state, queued.clone(), |q| &q.cmd);
                if part == AvatarPart::Model {
                    // A new model starts from its defaults: the rest of the state follows it.
                    self.unsent.retain(|q| q.cmd.part().is_none());
                    self.unsent.extend(self.state.iter().cloned());
                } else {
                    self.unsent.retain(|q| q.cmd.part() != Some(part));
                    self.unsent.push_back(queued);
                }
            }
            None => {
                self.unsent.push_back(queued);
                let one_shots = self.unsent.iter().filter(|q| q.cmd.part().is_none());
                if one_shots.count() > self.timing.queue_limit {
                    if let Some(i) = self.unsent.iter().position(|q| q.cmd.part().is_none()) {
                        self.unsent.remove(i);
                        self.counters.dropped += 1;
                    }
                }
            }
        }
        self.flush_at.get_or_insert(now + self.timing.window);
    }

    fn live(&self) -> usize {
        self.inflight.iter().filter(|s| !s.ghost).count()
    }

    /// The next line to write, if one is due (call only while connected, until `None`).
    pub fn take_due(&mut self, now: Instant) -> Option<UnityCommand> {
        if self.flush_at.is_none_or(|at| at > now) || self.live() >= self.timing.max_inflight {
            return None;
        }
        let n = self.unsent.len().min(self.timing.max_batch);
        if n == 0 {
            self.flush_at = None;
            return None;
        }
        let commands: Vec<Queued> = self.unsent.drain(..n).collect();
        // The rest (a batch was full) follows at once.
        self.flush_at = (!self.unsent.is_empty()).then_some(now);
        let line = UnityCommand::batch(commands.iter().map(|q| (&q.cmd).into()).collect());
        self.counters.sent += n as u64;
        self.counters.lines += 1;
        self.recent.push_back((now, n));
        self.recent_total += n;
        self.inflight.push_back(Sent {
            name: line.name(),
            commands,
            at: now,
            ghost: false,
        });
        Some(line)
    }

    /// Matches an answer to the oldest line of its name; the lines before it got none.
    pub fn on_reply(&mut self, reply: &UnityReply, now: Instant) -> Result<Answer, String> {
        let Some(i) = self.inflight.iter().position(|s| s.name == reply.command) else {
            self.counters.malformed += 1;
            return Err(format!(
                "a reply to {:?} matches nothing sent ({} lines awaiting an answer)",
                reply.command,
                self.live()
            ));
        };
        self.progress = Some(now);
        let skipped = self.inflight.drain(..i).filter(|s| !s.ghost).count();
        self.counters.timeouts += skipped as u64;
        let Some(sent) = self.inflight.pop_front() else {
            return Err("no line to answer".into());
        };
        if sent.ghost {
            return Ok(Answer::Late);
        }
        let commands = sent.commands.len();
        // A batch's `count` says how many of its commands Unity carried out.
        let all = if reply.status == ReplyStatus::Success {
            commands
        } else {
            0
        };
        let done = reply.count.map_or(all, |c| (c as usize).min(commands));
        self.counters.acked += done as u64;
        self.counters.errors += (commands - done) as u64;
        if done == commands {
            for q in sent.commands.iter().filter(|q| q.cmd.part().is_some()) {
                set_avatar_part(&mut self.accepted, q.cmd.clone(), |c| c);
            }
        }
        match reply.status {
            ReplyStatus::Success => Ok(Answer::Done { commands: done }),
            ReplyStatus::Error => {
                let mut message = reply.message.clone().unwrap_or_default();
                match (&sent.commands[..], &reply.errors) {
                    ([one], _) => self.refused(&one.cmd),
                    // The peer says which commands of the batch it refused: their parts fall
                    // back, and the message names them.
                    (_, Some(errors)) if !errors.is_empty() => {
                        for e in errors {
                            if let Some(q) = sent.commands.get(e.index as usize) {
                                self.refused(&q.cmd);
                            }
                        }
                        message = errors
                            .iter()
                            .map(|e| {
                                format!(
                                    "{} (command {} of {}): {}",
                                    e.command,
                                    e.index + 1,
                                    commands,
                                    e.message
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("; ");
                    }
                    _ => {}
                }
                Ok(Answer::Refused {
                    command: reply.command.clone(),
                    message,
                })
            }
        }
    }

    /// Unity refused a state command: if it is still the state, the last accepted one for
    /// its part takes its place (or nothing, when none was).
    fn refused(&mut self, cmd: &AvatarCommand) {
        let Some(i) = self.state.iter().position(|q| &q.cmd == cmd) else {
            return;
        };
        let bad = self.state.remove(i);
        if let Some(good) = self.accepted.iter().find(|c| c.part() == cmd.part()) {
            let good = Queued {
                cmd: good.clone(),
                at: bad.at,
            };
            set_avatar_part(&mut self.state, good, |q| &q.cmd);
        }
    }

    /// A reply line that could not be read as one.
    pub fn malformed(&mut self) {
        self.counters.malformed += 1;
    }

    /// When `sent` is overdue: `ack_timeout` after both its sending and the last answer.
    fn ack_due(&self, sent: &Sent) -> Instant {
        self.progress.map_or(sent.at, |p| p.max(sent.at)) + self.timing.ack_timeout
    }

    /// When a ghost is forgotten (its late answer no longer expected).
    fn forget_at(&self, sent: &Sent) -> Instant {
        sent.at + self.timing.ack_timeout * GHOST_TIMEOUTS
    }

    /// Turns the lines whose answer is overdue into ghosts; returns their names.
    pub fn expire(&mut self, now: Instant) -> Vec<&'static str> {
        let overdue = self
            .inflight
            .iter()
            .filter(|s| !s.ghost)
            .take_while(|s| self.ack_due(s) <= now)
            .count();
        let mut late = Vec::with_capacity(overdue);
        for sent in self.inflight.iter_mut().filter(|s| !s.ghost).take(overdue) {
            sent.ghost = true;
            late.push(sent.name);
        }
        self.counters.timeouts += overdue as u64;
        while self
            .inflight
            .front()
            .is_some_and(|s| s.ghost && self.forget_at(s) <= now)
        {
            self.inflight.pop_front();
        }
        late
    }

    /// The connection is gone: unanswered one-shot commands go back to the queue, in order
    /// (state commands come back with the restore). Ghosts are forgotten.
    pub fn disconnected(&mut self) {
        let unanswered: Vec<Queued> = self
            .inflight
            .drain(..)
            .filter(|s| !s.ghost)
            .flat_map(|s| s.commands)
            .filter(|q| q.cmd.part().is_none())
            .collect();
        for q in unanswered.into_iter().rev() {
            self.unsent.push_front(q);
        }
        self.flush_at = None;
    }

    /// A new connection: the avatar's state first, then the queued one-shot commands younger
    /// than the TTL; sent at once.
    pub fn connected(&mut self, now: Instant) {
        let ttl = self.timing.ttl;
        let one_shots = self
            .unsent
            .iter()
            .filter(|q| q.cmd.part().is_none())
            .count();
        let fresh: Vec<Queued> = self
            .unsent
            .drain(..)
            .filter(|q| q.cmd.part().is_none() && now.duration_since(q.at) <= ttl)
            .collect();
        self.counters.dropped += (one_shots - fresh.len()) as u64;
        self.unsent = self.state.iter().cloned().chain(fresh).collect();
        self.flush_at = (!self.unsent.is_empty()).then_some(now);
        self.progress = Some(now);
    }

    /// The avatar state a new connection restores, in words ("model a.vrm, expression happy").
    pub fn describe_state(&self) -> String {
        let parts: Vec<String> = self.state.iter().map(|q| q.cmd.to_string()).collect();
        if parts.is_empty() {
            "nothing".into()
        } else {
            parts.join(", ")
        }
    }

    /// When something is due: the end of the window (unless the pipe is full), or the
    /// oldest answer's timeout. Only meaningful while connected.
    pub fn next_deadline(&self) -> Option<Instant> {
        let flush = self
            .flush_at
            .filter(|_| self.live() < self.timing.max_inflight);
        let ack = self
            .inflight
            .iter()
            .find(|s| !s.ghost)
            .map(|s| self.ack_due(s));
        let forget = self
            .inflight
            .front()
            .filter(|s| s.ghost)
            .map(|s| self.forget_at(s));
        [flush, ack, forget].into_iter().flatten().min()
    }

    /// Commands waiting to be sent.
    pub fn queue_depth(&self) -> usize {
        self.unsent.len()
    }

    /// Fills in the queue and ack figures and counters of `status`.
    pub fn report(&mut self, status: &mut BridgeStatus, now: Instant) {
        while let Some(&(at, n)) = self.recent.front() {
            if now.duration_since(at) <= RATE_WINDOW {
                break;
            }
            self.recent.pop_front();
            self.recent_total -= n;
        }
        let c = &self.counters;
        status.queue_depth = self.unsent.len() as u32;
        status.acks_pending = self.live() as u32;
        status.commands_per_s = self.recent_total as f32 / RATE_WINDOW.as_secs_f32();
        status.sent = c.sent;
        status.lines = c.lines;
        status.acked = c.acked;
        status.errors = c.errors;
        status.timeouts = c.timeouts;
        status.malformed = c.malformed;
        status.dropped = c.dropped;
        status.expression = self.state.iter().find_map(|q| match &q.cmd {
            AvatarCommand::SetExpression { expression, .. } => Some(expression.clone()),
            _ => None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing::from(&UnityOptions::default())
    }

    fn expression(name: &str) -> AvatarCommand {
        AvatarCommand::SetExpression {
            expression: name.into(),
            intensity: 1.0,
            transition_ms: 100,
        }
    }

    fn wave() -> AvatarCommand {
        AvatarCommand::PlayAnimation {
            name: "wave".into(),
            looped: false,
        }
    }

    fn load(path: &str) -> AvatarCommand {
        AvatarCommand::LoadVrm { path: path.into() }
    }

    fn names(line: &UnityCommand) -> Vec<String> {
        match line {
            UnityCommand::Batch { commands, count } => {
                assert_eq!(*count as usize, commands.len());
                commands.iter().flat_map(names).collect()
            }
            UnityCommand::SetExpression { expression, .. } => vec![expression.clone()],
            UnityCommand::PlayAnimation { name, .. } => vec![name.clone()],
            other => vec![other.name().to_string()],
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ok(name: &str) -> UnityReply {
        UnityReply::success(name, None)
    }

    fn status(out: &mut Outbox, now: Instant) -> BridgeStatus {
        let mut status = BridgeStatus::default();
        out.report(&mut status, now);
        status
    }

    #[test]
    fn commands_within_a_window_leave_as_one_batch_and_newer_expressions_win() {
        let t0 = Instant::now();
        let mut out = Outbox::new(timing());
        out.push(expression("thinking"), t0);
        out.push(wave(), t0 + ms(2));
        out.push(expression("happy"), t0 + ms(5));
        assert_eq!(out.take_due(t0 + ms(15)), None, "the window is still open");
        assert_eq!(out.next_deadline(), Some(t0 + ms(16)));
        let line = out.take_due(t0 + ms(16)).expect("due");
        assert_eq!(line.name(), "batch");
        assert_eq!(names(&line), ["wave", "happy"]);
        assert_eq!(out.take_due(t0 + ms(16)), None);
        // A command after the window opens a new one.
        out.push(expression("sad"), t0 + ms(20));
        assert_eq!(out.take_due(t0 + ms(30)), None);
        let single = out.take_due(t0 + ms(36)).expect("due");
        assert_eq!(single.name(), "set_expression");
        let s = status(&mut out, t0 + ms(40));
        assert_eq!((s.sent, s.lines, s.acks_pending), (3, 2, 2));
        assert_eq!(s.expression.as_deref(), Some("sad"));
    }

    #[test]
    fn answers_are_matched_in_order_and_silence_times_out() {
        let t0 = Instant::now();
        let mut out = Outbox::new(timing());
        for (i, cmd) in [expression("a"), wave(), expression("b")]
            .into_iter()
            .enumerate()
        {
            out.push(cmd, t0 + ms(100 * i as u64));
            out.take_due(t0 + ms(100 * i as u64 + 20)).expect("due");
        }
        let t = t0 + ms(300);
        // The answer to the first set_expression was lost; the wave's came.
        assert_eq!(
            out.on_reply(&ok("play_animation"), t),
            Ok(Answer::Done { commands: 1 })
        );
        let stray = out.on_reply(&ok("blink"), t).expect_err("nothing sent");
        assert!(stray.contains("matches nothing sent"), "{stray}");
        let refused = out.on_reply(&UnityReply::error("set_expression", "no".into()), t);
        assert_eq!(
            refused,
            Ok(Answer::Refused {
                command: "set_expression".into(),
                message: "no".into()
            })
        );
        out.push(expression("c"), t0 + ms(1000));
        out.take_due(t0 + ms(1016)).expect("due");
        assert!(out.expire(t0 + ms(3015)).is_empty());
        assert_eq!(out.expire(t0 + ms(3016)), ["set_expression"]);
        // Its answer, late, is consumed by the ghost: nothing shifts, nothing is malformed.
        assert_eq!(
            out.on_reply(&ok("set_expression"), t0 + ms(3100)),
            Ok(Answer::Late)
        );
        let s = status(&mut out, t0 + ms(3100));
        assert_eq!(
            (s.acked, s.errors, s.timeouts, s.malformed, s.acks_pending),
            (1, 1, 2, 1, 0)
        );
    }

    #[test]
    fn a_busy_unity_that_keeps_answering_is_not_timing_out() {
        let t0 = Instant::now();
        let mut out = Outbox::new(timing());
        out.connected(t0);
        for i in 0..10 {
            out.push(wave(), t0 + ms(i * 20));
            out.take_due(t0 + ms(i * 20 + 16)).expect("due");
        }
        // One answer every 500 ms: the last line waits 5 s, but Unity is making progress.
        for i in 1..=10 {
            let t = t0 + ms(500 * i);
            assert!(out.expire(t).is_empty(), "at answer {i}");
            out.on_reply(&ok("play_animation"), t).expect("ack");
        }
        let s = status(&mut out, t0 + ms(5000));
        assert_eq!((s.acked, s.timeouts), (10, 0));
    }

    #[test]
    fn a_reconnect_restores_the_state_and_resends_what_is_still_fresh() {
        let t0 = Instant::now();
        let mut out = Outbox::new(timing());
        out.push(expression("neutral"), t0);
        out.push(AvatarCommand::Blink { enabled: true }, t0);
        out.push(load("mate.vrm"), t0);
        out.connected(t0);
        assert_eq!(
            names(&out.take_due(t0).expect("restore")),
            ["load_vrm", "blink", "neutral"],
            "the model first, as loading one resets the rest"
        );
        out.on_reply(&UnityReply::success("batch", Some(3)), t0)
            .expect("ack");
        // In flight when Unity dies: an expression and a wave.
        out.push(expression("happy"), t0 + ms(100));
        out.push(wave(), t0 + ms(100));
        out.take_due(t0 + ms(116)).expect("due");
        out.disconnected();
        // While away: an animation that will expire, and a newer expression.
        out.push(
            AvatarCommand::PlayAnimation {
                name: "nod".into(),
                looped: false,
            },
            t0 + ms(200),
        );
        out.push(expression("sad"), t0 + ms(6000));
        assert_eq!(
            out.describe_state(),
            "load model mate.vrm, blink on, expression sad (intensity 1.00, 100 ms)"
        );
        out.connected(t0 + ms(6000));
        let line = out.take_due(t0 + ms(6000)).expect("restore");
        // The wave (sent at 116 ms) and the nod (200 ms) are older than the 5 s TTL.
        assert_eq!(names(&line), ["load_vrm", "blink", "sad"]);
        let s = status(&mut out, t0 + ms(6000));
        assert_eq!((s.dropped, s.queue_depth), (2, 0));
    }

    #[test]
    fn only_one_shots_count_against_the_queue_limit() {
        let t0 = Instant::now();
        let mut out = Outbox::new(Timing {
            queue_limit: 4,
            ..timing()
        });
        for i in 0..10 {
            out.push(wave(), t0 + ms(i));
        }
        out.push(expression("happy"), t0 + ms(10));
        let s = status(&mut out, t0 + ms(10));
        assert_eq!((s.queue_depth, s.dropped), (5, 6));
        out.connected(t0 + ms(20));
        assert_eq!(
            names(&out.take_due(t0 + ms(20)).expect("due")),
            ["happy", "wave", "wave", "wave", "wave"]
        );
    }

    #[test]
    fn full_batches_and_a_full_pipe_hold_the_rest_back() {
        let t0 = Instant::now();
        let mut out = Outbox::new(Timing {
            max_batch: 3,
            max_inflight: 2,
            ..timing()
        });
        for i in 0..8 {
            out.push(wave(), t0 + ms(i));
        }
        let first = out.take_due(t0 + ms(16)).expect("due");
        let second = out.take_due(t0 + ms(16)).expect("due");
        assert_eq!((names(&first).len(), names(&second).len()), (3, 3));
        assert_eq!(out.take_due(t0 + ms(16)), None, "two lines await answers");
        // A full pipe waits for an answer, not for the (past) end of the window.
        assert_eq!(
            out.next_deadline(),
            Some(t0 + ms(16) + timing().ack_timeout)
        );
        out.on_reply(&UnityReply::success("batch", Some(3)), t0 + ms(17))
            .expect("ack");
        assert_eq!(names(&out.take_due(t0 + ms(17)).expect("due")).len(), 2);
    }

    #[test]
    fn a_refused_state_command_falls_back_to_the_last_accepted_one() {
        let t0 = Instant::now();
        let mut out = Outbox::new(timing());
        out.push(load("good.vrm"), t0);
        out.connected(t0);
        out.take_due(t0).expect("due");
        out.on_reply(&ok("load_vrm"), t0).expect("ack");
        out.push(expression("happy"), t0 + ms(100));
        out.take_due(t0 + ms(116)).expect("due");
        out.on_reply(&ok("set_expression"), t0 + ms(120))
            .expect("ack");
        // A new model: the expression follows it.
        out.push(load("typo.vrm"), t0 + ms(200));
        assert_eq!(
            names(&out.take_due(t0 + ms(216)).expect("due")),
            ["load_vrm", "happy"]
        );
        let refusal = UnityReply {
            count: Some(1),
            ..UnityReply::error("batch", "VRM file not found: typo.vrm".into())
        };
        out.on_reply(&refusal, t0 + ms(220)).expect("answer");
        // A batch's refusal that does not say which command failed: the state stays as asked.
        assert!(out.describe_state().contains("typo.vrm"));
        out.push(load("typo2.vrm"), t0 + ms(300));
        out.connected(t0 + ms(300));
        let restore = out.take_due(t0 + ms(300)).expect("due");
        assert_eq!(names(&restore), ["load_vrm", "happy"]);
        out.on_reply(
            &UnityReply::error("batch", "not found".into()),
            t0 + ms(320),
        )
        .expect("answer");
        out.push(load("typo3.vrm"), t0 + ms(400));
        out.unsent
            .retain(|q| q.cmd.part() == Some(AvatarPart::Model));
        out.take_due(t0 + ms(416)).expect("due");
        out.on_reply(
            &UnityReply::error("load_vrm", "not found".into()),
            t0 + ms(420),
        )
        .expect("answer");
        assert_eq!(
            out.describe_state(),
            "load model good.vrm, expression happy (intensity 1.00, 100 ms)",
            "the refused load fell back to the last model Unity accepted"
        );
    }

    #[test]
    fn a_batch_refusal_that_names_its_commands_falls_back_for_those_only() {
        let t0 = Instant::now();
        let mut out = Outbox::new(timing());
        out.push(load("good.vrm"), t0);
        out.connected(t0);
        out.take_due(t0).expect("due");
        out.on_reply(&ok("load_vrm"), t0).expect("ack");
        out.push(load("typo.vrm"), t0 + ms(100));
        out.push(expression("happy"), t0 + ms(100));
        let sent = out.take_due(t0 + ms(116)).expect("due");
        assert_eq!(names(&sent), ["load_vrm", "happy"]);
        let refusal = UnityReply {
            count: Some(1),
            errors: Some(vec![mate_protocol::unity::BatchError {
                index: 0,
                command: "load_vrm".into(),
                message: "no VRM file at typo.vrm".into(),
            }]),
            ..UnityReply::error("batch", "1 of 2 commands refused".into())
        };
        let answer = out.on_reply(&refusal, t0 + ms(120)).expect("answer");
        assert_eq!(
            answer,
            Answer::Refused {
                command: "batch".into(),
                message: "load_vrm (command 1 of 2): no VRM file at typo.vrm".into(),
            }
        );
        let state = out.describe_state();
        assert!(
            state.contains("good.vrm") && state.contains("happy"),
            "{state}"
        );
        let s = status(&mut out, t0 + ms(120));
        assert_eq!((s.acked, s.errors), (2, 1));
    }
}
