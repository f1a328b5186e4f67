//! The task that owns one partition: it reads the partition's inputs, drives
//! the [`Partition`] state machine, starts invocations, seals an epoch (every
//! commit interval, or as soon as output waits in it) and hands it to the
//! [`Committer`].
//!
//! Flow: readers (one task per input shard) → bounded channel → worker →
//! invocation tasks → results channel → worker → sealed epochs → committer.
//! Input is paused while too many messages are queued, or the partition holds
//! more than the worker's memory budget leaves it (backpressure).
//! Ingress shards are handed out by [`Discovery`] as they become readable
//! (resharding: see [`lineage`]); a shard read to its end is marked
//! finished once the epoch recording its end is published.

mod cadence;
pub mod committer;
pub mod handoff;
pub mod lineage;
mod read_ahead;

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::ops::RangeInclusive;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt as _;
use prost::Message;
use statefun_proto::internal::{Envelope, ExchangeBatch};
use statefun_proto::reqreply::{Address, FromFunction};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use crate::address::FunctionType;
use crate::backoff::Backoff;
use crate::checkpoint::BlobStore;
use crate::invoke::Invoker;
use crate::log::{LogRecord, LogStore, Position, kpl};
use crate::now_ms;
use crate::observe::Observer;
use crate::observe::metrics::{FailureReason, InputMetrics};
use crate::observe::status::{InputStatus, Progress, TypeLoad};
use crate::partition::budget::MemoryBudget;
use crate::partition::forward::{Forward, Origin};
use crate::partition::outbox::IngressMessage;
use crate::partition::spill::Room;
use crate::partition::{Bounds, DeadLetterCause, DeadLetterCounts, Effect, Partition, parking};
use cadence::SnapshotCadence;
use committer::{Committer, CommitterEvent, Sealed};
use handoff::{HandOver, HandOvers, Handed, QUIET_EXCHANGE_PACE, QuietExchange};
use lineage::{Discovery, IngressStream, ReadyShard};
use read_ahead::ReadAhead;

/// What an input shard carries.
#[derive(Clone, Debug)]
pub enum InputKind {
    /// Batches from other partitions.
    Exchange,
    /// StateFun Kinesis-ingress routing: id = partition key, typename = `value_type`, every target.
    /// `hash_keys` is the shard's range: a KPL user record whose explicit hash key falls outside it
    /// (written before a reshard by a producer whose shard map was out of date) is dropped, as the KCL does.
    Ingress { value_type: String, targets: Vec<FunctionType>, hash_keys: RangeInclusive<u128> },
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
    /// The longest time between commits.
    pub commit_interval: Duration,
    /// Seal an epoch as soon as output waits in it, the inputs are caught up
    /// (nothing more to read) and no commit is in flight: latency is then about
    /// one commit, while with a backlog epochs still fill for the interval.
    pub group_commit: bool,
    /// Hand committed messages to the other partitions of this process in memory ([`handoff`]).
    pub hand_over: bool,
    /// At least one epoch in this many is a full snapshot that replaces the chain of deltas
    /// (sooner once the deltas are larger than the snapshot: [`cadence`]).
    pub snapshot_every: u64,
    /// Input pauses while more messages than this are queued in the partition.
    pub max_queued: usize,
    /// An epoch is sealed before its commit interval is up once its outbox holds
    /// this many entries (messages for other partitions, egress records, dead
    /// letters), so memory stays bounded however long the interval.
    pub max_epoch_entries: usize,
    pub poll_interval: Duration,
    pub read_batch: usize,
    /// How often expired state is swept (expiry is also checked on every invocation).
    pub expiry_sweep: Duration,
    /// How often ingress streams are listed for new shards (resharding).
    pub shard_discovery: Duration,
    pub bounds: Bounds,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("partition {partition} lost its lease: {reason}")]
    Fenced { partition: u32, reason: String },
    #[error("partition {partition} stopped: {reason}")]
    Failed { partition: u32, reason: String, cause: FailureReason },
}

/// A partition with this many messages queued or in flight is behind in its own right, like one whose
/// inputs are behind: its epoch fills until the interval, so that under load commits stay few. Each
/// commit costs a file, a write and a sync however little it holds; a partition draining a backlog
/// handed to it through the exchange (its inputs caught up, its queue long) otherwise committed every
/// few milliseconds. Paced events queue a handful at a time and are committed at once.
const QUEUED_BEHIND: usize = 1024;

/// Whether the partition's epoch is sealed now for the output that waits in it, its inputs being
/// `idle` (nothing read and not taken, no reader behind). Not while a commit is in flight: the next
/// takes what came meanwhile. Not while the partition is behind (see [`QUEUED_BEHIND`]).
fn output_waits(partition: &Partition, sealing: &Sealing, idle: bool) -> bool {
    idle && partition.outbox_len() > 0 && !sealing.commit_in_flight() && partition.queued_messages() < QUEUED_BEHIND
}

/// How long a stopping partition waits for its last commit.
const SHUTDOWN_COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

struct InputBatch {
    input: usize,
    records: Vec<LogRecord>,
    /// Bytes of the records, as the reader counted them for its read-ahead.
    bytes: usize,
    /// The shard is closed and these were its last records.
    end: bool,
}

/// Marks a committed position that is a time (a pinned `Latest` start), not a sequence number.
const TIME_POSITION: char = '@';
/// The committed position of a shard read to its end.
const END_POSITION: &str = "#end";
/// The pseudo-shard under which a stream's pinned `Latest` start is committed.
const STREAM_PIN: &str = "";

/// What the worker's tasks report back.
enum TaskDone {
    Invocation { address: Address, token: u64, outcome: Result<FromFunction, String>, request_bytes: usize },
    Unparked { address: Address, segment: String, messages: Result<Vec<Envelope>, String> },
}

pub struct PartitionWorker {
    pub partition: Partition,
    pub partitions: u32,
    pub invoker: Arc<Invoker>,
    pub log: Arc<dyn LogStore>,
    /// Where finished-shard markers go (the checkpoint store).
    pub blobs: Arc<dyn BlobStore>,
    pub committer: Committer,
    /// Inputs read from the start: the partition's exchange shard.
    pub inputs: Vec<Input>,
    pub ingress: Vec<IngressStream>,
    pub settings: WorkerSettings,
    /// Shared by every partition of the process.
    pub budget: Arc<MemoryBudget>,
    /// Where this partition takes what the others of this process hand over; `None`: nothing is.
    pub hand_overs: Option<Arc<HandOvers>>,
    pub observer: Arc<Observer>,
}

impl PartitionWorker {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), WorkerError> {
        let Self {
            mut partition,
            partitions,
            invoker,
            log,
            blobs,
            mut committer,
            mut inputs,
            ingress,
            settings,
            budget,
            hand_overs,
            observer,
        } = self;
        let id = partition.id();
        partition.set_bounds(settings.bounds);
        partition.set_lease(committer.lease.counter);

