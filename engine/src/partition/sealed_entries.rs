//! Checkpoint address entries encoded straight from the partition's records.
//!
//! A sealed epoch used to hold `AddressEntry` messages, built by cloning every
//! state and every newly queued message of each dirty address, only to be
//! encoded and dropped by the committer. Here the entries are written as the
//! `EpochRecord.addresses` fields they become, from borrowed parts, with the
//! same bytes prost writes for the equivalent messages. This module only
//! encodes; which addresses go in, and what part of a mailbox, is the record's
//! and the partition's business.

use std::collections::VecDeque;

use prost::encoding::message;
use statefun_proto::internal::Envelope;
use statefun_proto::reqreply::Address;

use super::wire::{TypedValueParts, bytes_field_len, delimited_len, put_bytes, put_header, put_varint, varint_len};

/// `EpochRecord.addresses`.
const RECORD_ADDRESSES: u32 = 4;
/// `AddressEntry` field numbers (internal.proto).
const ENTRY_ADDRESS: u32 = 1;
const ENTRY_STATES: u32 = 2;
const ENTRY_MAILBOX: u32 = 3;
const ENTRY_IN_FLIGHT: u32 = 4;
const ENTRY_MAILBOX_APPENDS: u32 = 6;
const ENTRY_MAILBOX_CONSUMED: u32 = 7;
const ENTRY_PARKED: u32 = 8;
/// `StoredState` field numbers.
const STATE_NAME: u32 = 1;
const STATE_VALUE: u32 = 2;
const STATE_WRITTEN_AT: u32 = 3;
const STATE_ACCESSED_AT: u32 = 4;

/// Encoded `EpochRecord.addresses` fields, and how many.
#[derive(Debug, Default, Clone)]
pub struct SealedEntries {
    bytes: Vec<u8>,
    count: u64,
}

/// A state as `StoredState` encodes it.
pub struct StateParts<'a> {
    pub name: &'a str,
    /// `None` when the state holds no value (the message has no `value`).
    pub typename: Option<&'a str>,
    pub has_value: bool,
    pub value: &'a [u8],
    pub written_at_ms: i64,
    pub accessed_at_ms: i64,
}

/// Everything an `AddressEntry` holds, borrowed.
pub struct EntryParts<'a> {
    pub address: &'a Address,
    pub states: Vec<StateParts<'a>>,
    /// The mailbox's messages from `mailbox_from` on are the entry's `mailbox`.
    pub mailbox: &'a VecDeque<Envelope>,
    pub mailbox_from: usize,
    pub in_flight: u32,
    pub parked: Vec<&'a str>,
    pub mailbox_appends: bool,
    pub mailbox_consumed: u32,
}

impl SealedEntries {
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Appends one entry as an `EpochRecord.addresses` field.
    pub fn push(&mut self, entry: &EntryParts<'_>) {
        let mailbox = || entry.mailbox.range(entry.mailbox_from.min(entry.mailbox.len())..);
        let states_len: usize = entry.states.iter().map(|s| delimited_len(ENTRY_STATES, s.body_len())).sum();
        let mailbox_len: usize = mailbox().map(|m| message::encoded_len(ENTRY_MAILBOX, m)).sum();
        let body_len = message::encoded_len(ENTRY_ADDRESS, entry.address)
            + states_len
            + mailbox_len
            + varint_len(ENTRY_IN_FLIGHT, u64::from(entry.in_flight))
            + varint_len(ENTRY_MAILBOX_APPENDS, u64::from(entry.mailbox_appends))
            + varint_len(ENTRY_MAILBOX_CONSUMED, u64::from(entry.mailbox_consumed))
            + entry.parked.iter().map(|name| bytes_field_len(ENTRY_PARKED, name)).sum::<usize>();

        let out = &mut self.bytes;
        out.reserve(delimited_len(RECORD_ADDRESSES, body_len));
        put_header(out, RECORD_ADDRESSES, body_len);
        message::encode(ENTRY_ADDRESS, entry.address, out);
        for state in &entry.states {
            put_header(out, ENTRY_STATES, state.body_len());
            state.encode(out);
        }
        for envelope in mailbox() {
            message::encode(ENTRY_MAILBOX, envelope, out);
        }
        put_varint(out, ENTRY_IN_FLIGHT, u64::from(entry.in_flight));
        put_varint(out, ENTRY_MAILBOX_APPENDS, u64::from(entry.mailbox_appends));
        put_varint(out, ENTRY_MAILBOX_CONSUMED, u64::from(entry.mailbox_consumed));
        for name in &entry.parked {
            put_bytes(out, ENTRY_PARKED, name);
        }
        self.count += 1;
    }
}

