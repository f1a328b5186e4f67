//! Worker reports: each worker writes what its status board says to the
//! checkpoint store (`workers/<owner>.json`) when a partition's phase or stuck
//! state changes, and at least every [`REPORT_EVERY`]; `statefun status` reads
//! them beside the lease records, so it works on both backends without
//! reaching any worker. A report older than [`REPORT_STALE`] is from a worker
//! that stopped; a clean stop deletes its report.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use super::Observer;
use crate::checkpoint::{BlobStore, CheckpointError};

/// The prefix of the reports in the checkpoint store.
pub const PREFIX: &str = "workers/";
/// The longest a worker goes without writing its report.
pub const REPORT_EVERY: Duration = Duration::from_secs(60);
/// A report older than this is from a worker that stopped reporting.
pub const REPORT_STALE: Duration = Duration::from_secs(180);

/// The key of `owner`'s report: the owner name with anything but letters,
/// digits, `.`, `-` and `_` replaced, so any host name makes a valid key.
pub fn key(owner: &str) -> String {
    let safe: String = owner
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .collect();
    format!("{PREFIX}{safe}.json")
}

/// Writes the worker's report when what it says changed, or when it is due; returns what was written.
pub struct Reporter {
    key: String,
    last: Option<(String, i64)>,
}

impl Reporter {
    pub fn new(owner: &str) -> Self {
        Self { key: key(owner), last: None }
    }

    /// Writes the report if a partition's phase, failures or stuck state moved, or it is due.
    pub async fn report(&mut self, blobs: &dyn BlobStore, observer: &Observer, now_ms: i64) {
        let status = observer.status_json(now_ms);
        let signature = signature(&status);
        let due = self
            .last
            .as_ref()
            .is_none_or(|(seen, at)| *seen != signature || now_ms - at >= REPORT_EVERY.as_millis() as i64);
        if !due {
            return;
        }
        match blobs.put(&self.key, Bytes::from(status.to_string())).await {
            Ok(()) => self.last = Some((signature, now_ms)),
            Err(e) => tracing::warn!(key = %self.key, "writing the worker's report failed, trying again later: {e}"),
        }
    }

    /// Removes the report at a clean stop: the worker holds nothing any more.
    pub async fn withdraw(&self, blobs: &dyn BlobStore) {
        if let Err(e) = blobs.delete(&self.key).await {
            tracing::warn!(key = %self.key, "deleting the worker's report failed: {e}");
        }
    }
}

/// What must be written at once when it changes: partitions, phases, failures, stuck or not.
fn signature(status: &Value) -> String {
    let partitions = status["partitions"].as_array().map(Vec::as_slice).unwrap_or_default();
    partitions
        .iter()
        .map(|p| format!("{}:{}:{}:{}", p["partition"], p["phase"], p["failures"], p["stuck"].is_null()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Every worker's report; one that cannot be read or parsed is skipped with a warning.
pub async fn read_all(blobs: &dyn BlobStore) -> Result<Vec<Value>, CheckpointError> {
    let mut reports = Vec::new();
    for key in blobs.list(PREFIX).await? {
        // Gone since the listing: that worker stopped cleanly.
        let Some(bytes) = blobs.get(&key).await? else { continue };
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(report) if report.is_object() => reports.push(report),
            Ok(_) | Err(_) => tracing::warn!(key, "a worker report is not a JSON object; skipped"),
        }
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_owner_name_makes_a_key_under_the_prefix() {
        assert_eq!(key("ip-10-0-0-1.ec2.internal-42-0badf00d"), "workers/ip-10-0-0-1.ec2.internal-42-0badf00d.json");
        assert_eq!(key("host/../x y"), "workers/host_.._x_y.json");
    }

    #[tokio::test]
    async fn a_report_is_written_when_a_partition_changes_phase_and_not_for_every_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = crate::checkpoint::fs::FsBlobStore::new(dir.path());
        let observer = Observer::new("w", Duration::from_secs(60));
        let mut reporter = Reporter::new("w");
        observer.board.recovering(2, 1, 0);
        reporter.report(&blobs, &observer, 0).await;
        let read = read_all(&blobs).await.expect("read");
        assert_eq!(read.len(), 1);
        assert_eq!(read[0]["partitions"][0]["phase"], "recovering");

        observer.board.serving(2, 1, 10);
        reporter.report(&blobs, &observer, 10).await;
        assert_eq!(read_all(&blobs).await.expect("read")[0]["partitions"][0]["phase"], "serving");
        observer.board.committed(2, 9, 20);
        reporter.report(&blobs, &observer, 20).await;
        assert_eq!(read_all(&blobs).await.expect("read")[0]["partitions"][0]["epoch"], 1, "a commit alone waits");
        reporter.report(&blobs, &observer, 10 + REPORT_EVERY.as_millis() as i64).await;
        assert_eq!(read_all(&blobs).await.expect("read")[0]["partitions"][0]["epoch"], 9, "written when due");

        reporter.withdraw(&blobs).await;
        assert!(read_all(&blobs).await.expect("read").is_empty());
    }
}
