//! `/metrics`: the supervisor's figures in the Prometheus (OpenMetrics) text format, through
//! the Prometheus project's own Rust client.
//!
//! Two kinds of figure. Distributions and counts of what happened (time to first token,
//! generation speed, queue wait, turns, profile changes by cause) are recorded here as they
//! happen and live as long as the supervisor. Everything that describes the present (worker
//! states, restarts, memory, the GPU, the rung, the bridge's and the API's counters) is read
//! from a status report at scrape time, so it can never disagree with `mate ctl status`.

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::{Registry, Unit},
};
use std::sync::atomic::AtomicU64;

use mate_protocol::{DowngradeCause, GenerationStats, StatusReport, WorkerState};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Source {
    source: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Cause {
    cause: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabel {
    worker: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerStateLabel {
    worker: String,
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProfileLabel {
    profile: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// What happened since the supervisor started.
#[derive(Debug)]
pub struct Metrics {
    ttft: Histogram,
    tokens_per_s: Histogram,
    queue_wait: Histogram,
    turns: Family<Source, Counter>,
    generated_tokens: Family<Source, Counter>,
    downgrades: Family<Cause, Counter>,
    upgrades: Counter,
    alerts: Counter,
    resumed: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            // 10 ms to ~80 s.
            ttft: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            tokens_per_s: Histogram::new([
                1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0,
            ]),
            // 10 ms to ~5 min.
            queue_wait: Histogram::new(exponential_buckets(0.01, 2.0, 15)),
            turns: Family::default(),
            generated_tokens: Family::default(),
            downgrades: Family::default(),
            upgrades: Counter::default(),
            alerts: Counter::default(),
            resumed: Counter::default(),
        }
    }
}

fn source(api: bool) -> Source {
    Source {
        source: if api { "api" } else { "chat" }.into(),
    }
}

impl Metrics {
    /// A turn left the queue (`waited` is zero for one that did not wait).
    pub fn turn_started(&self, waited: std::time::Duration) {
        self.queue_wait.observe(waited.as_secs_f64());
    }

    /// A turn's reply is complete (or was cancelled).
    pub fn turn_done(&self, stats: &GenerationStats, api: bool) {
        self.turns.get_or_create(&source(api)).inc();
        self.generated_tokens
            .get_or_create(&source(api))
            .inc_by(u64::from(stats.generated_tokens));
        if stats.generated_tokens > 0 {
            self.ttft.observe(f64::from(stats.ttft_ms) / 1000.0);
        }
        // A speed over one or two tokens says little.
        if stats.generated_tokens >= 4 {
            self.tokens_per_s.observe(f64::from(stats.gen_tokens_per_s));
        }
    }

    pub fn downgraded(&self, cause: DowngradeCause) {
        let cause = match cause {
            DowngradeCause::Critical => "critical",
            DowngradeCause::Trend => "trend",
            DowngradeCause::OutOfMemory => "out_of_memory",
            DowngradeCause::CrashLoop => "crash_loop",
        };
        self.downgrades
            .get_or_create(&Cause {
                cause: cause.into(),
            })
            .inc();
    }

    pub fn upgraded(&self) {
        self.upgrades.inc();
    }

    pub fn alerted(&self) {
        self.alerts.inc();
    }

    pub fn resumed(&self) {
        self.resumed.inc();
    }

    /// The text a scrape gets: what happened, and the present as `status` has it.
    pub fn render(&self, status: &StatusReport) -> String {
        let mut r = Registry::with_prefix("mate");
        r.register_with_unit(
            "llm_time_to_first_token",
            "Time from the prompt to the first generated token",
            Unit::Seconds,
            self.ttft.clone(),
        );
        r.register(
            "llm_generation_tokens_per_second",
            "Generation speed of each reply (tokens per second)",
            self.tokens_per_s.clone(),
        );
        r.register_with_unit(
            "queue_wait",
            "Time a turn waited in the queue for the reply before it",
            Unit::Seconds,
            self.queue_wait.clone(),
        );
        r.register(
            "turns",
            "Replies completed, by who asked (chat: ctl chat and the console; api: HTTP clients)",
            self.turns.clone(),
        );
        r.register(
            "llm_generated_tokens",
            "Tokens generated, by who asked",
            self.generated_tokens.clone(),
        );
        r.register(
            "profile_downgrades",
            "Automatic moves one rung down the profile ladder, by cause",
            self.downgrades.clone(),
        );
        r.register(
            "profile_upgrades",
            "Automatic moves back up the profile ladder",
            self.upgrades.clone(),
        );
        r.register("vram_alerts", "VRAM alerts raised", self.alerts.clone());
        r.register(
            "replies_resumed",
            "Replies continued by a new LLM worker after the old one died",
            self.resumed.clone(),
        );
        present(&mut r, status);
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &r);
        text
    }
}

/// The present, from a status report.
fn present(r: &mut Registry, status: &StatusReport) {
    let up = Family::<WorkerLabel, Gauge>::default();
    let states = Family::<WorkerStateLabel, Gauge>::default();
    let restarts = Family::<WorkerLabel, Counter>::default();
    let uptime = Family::<WorkerLabel, FloatGauge>::default();
    let rss = Family::<WorkerLabel, Gauge>::default();
    for w in &status.workers {
        let worker = WorkerLabel {
            worker: w.kind.as_str().into(),
        };
        up.get_or_create(&worker)
            .set(i64::from(w.state == WorkerState::Running));
        for state in [
            WorkerState::Starting,
            WorkerState::Running,
            WorkerState::Backoff,
            WorkerState::Stopping,
            WorkerState::Stopped,
            WorkerState::Failed,
        ] {
            states
                .get_or_create(&WorkerStateLabel {
                    worker: worker.worker.clone(),
                    state: state.as_str().into(),
                })
                .set(i64::from(w.state == state));
        }
        restarts
            .get_or_create(&worker)
            .inc_by(u64::from(w.restarts));
        uptime
            .get_or_create(&worker)
            .set(w.uptime_ms as f64 / 1000.0);
        rss.get_or_create(&worker)
            .set(i64::try_from(w.vitals.rss_bytes).unwrap_or(i64::MAX));
    }
    r.register("worker_up", "1 while the worker runs and serves", up);
    r.register(
        "worker_state",
        "The worker's lifecycle state (1 for the current one)",
        states,
    );
    r.register(
        "worker_restarts",
        "Processes started after the first, by worker",
        restarts,
    );
    r.register_with_unit(
        "worker_uptime",
        "How long the worker's current process has run",
        Unit::Seconds,
        uptime,
    );
    r.register_with_unit(
        "worker_resident_memory",
        "The worker process's resident memory",
        Unit::Bytes,
        rss,
    );
    r.register_with_unit(
        "uptime",
        "How long the supervisor has run",
        Unit::Seconds,
        gauge_f(status.uptime_ms as f64 / 1000.0),
    );
    r.register(
        "queue_depth",
        "Turns waiting for the reply in progress",
        gauge(i64::from(status.queued)),
    );
    let profile = Family::<ProfileLabel, Gauge>::default();
    profile
        .get_or_create(&ProfileLabel {
            profile: status.profile.clone(),
        })
        .set(1);
    r.register(
        "profile",
        "The profile ladder rung the LLM runs on",
        profile,
    );

    let llm = status.workers.iter().find_map(|w| w.vitals.llm.as_ref());
    if let Some(v) = llm {
        r.register(
            "llm_context_used_tokens",
            "Tokens in the LLM's KV cache now",
            gauge(i64::from(v.ctx_used)),
        );
        r.register(
            "llm_context_size_tokens",
            "The LLM's context window",
            gauge(i64::from(v.n_ctx)),
        );
    }
    if let Some(reading) = &status.gpu.reading {
        r.register_with_unit(
            "gpu_vram_used",
            "VRAM in use on the watched GPU",
            Unit::Bytes,
            gauge(i64::try_from(reading.used_bytes).unwrap_or(i64::MAX)),
        );
        r.register_with_unit(
            "gpu_vram_total",
            "VRAM of the watched GPU",
            Unit::Bytes,
            gauge(i64::try_from(reading.total_bytes).unwrap_or(i64::MAX)),
        );
    }
    let bridge = status.workers.iter().find_map(|w| w.vitals.bridge.as_ref());
    if let Some(b) = bridge {
        r.register(
            "bridge_connected",
            "1 while the bridge is connected to Unity",
            gauge(i64::from(b.connected)),
        );
        for (name, help, value) in [
            (
                "bridge_commands_sent",
                "Avatar commands sent to Unity",
                b.sent,
            ),
            (
                "bridge_commands_acked",
                "Avatar commands Unity confirmed",
                b.acked,
            ),
            (
                "bridge_command_errors",
                "Avatar commands Unity refused",
                b.errors,
            ),
            (
                "bridge_commands_dropped",
                "Avatar commands given up",
                b.dropped,
            ),
            (
                "bridge_ack_timeouts",
                "Lines Unity did not answer in time",
                b.timeouts,
            ),
        ] {
            r.register(name, help, counter(value));
        }
        r.register(
            "bridge_queue_depth",
            "Avatar commands waiting to be sent",
            gauge(i64::from(b.queue_depth)),
        );
    }
    let api = status.workers.iter().find_map(|w| w.vitals.api.as_ref());
    if let Some(a) = api {
        r.register(
            "api_requests",
            "HTTP requests answered",
            counter(a.requests),
        );
        r.register(
            "api_errors",
            "HTTP requests answered with a 4xx or 5xx status",
            counter(a.errors),
        );
        r.register(
            "api_connections",
            "HTTP connections open",
            gauge(i64::from(a.connections)),
        );
    }
}

fn gauge(v: i64) -> Gauge {
    let g = Gauge::default();
    g.set(v);
    g
}

fn gauge_f(v: f64) -> FloatGauge {
    let g = FloatGauge::default();
    g.set(v);
    g
}

fn counter(v: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(v);
    c
}
