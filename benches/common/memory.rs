//! Memory figures of the bench process itself.

/// A memory figure of this process in MiB from `/proc/self/status`: `"VmHWM:"` (the peak
/// resident set) or `"VmRSS:"` (the resident set now).
pub fn status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
