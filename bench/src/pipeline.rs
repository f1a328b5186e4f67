//! Scenarios where events travel the whole way: appended to an ingress
//! stream, processed by a `statefun run` process, their results read from an
//! egress stream. Scenarios 2–4 and the commit-interval comparison run on the
//! embedded local backends; scenario 7 runs the same driver on the local AWS
//! stack (Kinesis, S3, DynamoDB).
//!
//! Each scenario has three phases, on a fresh data directory (or fresh AWS
//! resources):
//!
//! 1. **Warm-up**: the runtime starts and a first round of events goes through
//!    (state negotiation, connections), then the runtime is stopped (SIGTERM:
//!    it commits and releases its partitions).
//! 2. **Throughput**: a backlog of events is appended while the runtime is
//!    stopped, then the runtime is started again and drains it. Messages per
//!    second is the egress span rate (see [`crate::stats`]): results after the
//!    first one over the time from the first to the last, by their egress
//!    `appended_at_ms`. Results leave in bursts, one per commit, so a run must
//!    span many commit intervals (the 5 s comparison drains a backlog of the
//!    same size as the default's, which lasts about ten of its commits). The
//!    counter's own count (`bench-functions` reports it every 20 ms) gives the
//!    processing rate between 10% and 90% of the backlog, in the JSON next to
//!    it: where the two differ, publishing (or committing) trails processing.
//!    The commit-interval comparison uses this processing rate for both runs:
//!    with 5 s commits a backlog's results leave in two or three bursts.
//!    CPU is the new runtime process' CPU time from its start until the last
//!    result, per 1,000 events. Appending the backlog first keeps the driver's
//!    own work off the two cores while the runtime is measured.
//! 3. **Latency**: events are appended at a steady rate (half the measured
//!    throughput, a tenth on the local AWS stack, whose emulated services the
//!    driver shares with the runtime; at most `--latency-rate`), and each
//!    event's latency is the egress record's `appended_at_ms` minus the time
//!    the driver started appending it. Peak memory is the runtime's VmHWM at
//!    the end.
//!
//! Egress records are read with the runtime's own log store (`LocalLogStore`
//! or `KinesisLogStore`), never through the CLI.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use statefun_runtime::log::kinesis::KinesisLogStore;
use statefun_runtime::log::local::LocalLogStore;
use statefun_runtime::log::{AppendRecord, LogStore, Position};

use crate::processes::{ChildProcess, Functions, sibling_binary};
use crate::profile::Profiler;
use crate::report::Row;
use crate::stats::{Latencies, crossing_rate, egress_span_rate};
use crate::workload::{Cart, Counters, Workload};
use crate::{counter, now_ms, procfs, progress};

/// What every pipeline scenario of a run shares.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where data directories and logs go.
    pub work_dir: PathBuf,
    pub partitions: u32,
    pub stream_shards: u32,
    /// The most events per second of the latency phase.
    pub latency_rate: f64,
    pub latency_secs: f64,
    /// Where profiles go, when profiling.
    pub profile_dir: Option<PathBuf>,
    /// The runtimes' log filter (`STATEFUN_LOG`).
    pub runtime_log: String,
}

#[derive(Clone, Debug)]
pub enum Shape {
    /// The counter over this many keys, events spread evenly.
    Counters { keys: usize },
    /// The shopping cart: orders of `users` users for `items` items.
    Cart { users: usize, items: usize },
}

#[derive(Clone, Debug)]
pub struct Scenario {
    /// Short name (`--only`).
    pub name: String,
    pub title: String,
    pub shape: Shape,
    pub warmup: usize,
    /// The backlog of the throughput phase.
    pub events: usize,
    pub commit_interval: String,
    /// An epoch's outbox size that seals it early (`--max-epoch-entries`); `None`: the runtime's default.
    pub max_epoch_entries: Option<usize>,
    /// Whether to run the latency phase.
    pub latency: bool,
    /// The latency phase's rate as a fraction of the measured throughput (at most `Settings::latency_rate`).
    pub latency_load: f64,
    /// Whether to profile the throughput phase (with `Settings::profile_dir`).
    pub profile: bool,
}

