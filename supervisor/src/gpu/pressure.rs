//! The VRAM policy: GPU readings in, profile decisions out.
//!
//! Used VRAM is split into zones by three thresholds: *calm* below `upgrade_below`, *watch*
//! up to `alert`, *alert* up to `critical`, and *critical* above. A reading in the critical
//! zone, or usage that rose at each of the last readings and at that pace reaches the critical
//! zone within `trend_samples` samples (outside the calm zone), asks for a downgrade. Staying in the alert zone for `alert_samples` readings
//! raises one alert per episode (an episode ends in the calm zone). An upgrade is asked for
//! only after every reading for `cooldown` was calm *and* the higher rung is estimated to keep
//! usage calm, so a decision can never undo itself on the next sample: that gap is the
//! hysteresis. Repeated crashes (`crash_limit` within `crash_window`) ask for a downgrade too,
//! as Chromium's GPU process does.
//!
//! Pure: time comes in as an argument, so every rule is tested without sleeping. The
//! supervisor calls [`Pressure::settled`] whenever the LLM (re)loads, so readings taken while
//! the old profile was still being torn down never count.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use mate_protocol::{DowngradeCause, VramReading};

/// Every threshold of the policy (the `[gpu]` table).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub alert_percent: f32,
    /// Readings in a row at or above `alert_percent` before the alert.
    pub alert_samples: u32,
    pub critical_percent: f32,
    /// How far ahead (in samples) a rising trend is projected.
    pub trend_samples: u32,
    /// Below this, usage is calm: upgrades become possible and alerts re-arm.
    pub upgrade_below_percent: f32,
    pub cooldown: Duration,
    pub crash_limit: u32,
    pub crash_window: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            alert_percent: 90.0,
            alert_samples: 3,
            critical_percent: 95.0,
            trend_samples: 4,
            upgrade_below_percent: 80.0,
            cooldown: Duration::from_secs(60),
            crash_limit: 3,
            crash_window: Duration::from_secs(300),
        }
    }
}

/// What the policy asks for after a reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Nothing,
    /// Raise an alert; the string says why.
    Alert(String),
    Downgrade {
        cause: DowngradeCause,
        why: String,
    },
    Upgrade {
        why: String,
    },
}

/// Readings kept for the trend.
const TREND_WINDOW: usize = 4;

#[derive(Debug)]
pub struct Pressure {
    th: Thresholds,
    /// The last readings' used percent, newest last.
    recent: VecDeque<f32>,
    above_alert: u32,
    /// An alert was raised in this episode.
    alerted: bool,
    /// A downgrade that could not happen was told about in this episode.
    held: bool,
    /// Since when every reading was calm.
    calm_since: Option<Instant>,
    crashes: VecDeque<Instant>,
}

impl Pressure {
    pub fn new(th: Thresholds) -> Pressure {
        Pressure {
            th,
            recent: VecDeque::with_capacity(TREND_WINDOW),
            above_alert: 0,
            alerted: false,
            held: false,
            calm_since: None,
            crashes: VecDeque::new(),
        }
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.th
    }

    /// The LLM (re)loaded, maybe on another profile: the trend and the cool-down start over.
    pub fn settled(&mut self) {
        self.recent.clear();
        self.above_alert = 0;
        self.calm_since = None;
    }

    /// The LLM moved to another rung: crashes on the old one no longer count against it.
    pub fn rung_changed(&mut self) {
        self.settled();
        self.crashes.clear();
    }

