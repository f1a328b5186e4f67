//! Commits sealed epochs of one partition, in order, then publishes their outboxes.
//!
//! For each epoch: write the checkpoint object, commit it with a conditional
//! write on the lease and the previous epoch, and only then publish the
//! outbox (exchange batches, egress records, dead letters). An outbox is
//! published while the next epoch commits (each waits for the one before, so
//! the streams keep the epochs' order): a partition's next commit does not
//! wait for the appends of the last. A rejected commit
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

use crate::backoff::Backoff;
use crate::checkpoint::{self, BlobStore};
use crate::coordination::guard::LeaseGuard;
use crate::coordination::{CommitError, CommitStore, Lease};
use crate::dead_letters::{self, Destination};
use crate::log::{AppendRecord, LogError, LogStore, ShardChoice};
use crate::observe::metrics::CommitMetrics;
use crate::partition::SealedEpoch;
use crate::partition::exchange_batches::ExchangeBatches;
use crate::partition::outbox::{Item, Outbox};
use crate::partition::parking;
use crate::worker::handoff::{Chain, HandOvers};

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
    /// Whether its batches go to the receivers of this process in memory too:
    /// not when the partition's inputs are behind (a backlog), whose receivers
    /// would decode each message twice.
    pub hand_over: bool,
}

#[derive(Debug)]
pub enum CommitterEvent {
    /// The epoch is committed; its outbox is being published.
    Committed(u64),
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
    pub metrics: CommitMetrics,
    /// The workers of this process that committed batches are handed to ([`super::handoff`]); `None`: none are.
    pub hand_overs: Option<Arc<HandOvers>>,
    pub chain: Chain,
    pub collector: Collector,
}

/// A task the committer started: aborted if the committer is dropped before it
/// is awaited (a partition that stops against its will stops its side work
/// too; what it leaves, its next owner or next snapshot takes up).
struct Owned<T>(Option<tokio::task::JoinHandle<T>>);

impl<T> Default for Owned<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<T> Owned<T> {
    fn is_running(&self) -> bool {
        self.0.as_ref().is_some_and(|task| !task.is_finished())
    }

    /// What the task ended with; `None` if there was none.
    async fn join(mut self) -> Option<Result<T, tokio::task::JoinError>> {
        let task = self.0.take()?;
        Some(task.await)
    }

    /// Waits for the task, if any.
    async fn finish(&mut self) {
        let _ = std::mem::take(self).join().await;
    }
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Deletes the history a committed snapshot replaced, beside the later commits:
/// one object at a time (a file, an S3 request), a thousand deltas take long
/// enough to hold up the results of the epochs behind the snapshot. Only
/// objects older than the snapshot are deleted, which no later commit writes
/// or reads.
#[derive(Default)]
pub struct Collector(Owned<()>);

impl Collector {
    /// Starts deleting the partition's objects older than `snapshot_epoch`, unless a
    /// deletion still runs (the next snapshot's takes what it leaves).
    fn collect(&mut self, blobs: Arc<dyn BlobStore>, partition: u32, snapshot_epoch: u64) {
        if self.0.is_running() {
            return;
        }
        self.0 = Owned(Some(tokio::spawn(async move {
            if let Err(e) = checkpoint::collect_garbage(blobs.as_ref(), partition, snapshot_epoch).await {
                tracing::warn!(partition, "garbage collection of checkpoints failed: {e}");
            }
        })));
    }
}

/// The publication in flight, which the next waits for (a publication that
/// failed ends the ones after it: the partition stops, and its next owner
/// re-publishes what is not known to be published).
#[derive(Default)]
struct Publishing(Owned<bool>);

impl Publishing {
    /// Publishes `records` once the publication before them succeeded; says how it went in `events`.
    fn next(
        &mut self,
        output: Output,
        records: Records,
        timing: Timing,
        events: &mpsc::UnboundedSender<CommitterEvent>,
    ) {
        let before = std::mem::take(&mut self.0);
        let events = events.clone();
        self.0 = Owned(Some(tokio::spawn(async move {
            if let Some(outcome) = before.join().await
                && !matches!(outcome, Ok(true))
            {
                return false;
            }
            let Records { epoch, count, exchange, not_handed, egress, dead_letters } = records;
            if let Err(stop) = output.publish(exchange, not_handed, egress, dead_letters).await {
                let _ = events.send(stop);
                return false;
            }
            // Where a result's time goes between its epoch's seal and its publication.
            tracing::debug!(
                partition = output.lease.partition,
                epoch,
                records = count,
                commit_ms = timing.committed.as_secs_f64() * 1e3,
                publish_ms = (timing.started.elapsed() - timing.committed).as_secs_f64() * 1e3,
                "epoch committed and published"
            );
            output.metrics.committed(timing.bytes, timing.started.elapsed().as_secs_f64(), crate::now_ms());
            let _ = events.send(CommitterEvent::Published(epoch));
            true
        })));
    }
}

/// A committed outbox as the records to append.
struct Records {
    epoch: u64,
    /// Entries of the outbox.
    count: usize,
    exchange: Vec<AppendRecord>,
    not_handed: NotHanded,
    egress: BTreeMap<String, Vec<AppendRecord>>,
    dead_letters: Vec<AppendRecord>,
}

/// The partitions of this process whose batches in an epoch were not handed
/// over: once the exchange has them, their readers are told to read.
#[derive(Default)]
struct NotHanded(Option<(Arc<HandOvers>, Vec<u32>)>);

impl NotHanded {
    fn appended(self) {
        if let Some((hand_overs, targets)) = self.0 {
            hand_overs.appended_not_handed(&targets);
        }
    }
}

/// When an epoch's commit started, how long it took, and what it wrote.
struct Timing {
    started: std::time::Instant,
    committed: Duration,
    bytes: usize,
}

/// What publishing needs: the committer's, and a copy in each publication in flight.
#[derive(Clone)]
struct Output {
    lease: Lease,
    guard: Arc<LeaseGuard>,
    log: Arc<dyn LogStore>,
    blobs: Arc<dyn BlobStore>,
    streams: OutputStreams,
    incarnation: u64,
    metrics: CommitMetrics,
}

impl Committer {
    /// Re-publishes outboxes a previous owner may not have published.
    pub async fn republish(&mut self, outboxes: &[Outbox]) -> Result<(), CommitterEvent> {
        for outbox in outboxes {
            self.publish(outbox).await?;
        }
        Ok(())
    }

