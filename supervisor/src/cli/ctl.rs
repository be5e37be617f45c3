//! `mate ctl …`: one request to the supervisor of the state dir through the client in
//! [`mate::ctl`], its reply printed for a person or, with `--json`, for a script.

mod print;

use anyhow::Context as _;
use clap::Subcommand;
use mate::{config::Settings, ctl};
use mate_protocol::{AvatarCommand, EventKind, Fault, Reply, Request, WorkerKind};

use crate::{exit, Failure};

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
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

#[derive(Debug, Subcommand)]
pub enum AvatarCommandArgs {
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

/// `mate ctl …`: exits with `NO_SUPERVISOR` when no supervisor serves the state dir.
pub fn run(settings: &Settings, command: CtlCommand) -> Result<(), Failure> {
    let dir = &settings.state_dir;
    let request = match command {
        CtlCommand::Status { json } => {
            return match ctl::call(dir, &Request::Status)? {
                Reply::Status(report) if json => {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                    Ok(())
                }
                Reply::Status(report) => {
                    print::print_status(&report);
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
/// written stays), a second one leaves at once. A chat still waiting in the queue just leaves
/// it: the reply in progress is someone else's.
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
    let waiting = Arc::new(AtomicBool::new(false));
    {
        let (cancelled, waiting, dir) = (cancelled.clone(), waiting.clone(), dir.to_path_buf());
        let handler = move || {
            if cancelled.swap(true, Ordering::SeqCst) || waiting.load(Ordering::SeqCst) {
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
        // Queued until the first word of its own reply (or any other news of its turn).
        let queued =
            matches!(&reply, Reply::Event(e) if matches!(e.kind, EventKind::TurnQueued { .. }));
        waiting.store(queued, Ordering::SeqCst);
        match reply {
            Reply::Chunk { text } => {
                if !json {
                    let shown = if terminal {
                        print::visible_controls(&text)
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
                    let message = print::visible_controls(&event.message);
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
                    print::format_utc(event.at_ms),
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
