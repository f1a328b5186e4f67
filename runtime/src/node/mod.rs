//! One runtime process: it checks (or, in the local mode, creates) the
//! streams, then holds leases (see [`leases`]): it recovers each partition it
//! takes from its checkpoint and runs one worker per partition, renews what it
//! holds, takes over what dead workers left, hands partitions over on request
//! and, on shutdown, commits and releases everything.
//!
//! This is the only place where backends, configuration and the engine meet;
//! the same code runs on the local backends and on the AWS ones.

mod catalog;
mod leases;

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::FutureExt as _;
use tokio::sync::watch;
use tokio::task::JoinSet;

use catalog::ModuleCatalog;
pub use leases::LeaseSettings;
use leases::{Decision, LeaseTable};

use crate::checkpoint::{self, BlobStore, fs::FsBlobStore, s3::S3BlobStore};
use crate::config::{EndpointConfig, ModuleConfig, StartupPosition};
use crate::coordination::guard::LeaseGuard;
use crate::coordination::{
    CommitError, CommitStore, Committed, Lease, dynamodb::DynamoCommitStore, local::LocalCommitStore,
};
use crate::dead_letters::Destination;
use crate::faults::{self, FaultPlan};
use crate::invoke::sigv4::AwsIdentity;
use crate::invoke::{Invoker, retry::RetryPolicy};
use crate::log::{LogStore, Position, kinesis::KinesisLogStore, local::LocalLogStore};
use crate::now_ms;
use crate::observe::Observer;
use crate::observe::metrics::FailureReason;
use crate::observe::reports::Reporter;
use crate::partition::Partition;
use crate::partition::budget::MemoryBudget;
use crate::worker::committer::{Collector, Committer, OutputStreams};
use crate::worker::handoff::{Chain, HandOvers};
use crate::worker::lineage::IngressStream;
use crate::worker::{Input, InputKind, PartitionWorker, WorkerError, WorkerSettings, panic_message};

#[derive(Clone, Debug)]
pub struct NodeSettings {
    pub partitions: u32,
    /// This process' name in leases.
    pub owner: String,
    pub exchange_stream: String,
    pub dead_letter_stream: String,
    /// Dead letters go to objects in the checkpoint store instead of the dead-letter stream.
    pub dead_letters_as_objects: bool,
    /// Shards of the local ingress and egress streams this process creates.
    pub stream_shards: u32,
    pub worker: WorkerSettings,
    /// Bytes the partitions of this process may hold besides their state
    /// (queued messages, timers, outboxes), shared among them.
    pub memory_budget: usize,
    /// Measures the process's resident bytes, which the budget then also keeps
    /// to (see [`MemoryBudget::note_resident`]); `None`: the budget counts alone.
    pub resident_memory: Option<fn() -> Option<usize>>,
    pub retry: RetryPolicy,
    pub leases: LeaseSettings,
    /// Faults to inject into the function endpoints (tests only; the AWS
    /// clients take theirs in [`Backends::aws`]).
    pub faults: Option<Arc<FaultPlan>>,
    /// Where this process's metrics and partition statuses are recorded.
    pub observer: Arc<Observer>,
}

/// How often the process's resident memory is measured.
const RESIDENT_EVERY: Duration = Duration::from_millis(100);

/// The storage and invocation backends of one deployment.
pub struct Backends {
    pub log: Arc<dyn LogStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub commits: Arc<dyn CommitStore>,
    /// For Lambda endpoints (the AWS mode only).
    pub lambda: Option<aws_sdk_lambda::Client>,
    /// The worker's AWS credentials and region, for HTTP endpoints that sign their requests.
    pub identity: Option<AwsIdentity>,
    /// Whether missing streams are created (the local mode) or an error (AWS:
    /// the deployment creates them).
    pub create_streams: bool,
}

impl Backends {
    /// Files under one data directory.
    pub fn local(data_dir: &std::path::Path) -> anyhow::Result<Self> {
        Ok(Self {
            log: Arc::new(LocalLogStore::new(data_dir)),
            blobs: Arc::new(FsBlobStore::new(data_dir)),
            commits: Arc::new(LocalCommitStore::open(data_dir)?),
            lambda: None,
            identity: None,
            create_streams: true,
        })
    }

