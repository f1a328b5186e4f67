//! Messages between partitions of one process, handed over in memory.
//!
//! A message for another partition travels through the exchange: the sending
//! epoch is committed, its batches appended to the exchange, and the receiving
//! partition's reader reads them back. When both partitions run in this
//! process, the committer also hands the batches of a committed epoch straight
//! to the receiving worker, which skips the append and the read (on Kinesis,
//! a poll of the shard). The exchange stays the record: the copy that arrives
//! through it later is dropped by the receiver's duplicate marks.
//!
//! A receiver takes a hand-over only if it continues exactly where the
//! receiver's mark for the sender stands: `previous` names the last message
//! the sender sent it before (in an earlier committed epoch), and the
//! receiver's mark must be that message. Otherwise (a hand-over dropped
//! because the receiver was busy, a sender or receiver that restarted or
//! moved, a receiver still reading older batches from the exchange) it is
//! ignored, and the exchange brings the batches in order. Taking one out of
//! turn would move the mark past messages the exchange has yet to bring, which
//! would then be dropped as duplicates.
//!
//! The same way carries ingress messages read by one partition for another
//! before the reading epoch commits ([`Handed::Forwarded`]); the engine's
//! `forward` module says when a receiver takes them.
//!
//! When every partition runs in this process, the exchange brings a receiver
//! only copies of what it was handed (or a former holder's late publication),
//! so its reader reads it seldom ([`QuietExchange`]): at once only when this
//! process appended something the receiver was not handed, while the
//! receiver ignores hand-overs out of turn, or when a partition stops here.
//! On Kinesis that is one `GetRecords` call fewer per exchange shard and 200 ms.
//!
//! This module keeps the registry of receivers and the sender's side of the
//! chain; it does no I/O and never blocks a committer or a reader (a full
//! receiver is skipped). What a receiver has not taken yet is bounded in
//! bytes as well as in hand-overs: it is outside every partition's share of
//! the memory budget, and a skipped hand-over costs only the exchange's way.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use tokio::sync::{Notify, mpsc};

use crate::partition::forward::Forward;

/// The batches of one committed epoch for one partition, as the exchange carries them.
#[derive(Debug)]
pub struct HandOver {
    /// The last message (epoch, seq) the sender sent this partition before these.
    pub previous: (u64, u64),
    /// Encoded `ExchangeBatch` records, in order.
    pub records: Vec<Vec<u8>>,
}

/// What one partition of this process hands another.
#[derive(Debug)]
pub enum Handed {
    /// The batches of a committed epoch.
    Committed(HandOver),
    /// Ingress messages read for it, before the epoch that read them commits.
    Forwarded(Vec<Forward>),
}

impl Handed {
    /// About the bytes it holds.
    fn bytes(&self) -> usize {
        match self {
            Handed::Committed(hand_over) => hand_over.records.iter().map(Vec::len).sum(),
            Handed::Forwarded(forwards) => forwards.iter().map(|f| f.envelope.encoded_len()).sum(),
        }
    }
}

/// Hand-overs a receiving worker has not taken yet; more are skipped.
pub const RECEIVER_CAPACITY: usize = 8;
/// Bytes a receiving worker has not taken yet; a hand-over that would pass them is skipped.
pub const RECEIVER_MAX_BYTES: usize = 4 << 20;

/// The sending side of one receiver.
#[derive(Debug)]
struct Registered {
    /// Each hand-over goes with its bytes, so that they are counted once.
    sender: mpsc::Sender<(Handed, usize)>,
    queued: Arc<AtomicUsize>,
}

/// The watches of the exchange shards of this process's partitions.
type Watches = Arc<Mutex<HashMap<u32, Arc<ExchangeWatch>>>>;

/// What a registered worker is handed, in order.
#[derive(Debug)]
pub struct Receiver {
    receiver: mpsc::Receiver<(Handed, usize)>,
    queued: Arc<AtomicUsize>,
    /// Woken when the worker stops: the others' exchange readers stop being quiet.
    watches: Watches,
}

impl Drop for Receiver {
    /// A partition that stops here may go on elsewhere, and what it sends then comes only through the
    /// exchange: the quiet readers of the others read at once and find out that not every partition
    /// is here any more, rather than at their next paced read.
    fn drop(&mut self) {
        // Closed first, so that a reader woken below already sees it gone.
        self.receiver.close();
        let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        for watch in watches.values() {
            watch.wanted.notify_one();
        }
    }
}

impl Receiver {
    pub async fn recv(&mut self) -> Option<Handed> {
        let handed = self.receiver.recv().await?;
        Some(self.taken(handed))
    }

    /// What was handed over and not taken yet, without waiting.
    pub fn try_recv(&mut self) -> Result<Handed, mpsc::error::TryRecvError> {
        self.receiver.try_recv().map(|handed| self.taken(handed))
    }

