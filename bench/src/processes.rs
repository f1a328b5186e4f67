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
/// `egress_stream`) and the shopping cart.
pub struct Functions {
    pub process: ChildProcess,
    pub url: String,
    /// `(unix ms, messages processed by the counter)`, every 20 ms.
    processed: Arc<Mutex<Vec<(i64, u64)>>>,
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
        let processed = Arc::new(Mutex::new(Vec::new()));
        std::thread::spawn({
            let processed = processed.clone();
            move || {
                for line in reader.lines().map_while(Result::ok) {
                    let mut fields = line.split_whitespace().skip(1).map(str::parse::<i64>);
                    if let (Some(Ok(at)), Some(Ok(count))) = (fields.next(), fields.next()) {
                        processed.lock().unwrap_or_else(|e| e.into_inner()).push((at, count as u64));
                    }
                }
            }
        });
        Ok(Self { process, url: format!("{address}/statefun"), processed })
    }

    /// Messages the counter has processed so far.
    pub fn processed(&self) -> u64 {
        self.processed.lock().unwrap_or_else(|e| e.into_inner()).last().map_or(0, |s| s.1)
    }

    /// The counter's processed-messages samples since `since_ms`.
    pub fn processed_since(&self, since_ms: i64) -> Vec<(i64, u64)> {
        self.processed.lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|s| s.0 >= since_ms).copied().collect()
    }
}
