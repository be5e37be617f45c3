//! Settings: the TOML file in the platform config dir, overridden by `MATE_*` environment
//! variables and command-line flags (clap reads both; this module fills in the rest).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use mate_protocol::{AvatarCommand, ChatTemplate, Coalesce, LlmOptions, Sampling, UnityOptions};
use serde::Deserialize;

use crate::{
    cues::CueMap,
    gpu::ladder::{LadderSpec, ProfileOverride},
    gpu::pressure::Thresholds,
    gpu::GpuChoice,
    policy::{Backoff, Policy},
};

mod api;
mod vmc;
pub use api::{ApiConfig, ApiSettings, API_ADDRESS_ENV, API_KEY_ENV, DEFAULT_API_ADDRESS};
pub use vmc::VmcConfig;

/// The commented sample, also printed by `mate config sample`.
pub const SAMPLE: &str = include_str!("../../config/mate.sample.toml");

/// What the config file may say. Unknown keys are an error, so a typo is not silently ignored.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub model: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub profile: Option<String>,
    pub log: Option<String>,
    #[serde(default)]
    pub llm: LlmConfig,
    #[serde(default)]
    pub supervisor: SupervisorConfig,
    #[serde(default)]
    pub chat: ChatConfig,
    #[serde(default)]
    pub gpu: GpuConfig,
    #[serde(default)]
    pub unity: UnityConfig,
    #[serde(default)]
    pub avatar: AvatarConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub vmc: VmcConfig,
    /// `[profiles.NAME]` tables: fields that replace the computed values of a rung.
    #[serde(default)]
    pub profiles: BTreeMap<String, ProfileOverride>,
}

/// The `[gpu]` table: what is watched, and when the LLM changes profile.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuConfig {
    pub monitor: Option<Monitor>,
    pub device: Option<u32>,
    /// Simulate the GPU from this scenario file instead of watching a real one.
    pub scenario: Option<PathBuf>,
    pub sample_ms: Option<u64>,
    pub alert_percent: Option<f32>,
    pub alert_samples: Option<u32>,
    pub critical_percent: Option<f32>,
    pub trend_samples: Option<u32>,
    pub upgrade_below_percent: Option<f32>,
    pub cooldown_s: Option<u64>,
    pub crash_limit: Option<u32>,
    pub crash_window_s: Option<u64>,
    pub auto_downgrade: Option<bool>,
    pub auto_upgrade: Option<bool>,
    pub margin_mb: Option<u64>,
    pub overhead_mb: Option<u64>,
    /// Rung names, highest first.
    pub ladder: Option<Vec<String>>,
}

/// The `[unity]` table: where the Unity app listens and how the bridge talks to it.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnityConfig {
    pub address: Option<String>,
    pub vrm: Option<PathBuf>,
    pub batch_window_ms: Option<u32>,
    pub ack_timeout_ms: Option<u32>,
    pub ttl_ms: Option<u32>,
    pub max_line_bytes: Option<u32>,
    pub reconnect_max_ms: Option<u32>,
    pub queue_limit: Option<u32>,
    pub blink: Option<bool>,
}

/// The `[avatar]` table: what the reply makes the avatar show.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvatarConfig {
    /// Shown from the user's message until the reply starts; "" for none.
    pub thinking: Option<String>,
    /// Shown when the reply starts and carries no cue of its own; "" to keep "thinking".
    pub talking: Option<String>,
    pub intensity: Option<f32>,
    pub transition_ms: Option<u32>,
    /// `[avatar.tags]`: tag name → expression, added to (or replacing) the built-in ones;
    /// an expression of "" removes a built-in tag.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// `[avatar.lexicon]`: keyword or emoji → expression, the same way.
    #[serde(default)]
    pub lexicon: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Monitor {
    /// The NVIDIA GPU when there is one.
    Auto,
    Off,
}

