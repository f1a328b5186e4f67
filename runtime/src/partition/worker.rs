//! The task that owns one partition: it reads the partition's inputs, drives
//! the [`Partition`] state machine, starts invocations, seals an epoch every
//! commit interval and hands it to the [`Committer`].
//!
//! Flow: readers (one task per input shard) → bounded channel → worker →
//! invocation tasks → results channel → worker → sealed epochs → committer.
//! Input is paused while too many messages are queued (backpressure).

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use statefun_proto::internal::{Envelope, ExchangeBatch};
use statefun_proto::reqreply::{Address, FromFunction, TypedValue};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::committer::{Committer, CommitterEvent, Sealed};
use super::{Effect, Partition};
use crate::address::FunctionType;
use crate::invoke::Invoker;
use crate::log::{LogRecord, LogStore, Position};
use crate::now_ms;

/// What an input shard carries.
#[derive(Clone, Debug)]
pub enum InputKind {
    /// Batches from other partitions.
    Exchange,
    /// StateFun Kinesis-ingress routing: id = partition key, typename = `value_type`, every target.
    Ingress { value_type: String, targets: Vec<FunctionType> },
}

#[derive(Clone, Debug)]
pub struct Input {
    pub stream: String,
    pub shard: String,
    pub kind: InputKind,
    /// Where to start when the partition has no committed position for this shard.
    pub start: Position,
}

#[derive(Clone, Debug)]
pub struct WorkerSettings {
    pub commit_interval: Duration,
    /// Every how many epochs a full snapshot replaces the chain of deltas.
    pub snapshot_every: u64,
    /// Input pauses while more messages than this are queued in the partition.
    pub max_queued: usize,
    pub poll_interval: Duration,
    pub read_batch: usize,
    /// How often expired state is swept (expiry is also checked on every invocation).
    pub expiry_sweep: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("partition {partition} lost its lease: {reason}")]
    Fenced { partition: u32, reason: String },
    #[error("partition {partition} stopped: {reason}")]
    Failed { partition: u32, reason: String },
}

/// How long a stopping partition waits for its last commit.
const SHUTDOWN_COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

struct InputBatch {
    input: usize,
    records: Vec<LogRecord>,
}

/// Marks a committed position that is a time (a pinned `Latest` start), not a sequence number.
const TIME_POSITION: char = '@';

struct InvocationDone {
    address: Address,
    token: u64,
    outcome: Result<FromFunction, String>,
}

pub struct PartitionWorker {
    pub partition: Partition,
    pub invoker: Arc<Invoker>,
    pub log: Arc<dyn LogStore>,
    pub committer: Committer,
    pub inputs: Vec<Input>,
    pub settings: WorkerSettings,
}

impl PartitionWorker {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), WorkerError> {
        let Self { mut partition, invoker, log, committer, inputs, settings } = self;
        let id = partition.id();

        let unpublished: Vec<_> = partition.unpublished().cloned().collect();
        if let Err(reason) = committer.republish(&unpublished).await {
            return Err(WorkerError::Failed { partition: id, reason });
        }
        if let Some(last) = unpublished.last() {
            partition.mark_published(last.epoch);
        }

        let (sealed_tx, sealed_rx) = mpsc::channel::<Sealed>(1);
        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        let committer_task = tokio::spawn(committer.run(sealed_rx, events_tx));

        let (input_tx, mut input_rx) = mpsc::channel::<InputBatch>(4);
        let mut readers = JoinSet::new();
        for (index, input) in inputs.iter().enumerate() {
            let start = start_position(&mut partition, input);
            readers.spawn(read_loop(log.clone(), input.clone(), index, start, input_tx.clone(), settings.clone()));
        }
        drop(input_tx);

        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<InvocationDone>();
        let mut commit_tick = tokio::time::interval(settings.commit_interval);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep_tick = tokio::time::interval(settings.expiry_sweep);
        // A new owner's first commit is a snapshot: every object of a chain then
        // carries the same lease counter (see the checkpoint module).
        let mut epochs_since_snapshot = settings.snapshot_every;