    pub async fn run(mut self, mut sealed: mpsc::Receiver<Sealed>, events: mpsc::UnboundedSender<CommitterEvent>) {
        let mut publishing = Publishing::default();
        while let Some(Sealed { record, outbox, hand_over }) = sealed.recv().await {
            let epoch = record.record.epoch;
            let started = std::time::Instant::now();
            let bytes = match self.commit(record).await {
                Ok(bytes) => bytes,
                Err(stop) => {
                    let _ = events.send(stop);
                    return;
                }
            };
            let timing = Timing { started, committed: started.elapsed(), bytes };
            let _ = events.send(CommitterEvent::Committed(epoch));
            let output = self.output();
            let (exchange, last_seqs, egress, dead_letters) = output.split(&outbox);
            let not_handed = self.hand_over(epoch, &exchange, &last_seqs, hand_over);
            let records = Records { epoch, count: outbox.len(), exchange, not_handed, egress, dead_letters };
            publishing.next(output, records, timing, &events);
        }
        publishing.0.finish().await;
        // A stop leaves the store as tidy as when deletions were part of the commit.
        self.collector.0.finish().await;
    }

    fn output(&self) -> Output {
        Output {
            lease: self.lease.clone(),
            guard: self.guard.clone(),
            log: self.log.clone(),
            blobs: self.blobs.clone(),
            streams: self.streams.clone(),
            incarnation: self.incarnation,
            metrics: self.metrics.clone(),
        }
    }

