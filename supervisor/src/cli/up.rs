//! `mate up`, `mate run` and `mate tui`: the supervisor in the foreground, the supervisor in
//! the background with the console attached, and the console alone.

use anyhow::Context as _;
use clap::Args;
use mate::{config::Settings, logging, statedir, supervisor};
use mate_worker_bridge::sim::{Sim, SimOptions};

use super::{config::up_settings, model::resolve_model};
use crate::{Failure, GlobalArgs};

/// How `mate up` / `mate run` may change the LLM's profile on their own.
#[derive(Debug, Args, Default)]
pub struct UpArgs {
    /// Never lower the profile on VRAM pressure, out-of-memory or crash loops: alert and
    /// fail loudly instead
    #[arg(long)]
    pub no_auto_downgrade: bool,
    /// Never raise the profile back when VRAM pressure clears
    #[arg(long)]
    pub no_auto_upgrade: bool,
    /// Also start the built-in Unity stand-in (`mate unity-sim`) at the Unity address, so the
    /// whole pipeline runs without the Unity app; it prints what the avatar would do
    #[arg(long)]
    pub demo: bool,
}

/// `mate up`: the supervisor in the foreground, until it is shut down or interrupted.
pub fn up(settings: Settings, demo: bool) -> Result<(), Failure> {
    // Before anything is written there (the log first).
    statedir::secure(&settings.state_dir)?;
    // Refuse before fetching or hashing a model; the state-dir lock decides for sure.
    if mate_protocol::Endpoint::for_state_dir(&settings.state_dir).is_live() {
        return Err(supervisor::AlreadyRunning {
            state_dir: settings.state_dir.clone(),
            pid: None,
        }
        .into());
    }
    let model = resolve_model(&settings)?;
    let log = logging::init(&settings.state_dir, "supervisor", &settings.log)?;
    if demo {
        let address = &settings.unity.options.address;
        let sim = Sim::start(address, SimOptions::default(), Box::new(std::io::stdout()));
        if let Err(e) = sim {
            eprintln!(
                "mate: cannot start the Unity stand-in at {address} ({e}); is the Unity app \
                 already listening there? Going on without it"
            );
        }
    }
    let opts = supervisor::Options {
        exe: std::env::current_exe().context("locating the mate executable")?,
        model,
        settings,
    };
    eprintln!(
        "mate: supervisor {} on {} (model {}, log {})",
        std::process::id(),
        opts.settings.state_dir.display(),
        opts.model.display(),
        log.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(supervisor::run(opts))?;
    eprintln!("mate: stopped");
    Ok(())
}

/// `mate run`: `mate up` in the background (its output in the state dir's logs), then the
/// console. Without a terminal there is nothing to attach: it runs as `mate up`.
pub fn run(global: &GlobalArgs, args: &UpArgs) -> Result<(), Failure> {
    use std::io::IsTerminal as _;
    let settings = up_settings(global, args)?;
    if !std::io::stdout().is_terminal() {
        return up(settings, args.demo);
    }
    let dir = &settings.state_dir;
    if !mate_protocol::Endpoint::for_state_dir(dir).is_live() {
        // Fetched here, where its progress can be seen.
        let model = resolve_model(&settings)?;
        statedir::secure(dir)?;
        let out_path = dir.join("logs").join("mate-up.out");
        let out = statedir::open_private(&out_path, true)
            .with_context(|| format!("opening {}", out_path.display()))?;
        let mut cmd = std::process::Command::new(
            std::env::current_exe().context("locating the mate executable")?,
        );
        cmd.arg("--state-dir").arg(dir).arg("--model").arg(&model);
        for (flag, value) in [
            ("--config", global.config.as_ref()),
            ("--gpu-scenario", global.gpu_scenario.as_ref()),
        ] {
            if let Some(value) = value {
                cmd.arg(flag).arg(value);
            }
        }
        if let Some(profile) = &global.profile {
            cmd.arg("--profile").arg(profile);
        }
        cmd.arg("up");
        for (on, flag) in [
            (args.no_auto_downgrade, "--no-auto-downgrade"),
            (args.no_auto_upgrade, "--no-auto-upgrade"),
            (args.demo, "--demo"),
        ] {
            if on {
                cmd.arg(flag);
            }
        }
        cmd.stdin(std::process::Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // Ctrl-C and the terminal closing do not reach it.
        mate::platform::away_from_terminal(&mut cmd);
        let mut child = cmd.spawn().context("starting mate up")?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !mate_protocol::Endpoint::for_state_dir(dir).is_live() {
            if let Some(status) = child.try_wait()? {
                let tail = std::fs::read_to_string(&out_path).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(5).collect();
                return Err(anyhow::anyhow!(
                    "the supervisor exited ({status}) before it could be attached to: {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                )
                .into());
            }
            if std::time::Instant::now() > deadline {
                return Err(anyhow::anyhow!(
                    "the supervisor did not start listening within 60 s; see {}",
                    out_path.display()
                )
                .into());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    tui(&settings)
}

/// `mate tui`: the console on the supervisor of the state dir.
pub fn tui(settings: &Settings) -> Result<(), Failure> {
    let opts = mate_tui::Options {
        state_dir: settings.state_dir.clone(),
        mono: std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
    };
    let outcome = match mate_tui::run(&opts) {
        Ok(outcome) => outcome,
        // Keeps "no supervisor" its own exit code.
        Err(mate_tui::TuiError::Client(e)) => return Err(e.into()),
        Err(e) => return Err(anyhow::Error::new(e).into()),
    };
    match outcome {
        mate_tui::Outcome::Detached => eprintln!(
            "mate: detached; the supervisor keeps running (`mate tui` attaches again, \
             `mate ctl shutdown` stops it)"
        ),
        mate_tui::Outcome::Stopped => eprintln!("mate: the supervisor is stopping"),
        mate_tui::Outcome::Terminated(why) => eprintln!("mate: console closed: {why}"),
    }
    Ok(())
}
