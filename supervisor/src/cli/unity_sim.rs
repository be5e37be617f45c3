//! `mate unity-sim`: the bridge worker's simulated Unity app (`mate_worker_bridge::sim`) as a
//! command of its own, for trying mate without Unity and for injecting faults in tests.

use anyhow::Context as _;
use clap::Args;
use mate::config::Settings;
use mate_worker_bridge::sim::{Sim, SimOptions};

use crate::Failure;

#[derive(Debug, Args)]
pub struct SimArgs {
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

/// Serves until the process is interrupted.
pub fn run(settings: &Settings, args: SimArgs) -> Result<(), Failure> {
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