/// The `[supervisor]` table: how workers are watched and restarted.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorConfig {
    pub heartbeat_ms: Option<u64>,
    pub missed_heartbeats: Option<u32>,
    pub stall_s: Option<u64>,
    pub start_deadline_s: Option<u64>,
    pub shutdown_grace_ms: Option<u64>,
    pub backoff_initial_ms: Option<u64>,
    pub backoff_factor: Option<f64>,
    pub backoff_max_ms: Option<u64>,
    pub backoff_reset_s: Option<u64>,
    pub restart_intensity: Option<u32>,
    pub restart_period_s: Option<u64>,
}

/// The `[chat]` table: what every turn is generated with.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    /// The system prompt; empty for none.
    pub system: Option<String>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_k: Option<u32>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub seed: Option<u32>,
    /// Chats that may wait while a reply streams.
    pub queue: Option<u32>,
}

/// The system prompt when the config names none.
pub const DEFAULT_SYSTEM_PROMPT: &str =
    "You are Mate, a cheerful desktop companion. You answer briefly and kindly.";

/// The `[llm]` table.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// Generation threads; absent or 0: chosen from the CPU (`mate doctor` shows the choice).
    pub threads: Option<u32>,
    pub warmup: Option<bool>,
    pub coalesce: Option<Coalescing>,
    /// Keep a KV snapshot of the conversation in the state dir for fast restarts.
    pub snapshots: Option<bool>,
    /// Host memory (MiB) for conversations set aside when another one displaces them.
    pub stash_mb: Option<u64>,
    pub template: Option<TemplateConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Coalescing {
    /// 3–5 tokens or 50 ms per chunk.
    Smooth,
    /// Every token at once.
    Off,
}

/// `[llm.template]`: the chat format for models without their own template.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    pub system: Option<String>,
    pub user: Option<String>,
    pub assistant: Option<String>,
    pub generation_prompt: Option<String>,
    pub stop: Option<Vec<String>>,
}

/// Values given on the command line or in the environment (already merged by clap).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub model: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub profile: Option<String>,
    pub gpu_scenario: Option<PathBuf>,
    pub no_auto_downgrade: bool,
    pub no_auto_upgrade: bool,
}

/// Everything a command needs to know, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub state_dir: PathBuf,
    /// `None`: use the default model, fetching it if needed.
    pub model: Option<PathBuf>,
    pub profile: String,
    pub log: String,
    /// Generation threads; 0: chosen from the CPU.
    pub threads: u32,
    /// How the LLM worker runs (snapshot dir already placed in the state dir).
    pub llm: LlmOptions,
    pub policy: Policy,
    pub chat: ChatSettings,
    pub gpu: GpuSettings,
    pub unity: UnitySettings,
    pub avatar: AvatarSettings,
    pub api: ApiSettings,
}

/// The Unity app: how the bridge talks to it, and the avatar it starts from.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitySettings {
    pub options: UnityOptions,
    /// Loaded on every (re)connect until a `mate ctl avatar load` replaces it.
    pub vrm: Option<String>,
    pub blink: bool,
}

/// What the reply makes the avatar show.
#[derive(Debug, Clone, PartialEq)]
pub struct AvatarSettings {
    /// Empty: no expression change.
    pub thinking: String,
    pub talking: String,
    pub intensity: f32,
    pub transition_ms: u32,
    pub cues: Arc<CueMap>,
}

impl AvatarSettings {
    /// The command that shows `expression`.
    pub fn expression(&self, expression: &str) -> AvatarCommand {
        AvatarCommand::SetExpression {
            expression: expression.into(),
            intensity: self.intensity,
            transition_ms: self.transition_ms,
        }
    }
}

/// How the GPU is watched and the profile ladder run.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuSettings {
    pub choice: GpuChoice,
    pub sample: Duration,
    pub thresholds: Thresholds,
    pub auto_downgrade: bool,
    pub auto_upgrade: bool,
    pub ladder: LadderSpec,
}

