//! Rebuilding a partition from its committed history: a snapshot, then the
//! deltas after it, applied in order as the checkpoint store hands them over
//! (a [`HistorySink`]), one address entry at a time.
//!
//! Checks that each delta follows from what came before it; never reads storage.

use std::collections::HashMap;
use std::sync::Arc;

use statefun_proto::internal::{AddressEntry, DelayedMessage, Envelope, EpochOutbox, EpochRecord};
use statefun_proto::reqreply::Address;

use super::outbox::Outbox;
use super::record::AddressRecord;
use super::{Catalog, Partition, spill};
use crate::address::{self, FunctionType};

/// Where a replayed history goes, piece by piece: for each object, oldest
/// first, `begin_epoch`, its address entries, then the rest of its record.
pub trait HistorySink: Send {
    fn begin_epoch(&mut self, epoch: u64, snapshot: bool);
    /// How many entries the object holds, when it says (before its entries).
    fn expect_entries(&mut self, count: usize);
    fn entry(&mut self, entry: AddressEntry) -> Result<(), String>;
    /// One of the record's delayed messages (`EpochRecord.timers`), streamed as entries are.
    fn timer(&mut self, timer: DelayedMessage);
    /// The object's record without its address entries and timers.
    fn end_epoch(&mut self, record: EpochRecord) -> Result<(), String>;
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
        let (mut queued_by_address, mut spilling) = (Vec::new(), Vec::new());
        for (address, record) in p.addresses.iter() {
            if record.busy().parked.is_some()
                && let Some(function_type) = spill::spilled_type(&address)
            {
                spilling.push(function_type);
            }
            let bytes = record.mailbox().iter().map(prost::Message::encoded_len).sum::<usize>();
            p.queued += record.mailbox().len();
            p.queued_bytes += bytes;
            if !record.mailbox().is_empty() {
                queued_by_address.push((address, record.mailbox().len(), bytes));
            }
        }
        for (address, messages, bytes) in queued_by_address {
            p.count_queued(&address, messages, bytes);
        }
        p.spills_restored(spilling);
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
        p.ingress_marks = super::forward::IngressMarks::from_records(record.ingress_marks);
        p.set_incarnation(record.incarnation);
        self.outboxes.extend(record.outboxes);
        p.published_through = record.published_through;
        p.next_timer_id = record.next_timer_id;
        p.epoch = record.epoch + 1;
        Ok(())
    }
}
