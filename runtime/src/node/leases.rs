//! Which partitions this worker should hold: the lease table as this worker
//! has seen it, and the decisions drawn from it each round.
//!
//! A lease whose record (owner, counter, heartbeat) has not changed for the
//! failover time is held by a worker that is gone, and is taken over. Free
//! leases (released, or never taken) are taken at once. Each worker aims for
//! its share of the partitions (the partition count over the live workers,
//! rounded up): below it, it takes free and expired leases, then asks the
//! busiest worker above its share to hand one over (one per round). Pure
//! logic on what was read: no I/O, no clocks of its own.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::coordination::Committed;

#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// How often held leases are renewed and the table is read.
    pub renew_every: Duration,
    /// How long a lease's heartbeat must stand still before the lease is taken over.
    pub failover: Duration,
    /// Every holder other than this process is known to be gone (the local
    /// mode, where a lock file admits one process per data directory).
    pub take_over_at_once: bool,
}

impl LeaseSettings {
    /// How long a renewal keeps a lease trusted locally: well inside the
    /// failover time, so a holder stops trusting its lease before anyone may
    /// take it over (the margin absorbs request latency and clock drift).
    pub fn validity(&self) -> Duration {
        self.failover.mul_f64(0.75)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.renew_every.is_zero() || self.renew_every * 2 > self.validity() {
            return Err(format!(
                "lease renewal every {:?} leaves too little room in a failover time of {:?}: renew at most every {:?}",
                self.renew_every,
                self.failover,
                self.validity() / 2
            ));
        }
        Ok(())
    }
}

/// What to do about one partition.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Take the lease if its record is still `seen`.
    Take { partition: u32, seen: Option<Committed> },
    /// Ask the holder in `seen` to hand the lease over.
    AskForHandover { partition: u32, seen: Committed },
}

/// A lease record and when this worker first saw it in this exact state.
struct Sighting {
    state: (String, u64, u64),
    since: Instant,
}

#[derive(Default)]
pub struct LeaseTable {
    sightings: HashMap<u32, Sighting>,
}

impl LeaseTable {
    /// Records what a round read: a record that changed starts its failover clock again.
    pub fn observe(&mut self, partition: u32, record: Option<&Committed>, now: Instant) {
        let Some(record) = record else {
            self.sightings.remove(&partition);
            return;
        };
        let state = (record.owner.clone(), record.counter, record.heartbeat);
        match self.sightings.get(&partition) {
            Some(sighting) if sighting.state == state => {}
            _ => {
                self.sightings.insert(partition, Sighting { state, since: now });
            }
        }
    }

    /// Whether the holder of `partition` is gone: its record stood still for the failover time.
    fn expired(&self, partition: u32, now: Instant, settings: &LeaseSettings) -> bool {
        settings.take_over_at_once
            || self.sightings.get(&partition).is_some_and(|s| now.duration_since(s.since) >= settings.failover)
    }

