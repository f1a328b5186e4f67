//! Commits sealed epochs of one partition, in order, then publishes their outboxes.
//!
//! For each epoch: write the checkpoint object, commit it with a conditional
//! write on the lease and the previous epoch, and only then publish the
//! outbox (exchange batches, egress records, dead letters). A rejected commit
//! means the lease moved: the committer reports it and stops, so nothing of
//! that epoch or any later one is ever published. Storage errors are retried.
//! Before every commit attempt and every append the committer asks the
//! [`LeaseGuard`] whether the lease may still be trusted, so a worker that
//! was frozen past its lease publishes nothing once it runs again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use statefun_proto::internal::{DeadLetter, PartitionManifest};
use tokio::sync::mpsc;

use crate::checkpoint::{self, BlobStore};
use crate::coordination::guard::LeaseGuard;
use crate::dead_letters::{self, Destination};
use crate::coordination::{CommitError, CommitStore, Lease};
use crate::log::{AppendRecord, LogError, LogStore, ShardChoice};
use crate::partition::SealedEpoch;
use crate::partition::exchange_batches::ExchangeBatches;
use crate::partition::outbox::{Item, Outbox};

/// Streams the committer publishes to.
#[derive(Clone, Debug)]
pub struct OutputStreams {
    pub exchange: String,
    pub dead_letters: Destination,
    /// Shards given to an egress stream that has to be created (local mode only).
    pub create_egress_streams: Option<u32>,
}

pub struct Sealed {
    pub record: SealedEpoch,
    pub outbox: Arc<Outbox>,
}

#[derive(Debug)]
pub enum CommitterEvent {
    /// The epoch is committed and its outbox published.
    Published(u64),
    /// The lease moved; the partition must stop.
    Fenced(String),
    /// A committed outbox cannot be published (a permanent error); the partition must stop.
    Failed(String),
}

pub struct Committer {
    pub lease: Lease,
    pub guard: Arc<LeaseGuard>,
    pub log: Arc<dyn LogStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub commits: Arc<dyn CommitStore>,
    pub streams: OutputStreams,
    pub committed_epoch: u64,
    pub snapshot_epoch: u64,
    /// The partition's history, named in its exchange batches.
    pub incarnation: u64,
}

impl Committer {
    /// Re-publishes outboxes a previous owner may not have published.
    pub async fn republish(&self, outboxes: &[Outbox]) -> Result<(), CommitterEvent> {
        for outbox in outboxes {
            self.publish(outbox).await?;
        }
        Ok(())
    }

    pub async fn run(mut self, mut sealed: mpsc::Receiver<Sealed>, events: mpsc::UnboundedSender<CommitterEvent>) {
        while let Some(Sealed { record, outbox }) = sealed.recv().await {
            let epoch = record.record.epoch;
            if let Err(stop) = self.commit(record).await {
                let _ = events.send(stop);
                return;
            }
            if let Err(stop) = self.publish(&outbox).await {
                let _ = events.send(stop);
                return;
            }
            let _ = events.send(CommitterEvent::Published(epoch));
        }
    }

