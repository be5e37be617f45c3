//! `mate bench profiles`: the same greedy reply under each rung of the profile ladder, each
//! in a fresh `mate up`, then the downgrade reaction on a simulated card whose other
//! applications jump to critical (`downgrade`): the scenario file's rename → `Downgraded` is
//! detection, → `Loaded` on the lower rung is serving again (the supervisor's event time
//! stamps against the bench's wall clock). JSON, and an SVG drawn with `plotters` (`chart`).

mod chart;
mod downgrade;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use mate_protocol::{Profile, StatusReport, WorkerKind};
use mate_worker_llm::{cpu::CpuFacts, engine::Device};
use serde::Serialize;

use self::downgrade::{
    measure_downgrades, DowngradeReport, CALM_MB, CARD_MB, CRITICAL_MB, SAMPLE_INTERVALS_MS,
};
use super::{
    mib, ms,
    procfs::proc_status_kib,
    stats::median,
    up::{
        await_loaded, chat, follow_events, in_state_dir, shut_down, start_up, status_now,
        wait_running, worker_pid, ChatRun, START_LIMIT,
    },
    PROMPT,
};

/// Settings of `mate bench profiles`.
#[derive(Debug, Clone)]
pub struct ProfilesBench {
    pub exe: PathBuf,
    pub model: PathBuf,
    /// Replies per rung, and downgrades per sample interval (medians are reported).
    pub runs: usize,
    pub max_tokens: u32,
    /// `[llm] threads` of the supervisors under test; 0: by the CPU rule, applied once here
    /// so that every rung runs with the same count (each worker would otherwise apply it at
    /// its own load, and a busy moment would give one rung fewer threads).
    pub threads: u32,
    /// Where `profiles.json` and `profiles.svg` go, if anywhere.
    pub out: Option<PathBuf>,
}

/// The profile named as the baseline of the ratios.
const BASELINE: &str = "cpu";

/// The config of every supervisor `mate bench profiles` starts: greedy replies of
/// `max_tokens`, and no KV snapshots (each turn would write one while the next is timed).
/// With `sample_ms` (the downgrade runs), the GPU is sampled that often and the LLM never
/// climbs back on its own, so only the bench moves it up again.
fn profiles_config(threads: u32, max_tokens: u32, sample_ms: Option<u64>) -> String {
    let mut text = format!(
        "# Written by `mate bench profiles`.\n\
         [chat]\ntemperature = 0.0\nmax_tokens = {max_tokens}\n\n[llm]\nsnapshots = false\n"
    );
    if threads > 0 {
        text.push_str(&format!("threads = {threads}\n"));
    }
    if let Some(sample_ms) = sample_ms {
        text.push_str(&format!(
            "\n[gpu]\nsample_ms = {sample_ms}\nauto_upgrade = false\n"
        ));
    }
    text
}

/// Everything measured on one rung.
#[derive(Debug, Clone, Serialize)]
struct RungMeasure {
    profile: Profile,
    estimated_vram_bytes: u64,
    /// From the `Loaded` event.
    load_ms: f64,
    warmup_ms: f64,
    /// From starting `mate up` to receiving `Loaded`.
    up_to_loaded_ms: f64,
    chats: Vec<ChatRun>,
    /// The LLM worker after the replies.
    rss_kib: Option<u64>,
    rss_peak_kib: Option<u64>,
    /// The LLM worker's VRAM as the driver reports it; `None` without a real GPU.
    vram_bytes: Option<u64>,
}

/// One rung's medians, and its ratios to the baseline rung.
#[derive(Debug, Clone, Serialize)]
struct RungSummary {
    profile: String,
    n_gpu_layers: u32,
    n_ctx: u32,
    n_batch: u32,
    kv_type: String,
    flash_attention: bool,
    estimated_vram_mib: f64,
    vram_mib: Option<f64>,
    load_ms: f64,
    warmup_ms: f64,
    up_to_loaded_ms: f64,
    ttft_ms: f64,
    client_ttft_ms: Option<f64>,
    gen_tokens_per_s: f64,
    /// Replies may end early (a stop string), and differ between rungs: flash attention
    /// changes the arithmetic, so greedy decoding may pick other tokens.
    generated_tokens: f64,
    rss_mib: Option<f64>,
    rss_peak_mib: Option<f64>,
    /// This rung over the baseline (`cpu`): above 1 is faster generation, and slower TTFT.
    gen_tokens_per_s_vs_baseline: Option<f64>,
    ttft_vs_baseline: Option<f64>,
}

