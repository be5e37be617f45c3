//! Any config file: parsing and resolving must give settings or a `ConfigError` that names
//! the problem, never a panic (thresholds, ladders, cue keys, durations at their extremes).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mate::config::{self, Overrides};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = config::parse(text, Path::new("fuzz.toml")) {
        let overrides = Overrides {
            state_dir: Some("/tmp/mate-fuzz-state".into()),
            ..Overrides::default()
        };
        let _ = config::resolve(&overrides, file);
    }
});
