//! Where dead letters go, how they are read back, and how their messages are
//! re-injected.
//!
//! A dead letter (a batch that exhausted its retries, an input record that
//! could not be routed, an egress record no stream would take) is published
//! with its epoch's outbox, after the commit, to one of two destinations:
//!
//! - a stream (Kinesis, or a local log file): one record per letter;
//! - objects in the checkpoint store (an S3 prefix, or files in the data
//!   directory): `dead-letters/<id>.pb`, the id being the outbox entry's
//!   deterministic id, so publishing again after a crash rewrites the same object.
//!
//! Re-injection sends a letter's messages back to their targets through the
//! exchange, as a batch from a source no partition has ([`REINJECTION_SOURCE`]),
//! numbered by the time of the re-injection: a partition applies each
//! re-injected message once even if the append is retried.
//!
//! This module must not decide what is dead-lettered (the engine does).

use std::sync::Arc;

use prost::Message;
use statefun_proto::internal::{DeadLetter, Envelope};

use crate::checkpoint::BlobStore;
use crate::log::{AppendRecord, LogStore, Position, ShardChoice, shard_ids};
use crate::partition::exchange_batches::{ExchangeBatches, MAX_ENVELOPE_BYTES};

/// The exchange source id of re-injected messages (partitions are numbered from 0 up to 4095).
pub const REINJECTION_SOURCE: u32 = u32::MAX;

/// The object prefix of dead letters in the checkpoint store.
pub const OBJECT_PREFIX: &str = "dead-letters/";

/// Records per read: Kinesis' most per `GetRecords`, so long streams take few (paced) calls.
const READ_BATCH: usize = 10_000;

#[derive(Clone)]
pub enum Destination {
    Stream(String),
    Objects(Arc<dyn BlobStore>),
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Stream(stream) => write!(f, "stream `{stream}`"),
            Destination::Objects(_) => write!(f, "objects under `{OBJECT_PREFIX}` in the checkpoint store"),
        }
    }
}

/// The object key of a dead letter with the given deterministic id.
pub fn object_key(id: &str) -> String {
    format!("{OBJECT_PREFIX}{id}.pb")
}

/// How much of a letter's reason and source a stub keeps.
const STUB_TEXT_BYTES: usize = 16 * 1024;
/// A stub keeps the letter's address up to this size (an address is the function's choice).
const STUB_ADDRESS_BYTES: usize = 64 * 1024;

/// What the stream carries of a letter too large for one record: its address,
/// reason, source and time, and the key of the object holding it whole.
/// Bounded whatever the letter, so it always fits a record.
pub fn stub(letter: &DeadLetter, stored_as: String, stored_bytes: usize) -> DeadLetter {
    DeadLetter {
        address: letter.address.clone().filter(|a| a.encoded_len() <= STUB_ADDRESS_BYTES),
        reason: truncated(&letter.reason),
        messages: Vec::new(),
        at_ms: letter.at_ms,
        source: truncated(&letter.source),
        raw: Vec::new(),
        stored_as,
        stored_bytes: stored_bytes as u64,
    }
}

fn truncated(text: &str) -> String {
    if text.len() <= STUB_TEXT_BYTES {
        return text.to_owned();
    }
    let mut end = STUB_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

/// A dead letter as read back, with where it was found.
#[derive(Clone, Debug)]
pub struct Stored {
    /// The stream record's id or `shard/sequence`, or the object key.
    pub id: String,
    pub letter: DeadLetter,
}

/// Every dead letter held by `destination`, oldest first; undecodable entries are reported as errors.
/// A stub read from a stream is replaced by the whole letter from `blobs`.
pub async fn read_all(
    destination: &Destination,
    log: &dyn LogStore,
    blobs: &dyn BlobStore,
) -> anyhow::Result<Vec<Result<Stored, String>>> {
    let mut found = Vec::new();
    match destination {
        Destination::Stream(stream) => {
            for shard in shard_ids(&log.shards(stream).await?) {
                let mut position = Position::Start;
                loop {
                    let (records, next) = log.read(stream, &shard, &position, READ_BATCH).await?;
                    if records.is_empty() {
                        break;
                    }
                    position = next;
                    for record in records {
                        let id = record.id.clone().unwrap_or_else(|| format!("{}/{}", record.shard, record.sequence));
                        let letter = match DeadLetter::decode(record.data.as_slice()) {
                            Ok(letter) if !letter.stored_as.is_empty() => whole(blobs, &id, letter).await?,
                            Ok(letter) => Ok(letter),
                            Err(e) => Err(format!("{id}: not a dead letter record: {e}")),
                        };
                        found.push(letter.map(|letter| Stored { id, letter }));
                    }
                }
            }
        }
        Destination::Objects(blobs) => {
            for key in blobs.list(OBJECT_PREFIX).await? {
                let Some(bytes) = blobs.get(&key).await? else { continue };
                found.push(
                    DeadLetter::decode(bytes.as_slice())
                        .map(|letter| Stored { id: key.clone(), letter })
                        .map_err(|e| format!("{key}: not a dead letter object: {e}")),
                );
            }
        }
    }
    found.sort_by_key(|entry| entry.as_ref().map_or(i64::MIN, |s| s.letter.at_ms));
    Ok(found)
}

/// The whole letter a stub names.
async fn whole(blobs: &dyn BlobStore, id: &str, stub: DeadLetter) -> anyhow::Result<Result<DeadLetter, String>> {
    let Some(bytes) = blobs.get(&stub.stored_as).await? else {
        return Ok(Err(format!(
            "{id}: the whole letter, object {}, is missing (reason: {})",
            stub.stored_as, stub.reason
        )));
    };
    Ok(DeadLetter::decode(bytes.as_slice())
        .map_err(|e| format!("{id}: object {} is not a dead letter: {e}", stub.stored_as)))
}

/// What a re-injection did.
#[derive(Debug, Default)]
pub struct Reinjected {
    /// Messages appended to the exchange.
    pub messages: usize,
    /// Ids of messages left out: larger than an exchange record carries (they
    /// were dead-lettered for that very reason).
    pub too_large: Vec<String>,
}

/// Appends the messages of `letters` to the exchange shards of their targets'
/// partitions, each as the first of its chain (`Envelope.hops`).
pub async fn reinject(
    log: &dyn LogStore,
    exchange: &str,
    partitions: u32,
    letters: &[DeadLetter],
    now_ms: i64,
) -> anyhow::Result<Reinjected> {
    let mut batches = ExchangeBatches::new(REINJECTION_SOURCE, 0, now_ms as u64);
    let mut done = Reinjected::default();
    for envelope in letters.iter().flat_map(|l| l.messages.iter()) {
        let Some(target) = &envelope.target else { continue };
        // A re-injected message starts a chain of its own (it may have been dead-lettered for its length).
        let encoded = Envelope { hops: 0, ..envelope.clone() }.encode_to_vec();
        if encoded.len() > MAX_ENVELOPE_BYTES {
            done.too_large.push(envelope.id.clone());
            continue;
        }
        done.messages += 1;
        batches.push(crate::address::partition_of(target, partitions), done.messages as u64, &encoded);
    }
    let records: Vec<AppendRecord> = batches
        .finish()
        .into_iter()
        .enumerate()
        .map(|(n, (partition, _, data))| AppendRecord {
            partition_key: format!("reinjected-{partition}"),
            shard: ShardChoice::Index(partition),
            data,
            id: Some(format!("reinjected.e{now_ms}.{n}")),
        })
        .collect();
    log.append(exchange, &records).await?;
    Ok(done)
}