/// Medians per rung and ratios to the `cpu` rung (none when it was not measured).
fn summarize(rungs: &[RungMeasure]) -> Vec<RungSummary> {
    let mut out: Vec<RungSummary> = rungs
        .iter()
        .map(|r| {
            let col = |f: fn(&ChatRun) -> f64| median(r.chats.iter().map(f).collect());
            let client: Vec<f64> = r.chats.iter().filter_map(|c| c.client_ttft_ms).collect();
            RungSummary {
                profile: r.profile.name.clone(),
                n_gpu_layers: r.profile.n_gpu_layers,
                n_ctx: r.profile.n_ctx,
                n_batch: r.profile.n_batch,
                kv_type: format!("{:?}", r.profile.kv_type),
                flash_attention: r.profile.flash_attention,
                estimated_vram_mib: mib(r.estimated_vram_bytes),
                vram_mib: r.vram_bytes.map(mib),
                load_ms: r.load_ms,
                warmup_ms: r.warmup_ms,
                up_to_loaded_ms: r.up_to_loaded_ms,
                ttft_ms: col(|c| c.ttft_ms),
                client_ttft_ms: (!client.is_empty()).then(|| median(client)),
                gen_tokens_per_s: col(|c| c.gen_tokens_per_s),
                generated_tokens: col(|c| f64::from(c.generated_tokens)),
                rss_mib: r.rss_kib.map(|k| k as f64 / 1024.0),
                rss_peak_mib: r.rss_peak_kib.map(|k| k as f64 / 1024.0),
                gen_tokens_per_s_vs_baseline: None,
                ttft_vs_baseline: None,
            }
        })
        .collect();
    if let Some(base) = out.iter().find(|s| s.profile == BASELINE).cloned() {
        for s in &mut out {
            s.gen_tokens_per_s_vs_baseline = Some(s.gen_tokens_per_s / base.gen_tokens_per_s);
            s.ttft_vs_baseline = Some(s.ttft_ms / base.ttft_ms);
        }
    }
    out
}

/// What `mate bench profiles` prints (and writes to `profiles.json`): each rung's medians
/// and ratios, the downgrade reaction, and every reply's figures.
#[derive(Debug, Serialize)]
pub struct ProfilesReport {
    model: PathBuf,
    runs: usize,
    max_tokens: u32,
    prompt: &'static str,
    threads: u32,
    machine: CpuFacts,
    backend: Backend,
    gpu: Option<GpuNote>,
    config: String,
    baseline: &'static str,
    profiles: Vec<RungSummary>,
    downgrade: Downgrades,
    runs_detail: Vec<RungMeasure>,
}

/// What llama.cpp computes on in this build, which decides what the rungs can differ in.
#[derive(Debug, Serialize)]
struct Backend {
    llama_cpp_devices: Vec<Device>,
    gpu_offload: bool,
    note: &'static str,
}

/// The GPU the supervisor saw, if any.
#[derive(Debug, Serialize)]
struct GpuNote {
    name: Option<String>,
    simulated: bool,
    note: Option<String>,
}

#[derive(Debug, Serialize)]
struct Downgrades {
    card_mb: u64,
    other_apps_mb: OtherApps,
    series: Vec<DowngradeReport>,
}

/// What other applications hold on the simulated card, before and after they jump.
#[derive(Debug, Serialize)]
struct OtherApps {
    calm: u64,
    critical: u64,
}

