//! One runtime process: it checks (or, in the local mode, creates) the
//! streams, takes every partition's lease, recovers each partition from its
//! checkpoint and runs one worker per partition until shutdown.
//!
//! This is the only place where backends, configuration and the engine meet;
//! the same code runs on the local backends and on the AWS ones.

use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::checkpoint::{self, BlobStore, fs::FsBlobStore, s3::S3BlobStore};
use crate::config::{ModuleConfig, StartupPosition};
use crate::coordination::{CommitStore, dynamodb::DynamoCommitStore, local::LocalCommitStore};
use crate::invoke::{Invoker, ModuleCatalog, retry::RetryPolicy};
use crate::log::{LogStore, Position, kinesis::KinesisLogStore, local::LocalLogStore};
use crate::partition::Partition;
use crate::partition::lineage::IngressStream;
use crate::partition::committer::{Committer, OutputStreams};
use crate::partition::worker::{Input, InputKind, PartitionWorker, WorkerSettings};

#[derive(Clone, Debug)]
pub struct NodeSettings {
    pub partitions: u32,
    /// This process' name in leases.
    pub owner: String,
    pub exchange_stream: String,
    pub dead_letter_stream: String,
    /// Shards of the local ingress and egress streams this process creates.
    pub stream_shards: u32,
    pub worker: WorkerSettings,
    pub retry: RetryPolicy,
}

/// The storage and invocation backends of one deployment.
pub struct Backends {
    pub log: Arc<dyn LogStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub commits: Arc<dyn CommitStore>,
    /// For Lambda endpoints (the AWS mode only).
    pub lambda: Option<aws_sdk_lambda::Client>,
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
            create_streams: true,
        })
    }

    /// Kinesis, S3, DynamoDB and Lambda through one SDK configuration.
    pub fn aws(config: &aws_config::SdkConfig, table: &str, bucket: &str, prefix: &str) -> Self {
        Self {
            log: Arc::new(KinesisLogStore::new(config, false)),
            blobs: Arc::new(S3BlobStore::new(config, bucket, prefix)),
            commits: Arc::new(DynamoCommitStore::new(config, table)),
            lambda: Some(aws_sdk_lambda::Client::new(config)),
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

/// Runs on the local backends of `data_dir`, which this process then holds alone.
pub async fn run_local(
    module: ModuleConfig,
    settings: NodeSettings,
    data_dir: &std::path::Path,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let _lock = lock_data_dir(data_dir)?;
    let backends = Backends::local(data_dir)?;
    run(module, settings, backends, shutdown).await
}

pub async fn run(
    module: ModuleConfig,
    settings: NodeSettings,
    backends: Backends,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let module = Arc::new(module);
    let invoker = Arc::new(Invoker::new(module.clone(), settings.retry, backends.lambda.clone())?);
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
    log.ensure_stream(&settings.dead_letter_stream, 1).await?;

    // Ingress streams are checked here (a missing one is named at start); their
    // shards are handed to partitions as they become readable (see `partition::lineage`).
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
        dead_letters: settings.dead_letter_stream.clone(),
        create_egress_streams: create_streams.then_some(settings.stream_shards),
    };
    let mut workers = tokio::task::JoinSet::new();
    let mut failure = None;
    for (id, exchange_shard) in exchange_shards.into_iter().enumerate() {
        let id = id as u32;
        let lease = commits.acquire(id, &settings.owner).await?;
        let (history, manifest) = match &lease.manifest {
            Some(manifest) => match checkpoint::load_history(blobs.as_ref(), id, manifest).await {
                Ok(history) => (history, *manifest),
                Err(e) => {
                    // Recovery is per partition: the others run on.
                    tracing::error!(partition = id, "cannot recover the partition, it stays stopped: {e}");
                    failure.get_or_insert_with(|| anyhow::anyhow!("partition {id} could not recover: {e}"));
                    continue;
                }
            },
            None => (Vec::new(), Default::default()),
        };
        let partition = Partition::restore(id, partitions, catalog.clone(), history);
        let committer = Committer {
            lease,
            partitions,
            log: log.clone(),
            blobs: blobs.clone(),
            commits: commits.clone(),
            streams: streams.clone(),
            committed_epoch: manifest.epoch,
            snapshot_epoch: manifest.snapshot_epoch,
        };
        let exchange = Input {
            stream: settings.exchange_stream.clone(),
            shard: exchange_shard.id,
            kind: InputKind::Exchange,
            start: Position::Start,
        };
        let worker = PartitionWorker {
            partition,
            partitions,
            invoker: invoker.clone(),
            log: log.clone(),
            blobs: blobs.clone(),
            committer,
            inputs: vec![exchange],
            ingress: ingress.clone(),
            settings: settings.worker.clone(),
        };
        workers.spawn(worker.run(shutdown.clone()));
    }
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
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
