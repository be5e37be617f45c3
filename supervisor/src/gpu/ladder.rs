//! The profile ladder: the LLM's GPU profiles, highest first, computed for the actual model
//! and card, then edited by the config.
//!
//! A profile's VRAM is estimated the way llama.cpp spends it: the weights of the offloaded
//! layers (llama.cpp offloads the *last* `n_gpu_layers` repeating layers, and the output
//! head once all of them are), their KV cache for the profile's context, a compute buffer
//! that grows with the micro-batch (and with the context when flash attention is off), and a
//! fixed runtime overhead (the CUDA context and scratch). Tensor sizes come from the GGUF
//! header ([`crate::gpu::gguf`]); nothing is loaded.
//!
//! The default rungs: `performance` offloads as much as fits the card minus a safety margin;
//! `balanced` aims at 70% and `low_memory` at 40% of what `performance` offloads beyond the
//! fixed overhead, `low_memory` also halving the context and the batch and quantizing the KV
//! cache to q8_0; `cpu` offloads nothing. `[profiles.NAME]` tables override any field, and
//! `[gpu] ladder` reorders the rungs or adds new ones (a new rung starts from `cpu`).
//!
//! llama.cpp's own `fit_params` fits a model to the memory that is free *now* on real
//! devices, inside the process that loads it; the ladder must be known before any worker
//! runs, for simulated cards and for rungs well below the card, so it is estimated here.

use std::{collections::BTreeMap, path::Path};

use mate_protocol::{KvType, Profile, Rung, VramReading};
use serde::Deserialize;

use crate::gpu::gguf::ModelFacts;

/// The rungs mate computes, highest first.
pub const DEFAULT_LADDER: [&str; 4] = ["performance", "balanced", "low_memory", "cpu"];

/// The context every computed rung but `low_memory` gets (capped by the model's own).
pub const DEFAULT_N_CTX: u32 = 4096;

const MIB: u64 = 1 << 20;

/// A `[profiles.NAME]` table: any field set replaces the computed value.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileOverride {
    pub n_gpu_layers: Option<u32>,
    pub n_ctx: Option<u32>,
    pub n_batch: Option<u32>,
    pub n_ubatch: Option<u32>,
    pub kv_type: Option<KvTypeName>,
    pub flash_attention: Option<bool>,
    pub mmap: Option<bool>,
    pub mlock: Option<bool>,
}

/// KV cache element type as the config spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvTypeName {
    F16,
    Q8_0,
    Q4_0,
}

impl From<KvTypeName> for KvType {
    fn from(k: KvTypeName) -> KvType {
        match k {
            KvTypeName::F16 => KvType::F16,
            KvTypeName::Q8_0 => KvType::Q8_0,
            KvTypeName::Q4_0 => KvType::Q4_0,
        }
    }
}

/// Everything the ladder is computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct LadderSpec {
    /// Rung names, highest first.
    pub order: Vec<String>,
    pub overrides: BTreeMap<String, ProfileOverride>,
    /// Kept free on the card by `performance`.
    pub margin_bytes: u64,
    /// `performance` stays below this share of the card too (the calm zone of the VRAM
    /// policy, so it can be started on and upgraded to without alerting at once).
    pub top_percent: f32,
    /// Runtime overhead of a process that uses the GPU at all.
    pub overhead_bytes: u64,
}

impl Default for LadderSpec {
    fn default() -> Self {
        LadderSpec {
            order: DEFAULT_LADDER.map(String::from).to_vec(),
            overrides: BTreeMap::new(),
            margin_bytes: 512 * MIB,
            top_percent: 80.0,
            overhead_bytes: 300 * MIB,
        }
    }
}

/// Why there is no ladder, or no such rung on it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LadderError {
    /// `[gpu] ladder` and the `[profiles.*]` tables do not make a ladder mate can load.
    #[error("{0}")]
    Invalid(String),
    /// A profile asked for (flag, environment, config) that is not on the ladder.
    #[error("{0}")]
    UnknownProfile(String),
}

