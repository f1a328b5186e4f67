//! The delayed messages of a partition, ordered by due time, and what changed
//! in them since the last sealed epoch.
//!
//! Each timer is kept encoded (a `DelayedMessage` is mostly its envelope, and
//! a million of them should cost their bytes, not a tree of strings each), in
//! a map ordered by due time: the next due one is found and removed in
//! O(log n). A delta records the timers scheduled in its epoch and the ids of
//! those that fired or were cancelled, never a sender's whole list again.
//! No routing and no I/O: the partition decides what a fired timer delivers.

use std::collections::{BTreeMap, HashMap, HashSet};

use prost::Message as _;
use statefun_proto::internal::DelayedMessage;
use statefun_proto::reqreply::Address;

/// `EpochRecord.timers`: written here, from the encoded timers, without decoding them.
const RECORD_TIMERS_KEY: u8 = (14 << 3) | 2;

/// A timer's entries in the due-time tree and the id map, and its box's header.
const ENTRY_OVERHEAD: usize = 96;

/// Due time, then timer id: the order timers fire in.
type DueKey = (i64, u64);

#[derive(Debug, Default)]
pub struct Timers {
    /// Every pending timer, as its encoded `DelayedMessage`.
    due: BTreeMap<DueKey, Box<[u8]>>,
    /// Due time of each pending timer id (what a recorded removal names).
    by_id: HashMap<u64, i64>,
    /// The timer a sender's cancellation token names (a token names at most one).
    by_token: HashMap<(Address, String), u64>,
    /// Scheduled since the last seal and still pending: the next delta writes them.
    added: HashSet<u64>,
    /// Fired or cancelled since the last seal, scheduled before it: the next delta names them.
    removed: Vec<u64>,
    /// Encoded bytes of the pending timers.
    bytes: usize,
}

impl Timers {
    pub fn len(&self) -> usize {
        self.due.len()
    }

    /// About what the pending timers hold: their encoded bytes and their entries in the maps.
    pub fn bytes(&self) -> usize {
        self.bytes + self.due.len() * ENTRY_OVERHEAD
    }

    /// The earliest due time.
    pub fn next_due(&self) -> Option<i64> {
        self.due.keys().next().map(|(at, _)| *at)
    }

    /// Adds a timer. Its sender is its envelope's caller, in whose name a
    /// cancellation token is kept; a live timer under the same token is replaced.
    pub fn schedule(&mut self, timer: DelayedMessage) {
        if let Some(sender) = timer.envelope.as_ref().and_then(|e| e.caller.as_ref()) {
            self.cancel(sender, &timer.cancellation_token);
        }
        let id = timer.timer_id;
        self.insert(timer);
        self.added.insert(id);
    }

    /// Removes the timer `sender` scheduled under `token`, if one is pending.
    pub fn cancel(&mut self, sender: &Address, token: &str) {
        if token.is_empty() {
            return;
        }
        if let Some(id) = self.by_token.remove(&(sender.clone(), token.to_owned())) {
            self.remove(id);
        }
    }

    /// Removes and returns the earliest timer due at or before `now_ms`.
    pub fn pop_due(&mut self, now_ms: i64) -> Option<Result<DelayedMessage, String>> {
        let (&(at, id), _) = self.due.first_key_value().filter(|((at, _), _)| *at <= now_ms)?;
        let bytes = self.remove(id)?;
        let timer = DelayedMessage::decode(&*bytes)
            .map_err(|e| format!("timer {id} due at {at} ms cannot be read: {e}"))
            .inspect(|timer| self.forget_token(timer));
        Some(timer)
    }

    /// Writes the record's timer fields: every pending timer for a snapshot,
    /// else those scheduled since the last seal; returns the ids removed since
    /// then (empty for a snapshot, which lists what is pending).
    pub fn seal_into(&mut self, snapshot: bool, out: &mut Vec<u8>) -> Vec<u64> {
        if snapshot {
            for bytes in self.due.values() {
                push_encoded(out, bytes);
            }
            self.removed.clear();
        } else {
            let mut added: Vec<u64> = self.added.iter().copied().collect();
            added.sort_unstable();
            for id in added {
                if let Some(bytes) = self.by_id.get(&id).and_then(|at| self.due.get(&(*at, id))) {
                    push_encoded(out, bytes);
                }
            }
        }
        self.added.clear();
        std::mem::take(&mut self.removed)
    }

    /// Restoring: a timer a record lists as pending (replacing one of the same id).
    pub fn restore(&mut self, timer: DelayedMessage) {
        self.restore_removed(timer.timer_id);
        self.insert(timer);
    }

    /// Restoring: a timer a delta names as fired or cancelled.
    pub fn restore_removed(&mut self, id: u64) -> bool {
        let Some(bytes) = self.remove(id) else { return false };
        if let Ok(timer) = DelayedMessage::decode(&*bytes) {
            self.forget_token(&timer);
        }
        true
    }

    /// Restoring: the snapshot that follows replaces everything.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Restoring is done: nothing restored is a change of the next epoch.
    pub fn restored(&mut self) {
        self.added.clear();
        self.removed.clear();
    }

