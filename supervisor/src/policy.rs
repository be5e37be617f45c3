//! Supervision policy as data, and the pure decisions made from it.
//!
//! The rules are the ones users know from Erlang/OTP and systemd: a crashed worker restarts
//! after an exponential backoff (systemd's `RestartSec` growing, capped), the backoff forgets
//! after the worker stayed up for a while, and more than `intensity` restarts within `period`
//! escalates (OTP's restart intensity) instead of restarting again. The supervisor loop asks
//! [`Restarts::after_crash`] what to do; nothing here touches a process or a clock of its own,
//! so every rule is unit-tested with made-up instants.

use std::{collections::VecDeque, time::Duration};

use tokio::time::Instant;

/// How the supervisor watches and restarts workers (`[supervisor]` in the config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// Heartbeats in a row without an answer before the worker counts as hung.
    pub missed_heartbeats: u32,
    /// The LLM worker counts as hung after this long without progress while decoding.
    pub stall: Duration,
    /// From spawn to `Ready`; a worker that takes longer is killed.
    pub start_deadline: Duration,
    /// Between a shutdown message and SIGKILL.
    pub grace: Duration,
    pub backoff: Backoff,
    /// More restarts than this within `period` escalate.
    pub intensity: u32,
    pub period: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            heartbeat: Duration::from_millis(500),
            missed_heartbeats: 3,
            stall: Duration::from_secs(60),
            start_deadline: Duration::from_secs(10),
            grace: Duration::from_secs(5),
            backoff: Backoff::default(),
            intensity: 5,
            period: Duration::from_secs(60),
        }
    }
}

impl Policy {
    /// How long a worker may stay silent before it counts as hung.
    pub fn silence_limit(&self) -> Duration {
        self.heartbeat * self.missed_heartbeats.max(1)
    }
}

/// Exponential backoff between restarts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub factor: f64,
    pub max: Duration,
    /// A worker that ran at least this long starts over at `initial`.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_secs(10),
            reset_after: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before restart number `attempt` (0-based) in a row.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = self.factor.max(1.0).powi(attempt.min(64) as i32);
        self.initial.mul_f64(factor.min(1e6)).min(self.max)
    }
}

/// What to do after a worker crashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after `delay`; `attempt` counts restarts in a row (1-based).
    Restart { delay: Duration, attempt: u32 },
    /// The restart intensity is exceeded: lower the profile, or give up.
    Escalate { restarts: u32 },
}

/// One worker's crash history.
#[derive(Debug, Clone, Default)]
pub struct Restarts {
    /// When each restart within the last `period` was decided.
    recent: VecDeque<Instant>,
    /// Restarts since the worker last ran long enough to reset the backoff.
    in_a_row: u32,
}

impl Restarts {
    /// Decides after a crash at `now` of a process that had run for `ran_for`. The first crash
    /// after a healthy run (at least `reset_after`) restarts at once: a one-off crash costs the
    /// user no extra wait, and a crash loop still backs off from `initial`.
    pub fn after_crash(&mut self, policy: &Policy, now: Instant, ran_for: Duration) -> Decision {
        let healthy = ran_for >= policy.backoff.reset_after;
        if healthy {
            self.in_a_row = 0;
        }
        while self
            .recent
            .front()
            .is_some_and(|&t| now.duration_since(t) > policy.period)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= policy.intensity as usize {
            return Decision::Escalate {
                restarts: self.recent.len() as u32,
            };
        }
        self.recent.push_back(now);
        if healthy {
            return Decision::Restart {
                delay: Duration::ZERO,
                attempt: 1,
            };
        }
        let delay = policy.backoff.delay(self.in_a_row);
        self.in_a_row += 1;
        Decision::Restart {
            delay,
            attempt: self.in_a_row,
        }
    }

    /// Forgets the history: after an escalation, or a start asked for by the user.
    pub fn clear(&mut self) {
        *self = Restarts::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backoff_doubles_from_100_ms_and_caps_at_10_s() {
        let b = Backoff::default();
        let delays: Vec<u128> = (0..10).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
        assert_eq!(b.delay(u32::MAX), b.max);
    }

    #[test]
    fn crash_loops_back_off_then_escalate_after_the_intensity() {
        let policy = Policy::default();
        let mut r = Restarts::default();
        let mut now = Instant::now();
        let mut delays = Vec::new();
        loop {
            match r.after_crash(&policy, now, 5 * MS) {
                Decision::Restart { delay, attempt } => {
                    delays.push(delay.as_millis());
                    assert_eq!(attempt as usize, delays.len());
                    now += delay + 5 * MS;
                }
                Decision::Escalate { restarts } => {
                    assert_eq!(restarts, 5);
                    break;
                }
            }
        }
        assert_eq!(delays, [100, 200, 400, 800, 1600]);
    }

    #[test]
    fn a_crash_after_a_healthy_run_restarts_at_once_and_a_loop_backs_off_from_the_start() {
        let policy = Policy::default();
        let mut r = Restarts::default();
        let now = Instant::now();
        r.after_crash(&policy, now, MS);
        r.after_crash(&policy, now + 100 * MS, MS);
        let healthy = Duration::from_secs(35);
        let d = r.after_crash(&policy, now + Duration::from_secs(40), healthy);
        let at_once = Decision::Restart {
            delay: Duration::ZERO,
            attempt: 1,
        };
        assert_eq!(d, at_once);
        let d = r.after_crash(&policy, now + Duration::from_secs(41), MS);
        let first = Decision::Restart {
            delay: 100 * MS,
            attempt: 1,
        };
        assert_eq!(d, first);
    }

    #[test]
    fn restarts_older_than_the_period_do_not_count() {
        let policy = Policy::default();
        let mut r = Restarts::default();
        let start = Instant::now();
        for i in 0..5 {
            assert!(matches!(
                r.after_crash(&policy, start + i * MS, MS),
                Decision::Restart { .. }
            ));
        }
        // A sixth crash inside the minute escalates; one after it has passed restarts.
        let mut inside = r.clone();
        assert!(matches!(
            inside.after_crash(&policy, start + Duration::from_secs(59), MS),
            Decision::Escalate { .. }
        ));
        assert!(matches!(
            r.after_crash(&policy, start + Duration::from_secs(61), MS),
            Decision::Restart { .. }
        ));
    }
}