    /// Writes the epoch's object and commits it; `Err` is the event that stops the partition.
    async fn commit(&mut self, sealed: SealedEpoch) -> Result<(), CommitterEvent> {
        let partition = self.lease.partition;
        let (epoch, snapshot) = (sealed.record.epoch, sealed.record.snapshot);
        let key = checkpoint::object_key(partition, epoch, self.lease.counter, snapshot);
        let bytes = bytes::Bytes::from(sealed.encode());
        let mut delay = Duration::from_millis(50);
        while let Err(e) = self.blobs.put(&key, bytes.clone()).await {
            if !e.is_retryable() {
                return Err(CommitterEvent::Failed(format!("partition {partition}: writing checkpoint {key}: {e}")));
            }
            tracing::warn!(partition, epoch, "writing checkpoint {key} failed, retrying in {delay:?}: {e}");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        let manifest = PartitionManifest {
            epoch,
            snapshot_epoch: if snapshot { epoch } else { self.snapshot_epoch },
            lease: self.lease.counter,
        };
        let mut ambiguous = false;
        loop {
            if !self.guard.is_valid() {
                return Err(self.lease_untrusted());
            }
            match self.commits.commit(&self.lease, self.committed_epoch, manifest).await {
                Ok(()) => break,
                Err(e @ CommitError::Fenced { .. }) if ambiguous => {
                    // An earlier attempt may have been applied before its answer was lost:
                    // it was ours only if the lease is still ours and names this very commit.
                    match self.commits.committed(partition).await {
                        Ok(Some(current))
                            if current.owner == self.lease.owner
                                && current.counter == self.lease.counter
                                && current.manifest == manifest =>
                        {
                            break;
                        }
                        Ok(_) => return Err(CommitterEvent::Fenced(e.to_string())),
                        Err(read) => {
                            tracing::warn!(partition, epoch, "cannot read the commit record, retrying: {read}");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    }
                }
                Err(e @ CommitError::Fenced { .. }) => return Err(CommitterEvent::Fenced(e.to_string())),
                Err(e) if !e.is_retryable() => {
                    return Err(CommitterEvent::Failed(format!("partition {partition}: commit of epoch {epoch}: {e}")));
                }
                Err(e) => {
                    ambiguous = true;
                    tracing::warn!(partition, epoch, "commit failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        self.committed_epoch = epoch;
        if snapshot {
            self.snapshot_epoch = epoch;
            if let Err(e) = checkpoint::collect_garbage(self.blobs.as_ref(), partition, epoch).await {
                tracing::warn!(partition, "garbage collection of checkpoints failed: {e}");
            }
        }
        Ok(())
    }

    fn lease_untrusted(&self) -> CommitterEvent {
        CommitterEvent::Fenced(format!(
            "partition {}: the lease {}#{} is no longer trusted (lost, handed over, or not renewed in time)",
            self.lease.partition, self.lease.owner, self.lease.counter
        ))
    }

    /// Publishes an outbox. Its epoch is committed, so transient errors are
    /// retried until they pass. An egress stream that refuses records for good
    /// (no such stream, access denied) gets them dead-lettered instead; a
    /// permanent error of the runtime's own streams stops the partition.
    async fn publish(&self, outbox: &Outbox) -> Result<(), CommitterEvent> {
        let (exchange, egress, mut dead_letters) = self.split(outbox);
        if !exchange.is_empty() {
            self.append(&self.streams.exchange, &exchange).await.map_err(|e| self.stop(e))?;
        }
        for (stream, records) in egress {
            match self.append(&stream, &records).await {
                Ok(()) => {}
                Err(Undeliverable::Refused(reason)) => {
                    dead_letters.extend(records.into_iter().map(|record| undeliverable(record, &stream, &reason)));
                }
                Err(other) => return Err(self.stop(other)),
            }
        }
        if !dead_letters.is_empty() {
            match &self.streams.dead_letters {
                Destination::Stream(stream) => {
                    self.store_oversized(&mut dead_letters).await?;
                    self.append(stream, &dead_letters).await.map_err(|e| self.stop(e))?
                }
                Destination::Objects(blobs) => {
                    for letter in dead_letters {
                        let key = dead_letters::object_key(&letter_id(&letter, self.lease.partition));
                        self.put_letter(blobs.as_ref(), &key, letter.data.into()).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Letters too large for one stream record are stored whole in the
    /// checkpoint store, under their deterministic ids; the stream carries a
    /// stub that names the object (see [`dead_letters::stub`]).
    async fn store_oversized(&self, letters: &mut [AppendRecord]) -> Result<(), CommitterEvent> {
        for record in letters.iter_mut().filter(|record| record.check().is_err()) {
            let key = dead_letters::object_key(&letter_id(record, self.lease.partition));
            let whole = std::mem::take(&mut record.data);
            let size = whole.len();
            // Our own encoding: it decodes; were it not to, the stub still names the object.
            let letter = DeadLetter::decode(whole.as_slice()).unwrap_or_default();
            self.put_letter(self.blobs.as_ref(), &key, whole.into()).await?;
            record.data = dead_letters::stub(&letter, key, size).encode_to_vec();
        }
        Ok(())
    }

    /// Writes a dead letter object (a re-publish rewrites the same object).
    async fn put_letter(&self, blobs: &dyn BlobStore, key: &str, data: bytes::Bytes) -> Result<(), CommitterEvent> {
        let mut delay = Duration::from_millis(50);
        loop {
            if !self.guard.is_valid() {
                return Err(self.lease_untrusted());
            }
            match blobs.put(key, data.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) if !e.is_retryable() => {
                    let partition = self.lease.partition;
                    return Err(CommitterEvent::Failed(format!("partition {partition}: writing dead letter {key}: {e}")));
                }
                Err(e) => {
                    tracing::warn!("writing dead letter {key}: {e}; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn stop(&self, undeliverable: Undeliverable) -> CommitterEvent {
        match undeliverable {
            Undeliverable::LeaseUntrusted => self.lease_untrusted(),
            Undeliverable::Refused(reason) => {
                CommitterEvent::Failed(format!("partition {}: publishing failed for good: {reason}", self.lease.partition))
            }
        }
    }

    async fn append(&self, stream: &str, records: &[AppendRecord]) -> Result<(), Undeliverable> {
        let mut delay = Duration::from_millis(50);
        loop {
            if !self.guard.is_valid() {
                return Err(Undeliverable::LeaseUntrusted);
            }
            let outcome = match self.log.append(stream, records).await {
                Err(LogError::NoSuchStream { .. }) if self.streams.create_egress_streams.is_some() => {
                    let shards = self.streams.create_egress_streams.unwrap_or(1);
                    match self.log.ensure_stream(stream, shards).await {
                        Ok(_) => self.log.append(stream, records).await,
                        Err(e) => Err(e),
                    }
                }
                other => other,
            };
            match outcome {
                Ok(()) => return Ok(()),
                Err(e) if !e.is_retryable() => return Err(Undeliverable::Refused(e.to_string())),
                Err(e) => {
                    tracing::warn!("publishing to {stream}: {e}; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Turns an outbox into records per stream, with deterministic ids.
    fn split(&self, outbox: &Outbox) -> (Vec<AppendRecord>, BTreeMap<String, Vec<AppendRecord>>, Vec<AppendRecord>) {
        let source = self.lease.partition;
        let id = |seq: u64| format!("p{source}.e{}.{seq}", outbox.epoch);
        let mut exchange = ExchangeBatches::new(source, self.incarnation, outbox.epoch);
        let mut egress: BTreeMap<String, Vec<AppendRecord>> = BTreeMap::new();
        let mut dead_letters = Vec::new();
        for (seq, item) in outbox.items() {
            match item {
                Item::Exchange { partition, envelope } => exchange.push(partition, seq, envelope),
                Item::Egress(record) => {
                    let shard = if record.explicit_hash_key.is_empty() {
                        ShardChoice::ByKey
                    } else {
                        ShardChoice::ExplicitHashKey(record.explicit_hash_key.clone())
                    };
                    let append = AppendRecord {
                        partition_key: record.partition_key.clone(),
                        shard,
                        data: record.data.clone(),
                        id: Some(id(seq)),
                    };
                    match egress.get_mut(&record.stream) {
                        Some(records) => records.push(append),
                        None => {
                            egress.insert(record.stream.clone(), vec![append]);
                        }
                    }
                }
                Item::DeadLetter(letter) => dead_letters.push(AppendRecord {
                    partition_key: dead_letter_key(letter),
                    shard: ShardChoice::Index(0),
                    data: letter.encode_to_vec(),
                    id: Some(id(seq)),
                }),
            }
        }
        let records = exchange
            .finish()
            .into_iter()
            .map(|(target, chunk, data)| AppendRecord {
                partition_key: format!("partition-{target}"),
                shard: ShardChoice::Index(target),
                data,
                id: Some(format!("p{source}.e{}.to{target}.{chunk}", outbox.epoch)),
            })
            .collect();
        (records, egress, dead_letters)
    }
}

/// Why records could not be appended, for good.
enum Undeliverable {
    /// The stream refused them, and would again (it does not exist, access is denied).
    Refused(String),
    /// The lease may no longer be trusted: publish nothing more.
    LeaseUntrusted,
}

/// A dead letter's deterministic id (every outbox entry has one).
fn letter_id(letter: &AppendRecord, partition: u32) -> String {
    letter.id.clone().unwrap_or_else(|| format!("p{partition}.unnamed"))
}

/// The dead letter for an egress record its stream refused for good (same deterministic id).
fn undeliverable(record: AppendRecord, stream: &str, reason: &str) -> AppendRecord {
    let letter = DeadLetter {
        reason: format!("egress record not delivered: {reason}"),
        at_ms: crate::now_ms(),
        source: format!("egress to stream `{stream}`, partition key `{}`", record.partition_key),
        raw: record.data,
        ..Default::default()
    };
    AppendRecord {
        partition_key: dead_letter_key(&letter),
        shard: ShardChoice::Index(0),
        data: letter.encode_to_vec(),
        id: record.id,
    }
}

/// The address, else the source, else a fixed word: a stream record needs a
/// key, of at most 256 characters (a longer one is hashed; the letter holds it whole).
fn dead_letter_key(letter: &DeadLetter) -> String {
    match (&letter.address, letter.source.is_empty()) {
        (Some(address), _) => crate::log::bounded_key(&crate::address::display(address)),
        (None, false) => crate::log::bounded_key(&letter.source),
        (None, true) => "unroutable".to_owned(),
    }
}
