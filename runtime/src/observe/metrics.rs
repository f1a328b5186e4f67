//! The runtime's metrics, in a registry of its own (no global state), and the
//! handles the hot paths keep so that recording a value is an atomic add, not
//! a lookup by labels. Labels stay bounded: function types, streams, shards,
//! partitions and fixed sets of outcomes and reasons; never an address id or
//! anything from a message.

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::address::FunctionType;
use crate::partition::DeadLetterCause;

/// A label set: names fixed here, values owned or static.
pub(super) type Labels<const N: usize> = [(&'static str, Cow<'static, str>); N];

type HistogramFamily<const N: usize> = Family<Labels<N>, Histogram, fn() -> Histogram>;

/// Why a partition stopped against its will (`statefun_partition_failures_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// Its checkpoint could not be read or restored.
    Recovery,
    /// An epoch could not be committed or published (a permanent error), or the committer stopped.
    Commit,
    /// Its task panicked.
    Panic,
    /// Its last commit at a stop did not finish.
    Stop,
}

impl FailureReason {
    pub const ALL: [Self; 4] = [Self::Recovery, Self::Commit, Self::Panic, Self::Stop];

    pub fn label(self) -> &'static str {
        match self {
            Self::Recovery => "recovery",
            Self::Commit => "commit",
            Self::Panic => "panic",
            Self::Stop => "stop",
        }
    }
}

/// The dead-letter reason of egress records a stream refused for good (the
/// committer's; the engine's causes are [`DeadLetterCause`]).
pub const EGRESS_REFUSED: &str = "egress_refused";

/// Every metric of one process.
pub struct Metrics {
    registry: Registry,
    invocations: Family<Labels<2>, Counter>,
    invocation_duration: HistogramFamily<1>,
    invocation_batch_size: HistogramFamily<1>,
    pub(super) backlog: Family<Labels<1>, Gauge>,
    pub(super) blocked: Family<Labels<1>, Gauge>,
    pub(super) partitions_held: Gauge,
    pub(super) stuck_partitions: Gauge,
    commits: Family<Labels<1>, Counter>,
    commit_duration: Histogram,
    last_commit: Family<Labels<1>, Gauge<f64, AtomicU64>>,
    epoch_bytes: Histogram,
    ingress_records: Family<Labels<1>, Counter>,
    ingress_lag: Family<Labels<2>, Gauge>,
    exchange_records: Family<Labels<1>, Counter>,
    egress_records: Family<Labels<1>, Counter>,
    dead_letters: Family<Labels<1>, Counter>,
    partition_failures: Family<Labels<1>, Counter>,
    lease_takeovers: Counter,
    hand_overs: Family<Labels<1>, Counter>,
    /// Sums over the label sets, for the status page (not exported: Prometheus sums itself).
    pub(super) totals: Totals,
}

/// Process-wide sums over the label sets, for the status page and the
/// embedded metric format; every handle carries them (each field is shared).
#[derive(Clone, Default)]
pub struct Totals {
    /// Ingress and exchange records read.
    pub records_in: Counter,
    /// Egress and exchange records published.
    pub records_out: Counter,
    pub ingress: Counter,
    pub egress: Counter,
    /// Calls that ended (answered, or given up).
    pub invocations: Counter,
    pub invocations_dead_lettered: Counter,
    pub attempts: Counter,
    pub attempt_seconds: Counter<f64, AtomicU64>,
    pub dead_letters: Counter,
    pub commits: Counter,
    pub partition_failures: Counter,
}