    /// Kinesis, S3, DynamoDB and Lambda through one SDK configuration, each
    /// client with the fault layer of `plan` when it names the client's service.
    pub fn aws(
        config: &aws_config::SdkConfig,
        table: &str,
        bucket: &str,
        prefix: &str,
        plan: Option<&Arc<FaultPlan>>,
    ) -> Self {
        let mut log = KinesisLogStore::new(config, false);
        let mut blobs = S3BlobStore::new(config, bucket, prefix);
        let mut commits = DynamoCommitStore::new(config, table);
        let mut lambda = crate::invoke::lambda::sdk_client(config);
        if let Some(plan) = plan {
            log = log.with_faults(plan);
            blobs = blobs.with_faults(plan);
            commits = commits.with_faults(plan);
            lambda = faults::lambda_client(lambda, plan);
        }
        Self {
            log: Arc::new(log),
            blobs: Arc::new(blobs),
            commits: Arc::new(commits),
            lambda: Some(lambda),
            identity: AwsIdentity::from_sdk_config(config),
            create_streams: false,
        }
    }
}

/// Holds the data directory's lock for the life of the process: one runtime per directory.
fn lock_data_dir(data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let path = data_dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            anyhow::bail!("another runtime is already running on data directory {}", data_dir.display())
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

/// Runs on the local backends of `data_dir`, which this process then holds
/// alone; `identity` signs requests to endpoints that ask for it.
pub async fn run_local(
    module: ModuleConfig,
    settings: NodeSettings,
    data_dir: &std::path::Path,
    identity: Option<AwsIdentity>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let _lock = lock_data_dir(data_dir)?;
    let backends = Backends { identity, ..Backends::local(data_dir)? };
    // The lock proves whoever held a lease here before is gone.
    let leases = LeaseSettings { take_over_at_once: true, ..settings.leases.clone() };
    run(module, NodeSettings { leases, ..settings }, backends, shutdown).await
}

pub async fn run(
    module: ModuleConfig,
    settings: NodeSettings,
    backends: Backends,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    check_stream_roles(&settings, &module)?;
    let module = Arc::new(module);
    let plan = settings.faults.clone();
    let layer = |client, _: &EndpointConfig| faults::invoke::wrap(client, plan.as_ref());
    let invoker = Arc::new(
        Invoker::new(module.clone(), settings.retry, backends.lambda.clone(), backends.identity.as_ref(), &layer)?
            .with_observer(settings.observer.clone()),
    );
    let catalog = Arc::new(ModuleCatalog {
        invoker: invoker.clone(),
        module: module.clone(),
        internal_streams: vec![settings.exchange_stream.clone(), settings.dead_letter_stream.clone()],
    });
    let Backends { log, blobs, commits, create_streams, .. } = backends;
    let partitions = settings.partitions;
    // A missing bucket or table is named at start, not at the first commit.
    blobs.list(&checkpoint::partition_prefix(0)).await.context("checkpoint store")?;
    commits.committed(0).await.context("commit store")?;

    let exchange_shards = log.ensure_stream(&settings.exchange_stream, partitions).await?;
    anyhow::ensure!(
        exchange_shards.iter().all(|s| s.open),
        "exchange stream `{}` was resharded; its shards are the partitions and must not change",
        settings.exchange_stream
    );
    anyhow::ensure!(
        exchange_shards.len() == partitions as usize,
        "exchange stream `{}` has {} shards but the runtime runs {partitions} partitions; partitions cannot change on existing data",
        settings.exchange_stream,
        exchange_shards.len()
    );
    if !settings.dead_letters_as_objects {
        log.ensure_stream(&settings.dead_letter_stream, 1).await?;
    }

    // Ingress streams are checked here (a missing one is named at start); their
    // shards are handed to partitions as they become readable (see `worker::lineage`).
    let mut ingress = Vec::new();
    for (config, stream) in module.ingress_streams() {
        log.ensure_stream(&stream.stream, settings.stream_shards).await?;
        let start = match config.startup_position {
            StartupPosition::Latest => Position::Latest,
            StartupPosition::Earliest => Position::Start,
            StartupPosition::Date(at) => Position::AtTimestamp(
                at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0),
            ),
        };
        ingress.push(IngressStream {
            stream: stream.stream.clone(),
            value_type: stream.value_type.clone(),
            targets: stream.targets.clone(),
            start,
        });
    }

    let streams = OutputStreams {
        exchange: settings.exchange_stream.clone(),
        dead_letters: if settings.dead_letters_as_objects {
            Destination::Objects(blobs.clone())
        } else {
            Destination::Stream(settings.dead_letter_stream.clone())
        },
        create_egress_streams: create_streams.then_some(settings.stream_shards),
    };
    let context = Arc::new(PartitionContext {
        partitions,
        invoker,
        catalog,
        log,
        blobs,
        commits: commits.clone(),
        streams,
        ingress,
        exchange_shards: exchange_shards.into_iter().map(|s| s.id).collect(),
        worker: settings.worker.clone(),
        budget: MemoryBudget::new(settings.memory_budget),
        hand_overs: settings.worker.hand_over.then(|| Arc::new(HandOvers::new(partitions))),
        observer: settings.observer.clone(),
    });
    let mut side_tasks = JoinSet::new();
    // The worker's report, for `statefun status`: written when a partition changes phase, and when due.
    let (blobs, observer, owner) = (context.blobs.clone(), context.observer.clone(), settings.owner.clone());
    let every = settings.leases.renew_every;
    side_tasks.spawn(async move {
        let mut reporter = Reporter::new(&owner);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            reporter.report(blobs.as_ref(), &observer, now_ms()).await;
        }
    });
    if let Some(measure) = settings.resident_memory {
        let budget = context.budget.clone();
        side_tasks.spawn(async move {
            let mut every = tokio::time::interval(RESIDENT_EVERY);
            loop {
                every.tick().await;
                if let Some(bytes) = measure() {
                    budget.note_resident(bytes);
                    tracing::trace!(
                        resident = bytes,
                        counted = budget.used(),
                        "resident memory and what the partitions count"
                    );
                }
            }
        });
    }
    let held = hold_leases(context.clone(), &settings, shutdown).await;
    side_tasks.abort_all();
    // Stopped cleanly or not, this worker holds nothing any more.
    Reporter::new(&settings.owner).withdraw(context.blobs.as_ref()).await;
    held
}

