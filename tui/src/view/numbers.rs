//! Figures as the dashboard shows them: byte sizes, durations, and floats that may not be
//! finite.

pub(super) fn finite(v: f32) -> f32 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

/// "612 MiB", "1.2 GiB".
pub(super) fn bytes(b: u64) -> String {
    const MIB: u64 = 1 << 20;
    if b < 1 << 30 {
        format!("{} MiB", b / MIB)
    } else {
        gib(b)
    }
}

pub(super) fn gib(b: u64) -> String {
    format!("{} GiB", tenths(b))
}

/// GiB with one decimal, without a float for the integer part.
pub(super) fn tenths(b: u64) -> String {
    let t = (u128::from(b) * 10 + (1 << 29)) / (1 << 30);
    format!("{}.{}", t / 10, t % 10)
}

/// "45s", "3m05s", "2h14m", "3d04h".
pub(super) fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d{:02}h", s / 86_400, s / 3600 % 24),
    }
}
