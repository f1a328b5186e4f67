//! What a partition keeps per address: state values, the mailbox (with the batch
//! in flight at its head) and the delayed messages the address sent.
//!
//! Plain data plus expiry rules; no I/O and no routing.

use std::collections::VecDeque;

use statefun_proto::internal::{AddressEntry, DelayedMessage, Envelope, StoredState};
use statefun_proto::reqreply::Address;
use statefun_proto::reqreply::from_function::{ExpirationSpec, PersistedValueSpec, expiration_spec::ExpireMode};

#[derive(Debug, Default, Clone)]
pub struct AddressRecord {
    pub states: Vec<StoredState>,
    pub mailbox: VecDeque<Envelope>,
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

impl AddressRecord {
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

    pub fn to_entry(&self, address: &Address) -> AddressEntry {
        AddressEntry {
            address: Some(address.clone()),
            states: self.states.clone(),
            mailbox: self.mailbox.iter().cloned().collect(),
            in_flight: self.in_flight,
            timers: self.timers.clone(),
        }
    }

    pub fn from_entry(entry: AddressEntry) -> Self {
        Self {
            states: entry.states,
            mailbox: entry.mailbox.into(),
            in_flight: entry.in_flight,
            token: 0,
            negotiation_rounds: 0,
            isolate: 0,
            timers: entry.timers,
        }
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
