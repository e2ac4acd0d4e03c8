//! Human-readable numbers for the pages (the same text on the server and in the browser).

/// `1.5 GB`, `12.3 MB`, `512 kB`, `17 B` (decimal units, as download tools show them).
pub fn bytes(n: u64) -> String {
    const UNITS: [(&str, f64); 3] = [("GB", 1e9), ("MB", 1e6), ("kB", 1e3)];
    for (unit, size) in UNITS {
        if n as f64 >= size {
            return format!("{:.1} {unit}", n as f64 / size);
        }
    }
    format!("{n} B")
}

/// `850 ms`, `4.2 s`, `3 min 05 s`.
pub fn duration_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        let s = ms / 1000;
        format!("{} min {:02} s", s / 60, s % 60)
    }
}

/// Seconds as [`duration_ms`] does.
pub fn duration_s(s: f64) -> String {
    duration_ms((s.max(0.0) * 1000.0).round() as u64)
}

/// `42 %`.
pub fn percent(fraction: f32) -> String {
    format!("{:.0} %", (fraction.clamp(0.0, 1.0) * 100.0).floor())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(bytes(17), "17 B");
        assert_eq!(bytes(12_345_678), "12.3 MB");
        assert_eq!(bytes(1_500_000_000), "1.5 GB");
        assert_eq!(duration_ms(850), "850 ms");
        assert_eq!(duration_ms(4_240), "4.2 s");
        assert_eq!(duration_ms(185_000), "3 min 05 s");
        assert_eq!(duration_s(-1.0), "0 ms");
        assert_eq!(percent(0.999), "99 %");
        assert_eq!(percent(1.0), "100 %");
    }
}
