//! `mate bench …` (feature `llm`): parses the options, finds the model and the executable,
//! and hands over to the measuring code in `mate::bench`, whose reports it prints as JSON.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use mate::config;

use super::{config::settings, model::resolve_model};
use crate::{Failure, GlobalArgs};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
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
    /// The same streamed completions through mate's OpenAI API and llama.cpp's own
    /// llama-server, interleaved (same model, threads, context, prompt, greedy): TTFT and
    /// tokens/s with their ratios; a kill -9 of each one's inference process mid-stream; and
    /// companion turns alternating with an API conversation, with the conversation stash on
    /// and off. JSON on stdout
    Api {
        /// Streamed completions per server (medians are reported)
        #[arg(long, default_value_t = 5)]
        runs: usize,
        #[arg(long, default_value_t = 64)]
        max_tokens: u32,
        /// Threads for both [default: by the CPU rule]
        #[arg(long, default_value_t = 0)]
        threads: u32,
        /// llama-server to compare with [default: target/llama-server/bin/llama-server, as
        /// benches/llama-server/build makes it; without one that arm is skipped]
        #[arg(long, value_name = "PATH")]
        llama_server: Option<PathBuf>,
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

/// Runs the benchmark and prints its report as JSON on stdout.
pub fn run(global: &GlobalArgs, command: BenchCommand) -> Result<(), Failure> {
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
    // `--threads` when given, else the config's `[llm] threads` (0: by the CPU rule).
    let threads_or_config = |threads: u32| {
        if threads > 0 {
            threads
        } else {
            settings.threads
        }
    };
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
                threads: threads_or_config(threads),
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
        BenchCommand::Api {
            runs,
            max_tokens,
            threads,
            llama_server,
        } => {
            let llama_server = llama_server.or_else(|| {
                let built = PathBuf::from("target/llama-server/bin/llama-server");
                built.is_file().then_some(built)
            });
            let report = mate::bench::api(&mate::bench::ApiBench {
                exe: exe.clone(),
                model,
                runs: runs.max(1),
                max_tokens: max_tokens.max(2),
                threads: threads_or_config(threads),
                llama_server,
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
