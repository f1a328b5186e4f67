//! Whether a partition may still act on its lease.
//!
//! A lease is trusted until a local deadline: the start of the last successful
//! renewal plus a validity shorter than the failover time other workers wait
//! before taking the lease over. The clock is monotonic and runs on while the
//! process is stopped, so a worker frozen (SIGSTOP, a long pause) past its
//! deadline finds its lease untrusted the moment it runs again, before it
//! commits or publishes anything. A lease is also revoked outright when a
//! renewal is rejected or the lease is handed over.
//!
//! The guard knows nothing of stores: the node renews and revokes, the worker
//! and the committer only ask.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

pub struct LeaseGuard {
    deadline: Mutex<Instant>,
    revoked: watch::Sender<bool>,
}

impl LeaseGuard {
    /// A lease taken at `taken_at`, trusted for `validity`.
    pub fn new(taken_at: Instant, validity: Duration) -> Self {
        Self { deadline: Mutex::new(taken_at + validity), revoked: watch::channel(false).0 }
    }

    /// A renewal that started at `started` succeeded.
    pub fn renewed(&self, started: Instant, validity: Duration) {
        let mut deadline = self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        *deadline = (*deadline).max(started + validity);
    }

    /// The lease is lost (or given away): stop at once.
    pub fn revoke(&self) {
        self.revoked.send_replace(true);
    }

    /// Whether the partition may still commit and publish.
    pub fn is_valid(&self) -> bool {
        !*self.revoked.borrow() && Instant::now() < *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes to `true` when the lease is revoked.
    pub fn watch_revoked(&self) -> watch::Receiver<bool> {
        self.revoked.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_trusted_until_its_deadline_and_renewals_extend_it() {
        let guard = LeaseGuard::new(Instant::now(), Duration::from_millis(30));
        assert!(guard.is_valid());
        std::thread::sleep(Duration::from_millis(40));
        assert!(!guard.is_valid(), "past the deadline");
        guard.renewed(Instant::now(), Duration::from_secs(60));
        assert!(guard.is_valid());
        // An older renewal finishing late never shortens the deadline.
        guard.renewed(Instant::now() - Duration::from_secs(120), Duration::from_secs(1));
        assert!(guard.is_valid());
    }

    #[test]
    fn a_revoked_lease_is_never_trusted_again() {
        let guard = LeaseGuard::new(Instant::now(), Duration::from_secs(60));
        let mut watcher = guard.watch_revoked();
        guard.revoke();
        assert!(!guard.is_valid());
        assert!(watcher.has_changed().unwrap_or(false) && *watcher.borrow_and_update());
        guard.renewed(Instant::now(), Duration::from_secs(60));
        assert!(!guard.is_valid());
    }
}
