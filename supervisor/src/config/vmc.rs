//! The `[vmc]` table: the bridge's second sink, the VMC protocol (OSC over UDP) that
//! VSeeFace, VMagicMirror, VNyan and Warudo receive.

use std::collections::BTreeMap;

use mate_protocol::{
    vmc::{vrm0_blend_shapes, vrm1_blend_shapes, DEFAULT_VMC_ADDRESS},
    VmcOptions,
};
use serde::Deserialize;

use super::ConfigError;

/// What the `[vmc]` table may say.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmcConfig {
    pub enabled: Option<bool>,
    pub address: Option<String>,
    /// The preset names the defaults use: "vrm0" (Joy, Angry, …) or "vrm1" (happy, angry, …).
    pub expressions: Option<String>,
    /// `[vmc.map]`: mate's expression → blend shape, over the preset's ("" removes one).
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    pub blink: Option<bool>,
    pub rate_hz: Option<u32>,
    pub resend_ms: Option<u32>,
}

/// `None` when VMC is off.
pub(super) fn vmc(c: VmcConfig) -> Result<Option<VmcOptions>, ConfigError> {
    let mut blend_shapes: BTreeMap<String, String> =
        match c.expressions.as_deref().unwrap_or("vrm0") {
            "vrm0" => vrm0_blend_shapes(),
            "vrm1" => vrm1_blend_shapes(),
            other => {
                return Err(ConfigError::Invalid(format!(
                    "[vmc] expressions = {other:?}: \"vrm0\" (Joy, Angry, Sorrow, Fun, \
                     Neutral) or \"vrm1\" (happy, angry, sad, relaxed, neutral)"
                )))
            }
        }
        .into_iter()
        .collect();
    for (expression, shape) in c.map {
        if shape.is_empty() {
            blend_shapes.remove(&expression.to_lowercase());
        } else {
            blend_shapes.insert(expression.to_lowercase(), shape);
        }
    }
    if !c.enabled.unwrap_or(false) {
        return Ok(None);
    }
    let address = c.address.unwrap_or_else(|| DEFAULT_VMC_ADDRESS.into());
    super::api::ip_and_port("[vmc]", &address, DEFAULT_VMC_ADDRESS)?;
    let mut options = VmcOptions::new(address, blend_shapes.into_iter().collect());
    options.blink = c.blink.unwrap_or(true);
    options.rate_hz = c.rate_hz.unwrap_or(options.rate_hz).clamp(1, 120);
    options.resend_ms = c.resend_ms.unwrap_or(options.resend_ms).clamp(50, 60_000);
    Ok(Some(options))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str) -> Result<Option<VmcOptions>, ConfigError> {
        let file = super::super::parse(text, std::path::Path::new("c.toml")).expect("parse");
        vmc(file.vmc)
    }

    #[test]
    fn vmc_is_off_by_default_and_maps_presets_with_overrides() {
        assert_eq!(resolve("").expect("default"), None);
        let on = resolve("[vmc]\nenabled = true\n")
            .expect("on")
            .expect("some");
        assert_eq!(on.address, "127.0.0.1:39539");
        assert!(on.blend_shapes.contains(&("happy".into(), "Joy".into())));
        assert!(on.blink);
        let vrm1 = resolve(
            "[vmc]\nenabled = true\nexpressions = \"vrm1\"\nblink = false\n\
             [vmc.map]\nHappy = \"Smile\"\nsad = \"\"\n",
        )
        .expect("vrm1")
        .expect("some");
        assert!(vrm1
            .blend_shapes
            .contains(&("happy".into(), "Smile".into())));
        assert!(vrm1.blend_shapes.iter().all(|(e, _)| e != "sad"));
        assert!(vrm1
            .blend_shapes
            .contains(&("angry".into(), "angry".into())));
        assert!(!vrm1.blink);
        for bad in [
            "[vmc]\nenabled = true\nexpressions = \"vrm2\"\n",
            "[vmc]\nenabled = true\naddress = \"39539\"\n",
        ] {
            assert!(resolve(bad).is_err(), "{bad}");
        }
    }
}
