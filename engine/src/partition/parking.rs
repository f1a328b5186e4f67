//! Messages of one address beyond its cap, kept out of memory.
//!
//! An address whose mailbox holds its cap (in bytes or messages) parks what
//! arrives next: the messages wait here until the epoch is sealed, which
//! writes them as one object of the checkpoint store (a segment) and lists it
//! in the address's entry; when the mailbox has drained to half its cap, the
//! oldest segment is loaded back behind it. So one backed-up address holds its
//! cap and no more, and the partition keeps taking input for every other one.
//! Order holds: while anything is parked, everything new is parked behind it.
//! This module keeps the parked state of one address, names segments and
//! decides when to write and read them back; the partition parks what passes
//! the cap, the worker and committer do the reading and writing.

use std::collections::VecDeque;

use prost::Message as _;
use statefun_proto::internal::{Envelope, ParkedMessages};
use statefun_proto::reqreply::Address;

use super::spill::spilled_type;
use super::{DeadLetterCause, Effect, Partition};

/// Where the segments of a partition are stored.
pub fn prefix(partition: u32) -> String {
    format!("parked-{partition:05}/")
}

/// Where a segment named `name` (see [`segment_name`]) is stored.
pub fn object_key(partition: u32, name: &str) -> String {
    format!("{}{name}.pb", prefix(partition))
}

/// A segment's name: unique to the history, the writer's lease and the epoch
/// (a fenced writer of the same epoch never overwrites the next owner's).
pub fn segment_name(id_prefix: &str, lease: u64, epoch: u64, n: u64) -> String {
    format!("{id_prefix}.l{lease}.e{epoch}.{n}")
}

/// Decodes a segment read back. Its list is sized once, from a count of the
/// entries: a segment holds an epoch's parked messages (tens of thousands for
/// a hot address), and a list grown by doubling touches several times its
/// memory, which the allocator hands back to the system between epochs.
pub fn decode_segment(bytes: &[u8]) -> Result<Vec<Envelope>, prost::DecodeError> {
    let mut parked = ParkedMessages { messages: Vec::with_capacity(count_entries(bytes)) };
    parked.merge(bytes)?;
    Ok(parked.messages)
}

/// How many length-delimited fields `bytes` holds at its top level, counted
/// up to anything else. A hint for a capacity, not a check (decoding checks),
/// and at most half the length of `bytes`: every entry takes two bytes.
fn count_entries(mut buf: &[u8]) -> usize {
    const LENGTH_DELIMITED: u64 = 2;
    let mut entries = 0;
    while !buf.is_empty() {
        let Ok(key) = prost::encoding::decode_varint(&mut buf) else { break };
        let Ok(len) = prost::encoding::decode_varint(&mut buf) else { break };
        match usize::try_from(len) {
            Ok(len) if key & 7 == LENGTH_DELIMITED && len <= buf.len() => buf = &buf[len..],
            _ => break,
        }
        entries += 1;
    }
    entries
}

#[derive(Debug, Default, Clone)]
pub struct Parked {
    /// Segments written by sealed epochs, oldest first, with the epoch that
    /// wrote each (0: restored, so committed): one is read back only once its
    /// epoch is committed, as it may not be written before.
    pub segments: VecDeque<(String, u64)>,
    /// Arrived since the last seal, after every segment.
    pub fresh: Vec<Envelope>,
    pub fresh_bytes: usize,
    /// How many arrived in the epoch before: the next epoch's list starts
    /// that large rather than doubling its way there (see [`decode_segment`]).
    pub fresh_before: usize,
    /// The oldest segment is being loaded.
    pub loading: bool,
}

impl Parked {
    pub fn from_segments(segments: Vec<String>) -> Option<Box<Self>> {
        let segments = segments.into_iter().map(|name| (name, 0)).collect();
        Some(Box::new(Self { segments, ..Self::default() })).filter(|p| !p.segments.is_empty())
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty() && self.fresh.is_empty()
    }
}

impl Partition {
    /// Turns what each address parked in the epoch into a segment its entry lists.
    pub(super) fn write_parked(&mut self) -> Vec<(String, Vec<u8>)> {
        let mut written = Vec::with_capacity(self.parking.len());
        for address in std::mem::take(&mut self.parking) {
            let Some(parked) = self.addresses.get_mut(&address).and_then(|r| r.busy_mut().parked.as_deref_mut()) else {
                continue;
            };
            let name = segment_name(&self.id_prefix, self.lease, self.epoch, written.len() as u64);
            let messages = ParkedMessages { messages: std::mem::take(&mut parked.fresh) };
            parked.fresh_before = messages.messages.len();
            self.parked_bytes -= std::mem::take(&mut parked.fresh_bytes);
            self.parked_messages -= messages.messages.len();
            parked.segments.push_back((name.clone(), self.epoch));
            written.push((name, messages.encode_to_vec()));
            self.mark_dirty(&address);
        }
        written
    }

