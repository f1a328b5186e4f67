//! `statefun setup`: creates what a deployment needs — the DynamoDB table, the
//! S3 bucket, the exchange (one shard per partition), the dead-letter stream,
//! the ingress streams of module.yaml and the egress streams named here — when
//! missing. For trying things on a local AWS stack and for tests; real
//! deployments create them with Terraform. Idempotent.

use super::out;
use anyhow::Context as _;
use clap::Args;
use statefun_runtime::checkpoint::s3::S3BlobStore;
use statefun_runtime::coordination::dynamodb::DynamoCommitStore;
use statefun_runtime::log::LogStore;
use statefun_runtime::log::kinesis::KinesisLogStore;
use statefun_runtime::log::local::LocalLogStore;

use super::{BackendKind, Storage, Topology};

#[derive(Args)]
pub struct SetupArgs {
    #[command(flatten)]
    storage: Storage,
    #[command(flatten)]
    topology: Topology,
    /// An egress stream to create (functions name them in their records, module.yaml does not); repeatable.
    #[arg(long = "egress-stream")]
    egress_streams: Vec<String>,
}

pub async fn setup(args: SetupArgs) -> anyhow::Result<()> {
    let module = args.topology.load()?;
    let topology = &args.topology;
    let shards = topology.stream_shards.max(1);
    let log: Box<dyn LogStore> = match args.storage.backend {
        BackendKind::Local => Box::new(LocalLogStore::new(&args.storage.data_dir)),
        BackendKind::Aws => {
            let config = statefun_runtime::aws::aws_sdk_config(args.storage.region.as_deref()).await;
            let bucket =
                args.storage.bucket.as_deref().context("--bucket (STATEFUN_BUCKET) is required with --backend aws")?;
            DynamoCommitStore::new(&config, &args.storage.table).create_table().await?;
            out!("table {}: ready", args.storage.table);
            S3BlobStore::new(&config, bucket, &args.storage.prefix).create_bucket().await?;
            out!("bucket {bucket}: ready");
            Box::new(KinesisLogStore::new(&config, true))
        }
    };
    let mut streams =
        vec![(topology.exchange_stream.clone(), topology.partitions), (topology.dead_letter_stream.clone(), 1)];
    streams.extend(module.ingress_streams().map(|(_, s)| (s.stream.clone(), shards)));
    streams.extend(args.egress_streams.iter().map(|s| (s.clone(), shards)));
    for (stream, count) in streams {
        let created = log.ensure_stream(&stream, count).await.with_context(|| format!("stream {stream}"))?;
        out!("stream {stream}: ready, {} shard(s)", created.len());
    }
    Ok(())
}
