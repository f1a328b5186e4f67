//! Ingress messages for another partition of the same process, taken before
//! the epoch that read them commits.
//!
//! A message read from an ingress whose target another partition owns goes
//! into the reading epoch's outbox and through the exchange once that epoch
//! commits: two commits stand between an event and its result. When the
//! target's partition runs in the same process, the reading partition also
//! forwards the message at once ([`Forward`]); the receiver takes it and
//! records, in its own epochs, the message's position in its shard (its
//! [`IngressMarks`]). The copy that later arrives through the exchange carries
//! the same position (`Envelope.ingress`) and is dropped, and so is the copy a
//! reading partition sends after it restarted before its commit: it reads the
//! same record again, and a record always becomes the same messages.
//!
//! A forward is taken only if it continues the receiver's mark for its shard
//! exactly (`previous`): one taken out of turn would move the mark past
//! messages the exchange has yet to bring, which would then be dropped. The
//! sender knows `previous` only for what it sent since its start ([`Chains`]);
//! until then, and whenever a forward was not taken, the exchange brings the
//! messages in order and the marks catch up.
//!
//! A message's id already begins with its record's `stream/shard/sequence`
//! (see the worker's routing). A position stored with a message leaves those
//! three out wherever the id says them ([`Origin::said_by_id`]): every message
//! a reading partition sends another carries its position, and written whole
//! it made each exchange message about half as large again.
//!
//! This module keeps positions, their order, the receiver's marks and the
//! sender's chains; it does no I/O and knows nothing of how a forward travels.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use statefun_proto::internal::{Envelope, IngressPosition};

/// Where a message read from an ingress comes from, borrowed from the record being read.
#[derive(Clone, Copy, Debug)]
pub struct Origin<'a> {
    pub stream: &'a str,
    pub shard: &'a str,
    pub sequence: &'a str,
    /// 1-based index of the user record in an aggregated record; 0 for a plain record.
    pub user_record: u32,
    /// Which of the ingress's targets the message is for.
    pub target: u32,
}

impl Origin<'_> {
    pub fn to_position(self) -> IngressPosition {
        IngressPosition {
            stream: self.stream.to_owned(),
            shard: self.shard.to_owned(),
            sequence: self.sequence.to_owned(),
            user_record: self.user_record,
            target: self.target,
        }
    }

    fn mark(&self) -> Mark {
        Mark { sequence: self.sequence.to_owned(), user_record: self.user_record, target: self.target }
    }

    /// Whether `id`'s first three `/`-separated parts are this origin's stream, shard and
    /// sequence: then a stored position leaves them out, and [`Self::of`] reads them back
    /// from the id. Checked as the exact inverse of that reading, so a name that itself
    /// holds a `/` is simply stored whole.
    pub fn said_by_id(&self, id: &str) -> bool {
        let mut parts = id.splitn(4, '/');
        parts.next() == Some(self.stream) && parts.next() == Some(self.shard) && parts.next() == Some(self.sequence)
    }

    /// The origin a stored position stands for, in the envelope of id `id`: the position's
    /// own stream, shard and sequence, or, where it left them out, the id's. `None` if it
    /// left them out and the id does not have them (a record this runtime did not write).
    pub fn of<'a>(position: &'a IngressPosition, id: &'a str) -> Option<Origin<'a>> {
        let (user_record, target) = (position.user_record, position.target);
        if !position.stream.is_empty() {
            let (stream, shard, sequence) = (&position.stream, &position.shard, &position.sequence);
            return Some(Origin { stream, shard, sequence, user_record, target });
        }
        let mut parts = id.splitn(4, '/');
        let (stream, shard, sequence) = (parts.next()?, parts.next()?, parts.next()?);
        Some(Origin { stream, shard, sequence, user_record, target })
    }
}

/// A message's place within its shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    sequence: String,
    user_record: u32,
    target: u32,
}

impl Mark {
    /// Order within one shard: by sequence number, then user record, then target.
    fn cmp_origin(&self, origin: &Origin<'_>) -> Ordering {
        compare_sequences(&self.sequence, origin.sequence)
            .then(self.user_record.cmp(&origin.user_record))
            .then(self.target.cmp(&origin.target))
    }
}

