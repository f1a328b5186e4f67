//! Checkpoint objects: where each epoch's record is stored and under which key.
//!
//! Objects are immutable; which of them make up a partition's history is
//! decided only by the commit store's manifest (see [`crate::coordination`]).
//! Layout, one object per committed epoch:
//!
//! ```text
//! partition-00003/epoch-00000000000000000042.lease-0000000007.delta.pb
//! partition-00003/epoch-00000000000000000050.lease-0000000007.snapshot.pb
//! ```
//!
//! The lease counter in the key means a fenced writer can never overwrite an
//! object of the current owner, even for the same epoch. Recovery reads the
//! manifest's snapshot, then every delta after it up to the committed epoch,
//! all written under the manifest's lease (a new owner's first commit is a
//! snapshot). A history written by earlier releases may break that rule (a
//! stop right after a take-over committed a delta on top of the previous
//! owner's chain): when the snapshot is not found under the manifest's lease,
//! each epoch's object is found by listing instead, so such a history still
//! recovers, and the new owner's first commit, a snapshot, mends it.
//! Objects older than a committed snapshot are garbage. Recovery
//! hands the history to a [`HistorySink`] one address entry at a time, the
//! snapshot streamed from the store, so a large partition is never held twice.

pub mod fs;
mod recover;
pub mod s3;

pub use recover::recover;

use std::collections::BTreeMap;

use bytes::Bytes;
use futures_util::StreamExt;
use prost::Message;
use statefun_proto::internal::{AddressEntry, DelayedMessage, EpochRecord, PartitionManifest};

use crate::log::BoxFuture;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint store: {key}: {detail}")]
    Backend { key: String, detail: String },
    #[error("checkpoint of partition {partition} is missing object {key}, which the commit record names")]
    Missing { partition: u32, key: String },
    #[error("checkpoint object {key} is corrupt: {detail}")]
    Corrupt { key: String, detail: String },
    /// The store refused the request for good (no such bucket, access denied):
    /// trying again cannot succeed.
    #[error("checkpoint store refused {key}: {detail}")]
    Rejected { key: String, detail: String },
}

impl CheckpointError {
    /// Whether trying again may succeed (a backend hiccup), as opposed to a
    /// request or an object that is wrong and will stay wrong.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CheckpointError::Backend { .. })
    }
}

/// An object store holding checkpoint objects (a directory locally, S3 on AWS).
pub trait BlobStore: Send + Sync {
    /// Writes a whole object. `Bytes`, so that a retry re-sends the same buffer without copying it.
    fn put<'a>(&'a self, key: &'a str, data: Bytes) -> BoxFuture<'a, Result<(), CheckpointError>>;
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, CheckpointError>>;
    /// Reads an object piece by piece into `sink`, for objects too large to
    /// hold whole; `false` when there is no such object. An error of the sink
    /// stops the read and is reported as a corrupt object.
    fn read<'a>(&'a self, key: &'a str, sink: &'a mut ChunkSink<'_>) -> BoxFuture<'a, Result<bool, CheckpointError>>;
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), CheckpointError>>;
    /// Deletes several objects, stopping at the first failure; a store that can
    /// do it in fewer calls than one per object does.
    fn delete_many<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<(), CheckpointError>> {
        Box::pin(async move {
            for key in keys {
                self.delete(key).await?;
            }
            Ok(())
        })
    }
    /// Keys under a prefix, in lexical order.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, CheckpointError>>;
}

/// Takes an object's bytes in order, a chunk at a time.
pub type ChunkSink<'s> = dyn FnMut(&[u8]) -> Result<(), String> + Send + 's;

/// How much of an object a store reads at a time when streaming it.
pub const READ_CHUNK_BYTES: usize = 4 * 1024 * 1024;

pub fn partition_prefix(partition: u32) -> String {
    format!("partition-{partition:05}/")
}

