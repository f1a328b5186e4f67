//! The embedded commit store: a SQLite table of partitions in the data
//! directory, with the same conditional-write semantics as the DynamoDB one.
//! Single-process ownership of the directory is enforced separately by a lock
//! file (see [`crate::node`]).

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use statefun_proto::internal::PartitionManifest;

use super::{CommitError, CommitStore, Committed, Lease, Renewal};
use crate::log::BoxFuture;

pub struct LocalCommitStore {
    connection: Arc<Mutex<Connection>>,
}

fn backend(e: impl std::fmt::Display) -> CommitError {
    CommitError::Backend(e.to_string())
}

impl LocalCommitStore {
    pub fn open(data_dir: &Path) -> Result<Self, CommitError> {
        std::fs::create_dir_all(data_dir).map_err(|e| backend(format!("{}: {e}", data_dir.display())))?;
        let connection = Connection::open(data_dir.join("coordination.sqlite")).map_err(backend)?;
        connection.busy_timeout(std::time::Duration::from_secs(10)).map_err(backend)?;
        crate::log::local::keep_plans(&connection).map_err(backend)?;
        connection
            .execute_batch(
                "PRAGMA journal_mode=WAL;
                 PRAGMA synchronous=FULL;
                 CREATE TABLE IF NOT EXISTS partitions (
                     partition INTEGER PRIMARY KEY,
                     owner TEXT NOT NULL,
                     lease INTEGER NOT NULL,
                     epoch INTEGER NOT NULL,
                     snapshot_epoch INTEGER NOT NULL,
                     chain_lease INTEGER NOT NULL);",
            )
            .map_err(backend)?;
        // Columns added after the first release: a data directory from before gets them here.
        for column in ["heartbeat INTEGER NOT NULL DEFAULT 0", "wanted_by TEXT NOT NULL DEFAULT ''"] {
            match connection.execute(&format!("ALTER TABLE partitions ADD COLUMN {column}"), []) {
                Ok(_) => {}
                Err(e) if e.to_string().contains("duplicate column") => {}
                Err(e) => return Err(backend(e)),
            }
        }
        Ok(Self { connection: Arc::new(Mutex::new(connection)) })
    }

    fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, CommitError> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, CommitError>> {
        let connection = self.connection.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || work(&mut connection.lock().unwrap_or_else(|e| e.into_inner())))
                .await
                .map_err(backend)?
        })
    }
}

fn read(c: &Connection, partition: u32) -> Result<Option<Committed>, CommitError> {
    c.query_row(
        "SELECT owner, lease, heartbeat, wanted_by, epoch, snapshot_epoch, chain_lease FROM partitions WHERE partition = ?1",
        [partition],
        |r| {
            Ok(Committed {
                owner: r.get(0)?,
                counter: r.get::<_, i64>(1)? as u64,
                heartbeat: r.get::<_, i64>(2)? as u64,
                wanted_by: r.get(3)?,
                manifest: PartitionManifest {
                    epoch: r.get::<_, i64>(4)? as u64,
                    snapshot_epoch: r.get::<_, i64>(5)? as u64,
                    lease: r.get::<_, i64>(6)? as u64,
                },
            })
        },
    )
    .optional()
    .map_err(backend)
}

