//! `perf record` attached to the runtime during a scenario's busy phase, and
//! what it shows: self time per function (`perf report`), and each sample
//! charged to the innermost runtime function on its DWARF-unwound stack, which
//! names the runtime code behind the allocator, copy and SQLite time.
//!
//! `perf` works here with the software clock event only (no hardware
//! counters in this VM): `-e cpu-clock`. The release profile keeps line
//! tables (`debug = "line-tables-only"`), so symbols and inlined frames resolve.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::processes::ChildProcess;

/// Samples per second and thread.
const FREQUENCY: &str = "299";

pub struct Profiler {
    perf: ChildProcess,
    dir: PathBuf,
}

/// What a profile showed.
#[derive(Debug, Serialize)]
pub struct Profile {
    /// `perf.data` and the full reports.
    pub dir: PathBuf,
    pub samples: usize,
    /// `percent  symbol` by self time.
    pub top_self: Vec<String>,
    /// `percent  function`: each sample charged to the innermost runtime function on its stack
    /// (what that function costs with everything it calls outside the runtime: allocation,
    /// copies, SQLite, protobuf), or to the task it ran in when no runtime function is on it.
    pub by_runtime_function: Vec<String>,
}

impl Profiler {
    /// Starts recording process `pid` into `dir`.
    pub fn start(pid: u32, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut command = Command::new("perf");
        command
            .args(["record", "-e", "cpu-clock", "-F", FREQUENCY, "--call-graph", "dwarf,16384", "-p"])
            .arg(pid.to_string())
            .arg("-o")
            .arg(dir.join("perf.data"));
        let perf = ChildProcess::spawn("perf record", command, &dir.join("perf-record.log"))?;
        // perf needs a moment to attach before the interesting part starts.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Self { perf, dir: dir.to_path_buf() })
    }

