//! Idle CPU of the console: a real `mate tui` in a 200×60 tmux pane, attached to a real
//! supervisor on the tiny model, measured over 10 s from /proc, next to the supervisor's own
//! idle CPU in the same window. JSON on stdout. Linux, with tmux installed.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use mate_tests::{mate_bin, StateDir};

/// utime + stime of `pid`, in clock ticks (100 per second on Linux).
fn ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn main() {
    let window = Duration::from_secs(
        std::env::args()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(10),
    );
    // `mate` sits next to this binary in target/<profile>/.
    if std::env::var_os("MATE_BIN").is_none() {
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Into::into))
        {
            let dir: std::path::PathBuf = dir;
            std::env::set_var("MATE_BIN", dir.join("mate"));
        }
    }
    let state = StateDir::new();
    let sup = state.start_supervisor();
    let socket = format!("mate-tui-idle-{}", std::process::id());
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .args(["-L", &socket])
            .args(args)
            .output()
            .expect("running tmux")
    };
    let tui = format!(
        "exec env MATE_CONFIG=/dev/null '{}' --state-dir '{}' tui",
        mate_bin().display(),
        state.path().display()
    );
    tmux(&[
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-x",
        "200",
        "-y",
        "60",
        "sh",
        "-c",
        &tui,
    ]);
    // Attached, first frames drawn, start-up over.
    std::thread::sleep(Duration::from_secs(3));
    let pane = tmux(&["list-panes", "-F", "#{pane_pid}"]);
    let tui_pid: u32 = String::from_utf8_lossy(&pane.stdout)
        .trim()
        .parse()
        .expect("the console's pid");
    let sup_pid = sup.pid();
    let start = Instant::now();
    let (tui0, sup0) = (ticks(tui_pid), ticks(sup_pid));
    std::thread::sleep(window);
    let (tui1, sup1) = (ticks(tui_pid), ticks(sup_pid));
    let secs = start.elapsed().as_secs_f64();
    let percent = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some((b - a) as f64 / 100.0 / secs * 100.0),
        _ => None,
    };
    let report = serde_json::json!({
        "window_s": secs,
        "terminal": "200x60 tmux pane",
        "tui_cpu_percent_of_one_core": percent(tui0, tui1),
        "baseline_supervisor_cpu_percent_of_one_core": percent(sup0, sup1),
        "note": "/proc ticks are 10 ms: below 0.1% over 10 s reads as 0",
    });
    tmux(&["kill-server"]);
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
}
