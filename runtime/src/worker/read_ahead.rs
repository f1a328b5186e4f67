//! What the readers of one partition may read before its worker takes it.
//!
//! A reader reads its shard while the worker is busy or full, and what it
//! read waits in the worker's channel or in the reader's hand. That is
//! outside what the partition counts against the memory budget (counted, it
//! could fill the partition's share with input the partition may not take),
//! so it is bounded here, in bytes. A reader reads only while the bytes read and not
//! yet taken are below the bound, and asks for about as many records as fit in
//! a read's share of it (from the size of the records it read last), so that a
//! shard of 1 MB records is not read 10 MiB at a time. The bound follows the
//! partition's own share of the budget: a process with memory to spare reads
//! as far ahead as the log allows. No I/O here.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use crate::log::{LogRecord, MAX_READ_BYTES};

/// The smallest size a read aims at, whatever the budget.
const MIN_READ_BYTES: usize = 1 << 20;

#[derive(Debug)]
pub struct ReadAhead {
    /// Read, not yet taken by the worker.
    bytes: AtomicUsize,
    /// What one read aims at; the readers wait while twice this is read ahead.
    read_bytes: AtomicUsize,
    taken: Notify,
}

impl Default for ReadAhead {
    fn default() -> Self {
        Self { bytes: AtomicUsize::new(0), read_bytes: AtomicUsize::new(MAX_READ_BYTES), taken: Notify::new() }
    }
}

/// The bytes of a read's records.
pub fn bytes_of(records: &[LogRecord]) -> usize {
    records.iter().map(|r| r.data.len()).sum()
}

impl ReadAhead {
    /// Bytes read and not yet taken.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The worker sets the bound from the partition's own share of the budget.
    pub fn follow_share(&self, own_share: usize) {
        let read_bytes = (own_share / 16).clamp(MIN_READ_BYTES, MAX_READ_BYTES);
        if self.read_bytes.swap(read_bytes, Ordering::Relaxed) >= read_bytes {
            return;
        }
        // A larger bound may let waiting readers go on.
        self.taken.notify_waiters();
    }

    /// Waits until there is room to read ahead, and says how many records to ask
    /// for: about a read's share of bytes, judged by `record_bytes` (the mean
    /// size of the records read last, if any), at least one, at most `most`.
    pub async fn room(&self, record_bytes: Option<usize>, most: usize) -> usize {
        loop {
            let taken = self.taken.notified();
            tokio::pin!(taken);
            taken.as_mut().enable();
            let read_bytes = self.read_bytes.load(Ordering::Relaxed);
            if self.bytes() < 2 * read_bytes {
                return record_bytes.map_or(most, |size| (read_bytes / size.max(1)).clamp(1, most));
            }
            taken.await;
        }
    }

    /// A reader read `bytes`.
    pub fn read(&self, bytes: usize) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The worker took `bytes` (or a reader dropped what it read).
    pub fn taken(&self, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.taken.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt as _;

    use super::*;

    #[test]
    fn a_reader_waits_while_two_reads_are_ahead_and_asks_for_what_fits_one() {
        let ahead = ReadAhead::default();
        ahead.follow_share(32 << 20);
        let room = |record_bytes| ahead.room(record_bytes, 500).now_or_never();
        assert_eq!(room(None), Some(500), "nothing known of the records yet");
        assert_eq!(room(Some(1_000_000)), Some(2), "2 MiB of 1 MB records");
        assert_eq!(room(Some(100)), Some(500));
        assert_eq!(room(Some(8 << 20)), Some(1), "one record at least");
        ahead.read(4 << 20);
        let mut waiting = Box::pin(ahead.room(Some(1_000_000), 500));
        assert_eq!(waiting.as_mut().now_or_never(), None, "4 MiB ahead: the reader waits");
        ahead.taken(1 << 20);
        assert_eq!(waiting.now_or_never(), Some(2), "taken: the reader goes on");
        assert_eq!(ahead.bytes(), 3 << 20);
    }

    #[test]
    fn the_bound_follows_the_share_within_the_logs_read() {
        let ahead = ReadAhead::default();
        ahead.follow_share(1 << 20);
        assert_eq!(ahead.read_bytes.load(Ordering::Relaxed), MIN_READ_BYTES);
        ahead.follow_share(1 << 30);
        assert_eq!(ahead.read_bytes.load(Ordering::Relaxed), MAX_READ_BYTES);
    }
}
