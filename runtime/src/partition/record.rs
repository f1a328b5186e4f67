//! What a partition keeps per address: state values, the mailbox (with the batch
//! in flight at its head) and the delayed messages the address sent.
//!
//! Plain data plus expiry rules; no I/O and no routing. The mailbox knows how
//! much of it the checkpoint chain already holds, so an epoch delta carries only
//! the messages that arrived and how many left, never a whole backlog again.

use std::collections::VecDeque;

use statefun_proto::internal::{AddressEntry, DelayedMessage, Envelope, StoredState};
use statefun_proto::reqreply::Address;
use statefun_proto::reqreply::from_function::{ExpirationSpec, PersistedValueSpec, expiration_spec::ExpireMode};

#[derive(Debug, Default, Clone)]
pub struct AddressRecord {
    pub states: Vec<StoredState>,
    mailbox: VecDeque<Envelope>,
    /// How the checkpoint chain's image of the mailbox relates to this one.
    checkpointed: Checkpointed,
    /// How many messages at the head of the mailbox are in the batch in flight.
    pub in_flight: u32,
    /// Identifies the batch in flight, so a late reply to an older batch is ignored.
    pub token: u64,
    /// Negotiation rounds of the batch in flight (not persisted: a restart may renegotiate).
    pub negotiation_rounds: u32,
    /// After a batch of several messages failed, this many messages at the head
    /// go one at a time, so only a poison message is dead-lettered (not persisted:
    /// after a restart the batch is simply tried whole again).
    pub isolate: u32,
    pub timers: Vec<DelayedMessage>,
}

/// What the last sealed epoch recorded of a mailbox.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Checkpointed {
    /// The record was created after the last seal: its next entry carries the whole mailbox.
    #[default]
    Nothing,
    /// The chain holds the mailbox as it was at the last seal, of which `consumed`
    /// messages have left the head since and the first `kept` are still here.
    Head { kept: u32, consumed: u32 },
}

impl AddressRecord {
    pub fn mailbox(&self) -> &VecDeque<Envelope> {
        &self.mailbox
    }

    pub fn push_message(&mut self, envelope: Envelope) {
        self.mailbox.push_back(envelope);
    }

    /// Removes up to `n` messages from the head of the mailbox.
    pub fn take_messages(&mut self, n: usize) -> Vec<Envelope> {
        let taken: Vec<Envelope> = self.mailbox.drain(..n.min(self.mailbox.len())).collect();
        if let Checkpointed::Head { kept, consumed } = &mut self.checkpointed {
            let from_checkpoint = (*kept).min(taken.len() as u32);
            *kept -= from_checkpoint;
            *consumed += from_checkpoint;
        }
        taken
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty() && self.mailbox.is_empty() && self.timers.is_empty()
    }

    pub fn state(&self, name: &str) -> Option<&StoredState> {
        self.states.iter().find(|s| s.name == name)
    }

    pub fn set_state(&mut self, state: StoredState) {
        match self.states.iter_mut().find(|s| s.name == state.name) {
            Some(slot) => *slot = state,
            None => self.states.push(state),
        }
    }

    pub fn remove_state(&mut self, name: &str) -> bool {
        let before = self.states.len();
        self.states.retain(|s| s.name != name);
        before != self.states.len()
    }

    /// Drops every value whose expiry has passed; true when something was dropped.
    pub fn expire(&mut self, specs: &[PersistedValueSpec], now_ms: i64) -> bool {
        let before = self.states.len();
        self.states.retain(|s| {
            let spec = specs.iter().find(|spec| spec.state_name == s.name);
            !is_expired(s, spec.and_then(|spec| spec.expiration_spec.as_ref()), now_ms)
        });
        before != self.states.len()
    }

    /// The record's checkpoint entry: everything for a snapshot; for a delta,
    /// the mailbox as what left its head and what arrived since the last seal.
    /// Either way the chain now holds this mailbox.
    pub fn seal_entry(&mut self, address: &Address, snapshot: bool) -> AddressEntry {
        let mut entry = AddressEntry {
            address: Some(address.clone()),
            states: self.states.clone(),
            in_flight: self.in_flight,
            timers: self.timers.clone(),
            ..Default::default()
        };
        match self.checkpointed {
            Checkpointed::Head { kept, consumed } if !snapshot => {
                entry.mailbox_appends = true;
                entry.mailbox_consumed = consumed;
                entry.mailbox = self.mailbox.iter().skip(kept as usize).cloned().collect();
            }
            _ => entry.mailbox = self.mailbox.iter().cloned().collect(),
        }
        self.checkpointed = Checkpointed::Head { kept: self.mailbox.len() as u32, consumed: 0 };
        entry
    }

    /// A record as a snapshot entry (or a delta entry of a new record) describes it.
    pub fn from_entry(entry: AddressEntry) -> Self {
        let kept = entry.mailbox.len() as u32;
        Self {
            states: entry.states,
            mailbox: entry.mailbox.into(),
            checkpointed: Checkpointed::Head { kept, consumed: 0 },
            in_flight: entry.in_flight,
            token: 0,
            negotiation_rounds: 0,
            isolate: 0,
            timers: entry.timers,
        }
    }

    /// Applies a delta entry to the record it describes a change of.
    pub fn apply_delta(&mut self, entry: AddressEntry) -> Result<(), String> {
        if !entry.mailbox_appends {
            *self = Self::from_entry(entry);
            return Ok(());
        }
        let consumed = entry.mailbox_consumed as usize;
        if consumed > self.mailbox.len() {
            return Err(format!("{consumed} messages left a mailbox of {}", self.mailbox.len()));
        }
        self.mailbox.drain(..consumed);
        self.mailbox.extend(entry.mailbox);
        self.checkpointed = Checkpointed::Head { kept: self.mailbox.len() as u32, consumed: 0 };
        self.states = entry.states;
        self.in_flight = entry.in_flight;
        self.timers = entry.timers;
        Ok(())
    }
}

/// AFTER_WRITE counts from the last write, AFTER_INVOKE from the last write or
/// invocation, whichever is later; no spec or mode NONE never expires.
pub fn is_expired(state: &StoredState, expiration: Option<&ExpirationSpec>, now_ms: i64) -> bool {
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

    fn stored(written: i64, accessed: i64) -> StoredState {
        StoredState { name: "s".into(), value: None, written_at_ms: written, accessed_at_ms: accessed }
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
}