        let unpublished: Vec<_> = partition.unpublished().cloned().collect();
        let mut lease_revoked = committer.guard.watch_revoked();
        match committer.republish(&unpublished).await {
            Ok(()) => {}
            Err(CommitterEvent::Fenced(reason)) => return Err(WorkerError::Fenced { partition: id, reason }),
            Err(CommitterEvent::Failed(reason)) => {
                return Err(WorkerError::Failed { partition: id, reason, cause: FailureReason::Commit });
            }
            Err(CommitterEvent::Committed(_) | CommitterEvent::Published(_)) => {}
        }
        if let Some(last) = unpublished.last() {
            partition.mark_published(last.epoch);
        }

        let (sealed_tx, sealed_rx) = mpsc::channel::<Sealed>(1);
        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        let committer_task = tokio::spawn(committer.run(sealed_rx, events_tx));

        let (input_tx, mut input_rx) = mpsc::channel::<InputBatch>(4);
        // Readers whose last read was full, so more input is there to read.
        let behind = Arc::new(AtomicUsize::new(0));
        let read_ahead = Arc::new(ReadAhead::default());
        let mut readers = JoinSet::new();
        // Per input, the lag its reader last saw (ingress shards), for the status reports.
        let mut lags: Vec<Option<Arc<AtomicI64>>> = Vec::new();
        for (index, input) in inputs.iter().enumerate() {
            let start = start_position(&mut partition, input);
            let mut reader = Reader::new(input, index, &observer, &mut lags);
            if let (InputKind::Exchange, Some(hand_overs)) = (&input.kind, &hand_overs) {
                reader.quiet = Some(QuietExchange::new(hand_overs.clone(), id, QUIET_EXCHANGE_PACE));
            }
            readers.spawn(read_loop(
                log.clone(),
                reader,
                start,
                input_tx.clone(),
                behind.clone(),
                read_ahead.clone(),
                settings.clone(),
            ));
        }

        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<ReadyShard>();
        let wake_discovery = Arc::new(Notify::new());
        let discovery = Discovery {
            log: log.clone(),
            blobs: blobs.clone(),
            partition: id,
            partitions,
            resumed: ingress
                .iter()
                .flat_map(|i| partition.positions_of(&i.stream).map(|shard| (i.stream.clone(), shard.to_owned())))
                .collect(),
            streams: ingress.clone(),
            interval: settings.shard_discovery,
            wake: wake_discovery.clone(),
        };
        let mut side_tasks = JoinSet::new();
        if !ingress.is_empty() {
            side_tasks.spawn(discovery.run(ready_tx));
        }
        // A new owner's first commit is a snapshot: every object of a chain then
        // carries the same lease counter (see the checkpoint module). The next ones
        // are spread over the partitions' cycle: partitions started together would
        // otherwise all encode everything they hold at the same moment.
        let mut sealing = Sealing::new(settings.snapshot_every, id, partitions);

        // Owned here: a stop or hand-over cancels what is in flight, so an address is
        // never invoked by this worker while its next owner re-sends the same batch.
        let mut tasks = Tasks::new(id, invoker, blobs.clone());
        let mut commit_tick = tokio::time::interval(settings.commit_interval);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep_tick = tokio::time::interval(settings.expiry_sweep);
        let mut report_tick = tokio::time::interval(REPORT_EVERY);
        let mut reported = DeadLetterCounts::default();

        partition.resume(now_ms());
        tasks.start(partition.take_effects());
        tracing::info!(
            partition = id,
            epoch = partition.epoch(),
            addresses = partition.address_count(),
            "partition running"
        );
        observer.board.serving(id, partition.epoch().saturating_sub(1), now_ms());

