//! `statefun run`: load module.yaml, then run every partition until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use statefun_runtime::faults::{self, FaultPlan};
use statefun_runtime::invoke::retry::RetryPolicy;
use statefun_runtime::invoke::sigv4::AwsIdentity;
use statefun_runtime::node::{self, LeaseSettings, NodeSettings};
use statefun_runtime::observe::emf::{self, EmfSettings};
use statefun_runtime::observe::{Observer, admin};
use statefun_runtime::partition::{Bounds, DEFAULT_MAX_HOPS};
use statefun_runtime::worker::WorkerSettings;

use super::{BackendKind, DeadLetterDestination, Storage, Topology, byte_size, duration};

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    storage: Storage,
    #[command(flatten)]
    topology: Topology,
    /// The longest a partition waits between commits. With --group-commit (the
    /// default) an epoch is committed sooner, as soon as output waits in it.
    #[arg(long, env = "STATEFUN_COMMIT_INTERVAL", default_value = "100ms", value_parser = duration)]
    commit_interval: Duration,
    /// Commit an epoch as soon as it holds output someone waits for (egress
    /// records, messages for other partitions), its inputs are caught up and no
    /// commit is in flight; a partition with a backlog commits every --commit-interval.
    /// With false, epochs are committed every --commit-interval only. Default:
    /// true on the local backend, false on AWS (measured on the local AWS
    /// stack, the extra commits cost more than they saved).
    #[arg(long, env = "STATEFUN_GROUP_COMMIT", action = clap::ArgAction::Set)]
    group_commit: Option<bool>,
    /// Hand the committed messages for another partition of this process
    /// straight to it, besides appending them to the exchange (whose copy is
    /// then dropped as a duplicate): a hop without the exchange's round trip.
    /// Ingress messages for another partition of this process are forwarded
    /// to it even before the reading epoch commits.
    #[arg(long, env = "STATEFUN_HAND_OVER", action = clap::ArgAction::Set, default_value_t = true)]
    hand_over: bool,
    /// At least one epoch in this many is a full snapshot that replaces the deltas; one
    /// comes sooner (but at most one in a tenth of this many) once the deltas since the
    /// last snapshot are larger than it.
    #[arg(long, env = "STATEFUN_SNAPSHOT_EVERY", default_value_t = 1000)]
    snapshot_every: u64,
    /// Input pauses while a partition holds more queued messages than this.
    #[arg(long, env = "STATEFUN_MAX_QUEUED", default_value_t = 100_000)]
    max_queued: usize,
    /// An epoch is committed before its interval is up once its outbox holds this many
    /// entries (messages for other partitions, egress records, dead letters): bounds memory.
    #[arg(long, env = "STATEFUN_MAX_EPOCH_ENTRIES", default_value_t = 100_000)]
    max_epoch_entries: usize,
    /// Attempts per invocation (the first included) before its messages are dead-lettered.
    #[arg(long, env = "STATEFUN_INVOKE_ATTEMPTS", default_value_t = 6)]
    invoke_attempts: u32,
    /// First retry delay, doubling up to --invoke-max-backoff, with jitter.
    #[arg(long, env = "STATEFUN_INVOKE_BACKOFF", default_value = "100ms", value_parser = duration)]
    invoke_backoff: Duration,
    #[arg(long, env = "STATEFUN_INVOKE_MAX_BACKOFF", default_value = "5s", value_parser = duration)]
    invoke_max_backoff: Duration,
    /// How often ingress streams are listed for shards a reshard opened.
    #[arg(long, env = "STATEFUN_SHARD_DISCOVERY", default_value = "10s", value_parser = duration)]
    shard_discovery: Duration,
    /// How often each held partition lease is renewed (and the lease table read).
    #[arg(long, env = "STATEFUN_LEASE_RENEW", default_value = "2s", value_parser = duration)]
    lease_renew: Duration,
    /// How long a lease's holder must be silent before another worker takes the partition over.
    #[arg(long, env = "STATEFUN_LEASE_FAILOVER", default_value = "10s", value_parser = duration)]
    lease_failover: Duration,
    /// Bytes the partitions of this process may hold besides their state (queued
    /// and in-flight messages, timers, outboxes); input pauses beyond it. By
    /// default a quarter of the memory the process may use (its container's
    /// limit, else the machine's).
    #[arg(long, env = "STATEFUN_MEMORY_BUDGET", value_parser = byte_size)]
    memory_budget: Option<usize>,
    /// What one address may hold queued in memory (and a quarter of --max-queued
    /// messages); what arrives beyond it is parked in the checkpoint store until
    /// its mailbox drains, so one backed-up address never pauses the input of the others.
    #[arg(long, env = "STATEFUN_ADDRESS_MAX_BYTES", default_value = "16MiB", value_parser = byte_size)]
    address_max_bytes: usize,
    /// A message chain longer than this (each message sent by the function that
    /// received the one before) is taken for a loop and dead-lettered.
    #[arg(long, env = "STATEFUN_MAX_HOPS", default_value_t = DEFAULT_MAX_HOPS)]
    max_hops: u32,
    /// How often idle inputs are polled.
    #[arg(long, env = "STATEFUN_POLL_INTERVAL", default_value = "10ms", value_parser = duration)]
    poll_interval: Duration,
    /// Serve metrics (/metrics), health (/health), readiness (/ready) and a live
    /// status page (/) over HTTP at this address, e.g. 127.0.0.1:9464 (port 0:
    /// any free port; the address is logged). Off when not given.
    #[arg(long, env = "STATEFUN_ADMIN_LISTEN")]
    admin_listen: Option<std::net::SocketAddr>,
    /// A partition that keeps failing, recovers, or holds work without a commit
    /// for longer than this counts as stuck (status, metrics, alarms).
    #[arg(long, env = "STATEFUN_STUCK_AFTER", default_value = "2m", value_parser = duration)]
    stuck_after: Duration,
    /// Write metrics to stdout in CloudWatch's embedded metric format, one line
    /// every --metrics-emf-interval (on ECS the log driver ships them to CloudWatch).
    #[arg(long, env = "STATEFUN_METRICS_EMF")]
    metrics_emf: bool,
    #[arg(long, env = "STATEFUN_METRICS_EMF_INTERVAL", default_value = "60s", value_parser = duration)]
    metrics_emf_interval: Duration,
    /// The CloudWatch namespace of the embedded metrics.
    #[arg(long, env = "STATEFUN_METRICS_EMF_NAMESPACE", default_value = "StatefunAws")]
    metrics_emf_namespace: String,
    /// The value of the embedded metrics' `Deployment` dimension.
    #[arg(long, env = "STATEFUN_METRICS_EMF_DEPLOYMENT", default_value = "statefun")]
    metrics_emf_deployment: String,
    /// Faults to inject, for tests only (syntax: the `faults` module of the runtime).
    #[arg(long, env = faults::ENV, hide = true)]
    faults: Option<String>,
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let module = args.topology.load()?;
    let faults = fault_plan(args.faults.as_deref())?;
    anyhow::ensure!(args.invoke_attempts >= 1, "--invoke-attempts must be at least 1");
    anyhow::ensure!(args.snapshot_every >= 1, "--snapshot-every must be at least 1");
    anyhow::ensure!(!args.commit_interval.is_zero(), "--commit-interval must be above zero");
    let memory_budget = match args.memory_budget {
        Some(bytes) => bytes,
        None => default_memory_budget().context("--memory-budget is not given and the memory available is unknown")?,
    };
    tracing::info!(memory_budget_bytes = memory_budget, "memory budget");
    let owner = owner_name();
    let observer = Arc::new(Observer::new(&owner, args.stuck_after));
    // Bound before anything starts: a taken port stops the start, naming it.
    let _admin = match args.admin_listen {
        Some(address) => Some(start_admin_server(address, observer.clone()).await?),
        None => None,
    };
    anyhow::ensure!(!args.metrics_emf_interval.is_zero(), "--metrics-emf-interval must be above zero");
    let _emf = args.metrics_emf.then(|| {
        let settings = EmfSettings {
            namespace: args.metrics_emf_namespace.clone(),
            deployment: args.metrics_emf_deployment.clone(),
            interval: args.metrics_emf_interval,
        };
        tracing::info!(namespace = %settings.namespace, deployment = %settings.deployment, "writing embedded metrics to stdout every {:?}", settings.interval);
        AbortOnDrop(tokio::spawn(emf::write_every(observer.clone(), settings)))
    });
    let settings = NodeSettings {
        partitions: args.topology.partitions,
        owner,
        exchange_stream: args.topology.exchange_stream,
        dead_letter_stream: args.topology.dead_letter_stream,
        dead_letters_as_objects: args.topology.dead_letter_destination == DeadLetterDestination::Objects,
        stream_shards: args.topology.stream_shards.max(1),
        worker: WorkerSettings {
            commit_interval: args.commit_interval,
            group_commit: args.group_commit.unwrap_or(args.storage.backend == BackendKind::Local),
            hand_over: args.hand_over,
            snapshot_every: args.snapshot_every,
            max_queued: args.max_queued.max(1),
            max_epoch_entries: args.max_epoch_entries.max(1),
            poll_interval: args.poll_interval,
            read_batch: 500,
            expiry_sweep: Duration::from_secs(1),
            shard_discovery: args.shard_discovery,
            bounds: Bounds {
                max_hops: args.max_hops,
                address_max_bytes: args.address_max_bytes,
                address_max_messages: (args.max_queued / 4).max(1),
                ..Bounds::default()
            },
        },
        memory_budget,
        resident_memory: Some(resident_bytes),
        retry: RetryPolicy {
            max_attempts: args.invoke_attempts,
            initial_backoff: args.invoke_backoff,
            max_backoff: args.invoke_max_backoff,
        },
        leases: LeaseSettings {
            renew_every: args.lease_renew,
            failover: args.lease_failover,
            take_over_at_once: false,
        },
        faults: faults.clone(),
        observer,
    };
    settings.leases.validate().map_err(anyhow::Error::msg)?;
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: committing and stopping every partition");
        let _ = stop.send(true);
    });
    tracing::info!(partitions = settings.partitions, backend = ?args.storage.backend, owner = %settings.owner, "runtime starting");
    let outcome = match args.storage.backend {
        BackendKind::Local => {
            // The local mode needs AWS credentials only to sign requests to endpoints that ask for it.
            let identity = match module.signs_requests() {
                true => AwsIdentity::from_sdk_config(&args.storage.sdk_config().await),
                false => None,
            };
            node::run_local(module, settings, &args.storage.data_dir, identity, shutdown).await
        }
        BackendKind::Aws => node::run(module, settings, args.storage.backends(faults.as_ref()).await?, shutdown).await,
    };
    outcome.context("runtime stopped")
}

