//! A worker's memory budget, shared by the partitions it runs.
//!
//! Each partition reports what it holds (queued messages, timers, outboxes:
//! [`super::Partition::held_bytes`]). What they count together is kept to
//! half the budget: the other half is for what is not counted one by one (the
//! runtime itself, connections, input being decoded, the allocator's slack and
//! what it keeps of freed memory), which measured runs put at about as much
//! again. Half of the counted half is split evenly:
//! every partition may always fill its own share, so a busy partition never
//! starves a quiet one of the room to take its input. The other half is
//! common: what partitions hold beyond their own shares comes out of it, and
//! a partition past its share pauses its input while the common half is spent
//! and resumes as it drains. Together they stay within the budget, but for
//! what one read of input adds before the next check. Counting only: nothing
//! here allocates or frees what it counts.
//!
//! What is counted is an estimate (per message, per address), and the
//! allocator keeps some of what is freed. So the process's resident memory is
//! the last word: while it is near the budget (past three quarters of it: it
//! is measured every so often, see [`MemoryBudget::note_resident`], and what
//! is already on its way through a partition when input pauses, from its
//! outbox to the exchange and the next partition's invocations, must still
//! fit), the common half is closed and every
//! partition keeps to half its own share: input slows, and what is held
//! drains, but a partition is never left without room.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
    /// What partitions hold beyond their own shares, together.
    beyond_shares: AtomicUsize,
    holders: AtomicUsize,
    /// The process's resident memory was near the limit when last measured.
    resident_over: AtomicBool,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        let zero = || AtomicUsize::new(0);
        Arc::new(Self { limit, used: zero(), beyond_shares: zero(), holders: zero(), resident_over: false.into() })
    }

    /// Notes the process's resident memory, as last measured.
    pub fn note_resident(&self, bytes: usize) {
        self.resident_over.store(bytes > self.limit / 4 * 3, Ordering::Relaxed);
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// What every holder reports holding, together.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// A share for one partition, for as long as it runs.
    pub fn share(self: &Arc<Self>) -> BudgetShare {
        self.holders.fetch_add(1, Ordering::Relaxed);
        BudgetShare { budget: self.clone(), held: 0, beyond_share: 0 }
    }

    /// What the partitions may count together.
    fn counted_limit(&self) -> usize {
        self.limit / 2
    }

    /// One partition's own share: half of what may be counted, split evenly.
    fn own_share(&self) -> usize {
        self.counted_limit() / 2 / self.holders.load(Ordering::Relaxed).max(1)
    }
}

/// One partition's part of a [`MemoryBudget`].
#[derive(Debug)]
pub struct BudgetShare {
    budget: Arc<MemoryBudget>,
    held: usize,
    beyond_share: usize,
}

/// Moves `counter` from `old` to `new`.
fn adjust(counter: &AtomicUsize, old: usize, new: usize) {
    if new > old {
        counter.fetch_add(new - old, Ordering::Relaxed);
    } else {
        counter.fetch_sub(old - new, Ordering::Relaxed);
    }
}

impl BudgetShare {
    /// Reports what the partition holds now.
    pub fn hold(&mut self, held: usize) {
        let budget = &self.budget;
        let beyond_share = held.saturating_sub(budget.own_share());
        adjust(&budget.used, self.held, held);
        adjust(&budget.beyond_shares, self.beyond_share, beyond_share);
        (self.held, self.beyond_share) = (held, beyond_share);
    }

    /// The partition's own share of the budget, which it may always hold.
    pub fn own(&self) -> usize {
        self.budget.own_share()
    }

    /// What the partition may hold whatever the others do: its own share, or
    /// half of it while the process is near the budget.
    pub fn keep_to(&self) -> usize {
        let budget = &self.budget;
        if budget.resident_over.load(Ordering::Relaxed) { budget.own_share() / 2 } else { budget.own_share() }
    }

    /// Whether the partition holds more than it may whatever the others do (so
    /// it takes from the common half, or has no room while the process is near
    /// the budget).
    pub fn short(&self) -> bool {
        self.held >= self.keep_to()
    }

    /// Whether the partition may take more input: within what it keeps to, or,
    /// unless the process is near the budget, while the common half has room.
    pub fn has_room(&self) -> bool {
        let budget = &self.budget;
        if budget.resident_over.load(Ordering::Relaxed) {
            return self.held < self.keep_to();
        }
        self.held < self.keep_to() || budget.beyond_shares.load(Ordering::Relaxed) < budget.counted_limit() / 2
    }
}

impl Drop for BudgetShare {
    fn drop(&mut self) {
        self.hold(0);
        self.budget.holders.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_partition_pauses_while_a_quiet_one_keeps_its_share() {
        let budget = MemoryBudget::new(2000);
        let mut busy = budget.share();
        let mut quiet = budget.share();
        busy.hold(749);
        assert!(busy.has_room() && quiet.has_room(), "its own 250 and 499 of the common 500");
        busy.hold(750);
        assert!(!busy.has_room(), "beyond its own share, with the common half spent");
        quiet.hold(249);
        assert!(quiet.has_room(), "within its own share, whatever the others hold");
        quiet.hold(250);
        assert!(!quiet.has_room());
        assert_eq!(budget.used(), 1000, "together within the half of the budget that is counted");
        busy.hold(100);
        assert!(busy.has_room() && quiet.has_room(), "both resume as it drains");
        drop(quiet);
        assert_eq!(budget.used(), 100, "a partition that stops gives back what it held");
        busy.hold(999);
        assert!(busy.has_room(), "alone, all that may be counted is its");
        busy.hold(1000);
        assert!(!busy.has_room());
    }

    #[test]
    fn while_the_process_is_near_the_budget_each_partition_keeps_to_half_its_own_share() {
        let budget = MemoryBudget::new(2000);
        let mut busy = budget.share();
        let mut quiet = budget.share();
        busy.hold(300);
        quiet.hold(100);
        budget.note_resident(1501);
        assert!(!busy.has_room(), "beyond its own 250: the common half is closed");
        assert!(quiet.has_room(), "within half its own share, it goes on");
        assert!(busy.short() && !quiet.short(), "short of room beyond half the own share");
        quiet.hold(125);
        assert!(!quiet.has_room(), "half its own share");
        assert!(quiet.short(), "a flood in it spills from here on");
        budget.note_resident(1500);
        assert!(busy.has_room(), "open again once the process is back within three quarters of the budget");
    }
}
