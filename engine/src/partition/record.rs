//! What a partition keeps per address: state values and the mailbox (with the
//! batch in flight at its head). Delayed messages are the partition's
//! ([`super::timers`]), whoever sent them.
//!
//! Plain data plus expiry rules; no I/O and no routing. Memory is laid out for
//! millions of idle addresses: an idle address is its states and nothing else
//! (the mailbox and its bookkeeping live in a box that exists only while there
//! is something to deliver), and state names and typenames are shared.
//! The mailbox knows how much of it the checkpoint chain already holds, so an
//! epoch delta carries only the messages that arrived and how many left, never
//! a whole backlog again.

use std::collections::VecDeque;
use std::sync::Arc;

use indexmap::{Equivalent, IndexSet};

use statefun_proto::internal::{AddressEntry, Envelope, StoredState};
use statefun_proto::reqreply::from_function::{ExpirationSpec, PersistedValueSpec, expiration_spec::ExpireMode};
use statefun_proto::reqreply::{Address, TypedValue};

use super::parking::Parked;
use super::sealed_entries::{EntryParts, SealedEntries, StateParts};

/// A state's name and its value's typename, kept once per partition: a
/// million addresses with a `count` state of one type share one of these.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct StateKind {
    pub name: Box<str>,
    /// `None` when the state holds no value (`StoredState.value` absent).
    typename: Option<Box<str>>,
}

/// Hashes as [`StateKind`] does, to look one up without building it.
#[derive(Hash)]
struct KindRef<'a> {
    name: &'a str,
    typename: Option<&'a str>,
}

impl Equivalent<Arc<StateKind>> for KindRef<'_> {
    fn equivalent(&self, kind: &Arc<StateKind>) -> bool {
        self.name == &*kind.name && self.typename == kind.typename.as_deref()
    }
}

/// The partition's shared [`StateKind`]s.
#[derive(Debug, Default)]
pub struct Names {
    kinds: IndexSet<Arc<StateKind>>,
}

impl Names {
    fn kind(&mut self, name: &str, typename: Option<&str>) -> Arc<StateKind> {
        if let Some(kind) = self.kinds.get(&KindRef { name, typename }) {
            return kind.clone();
        }
        let kind = Arc::new(StateKind { name: name.into(), typename: typename.map(Into::into) });
        self.kinds.insert(kind.clone());
        kind
    }
}

/// One registered state value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub kind: Arc<StateKind>,
    has_value: bool,
    bytes: Box<[u8]>,
    pub written_at_ms: i64,
    pub accessed_at_ms: i64,
}

impl State {
    fn new(names: &mut Names, name: &str, value: Option<TypedValue>, written_at_ms: i64, accessed_at_ms: i64) -> Self {
        let (kind, has_value, bytes) = match value {
            Some(v) => (names.kind(name, Some(&v.typename)), v.has_value, v.value.into_boxed_slice()),
            None => (names.kind(name, None), false, Box::default()),
        };
        Self { kind, has_value, bytes, written_at_ms, accessed_at_ms }
    }

    pub fn name(&self) -> &str {
        &self.kind.name
    }

    pub fn value(&self) -> Option<TypedValue> {
        let typename = self.kind.typename.as_ref()?;
        Some(TypedValue { typename: typename.to_string(), has_value: self.has_value, value: self.bytes.to_vec() })
    }