/// Orders sequence numbers as numbers: Kinesis' are decimal integers longer
/// than any machine integer, the local streams' `<chunk>.<index>` (or a plain
/// chunk of the earlier layout, which stands for index 0).
pub fn compare_sequences(a: &str, b: &str) -> Ordering {
    let mut a_parts = a.split('.');
    let mut b_parts = b.split('.');
    loop {
        match (a_parts.next(), b_parts.next()) {
            (None, None) => return Ordering::Equal,
            (x, y) => {
                let (x, y) = (x.unwrap_or("0").trim_start_matches('0'), y.unwrap_or("0").trim_start_matches('0'));
                let order = x.len().cmp(&y.len()).then_with(|| x.cmp(y));
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

/// An ingress message handed to the partition that owns its target before
/// the epoch that read it commits. Its envelope carries its position.
#[derive(Debug)]
pub struct Forward {
    pub partition: u32,
    /// The message of the same shard the sender sent this partition just before.
    pub previous: Mark,
    pub envelope: Envelope,
}

/// A receiver's last message taken from each ingress shard that another partition reads.
#[derive(Clone, Debug, Default)]
pub struct IngressMarks(BTreeMap<String, BTreeMap<String, Mark>>);

impl IngressMarks {
    fn get(&self, stream: &str, shard: &str) -> Option<&Mark> {
        self.0.get(stream)?.get(shard)
    }

    fn set(&mut self, origin: &Origin<'_>) {
        let shards = match self.0.get_mut(origin.stream) {
            Some(shards) => shards,
            None => self.0.entry(origin.stream.to_owned()).or_default(),
        };
        match shards.get_mut(origin.shard) {
            Some(mark) => {
                mark.sequence.clear();
                mark.sequence.push_str(origin.sequence);
                (mark.user_record, mark.target) = (origin.user_record, origin.target);
            }
            None => {
                shards.insert(origin.shard.to_owned(), origin.mark());
            }
        }
    }

    /// Marks a message that arrived through the exchange; false if it was
    /// taken already (its position is not past its shard's mark).
    pub fn advance(&mut self, origin: &Origin<'_>) -> bool {
        if self.get(origin.stream, origin.shard).is_some_and(|mark| mark.cmp_origin(origin).is_ge()) {
            return false;
        }
        self.set(origin);
        true
    }

    /// Marks a forwarded message if it continues its shard's mark (`previous`
    /// is the mark); false, and nothing marked, if not.
    pub fn continue_with(&mut self, previous: &Mark, origin: &Origin<'_>) -> bool {
        if self.get(origin.stream, origin.shard) != Some(previous) {
            return false;
        }
        self.set(origin);
        true
    }

    pub fn to_records(&self) -> Vec<IngressPosition> {
        let mut records = Vec::new();
        for (stream, shards) in &self.0 {
            for (shard, mark) in shards {
                records.push(IngressPosition {
                    stream: stream.clone(),
                    shard: shard.clone(),
                    sequence: mark.sequence.clone(),
                    user_record: mark.user_record,
                    target: mark.target,
                });
            }
        }
        records
    }

    pub fn from_records(records: Vec<IngressPosition>) -> Self {
        let mut marks = Self::default();
        for record in &records {
            let (stream, shard, sequence) = (&record.stream, &record.shard, &record.sequence);
            marks.set(&Origin { stream, shard, sequence, user_record: record.user_record, target: record.target });
        }
        marks
    }
}

/// A sender's last message sent to each partition from each shard it reads,
/// since its start (what a forward names as `previous`).
#[derive(Debug, Default)]
pub struct Chains {
    last: HashMap<u32, Vec<(String, String, Mark)>>,
}

impl Chains {
    /// Notes that the message at `origin` goes to `partition`: the message of
    /// its shard sent there before it, if known.
    pub fn sent(&mut self, partition: u32, origin: &Origin<'_>) -> Option<Mark> {
        let shards = self.last.entry(partition).or_default();
        match shards.iter_mut().find(|(stream, shard, _)| stream == origin.stream && shard == origin.shard) {
            Some((_, _, mark)) => Some(std::mem::replace(mark, origin.mark())),
            None => {
                shards.push((origin.stream.to_owned(), origin.shard.to_owned(), origin.mark()));
                None
            }
        }
    }

    /// Forgets what was sent: the next message to each partition is not forwarded.
    pub fn clear(&mut self) {
        self.last.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(sequence: &str, user_record: u32, target: u32) -> Origin<'_> {
        Origin { stream: "in", shard: "s0", sequence, user_record, target }
    }

    #[test]
    fn sequence_numbers_are_ordered_as_numbers() {
        assert_eq!(compare_sequences("9", "10"), Ordering::Less);
        assert_eq!(
            compare_sequences("49590338271490256608559692538361571095921575989136588898", "9"),
            Ordering::Greater
        );
        assert_eq!(compare_sequences("12.3", "9.100"), Ordering::Greater);
        assert_eq!(compare_sequences("12.3", "12.10"), Ordering::Less);
        assert_eq!(compare_sequences("12", "12.0"), Ordering::Equal);
        assert_eq!(compare_sequences("12", "12.1"), Ordering::Less);
    }

    #[test]
    fn a_message_through_the_exchange_is_dropped_when_its_shard_is_marked_at_or_past_it() {
        let mut marks = IngressMarks::default();
        assert!(marks.advance(&position("5", 0, 0)));
        assert!(!marks.advance(&position("5", 0, 0)), "the same message again");
        assert!(marks.advance(&position("5", 0, 1)), "the record's message for the next target");
        assert!(!marks.advance(&position("4", 0, 3)));
        assert!(marks.advance(&position("10", 0, 0)), "10 comes after 5");
        let other_shard = Origin { shard: "s1", ..position("1", 0, 0) };
        assert!(marks.advance(&other_shard), "each shard has its own mark");
        assert_eq!(IngressMarks::from_records(marks.to_records()).to_records(), marks.to_records());
    }

    #[test]
    fn a_forward_is_taken_only_where_it_continues_the_mark() {
        let mut chains = Chains::default();
        let origin = |sequence| Origin { stream: "in", shard: "s0", sequence, user_record: 0, target: 0 };
        assert_eq!(chains.sent(1, &origin("1")), None, "nothing was sent before");
        let previous = chains.sent(1, &origin("2")).expect("1 was sent before");
        let mut marks = IngressMarks::default();
        assert!(!marks.continue_with(&previous, &position("2", 0, 0)), "1 has not arrived yet");
        assert!(marks.advance(&position("1", 0, 0)));
        assert!(marks.continue_with(&previous, &position("2", 0, 0)));
        assert!(!marks.advance(&position("2", 0, 0)), "its copy through the exchange");
        assert_eq!(chains.sent(0, &origin("3")), None, "each partition has its own chain");
        chains.clear();
        assert_eq!(chains.sent(1, &origin("4")), None, "forgotten");
    }

    #[test]
    fn a_stored_position_leaves_out_what_the_id_says_and_reads_it_back_from_there() {
        let origin = Origin { stream: "in", shard: "s0", sequence: "12.7", user_record: 3, target: 1 };
        for id in ["in/s0/12.7", "in/s0/12.7/2", "in/s0/12.7/2/1"] {
            assert!(origin.said_by_id(id), "{id}");
            let left_out = IngressPosition { user_record: 3, target: 1, ..Default::default() };
            let read = Origin::of(&left_out, id).expect("the id has the parts");
            assert_eq!(
                (read.stream, read.shard, read.sequence, read.user_record, read.target),
                ("in", "s0", "12.7", 3, 1)
            );
        }
        for id in ["in/s0/12.70", "in/s0", "in/s1/12.7", "x/in/s0/12.7", "in-s0-12.7"] {
            assert!(!origin.said_by_id(id), "{id}");
        }
        let slashed = Origin { stream: "a/b", ..origin };
        assert!(!slashed.said_by_id("a/b/s0/12.7"), "a name with a slash is stored whole");
        assert!(Origin::of(&IngressPosition::default(), "no-parts").is_none());
        let whole = slashed.to_position();
        let read = Origin::of(&whole, "anything").expect("stored whole");
        assert_eq!((read.stream, read.shard, read.sequence), ("a/b", "s0", "12.7"));
    }
}