pub fn object_key(partition: u32, epoch: u64, lease: u64, snapshot: bool) -> String {
    let kind = if snapshot { "snapshot" } else { "delta" };
    format!("{}epoch-{epoch:020}.lease-{lease:010}.{kind}.pb", partition_prefix(partition))
}

/// What an object key names, if it is one of ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectName {
    pub epoch: u64,
    pub lease: u64,
    pub snapshot: bool,
}

impl ObjectName {
    pub fn parse(key: &str) -> Option<Self> {
        let name = key.rsplit('/').next()?;
        let mut parts = name.split('.');
        let epoch = parts.next()?.strip_prefix("epoch-")?.parse().ok()?;
        let lease = parts.next()?.strip_prefix("lease-")?.parse().ok()?;
        let snapshot = match parts.next()? {
            "snapshot" => true,
            "delta" => false,
            _ => return None,
        };
        (parts.next() == Some("pb") && parts.next().is_none()).then_some(Self { epoch, lease, snapshot })
    }
}

/// The epoch an object key names, if it is one of ours.
pub fn epoch_of_key(key: &str) -> Option<u64> {
    ObjectName::parse(key).map(|name| name.epoch)
}

/// Where each epoch of a committed history is stored.
enum Chain {
    /// Every object under the manifest's lease: the rule since a new owner's first commit is a snapshot.
    ManifestLease,
    /// Found by listing: for each epoch, the object of the right kind with
    /// the highest lease not above the manifest's (a later lease starts from
    /// the epoch the earlier one committed, so that is the committed one).
    /// Where that cannot be the committed object, the epoch has none here, so
    /// recovery reports the manifest lease's object missing: the last epoch's
    /// object must be under the manifest's lease (that lease committed it),
    /// and an epoch with objects of several leases none of which is the
    /// manifest's is ambiguous (the committed one may have been lost, and a
    /// fenced writer's left).
    Listed(BTreeMap<u64, String>),
}

impl Chain {
    async fn list(
        store: &dyn BlobStore,
        partition: u32,
        manifest: &PartitionManifest,
    ) -> Result<Self, CheckpointError> {
        // Per epoch: the highest lease's key, and how many leases wrote one.
        let mut candidates: BTreeMap<u64, (u64, String, usize)> = BTreeMap::new();
        for key in store.list(&partition_prefix(partition)).await? {
            let Some(name) = ObjectName::parse(&key) else { continue };
            let wanted = name.epoch <= manifest.epoch
                && name.epoch >= manifest.snapshot_epoch
                && name.lease <= manifest.lease
                && name.snapshot == (name.epoch == manifest.snapshot_epoch);
            if !wanted {
                continue;
            }
            let entry = candidates.entry(name.epoch).or_insert((name.lease, key.clone(), 0));
            entry.2 += 1;
            if entry.0 < name.lease {
                (entry.0, entry.1) = (name.lease, key);
            }
        }
        let trusted =
            |epoch: u64, lease: u64, count: usize| lease == manifest.lease || (epoch < manifest.epoch && count == 1);
        let chain = candidates
            .into_iter()
            .filter(|&(epoch, (lease, _, count))| trusted(epoch, lease, count))
            .map(|(epoch, (_, key, _))| (epoch, key))
            .collect();
        Ok(Chain::Listed(chain))
    }

    fn key(&self, partition: u32, manifest: &PartitionManifest, epoch: u64) -> String {
        let expected = || object_key(partition, epoch, manifest.lease, epoch == manifest.snapshot_epoch);
        match self {
            Chain::ManifestLease => expected(),
            Chain::Listed(keys) => keys.get(&epoch).cloned().unwrap_or_else(expected),
        }
    }
}

pub use statefun_engine::partition::restore::HistorySink;

/// How many checkpoint objects recovery fetches at once.
const PARALLEL_LOADS: usize = 16;