/// Listens at `address` and serves the admin endpoints until the returned task is dropped.
async fn start_admin_server(address: SocketAddr, observer: Arc<Observer>) -> anyhow::Result<AbortOnDrop> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("--admin-listen {address}: cannot listen there"))?;
    let bound = listener.local_addr().context("--admin-listen: the bound address")?;
    tracing::info!(address = %bound, "admin server listening: status page at http://{bound}/, metrics at http://{bound}/metrics");
    Ok(AbortOnDrop(tokio::spawn(admin::serve(listener, observer))))
}

/// A task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The plan of `--faults` (`STATEFUN_FAULTS`), parsed once, here; a plan is
/// announced by a warning naming every fault in it, so one set by mistake
/// shows at once. An invalid plan stops the start, naming the item.
fn fault_plan(text: Option<&str>) -> anyhow::Result<Option<Arc<FaultPlan>>> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else { return Ok(None) };
    let plan = FaultPlan::parse(text)?;
    tracing::warn!("fault injection is on ({}): these faults will be injected on purpose: {plan}", faults::ENV);
    Ok(Some(Arc::new(plan)))
}

/// A quarter of what the process may use: its cgroup's limit (a container's),
/// else the machine's memory. The rest is for state, buffers and the allocator.
fn default_memory_budget() -> anyhow::Result<usize> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|text| text.trim().parse::<u64>().ok());
    let machine = read("/proc/meminfo").and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?.to_owned();
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    // An unlimited cgroup reads "max" (v2) or a number near 2^63 (v1): the machine's figure is then the smaller.
    let total = match (cgroup, machine) {
        (Some(c), Some(m)) => c.min(m),
        (Some(only), None) | (None, Some(only)) => only,
        (None, None) => anyhow::bail!("neither /sys/fs/cgroup nor /proc/meminfo tells the memory"),
    };
    Ok(usize::try_from(total / 4).unwrap_or(usize::MAX))
}

/// The process's resident memory (Linux' VmRSS); `None` where it cannot be read.
fn resident_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// A name for this process in leases: host, pid and a random part, unique across restarts.
fn owner_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    format!("{host}-{}-{:08x}", std::process::id(), rand::random::<u32>())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_plan_is_parsed_once_at_start_and_a_bad_one_stops_it_naming_the_item() {
        assert!(fault_plan(None).expect("no plan").is_none());
        assert!(fault_plan(Some("  ")).expect("an empty plan").is_none());
        let plan = fault_plan(Some("seed=3; s3.error=5%")).expect("valid").expect("a plan");
        assert_eq!(plan.to_string(), "seed=3; s3.error=5%", "the warning names every item");
        let error = fault_plan(Some("seed=3; s3.eror=1")).expect_err("invalid").to_string();
        assert!(error.contains("STATEFUN_FAULTS: item `s3.eror=1`: unknown fault `eror`"), "{error}");
    }
}