        let mut share = budget.share();
        // Since when the partition has had no room, and what it held then.
        let mut no_room = None;
        let mut intake: Option<Intake> = None;
        let mut handed = hand_overs.as_ref().map(|h| h.register(id));
        let exchange_watch = hand_overs.as_ref().map(|h| h.watch(id));
        let hand_over_metrics = observer.metrics.hand_overs();
        // No reader has more to read right now (each read came back short): the inputs are caught up.
        let caught_up = || behind.load(Ordering::Relaxed) == 0;
        let result = loop {
            // What the readers read ahead is bounded on its own (see `read_ahead`), not counted here: a
            // partition that counted it could find its share full of input it may not take.
            let reading = intake.as_ref().map_or(0, |i| i.bytes);
            // An unpublished outbox is held twice: by the partition (a snapshot carries it) and as the
            // records the committer appends.
            let publishing = partition.unpublished_bytes();
            let share_held =
                partition.held_bytes() + tasks.held_bytes() + sealing.in_commit_bytes() + reading + publishing;
            share.hold(share_held);
            read_ahead.follow_share(share.keep_to());
            // What functions send waits in the outboxes until it is committed and published: past half
            // the partition's share, no invocation starts (its outputs would pile up there), and an epoch
            // is sealed early at a quarter. Queued messages drain by invocations, outboxes by commits.
            let outbox_room = share.own() / 2;
            tasks.paused = partition.outbox_bytes() >= outbox_room;
            // Beyond what the partition keeps to (its own share, half of it while the process is near the
            // budget), a function type that holds a quarter of that spills what comes next, so that a flood
            // of one type does not pause the input of all (see the engine's `spill`).
            let room = Room { short: share.short(), type_bytes: share.keep_to() / 4 };
            if room != partition.room() {
                partition.set_room(room, now_ms());
            }
            // Input waits while the partition is full, its epoch is full or its committer is behind. What
            // was parked or spilled leaves memory with the seal.
            let epoch_full = (partition.outbox_len() >= settings.max_epoch_entries
                || partition.epoch_outbox_bytes() >= outbox_room / 2
                || partition.parked_bytes() >= outbox_room / 2)
                && sealed_tx.capacity() > 0;
            // A partition without room whose flood does not drain (its invocations hang) would keep its
            // input paused for as long, with every other type's messages unread behind the flood's: after
            // a while input flows again, the flood's further messages spill and the others go on, while
            // the partition holds at most an eighth of what it keeps to beyond what it held when its room
            // ran out (what is spilled leaves memory with the seal). Not at once: a flood that drains by
            // itself is better left to, than read into its spill.
            let has_room = share.has_room();
            no_room = if has_room { None } else { no_room.or_else(|| Some((tokio::time::Instant::now(), share_held))) };
            let stalled = no_room.is_some_and(|(since, held)| {
                since.elapsed() >= STALLED_AFTER && share_held < held + share.keep_to() / 8
            }) && partition.holds_flood();
            let accepting = partition.queued_messages() < settings.max_queued
                && (has_room || stalled)
                && !epoch_full
                && sealed_tx.capacity() > 0;
            // Output waits in this epoch (egress records, messages for other partitions), no commit is in
            // flight and the inputs are caught up (nothing more to read right now): sealed at once, so
            // each commit takes what came while the one before was written (group commit). Invocations
            // in flight do not hold it: their output goes with the next. A partition whose inputs are
            // behind, or with a backlog of its own queued (handed to it through the exchange), lets its
            // epoch fill until its interval or size is up, and commits stay few under load.
            let output_waits = settings.group_commit
                && sealed_tx.capacity() > 0
                && output_waits(&partition, &sealing, intake.is_none() && input_rx.is_empty() && caught_up());
            // Ingress messages for the other partitions of this process go to them at once, unless the
            // inputs are behind: under a backlog the exchange brings them in large batches anyway, and a
            // message forwarded too would be decoded twice.
            partition.set_forwarding(hand_overs.is_some() && caught_up());
            // A spill is read back once the inputs are caught up: what waits unread in them comes first.
            partition.set_inputs_caught_up(caught_up(), now_ms());
            let timer = partition.next_timer_at().map(|at| Duration::from_millis((at - now_ms()).max(0) as u64));
            tokio::select! {
                Some(batch) = input_rx.recv(), if accepting && intake.is_none() => {
                    let batch = Intake::new(batch);
                    read_ahead.taken(batch.bytes);
                    intake = Intake::take_step(batch, &mut partition, &inputs, &mut sealing);
                    forward(&mut partition, hand_overs.as_deref());
                }
                _ = std::future::ready(()), if accepting && intake.is_some() => {
                    intake = intake.and_then(|i| Intake::take_step(i, &mut partition, &inputs, &mut sealing));
                    forward(&mut partition, hand_overs.as_deref());
                }
                Some(handed) = next_hand_over(&mut handed), if accepting && intake.is_none() => {
                    // Behind, the inputs bring the same messages in large batches soon enough: taken now, they
                    // would be decoded twice (a tenth of the backlog throughput). Ignored, the exchange brings them;
                    // a sender that is behind hands nothing over either (see `Sealed::hand_over`).
                    let taken = match handed {
                        Handed::Committed(hand_over) => {
                            let taken = caught_up() && take_hand_over(&mut partition, hand_over);
                            // Not taken, the exchange reader must bring it, and what follows is out of turn.
                            if let Some(watch) = &exchange_watch {
                                watch.took_in_turn(taken);
                            }
                            taken
                        }
                        Handed::Forwarded(forwards) => caught_up() && partition.accept_forwarded(forwards, now_ms()),
                    };
                    hand_over_metrics.record(taken);
                }
                Some(ready) = ready_rx.recv() => {
                    let source = &ingress[ready.stream];
                    let input = Input {
                        stream: source.stream.clone(),
                        shard: ready.shard.id,
                        kind: InputKind::Ingress {
                            value_type: source.value_type.clone(),
                            targets: source.targets.clone(),
                            hash_keys: ready.shard.starting_hash_key..=ready.shard.ending_hash_key,
                        },
                        start: source.start.clone(),
                    };
                    match start_position(&mut partition, &input) {
                        // Ended before this start: its end was committed and, with the
                        // unpublished outboxes re-published above, published.
                        Position::End => {
                            side_tasks.spawn(lineage::mark_finished(blobs.clone(), input.stream.clone(), input.shard.clone()));
                        }
                        start => {
                            tracing::info!(partition = id, stream = %input.stream, shard = %input.shard, "reading ingress shard");
                            let reader = Reader::new(&input, inputs.len(), &observer, &mut lags);
                            readers.spawn(read_loop(log.clone(), reader, start, input_tx.clone(), behind.clone(), read_ahead.clone(), settings.clone()));
                            inputs.push(input);
                        }
                    }
                }
                Some(joined) = tasks.running.join_next() => match tasks.finished(joined) {
                    Ok(TaskDone::Invocation { address, token, outcome, .. }) => {
                        let start = &mut |effects| tasks.start(effects);
                        partition.on_invocation_result_starting(&address, token, outcome, now_ms(), start);
                    }
                    Ok(TaskDone::Unparked { address, segment, messages }) => {
                        partition.on_unparked(&address, &segment, messages, now_ms());
                    }
                    // Panics are caught in the task, and nothing aborts one task alone.
                    Err(e) => tracing::error!(partition = id, "a task of the partition ended without its result: {e}"),
                },
                _ = tokio::time::sleep(timer.unwrap_or(Duration::from_secs(3600))), if timer.is_some() => {
                    partition.fire_due_timers(now_ms());
                }
                _ = sweep_tick.tick() => partition.expire_states(now_ms()),
                _ = report_tick.tick() => {
                    tracing::debug!(
                        partition = id,
                        held = share_held,
                        tasks = tasks.held_bytes(),
                        in_commit = sealing.in_commit_bytes(),
                        reading = intake.as_ref().map_or(0, |i| i.bytes),
                        own = share.own(),
                        keep_to = share.keep_to(),
                        has_room = share.has_room(),
                        stalled,
                        accepting,
                        flood = partition.holds_flood(),
                        queued = partition.queued_messages(),
                        epoch_full,
                        committer_behind = sealed_tx.capacity() == 0,
                        tasks_paused = tasks.paused,
                        running = tasks.running.len(),
                        outbox = partition.outbox_bytes(),
                        parked = partition.parked_bytes(),
                        short = room.short,
                        "what the partition holds, and whether its input may flow"
                    );
                    report(&observer, &partition, &inputs, &lags, sealing.in_commit.len(), &mut reported);
                }
                _ = commit_tick.tick() => {
                    if partition.has_changes()
                        && let Ok(permit) = sealed_tx.try_reserve()
                    {
                        permit.send(sealing.seal(&mut partition, caught_up()));
                    }
                }
                // Full, or awaited, before its interval is up: sealed now (the next one gets the rest of the interval).
                _ = std::future::ready(()), if epoch_full || output_waits => {
                    if let Ok(permit) = sealed_tx.try_reserve() {
                        permit.send(sealing.seal(&mut partition, caught_up()));
                        commit_tick.reset();
                    }
                }
                event = events_rx.recv() => match event {
                    // The committer's task ended without saying why: it panicked.
                    None => break Err(WorkerError::Failed { partition: id, reason: "the committer ended unexpectedly".into(), cause: FailureReason::Commit }),
                    Some(CommitterEvent::Committed(epoch)) => sealing.committed(epoch),
                    Some(CommitterEvent::Published(epoch)) => {
                        observer.board.committed(id, epoch, now_ms());
                        partition.mark_published(epoch);
                        sealing.published(epoch);
                        let (published, waiting) = sealing.ended_sealed.drain(..).partition(|(sealed, ..)| *sealed <= epoch);
                        sealing.ended_sealed = waiting;
                        for (_, stream, shard) in published {
                            let blobs = blobs.clone();
                            let wake = wake_discovery.clone();
                            side_tasks.spawn(async move {
                                lineage::mark_finished(blobs, stream, shard).await;
                                // Children of this partition may be ready now.
                                wake.notify_one();
                            });
                        }
                    }
                    Some(CommitterEvent::Fenced(reason)) => break Err(WorkerError::Fenced { partition: id, reason }),
                    Some(CommitterEvent::Failed(reason)) => break Err(WorkerError::Failed { partition: id, reason, cause: FailureReason::Commit }),
                },
                // Lost, or not renewed in time: stop at once, drop what is not committed.
                _ = lease_revoked.changed() => {
                    break Err(WorkerError::Fenced { partition: id, reason: "the lease was revoked".into() });
                }
                _ = shutdown.changed() => break Ok(()),
            }
            tasks.start(partition.take_effects());
        };
        tasks.running.abort_all();
        report(&observer, &partition, &inputs, &lags, sealing.in_commit.len(), &mut reported);