    fn taken(&self, (handed, bytes): (Handed, usize)) -> Handed {
        self.queued.fetch_sub(bytes, Ordering::Relaxed);
        handed
    }
}

/// How long a quiet exchange reader waits between reads (see [`QuietExchange`]).
pub const QUIET_EXCHANGE_PACE: Duration = Duration::from_secs(1);

/// What the reader of a partition's exchange shard learns from the senders and
/// the receiver of this process.
#[derive(Debug, Default)]
pub struct ExchangeWatch {
    /// The receiver ignored a hand-over that does not continue its mark: the
    /// exchange must bring what came before it.
    out_of_turn: AtomicBool,
    /// This process appended to the shard what the receiver was not handed,
    /// or the receiver fell out of turn.
    wanted: Notify,
}

impl ExchangeWatch {
    /// The receiver says whether it took the last hand-over of committed batches.
    pub fn took_in_turn(&self, taken: bool) {
        if !self.out_of_turn.swap(!taken, Ordering::Relaxed) && !taken {
            self.wanted.notify_one();
        }
    }
}

/// The workers of this process that take hand-overs, by partition.
#[derive(Debug, Default)]
pub struct HandOvers {
    /// Partitions of the deployment; 0: unknown (the exchange is never quiet).
    partitions: u32,
    receivers: Mutex<HashMap<u32, Registered>>,
    watches: Watches,
}

impl HandOvers {
    pub fn new(partitions: u32) -> Self {
        Self { partitions, ..Default::default() }
    }

    /// Whether a worker of every partition runs here: then nothing but this
    /// process writes to the exchange (a former holder's late publication aside).
    pub fn all_here(&self) -> bool {
        let Ok(receivers) = self.receivers.lock() else { return false };
        let here = receivers.iter().filter(|(p, r)| **p < self.partitions && !r.sender.is_closed()).count();
        self.partitions > 0 && here == self.partitions as usize
    }

    /// The watch of `partition`'s exchange shard.
    pub fn watch(&self, partition: u32) -> Arc<ExchangeWatch> {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        watches.entry(partition).or_default().clone()
    }

    /// This process appended batches to the exchange shards of `partitions`
    /// that their receivers were not handed: the readers of those here read at
    /// once (a partition elsewhere has no watch here, and gets none).
    pub fn appended_not_handed(&self, partitions: &[u32]) {
        let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        for watch in partitions.iter().filter_map(|p| watches.get(p)) {
            watch.wanted.notify_one();
        }
    }

    /// Registers the worker of `partition`; what it is handed arrives on the receiver.
    /// A worker that stops drops its receiver, and the next offer forgets it.
    pub fn register(&self, partition: u32) -> Receiver {
        let (sender, receiver) = mpsc::channel(RECEIVER_CAPACITY);
        let queued = Arc::new(AtomicUsize::new(0));
        if let Ok(mut receivers) = self.receivers.lock() {
            receivers.insert(partition, Registered { sender, queued: queued.clone() });
        }
        Receiver { receiver, queued, watches: self.watches.clone() }
    }

    /// Hands what `hand_over` builds to the worker of `partition`, if one runs
    /// here and has room for it, in hand-overs and in bytes; whether it did.
    fn offer(&self, partition: u32, hand_over: impl FnOnce() -> Handed) -> bool {
        let Ok(mut receivers) = self.receivers.lock() else { return false };
        let Some(registered) = receivers.get(&partition) else { return false };
        let Ok(permit) = registered.sender.try_reserve() else {
            if registered.sender.is_closed() {
                receivers.remove(&partition);
            }
            return false;
        };
        let queued = registered.queued.load(Ordering::Relaxed);
        if queued >= RECEIVER_MAX_BYTES {
            return false;
        }
        let handed = hand_over();
        let bytes = handed.bytes();
        if queued + bytes > RECEIVER_MAX_BYTES {
            return false;
        }
        registered.queued.fetch_add(bytes, Ordering::Relaxed);
        permit.send((handed, bytes));
        true
    }

    /// Forwards ingress messages to the worker of `partition`, if one runs here
    /// and has room. Not taken, they reach it with the reader's committed batches.
    pub fn forward(&self, partition: u32, forwards: Vec<Forward>) {
        self.offer(partition, || Handed::Forwarded(forwards));
    }
}

/// A committer's side: the last message it sent each partition, which chains its hand-overs.
#[derive(Debug, Default)]
pub struct Chain {
    last_sent: BTreeMap<u32, (u64, u64)>,
}

impl Chain {
    /// Notes the batches of a committed epoch for partition `target` whose last
    /// message is `last` (epoch, seq), and hands them over if a worker of it runs
    /// here; whether it did. Right after a start the message before is not known:
    /// nothing is handed over then (the receiver could not tell whether it
    /// continues its mark).
    pub fn committed(
        &mut self,
        hand_overs: &HandOvers,
        target: u32,
        last: (u64, u64),
        records: impl FnOnce() -> Vec<Vec<u8>>,
    ) -> bool {
        let Some(previous) = self.last_sent.insert(target, last) else { return false };
        hand_overs.offer(target, || Handed::Committed(HandOver { previous, records: records() }))
    }

