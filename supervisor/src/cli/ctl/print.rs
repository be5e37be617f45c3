//! How `mate ctl` shows things to a person: the status table, event times in UTC, and model
//! text made safe for a terminal. `--json` output does not pass through here.

use mate::supervisor;
use mate_protocol::StatusReport;

/// `2026-11-22 10:04:05.123Z` from milliseconds since the Unix epoch.
pub fn format_utc(at_ms: u64) -> String {
    let secs = at_ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        at_ms % 1000
    )
}

pub fn print_status(report: &StatusReport) {
    println!(
        "supervisor pid {}  up {}s  session: {} turns, {} tokens{}",
        report.supervisor_pid,
        report.uptime_ms / 1000,
        report.turns,
        report.tokens,
        match report.queued {
            0 => String::new(),
            n => format!("  queue: {n} waiting"),
        }
    );
    let gpu = &report.gpu;
    match (&gpu.name, &gpu.reading) {
        (Some(name), Some(r)) => println!(
            "gpu {name}{}: {:.1}% of {} used{}  (alert {:.0}%, critical {:.0}%)",
            if gpu.simulated { " (simulated)" } else { "" },
            r.used_percent(),
            supervisor::gib(r.total_bytes),
            r.llm_bytes
                .map(|b| format!(", {} by the LLM", supervisor::gib(b)))
                .unwrap_or_default(),
            gpu.alert_percent,
            gpu.critical_percent
        ),
        _ => println!("gpu {}", gpu.note.as_deref().unwrap_or("none")),
    }
    let ladder: Vec<String> = report
        .ladder
        .iter()
        .map(|r| {
            let mark = if r.profile.name == report.profile {
                "*"
            } else {
                ""
            };
            format!(
                "{mark}{} {}",
                r.profile.name,
                supervisor::gib(r.estimated_vram_bytes)
            )
        })
        .collect();
    println!(
        "profile {}  ladder: {}{}{}",
        report.profile,
        ladder.join(" > "),
        if gpu.auto_downgrade {
            ""
        } else {
            "  (no auto downgrade)"
        },
        if gpu.auto_upgrade {
            ""
        } else {
            "  (no auto upgrade)"
        }
    );
    if let Some(d) = &report.last_decision {
        println!("last decision {}: {}", format_utc(d.at_ms), d.message);
    }
    let bridge = report.workers.iter().find_map(|w| w.vitals.bridge.as_ref());
    if let Some(b) = bridge {
        println!(
            "unity {}  expression {}  queue {}  {:.1} cmd/s  acks pending {}  reconnects {}{}",
            b.describe(),
            b.expression.as_deref().unwrap_or("-"),
            b.queue_depth,
            b.commands_per_s,
            b.acks_pending,
            b.connects.saturating_sub(1),
            b.last_error
                .as_ref()
                .map(|e| format!("  last error: {e}"))
                .unwrap_or_default()
        );
    }
    let api = report.workers.iter().find_map(|w| w.vitals.api.as_ref());
    if let Some(a) = api.filter(|a| !a.address.is_empty()) {
        println!(
            "api http://{}/v1  {} connections  {} requests ({} errors)  {} in flight",
            a.address, a.connections, a.requests, a.errors, a.in_flight
        );
    }
    println!(
        "{:<8} {:<9} {:>8} {:>8} {:>8}  {:<11} LAST EXIT / ERROR",
        "WORKER", "STATE", "PID", "UPTIME", "RESTARTS", "PROFILE"
    );
    for w in &report.workers {
        let pid = w.pid.map_or("-".into(), |p| p.to_string());
        let last = match (&w.last_exit, &w.last_error) {
            (_, Some(err)) => err.clone(),
            (Some(exit), None) => exit.describe(),
            (None, None) => "-".into(),
        };
        println!(
            "{:<8} {:<9} {:>8} {:>7}s {:>8}  {:<11} {last}",
            w.kind.as_str(),
            w.state.as_str(),
            pid,
            w.uptime_ms / 1000,
            w.restarts,
            w.profile.as_deref().unwrap_or("-"),
        );
    }
}

/// Text from the model made safe for a terminal: control characters other than newline and
/// tab (a `\r` that rewrites the line, an escape sequence that moves the cursor or sets the
/// title) are shown in caret notation, as `cat -v` does (`^M`, `^[`); C1 controls become
/// `�`. Printable text, multibyte characters included, passes as it is.
pub fn visible_controls(text: &str) -> std::borrow::Cow<'_, str> {
    let harmless = |c: char| !c.is_control() || c == '\n' || c == '\t';
    if text.chars().all(harmless) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if harmless(c) => out.push(c),
            '\u{7f}' => out.push_str("^?"),
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from(b'@' + c as u8));
            }
            _ => out.push('\u{fffd}'),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_times_print_as_utc() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00.000Z");
        assert_eq!(format_utc(1_700_000_000_123), "2023-11-14 22:13:20.123Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00.000Z");
    }

    #[test]
    fn control_characters_are_made_visible_and_text_is_kept() {
        assert_eq!(visible_controls("héllo\n\tworld 😊"), "héllo\n\tworld 😊");
        assert_eq!(
            visible_controls("done\rEVIL \u{1b}]0;title\u{7}x\u{7f}\u{9b}2J"),
            "done^MEVIL ^[]0;title^Gx^?\u{fffd}2J"
        );
    }
}