    /// Writes the epoch's object and commits it; its encoded size, or the event that stops the partition.
    async fn commit(&mut self, mut sealed: SealedEpoch) -> Result<usize, CommitterEvent> {
        let partition = self.lease.partition;
        let output = self.output();
        let (epoch, snapshot) = (sealed.record.epoch, sealed.record.snapshot);
        // The record lists the parked segments: they are written first.
        for (name, bytes) in std::mem::take(&mut sealed.parked) {
            let key = parking::object_key(partition, &name);
            output.put_blob(self.blobs.as_ref(), &key, bytes.into(), "writing parked messages").await?;
        }
        let released = std::mem::take(&mut sealed.released);
        let live_parked = sealed.live_parked.take();
        let key = checkpoint::object_key(partition, epoch, self.lease.counter, snapshot);
        let bytes = bytes::Bytes::from(sealed.encode());
        let size = bytes.len();
        output.put_blob(self.blobs.as_ref(), &key, bytes, "writing checkpoint").await?;
        let manifest = PartitionManifest {
            epoch,
            snapshot_epoch: if snapshot { epoch } else { self.snapshot_epoch },
            lease: self.lease.counter,
        };
        let mut ambiguous = false;
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
        loop {
            if !self.guard.is_valid() {
                return Err(output.lease_untrusted());
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
                            backoff.wait().await;
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
                    backoff.wait().await;
                }
            }
        }
        self.committed_epoch = epoch;
        // Read back in this epoch: no committed record lists them any more (one left by a crash or a failed deletion
        // here is only litter, which the next snapshot's collection takes).
        let released: Vec<String> = released.iter().map(|name| parking::object_key(partition, name)).collect();
        if let Err(e) = self.blobs.delete_many(&released).await {
            tracing::warn!(partition, "deleting parked messages read back failed: {e}");
        }
        if snapshot {
            self.snapshot_epoch = epoch;
            self.collector.collect(self.blobs.clone(), partition, epoch);
            if let Some(live) = live_parked
                && let Err(e) = self.delete_unlisted_parked(&live).await
            {
                tracing::warn!(partition, "garbage collection of parked messages failed: {e}");
            }
        }
        Ok(size)
    }

    /// Deletes the partition's parked segments that the committed snapshot does not list.
    async fn delete_unlisted_parked(&self, live: &[String]) -> Result<(), checkpoint::CheckpointError> {
        let partition = self.lease.partition;
        let live: std::collections::HashSet<String> =
            live.iter().map(|name| parking::object_key(partition, name)).collect();
        for key in self.blobs.list(&parking::prefix(partition)).await? {
            // A next owner may be writing its own segments once this lease is gone.
            if !live.contains(&key) && self.guard.is_valid() {
                self.blobs.delete(&key).await?;
            }
        }
        Ok(())
    }

    /// Publishes a committed epoch's outbox (the start's re-publication, which
    /// nothing overlaps): handed over, then appended.
    pub async fn publish(&mut self, outbox: &Outbox) -> Result<(), CommitterEvent> {
        let output = self.output();
        let (exchange, last_seqs, egress, dead_letters) = output.split(outbox);
        let not_handed = self.hand_over(outbox.epoch, &exchange, &last_seqs, true);
        output.publish(exchange, not_handed, egress, dead_letters).await
    }

    /// Committed: the batches may go to the receivers of this process before the exchange has them
    /// (with `offer`; without, the chain only notes what was sent). Says to whom they did not.
    fn hand_over(
        &mut self,
        epoch: u64,
        exchange: &[AppendRecord],
        last_seqs: &BTreeMap<u32, u64>,
        offer: bool,
    ) -> NotHanded {
        let Some(hand_overs) = &self.hand_overs else { return NotHanded::default() };
        let mut not_handed = Vec::new();
        for (&target, &last) in last_seqs {
            let records = || {
                let to_target = exchange.iter().filter(|r| r.shard == ShardChoice::Index(target));
                to_target.map(|r| r.data.clone()).collect()
            };
            let handed = if offer {
                self.chain.committed(hand_overs, target, (epoch, last), records)
            } else {
                self.chain.passed(target, (epoch, last));
                false
            };
            if !handed {
                not_handed.push(target);
            }
        }
        NotHanded((!not_handed.is_empty()).then(|| (hand_overs.clone(), not_handed)))
    }
}

impl Output {
    fn lease_untrusted(&self) -> CommitterEvent {
        CommitterEvent::Fenced(format!(
            "partition {}: the lease {}#{} is no longer trusted (lost, handed over, or not renewed in time)",
            self.lease.partition, self.lease.owner, self.lease.counter
        ))
    }