    /// Parks a message at `address` (behind what it parked before), to be
    /// written by the next seal.
    pub(super) fn park(&mut self, address: &Address, envelope: Envelope, bytes: usize) {
        let parked = self.addresses.get_or_insert(address).busy_mut().parked.get_or_insert_default();
        if parked.fresh.capacity() == 0 {
            parked.fresh.reserve(parked.fresh_before);
        }
        parked.fresh.push(envelope);
        parked.fresh_bytes += bytes;
        self.parked_bytes += bytes;
        self.parked_messages += 1;
        if !self.parking.contains(address) {
            self.parking.insert(address.clone());
        }
    }

    /// Once an address's mailbox has drained to half its cap (a spill: once its
    /// type has drained, see [`super::spill`]), brings back what it parked: the
    /// oldest segment is read back (an [`Effect::Unpark`]), or, with none
    /// written yet, what was parked since the last seal moves over at once.
    pub(super) fn unpark_if_drained(&mut self, address: &Address, now_ms: i64) {
        self.unpark_if_drained_with(address, true, now_ms);
    }

    /// [`Self::unpark_if_drained`], where what was parked since the last seal
    /// moves over only if `fresh_now` (else it waits for the seal to write it,
    /// and is read back then): delivering it while an address's batch is being
    /// taken apart could start another batch in the middle.
    pub(super) fn unpark_if_drained_with(&mut self, address: &Address, fresh_now: bool, now_ms: i64) {
        let spilled = spilled_type(address);
        let drained = match &spilled {
            Some(function_type) => self.spill_drained(function_type),
            None => {
                let bounds = self.bounds;
                let Some(record) = self.addresses.get(address) else { return };
                record.busy().queued_bytes <= bounds.address_max_bytes / 2
                    && record.mailbox().len() <= bounds.address_max_messages / 2
            }
        };
        let Some(record) = self.addresses.get_mut(address) else { return };
        let Some(parked) = record.busy().parked.as_deref().filter(|p| drained && !p.loading) else { return };
        if let Some((segment, epoch)) = parked.segments.front().cloned() {
            if epoch > self.committed_through {
                self.awaiting_commit.push(address.clone());
                return;
            }
            if let Some(parked) = record.busy_mut().parked.as_deref_mut() {
                parked.loading = true;
            }
            self.effects.push(Effect::Unpark { address: address.clone(), segment });
            return;
        }
        if !fresh_now {
            return;
        }
        let Some(parked) = record.busy_mut().parked.take() else { return };
        self.parked_bytes -= parked.fresh_bytes;
        self.parked_messages -= parked.fresh.len();
        self.parking.remove(address);
        match spilled {
            Some(function_type) => {
                self.spill_ended(&function_type);
                self.mark_dirty(address);
                self.deliver_spilled(parked.fresh, now_ms);
                self.remove_if_empty(address);
            }
            None => self.requeue(address, parked.fresh, now_ms),
        }
    }

    /// Applies a parked segment read back: its messages join the mailbox
    /// (or, if it could not be read, a dead letter says what was lost).
    pub fn on_unparked(
        &mut self,
        address: &Address,
        segment: &str,
        messages: Result<Vec<Envelope>, String>,
        now_ms: i64,
    ) {
        let Some(record) = self.addresses.get_mut(address) else { return };
        let Some(parked) = record.busy_mut().parked.as_deref_mut() else { return };
        if parked.segments.front().map(|(name, _)| name.as_str()) != Some(segment) {
            return;
        }
        parked.segments.pop_front();
        parked.loading = false;
        let spilled = spilled_type(address);
        if parked.is_empty() {
            record.busy_mut().parked = None;
            if let Some(function_type) = &spilled {
                self.spill_ended(function_type);
            }
        }
        self.released.push(segment.to_owned());
        self.changed = true;
        self.mark_dirty(address);
        match messages {
            Ok(messages) if spilled.is_some() => self.deliver_spilled(messages, now_ms),
            Ok(messages) => self.requeue(address, messages, now_ms),
            Err(reason) => {
                let reason = format!("parked messages could not be read back from segment {segment}: {reason}");
                self.dead_letter(
                    DeadLetterCause::ParkedLost,
                    Some(address.clone()),
                    reason,
                    Vec::new(),
                    "parked",
                    Vec::new(),
                    now_ms,
                );
            }
        }
        self.unpark_if_drained(address, now_ms);
        self.remove_if_empty(address);
    }

    /// Queues messages that were parked, in their order, behind the mailbox.
    fn requeue(&mut self, address: &Address, messages: Vec<Envelope>, now_ms: i64) {
        let record = self.addresses.get_or_insert(address);
        let (mut requeued, requeued_messages) = (0, messages.len());
        for envelope in messages {
            let bytes = envelope.encoded_len();
            record.push_message(envelope, bytes);
            self.queued += 1;
            requeued += bytes;
        }
        self.queued_bytes += requeued;
        self.count_queued(address, requeued_messages, requeued);
        self.mark_dirty(address);
        self.dispatch(address, now_ms);
    }
}