/// What every turn is generated with.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatSettings {
    /// Empty: no system message.
    pub system: String,
    pub sampling: Sampling,
    /// Chats that may wait while a reply streams (one FIFO for every client); 0: none.
    pub queue: usize,
}

/// Chats that may wait while a reply streams, unless the config says otherwise.
pub const DEFAULT_QUEUE: usize = 8;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}(`mate config sample` prints a valid one)")]
    Parse { path: PathBuf, message: String },
    #[error("cannot find a home directory for the default state dir; pass --state-dir")]
    NoHome,
    #[error("invalid setting: {0}")]
    Invalid(String),
}

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "mate")
}

/// `~/.config/mate/config.toml` on Linux, the platform equivalent elsewhere.
pub fn default_config_path() -> Option<PathBuf> {
    project_dirs().map(|d| d.config_dir().join("config.toml"))
}

/// `~/.local/state/mate` on Linux; the local data dir where there is no state dir.
pub fn default_state_dir() -> Option<PathBuf> {
    project_dirs().map(|d| {
        d.state_dir()
            .unwrap_or_else(|| d.data_local_dir())
            .to_path_buf()
    })
}

/// Reads the config file. An explicitly named file must exist; the default one may not.
pub fn load(explicit: Option<&Path>) -> Result<FileConfig, ConfigError> {
    let Some(path) = explicit.map(Path::to_path_buf).or_else(default_config_path) else {
        return Ok(FileConfig::default());
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
            return Ok(FileConfig::default())
        }
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    parse(&text, &path)
}

pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Merges flags/env over the file over the defaults.
pub fn resolve(overrides: &Overrides, file: FileConfig) -> Result<Settings, ConfigError> {
    let state_dir = match overrides.state_dir.clone().or(file.state_dir) {
        Some(dir) => expand_tilde(&dir),
        None => default_state_dir().ok_or(ConfigError::NoHome)?,
    };
    let llm = file.llm;
    let default = ChatTemplate::default();
    let template = llm.template.unwrap_or_default();
    let options = LlmOptions {
        fallback_template: ChatTemplate {
            system: template.system.unwrap_or(default.system),
            user: template.user.unwrap_or(default.user),
            assistant: template.assistant.unwrap_or(default.assistant),
            generation_prompt: template
                .generation_prompt
                .unwrap_or(default.generation_prompt),
            stop: template.stop.unwrap_or(default.stop),
        },
        coalesce: match llm.coalesce {
            Some(Coalescing::Off) => Coalesce::OFF,
            Some(Coalescing::Smooth) | None => Coalesce::default(),
        },
        snapshot_dir: llm
            .snapshots
            .unwrap_or(true)
            .then(|| state_dir.join("session").to_string_lossy().into_owned()),
        warmup: llm.warmup.unwrap_or(true),
        stash_bytes: llm
            .stash_mb
            .map_or(LlmOptions::default().stash_bytes, |mb| {
                mb.min(1 << 20) << 20
            }),
    };
    Ok(Settings {
        threads: llm.threads.unwrap_or(0),
        llm: options,
        policy: policy(&file.supervisor)?,
        api: api::api(file.api)?,
        chat: chat(file.chat),
        gpu: gpu(overrides, file.gpu, file.profiles)?,
        unity: unity(file.unity, vmc::vmc(file.vmc)?)?,
        avatar: avatar(file.avatar)?,
        state_dir,
        model: overrides
            .model
            .clone()
            .or(file.model)
            .map(|p| expand_tilde(&p)),
        profile: overrides
            .profile
            .clone()
            .or(file.profile)
            .unwrap_or_else(|| "auto".into()),
        log: std::env::var("MATE_LOG")
            .ok()
            .or(file.log)
            .unwrap_or_else(|| "info".into()),
    })
}