        partition.resume(now_ms());
        start_invocations(&mut partition, &invoker, &done_tx);
        tracing::info!(partition = id, epoch = partition.epoch(), addresses = partition.address_count(), "partition running");

        let result = loop {
            // Input waits while the partition is full or its committer is behind.
            let accepting = partition.queued_messages() < settings.max_queued && sealed_tx.capacity() > 0;
            let timer = partition.next_timer_at().map(|at| Duration::from_millis((at - now_ms()).max(0) as u64));
            tokio::select! {
                Some(batch) = input_rx.recv(), if accepting => {
                    route_input(&mut partition, &inputs[batch.input], batch.records);
                }
                Some(done) = done_rx.recv() => {
                    partition.on_invocation_result(&done.address, done.token, done.outcome, now_ms());
                }
                _ = tokio::time::sleep(timer.unwrap_or(Duration::from_secs(3600))), if timer.is_some() => {
                    partition.fire_due_timers(now_ms());
                }
                _ = sweep_tick.tick() => partition.expire_states(now_ms()),
                _ = commit_tick.tick() => {
                    if partition.has_changes()
                        && let Ok(permit) = sealed_tx.try_reserve()
                    {
                        epochs_since_snapshot += 1;
                        let snapshot = epochs_since_snapshot >= settings.snapshot_every;
                        if snapshot {
                            epochs_since_snapshot = 0;
                        }
                        let (record, outbox) = partition.seal(snapshot);
                        permit.send(Sealed { record, outbox });
                    }
                }
                Some(event) = events_rx.recv() => match event {
                    CommitterEvent::Published(epoch) => partition.mark_published(epoch),
                    CommitterEvent::Fenced(reason) => break Err(WorkerError::Fenced { partition: id, reason }),
                    CommitterEvent::Failed(reason) => break Err(WorkerError::Failed { partition: id, reason }),
                },
                _ = shutdown.changed() => break Ok(()),
            }
            start_invocations(&mut partition, &invoker, &done_tx);
        };

        readers.abort_all();
        if result.is_ok() {
            // Commit what was done; in-flight invocations are in the record and re-sent on restart.
            let last_commit = async {
                if partition.has_changes() {
                    let (record, outbox) = partition.seal(false);
                    let _ = sealed_tx.send(Sealed { record, outbox }).await;
                }
                drop(sealed_tx);
                committer_task.await
            };
            if tokio::time::timeout(SHUTDOWN_COMMIT_TIMEOUT, last_commit).await.is_err() {
                // Safe: what was not committed is redone from the last commit on restart.
                return Err(WorkerError::Failed {
                    partition: id,
                    reason: format!("the last commit did not finish within {SHUTDOWN_COMMIT_TIMEOUT:?}"),
                });
            }
            while let Ok(event) = events_rx.try_recv() {
                match event {
                    CommitterEvent::Fenced(reason) => return Err(WorkerError::Fenced { partition: id, reason }),
                    CommitterEvent::Failed(reason) => return Err(WorkerError::Failed { partition: id, reason }),
                    CommitterEvent::Published(_) => {}
                }
            }
            tracing::info!(partition = id, "partition stopped after its last commit");
        } else {
            committer_task.abort();
        }
        result
    }
}

/// Where an input's reader starts: after the committed position, else at the
/// configured start. A `Latest` start is pinned to the current time and
/// committed with the first epoch, so a restart before any record arrived
/// does not skip what was appended meanwhile.
fn start_position(partition: &mut Partition, input: &Input) -> Position {
    match partition.position(&input.stream, &input.shard) {
        Some(time) if time.starts_with(TIME_POSITION) => {
            Position::AtTimestamp(time[TIME_POSITION.len_utf8()..].parse().unwrap_or(0))
        }
        Some(sequence) => Position::After(sequence.to_owned()),
        None => {
            let pinned = match input.start {
                Position::Latest => now_ms(),
                Position::AtTimestamp(at) => at,
                ref other => return other.clone(),
            };
            partition.advance_position(&input.stream, &input.shard, &format!("{TIME_POSITION}{pinned}"));
            Position::AtTimestamp(pinned)
        }
    }
}

