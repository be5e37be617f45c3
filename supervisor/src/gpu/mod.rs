//! GPU probes: how the supervisor learns how much VRAM is left before it runs out.
//!
//! A [`GpuProbe`] answers one question, "how full is the card right now, and how much of it is
//! the LLM worker's?", as a [`VramReading`]. The supervisor never talks to a driver itself: it
//! calls [`open`] once at startup and hands the probe to [`sample_every`], which samples it on its
//! own thread and delivers each reading (or a per-sample error) to the supervisor loop as an event.
//!
//! Two probes exist:
//! - **NVML** (the default): `libnvidia-ml.so.1` / `nvml.dll` is loaded at run time through
//!   `nvml-wrapper` (libloading), so the same binary runs on machines without NVIDIA; there
//!   [`open`] just returns a note ("no NVIDIA GPU (…)") and mate runs unmonitored. Each probe
//!   initialises NVML once and owns it; a failed call fails that one sample, never the probe.
//! - **Simulated**: a TOML scenario (see `config/gpu-scenarios/`) describing the VRAM other
//!   applications use over time, for tests and demos without a GPU. The file is re-read when it
//!   changes, so a test or a user can raise the pressure live; the timeline then starts over.

//!
//! Beside the probes, what the supervisor decides from them: `gguf` reads a model's header
//! (layers, tensor sizes), `ladder` computes the profile ladder with VRAM estimates for the
//! model and card, and `pressure` is the VRAM policy (readings in; alert, downgrade, upgrade
//! out; pure).

pub mod gguf;
pub mod ladder;
pub mod pressure;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use mate_protocol::VramReading;
use serde::Deserialize;

/// Bytes in one MiB: scenario files count VRAM in MiB ("6144" for a 6 GB card).
const MIB: f64 = 1024.0 * 1024.0;

/// The card being watched.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GpuInfo {
    /// The card's name ("NVIDIA GeForce RTX 3060"), or the scenario's name when simulated.
    pub name: String,
    /// Total VRAM in bytes.
    pub total_bytes: u64,
    /// True for a [`GpuChoice::Simulated`] probe.
    pub simulated: bool,
    /// The NVIDIA driver version, when known.
    pub driver: Option<String>,
}

/// The LLM worker as the probe needs to know it: its pid (NVML looks its memory up) and the
/// estimated VRAM of the profile it loaded (the simulation adds that to the other apps' use).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LlmFootprint {
    /// The worker's process id.
    pub pid: u32,
    /// Estimated VRAM of the loaded profile, in bytes.
    pub estimated_bytes: u64,
}

/// Why there is no GPU reading. Each kind is handled differently: no card or monitoring off is
/// a note (mate runs unmonitored), a bad scenario file refuses to start, and a failed sample
/// fails that sample only.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    #[error("GPU monitoring is off")]
    Off,
    /// No NVIDIA card to watch: no driver library, no driver, no such index, no permission.
    #[error("{0}")]
    Absent(String),
    /// One reading of the card failed; the next may work.
    #[error("{0}")]
    Sample(String),
    /// The simulated card's scenario file cannot be read or makes no sense.
    #[error("GPU scenario {}: {message}", path.display())]
    Scenario { path: PathBuf, message: String },
}