/// `mate bench profiles`: returns the report, and writes it with the plot to `out`.
pub fn profiles(b: &ProfilesBench) -> anyhow::Result<ProfilesReport> {
    let facts = CpuFacts::sample(Duration::from_millis(300));
    let b = &ProfilesBench {
        threads: if b.threads > 0 {
            b.threads
        } else {
            facts.generation_threads()
        },
        ..b.clone()
    };
    let devices = mate_worker_llm::engine::devices()
        .context("listing llama.cpp's devices (`mate doctor` shows them)")?;
    // ggml's CPU backend, and BLAS when built with it, compute on the CPU.
    let offload = devices
        .iter()
        .any(|d| !matches!(d.backend.to_ascii_uppercase().as_str(), "CPU" | "BLAS"));

    let mut rungs = Vec::new();
    let mut first_status = None;
    for name in crate::gpu::ladder::DEFAULT_LADDER {
        eprintln!("mate bench profiles: {name}");
        let (rung, status) = in_state_dir("profiles", |dir| measure_rung(b, dir, name))
            .with_context(|| format!("profile {name}"))?;
        first_status.get_or_insert(status);
        rungs.push(rung);
    }
    let summary = summarize(&rungs);
    let mut downgrades = Vec::new();
    for sample_ms in SAMPLE_INTERVALS_MS {
        eprintln!("mate bench profiles: downgrade reaction, GPU sampled every {sample_ms} ms");
        downgrades.push(in_state_dir("profiles", |dir| {
            measure_downgrades(b, dir, sample_ms)
        })?);
    }

    let gpu = first_status.as_ref().map(|s| &s.gpu);
    let report = ProfilesReport {
        model: b.model.clone(),
        runs: b.runs,
        max_tokens: b.max_tokens,
        prompt: PROMPT,
        threads: b.threads,
        machine: facts,
        backend: Backend {
            llama_cpp_devices: devices,
            gpu_offload: offload,
            note: if offload {
                "llama.cpp has a GPU backend: rungs differ in the layers offloaded as well"
            } else {
                "this build of llama.cpp has no GPU backend: every rung runs on the CPU and \
                 n_gpu_layers offloads nothing, so the rungs differ only in n_ctx, \
                 n_batch/n_ubatch, KV cache type and flash attention"
            },
        },
        gpu: gpu.map(|g| GpuNote {
            name: g.name.clone(),
            simulated: g.simulated,
            note: g.note.clone(),
        }),
        config: profiles_config(b.threads, b.max_tokens, None),
        baseline: BASELINE,
        profiles: summary,
        downgrade: Downgrades {
            card_mb: CARD_MB,
            other_apps_mb: OtherApps {
                calm: CALM_MB,
                critical: CRITICAL_MB,
            },
            series: downgrades
                .iter()
                .map(|d| d.report(profiles_config(b.threads, b.max_tokens, Some(d.sample_ms))))
                .collect(),
        },
        runs_detail: rungs,
    };
    if let Some(out) = &b.out {
        std::fs::create_dir_all(out)
            .with_context(|| format!("creating {} (pass another --out DIR)", out.display()))?;
        let json_path = out.join("profiles.json");
        std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", json_path.display()))?;
        let svg_path = out.join("profiles.svg");
        chart::plot(&svg_path, &report.profiles, &downgrades)
            .with_context(|| format!("drawing {}", svg_path.display()))?;
        eprintln!(
            "mate bench profiles: wrote {} and {}",
            json_path.display(),
            svg_path.display()
        );
    }
    Ok(report)
}