        readers.abort_all();
        side_tasks.abort_all();
        if result.is_ok() {
            // Commit what was done; in-flight invocations are in the record and re-sent on restart.
            let last_commit = async {
                if partition.has_changes() {
                    // Sealed as every other epoch: a new owner's first is a snapshot on this path too.
                    let _ = sealed_tx.send(sealing.seal(&mut partition, true)).await;
                }
                drop(sealed_tx);
                committer_task.await
            };
            // Either way safe: what was not committed is redone from the last commit on restart.
            match tokio::time::timeout(SHUTDOWN_COMMIT_TIMEOUT, last_commit).await {
                Ok(Ok(())) => {}
                Ok(Err(ended)) => {
                    let reason = format!("the committer ended unexpectedly during the last commit: {ended}");
                    return Err(WorkerError::Failed { partition: id, reason, cause: FailureReason::Stop });
                }
                Err(_) => {
                    let reason = format!("the last commit did not finish within {SHUTDOWN_COMMIT_TIMEOUT:?}");
                    return Err(WorkerError::Failed { partition: id, reason, cause: FailureReason::Stop });
                }
            }
            while let Ok(event) = events_rx.try_recv() {
                match event {
                    CommitterEvent::Fenced(reason) => return Err(WorkerError::Fenced { partition: id, reason }),
                    CommitterEvent::Failed(reason) => {
                        return Err(WorkerError::Failed { partition: id, reason, cause: FailureReason::Commit });
                    }
                    CommitterEvent::Committed(_) | CommitterEvent::Published(_) => {}
                }
            }
            tracing::info!(partition = id, "partition stopped after its last commit");
        } else {
            committer_task.abort();
        }
        result
    }
}

/// An input batch being taken in, a step at a time: one exchange record can
/// carry thousands of messages, and a read up to 10 MiB of them, so the
/// partition's room is checked again between steps. The records not yet taken
/// count as held, as read.
struct Intake {
    input: usize,
    records: std::vec::IntoIter<LogRecord>,
    end: bool,
    /// Bytes of the records not yet taken.
    bytes: usize,
}

/// What one step of an [`Intake`] takes in at most (and one record more, which may be larger).
const INTAKE_STEP_BYTES: usize = 256 << 10;

impl Intake {
    fn new(batch: InputBatch) -> Self {
        Self { input: batch.input, records: batch.records.into_iter(), end: batch.end, bytes: batch.bytes }
    }

    /// Routes the next step's records; the rest of the batch, if any is left.
    fn take_step(mut self, partition: &mut Partition, inputs: &[Input], sealing: &mut Sealing) -> Option<Self> {
        let input = &inputs[self.input];
        let mut step_bytes = 0;
        let step = std::iter::from_fn(|| {
            if step_bytes >= INTAKE_STEP_BYTES {
                return None;
            }
            let record = self.records.next()?;
            step_bytes += record.data.len();
            Some(record)
        });
        partition.delivering_together(now_ms(), |partition| route_input(partition, input, step));
        self.bytes -= step_bytes;
        if self.records.len() > 0 {
            return Some(self);
        }
        if self.end {
            partition.advance_position(&input.stream, &input.shard, END_POSITION);
            sealing.ended_unsealed.push((input.stream.clone(), input.shard.clone()));
        }
        None
    }
}

/// Forwards what the last step read for the other partitions of this process ([`handoff`]).
fn forward(partition: &mut Partition, hand_overs: Option<&HandOvers>) {
    let forwards = partition.take_forwards();
    let Some(hand_overs) = hand_overs else { return };
    let mut by_partition: BTreeMap<u32, Vec<Forward>> = BTreeMap::new();
    for forward in forwards {
        by_partition.entry(forward.partition).or_default().push(forward);
    }
    for (target, forwards) in by_partition {
        hand_overs.forward(target, forwards);
    }
}