impl GpuError {
    fn scenario(path: &Path, e: impl std::fmt::Display) -> GpuError {
        GpuError::Scenario {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }
}

/// Something that can read the VRAM state of one card.
pub trait GpuProbe: Send {
    /// The card this probe watches.
    fn info(&self) -> &GpuInfo;
    /// One reading. `llm`: the LLM worker, when one runs with a loaded model.
    fn sample(&mut self, llm: Option<LlmFootprint>) -> Result<VramReading, GpuError>;
}

/// Which probe to use (from config / flags).
#[derive(Debug, Clone, PartialEq)]
pub enum GpuChoice {
    /// NVML device 0 when there is one, else no monitoring.
    Auto,
    /// This NVML device index.
    Nvml {
        /// The NVML device index (as in `nvidia-smi -i`).
        device: u32,
    },
    /// A scenario file (see `config/gpu-scenarios/`).
    Simulated(PathBuf),
    /// No GPU monitoring.
    Off,
}

/// The GPU as first seen: the card (when there is one to watch), a first reading, and why
/// either is missing.
#[derive(Debug, Clone, Default)]
pub struct FirstLook {
    pub info: Option<GpuInfo>,
    pub reading: Option<VramReading>,
    pub note: Option<String>,
}

/// Opens the probe for `choice` and takes a first reading, as `mate up` and `mate doctor`
/// both start. No NVIDIA GPU is a note; a broken scenario file is an error.
pub fn first_look(choice: &GpuChoice) -> Result<(Option<Box<dyn GpuProbe>>, FirstLook), GpuError> {
    match open(choice) {
        Ok(mut probe) => {
            let (reading, note) = match probe.sample(None) {
                Ok(r) => (Some(r), None),
                Err(e) => (None, Some(e.to_string())),
            };
            let look = FirstLook {
                info: Some(probe.info().clone()),
                reading,
                note,
            };
            Ok((Some(probe), look))
        }
        Err(e @ GpuError::Scenario { .. }) => Err(e),
        Err(note) => Ok((
            None,
            FirstLook {
                note: Some(note.to_string()),
                ..FirstLook::default()
            },
        )),
    }
}

/// Opens the probe. `Err(note)` when there is none to use; the note is shown to users as is
/// ("no NVIDIA GPU (libnvidia-ml.so.1 not found)", "GPU monitoring is off", or for Simulated a
/// *clear* error naming the scenario file and what is wrong with it — the caller turns a bad
/// scenario into a startup error, but a missing NVML is never an error).
pub fn open(choice: &GpuChoice) -> Result<Box<dyn GpuProbe>, GpuError> {
    match choice {
        GpuChoice::Off => Err(GpuError::Off),
        GpuChoice::Auto => nvml::open(0),
        GpuChoice::Nvml { device } => nvml::open(*device),
        GpuChoice::Simulated(path) => Ok(Box::new(Simulated::open(path, Instant::now())?)),
    }
}

/// Runs `probe` on its own thread every `every`, reading the current footprint from `llm`,
/// and hands each result to `send`; stops when `send` returns false.
///
/// The first sample is taken at once. A poisoned `llm` mutex is read anyway: the footprint is
/// plain data, and the sampler must outlive whatever panicked.
pub fn sample_every(
    mut probe: Box<dyn GpuProbe>,
    every: Duration,
    llm: Arc<Mutex<Option<LlmFootprint>>>,
    mut send: impl FnMut(Result<VramReading, GpuError>) -> bool + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("gpu-probe".to_owned())
        .spawn(move || loop {
            let footprint = *llm.lock().unwrap_or_else(PoisonError::into_inner);
            if !send(probe.sample(footprint)) {
                break;
            }
            std::thread::sleep(every);
        })
}

/// The real probe, through NVML.
mod nvml {
    use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
    use nvml_wrapper::enums::device::UsedGpuMemory;
    use nvml_wrapper::error::NvmlError;
    use nvml_wrapper::{Device, Nvml};

    use super::{GpuError, GpuInfo, GpuProbe, LlmFootprint, VramReading};

    /// The library `Nvml::init` loads, for the "not found" note.
    #[cfg(target_os = "linux")]
    const LIBRARY: &str = "libnvidia-ml.so.1";
    #[cfg(not(target_os = "linux"))]
    const LIBRARY: &str = "nvml.dll";

    /// One NVIDIA card. Owns its `Nvml` (NVML is reference counted, so several probes are fine)
    /// and looks the device up by index on each sample, since a `Device` borrows the `Nvml`.
    struct NvmlProbe {
        nvml: Nvml,
        index: u32,
        info: GpuInfo,
    }

