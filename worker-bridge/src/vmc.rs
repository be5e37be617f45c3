//! The VMC sink: the avatar's expression and blink as VMC protocol blend shapes (OSC over
//! UDP), for VSeeFace, VMagicMirror, VNyan and Warudo.
//!
//! One thread, fed the same avatar commands as the Unity side. An expression change moves
//! every mapped blend shape from where it is to its new value (the expression's at its
//! intensity, the others to 0) along a straight line over the command's `transition_ms`,
//! sent at a steady frame rate as `/VMC/Ext/Blend/Val` messages followed by one
//! `/VMC/Ext/Blend/Apply`, in one bundle per frame. When mate blinks (`blink`), the `Blink`
//! shape closes and opens every few seconds. Every value goes again once a second or so, so an
//! app started after mate (or restarted) catches up. UDP needs no connection: a receiver that
//! is not there costs nothing but the packets.

use std::{
    collections::BTreeMap,
    net::UdpSocket,
    sync::mpsc,
    time::{Duration, Instant},
};

use mate_protocol::{AvatarCommand, VmcOptions};
use rosc::{OscBundle, OscMessage, OscPacket, OscTime, OscType};
use tracing::{debug, warn};

/// The blend shape mate blinks with (the same name in VRM 0.x and as VMC apps map VRM 1.0).
pub const BLINK: &str = "Blink";
/// A blink: closing and opening again.
const BLINK_SPAN: Duration = Duration::from_millis(160);
/// Time between blinks, varied around this so it does not look mechanical.
const BLINK_EVERY: Duration = Duration::from_millis(4000);

/// Where each blend shape comes from (it goes to the face's target).
#[derive(Debug, Clone)]
struct Transition {
    from: BTreeMap<String, f32>,
    start: Instant,
    span: Duration,
}

/// The blend shape values over time: pure, so the curve is tested without sockets.
#[derive(Debug)]
pub struct Face {
    map: BTreeMap<String, String>,
    /// Every blend shape of the map, each at its current target.
    target: BTreeMap<String, f32>,
    transition: Option<Transition>,
    blink: bool,
    next_blink: Instant,
    blinks: u64,
}

impl Face {
    pub fn new(opts: &VmcOptions, now: Instant) -> Face {
        let map: BTreeMap<String, String> = opts
            .blend_shapes
            .iter()
            .map(|(e, b)| (e.to_lowercase(), b.clone()))
            .collect();
        let target = map.values().map(|b| (b.clone(), 0.0)).collect();
        Face {
            map,
            target,
            transition: None,
            blink: opts.blink,
            next_blink: now + BLINK_EVERY,
            blinks: 0,
        }
    }

    /// Applies an avatar command; only expressions and blink concern VMC.
    pub fn command(&mut self, cmd: &AvatarCommand, now: Instant) {
        match cmd {
            AvatarCommand::SetExpression {
                expression,
                intensity,
                transition_ms,
            } => {
                let shape = self.map.get(&expression.to_lowercase()).cloned();
                let from = self.values(now);
                for (b, v) in &mut self.target {
                    *v = if Some(b) == shape.as_ref() {
                        intensity.clamp(0.0, 1.0)
                    } else {
                        0.0
                    };
                }
                self.transition = Some(Transition {
                    from,
                    start: now,
                    span: Duration::from_millis(u64::from(*transition_ms)),
                });
            }
            AvatarCommand::Blink { enabled } => {
                self.blink = *enabled;
                self.next_blink = now + BLINK_EVERY;
            }
            AvatarCommand::LoadVrm { .. } | AvatarCommand::PlayAnimation { .. } => {}
        }
    }

