//! Encodes messages bound for other partitions as `ExchangeBatch` records,
//! one batch per target partition, cut to stay under the exchange record size.
//!
//! Messages come already encoded (an outbox keeps them so) and are copied into
//! each batch's bytes as they are. This module only encodes; routing and
//! publishing are the committer's.

use std::collections::BTreeMap;

use super::wire::{delimited_len, put_header, put_varint, varint_len};

/// Exchange batches are cut to stay well under Kinesis' 1 MB record limit.
pub const MAX_EXCHANGE_RECORD_BYTES: usize = 512 * 1024;

/// The largest message (encoded `Envelope`) an exchange record carries: a
/// batch of it alone, with the batch's framing (at most 51 bytes: source,
/// epoch, incarnation, the message's seq and length prefixes) and the record's partition
/// key (`partition-<n>`, at most 14 bytes), stays within a Kinesis record.
/// A larger message is dead-lettered where it is made.
pub const MAX_ENVELOPE_BYTES: usize = crate::limits::MAX_RECORD_BYTES - 64;

/// `ExchangeBatch` field numbers (internal.proto).
const BATCH_SOURCE_PARTITION: u32 = 1;
const BATCH_EPOCH: u32 = 2;
const BATCH_MESSAGES: u32 = 3;
const BATCH_INCARNATION: u32 = 4;
/// `ExchangeMessage` field numbers.
const MESSAGE_SEQ: u32 = 1;
const MESSAGE_ENVELOPE: u32 = 2;

/// The batches of one source partition and epoch, per target partition.
pub struct ExchangeBatches {
    source_partition: u32,
    incarnation: u64,
    epoch: u64,
    targets: BTreeMap<u32, Target>,
}

/// The batches of one target partition.
struct Target {
    done: Vec<Vec<u8>>,
    /// The batch being filled, and how many messages it holds.
    open: Vec<u8>,
    count: usize,
}

impl ExchangeBatches {
    pub fn new(source_partition: u32, incarnation: u64, epoch: u64) -> Self {
        Self { source_partition, incarnation, epoch, targets: BTreeMap::new() }
    }

    /// Adds a message (an encoded `Envelope`) for partition `target`; a batch
    /// that would pass the record size is cut first.
    pub fn push(&mut self, target: u32, seq: u64, envelope: &[u8]) {
        let message_len = varint_len(MESSAGE_SEQ, seq) + delimited_len(MESSAGE_ENVELOPE, envelope.len());
        let entry_len = delimited_len(BATCH_MESSAGES, message_len);
        let (source, incarnation, epoch) = (self.source_partition, self.incarnation, self.epoch);
        let header = || header(source, incarnation, epoch);
        let Target { done, open, count } =
            self.targets.entry(target).or_insert_with(|| Target { done: Vec::new(), open: header(), count: 0 });
        if *count > 0 && open.len() + entry_len > MAX_EXCHANGE_RECORD_BYTES {
            done.push(std::mem::replace(open, header()));
            *count = 0;
        }
        put_header(open, BATCH_MESSAGES, message_len);
        put_varint(open, MESSAGE_SEQ, seq);
        put_header(open, MESSAGE_ENVELOPE, envelope.len());
        open.extend_from_slice(envelope);
        *count += 1;
    }

    /// The encoded batches: (target partition, index of the batch for that target, bytes), by target.
    pub fn finish(self) -> Vec<(u32, usize, Vec<u8>)> {
        let mut batches = Vec::new();
        for (target, Target { done, open, count }) in self.targets {
            let all = done.into_iter().chain((count > 0).then_some(open));
            batches.extend(all.enumerate().map(|(index, bytes)| (target, index, bytes)));
        }
        batches
    }
}