    /// Initialises NVML and checks that device `index` answers.
    pub(super) fn open(index: u32) -> Result<Box<dyn GpuProbe>, GpuError> {
        let nvml = Nvml::init().map_err(|e| {
            GpuError::Absent(match e {
                NvmlError::LibloadingError(_) => format!("no NVIDIA GPU ({LIBRARY} not found)"),
                NvmlError::DriverNotLoaded => {
                    "no NVIDIA GPU (the NVIDIA driver is not loaded)".into()
                }
                NvmlError::NoPermission => {
                    "no NVIDIA GPU monitoring (NVML: permission denied)".into()
                }
                e => format!("no NVIDIA GPU (NVML: {e})"),
            })
        })?;
        let device = nvml.device_by_index(index).map_err(|e| {
            let count = nvml.device_count().unwrap_or(0);
            GpuError::Absent(format!(
                "no NVIDIA GPU with index {index} ({count} found; NVML: {e})"
            ))
        })?;
        let memory = device.memory_info().map_err(|e| {
            GpuError::Absent(format!(
                "NVIDIA GPU {index}: cannot read its memory (NVML: {e})"
            ))
        })?;
        let info = GpuInfo {
            name: device
                .name()
                .unwrap_or_else(|_| format!("NVIDIA GPU {index}")),
            total_bytes: memory.total,
            simulated: false,
            driver: nvml.sys_driver_version().ok(),
        };
        Ok(Box::new(NvmlProbe { nvml, index, info }))
    }

    impl GpuProbe for NvmlProbe {
        fn info(&self) -> &GpuInfo {
            &self.info
        }

        fn sample(&mut self, llm: Option<LlmFootprint>) -> Result<VramReading, GpuError> {
            let index = self.index;
            let device = self
                .nvml
                .device_by_index(index)
                .map_err(|e| GpuError::Sample(format!("NVIDIA GPU {index}: {e}")))?;
            let memory = device.memory_info().map_err(|e| {
                GpuError::Sample(format!("NVIDIA GPU {index}: cannot read its memory: {e}"))
            })?;
            // What is gone is what is not free: the driver's reserved memory counts too.
            let used_bytes = memory.total.saturating_sub(memory.free);
            Ok(VramReading {
                total_bytes: memory.total,
                used_bytes,
                llm_bytes: llm.and_then(|llm| process_bytes(&device, llm.pid)),
                // Optional readings: cards without the sensor/counter report NotSupported.
                temperature_c: device.temperature(TemperatureSensor::Gpu).ok(),
                utilization_percent: device.utilization_rates().ok().map(|u| u.gpu),
            })
        }
    }

    /// VRAM used by process `pid`; `None` when it has no context on the card or the driver
    /// cannot tell (always so under Windows WDDM).
    fn process_bytes(device: &Device<'_>, pid: u32) -> Option<u64> {
        [
            device.running_compute_processes(),
            device.running_graphics_processes(),
        ]
        .into_iter()
        .flatten()
        .flatten()
        .find(|p| p.pid == pid)
        .and_then(|p| match p.used_gpu_memory {
            UsedGpuMemory::Used(bytes) => Some(bytes),
            UsedGpuMemory::Unavailable => None,
        })
    }
}

/// A scenario file as written (see `config/gpu-scenarios/ramp.toml`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    #[serde(default = "default_name")]
    name: String,
    total_mb: u64,
    temperature_c: Option<u32>,
    /// Other applications' VRAM over time; none means no other applications.
    #[serde(default)]
    other: Vec<Point>,
}

/// One point of the other applications' VRAM timeline.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Point {
    at_s: f64,
    mb: f64,
}

fn default_name() -> String {
    "simulated GPU".to_owned()
}

impl Scenario {
    /// Reads and checks `path`; the error names the file.
    fn load(path: &Path) -> Result<Self, GpuError> {
        let text = fs::read_to_string(path).map_err(|e| GpuError::scenario(path, e))?;
        let scenario: Self = toml::from_str(&text).map_err(|e| GpuError::scenario(path, e))?;
        scenario.check().map_err(|e| GpuError::scenario(path, e))?;
        Ok(scenario)
    }

    fn check(&self) -> Result<(), String> {
        if self.total_mb == 0 {
            return Err("total_mb must be greater than 0".to_owned());
        }
        let mut last = f64::NEG_INFINITY;
        for (i, p) in self.other.iter().enumerate() {
            let n = i + 1;
            if !p.at_s.is_finite() || p.at_s < 0.0 {
                return Err(format!("[[other]] #{n}: at_s must be a number ≥ 0"));
            }
            if p.at_s < last {
                return Err(format!(
                    "[[other]] #{n}: at_s {} comes before {last}",
                    p.at_s
                ));
            }
            if !p.mb.is_finite() || p.mb < 0.0 {
                return Err(format!("[[other]] #{n}: mb must be a number ≥ 0"));
            }
            last = p.at_s;
        }
        Ok(())
    }

