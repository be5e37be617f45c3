//! The console end to end, in a real terminal: `mate tui` inside tmux, attached to a real
//! supervisor on the tiny model, driven by keys (`send-keys`) and read from the screen
//! (`capture-pane`).
#![cfg(target_os = "linux")]

use std::{path::Path, process::Command, time::Duration};

use mate_tests::Mate as _;
use mate_tests::{mate_bin, wait_until, StateDir};

const LIMIT: Duration = Duration::from_secs(30);

/// A private tmux server running one pane.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Runs `script` (sh) in a `cols`×`rows` pane.
    fn start(name: &str, cols: u16, rows: u16, script: &str) -> Tmux {
        let tmux = Tmux {
            socket: format!("mate-test-{}-{name}", std::process::id()),
        };
        let status = Command::new("tmux")
            .args(["-L", &tmux.socket, "-f", "/dev/null", "new-session", "-d"])
            .args(["-x", &cols.to_string(), "-y", &rows.to_string()])
            .args(["sh", "-c", script])
            .status()
            .expect("running tmux (install it: apt-get install tmux)");
        assert!(status.success(), "tmux new-session failed");
        tmux
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Keys in tmux's names (`Escape`, `Enter`, `C-c`, `q`).
    fn keys(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys"])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }

    /// Text typed as is.
    fn type_text(&self, text: &str) {
        let status = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-l", text])
            .status()
            .expect("tmux send-keys -l");
        assert!(status.success());
    }

    /// The pid of the program the pane's shell runs (`mate tui`).
    fn child_pid(&self) -> Option<u32> {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "list-panes", "-F", "#{pane_pid}"])
            .output()
            .ok()?;
        let shell = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let children =
            std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    fn wait_for(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let mut screen = String::new();
        let deadline = std::time::Instant::now() + LIMIT;
        while std::time::Instant::now() < deadline {
            screen = self.screen();
            if cond(&screen) {
                return screen;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}; the screen:\n{screen}");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// `mate tui` in a pane, with the terminal's settings saved before and after it.
fn console(state: &StateDir, name: &str) -> Tmux {
    let quoted = |p: &Path| format!("'{}'", p.display());
    let dir = quoted(state.path());
    let script = format!(
        "stty -a > {before}; MATE_CONFIG={config} {mate} --state-dir {dir} tui; \
         echo EXIT=$?; stty -a > {after}; sleep 600",
        before = quoted(&state.path().join("stty.before")),
        after = quoted(&state.path().join("stty.after")),
        config = quoted(&state.path().join("config.toml")),
        mate = quoted(mate_bin()),
    );
    Tmux::start(name, 100, 32, &script)
}

#[test]
fn attach_watch_chat_restart_through_the_dialog_and_detach_with_the_terminal_restored() {
    let state = StateDir::new();
    state.write_config("[chat]\nmax_tokens = 8\n");
    let _sup = state.start_supervisor();
    let tmux = console(&state, "main");

    tmux.wait_for("both workers running", |s| {
        s.contains("llm") && s.contains("bridge") && s.matches("running").count() >= 2
    });

    tmux.keys(&["?"]);
    tmux.wait_for("the help overlay", |s| s.contains("Shift-Tab"));
    tmux.keys(&["Escape"]);
    tmux.wait_for("the help closed", |s| !s.contains("Shift-Tab"));

    // Letters go to the chat input, `q` included.
    tmux.keys(&["i"]);
    tmux.type_text("quite a question");
    tmux.keys(&["Enter"]);
    wait_until(LIMIT, "the turn in the transcript", || {
        state.transcript().len() == 2
    });
    tmux.wait_for("the question and the reply on screen", |s| {
        s.contains("quite a question") && s.lines().any(|l| l.starts_with("│ mate "))
    });
    tmux.keys(&["Escape"]);

    // The first row (llm) is selected; `r` asks, `y` confirms.
    tmux.keys(&["r"]);
    tmux.wait_for("the confirm dialog", |s| {
        s.contains("Restart the llm worker?")
    });
    tmux.keys(&["n"]);
    tmux.wait_for("the dialog gone", |s| {
        !s.contains("Restart the llm worker?")
    });
    tmux.keys(&["r"]);
    tmux.wait_for("the confirm dialog", |s| {
        s.contains("Restart the llm worker?")
    });
    tmux.keys(&["y"]);
    wait_until(LIMIT, "the llm restarted once", || {
        state
            .worker("llm")
            .is_some_and(|w| w["restarts"] == 1 && w["state"] == "Running")
    });
    // … and the table says so: STATE, PID, UPTIME, then RESTARTS.
    tmux.wait_for("restarts 1 in the llm row", |s| {
        s.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let at = cols.iter().position(|c| *c == "llm");
            at.is_some_and(|i| cols.get(i + 1) == Some(&"running") && cols.get(i + 4) == Some(&"1"))
        })
    });

    tmux.keys(&["q"]);
    tmux.wait_for("the console to exit", |s| s.contains("EXIT=0"));
    let read = |name: &str| std::fs::read_to_string(state.path().join(name)).unwrap_or_default();
    wait_until(LIMIT, "stty -a after", || !read("stty.after").is_empty());
    assert_eq!(
        read("stty.before"),
        read("stty.after"),
        "the terminal's settings are restored"
    );
    // Detaching left the supervisor and its session alone.
    assert!(state.status().is_some(), "the supervisor still runs");
}

#[test]
fn without_a_supervisor_the_console_says_so_and_exits_3() {
    let state = StateDir::new();
    let out = state.run(&["tui"], LIMIT);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no mate supervisor is running"), "{stderr}");
}

#[test]
fn a_supervisor_that_goes_away_shows_disconnected_and_is_reattached() {
    let state = StateDir::new();
    let mut sup = state.start_supervisor();
    let tmux = console(&state, "lost");
    tmux.wait_for("attached", |s| s.contains("running"));
    let _ = sup.child.kill();
    let _ = sup.child.wait();
    tmux.wait_for("the disconnected banner", |s| s.contains("disconnected"));
    let _sup = state.start_supervisor();
    tmux.wait_for("attached again", |s| {
        !s.contains("disconnected") && s.contains("running")
    });
    tmux.keys(&["q"]);
    tmux.wait_for("the console to exit", |s| s.contains("EXIT=0"));
}

#[test]
fn sigterm_closes_the_console_and_restores_the_terminal() {
    let state = StateDir::new();
    let _sup = state.start_supervisor();
    let tmux = console(&state, "term");
    tmux.wait_for("attached", |s| s.contains("running"));
    let pid = tmux.child_pid().expect("the console's pid");
    mate_tests::signal(pid, "TERM");
    tmux.wait_for("the console to exit", |s| s.contains("EXIT=0"));
    let read = |name: &str| std::fs::read_to_string(state.path().join(name)).unwrap_or_default();
    wait_until(LIMIT, "stty -a after", || !read("stty.after").is_empty());
    assert_eq!(read("stty.before"), read("stty.after"));
    assert!(state.status().is_some(), "the supervisor still runs");
}
