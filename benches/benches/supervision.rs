//! What supervision costs, each beside its baseline in the same run (criterion):
//!
//! - `token_streaming`: one greedy reply of 32 tokens, llama.cpp in this process (the engine
//!   the worker runs) against a real `mate worker llm` process streaming every token as its own
//!   chunk over the socket. Both keep the prompt in their KV cache, so the reply is what is
//!   timed.
//! - `unity_wire`: per command, one answered round trip each against the bridge's batching
//!   (16 per line), to the built-in Unity simulator on loopback TCP.
//! - `restart`: kill -9 of a real `mate up`'s LLM worker until it serves again, against
//!   spawning a fresh worker and loading the same model without a supervisor.
//!
//! The tiny random-weight model by default, so per-token and restart costs of the process and
//! protocol are as large a share as they can be; `MATE_BENCH_MODEL=path.gguf` runs them on a
//! real model. `mate bench llm|bridge|restart` measure the same with medians and tails.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use criterion::{criterion_group, criterion_main, Criterion};
use mate::bench::{self, bridge, RestartBench};
use mate_protocol::{ChatTemplate, Coalesce, LlmOptions, Sampling};
use mate_worker_bridge::sim::{Sim, SimOptions};
use mate_worker_llm::engine::{Listener, Model, Threads};

const TOKENS: u32 = 32;

fn model() -> PathBuf {
    std::env::var_os("MATE_BENCH_MODEL")
        .map_or_else(|| mate_tests::tiny_model().to_path_buf(), PathBuf::from)
}

struct Quiet;
impl Listener for Quiet {}

fn token_streaming(c: &mut Criterion) {
    let model_path = model();
    let profile = bench::profile(512, 1);
    let messages = [bench::user(bench::PROMPT)];
    let fallback = ChatTemplate::default();

    let model = Model::load(&model_path, &profile).expect("load the model in-process");
    let threads = Threads {
        generation: 1,
        batch: 1,
    };
    let mut session = model.session(&profile, threads).expect("context");
    let mut worker = bench::spawn(mate_tests::mate_bin()).expect("spawn an LLM worker");
    let options = LlmOptions {
        coalesce: Coalesce::OFF,
        ..LlmOptions::default()
    };
    bench::load(&mut worker.worker, &model_path, profile.clone(), options).expect("load");

    let mut in_process = || {
        session
            .generate(
                &messages,
                &Sampling::greedy(TOKENS),
                &fallback,
                Coalesce::OFF,
                &mut Quiet,
            )
            .expect("generate in-process")
    };
    // The same reply both ways, or the comparison means nothing.
    let here = in_process();
    let there = bench::generate(&mut worker.worker, TOKENS).expect("generate in the worker");
    assert_eq!(here.generated_tokens, there.generated_tokens);

    let mut group = c.benchmark_group(format!("token_streaming_{TOKENS}_tokens"));
    group.bench_function("in_process", |b| b.iter(&mut in_process));
    group.bench_function("worker", |b| {
        b.iter(|| bench::generate(&mut worker.worker, TOKENS).expect("generate in the worker"))
    });
    group.finish();
}

fn unity_wire(c: &mut Criterion) {
    let sim = Sim::start(
        "127.0.0.1:0",
        SimOptions::default(),
        Box::new(std::io::sink()),
    )
    .expect("start the simulator");
    let address = sim.address().to_string();
    let mut group = c.benchmark_group("unity_wire_per_command");
    group.bench_function("single", |b| {
        b.iter_custom(|n| {
            bridge::single(&address, n as usize)
                .expect("single sender")
                .1
        })
    });
    group.bench_function("batched_16", |b| {
        b.iter_custom(|n| {
            bridge::batched(&address, n as usize, 16)
                .expect("batched sender")
                .0
        })
    });
    group.finish();
}

fn restart(c: &mut Criterion) {
    let exe = mate_tests::mate_bin().to_path_buf();
    let model = model();
    // The context the supervisor's `cpu` rung gives this model.
    let n_ctx = mate::gpu::ladder::base_ctx(mate::gpu::gguf::read(&model).ok().as_ref());
    let mut group = c.benchmark_group("restart_to_loaded");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(70));
    group.bench_function("supervisor_kill9", |b| {
        b.iter_custom(|n| {
            // One supervisor per sample; only the restarts are timed.
            let report = bench::restart(&RestartBench {
                exe: exe.clone(),
                model: model.clone(),
                runs: n as usize,
                threads: 1,
            })
            .expect("restart bench");
            let ms: f64 = report.runs_detail.iter().map(|r| r.ready_ms).sum();
            Duration::from_secs_f64(ms / 1e3)
        })
    });
    group.bench_function("baseline_spawn_and_load", |b| {
        b.iter_custom(|n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                let start = Instant::now();
                let mut w = bench::spawn(&exe).expect("spawn");
                bench::load(
                    &mut w.worker,
                    &model,
                    bench::profile(n_ctx, 1),
                    LlmOptions::default(),
                )
                .expect("load");
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, token_streaming, unity_wire, restart);
criterion_main!(benches);