    /// Appends an outbox's records. Its epoch is committed, so transient errors
    /// are retried until they pass. An egress stream that refuses records for
    /// good (no such stream, access denied) gets them dead-lettered instead; a
    /// permanent error of the runtime's own streams stops the partition.
    async fn publish(
        &self,
        exchange: Vec<AppendRecord>,
        not_handed: NotHanded,
        egress: BTreeMap<String, Vec<AppendRecord>>,
        mut dead_letters: Vec<AppendRecord>,
    ) -> Result<(), CommitterEvent> {
        // Each stream keeps its own order and none waits for another: they are appended at once
        // (on Kinesis, one PutRecords round trip for an epoch instead of one per stream).
        let this = self;
        let exchange_appended = async {
            match exchange.is_empty() {
                true => Ok(()),
                false => this.append(&this.streams.exchange, &exchange).await,
            }
        };
        let egress_appended = futures_util::future::join_all(egress.into_iter().map(|(stream, records)| async move {
            let appended = this.append(&stream, &records).await;
            (stream, records, appended)
        }));
        let (exchange_appended, egress_appended) = tokio::join!(exchange_appended, egress_appended);
        exchange_appended.map_err(|e| self.stop(e))?;
        not_handed.appended();
        self.metrics.exchange_out(exchange.len());
        for (stream, records, appended) in egress_appended {
            match appended {
                Ok(()) => self.metrics.egress(&stream, records.len()),
                Err(Undeliverable::Refused(reason)) => {
                    self.metrics.egress_refused(records.len());
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
                        self.put_blob(blobs.as_ref(), &key, letter.data.into(), "writing dead letter").await?;
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
            self.put_blob(self.blobs.as_ref(), &key, whole.into(), "writing dead letter").await?;
            record.data = dead_letters::stub(&letter, key, size).encode_to_vec();
        }
        Ok(())
    }

    /// Writes an object, retrying while the store may yet take it and the
    /// lease may still be trusted. `action` opens its log lines ("writing
    /// checkpoint": the deployment's commit-failure alarm looks for it).
    async fn put_blob(
        &self,
        blobs: &dyn BlobStore,
        key: &str,
        data: bytes::Bytes,
        action: &str,
    ) -> Result<(), CommitterEvent> {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            if !self.guard.is_valid() {
                return Err(self.lease_untrusted());
            }
            match blobs.put(key, data.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) if !e.is_retryable() => {
                    let partition = self.lease.partition;
                    return Err(CommitterEvent::Failed(format!("partition {partition}: {action} {key}: {e}")));
                }
                Err(e) => {
                    tracing::warn!("{action} {key} failed, retrying in {:?}: {e}", backoff.next());
                    backoff.wait().await;
                }
            }
        }
    }

    fn stop(&self, undeliverable: Undeliverable) -> CommitterEvent {
        match undeliverable {
            Undeliverable::LeaseUntrusted => self.lease_untrusted(),
            Undeliverable::Refused(reason) => CommitterEvent::Failed(format!(
                "partition {}: publishing failed for good: {reason}",
                self.lease.partition
            )),
        }
    }

