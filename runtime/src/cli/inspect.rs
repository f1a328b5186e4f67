//! `statefun state` and `statefun dead-letters`: read what the runtime
//! committed; `dead-letters --reinject` sends dead-lettered messages again.

use super::out;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde_json::{Value, json};
use statefun_runtime::address::{self, FunctionType};
use statefun_runtime::backoff::Backoff;
use statefun_runtime::checkpoint;
use statefun_runtime::dead_letters::{self, Destination};
use statefun_runtime::log::LogError;
use statefun_runtime::node::Backends;
use statefun_runtime::partition::NoEndpoints;
use statefun_runtime::partition::Partition;
use statefun_runtime::values::ValueCodec;

use super::{DeadLetterDestination, Storage, patiently};

#[derive(Args)]
pub struct StateArgs {
    #[command(flatten)]
    storage: Storage,
    /// Only addresses of this function type (namespace/name).
    #[arg(long)]
    function: Option<String>,
    #[arg(long)]
    descriptor_set: Vec<PathBuf>,
    /// One JSON object: {"namespace/type/id": {"state": value, ...}, ...}.
    #[arg(long)]
    json: bool,
    /// The exchange, whose shard count is the partition count.
    #[arg(long, env = "STATEFUN_EXCHANGE_STREAM", default_value = "statefun-exchange")]
    exchange_stream: String,
}

#[derive(Args)]
pub struct DeadLetterArgs {
    #[command(flatten)]
    storage: Storage,
    #[arg(long, env = "STATEFUN_DEAD_LETTER_STREAM", default_value = "statefun-dead-letters")]
    stream: String,
    /// Where the runtime writes dead letters (as `statefun run --dead-letter-destination`).
    #[arg(long, env = "STATEFUN_DEAD_LETTER_DESTINATION", value_enum, default_value = "stream")]
    dead_letter_destination: DeadLetterDestination,
    /// Only the dead letters of this address (namespace/type/id).
    #[arg(long)]
    address: Option<String>,
    /// Only the dead letters with these ids (as listed).
    #[arg(long)]
    id: Vec<String>,
    /// Send the selected dead letters' messages to their targets again (through the exchange).
    #[arg(long)]
    reinject: bool,
    /// The exchange, whose shard count is the partition count (for --reinject).
    #[arg(long, env = "STATEFUN_EXCHANGE_STREAM", default_value = "statefun-exchange")]
    exchange_stream: String,
    #[arg(long)]
    json: bool,
}

pub async fn state(args: StateArgs) -> anyhow::Result<()> {
    let filter = match &args.function {
        Some(text) => {
            Some(FunctionType::parse(text).with_context(|| format!("--function `{text}` is not namespace/name"))?)
        }
        None => None,
    };
    let codec = ValueCodec::new(&args.descriptor_set)?;
    let backends = args.storage.backends(None).await?;
    let mut all: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    // The exchange has one shard per partition; no exchange means the runtime never ran.
    let partitions = match patiently(|| backends.log.shards(&args.exchange_stream)).await {
        Ok(shards) => shards.len() as u32,
        Err(LogError::NoSuchStream { .. }) => 0,
        Err(e) => return Err(e.into()),
    };
    for partition in 0..partitions {
        // A partition that never committed has no state.
        let Some(restored) = committed_partition(&backends, partition).await? else { continue };
        for address in restored.addresses() {
            if filter.as_ref().is_some_and(|f| *f != FunctionType::of(&address)) {
                continue;
            }
            let states = restored.states_of(&address).unwrap_or_default();
            if states.is_empty() {
                continue;
            }
            let values = states
                .iter()
                .map(|s| {
                    let value =
                        s.value.as_ref().map(|v| codec.decode(Some(&v.typename), &v.value)).unwrap_or(Value::Null);
                    (s.name.clone(), value)
                })
                .collect();
            all.insert(address::display(&address), values);
        }
    }
    if args.json {
        out!("{}", serde_json::to_string(&all)?);
    } else {
        for (address, states) in &all {
            let states: Vec<String> = states.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out!("{address}: {}", states.join(" "));
        }
    }
    Ok(())
}

/// The partition as last committed, `None` if it never committed. A worker may
/// commit and collect the objects of older epochs while they are read here: a
/// read that fails while the commit record has moved on, or with a store
/// hiccup, is tried again from the record as it is then.
async fn committed_partition(backends: &Backends, partition: u32) -> anyhow::Result<Option<Partition>> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut attempts = 0;
    loop {
        let Some(manifest) = backends.commits.committed(partition).await?.map(|c| c.manifest) else { return Ok(None) };
        let error =
            match checkpoint::recover(backends.blobs.as_ref(), partition, 1, Arc::new(NoEndpoints), &manifest).await {
                Ok(restored) => return Ok(Some(restored)),
                Err(error) => error,
            };
        attempts += 1;
        let moved = backends.commits.committed(partition).await?.map(|c| c.manifest) != Some(manifest);
        if attempts >= READ_ATTEMPTS || !(moved || error.is_retryable()) {
            return Err(error.into());
        }
        tracing::debug!(partition, "reading the committed state failed, trying again in {:?}: {error}", backoff.next());
        backoff.wait().await;
    }
}

/// How often a partition's committed state is read before its error is reported.
const READ_ATTEMPTS: u32 = 8;

