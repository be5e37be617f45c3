//! `mate bench bridge`: what batching buys on the Unity wire, against any endpoint that speaks
//! the protocol (the built-in `unity-sim` when none is given).
//!
//! Three senders move the same one-shot commands (`play_animation`, which the bridge never
//! coalesces away), each on a fresh connection, alternating within every run:
//! - **single**: one write per command, then wait for its answer (the naive sender; its
//!   round trips are the single-command latency);
//! - **pipelined**: one write per command without waiting, answers read by a second thread;
//! - **batched**: the bridge's own [`Outbox`] with its line encoding, `batch` commands per
//!   line and up to 32 lines awaiting answers, as the bridge worker sends.

use std::{
    io::{BufReader, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use mate_protocol::{
    unity::{self, Line, UnityCommand},
    AvatarCommand, UnityOptions,
};
use mate_worker_bridge::{
    outbox::{Outbox, Timing},
    sim::{Sim, SimOptions},
};
use serde::Serialize;

use super::stats::{median, percentile, quantiles};

/// Settings of `mate bench bridge`.
#[derive(Debug, Clone)]
pub struct BridgeBench {
    /// `host:port`; `None`: start the built-in simulator in this process.
    pub unity: Option<String>,
    pub commands: usize,
    pub runs: usize,
    /// Commands per batch line.
    pub batch: usize,
}

/// The original Python app's figures (per command), for comparison.
const ORIGINAL_SINGLE_MS: f64 = 0.371;
const ORIGINAL_BATCHED_MS: f64 = 0.060;

fn command(i: usize) -> AvatarCommand {
    AvatarCommand::PlayAnimation {
        name: format!("gesture_{}", i % 8),
        looped: false,
    }
}

struct Conn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    fn open(address: &str) -> anyhow::Result<Conn> {
        let stream =
            TcpStream::connect(address).with_context(|| format!("connecting to {address}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Conn {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            buf: Vec::new(),
        })
    }

    /// The next answer; an error answer or a line that is not one fails the bench.
    fn answer(&mut self) -> anyhow::Result<unity::UnityReply> {
        match unity::read_line(&mut self.reader, &mut self.buf, unity::DEFAULT_MAX_LINE)? {
            Line::Complete => {
                let reply = unity::parse_reply(&self.buf).map_err(anyhow::Error::msg)?;
                if reply.status == unity::ReplyStatus::Error {
                    bail!(
                        "the endpoint refused {}: {:?}",
                        reply.command,
                        reply.message
                    );
                }
                Ok(reply)
            }
            Line::TooLong(n) => bail!("a {n}-byte answer line"),
            Line::Eof => bail!("the endpoint closed the connection"),
        }
    }
}

/// One write per command, each answered before the next: per-command round trips.
pub fn single(address: &str, n: usize) -> anyhow::Result<(Vec<f64>, Duration)> {
    let mut conn = Conn::open(address)?;
    let mut rtts = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let line = UnityCommand::from(&command(i)).to_line();
        let sent = Instant::now();
        conn.writer.write_all(&line)?;
        conn.answer()?;
        rtts.push(sent.elapsed().as_secs_f64() * 1e6);
    }
    Ok((rtts, start.elapsed()))
}

/// One write per command without waiting; a second thread reads the answers.
pub fn pipelined(address: &str, n: usize) -> anyhow::Result<Duration> {
    let mut conn = Conn::open(address)?;
    let mut writer = conn.writer.try_clone()?;
    let start = Instant::now();
    let reading = std::thread::spawn(move || -> anyhow::Result<()> {
        for _ in 0..n {
            conn.answer()?;
        }
        Ok(())
    });
    for i in 0..n {
        writer.write_all(&UnityCommand::from(&command(i)).to_line())?;
    }
    reading
        .join()
        .map_err(|_| anyhow::anyhow!("the reading thread panicked"))??;
    Ok(start.elapsed())
}