impl StateParts<'_> {
    /// The state's `value`: absent when it has no typename.
    fn value(&self) -> Option<TypedValueParts<'_>> {
        let typename = self.typename?;
        Some(TypedValueParts { typename, has_value: self.has_value, value: self.value })
    }

    fn body_len(&self) -> usize {
        bytes_field_len(STATE_NAME, self.name)
            + self.value().map_or(0, |v| v.field_len(STATE_VALUE))
            + varint_len(STATE_WRITTEN_AT, self.written_at_ms as u64)
            + varint_len(STATE_ACCESSED_AT, self.accessed_at_ms as u64)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, STATE_NAME, self.name);
        if let Some(value) = self.value() {
            value.put_field(out, STATE_VALUE);
        }
        put_varint(out, STATE_WRITTEN_AT, self.written_at_ms as u64);
        put_varint(out, STATE_ACCESSED_AT, self.accessed_at_ms as u64);
    }
}

/// Every entry decodes as the message prost would have written; used by tests
/// and by [`super::SealedEpoch::into_record`].
#[cfg(test)]
pub fn decode(entries: &SealedEntries) -> Vec<statefun_proto::internal::AddressEntry> {
    use prost::Message as _;
    statefun_proto::internal::EpochRecord::decode(entries.bytes()).expect("sealed entries decode").addresses
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;
    use statefun_proto::internal::{AddressEntry, EpochRecord, StoredState};
    use statefun_proto::reqreply::TypedValue;

    fn envelope(id: &str, value: &[u8]) -> Envelope {
        let argument = TypedValue { typename: "t/v".into(), has_value: true, value: value.to_vec() };
        Envelope { target: None, caller: None, argument: Some(argument), id: id.into(), hops: 3, ingress: None }
    }

    #[test]
    fn entries_are_the_bytes_prost_writes_for_the_same_messages() {
        let address = Address { namespace: "ns".into(), r#type: "f".into(), id: "a-1".into() };
        let mailbox: VecDeque<Envelope> = ["m0", "m1", "m2"].iter().map(|id| envelope(id, id.as_bytes())).collect();
        let states = || {
            vec![
                StateParts {
                    name: "count",
                    typename: Some("io.statefun.types/long"),
                    has_value: true,
                    value: &[8, 42],
                    written_at_ms: 5,
                    accessed_at_ms: -1,
                },
                StateParts {
                    name: "empty",
                    typename: None,
                    has_value: false,
                    value: &[],
                    written_at_ms: 0,
                    accessed_at_ms: 9,
                },
            ]
        };
        let mut entries = SealedEntries::default();
        entries.push(&EntryParts {
            address: &address,
            states: states(),
            mailbox: &mailbox,
            mailbox_from: 1,
            in_flight: 2,
            parked: vec!["p0.l1.e2.0", "p0.l1.e3.0"],
            mailbox_appends: true,
            mailbox_consumed: 3,
        });
        let idle = Address { id: "a-2".into(), ..address.clone() };
        entries.push(&EntryParts {
            address: &idle,
            states: Vec::new(),
            mailbox: &VecDeque::new(),
            mailbox_from: 0,
            in_flight: 0,
            parked: Vec::new(),
            mailbox_appends: false,
            mailbox_consumed: 0,
        });

        let stored = |s: StateParts<'_>| StoredState {
            name: s.name.into(),
            value: s.typename.map(|t| TypedValue {
                typename: t.into(),
                has_value: s.has_value,
                value: s.value.to_vec(),
            }),
            written_at_ms: s.written_at_ms,
            accessed_at_ms: s.accessed_at_ms,
        };
        let expected = EpochRecord {
            addresses: vec![
                AddressEntry {
                    address: Some(address.clone()),
                    states: states().into_iter().map(stored).collect(),
                    mailbox: mailbox.iter().skip(1).cloned().collect(),
                    in_flight: 2,
                    mailbox_appends: true,
                    mailbox_consumed: 3,
                    parked: vec!["p0.l1.e2.0".into(), "p0.l1.e3.0".into()],
                    ..Default::default()
                },
                AddressEntry { address: Some(idle), ..Default::default() },
            ],
            ..Default::default()
        };
        assert_eq!(entries.count(), 2);
        assert_eq!(entries.bytes(), expected.encode_to_vec().as_slice());
        assert_eq!(decode(&entries), expected.addresses);
    }
}