/// `[supervisor]` with every value checked against its valid range: a nonsense setting
/// (a zero heartbeat, a shrinking backoff, no restarts allowed) is refused with the range,
/// never quietly changed.
fn policy(c: &SupervisorConfig) -> Result<Policy, ConfigError> {
    let d = Policy::default();
    // At most a day each, so no arithmetic on instants can overflow.
    const DAY_S: u64 = 86_400;
    let ms = |name, v: Option<u64>, min: u64, default: Duration| {
        in_range(name, v, min, DAY_S * 1000).map(|v| v.map_or(default, Duration::from_millis))
    };
    let s = |name, v: Option<u64>, min: u64, default: Duration| {
        in_range(name, v, min, DAY_S).map(|v| v.map_or(default, Duration::from_secs))
    };
    let factor = c.backoff_factor.unwrap_or(d.backoff.factor);
    if !(1.0..=100.0).contains(&factor) {
        return Err(invalid_policy("backoff_factor", factor, 1, 100));
    }
    Ok(Policy {
        heartbeat: ms("heartbeat_ms", c.heartbeat_ms, 10, d.heartbeat)?,
        missed_heartbeats: in_range("missed_heartbeats", c.missed_heartbeats, 1, 1000)?
            .unwrap_or(d.missed_heartbeats),
        stall: s("stall_s", c.stall_s, 1, d.stall)?,
        start_deadline: s("start_deadline_s", c.start_deadline_s, 1, d.start_deadline)?,
        grace: ms("shutdown_grace_ms", c.shutdown_grace_ms, 0, d.grace)?,
        backoff: Backoff {
            initial: ms(
                "backoff_initial_ms",
                c.backoff_initial_ms,
                0,
                d.backoff.initial,
            )?,
            factor,
            max: ms("backoff_max_ms", c.backoff_max_ms, 0, d.backoff.max)?,
            reset_after: s(
                "backoff_reset_s",
                c.backoff_reset_s,
                0,
                d.backoff.reset_after,
            )?,
        },
        intensity: in_range("restart_intensity", c.restart_intensity, 1, 1_000_000)?
            .unwrap_or(d.intensity),
        period: s("restart_period_s", c.restart_period_s, 1, d.period)?,
    })
}

fn in_range<T>(name: &str, v: Option<T>, min: u64, max: u64) -> Result<Option<T>, ConfigError>
where
    T: Copy + Into<u64> + std::fmt::Display,
{
    match v {
        Some(x) if !(min..=max).contains(&x.into()) => Err(invalid_policy(name, x, min, max)),
        v => Ok(v),
    }
}

fn invalid_policy(name: &str, v: impl std::fmt::Display, min: u64, max: u64) -> ConfigError {
    ConfigError::Invalid(format!(
        "[supervisor] {name} = {v} is out of range: it must be between {min} and {max}"
    ))
}

