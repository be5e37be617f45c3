//! Settings: the TOML file in the platform config dir, overridden by `MATE_*` environment
//! variables and command-line flags (clap reads both; this module fills in the rest).

use std::path::{Path, PathBuf};

use mate_protocol::{ChatTemplate, Coalesce, LlmOptions};
use serde::Deserialize;

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
}

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
}

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
    };
    Ok(Settings {
        threads: llm.threads.unwrap_or(0),
        llm: options,
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
            .unwrap_or_else(|| "cpu".into()),
        log: std::env::var("MATE_LOG")
            .ok()
            .or(file.log)
            .unwrap_or_else(|| "info".into()),
    })
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
        assert_eq!(s.profile, "cpu");
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
