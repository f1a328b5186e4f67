//! The processes of a scenario: the runtime (`statefun run`), the functions
//! (`bench-functions`) and whatever else a scenario starts (Restate). Each is
//! a child with its output in a log file; dropping the handle kills it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A binary built next to the running one (the same target directory and profile).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("the bench binary's path")?;
    let path = exe.parent().context("the bench binary's directory")?.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build it first (scripts/bench.sh does: cargo build --release -p statefun-runtime \
             -p statefun-bench --bins)",
            path.display()
        );
    }
    Ok(path)
}

/// A child process that is killed when dropped.
pub struct ChildProcess {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl ChildProcess {
    /// Starts `command` with stdout and stderr to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> anyhow::Result<Self> {
        let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child =
            command.stdin(Stdio::null()).stdout(out).stderr(err).spawn().with_context(|| format!("starting {name}"))?;
        Ok(Self { name: name.to_owned(), child, log: log.to_path_buf() })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Fails, with the end of its log, if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!("{} exited ({status}); the end of {}:\n{}", self.name, self.log.display(), tail(&self.log, 20));
        }
        Ok(())
    }

    /// SIGTERM, then waits up to `timeout` (SIGKILL after that).
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let start = Instant::now();
        while start.elapsed() < timeout {
            if !self.is_running() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!("{} did not stop within {timeout:?} of SIGTERM; killed", self.name)
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last `lines` lines of a file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `bench-functions` on a free loopback port: the counter (writing to
/// `egress_stream`), the shopping cart and the hostile scenario's functions.
pub struct Functions {
    pub process: ChildProcess,
    pub url: String,
    /// What the functions had done, every 20 ms.
    samples: Arc<Mutex<Vec<Sample>>>,
}

/// One of `bench-functions`' reports: its counts at `at_ms` (see `bench/src/bin/bench-functions.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub at_ms: i64,
    /// Messages the counter processed.
    pub counter: u64,
    /// Messages `bench/arrivals` received.
    pub arrivals: u64,
    /// Messages `bench/fanout` received.
    pub fanout: u64,
    /// The deepest fan-out level reached.
    pub fanout_depth: u64,
    /// Batches `bench/failing` failed.
    pub failed: u64,
}

impl Sample {
    /// A report line after its `processed` word; counts it lacks (an older line) are 0.
    fn parse(fields: &str) -> Option<Self> {
        let mut numbers = fields.split_whitespace().map(str::parse::<u64>);
        let at_ms = i64::try_from(numbers.next()?.ok()?).ok()?;
        let counter = numbers.next()?.ok()?;
        let mut rest = || numbers.next().and_then(Result::ok).unwrap_or(0);
        Some(Self { at_ms, counter, arrivals: rest(), fanout: rest(), fanout_depth: rest(), failed: rest() })
    }
}

impl Functions {
    /// The port the functions listen on.
    pub fn port(&self) -> Option<u16> {
        self.url.rsplit_once(':')?.1.split('/').next()?.parse().ok()
    }

    pub fn start(egress_stream: &str, log: &Path) -> anyhow::Result<Self> {
        let mut command = Command::new(sibling_binary("bench-functions")?);
        command.arg("--listen").arg("127.0.0.1:0").arg("--egress-stream").arg(egress_stream);
        // The address comes on stdout; the rest goes to the log.
        let err = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(err);
        let mut child = command.spawn().context("starting bench-functions")?;
        let stdout = child.stdout.take().context("bench-functions stdout")?;
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).context("reading bench-functions' address")?;
        let process = ChildProcess { name: "bench-functions".into(), child, log: log.to_path_buf() };
        let Some(address) = line.trim().strip_prefix("listening on ") else {
            bail!("bench-functions did not start: {line:?}; {}", tail(log, 10));
        };
        let samples = Arc::new(Mutex::new(Vec::new()));
        std::thread::spawn({
            let samples = samples.clone();
            move || {
                for line in reader.lines().map_while(Result::ok) {
                    if let Some(sample) = line.strip_prefix("processed ").and_then(Sample::parse) {
                        samples.lock().unwrap_or_else(|e| e.into_inner()).push(sample);
                    }
                }
            }
        });
        Ok(Self { process, url: format!("{address}/statefun"), samples })
    }

    /// Messages the counter has processed so far.
    pub fn processed(&self) -> u64 {
        self.latest().counter
    }

    /// The counter's processed-messages samples since `since_ms`, as `(unix ms, messages)`.
    pub fn processed_since(&self, since_ms: i64) -> Vec<(i64, u64)> {
        self.samples_since(since_ms).iter().map(|s| (s.at_ms, s.counter)).collect()
    }

    /// The latest report (all zero before the first).
    pub fn latest(&self) -> Sample {
        self.samples.lock().unwrap_or_else(|e| e.into_inner()).last().copied().unwrap_or_default()
    }

    /// The reports since `since_ms`.
    pub fn samples_since(&self, since_ms: i64) -> Vec<Sample> {
        self.samples.lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|s| s.at_ms >= since_ms).copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Sample;

    #[test]
    fn a_report_line_reads_with_or_without_the_hostile_counts() {
        let full = Sample::parse("1700000000000 42 7 9 3 2").expect("a sample");
        assert_eq!(
            (full.at_ms, full.counter, full.arrivals, full.fanout, full.fanout_depth, full.failed),
            (1700000000000, 42, 7, 9, 3, 2)
        );
        let old = Sample::parse("1700000000000 42").expect("a sample");
        assert_eq!((old.counter, old.arrivals, old.failed), (42, 0, 0));
        assert_eq!(Sample::parse("soon 42"), None);
    }
}