impl Scenario {
    fn commit_args(&self) -> Vec<String> {
        let mut args = vec!["--commit-interval".to_owned(), self.commit_interval.clone()];
        if let Some(entries) = self.max_epoch_entries {
            args.extend(["--max-epoch-entries".to_owned(), entries.to_string()]);
        }
        args
    }
}

/// Where the scenario runs.
pub enum Backend {
    Local,
    /// The local AWS stack, its variables already in this process' environment.
    Aws,
}

/// Runs a scenario; a failure becomes a row saying so, and the run goes on.
pub async fn run(scenario: &Scenario, settings: &Settings, backend: &Backend, functions: &Functions) -> Row {
    match try_run(scenario, settings, backend, functions).await {
        Ok(row) => row,
        Err(e) => {
            progress!("{}: FAILED: {e:#}", scenario.title);
            Row::skipped(&scenario.name, &scenario.title, format!("failed: {e:#}"))
        }
    }
}

/// The runtime processes of one scenario and how to start them.
struct Deployment {
    binary: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    dir: PathBuf,
    starts: usize,
    log_filter: String,
}

impl Deployment {
    fn start(&mut self) -> anyhow::Result<ChildProcess> {
        self.starts += 1;
        let mut command = Command::new(&self.binary);
        let envs = self.envs.iter().map(|(k, v)| (k, v));
        command.arg("run").args(&self.args).envs(envs).env("STATEFUN_LOG", &self.log_filter);
        // Text lines, as the logs under the run's directory always were.
        command.env("STATEFUN_LOG_FORMAT", "text");
        ChildProcess::spawn("statefun run", command, &self.dir.join(format!("runtime-{}.log", self.starts)))
    }
}