/// The next hand-over for this partition (never, without a registry).
async fn next_hand_over(handed: &mut Option<handoff::Receiver>) -> Option<Handed> {
    match handed {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// Takes what another partition of this process handed over, if it continues
/// this partition's mark for it; else the exchange brings it (as it does what
/// does not decode, where it becomes a dead letter).
fn take_hand_over(partition: &mut Partition, hand_over: HandOver) -> bool {
    let batches: Result<Vec<ExchangeBatch>, _> =
        hand_over.records.iter().map(|record| ExchangeBatch::decode(record.as_slice())).collect();
    batches.is_ok_and(|batches| partition.accept_handed_over(batches, hand_over.previous, now_ms()))
}

/// What sealing an epoch needs to remember between epochs.
#[derive(Default)]
struct Sealing {
    snapshots: SnapshotCadence,
    /// Shards read to their end, waiting for the epoch that records it to be sealed, then published.
    ended_unsealed: Vec<(String, String)>,
    ended_sealed: Vec<(u64, String, String)>,
    /// Sealed epochs not yet published, with the bytes of their encoded parts
    /// (the outboxes are the partition's to count).
    in_commit: VecDeque<(u64, usize)>,
    /// The last epoch known to be committed (its outbox may still be being published).
    committed_through: u64,
}

impl Sealing {
    fn new(snapshot_every: u64, id: u32, partitions: u32) -> Self {
        Self { snapshots: SnapshotCadence::new(snapshot_every, id, partitions), ..Default::default() }
    }

    /// Seals the partition's epoch, a snapshot when [`SnapshotCadence`] says so.
    fn seal(&mut self, partition: &mut Partition, hand_over: bool) -> Sealed {
        let snapshot = self.snapshots.next_is_snapshot();
        let (record, outbox) = partition.seal(snapshot);
        let epoch = record.record.epoch;
        let parked: usize = record.parked.iter().map(|(_, bytes)| bytes.len()).sum();
        let bytes = record.entries.bytes().len() + record.timers.len() + parked;
        self.snapshots.sealed(snapshot, bytes);
        self.in_commit.push_back((epoch, bytes));
        self.ended_sealed.extend(self.ended_unsealed.drain(..).map(|(stream, shard)| (epoch, stream, shard)));
        Sealed { record, outbox, hand_over }
    }

    /// Notes that every epoch up to `epoch` is committed.
    fn committed(&mut self, epoch: u64) {
        self.committed_through = self.committed_through.max(epoch);
    }

    /// Whether a sealed epoch waits for its commit (the next one would wait behind it).
    fn commit_in_flight(&self) -> bool {
        self.in_commit.back().is_some_and(|(sealed, _)| *sealed > self.committed_through)
    }

    /// Notes that every epoch up to `epoch` is committed and published.
    fn published(&mut self, epoch: u64) {
        while self.in_commit.front().is_some_and(|(sealed, _)| *sealed <= epoch) {
            self.in_commit.pop_front();
        }
    }

    /// What the sealed epochs on their way to the checkpoint store hold.
    fn in_commit_bytes(&self) -> usize {
        self.in_commit.iter().map(|(_, bytes)| bytes).sum()
    }
}

/// Where an input's reader starts: after the committed position, else at the
/// configured start. A `Latest` start is pinned, once per stream, to the time
/// the partition first read the stream, and committed with the next epoch: a
/// restart before any record arrived does not skip what was appended
/// meanwhile, and a shard that opens later (a reshard's child) starts from the
/// same time, so nothing appended to it before it was ready is skipped.
fn start_position(partition: &mut Partition, input: &Input) -> Position {
    let committed = |position: &str| match position {
        END_POSITION => Position::End,
        time if time.starts_with(TIME_POSITION) => {
            Position::AtTimestamp(time[TIME_POSITION.len_utf8()..].parse().unwrap_or(0))
        }
        sequence => Position::After(sequence.to_owned()),
    };
    if let Some(position) = partition.position(&input.stream, &input.shard) {
        return committed(position);
    }
    if input.start != Position::Latest {
        return input.start.clone();
    }
    if let Some(pin) = partition.position(&input.stream, STREAM_PIN) {
        return committed(pin);
    }
    let pinned = now_ms();
    partition.advance_position(&input.stream, STREAM_PIN, &format!("{TIME_POSITION}{pinned}"));
    Position::AtTimestamp(pinned)
}

/// The partition's effects, run as tasks the worker owns (a stop or hand-over
/// aborts them). The partition starts at most `Bounds::max_running`
/// invocations at once; they wait here while the tasks are paused.
struct Tasks {
    partition: u32,
    invoker: Arc<Invoker>,
    blobs: Arc<dyn BlobStore>,
    running: JoinSet<TaskDone>,
    /// Each with its request's bytes.
    waiting: VecDeque<(Effect, usize)>,
    /// Nothing more starts while set.
    paused: bool,
    /// Bytes of the requests waiting and running (see [`Tasks::held_bytes`]).
    request_bytes: usize,
}

/// What a request holds besides its encoded bytes: its decoded structure (addresses, state, messages).
const REQUEST_OVERHEAD: usize = 768;

impl Tasks {
    fn new(partition: u32, invoker: Arc<Invoker>, blobs: Arc<dyn BlobStore>) -> Self {
        let (running, waiting) = Default::default();
        Self { partition, invoker, blobs, running, waiting, request_bytes: 0, paused: false }
    }

    /// About what the requests of the invocations started and waiting hold (what each holds
    /// besides while it runs, the partition counts: see `Bounds::batch_overhead`).
    fn held_bytes(&self) -> usize {
        self.request_bytes
    }

    /// Starts what the partition asked for, unless paused.
    fn start(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            let bytes = match &effect {
                Effect::Invoke { request, .. } => request.encoded_len() + REQUEST_OVERHEAD,
                Effect::Unpark { .. } => 0,
            };
            self.request_bytes += bytes;
            self.waiting.push_back((effect, bytes));
        }
        while !self.paused
            && let Some((effect, bytes)) = self.waiting.pop_front()
        {
            self.spawn(effect, bytes);
        }
    }

    /// Accounts for a task that ended, and starts a waiting one in its place.
    fn finished(
        &mut self,
        joined: Result<TaskDone, tokio::task::JoinError>,
    ) -> Result<TaskDone, tokio::task::JoinError> {
        // Tasks end with their result (panics are caught in them); only a stop aborts them, all at once.
        if let Ok(TaskDone::Invocation { request_bytes, .. }) = &joined {
            self.request_bytes -= request_bytes;
        }
        self.start(Vec::new());
        joined
    }

    /// Runs one effect as a task. A panic in an invocation becomes its
    /// failure (retried, then dead-lettered), so its address never waits forever.
    fn spawn(&mut self, effect: Effect, request_bytes: usize) {
        match effect {
            Effect::Invoke { address, token, request } => {
                let invoker = self.invoker.clone();
                self.running.spawn(async move {
                    let outcome = match AssertUnwindSafe(invoker.invoke(&address, request)).catch_unwind().await {
                        Ok(outcome) => outcome,
                        Err(panic) => Err(format!("the invocation panicked: {}", panic_message(panic.as_ref()))),
                    };
                    TaskDone::Invocation { address, token, outcome, request_bytes }
                });
            }
            Effect::Unpark { address, segment } => {
                let (blobs, partition) = (self.blobs.clone(), self.partition);
                self.running.spawn(async move {
                    let messages = read_parked(blobs.as_ref(), partition, &segment).await;
                    TaskDone::Unparked { address, segment, messages }
                });
            }
        }
    }
}

/// Reads a parked segment back, retrying what may pass (a store's hiccup).
async fn read_parked(blobs: &dyn BlobStore, partition: u32, segment: &str) -> Result<Vec<Envelope>, String> {
    let key = parking::object_key(partition, segment);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(6));
    loop {
        match blobs.get(&key).await {
            Ok(Some(bytes)) => {
                return parking::decode_segment(bytes.as_slice()).map_err(|e| format!("object {key} is corrupt: {e}"));
            }
            Ok(None) => return Err(format!("object {key} is missing")),
            Err(e) if !e.is_retryable() => return Err(e.to_string()),
            Err(e) => {
                tracing::warn!(partition, "reading parked messages failed, retrying in {:?}: {e}", backoff.next());
                backoff.wait().await;
            }
        }
    }
}

/// What a panic said, when it said it as text.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