/// A batch's own fields, before its messages (a decoder takes fields in any order).
fn header(source_partition: u32, incarnation: u64, epoch: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(4096);
    put_varint(&mut bytes, BATCH_SOURCE_PARTITION, u64::from(source_partition));
    put_varint(&mut bytes, BATCH_EPOCH, epoch);
    put_varint(&mut bytes, BATCH_INCARNATION, incarnation);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use statefun_proto::internal::Envelope;
    use statefun_proto::internal::{ExchangeBatch, ExchangeMessage};
    use statefun_proto::reqreply::{Address, TypedValue};

    fn envelope(id: &str, bytes: usize) -> Envelope {
        Envelope {
            target: Some(Address { namespace: "ns".into(), r#type: "t".into(), id: id.into() }),
            caller: None,
            argument: Some(TypedValue { typename: "x/y".into(), has_value: true, value: vec![7; bytes] }),
            id: format!("m-{id}"),
            hops: 0,
            ingress: None,
        }
    }

    #[test]
    fn batches_decode_to_what_was_pushed_per_target_in_order() {
        let mut batches = ExchangeBatches::new(3, 9, 42);
        let pushed = [(1, 0, envelope("a", 3)), (0, 5, envelope("b", 0)), (1, 6, envelope("c", 10))];
        for (target, seq, envelope) in &pushed {
            batches.push(*target, *seq, &envelope.encode_to_vec());
        }
        let decoded: Vec<(u32, usize, ExchangeBatch)> = batches
            .finish()
            .into_iter()
            .map(|(target, index, bytes)| (target, index, ExchangeBatch::decode(bytes.as_slice()).expect("a batch")))
            .collect();
        let message = |seq: u64, e: &Envelope| ExchangeMessage { seq, envelope: Some(e.clone()) };
        let expected = [
            (
                0,
                0,
                ExchangeBatch {
                    source_partition: 3,
                    epoch: 42,
                    incarnation: 9,
                    messages: vec![message(5, &pushed[1].2)],
                },
            ),
            (
                1,
                0,
                ExchangeBatch {
                    source_partition: 3,
                    epoch: 42,
                    incarnation: 9,
                    messages: vec![message(0, &pushed[0].2), message(6, &pushed[2].2)],
                },
            ),
        ];
        assert_eq!(decoded, expected);
    }

    #[test]
    fn a_target_with_more_than_a_record_gets_several_batches_each_under_the_limit() {
        let mut batches = ExchangeBatches::new(0, 0, 0);
        let big = envelope("big", 100 * 1024);
        for seq in 1..=12 {
            batches.push(2, seq, &big.encode_to_vec());
        }
        let finished = batches.finish();
        assert!(finished.len() >= 3, "{} batches", finished.len());
        let mut seqs = Vec::new();
        for (index, (target, batch_index, bytes)) in finished.iter().enumerate() {
            assert_eq!((*target, *batch_index), (2, index));
            assert!(bytes.len() <= MAX_EXCHANGE_RECORD_BYTES, "{} bytes", bytes.len());
            let batch = ExchangeBatch::decode(bytes.as_slice()).expect("a batch");
            seqs.extend(batch.messages.iter().map(|m| m.seq));
        }
        assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
        // One message over the limit still travels, alone.
        let mut alone = ExchangeBatches::new(0, 0, 0);
        alone.push(0, 1, &envelope("huge", MAX_EXCHANGE_RECORD_BYTES).encode_to_vec());
        assert_eq!(alone.finish().len(), 1);
    }

    #[test]
    fn the_largest_message_makes_a_record_kinesis_takes_with_the_longest_framing() {
        let mut envelope = envelope("m", MAX_ENVELOPE_BYTES);
        while envelope.encoded_len() > MAX_ENVELOPE_BYTES {
            envelope.argument.as_mut().expect("argument").value.pop();
        }
        let encoded = envelope.encode_to_vec();
        assert!(encoded.len() <= MAX_ENVELOPE_BYTES && encoded.len() > MAX_ENVELOPE_BYTES - 8, "{}", encoded.len());
        let mut batches = ExchangeBatches::new(4095, u64::MAX, u64::MAX);
        batches.push(4095, u64::MAX, &encoded);
        let [(_, _, record)] = batches.finish().try_into().expect("one record");
        crate::limits::check_record("partition-4095", record.len(), None).expect("within Kinesis' limits");
    }
}
