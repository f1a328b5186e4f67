//! Scenario 8, `hostile`: what one misbehaving load does to the rest of a
//! runtime. Each load runs in a `statefun run` process of its own (local
//! backend, fresh data directory, `--memory-budget 512MiB` given explicitly so
//! the peaks compare across machines) beside an unrelated workload: the
//! counter over 100 keys at a steady 100 events per second.
//!
//! For each load, on one runtime process:
//!
//! 1. **Warm-up**: one event per unrelated key goes through.
//! 2. **Baseline**: the unrelated workload alone, paced, for 10 s (4 s with `--quick`).
//! 3. **Load**: the hostile load starts and the unrelated workload goes on at
//!    the same pace until the load has drained (and at least as long as the
//!    baseline, so the two p99s rest on as many events) or its time is up.
//! 4. **Grace**: the unrelated events of the load phase get up to 20 s more to
//!    be answered. One still unanswered counts with its age at the end, so a
//!    p99 with unanswered events is a lower bound (the row says so).
//!
//! The loads:
//!
//! - **big messages**: records of 1 MB (decimal: 1,000,000 bytes with the key,
//!   payload padding in an unknown protobuf field the counter's decoder skips)
//!   to the counter, each to a key of its own. Drained: every one answered or
//!   dead-lettered.
//! - **hot failing key**: 600 messages to one key of `bench/failing`, which
//!   fails every invocation, with `--invoke-attempts 2 --max-queued 500`.
//!   Drained: all 600 dead-lettered.
//! - **timers**: `bench/scheduler` sends 200,000 delayed messages (20
//!   invocations of 10,000) all due at one absolute time 20 s on, to
//!   `bench/arrivals`. Drained: all arrived; the spread is the time from the
//!   due time to the last arrival (from `bench-functions`' 20 ms reports). The
//!   checkpoint objects written meanwhile are summed by name (an object is
//!   written once under a new name; garbage collection deletes it later); the
//!   JSON has what the baseline wrote for comparison.
//! - **fan-out loop**: `bench/fanout` answers each message with 4 to new keys
//!   of itself, one seed, `--max-hops 12`; it runs for 60 s. Drained: no
//!   fan-out message for 5 s (the hop limit ended every chain).
//!
//! Peak RSS is the runtime's VmHWM after the grace period, before it is
//! stopped (it covers the process' whole life, baseline included). Drain times
//! are polled every 100 ms. Dead letters are read from the dead-letter stream
//! with the runtime's `LocalLogStore`, as the egress is; a load's messages are
//! counted once however often they are dead-lettered.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use prost::Message as _;
use statefun_proto::types::LongWrapper;
use statefun_runtime::log::local::LocalLogStore;
use statefun_runtime::log::{AppendRecord, LogStore, ShardChoice};

use crate::hostile_functions::{SCHEDULE_TYPENAME, Schedule};
use crate::hostile_watch::{
    BIG_PREFIX, DEAD_LETTER_STREAM, DeadLetters, LOG_KEEP_BYTES, Tail, Watch, stream_bytes, trim_log,
};
use crate::pipeline::Driver;
use crate::processes::{ChildProcess, Functions, sibling_binary};
use crate::report::Row;
use crate::workload::Counters;
use crate::{counter, now_ms, procfs, progress};

/// What the hostile runs share.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where data directories and logs go.
    pub work_dir: PathBuf,
    pub partitions: u32,
    pub stream_shards: u32,
    /// Smaller loads, shorter phases.
    pub quick: bool,
    /// The loads to run, by their short names (`big`, `failing`, `timers`, `fanout`); empty: all.
    pub loads: Vec<String>,
    /// The runtimes' log filter (`STATEFUN_LOG`).
    pub runtime_log: String,
}

/// The memory budget of every hostile run, as `statefun run` takes it.
const MEMORY_BUDGET: &str = "512MiB";
const MEMORY_BUDGET_BYTES: u64 = 512 << 20;

/// The unrelated workload: the counter over this many keys at this many events per second.
const UNRELATED_KEYS: usize = 100;
const UNRELATED_RATE: f64 = 100.0;

/// How often the load's progress, the checkpoint objects and the runtime's memory are looked at.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// A load without a known size (the fan-out) has drained once nothing happened for this long.
const QUIET: Duration = Duration::from_secs(5);

