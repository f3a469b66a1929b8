//! Figures as `ssictl` and its dashboard print them: sizes, CPU time, ages.

/// A size in bytes, in the largest unit that keeps it at least 1: `512B`,
/// `1.5K`, `64.0M`, and no decimal from 100 on (`300M`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else if v >= 100.0 {
        format!("{v:.0}{}", UNITS[u])
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

/// CPU time as `ps` prints it: minutes, seconds and hundredths (`1:01.50`).
pub fn cpu_time(ns: u64) -> String {
    let cs = ns / 10_000_000;
    format!("{}:{:02}.{:02}", cs / 6000, (cs / 100) % 60, cs % 100)
}

/// An age in its two largest units: `45s`, `1m02s`, `1h02m`, `3d04h`.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s / 60) % 60),
        _ => format!("{}d{:02}h", s / 86400, (s / 3600) % 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_in_ps() {
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(1536), "1.5K");
        assert_eq!(bytes(300 << 20), "300M");
        assert_eq!(cpu_time(61_500_000_000), "1:01.50");
        assert_eq!(age(45_000), "45s");
        assert_eq!(age(3_725_000), "1h02m");
        assert_eq!(age(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
    }
}
