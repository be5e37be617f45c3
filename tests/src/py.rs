//! The real Python clients the API tests drive mate with: the `openai` package and
//! `prometheus_client`, pinned. They live in `target/py-clients` (or the folder
//! `MATE_PY_CLIENTS` names), where the first test that needs them installs them with
//! `pip install --target` (as `.ci/run` does before the tests). When they cannot be had, the
//! tests print `SKIPPED: …` and pass, but under CI (`CI` set) they fail.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

/// The pinned versions, as `.ci/run` installs them.
pub const PINNED: &str = "openai==1.109.1 prometheus_client==0.26.0 python-osc==1.10.2";

/// `target/py-clients` of this workspace.
fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py-clients")
}

#[derive(Debug, Clone)]
pub struct PyClients {
    /// Where `pip install --target` put the packages (python3's own site-packages count too).
    path: PathBuf,
}

impl PyClients {
    /// The clients, installed if need be; `None` (the test is skipped) outside CI when they
    /// cannot be had.
    pub fn find(test: &str) -> Option<PyClients> {
        static FOUND: OnceLock<Option<PyClients>> = OnceLock::new();
        let found = FOUND.get_or_init(|| {
            let path = std::env::var_os("MATE_PY_CLIENTS")
                .filter(|p| !p.is_empty())
                .map_or_else(default_dir, PathBuf::from);
            let clients = PyClients { path };
            (clients.import_works() || clients.install()).then_some(clients)
        });
        if let Some(clients) = found {
            return Some(clients.clone());
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run {test} with the real `openai`, `prometheus_client` and `python-osc` \
             packages: \
             `python3 -m pip install --target DIR {PINNED}` and MATE_PY_CLIENTS=DIR"
        );
        eprintln!(
            "SKIPPED: {test}: python3 cannot import openai, prometheus_client and pythonosc \
             (install them \
             with `python3 -m pip install --target DIR {PINNED}` and set MATE_PY_CLIENTS=DIR)"
        );
        None
    }

    /// `pip install --target` of the pinned versions.
    fn install(&self) -> bool {
        let path = &self.path;
        eprintln!("installing {PINNED} into {}", path.display());
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg("--target")
            .arg(path)
            .args(PINNED.split(' '))
            .stdin(Stdio::null())
            .status();
        status.is_ok_and(|s| s.success()) && self.import_works()
    }

    fn import_works(&self) -> bool {
        let mut cmd = self.python();
        cmd.args(["-c", "import openai, prometheus_client, pythonosc"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.status().is_ok_and(|s| s.success())
    }

    fn python(&self) -> Command {
        let mut cmd = Command::new("python3");
        cmd.env("PYTHONPATH", &self.path)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null());
        cmd
    }

    /// `python3 openai_client.py ARGS…`.
    pub fn scenario(&self, args: &[&str]) -> Command {
        self.script("openai_client.py", args)
    }

    /// `python3 tests/python/SCRIPT ARGS…`.
    pub fn script(&self, script: &str, args: &[&str]) -> Command {
        let mut cmd = self.python();
        cmd.arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("python")
                .join(script),
        )
        .args(args);
        cmd
    }
}