    /// Every blend shape's value at `now` (with `Blink` when mate blinks).
    pub fn values(&self, now: Instant) -> BTreeMap<String, f32> {
        let mut values = match &self.transition {
            Some(t) if now < t.start + t.span => {
                let p = (now - t.start).as_secs_f32() / t.span.as_secs_f32().max(f32::EPSILON);
                self.target
                    .iter()
                    .map(|(b, to)| {
                        let from = t.from.get(b).copied().unwrap_or(0.0);
                        (b.clone(), from + (to - from) * p.clamp(0.0, 1.0))
                    })
                    .collect()
            }
            _ => self.target.clone(),
        };
        if self.blink {
            values.insert(BLINK.into(), self.blink_value(now));
        }
        values
    }

    /// A triangle from 0 to 1 and back over the blink's span, 0 between blinks.
    fn blink_value(&self, now: Instant) -> f32 {
        let Some(into) = now.checked_duration_since(self.next_blink) else {
            return 0.0;
        };
        let half = BLINK_SPAN.as_secs_f32() / 2.0;
        let t = into.as_secs_f32();
        if t >= 2.0 * half {
            0.0
        } else {
            1.0 - ((t - half).abs() / half)
        }
    }

    /// Whether something moves at `now` (a transition or a blink), so frames go at full rate.
    pub fn moving(&self, now: Instant) -> bool {
        let transition = self
            .transition
            .as_ref()
            .is_some_and(|t| now < t.start + t.span + Duration::from_millis(50));
        let blinking = self.blink
            && now >= self.next_blink
            && now < self.next_blink + BLINK_SPAN + Duration::from_millis(50);
        transition || blinking
    }

    /// When the next blink starts, when mate blinks.
    pub fn next_blink(&self) -> Option<Instant> {
        self.blink.then_some(self.next_blink)
    }

    /// Moves on to the next blink once one is over.
    pub fn tick(&mut self, now: Instant) {
        if now >= self.next_blink + BLINK_SPAN + Duration::from_millis(50) {
            self.blinks += 1;
            // 3 to 5 s apart, varied by a cheap sequence.
            let jitter = Duration::from_millis(self.blinks * 7919 % 2000);
            self.next_blink = now + BLINK_EVERY - Duration::from_millis(1000) + jitter;
        }
    }
}

/// One frame: a value per blend shape, then Apply.
pub fn frame(values: &BTreeMap<String, f32>) -> OscPacket {
    let mut content: Vec<OscPacket> = values
        .iter()
        .map(|(name, v)| {
            OscPacket::Message(OscMessage {
                addr: "/VMC/Ext/Blend/Val".into(),
                args: vec![OscType::String(name.clone()), OscType::Float(*v)],
            })
        })
        .collect();
    content.push(OscPacket::Message(OscMessage {
        addr: "/VMC/Ext/Blend/Apply".into(),
        args: Vec::new(),
    }));
    OscPacket::Bundle(OscBundle {
        // "Immediately", as OSC defines it.
        timetag: OscTime {
            seconds: 0,
            fractional: 1,
        },
        content,
    })
}

