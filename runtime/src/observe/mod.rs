//! What the runtime tells about itself: its metrics ([`metrics`]), what each
//! partition of this worker is doing ([`status`]), and the admin server that
//! serves both over HTTP ([`admin`]): Prometheus metrics, health, readiness,
//! a JSON status and a live status page.
//!
//! The node, the partition workers, their committers and the invoker record
//! into one [`Observer`] per process; nothing here reaches back into them.

pub mod admin;
pub mod emf;
pub mod metrics;
pub mod reports;
pub mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use metrics::Metrics;
use status::{PartitionStatus, Phase, StatusBoard};

/// How long a partition may fail, recover, or hold work without a commit before it counts as stuck.
pub const DEFAULT_STUCK_AFTER: Duration = Duration::from_secs(120);

/// The metrics and partition statuses of one process.
pub struct Observer {
    pub metrics: Metrics,
    pub board: StatusBoard,
    /// This worker's name in leases.
    owner: String,
    stuck_after: Duration,
    /// Function types that had a backlog series, so one that drained reads 0.
    types_seen: Mutex<BTreeSet<String>>,
    /// Whether anything reads the load by function type (the admin server, the
    /// embedded metrics): it walks every busy address, so it is skipped otherwise.
    watched: AtomicBool,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer").field("owner", &self.owner).field("stuck_after", &self.stuck_after).finish()
    }
}

impl Observer {
    pub fn new(owner: &str, stuck_after: Duration) -> Self {
        Self {
            metrics: Metrics::new(),
            board: StatusBoard::new(stuck_after),
            owner: owner.to_owned(),
            stuck_after,
            types_seen: Mutex::new(BTreeSet::new()),
            watched: AtomicBool::new(false),
        }
    }

    /// Something now reads the partitions' load by function type.
    pub fn watch(&self) {
        self.watched.store(true, Ordering::Relaxed);
    }

    pub fn is_watched(&self) -> bool {
        self.watched.load(Ordering::Relaxed)
    }

    /// Sets the gauges that sum the partitions' reports, and returns the reports.
    pub fn refresh(&self, now_ms: i64) -> Vec<PartitionStatus> {
        let partitions = self.board.partitions(now_ms);
        let held = partitions.iter().filter(|s| s.phase != Phase::Failed).count();
        self.metrics.partitions_held.set(held as i64);
        self.metrics.stuck_partitions.set(partitions.iter().filter(|s| s.stuck.is_some()).count() as i64);
        let mut loads: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for load in partitions.iter().flat_map(|s| &s.progress.loads) {
            let sum = loads.entry(&load.function_type).or_default();
            (sum.0, sum.1) = (sum.0 + load.backlog, sum.1 + load.blocked);
        }
        let mut seen = self.types_seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.extend(loads.keys().map(|t| (*t).to_owned()));
        for function_type in seen.iter() {
            let (backlog, blocked) = loads.get(function_type.as_str()).copied().unwrap_or_default();
            let label = [("function_type", std::borrow::Cow::Owned(function_type.clone()))];
            self.metrics.backlog.get_or_create(&label).set(backlog as i64);
            self.metrics.blocked.get_or_create(&label).set(blocked as i64);
        }
        partitions
    }

    /// The Prometheus exposition, gauges refreshed.
    pub fn metrics_text(&self, now_ms: i64) -> String {
        self.refresh(now_ms);
        self.metrics.encode()
    }

    /// What the status page draws: this worker, its totals and every partition it holds or failed.
    pub fn status_json(&self, now_ms: i64) -> Value {
        let partitions = self.refresh(now_ms);
        let readiness = self.board.readiness(now_ms);
        let totals = &self.metrics.totals;
        json!({
            "owner": self.owner,
            "now_ms": now_ms,
            "ready": readiness.is_ok(),
            "not_ready": readiness.err(),
            "stuck_after_ms": self.stuck_after.as_millis() as u64,
            "totals": {
                "records_in": totals.records_in.get(),
                "records_out": totals.records_out.get(),
                "invocations": totals.invocations.get(),
                "dead_letters": totals.dead_letters.get(),
            },
            "partitions": partitions,
        })
    }
}