    /// Judges one reading. `upgrade_extra`: how many more bytes the next higher rung is
    /// estimated to need than the current one, when there is a higher rung to go to.
    pub fn sample(
        &mut self,
        now: Instant,
        reading: &VramReading,
        upgrade_extra: Option<u64>,
    ) -> Verdict {
        let th = self.th;
        let used = reading.used_percent();
        if self.recent.len() == TREND_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(used);

        if used < th.upgrade_below_percent {
            self.above_alert = 0;
            self.alerted = false;
            self.held = false;
            let since = *self.calm_since.get_or_insert(now);
            return match upgrade_extra {
                Some(extra) if now.duration_since(since) >= th.cooldown => {
                    let projected = VramReading {
                        used_bytes: reading.used_bytes.saturating_add(extra),
                        ..*reading
                    }
                    .used_percent();
                    if projected < th.upgrade_below_percent {
                        Verdict::Upgrade {
                            why: format!(
                                "VRAM {used:.1}% used, below {:.0}% for {} s; the higher \
                                 profile is estimated at {projected:.1}%",
                                th.upgrade_below_percent,
                                th.cooldown.as_secs()
                            ),
                        }
                    } else {
                        Verdict::Nothing
                    }
                }
                _ => Verdict::Nothing,
            };
        }
        self.calm_since = None;

        if used >= th.critical_percent {
            return Verdict::Downgrade {
                cause: DowngradeCause::Critical,
                why: format!(
                    "VRAM {used:.1}% used, at or above the critical {:.0}%",
                    th.critical_percent
                ),
            };
        }
        if let Some(projected) = self.projected() {
            if projected >= th.critical_percent {
                return Verdict::Downgrade {
                    cause: DowngradeCause::Trend,
                    why: format!(
                        "VRAM {used:.1}% used and rising: {projected:.1}% projected within {} \
                         samples, above the critical {:.0}%",
                        th.trend_samples, th.critical_percent
                    ),
                };
            }
        }
        if used >= th.alert_percent {
            self.above_alert += 1;
            if self.above_alert >= th.alert_samples && !self.alerted {
                self.alerted = true;
                return Verdict::Alert(format!(
                    "VRAM {used:.1}% used for {} samples, above the alert {:.0}%",
                    self.above_alert, th.alert_percent
                ));
            }
        } else {
            self.above_alert = 0;
        }
        Verdict::Nothing
    }

    /// Where usage will be `trend_samples` readings ahead if it keeps rising as it did over
    /// the recent readings; `None` unless it rose at every one of them (a single jump that
    /// then holds is not a trend).
    fn projected(&self) -> Option<f32> {
        let n = self.recent.len();
        if n < 3
            || !self
                .recent
                .iter()
                .zip(self.recent.iter().skip(1))
                .all(|(a, b)| b > a)
        {
            return None;
        }
        let (first, last) = (*self.recent.front()?, *self.recent.back()?);
        let slope = (last - first) / (n - 1) as f32;
        Some(last + slope * self.th.trend_samples as f32)
    }

    /// A downgrade was asked for but cannot happen (automatic downgrades are off, or the
    /// LLM is on the lowest rung): whether this episode has not been told about yet.
    pub fn hold(&mut self) -> bool {
        !std::mem::replace(&mut self.held, true)
    }

