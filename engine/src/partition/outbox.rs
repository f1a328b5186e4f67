//! An epoch's outbox: what a partition publishes once the epoch commits
//! (messages for other partitions, egress records, dead letters), each with its
//! sequence number in the epoch.
//!
//! A message for another partition is kept as its encoded `Envelope`, an
//! epoch's all in one buffer: the checkpoint and the exchange batches copy those
//! bytes as they are, so a forwarded message is encoded once and holds no
//! allocation of its own while it waits for the commit. This module keeps the
//! outbox and writes it in its checkpoint form (`EpochOutbox`); what is
//! published where is the committer's.

use std::borrow::Cow;
use std::ops::Range;

use prost::Message;
use prost::encoding::message;
use statefun_proto::internal::{DeadLetter, EgressRecord, Envelope, EpochOutbox, outbox_entry};
use statefun_proto::reqreply::{Address, TypedValue};

use super::exchange_batches::MAX_ENVELOPE_BYTES;
use super::forward::Origin;
use super::wire::{TypedValueParts, bytes_field_len, delimited_len, put_bytes, put_header, put_varint, varint_len};

/// `EpochOutbox` field numbers (internal.proto).
const OUTBOX_EPOCH: u32 = 1;
const OUTBOX_ENTRIES: u32 = 2;
/// `OutboxEntry` field numbers.
const ENTRY_SEQ: u32 = 1;
const ENTRY_EXCHANGE: u32 = 2;
const ENTRY_EGRESS: u32 = 3;
const ENTRY_DEAD_LETTER: u32 = 4;

#[derive(Debug, Default, Clone)]
pub struct Outbox {
    /// The epoch whose outbox this is (set when the epoch is sealed).
    pub epoch: u64,
    entries: Vec<(u64, Entry)>,
    /// The encoded envelopes of the exchange entries, one after another.
    envelopes: Vec<u8>,
    /// What the egress records and dead letters hold (the envelopes' bytes are `envelopes`).
    other_bytes: usize,
}

#[derive(Debug, Clone)]
enum Entry {
    /// An encoded `Envelope` for `partition`, at `bytes` of the outbox's buffer.
    Exchange {
        partition: u32,
        bytes: Range<usize>,
    },
    Egress(EgressRecord),
    /// Boxed: dead letters are rare and large, and every entry is as large as the largest kind.
    DeadLetter(Box<DeadLetter>),
}

/// `Envelope` and `Address` field numbers (internal.proto, request-reply.proto).
const ENVELOPE_TARGET: u32 = 1;
const ENVELOPE_ARGUMENT: u32 = 3;
const ENVELOPE_ID: u32 = 4;
const ENVELOPE_INGRESS: u32 = 6;
/// `IngressPosition` field numbers.
const POSITION_STREAM: u32 = 1;
const POSITION_SHARD: u32 = 2;
const POSITION_SEQUENCE: u32 = 3;
const POSITION_USER_RECORD: u32 = 4;
const POSITION_TARGET: u32 = 5;
const ADDRESS_NAMESPACE: u32 = 1;
const ADDRESS_TYPE: u32 = 2;
const ADDRESS_ID: u32 = 3;

/// A message from an ingress record, as the parts its `Envelope` would be made
/// of: no caller, an argument that has a value.
#[derive(Clone)]
pub struct IngressMessage<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub key: &'a str,
    pub typename: &'a str,
    /// Owned when the caller can give it up: a message kept in this partition then moves it.
    pub value: Cow<'a, [u8]>,
    pub id: &'a str,
    /// Where it was read; recorded in the envelope when it goes to another partition ([`super::forward`]).
    pub origin: Option<Origin<'a>>,
}

/// The dead letter of a message too large for an exchange record (`size` bytes encoded).
pub fn too_large_for_exchange(envelope: Envelope, size: usize, partition: u32, at_ms: i64) -> DeadLetter {
    DeadLetter {
        address: envelope.target.clone(),
        reason: format!(
            "message of {size} bytes for partition {partition} is larger than an exchange record carries \
             ({MAX_ENVELOPE_BYTES} bytes); it is kept whole in this dead letter"
        ),
        messages: vec![envelope],
        at_ms,
        ..Default::default()
    }
}

impl IngressMessage<'_> {
    /// The envelope its parts make, without its origin (kept only on the way to another partition).
    pub fn into_envelope(self) -> Envelope {
        let target = Address { namespace: self.namespace.into(), r#type: self.name.into(), id: self.key.into() };
        let argument = TypedValue { typename: self.typename.into(), has_value: true, value: self.value.into_owned() };
        Envelope {
            target: Some(target),
            caller: None,
            argument: Some(argument),
            id: self.id.into(),
            hops: 0,
            ingress: None,
        }
    }
}