fn seconds_buckets() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn batch_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 11))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let this = Self {
            invocations: Family::default(),
            invocation_duration: Family::new_with_constructor(seconds_buckets),
            invocation_batch_size: Family::new_with_constructor(batch_buckets),
            backlog: Family::default(),
            blocked: Family::default(),
            partitions_held: Gauge::default(),
            stuck_partitions: Gauge::default(),
            commits: Family::default(),
            commit_duration: seconds_buckets(),
            last_commit: Family::default(),
            // 1 KiB to 256 MiB.
            epoch_bytes: Histogram::new(exponential_buckets(1024.0, 4.0, 10)),
            ingress_records: Family::default(),
            ingress_lag: Family::default(),
            exchange_records: Family::default(),
            egress_records: Family::default(),
            dead_letters: Family::default(),
            partition_failures: Family::default(),
            lease_takeovers: Counter::default(),
            hand_overs: Family::default(),
            totals: Totals::default(),
            registry: Registry::default(),
        };
        // Counters are registered without `_total`: the exposition adds it.
        let r = &mut registry;
        r.register(
            "statefun_invocations",
            "Function calls by outcome: ok; retried (an attempt failed and was retried); dead_lettered (the call was given up: a single message is dead-lettered, a batch of several is split to find the poison message)",
            this.invocations.clone(),
        );
        r.register(
            "statefun_invocation_duration_seconds",
            "Time of one attempt of a function call",
            this.invocation_duration.clone(),
        );
        r.register("statefun_invocation_batch_size", "Messages per function call", this.invocation_batch_size.clone());
        r.register(
            "statefun_backlog_messages",
            "Messages waiting in memory for their address's batch in flight, a slot, or parked (StateFun's numBacklog)",
            this.backlog.clone(),
        );
        r.register(
            "statefun_blocked_addresses",
            "Addresses with a batch in flight (StateFun's numBlockedAddress)",
            this.blocked.clone(),
        );
        r.register("statefun_partitions_held", "Partitions this worker holds", this.partitions_held.clone());
        r.register("statefun_stuck_partitions", "Partitions this worker holds or tried to run that are stuck: failing, recovering for too long, or holding work without committing", this.stuck_partitions.clone());
        r.register("statefun_commits", "Epochs committed and published", this.commits.clone());
        r.register(
            "statefun_commit_duration_seconds",
            "Time to write, commit and publish one epoch",
            this.commit_duration.clone(),
        );
        r.register(
            "statefun_last_commit_timestamp_seconds",
            "When the partition's last epoch was published (Unix time)",
            this.last_commit.clone(),
        );
        r.register("statefun_epoch_bytes", "Encoded size of an epoch's checkpoint object", this.epoch_bytes.clone());
        r.register("statefun_ingress_records", "Records read from ingress streams", this.ingress_records.clone());
        r.register(
            "statefun_ingress_lag_milliseconds",
            "How far the partition's reader of an ingress shard is behind the shard's newest record (Kinesis' MillisBehindLatest; locally the age of the last record of a full read, 0 when caught up)",
            this.ingress_lag.clone(),
        );
        r.register(
            "statefun_exchange_records",
            "Exchange records read (in) and published (out)",
            this.exchange_records.clone(),
        );
        r.register("statefun_egress_records", "Records published to egress streams", this.egress_records.clone());
        r.register("statefun_dead_letters", "Messages dead-lettered, by cause", this.dead_letters.clone());
        r.register(
            "statefun_partition_failures",
            "Partitions that stopped against their will, by reason",
            this.partition_failures.clone(),
        );
        r.register(
            "statefun_lease_takeovers",
            "Leases taken over from another worker that stopped renewing them",
            this.lease_takeovers.clone(),
        );
        r.register(
            "statefun_hand_overs",
            "Committed batches, and ingress messages forwarded before their reader's commit, that another partition of this process handed over in memory: taken, or ignored (the exchange brings them)",
            this.hand_overs.clone(),
        );
        // Every reason is exported from the start, at zero, so that rates and alarms see the first one.
        for cause in DeadLetterCause::ALL {
            let _ = this.dead_letters.get_or_create(&[("reason", Cow::Borrowed(cause.label()))]);
        }
        let _ = this.dead_letters.get_or_create(&[("reason", Cow::Borrowed(EGRESS_REFUSED))]);
        for reason in FailureReason::ALL {
            let _ = this.partition_failures.get_or_create(&[("reason", Cow::Borrowed(reason.label()))]);
        }
        Self { registry, ..this }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// The handles of one function type's calls.
    pub fn function(&self, function_type: &FunctionType) -> FunctionMetrics {
        let name: Cow<'static, str> = Cow::Owned(function_type.to_string());
        let outcome = |outcome: &'static str| {
            self.invocations
                .get_or_create_owned(&[("function_type", name.clone()), ("outcome", Cow::Borrowed(outcome))])
        };
        FunctionMetrics {
            ok: outcome("ok"),
            retried: outcome("retried"),
            dead_lettered: outcome("dead_lettered"),
            duration: self.invocation_duration.get_or_create_owned(&[("function_type", name.clone())]),
            batch_size: self.invocation_batch_size.get_or_create_owned(&[("function_type", name)]),
            totals: self.totals.clone(),
        }
    }

    /// The handles of one partition's committer.
    pub fn committer(&self, partition: u32) -> CommitMetrics {
        let label = [("partition", Cow::Owned(partition.to_string()))];
        CommitMetrics {
            commits: self.commits.get_or_create_owned(&label),
            last_commit: self.last_commit.get_or_create_owned(&label),
            duration: self.commit_duration.clone(),
            epoch_bytes: self.epoch_bytes.clone(),
            exchange_out: self.exchange_records.get_or_create_owned(&[("direction", Cow::Borrowed("out"))]),
            egress: self.egress_records.clone(),
            refused: self.dead_letters.get_or_create_owned(&[("reason", Cow::Borrowed(EGRESS_REFUSED))]),
            totals: self.totals.clone(),
        }
    }

    /// The handles of a partition's hand-overs (taken, ignored).
    pub fn hand_overs(&self) -> HandOverMetrics {
        let outcome =
            |outcome: &'static str| self.hand_overs.get_or_create_owned(&[("outcome", Cow::Borrowed(outcome))]);
        HandOverMetrics { taken: outcome("taken"), ignored: outcome("ignored") }
    }

    /// The handles of one input shard's reader: ingress records and lag, or exchange records in.
    pub fn input(&self, stream: &str, shard: &str, ingress: bool) -> InputMetrics {
        if !ingress {
            let records = self.exchange_records.get_or_create_owned(&[("direction", Cow::Borrowed("in"))]);
            return InputMetrics { records, lag: None, totals: self.totals.clone() };
        }
        let labels = [("stream", Cow::Owned(stream.to_owned())), ("shard", Cow::Owned(shard.to_owned()))];
        InputMetrics {
            records: self.ingress_records.get_or_create_owned(&[("stream", Cow::Owned(stream.to_owned()))]),
            lag: Some(LagGauge {
                gauge: self.ingress_lag.get_or_create_owned(&labels),
                labels,
                family: self.ingress_lag.clone(),
            }),
            totals: self.totals.clone(),
        }
    }

    pub fn dead_lettered(&self, cause: &'static str, messages: u64) {
        if messages > 0 {
            self.dead_letters.get_or_create(&[("reason", Cow::Borrowed(cause))]).inc_by(messages);
            self.totals.dead_letters.inc_by(messages);
        }
    }

    /// Dead letters counted by the engine, by cause.
    pub fn dead_lettered_by_engine(&self, cause: DeadLetterCause, messages: u64) {
        self.dead_lettered(cause.label(), messages);
    }

    pub fn partition_failed(&self, reason: FailureReason) {
        self.partition_failures.get_or_create(&[("reason", Cow::Borrowed(reason.label()))]).inc();
        self.totals.partition_failures.inc();
    }

    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    pub fn lease_taken_over(&self) {
        self.lease_takeovers.inc();
    }
}

