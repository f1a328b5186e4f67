//! When a sealed epoch is a full snapshot rather than a delta. Knows counts
//! and sizes of sealed epochs, nothing of what they hold.
//!
//! A snapshot bounds what a recovery reads (the last snapshot and the deltas
//! since), but writing one stalls the partition's commits for as long as it
//! takes to write the whole state. So a snapshot is taken once the deltas since
//! the last one hold more bytes than it did (a recovery then reads at most
//! about twice the state), and in any case at one epoch in `every` (a recovery
//! reads a bounded number of objects). Epochs sealed as soon as output
//! waits, one per event when events are sparse, are small: they alone do not
//! bring a snapshot for a long while. Under load, deltas are large and
//! snapshots follow the volume of change.

/// The snapshot rule of one partition's sealing.
#[derive(Debug, Default)]
pub(super) struct SnapshotCadence {
    every: u64,
    /// Deltas sealed since the last snapshot (starts at `every`: the first epoch sealed is a snapshot).
    deltas: u64,
    /// What the count restarts at after the first snapshot, so that the partitions of a
    /// worker do not all take theirs at once.
    stagger: u64,
    delta_bytes: usize,
    snapshot_bytes: usize,
}

impl SnapshotCadence {
    /// Partition `id`'s cadence among `partitions`: at least one epoch in `every` is a snapshot.
    pub(super) fn new(every: u64, id: u32, partitions: u32) -> Self {
        let every = every.max(1);
        Self {
            every,
            deltas: every,
            stagger: u64::from(id) * every / u64::from(partitions.max(1)),
            ..Default::default()
        }
    }

    /// Whether the next epoch sealed is a snapshot. At most one in a tenth of `every`:
    /// a partition whose state is tiny next to what its epochs carry besides (outboxes)
    /// would otherwise snapshot at every epoch, and each snapshot also deletes the
    /// history it replaces.
    pub(super) fn next_is_snapshot(&self) -> bool {
        let nth = self.deltas + 1;
        nth >= self.every || (nth >= (self.every / 10).max(1) && self.delta_bytes > self.snapshot_bytes)
    }

    /// Notes an epoch sealed as [`Self::next_is_snapshot`] said, of `bytes` bytes.
    pub(super) fn sealed(&mut self, snapshot: bool, bytes: usize) {
        if snapshot {
            self.deltas = std::mem::take(&mut self.stagger);
            self.delta_bytes = 0;
            self.snapshot_bytes = bytes;
        } else {
            self.deltas += 1;
            self.delta_bytes += bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seals epochs of `bytes` each until a snapshot; how many deltas came before it.
    fn deltas_before_snapshot(cadence: &mut SnapshotCadence, bytes: usize) -> u64 {
        let mut deltas = 0;
        while !cadence.next_is_snapshot() {
            cadence.sealed(false, bytes);
            deltas += 1;
        }
        cadence.sealed(true, 100_000);
        deltas
    }

    #[test]
    fn the_first_epoch_is_a_snapshot_and_small_deltas_wait_for_the_most_deltas() {
        let mut cadence = SnapshotCadence::new(1000, 0, 1);
        assert!(cadence.next_is_snapshot(), "a new owner's first epoch is a snapshot");
        cadence.sealed(true, 100_000);
        assert_eq!(deltas_before_snapshot(&mut cadence, 10), 999, "one epoch in 1,000");
    }

    #[test]
    fn deltas_larger_than_the_snapshot_bring_the_next_one_sooner_but_not_before_a_tenth() {
        let mut cadence = SnapshotCadence::new(1000, 0, 1);
        cadence.sealed(true, 100_000);
        assert_eq!(deltas_before_snapshot(&mut cadence, 1_001), 100, "100 deltas of 1,001 bytes outweigh the snapshot");
        assert_eq!(deltas_before_snapshot(&mut cadence, 401), 250);
        assert_eq!(deltas_before_snapshot(&mut cadence, 1_000_000), 99, "at most one epoch in a hundred");
    }

    #[test]
    fn partitions_of_a_worker_take_their_snapshots_at_different_epochs() {
        let mut first = SnapshotCadence::new(1000, 0, 4);
        let mut third = SnapshotCadence::new(1000, 2, 4);
        for cadence in [&mut first, &mut third] {
            cadence.sealed(true, 100_000);
        }
        assert_eq!(deltas_before_snapshot(&mut first, 10), 999);
        assert_eq!(deltas_before_snapshot(&mut third, 10), 499);
        assert_eq!(deltas_before_snapshot(&mut third, 10), 999, "staggered once, then the full count");
    }

    #[test]
    fn one_in_one_is_a_snapshot_at_every_epoch() {
        let mut cadence = SnapshotCadence::new(1, 0, 1);
        cadence.sealed(true, 10);
        assert_eq!(deltas_before_snapshot(&mut cadence, 0), 0);
    }
}