impl Origin<'_> {
    /// The origin as an `IngressPosition` in field `tag`, of the message of id `id`:
    /// its stream, shard and sequence left out where the id says them ([`Origin::said_by_id`]).
    fn put_field(&self, out: &mut Vec<u8>, tag: u32, id: &str) {
        let (stream, shard, sequence) =
            if self.said_by_id(id) { ("", "", "") } else { (self.stream, self.shard, self.sequence) };
        let (user_record, target) = (u64::from(self.user_record), u64::from(self.target));
        let body_len = bytes_field_len(POSITION_STREAM, stream)
            + bytes_field_len(POSITION_SHARD, shard)
            + bytes_field_len(POSITION_SEQUENCE, sequence)
            + varint_len(POSITION_USER_RECORD, user_record)
            + varint_len(POSITION_TARGET, target);
        put_header(out, tag, body_len);
        put_bytes(out, POSITION_STREAM, stream);
        put_bytes(out, POSITION_SHARD, shard);
        put_bytes(out, POSITION_SEQUENCE, sequence);
        put_varint(out, POSITION_USER_RECORD, user_record);
        put_varint(out, POSITION_TARGET, target);
    }
}

/// An outbox entry, as the committer publishes it.
pub enum Item<'a> {
    /// A message for another partition, as an encoded `Envelope`.
    Exchange {
        partition: u32,
        envelope: &'a [u8],
    },
    Egress(&'a EgressRecord),
    DeadLetter(&'a DeadLetter),
}

impl Outbox {
    /// An empty outbox with room for as much as `previous` held: an epoch
    /// likely publishes about as much as the last, and a growing outbox is
    /// copied each time it outgrows its room.
    pub fn sized_like(previous: &Outbox) -> Self {
        Self {
            epoch: 0,
            entries: Vec::with_capacity(previous.entries.len()),
            envelopes: Vec::with_capacity(previous.envelopes.len()),
            other_bytes: 0,
        }
    }

    /// About what the outbox holds in memory: its messages' and records' bytes, and its entries.
    pub fn bytes(&self) -> usize {
        self.envelopes.len() + self.other_bytes + self.entries.len() * std::mem::size_of::<(u64, Entry)>()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds a message for another partition. `Err` with the envelope's size
    /// when it is larger than an exchange record carries: nothing is added.
    pub fn push_exchange(&mut self, seq: u64, partition: u32, envelope: &Envelope) -> Result<(), usize> {
        let start = self.envelopes.len();
        envelope.encode_raw(&mut self.envelopes);
        self.close_exchange(seq, partition, start)
    }

    /// Adds a message from an ingress for another partition, written as
    /// [`Outbox::push_exchange`] writes the envelope its parts make (and refused as it refuses one).
    pub fn push_ingress_exchange(
        &mut self,
        seq: u64,
        partition: u32,
        message: &IngressMessage<'_>,
    ) -> Result<(), usize> {
        let target_len = bytes_field_len(ADDRESS_NAMESPACE, message.namespace)
            + bytes_field_len(ADDRESS_TYPE, message.name)
            + bytes_field_len(ADDRESS_ID, message.key);
        let argument = TypedValueParts { typename: message.typename, has_value: true, value: &message.value };
        let out = &mut self.envelopes;
        let start = out.len();
        put_header(out, ENVELOPE_TARGET, target_len);
        put_bytes(out, ADDRESS_NAMESPACE, message.namespace);
        put_bytes(out, ADDRESS_TYPE, message.name);
        put_bytes(out, ADDRESS_ID, message.key);
        argument.put_field(out, ENVELOPE_ARGUMENT);
        put_bytes(out, ENVELOPE_ID, message.id);
        if let Some(origin) = &message.origin {
            origin.put_field(out, ENVELOPE_INGRESS, message.id);
        }
        self.close_exchange(seq, partition, start)
    }

    /// Keeps the envelope written from `start` on as an entry, if an exchange record can carry it.
    fn close_exchange(&mut self, seq: u64, partition: u32, start: usize) -> Result<(), usize> {
        let len = self.envelopes.len() - start;
        if len > MAX_ENVELOPE_BYTES {
            self.envelopes.truncate(start);
            return Err(len);
        }
        self.entries.push((seq, Entry::Exchange { partition, bytes: start..self.envelopes.len() }));
        Ok(())
    }

    pub fn push_egress(&mut self, seq: u64, record: EgressRecord) {
        self.other_bytes += record.data.len() + record.partition_key.len() + record.stream.len();
        self.entries.push((seq, Entry::Egress(record)));
    }

    pub fn push_dead_letter(&mut self, seq: u64, letter: DeadLetter) {
        self.other_bytes += letter.encoded_len() + std::mem::size_of::<DeadLetter>();
        self.entries.push((seq, Entry::DeadLetter(Box::new(letter))));
    }

    /// The entries in order, with their sequence numbers.
    pub fn items(&self) -> impl Iterator<Item = (u64, Item<'_>)> {
        self.entries.iter().map(|(seq, entry)| {
            let item = match entry {
                Entry::Exchange { partition, bytes } => {
                    Item::Exchange { partition: *partition, envelope: &self.envelopes[bytes.clone()] }
                }
                Entry::Egress(record) => Item::Egress(record),
                Entry::DeadLetter(letter) => Item::DeadLetter(letter),
            };
            (*seq, item)
        })
    }

    /// Appends the outbox, as an `EpochOutbox`, as field `tag` of the enclosing message.
    pub fn encode_field(&self, tag: u32, out: &mut Vec<u8>) {
        let entry_lens: Vec<usize> = self.entries.iter().map(|(seq, entry)| self.entry_len(*seq, entry)).collect();
        let body = varint_len(OUTBOX_EPOCH, self.epoch)
            + entry_lens.iter().map(|len| delimited_len(OUTBOX_ENTRIES, *len)).sum::<usize>();
        out.reserve(delimited_len(tag, body));
        put_header(out, tag, body);
        put_varint(out, OUTBOX_EPOCH, self.epoch);
        for ((seq, entry), len) in self.entries.iter().zip(entry_lens) {
            put_header(out, OUTBOX_ENTRIES, len);
            put_varint(out, ENTRY_SEQ, *seq);
            match entry {
                Entry::Exchange { bytes, .. } => {
                    put_header(out, ENTRY_EXCHANGE, bytes.len());
                    out.extend_from_slice(&self.envelopes[bytes.clone()]);
                }
                Entry::Egress(record) => message::encode(ENTRY_EGRESS, record, out),
                Entry::DeadLetter(letter) => message::encode(ENTRY_DEAD_LETTER, letter.as_ref(), out),
            }
        }
    }

    /// An `OutboxEntry`'s length (a oneof member is written even when empty).
    fn entry_len(&self, seq: u64, entry: &Entry) -> usize {
        varint_len(ENTRY_SEQ, seq)
            + match entry {
                Entry::Exchange { bytes, .. } => delimited_len(ENTRY_EXCHANGE, bytes.len()),
                Entry::Egress(record) => message::encoded_len(ENTRY_EGRESS, record),
                Entry::DeadLetter(letter) => message::encoded_len(ENTRY_DEAD_LETTER, letter.as_ref()),
            }
    }

    /// An outbox a checkpoint recorded; `partition_of` says where a message goes
    /// (a message without a target goes to partition 0, which dead-letters it).
    pub fn from_record(record: EpochOutbox, partition_of: impl Fn(&Envelope) -> u32) -> Self {
        let mut outbox = Self { epoch: record.epoch, ..Self::default() };
        for entry in record.entries {
            match entry.entry {
                Some(outbox_entry::Entry::Exchange(envelope)) => {
                    // Earlier releases let such a message in, and its epoch could never be published.
                    let partition = partition_of(&envelope);
                    if let Err(size) = outbox.push_exchange(entry.seq, partition, &envelope) {
                        let letter = too_large_for_exchange(envelope, size, partition, crate::now_ms());
                        outbox.push_dead_letter(entry.seq, letter);
                    }
                }
                Some(outbox_entry::Entry::Egress(record)) => outbox.push_egress(entry.seq, record),
                Some(outbox_entry::Entry::DeadLetter(letter)) => outbox.push_dead_letter(entry.seq, letter),
                None => {}
            }
        }
        outbox
    }

    /// The outbox as its checkpoint form decodes.
    #[cfg(test)]
    pub fn to_record(&self) -> EpochOutbox {
        const RECORD_OUTBOXES: u32 = 9;
        let mut bytes = Vec::new();
        self.encode_field(RECORD_OUTBOXES, &mut bytes);
        let record =
            statefun_proto::internal::EpochRecord::decode(bytes.as_slice()).expect("an encoded outbox decodes");
        record.outboxes.into_iter().next().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use statefun_proto::internal::{EpochRecord, IngressPosition, OutboxEntry};

    fn envelope(id: &str) -> Envelope {
        Envelope {
            target: Some(Address { namespace: "ns".into(), r#type: "f".into(), id: id.into() }),
            caller: None,
            argument: Some(TypedValue { typename: "t/v".into(), has_value: true, value: id.as_bytes().to_vec() }),
            id: format!("m-{id}"),
            hops: 0,
            ingress: None,
        }
    }

    #[test]
    fn an_outbox_is_written_as_prost_writes_its_checkpoint_form_and_read_back_from_it() {
        let record = EpochOutbox {
            epoch: 12,
            entries: vec![
                OutboxEntry { seq: 0, entry: Some(outbox_entry::Entry::Exchange(envelope("a"))) },
                OutboxEntry {
                    seq: 1,
                    entry: Some(outbox_entry::Entry::Egress(EgressRecord {
                        stream: "out".into(),
                        partition_key: "k".into(),
                        data: b"v".to_vec(),
                        ..Default::default()
                    })),
                },
                OutboxEntry { seq: 2, entry: Some(outbox_entry::Entry::Exchange(Envelope::default())) },
                OutboxEntry {
                    seq: 3,
                    entry: Some(outbox_entry::Entry::DeadLetter(DeadLetter {
                        reason: "why".into(),
                        ..Default::default()
                    })),
                },
            ],
        };
        let outbox = Outbox::from_record(record.clone(), |e| if e.target.is_some() { 3 } else { 0 });
        let partitions: Vec<u32> = outbox
            .items()
            .filter_map(|(_, item)| match item {
                Item::Exchange { partition, .. } => Some(partition),
                _ => None,
            })
            .collect();
        assert_eq!(partitions, [3, 0]);

        let mut written = Vec::new();
        outbox.encode_field(9, &mut written);
        let expected = EpochRecord { outboxes: vec![record.clone()], ..Default::default() }.encode_to_vec();
        assert_eq!(written, expected);
        assert_eq!(outbox.to_record(), record);
    }

    /// An ingress message read at `in`/`s-0`/`7` (its second user record, for its second target).
    fn ingress_message(id: &str) -> IngressMessage<'_> {
        IngressMessage {
            namespace: "ns",
            name: "f",
            key: "k-1",
            typename: "t/v",
            value: Cow::Borrowed(b"\x08\x2a"),
            id,
            origin: Some(Origin { stream: "in", shard: "s-0", sequence: "7", user_record: 2, target: 1 }),
        }
    }

    /// The envelope of the outbox's only entry, an exchange entry of sequence 4 for partition 2.
    fn the_exchange_entry(outbox: &Outbox) -> &[u8] {
        match outbox.items().next() {
            Some((4, Item::Exchange { partition: 2, envelope })) => envelope,
            _ => panic!("one exchange entry"),
        }
    }

    #[test]
    fn an_ingress_message_is_written_as_the_envelope_its_parts_make() {
        let message = ingress_message("in/0/7");
        let envelope = Envelope {
            target: Some(Address { namespace: "ns".into(), r#type: "f".into(), id: "k-1".into() }),
            caller: None,
            argument: Some(TypedValue { typename: "t/v".into(), has_value: true, value: b"\x08\x2a".to_vec() }),
            id: "in/0/7".into(),
            hops: 0,
            ingress: Some(IngressPosition {
                stream: "in".into(),
                shard: "s-0".into(),
                sequence: "7".into(),
                user_record: 2,
                target: 1,
            }),
        };
        let (mut from_parts, mut from_envelope) = (Outbox::default(), Outbox::default());
        from_parts.push_ingress_exchange(4, 2, &message).expect("fits");
        from_envelope.push_exchange(4, 2, &envelope).expect("fits");
        assert_eq!(the_exchange_entry(&from_parts), the_exchange_entry(&from_envelope));
        assert_eq!(Envelope::decode(the_exchange_entry(&from_parts)).expect("decodes"), envelope);
    }

    #[test]
    fn an_ingress_message_whose_id_says_where_it_was_read_stores_only_the_rest_of_its_position() {
        let message = ingress_message("in/s-0/7/1/1");
        let mut outbox = Outbox::default();
        outbox.push_ingress_exchange(4, 2, &message).expect("fits");
        let envelope = Envelope::decode(the_exchange_entry(&outbox)).expect("decodes");
        let position = envelope.ingress.clone().expect("a position");
        assert_eq!(position, IngressPosition { user_record: 2, target: 1, ..Default::default() });
        let origin = Origin::of(&position, &envelope.id).expect("read back from the id");
        assert_eq!((origin.stream, origin.shard, origin.sequence), ("in", "s-0", "7"));
    }
}
