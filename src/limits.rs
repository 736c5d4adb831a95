//! Resource limits checked **before** allocating, so absurd sizes from flags or files give an
//! error that names the sizes instead of a capacity-overflow panic or an allocation abort.
//!
//! Each caller estimates the bytes it is about to hold (for a UFM point in f64 with the
//! gradient and one work vector, $3\cdot8\,\big((K+N)d+K\big)+4N$; for a network in f32, its
//! parameters and their gradients, $8P$ for $P$ parameters) with checked integer
//! arithmetic and calls [`check_memory`], which refuses an estimate $B$ above the limit $L$:
//! $$B>L,\qquad L=\min(\text{MemAvailable},\ \text{cgroup memory.max})$$
//! on Linux, $L=2^{40}$ bytes (1 TiB, [`FALLBACK_LIMIT`]) where the platform reports
//! nothing, and $L$ = the value of the environment variable `UFM_MAX_MEMORY` (bytes; suffixes
//! K, M, G, T) when it is set.
//!
//! The estimates are lower bounds on what a run needs (solvers keep more vectors, training
//! holds activations), so the check refuses only sizes that cannot fit and turns those certain
//! failures into clear errors; a size that passes may still run out of memory later.

use crate::error::{Error, Result};

/// The limit used where the platform reports no available memory: 1 TiB.
pub const FALLBACK_LIMIT: u64 = 1 << 40;

/// Parses `UFM_MAX_MEMORY`-style sizes: an integer with an optional K/M/G/T suffix (powers of
/// 1024, case-insensitive, an optional trailing `B` or `iB`).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_uppercase();
    let t = t
        .strip_suffix("IB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(&t);
    let (num, shift) = match t.chars().last()? {
        'K' => (&t[..t.len() - 1], 10),
        'M' => (&t[..t.len() - 1], 20),
        'G' => (&t[..t.len() - 1], 30),
        'T' => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = num.trim().parse().ok()?;
    n.checked_mul(1u64 << shift)
}

/// Bytes the process may still allocate: `UFM_MAX_MEMORY` when set, else the smaller of
/// Linux's `MemAvailable` and the cgroup v2 `memory.max`, else [`FALLBACK_LIMIT`].
pub fn memory_limit() -> u64 {
    if let Some(v) = std::env::var("UFM_MAX_MEMORY")
        .ok()
        .and_then(|s| parse_bytes(&s))
    {
        return v;
    }
    let mut limit: Option<u64> = None;
    if let Ok(s) = std::fs::read_to_string("/proc/meminfo") {
        limit = s
            .lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .and_then(|kb| kb.checked_mul(1024));
    }
    if let Ok(s) = std::fs::read_to_string("/sys/fs/cgroup/memory.max") {
        if let Ok(v) = s.trim().parse::<u64>() {
            limit = Some(limit.map_or(v, |l| l.min(v)));
        }
    }
    limit.unwrap_or(FALLBACK_LIMIT)
}

/// Human-readable bytes (`1.5 GiB`).
pub fn human_bytes(b: u64) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} bytes")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// Refuses to go on when `bytes` (`None`: the estimate itself overflowed 64 bits) exceeds
/// [`memory_limit`]. `flag` names the flag to change; `what` describes the sizes.
pub fn check_memory(flag: &'static str, what: &str, bytes: Option<u64>) -> Result<()> {
    let limit = memory_limit();
    match bytes {
        Some(b) if b <= limit => Ok(()),
        Some(b) => Err(Error::param(
            flag,
            format!(
                "{what} needs at least {} of memory, more than the {} available \
                 (set UFM_MAX_MEMORY=BYTES to change the limit); use smaller sizes",
                human_bytes(b),
                human_bytes(limit)
            ),
        )),
        None => Err(Error::param(
            flag,
            format!("{what} is too large: its memory size overflows 64 bits; use smaller sizes"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_bytes("123"), Some(123));
        assert_eq!(parse_bytes("2k"), Some(2048));
        assert_eq!(parse_bytes("3 MiB"), Some(3 << 20));
        assert_eq!(parse_bytes("1G"), Some(1 << 30));
        assert_eq!(parse_bytes("1TB"), Some(1 << 40));
        assert_eq!(parse_bytes("99999999999T"), None, "overflow");
        assert_eq!(parse_bytes("x"), None);
        assert_eq!(parse_bytes(""), None);
        assert_eq!(human_bytes(512), "512 bytes");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }

    #[test]
    fn overflowing_estimates_are_refused_by_flag() {
        let e = check_memory("dim", "a test", None).unwrap_err().to_string();
        assert!(e.contains("`dim`") && e.contains("overflows"), "{e}");
        let e = check_memory("dim", "a test", Some(u64::MAX))
            .unwrap_err()
            .to_string();
        assert!(e.contains("UFM_MAX_MEMORY"), "{e}");
        check_memory("dim", "a test", Some(1)).unwrap();
    }
}
