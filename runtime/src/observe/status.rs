//! What each partition of this worker is doing, as the lease loop and the
//! partition workers report it: readiness, stuck partitions and the status
//! page read it. Reports are a few per second per partition; readers copy.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Where a partition is in its life on this worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Its lease is taken; its checkpoint is being read.
    Recovering,
    Serving,
    /// It stopped against its will here (see `failure`); it rests, then is taken again.
    Failed,
    /// Committing a last time before its lease is released.
    Stopping,
}

/// One input shard of a partition.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InputStatus {
    pub stream: String,
    pub shard: String,
    /// The position read up to (committed with the next epoch).
    pub position: Option<String>,
    /// Ingress shards: how far behind the shard's newest record the reader is.
    pub lag_ms: Option<i64>,
}

/// What waits at one function type of a partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TypeLoad {
    pub function_type: String,
    pub backlog: usize,
    pub blocked: usize,
}

/// A partition worker's periodic report.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Progress {
    pub queued: usize,
    /// Outbox entries and sealed epochs not yet published.
    pub unpublished: usize,
    pub addresses: usize,
    pub timers: usize,
    pub inputs: Vec<InputStatus>,
    pub loads: Vec<TypeLoad>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PartitionStatus {
    pub partition: u32,
    pub phase: Phase,
    /// When the phase began (Unix milliseconds).
    pub since_ms: i64,
    pub lease_counter: u64,
    /// When this worker took the lease (Unix milliseconds).
    pub taken_ms: i64,
    /// The last epoch published (0: none since it was taken here).
    pub epoch: u64,
    pub last_commit_ms: Option<i64>,
    #[serde(flatten)]
    pub progress: Progress,
    /// Why it last failed here, and how many times in a row.
    pub failure: Option<String>,
    pub failures: u32,
    /// Set when the partition is stuck (see [`StatusBoard::stuck_reason`]).
    pub stuck: Option<String>,
}

impl PartitionStatus {
    fn new(partition: u32, lease_counter: u64, now_ms: i64) -> Self {
        Self {
            partition,
            phase: Phase::Recovering,
            since_ms: now_ms,
            lease_counter,
            taken_ms: now_ms,
            epoch: 0,
            last_commit_ms: None,
            progress: Progress::default(),
            failure: None,
            failures: 0,
            stuck: None,
        }
    }

    /// Whether anything waits: queued messages, unpublished output, or input not yet read.
    fn has_work(&self) -> bool {
        let Progress { queued, unpublished, inputs, .. } = &self.progress;
        *queued > 0 || *unpublished > 0 || inputs.iter().any(|i| i.lag_ms.is_some_and(|lag| lag > 0))
    }
}

/// The partitions of this worker.
pub struct StatusBoard {
    partitions: Mutex<BTreeMap<u32, PartitionStatus>>,
    lease_rounds: AtomicU64,
    /// How long a partition may fail, recover, or hold work without a commit before it counts as stuck.
    stuck_after_ms: i64,
}