/// One function type's call metrics.
#[derive(Clone)]
pub struct FunctionMetrics {
    ok: Counter,
    retried: Counter,
    dead_lettered: Counter,
    duration: Histogram,
    batch_size: Histogram,
    totals: Totals,
}

impl FunctionMetrics {
    /// One attempt of a call of `messages` messages took `seconds`.
    pub fn attempt(&self, messages: usize, seconds: f64) {
        self.duration.observe(seconds);
        self.batch_size.observe(messages as f64);
        self.totals.attempts.inc();
        self.totals.attempt_seconds.inc_by(seconds);
    }

    pub fn ok(&self) {
        self.ok.inc();
        self.totals.invocations.inc();
    }

    pub fn retried(&self) {
        self.retried.inc();
    }

    pub fn dead_lettered(&self) {
        self.dead_lettered.inc();
        self.totals.invocations.inc();
        self.totals.invocations_dead_lettered.inc();
    }
}

/// What became of the hand-overs a partition was given.
#[derive(Clone)]
pub struct HandOverMetrics {
    taken: Counter,
    ignored: Counter,
}

impl HandOverMetrics {
    pub fn record(&self, taken: bool) {
        if taken {
            self.taken.inc()
        } else {
            self.ignored.inc()
        };
    }
}

/// One partition's commit metrics.
#[derive(Clone)]
pub struct CommitMetrics {
    commits: Counter,
    last_commit: Gauge<f64, AtomicU64>,
    duration: Histogram,
    epoch_bytes: Histogram,
    exchange_out: Counter,
    egress: Family<Labels<1>, Counter>,
    refused: Counter,
    totals: Totals,
}

