//! Ownership and the commit point of each partition.
//!
//! A worker takes a partition's lease (owner + counter) and every commit is a
//! conditional write on that owner, that counter and the previous epoch, so a
//! worker that lost its lease cannot commit. The manifest written by a commit
//! names the checkpoint objects of the partition's history.

pub mod dynamodb;
pub mod local;

use statefun_proto::internal::PartitionManifest;

use crate::log::BoxFuture;

/// The right to run a partition, and what was committed when it was taken.
#[derive(Clone, Debug, PartialEq)]
pub struct Lease {
    pub partition: u32,
    pub owner: String,
    pub counter: u64,
    /// `None` for a partition that never committed.
    pub manifest: Option<PartitionManifest>,
}

/// What the commit store holds for a partition.
#[derive(Clone, Debug, PartialEq)]
pub struct Committed {
    pub owner: String,
    pub counter: u64,
    pub manifest: PartitionManifest,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("partition {partition}: commit of epoch {epoch} rejected, the lease is no longer {owner}#{counter} at epoch {previous}")]
    Fenced { partition: u32, epoch: u64, owner: String, counter: u64, previous: u64 },
    #[error("commit store: {0}")]
    Backend(String),
    /// The store refused the request for good (no such table, access denied,
    /// a malformed item): trying again cannot succeed.
    #[error("commit store refused: {0}")]
    Rejected(String),
}

impl CommitError {
    /// Whether trying again may succeed (a backend hiccup). A fenced commit
    /// and a refused request never succeed on retry.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CommitError::Backend(_))
    }
}

pub trait CommitStore: Send + Sync {
    /// Takes the partition's lease for `owner`, bumping its counter, which fences every earlier holder.
    fn acquire<'a>(&'a self, partition: u32, owner: &'a str) -> BoxFuture<'a, Result<Lease, CommitError>>;

    /// Makes `manifest.epoch` the committed epoch, if the lease still holds and
    /// the committed epoch is still `previous_epoch`.
    fn commit<'a>(
        &'a self,
        lease: &'a Lease,
        previous_epoch: u64,
        manifest: PartitionManifest,
    ) -> BoxFuture<'a, Result<(), CommitError>>;

    /// The partition's current lease holder and committed manifest (`None` for
    /// a partition never committed): for inspection, and to settle a commit
    /// whose answer was lost.
    fn committed<'a>(&'a self, partition: u32) -> BoxFuture<'a, Result<Option<Committed>, CommitError>>;
}
