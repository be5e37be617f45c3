//! `mate doctor`: CPU, memory, GPU and model facts, the profile ladder with each rung's
//! estimated VRAM, and the settings mate recommends, as text or JSON. A missing model or a
//! broken GPU scenario file is part of the report, not a failure.

use mate::config::Settings;

#[cfg(feature = "llm")]
use super::model::installed_model;
use crate::Failure;

/// Prints the machine's facts and what mate would do on it; with `json`, one object.
#[cfg(feature = "llm")]
pub fn run(settings: &Settings, json: bool) -> Result<(), Failure> {
    use mate::{gpu, gpu::ladder, supervisor::gib};
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
            note: Some(note.to_string()),
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
pub fn run(_settings: &Settings, _json: bool) -> Result<(), Failure> {
    Err(anyhow::anyhow!("this mate was built without the `llm` feature").into())
}
