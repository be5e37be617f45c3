//! What goes to Unity, and when: the bridge's bookkeeping, with no I/O and time passed in.
//!
//! Commands wait one coalescing window (a frame, 16 ms by default) after the first of them
//! and then leave as one line: a single command as itself, several as a `batch`. Within the
//! window a newer command for the same part of the avatar (its expression, blink, model, or
//! looping animation) replaces the unsent older one. One-shot animations are kept in order.
//!
//! Every line sent waits for its answer in order. Unity answers in the order it reads, so a
//! reply to a later line means the earlier unanswered ones were lost. A line with no answer
//! within the ack timeout is counted and forgotten. It is not re-sent, because Unity may
//! have done it.
//!
//! The avatar's state (model, expression, blink, looping animation) is kept as the latest
//! command for each. After a (re)connect it is sent first, followed by the one-shot
//! animations still queued that are younger than the TTL.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use mate_protocol::{
    unity::{ReplyStatus, UnityCommand, UnityReply},
    AvatarCommand, BridgeStatus, UnityOptions,
};

/// The time limits and sizes, from [`UnityOptions`].
#[derive(Debug, Clone)]
pub struct Timing {
    pub window: Duration,
    pub ack_timeout: Duration,
    pub ttl: Duration,
    pub queue_limit: usize,
    /// Most commands in one batch line.
    pub max_batch: usize,
    /// Most lines sent and not answered; more wait in the queue.
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
}

/// What an answer from Unity meant.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// Unity did the line's `commands`.
    Done { commands: usize },
    /// Unity refused the line.
    Refused { command: String, message: String },
}

/// The queue, the lines in flight, the avatar's state and the counters.
#[derive(Debug)]
pub struct Outbox {
    timing: Timing,
    unsent: VecDeque<Queued>,
    flush_at: Option<Instant>,
    inflight: VecDeque<Sent>,
    /// The latest command for each [`mate_protocol::AvatarPart`], oldest first.
    state: Vec<Queued>,
    /// Commands sent per instant, for the rate.
    recent: VecDeque<(Instant, usize)>,
    counters: BridgeStatus,
}

/// Span of the commands/s figure.
const RATE_WINDOW: Duration = Duration::from_secs(5);

impl Outbox {
    pub fn new(timing: Timing) -> Outbox {
        Outbox {
            timing,
            unsent: VecDeque::new(),
            flush_at: None,
            inflight: VecDeque::new(),
            state: Vec::new(),
            recent: VecDeque::new(),
            counters: BridgeStatus::default(),
        }
    }

    pub fn set_timing(&mut self, timing: Timing) {
        self.timing = timing;
    }

    /// Queues a command; it leaves with the next line once the window has passed.
    pub fn push(&mut self, cmd: AvatarCommand, now: Instant) {
        let queued = Queued { cmd, at: now };
        if let Some(part) = queued.cmd.part() {
            self.unsent.retain(|q| q.cmd.part() != Some(part));
            self.state.retain(|q| q.cmd.part() != Some(part));
            self.state.push(queued.clone());
        }
        self.unsent.push_back(queued);
        self.flush_at.get_or_insert(now + self.timing.window);
        while self.unsent.len() > self.timing.queue_limit {
            // The oldest goes; state commands are restored from `state` anyway.
            if let Some(old) = self.unsent.pop_front() {
                if old.cmd.part().is_none() {
                    self.counters.dropped += 1;
                }
            }
        }
    }

    /// The next line to write, if one is due (call only while connected, until `None`).
    pub fn take_due(&mut self, now: Instant) -> Option<UnityCommand> {
        if self.flush_at.is_none_or(|at| at > now)
            || self.inflight.len() >= self.timing.max_inflight
        {
            return None;
        }
        let before = self.unsent.len();
        let ttl = self.timing.ttl;
        self.unsent
            .retain(|q| q.cmd.part().is_some() || now.duration_since(q.at) <= ttl);
        self.counters.dropped += (before - self.unsent.len()) as u64;
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
        self.inflight.push_back(Sent {
            name: line.name(),
            commands,
            at: now,
        });
        Some(line)
    }

