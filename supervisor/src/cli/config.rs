//! `mate config …`, and the settings every command resolves from the config file, the
//! environment and the flags (`mate::config` does the resolving).

use clap::Subcommand;
use mate::config::{self, Overrides, Settings};

use super::up::UpArgs;
use crate::{Failure, GlobalArgs};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the config file path
    Path,
    /// Print a commented sample config
    Sample,
}

/// The settings of a command that takes only the global flags.
pub fn settings(global: &GlobalArgs) -> Result<Settings, Failure> {
    up_settings(global, &UpArgs::default())
}

/// The settings of `mate up` and `mate run`, whose flags may turn automatic profile changes off.
pub fn up_settings(global: &GlobalArgs, up: &UpArgs) -> Result<Settings, Failure> {
    let overrides = Overrides {
        config: global.config.clone(),
        model: global.model.clone(),
        state_dir: global.state_dir.clone(),
        profile: global.profile.clone(),
        gpu_scenario: global.gpu_scenario.clone(),
        no_auto_downgrade: up.no_auto_downgrade,
        no_auto_upgrade: up.no_auto_upgrade,
    };
    let file = config::load(overrides.config.as_deref())?;
    Ok(config::resolve(&overrides, file)?)
}

/// `mate config …`.
pub fn run(command: ConfigCommand) -> Result<(), Failure> {
    match command {
        ConfigCommand::Path => match config::default_config_path() {
            Some(path) => println!("{}", path.display()),
            None => return Err(anyhow::anyhow!("no config dir on this platform").into()),
        },
        ConfigCommand::Sample => print!("{}", config::SAMPLE),
    }
    Ok(())
}