impl CommitStore for LocalCommitStore {
    fn lease<'a>(&'a self, partition: u32) -> BoxFuture<'a, Result<Option<Committed>, CommitError>> {
        self.blocking(move |c| read(c, partition))
    }

    fn take<'a>(
        &'a self,
        partition: u32,
        owner: &'a str,
        seen: Option<&'a Committed>,
    ) -> BoxFuture<'a, Result<Option<Lease>, CommitError>> {
        let (owner, seen) = (owner.to_owned(), seen.cloned());
        self.blocking(move |c| {
            let tx = c.transaction().map_err(backend)?;
            let current = read(&tx, partition)?;
            if current != seen {
                return Ok(None);
            }
            let (counter, manifest) = match current {
                Some(c) => (c.counter + 1, (c.manifest.epoch > 0).then_some(c.manifest)),
                None => (1, None),
            };
            tx.execute(
                "INSERT INTO partitions (partition, owner, lease, heartbeat, wanted_by, epoch, snapshot_epoch, chain_lease)
                 VALUES (?1, ?2, ?3, 0, '', 0, 0, 0)
                 ON CONFLICT (partition) DO UPDATE SET owner = ?2, lease = ?3, heartbeat = 0, wanted_by = ''",
                params![partition, owner, counter as i64],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(Some(Lease { partition, owner, counter, manifest }))
        })
    }

    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Renewal, CommitError>> {
        let lease = lease.clone();
        self.blocking(move |c| {
            let changed = c
                .execute(
                    "UPDATE partitions SET heartbeat = heartbeat + 1 WHERE partition = ?1 AND owner = ?2 AND lease = ?3",
                    params![lease.partition, lease.owner, lease.counter as i64],
                )
                .map_err(backend)?;
            match read(c, lease.partition)? {
                Some(current) if changed == 1 => Ok(Renewal { handover_requested: !current.wanted_by.is_empty() }),
                _ => Err(lease.lost()),
            }
        })
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), CommitError>> {
        let lease = lease.clone();
        self.blocking(move |c| {
            let changed = c
                .execute(
                    "UPDATE partitions SET owner = '', wanted_by = '' WHERE partition = ?1 AND owner = ?2 AND lease = ?3",
                    params![lease.partition, lease.owner, lease.counter as i64],
                )
                .map_err(backend)?;
            if changed == 1 { Ok(()) } else { Err(lease.lost()) }
        })
    }

    fn request_handover<'a>(
        &'a self,
        partition: u32,
        requester: &'a str,
        seen: &'a Committed,
    ) -> BoxFuture<'a, Result<(), CommitError>> {
        let (requester, seen) = (requester.to_owned(), seen.clone());
        self.blocking(move |c| {
            c.execute(
                "UPDATE partitions SET wanted_by = ?1 WHERE partition = ?2 AND owner = ?3 AND lease = ?4",
                params![requester, partition, seen.owner, seen.counter as i64],
            )
            .map_err(backend)?;
            Ok(())
        })
    }

    fn commit<'a>(
        &'a self,
        lease: &'a Lease,
        previous_epoch: u64,
        manifest: PartitionManifest,
    ) -> BoxFuture<'a, Result<(), CommitError>> {
        let lease = lease.clone();
        self.blocking(move |c| {
            // Prepared once per connection: every epoch of every partition comes through here.
            let changed = c
                .prepare_cached(
                    "UPDATE partitions SET epoch = ?1, snapshot_epoch = ?2, chain_lease = ?7
                     WHERE partition = ?3 AND owner = ?4 AND lease = ?5 AND epoch = ?6",
                )
                .and_then(|mut update| {
                    update.execute(params![
                        manifest.epoch as i64,
                        manifest.snapshot_epoch as i64,
                        lease.partition,
                        lease.owner,
                        lease.counter as i64,
                        previous_epoch as i64,
                        manifest.lease as i64
                    ])
                })
                .map_err(backend)?;
            if changed == 1 {
                Ok(())
            } else {
                Err(CommitError::Fenced {
                    partition: lease.partition,
                    epoch: manifest.epoch,
                    owner: lease.owner,
                    counter: lease.counter,
                    previous: previous_epoch,
                })
            }
        })
    }

    fn committed<'a>(&'a self, partition: u32) -> BoxFuture<'a, Result<Option<Committed>, CommitError>> {
        self.blocking(move |c| Ok(read(c, partition)?.filter(|c| c.manifest.epoch > 0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_commit_by_a_fenced_lease_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalCommitStore::open(dir.path()).expect("open");
        let old = store.acquire(0, "a").await.expect("acquire");
        store.commit(&old, 0, PartitionManifest { epoch: 1, snapshot_epoch: 1, lease: 1 }).await.expect("commit");
        let new = store.acquire(0, "b").await.expect("acquire");
        assert_eq!(new.manifest, Some(PartitionManifest { epoch: 1, snapshot_epoch: 1, lease: 1 }));
        let err = store
            .commit(&old, 1, PartitionManifest { epoch: 2, snapshot_epoch: 1, lease: 1 })
            .await
            .expect_err("fenced");
        assert!(matches!(err, CommitError::Fenced { .. }), "{err}");
        store
            .commit(&new, 1, PartitionManifest { epoch: 2, snapshot_epoch: 1, lease: 1 })
            .await
            .expect("new owner commits");
    }

    #[tokio::test]
    async fn a_commit_from_a_stale_epoch_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalCommitStore::open(dir.path()).expect("open");
        let lease = store.acquire(1, "a").await.expect("acquire");
        store.commit(&lease, 0, PartitionManifest { epoch: 1, snapshot_epoch: 1, lease: 1 }).await.expect("commit");
        assert!(store.commit(&lease, 0, PartitionManifest { epoch: 1, snapshot_epoch: 1, lease: 1 }).await.is_err());
        let committed = store.committed(1).await.expect("read").expect("committed");
        assert_eq!((committed.owner.as_str(), committed.counter, committed.manifest.epoch), ("a", 1, 1));
    }

    #[tokio::test]
    async fn renewals_beat_the_heartbeat_until_the_lease_is_taken_over_then_fail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalCommitStore::open(dir.path()).expect("open");
        let lease = store.acquire(2, "a").await.expect("acquire");
        let before = store.lease(2).await.expect("read").expect("leased");
        assert_eq!(store.renew(&lease).await.expect("renew"), Renewal { handover_requested: false });
        let after = store.lease(2).await.expect("read").expect("leased");
        assert_eq!(after.heartbeat, before.heartbeat + 1);
        // Taking over what was seen before the renewal loses the race; taking what is there wins.
        assert_eq!(store.take(2, "b", Some(&before)).await.expect("take"), None);
        let taken = store.take(2, "b", Some(&after)).await.expect("take").expect("taken");
        assert_eq!((taken.owner.as_str(), taken.counter), ("b", lease.counter + 1));
        assert!(matches!(store.renew(&lease).await, Err(CommitError::LeaseLost { .. })));
        assert!(
            matches!(store.release(&lease).await, Err(CommitError::LeaseLost { .. })),
            "a stale holder cannot release"
        );
        assert_eq!(store.lease(2).await.expect("read").expect("leased").owner, "b");
    }

    #[tokio::test]
    async fn a_requested_handover_is_seen_at_renewal_and_a_release_frees_the_lease() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalCommitStore::open(dir.path()).expect("open");
        let lease = store.acquire(0, "a").await.expect("acquire");
        let seen = store.lease(0).await.expect("read").expect("leased");
        store.request_handover(0, "b", &seen).await.expect("request");
        assert_eq!(store.renew(&lease).await.expect("renew"), Renewal { handover_requested: true });
        store.release(&lease).await.expect("release");
        let free = store.lease(0).await.expect("read").expect("record kept");
        assert!(free.is_free() && free.wanted_by.is_empty());
        let taken = store.take(0, "b", Some(&free)).await.expect("take").expect("taken");
        assert_eq!(taken.counter, lease.counter + 1);
    }
}