fn gpu(
    overrides: &Overrides,
    c: GpuConfig,
    profiles: BTreeMap<String, ProfileOverride>,
) -> Result<GpuSettings, ConfigError> {
    let d = Thresholds::default();
    let percent = |v: Option<f32>, default: f32| v.unwrap_or(default).clamp(1.0, 100.0);
    let thresholds = Thresholds {
        alert_percent: percent(c.alert_percent, d.alert_percent),
        alert_samples: c.alert_samples.unwrap_or(d.alert_samples).clamp(1, 1000),
        critical_percent: percent(c.critical_percent, d.critical_percent),
        trend_samples: c.trend_samples.unwrap_or(d.trend_samples).min(1000),
        upgrade_below_percent: percent(c.upgrade_below_percent, d.upgrade_below_percent),
        cooldown: c
            .cooldown_s
            .map_or(d.cooldown, Duration::from_secs)
            .min(Duration::from_secs(86_400)),
        crash_limit: c.crash_limit.unwrap_or(d.crash_limit).max(1),
        crash_window: c
            .crash_window_s
            .map_or(d.crash_window, Duration::from_secs)
            .min(Duration::from_secs(86_400)),
    };
    let t = &thresholds;
    if !(t.upgrade_below_percent < t.alert_percent && t.alert_percent <= t.critical_percent) {
        return Err(ConfigError::Invalid(format!(
            "[gpu] needs upgrade_below_percent < alert_percent <= critical_percent (got {} < \
             {} <= {}): the gap between them keeps the profile from flapping",
            t.upgrade_below_percent, t.alert_percent, t.critical_percent
        )));
    }
    let scenario = overrides.gpu_scenario.clone().or(c.scenario);
    let choice = match (scenario, c.monitor.unwrap_or(Monitor::Auto), c.device) {
        (Some(path), _, _) => GpuChoice::Simulated(expand_tilde(&path)),
        (None, Monitor::Off, _) => GpuChoice::Off,
        (None, Monitor::Auto, Some(device)) => GpuChoice::Nvml { device },
        (None, Monitor::Auto, None) => GpuChoice::Auto,
    };
    let d_ladder = LadderSpec::default();
    let mb = |v: Option<u64>, default: u64| v.map_or(default, |mb| mb.min(1 << 30) << 20);
    let ladder = LadderSpec {
        order: c.ladder.unwrap_or(d_ladder.order),
        overrides: profiles,
        margin_bytes: mb(c.margin_mb, d_ladder.margin_bytes),
        top_percent: thresholds.upgrade_below_percent,
        overhead_bytes: mb(c.overhead_mb, d_ladder.overhead_bytes),
    };
    ladder
        .validate()
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    Ok(GpuSettings {
        choice,
        sample: c
            .sample_ms
            .map_or(Duration::from_millis(500), Duration::from_millis)
            .clamp(Duration::from_millis(50), Duration::from_secs(3600)),
        thresholds,
        auto_downgrade: c.auto_downgrade.unwrap_or(true) && !overrides.no_auto_downgrade,
        auto_upgrade: c.auto_upgrade.unwrap_or(true) && !overrides.no_auto_upgrade,
        ladder,
    })
}

fn unity(
    c: UnityConfig,
    vmc: Option<mate_protocol::VmcOptions>,
) -> Result<UnitySettings, ConfigError> {
    let d = UnityOptions::default();
    let address = c.address.unwrap_or(d.address);
    if !address.contains(':') {
        return Err(ConfigError::Invalid(format!(
            "[unity] address = {address:?} needs a port, as in \"127.0.0.1:5555\""
        )));
    }
    let options = UnityOptions {
        address,
        batch_window_ms: c.batch_window_ms.unwrap_or(d.batch_window_ms).min(10_000),
        ack_timeout_ms: c
            .ack_timeout_ms
            .unwrap_or(d.ack_timeout_ms)
            .clamp(10, 600_000),
        ttl_ms: c.ttl_ms.unwrap_or(d.ttl_ms).min(86_400_000),
        max_line_bytes: c
            .max_line_bytes
            .unwrap_or(d.max_line_bytes)
            .clamp(256, 64 << 20),
        reconnect_max_ms: c
            .reconnect_max_ms
            .unwrap_or(d.reconnect_max_ms)
            .clamp(100, 600_000),
        queue_limit: c.queue_limit.unwrap_or(d.queue_limit).clamp(1, 100_000),
        vmc,
    };
    Ok(UnitySettings {
        options,
        vrm: c
            .vrm
            .map(|p| expand_tilde(&p).to_string_lossy().into_owned()),
        blink: c.blink.unwrap_or(true),
    })
}

