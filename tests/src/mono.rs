//! The Unity package's C# core under Mono: built with `mcs` from `unity/Runtime/Core` and
//! `unity/Tests~` into one test executable (its unit tests, and a Unity stand-in that serves
//! mate with a recording avatar). `.ci/run` installs Mono (`mono-mcs`, `mono-runtime`); without
//! it the tests print `SKIPPED: …` and pass, but under CI (`CI` set) they fail.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

/// `mono MateUnityTests.exe`, built once per test process; `None` (skipped) outside CI
/// without Mono.
pub fn csharp_tests(test: &str) -> Option<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(build);
    match built {
        Ok(exe) => Some(exe.clone()),
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run {test} under Mono: {why} (apt-get install mono-mcs mono-runtime)"
            );
            eprintln!("SKIPPED: {test}: {why} (apt-get install mono-mcs mono-runtime)");
            None
        }
    }
}

/// `mono EXE ARGS…`.
pub fn mono(exe: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("mono");
    cmd.arg(exe).args(args).stdin(Stdio::null());
    cmd
}

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "cs"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn build() -> Result<PathBuf, String> {
    let unity = Path::new(env!("CARGO_MANIFEST_DIR")).join("../unity");
    let out = std::env::temp_dir().join(format!("mate-unity-tests-{}", std::process::id()));
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let exe = out.join("MateUnityTests.exe");
    // C# 7.2, the newest mcs takes: the sources stay within what Unity's C# 7.3 compiles.
    let result = Command::new("mcs")
        .arg("-langversion:7.2")
        .arg(format!("-out:{}", exe.display()))
        .args(sources(&unity.join("Runtime/Core")))
        .args(sources(&unity.join("Tests~")))
        .output()
        .map_err(|e| format!("cannot run mcs: {e}"))?;
    if !result.status.success() {
        return Err(format!(
            "mcs failed: {}{}",
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        ));
    }
    Ok(exe)
}