/// Turns input records into messages (ingress) or accepts exchange batches.
fn route_input(partition: &mut Partition, input: &Input, records: impl Iterator<Item = LogRecord>) {
    let now = now_ms();
    // Records of a batch are read from one shard in order: the last one's position stands for them all.
    let mut last_position: Option<(String, String)> = None;
    // A record's source, `stream/shard/sequence`, is its message's id: written here, not allocated per record.
    let mut source = String::new();
    for record in records {
        source.clear();
        let _ = write!(source, "{}/{}/{}", input.stream, record.shard, record.sequence);
        match &input.kind {
            InputKind::Exchange => match ExchangeBatch::decode(record.data.as_slice()) {
                Ok(batch) => partition.accept_exchange(batch, now),
                Err(e) => partition.dead_letter_input(
                    format!("exchange record is not a valid ExchangeBatch: {e}"),
                    source.clone(),
                    record.data,
                    now,
                ),
            },
            InputKind::Ingress { .. } if record.partition_key.is_empty() => partition.dead_letter_input(
                format!("ingress record has an empty partition key, so it has no target id (stream {})", input.stream),
                source.clone(),
                record.data,
                now,
            ),
            InputKind::Ingress { value_type, targets, hash_keys } => match kpl::deaggregate(&record.data) {
                Ok(None) => {
                    let origin = Origin {
                        stream: &input.stream,
                        shard: &record.shard,
                        sequence: &record.sequence,
                        user_record: 0,
                        target: 0,
                    };
                    let message = Incoming { id: &source, key: &record.partition_key, origin };
                    deliver_to_targets(partition, message, record.data, value_type, targets, now);
                }
                // Each user record on its own, under its own key: an epoch takes a record's user records whole,
                // with the position after them, so a restart never resumes inside one.
                Ok(Some(users)) => {
                    for (index, user) in users.into_iter().enumerate() {
                        let id = format!("{source}/{index}");
                        if let Some(hash_key) = user.explicit_hash_key.as_deref().and_then(|k| k.parse::<u128>().ok())
                            && !hash_keys.contains(&hash_key)
                        {
                            tracing::warn!(stream = %input.stream, shard = %record.shard, id, hash_key, "dropped a KPL user record whose explicit hash key is outside the shard it was read from, as the KCL does");
                            continue;
                        }
                        if user.partition_key.is_empty() {
                            let reason = format!(
                                "KPL user record {index} has an empty partition key, so it has no target id (stream {})",
                                input.stream
                            );
                            partition.dead_letter_input(reason, id, user.data, now);
                            continue;
                        }
                        let origin = Origin {
                            stream: &input.stream,
                            shard: &record.shard,
                            sequence: &record.sequence,
                            user_record: index as u32 + 1,
                            target: 0,
                        };
                        let message = Incoming { id: &id, key: &user.partition_key, origin };
                        deliver_to_targets(partition, message, user.data, value_type, targets, now);
                    }
                }
                Err(problem) => partition.dead_letter_input(
                    format!("KPL-aggregated record is malformed: {problem} (stream {})", input.stream),
                    source.clone(),
                    record.data,
                    now,
                ),
            },
        }
        if last_position.as_ref().is_some_and(|(shard, _)| *shard != record.shard)
            && let Some((shard, sequence)) = last_position.take()
        {
            partition.advance_position(&input.stream, &shard, &sequence);
        }
        last_position = Some((record.shard, record.sequence));
    }
    if let Some((shard, sequence)) = last_position {
        partition.advance_position(&input.stream, &shard, &sequence);
    }
}

/// What a reader task takes: its input, its index among the worker's inputs, where it reports.
struct Reader {
    input: Input,
    index: usize,
    metrics: InputMetrics,
    /// Ingress shards: the lag it last saw, for the worker's status reports.
    lag: Option<Arc<AtomicI64>>,
    /// The exchange shard, where messages are handed over: how it is read seldom.
    quiet: Option<QuietExchange>,
}

impl Reader {
    fn new(input: &Input, index: usize, observer: &Observer, lags: &mut Vec<Option<Arc<AtomicI64>>>) -> Self {
        let ingress = matches!(input.kind, InputKind::Ingress { .. });
        let metrics = observer.metrics.input(&input.stream, &input.shard, ingress);
        let lag = ingress.then(|| Arc::new(AtomicI64::new(0)));
        lags.push(lag.clone());
        Self { input: input.clone(), index, metrics, lag, quiet: None }
    }

    /// Counts a read, and notes how far behind the shard's newest record it
    /// left the reader: what the backend says (Kinesis' `MillisBehindLatest`),
    /// else 0 once a read comes back short (it reached the end as it was), else
    /// the age of its last record (unknown without an arrival time).
    fn read(&self, records: &[LogRecord], caught_up: bool, behind_latest: Option<i64>) {
        let newest = records.last().map_or(0, |r| r.appended_at_ms);
        let lag = match (behind_latest, caught_up) {
            (Some(behind), _) => Some(behind),
            (None, true) => Some(0),
            (None, false) => (newest > 0).then(|| (now_ms() - newest).max(0)),
        };
        self.metrics.read(records.len(), lag);
        if let (Some(shared), Some(lag)) = (&self.lag, lag) {
            shared.store(lag, Ordering::Relaxed);
        }
    }
}

/// How often a partition reports its progress to the status board.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How long a partition without room and holding a flood waits for it to drain before input flows again.
const STALLED_AFTER: Duration = Duration::from_secs(1);

/// Reports the partition's progress and its new dead letters.
fn report(
    observer: &Observer,
    partition: &Partition,
    inputs: &[Input],
    lags: &[Option<Arc<AtomicI64>>],
    sealed_unpublished: usize,
    reported: &mut DeadLetterCounts,
) {
    let counts = partition.dead_letter_counts();
    for cause in DeadLetterCause::ALL {
        observer.metrics.dead_lettered_by_engine(cause, counts.get(cause) - reported.get(cause));
    }
    *reported = counts.clone();
    let inputs = inputs
        .iter()
        .zip(lags)
        .map(|(input, lag)| InputStatus {
            stream: input.stream.clone(),
            shard: input.shard.clone(),
            position: partition.position(&input.stream, &input.shard).map(str::to_owned),
            lag_ms: lag.as_ref().map(|lag| lag.load(Ordering::Relaxed)),
        })
        .collect();
    let loads = match observer.is_watched() {
        true => partition.load_by_type(),
        false => Vec::new(),
    };
    let loads = loads
        .into_iter()
        .map(|(function_type, load)| TypeLoad {
            function_type: function_type.to_string(),
            backlog: load.backlog,
            blocked: load.blocked,
        })
        .collect();
    let progress = Progress {
        queued: partition.queued_messages(),
        unpublished: partition.outbox_len() + sealed_unpublished,
        addresses: partition.address_count(),
        timers: partition.pending_timers(),
        inputs,
        loads,
    };
    observer.board.progress(partition.id(), progress);
}

/// Delivers one ingress record's value to every target of its stream, under
/// `key` (the id), as message `id` (with the target's index when there are several).
/// A record (or user record) read from an ingress, before it becomes messages.
struct Incoming<'a> {
    id: &'a str,
    key: &'a str,
    origin: Origin<'a>,
}

/// Delivers a record's value to each of the ingress's targets.
fn deliver_to_targets(
    partition: &mut Partition,
    incoming: Incoming<'_>,
    mut data: Vec<u8>,
    value_type: &str,
    targets: &[FunctionType],
    now: i64,
) {
    for (index, target) in targets.iter().enumerate() {
        // The last target may take the record's bytes; the others borrow them.
        let value =
            if index + 1 == targets.len() { Cow::Owned(std::mem::take(&mut data)) } else { Cow::Borrowed(&data[..]) };
        let indexed;
        let id = if targets.len() == 1 {
            incoming.id
        } else {
            indexed = format!("{}/{index}", incoming.id);
            indexed.as_str()
        };
        let origin = Some(Origin { target: index as u32, ..incoming.origin });
        let message = IngressMessage {
            namespace: &target.namespace,
            name: &target.name,
            key: incoming.key,
            typename: value_type,
            value,
            id,
            origin,
        };
        partition.deliver_ingress(message, now);
    }
}