    /// Stops recording and reads the reports.
    pub async fn finish(mut self) -> anyhow::Result<Profile> {
        let _ = Command::new("kill").arg("-INT").arg(self.perf.pid().to_string()).status();
        let start = std::time::Instant::now();
        while self.perf.is_running() {
            if start.elapsed() > Duration::from_secs(120) {
                bail!("perf record did not stop");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let data = self.dir.join("perf.data");
        let self_args = ["--no-children", "--no-inline", "--sort", "symbol", "-g", "none", "--percent-limit", "0.5"];
        let self_report = report(&data, &self_args)?;
        std::fs::write(self.dir.join("self.txt"), &self_report)?;
        let script = Command::new("perf")
            .arg("script")
            .arg("-i")
            .arg(&data)
            .args(["-F", "comm,ip,sym,dso", "--no-inline"])
            .output()
            .context("perf script")?;
        let stacks = String::from_utf8_lossy(&script.stdout);
        let (samples, charged) = charge(&stacks);
        let percent = |n: usize| n as f64 * 100.0 / samples.max(1) as f64;
        let by_runtime_function: Vec<String> = charged
            .iter()
            .take(30)
            .map(|c| {
                let leaves: Vec<String> =
                    c.leaves.iter().take(3).map(|(leaf, n)| format!("{leaf} {:.1}%", percent(*n))).collect();
                format!("{:5.1}% {} [{}]", percent(c.samples), c.name, leaves.join("; "))
            })
            .collect();
        std::fs::write(self.dir.join("by-runtime-function.txt"), by_runtime_function.join("\n"))?;
        Ok(Profile { dir: self.dir.clone(), samples, top_self: entries(&self_report, 25), by_runtime_function })
    }
}

/// Samples charged to one name, and the functions they were in (the leaves).
#[derive(Debug)]
struct Charged {
    name: String,
    samples: usize,
    /// Leaf symbols by samples, most first.
    leaves: Vec<(String, usize)>,
}

/// Charges each sample of `perf script` output to the innermost runtime
/// function of its stack; samples without one go to the component they ran in.
/// Returns the sample count and the charges, most samples first.
fn charge(script: &str) -> (usize, Vec<Charged>) {
    use std::collections::HashMap;
    let mut counts: HashMap<String, (usize, HashMap<String, usize>)> = HashMap::new();
    let mut samples = 0;
    for sample in script.split("\n\n") {
        let frames: Vec<&str> = sample.lines().filter(|l| l.starts_with('\t')).map(frame_symbol).collect();
        let Some(leaf) = frames.first() else { continue };
        samples += 1;
        let name = frames
            .iter()
            .find(|f| f.contains("statefun_runtime::"))
            .map(|f| short_name(f))
            .unwrap_or_else(|| component(&frames));
        let entry = counts.entry(name).or_default();
        entry.0 += 1;
        *entry.1.entry(leaf_name(leaf)).or_default() += 1;
    }
    let mut charged: Vec<Charged> = counts
        .into_iter()
        .map(|(name, (samples, leaves))| {
            let mut leaves: Vec<(String, usize)> = leaves.into_iter().collect();
            leaves.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            Charged { name, samples, leaves }
        })
        .collect();
    charged.sort_by(|a, b| b.samples.cmp(&a.samples).then_with(|| a.name.cmp(&b.name)));
    (samples, charged)
}

/// A leaf symbol, with the allocator's and libc's copy routines named by what they do.
fn leaf_name(symbol: &str) -> String {
    const ALLOCATOR: [&str; 8] =
        ["malloc", "free", "_int_", "unlink_chunk", "realloc", "cfree", "consolidate", "tcache"];
    if ALLOCATOR.iter().any(|a| symbol.contains(a)) {
        "malloc/free".into()
    } else if symbol.contains("memmove") || symbol.contains("memcpy") {
        "memcpy".into()
    } else {
        let short = short_name(symbol);
        if short.len() > 80 { format!("{}…", short.chars().take(80).collect::<String>()) } else { short }
    }
}

/// `addr symbol (dso)` → `symbol`.
fn frame_symbol(line: &str) -> &str {
    let line = line.trim();
    let rest = line.split_once(char::is_whitespace).map_or("", |(_, rest)| rest.trim());
    match rest.rfind(" (") {
        Some(at) => &rest[..at],
        None => rest,
    }
}

/// A runtime symbol without closures, hashes and the crate prefix.
fn short_name(symbol: &str) -> String {
    let mut name = symbol.replace("::{{closure}}", "").replace("statefun_runtime::", "");
    if let Some(at) = name.rfind("::h").filter(|at| name[at + 3..].chars().all(|c| c.is_ascii_hexdigit())) {
        name.truncate(at);
    }
    name
}

/// Where a sample without runtime frames ran.
fn component(frames: &[&str]) -> String {
    let any = |needle: &str| frames.iter().any(|f| f.contains(needle));
    if any("hyper::") || any("hyper_util::") {
        "(HTTP client connection tasks: hyper, no runtime frame)".into()
    } else if any("sqlite3") {
        "(SQLite, no runtime frame)".into()
    } else if any("tokio::runtime") {
        "(tokio scheduler, timers, I/O driver)".into()
    } else {
        format!("(other: {})", frames.first().copied().unwrap_or("?"))
    }
}

fn report(data: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("perf")
        .arg("report")
        .arg("-i")
        .arg(data)
        .args(["--stdio", "--no-header"])
        .args(args)
        .output()
        .context("perf report")?;
    if !output.status.success() {
        bail!("perf report failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The first `count` entry lines of a report (those starting with a percentage).
fn entries(report: &str, count: usize) -> Vec<String> {
    report
        .lines()
        .filter(|l| l.trim_start().chars().next().is_some_and(|c| c.is_ascii_digit()) && l.contains('%'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .take(count)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_charged_to_its_innermost_runtime_function() {
        let script = concat!(
            "tokio-rt-worker \n",
            "\t 1 malloc (/usr/lib/libc.so.6)\n",
            "\t 2 statefun_runtime::partition::Partition::seal (/x/statefun)\n",
            "\t 3 statefun_runtime::node::run_partition::{{closure}} (/x/statefun)\n\n",
            "tokio-rt-worker \n",
            "\t 4 hyper::proto::h1::io::Buffered<T,B>::poll_flush (/x/statefun)\n\n",
        );
        let (samples, charged) = charge(script);
        assert_eq!(samples, 2);
        let seal = charged.iter().find(|c| c.name == "partition::Partition::seal").expect("seal charged");
        assert_eq!((seal.samples, seal.leaves[0].0.as_str()), (1, "malloc/free"));
        assert!(charged.iter().any(|c| c.name.contains("hyper") && c.samples == 1), "{charged:?}");
    }

    #[test]
    fn entries_are_the_percentage_lines() {
        let text = "# comment\n\n    12.50%  statefun  [.] sqlite3VdbeExec\n\
                    \x20    3.10%  statefun  [.] memcpy\n            |\n";
        assert_eq!(entries(text, 5), ["12.50% statefun [.] sqlite3VdbeExec", "3.10% statefun [.] memcpy"]);
    }
}