impl LadderSpec {
    /// Checks the names: the ladder is not empty, has no duplicates, and every rung mate does
    /// not compute has a table, as does nothing outside the ladder.
    pub fn validate(&self) -> Result<(), LadderError> {
        self.check_names().map_err(LadderError::Invalid)
    }

    fn check_names(&self) -> Result<(), String> {
        if self.order.is_empty() {
            return Err("[gpu] ladder is empty: name at least one profile".into());
        }
        for (i, name) in self.order.iter().enumerate() {
            if self.order[..i].contains(name) {
                return Err(format!("[gpu] ladder names {name:?} twice"));
            }
            if name == "auto" {
                return Err("\"auto\" is not a profile name: it means the suggested rung".into());
            }
            if !DEFAULT_LADDER.contains(&name.as_str()) && !self.overrides.contains_key(name) {
                return Err(format!(
                    "[gpu] ladder names {name:?}, which mate does not compute: add a \
                     [profiles.{name}] table with its settings"
                ));
            }
        }
        if let Some(stray) = self.overrides.keys().find(|n| !self.order.contains(n)) {
            return Err(format!(
                "[profiles.{stray}] is not on the ladder: add {stray:?} to [gpu] ladder"
            ));
        }
        Ok(())
    }
}

/// Bytes per KV element (q8_0 and q4_0 blocks hold 32 values and a 2-byte scale).
fn kv_elem_bytes(kv: KvType) -> f64 {
    match kv {
        KvType::F16 => 2.0,
        KvType::Q8_0 => 34.0 / 32.0,
        KvType::Q4_0 => 18.0 / 32.0,
    }
}

/// The estimated VRAM of the LLM worker with profile `p`: 0 when nothing is offloaded.
pub fn estimate(facts: &ModelFacts, p: &Profile, overhead_bytes: u64) -> u64 {
    let layers = p.n_gpu_layers.min(facts.n_layer.saturating_add(1));
    if layers == 0 {
        return 0;
    }
    // In f64: a hostile header's huge dimensions saturate instead of wrapping around.
    let repeating = layers.min(facts.n_layer) as usize;
    let mut weights: f64 = facts
        .layer_bytes
        .iter()
        .rev()
        .take(repeating)
        .map(|&b| b as f64)
        .sum();
    if layers > facts.n_layer {
        weights += facts.output_bytes as f64;
    }
    let n_ctx = f64::from(p.n_ctx);
    let per_token = f64::from(facts.n_head_kv)
        * (f64::from(facts.key_length) + f64::from(facts.value_length))
        * repeating as f64;
    let kv = n_ctx * per_token * kv_elem_bytes(p.kv_type);
    let ubatch = f64::from(p.n_ubatch.min(p.n_batch).max(1));
    let mut compute = 4.0 * ubatch * (f64::from(facts.n_vocab) + 8.0 * f64::from(facts.n_embd));
    if !p.flash_attention {
        compute += 4.0 * ubatch * n_ctx * f64::from(facts.n_head);
    }
    // `as` saturates at u64::MAX.
    (weights.round() as u64)
        .saturating_add(kv as u64)
        .saturating_add(compute as u64)
        .saturating_add(overhead_bytes)
}

/// The ladder for `facts` on a card of `card_bytes` (`None`: no GPU, so no limit — the
/// rungs are still computed, for `mate doctor` and for users who pick one anyway).
/// Without model facts (an unreadable header) every computed rung offloads everything and
/// estimates nothing; loading then reports what is wrong with the file.
/// A rung the worker could not load (a quantized KV cache without flash attention) is an
/// error that names it.
pub fn build(
    spec: &LadderSpec,
    facts: Option<&ModelFacts>,
    card_bytes: Option<u64>,
) -> Result<Vec<Rung>, LadderError> {
    let computed = computed(spec, facts, card_bytes);
    let ladder: Vec<Rung> = spec
        .order
        .iter()
        .map(|name| {
            let base = computed
                .iter()
                .find(|p| &p.name == name)
                .cloned()
                .unwrap_or_else(|| computed_cpu(facts));
            let mut profile = Profile {
                name: name.clone(),
                ..base
            };
            if let Some(o) = spec.overrides.get(name) {
                apply(&mut profile, o);
            }
            Rung {
                estimated_vram_bytes: facts
                    .map_or(0, |f| estimate(f, &profile, spec.overhead_bytes)),
                profile,
            }
        })
        .collect();
    if let Some(bad) = ladder
        .iter()
        .find(|r| r.profile.kv_type != KvType::F16 && !r.profile.flash_attention)
    {
        return Err(LadderError::Invalid(format!(
            "[profiles.{}]: a {:?} KV cache needs flash_attention = true",
            bad.profile.name, bad.profile.kv_type
        )));
    }
    Ok(ladder)
}

