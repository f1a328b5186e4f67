//! Messages of one address beyond its cap, kept out of memory.
//!
//! An address whose mailbox holds its cap (in bytes or messages) parks what
//! arrives next: the messages wait here until the epoch is sealed, which
//! writes them as one object of the checkpoint store (a segment) and lists it
//! in the address's entry; when the mailbox has drained to half its cap, the
//! oldest segment is loaded back behind it. So one backed-up address holds its
//! cap and no more, and the partition keeps taking input for every other one.
//! Order holds: while anything is parked, everything new is parked behind it.
//! This module keeps the parked state of one address and names segments; the
//! partition decides when to park and unpark, the worker and committer do the
//! reading and writing.

use std::collections::VecDeque;

use statefun_proto::internal::Envelope;

/// Where the segments of a partition are stored.
pub fn prefix(partition: u32) -> String {
    format!("parked-{partition:05}/")
}

/// Where a segment named `name` (see [`segment_name`]) is stored.
pub fn object_key(partition: u32, name: &str) -> String {
    format!("{}{name}.pb", prefix(partition))
}

/// A segment's name: unique to the history, the writer's lease and the epoch
/// (a fenced writer of the same epoch never overwrites the next owner's).
pub fn segment_name(id_prefix: &str, lease: u64, epoch: u64, n: u64) -> String {
    format!("{id_prefix}.l{lease}.e{epoch}.{n}")
}

#[derive(Debug, Default, Clone)]
pub struct Parked {
    /// Segments written by sealed epochs, oldest first, with the epoch that
    /// wrote each (0: restored, so committed): one is read back only once its
    /// epoch is committed, as it may not be written before.
    pub segments: VecDeque<(String, u64)>,
    /// Arrived since the last seal, after every segment.
    pub fresh: Vec<Envelope>,
    pub fresh_bytes: usize,
    /// The oldest segment is being loaded.
    pub loading: bool,
}

impl Parked {
    pub fn from_segments(segments: Vec<String>) -> Option<Box<Self>> {
        let segments = segments.into_iter().map(|name| (name, 0)).collect();
        Some(Box::new(Self { segments, ..Self::default() })).filter(|p| !p.segments.is_empty())
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty() && self.fresh.is_empty()
    }
}
