//! The VMC protocol side of the bridge (OSC over UDP, as VSeeFace, VMagicMirror, VNyan and
//! Warudo receive it): where to send, and how mate's expression names become blend shapes.

use serde::{Deserialize, Serialize};

/// VMC's conventional port, on this machine.
pub const DEFAULT_VMC_ADDRESS: &str = "127.0.0.1:39539";

/// How the bridge drives a VMC receiver.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmcOptions {
    /// `host:port` the OSC packets go to.
    pub address: String,
    /// mate's expression name → the blend shape that shows it. An expression not listed shows
    /// the neutral face (every listed blend shape at 0).
    pub blend_shapes: Vec<(String, String)>,
    /// mate blinks the avatar (the `Blink` blend shape) because the app does not by itself.
    pub blink: bool,
    /// Frames per second while a transition or a blink runs.
    pub rate_hz: u32,
    /// Every blend shape's value is sent again this often, so an app started later catches up.
    pub resend_ms: u32,
}

impl VmcOptions {
    pub fn new(address: String, blend_shapes: Vec<(String, String)>) -> VmcOptions {
        VmcOptions {
            address,
            blend_shapes,
            blink: true,
            rate_hz: 30,
            resend_ms: 1000,
        }
    }
}

/// VRM 0.x blend shape presets (VSeeFace, VMagicMirror): `Joy`, `Angry`, `Sorrow`, `Fun`,
/// `Neutral`, and `Surprised` (a common custom clip).
pub fn vrm0_blend_shapes() -> Vec<(String, String)> {
    pairs(&[
        ("happy", "Joy"),
        ("angry", "Angry"),
        ("sad", "Sorrow"),
        ("relaxed", "Fun"),
        ("neutral", "Neutral"),
        ("surprised", "Surprised"),
    ])
}

/// VRM 1.0 expression presets (Warudo, VRM 1.0 models): `happy`, `angry`, `sad`, `relaxed`,
/// `surprised`, `neutral`.
pub fn vrm1_blend_shapes() -> Vec<(String, String)> {
    pairs(&[
        ("happy", "happy"),
        ("angry", "angry"),
        ("sad", "sad"),
        ("relaxed", "relaxed"),
        ("neutral", "neutral"),
        ("surprised", "surprised"),
    ])
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}