fn start_invocations(partition: &mut Partition, invoker: &Arc<Invoker>, done: &mpsc::UnboundedSender<InvocationDone>) {
    for effect in partition.take_effects() {
        let Effect::Invoke { address, token, request } = effect;
        let invoker = invoker.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let outcome = invoker.invoke(&address, request).await;
            let _ = done.send(InvocationDone { address, token, outcome });
        });
    }
}

/// Turns input records into messages (ingress) or accepts exchange batches.
fn route_input(partition: &mut Partition, input: &Input, records: Vec<LogRecord>) {
    let now = now_ms();
    for record in records {
        let source = format!("{}/{}/{}", input.stream, record.shard, record.sequence);
        match &input.kind {
            InputKind::Exchange => match ExchangeBatch::decode(record.data.as_slice()) {
                Ok(batch) => partition.accept_exchange(batch, now),
                Err(e) => partition.dead_letter_input(
                    format!("exchange record is not a valid ExchangeBatch: {e}"),
                    source,
                    record.data,
                    now,
                ),
            },
            InputKind::Ingress { value_type, targets } => {
                if record.partition_key.is_empty() {
                    partition.dead_letter_input(
                        format!("ingress record has an empty partition key, so it has no target id (stream {})", input.stream),
                        source,
                        record.data,
                        now,
                    );
                } else {
                    for (index, target) in targets.iter().enumerate() {
                        let id = if targets.len() == 1 { source.clone() } else { format!("{source}/{index}") };
                        let argument = TypedValue { typename: value_type.clone(), has_value: true, value: record.data.clone() };
                        let envelope = Envelope {
                            target: Some(target.address(record.partition_key.clone())),
                            caller: None,
                            argument: Some(argument),
                            id,
                        };
                        partition.deliver(envelope, now);
                    }
                }
            }
        }
        partition.advance_position(&input.stream, &record.shard, &record.sequence);
    }
}

async fn read_loop(
    log: Arc<dyn LogStore>,
    input: Input,
    index: usize,
    mut position: Position,
    tx: mpsc::Sender<InputBatch>,
    settings: WorkerSettings,
) {
    let mut failures = 0u32;
    loop {
        match log.read(&input.stream, &input.shard, &position, settings.read_batch).await {
            Ok((records, next)) => {
                failures = 0;
                position = next;
                if records.is_empty() {
                    tokio::time::sleep(settings.poll_interval).await;
                } else if tx.send(InputBatch { input: index, records }).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                failures += 1;
                let delay = Duration::from_millis(100u64.saturating_mul(1 << failures.min(6)));
                tracing::warn!(stream = %input.stream, shard = %input.shard, "reading input failed, retrying in {delay:?}: {e}");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::NoEndpoints;

    fn input(start: Position) -> Input {
        Input { stream: "in".into(), shard: "s".into(), kind: InputKind::Exchange, start }
    }

    #[test]
    fn a_latest_start_is_pinned_to_a_time_that_a_restart_reads_back() {
        let mut partition = Partition::new(0, 1, Arc::new(NoEndpoints), 1);
        let before = now_ms();
        let Position::AtTimestamp(at) = start_position(&mut partition, &input(Position::Latest)) else {
            panic!("Latest becomes a time");
        };
        assert!(at >= before);
        assert!(partition.has_changes(), "the pinned start is committed with the first epoch");
        let (record, _) = partition.seal(true);
        let mut restored = Partition::restore(0, 1, Arc::new(NoEndpoints), vec![record]);
        assert_eq!(start_position(&mut restored, &input(Position::Latest)), Position::AtTimestamp(at));
    }

    #[test]
    fn a_committed_sequence_wins_and_a_start_from_the_beginning_needs_no_pin() {
        let mut partition = Partition::new(0, 1, Arc::new(NoEndpoints), 1);
        assert_eq!(start_position(&mut partition, &input(Position::Start)), Position::Start);
        assert!(!partition.has_changes());
        partition.advance_position("in", "s", "42");
        assert_eq!(start_position(&mut partition, &input(Position::Latest)), Position::After("42".into()));
    }
}