/// Refuses a stream given two roles: the exchange or the dead-letter stream
/// read as an ingress (the runtime would consume its own output as input), or
/// dead letters written to the exchange (they would be read as batches).
fn check_stream_roles(settings: &NodeSettings, module: &ModuleConfig) -> anyhow::Result<()> {
    let dead_letters = (!settings.dead_letters_as_objects).then_some(settings.dead_letter_stream.as_str());
    anyhow::ensure!(
        dead_letters != Some(settings.exchange_stream.as_str()),
        "the dead-letter stream and the exchange are both `{}`: give them different streams",
        settings.exchange_stream
    );
    for (ingress, stream) in module.ingress_streams() {
        let role = match stream.stream.as_str() {
            name if name == settings.exchange_stream => "the exchange",
            name if Some(name) == dead_letters => "the dead-letter stream",
            _ => continue,
        };
        anyhow::bail!(
            "document {} (ingress `{}`) reads stream `{}`, which is {role} of this runtime: give the ingress another stream",
            ingress.document,
            ingress.id,
            stream.stream
        );
    }
    Ok(())
}

/// What every partition of this process shares.
struct PartitionContext {
    partitions: u32,
    invoker: Arc<Invoker>,
    catalog: Arc<ModuleCatalog>,
    log: Arc<dyn LogStore>,
    blobs: Arc<dyn BlobStore>,
    commits: Arc<dyn CommitStore>,
    streams: OutputStreams,
    ingress: Vec<IngressStream>,
    exchange_shards: Vec<String>,
    worker: WorkerSettings,
    budget: Arc<MemoryBudget>,
    /// The partitions of this process, to hand each other committed messages (with --hand-over).
    hand_overs: Option<Arc<HandOvers>>,
    observer: Arc<Observer>,
}

/// A partition running here.
struct Held {
    lease: Lease,
    guard: Arc<LeaseGuard>,
    /// Asks the partition to commit and stop (shutdown, hand-over).
    stop: watch::Sender<bool>,
}

/// How long a partition that failed here rests before this worker takes it again.
const FAILED_PARTITION_REST: Duration = Duration::from_secs(5);