const BIG_STREAM: &str = "hostile-big";
const FAILING_STREAM: &str = "hostile-failing";
const SCHEDULE_STREAM: &str = "hostile-schedule";
const FANOUT_STREAM: &str = "hostile-fanout";
/// The runtime's default exchange stream (`statefun run --help`).
const EXCHANGE_STREAM: &str = "statefun-exchange";
/// A big record's bytes, key included: 1 MB, under Kinesis' 1 MiB by what an
/// exchange envelope adds (target, typename, id), so it may cross partitions.
const BIG_RECORD_BYTES: usize = 1_000_000;

#[derive(Clone, Debug)]
enum Load {
    Big { count: usize },
    Failing { messages: usize },
    Timers { count: u64, per_invocation: u64, delay: Duration },
    Fanout { run_for: Duration, max_hops: u32 },
}

impl Load {
    fn all(quick: bool) -> Vec<Load> {
        vec![
            Load::Big { count: if quick { 200 } else { 1_000 } },
            Load::Failing { messages: 600 },
            Load::Timers {
                count: if quick { 50_000 } else { 200_000 },
                per_invocation: 10_000,
                delay: Duration::from_secs(if quick { 10 } else { 20 }),
            },
            Load::Fanout { run_for: Duration::from_secs(if quick { 20 } else { 60 }), max_hops: 12 },
        ]
    }

    /// The short name `--hostile-loads` takes.
    fn short_name(&self) -> &'static str {
        self.name().trim_start_matches("hostile-")
    }

    /// The row's scenario name.
    fn name(&self) -> &'static str {
        match self {
            Load::Big { .. } => "hostile-big",
            Load::Failing { .. } => "hostile-failing",
            Load::Timers { .. } => "hostile-timers",
            Load::Fanout { .. } => "hostile-fanout",
        }
    }

    fn title(&self) -> String {
        match self {
            Load::Big { count } => format!("hostile: {} messages of 1 MB", grouped(*count as u64)),
            Load::Failing { messages } => format!("hostile: one failing key, {messages} messages"),
            Load::Timers { count, delay, .. } => {
                format!("hostile: {} timers due at once, {} s on", grouped(*count), delay.as_secs())
            }
            Load::Fanout { max_hops, .. } => format!("hostile: fan-out loop ×4, --max-hops {max_hops}"),
        }
    }

    /// The runtime flags of the load besides the common ones.
    fn runtime_args(&self) -> Vec<String> {
        let args: Vec<String> = match self {
            Load::Failing { .. } => vec!["--invoke-attempts".into(), "2".into(), "--max-queued".into(), "500".into()],
            Load::Fanout { max_hops, .. } => vec!["--max-hops".into(), max_hops.to_string()],
            Load::Big { .. } | Load::Timers { .. } => Vec::new(),
        };
        args
    }

    /// How long the load may take before it counts as not drained.
    fn limit(&self, quick: bool) -> Duration {
        match self {
            Load::Big { .. } => Duration::from_secs(if quick { 60 } else { 120 }),
            Load::Failing { .. } => Duration::from_secs(if quick { 90 } else { 150 }),
            Load::Timers { delay, .. } => *delay + Duration::from_secs(if quick { 20 } else { 40 }),
            Load::Fanout { run_for, .. } => *run_for,
        }
    }

    /// How many things (results, dead letters, arrivals) make it drained; `None`: see [`QUIET`].
    fn total(&self) -> Option<u64> {
        match self {
            Load::Big { count } => Some(*count as u64),
            Load::Failing { messages } => Some(*messages as u64),
            Load::Timers { count, .. } => Some(*count),
            Load::Fanout { .. } => None,
        }
    }
}