    /// Other applications' VRAM at `t` seconds, in MiB: piecewise linear, flat before the first
    /// point and after the last.
    fn other_mb(&self, t: f64) -> f64 {
        let (Some(first), Some(last)) = (self.other.first(), self.other.last()) else {
            return 0.0;
        };
        if t <= first.at_s {
            return first.mb;
        }
        self.other
            .windows(2)
            .find(|w| t < w[1].at_s)
            .map_or(last.mb, |w| {
                let f = (t - w[0].at_s) / (w[1].at_s - w[0].at_s);
                w[0].mb + f * (w[1].mb - w[0].mb)
            })
    }
}

/// What identifies one version of the scenario file without reading it.
type Stamp = (Option<SystemTime>, u64);

fn stamp(path: &Path) -> Result<Stamp, GpuError> {
    let meta = fs::metadata(path).map_err(|e| GpuError::scenario(path, e))?;
    Ok((meta.modified().ok(), meta.len()))
}

/// The simulated probe: a scenario plus the instant its timeline started.
#[derive(Debug)]
struct Simulated {
    path: PathBuf,
    scenario: Scenario,
    stamp: Stamp,
    started: Instant,
    info: GpuInfo,
}

impl Simulated {
    /// Loads `path`; its timeline starts at `now`.
    fn open(path: &Path, now: Instant) -> Result<Self, GpuError> {
        let stamp = stamp(path)?;
        let scenario = Scenario::load(path)?;
        let mut sim = Self {
            path: path.to_owned(),
            info: GpuInfo {
                name: String::new(),
                total_bytes: 0,
                simulated: true,
                driver: None,
            },
            scenario,
            stamp,
            started: now,
        };
        sim.refresh_info();
        Ok(sim)
    }

    fn refresh_info(&mut self) {
        self.info.name = self.scenario.name.clone();
        self.info.total_bytes = self.scenario.total_mb.saturating_mul(1024 * 1024);
    }

    /// Re-reads the file if it changed. On failure the previous scenario stays and the file is
    /// retried next time (the stamp is kept, so a half-written file is read again once complete).
    fn reload_if_changed(&mut self, now: Instant) -> Result<(), GpuError> {
        let stamp = stamp(&self.path)?;
        if stamp == self.stamp {
            return Ok(());
        }
        self.scenario = Scenario::load(&self.path)?;
        self.stamp = stamp;
        self.started = now;
        self.refresh_info();
        Ok(())
    }

    /// One reading at `now` (tests pass their own instants instead of sleeping).
    fn sample_at(
        &mut self,
        now: Instant,
        llm: Option<LlmFootprint>,
    ) -> Result<VramReading, GpuError> {
        self.reload_if_changed(now)?;
        let t = now.saturating_duration_since(self.started).as_secs_f64();
        let total = self.info.total_bytes;
        // `as` saturates for floats, and the mb are checked ≥ 0.
        let other = (self.scenario.other_mb(t) * MIB) as u64;
        let llm_bytes = llm.map(|l| l.estimated_bytes);
        Ok(VramReading {
            total_bytes: total,
            used_bytes: other.saturating_add(llm_bytes.unwrap_or(0)).min(total),
            llm_bytes,
            temperature_c: self.scenario.temperature_c,
            utilization_percent: None,
        })
    }
}

impl GpuProbe for Simulated {
    fn info(&self) -> &GpuInfo {
        &self.info
    }

    fn sample(&mut self, llm: Option<LlmFootprint>) -> Result<VramReading, GpuError> {
        self.sample_at(Instant::now(), llm)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const MB: u64 = 1024 * 1024;

    const RAMP: &str = r#"
name = "Test card"
total_mb = 6144
temperature_c = 60
[[other]]
at_s = 10.0
mb = 1024
[[other]]
at_s = 20.0
mb = 2048
"#;

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("scenario.toml");
        // Write-then-rename, as an editor would, so the probe never sees a half-written file.
        let tmp = dir.path().join("scenario.tmp");
        fs::write(&tmp, text).unwrap();
        fs::rename(&tmp, &path).unwrap();
        path
    }