    fn insert(&mut self, timer: DelayedMessage) {
        let (id, at) = (timer.timer_id, timer.fire_at_ms);
        if let Some(sender) = timer.envelope.as_ref().and_then(|e| e.caller.clone())
            && !timer.cancellation_token.is_empty()
        {
            self.by_token.insert((sender, timer.cancellation_token.clone()), id);
        }
        let bytes = timer.encode_to_vec().into_boxed_slice();
        self.bytes += bytes.len();
        self.due.insert((at, id), bytes);
        self.by_id.insert(id, at);
    }

    /// Removes a timer from the maps (its token, if any, is the caller's to forget).
    fn remove(&mut self, id: u64) -> Option<Box<[u8]>> {
        let at = self.by_id.remove(&id)?;
        let bytes = self.due.remove(&(at, id))?;
        self.bytes -= bytes.len();
        if !self.added.remove(&id) {
            self.removed.push(id);
        }
        Some(bytes)
    }

    fn forget_token(&mut self, timer: &DelayedMessage) {
        if timer.cancellation_token.is_empty() {
            return;
        }
        let Some(sender) = timer.envelope.as_ref().and_then(|e| e.caller.clone()) else { return };
        let key = (sender, timer.cancellation_token.clone());
        if self.by_token.get(&key) == Some(&timer.timer_id) {
            self.by_token.remove(&key);
        }
    }
}

/// Appends one encoded timer as an `EpochRecord.timers` field.
fn push_encoded(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(RECORD_TIMERS_KEY);
    prost::encoding::encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use statefun_proto::internal::{Envelope, EpochRecord};

    use super::*;
    use crate::address::FunctionType;

    fn timer(id: u64, at: i64, sender: &str, token: &str) -> DelayedMessage {
        let sender = FunctionType::new("ns", "f").address(sender);
        let envelope = Envelope { caller: Some(sender), id: format!("m{id}"), ..Default::default() };
        DelayedMessage { timer_id: id, fire_at_ms: at, cancellation_token: token.into(), envelope: Some(envelope) }
    }

    fn sealed(timers: &mut Timers, snapshot: bool) -> (Vec<u64>, Vec<u64>) {
        let mut out = Vec::new();
        let removed = timers.seal_into(snapshot, &mut out);
        let written = EpochRecord::decode(out.as_slice()).expect("the fields decode as a record's");
        (written.timers.iter().map(|t| t.timer_id).collect(), removed)
    }

    #[test]
    fn timers_fire_in_due_order_and_only_when_due() {
        let mut timers = Timers::default();
        for (id, at) in [(0, 30), (1, 10), (2, 20), (3, 10)] {
            timers.schedule(timer(id, at, "a", ""));
        }
        assert_eq!(timers.next_due(), Some(10));
        let fired: Vec<u64> = std::iter::from_fn(|| timers.pop_due(20)).map(|t| t.expect("decodes").timer_id).collect();
        assert_eq!(fired, vec![1, 3, 2]);
        assert_eq!(timers.next_due(), Some(30));
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn a_token_names_one_timer_of_its_sender() {
        let mut timers = Timers::default();
        timers.schedule(timer(0, 10, "a", "t"));
        timers.schedule(timer(1, 10, "b", "t"));
        timers.schedule(timer(2, 20, "a", "t"));
        assert_eq!(timers.len(), 2, "a's second timer under `t` replaced its first");
        timers.cancel(&FunctionType::new("ns", "f").address("b"), "t");
        let left: Vec<u64> = std::iter::from_fn(|| timers.pop_due(99)).map(|t| t.expect("decodes").timer_id).collect();
        assert_eq!(left, vec![2]);
        assert!(timers.by_token.is_empty() && timers.by_id.is_empty());
        assert_eq!(timers.bytes(), 0);
        assert_eq!(timers.bytes, 0);
    }

    #[test]
    fn deltas_carry_changes_and_snapshots_everything() {
        let mut timers = Timers::default();
        timers.schedule(timer(0, 10, "a", ""));
        timers.schedule(timer(1, 20, "a", ""));
        assert_eq!(sealed(&mut timers, false), (vec![0, 1], vec![]));
        timers.schedule(timer(2, 30, "a", ""));
        timers.schedule(timer(3, 5, "a", ""));
        timers.pop_due(10).map(|t| t.expect("decodes")); // 3: scheduled and fired within the epoch
        timers.pop_due(10).map(|t| t.expect("decodes")); // 0: fired, scheduled before
        assert_eq!(sealed(&mut timers, false), (vec![2], vec![0]), "neither 3 nor a whole list again");
        assert_eq!(sealed(&mut timers, false), (vec![], vec![]));
        timers.pop_due(20).map(|t| t.expect("decodes"));
        assert_eq!(sealed(&mut timers, true), (vec![2], vec![]), "a snapshot lists what is pending");
    }

    #[test]
    fn a_million_timers_fire_in_order() {
        let mut timers = Timers::default();
        let n = 1_000_000u64;
        for id in 0..n {
            // Scheduled out of order: due times descend as ids rise.
            timers.schedule(timer(id, (n - id) as i64, "a", ""));
        }
        let mut last = i64::MIN;
        let mut fired = 0;
        while let Some(t) = timers.pop_due(i64::MAX) {
            let t = t.expect("decodes");
            assert!(t.fire_at_ms >= last);
            last = t.fire_at_ms;
            fired += 1;
        }
        assert_eq!(fired, n);
    }
}
