//! Checkpoint objects: where each epoch's record is stored and under which key.
//!
//! Objects are immutable; which of them make up a partition's history is
//! decided only by the commit store's manifest (see [`crate::coordination`]).
//! Layout, one object per committed epoch:
//!
//! ```text
//! partition-00003/epoch-00000000000000000042.lease-0000000007.delta.pb
//! partition-00003/epoch-00000000000000000050.lease-0000000007.snapshot.pb
//! ```
//!
//! The lease counter in the key means a fenced writer can never overwrite an
//! object of the current owner, even for the same epoch. Recovery reads the
//! manifest's snapshot, then every delta after it up to the committed epoch,
//! all written under the manifest's lease (a new owner's first commit is a
//! snapshot). Objects older than a committed snapshot are garbage.

pub mod fs;
pub mod s3;

use futures_util::{StreamExt, TryStreamExt};
use prost::Message;
use statefun_proto::internal::{EpochRecord, PartitionManifest};

use crate::log::BoxFuture;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint store: {key}: {detail}")]
    Backend { key: String, detail: String },
    #[error("checkpoint of partition {partition} is missing object {key}, which the commit record names")]
    Missing { partition: u32, key: String },
    #[error("checkpoint object {key} is corrupt: {detail}")]
    Corrupt { key: String, detail: String },
    /// The store refused the request for good (no such bucket, access denied):
    /// trying again cannot succeed.
    #[error("checkpoint store refused {key}: {detail}")]
    Rejected { key: String, detail: String },
}

impl CheckpointError {
    /// Whether trying again may succeed (a backend hiccup), as opposed to a
    /// request or an object that is wrong and will stay wrong.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CheckpointError::Backend { .. })
    }
}

/// An object store holding checkpoint objects (a directory locally, S3 on AWS).
pub trait BlobStore: Send + Sync {
    fn put<'a>(&'a self, key: &'a str, data: Vec<u8>) -> BoxFuture<'a, Result<(), CheckpointError>>;
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, CheckpointError>>;
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), CheckpointError>>;
    /// Keys under a prefix, in lexical order.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, CheckpointError>>;
}

pub fn partition_prefix(partition: u32) -> String {
    format!("partition-{partition:05}/")
}

pub fn object_key(partition: u32, epoch: u64, lease: u64, snapshot: bool) -> String {
    let kind = if snapshot { "snapshot" } else { "delta" };
    format!("{}epoch-{epoch:020}.lease-{lease:010}.{kind}.pb", partition_prefix(partition))
}

/// The epoch an object key names, if it is one of ours.
pub fn epoch_of_key(key: &str) -> Option<u64> {
    let name = key.rsplit('/').next()?;
    name.strip_prefix("epoch-")?.split('.').next()?.parse().ok()
}

/// How many checkpoint objects recovery fetches at once.
const PARALLEL_LOADS: usize = 16;

/// Loads the records that make up a committed history, oldest first. The
/// objects are fetched several at a time: a chain of deltas on S3 is many
/// small requests, and recovery time is their latency.
pub async fn load_history(
    store: &dyn BlobStore,
    partition: u32,
    manifest: &PartitionManifest,
) -> Result<Vec<EpochRecord>, CheckpointError> {
    let load = |epoch: u64| async move {
        let snapshot = epoch == manifest.snapshot_epoch;
        let key = object_key(partition, epoch, manifest.lease, snapshot);
        let bytes = store.get(&key).await?.ok_or_else(|| CheckpointError::Missing { partition, key: key.clone() })?;
        let record = EpochRecord::decode(bytes.as_slice())
            .map_err(|e| CheckpointError::Corrupt { key: key.clone(), detail: e.to_string() })?;
        if record.epoch != epoch || record.partition != partition {
            return Err(CheckpointError::Corrupt {
                key,
                detail: format!("holds partition {} epoch {}", record.partition, record.epoch),
            });
        }
        Ok(record)
    };
    futures_util::stream::iter(manifest.snapshot_epoch.max(1)..=manifest.epoch)
        .map(load)
        .buffered(PARALLEL_LOADS)
        .try_collect()
        .await
}

/// Deletes a partition's objects older than its committed snapshot.
pub async fn collect_garbage(store: &dyn BlobStore, partition: u32, snapshot_epoch: u64) -> Result<usize, CheckpointError> {
    let mut deleted = 0;
    for key in store.list(&partition_prefix(partition)).await? {
        if epoch_of_key(&key).is_some_and(|e| e < snapshot_epoch) {
            store.delete(&key).await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_epoch_and_name_their_kind() {
        assert_eq!(object_key(3, 42, 7, false), "partition-00003/epoch-00000000000000000042.lease-0000000007.delta.pb");
        assert!(object_key(0, 9, 2, true) < object_key(0, 10, 1, false));
        assert_eq!(epoch_of_key(&object_key(1, 77, 3, true)), Some(77));
        assert_eq!(epoch_of_key("partition-00001/other"), None);
    }
}