fn apply(p: &mut Profile, o: &ProfileOverride) {
    let set = |field: &mut u32, v: Option<u32>| *field = v.unwrap_or(*field);
    set(&mut p.n_gpu_layers, o.n_gpu_layers);
    set(&mut p.n_ctx, o.n_ctx);
    set(&mut p.n_batch, o.n_batch);
    set(&mut p.n_ubatch, o.n_ubatch);
    p.kv_type = o.kv_type.map_or(p.kv_type, KvType::from);
    p.flash_attention = o.flash_attention.unwrap_or(p.flash_attention);
    p.mmap = o.mmap.unwrap_or(p.mmap);
    p.mlock = o.mlock.unwrap_or(p.mlock);
    // llama.cpp needs n_batch ≥ n_ubatch.
    p.n_ctx = p.n_ctx.max(64);
    p.n_batch = p.n_batch.max(1);
    p.n_ubatch = p.n_ubatch.clamp(1, p.n_batch);
}

/// The context of the `cpu` rung: the default, or less for a model trained on less.
pub fn base_ctx(facts: Option<&ModelFacts>) -> u32 {
    match facts.map(|f| f.n_ctx_train) {
        Some(train) if train > 0 => DEFAULT_N_CTX.min(train),
        _ => DEFAULT_N_CTX,
    }
}

fn computed_cpu(facts: Option<&ModelFacts>) -> Profile {
    Profile::cpu(base_ctx(facts))
}

/// The four default rungs.
fn computed(
    spec: &LadderSpec,
    facts: Option<&ModelFacts>,
    card_bytes: Option<u64>,
) -> Vec<Profile> {
    let cpu = computed_cpu(facts);
    let gpu = |name: &str, n_gpu_layers: u32| Profile {
        name: name.into(),
        n_gpu_layers,
        flash_attention: true,
        ..cpu.clone()
    };
    let Some(facts) = facts else {
        return vec![
            gpu("performance", 999),
            gpu("balanced", 999),
            gpu("low_memory", 999),
            cpu,
        ];
    };
    let all = facts.n_layer + 1;
    let estimate_with = |p: &Profile, layers: u32| {
        estimate(
            facts,
            &Profile {
                n_gpu_layers: layers,
                ..p.clone()
            },
            spec.overhead_bytes,
        )
    };
    // The most layers (at most `below`) whose estimate stays within `budget`.
    let most = |p: &Profile, below: u32, budget: u64| {
        (0..=below.min(all))
            .rev()
            .find(|&l| estimate_with(p, l) <= budget)
            .unwrap_or(0)
    };

    let mut performance = gpu("performance", all);
    let budget = card_bytes.map_or(u64::MAX, |c| {
        let calm = (c as f64 * f64::from(spec.top_percent) / 100.0) as u64;
        c.saturating_sub(spec.margin_bytes).min(calm)
    });
    performance.n_gpu_layers = most(&performance, all, budget);
    let top = estimate_with(&performance, performance.n_gpu_layers);
    let variable = top.saturating_sub(spec.overhead_bytes);
    let share = |fraction: f64| spec.overhead_bytes + (variable as f64 * fraction) as u64;

    let mut balanced = gpu("balanced", 0);
    let below = performance.n_gpu_layers.saturating_sub(1);
    balanced.n_gpu_layers = most(&balanced, below, share(0.7)).max(below.min(1));

    let mut low = gpu("low_memory", 0);
    low.n_ctx = (cpu.n_ctx / 2).max(512).min(cpu.n_ctx);
    low.n_batch = 256;
    low.n_ubatch = 256;
    // llama.cpp quantizes the cache in blocks of 32 values per head row.
    if facts.key_length % 32 == 0 && facts.value_length % 32 == 0 {
        low.kv_type = KvType::Q8_0;
    }
    let below = balanced.n_gpu_layers;
    low.n_gpu_layers = most(&low, below, share(0.4)).max(below.min(1));

    vec![performance, balanced, low, cpu]
}