impl CommitMetrics {
    /// An epoch of `bytes` was committed and published in `seconds`, at `at_ms`.
    pub fn committed(&self, bytes: usize, seconds: f64, at_ms: i64) {
        self.commits.inc();
        self.totals.commits.inc();
        self.duration.observe(seconds);
        self.epoch_bytes.observe(bytes as f64);
        self.last_commit.set(at_ms as f64 / 1000.0);
    }

    pub fn exchange_out(&self, records: usize) {
        self.exchange_out.inc_by(records as u64);
        self.totals.records_out.inc_by(records as u64);
    }

    pub fn egress(&self, stream: &str, records: usize) {
        self.egress.get_or_create(&[("stream", Cow::Owned(stream.to_owned()))]).inc_by(records as u64);
        self.totals.records_out.inc_by(records as u64);
        self.totals.egress.inc_by(records as u64);
    }

    /// Egress records their stream refused for good, dead-lettered.
    pub fn egress_refused(&self, records: usize) {
        self.refused.inc_by(records as u64);
        self.totals.dead_letters.inc_by(records as u64);
    }
}

/// One input shard's metrics.
pub struct InputMetrics {
    records: Counter,
    /// Ingress shards only (the exchange has none).
    lag: Option<LagGauge>,
    totals: Totals,
}

impl InputMetrics {
    /// A read returned `records` and left the reader `lag_ms` behind the shard's newest record, if known.
    pub fn read(&self, records: usize, lag_ms: Option<i64>) {
        self.records.inc_by(records as u64);
        self.totals.records_in.inc_by(records as u64);
        if let Some(gauge) = &self.lag {
            self.totals.ingress.inc_by(records as u64);
            if let Some(lag) = lag_ms {
                gauge.set(lag);
            }
        }
    }
}

/// An ingress shard's lag; its series goes away with its reader (the shard may move to another worker).
pub struct LagGauge {
    gauge: Gauge,
    labels: Labels<2>,
    family: Family<Labels<2>, Gauge>,
}

impl LagGauge {
    pub fn set(&self, millis: i64) {
        self.gauge.set(millis);
    }
}

impl Drop for LagGauge {
    fn drop(&mut self) {
        self.family.remove(&self.labels);
    }
}
