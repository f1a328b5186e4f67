//! What `/proc` says of a process: CPU time (user + system, all threads) and
//! memory (peak and current resident set). Linux only, as the harness is.

use std::path::PathBuf;

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on every Linux
/// target the harness runs on; `getconf CLK_TCK` says so).
const TICKS_PER_SECOND: f64 = 100.0;

fn proc_path(pid: Option<u32>, file: &str) -> PathBuf {
    match pid {
        Some(pid) => PathBuf::from(format!("/proc/{pid}/{file}")),
        None => PathBuf::from(format!("/proc/self/{file}")),
    }
}

/// CPU seconds (user + system) the process has used so far; `None` once it is gone.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let text = std::fs::read_to_string(proc_path(pid, "stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from the state (field 3) here.
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / TICKS_PER_SECOND)
}

fn status_kib(pid: Option<u32>, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(proc_path(pid, "status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// Peak resident set size (VmHWM) in bytes.
pub fn peak_rss_bytes(pid: Option<u32>) -> Option<u64> {
    status_kib(pid, "VmHWM:").map(|k| k * 1024)
}

/// Current resident set size (VmRSS) in bytes.
pub fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    status_kib(pid, "VmRSS:").map(|k| k * 1024)
}

/// Established TCP connections to `port` on this machine, counted on the
/// connecting side (remote port = `port`): how many connections clients hold
/// open to a server.
pub fn connections_to(port: u16) -> usize {
    let wanted = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| {
            text.lines()
                .skip(1)
                .filter(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    fields.len() > 3 && fields[2].ends_with(&wanted) && fields[3] == "01"
                })
                .count()
        })
        .sum()
}

/// The machine: CPU model, cores, and the load average now.
pub fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let memory = status_like("/proc/meminfo", "MemTotal:").map(|k| k / 1024);
    serde_json::json!({ "cpu": model, "cores": cores, "memory_mib": memory, "load_average": load_average() })
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect()
}

fn status_like(path: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let spin: u64 = (0..2_000_000u64).fold(0, |a, b| a.wrapping_add(b * b));
        assert!(spin > 0);
        assert!(cpu_seconds(None).is_some());
        assert!(peak_rss_bytes(None).unwrap_or(0) >= rss_bytes(None).unwrap_or(0) / 2);
        assert_eq!(load_average().len(), 3);
    }
}
