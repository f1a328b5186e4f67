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
//! This module keeps the registry of receivers and the sender's side of the
//! chain; it does no I/O and never blocks a committer or a reader (a full
//! receiver is skipped).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use tokio::sync::mpsc;

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

/// Hand-overs a receiving worker has not taken yet; more are skipped.
pub const RECEIVER_CAPACITY: usize = 8;

/// The workers of this process that take hand-overs, by partition.
#[derive(Debug, Default)]
pub struct HandOvers {
    receivers: Mutex<HashMap<u32, mpsc::Sender<Handed>>>,
}

impl HandOvers {
    /// Registers the worker of `partition`; what it is handed arrives on the receiver.
    /// A worker that stops drops its receiver, and the next offer forgets it.
    pub fn register(&self, partition: u32) -> mpsc::Receiver<Handed> {
        let (sender, receiver) = mpsc::channel(RECEIVER_CAPACITY);
        if let Ok(mut receivers) = self.receivers.lock() {
            receivers.insert(partition, sender);
        }
        receiver
    }

    /// Hands what `hand_over` builds to the worker of `partition`, if one runs here and has room.
    fn offer(&self, partition: u32, hand_over: impl FnOnce() -> Handed) {
        let Ok(mut receivers) = self.receivers.lock() else { return };
        let Some(sender) = receivers.get(&partition) else { return };
        let Ok(permit) = sender.try_reserve() else {
            if sender.is_closed() {
                receivers.remove(&partition);
            }
            return;
        };
        permit.send(hand_over());
    }

    /// Forwards ingress messages to the worker of `partition`, if one runs here and has room.
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
    /// here. Right after a start the message before is not known: nothing is
    /// handed over then (the receiver could not tell whether it continues its mark).
    pub fn committed(
        &mut self,
        hand_overs: &HandOvers,
        target: u32,
        last: (u64, u64),
        records: impl FnOnce() -> Vec<Vec<u8>>,
    ) {
        let Some(previous) = self.last_sent.insert(target, last) else { return };
        hand_overs.offer(target, || Handed::Committed(HandOver { previous, records: records() }));
    }

    /// Notes the batches of a committed epoch for `target` that are not handed
    /// over: the next hand-over names them as what came before.
    pub fn passed(&mut self, target: u32, last: (u64, u64)) {
        self.last_sent.insert(target, last);
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
}
