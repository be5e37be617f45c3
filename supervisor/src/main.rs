//! `mate`: the one user-facing binary. It runs the supervisor, the `mate ctl` client, model
//! management, and — re-executed by the supervisor with a hidden subcommand — each worker.
//! This file is the command line and the exit codes; each command lives in [`cli`].

mod cli;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use cli::{
    config::{settings, up_settings, ConfigCommand},
    ctl::CtlCommand,
    model::ModelCommand,
    unity_sim::SimArgs,
    up::UpArgs,
};
use mate::{ctl::CtlError, model::ModelError, supervisor};
use mate_protocol::WorkerKind;

/// Documented exit codes (README, "Exit codes").
mod exit {
    pub const ERROR: u8 = 1;
    pub const NO_SUPERVISOR: u8 = 3;
    pub const MODEL: u8 = 4;
    pub const ALREADY_RUNNING: u8 = 5;
    /// The supervisor is there but too busy to answer (a flood of connections): try again.
    pub const BUSY: u8 = 6;
    /// A chat reply cancelled with Ctrl-C (128 + SIGINT, as shells report it).
    pub const CANCELLED: u8 = 130;
}

#[derive(Debug, Parser)]
#[command(name = "mate", version, about = "Keeps a desktop AI companion alive")]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct GlobalArgs {
    /// Config file [default: the platform config dir's mate/config.toml]
    #[arg(long, global = true, env = "MATE_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// Where sockets, logs and the transcript live
    #[arg(long, global = true, env = "MATE_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// GGUF model to load [default: the default model, fetched if missing]
    #[arg(long, global = true, env = "MATE_MODEL", value_name = "PATH")]
    model: Option<PathBuf>,
    /// GPU profile to start with: a rung of the ladder (`mate doctor` lists them), or `auto`
    /// for the highest one that fits next to what the GPU already holds [default: auto]
    #[arg(long, global = true, env = "MATE_PROFILE", value_name = "NAME")]
    profile: Option<String>,
    /// Simulate the GPU from this scenario file (config/gpu-scenarios/ has examples)
    #[arg(long, global = true, env = "MATE_GPU_SCENARIO", value_name = "PATH")]
    gpu_scenario: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the supervisor in the foreground, headless (logs in <state-dir>/logs)
    Up(UpArgs),
    /// Start the supervisor in the background (unless one runs already) and attach the
    /// console; quitting it detaches. Without a terminal on stdout: the same as `up`
    Run(UpArgs),
    /// Attach the console to the running supervisor (`q` detaches; the session goes on)
    Tui,
    /// Talk to a running supervisor
    Ctl {
        #[command(subcommand)]
        command: CtlCommand,
    },
    /// Manage models
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Show where the config file is, or print a commented sample
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// CPU, memory, GPU and model facts, the profile ladder with each rung's estimated VRAM,
    /// and the settings mate recommends for them
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Measure: the LLM worker against llama.cpp in-process, thread counts, restarts, or the
    /// profile ladder
    #[cfg(feature = "llm")]
    Bench {
        #[command(subcommand)]
        command: cli::bench::BenchCommand,
    },
    /// A stand-in for the Unity app: listens where it would, answers as it does, and prints
    /// what the avatar would do; with fault options for testing
    UnitySim(SimArgs),
    /// Run a worker (started by the supervisor, not by hand)
    #[command(hide = true)]
    Worker {
        kind: WorkerKind,
        #[arg(long)]
        endpoint: PathBuf,
    },
}

/// An error with the exit code it maps to.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        let error = e.into();
        let code = if error.downcast_ref::<ModelError>().is_some() {
            exit::MODEL
        } else if error.downcast_ref::<supervisor::AlreadyRunning>().is_some() {
            exit::ALREADY_RUNNING
        } else if matches!(
            error.downcast_ref::<CtlError>(),
            Some(CtlError::NotRunning { .. })
        ) {
            exit::NO_SUPERVISOR
        } else if matches!(
            error.downcast_ref::<CtlError>(),
            Some(CtlError::Busy { .. })
        ) {
            exit::BUSY
        } else {
            exit::ERROR
        };
        Failure { code, error }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, error }) => {
            eprintln!("mate: {error:#}");
            ExitCode::from(code)
        }
    }
}

fn dispatch(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Worker { kind, endpoint } => cli::worker::run(kind, endpoint),
        Command::Up(args) => cli::up::up(up_settings(&cli.global, &args)?, args.demo),
        Command::Run(args) => cli::up::run(&cli.global, &args),
        Command::Tui => cli::up::tui(&settings(&cli.global)?),
        Command::UnitySim(args) => cli::unity_sim::run(&settings(&cli.global)?, args),
        Command::Ctl { command } => cli::ctl::run(&settings(&cli.global)?, command),
        Command::Model { command } => cli::model::run(&settings(&cli.global)?, command),
        Command::Doctor { json } => cli::doctor::run(&settings(&cli.global)?, json),
        #[cfg(feature = "llm")]
        Command::Bench { command } => cli::bench::run(&cli.global, command),
        Command::Config { command } => cli::config::run(command),
    }
}