    fn at(base: Instant, s: f64) -> Instant {
        base + Duration::from_secs_f64(s)
    }

    #[test]
    fn interpolates_holds_before_and_after() {
        let dir = tempfile::tempdir().unwrap();
        let base = Instant::now();
        let mut sim = Simulated::open(&write(&dir, RAMP), base).unwrap();
        let used = |sim: &mut Simulated, s| sim.sample_at(at(base, s), None).unwrap().used_bytes;
        assert_eq!(used(&mut sim, 0.0), 1024 * MB);
        assert_eq!(used(&mut sim, 10.0), 1024 * MB);
        assert_eq!(used(&mut sim, 15.0), 1536 * MB);
        assert_eq!(used(&mut sim, 20.0), 2048 * MB);
        assert_eq!(used(&mut sim, 500.0), 2048 * MB);

        let r = sim.sample_at(base, None).unwrap();
        assert_eq!(r.total_bytes, 6144 * MB);
        assert_eq!((r.llm_bytes, r.temperature_c), (None, Some(60)));
        assert_eq!(
            sim.info(),
            &GpuInfo {
                name: "Test card".into(),
                total_bytes: 6144 * MB,
                simulated: true,
                driver: None
            }
        );
    }

    #[test]
    fn no_points_means_no_other_apps_and_a_step_is_allowed() {
        let s: Scenario = toml::from_str("total_mb = 100").unwrap();
        assert_eq!((s.other_mb(5.0), s.name.as_str()), (0.0, "simulated GPU"));
        let step: Scenario = toml::from_str(
            "total_mb = 100\nother = [{ at_s = 0, mb = 10 }, { at_s = 5, mb = 10 }, { at_s = 5, mb = 90 }]",
        )
        .unwrap();
        step.check().unwrap();
        assert_eq!((step.other_mb(4.9), step.other_mb(5.0)), (10.0, 90.0));
    }

    #[test]
    fn adds_the_llm_estimate_and_clamps_to_total() {
        let dir = tempfile::tempdir().unwrap();
        let base = Instant::now();
        let mut sim = Simulated::open(&write(&dir, RAMP), base).unwrap();
        let llm = |gb: u64| {
            Some(LlmFootprint {
                pid: 1,
                estimated_bytes: gb * 1024 * MB,
            })
        };
        let r = sim.sample_at(base, llm(3)).unwrap();
        assert_eq!((r.used_bytes, r.llm_bytes), (4096 * MB, Some(3072 * MB)));
        let r = sim.sample_at(at(base, 30.0), llm(5)).unwrap();
        assert_eq!((r.used_bytes, r.total_bytes), (6144 * MB, 6144 * MB));
        assert_eq!(r.used_percent(), 100.0);
    }

    #[test]
    fn reloads_live_and_survives_a_broken_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let base = Instant::now();
        let path = write(&dir, RAMP);
        let mut sim = Simulated::open(&path, base).unwrap();
        assert_eq!(
            sim.sample_at(at(base, 15.0), None).unwrap().used_bytes,
            1536 * MB
        );

        // A new card and timeline; the timeline restarts at the sample that noticed the change.
        write(&dir, "name = \"Bigger\"\ntotal_mb = 8192\nother = [{ at_s = 0, mb = 512 }, { at_s = 10, mb = 4608 }]\n");
        let r = sim.sample_at(at(base, 100.0), None).unwrap();
        assert_eq!((r.total_bytes, r.used_bytes), (8192 * MB, 512 * MB));
        assert_eq!(sim.info().name, "Bigger");
        assert_eq!(
            sim.sample_at(at(base, 105.0), None).unwrap().used_bytes,
            2560 * MB
        );

        // Broken: the sample fails, naming the file; the old scenario stays.
        write(&dir, "total_mb = ");
        let err = sim
            .sample_at(at(base, 106.0), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("scenario.toml"), "{err}");
        assert_eq!(sim.info().total_bytes, 8192 * MB);
        assert!(
            sim.sample_at(at(base, 107.0), None).is_err(),
            "retried, still broken"
        );