    async fn append(&self, stream: &str, records: &[AppendRecord]) -> Result<(), Undeliverable> {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
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
                    tracing::warn!("publishing to {stream}: {e}; retrying in {:?}", backoff.next());
                    backoff.wait().await;
                }
            }
        }
    }

    /// The outbox as records, with deterministic ids: exchange batches (and the last message's seq for each
    /// target partition), egress records by stream, dead letters.
    #[allow(clippy::type_complexity)]
    fn split(
        &self,
        outbox: &Outbox,
    ) -> (Vec<AppendRecord>, BTreeMap<u32, u64>, BTreeMap<String, Vec<AppendRecord>>, Vec<AppendRecord>) {
        let source = self.lease.partition;
        let prefix = crate::partition::history_prefix(source, self.incarnation);
        let id = |seq: u64| format!("{prefix}.e{}.{seq}", outbox.epoch);
        let mut exchange = ExchangeBatches::new(source, self.incarnation, outbox.epoch);
        let mut last_seqs = BTreeMap::new();
        let mut egress: BTreeMap<String, Vec<AppendRecord>> = BTreeMap::new();
        let mut dead_letters = Vec::new();
        for (seq, item) in outbox.items() {
            match item {
                Item::Exchange { partition, envelope } => {
                    exchange.push(partition, seq, envelope);
                    last_seqs.insert(partition, seq);
                }
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
                id: Some(format!("{prefix}.e{}.to{target}.{chunk}", outbox.epoch)),
            })
            .collect();
        (records, last_seqs, egress, dead_letters)
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use statefun_proto::internal::{EgressRecord, ExchangeBatch};

    use super::*;
    use crate::checkpoint::fs::FsBlobStore;
    use crate::coordination::local::LocalCommitStore;
    use crate::log::local::LocalLogStore;
    use crate::log::{BoxFuture, LogRecord, Position, ShardInfo};
    use crate::worker::handoff::{Handed, QuietExchange};

    /// The local log, except that the stream `forbidden` refuses every append as
    /// Kinesis does for a role without `kinesis:PutRecords` on it.
    /// The local log, but for a stream that refuses the worker for good (`forbidden`)
    /// and, with a barrier, appends that wait for each other (`exchange`, `out`).
    struct TestLog {
        log: LocalLogStore,
        rendezvous: Option<Arc<tokio::sync::Barrier>>,
        /// Appends to `out` wait while this says so.
        held: Option<tokio::sync::watch::Receiver<bool>>,
    }

    impl LogStore for TestLog {
        fn ensure_stream<'a>(
            &'a self,
            stream: &'a str,
            shards: u32,
        ) -> BoxFuture<'a, Result<Vec<ShardInfo>, LogError>> {
            self.log.ensure_stream(stream, shards)
        }
        fn shards<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<Vec<ShardInfo>, LogError>> {
            self.log.shards(stream)
        }
        fn append<'a>(&'a self, stream: &'a str, records: &'a [AppendRecord]) -> BoxFuture<'a, Result<(), LogError>> {
            if stream == "forbidden" {
                let detail = "AccessDeniedException: not authorized to perform kinesis:PutRecords".to_owned();
                return Box::pin(async move { Err(LogError::Rejected { stream: "forbidden".into(), detail }) });
            }
            Box::pin(async move {
                if let Some(rendezvous) = self.rendezvous.as_ref().filter(|_| ["exchange", "out"].contains(&stream)) {
                    rendezvous.wait().await;
                }
                if let Some(mut held) = self.held.clone().filter(|_| stream == "out") {
                    let _ = held.wait_for(|held| !*held).await;
                }
                self.log.append(stream, records).await
            })
        }
        fn read<'a>(
            &'a self,
            stream: &'a str,
            shard: &'a str,
            from: &'a Position,
            max: usize,
        ) -> BoxFuture<'a, Result<(Vec<LogRecord>, Position), LogError>> {
            self.log.read(stream, shard, from, max)
        }
    }

    fn committer(
        dir: &std::path::Path,
        log: Arc<dyn LogStore>,
        commits: Arc<LocalCommitStore>,
        lease: Lease,
    ) -> Committer {
        Committer {
            lease,
            guard: Arc::new(LeaseGuard::new(Instant::now(), Duration::from_secs(600))),
            log,
            blobs: Arc::new(FsBlobStore::new(dir)),
            commits,
            streams: OutputStreams {
                exchange: "exchange".into(),
                dead_letters: Destination::Stream("dead-letters".into()),
                create_egress_streams: Some(1),
            },
            committed_epoch: 0,
            snapshot_epoch: 0,
            incarnation: 1,
            metrics: crate::observe::metrics::Metrics::new().committer(0),
            hand_overs: None,
            chain: Chain::default(),
            collector: Collector::default(),
        }
    }

    #[tokio::test]
    async fn a_dead_letter_too_large_for_a_record_is_stored_whole_beside_a_stub_with_a_bounded_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let commits = Arc::new(LocalCommitStore::open(dir.path()).expect("commit store"));
        let lease = commits.acquire(0, "worker").await.expect("lease");
        let log = Arc::new(LocalLogStore::new(dir.path()));
        log.ensure_stream("dead-letters", 1).await.expect("stream");
        let mut committer = committer(dir.path(), log.clone(), commits, lease);
        let address = crate::address::FunctionType::new("ns", "f").address("a".repeat(300));
        let letter = DeadLetter {
            address: Some(address),
            reason: "r".repeat(100_000),
            raw: vec![7; 2 << 20],
            ..Default::default()
        };
        let mut outbox = Outbox::default();
        outbox.epoch = 9;
        outbox.push_dead_letter(3, letter.clone());
        committer.publish(&outbox).await.expect("published");

        let (records, _) = log.read("dead-letters", "shard-0000", &Position::Start, 10).await.expect("read");
        let [record] = records.as_slice() else { panic!("one record: {records:?}") };
        assert!(record.partition_key.chars().count() <= 256, "{}", record.partition_key);
        let stub = DeadLetter::decode(record.data.as_slice()).expect("a letter");
        assert_eq!(stub.stored_as, dead_letters::object_key("p0.i1.e9.3"));
        assert!(stub.raw.is_empty() && stub.reason.len() < 20_000, "a stub, bounded");
        let read = dead_letters::read_all(&committer.streams.dead_letters, log.as_ref(), committer.blobs.as_ref())
            .await
            .expect("read");
        let [Ok(whole)] = read.as_slice() else { panic!("one dead letter: {read:?}") };
        assert_eq!(whole.letter, letter, "read back whole");
    }

    /// Partition 0's epoch `epoch`, with nothing in it.
    fn empty_epoch(epoch: u64, snapshot: bool) -> SealedEpoch {
        SealedEpoch {
            record: statefun_proto::internal::EpochRecord { partition: 0, epoch, snapshot, ..Default::default() },
            entries: Default::default(),
            timers: Vec::new(),
            outboxes: Vec::new(),
            parked: Vec::new(),
            released: Vec::new(),
            live_parked: None,
        }
    }

    /// Checkpoint files whose deletes wait until `allowed` gives them a permit.
    struct HeldDeletes {
        files: FsBlobStore,
        allowed: Arc<tokio::sync::Semaphore>,
    }

    impl BlobStore for HeldDeletes {
        fn put<'a>(
            &'a self,
            key: &'a str,
            data: bytes::Bytes,
        ) -> BoxFuture<'a, Result<(), checkpoint::CheckpointError>> {
            self.files.put(key, data)
        }
        fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, checkpoint::CheckpointError>> {
            self.files.get(key)
        }
        fn read<'a>(
            &'a self,
            key: &'a str,
            sink: &'a mut checkpoint::ChunkSink<'_>,
        ) -> BoxFuture<'a, Result<bool, checkpoint::CheckpointError>> {
            self.files.read(key, sink)
        }
        fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), checkpoint::CheckpointError>> {
            Box::pin(async move {
                self.allowed.acquire().await.expect("open").forget();
                self.files.delete(key).await
            })
        }
        fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, checkpoint::CheckpointError>> {
            self.files.list(prefix)
        }
    }

    #[tokio::test]
    async fn a_snapshot_is_committed_without_waiting_for_the_history_it_replaces_to_be_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let commits = Arc::new(LocalCommitStore::open(dir.path()).expect("commit store"));
        let lease = commits.acquire(0, "worker").await.expect("lease");
        let mut committer = committer(dir.path(), Arc::new(LocalLogStore::new(dir.path())), commits, lease);
        let allowed = Arc::new(tokio::sync::Semaphore::new(0));
        committer.blobs = Arc::new(HeldDeletes { files: FsBlobStore::new(dir.path()), allowed: allowed.clone() });
        let blobs = committer.blobs.clone();
        for (epoch, snapshot) in [(1, true), (2, false), (3, false)] {
            committer.commit(empty_epoch(epoch, snapshot)).await.expect("committed");
        }
        let history = blobs.list(&checkpoint::partition_prefix(0)).await.expect("list");
        assert_eq!(history.len(), 3);
        // Deleting the replaced history takes its time (a file, an S3 request, per object): the
        // snapshot's results must not wait for it.
        let committed = tokio::time::timeout(Duration::from_secs(30), committer.commit(empty_epoch(4, true))).await;
        assert!(matches!(committed, Ok(Ok(_))), "the snapshot committed while its deletes wait: {committed:?}");
        allowed.add_permits(3);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = blobs.list(&checkpoint::partition_prefix(0)).await.expect("list");
            if left == [checkpoint::object_key(0, 4, committer.lease.counter, true)] {
                break;
            }
            assert!(Instant::now() < deadline, "the replaced history is deleted in the end: {left:?} left");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_committed_snapshot_leaves_only_the_parked_segments_it_lists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let commits = Arc::new(LocalCommitStore::open(dir.path()).expect("commit store"));
        let lease = commits.acquire(0, "worker").await.expect("lease");
        let mut committer = committer(dir.path(), Arc::new(LocalLogStore::new(dir.path())), commits, lease);
        let blobs = committer.blobs.clone();
        // Litter: a segment of an epoch that never committed.
        blobs.put(&parking::object_key(0, "p0.l0.e7.0"), bytes::Bytes::from_static(b"")).await.expect("put");
        let sealed = SealedEpoch {
            parked: vec![("p0.l1.e1.0".into(), Vec::new())],
            live_parked: Some(vec!["p0.l1.e1.0".into(), "p0.l0.e0.3".into()]),
            ..empty_epoch(1, true)
        };
        blobs.put(&parking::object_key(0, "p0.l0.e0.3"), bytes::Bytes::from_static(b"")).await.expect("put");
        committer.commit(sealed).await.expect("committed");
        let mut left = blobs.list(&parking::prefix(0)).await.expect("list");
        left.sort();
        assert_eq!(left, [parking::object_key(0, "p0.l0.e0.3"), parking::object_key(0, "p0.l1.e1.0")]);
    }

    #[tokio::test]
    async fn committed_batches_go_to_a_receiver_of_this_process_chained_to_what_was_sent_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let commits = Arc::new(LocalCommitStore::open(dir.path()).expect("commit store"));
        let lease = commits.acquire(0, "worker").await.expect("lease");
        let log = Arc::new(LocalLogStore::new(dir.path()));
        log.ensure_stream("exchange", 2).await.expect("stream");
        let hand_overs = Arc::new(HandOvers::new(2));
        let _sender = hand_overs.register(0);
        let mut receiver = hand_overs.register(1);
        // Every partition here: the receiver's exchange reader waits until told (the pace is never up).
        let reader = QuietExchange::new(hand_overs.clone(), 1, Duration::from_secs(3600));
        let told = || tokio::time::timeout(Duration::from_millis(100), reader.wait());
        let mut committer = committer(dir.path(), log.clone(), commits, lease);
        committer.hand_overs = Some(hand_overs);
        let envelope = |id: &str| statefun_proto::internal::Envelope {
            target: Some(crate::address::FunctionType::new("ns", "f").address(id)),
            ..Default::default()
        };
        let epoch = |epoch: u64, seqs: &[u64]| {
            let mut outbox = Outbox::default();
            outbox.epoch = epoch;
            for &seq in seqs {
                outbox.push_exchange(seq, 1, &envelope(&format!("m{seq}"))).expect("fits");
            }
            outbox
        };
        committer.publish(&epoch(3, &[0, 4])).await.expect("published");
        assert!(receiver.try_recv().is_err(), "what was sent before is not known: nothing handed over");
        assert!(told().await.is_ok(), "the reader is told to read what was appended and not handed over");
        committer.publish(&epoch(4, &[])).await.expect("published");
        committer.publish(&epoch(5, &[2])).await.expect("published");
        assert!(told().await.is_err(), "handed over: the exchange only brings a copy, the reader is not told");
        let Ok(Handed::Committed(hand_over)) = receiver.try_recv() else { panic!("an epoch handed over") };
        assert_eq!(hand_over.previous, (3, 4), "the last message sent to partition 1, two epochs before");
        let batches: Vec<ExchangeBatch> =
            hand_over.records.iter().map(|r| ExchangeBatch::decode(r.as_slice()).expect("a batch")).collect();
        assert_eq!(batches.iter().map(|b| (b.epoch, b.messages.len())).collect::<Vec<_>>(), [(5, 1)]);
        let (records, _) = log.read("exchange", "shard-0001", &Position::Start, 10).await.expect("read");
        assert_eq!(records.len(), 2, "the exchange has every batch too");
    }

    #[tokio::test]
    async fn the_streams_of_an_epoch_are_appended_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let commits = Arc::new(LocalCommitStore::open(dir.path()).expect("commit store"));
        let lease = commits.acquire(0, "worker").await.expect("lease");
        // Each append waits until the other has started: appended one after the other, neither ends.
        let rendezvous = Some(Arc::new(tokio::sync::Barrier::new(2)));
        let log = Arc::new(TestLog { log: LocalLogStore::new(dir.path()), rendezvous, held: None });
        log.ensure_stream("exchange", 2).await.expect("stream");
        log.ensure_stream("out", 1).await.expect("stream");
        let mut committer = committer(dir.path(), log.clone(), commits, lease);
        let mut outbox = Outbox::default();
        outbox.epoch = 2;
        let envelope = statefun_proto::internal::Envelope {
            target: Some(crate::address::FunctionType::new("ns", "f").address("a")),
            ..Default::default()
        };
        outbox.push_exchange(0, 1, &envelope).expect("fits");
        let out = EgressRecord { stream: "out".into(), partition_key: "k".into(), data: vec![1], ..Default::default() };
        outbox.push_egress(1, out);
        let published = tokio::time::timeout(Duration::from_secs(30), committer.publish(&outbox)).await;
        assert!(published.expect("the exchange and the egress appended together").is_ok());
        let (records, _) = log.read("out", "shard-0000", &Position::Start, 10).await.expect("read");
        assert_eq!(records.len(), 1);
    }

    #[tokio::test]
    async fn egress_records_a_stream_refuses_for_good_become_dead_letters_and_the_rest_is_published() {
        let dir = tempfile::tempdir().expect("tempdir");
        let commits = Arc::new(LocalCommitStore::open(dir.path()).expect("commit store"));
        let lease = commits.acquire(0, "worker").await.expect("lease");
        let log = Arc::new(TestLog { log: LocalLogStore::new(dir.path()), rendezvous: None, held: None });
        let mut committer = committer(dir.path(), log.clone(), commits, lease);
        let record = |stream: &str| EgressRecord {
            stream: stream.into(),
            partition_key: "k".into(),
            data: stream.as_bytes().to_vec(),
            ..Default::default()
        };
        let mut outbox = Outbox::default();
        outbox.epoch = 4;
        outbox.push_egress(0, record("forbidden"));
        outbox.push_egress(1, record("allowed"));
        committer.publish(&outbox).await.expect("published: nothing stops the partition");

        let (allowed, _) = log.read("allowed", "shard-0000", &Position::Start, 10).await.expect("read");
        assert_eq!(allowed.iter().map(|r| r.data.as_slice()).collect::<Vec<_>>(), [b"allowed".as_slice()]);
        let letters = dead_letters::read_all(&committer.streams.dead_letters, log.as_ref(), committer.blobs.as_ref())
            .await
            .expect("read");
        let [Ok(letter)] = letters.as_slice() else { panic!("one dead letter: {letters:?}") };
        assert_eq!(letter.id, "p0.i1.e4.0", "the egress record's own deterministic id, in its history");
        assert!(letter.letter.reason.contains("AccessDeniedException"), "{}", letter.letter.reason);
        assert!(letter.letter.source.contains("stream `forbidden`"), "{}", letter.letter.source);
        assert_eq!(letter.letter.raw, b"forbidden");
    }

    /// The next epoch commits while the outbox of the one before is still
    /// being appended; the outboxes are published in the epochs' order.
    #[tokio::test]
    async fn an_epoch_commits_while_the_outbox_before_it_is_being_published() {
        let dir = tempfile::tempdir().expect("tempdir");
        let commits = Arc::new(LocalCommitStore::open(dir.path()).expect("commit store"));
        let lease = commits.acquire(0, "worker").await.expect("lease");
        let (hold, held) = tokio::sync::watch::channel(true);
        let log = Arc::new(TestLog { log: LocalLogStore::new(dir.path()), rendezvous: None, held: Some(held) });
        log.ensure_stream("out", 1).await.expect("stream");
        let committer = committer(dir.path(), log.clone(), commits, lease);
        let (sealed, receiver) = mpsc::channel(1);
        let (events, mut reports) = mpsc::unbounded_channel();
        let running = tokio::spawn(committer.run(receiver, events));
        let mut next = async || {
            let report = tokio::time::timeout(Duration::from_secs(30), reports.recv()).await;
            match report.expect("a report within 30 s").expect("the committer runs") {
                CommitterEvent::Committed(epoch) => ("committed", epoch),
                CommitterEvent::Published(epoch) => ("published", epoch),
                other => panic!("{other:?}"),
            }
        };

        let mut outbox = Outbox::default();
        outbox.epoch = 1;
        let record =
            EgressRecord { stream: "out".into(), partition_key: "k".into(), data: b"r".to_vec(), ..Default::default() };
        outbox.push_egress(0, record);
        sealed
            .send(Sealed { record: empty_epoch(1, true), outbox: Arc::new(outbox), hand_over: true })
            .await
            .expect("send");
        assert_eq!(next().await, ("committed", 1));
        let mut outbox = Outbox::default();
        outbox.epoch = 2;
        sealed
            .send(Sealed { record: empty_epoch(2, false), outbox: Arc::new(outbox), hand_over: true })
            .await
            .expect("send");
        assert_eq!(next().await, ("committed", 2), "epoch 2 commits while epoch 1's record waits to be appended");

        hold.send_replace(false);
        assert_eq!(next().await, ("published", 1));
        assert_eq!(next().await, ("published", 2));
        drop(sealed);
        running.await.expect("the committer ends");
        let (records, _) = log.read("out", "shard-0000", &Position::Start, 10).await.expect("read");
        assert_eq!(records.len(), 1);
    }
}