fn avatar(c: AvatarConfig) -> Result<AvatarSettings, ConfigError> {
    let mut cues = CueMap::default();
    type Check = fn(&str) -> bool;
    let tables: [(_, _, Check, &str, &str); 2] = [
        (
            &mut cues.tags,
            c.tags,
            CueMap::can_match_tag,
            "[avatar.tags]",
            "a tag is letters, digits, '_' or '-', at most 24 of them",
        ),
        (
            &mut cues.lexicon,
            c.lexicon,
            CueMap::can_match_word,
            "[avatar.lexicon]",
            "an entry is one word (letters and digits, at most 32 bytes) or one emoji",
        ),
    ];
    for (table, mine, can_match, name, rule) in tables {
        for (key, expression) in mine {
            let key = key.to_lowercase();
            if !can_match(&key) {
                return Err(ConfigError::Invalid(format!(
                    "{name} {key:?} can never match: {rule}"
                )));
            }
            if expression.is_empty() {
                table.remove(&key);
            } else {
                table.insert(key, expression);
            }
        }
    }
    let intensity = c.intensity.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&intensity) {
        return Err(ConfigError::Invalid(format!(
            "[avatar] intensity = {intensity} must be between 0 and 1"
        )));
    }
    Ok(AvatarSettings {
        thinking: c.thinking.unwrap_or_else(|| "thinking".into()),
        talking: c.talking.unwrap_or_else(|| "neutral".into()),
        intensity,
        transition_ms: c.transition_ms.unwrap_or(150).min(60_000),
        cues: Arc::new(cues),
    })
}

fn chat(c: ChatConfig) -> ChatSettings {
    let d = Sampling::default();
    ChatSettings {
        system: c.system.unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.into()),
        sampling: Sampling {
            temperature: c.temperature.unwrap_or(d.temperature),
            top_k: c.top_k.unwrap_or(d.top_k),
            top_p: c.top_p.unwrap_or(d.top_p),
            min_p: c.min_p.unwrap_or(d.min_p),
            repeat_penalty: c.repeat_penalty.unwrap_or(d.repeat_penalty),
            seed: c.seed.unwrap_or(d.seed),
            max_tokens: c.max_tokens.unwrap_or(d.max_tokens).max(1),
            stop: d.stop,
        },
        queue: c.queue.map_or(DEFAULT_QUEUE, |q| q as usize),
    }
}

