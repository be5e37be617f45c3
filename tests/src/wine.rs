//! The Windows build (`mate.exe`) under Wine, for `tests/tests/windows_wine.rs`.
//!
//! A [`WinePrefix`] is a fresh, throwaway Wine prefix (a temp dir) with `mate.exe` copied into
//! it, a state dir at `C:\mate\state`, and the stand-in DLLs of `tests/windows/standins` built
//! with mingw into its `system32`. It runs `mate.exe` commands with a deadline, the way
//! [`crate::StateDir`] runs `mate` on Linux, and ends every process of the prefix
//! (`wineserver -k`) when dropped.
//!
//! Wine-only workarounds stay here and in the stand-ins, never in mate's own code:
//! - Wine 8 has no `bcryptprimitives.dll`, whose `ProcessPrng` Rust's std needs (real Windows and
//!   Wine 9 have it);
//! - Wine 8's `pdh.dll` exports `PdhEnumObjectsA` only as a stub that kills the caller (the
//!   sysinfo crate calls it); the stand-in implements it and forwards the rest to
//!   `pdh_wine.dll`, a copy of Wine's own `pdh.dll`.
//!
//! The DLL overrides (`pdh=n;bcryptprimitives=n`, and `mscoree=;mshtml=` so that wineboot does
//! not try to install Mono and Gecko) travel in the environment of every command, see
//! [`WinePrefix::env`].
//!
//! Processes: every Windows process of the prefix is a Linux process too. The one that `wine`
//! starts keeps the Linux pid of the `wine` child (the loader execs into it), so
//! `Child::kill` is a SIGKILL of that Windows process itself, not of a wrapper. Pids that mate
//! prints (`ctl status --json`) are *Windows* pids: [`WinePrefix::taskkill`] ends one the Windows
//! way (`taskkill /F`, i.e. `TerminateProcess`). Which processes are left is read from the Linux
//! process list ([`WinePrefix::processes`]: processes whose environment names this prefix, with
//! their command line as Wine rewrites it, the Windows command line); it needs no Wine process
//! of its own, so it cannot be slowed or confused by the prefix it inspects.
//! [`WinePrefix::tasklist`] gives Wine's own view for messages.

#![cfg(target_os = "linux")]

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::{Mate, Supervisor};

/// `wine`, or `$WINE`.
fn wine_program() -> OsString {
    std::env::var_os("WINE").unwrap_or_else(|| "wine".into())
}

/// `wineserver`, or `$WINESERVER`.
fn wineserver_program() -> OsString {
    std::env::var_os("WINESERVER").unwrap_or_else(|| "wineserver".into())
}