impl StatusBoard {
    pub fn new(stuck_after: std::time::Duration) -> Self {
        Self {
            partitions: Mutex::new(BTreeMap::new()),
            lease_rounds: AtomicU64::new(0),
            stuck_after_ms: stuck_after.as_millis().try_into().unwrap_or(i64::MAX),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<u32, PartitionStatus>) -> R) -> R {
        f(&mut self.partitions.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The lease was taken: recovery starts. Failures in a row are kept until it serves.
    pub fn recovering(&self, partition: u32, lease_counter: u64, now_ms: i64) {
        self.with(|all| {
            let failures = all.get(&partition).map(|s| (s.failure.clone(), s.failures));
            let mut status = PartitionStatus::new(partition, lease_counter, now_ms);
            if let Some((failure, failures)) = failures {
                (status.failure, status.failures) = (failure, failures);
            }
            all.insert(partition, status);
        });
    }

    pub fn serving(&self, partition: u32, epoch: u64, now_ms: i64) {
        self.with(|all| {
            if let Some(status) = all.get_mut(&partition) {
                (status.phase, status.since_ms, status.epoch) = (Phase::Serving, now_ms, epoch);
                (status.failure, status.failures) = (None, 0);
            }
        });
    }

    pub fn committed(&self, partition: u32, epoch: u64, at_ms: i64) {
        self.with(|all| {
            if let Some(status) = all.get_mut(&partition) {
                (status.epoch, status.last_commit_ms) = (epoch, Some(at_ms));
            }
        });
    }

    pub fn progress(&self, partition: u32, progress: Progress) {
        self.with(|all| {
            if let Some(status) = all.get_mut(&partition) {
                status.progress = progress;
            }
        });
    }

    pub fn failed(&self, partition: u32, reason: &str, now_ms: i64) {
        self.with(|all| {
            let status = all.entry(partition).or_insert_with(|| PartitionStatus::new(partition, 0, now_ms));
            (status.phase, status.since_ms) = (Phase::Failed, now_ms);
            status.failure = Some(reason.to_owned());
            status.failures += 1;
            status.progress = Progress::default();
        });
    }

    pub fn stopping(&self, partition: u32, now_ms: i64) {
        self.with(|all| {
            if let Some(status) = all.get_mut(&partition) {
                (status.phase, status.since_ms) = (Phase::Stopping, now_ms);
            }
        });
    }

    /// The partition left this worker (released or taken over).
    pub fn gone(&self, partition: u32) {
        self.with(|all| all.remove(&partition));
    }

    /// A round of the lease loop ended; failures older than the stuck time are forgotten
    /// (the partition runs elsewhere, or its next failure here comes sooner).
    pub fn lease_round_done(&self, now_ms: i64) {
        self.lease_rounds.fetch_add(1, Ordering::Relaxed);
        let stuck_after = self.stuck_after_ms;
        self.with(|all| {
            all.retain(|_, status| status.phase != Phase::Failed || now_ms - status.since_ms < stuck_after)
        });
    }

    /// Why a partition counts as stuck, if it does: it failed here within the
    /// stuck time and has not served since (resting, or recovering again: a
    /// restart loop), has been recovering for longer, or holds work without a
    /// commit for longer. An idle partition is never stuck.
    fn stuck_reason(&self, status: &PartitionStatus, now_ms: i64) -> Option<String> {
        let age = now_ms - status.since_ms;
        let seconds = |ms: i64| format!("{:.0} s", ms as f64 / 1000.0);
        match status.phase {
            Phase::Failed | Phase::Recovering if status.failures > 0 => Some(format!(
                "failed {} time(s) in a row{}: {}",
                status.failures,
                if status.phase == Phase::Recovering { ", recovering again" } else { "" },
                status.failure.as_deref().unwrap_or("unknown")
            )),
            Phase::Recovering if age > self.stuck_after_ms => Some(format!("recovering for {}", seconds(age))),
            Phase::Serving if status.has_work() => {
                let quiet = now_ms - status.last_commit_ms.unwrap_or(status.since_ms).max(status.since_ms);
                (quiet > self.stuck_after_ms).then(|| format!("holding work without a commit for {}", seconds(quiet)))
            }
            _ => None,
        }
    }

    /// Every partition, with its stuck reason filled in.
    pub fn partitions(&self, now_ms: i64) -> Vec<PartitionStatus> {
        let mut all: Vec<PartitionStatus> = self.with(|all| all.values().cloned().collect());
        for status in &mut all {
            status.stuck = self.stuck_reason(status, now_ms);
        }
        all
    }

    /// Ready once a round of the lease loop has run and every partition held
    /// here serves; else why not.
    pub fn readiness(&self, now_ms: i64) -> Result<(), String> {
        if self.lease_rounds.load(Ordering::Relaxed) == 0 {
            return Err("starting: the lease table has not been read yet".into());
        }
        let waiting: Vec<String> = self
            .partitions(now_ms)
            .iter()
            .filter(|s| s.phase != Phase::Serving)
            .map(|s| match (&s.failure, s.phase) {
                (Some(failure), Phase::Failed) => format!("partition {} failed: {failure}", s.partition),
                (Some(failure), _) => format!("partition {} failed, and is retried: {failure}", s.partition),
                (None, phase) => format!("partition {} is {}", s.partition, format!("{phase:?}").to_lowercase()),
            })
            .collect();
        match waiting.is_empty() {
            true => Ok(()),
            false => Err(waiting.join("; ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn ready_after_a_lease_round_once_every_partition_serves() {
        let board = StatusBoard::new(Duration::from_secs(60));
        assert!(board.readiness(0).expect_err("no round yet").contains("starting"));
        board.lease_round_done(0);
        assert_eq!(board.readiness(0), Ok(()), "nothing held, nothing waited for");
        board.recovering(3, 7, 0);
        assert_eq!(board.readiness(10), Err("partition 3 is recovering".into()));
        board.serving(3, 12, 20);
        assert_eq!(board.readiness(30), Ok(()));
        board.failed(3, "cannot recover: corrupt", 40);
        assert_eq!(board.readiness(50), Err("partition 3 failed: cannot recover: corrupt".into()));
    }

    #[test]
    fn stuck_means_failing_recovering_too_long_or_holding_work_without_commits_but_never_idle() {
        let board = StatusBoard::new(Duration::from_secs(60));
        board.lease_round_done(0);
        board.recovering(0, 1, 0);
        assert_eq!(board.partitions(60_000)[0].stuck, None);
        assert_eq!(board.partitions(61_000)[0].stuck.as_deref(), Some("recovering for 61 s"));

        board.serving(0, 5, 61_000);
        let idle = board.partitions(1_000_000);
        assert_eq!(idle[0].stuck, None, "an idle partition is not stuck, however long since its last commit");
        board.progress(0, Progress { queued: 3, ..Progress::default() });
        board.committed(0, 6, 100_000);
        assert_eq!(board.partitions(150_000)[0].stuck, None);
        assert_eq!(board.partitions(161_000)[0].stuck.as_deref(), Some("holding work without a commit for 61 s"));

        board.failed(0, "publishing: stream refused", 200_000);
        board.recovering(0, 2, 204_000);
        let again = board.partitions(204_500);
        let expected = "failed 1 time(s) in a row, recovering again: publishing: stream refused";
        assert_eq!(again[0].stuck.as_deref(), Some(expected), "a restart loop is stuck between its failures too");
        assert_eq!(
            board.readiness(204_500),
            Err("partition 0 failed, and is retried: publishing: stream refused".into())
        );
        board.failed(0, "publishing: stream refused", 205_000);
        let failed = board.partitions(206_000);
        assert_eq!(failed[0].stuck.as_deref(), Some("failed 2 time(s) in a row: publishing: stream refused"));
        board.lease_round_done(264_000);
        assert_eq!(board.partitions(264_000).len(), 1, "a recent failure is kept");
        board.lease_round_done(266_000);
        assert!(
            board.partitions(266_000).is_empty(),
            "forgotten after the stuck time: it runs elsewhere or fails again"
        );
    }
}