/// The lease loop: every round renews what is held (a rejected renewal stops
/// that partition at once; a requested hand-over stops it after a last
/// commit, then releases it), reads every lease, and takes or asks for what
/// [`LeaseTable::decide`] says. Runs until shutdown; then every partition
/// commits and its lease is released, so another worker can take it at once.
async fn hold_leases(
    context: Arc<PartitionContext>,
    settings: &NodeSettings,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let leases = &settings.leases;
    let commits = context.commits.clone();
    let board = &context.observer.board;
    let metrics = &context.observer.metrics;
    let mut table = LeaseTable::default();
    let mut held: HashMap<u32, Held> = HashMap::new();
    let mut resting: HashMap<u32, Instant> = HashMap::new();
    let mut running: JoinSet<(u32, Result<(), WorkerError>)> = JoinSet::new();
    let mut round = tokio::time::interval(leases.renew_every);
    round.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = round.tick() => {}
            Some(joined) = running.join_next() => {
                let (partition, outcome) = match joined {
                    Ok(ended) => ended,
                    Err(e) => {
                        tracing::error!("a partition task panicked: {e}");
                        continue;
                    }
                };
                let Some(ended) = held.remove(&partition) else { continue };
                match outcome {
                    // A hand-over: committed, now released.
                    Ok(()) => {
                        release(commits.as_ref(), &ended.lease, leases.renew_every).await;
                        board.gone(partition);
                    }
                    Err(WorkerError::Fenced { reason, .. }) => {
                        tracing::warn!(partition, reason = %reason, "partition lost its lease; stopped");
                        board.gone(partition);
                    }
                    Err(WorkerError::Failed { reason, cause, .. }) => {
                        tracing::error!(
                            partition,
                            reason = %reason,
                            cause = cause.label(),
                            "partition failed; released, retried after {FAILED_PARTITION_REST:?}"
                        );
                        metrics.partition_failed(cause);
                        board.failed(partition, &reason, now_ms());
                        // Whatever of the partition still runs (its committer) must stop publishing now.
                        ended.guard.revoke();
                        release(commits.as_ref(), &ended.lease, leases.renew_every).await;
                        resting.insert(partition, Instant::now() + FAILED_PARTITION_REST);
                    }
                }
                continue;
            }
            _ = shutdown.changed() => break,
        }

        renew_all(&commits, &held, leases).await;

        let now = Instant::now();
        resting.retain(|_, until| *until > now);
        let Some(records) = read_leases(&commits, context.partitions, leases.renew_every).await else { continue };
        board.lease_round_done(now_ms());
        for (partition, record) in records.iter().enumerate() {
            table.observe(partition as u32, record.as_ref(), now);
        }
        let held_ids: HashSet<u32> = held.keys().copied().collect();
        let resting_ids: HashSet<u32> = resting.keys().copied().collect();
        for decision in table.decide(&settings.owner, &records, &held_ids, &resting_ids, now, leases) {
            match decision {
                Decision::Take { partition, seen } => {
                    let started = Instant::now();
                    // A take that lands after its time is up shows as this worker's own silent
                    // lease next round, and is taken over after the failover time.
                    match within(leases.renew_every, commits.take(partition, &settings.owner, seen.as_ref())).await {
                        Ok(Some(lease)) => {
                            let guard = Arc::new(LeaseGuard::new(started, leases.validity()));
                            let (stop, stopped) = watch::channel(false);
                            match seen.as_ref().filter(|seen| !seen.is_free() && seen.owner != settings.owner) {
                                Some(seen) => {
                                    tracing::warn!(partition, counter = lease.counter, previous_owner = %seen.owner, "took the lease over from a silent worker");
                                    metrics.lease_taken_over();
                                }
                                None => tracing::info!(partition, counter = lease.counter, "took the lease"),
                            }
                            board.recovering(partition, lease.counter, now_ms());
                            let task = run_partition(context.clone(), lease.clone(), guard.clone(), stopped);
                            running.spawn(without_panics(partition, task));
                            held.insert(partition, Held { lease, guard, stop });
                        }
                        Ok(None) => tracing::debug!(partition, "another worker moved the lease first"),
                        Err(e) => tracing::warn!(partition, "taking the lease failed: {e}"),
                    }
                }
                Decision::AskForHandover { partition, seen } => {
                    tracing::info!(partition, holder = %seen.owner, "asking for the partition, to balance the load");
                    let request = commits.request_handover(partition, &settings.owner, &seen);
                    if let Err(e) = within(leases.renew_every, request).await {
                        tracing::warn!(partition, "asking for a hand-over failed: {e}");
                    }
                }
            }
        }
    }

    for (&partition, holding) in &held {
        holding.stop.send_replace(true);
        board.stopping(partition, now_ms());
    }
    // Leases are renewed while the partitions drain: a slow last commit must not outlive its lease.
    let mut failure = None;
    loop {
        let joined = tokio::select! {
            joined = running.join_next() => match joined {
                Some(joined) => joined,
                None => break,
            },
            _ = round.tick() => {
                renew_all(&commits, &held, leases).await;
                continue;
            }
        };
        match joined {
            Ok((partition, Ok(()))) => {
                if let Some(ended) = held.remove(&partition) {
                    release(commits.as_ref(), &ended.lease, leases.renew_every).await;
                }
                board.gone(partition);
            }
            Ok((partition, Err(e))) => {
                held.remove(&partition);
                tracing::error!("{e}");
                failure.get_or_insert_with(|| anyhow::anyhow!(e));
            }
            Err(e) => {
                failure.get_or_insert_with(|| anyhow::anyhow!("partition worker panicked: {e}"));
            }
        }
    }
    failure.map_or(Ok(()), Err)
}