pub async fn dead_letters(args: DeadLetterArgs) -> anyhow::Result<()> {
    let backends = args.storage.backends(None).await?;
    let destination = match args.dead_letter_destination {
        DeadLetterDestination::Stream => Destination::Stream(args.stream.clone()),
        DeadLetterDestination::Objects => Destination::Objects(backends.blobs.clone()),
    };
    let entries = match dead_letters::read_all(&destination, backends.log.as_ref(), backends.blobs.as_ref()).await {
        Ok(entries) => entries,
        // Nothing was ever dead-lettered.
        Err(e) if e.downcast_ref::<LogError>().is_some_and(|e| matches!(e, LogError::NoSuchStream { .. })) => {
            Vec::new()
        }
        Err(e) => return Err(e.context(format!("reading dead letters from {destination:?}"))),
    };
    let mut selected = Vec::new();
    for entry in entries {
        let stored = match entry {
            Ok(stored) => stored,
            Err(problem) => {
                eprintln!("{problem}");
                continue;
            }
        };
        let address = stored.letter.address.as_ref().map(address::display).unwrap_or_default();
        if args.address.as_ref().is_some_and(|wanted| *wanted != address)
            || (!args.id.is_empty() && !args.id.contains(&stored.id))
        {
            continue;
        }
        let letter = &stored.letter;
        let ids: Vec<&str> = letter.messages.iter().map(|m| m.id.as_str()).collect();
        if args.json {
            out!(
                "{}",
                json!({"id": stored.id, "address": address, "reason": letter.reason, "messages": ids, "source": letter.source, "at_ms": letter.at_ms})
            );
        } else {
            let what = if ids.is_empty() { letter.source.clone() } else { format!("messages {}", ids.join(", ")) };
            out!("[{}] {address} {what}: {}", stored.id, letter.reason);
        }
        selected.push(stored.letter);
    }
    if args.reinject {
        let partitions = patiently(|| backends.log.shards(&args.exchange_stream))
            .await
            .with_context(|| format!("the exchange stream `{}` (the runtime never ran?)", args.exchange_stream))?
            .len() as u32;
        let (with_messages, without): (Vec<_>, Vec<_>) = selected.into_iter().partition(|l| !l.messages.is_empty());
        let done = dead_letters::reinject(
            backends.log.as_ref(),
            &args.exchange_stream,
            partitions,
            &with_messages,
            statefun_runtime::now_ms(),
        )
        .await?;
        eprintln!(
            "re-injected {} messages of {} dead letters; {} dead letters hold no message (input records \
             that could not be routed, egress records) and were left as they are",
            done.messages,
            with_messages.len(),
            without.len()
        );
        if !done.too_large.is_empty() {
            eprintln!(
                "left out {} messages larger than an exchange record carries (they cannot travel between \
                 partitions): {}",
                done.too_large.len(),
                done.too_large.join(", ")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use bytes::Bytes;
    use prost::Message as _;
    use statefun_proto::internal::{EpochRecord, PartitionManifest};
    use statefun_runtime::BoxFuture;
    use statefun_runtime::checkpoint::fs::FsBlobStore;
    use statefun_runtime::checkpoint::{BlobStore, CheckpointError, ChunkSink, object_key};

    use super::*;

    /// The local checkpoint store, except that the first read of an object breaks off, as an S3 body
    /// stream can while a worker commits beside the reader.
    struct BreaksOnce {
        inner: FsBlobStore,
        broke: AtomicBool,
    }

    impl BlobStore for BreaksOnce {
        fn put<'a>(&'a self, key: &'a str, data: Bytes) -> BoxFuture<'a, Result<(), CheckpointError>> {
            self.inner.put(key, data)
        }
        fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, CheckpointError>> {
            self.inner.get(key)
        }
        fn read<'a>(
            &'a self,
            key: &'a str,
            sink: &'a mut ChunkSink<'_>,
        ) -> BoxFuture<'a, Result<bool, CheckpointError>> {
            if !self.broke.swap(true, Ordering::SeqCst) {
                let detail = "GetObject: reading the body: streaming error".to_owned();
                return Box::pin(async move { Err(CheckpointError::Backend { key: key.to_owned(), detail }) });
            }
            self.inner.read(key, sink)
        }
        fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), CheckpointError>> {
            self.inner.delete(key)
        }
        fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, CheckpointError>> {
            self.inner.list(prefix)
        }
    }

    #[tokio::test]
    async fn a_read_of_the_committed_state_that_breaks_off_is_tried_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backends = Backends::local(dir.path()).expect("local backends");
        let lease = backends.commits.acquire(0, "a-worker").await.expect("acquire");
        let record = EpochRecord { partition: 0, epoch: 1, snapshot: true, ..Default::default() };
        let blobs = FsBlobStore::new(dir.path());
        blobs.put(&object_key(0, 1, lease.counter, true), record.encode_to_vec().into()).await.expect("put");
        let manifest = PartitionManifest { epoch: 1, snapshot_epoch: 1, lease: lease.counter };
        backends.commits.commit(&lease, 0, manifest).await.expect("commit");

        let backends =
            Backends { blobs: Arc::new(BreaksOnce { inner: blobs, broke: AtomicBool::new(false) }), ..backends };
        let restored = committed_partition(&backends, 0).await.expect("read on the second attempt");
        assert_eq!(restored.map(|p| p.epoch()), Some(2), "the partition as committed at epoch 1");
        assert!(committed_partition(&backends, 1).await.expect("read").is_none(), "never committed");
    }
}