/// The mingw C compiler: `$MINGW_CC`, else the first of the usual names that runs.
fn mingw_cc() -> OsString {
    if let Some(cc) = std::env::var_os("MINGW_CC") {
        return cc;
    }
    ["x86_64-w64-mingw32-gcc-posix", "x86_64-w64-mingw32-gcc"]
        .into_iter()
        .find(|cc| {
            Command::new(cc)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .expect(
            "no mingw-w64 C compiler (x86_64-w64-mingw32-gcc[-posix]); install \
             gcc-mingw-w64-x86-64-posix, or name one in MINGW_CC",
        )
        .into()
}

/// `tests/windows/standins`: the stand-in DLLs' sources.
fn standins_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("windows/standins")
}

/// Collects a child's output, killing it and failing the test after `limit`, like
/// [`crate::wait_output`], except that once the child has exited it waits at most 2 s more for
/// the end of its output: a Wine program's pipes may be held open by processes it started (a
/// daemonized `wineserver`, the prefix's services), which live on.
fn wine_output(mut child: Child, limit: Duration) -> Output {
    fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
        let (tx, rx) = mpsc::channel();
        if let Some(mut pipe) = pipe {
            std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                loop {
                    match pipe.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if tx.send(chunk[..n].to_vec()).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
        rx
    }
    fn collect(rx: &mpsc::Receiver<Vec<u8>>, until: Instant) -> Vec<u8> {
        let mut bytes = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(_) => return bytes,
            }
        }
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = collect(&stderr, Instant::now() + Duration::from_secs(2));
            panic!(
                "command did not finish within {limit:?}; stderr: {}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let until = Instant::now() + Duration::from_secs(2);
    Output {
        status,
        stdout: collect(&stdout, until),
        stderr: collect(&stderr, until),
    }
}

/// A Linux process that belongs to a Wine prefix.
#[derive(Debug, Clone)]
pub struct WineProcess {
    /// The Linux pid (not the Windows one).
    pub pid: u32,
    /// The command line as `/proc` shows it (Wine puts the Windows command line there).
    pub cmdline: String,
}

/// A fresh Wine prefix with `mate.exe` in it; every process in it is killed on drop.
#[derive(Debug)]
pub struct WinePrefix {
    dir: tempfile::TempDir,
    prefix: PathBuf,
    exe: PathBuf,
    /// How long `wineboot` and the start of the prefix's services took.
    pub boot_time: Duration,
    /// How long building and installing the stand-in DLLs took.
    pub standins_time: Duration,
}

impl WinePrefix {
    /// Creates a prefix (`wineboot -i`), copies `exe` into it (so a rebuild of `exe` does not
    /// disturb a running test), and builds the stand-in DLLs into its `system32`.
    pub fn create(exe: &Path) -> WinePrefix {
        assert!(
            exe.is_file(),
            "no Windows executable at {} (MATE_WINDOWS_EXE)",
            exe.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("mate-wine")
            .tempdir_in(std::env::temp_dir())
            .expect("temp dir for the Wine prefix");
        let prefix = dir.path().join("pfx");
        let boot_started = Instant::now();
        let boot = Command::new(wine_program())
            .args(["wineboot", "-i"])
            .env("WINEPREFIX", &prefix)
            .env("WINEDEBUG", "-all")
            .env("WINEDLLOVERRIDES", "mscoree=;mshtml=")
            .env_remove("DISPLAY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running `wine wineboot -i` (is Wine installed? Debian: wine, wine64)");
        let out = wine_output(boot, Duration::from_secs(180));
        assert!(
            out.status.success() && prefix.join("drive_c/windows/system32").is_dir(),
            "wineboot -i failed ({:?}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let mut wine = WinePrefix {
            dir,
            prefix,
            exe: PathBuf::new(),
            boot_time: Duration::ZERO,
            standins_time: Duration::ZERO,
        };
        // Kept alive between commands (until drop), so that each `mate.exe` command does not
        // start a wineserver and the prefix's services again. Debian's `wineserver` wrapper
        // starts the server with `-p0` (exit as soon as no Wine process is left): the one that
        // wineboot started is waited out (`-w`), then a persistent one (`-p`, which comes after
        // the wrapper's `-p0` and wins) takes its place. While a server runs, `-p` fails.
        wine.wineserver(&["-w"]);
        wine.wineserver(&["-p"]);

        let started = Instant::now();
        wine.install_standins();
        wine.standins_time = started.elapsed();

        let bin = wine.drive_c().join("mate");
        std::fs::create_dir_all(bin.join("state")).expect("create C:\\mate\\state");
        wine.exe = bin.join("mate.exe");
        std::fs::copy(exe, &wine.exe).expect("copy mate.exe into the prefix");
        std::fs::write(wine.config_file(), "").expect("write an empty config");
        std::fs::write(bin.join("empty.toml"), "").expect("write an empty config");

        // The first Wine program of a session starts the prefix's services (services.exe,
        // winedevice.exe, …), which keep its Unix stderr for as long as the server lives: a
        // program with nothing to hold open starts them here.
        let warm = wine
            .wine("cmd", &["/c", "exit"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn wine cmd /c exit");
        let out = wine_output(warm, Duration::from_secs(120));
        assert!(
            out.status.success(),
            "wine cmd /c exit failed: {}",
            out.status
        );
        wine.boot_time = boot_started.elapsed() - wine.standins_time;
        wine
    }

    /// Runs `wineserver <args…>` for this prefix, failing the test when it fails.
    fn wineserver(&self, args: &[&str]) {
        let child = Command::new(wineserver_program())
            .args(args)
            .envs(self.env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running wineserver");
        // (`-p` daemonizes with our stderr: wine_output does not wait for its end.)
        let out = wine_output(child, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "wineserver {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Builds `tests/windows/standins/*.c` into `system32`, keeping Wine's own `pdh.dll` as
    /// `pdh_wine.dll` for the stand-in's forwarders.
    fn install_standins(&self) {
        let system32 = self.drive_c().join("windows/system32");
        std::fs::copy(system32.join("pdh.dll"), system32.join("pdh_wine.dll"))
            .expect("copy Wine's pdh.dll to pdh_wine.dll");
        let cc = mingw_cc();
        let src = standins_dir();
        for (name, libs) in [("bcryptprimitives", &["-ladvapi32"][..]), ("pdh", &[][..])] {
            let out = Command::new(&cc)
                .args(["-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-s"])
                .arg("-o")
                .arg(system32.join(format!("{name}.dll")))
                .arg(src.join(format!("{name}.c")))
                .arg(src.join(format!("{name}.def")))
                .args(libs)
                .output()
                .expect("running the mingw C compiler");
            assert!(
                out.status.success(),
                "building the stand-in {name}.dll failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// The prefix's environment for every Wine command: `WINEPREFIX`, quiet logs, and the DLL
    /// overrides that put the stand-ins in place.
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        vec![
            ("WINEPREFIX", self.prefix.clone().into_os_string()),
            ("WINEDEBUG", "-all".into()),
            (
                "WINEDLLOVERRIDES",
                "mscoree=;mshtml=;pdh=n;bcryptprimitives=n".into(),
            ),
        ]
    }

    /// The prefix folder (`WINEPREFIX`).
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// `<prefix>/drive_c`, which Windows programs see as `C:\`.
    pub fn drive_c(&self) -> PathBuf {
        self.prefix.join("drive_c")
    }

    /// The Windows path of a host path: `C:\…` inside `drive_c`, else `Z:\…` (Wine maps Z: to
    /// `/`), as `winepath -w` prints it but without starting a Wine process.
    pub fn windows_path(&self, host: &Path) -> String {
        let host = if host.is_absolute() {
            host.to_path_buf()
        } else {
            std::env::current_dir().expect("current dir").join(host)
        };
        let (drive, rest) = match host.strip_prefix(self.drive_c()) {
            Ok(rest) => ("C:", rest.to_path_buf()),
            Err(_) => (
                "Z:",
                host.strip_prefix("/").expect("absolute path").to_path_buf(),
            ),
        };
        let mut path = drive.to_string();
        for part in rest.components() {
            path.push('\\');
            path.push_str(part.as_os_str().to_str().expect("utf-8 path"));
        }
        if path.len() == 2 {
            path.push('\\');
        }
        path
    }

    /// The host path of the state dir (`C:\mate\state`).
    pub fn state_dir(&self) -> PathBuf {
        self.drive_c().join("mate/state")
    }

    /// The host path of the config file (`C:\mate\config.toml`).
    pub fn config_file(&self) -> PathBuf {
        self.drive_c().join("mate/config.toml")
    }

    /// Replaces the config file.
    pub fn write_config(&self, text: &str) {
        std::fs::write(self.config_file(), text).expect("write config");
    }

    /// `wine <program> <args…>` in this prefix.
    pub fn wine(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(wine_program());
        cmd.arg(program)
            .args(args)
            .envs(self.env())
            .env_remove("DISPLAY")
            .stdin(Stdio::null());
        cmd
    }

    /// `mate.exe --state-dir C:\mate\state <args…>` with the prefix's empty config and an empty
    /// models dir; host `MATE_*` settings (which Wine would pass on) are removed.
    pub fn mate(&self, args: &[&str]) -> Command {
        let exe = self.windows_path(&self.exe);
        let state = self.windows_path(&self.state_dir());
        let mut cmd = self.wine(&exe, &["--state-dir", &state]);
        cmd.args(args)
            .env("MATE_CONFIG", self.windows_path(&self.config_file()))
            .env(
                "MATE_MODELS_DIR",
                self.windows_path(&self.drive_c().join("mate/models")),
            )
            .env("MATE_API_ADDRESS", crate::TEST_API_ADDRESS)
            .env_remove("MATE_API_KEY")
            .env_remove("MATE_STATE_DIR")
            .env_remove("MATE_MODEL")
            .env_remove("MATE_PROFILE");
        cmd
    }

    /// Runs `mate.exe …` to completion, failing the test after `limit`.
    pub fn run(&self, args: &[&str], limit: Duration) -> Output {
        wine_output(crate::spawn_piped(self.mate(args)), limit)
    }

    /// Starts `mate.exe --model MODEL up` (a host path); does not wait. Its stderr goes to
    /// `<dir>/up.log` ([`WinePrefix::up_log`]).
    pub fn up(&self, model: &Path) -> Supervisor {
        let model = self.windows_path(model);
        let log = std::fs::File::create(self.up_log_path()).expect("create up.log");
        let child = self
            .mate(&["--model", &model, "up"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn wine mate.exe up");
        Supervisor { child }
    }

    fn up_log_path(&self) -> PathBuf {
        self.dir.path().join("up.log")
    }

    /// What the last `up` wrote to stderr.
    pub fn up_log(&self) -> String {
        std::fs::read_to_string(self.up_log_path()).unwrap_or_default()
    }

    /// The last `lines` lines of the supervisor's log (`C:\mate\state\logs\supervisor.log`),
    /// for messages.
    pub fn supervisor_log_tail(&self, lines: usize) -> String {
        crate::log_tail(&self.state_dir().join("logs/supervisor.log"), lines)
    }

    /// `taskkill /F /PID <pid>` (TerminateProcess) of a Windows pid.
    pub fn taskkill(&self, windows_pid: u32) -> Output {
        let child = self
            .wine("taskkill", &["/F", "/PID", &windows_pid.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wine taskkill");
        wine_output(child, Duration::from_secs(30))
    }

    /// Wine's `tasklist` output (for messages).
    pub fn tasklist(&self) -> String {
        let child = self
            .wine("tasklist", &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wine tasklist");
        let out = wine_output(child, Duration::from_secs(30));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The live Linux processes of this prefix (`WINEPREFIX` in their environment), wineserver
    /// included; zombies are left out.
    pub fn processes(&self) -> Vec<WineProcess> {
        let mut wanted = b"WINEPREFIX=".to_vec();
        wanted.extend_from_slice(self.prefix.as_os_str().as_encoded_bytes());
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == wanted.as_slice()))
            })
            .filter(|&pid| crate::process_alive(pid))
            .filter_map(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline)
                    .split('\0')
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                Some(WineProcess { pid, cmdline })
            })
            .collect()
    }

    /// The live processes of this prefix running `mate.exe` with `what` in their command line
    /// (`""`: all of them; `"worker"`: workers; `" up"`: supervisors).
    pub fn mate_processes(&self, what: &str) -> Vec<WineProcess> {
        self.processes()
            .into_iter()
            .filter(|p| {
                let lower = p.cmdline.to_ascii_lowercase();
                lower.contains("mate.exe") && lower.contains(what)
            })
            .collect()
    }

    /// Starts `mate.exe unity-sim --json --listen <address>` in this prefix.
    pub fn unity_sim(&self, address: &str) -> crate::UnitySim {
        let exe = self.windows_path(&self.exe);
        let child = self
            .wine(&exe, &["unity-sim", "--json", "--listen", address])
            .env(
                "MATE_CONFIG",
                self.windows_path(&self.drive_c().join("mate/empty.toml")),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn wine mate.exe unity-sim");
        crate::UnitySim::collect(child, Duration::from_secs(60))
    }
}

impl Mate for WinePrefix {
    fn run(&self, args: &[&str], limit: Duration) -> Output {
        WinePrefix::run(self, args, limit)
    }

    fn state_dir(&self) -> PathBuf {
        WinePrefix::state_dir(self)
    }

    fn explain(&self) -> String {
        format!("up's stderr:\n{}", self.up_log())
    }
}

impl Drop for WinePrefix {
    fn drop(&mut self) {
        // Ends every process of the prefix, then the server; the temp dir goes after.
        let _ = Command::new(wineserver_program())
            .arg("-k")
            .envs(self.env())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = Command::new(wineserver_program())
            .arg("-w")
            .envs(self.env())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