/// Through the bridge's [`Outbox`]: `batch` commands per line, answers matched in order.
/// Returns the time taken and each line's round trip (write to answer), in µs.
pub fn batched(address: &str, n: usize, batch: usize) -> anyhow::Result<(Duration, Vec<f64>)> {
    let mut conn = Conn::open(address)?;
    let mut outbox = Outbox::new(Timing {
        window: Duration::ZERO,
        max_batch: batch,
        queue_limit: n.max(1),
        ..Timing::from(&UnityOptions::default())
    });
    let start = Instant::now();
    let mut pushed = 0;
    let mut written = std::collections::VecDeque::new();
    let mut rtts = Vec::with_capacity(n / batch.max(1) + 1);
    while !written.is_empty() || pushed < n {
        // A burst of `batch` commands at a time, as a reply's cues and animations come.
        if pushed < n {
            let now = Instant::now();
            for i in pushed..(pushed + batch).min(n) {
                outbox.push(command(i), now);
            }
            pushed = (pushed + batch).min(n);
        }
        let mut wrote = false;
        while let Some(line) = outbox.take_due(Instant::now()) {
            conn.writer.write_all(&line.to_line())?;
            written.push_back(Instant::now());
            wrote = true;
        }
        if !wrote || pushed == n {
            let reply = conn.answer()?;
            outbox
                .on_reply(&reply, Instant::now())
                .map_err(anyhow::Error::msg)?;
            if let Some(sent) = written.pop_front() {
                rtts.push(sent.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    Ok((start.elapsed(), rtts))
}

/// What `mate bench bridge` prints: each sender's rate and the round trips' distributions.
#[derive(Debug, Serialize)]
pub struct BridgeReport {
    endpoint: String,
    peer: &'static str,
    command: &'static str,
    commands_per_run: usize,
    runs: usize,
    batch: usize,
    single: Single,
    pipelined: Pipelined,
    batched: Batched,
    ratios: Ratios,
    original_python: OriginalPython,
    /// With `--unity`: the built-in simulator, measured in the same run.
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline: Option<Box<BridgeReport>>,
    /// With `--unity`: the given endpoint over the simulator.
    #[serde(skip_serializing_if = "Option::is_none")]
    vs_baseline: Option<VsBaseline>,
}

#[derive(Debug, Serialize)]
struct Single {
    p50_us: f64,
    p99_us: f64,
    max_us: Option<f64>,
    commands_per_s: f64,
    us_per_command: f64,
    /// (µs, percent) points of the round trips, all runs pooled.
    distribution_us: Vec<(f64, f64)>,
}

#[derive(Debug, Serialize)]
struct Pipelined {
    commands_per_s: f64,
    us_per_command: f64,
}

#[derive(Debug, Serialize)]
struct Batched {
    commands_per_s: f64,
    us_per_command: f64,
    lines_per_run: f64,
    /// Write of a line to its answer, with up to 32 lines in flight.
    line_p50_us: f64,
    line_p99_us: f64,
    line_distribution_us: Vec<(f64, f64)>,
}

#[derive(Debug, Serialize)]
struct Ratios {
    batched_vs_single: f64,
    batched_vs_pipelined: f64,
}

/// The Python app this replaced, per command.
#[derive(Debug, Serialize)]
struct OriginalPython {
    single_ms: f64,
    batched_ms_per_command: f64,
}

/// Every sample of one endpoint over the runs.
#[derive(Default)]
struct Samples {
    rtts: Vec<f64>,
    line_rtts: Vec<f64>,
    single_rate: Vec<f64>,
    pipe_rate: Vec<f64>,
    batch_rate: Vec<f64>,
    lines: Vec<f64>,
}

impl Samples {
    /// One run of the three senders against `address`.
    fn run(&mut self, address: &str, b: &BridgeBench) -> anyhow::Result<()> {
        let per_s = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
        let (r, d) = single(address, b.commands)?;
        self.rtts.extend(r);
        self.single_rate.push(per_s(b.commands, d));
        self.pipe_rate
            .push(per_s(b.commands, pipelined(address, b.commands)?));
        let (d, l) = batched(address, b.commands, b.batch)?;
        self.batch_rate.push(per_s(b.commands, d));
        self.lines.push(l.len() as f64);
        self.line_rtts.extend(l);
        Ok(())
    }

    fn report(mut self, endpoint: String, peer: &'static str, b: &BridgeBench) -> BridgeReport {
        self.rtts.sort_by(f64::total_cmp);
        self.line_rtts.sort_by(f64::total_cmp);
        let (rtts, line_rtts) = (self.rtts, self.line_rtts);
        let (single_rate, pipe_rate, batch_rate) = (
            median(self.single_rate),
            median(self.pipe_rate),
            median(self.batch_rate),
        );
        let us = |rate: f64| 1e6 / rate;
        BridgeReport {
            endpoint,
            peer,
            command: "play_animation (one-shot, never coalesced)",
            commands_per_run: b.commands,
            runs: b.runs,
            batch: b.batch,
            single: Single {
                p50_us: percentile(&rtts, 0.5),
                p99_us: percentile(&rtts, 0.99),
                max_us: rtts.last().copied(),
                commands_per_s: single_rate,
                us_per_command: us(single_rate),
                distribution_us: quantiles(&rtts),
            },
            pipelined: Pipelined {
                commands_per_s: pipe_rate,
                us_per_command: us(pipe_rate),
            },
            batched: Batched {
                commands_per_s: batch_rate,
                us_per_command: us(batch_rate),
                lines_per_run: median(self.lines),
                line_p50_us: percentile(&line_rtts, 0.5),
                line_p99_us: percentile(&line_rtts, 0.99),
                line_distribution_us: quantiles(&line_rtts),
            },
            ratios: Ratios {
                batched_vs_single: batch_rate / single_rate,
                batched_vs_pipelined: batch_rate / pipe_rate,
            },
            original_python: OriginalPython {
                single_ms: ORIGINAL_SINGLE_MS,
                batched_ms_per_command: ORIGINAL_BATCHED_MS,
            },
            baseline: None,
            vs_baseline: None,
        }
    }
}

/// The given endpoint against the built-in simulator, medians over medians.
#[derive(Debug, Serialize)]
struct VsBaseline {
    single_p50: f64,
    batched_commands_per_s: f64,
    pipelined_commands_per_s: f64,
}

/// Measures `--unity` (when given) and the built-in simulator, run by run in turn, so both
/// see the same machine; without `--unity` the simulator alone.
pub fn bridge(b: &BridgeBench) -> anyhow::Result<BridgeReport> {
    let sim = Sim::start(
        "127.0.0.1:0",
        SimOptions::default(),
        Box::new(std::io::sink()),
    )
    .context("starting the built-in unity-sim")?;
    let sim_address = sim.address().to_string();
    let mut sim_samples = Samples::default();
    let mut given = b.unity.clone().map(|address| (address, Samples::default()));
    let mut addresses = vec![sim_address.as_str()];
    addresses.extend(given.as_ref().map(|(address, _)| address.as_str()));
    for address in addresses {
        // A warm-up round, not counted.
        single(address, 100)?;
        batched(address, 100, b.batch)?;
    }
    for _ in 0..b.runs {
        if let Some((address, samples)) = &mut given {
            samples.run(address, b)?;
        }
        sim_samples.run(&sim_address, b)?;
    }
    let sim_report = sim_samples.report(sim_address, "built-in unity-sim (this process)", b);
    let Some((address, samples)) = given else {
        return Ok(sim_report);
    };
    let mut report = samples.report(address, "given endpoint", b);
    report.vs_baseline = Some(VsBaseline {
        single_p50: report.single.p50_us / sim_report.single.p50_us,
        batched_commands_per_s: report.batched.commands_per_s / sim_report.batched.commands_per_s,
        pipelined_commands_per_s: report.pipelined.commands_per_s
            / sim_report.pipelined.commands_per_s,
    });
    report.baseline = Some(Box::new(sim_report));
    Ok(report)
}
