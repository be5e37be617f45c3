//! p50 and p99 of a heartbeat round trip over mate's framed local socket versus the same bytes
//! over a bare `UnixStream`, measured in one run.
//!
//! Criterion (`benches/ipc.rs`) gives means; the target in the issue is a ratio of medians
//! (p50 ratio ≤ 1.5), and tails matter for heartbeats. So this records every round trip with
//! `Instant`. The two loops run alternately in blocks, and the block order flips each round,
//! so a burst of noise on a busy machine lands on both rather than on whichever ran second.
//!
//! Prints one JSON object on stdout (for scripts) and a human summary on stderr:
//!
//! ```text
//! cargo run --release -p mate-benches --bin ipc-latency -- [--iterations N] [--block N] [--warmup N]
//! ```
//!
//! On a busy machine the ratio still moves from run to run, because the scheduler may leave one
//! server thread on a contended core for the whole run. Pinning the process to one core
//! (`taskset -c 1 target/release/ipc-latency`) makes every round trip two context switches on
//! that core and the figures repeat to within a few percent.

use std::process::ExitCode;
#[cfg(unix)]
use std::time::Instant;

#[cfg(unix)]
use mate_benches::ipc::{heartbeat_frames, MateLoop, RawLoop};

/// How the run is shaped; every count is per loop.
#[derive(Debug)]
#[cfg_attr(not(unix), allow(dead_code))]
struct Options {
    iterations: usize,
    block: usize,
    warmup: usize,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut opts = Options {
            iterations: 20_000,
            // Short blocks: on a shared two-core machine a compile in the background comes and
            // goes within seconds, and with blocks of 1000 it could land on one loop only.
            block: 100,
            warmup: 2_000,
        };
        while let Some(flag) = args.next() {
            let slot = match flag.as_str() {
                "--iterations" => &mut opts.iterations,
                "--block" => &mut opts.block,
                "--warmup" => &mut opts.warmup,
                "-h" | "--help" => {
                    return Err(
                        "usage: ipc-latency [--iterations N] [--block N] [--warmup N]".into(),
                    )
                }
                other => return Err(format!("unknown argument {other:?}; try --help")),
            };
            let value = args.next().ok_or(format!("{flag} needs a number"))?;
            *slot = value
                .parse()
                .map_err(|_| format!("{flag}: {value:?} is not a count"))?;
        }
        if opts.iterations == 0 || opts.block == 0 {
            return Err("--iterations and --block must be at least 1".into());
        }
        Ok(opts)
    }
}

/// Nearest-rank percentile of sorted samples, in microseconds.
#[cfg(unix)]
fn percentile_us(sorted_ns: &[u64], p: f64) -> f64 {
    let rank = ((p * sorted_ns.len() as f64).ceil() as usize).clamp(1, sorted_ns.len());
    sorted_ns[rank - 1] as f64 / 1_000.0
}

/// Runs `n` round trips, appending each one's duration in nanoseconds to `out` if given.
#[cfg(unix)]
fn time_block(
    n: usize,
    mut round_trip: impl FnMut() -> Result<(), mate_protocol::Error>,
    mut out: Option<&mut Vec<u64>>,
) -> Result<(), mate_protocol::Error> {
    for _ in 0..n {
        let start = Instant::now();
        round_trip()?;
        let elapsed = start.elapsed().as_nanos() as u64;
        if let Some(out) = out.as_deref_mut() {
            out.push(elapsed);
        }
    }
    Ok(())
}

#[cfg(unix)]
fn run(opts: &Options) -> Result<(), mate_protocol::Error> {
    let (request, reply) = heartbeat_frames()?;
    let mut mate = MateLoop::start()?;
    let mut raw = RawLoop::start()?;

    time_block(opts.warmup, || mate.round_trip(), None)?;
    time_block(opts.warmup, || raw.round_trip(), None)?;

    let mut mate_ns = Vec::with_capacity(opts.iterations);
    let mut raw_ns = Vec::with_capacity(opts.iterations);
    let mut round = 0;
    while mate_ns.len() < opts.iterations {
        let n = opts.block.min(opts.iterations - mate_ns.len());
        if round % 2 == 0 {
            time_block(n, || mate.round_trip(), Some(&mut mate_ns))?;
            time_block(n, || raw.round_trip(), Some(&mut raw_ns))?;
        } else {
            time_block(n, || raw.round_trip(), Some(&mut raw_ns))?;
            time_block(n, || mate.round_trip(), Some(&mut mate_ns))?;
        }
        round += 1;
    }
    mate_ns.sort_unstable();
    raw_ns.sort_unstable();

    let (mate_p50, mate_p99) = (percentile_us(&mate_ns, 0.50), percentile_us(&mate_ns, 0.99));
    let (raw_p50, raw_p99) = (percentile_us(&raw_ns, 0.50), percentile_us(&raw_ns, 0.99));
    let (p50_ratio, p99_ratio) = (mate_p50 / raw_p50, mate_p99 / raw_p99);
    // (µs, percent) at every half percentile: the distribution `mate bench all` draws.
    let distribution = |ns: &[u64]| {
        mate::bench::quantiles(&ns.iter().map(|&n| n as f64 / 1_000.0).collect::<Vec<_>>())
    };
    println!(
        "{}",
        serde_json::json!({
            "mate_p50_us": mate_p50,
            "mate_p99_us": mate_p99,
            "raw_p50_us": raw_p50,
            "raw_p99_us": raw_p99,
            "p50_ratio": p50_ratio,
            "p99_ratio": p99_ratio,
            "iterations": opts.iterations,
            "request_bytes": request.len(),
            "reply_bytes": reply.len(),
            "mate_distribution_us": distribution(&mate_ns),
            "raw_distribution_us": distribution(&raw_ns),
        })
    );
    eprintln!(
        "heartbeat round trip ({} + {} bytes, {} each): mate p50 {mate_p50:.2} µs, p99 \
         {mate_p99:.2} µs; raw UnixStream p50 {raw_p50:.2} µs, p99 {raw_p99:.2} µs; \
         ratio p50 {p50_ratio:.2}, p99 {p99_ratio:.2} (target p50 ≤ 1.5)",
        request.len(),
        reply.len(),
        opts.iterations,
    );
    Ok(())
}

#[cfg(not(unix))]
fn run(_: &Options) -> Result<(), mate_protocol::Error> {
    eprintln!("ipc-latency compares against a Unix socket; nothing to do on this platform");
    Ok(())
}

fn main() -> ExitCode {
    let opts = match Options::parse(std::env::args().skip(1)) {
        Ok(opts) => opts,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipc-latency: {e}");
            ExitCode::FAILURE
        }
    }
}