/// Renews every held lease, all at once, each call given one renewal
/// interval: one slow call must not hold up this round, nor the next rounds
/// of every other partition, past their deadlines (a late renewal that lands
/// after all only bumps the heartbeat). A rejected renewal revokes the
/// partition's lease at once, a requested hand-over asks the partition to
/// commit and stop.
async fn renew_all(commits: &Arc<dyn CommitStore>, held: &HashMap<u32, Held>, leases: &LeaseSettings) {
    let renew_every = leases.renew_every;
    let mut renewals = JoinSet::new();
    for (&partition, holding) in held {
        let (commits, lease) = (commits.clone(), holding.lease.clone());
        renewals.spawn(async move {
            let started = Instant::now();
            (partition, started, within(renew_every, commits.renew(&lease)).await)
        });
    }
    while let Some(joined) = renewals.join_next().await {
        let Ok((partition, started, renewed)) = joined else { continue };
        let Some(holding) = held.get(&partition) else { continue };
        match renewed {
            Ok(renewal) => {
                holding.guard.renewed(started, leases.validity());
                if renewal.handover_requested && !*holding.stop.borrow() {
                    tracing::info!(partition, "handing the partition over on request");
                    holding.stop.send_replace(true);
                }
            }
            Err(CommitError::LeaseLost { .. }) => {
                tracing::warn!(partition, "the lease was taken over; stopping the partition");
                holding.guard.revoke();
            }
            Err(e) => {
                tracing::warn!(partition, "renewing the lease failed: {e}");
                if !holding.guard.is_valid() {
                    holding.guard.revoke();
                }
            }
        }
    }
}

/// Every partition's lease record, read all at once; `None` if any read failed (the round is skipped).
async fn read_leases(
    commits: &Arc<dyn CommitStore>,
    partitions: u32,
    limit: Duration,
) -> Option<Vec<Option<Committed>>> {
    let mut reads = JoinSet::new();
    for partition in 0..partitions {
        let commits = commits.clone();
        reads.spawn(async move { (partition, within(limit, commits.lease(partition)).await) });
    }
    let mut records = vec![None; partitions as usize];
    let mut complete = true;
    while let Some(joined) = reads.join_next().await {
        let Ok((partition, read)) = joined else {
            complete = false;
            continue;
        };
        match read {
            Ok(record) => records[partition as usize] = record,
            Err(e) => {
                tracing::warn!(partition, "reading the lease table failed, trying again next round: {e}");
                complete = false;
            }
        }
    }
    complete.then_some(records)
}

/// A call to the commit store that gives up after `limit`: the lease loop
/// gives every call one renewal interval, so that one call that hangs cannot
/// hold the loop, and with it every held partition's renewals.
async fn within<T>(limit: Duration, call: impl Future<Output = Result<T, CommitError>>) -> Result<T, CommitError> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| Err(CommitError::Backend(format!("no answer within {limit:?}"))))
}

async fn release(commits: &dyn CommitStore, lease: &Lease, limit: Duration) {
    match within(limit, commits.release(lease)).await {
        Ok(()) => tracing::info!(partition = lease.partition, "released the lease"),
        // Another worker takes it over after the failover time.
        Err(e) => tracing::warn!(partition = lease.partition, "releasing the lease failed: {e}"),
    }
}