/// Runs every load; a failed one becomes a row saying so, and the others go on.
pub async fn run(settings: &Settings) -> Vec<Row> {
    let mut rows = Vec::new();
    let loads = Load::all(settings.quick);
    if let Some(unknown) = settings.loads.iter().find(|l| !loads.iter().any(|load| load.short_name() == *l)) {
        let known: Vec<_> = loads.iter().map(Load::short_name).collect();
        let why = format!("unknown hostile load `{unknown}` (known: {})", known.join(", "));
        return vec![Row::skipped("hostile", "hostile loads", why)];
    }
    let chosen =
        loads.into_iter().filter(|l| settings.loads.is_empty() || settings.loads.iter().any(|n| n == l.short_name()));
    for load in chosen {
        rows.push(match run_load(&load, settings).await {
            Ok(row) => row,
            Err(e) => {
                progress!("{}: FAILED: {e:#}", load.title());
                Row::skipped(load.name(), &load.title(), format!("failed: {e:#}"))
            }
        });
    }
    rows
}

/// The endpoint of every `bench/*` function, the unrelated counter's ingress
/// and one ingress stream per load.
fn module_yaml(url: &str) -> String {
    let long = "io.statefun.types/long";
    counter::module_yaml_with_streams(
        url,
        &[
            (counter::INGRESS_STREAM, long, "counter"),
            (BIG_STREAM, long, "counter"),
            (FAILING_STREAM, long, "failing"),
            (SCHEDULE_STREAM, SCHEDULE_TYPENAME, "scheduler"),
            (FANOUT_STREAM, long, "fanout"),
        ],
    )
}

/// What one load run measured besides the unrelated latencies.
struct LoadOutcome {
    started_ms: i64,
    /// When the load was seen drained.
    drained_ms: Option<i64>,
    done: u64,
    /// Where the unrelated events of the load phase start and end.
    unrelated: std::ops::Range<usize>,
    /// For the timers: when they were due.
    due_ms: Option<i64>,
    /// When the load phase ended (drained and as long as the baseline, or out of time).
    ended_ms: i64,
}

