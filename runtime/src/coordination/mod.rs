//! Ownership and the commit point of each partition.
//!
//! A worker takes a partition's lease (owner + counter) and every commit is a
//! conditional write on that owner, that counter and the previous epoch, so a
//! worker that lost its lease cannot commit. The manifest written by a commit
//! names the checkpoint objects of the partition's history.
//!
//! A holder renews its lease by bumping the lease's heartbeat; another worker
//! that sees the heartbeat stand still for the failover time takes the lease
//! over (a new counter fences the old holder). A worker that wants a live
//! lease (to balance load) asks for it; the holder hands it over at its next
//! renewal: last commit, then release. Every renewal, release and hand-over
//! request is conditional on owner and counter. When to do what is decided by
//! [`crate::node`]; [`guard::LeaseGuard`] tells a partition whether its lease
//! may still be trusted.

pub mod dynamodb;
pub mod guard;
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

impl Lease {
    pub fn lost(&self) -> CommitError {
        CommitError::LeaseLost { partition: self.partition, owner: self.owner.clone(), counter: self.counter }
    }
}

/// What the commit store holds for a partition.
#[derive(Clone, Debug, PartialEq)]
pub struct Committed {
    /// Empty when the lease was released.
    pub owner: String,
    pub counter: u64,
    /// Bumped by every renewal: a heartbeat that stands still means a holder that is gone.
    pub heartbeat: u64,
    /// A worker that asked the holder to hand the lease over (empty: nobody).
    pub wanted_by: String,
    pub manifest: PartitionManifest,
}

impl Committed {
    pub fn is_free(&self) -> bool {
        self.owner.is_empty()
    }
}

/// What a renewal learnt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renewal {
    /// Another worker asked for the lease: hand it over (last commit, release).
    pub handover_requested: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(
        "partition {partition}: commit of epoch {epoch} rejected, the lease is no longer {owner}#{counter} at epoch {previous}"
    )]
    Fenced { partition: u32, epoch: u64, owner: String, counter: u64, previous: u64 },
    #[error("partition {partition}: the lease is no longer {owner}#{counter}")]
    LeaseLost { partition: u32, owner: String, counter: u64 },
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

/// How often `acquire` reads again after losing a race before it gives up (retryably).
const ACQUIRE_ATTEMPTS: u32 = 10;

pub trait CommitStore: Send + Sync {
    /// The partition's record as it is now, `None` if its lease was never taken.
    fn lease<'a>(&'a self, partition: u32) -> BoxFuture<'a, Result<Option<Committed>, CommitError>>;

    /// Takes the partition's lease for `owner` if the record is still exactly
    /// `seen` (`None`: never taken), bumping the counter, which fences every
    /// earlier holder. `Ok(None)`: the record moved since it was seen.
    fn take<'a>(
        &'a self,
        partition: u32,
        owner: &'a str,
        seen: Option<&'a Committed>,
    ) -> BoxFuture<'a, Result<Option<Lease>, CommitError>>;

    /// Bumps the heartbeat of a lease still held; [`CommitError::LeaseLost`] if it is not.
    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Renewal, CommitError>>;

    /// Gives a lease still held up, so another worker may take it at once
    /// ([`CommitError::LeaseLost`] if it is no longer held).
    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), CommitError>>;

    /// Asks the holder seen in `seen` to hand the lease over to `requester`.
    fn request_handover<'a>(
        &'a self,
        partition: u32,
        requester: &'a str,
        seen: &'a Committed,
    ) -> BoxFuture<'a, Result<(), CommitError>>;

    /// Takes the partition's lease whoever holds it (reading and taking until
    /// no other writer interferes): for a single process that knows every
    /// other holder is gone, and for tests.
    fn acquire<'a>(&'a self, partition: u32, owner: &'a str) -> BoxFuture<'a, Result<Lease, CommitError>> {
        Box::pin(async move {
            for attempt in 0..ACQUIRE_ATTEMPTS {
                let seen = self.lease(partition).await?;
                if let Some(lease) = self.take(partition, owner, seen.as_ref()).await? {
                    return Ok(lease);
                }
                let pause = 20 * u64::from(attempt + 1) + rand::random_range(0..20);
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            Err(CommitError::Backend(format!(
                "partition {partition}: taking the lease lost {ACQUIRE_ATTEMPTS} races in a row to other writers"
            )))
        })
    }

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