    /// This round's decisions for worker `me`, holding `held`, given every partition's record
    /// (`records[p]`), skipping partitions in `resting` (they failed here recently).
    pub fn decide(
        &self,
        me: &str,
        records: &[Option<Committed>],
        held: &HashSet<u32>,
        resting: &HashSet<u32>,
        now: Instant,
        settings: &LeaseSettings,
    ) -> Vec<Decision> {
        let mut free = Vec::new();
        let mut expired = Vec::new();
        let mut live: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for (partition, record) in records.iter().enumerate() {
            let partition = partition as u32;
            if held.contains(&partition) {
                continue;
            }
            match record {
                None => free.push(partition),
                Some(r) if r.is_free() => free.push(partition),
                // Ours by name but not running here (it failed and was not released): take it again.
                Some(r) if r.owner == me => free.push(partition),
                Some(_) if self.expired(partition, now, settings) => expired.push(partition),
                Some(r) => live.entry(r.owner.as_str()).or_default().push(partition),
            }
        }
        let workers = live.len() + 1;
        let share = records.len().div_ceil(workers);
        let mut wanted = share.saturating_sub(held.len());
        let mut decisions = Vec::new();
        for partition in free.into_iter().chain(expired).filter(|p| !resting.contains(p)) {
            if wanted == 0 {
                break;
            }
            wanted -= 1;
            decisions.push(Decision::Take { partition, seen: records[partition as usize].clone() });
        }
        if wanted > 0 {
            let busiest = live.iter().filter(|(_, held)| held.len() > share).max_by_key(|(_, held)| held.len());
            if let Some((_, partitions)) = busiest {
                let asked = partitions.iter().filter_map(|p| records[*p as usize].as_ref().map(|r| (*p, r)));
                // Ask for the same partition until it comes, not a new one each round.
                let candidate = asked.clone().find(|(_, r)| r.wanted_by == me).or_else(|| asked.clone().next_back());
                if let Some((partition, record)) = candidate
                    && record.wanted_by != me
                {
                    decisions.push(Decision::AskForHandover { partition, seen: record.clone() });
                }
            }
        }
        decisions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use statefun_proto::internal::PartitionManifest;

    fn settings() -> LeaseSettings {
        LeaseSettings {
            renew_every: Duration::from_secs(2),
            failover: Duration::from_secs(10),
            take_over_at_once: false,
        }
    }

    fn held_by(owner: &str, heartbeat: u64) -> Option<Committed> {
        Some(Committed {
            owner: owner.into(),
            counter: 1,
            heartbeat,
            wanted_by: String::new(),
            manifest: PartitionManifest::default(),
        })
    }

    fn taken(decisions: &[Decision]) -> Vec<u32> {
        decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Take { partition, .. } => Some(*partition),
                Decision::AskForHandover { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_lone_worker_takes_every_free_partition() {
        let table = LeaseTable::default();
        let records = vec![None, held_by("", 3), None, None];
        let decisions = table.decide("me", &records, &HashSet::new(), &HashSet::new(), Instant::now(), &settings());
        assert_eq!(taken(&decisions), [0, 1, 2, 3]);
    }

    #[test]
    fn a_lease_is_taken_over_only_after_its_heartbeat_stood_still_for_the_failover_time() {
        let mut table = LeaseTable::default();
        let start = Instant::now();
        let records = vec![held_by("other", 5)];
        table.observe(0, records[0].as_ref(), start);
        let decide = |table: &LeaseTable, records: &[Option<Committed>], at: Instant| {
            taken(&table.decide("me", records, &HashSet::new(), &HashSet::new(), at, &settings()))
        };
        assert!(decide(&table, &records, start + Duration::from_secs(9)).is_empty(), "still live");
        // A renewal moves the heartbeat: the clock starts again.
        let renewed = vec![held_by("other", 6)];
        table.observe(0, renewed[0].as_ref(), start + Duration::from_secs(9));
        assert!(decide(&table, &renewed, start + Duration::from_secs(12)).is_empty(), "renewed 3 s ago");
        assert_eq!(decide(&table, &renewed, start + Duration::from_secs(19)), [0]);
    }

    #[test]
    fn a_newcomer_asks_the_busiest_worker_for_one_partition_at_a_time() {
        let table = LeaseTable::default();
        let records: Vec<_> = (0..4).map(|_| held_by("busy", 1)).collect();
        let decisions = table.decide("new", &records, &HashSet::new(), &HashSet::new(), Instant::now(), &settings());
        assert!(matches!(decisions.as_slice(), [Decision::AskForHandover { partition: 3, .. }]), "{decisions:?}");
        // Once asked, it waits for that one instead of asking again.
        let mut asked = records.clone();
        if let Some(r) = asked[3].as_mut() {
            r.wanted_by = "new".into();
        }
        assert!(table.decide("new", &asked, &HashSet::new(), &HashSet::new(), Instant::now(), &settings()).is_empty());
    }

    #[test]
    fn workers_at_their_share_leave_each_other_alone() {
        let table = LeaseTable::default();
        let records = vec![held_by("a", 1), held_by("a", 1), held_by("b", 1), held_by("b", 1)];
        let held: HashSet<u32> = [2, 3].into();
        assert!(table.decide("b", &records, &held, &HashSet::new(), Instant::now(), &settings()).is_empty());
    }

    #[test]
    fn a_resting_partition_is_not_taken_and_the_local_mode_takes_over_at_once() {
        let table = LeaseTable::default();
        let local = LeaseSettings { take_over_at_once: true, ..settings() };
        let records = vec![held_by("previous-process", 1), None];
        let resting: HashSet<u32> = [1].into();
        assert_eq!(taken(&table.decide("me", &records, &HashSet::new(), &resting, Instant::now(), &local)), [0]);
    }

    #[test]
    fn renewing_too_rarely_for_the_failover_time_is_refused() {
        assert!(settings().validate().is_ok());
        let slow = LeaseSettings { renew_every: Duration::from_secs(5), ..settings() };
        assert!(slow.validate().is_err_and(|e| e.contains("renew at most every")));
    }
}
