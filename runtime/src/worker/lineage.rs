//! Which ingress shards a partition reads, and when it may start each one.
//!
//! A shard belongs to the partition whose slice of the 128-bit hash key space
//! holds the shard's starting hash key: stable for the shard's whole life and
//! the same on every worker, with no coordination. Kinesis resharding closes
//! shards and opens children; a child is read only once every parent it names
//! has been read to its end *and* the epoch that recorded that end has been
//! published. The partition that finishes a shard says so with a marker
//! object in the checkpoint store (`ingress/<stream>/<shard>.finished`), which
//! the partitions reading its children poll. Waiting for publication keeps a
//! key's records in order even when parent and child are read by different
//! partitions: whatever the parent's records sent through the exchange is
//! appended there before the child's first record is read.
//!
//! This module must not read records or touch partition state: it only
//! decides which shards are ready and hands them to the worker.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};

use crate::address::FunctionType;
use crate::backoff::Backoff;
use crate::checkpoint::BlobStore;
use crate::log::{LogStore, Position, ShardInfo};

/// An ingress stream as a partition reads it: every shard assigned to the partition.
#[derive(Clone, Debug)]
pub struct IngressStream {
    pub stream: String,
    pub value_type: String,
    pub targets: Vec<FunctionType>,
    /// Where a shard with no committed position starts (`Latest` is pinned per stream).
    pub start: Position,
}

/// A shard the partition may start reading now.
#[derive(Clone, Debug)]
pub struct ReadyShard {
    /// Index into the worker's ingress streams.
    pub stream: usize,
    pub shard: ShardInfo,
}

/// The partition that reads a shard starting at `starting_hash_key`.
pub fn partition_of_shard(starting_hash_key: u128, partitions: u32) -> u32 {
    if partitions <= 1 {
        return 0;
    }
    let width = u128::MAX / u128::from(partitions) + 1;
    ((starting_hash_key / width) as u32).min(partitions - 1)
}

/// The key of the marker object saying a shard was read to its end and published.
pub fn finished_marker_key(stream: &str, shard: &str) -> String {
    format!("ingress/{stream}/{shard}.finished")
}

/// Writes a shard's finished marker, retrying until it is stored.
pub async fn mark_finished(blobs: Arc<dyn BlobStore>, stream: String, shard: String) {
    let key = finished_marker_key(&stream, &shard);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    while let Err(e) = blobs.put(&key, bytes::Bytes::new()).await {
        tracing::warn!(stream, shard, "writing the finished marker failed, retrying in {:?}: {e}", backoff.next());
        backoff.wait().await;
    }
    tracing::info!(stream, shard, "shard read to its end");
}

/// Lists the ingress streams' shards and sends each shard of this partition
/// as soon as it is ready: at once when it has no parents still listed or a
/// committed position (`resumed`), else when every listed parent's finished
/// marker exists. Lists again every `interval`, or sooner when `wake` is
/// notified (a shard of this partition ended); re-checks markers every second
/// while some shard waits. Ends when the worker stops listening.
pub struct Discovery {
    pub log: Arc<dyn LogStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub partition: u32,
    pub partitions: u32,
    pub streams: Vec<IngressStream>,
    /// (stream, shard) pairs with a committed position: their parents are done.
    pub resumed: HashSet<(String, String)>,
    pub interval: Duration,
    pub wake: Arc<Notify>,
}

const MARKER_RECHECK: Duration = Duration::from_secs(1);