/// One rung in its own `mate up`: load, `runs` replies to the same prompt, memory, shutdown.
fn measure_rung(
    b: &ProfilesBench,
    dir: &Path,
    name: &str,
) -> anyhow::Result<(RungMeasure, StatusReport)> {
    let config = dir.join("config.toml");
    std::fs::write(&config, profiles_config(b.threads, b.max_tokens, None))?;
    let started = Instant::now();
    let mut up = start_up(
        &b.exe,
        dir,
        &config,
        &b.model,
        &["--profile".as_ref(), name.as_ref()],
    )?;
    wait_running(dir, &mut up, &[WorkerKind::Llm], START_LIMIT).context("starting mate up")?;
    let events = follow_events(dir);
    let (load_ms, warmup_ms, loaded_at) = await_loaded(&events, name)?;
    let status = status_now(dir)?;
    let rung = status
        .ladder
        .iter()
        .find(|r| r.profile.name == name)
        .with_context(|| format!("the ladder has no rung {name}"))?
        .clone();
    let pid = worker_pid(&status, WorkerKind::Llm)?;

    let mut chats = Vec::with_capacity(b.runs);
    for run in 1..=b.runs {
        chats.push(chat(dir, PROMPT).with_context(|| format!("{name}: reply {run}"))?);
    }
    let memory = proc_status_kib(pid, &["VmRSS", "VmHWM"]);
    let after = status_now(dir)?;
    let vram_bytes = after
        .gpu
        .reading
        .filter(|_| after.gpu.name.is_some() && !after.gpu.simulated)
        .and_then(|r| r.llm_bytes);
    let worker_pids: Vec<u32> = after.workers.iter().filter_map(|w| w.pid).collect();
    let shutdown = shut_down(dir, &mut up, &worker_pids)?;
    if !(shutdown.clean && shutdown.workers_left_running.is_empty()) {
        bail!("{name}: the supervisor did not shut down cleanly: {shutdown}");
    }
    Ok((
        RungMeasure {
            profile: rung.profile,
            estimated_vram_bytes: rung.estimated_vram_bytes,
            load_ms,
            warmup_ms,
            up_to_loaded_ms: ms(loaded_at - started),
            chats,
            rss_kib: memory.first().copied().flatten(),
            rss_peak_kib: memory.get(1).copied().flatten(),
            vram_bytes,
        },
        status,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profiles_config_is_greedy_without_snapshots_and_samples_when_asked() {
        let path = Path::new("bench.toml");
        let resolve = |text: &str| {
            let file = crate::config::parse(text, path).expect("valid config");
            crate::config::resolve(&crate::config::Overrides::default(), file).expect("resolves")
        };
        let s = resolve(&profiles_config(0, 64, None));
        assert_eq!(s.chat.sampling.temperature, 0.0);
        assert_eq!(s.chat.sampling.max_tokens, 64);
        assert_eq!(s.llm.snapshot_dir, None);
        assert_eq!(s.threads, 0);
        assert!(
            s.gpu.auto_upgrade,
            "only the downgrade runs turn upgrades off"
        );
        let s = resolve(&profiles_config(2, 16, Some(100)));
        assert_eq!(s.threads, 2);
        assert_eq!(s.gpu.sample, Duration::from_millis(100));
        assert!(!s.gpu.auto_upgrade);
        assert!(s.gpu.auto_downgrade);
    }

    pub(super) fn fake_rung(name: &str, tok_s: [f64; 3], ttft: [f64; 3]) -> RungMeasure {
        RungMeasure {
            profile: Profile {
                name: name.into(),
                ..Profile::cpu(4096)
            },
            estimated_vram_bytes: 300 << 20,
            load_ms: 700.0,
            warmup_ms: 40.0,
            up_to_loaded_ms: 900.0,
            chats: tok_s
                .iter()
                .zip(ttft)
                .map(|(&t, ttft_ms)| ChatRun {
                    ttft_ms,
                    gen_tokens_per_s: t,
                    prompt_tokens_per_s: 100.0,
                    prompt_tokens: 30,
                    cached_tokens: 0,
                    generated_tokens: 64,
                    stop: "MaxTokens".into(),
                    client_ttft_ms: Some(ttft_ms + 1.0),
                })
                .collect(),
            rss_kib: Some(400 * 1024),
            rss_peak_kib: Some(410 * 1024),
            vram_bytes: None,
        }
    }

    #[test]
    fn the_summary_takes_medians_and_ratios_to_the_cpu_rung() {
        let rungs = [
            fake_rung("performance", [30.0, 50.0, 40.0], [200.0, 100.0, 150.0]),
            fake_rung("cpu", [20.0, 21.0, 19.0], [100.0, 110.0, 90.0]),
        ];
        let s = summarize(&rungs);
        assert_eq!(s[0].gen_tokens_per_s, 40.0);
        assert_eq!(s[0].ttft_ms, 150.0);
        assert_eq!(s[0].client_ttft_ms, Some(151.0));
        assert_eq!(s[0].generated_tokens, 64.0);
        assert_eq!(s[0].estimated_vram_mib, 300.0);
        assert_eq!(s[0].rss_mib, Some(400.0));
        assert_eq!(s[0].vram_mib, None);
        assert_eq!(s[0].gen_tokens_per_s_vs_baseline, Some(2.0));
        assert_eq!(s[0].ttft_vs_baseline, Some(1.5));
        assert_eq!(s[1].gen_tokens_per_s_vs_baseline, Some(1.0));
        let without_cpu = summarize(&rungs[..1]);
        assert_eq!(without_cpu[0].gen_tokens_per_s_vs_baseline, None);
    }
}
