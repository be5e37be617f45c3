//! What the machine offers the CPU backend, and how many threads to give llama.cpp.
//!
//! The thread rule (measured with `mate bench threads`; figures in BENCHMARKS.md): token
//! generation is bound by memory bandwidth and ggml's threads meet at a barrier after every
//! operation, so one thread that shares its core with other busy work stalls all of them.
//! Hence: one thread per *physical* core (hyperthreads add contention, not bandwidth), minus
//! the cores other processes keep busy right now, and never fewer than one. Prompt decoding
//! follows the same rule: measured on a 2-core machine with one core kept busy, 2 threads gave
//! 15.0 generation tok/s and 89 prompt tok/s, 1 thread 28.1 and 150 (idle: 2 threads win,
//! 35.4 vs 25.5 and 195 vs 161).

use std::time::Duration;

use serde::Serialize;
use sysinfo::System;

/// CPU and memory facts, as `mate doctor` prints them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuFacts {
    pub brand: String,
    pub physical_cores: usize,
    pub logical_cores: usize,
    pub frequency_mhz: u64,
    /// Busy share of all logical cores over the sampling window, 0–100.
    pub load_percent: f32,
    pub total_memory: u64,
    pub available_memory: u64,
    /// SIMD features the running CPU has and this build's llama.cpp uses.
    pub simd: Vec<&'static str>,
}

impl CpuFacts {
    /// Samples the machine; takes `window` (at least sysinfo's minimum interval) to measure load.
    pub fn sample(window: Duration) -> CpuFacts {
        let mut sys = System::new();
        sys.refresh_cpu_all();
        std::thread::sleep(window.max(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL));
        sys.refresh_cpu_all();
        sys.refresh_memory();
        let logical = sys.cpus().len().max(1);
        CpuFacts {
            brand: sys
                .cpus()
                .first()
                .map(|c| c.brand().trim().to_string())
                .unwrap_or_default(),
            physical_cores: System::physical_core_count().unwrap_or(logical).max(1),
            logical_cores: logical,
            frequency_mhz: sys.cpus().iter().map(|c| c.frequency()).max().unwrap_or(0),
            load_percent: sys.global_cpu_usage(),
            total_memory: sys.total_memory(),
            available_memory: sys.available_memory(),
            simd: simd_features(),
        }
    }

    /// Threads for token generation, by the rule in the module docs.
    pub fn generation_threads(&self) -> u32 {
        let busy_cores = (self.load_percent / 100.0 * self.logical_cores as f32).floor() as usize;
        let threads = self.physical_cores.saturating_sub(busy_cores).max(1);
        u32::try_from(threads).unwrap_or(1)
    }

    /// Threads for prompt decoding: the same rule (see the module docs for the measurement).
    pub fn batch_threads(&self) -> u32 {
        self.generation_threads()
    }

    /// Whether locking `model_bytes` in RAM leaves the machine comfortable: the model plus its
    /// own size again (KV, compute buffers, the rest of the desktop) plus 2 GiB must fit.
    pub fn mlock_is_safe(&self, model_bytes: u64) -> bool {
        self.total_memory >= model_bytes.saturating_mul(2).saturating_add(2 << 30)
    }
}

/// The x86 features llama.cpp's CPU backend is built to use, as present on this CPU.
fn simd_features() -> Vec<&'static str> {
    let mut found = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! check {
            ($($f:tt),*) => {$(
                if std::arch::is_x86_feature_detected!($f) {
                    found.push($f);
                }
            )*};
        }
        check!("sse4.2", "avx", "avx2", "fma", "f16c", "avx512f");
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(physical: usize, logical: usize, load: f32) -> CpuFacts {
        CpuFacts {
            brand: "test".into(),
            physical_cores: physical,
            logical_cores: logical,
            frequency_mhz: 3000,
            load_percent: load,
            total_memory: 16 << 30,
            available_memory: 8 << 30,
            simd: vec![],
        }
    }

    #[test]
    fn threads_follow_physical_cores_minus_busy_ones() {
        assert_eq!(facts(8, 16, 0.0).generation_threads(), 8);
        // Two of sixteen logical cores busy elsewhere.
        assert_eq!(facts(8, 16, 12.5).generation_threads(), 6);
        assert_eq!(facts(2, 2, 100.0).generation_threads(), 1);
        assert_eq!(facts(8, 16, 12.5).batch_threads(), 6);
    }

    #[test]
    fn mlock_needs_room_to_spare() {
        let f = facts(4, 8, 0.0);
        assert!(f.mlock_is_safe(4 << 30));
        assert!(!f.mlock_is_safe(8 << 30));
    }

    #[test]
    fn sampling_the_real_machine_gives_sane_facts() {
        let f = CpuFacts::sample(Duration::ZERO);
        assert!(f.physical_cores >= 1 && f.logical_cores >= f.physical_cores);
        assert!((0.0..=100.0).contains(&f.load_percent));
        assert!(f.total_memory > 0);
    }
}