/// `~/x` in the config file means the home directory, as users expect.
fn expand_tilde(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), directories::BaseDirs::new()) {
        (Ok(rest), Some(base)) => base.home_dir().join(rest),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_parses_and_sets_nothing() {
        let file = parse(SAMPLE, Path::new("sample")).expect("sample parses");
        assert_eq!(file, FileConfig::default());
    }

    #[test]
    fn unknown_keys_are_named_in_the_error() {
        let err = parse("modle = \"x.gguf\"\n", Path::new("/c.toml")).expect_err("typo");
        let text = err.to_string();
        assert!(text.contains("modle"), "{text}");
        assert!(text.contains("/c.toml"), "{text}");
        assert!(text.contains("mate config sample"), "{text}");
    }

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let file = parse(
            "model = \"/file.gguf\"\nstate_dir = \"/file-state\"\nprofile = \"balanced\"\n",
            Path::new("c.toml"),
        )
        .expect("parse");
        let flags = Overrides {
            state_dir: Some("/flag-state".into()),
            ..Overrides::default()
        };
        let s = resolve(&flags, file).expect("resolve");
        assert_eq!(s.state_dir, PathBuf::from("/flag-state"));
        assert_eq!(s.model, Some(PathBuf::from("/file.gguf")));
        assert_eq!(s.profile, "balanced");

        let s = resolve(&Overrides::default(), FileConfig::default()).expect("resolve");
        assert_eq!(s.model, None);
        assert_eq!(s.profile, "auto");
    }

    #[test]
    fn the_llm_table_sets_threads_coalescing_and_the_fallback_template() {
        let file = parse(
            "[llm]\nthreads = 3\ncoalesce = \"off\"\nsnapshots = false\n\
             [llm.template]\nuser = \"Q: {text}\\n\"\n",
            Path::new("c.toml"),
        )
        .expect("parse");
        let s = resolve(&Overrides::default(), file).expect("resolve");
        assert_eq!(s.threads, 3);
        assert_eq!(s.llm.coalesce, Coalesce::OFF);
        assert_eq!(s.llm.snapshot_dir, None);
        assert_eq!(s.llm.fallback_template.user, "Q: {text}\n");
        assert_eq!(
            s.llm.fallback_template.assistant,
            ChatTemplate::default().assistant
        );
        let s = resolve(&Overrides::default(), FileConfig::default()).expect("resolve");
        assert!(s.llm.snapshot_dir.is_some_and(|d| d.ends_with("session")));
        assert!(s.llm.warmup);
    }

    #[test]
    fn the_supervisor_and_chat_tables_set_policy_and_sampling() {
        let file = parse(
            "[supervisor]\nheartbeat_ms = 100\nrestart_intensity = 2\nbackoff_initial_ms = 10\n\
             [chat]\nsystem = \"\"\nmax_tokens = 32\ntemperature = 0.0\n",
            Path::new("c.toml"),
        )
        .expect("parse");
        let s = resolve(&Overrides::default(), file).expect("resolve");
        assert_eq!(s.policy.heartbeat, Duration::from_millis(100));
        assert_eq!(s.policy.intensity, 2);
        assert_eq!(s.policy.backoff.initial, Duration::from_millis(10));
        assert_eq!(s.policy.grace, Policy::default().grace);
        assert_eq!(s.chat.system, "");
        assert_eq!(s.chat.sampling.max_tokens, 32);
        assert_eq!(s.chat.sampling.temperature, 0.0);
        let s = resolve(&Overrides::default(), FileConfig::default()).expect("resolve");
        assert_eq!(s.policy, Policy::default());
        assert_eq!(s.chat.system, DEFAULT_SYSTEM_PROMPT);
    }

    #[test]
    fn the_gpu_and_profiles_tables_set_the_policy_and_the_ladder() {
        let file = parse(
            "[gpu]\nscenario = \"/s.toml\"\ncritical_percent = 97\ncooldown_s = 5\n\
             ladder = [\"performance\", \"half\", \"cpu\"]\nauto_upgrade = false\n\
             [profiles.half]\nn_gpu_layers = 10\nkv_type = \"q8_0\"\nflash_attention = true\n",
            Path::new("c.toml"),
        )
        .expect("parse");
        let flags = Overrides {
            no_auto_downgrade: true,
            ..Overrides::default()
        };
        let s = resolve(&flags, file).expect("resolve");
        assert_eq!(s.gpu.choice, GpuChoice::Simulated("/s.toml".into()));
        assert_eq!(s.gpu.thresholds.critical_percent, 97.0);
        assert_eq!(s.gpu.thresholds.cooldown, Duration::from_secs(5));
        assert_eq!(s.gpu.ladder.order, ["performance", "half", "cpu"]);
        assert_eq!(s.gpu.ladder.overrides["half"].n_gpu_layers, Some(10));
        assert!(!s.gpu.auto_downgrade && !s.gpu.auto_upgrade);

        let s = resolve(&Overrides::default(), FileConfig::default()).expect("resolve");
        assert_eq!(s.gpu.choice, GpuChoice::Auto);
        assert_eq!(s.gpu.thresholds, Thresholds::default());
        assert!(s.gpu.auto_downgrade && s.gpu.auto_upgrade);

        for bad in [
            "[gpu]\nalert_percent = 96\n",
            "[gpu]\nupgrade_below_percent = 92\n",
            "[gpu]\nladder = [\"turbo\"]\n",
        ] {
            let file = parse(bad, Path::new("c.toml")).expect("parse");
            let err = resolve(&Overrides::default(), file).expect_err(bad);
            assert!(matches!(err, ConfigError::Invalid(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn nonsense_supervisor_settings_are_refused_with_their_range() {
        for (bad, range) in [
            ("heartbeat_ms = 0", "between 10 and"),
            ("backoff_factor = -2.0", "between 1 and 100"),
            ("backoff_factor = nan", "between 1 and 100"),
            ("restart_intensity = 0", "between 1 and 1000000"),
            ("missed_heartbeats = 0", "between 1 and 1000"),
            ("restart_period_s = 0", "between 1 and 86400"),
            ("shutdown_grace_ms = 100000000000", "between 0 and 86400000"),
        ] {
            let text = format!("[supervisor]\n{bad}\n");
            let file = parse(&text, Path::new("c.toml")).expect("parse");
            let err = resolve(&Overrides::default(), file).expect_err(bad);
            let message = err.to_string();
            let name = bad.split(' ').next().unwrap_or_default();
            assert!(message.contains(name), "{bad}: {message}");
            assert!(message.contains(range), "{bad}: {message}");
        }
    }

    #[test]
    fn the_unity_and_avatar_tables_set_the_bridge_and_the_cues() {
        let file = parse(
            "[unity]\naddress = \"10.0.0.2:6000\"\nbatch_window_ms = 0\nblink = false\n\
             vrm = \"/m/mate.vrm\"\n\
             [avatar]\nthinking = \"\"\n[avatar.tags]\nGrin = \"happy\"\nsad = \"\"\n\
             [avatar.lexicon]\n\"🤔\" = \"thinking\"\n",
            Path::new("c.toml"),
        )
        .expect("parse");
        let s = resolve(&Overrides::default(), file).expect("resolve");
        assert_eq!(s.unity.options.address, "10.0.0.2:6000");
        assert_eq!(s.unity.vrm.as_deref(), Some("/m/mate.vrm"));
        assert_eq!((s.unity.options.batch_window_ms, s.unity.blink), (0, false));
        assert_eq!(
            s.unity.options.ack_timeout_ms,
            UnityOptions::default().ack_timeout_ms
        );
        assert_eq!(s.avatar.thinking, "");
        assert_eq!(s.avatar.talking, "neutral");
        assert_eq!(s.avatar.cues.tags["grin"], "happy");
        assert!(!s.avatar.cues.tags.contains_key("sad"));
        assert_eq!(s.avatar.cues.tags["happy"], "happy", "built-ins stay");
        assert_eq!(s.avatar.cues.lexicon["🤔"], "thinking");

        let file = parse("[unity]\naddress = \"localhost\"\n", Path::new("c.toml")).expect("parse");
        let err = resolve(&Overrides::default(), file).expect_err("no port");
        assert!(err.to_string().contains("needs a port"), "{err}");
        let s = resolve(&Overrides::default(), FileConfig::default()).expect("resolve");
        assert_eq!(s.unity.options, UnityOptions::default());
        assert!(s.unity.blink && s.unity.vrm.is_none());
        assert_eq!(s.avatar.thinking, "thinking");
        for bad in [
            "[avatar.lexicon]\n\":)\" = \"happy\"\n",
            "[avatar.lexicon]\n\"good day\" = \"happy\"\n",
            "[avatar.tags]\n\"very happy\" = \"happy\"\n",
            // Longer than the filter keeps of a word.
            "[avatar.lexicon]\nsupercalifragilisticexpialidocious = \"happy\"\n",
            "[avatar]\nintensity = 2.0\n",
            "[avatar]\nintensity = nan\n",
        ] {
            let file = parse(bad, Path::new("c.toml")).expect("parse");
            let err = resolve(&Overrides::default(), file).expect_err(bad);
            assert!(matches!(err, ConfigError::Invalid(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn an_explicit_missing_config_file_is_an_error() {
        let err = load(Some(Path::new("/nonexistent/mate.toml"))).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/mate.toml"));
    }

    #[test]
    fn tilde_means_home() {
        let expanded = expand_tilde(Path::new("~/models/a.gguf"));
        assert!(!expanded.starts_with("~"));
        assert!(expanded.ends_with("models/a.gguf"));
    }
}