/// Where mate starts when no profile is given: the highest rung that fits next to what the
/// card already holds and stays below `below_percent` of it; the last rung without a GPU.
pub fn suggest(ladder: &[Rung], card: Option<(u64, u64)>, below_percent: f32) -> &Rung {
    let last = ladder.len() - 1;
    let Some((total, used)) = card else {
        return &ladder[last];
    };
    ladder
        .iter()
        .find(|r| fits(r, total, used, below_percent))
        .unwrap_or(&ladder[last])
}

/// Whether `rung` next to `used` bytes keeps a card of `total` at or below `below_percent`.
pub fn fits(rung: &Rung, total: u64, used: u64, below_percent: f32) -> bool {
    let limit = (total as f64 * f64::from(below_percent) / 100.0) as u64;
    used.saturating_add(rung.estimated_vram_bytes) <= limit
}

/// The ladder for a model on a card, and where to start on it.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The model's header, or why it could not be read (estimates are then 0).
    pub facts: Result<ModelFacts, String>,
    pub ladder: Vec<Rung>,
    /// The rung to start on.
    pub start: String,
    /// The highest rung automatic upgrades may reach: the top for `auto`, else the one asked for.
    pub ceiling: usize,
    /// Whether `start` was suggested (`auto`) rather than asked for.
    pub suggested: bool,
}

/// Reads the model's header, builds the ladder for a card of `total_bytes` and picks the
/// starting rung: `asked`, or for `auto` the suggestion for what the card holds now
/// (`reading`), below `below_percent`.
pub fn plan(
    spec: &LadderSpec,
    model: &Path,
    total_bytes: Option<u64>,
    reading: Option<&VramReading>,
    asked: &str,
    below_percent: f32,
) -> Result<Plan, LadderError> {
    let facts = crate::gpu::gguf::read(model).map_err(|e| e.to_string());
    let ladder = build(spec, facts.as_ref().ok(), total_bytes)?;
    let (start, suggested) = if asked == "auto" {
        let card = reading.map(|r| (r.total_bytes, r.used_bytes));
        (
            suggest(&ladder, card, below_percent).profile.name.clone(),
            true,
        )
    } else {
        (asked.to_string(), false)
    };
    let Some(at) = ladder.iter().position(|r| r.profile.name == start) else {
        return Err(LadderError::UnknownProfile(unknown_profile(
            &ladder, &start,
        )));
    };
    Ok(Plan {
        facts,
        ceiling: if suggested { 0 } else { at },
        ladder,
        start,
        suggested,
    })
}