    /// Matches an answer to the oldest line of its name; the lines before it got none.
    pub fn on_reply(&mut self, reply: &UnityReply) -> Result<Answer, String> {
        let Some(i) = self.inflight.iter().position(|s| s.name == reply.command) else {
            self.counters.malformed += 1;
            return Err(format!(
                "a reply to {:?} matches nothing sent ({} lines awaiting an answer)",
                reply.command,
                self.inflight.len()
            ));
        };
        self.counters.timeouts += i as u64;
        let sent = self.inflight.drain(..=i).next_back();
        let commands = sent.map_or(0, |s| s.commands.len());
        // A batch's `count` says how many of its commands Unity carried out.
        let all = if reply.status == ReplyStatus::Success {
            commands
        } else {
            0
        };
        let done = reply.count.map_or(all, |c| (c as usize).min(commands));
        self.counters.acked += done as u64;
        self.counters.errors += (commands - done) as u64;
        match reply.status {
            ReplyStatus::Success => Ok(Answer::Done { commands: done }),
            ReplyStatus::Error => Ok(Answer::Refused {
                command: reply.command.clone(),
                message: reply.message.clone().unwrap_or_default(),
            }),
        }
    }

    /// A reply line that could not be read as one.
    pub fn malformed(&mut self) {
        self.counters.malformed += 1;
    }