/// Replays a committed history into `sink`: the snapshot streamed in chunks,
/// each address entry decoded and handed over on its own, so recovering a
/// million addresses never holds their snapshot or its decoded form whole;
/// then the deltas, fetched several at a time (a chain of deltas on S3 is many
/// small requests, and recovery time is their latency), applied in order.
pub async fn replay_history(
    store: &dyn BlobStore,
    partition: u32,
    manifest: &PartitionManifest,
    sink: &mut dyn HistorySink,
) -> Result<(), CheckpointError> {
    let first = manifest.snapshot_epoch.max(1);
    if first > manifest.epoch {
        return Ok(());
    }
    let mut chain = Chain::ManifestLease;
    let mut first_key = chain.key(partition, manifest, first);
    let mut parser = ObjectParser::new(partition, first, first == manifest.snapshot_epoch, sink);
    let mut found = store.read(&first_key, &mut |chunk: &[u8]| parser.feed(chunk)).await?;
    if !found {
        chain = Chain::list(store, partition, manifest).await?;
        first_key = chain.key(partition, manifest, first);
        found = store.read(&first_key, &mut |chunk: &[u8]| parser.feed(chunk)).await?;
        if found {
            tracing::warn!(
                partition,
                "the committed history's objects are not all under the lease that committed last (a stop right \
                 after a take-over wrote them so in earlier releases); recovered from a listing"
            );
        }
    }
    if !found {
        return Err(CheckpointError::Missing { partition, key: first_key });
    }
    parser.finish().map_err(|detail| CheckpointError::Corrupt { key: first_key.clone(), detail })?;

    let chain = &chain;
    let fetch = |epoch: u64| async move {
        let key = chain.key(partition, manifest, epoch);
        match store.get(&key).await? {
            Some(bytes) => Ok((epoch, key, bytes)),
            None => Err(CheckpointError::Missing { partition, key }),
        }
    };
    let mut deltas = futures_util::stream::iter(first + 1..=manifest.epoch).map(fetch).buffered(PARALLEL_LOADS);
    while let Some(loaded) = deltas.next().await {
        let (epoch, key, bytes) = loaded?;
        let mut parser = ObjectParser::new(partition, epoch, epoch == manifest.snapshot_epoch, sink);
        parser
            .feed(&bytes)
            .and_then(|()| parser.finish())
            .map_err(|detail| CheckpointError::Corrupt { key, detail })?;
    }
    Ok(())
}

/// Loads the records that make up a committed history, oldest first, whole
/// (for tools and tests; recovery streams them with [`replay_history`]).
pub async fn load_history(
    store: &dyn BlobStore,
    partition: u32,
    manifest: &PartitionManifest,
) -> Result<Vec<EpochRecord>, CheckpointError> {
    struct Collect(Vec<EpochRecord>, Vec<AddressEntry>, Vec<DelayedMessage>);
    impl HistorySink for Collect {
        fn begin_epoch(&mut self, _: u64, _: bool) {}
        fn expect_entries(&mut self, _: usize) {}
        fn entry(&mut self, entry: AddressEntry) -> Result<(), String> {
            self.1.push(entry);
            Ok(())
        }
        fn timer(&mut self, timer: DelayedMessage) {
            self.2.push(timer);
        }
        fn end_epoch(&mut self, record: EpochRecord) -> Result<(), String> {
            let (addresses, timers) = (std::mem::take(&mut self.1), std::mem::take(&mut self.2));
            self.0.push(EpochRecord { addresses, timers, ..record });
            Ok(())
        }
    }
    let mut collected = Collect(Vec::new(), Vec::new(), Vec::new());
    replay_history(store, partition, manifest, &mut collected).await?;
    Ok(collected.0)
}

/// `EpochRecord.addresses`, handed to the sink one by one.
const ADDRESSES_FIELD: u32 = 4;
/// `EpochRecord.address_count`.
const ADDRESS_COUNT_FIELD: u32 = 12;
/// `EpochRecord.timers`, handed to the sink one by one.
const TIMERS_FIELD: u32 = 14;