/// Runs the VMC sink until the worker drops the sending side of `commands`.
pub fn run(opts: VmcOptions, avatar: Vec<AvatarCommand>, commands: mpsc::Receiver<AvatarCommand>) {
    let socket = match UdpSocket::bind(("0.0.0.0", 0)) {
        Ok(socket) => socket,
        Err(e) => {
            warn!(error = %e, "VMC: cannot open a UDP socket; VMC output is off");
            return;
        }
    };
    let mut face = Face::new(&opts, Instant::now());
    for cmd in &avatar {
        face.command(cmd, Instant::now());
    }
    let frame_every = Duration::from_millis(1000 / u64::from(opts.rate_hz.clamp(1, 120)));
    let resend_every = Duration::from_millis(u64::from(opts.resend_ms.max(50)));
    let mut last_sent: Option<Instant> = None;
    let mut failures = 0u64;
    loop {
        let now = Instant::now();
        let moving = face.moving(now);
        if moving || last_sent.is_none_or(|at| now - at >= resend_every) {
            match rosc::encoder::encode(&frame(&face.values(now))) {
                Ok(bytes) => {
                    if let Err(e) = socket.send_to(&bytes, &opts.address) {
                        // Nothing listening is normal for UDP; say so now and then.
                        failures += 1;
                        if failures == 1 || failures.is_multiple_of(1000) {
                            debug!(error = %e, address = %opts.address, "VMC: send failed");
                        }
                    }
                }
                Err(e) => warn!(error = %e, "VMC: cannot encode a frame"),
            }
            last_sent = Some(now);
        }
        face.tick(now);
        let wait = if moving {
            frame_every
        } else {
            // Idle: wake for the next resend or the next blink, whichever is first.
            let resend = last_sent.map_or(now, |at| at + resend_every);
            let wake = face.next_blink().map_or(resend, |blink| blink.min(resend));
            wake.saturating_duration_since(now)
                .max(Duration::from_millis(1))
        };
        match commands.recv_timeout(wait) {
            Ok(cmd) => face.command(&cmd, Instant::now()),
            // The worker is stopping (the sender is gone with it).
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> VmcOptions {
        VmcOptions::new(
            "127.0.0.1:1".into(),
            mate_protocol::vmc::vrm0_blend_shapes(),
        )
    }

    fn happy(transition_ms: u32) -> AvatarCommand {
        AvatarCommand::SetExpression {
            expression: "happy".into(),
            intensity: 0.8,
            transition_ms,
        }
    }

    #[test]
    fn an_expression_moves_its_shape_up_and_the_others_down_in_a_straight_line() {
        let t0 = Instant::now();
        let mut face = Face::new(&opts(), t0);
        face.command(&happy(0), t0);
        let v = face.values(t0 + Duration::from_millis(1));
        assert_eq!(v["Joy"], 0.8);
        face.command(
            &AvatarCommand::SetExpression {
                expression: "sad".into(),
                intensity: 1.0,
                transition_ms: 200,
            },
            t0 + Duration::from_millis(10),
        );
        let mid = face.values(t0 + Duration::from_millis(110));
        assert!((mid["Joy"] - 0.4).abs() < 0.01, "{mid:?}");
        assert!((mid["Sorrow"] - 0.5).abs() < 0.01, "{mid:?}");
        let end = face.values(t0 + Duration::from_millis(300));
        assert_eq!((end["Joy"], end["Sorrow"], end["Fun"]), (0.0, 1.0, 0.0));
        // An expression the map does not know: the neutral face.
        face.command(&happy(0), t0 + Duration::from_millis(400));
        face.command(
            &AvatarCommand::SetExpression {
                expression: "thinking".into(),
                intensity: 1.0,
                transition_ms: 0,
            },
            t0 + Duration::from_millis(500),
        );
        let v = face.values(t0 + Duration::from_millis(600));
        assert!(
            v.iter()
                .filter(|(k, _)| *k != BLINK)
                .all(|(_, x)| *x == 0.0),
            "{v:?}"
        );
    }

    #[test]
    fn mate_blinks_only_when_asked_and_a_frame_ends_with_apply() {
        let t0 = Instant::now();
        let mut face = Face::new(&opts(), t0);
        let closed = face.values(t0 + BLINK_EVERY + BLINK_SPAN / 2)[BLINK];
        assert!(closed > 0.9, "{closed}");
        assert_eq!(face.values(t0 + Duration::from_millis(100))[BLINK], 0.0);
        face.command(&AvatarCommand::Blink { enabled: false }, t0);
        assert!(!face.values(t0 + BLINK_EVERY).contains_key(BLINK));

        let OscPacket::Bundle(bundle) = frame(&face.values(t0)) else {
            panic!("a bundle");
        };
        let addrs: Vec<String> = bundle
            .content
            .iter()
            .map(|p| match p {
                OscPacket::Message(m) => m.addr.clone(),
                OscPacket::Bundle(_) => "bundle".into(),
            })
            .collect();
        assert_eq!(
            addrs.last().map(String::as_str),
            Some("/VMC/Ext/Blend/Apply")
        );
        assert!(addrs[..addrs.len() - 1]
            .iter()
            .all(|a| a == "/VMC/Ext/Blend/Val"));
    }
}