    /// Notes the batches of a committed epoch for `target` that are not handed
    /// over: the next hand-over names them as what came before.
    pub fn passed(&mut self, target: u32, last: (u64, u64)) {
        self.last_sent.insert(target, last);
    }
}

/// The reader of a partition's exchange shard, in a process that hands messages over.
#[derive(Debug)]
pub struct QuietExchange {
    hand_overs: Arc<HandOvers>,
    watch: Arc<ExchangeWatch>,
    pace: Duration,
}

impl QuietExchange {
    pub fn new(hand_overs: Arc<HandOvers>, partition: u32, pace: Duration) -> Self {
        let watch = hand_overs.watch(partition);
        Self { hand_overs, watch, pace }
    }

    /// After a read that found nothing: while every partition runs here and the
    /// receiver takes its hand-overs in turn, waits until this process appends
    /// what the receiver was not handed (or the receiver falls out of turn), at
    /// most `pace`, and says it waited; otherwise says so at once, and the
    /// reader polls as usual.
    pub async fn wait(&self) -> bool {
        if self.watch.out_of_turn.load(Ordering::Relaxed) || !self.hand_overs.all_here() {
            return false;
        }
        let _ = tokio::time::timeout(self.pace, self.watch.wanted.notified()).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_over_after_batches_not_handed_over_names_them_as_what_came_before() {
        let hand_overs = HandOvers::default();
        let mut receiver = hand_overs.register(1);
        let mut chain = Chain::default();
        chain.committed(&hand_overs, 1, (1, 4), Vec::new);
        assert!(receiver.try_recv().is_err(), "nothing was known to be sent before");
        chain.passed(1, (2, 3));
        assert!(receiver.try_recv().is_err(), "passed, not handed over");
        chain.committed(&hand_overs, 1, (3, 0), Vec::new);
        match receiver.try_recv() {
            Ok(Handed::Committed(hand_over)) => assert_eq!(hand_over.previous, (2, 3)),
            other => panic!("a hand-over chained to the passed batches, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_receiver_is_handed_no_more_bytes_than_its_bound() {
        let hand_overs = HandOvers::default();
        let mut receiver = hand_overs.register(1);
        let mut chain = Chain::default();
        let third = RECEIVER_MAX_BYTES / 3 + 1;
        chain.passed(1, (1, 0));
        for epoch in 2..5 {
            chain.committed(&hand_overs, 1, (epoch, 0), || vec![vec![0; third]]);
        }
        assert_eq!(receiver.queued.load(Ordering::Relaxed), 2 * third, "the third would pass the bound");
        assert!(receiver.recv().await.is_some());
        assert_eq!(receiver.queued.load(Ordering::Relaxed), third, "taken, no longer counted");
        chain.committed(&hand_overs, 1, (5, 0), || vec![vec![0; third]]);
        assert!(receiver.recv().await.is_some());
        match receiver.recv().await {
            Some(Handed::Committed(hand_over)) => {
                assert_eq!(hand_over.previous, (4, 0), "chained past the skipped one")
            }
            other => panic!("the hand-over offered once there was room, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_exchange_is_quiet_only_while_every_partition_is_here_and_takes_its_hand_overs_in_turn() {
        let hand_overs = Arc::new(HandOvers::new(2));
        let reader = QuietExchange::new(hand_overs.clone(), 0, Duration::from_millis(1));
        let _own = hand_overs.register(0);
        assert!(!reader.wait().await, "partition 1 runs elsewhere: its messages come through the exchange");
        let other = hand_overs.register(1);
        assert!(reader.wait().await, "every partition here");
        let watch = hand_overs.watch(0);
        watch.took_in_turn(false);
        assert!(!reader.wait().await, "out of turn: the exchange brings what came before");
        watch.took_in_turn(true);
        assert!(reader.wait().await, "in turn again");
        drop(other);
        assert!(!reader.wait().await, "partition 1 stopped here");
    }

    #[tokio::test]
    async fn a_partition_that_stops_here_wakes_the_quiet_readers_of_the_others() {
        let hand_overs = Arc::new(HandOvers::new(2));
        let _own = hand_overs.register(0);
        let other = hand_overs.register(1);
        // The pace is never up: only a wake ends the wait.
        let reader = QuietExchange::new(hand_overs.clone(), 0, Duration::from_secs(3600));
        let waiting = tokio::spawn(async move { reader.wait().await });
        tokio::task::yield_now().await;
        drop(other);
        let woken = tokio::time::timeout(Duration::from_secs(30), waiting).await;
        assert!(matches!(woken, Ok(Ok(true))), "the quiet reader was woken by the stop: {woken:?}");
        assert!(!hand_overs.all_here(), "and finds partition 1 gone");
    }
}
