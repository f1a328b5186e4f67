//! The benchmark harness: measures the runtime against the physical limit of
//! its function calls, against a peer (Restate) on the same workload, its own
//! checkpoints and recovery, and what hostile loads do to the rest.
//! `scripts/bench.sh` runs it; the README's Performance section shows its
//! latest table.
//!
//! ```text
//!  driver (statefun-bench) ──append──> ingress stream ──> statefun run ──HTTP──> bench-functions
//!        ▲                                                    │                (counter, shopping cart,
//!        │                                                    │                 hostile functions)
//!        └───────────── read (LocalLogStore / Kinesis) <── egress stream
//! ```
//!
//! Each process of a scenario is separate, so the CPU and memory read from
//! `/proc` are the runtime's alone: the functions run in `bench-functions`, the
//! load comes from the driver.
//!
//! - [`counter`]: the counter function (and the shopping cart's) served by `bench-functions`.
//! - [`hostile_functions`]: the functions that misbehave (fail, schedule timers, fan out), also there.
//! - [`procfs`]: CPU time and peak memory of a process.
//! - [`stats`]: latency percentiles and throughput over the egress timestamps.
//! - [`processes`]: starting and stopping the runtime, the functions, and waiting for them.
//! - [`workload`]: what a scenario appends and how an egress record names the event it completes.
//! - [`pipeline`]: scenarios 2–4 (and the commit-interval comparison) on the embedded local
//!   runtime, and scenario 7 on the local AWS stack: events through ingress, runtime and egress.
//! - [`raw`]: scenario 1, the raw ceiling.
//! - [`restate`]: scenario 5, Restate on the same workload.
//! - [`checkpoint`]: scenario 6, snapshot, delta and recovery of a million addresses.
//! - [`hostile`]: scenario 8, hostile loads (big messages, a failing hot key,
//!   timers due at once, a fan-out loop) beside a steady unrelated workload.
//! - [`profile`]: `perf record` around a scenario's busy phase.
//! - [`report`]: the table, the ratios and the JSON.

pub mod checkpoint;
pub mod counter;
pub mod hostile;
pub mod hostile_functions;
mod hostile_watch;
pub mod pipeline;
pub mod processes;
pub mod procfs;
pub mod profile;
pub mod raw;
pub mod report;
pub mod restate;
pub mod stats;
pub mod workload;

/// Wall-clock milliseconds, the clock of the logs' `appended_at_ms`.
pub fn now_ms() -> i64 {
    statefun_runtime::now_ms()
}

/// Prints a progress line to stderr (stdout is kept for the table).
#[macro_export]
macro_rules! progress {
    ($($arg:tt)*) => {{
        eprintln!("[bench {}] {}", $crate::clock(), format!($($arg)*));
    }};
}

/// `HH:MM:SS` (UTC) for progress lines.
pub fn clock() -> String {
    let secs = now_ms() / 1000;
    format!("{:02}:{:02}:{:02}", (secs / 3600) % 24, (secs / 60) % 60, secs % 60)
}

/// Scenario data deleted when the whole run ends (`delete_deferred`).
static DELETE_AT_END: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Deletes a scenario's streams and checkpoints once the run ends rather than
/// now: after hundreds of thousands of files are deleted, ext4 (without a
/// journal, as on this machine kind) skips the freed inodes for minutes when it
/// creates files, and the next scenario would pay for this one's clean-up.
pub fn delete_at_end(path: std::path::PathBuf) {
    if let Ok(mut paths) = DELETE_AT_END.lock() {
        paths.push(path);
    }
}

/// Deletes what [`delete_at_end`] was given.
pub fn delete_deferred() {
    let paths = DELETE_AT_END.lock().map(|mut paths| std::mem::take(&mut *paths)).unwrap_or_default();
    for path in paths {
        let _ = std::fs::remove_dir_all(&path);
    }
}