async fn try_run(
    scenario: &Scenario,
    settings: &Settings,
    backend: &Backend,
    functions: &Functions,
) -> anyhow::Result<Row> {
    let dir = settings.work_dir.join(&scenario.name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let suffix = format!("{:x}", now_ms());
    let workload: Box<dyn Workload> = match &scenario.shape {
        Shape::Counters { keys } => match backend {
            Backend::Local => Box::new(Counters::new(*keys, counter::INGRESS_STREAM, counter::EGRESS_STREAM, "k")),
            Backend::Aws => {
                Box::new(Counters::new(*keys, &format!("bench-in-{suffix}"), &format!("bench-out-{suffix}"), "k"))
            }
        },
        Shape::Cart { users, items } => Box::new(Cart::new(*users, *items, "")),
    };
    // On AWS the counter writes to this scenario's own egress stream: functions of their own.
    let own_functions = match backend {
        Backend::Aws => Some(Functions::start(workload.egress(), &dir.join("functions.log"))?),
        Backend::Local => None,
    };
    let functions = own_functions.as_ref().unwrap_or(functions);
    let module = dir.join("module.yaml");
    let module_text = match &scenario.shape {
        Shape::Counters { .. } => counter::module_yaml(&functions.url, workload.ingress()),
        Shape::Cart { .. } => cart_module(functions.port().context("the functions' port")?),
    };
    std::fs::write(&module, module_text)?;

    let topology = vec![
        "--module".to_owned(),
        module.display().to_string(),
        "--partitions".to_owned(),
        settings.partitions.to_string(),
        "--stream-shards".to_owned(),
        settings.stream_shards.to_string(),
    ];
    let (log, mut deployment): (Arc<dyn LogStore>, Deployment) = match backend {
        Backend::Local => {
            let data_dir = dir.join("data");
            let log = LocalLogStore::new(&data_dir);
            let mut streams = vec![workload.ingress().to_owned(), workload.egress().to_owned()];
            if let Shape::Cart { .. } = scenario.shape {
                streams.extend(["restock".to_owned(), shopping_cart::INVENTORY_UPDATES_STREAM.to_owned()]);
            }
            for stream in streams {
                log.ensure_stream(&stream, settings.stream_shards).await?;
            }
            let mut args = topology;
            args.extend(["--data-dir".to_owned(), data_dir.display().to_string()]);
            args.extend(scenario.commit_args());
            let binary = sibling_binary("statefun")?;
            (
                Arc::new(log),
                Deployment {
                    binary,
                    args,
                    envs: Vec::new(),
                    dir: dir.clone(),
                    starts: 0,
                    log_filter: settings.runtime_log.clone(),
                },
            )
        }
        Backend::Aws => {
            let envs: Vec<(String, String)> = [
                ("STATEFUN_BACKEND", "aws".to_owned()),
                ("STATEFUN_TABLE", format!("statefun-bench-{suffix}")),
                ("STATEFUN_BUCKET", "statefun-bench".to_owned()),
                ("STATEFUN_PREFIX", format!("run-{suffix}/")),
                ("STATEFUN_EXCHANGE_STREAM", format!("bench-exchange-{suffix}")),
                ("STATEFUN_DEAD_LETTER_STREAM", format!("bench-dead-letters-{suffix}")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            let binary = sibling_binary("statefun")?;
            let mut setup = Command::new(&binary);
            setup.arg("setup").args(&topology).arg("--egress-stream").arg(workload.egress()).envs(envs.iter().cloned());
            let output = setup.output().context("statefun setup")?;
            if !output.status.success() {
                bail!("statefun setup failed: {}", String::from_utf8_lossy(&output.stderr));
            }
            let mut args = topology;
            args.extend(scenario.commit_args());
            let config = statefun_runtime::aws::aws_sdk_config(None).await;
            let log = KinesisLogStore::new(&config, false);
            (
                Arc::new(log),
                Deployment {
                    binary,
                    args,
                    envs,
                    dir: dir.clone(),
                    starts: 0,
                    log_filter: settings.runtime_log.clone(),
                },
            )
        }
    };
    let chunk = match backend {
        Backend::Local => 5_000,
        Backend::Aws => 500,
    };
    let slow = matches!(backend, Backend::Aws);

    // 1. Warm-up.
    let mut runtime = deployment.start()?;
    if let Shape::Cart { users, items } = scenario.shape {
        progress!("{}: restocking {items} items", scenario.title);
        append_retrying(log.as_ref(), "restock", Cart::new(users, items, "").restocks()).await?;
        wait_for_records(log.as_ref(), shopping_cart::INVENTORY_UPDATES_STREAM, items, &mut runtime).await?;
    }
    let mut driver = Driver::new(log.clone(), workload).await?;
    progress!("{}: warm-up, {} events", scenario.title, scenario.warmup);
    driver.append(scenario.warmup, chunk).await?;
    driver.wait_all(Duration::from_secs(if slow { 600 } else { 180 }), &mut runtime, "warm-up").await?;
    runtime.terminate(Duration::from_secs(60))?;

    // 2. Throughput: the backlog first, then the runtime drains it.
    progress!("{}: appending a backlog of {} events", scenario.title, scenario.events);
    let first = driver.appended();
    driver.append(scenario.events, chunk).await?;
    let last = driver.appended();
    let processed_before = functions.processed();
    let started_ms = now_ms();
    let mut runtime = deployment.start()?;
    let pid = runtime.pid();
    let started = Instant::now();
    let functions_cpu = procfs::cpu_seconds(Some(functions.process.pid()));
    let profiler = match (&settings.profile_dir, scenario.profile) {
        (Some(profiles), true) => Some(Profiler::start(pid, &profiles.join(&scenario.name))?),
        _ => None,
    };
    progress!("{}: runtime restarted (pid {pid}), draining", scenario.title);
    let (peak_connections, watcher) = watch_connections(functions.port());
    let timeout = Duration::from_secs(if slow { 900 } else { 600 });
    let drained = driver.wait_all(timeout, &mut runtime, "throughput").await;
    watcher.abort();
    drained?;
    let peak_connections = peak_connections.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = procfs::cpu_seconds(Some(pid));
    let functions_cpu = match (functions_cpu, procfs::cpu_seconds(Some(functions.process.pid()))) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    let profile = match profiler {
        Some(profiler) => Some(profiler.finish().await),
        None => None,
    };
    let egress_rate = egress_span_rate(&driver.done_timestamps(first..last));
    let mut row_timeline = None;
    // The counter's own count, where there is one (see the module docs).
    let processing_rate = match scenario.shape {
        Shape::Counters { .. } => {
            let events = scenario.events as u64;
            let (low, high) = (processed_before + events / 10, processed_before + events * 9 / 10);
            crossing_rate(&functions.processed_since(started_ms), low, high)
        }
        Shape::Cart { .. } => None,
    };
    let rate = egress_rate;
    if let Shape::Counters { .. } = scenario.shape {
        // What the counter had processed, every half second from the restart: shows stalls and bursts.
        let mut timeline = Vec::new();
        for (at, count) in functions.processed_since(started_ms) {
            if timeline.last().is_none_or(|(t, _): &(f64, u64)| (at - started_ms) as f64 / 1000.0 >= t + 0.5) {
                timeline.push(((at - started_ms) as f64 / 1000.0, count - processed_before));
            }
        }
        row_timeline = Some(timeline);
    }
    let events = scenario.events as f64;
    let mut row = Row::new(&scenario.name, &scenario.title);
    row.messages = scenario.events as u64;
    row.msgs_per_sec = rate;
    row.detail("function_side_msgs_per_sec", processing_rate);
    row.detail("processed_timeline_s", row_timeline);
    row.detail("egress_span_msgs_per_sec", egress_rate);
    row.cpu_s_per_1k = cpu.map(|c| c / events * 1000.0);
    row.cpu_of = "runtime".into();
    row.detail("wall_msgs_per_sec", events / elapsed);
    row.detail("drain_seconds", elapsed);
    row.detail("runtime_cpu_seconds", cpu);
    row.detail("functions_cpu_s_per_1k", functions_cpu.map(|c| c / events * 1000.0));
    row.detail("commit_interval", &scenario.commit_interval);
    let timestamps = driver.done_timestamps(first..last);
    if let (Some(interval), Some(from), Some(to)) =
        (commit_seconds(&scenario.commit_interval), timestamps.iter().min(), timestamps.iter().max())
    {
        let commits = (to - from) as f64 / 1000.0 / interval;
        row.detail("egress_span_commit_intervals", commits);
        if commits < 8.0 {
            row.notes.push(format!(
                "its results came out over only {commits:.1} commit intervals: too few for a steady rate \
                 (use a larger backlog)"
            ));
        }
    }
    row.detail("partitions", settings.partitions);
    row.detail("backlog_latency", driver.latencies(first..last).summary());
    row.detail("peak_connections_to_functions", peak_connections);
    row.detail("load_average_after_throughput", procfs::load_average());
    if let Some(profile) = profile {
        match profile {
            Ok(top) => row.detail("profile", top),
            Err(e) => row.notes.push(format!("profile failed: {e:#}")),
        }
    }
    progress!(
        "{}: {} msg/s (egress span; processed at the function: {}), {:.1} s to drain, runtime CPU {:.3} s per 1k",
        scenario.title,
        rate.map_or("—".into(), |r| format!("{r:.0}")),
        processing_rate.map_or("—".into(), |r| format!("{r:.0}")),
        elapsed,
        row.cpu_s_per_1k.unwrap_or(f64::NAN)
    );

    // 3. Latency at a steady rate below saturation.
    if scenario.latency {
        let pace = (rate.unwrap_or(100.0) * scenario.latency_load).min(settings.latency_rate).max(10.0);
        let count = (pace * settings.latency_secs) as usize;
        progress!("{}: latency phase, {count} events at {pace:.0}/s", scenario.title);
        let from = driver.appended();
        driver.paced(pace, count, &mut runtime).await?;
        driver.wait_all(Duration::from_secs(120), &mut runtime, "latency").await?;
        let mut latencies = driver.latencies(from..driver.appended());
        let (p50, p99) = latencies.p50_p99();
        row.p50_ms = p50;
        row.p99_ms = p99;
        row.latency_at = format!("{pace:.0}/s paced");
        row.detail("latency", latencies.summary());
        progress!("{}: p50 {:.1} ms, p99 {:.1} ms", scenario.title, p50.unwrap_or(f64::NAN), p99.unwrap_or(f64::NAN));
    } else {
        row.latency_at = "not measured".into();
    }
    row.peak_mib = procfs::peak_rss_bytes(Some(pid)).map(|b| b as f64 / 1_048_576.0);
    row.detail("duplicates", driver.duplicates);
    row.detail("logs", &dir);
    row.detail("unmatched_egress_records", driver.unmatched);
    if driver.duplicates > 0 {
        row.notes.push(format!("{} results arrived twice (re-published after a restart)", driver.duplicates));
    }
    runtime.terminate(Duration::from_secs(60))?;
    // The streams and checkpoints are large and of no use after the run; the logs stay.
    if let Backend::Local = backend {
        crate::delete_at_end(dir.join("data"));
    }
    Ok(row)
}

/// `100ms`, `5s` → seconds.
fn commit_seconds(text: &str) -> Option<f64> {
    if let Some(ms) = text.strip_suffix("ms") {
        return ms.parse::<f64>().ok().map(|ms| ms / 1000.0);
    }
    text.strip_suffix('s')?.parse().ok()
}

/// Samples the connections open to the functions every 100 ms; the peak is
/// in the returned counter until the task is aborted.
fn watch_connections(port: Option<u16>) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let peak = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn({
        let peak = peak.clone();
        async move {
            let Some(port) = port else { return };
            loop {
                peak.fetch_max(procfs::connections_to(port), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    (peak, task)
}

/// The example's module.yaml with the functions' port.
fn cart_module(port: u16) -> String {
    let template = include_str!("../../functions/examples/shopping-cart/module.yaml");
    template.replace("${FUNCTIONS_PORT}", &port.to_string())
}

async fn append_retrying(log: &dyn LogStore, stream: &str, records: Vec<AppendRecord>) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(50);
    for attempt in 1.. {
        match log.append(stream, &records).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() && attempt < 10 => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Waits until a stream holds at least `count` records.
async fn wait_for_records(
    log: &dyn LogStore,
    stream: &str,
    count: usize,
    runtime: &mut ChildProcess,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let mut seen = 0;
        if let Ok(shards) = log.shards(stream).await {
            for shard in shards {
                let mut position = Position::Start;
                loop {
                    let (records, next) = log.read(stream, &shard.id, &position, 10_000).await?;
                    seen += records.len();
                    if records.is_empty() {
                        break;
                    }
                    position = next;
                }
            }
        }
        if seen >= count {
            return Ok(());
        }
        runtime.check_running()?;
        if start.elapsed() > Duration::from_secs(300) {
            bail!("only {seen} of {count} records on {stream} after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Appends numbered events and matches the results read back to them.
pub struct Driver {
    log: Arc<dyn LogStore>,
    workload: Box<dyn Workload>,
    /// When the append of each event started (ms).
    appended_at: Vec<i64>,
    /// The egress `appended_at_ms` of each event's result.
    done_at: Vec<Option<i64>>,
    delivered: usize,
    duplicates: usize,
    unmatched: usize,
    cursors: Vec<(String, Position)>,
}

impl Driver {
    pub async fn new(log: Arc<dyn LogStore>, workload: Box<dyn Workload>) -> anyhow::Result<Self> {
        let shards =
            log.shards(workload.egress()).await.with_context(|| format!("egress stream {}", workload.egress()))?;
        let cursors = shards.into_iter().map(|s| (s.id, Position::Start)).collect();
        Ok(Self {
            log,
            workload,
            appended_at: Vec::new(),
            done_at: Vec::new(),
            delivered: 0,
            duplicates: 0,
            unmatched: 0,
            cursors,
        })
    }

    pub fn appended(&self) -> usize {
        self.appended_at.len()
    }

    /// Events with a result so far.
    pub fn delivered(&self) -> usize {
        self.delivered
    }

    /// Appends the next `count` events, `chunk` per append call.
    pub async fn append(&mut self, count: usize, chunk: usize) -> anyhow::Result<()> {
        let end = self.appended() + count;
        while self.appended() < end {
            let from = self.appended();
            let to = from.saturating_add(chunk.max(1)).min(end);
            let records: Vec<AppendRecord> = (from..to).map(|n| self.workload.event(n)).collect();
            let now = now_ms();
            append_retrying(self.log.as_ref(), self.workload.ingress(), records).await?;
            self.appended_at.resize(to, now);
            self.done_at.resize(to, None);
        }
        Ok(())
    }

    /// Appends `count` events at `rate` per second, reading results meanwhile.
    pub async fn paced(&mut self, rate: f64, count: usize, runtime: &mut ChildProcess) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut sent = 0;
        while sent < count {
            let due = ((start.elapsed().as_secs_f64() * rate) as usize).min(count);
            if due > sent {
                self.append(due - sent, usize::MAX).await?;
                sent = due;
            }
            self.poll().await?;
            runtime.check_running()?;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Reads every egress shard to its end; returns how many events completed.
    pub async fn poll(&mut self) -> anyhow::Result<usize> {
        const READ: usize = 10_000;
        let stream = self.workload.egress().to_owned();
        let mut fresh = 0;
        for index in 0..self.cursors.len() {
            loop {
                let (shard, position) = self.cursors[index].clone();
                let (records, next) = match self.log.read(&stream, &shard, &position, READ).await {
                    Ok(read) => read,
                    Err(e) if e.is_retryable() => break,
                    Err(e) => return Err(e.into()),
                };
                for record in &records {
                    match self.workload.completes(record) {
                        Some(n) if n < self.done_at.len() => {
                            if self.done_at[n].is_none() {
                                self.done_at[n] = Some(record.appended_at_ms);
                                self.delivered += 1;
                                fresh += 1;
                            } else {
                                self.duplicates += 1;
                            }
                        }
                        _ => self.unmatched += 1,
                    }
                }
                self.cursors[index].1 = next;
                if records.len() < READ {
                    break;
                }
            }
        }
        Ok(fresh)
    }

    /// Reads results until every appended event has one.
    pub async fn wait_all(&mut self, timeout: Duration, runtime: &mut ChildProcess, phase: &str) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut last_report = Instant::now();
        loop {
            self.poll().await?;
            if self.delivered >= self.appended() {
                return Ok(());
            }
            runtime.check_running()?;
            if start.elapsed() > timeout {
                bail!("{phase}: {} of {} results after {timeout:?}", self.delivered, self.appended());
            }
            if last_report.elapsed() > Duration::from_secs(5) {
                progress!("  {phase}: {} of {} results", self.delivered, self.appended());
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The egress times of the results of events `range`.
    pub fn done_timestamps(&self, range: std::ops::Range<usize>) -> Vec<i64> {
        self.done_at[range].iter().flatten().copied().collect()
    }

    /// Latencies of events `range` as at `now_ms`, and how many of them have no
    /// result yet: those count with their age so far, so while any is missing
    /// the percentiles are lower bounds (a starved event is not left out).
    pub fn latencies_at(&self, range: std::ops::Range<usize>, now_ms: i64) -> (Latencies, usize) {
        let mut latencies = Latencies::default();
        let mut missing = 0;
        for n in range {
            let done = self.done_at[n].unwrap_or_else(|| {
                missing += 1;
                now_ms
            });
            latencies.push((done - self.appended_at[n]) as f64);
        }
        (latencies, missing)
    }

    /// Append-to-egress latencies of events `range`.
    pub fn latencies(&self, range: std::ops::Range<usize>) -> Latencies {
        let mut latencies = Latencies::default();
        for n in range {
            if let Some(done) = self.done_at[n] {
                latencies.push((done - self.appended_at[n]) as f64);
            }
        }
        latencies
    }
}