    /// The LLM crashed: whether that makes `crash_limit` crashes within `crash_window`.
    /// The count starts over after it says so.
    pub fn crashed(&mut self, now: Instant) -> bool {
        let window = self.th.crash_window;
        self.crashes
            .retain(|t| now.checked_duration_since(*t).is_some_and(|d| d < window));
        self.crashes.push_back(now);
        if self.crashes.len() as u32 >= self.th.crash_limit.max(1) {
            self.crashes.clear();
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn reading(used_percent: f32) -> VramReading {
        VramReading {
            total_bytes: 10 * GIB,
            used_bytes: (used_percent as f64 / 100.0 * (10 * GIB) as f64) as u64,
            llm_bytes: None,
            temperature_c: None,
            utilization_percent: None,
        }
    }

    fn run(p: &mut Pressure, start: Instant, percents: &[f32], extra: Option<u64>) -> Vec<Verdict> {
        percents
            .iter()
            .enumerate()
            .map(|(i, &u)| {
                let now = start + Duration::from_millis(500 * i as u64);
                p.sample(now, &reading(u), extra)
            })
            .collect()
    }

    fn kinds(verdicts: &[Verdict]) -> String {
        verdicts
            .iter()
            .map(|v| match v {
                Verdict::Nothing => '.',
                Verdict::Alert(_) => 'A',
                Verdict::Downgrade {
                    cause: DowngradeCause::Trend,
                    ..
                } => 'T',
                Verdict::Downgrade { .. } => 'D',
                Verdict::Upgrade { .. } => 'U',
            })
            .collect()
    }

    #[test]
    fn a_critical_reading_asks_for_a_downgrade_at_once() {
        let mut p = Pressure::new(Thresholds::default());
        let v = run(&mut p, Instant::now(), &[50.0, 96.0], None);
        assert_eq!(kinds(&v), ".D");
        assert!(matches!(&v[1], Verdict::Downgrade { why, .. } if why.contains("96.0%")));
    }

    #[test]
    fn the_alert_comes_after_several_readings_and_once_per_episode() {
        let mut p = Pressure::new(Thresholds::default());
        let flat = [91.0, 91.0, 91.0, 91.0, 91.0, 91.0];
        assert_eq!(kinds(&run(&mut p, Instant::now(), &flat, None)), "..A...");
        // Dipping into the watch zone does not re-arm it; the calm zone does.
        let v = run(&mut p, Instant::now(), &[85.0, 91.0, 91.0, 91.0], None);
        assert_eq!(kinds(&v), "....");
        let v = run(
            &mut p,
            Instant::now(),
            &[50.0, 91.0, 91.0, 91.0, 91.0],
            None,
        );
        assert_eq!(kinds(&v), "...A.");
    }

    #[test]
    fn a_steep_rise_downgrades_before_the_critical_threshold() {
        let mut p = Pressure::new(Thresholds::default());
        // +3 points a sample from 81%: 99% projected 4 samples after 87%.
        let v = run(&mut p, Instant::now(), &[81.0, 84.0, 87.0], None);
        assert_eq!(kinds(&v), "..T");
        // A slow rise in the same zone does not.
        let mut p = Pressure::new(Thresholds::default());
        let v = run(
            &mut p,
            Instant::now(),
            &[81.0, 81.5, 82.0, 82.5, 83.0],
            None,
        );
        assert_eq!(kinds(&v), ".....");
    }

    #[test]
    fn upgrades_wait_for_the_cool_down_and_for_room() {
        let th = Thresholds {
            cooldown: Duration::from_secs(2),
            ..Thresholds::default()
        };
        let mut p = Pressure::new(th);
        let calm = [50.0; 6]; // 0 … 2.5 s
        let v = run(&mut p, Instant::now(), &calm, Some(GIB));
        assert_eq!(kinds(&v), "....UU", "not before 2 s of calm");
        // The higher rung would bring usage to 85%: no upgrade, however long it is calm.
        let mut p = Pressure::new(th);
        let v = run(&mut p, Instant::now(), &[75.0; 10], Some(GIB));
        assert_eq!(kinds(&v), "..........");
        // Nothing higher to go to.
        let mut p = Pressure::new(th);
        assert_eq!(kinds(&run(&mut p, Instant::now(), &calm, None)), "......");
    }

    #[test]
    fn oscillating_usage_never_upgrades_or_flaps() {
        let th = Thresholds {
            cooldown: Duration::from_secs(3),
            ..Thresholds::default()
        };
        let mut p = Pressure::new(th);
        // Calm for 2 s, critical for 1 s, again and again: a downgrade on each peak (the
        // supervisor applies one and settles), never an upgrade in between.
        let cycle = [40.0, 40.0, 40.0, 40.0, 97.0, 97.0];
        let input: Vec<f32> = cycle.iter().copied().cycle().take(60).collect();
        let v = run(&mut p, Instant::now(), &input, Some(GIB / 10));
        let k = kinds(&v);
        assert!(!k.contains('U'), "{k}");
        assert!(k.contains('D'), "{k}");
    }

    #[test]
    fn settling_restarts_the_cool_down() {
        let th = Thresholds {
            cooldown: Duration::from_secs(1),
            ..Thresholds::default()
        };
        let mut p = Pressure::new(th);
        let start = Instant::now();
        let v = run(&mut p, start, &[50.0, 50.0], Some(GIB));
        assert_eq!(kinds(&v), "..");
        p.settled();
        let later = start + Duration::from_millis(1500);
        assert_eq!(p.sample(later, &reading(50.0), Some(GIB)), Verdict::Nothing);
        let v = p.sample(later + Duration::from_secs(1), &reading(50.0), Some(GIB));
        assert!(matches!(v, Verdict::Upgrade { .. }));
    }

    #[test]
    fn a_held_downgrade_is_told_once_per_episode() {
        let mut p = Pressure::new(Thresholds::default());
        // An alert earlier in the episode does not hide it.
        let v = run(&mut p, Instant::now(), &[91.0, 91.0, 91.0], None);
        assert_eq!(kinds(&v), "..A");
        assert!(p.hold());
        assert!(!p.hold());
        run(&mut p, Instant::now(), &[50.0], None);
        assert!(p.hold());
    }

    #[test]
    fn three_crashes_within_five_minutes_ask_for_a_downgrade() {
        let mut p = Pressure::new(Thresholds::default());
        let t = Instant::now();
        let min = Duration::from_secs(60);
        assert!(!p.crashed(t));
        assert!(!p.crashed(t + 2 * min));
        assert!(p.crashed(t + 4 * min));
        // The count started over.
        assert!(!p.crashed(t + 5 * min));
        // Spread out, they never add up.
        let mut p = Pressure::new(Thresholds::default());
        assert!((0..10).all(|i| !p.crashed(t + i * 3 * min)));
    }
}
