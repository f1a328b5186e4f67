//! Rebuilding a partition from its committed history: a snapshot, then the
//! deltas after it, applied in order as [`crate::checkpoint::replay_history`]
//! hands them over, one address entry at a time.
//!
//! Checks that each delta follows from what came before it; never reads storage.

use std::sync::Arc;

use statefun_proto::internal::{AddressEntry, EpochOutbox, EpochRecord, PartitionManifest};

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

pub struct Restorer {
    partition: Partition,
    outboxes: Vec<EpochOutbox>,
}

impl Restorer {
    pub fn new(id: u32, partitions: u32, catalog: Arc<dyn Catalog>) -> Self {
        Self { partition: Partition::new(id, partitions, catalog, 1), outboxes: Vec::new() }
    }

    /// The partition as the history left it.
    pub fn finish(self) -> Partition {
        let Self { partition: mut p, outboxes } = self;
        p.unpublished = outboxes.into_iter().filter(|o| o.epoch > p.published_through).map(Arc::new).collect();
        for (address, record) in p.addresses.iter() {
            p.queued += record.mailbox().len();
            for timer in &record.busy().timers {
                p.timers.insert((timer.fire_at_ms, timer.timer_id), address.clone());
            }
        }
        p
    }
}

impl HistorySink for Restorer {
    fn begin_epoch(&mut self, _epoch: u64, snapshot: bool) {
        if snapshot {
            self.partition.addresses.clear();
            self.outboxes.clear();
        }
    }

    fn expect_entries(&mut self, count: usize) {
        // Exactly, for the snapshot that fills an empty table; a delta's entries
        // are mostly addresses already there, and new ones grow it as usual.
        if self.partition.addresses.len() == 0 {
            self.partition.addresses.reserve(count);
        }
    }

    fn entry(&mut self, mut entry: AddressEntry) -> Result<(), String> {
        let Some(address) = entry.address.take() else { return Ok(()) };
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

    fn end_epoch(&mut self, record: EpochRecord) -> Result<(), String> {
        let p = &mut self.partition;
        for address in &record.removed {
            p.addresses.remove(address);
        }
        p.specs = record
            .specs
            .into_iter()
            .filter_map(|f| FunctionType::parse(&f.function_type).map(|t| (t, Arc::new(f.specs))))
            .collect();
        p.positions = record.positions.into_iter().map(|pos| ((pos.stream, pos.shard), pos.sequence)).collect();
        p.dedup = record.dedup.into_iter().map(|m| (m.source_partition, (m.epoch, m.seq))).collect();
        self.outboxes.extend(record.outboxes);
        p.published_through = record.published_through;
        p.next_timer_id = record.next_timer_id;
        p.epoch = record.epoch + 1;
        Ok(())
    }
}
