//! The real Python clients the API tests drive mate with: the `openai` package and
//! `prometheus_client`, pinned and installed by `.ci/run` into a folder it names in
//! `MATE_PY_CLIENTS` (`pip install --target`). Outside CI, a `python3` that imports both does
//! too; without either the tests print `SKIPPED: …` and pass, but under CI they fail.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// The pinned versions, as `.ci/run` installs them.
pub const PINNED: &str = "openai==1.109.1 prometheus_client==0.26.0";

/// The scenario script the tests run (`tests/python/openai_client.py`).
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/openai_client.py")
}

#[derive(Debug, Clone)]
pub struct PyClients {
    /// Where `pip install --target` put the packages; `None`: python3's own site-packages.
    path: Option<PathBuf>,
}

impl PyClients {
    /// The clients, or `None` (the test is skipped) outside CI when they are missing.
    pub fn find(test: &str) -> Option<PyClients> {
        let path = std::env::var_os("MATE_PY_CLIENTS")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        let clients = PyClients { path };
        if clients.import_works() {
            return Some(clients);
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run {test} with the real `openai` and `prometheus_client` packages: \
             `python3 -m pip install --target DIR {PINNED}` and MATE_PY_CLIENTS=DIR"
        );
        eprintln!(
            "SKIPPED: {test}: python3 cannot import openai and prometheus_client (install them \
             with `python3 -m pip install --target DIR {PINNED}` and set MATE_PY_CLIENTS=DIR)"
        );
        None
    }

    fn import_works(&self) -> bool {
        let mut cmd = self.python();
        cmd.args(["-c", "import openai, prometheus_client"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.status().is_ok_and(|s| s.success())
    }

    fn python(&self) -> Command {
        let mut cmd = Command::new("python3");
        if let Some(path) = &self.path {
            cmd.env("PYTHONPATH", path);
        }
        cmd.env("PYTHONUNBUFFERED", "1").stdin(Stdio::null());
        cmd
    }

    /// `python3 openai_client.py ARGS…`.
    pub fn scenario(&self, args: &[&str]) -> Command {
        let mut cmd = self.python();
        cmd.arg(script()).args(args);
        cmd
    }
}
