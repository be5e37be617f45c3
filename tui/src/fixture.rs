//! Fixed data for the console's tests and benchmarks: a supervisor with both workers up, a GPU, a ladder,
//! a connected Unity bridge, some events and a conversation. Nothing depends on the clock.

use mate_protocol::{
    ApiVitals, BridgeStatus, Event, EventKind, ExitStatus, GenerationStats, GpuReport, Level,
    LlmPhase, LlmVitals, Profile, Rung, StatusReport, StopReason, VramReading, WorkerKind,
    WorkerReport, WorkerState, WorkerVitals,
};

use crate::app::{App, Input};

pub fn stats(tok_s: f32) -> GenerationStats {
    GenerationStats {
        prompt_tokens: 120,
        generated_tokens: 48,
        ttft_ms: 180.0,
        prompt_tokens_per_s: 900.0,
        gen_tokens_per_s: tok_s,
        stop: StopReason::EndOfText,
        cached_tokens: 100,
    }
}

fn rung(name: &str, layers: u32, gib_tenths: u64) -> Rung {
    Rung {
        profile: Profile {
            name: name.into(),
            n_gpu_layers: layers,
            ..Profile::cpu(4096)
        },
        estimated_vram_bytes: gib_tenths * (1 << 30) / 10,
    }
}

pub fn status(used_gib_tenths: u64) -> StatusReport {
    StatusReport {
        supervisor_pid: 41200,
        uptime_ms: 8_040_000,
        workers: vec![
            WorkerReport {
                kind: WorkerKind::Llm,
                state: WorkerState::Running,
                pid: Some(41207),
                uptime_ms: 180_000,
                restarts: 1,
                profile: Some("balanced".into()),
                last_exit: Some(ExitStatus::Signal(9)),
                last_error: None,
                vitals: WorkerVitals {
                    rss_bytes: 612 << 20,
                    cpu_percent: 38.0,
                    llm: Some(LlmVitals {
                        phase: LlmPhase::Generating,
                        stalled_ms: 0,
                        model_bytes: 253_113_024,
                        kv_bytes: 96 << 20,
                        n_ctx: 4096,
                        ctx_used: 1812,
                        last: Some(stats(41.3)),
                    }),
                    bridge: None,
                    api: None,
                },
            },
            WorkerReport {
                kind: WorkerKind::Bridge,
                state: WorkerState::Running,
                pid: Some(41209),
                uptime_ms: 8_030_000,
                restarts: 0,
                profile: None,
                last_exit: None,
                last_error: None,
                vitals: WorkerVitals {
                    rss_bytes: 14 << 20,
                    cpu_percent: 1.0,
                    llm: None,
                    bridge: Some(Box::new(BridgeStatus {
                        connected: true,
                        peer: "127.0.0.1:5555".into(),
                        queue_depth: 0,
                        acks_pending: 1,
                        commands_per_s: 2.4,
                        connects: 1,
                        sent: 310,
                        lines: 120,
                        acked: 309,
                        expression: Some("happy".into()),
                        ..BridgeStatus::default()
                    })),
                    api: None,
                },
            },
            WorkerReport {
                kind: WorkerKind::Api,
                state: WorkerState::Running,
                pid: Some(41211),
                uptime_ms: 8_030_000,
                restarts: 0,
                profile: None,
                last_exit: None,
                last_error: None,
                vitals: WorkerVitals {
                    rss_bytes: 9 << 20,
                    cpu_percent: 0.5,
                    api: Some(Box::new(ApiVitals {
                        address: "127.0.0.1:6283".into(),
                        connections: 2,
                        requests: 57,
                        errors: 1,
                        in_flight: 1,
                    })),
                    ..WorkerVitals::default()
                },
            },
        ],
        turns: 42,
        tokens: 9_876,
        profile: "balanced".into(),
        ceiling: "performance".into(),
        ladder: vec![
            rung("performance", 28, 54),
            rung("balanced", 19, 39),
            rung("low_memory", 11, 23),
            rung("cpu", 0, 0),
        ],
        gpu: GpuReport {
            name: Some("NVIDIA GeForce RTX 3060".into()),
            simulated: false,
            note: None,
            reading: Some(VramReading {
                total_bytes: 6 << 30,
                used_bytes: used_gib_tenths * (1 << 30) / 10,
                llm_bytes: Some(39 * (1 << 30) / 10),
                temperature_c: Some(61),
                utilization_percent: Some(72),
            }),
            alert_percent: 90.0,
            upgrade_below_percent: 80.0,
            critical_percent: 95.0,
            auto_downgrade: true,
            auto_upgrade: true,
        },
        last_decision: None,
        queued: 0,
    }
}

pub fn events() -> Vec<Event> {
    // 2026-11-23 14:02:10 UTC and on.
    let at = 1_795_442_530_000;
    let event = |dt: u64, worker, kind, message: &str| Event {
        at_ms: at + dt,
        level: Level::Info,
        worker,
        kind,
        message: message.into(),
    };
    vec![
        event(0, None, EventKind::Notice, "supervisor 41200 started"),
        event(
            60_000,
            Some(WorkerKind::Llm),
            EventKind::Exited {
                status: ExitStatus::Signal(9),
                expected: false,
            },
            "llm worker (pid 41201) was killed by signal 9 (SIGKILL) after 58.2 s",
        ),
        event(
            61_000,
            Some(WorkerKind::Llm),
            EventKind::Notice,
            "model loaded with profile balanced in 812 ms",
        ),
    ]
}

/// An app fed with the fixture: attached, status with the GPU history, events, a chat.
pub fn app(mono: bool) -> App {
    let mut app = App::new("~/.local/state/mate".into(), mono);
    app.update(Input::Attached);
    for used in [20, 25, 31, 38, 44, 49, 52, 49, 47, 49] {
        app.update(Input::Status(Box::new(status(used))));
    }
    for e in events() {
        app.update(Input::Event(e));
    }
    for tok_s in [35.0, 38.5, 41.0, 40.2, 42.8, 41.3] {
        app.update(Input::ChatDone(stats(tok_s)));
    }
    app.chat.push_back(crate::app::ChatLine {
        who: crate::app::Speaker::You,
        text: "how was your day?".into(),
    });
    app.chat.push_back(crate::app::ChatLine {
        who: crate::app::Speaker::Mate,
        text: "Pretty good! I spent most of it".into(),
    });
    app.streaming = true;
    app
}