/// The error for a name that is not on the ladder.
pub fn unknown_profile(ladder: &[Rung], name: &str) -> String {
    let names: Vec<&str> = ladder.iter().map(|r| r.profile.name.as_str()).collect();
    format!(
        "unknown profile {name:?}: expected one of {} or auto (`mate doctor` shows the ladder)",
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    /// A 7B-like model: 32 layers of 200 MiB, a 500 MiB head.
    fn seven_b() -> ModelFacts {
        ModelFacts {
            architecture: "llama".into(),
            name: None,
            file_bytes: 7 * GIB,
            n_layer: 32,
            n_ctx_train: 32_768,
            n_embd: 4096,
            n_head: 32,
            n_head_kv: 8,
            key_length: 128,
            value_length: 128,
            n_vocab: 32_000,
            layer_bytes: vec![200 * MIB; 32],
            output_bytes: 500 * MIB,
            other_bytes: 250 * MIB,
        }
    }

    fn names(ladder: &[Rung]) -> Vec<&str> {
        ladder.iter().map(|r| r.profile.name.as_str()).collect()
    }

    #[test]
    fn the_estimate_adds_weights_cache_compute_and_overhead() {
        let f = seven_b();
        let mut p = Profile::cpu(4096);
        assert_eq!(estimate(&f, &p, 300 * MIB), 0, "nothing offloaded");
        p.n_gpu_layers = 1;
        p.flash_attention = true;
        let kv = 4096 * 8 * 256 * 2; // one layer, f16
        let compute = 4 * 512 * (32_000 + 8 * 4096);
        assert_eq!(
            estimate(&f, &p, 300 * MIB),
            200 * MIB + kv + compute + 300 * MIB
        );
        // All layers: the head comes along; q8_0 shrinks the cache; no flash attention grows
        // the compute buffer with the context.
        p.n_gpu_layers = 33;
        let all = estimate(&f, &p, 0);
        assert_eq!(all, 32 * 200 * MIB + 500 * MIB + 32 * kv + compute);
        p.kv_type = KvType::Q8_0;
        assert!(estimate(&f, &p, 0) < all);
        p.kv_type = KvType::F16;
        p.flash_attention = false;
        assert_eq!(estimate(&f, &p, 0), all + 4 * 512 * 4096 * 32);
    }

    #[test]
    fn a_small_card_gets_a_ladder_that_fits_and_goes_down_step_by_step() {
        let f = seven_b();
        let card = 6 * GIB;
        let spec = LadderSpec::default();
        let ladder = build(&spec, Some(&f), Some(card)).expect("ladder");
        assert_eq!(names(&ladder), DEFAULT_LADDER);
        let top = &ladder[0];
        // Within the calm zone (80%), which is tighter here than the 512 MiB margin.
        let budget = card * 8 / 10;
        assert!(top.estimated_vram_bytes <= budget);
        assert!(
            top.profile.n_gpu_layers < 33,
            "a 7 GB model does not fit 6 GB"
        );
        // One more layer would not have fit.
        let mut more = top.profile.clone();
        more.n_gpu_layers += 1;
        assert!(estimate(&f, &more, spec.overhead_bytes) > budget);
        for pair in ladder.windows(2) {
            assert!(
                pair[1].estimated_vram_bytes < pair[0].estimated_vram_bytes,
                "{} must need less than {}",
                pair[1].profile.name,
                pair[0].profile.name
            );
            assert!(pair[1].profile.n_gpu_layers <= pair[0].profile.n_gpu_layers);
        }
        let low = &ladder[2].profile;
        assert_eq!(
            (low.n_ctx, low.n_batch, low.kv_type),
            (2048, 256, KvType::Q8_0)
        );
        assert_eq!(ladder[3].profile.n_gpu_layers, 0);
        assert_eq!(ladder[3].estimated_vram_bytes, 0);
        // Heads too small for a quantized cache block keep it f16.
        let small_heads = ModelFacts {
            key_length: 16,
            value_length: 16,
            ..seven_b()
        };
        let ladder = build(&spec, Some(&small_heads), Some(card)).expect("ladder");
        assert_eq!(ladder[2].profile.kv_type, KvType::F16);
    }

    #[test]
    fn a_big_card_offloads_everything() {
        let ladder =
            build(&LadderSpec::default(), Some(&seven_b()), Some(80 * GIB)).expect("ladder");
        assert_eq!(ladder[0].profile.n_gpu_layers, 33);
        assert!(ladder[1].profile.n_gpu_layers < 33);
        // The context is capped at the default, not the model's 32k.
        assert_eq!(ladder[0].profile.n_ctx, DEFAULT_N_CTX);
    }

    #[test]
    fn the_config_overrides_fields_reorders_and_adds_rungs() {
        let mut spec = LadderSpec {
            order: vec!["performance".into(), "tiny".into(), "cpu".into()],
            ..LadderSpec::default()
        };
        spec.overrides.insert(
            "performance".into(),
            ProfileOverride {
                n_ctx: Some(8192),
                ..ProfileOverride::default()
            },
        );
        spec.overrides.insert(
            "tiny".into(),
            ProfileOverride {
                n_gpu_layers: Some(4),
                kv_type: Some(KvTypeName::Q4_0),
                flash_attention: Some(true),
                ..ProfileOverride::default()
            },
        );
        spec.validate().expect("valid");
        let ladder = build(&spec, Some(&seven_b()), Some(6 * GIB)).expect("ladder");
        assert_eq!(names(&ladder), ["performance", "tiny", "cpu"]);
        assert_eq!(ladder[0].profile.n_ctx, 8192);
        let tiny = &ladder[1];
        assert_eq!(
            (tiny.profile.n_gpu_layers, tiny.profile.kv_type),
            (4, KvType::Q4_0)
        );
        assert_eq!(
            tiny.estimated_vram_bytes,
            estimate(&seven_b(), &tiny.profile, spec.overhead_bytes)
        );
    }

    #[test]
    fn bad_ladders_are_refused_with_what_to_do() {
        let spec = |order: &[&str], tables: &[&str]| LadderSpec {
            order: order.iter().map(|s| s.to_string()).collect(),
            overrides: tables
                .iter()
                .map(|t| (t.to_string(), ProfileOverride::default()))
                .collect(),
            ..LadderSpec::default()
        };
        let err = |s: LadderSpec| s.validate().expect_err("invalid").to_string();
        assert!(err(spec(&[], &[])).contains("empty"));
        assert!(err(spec(&["cpu", "cpu"], &[])).contains("twice"));
        assert!(err(spec(&["turbo"], &[])).contains("[profiles.turbo]"));
        assert!(err(spec(&["cpu"], &["balanced"])).contains("add \"balanced\" to [gpu] ladder"));
        assert!(err(spec(&["auto"], &["auto"])).contains("auto"));
        let mut quantized = spec(&["cpu"], &["cpu"]);
        quantized.overrides.insert(
            "cpu".into(),
            ProfileOverride {
                kv_type: Some(KvTypeName::Q8_0),
                ..ProfileOverride::default()
            },
        );
        let e = build(&quantized, None, None)
            .expect_err("q8_0 without flash attention")
            .to_string();
        assert!(
            e.contains("[profiles.cpu]") && e.contains("flash_attention"),
            "{e}"
        );
    }

    #[test]
    fn the_suggestion_is_the_highest_rung_that_fits_next_to_other_apps() {
        let ladder =
            build(&LadderSpec::default(), Some(&seven_b()), Some(6 * GIB)).expect("ladder");
        assert_eq!(suggest(&ladder, None, 80.0).profile.name, "cpu");
        assert_eq!(
            suggest(&ladder, Some((6 * GIB, 0)), 100.0).profile.name,
            "performance"
        );
        let busy = 6 * GIB - ladder[1].estimated_vram_bytes - GIB / 10;
        assert_eq!(
            suggest(&ladder, Some((6 * GIB, busy)), 100.0).profile.name,
            "balanced"
        );
        assert_eq!(
            suggest(&ladder, Some((6 * GIB, 6 * GIB)), 100.0)
                .profile
                .name,
            "cpu"
        );
    }

    #[test]
    fn absurd_dimensions_saturate_instead_of_wrapping() {
        let f = ModelFacts {
            n_head_kv: u32::MAX,
            key_length: u32::MAX,
            value_length: u32::MAX,
            n_vocab: u32::MAX,
            ..seven_b()
        };
        let mut p = Profile::cpu(u32::MAX);
        p.n_gpu_layers = 33;
        assert_eq!(estimate(&f, &p, u64::MAX), u64::MAX);
    }

    #[test]
    fn without_model_facts_the_rungs_still_exist() {
        let ladder = build(&LadderSpec::default(), None, Some(6 * GIB)).expect("ladder");
        assert_eq!(names(&ladder), DEFAULT_LADDER);
        assert!(ladder.iter().all(|r| r.estimated_vram_bytes == 0));
    }
}
