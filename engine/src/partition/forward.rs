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
}

/// A message's place within its shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    sequence: String,
    user_record: u32,
    target: u32,
}

impl Mark {
    fn of(position: &IngressPosition) -> Self {
        Self { sequence: position.sequence.clone(), user_record: position.user_record, target: position.target }
    }

    /// Order within one shard: by sequence number, then user record, then target.
    fn cmp_position(&self, position: &IngressPosition) -> Ordering {
        compare_sequences(&self.sequence, &position.sequence)
            .then(self.user_record.cmp(&position.user_record))
            .then(self.target.cmp(&position.target))
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

    fn set(&mut self, position: &IngressPosition) {
        let shards = match self.0.get_mut(&position.stream) {
            Some(shards) => shards,
            None => self.0.entry(position.stream.clone()).or_default(),
        };
        match shards.get_mut(&position.shard) {
            Some(mark) => {
                mark.sequence.clone_from(&position.sequence);
                (mark.user_record, mark.target) = (position.user_record, position.target);
            }
            None => {
                shards.insert(position.shard.clone(), Mark::of(position));
            }
        }
    }

    /// Marks a message that arrived through the exchange; false if it was
    /// taken already (its position is not past its shard's mark).
    pub fn advance(&mut self, position: &IngressPosition) -> bool {
        if self.get(&position.stream, &position.shard).is_some_and(|mark| mark.cmp_position(position).is_ge()) {
            return false;
        }
        self.set(position);
        true
    }

    /// Marks a forwarded message if it continues its shard's mark (`previous`
    /// is the mark); false, and nothing marked, if not.
    pub fn continue_with(&mut self, previous: &Mark, position: &IngressPosition) -> bool {
        if self.get(&position.stream, &position.shard) != Some(previous) {
            return false;
        }
        self.set(position);
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
            marks.set(record);
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

    fn position(sequence: &str, user_record: u32, target: u32) -> IngressPosition {
        IngressPosition { stream: "in".into(), shard: "s0".into(), sequence: sequence.into(), user_record, target }
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
        let other_shard = IngressPosition { shard: "s1".into(), ..position("1", 0, 0) };
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
}