    fn parts(&self) -> StateParts<'_> {
        StateParts {
            name: self.name(),
            typename: self.kind.typename.as_deref(),
            has_value: self.has_value,
            value: &self.bytes,
            written_at_ms: self.written_at_ms,
            accessed_at_ms: self.accessed_at_ms,
        }
    }

    pub fn to_stored(&self) -> StoredState {
        StoredState {
            name: self.name().to_owned(),
            value: self.value(),
            written_at_ms: self.written_at_ms,
            accessed_at_ms: self.accessed_at_ms,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct AddressRecord {
    /// A boxed slice, not a `Vec`: most addresses hold one or two states for a long time.
    states: Box<[State]>,
    /// `None` while the address has nothing queued, in flight or parked.
    busy: Option<Box<Busy>>,
}

/// What an address has while it is being delivered to.
#[derive(Debug, Default, Clone)]
pub struct Busy {
    mailbox: VecDeque<Envelope>,
    /// Encoded bytes of the mailbox's messages.
    pub queued_bytes: usize,
    /// Messages beyond the address's cap, after the mailbox's.
    pub parked: Option<Box<Parked>>,
    /// How the checkpoint chain's image of the mailbox relates to this one.
    checkpointed: Checkpointed,
    /// How many messages at the head of the mailbox are in the batch in flight.
    pub in_flight: u32,
    /// Identifies the batch in flight, so a late reply to an older batch is ignored.
    pub token: u64,
    /// Negotiation rounds of the batch in flight (not persisted: a restart may renegotiate).
    pub negotiation_rounds: u32,
    /// After a batch of several messages failed, up to this many messages at the
    /// head go one at a time until one fails alone: that poison message is
    /// dead-lettered and the rest go in batches again (not persisted: after a
    /// restart the batch is simply tried whole again).
    pub isolate: u32,
    /// Batches that failed since the last one that succeeded (not persisted either).
    pub failed_in_a_row: u32,
    /// Waits in the partition's queue for an invocation slot ([`super::ready`]).
    pub ready: bool,
}

/// What the last sealed epoch recorded of a mailbox.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Checkpointed {
    /// Not known (the mailbox was empty at some point since the last seal, or
    /// the record is new): the next entry carries the whole mailbox.
    #[default]
    Nothing,
    /// The chain holds the mailbox as it was at the last seal, of which `consumed`
    /// messages have left the head since and the first `kept` are still here.
    Head { kept: u32, consumed: u32 },
}

static IDLE: Busy = Busy {
    mailbox: VecDeque::new(),
    queued_bytes: 0,
    parked: None,
    checkpointed: Checkpointed::Nothing,
    in_flight: 0,
    token: 0,
    negotiation_rounds: 0,
    isolate: 0,
    failed_in_a_row: 0,
    ready: false,
};

impl AddressRecord {
    /// Whether the address has anything queued, in flight or parked.
    pub fn is_busy(&self) -> bool {
        self.busy.is_some()
    }

    pub fn busy(&self) -> &Busy {
        self.busy.as_deref().unwrap_or(&IDLE)
    }

    pub fn busy_mut(&mut self) -> &mut Busy {
        self.busy.get_or_insert_default()
    }

    pub fn mailbox(&self) -> &VecDeque<Envelope> {
        &self.busy().mailbox
    }

    /// Messages waiting in memory (queued behind the batch in flight, or
    /// parked since the last seal), and whether a batch is in flight.
    pub fn load(&self) -> (usize, bool) {
        let busy = self.busy();
        let parked = busy.parked.as_ref().map_or(0, |parked| parked.fresh.len());
        (busy.mailbox.len() - busy.in_flight as usize + parked, busy.in_flight > 0)
    }

    /// Queues a message of `bytes` encoded bytes.
    pub fn push_message(&mut self, envelope: Envelope, bytes: usize) {
        let busy = self.busy_mut();
        if busy.mailbox.capacity() == 0 {
            // Most mailboxes only ever hold one message (a fan-out's, a request's
            // reply); the growth step would make room for four.
            busy.mailbox.reserve_exact(1);
        }
        busy.mailbox.push_back(envelope);
        busy.queued_bytes += bytes;
    }

    /// Removes up to `n` messages from the head of the mailbox; they and their encoded bytes.
    pub fn take_messages(&mut self, n: usize) -> (Vec<Envelope>, usize) {
        let Some(busy) = self.busy.as_deref_mut() else { return (Vec::new(), 0) };
        let taken: Vec<Envelope> = busy.mailbox.drain(..n.min(busy.mailbox.len())).collect();
        let bytes = taken.iter().map(prost::Message::encoded_len).sum::<usize>();
        busy.queued_bytes -= bytes;
        if let Checkpointed::Head { kept, consumed } = &mut busy.checkpointed {
            let from_checkpoint = (*kept).min(taken.len() as u32);
            *kept -= from_checkpoint;
            *consumed += from_checkpoint;
        }
        (taken, bytes)
    }

    /// The parked segments the address's entry lists.
    pub fn parked_segments(&self) -> impl Iterator<Item = &str> {
        self.busy().parked.iter().flat_map(|p| p.segments.iter().map(|(name, _)| name.as_str()))
    }

    /// Notes that the address left the partition's queue for an invocation slot.
    pub fn leave_ready(&mut self) {
        if let Some(busy) = self.busy.as_deref_mut() {
            busy.ready = false;
        }
    }

    /// Frees what an address needs only while it is busy, once it is not.
    pub fn settle(&mut self) {
        if self.busy.as_ref().is_some_and(|b| b.mailbox.is_empty() && b.in_flight == 0 && b.parked.is_none()) {
            self.busy = None;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty() && self.mailbox().is_empty() && self.busy().parked.is_none()
    }

    pub fn states(&self) -> &[State] {
        &self.states
    }

    pub fn state(&self, name: &str) -> Option<&State> {
        self.states.iter().find(|s| s.name() == name)
    }

    pub fn set_state(&mut self, names: &mut Names, name: &str, value: Option<TypedValue>, now_ms: i64) {
        let state = State::new(names, name, value, now_ms, now_ms);
        match self.states.iter_mut().find(|s| s.name() == name) {
            Some(slot) => *slot = state,
            None => {
                let mut states = std::mem::take(&mut self.states).into_vec();
                states.push(state);
                self.states = states.into_boxed_slice();
            }
        }
    }

    pub fn remove_state(&mut self, name: &str) -> bool {
        self.retain_states(|s| s.name() != name)
    }

    /// Marks every state as seen by an invocation at `now_ms` (AFTER_INVOKE expiry).
    pub fn touch_states(&mut self, now_ms: i64) {
        for state in self.states.iter_mut() {
            state.accessed_at_ms = now_ms;
        }
    }

    /// Drops every value whose expiry has passed; true when something was dropped.
    pub fn expire(&mut self, specs: &[PersistedValueSpec], now_ms: i64) -> bool {
        self.retain_states(|s| {
            let spec = specs.iter().find(|spec| spec.state_name == s.name());
            !is_expired(s, spec.and_then(|spec| spec.expiration_spec.as_ref()), now_ms)
        })
    }

    fn retain_states(&mut self, keep: impl Fn(&State) -> bool) -> bool {
        if self.states.iter().all(&keep) {
            return false;
        }
        let mut states = std::mem::take(&mut self.states).into_vec();
        states.retain(keep);
        self.states = states.into_boxed_slice();
        true
    }

    /// Writes the record's checkpoint entry: everything for a snapshot; for a
    /// delta, the mailbox as what left its head and what arrived since the last
    /// seal. Either way the chain now holds this mailbox.
    pub fn seal_into(&mut self, address: &Address, snapshot: bool, entries: &mut SealedEntries) {
        static NO_MAILBOX: VecDeque<Envelope> = VecDeque::new();
        let states = self.states.iter().map(State::parts).collect();
        let Some(busy) = self.busy.as_deref_mut() else {
            entries.push(&EntryParts {
                address,
                states,
                mailbox: &NO_MAILBOX,
                mailbox_from: 0,
                in_flight: 0,
                parked: Vec::new(),
                mailbox_appends: false,
                mailbox_consumed: 0,
            });
            return;
        };
        let (mailbox_appends, mailbox_from, mailbox_consumed) = match busy.checkpointed {
            Checkpointed::Head { kept, consumed } if !snapshot => (true, kept as usize, consumed),
            _ => (false, 0, 0),
        };
        entries.push(&EntryParts {
            address,
            states,
            mailbox: &busy.mailbox,
            mailbox_from,
            in_flight: busy.in_flight,
            parked: busy.parked.iter().flat_map(|p| p.segments.iter().map(|(name, _)| name.as_str())).collect(),
            mailbox_appends,
            mailbox_consumed,
        });
        busy.checkpointed = Checkpointed::Head { kept: busy.mailbox.len() as u32, consumed: 0 };
    }

    /// A record as a snapshot entry (or a delta entry of a new record) describes it
    /// (its timers, if it has any, are the restorer's: see [`super::timers`]).
    pub fn from_entry(names: &mut Names, entry: AddressEntry) -> Self {
        let states = entry
            .states
            .into_iter()
            .map(|s| State::new(names, &s.name, s.value, s.written_at_ms, s.accessed_at_ms))
            .collect();
        let mut record = Self { states, busy: None };
        if !entry.mailbox.is_empty() || entry.in_flight > 0 || !entry.parked.is_empty() {
            let kept = entry.mailbox.len() as u32;
            record.busy = Some(Box::new(Busy {
                queued_bytes: entry.mailbox.iter().map(prost::Message::encoded_len).sum(),
                parked: Parked::from_segments(entry.parked),
                mailbox: entry.mailbox.into(),
                checkpointed: Checkpointed::Head { kept, consumed: 0 },
                in_flight: entry.in_flight,
                ..Default::default()
            }));
        }
        record
    }

    /// Applies a delta entry to the record it describes a change of.
    pub fn apply_delta(&mut self, names: &mut Names, entry: AddressEntry) -> Result<(), String> {
        if !entry.mailbox_appends {
            *self = Self::from_entry(names, entry);
            return Ok(());
        }
        let consumed = entry.mailbox_consumed as usize;
        let mut mailbox = self.busy.take().map(|b| b.mailbox).unwrap_or_default();
        if consumed > mailbox.len() {
            return Err(format!("{consumed} messages left a mailbox of {}", mailbox.len()));
        }
        mailbox.drain(..consumed);
        mailbox.extend(entry.mailbox);
        *self = Self::from_entry(names, AddressEntry { mailbox: mailbox.into(), mailbox_appends: false, ..entry });
        Ok(())
    }
}

/// AFTER_WRITE counts from the last write, AFTER_INVOKE from the last write or
/// invocation, whichever is later; no spec or mode NONE never expires.
pub fn is_expired(state: &State, expiration: Option<&ExpirationSpec>, now_ms: i64) -> bool {
    let Some(spec) = expiration else { return false };
    let since = match ExpireMode::try_from(spec.mode) {
        Ok(ExpireMode::AfterWrite) => state.written_at_ms,
        Ok(ExpireMode::AfterInvoke) => state.written_at_ms.max(state.accessed_at_ms),
        Ok(ExpireMode::None) | Err(_) => return false,
    };
    spec.expire_after_millis > 0 && now_ms >= since.saturating_add(spec.expire_after_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(written: i64, accessed: i64) -> State {
        State::new(&mut Names::default(), "s", None, written, accessed)
    }

    fn spec(mode: ExpireMode, ms: i64) -> ExpirationSpec {
        ExpirationSpec { mode: mode as i32, expire_after_millis: ms }
    }

    #[test]
    fn after_write_expires_from_last_write_even_if_read_later() {
        let s = stored(1_000, 5_000);
        assert!(!is_expired(&s, Some(&spec(ExpireMode::AfterWrite, 2_000)), 2_999));
        assert!(is_expired(&s, Some(&spec(ExpireMode::AfterWrite, 2_000)), 3_000));
    }

    #[test]
    fn after_invoke_is_extended_by_invocations() {
        let s = stored(1_000, 5_000);
        assert!(!is_expired(&s, Some(&spec(ExpireMode::AfterInvoke, 2_000)), 6_999));
        assert!(is_expired(&s, Some(&spec(ExpireMode::AfterInvoke, 2_000)), 7_000));
    }

    #[test]
    fn no_expiration_spec_never_expires() {
        let s = stored(0, 0);
        assert!(!is_expired(&s, None, i64::MAX));
        assert!(!is_expired(&s, Some(&spec(ExpireMode::None, 1)), i64::MAX));
    }

    #[test]
    fn states_round_trip_and_share_their_names() {
        let mut names = Names::default();
        let value = TypedValue { typename: "t/n".into(), has_value: true, value: vec![1, 2] };
        let mut a = AddressRecord::default();
        let mut b = AddressRecord::default();
        a.set_state(&mut names, "count", Some(value.clone()), 7);
        b.set_state(&mut names, "count", None, 8);
        a.set_state(&mut names, "other", Some(value.clone()), 7);
        b.set_state(&mut names, "other", Some(value.clone()), 8);
        assert!(Arc::ptr_eq(&a.states()[1].kind, &b.states()[1].kind), "same name and typename: one kind");
        assert!(!Arc::ptr_eq(&a.states()[0].kind, &b.states()[0].kind), "no value is another kind");
        assert_eq!(
            a.states()[0].to_stored(),
            StoredState { name: "count".into(), value: Some(value), written_at_ms: 7, accessed_at_ms: 7 }
        );
        assert_eq!(b.states()[0].to_stored().value, None);
    }

    #[test]
    fn an_idle_address_keeps_nothing_but_its_states() {
        let mut record = AddressRecord::default();
        record.push_message(Envelope::default(), 0);
        record.busy_mut().in_flight = 1;
        record.settle();
        assert!(record.busy.is_some(), "a batch is in flight");
        record.take_messages(1);
        record.busy_mut().in_flight = 0;
        record.settle();
        assert!(record.busy.is_none());
    }
}