async fn read_loop(
    log: Arc<dyn LogStore>,
    reader: Reader,
    mut position: Position,
    tx: mpsc::Sender<InputBatch>,
    behind: Arc<AtomicUsize>,
    read_ahead: Arc<ReadAhead>,
    settings: WorkerSettings,
) {
    // Counted in `behind` while the last read was full; uncounted when the reader ends.
    struct Behind(Arc<AtomicUsize>, bool);
    impl Behind {
        fn set(&mut self, full: bool) {
            if full != self.1 {
                self.1 = full;
                if full {
                    self.0.fetch_add(1, Ordering::Relaxed)
                } else {
                    self.0.fetch_sub(1, Ordering::Relaxed)
                };
            }
        }
    }
    impl Drop for Behind {
        fn drop(&mut self) {
            self.set(false);
        }
    }
    let mut behind = Behind(behind, false);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(6));
    let (input, index) = (&reader.input, reader.index);
    let mut appended = log.appends(&input.stream);
    // The mean size of the records read last, which sizes the next read.
    let mut record_bytes = None;
    loop {
        let limit = read_ahead.room(record_bytes, settings.read_batch).await;
        // Marked before the read: an append after it, even before the wait starts, ends the wait.
        if let Some(signal) = appended.as_mut() {
            signal.mark_unchanged();
        }
        match log.read(&input.stream, &input.shard, &position, limit).await {
            Ok((records, next)) => {
                backoff.reset();
                let bytes = read_ahead::bytes_of(&records);
                if !records.is_empty() {
                    record_bytes = Some(bytes / records.len());
                }
                // Counted until the worker takes it (a failed send means the worker, and this count, are gone).
                read_ahead.read(bytes);
                let was_behind = behind.1;
                let full = records.len() >= limit;
                behind.set(full);
                reader.read(&records, !full, log.millis_behind_latest(&input.stream, &input.shard));
                let end = next == Position::End;
                position = next;
                if end {
                    let _ = tx.send(InputBatch { input: index, records, bytes, end }).await;
                    return;
                }
                if records.is_empty() {
                    // Caught up after a full read: an empty batch wakes a worker that waits for its
                    // inputs to be caught up before it commits what output waits.
                    if was_behind && tx.send(InputBatch { input: index, records, bytes, end }).await.is_err() {
                        return;
                    }
                    // Quiet: only copies of what was handed over are there to read (see `handoff`).
                    let waited = match &reader.quiet {
                        Some(quiet) => quiet.wait().await,
                        None => false,
                    };
                    // Woken by an append of this process (to any shard of the stream), else polled.
                    if !waited {
                        match appended.as_mut() {
                            Some(signal) => {
                                if let Ok(Err(_)) = tokio::time::timeout(settings.poll_interval, signal.changed()).await
                                {
                                    appended = None;
                                }
                            }
                            None => tokio::time::sleep(settings.poll_interval).await,
                        }
                    }
                } else if tx.send(InputBatch { input: index, records, bytes, end }).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                let delay = backoff.next();
                tracing::warn!(stream = %input.stream, shard = %input.shard, "reading input failed, retrying in {delay:?}: {e}");
                backoff.wait().await;
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
    fn a_batch_is_taken_in_steps_each_advancing_the_position_to_its_last_record() {
        let mut partition = Partition::new(0, 1, Arc::new(NoEndpoints), 1);
        let inputs = vec![input(Position::Latest)];
        // Not exchange batches: each becomes a dead letter, which is enough to see it taken.
        let record = |n: u32| LogRecord {
            shard: "s".into(),
            sequence: n.to_string(),
            partition_key: String::new(),
            data: vec![0xff; 100 << 10],
            id: None,
            appended_at_ms: 0,
        };
        let mut sealing = Sealing::new(1, 0, 1);
        let records: Vec<LogRecord> = (0..6).map(record).collect();
        let bytes = read_ahead::bytes_of(&records);
        let intake = Intake::new(InputBatch { input: 0, records, bytes, end: true });
        assert_eq!(intake.bytes, 600 << 10, "what is not taken yet counts as held");
        let intake = Intake::take_step(intake, &mut partition, &inputs, &mut sealing).expect("a second step");
        assert_eq!(partition.position("in", "s"), Some("2"), "records up to the step's size, and the one crossing it");
        assert_eq!(intake.bytes, 300 << 10);
        assert!(sealing.ended_unsealed.is_empty(), "the shard's end is not reached before its last record");
        assert!(Intake::take_step(intake, &mut partition, &inputs, &mut sealing).is_none());
        assert_eq!(partition.position("in", "s"), Some(END_POSITION));
        assert_eq!(sealing.ended_unsealed.len(), 1);
    }

    /// A reader's settings: reads of 3 records, polls every 10 ms.
    fn reader_settings() -> WorkerSettings {
        WorkerSettings {
            commit_interval: Duration::from_secs(1),
            group_commit: true,
            hand_over: true,
            snapshot_every: 1,
            max_queued: 10,
            max_epoch_entries: 10,
            poll_interval: Duration::from_millis(10),
            read_batch: 3,
            expiry_sweep: Duration::from_secs(1),
            shard_discovery: Duration::from_secs(1),
            bounds: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_reader_counts_as_behind_after_a_full_read_and_says_when_it_caught_up() {
        use crate::log::{AppendRecord, LogStore, ShardChoice, local::LocalLogStore};
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Arc::new(LocalLogStore::new(dir.path()));
        let shards = log.ensure_stream("in", 1).await.expect("stream");
        let record = AppendRecord { partition_key: "k".into(), shard: ShardChoice::Index(0), data: vec![1], id: None };
        log.append("in", &[record.clone(), record.clone(), record]).await.expect("append");
        let settings = reader_settings();
        let input = Input { shard: shards[0].id.clone(), ..input(Position::Start) };
        let (tx, mut rx) = mpsc::channel(4);
        let behind = Arc::new(AtomicUsize::new(0));
        let observer = Observer::new("test", Duration::from_secs(60));
        let input = Reader::new(&input, 0, &observer, &mut Vec::new());
        let reader =
            tokio::spawn(read_loop(log, input, Position::Start, tx, behind.clone(), Default::default(), settings));
        let full = rx.recv().await.expect("the three records");
        assert_eq!(full.records.len(), 3);
        let caught_up = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .ok()
            .flatten()
            .expect("a batch saying the reader caught up");
        assert!(caught_up.records.is_empty());
        assert_eq!(behind.load(Ordering::Relaxed), 0, "not behind once a read came back short");
        reader.abort();
    }

    #[tokio::test]
    async fn an_exchange_reader_with_every_partition_here_reads_again_only_when_told() {
        use crate::log::{AppendRecord, LogStore, ShardChoice, local::LocalLogStore};
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Arc::new(LocalLogStore::new(dir.path()));
        let shards = log.ensure_stream("in", 1).await.expect("stream");
        let record =
            |n: u8| AppendRecord { partition_key: "k".into(), shard: ShardChoice::Index(0), data: vec![n], id: None };
        log.append("in", &[record(1), record(2), record(3)]).await.expect("append");
        let settings = reader_settings();
        let hand_overs = Arc::new(HandOvers::new(1));
        let _receiver = hand_overs.register(0);
        let input = Input { shard: shards[0].id.clone(), ..input(Position::Start) };
        let (tx, mut rx) = mpsc::channel(4);
        let observer = Observer::new("test", Duration::from_secs(60));
        let mut reader = Reader::new(&input, 0, &observer, &mut Vec::new());
        // The pace is never up: the reader reads again only when told.
        reader.quiet = Some(QuietExchange::new(hand_overs.clone(), 0, Duration::from_secs(3600)));
        let behind = Arc::new(AtomicUsize::new(0));
        let reader =
            tokio::spawn(read_loop(log.clone(), reader, Position::Start, tx, behind, Default::default(), settings));
        // The next batch within `wait`, if any.
        async fn next(rx: &mut mpsc::Receiver<InputBatch>, wait: Duration) -> Option<InputBatch> {
            tokio::time::timeout(wait, rx.recv()).await.ok().flatten()
        }
        let soon = Duration::from_secs(30);
        assert_eq!(next(&mut rx, soon).await.expect("the three records").records.len(), 3);
        assert!(next(&mut rx, soon).await.expect("caught up").records.is_empty());
        // A copy of what was handed over: left in the exchange, though this process appended it.
        log.append("in", &[record(4)]).await.expect("append");
        assert!(next(&mut rx, Duration::from_millis(300)).await.is_none(), "read again untold");
        hand_overs.appended_not_handed(&[0]);
        assert_eq!(next(&mut rx, soon).await.expect("told").records[0].data, [4]);
        // Out of turn, the reader reads as usual until the receiver takes a hand-over in turn.
        hand_overs.watch(0).took_in_turn(false);
        log.append("in", &[record(5)]).await.expect("append");
        assert_eq!(next(&mut rx, soon).await.expect("read as usual").records[0].data, [5]);
        reader.abort();
    }

    #[test]
    fn output_is_committed_at_once_unless_the_partition_is_behind_on_its_queue() {
        /// Serves `test/*` one message at a time.
        struct OneAtATime;
        impl crate::partition::Catalog for OneAtATime {
            fn batch_limits(&self, function_type: &FunctionType) -> Option<crate::partition::BatchLimits> {
                let limits = crate::partition::BatchLimits { max_messages: 1, max_bytes: 1 << 20 };
                (function_type.namespace == "test").then_some(limits)
            }
            fn has_egress(&self, _: &str, _: &str) -> bool {
                false
            }
            fn is_internal_stream(&self, _: &str) -> bool {
                false
            }
        }
        let mut partition = Partition::new(0, 1, Arc::new(OneAtATime), 1);
        let deliver = |partition: &mut Partition, namespace: &str, n: usize| {
            let id = format!("m{n}");
            let message = IngressMessage {
                namespace,
                name: "fn",
                key: "k",
                typename: "test/n",
                value: Cow::Borrowed(&[1]),
                id: &id,
                origin: None,
            };
            partition.deliver_ingress(message, 0);
        };
        // No endpoint serves it: a dead letter, output that waits in the outbox.
        deliver(&mut partition, "nobody", 0);
        assert!(partition.outbox_len() > 0);
        let sealing = Sealing::new(1, 0, 1);
        assert!(output_waits(&partition, &sealing, true), "sealed at once");
        assert!(!output_waits(&partition, &sealing, false), "not while the inputs are behind");
        for n in 1..QUEUED_BEHIND {
            deliver(&mut partition, "test", n);
        }
        assert_eq!(partition.queued_messages(), QUEUED_BEHIND - 1, "one in flight, the rest queued");
        assert!(output_waits(&partition, &sealing, true), "a queue short of the mark");
        deliver(&mut partition, "test", QUEUED_BEHIND);
        assert!(!output_waits(&partition, &sealing, true), "the epoch fills while the queue is behind");
    }

    #[test]
    fn kpl_user_records_are_routed_on_their_own_and_one_hashed_outside_the_shard_is_dropped() {
        use statefun_proto::kpl::{AggregatedRecord, Record};
        let user = |key: u64, hash_key: Option<u64>| Record {
            partition_key_index: key,
            explicit_hash_key_index: hash_key,
            data: vec![1],
            tags: Vec::new(),
        };
        let body = AggregatedRecord {
            partition_key_table: vec!["a".into(), "b".into()],
            // The shard takes hash keys 0 to 999: 5 is inside, 5000 outside.
            explicit_hash_key_table: vec!["5".into(), "5000".into()],
            records: vec![user(0, None), user(1, Some(0)), user(0, Some(1)), user(1, None)],
        }
        .encode_to_vec();
        let data = kpl::frame(&body);
        let record = LogRecord {
            shard: "s".into(),
            sequence: "7".into(),
            partition_key: "a".into(),
            data,
            id: None,
            appended_at_ms: 0,
        };
        let kind = InputKind::Ingress {
            value_type: "t/v".into(),
            targets: vec![FunctionType::new("ns", "f")],
            hash_keys: 0..=999,
        };
        let input = Input { kind, ..input(Position::Start) };
        // No endpoint serves ns/f here: each message routed to it becomes a dead letter that says so.
        let mut partition = Partition::new(0, 1, Arc::new(NoEndpoints), 1);
        route_input(&mut partition, &input, std::iter::once(record));
        assert_eq!(
            partition.dead_letter_counts().get(DeadLetterCause::NoEndpoint),
            3,
            "four user records, one dropped"
        );
        assert_eq!(partition.position("in", "s"), Some("7"), "the position is after the whole record");
    }

    #[test]
    fn the_first_epoch_is_a_snapshot_and_partitions_take_the_next_ones_in_turn() {
        let snapshots = |id: u32| -> Vec<usize> {
            let mut partition = Partition::new(id, 2, Arc::new(NoEndpoints), 1);
            let mut sealing = Sealing::new(4, id, 2);
            (0..10).filter(|_| sealing.seal(&mut partition, true).record.record.snapshot).collect()
        };
        assert_eq!(snapshots(0), [0, 4, 8]);
        assert_eq!(snapshots(1), [0, 2, 6], "half a cycle later");
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
        let (sealed, _) = partition.seal(true);
        let record = statefun_proto::internal::EpochRecord::decode(sealed.encode().as_slice()).expect("decodes");
        let mut restored = Partition::restore(0, 1, Arc::new(NoEndpoints), vec![record]).expect("the history replays");
        assert_eq!(start_position(&mut restored, &input(Position::Latest)), Position::AtTimestamp(at));
    }

    #[test]
    fn a_shard_opened_later_starts_from_its_streams_pin_and_an_ended_shard_stays_ended() {
        let mut partition = Partition::new(0, 1, Arc::new(NoEndpoints), 1);
        let first = start_position(&mut partition, &input(Position::Latest));
        std::thread::sleep(Duration::from_millis(5));
        let child = Input { shard: "child".into(), ..input(Position::Latest) };
        assert_eq!(start_position(&mut partition, &child), first, "one pin per stream");
        partition.advance_position("in", "s", END_POSITION);
        assert_eq!(start_position(&mut partition, &input(Position::Latest)), Position::End);
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