        // Fixed: read again, timeline from zero.
        write(&dir, RAMP);
        let r = sim.sample_at(at(base, 200.0), None).unwrap();
        assert_eq!((r.total_bytes, r.used_bytes), (6144 * MB, 1024 * MB));
        assert_eq!(
            sim.sample_at(at(base, 215.0), None).unwrap().used_bytes,
            1536 * MB
        );

        // Deleted: an error per sample, not a panic.
        fs::remove_file(&path).unwrap();
        assert!(sim.sample_at(at(base, 216.0), None).is_err());
    }

    #[test]
    fn validation_errors_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("total_mb = 0", "total_mb must be greater than 0"),
            ("total_mb = 10\nvram = 3", "unknown field `vram`"),
            ("name = \"x\"", "missing field `total_mb`"),
            (
                "total_mb = 10\nother = [{ at_s = 5, mb = 1 }, { at_s = 1, mb = 1 }]",
                "#2: at_s 1 comes before 5",
            ),
            (
                "total_mb = 10\nother = [{ at_s = 0, mb = -1 }]",
                "mb must be a number ≥ 0",
            ),
            (
                "total_mb = 10\nother = [{ at_s = nan, mb = 1 }]",
                "at_s must be a number ≥ 0",
            ),
            (
                "total_mb = 10\nother = [{ at_s = 0, mb = 1, gb = 2 }]",
                "unknown field `gb`",
            ),
        ];
        for (text, problem) in cases {
            let path = write(&dir, text);
            let Err(err) = open(&GpuChoice::Simulated(path.clone())) else {
                panic!("{text:?} was accepted");
            };
            let err = err.to_string();
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(problem), "{text:?} gave {err}");
        }
        let missing = dir.path().join("missing.toml");
        let Err(err) = open(&GpuChoice::Simulated(missing)) else {
            panic!("a missing scenario file was accepted");
        };
        let err = err.to_string();
        assert!(err.contains("missing.toml"), "{err}");
    }

    #[test]
    fn the_shipped_scenarios_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/gpu-scenarios");
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let probe = open(&GpuChoice::Simulated(path.clone()));
            assert!(probe.is_ok(), "{}: {:?}", path.display(), probe.err());
        }
    }

    #[test]
    fn auto_without_nvidia_is_a_note_not_a_crash() {
        let started = Instant::now();
        let probe = open(&GpuChoice::Auto);
        if Path::new("/proc/driver/nvidia").exists() {
            let mut probe = probe.unwrap();
            assert!(!probe.info().simulated && probe.info().total_bytes > 0);
            let r = probe.sample(None).unwrap();
            assert!(r.used_bytes <= r.total_bytes && r.total_bytes == probe.info().total_bytes);
        } else {
            let note = probe.err().unwrap();
            assert!(matches!(note, GpuError::Absent(_)), "{note:?}");
            assert!(note.to_string().starts_with("no NVIDIA GPU"), "{note}");
            assert!(started.elapsed() < Duration::from_secs(5));
        }
        let Err(off) = open(&GpuChoice::Off) else {
            panic!("monitoring off still opened a probe");
        };
        assert_eq!(off, GpuError::Off);
        assert_eq!(off.to_string(), "GPU monitoring is off");
    }

    #[test]
    fn sample_every_delivers_until_send_says_stop() {
        let dir = tempfile::tempdir().unwrap();
        let probe = open(&GpuChoice::Simulated(write(&dir, RAMP))).unwrap();
        let llm = Arc::new(Mutex::new(Some(LlmFootprint {
            pid: 7,
            estimated_bytes: MB,
        })));
        // A poisoned footprint lock is still read.
        let poison = Arc::clone(&llm);
        let _ = std::thread::spawn(move || {
            let _guard = poison.lock().unwrap();
            panic!("poisoning the lock on purpose");
        })
        .join();
        assert!(llm.is_poisoned());

        let (tx, rx) = std::sync::mpsc::channel();
        let mut left = 5;
        let handle = sample_every(probe, Duration::from_millis(10), llm, move |r| {
            left -= 1;
            tx.send(r).is_ok() && left > 0
        })
        .unwrap();
        handle.join().unwrap();
        let readings: Vec<_> = rx.iter().collect();
        assert_eq!(readings.len(), 5);
        for r in readings {
            assert_eq!(r.unwrap().llm_bytes, Some(MB));
        }
    }
}