impl Discovery {
    pub async fn run(self, ready: mpsc::UnboundedSender<ReadyShard>) {
        let mut sent: HashSet<(usize, String)> = HashSet::new();
        let mut listed: HashMap<usize, Vec<ShardInfo>> = HashMap::new();
        let mut last_listing: Option<Instant> = None;
        loop {
            if last_listing.is_none_or(|at| at.elapsed() >= self.interval) {
                last_listing = Some(Instant::now());
                for (index, ingress) in self.streams.iter().enumerate() {
                    match self.log.shards(&ingress.stream).await {
                        Ok(shards) => {
                            listed.insert(index, shards);
                        }
                        Err(e) => {
                            tracing::warn!(stream = %ingress.stream, "listing shards failed, retrying later: {e}")
                        }
                    }
                }
            }
            let mut waiting = false;
            for (&index, shards) in &listed {
                let stream = &self.streams[index].stream;
                let ids: HashSet<&str> = shards.iter().map(|s| s.id.as_str()).collect();
                for shard in shards {
                    if partition_of_shard(shard.starting_hash_key, self.partitions) != self.partition
                        || sent.contains(&(index, shard.id.clone()))
                    {
                        continue;
                    }
                    if self.is_ready(stream, shard, &ids).await {
                        sent.insert((index, shard.id.clone()));
                        if ready.send(ReadyShard { stream: index, shard: shard.clone() }).is_err() {
                            return;
                        }
                    } else {
                        waiting = true;
                    }
                }
            }
            let pause = if waiting { MARKER_RECHECK.min(self.interval) } else { self.interval };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.wake.notified() => last_listing = None,
                _ = ready.closed() => return,
            }
        }
    }

    async fn is_ready(&self, stream: &str, shard: &ShardInfo, listed: &HashSet<&str>) -> bool {
        if self.resumed.contains(&(stream.to_owned(), shard.id.clone())) {
            return true;
        }
        for parent in shard.parents.iter().filter(|p| listed.contains(p.as_str())) {
            // A parent no longer listed is past retention: nothing of it is left to read.
            match self.blobs.get(&finished_marker_key(stream, parent)).await {
                Ok(Some(_)) => {}
                Ok(None) => return false,
                Err(e) => {
                    tracing::warn!(stream, shard = %shard.id, parent, "checking the parent's finished marker failed: {e}");
                    return false;
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_spread_over_partitions_by_their_starting_hash_key() {
        let width = u128::MAX / 4 + 1;
        assert_eq!(partition_of_shard(0, 4), 0);
        assert_eq!(partition_of_shard(width - 1, 4), 0);
        assert_eq!(partition_of_shard(width, 4), 1);
        assert_eq!(partition_of_shard(3 * width, 4), 3);
        assert_eq!(partition_of_shard(u128::MAX, 4), 3);
        assert_eq!(partition_of_shard(u128::MAX, 1), 0);
    }

    /// A stream split once: `parent` (closed) and its children `left`, `right`.
    struct SplitStream;

    impl LogStore for SplitStream {
        fn ensure_stream<'a>(
            &'a self,
            stream: &'a str,
            _: u32,
        ) -> crate::log::BoxFuture<'a, Result<Vec<ShardInfo>, crate::log::LogError>> {
            self.shards(stream)
        }
        fn shards<'a>(&'a self, _: &'a str) -> crate::log::BoxFuture<'a, Result<Vec<ShardInfo>, crate::log::LogError>> {
            let shard = |id: &str, parents: &[&str], start: u128, open: bool| ShardInfo {
                id: id.into(),
                parents: parents.iter().map(|p| p.to_string()).collect(),
                starting_hash_key: start,
                ending_hash_key: if start == 0 { u128::MAX / 2 } else { u128::MAX },
                open,
            };
            let half = u128::MAX / 2 + 1;
            Box::pin(async move {
                Ok(vec![
                    shard("parent", &[], 0, false),
                    shard("left", &["parent"], 0, true),
                    shard("right", &["parent"], half, true),
                ])
            })
        }
        fn append<'a>(
            &'a self,
            _: &'a str,
            _: &'a [crate::log::AppendRecord],
        ) -> crate::log::BoxFuture<'a, Result<(), crate::log::LogError>> {
            Box::pin(async { Ok(()) })
        }
        fn read<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: &'a Position,
            _: usize,
        ) -> crate::log::BoxFuture<'a, Result<(Vec<crate::log::LogRecord>, Position), crate::log::LogError>> {
            Box::pin(async { Ok((Vec::new(), Position::End)) })
        }
    }

    fn discovery(partition: u32, blobs: Arc<dyn BlobStore>, resumed: &[&str]) -> Discovery {
        Discovery {
            log: Arc::new(SplitStream),
            blobs,
            partition,
            partitions: 2,
            streams: vec![IngressStream {
                stream: "in".into(),
                value_type: "t".into(),
                targets: vec![],
                start: Position::Start,
            }],
            resumed: resumed.iter().map(|s| ("in".to_owned(), s.to_string())).collect(),
            interval: Duration::from_millis(20),
            wake: Arc::new(Notify::new()),
        }
    }

    /// The next shard handed out, waiting `patience` for it.
    async fn handed_out(rx: &mut mpsc::UnboundedReceiver<ReadyShard>, patience: Duration) -> Option<String> {
        tokio::time::timeout(patience, rx.recv()).await.ok().flatten().map(|r| r.shard.id)
    }

    async fn next_ready(rx: &mut mpsc::UnboundedReceiver<ReadyShard>) -> Option<String> {
        handed_out(rx, Duration::from_secs(10)).await
    }

    /// Nothing handed out for a while (several listing rounds).
    async fn none_ready(rx: &mut mpsc::UnboundedReceiver<ReadyShard>) -> bool {
        handed_out(rx, Duration::from_millis(300)).await.is_none()
    }

    #[tokio::test]
    async fn children_wait_for_their_parents_finished_marker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs: Arc<dyn BlobStore> = Arc::new(crate::checkpoint::fs::FsBlobStore::new(dir.path()));
        let (tx, mut left_side) = mpsc::unbounded_channel();
        tokio::spawn(discovery(0, blobs.clone(), &[]).run(tx));
        let (tx, mut right_side) = mpsc::unbounded_channel();
        tokio::spawn(discovery(1, blobs.clone(), &[]).run(tx));

        assert_eq!(next_ready(&mut left_side).await.as_deref(), Some("parent"));
        assert!(none_ready(&mut left_side).await, "left waits for its parent");
        assert!(none_ready(&mut right_side).await, "right waits for its parent on the other partition");

        mark_finished(blobs.clone(), "in".into(), "parent".into()).await;
        assert_eq!(next_ready(&mut left_side).await.as_deref(), Some("left"));
        assert_eq!(next_ready(&mut right_side).await.as_deref(), Some("right"));
        assert!(none_ready(&mut left_side).await, "each shard is handed out once");
    }

    #[tokio::test]
    async fn a_child_with_a_committed_position_resumes_without_waiting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs: Arc<dyn BlobStore> = Arc::new(crate::checkpoint::fs::FsBlobStore::new(dir.path()));
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(discovery(1, blobs, &["right"]).run(tx));
        assert_eq!(next_ready(&mut rx).await.as_deref(), Some("right"));
    }
}
