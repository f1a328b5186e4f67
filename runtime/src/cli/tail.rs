//! `statefun tail`: print a stream's records, readable or as JSON lines.

use super::out;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use statefun_runtime::log::{LogError, Position};
use statefun_runtime::values::ValueCodec;

use super::{Storage, duration, patiently};

#[derive(Args)]
pub struct TailArgs {
    #[command(flatten)]
    storage: Storage,
    #[arg(long)]
    stream: String,
    /// Keep waiting for new records.
    #[arg(long)]
    follow: bool,
    /// With --follow: stop after no new record arrived for this long.
    #[arg(long, value_parser = duration)]
    idle_exit: Option<Duration>,
    /// Stop after this many records.
    #[arg(long)]
    limit: Option<usize>,
    /// Start from the end: only records appended from now on.
    #[arg(long, conflicts_with = "since")]
    latest: bool,
    /// Only records appended at or after this time (milliseconds since the epoch).
    #[arg(long, env = "STATEFUN_TAIL_SINCE")]
    since: Option<i64>,
    /// Decode values as this typename (values that are JSON or text print as such anyway).
    #[arg(long = "type")]
    typename: Option<String>,
    #[arg(long)]
    descriptor_set: Vec<PathBuf>,
    /// One JSON object per record: {"shard","sequence","key","id","value"}.
    #[arg(long)]
    json: bool,
}

/// Records per read: Kinesis' most per `GetRecords`, so long streams take few (paced) calls.
const READ_BATCH: usize = 10_000;

pub async fn tail(args: TailArgs) -> anyhow::Result<()> {
    let codec = ValueCodec::new(&args.descriptor_set)?;
    let log = args.storage.log().await?;
    let started = Instant::now();
    let shards = loop {
        match log.shards(&args.stream).await {
            Ok(shards) => break statefun_runtime::log::shard_ids(&shards),
            // Egress streams appear with their first record: a follower waits for it.
            Err(LogError::NoSuchStream { .. }) if args.follow => {
                if args.idle_exit.is_some_and(|idle| started.elapsed() >= idle) {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let start = match (args.latest, args.since) {
        (true, _) => Position::Latest,
        (false, Some(ms)) => Position::AtTimestamp(ms),
        (false, None) => Position::Start,
    };
    let mut positions: BTreeMap<String, Position> = shards.iter().map(|s| (s.clone(), start.clone())).collect();
    let mut printed = 0usize;
    let mut last_seen = Instant::now();
    loop {
        let mut any = false;
        for shard in &shards {
            let from = positions.get(shard).cloned().unwrap_or(Position::Start);
            let (records, next) = patiently(|| log.read(&args.stream, shard, &from, READ_BATCH)).await?;
            positions.insert(shard.clone(), next);
            for record in records {
                any = true;
                let value = codec.decode(args.typename.as_deref(), &record.data);
                if args.json {
                    out!(
                        "{}",
                        json!({"shard": record.shard, "sequence": record.sequence, "key": record.partition_key, "id": record.id, "value": value})
                    );
                } else {
                    out!("[{} #{}] key={} {}", record.shard, record.sequence, record.partition_key, value);
                }
                printed += 1;
                if args.limit.is_some_and(|limit| printed >= limit) {
                    return Ok(());
                }
            }
        }
        if any {
            last_seen = Instant::now();
            continue;
        }
        if !args.follow || args.idle_exit.is_some_and(|idle| last_seen.elapsed() >= idle) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