/// Splits one encoded [`EpochRecord`], arriving in chunks, into its address
/// entries (to the sink) and the rest (decoded at the end).
struct ObjectParser<'a> {
    partition: u32,
    epoch: u64,
    sink: &'a mut dyn HistorySink,
    /// The start of a field that the chunks so far ended inside of.
    carry: Vec<u8>,
    rest: Vec<u8>,
    /// Address entries the object says it holds (`address_count`; 0 in older objects), and those it held.
    claimed_entries: u64,
    entries: u64,
}

impl<'a> ObjectParser<'a> {
    fn new(partition: u32, epoch: u64, snapshot: bool, sink: &'a mut dyn HistorySink) -> Self {
        sink.begin_epoch(epoch, snapshot);
        Self { partition, epoch, sink, carry: Vec::new(), rest: Vec::new(), claimed_entries: 0, entries: 0 }
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<(), String> {
        if self.carry.is_empty() {
            let used = self.fields(chunk)?;
            self.carry.extend_from_slice(&chunk[used..]);
        } else {
            let mut carry = std::mem::take(&mut self.carry);
            carry.extend_from_slice(chunk);
            let used = self.fields(&carry)?;
            carry.drain(..used);
            self.carry = carry;
        }
        Ok(())
    }

    /// Handles every whole field at the start of `bytes`; how many bytes they took.
    fn fields(&mut self, bytes: &[u8]) -> Result<usize, String> {
        let mut at = 0;
        while let Some(field) = split_field(&bytes[at..])? {
            let payload = &bytes[at + field.payload.start..at + field.payload.end];
            match field.number {
                ADDRESSES_FIELD => {
                    let entry = AddressEntry::decode(payload).map_err(|e| format!("an address entry: {e}"))?;
                    self.sink.entry(entry)?;
                    self.entries += 1;
                }
                TIMERS_FIELD => {
                    let timer = DelayedMessage::decode(payload).map_err(|e| format!("a delayed message: {e}"))?;
                    self.sink.timer(timer);
                }
                ADDRESS_COUNT_FIELD => {
                    let claimed = varint(payload).map_or(0, |(n, _)| n);
                    self.claimed_entries = claimed;
                    self.sink.expect_entries(usize::try_from(claimed).unwrap_or(usize::MAX));
                    self.rest.extend_from_slice(&bytes[at..at + field.len]);
                }
                _ => self.rest.extend_from_slice(&bytes[at..at + field.len]),
            }
            at += field.len;
        }
        Ok(at)
    }

    fn finish(self) -> Result<(), String> {
        if !self.carry.is_empty() {
            return Err(format!("the object ends inside a field ({} bytes left over)", self.carry.len()));
        }
        if self.claimed_entries != 0 && self.claimed_entries != self.entries {
            return Err(format!(
                "the object says it holds {} address entries but holds {}",
                self.claimed_entries, self.entries
            ));
        }
        let record = EpochRecord::decode(self.rest.as_slice()).map_err(|e| e.to_string())?;
        if record.epoch != self.epoch || record.partition != self.partition {
            return Err(format!("holds partition {} epoch {}", record.partition, record.epoch));
        }
        self.sink.end_epoch(record)
    }
}

/// One field at the start of an encoded message.
struct Field {
    number: u32,
    /// Where its value is, without the key (and length).
    payload: std::ops::Range<usize>,
    /// Its whole length, key included.
    len: usize,
}

/// The field at the start of `bytes`; `None` when `bytes` ends inside it.
fn split_field(bytes: &[u8]) -> Result<Option<Field>, String> {
    let Some((key, key_len)) = varint(bytes) else { return incomplete_or_bad_varint(bytes) };
    let number = u32::try_from(key >> 3).map_err(|_| format!("field number {} out of range", key >> 3))?;
    let rest = &bytes[key_len..];
    let (start, length) = match key & 7 {
        0 => match varint(rest) {
            Some((_, n)) => (key_len, n),
            None => return incomplete_or_bad_varint(rest),
        },
        1 => (key_len, 8),
        2 => match varint(rest) {
            Some((n, n_len)) => {
                let length = usize::try_from(n).map_err(|_| format!("field {number}: length {n} out of range"))?;
                (key_len + n_len, length)
            }
            None => return incomplete_or_bad_varint(rest),
        },
        5 => (key_len, 4),
        other => return Err(format!("field {number} has wire type {other}, which checkpoints never use")),
    };
    if bytes.len() - start < length {
        return Ok(None);
    }
    Ok(Some(Field { number, payload: start..start + length, len: start + length }))
}

/// A varint at the start of `bytes` and its length; `None` when it is cut off or too long.
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn incomplete_or_bad_varint(bytes: &[u8]) -> Result<Option<Field>, String> {
    if bytes.len() >= 10 { Err("a varint longer than 10 bytes".into()) } else { Ok(None) }
}

/// Deletes a partition's objects older than its committed snapshot.
pub async fn collect_garbage(
    store: &dyn BlobStore,
    partition: u32,
    snapshot_epoch: u64,
) -> Result<usize, CheckpointError> {
    let mut older = store.list(&partition_prefix(partition)).await?;
    older.retain(|key| epoch_of_key(key).is_some_and(|e| e < snapshot_epoch));
    store.delete_many(&older).await?;
    Ok(older.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collected {
        epochs: Vec<(u64, bool)>,
        expected: Vec<usize>,
        entries: Vec<AddressEntry>,
        timers: Vec<DelayedMessage>,
        records: Vec<EpochRecord>,
    }

    impl HistorySink for Collected {
        fn begin_epoch(&mut self, epoch: u64, snapshot: bool) {
            self.epochs.push((epoch, snapshot));
        }
        fn expect_entries(&mut self, count: usize) {
            self.expected.push(count);
        }
        fn entry(&mut self, entry: AddressEntry) -> Result<(), String> {
            self.entries.push(entry);
            Ok(())
        }
        fn timer(&mut self, timer: DelayedMessage) {
            self.timers.push(timer);
        }
        fn end_epoch(&mut self, record: EpochRecord) -> Result<(), String> {
            self.records.push(record);
            Ok(())
        }
    }

    fn record() -> EpochRecord {
        use statefun_proto::internal::{EpochOutbox, InputPosition};
        use statefun_proto::reqreply::Address;
        let entry = |id: &str| AddressEntry {
            address: Some(Address { namespace: "n".into(), r#type: "t".into(), id: id.into() }),
            in_flight: 1,
            ..Default::default()
        };
        EpochRecord {
            partition: 2,
            epoch: 9,
            addresses: vec![entry("a"), entry("b")],
            positions: vec![InputPosition { stream: "s".into(), shard: "0".into(), sequence: "12".into() }],
            outboxes: vec![EpochOutbox { epoch: 9, entries: Vec::new() }],
            next_timer_id: 300,
            address_count: 2,
            ..Default::default()
        }
    }

    #[test]
    fn an_object_read_in_small_chunks_gives_its_entries_one_by_one_and_then_the_rest() {
        let record = record();
        let bytes = record.encode_to_vec();
        let mut sink = Collected::default();
        let mut parser = ObjectParser::new(2, 9, true, &mut sink);
        for chunk in bytes.chunks(3) {
            parser.feed(chunk).expect("feeds");
        }
        parser.finish().expect("a whole object");
        assert_eq!(sink.epochs, [(9, true)]);
        assert_eq!(sink.expected, [2]);
        assert_eq!(sink.entries, record.addresses);
        assert_eq!(sink.records, [EpochRecord { addresses: Vec::new(), ..record }]);
    }

    #[test]
    fn a_cut_or_misplaced_object_is_refused() {
        let bytes = record().encode_to_vec();
        let mut sink = Collected::default();
        let mut parser = ObjectParser::new(2, 9, false, &mut sink);
        parser.feed(&bytes[..bytes.len() - 1]).expect("a prefix feeds");
        let cut = parser.finish().expect_err("ends inside a field");
        assert!(cut.contains("ends inside a field"), "{cut}");

        let mut parser = ObjectParser::new(3, 9, false, &mut sink);
        parser.feed(&bytes).expect("feeds");
        let elsewhere = parser.finish().expect_err("another partition's object");
        assert!(elsewhere.contains("holds partition 2 epoch 9"), "{elsewhere}");
    }

    /// A history as a stop right after a take-over used to commit it: the new
    /// owner's delta (lease 2) on top of the previous owner's chain (lease 1),
    /// beside objects no commit names (a fenced writer's, an owner's that never committed).
    #[tokio::test]
    async fn a_history_whose_last_delta_is_under_a_newer_lease_replays_from_a_listing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = fs::FsBlobStore::new(dir.path());
        let put = |epoch: u64, lease: u64, snapshot: bool| {
            let record = EpochRecord { partition: 2, epoch, snapshot, next_timer_id: lease, ..Default::default() };
            let key = object_key(2, epoch, lease, snapshot);
            let store = &store;
            async move { store.put(&key, record.encode_to_vec().into()).await.expect("put") }
        };
        put(1, 1, true).await;
        put(2, 1, false).await;
        put(3, 1, false).await; // the first owner's, fenced before it committed
        put(3, 2, false).await;
        put(4, 3, true).await; // a later owner's, never committed
        let manifest = PartitionManifest { epoch: 3, snapshot_epoch: 1, lease: 2 };

        let mut sink = Collected::default();
        replay_history(&store, 2, &manifest, &mut sink).await.expect("the history replays");
        assert_eq!(sink.epochs, [(1, true), (2, false), (3, false)]);
        let leases: Vec<u64> = sink.records.iter().map(|r| r.next_timer_id).collect();
        assert_eq!(leases, [1, 1, 2], "each epoch from the lease that committed it");

        // The last epoch's object is the manifest lease's: a fenced writer's of the same epoch never stands in.
        store.delete(&object_key(2, 3, 2, false)).await.expect("delete");
        let lost = replay_history(&store, 2, &manifest, &mut Collected::default()).await.expect_err("lost");
        assert!(lost.to_string().contains("epoch-00000000000000000003.lease-0000000002"), "{lost}");
        put(3, 2, false).await;

        store.delete(&object_key(2, 2, 1, false)).await.expect("delete");
        let missing = replay_history(&store, 2, &manifest, &mut Collected::default()).await.expect_err("a gap");
        assert!(matches!(missing, CheckpointError::Missing { .. }), "{missing}");
        assert!(missing.to_string().contains("epoch-00000000000000000002"), "names the missing epoch: {missing}");
    }

    #[test]
    fn object_names_parse_back() {
        let name = ObjectName::parse(&object_key(1, 77, 3, true));
        assert_eq!(name, Some(ObjectName { epoch: 77, lease: 3, snapshot: true }));
        assert_eq!(ObjectName::parse("partition-00001/epoch-1.lease-2.other.pb"), None);
        assert_eq!(ObjectName::parse("partition-00001/epoch-1.lease-x.delta.pb"), None);
    }

    #[test]
    fn keys_sort_by_epoch_and_name_their_kind() {
        assert_eq!(object_key(3, 42, 7, false), "partition-00003/epoch-00000000000000000042.lease-0000000007.delta.pb");
        assert!(object_key(0, 9, 2, true) < object_key(0, 10, 1, false));
        assert_eq!(epoch_of_key(&object_key(1, 77, 3, true)), Some(77));
        assert_eq!(epoch_of_key("partition-00001/other"), None);
    }
}
