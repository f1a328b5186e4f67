//! Closing an epoch: the checkpoint record a partition seals (a delta of what
//! changed, or a snapshot of everything), its encoding, and what the partition
//! learns once an epoch's outbox is published. No I/O: the committer writes
//! the record and publishes the outbox.

use std::sync::Arc;

use prost::Message as _;
use statefun_proto::internal::{DedupMark, EpochRecord, FunctionSpecs, InputPosition};

use super::Partition;
use super::outbox::Outbox;
use super::sealed_entries::SealedEntries;

/// A sealed epoch's checkpoint record. The address entries the partition
/// wrote come already encoded; the outboxes it records are shared with the
/// partition and the committer, and encoded straight from there.
#[derive(Debug, Clone)]
pub struct SealedEpoch {
    /// Everything but the sealed entries and the outboxes (entries given here are written too).
    pub record: EpochRecord,
    pub entries: SealedEntries,
    /// Encoded `EpochRecord.timers` fields (see [`super::timers`]).
    pub timers: Vec<u8>,
    pub outboxes: Vec<Arc<Outbox>>,
    /// Parked segments the record lists for the first time: (name, encoded
    /// `ParkedMessages`), written before the record is.
    pub parked: Vec<(String, Vec<u8>)>,
    /// Parked segments read back in the epoch: deleted once it is committed.
    pub released: Vec<String>,
    /// For a snapshot: every parked segment it lists. Once it is committed, any
    /// other segment of the partition is litter (an uncommitted epoch's, or one
    /// whose delete a crash lost), and is deleted.
    pub live_parked: Option<Vec<String>>,
}

impl SealedEpoch {
    /// The encoded [`EpochRecord`]: the small fields and the address count
    /// first, then the address entries, then the outboxes (a repeated field may
    /// come in pieces), so a reader streaming a large object knows what follows.
    pub fn encode(mut self) -> Vec<u8> {
        const ADDRESSES_KEY: u8 = (4 << 3) | 2;
        const OUTBOXES_TAG: u32 = 9;
        let addresses = std::mem::take(&mut self.record.addresses);
        self.record.address_count = addresses.len() as u64 + self.entries.count();
        let mut bytes = self.record.encode_to_vec();
        bytes.reserve(self.entries.bytes().len());
        for entry in &addresses {
            push_field(&mut bytes, ADDRESSES_KEY, entry);
        }
        bytes.extend_from_slice(self.entries.bytes());
        bytes.extend_from_slice(&self.timers);
        for outbox in &self.outboxes {
            outbox.encode_field(OUTBOXES_TAG, &mut bytes);
        }
        bytes
    }

    /// The whole record, outboxes included, as it decodes.
    #[cfg(test)]
    pub fn into_record(self) -> EpochRecord {
        let mut record = self.record;
        record.addresses.extend(super::sealed_entries::decode(&self.entries));
        record.address_count = record.addresses.len() as u64;
        let timers = EpochRecord::decode(self.timers.as_slice()).map(|r| r.timers).unwrap_or_default();
        record.timers.extend(timers);
        record.outboxes = self.outboxes.iter().map(|o| o.to_record()).collect();
        record
    }
}

/// Appends a length-delimited field (its one-byte key given).
fn push_field(bytes: &mut Vec<u8>, key: u8, message: &impl prost::Message) {
    bytes.push(key);
    message.encode_length_delimited(bytes).unwrap_or_else(|_| unreachable!("a Vec grows as needed"));
}

impl Partition {
    /// Closes the epoch: returns its checkpoint record (a delta, or a snapshot
    /// of everything) and the outbox to publish once it is committed.
    pub fn seal(&mut self, snapshot: bool) -> (SealedEpoch, Arc<Outbox>) {
        let next = Outbox::sized_like(&self.outbox);
        let mut outbox = std::mem::replace(&mut self.outbox, next);
        outbox.epoch = self.epoch;
        let outbox = Arc::new(outbox);
        let mut record = EpochRecord {
            partition: self.id,
            epoch: self.epoch,
            snapshot,
            specs: self
                .specs
                .iter()
                .map(|(t, specs)| FunctionSpecs { function_type: t.to_string(), specs: specs.to_vec() })
                .collect(),
            positions: self
                .positions
                .iter()
                .map(|((stream, shard), sequence)| InputPosition {
                    stream: stream.clone(),
                    shard: shard.clone(),
                    sequence: sequence.clone(),
                })
                .collect(),
            dedup: self
                .dedup
                .iter()
                .map(|(&(source_partition, incarnation), &(epoch, seq))| DedupMark {
                    source_partition,
                    epoch,
                    seq,
                    incarnation,
                })
                .collect(),
            ingress_marks: self.ingress_marks.to_records(),
            incarnation: self.incarnation,
            published_through: self.published_through,
            next_timer_id: self.next_timer_id,
            timers_as_changes: true,
            ..Default::default()
        };
        let mut timers = Vec::new();
        record.timers_removed = self.timers.seal_into(snapshot, &mut timers);
        let parked = self.write_parked();
        let released = std::mem::take(&mut self.released);
        let mut entries = SealedEntries::default();
        let mut live_parked = None;
        let outboxes = if snapshot {
            let mut live = Vec::new();
            for (address, r) in self.addresses.iter_mut() {
                r.seal_into(&address, true, &mut entries);
                live.extend(r.parked_segments().map(str::to_owned));
            }
            live_parked = Some(live);
            self.unpublished.iter().cloned().chain([outbox.clone()]).collect()
        } else {
            for address in &self.dirty {
                match self.addresses.get_mut(address) {
                    Some(r) => r.seal_into(address, false, &mut entries),
                    None => record.removed.push(address.clone()),
                }
            }
            vec![outbox.clone()]
        };
        self.dirty.clear();
        self.unpublished_bytes += outbox.bytes();
        self.unpublished.push_back(outbox.clone());
        self.changed = false;
        self.epoch += 1;
        self.next_seq = 0;
        (SealedEpoch { record, entries, timers, outboxes, parked, released, live_parked }, outbox)
    }

    /// Notes that the outbox of `epoch` (and every earlier one) is published.
    /// When that outbox held anything, the next epoch is committed even if
    /// nothing else changes, so a restart does not publish it all again.
    pub fn mark_published(&mut self, epoch: u64) {
        while let Some(outbox) = self.unpublished.front().filter(|o| o.epoch <= epoch) {
            self.changed |= !outbox.is_empty();
            self.unpublished_bytes -= outbox.bytes();
            self.unpublished.pop_front();
        }
        self.published_through = self.published_through.max(epoch);
        self.committed_through = self.committed_through.max(epoch);
        // Only segments are read back here (an effect): nothing is requeued, so the time is not needed.
        for address in std::mem::take(&mut self.awaiting_commit) {
            self.unpark_if_drained_with(&address, false, 0);
        }
        // A spill whose type drained while its segments waited for this commit.
        for spill in self.spill_addresses() {
            self.unpark_if_drained_with(&spill, false, 0);
        }
    }
}