/// A partition task that panics fails like any other failure: its lease is
/// released and the partition taken again after a rest (here or by another
/// worker), instead of staying held and renewed with nothing running it.
async fn without_panics(
    partition: u32,
    task: impl Future<Output = (u32, Result<(), WorkerError>)>,
) -> (u32, Result<(), WorkerError>) {
    match AssertUnwindSafe(task).catch_unwind().await {
        Ok(ended) => ended,
        Err(panic) => {
            let reason = format!("the partition's task panicked: {}", panic_message(panic.as_ref()));
            (partition, Err(WorkerError::Failed { partition, reason, cause: FailureReason::Panic }))
        }
    }
}

/// Refuses to begin a partition's history afresh when the checkpoint store
/// shows it had one: an object of epoch 2 or later exists only once epoch 1
/// was committed, so its commit record was lost (the table deleted or
/// recreated). Starting from nothing would silently drop the partition's
/// state. An object of epoch 1 alone may be a first epoch that was never
/// committed, and does not count.
async fn history_without_commit_record(blobs: &dyn BlobStore, partition: u32) -> Result<(), String> {
    let keys = blobs
        .list(&checkpoint::partition_prefix(partition))
        .await
        .map_err(|e| format!("checking for a lost history: {e}"))?;
    match keys.iter().find(|key| checkpoint::epoch_of_key(key).is_some_and(|epoch| epoch >= 2)) {
        None => Ok(()),
        Some(key) => Err(format!(
            "partition {partition} has no commit record, but the checkpoint store holds its history ({key}): the commit \
             record was lost (the table deleted or recreated?). Refusing to start it empty. Restore the record, or \
             delete the objects under {} to start the partition empty on purpose",
            checkpoint::partition_prefix(partition)
        )),
    }
}

/// Recovers a partition from its checkpoint and runs it until it stops.
async fn run_partition(
    context: Arc<PartitionContext>,
    lease: Lease,
    guard: Arc<LeaseGuard>,
    stop: watch::Receiver<bool>,
) -> (u32, Result<(), WorkerError>) {
    let id = lease.partition;
    let manifest = lease.manifest.unwrap_or_default();
    let catalog = context.catalog.clone();
    let recovered = match &lease.manifest {
        Some(manifest) => checkpoint::recover(context.blobs.as_ref(), id, context.partitions, catalog, manifest)
            .await
            .map_err(|e| format!("cannot recover: {e}")),
        None => match history_without_commit_record(context.blobs.as_ref(), id).await {
            Ok(()) => {
                Ok(Partition::new(id, context.partitions, catalog, 1).with_incarnation(rand::random::<u64>().max(1)))
            }
            Err(refusal) => Err(format!("cannot recover: {refusal}")),
        },
    };
    let partition = match recovered {
        Ok(partition) => partition,
        Err(reason) => return (id, Err(WorkerError::Failed { partition: id, reason, cause: FailureReason::Recovery })),
    };
    let committer = Committer {
        lease,
        guard,
        log: context.log.clone(),
        blobs: context.blobs.clone(),
        commits: context.commits.clone(),
        streams: context.streams.clone(),
        committed_epoch: manifest.epoch,
        snapshot_epoch: manifest.snapshot_epoch,
        incarnation: partition.incarnation(),
        metrics: context.observer.metrics.committer(id),
        hand_overs: context.hand_overs.clone(),
        chain: Chain::default(),
        collector: Collector::default(),
    };
    let exchange = Input {
        stream: context.streams.exchange.clone(),
        shard: context.exchange_shards[id as usize].clone(),
        kind: InputKind::Exchange,
        start: Position::Start,
    };
    let worker = PartitionWorker {
        partition,
        partitions: context.partitions,
        invoker: context.invoker.clone(),
        log: context.log.clone(),
        blobs: context.blobs.clone(),
        committer,
        inputs: vec![exchange],
        ingress: context.ingress.clone(),
        settings: context.worker.clone(),
        budget: context.budget.clone(),
        hand_overs: context.hand_overs.clone(),
        observer: context.observer.clone(),
    };
    (id, worker.run(stop).await)
}

#[cfg(test)]
mod tests;