    /// Forgets the lines whose answer is overdue; returns their names.
    pub fn expire(&mut self, now: Instant) -> Vec<&'static str> {
        let mut late = Vec::new();
        while let Some(sent) = self.inflight.front() {
            if now.duration_since(sent.at) < self.timing.ack_timeout {
                break;
            }
            late.push(sent.name);
            self.inflight.pop_front();
            self.counters.timeouts += 1;
        }
        late
    }

    /// The connection is gone: unanswered one-shot commands go back to the queue, in order
    /// (state commands come back with the restore).
    pub fn disconnected(&mut self) {
        let unanswered: Vec<Queued> = self
            .inflight
            .drain(..)
            .flat_map(|s| s.commands)
            .filter(|q| q.cmd.part().is_none())
            .collect();
        for q in unanswered.into_iter().rev() {
            self.unsent.push_front(q);
        }
        self.flush_at = None;
    }

    /// A new connection: the avatar's state first, then the queued one-shot commands; sent
    /// at once.
    pub fn connected(&mut self, now: Instant) {
        let pending = self.unsent.drain(..).filter(|q| q.cmd.part().is_none());
        let restored: VecDeque<Queued> = self.state.iter().cloned().chain(pending).collect();
        self.unsent = restored;
        self.flush_at = (!self.unsent.is_empty()).then_some(now);
    }

    /// The avatar state a new connection restores, in words ("model a.vrm, expression happy").
    pub fn describe_state(&self) -> String {
        let parts: Vec<String> = self
            .state
            .iter()
            .map(|q| match &q.cmd {
                AvatarCommand::LoadVrm { path } => format!("model {path}"),
                AvatarCommand::SetExpression { expression, .. } => {
                    format!("expression {expression}")
                }
                AvatarCommand::Blink { enabled } => {
                    format!("blink {}", if *enabled { "on" } else { "off" })
                }
                AvatarCommand::PlayAnimation { name, .. } => format!("looping {name}"),
            })
            .collect();
        if parts.is_empty() {
            "nothing".into()
        } else {
            parts.join(", ")
        }
    }

    /// When something is due: the end of the window, or the oldest answer's timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        let ack = self
            .inflight
            .front()
            .map(|s| s.at + self.timing.ack_timeout);
        match (self.flush_at, ack) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fills in the queue and ack figures and counters of `status`.
    pub fn report(&mut self, status: &mut BridgeStatus, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW)
        {
            self.recent.pop_front();
        }
        let c = &self.counters;
        status.queue_depth = self.unsent.len() as u32;
        status.acks_pending = self.inflight.len() as u32;
        status.commands_per_s =
            self.recent.iter().map(|(_, n)| *n).sum::<usize>() as f32 / RATE_WINDOW.as_secs_f32();
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
        let mut status = BridgeStatus::default();
        out.report(&mut status, t0 + ms(40));
        assert_eq!((status.sent, status.lines, status.acks_pending), (3, 2, 2));
        assert_eq!(status.expression.as_deref(), Some("sad"));
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
        // The answer to the first set_expression was lost; the wave's came.
        assert_eq!(
            out.on_reply(&UnityReply::success("play_animation", None)),
            Ok(Answer::Done { commands: 1 })
        );
        assert!(out
            .on_reply(&UnityReply::success("blink", None))
            .expect_err("nothing of that name was sent")
            .contains("matches nothing sent"));
        let refused = out.on_reply(&UnityReply::error("set_expression", "no such".into()));
        assert_eq!(
            refused,
            Ok(Answer::Refused {
                command: "set_expression".into(),
                message: "no such".into()
            })
        );
        out.push(expression("c"), t0 + ms(1000));
        out.take_due(t0 + ms(1016)).expect("due");
        assert!(out.expire(t0 + ms(3015)).is_empty());
        assert_eq!(out.expire(t0 + ms(3016)), ["set_expression"]);
        let mut status = BridgeStatus::default();
        out.report(&mut status, t0 + ms(3016));
        assert_eq!(
            (
                status.acked,
                status.errors,
                status.timeouts,
                status.malformed,
                status.acks_pending
            ),
            (1, 1, 2, 1, 0)
        );
    }

    #[test]
    fn a_reconnect_restores_the_state_and_resends_what_is_still_fresh() {
        let t0 = Instant::now();
        let mut out = Outbox::new(timing());
        out.push(
            AvatarCommand::LoadVrm {
                path: "mate.vrm".into(),
            },
            t0,
        );
        out.push(AvatarCommand::Blink { enabled: true }, t0);
        out.connected(t0);
        assert_eq!(
            names(&out.take_due(t0).expect("restore")),
            ["load_vrm", "blink"]
        );
        out.on_reply(&UnityReply::success("batch", Some(2)))
            .expect("ack");
        // In flight when Unity dies: an expression and a wave.
        out.push(expression("happy"), t0 + ms(100));
        out.push(wave(), t0 + ms(100));
        out.take_due(t0 + ms(116)).expect("due");
        out.disconnected();
        // While away: an old animation that will expire, and a newer expression.
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
            "model mate.vrm, blink on, expression sad"
        );
        out.connected(t0 + ms(6000));
        let line = out.take_due(t0 + ms(6000)).expect("restore");
        // The wave (sent at 116 ms) and the nod (200 ms) are older than the 5 s TTL.
        assert_eq!(names(&line), ["load_vrm", "blink", "sad"]);
        let mut status = BridgeStatus::default();
        out.report(&mut status, t0 + ms(6000));
        assert_eq!(status.dropped, 2);
        assert_eq!(status.queue_depth, 0);
    }

    #[test]
    fn a_queue_without_unity_is_bounded() {
        let t0 = Instant::now();
        let mut out = Outbox::new(Timing {
            queue_limit: 4,
            ..timing()
        });
        for i in 0..10 {
            out.push(wave(), t0 + ms(i));
        }
        out.push(expression("happy"), t0 + ms(10));
        let mut status = BridgeStatus::default();
        out.report(&mut status, t0 + ms(10));
        assert_eq!((status.queue_depth, status.dropped), (4, 7));
        out.connected(t0 + ms(20));
        assert_eq!(
            names(&out.take_due(t0 + ms(20)).expect("due")),
            ["happy", "wave", "wave", "wave"]
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
        out.on_reply(&UnityReply::success("batch", Some(3)))
            .expect("ack");
        assert_eq!(names(&out.take_due(t0 + ms(17)).expect("due")).len(), 2);
    }
}
