//! Rebuilding a partition from its committed history: a snapshot, then the
//! deltas after it, applied in order as [`crate::checkpoint::replay_history`]
//! hands them over, one address entry at a time.
//!
//! Checks that each delta follows from what came before it; never reads storage.

use std::collections::HashMap;
use std::sync::Arc;

use statefun_proto::internal::{AddressEntry, DelayedMessage, Envelope, EpochOutbox, EpochRecord, PartitionManifest};
use statefun_proto::reqreply::Address;

use super::outbox::Outbox;
use super::record::AddressRecord;
use super::{Catalog, Partition};
use crate::address::{self, FunctionType};
use crate::checkpoint::{self, BlobStore, CheckpointError, HistorySink};

/// Recovers a partition from the history its commit record names.
pub async fn recover(
    blobs: &dyn BlobStore,
    id: u32,
    partitions: u32,
    catalog: Arc<dyn Catalog>,
    manifest: &PartitionManifest,
) -> Result<Partition, CheckpointError> {
    let mut restorer = Restorer::new(id, partitions, catalog);
    checkpoint::replay_history(blobs, id, manifest, &mut restorer).await?;
    Ok(restorer.finish())
}

/// The most addresses reserved for on a snapshot's count alone.
const MAX_RESERVED_ENTRIES: usize = 1 << 22;

pub struct Restorer {
    partition: Partition,
    outboxes: Vec<EpochOutbox>,
    /// Timers of records written before `EpochRecord.timers_as_changes`, per
    /// sender: each entry of those lists all of its sender's pending timers.
    /// (A worker's first commit is a snapshot, so a history has such records
    /// only before its newest snapshot of the other kind, which clears them.)
    listed_timers: HashMap<Address, Vec<DelayedMessage>>,
}

impl Restorer {
    pub fn new(id: u32, partitions: u32, catalog: Arc<dyn Catalog>) -> Self {
        Self {
            partition: Partition::new(id, partitions, catalog, 1),
            outboxes: Vec::new(),
            listed_timers: HashMap::new(),
        }
    }

    /// The partition as the history left it.
    pub fn finish(self) -> Partition {
        let Self { partition: mut p, outboxes, listed_timers } = self;
        let partitions = p.partitions;
        let partition_of = |e: &Envelope| e.target.as_ref().map_or(0, |t| address::partition_of(t, partitions));
        p.unpublished = outboxes
            .into_iter()
            .filter(|o| o.epoch > p.published_through)
            .map(|o| Arc::new(Outbox::from_record(o, partition_of)))
            .collect();
        for (_, record) in p.addresses.iter() {
            p.queued += record.mailbox().len();
            p.queued_bytes += record.mailbox().iter().map(prost::Message::encoded_len).sum::<usize>();
        }
        p.unpublished_bytes = p.unpublished.iter().map(|o| o.bytes()).sum();
        for timer in listed_timers.into_values().flatten() {
            p.timers.restore(timer);
        }
        p.timers.restored();
        p
    }
}

impl HistorySink for Restorer {
    fn begin_epoch(&mut self, _epoch: u64, snapshot: bool) {
        if snapshot {
            self.partition.addresses.clear();
            self.partition.timers.clear();
            self.listed_timers.clear();
            self.outboxes.clear();
        }
    }

    fn expect_entries(&mut self, count: usize) {
        // Exactly, for the snapshot that fills an empty table; a delta's entries
        // are mostly addresses already there, and new ones grow it as usual. The
        // count is read from a file: a claim, not a fact, so only so much is
        // reserved on its word (a corrupt count must not take the memory, or
        // overflow the table's capacity); a larger table grows as entries come.
        if self.partition.addresses.len() == 0 {
            self.partition.addresses.reserve(count.min(MAX_RESERVED_ENTRIES));
        }
    }

    fn entry(&mut self, mut entry: AddressEntry) -> Result<(), String> {
        let Some(address) = entry.address.take() else { return Ok(()) };
        match std::mem::take(&mut entry.timers) {
            timers if timers.is_empty() => self.listed_timers.remove(&address),
            timers => self.listed_timers.insert(address.clone(), timers),
        };
        let addresses = &mut self.partition.addresses;
        match addresses.get_mut_with_names(&address) {
            Some((existing, names)) => existing.apply_delta(names, entry),
            None if entry.mailbox_appends && entry.mailbox_consumed > 0 => {
                Err(format!("{} messages left a mailbox no earlier epoch recorded", entry.mailbox_consumed))
            }
            None => {
                addresses.insert_with(&address, |names| AddressRecord::from_entry(names, entry));
                Ok(())
            }
        }
        .map_err(|detail| format!("address {}: {detail}", address::display(&address)))
    }

    fn timer(&mut self, timer: DelayedMessage) {
        self.partition.timers.restore(timer);
    }