async fn run_load(load: &Load, settings: &Settings) -> anyhow::Result<Row> {
    let title = load.title();
    let dir = settings.work_dir.join(load.name());
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    // Functions of its own: their counts start at zero, and a load cannot slow the next one's functions.
    let functions = Functions::start(counter::EGRESS_STREAM, &dir.join("functions.log"))?;
    let module = dir.join("module.yaml");
    std::fs::write(&module, module_yaml(&functions.url))?;
    let data_dir = dir.join("data");
    let log: Arc<dyn LogStore> = Arc::new(LocalLogStore::new(&data_dir));
    let streams = [counter::INGRESS_STREAM, counter::EGRESS_STREAM, BIG_STREAM, FAILING_STREAM, SCHEDULE_STREAM];
    for stream in streams.into_iter().chain([FANOUT_STREAM]) {
        log.ensure_stream(stream, settings.stream_shards).await?;
    }
    let mut args = vec![
        "run".to_owned(),
        "--module".into(),
        module.display().to_string(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--partitions".into(),
        settings.partitions.to_string(),
        "--stream-shards".into(),
        settings.stream_shards.to_string(),
        "--memory-budget".into(),
        MEMORY_BUDGET.into(),
    ];
    args.extend(load.runtime_args());
    let mut command = Command::new(sibling_binary("statefun")?);
    command.args(&args[..]).env("STATEFUN_LOG", &settings.runtime_log);
    let mut runtime = ChildProcess::spawn("statefun run", command, &dir.join("runtime.log"))?;
    let pid = runtime.pid();
    progress!("{title}: runtime started (pid {pid}): statefun {}", args[1..].join(" "));

    // 1. Warm-up, 2. baseline.
    let workload = Counters::new(UNRELATED_KEYS, counter::INGRESS_STREAM, counter::EGRESS_STREAM, "k");
    let mut unrelated = Driver::new(log.clone(), Box::new(workload)).await?;
    unrelated.append(UNRELATED_KEYS, UNRELATED_KEYS).await?;
    unrelated.wait_all(Duration::from_secs(120), &mut runtime, "warm-up").await?;
    let baseline_secs = if settings.quick { 4.0 } else { 10.0 };
    progress!("{title}: baseline, the unrelated counter alone at {UNRELATED_RATE}/s for {baseline_secs} s");
    let mut baseline_watch = Watch::new(&data_dir);
    baseline_watch.look();
    let from = unrelated.appended();
    unrelated.paced(UNRELATED_RATE, (UNRELATED_RATE * baseline_secs) as usize, &mut runtime).await?;
    unrelated.wait_all(Duration::from_secs(60), &mut runtime, "baseline").await?;
    let mut baseline = unrelated.latencies(from..unrelated.appended());
    let rss_after_baseline = procfs::rss_bytes(Some(pid));
    baseline_watch.look();

    // 3. The load, 4. grace.
    let mut watch = Watch::new(&data_dir);
    watch.look();
    let checkpoints_before = watch.checkpoint_bytes();
    let exchange_before = stream_bytes(&data_dir, EXCHANGE_STREAM);
    let at_least = Duration::from_secs_f64(baseline_secs);
    let outcome =
        drive(load, settings, &log, &data_dir, &mut unrelated, &mut runtime, &functions, &mut watch, at_least).await?;
    let grace = Duration::from_secs(if settings.quick { 10 } else { 20 });
    let grace_started = Instant::now();
    while unrelated.delivered() < unrelated.appended() && grace_started.elapsed() < grace {
        unrelated.poll().await?;
        runtime.check_running()?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (mut under_load, unanswered) = unrelated.latencies_at(outcome.unrelated.clone(), now_ms());
    watch.look();
    let peak = procfs::peak_rss_bytes(Some(pid));
    let samples = functions.samples_since(outcome.started_ms);
    let mut notes = Vec::new();
    if let Err(e) = runtime.terminate(Duration::from_secs(60)) {
        notes.push(format!("stopping the runtime: {e:#}"));
    }
    // Everything the runtime published before it stopped.
    let mut dead = DeadLetters::new(&data_dir);
    dead.read(log.as_ref()).await?;
    let log_bytes = std::fs::metadata(&runtime.log).map(|m| m.len()).ok();
    match trim_log(&runtime.log) {
        Ok(true) => notes.push(format!(
            "the runtime logged {} (one WARN line per dead letter); {} keeps its first and last {} MiB",
            mb(log_bytes.unwrap_or(0)),
            runtime.log.display(),
            LOG_KEEP_BYTES / 2 / 1_048_576
        )),
        Ok(false) => {}
        Err(e) => notes.push(format!("trimming {}: {e:#}", runtime.log.display())),
    }

    let (base_p50, base_p99) = baseline.p50_p99();
    let (p50, p99) = under_load.p50_p99();
    let mut row = Row::new(load.name(), &title);
    row.messages = outcome.done;
    row.p50_ms = p50;
    row.p99_ms = p99;
    row.latency_at = format!("unrelated {UNRELATED_RATE:.0}/s under the load");
    row.peak_mib = peak.map(|b| b as f64 / 1_048_576.0);
    row.detail("memory_budget_mib", MEMORY_BUDGET_BYTES / 1_048_576);
    row.detail("peak_rss_of_budget", peak.map(|b| b as f64 / MEMORY_BUDGET_BYTES as f64));
    row.detail("rss_after_baseline_mib", rss_after_baseline.map(|b| b as f64 / 1_048_576.0));
    row.detail("runtime_args", &args);
    row.detail("baseline_latency", baseline.summary());
    row.detail("load_latency", under_load.summary());
    row.detail("baseline_p99_ms", base_p99);
    row.detail("baseline_p50_ms", base_p50);
    row.detail("p99_ratio", ratio(p99, base_p99));
    let sent = outcome.unrelated.len();
    row.detail("unrelated_sent_under_load", sent);
    row.detail("unrelated_answered_under_load", sent - unanswered);
    row.detail("p99_is_lower_bound", unanswered > 0);
    let limit = load.limit(settings.quick).as_secs_f64();
    let drain_s = outcome.drained_ms.map(|at| (at - outcome.started_ms) as f64 / 1000.0);
    row.detail("drained", outcome.drained_ms.is_some());
    row.detail("drain_s", drain_s);
    row.detail("drain_limit_s", limit);
    row.detail("done", outcome.done);
    row.detail("total", load.total());
    row.detail("dead_letters", dead.summary());
    row.detail("checkpoint_bytes_before", checkpoints_before);
    row.detail("checkpoint_bytes_after", watch.checkpoint_bytes());
    row.detail("checkpoint_bytes_written", watch.written_since_start());
    // What the unrelated workload alone writes, for comparison (the load phase's figure includes it).
    row.detail("checkpoint_bytes_written_in_baseline", baseline_watch.written_since_start());
    row.detail("baseline_s", baseline_secs);
    row.detail("load_phase_s", (outcome.ended_ms - outcome.started_ms) as f64 / 1000.0);
    row.detail("dead_letter_bytes_after", stream_bytes(&data_dir, DEAD_LETTER_STREAM));
    row.detail("exchange_bytes_before", exchange_before);
    let exchange_after = stream_bytes(&data_dir, EXCHANGE_STREAM);
    row.detail("exchange_bytes_after", exchange_after);
    row.detail("logs", &dir);
    row.detail("runtime_log_bytes", log_bytes);
    if unanswered > 0 {
        notes.push(format!(
            "{unanswered} of {sent} unrelated events sent under the load were unanswered {} s after the load phase \
             ended: their p99 is a lower bound",
            grace.as_secs()
        ));
    }
    if outcome.drained_ms.is_none() {
        let of = load.total().map_or(String::new(), |t| format!(" of {}", grouped(t)));
        notes.push(format!("not drained within {limit:.0} s ({}{of} done)", grouped(outcome.done)));
    }
    if peak.is_some_and(|p| p > MEMORY_BUDGET_BYTES) {
        // `statefun run --help`: the budget bounds queued messages, timers and outboxes, not state.
        notes.push(format!("peak RSS above the {MEMORY_BUDGET} memory budget"));
    }
    let mut also = Vec::new();
    match load {
        Load::Big { .. } => {
            let lost = dead.big_messages();
            row.detail("big_dead_lettered", lost);
            also.push(format!("{} of them dead-lettered", grouped(lost)));
        }
        Load::Failing { .. } => {
            let failed = samples.last().map_or(0, |s| s.failed);
            row.detail("failed_batches", failed);
            also.push(format!("{} failed batches", grouped(failed)));
        }
        Load::Timers { count, .. } => {
            let due = outcome.due_ms.unwrap_or(outcome.started_ms);
            let first = samples.iter().find(|s| s.arrivals > 0).map(|s| (s.at_ms - due) as f64 / 1000.0);
            let last = samples.iter().find(|s| s.arrivals >= *count).map(|s| (s.at_ms - due) as f64 / 1000.0);
            row.detail("first_arrival_after_due_s", first);
            row.detail("spread_s", last);
            row.detail("arrivals", samples.last().map_or(0, |s| s.arrivals));
            also.push(match last {
                Some(last) => format!("last arrival {last:.2} s after due (first {:+.2} s)", first.unwrap_or(f64::NAN)),
                None => format!("{} of {} arrived", grouped(outcome.done), grouped(*count)),
            });
            let written = watch.written_since_start();
            also.push(format!(
                "checkpoints {} → {} on disk, {} written",
                mb(checkpoints_before),
                mb(watch.checkpoint_bytes()),
                mb(written)
            ));
        }
        Load::Fanout { .. } => {
            let depth = samples.last().map_or(0, |s| s.fanout_depth);
            row.detail("fanout_depth", depth);
            row.detail("fanout_messages", outcome.done);
            let loops = dead.messages_to(&format!("{}/fanout", counter::NAMESPACE));
            row.detail("fanout_dead_lettered", loops);
            also.push(format!(
                "depth {depth} of 12, {} messages, {} dead-lettered; exchange {} on disk",
                grouped(outcome.done),
                grouped(loops),
                mb(exchange_after)
            ));
        }
    }
    row.detail("summary", also.join("; "));
    row.notes = notes;
    progress!(
        "{title}: peak RSS {} MiB; unrelated p99 {} ms alone, {} ms under the load; {}; {}",
        cell(row.peak_mib, 0),
        cell(base_p99, 1),
        cell(p99, 1),
        drain_s.map_or(format!("not drained within {limit:.0} s"), |s| format!("drained in {s:.1} s")),
        also.join("; ")
    );
    // The streams and checkpoints are large and of no use after the run; the logs stay.
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(row)
}

/// Starts the load, paces the unrelated workload beside it until the load
/// drains or its time is up.
#[allow(clippy::too_many_arguments)]
async fn drive(
    load: &Load,
    settings: &Settings,
    log: &Arc<dyn LogStore>,
    data_dir: &Path,
    unrelated: &mut Driver,
    runtime: &mut ChildProcess,
    functions: &Functions,
    watch: &mut Watch,
    at_least: Duration,
) -> anyhow::Result<LoadOutcome> {
    let title = load.title();
    let started_ms = now_ms();
    let started = Instant::now();
    let first_unrelated = unrelated.appended();
    let mut due_ms = None;
    // The big records take a while to append: in a task of their own, so the unrelated pace holds.
    let mut appending = None;
    match load {
        Load::Big { count } => {
            let log = log.clone();
            let count = *count;
            appending = Some(tokio::spawn(async move { append_big(log.as_ref(), count).await }));
        }
        Load::Failing { messages } => {
            let record = long_record("hot", 1);
            log.append(FAILING_STREAM, &vec![record; *messages]).await?;
        }
        Load::Timers { count, per_invocation, delay } => {
            let due = started_ms + delay.as_millis() as i64;
            due_ms = Some(due);
            let records = schedules(due, *count, *per_invocation)?;
            log.append(SCHEDULE_STREAM, &records).await?;
        }
        Load::Fanout { .. } => log.append(FANOUT_STREAM, &[long_record("seed", 0)]).await?,
    }
    progress!("{title}: load started");

    let limit = load.limit(settings.quick);
    let mut dead = DeadLetters::new(data_dir);
    let mut big_results = Tail::new(counter::EGRESS_STREAM);
    let mut big_seen: HashSet<String> = HashSet::new();
    let (mut done, mut changed_ms, mut drained_ms) = (0u64, now_ms(), None);
    let mut last_probe = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let due = (started.elapsed().as_secs_f64() * UNRELATED_RATE) as usize;
        let sent = unrelated.appended() - first_unrelated;
        if due > sent {
            unrelated.append(due - sent, usize::MAX).await?;
        }
        unrelated.poll().await?;
        runtime.check_running()?;
        if let Some(task) = appending.as_mut().filter(|t| t.is_finished()) {
            task.await.context("appending the big records")??;
            appending = None;
        }
        if last_probe.elapsed() >= PROBE_EVERY {
            last_probe = Instant::now();
            watch.look();
            let now = match load {
                Load::Big { .. } => {
                    dead.read(log.as_ref()).await?;
                    for record in big_results.read(log.as_ref()).await? {
                        if record.partition_key.starts_with(BIG_PREFIX) {
                            big_seen.insert(record.partition_key);
                        }
                    }
                    big_seen.len() as u64 + dead.big_messages()
                }
                Load::Failing { .. } => {
                    dead.read(log.as_ref()).await?;
                    dead.failing_messages()
                }
                Load::Timers { .. } => functions.latest().arrivals,
                Load::Fanout { .. } => functions.latest().fanout,
            };
            if now != done {
                (done, changed_ms) = (now, now_ms());
            }
            match load.total() {
                _ if drained_ms.is_some() => {}
                Some(total) if done >= total => drained_ms = Some(now_ms()),
                None if done > 0 && now_ms() - changed_ms >= QUIET.as_millis() as i64 => drained_ms = Some(changed_ms),
                _ => {}
            }
            // A load that drains at once still gets the unrelated workload measured
            // beside it as long as the baseline was, so the two p99s weigh alike.
            if (drained_ms.is_some() && started.elapsed() >= at_least) || started.elapsed() >= limit {
                break;
            }
            if last_report.elapsed() >= Duration::from_secs(10) {
                let of = load.total().map_or(String::new(), |t| format!(" of {}", grouped(t)));
                progress!(
                    "  {title}: {}{of} after {:.0} s; runtime RSS {} MiB; unrelated {} of {} answered",
                    grouped(done),
                    started.elapsed().as_secs_f64(),
                    cell(procfs::rss_bytes(Some(runtime.pid())).map(|b| b as f64 / 1_048_576.0), 0),
                    unrelated.delivered().saturating_sub(first_unrelated),
                    unrelated.appended() - first_unrelated
                );
                last_report = Instant::now();
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if let Some(task) = appending {
        task.abort();
    }
    let unrelated = first_unrelated..unrelated.appended();
    Ok(LoadOutcome { started_ms, drained_ms, done, unrelated, due_ms, ended_ms: now_ms() })
}

/// A record of the long value `value` for key `key`.
fn long_record(key: &str, value: i64) -> AppendRecord {
    AppendRecord {
        partition_key: key.to_owned(),
        shard: ShardChoice::ByKey,
        data: LongWrapper { value }.encode_to_vec(),
        id: None,
    }
}

/// A big record for key `big<n>`: the long 1, padded to [`BIG_RECORD_BYTES`]
/// with an unknown field (15, bytes), which protobuf decoders skip.
fn big_record(n: usize) -> AppendRecord {
    let mut record = long_record(&format!("{BIG_PREFIX}{n}"), 1);
    let header = 1 + prost::encoding::encoded_len_varint(BIG_RECORD_BYTES as u64);
    let padding = BIG_RECORD_BYTES - record.partition_key.len() - record.data.len() - header;
    prost::encoding::bytes::encode(15, &vec![0x5a_u8; padding], &mut record.data);
    record
}

/// Appends the big records, a few at a time (each append is one SQLite transaction).
async fn append_big(log: &dyn LogStore, count: usize) -> anyhow::Result<()> {
    const AT_ONCE: usize = 4;
    for from in (0..count).step_by(AT_ONCE) {
        let records: Vec<AppendRecord> = (from..(from + AT_ONCE).min(count)).map(big_record).collect();
        log.append(BIG_STREAM, &records).await?;
    }
    Ok(())
}

/// The scheduler's records: `count` timers due at `due_ms`, `per_invocation` per message,
/// each message to a key of its own so no two share a request.
fn schedules(due_ms: i64, count: u64, per_invocation: u64) -> anyhow::Result<Vec<AppendRecord>> {
    let per_invocation = per_invocation.max(1);
    (0..count.div_ceil(per_invocation))
        .map(|n| {
            let first = n * per_invocation;
            let schedule = Schedule { due_at_ms: due_ms, count: per_invocation.min(count - first), first };
            Ok(AppendRecord {
                partition_key: format!("s{n}"),
                shard: ShardChoice::ByKey,
                data: serde_json::to_vec(&schedule)?,
                id: None,
            })
        })
        .collect()
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn cell(value: Option<f64>, decimals: usize) -> String {
    value.filter(|v| v.is_finite()).map_or("—".to_owned(), |v| format!("{v:.decimals$}"))
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Thousands separators.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostile_watch::FAILING_FUNCTION;

    #[test]
    fn a_big_record_is_one_megabyte_with_its_key_and_still_reads_as_the_long_one() {
        let record = big_record(7);
        assert_eq!(record.partition_key, "big7");
        assert_eq!(record.data.len() + record.partition_key.len(), BIG_RECORD_BYTES);
        assert_eq!(LongWrapper::decode(record.data.as_slice()).expect("a long").value, 1);
    }

    #[test]
    fn schedules_cover_the_count_in_invocations_of_at_most_the_given_size() {
        let records = schedules(5_000, 25_000, 10_000).expect("records");
        let parsed: Vec<Schedule> =
            records.iter().map(|r| serde_json::from_slice(&r.data).expect("a schedule")).collect();
        assert_eq!(
            parsed.iter().map(|s| (s.first, s.count)).collect::<Vec<_>>(),
            [(0, 10_000), (10_000, 10_000), (20_000, 5_000)]
        );
        assert!(parsed.iter().all(|s| s.due_at_ms == 5_000));
        let keys: HashSet<_> = records.iter().map(|r| r.partition_key.clone()).collect();
        assert_eq!(keys.len(), 3);
    }

    #[test]
    fn the_failing_function_is_the_one_served() {
        assert_eq!(FAILING_FUNCTION, crate::hostile_functions::failing_type().to_string());
    }

    #[test]
    fn the_module_routes_each_load_to_its_function() {
        let yaml = module_yaml("http://127.0.0.1:1/statefun");
        let module = statefun_runtime::config::ModuleConfig::parse(&yaml, "hostile").expect("valid module.yaml");
        assert_eq!(module.endpoints.len(), 1);
        for stream in [BIG_STREAM, FAILING_STREAM, SCHEDULE_STREAM, FANOUT_STREAM] {
            assert!(yaml.contains(stream), "{stream}");
        }
    }
}