    fn end_epoch(&mut self, record: EpochRecord) -> Result<(), String> {
        let p = &mut self.partition;
        for address in &record.removed {
            p.addresses.remove(address);
        }
        for timer in record.timers {
            p.timers.restore(timer);
        }
        for id in record.timers_removed {
            if !p.timers.restore_removed(id) {
                return Err(format!("timer {id} fired or was cancelled, but no earlier epoch scheduled it"));
            }
        }
        p.specs = record
            .specs
            .into_iter()
            .filter_map(|f| FunctionType::parse(&f.function_type).map(|t| (t, Arc::new(f.specs))))
            .collect();
        p.positions = record.positions.into_iter().map(|pos| ((pos.stream, pos.shard), pos.sequence)).collect();
        p.dedup = record.dedup.into_iter().map(|m| ((m.source_partition, m.incarnation), (m.epoch, m.seq))).collect();
        p.set_incarnation(record.incarnation);
        self.outboxes.extend(record.outboxes);
        p.published_through = record.published_through;
        p.next_timer_id = record.next_timer_id;
        p.epoch = record.epoch + 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use statefun_proto::internal::{AddressEntry, StoredState};
    use statefun_proto::reqreply::TypedValue;

    use super::*;
    use crate::checkpoint::fs::FsBlobStore;
    use crate::checkpoint::{READ_CHUNK_BYTES, object_key};
    use crate::partition::{NoEndpoints, SealedEpoch};

    fn entry(i: usize, fill: u8) -> AddressEntry {
        let value = TypedValue { typename: "t/blob".into(), has_value: true, value: vec![fill; 100] };
        AddressEntry {
            address: Some(FunctionType::new("ns", "f").address(format!("a{i}"))),
            states: vec![StoredState { name: "s".into(), value: Some(value), written_at_ms: 1, accessed_at_ms: 2 }],
            ..Default::default()
        }
    }

    fn sealed(epoch: u64, snapshot: bool, addresses: Vec<AddressEntry>) -> Vec<u8> {
        let record = EpochRecord { partition: 0, epoch, snapshot, addresses, ..Default::default() };
        let entries = Default::default();
        let (timers, outboxes, parked, released, live_parked) = Default::default();
        SealedEpoch { record, entries, timers, outboxes, parked, released, live_parked }.encode()
    }

    #[tokio::test]
    async fn a_snapshot_larger_than_a_read_chunk_is_recovered_from_files_with_its_deltas() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::new(dir.path());
        let count = 60_000;
        let snapshot = sealed(1, true, (0..count).map(|i| entry(i, 1)).collect());
        assert!(snapshot.len() > 2 * READ_CHUNK_BYTES, "the snapshot spans several chunks");
        store.put(&object_key(0, 1, 7, true), snapshot.into()).await.expect("put snapshot");
        store.put(&object_key(0, 2, 7, false), sealed(2, false, vec![entry(5, 2)]).into()).await.expect("put delta");

        let manifest = PartitionManifest { epoch: 2, snapshot_epoch: 1, lease: 7 };
        let p = recover(&store, 0, 1, Arc::new(NoEndpoints), &manifest).await.expect("recovers");
        assert_eq!(p.address_count(), count);
        assert_eq!(p.epoch(), 3);
        let value = |i: usize| {
            let states = p.states_of(&FunctionType::new("ns", "f").address(format!("a{i}"))).unwrap_or_default();
            states.first().and_then(|s| s.value.clone()).map(|v| v.value[0])
        };
        assert_eq!(value(count - 1), Some(1));
        assert_eq!(value(5), Some(2), "the delta applied after the snapshot");

        store
            .put(&object_key(0, 2, 7, false), bytes::Bytes::from_static(b"\x0a\xff"))
            .await
            .expect("overwrite the delta");
        let broken = recover(&store, 0, 1, Arc::new(NoEndpoints), &manifest).await.err().map(|e| e.to_string());
        let named = broken.is_some_and(|e| e.contains("epoch-00000000000000000002") && e.contains("corrupt"));
        assert!(named, "a damaged delta is named");
    }

    #[tokio::test]
    async fn a_snapshot_whose_count_is_absurd_is_corrupt_and_takes_no_memory_on_its_word() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::new(dir.path());
        // A count that claims 2^40 addresses, then one address entry (the record's field 4).
        let record =
            EpochRecord { partition: 0, epoch: 1, snapshot: true, address_count: 1 << 40, ..Default::default() };
        let mut bytes = prost::Message::encode_to_vec(&record);
        prost::encoding::message::encode(4, &entry(3, 9), &mut bytes);
        store.put(&object_key(0, 1, 7, true), bytes.into()).await.expect("put snapshot");
        let manifest = PartitionManifest { epoch: 1, snapshot_epoch: 1, lease: 7 };
        let error = recover(&store, 0, 1, Arc::new(NoEndpoints), &manifest).await.err().map(|e| e.to_string());
        let error = error.unwrap_or_default();
        assert!(error.contains("corrupt"), "{error}");
        assert!(error.contains("says it holds 1099511627776 address entries but holds 1"), "{error}");
    }
}
