//! Addresses with messages that wait for an invocation slot. A partition runs
//! at most `Bounds::max_running` batches at once; the addresses beyond wait
//! here, by function type, and the types take turns: a function whose backlog
//! spans a million addresses (a fan-out) does not hold another function's
//! messages behind all of it.
//!
//! Only ids are kept (the messages stay in their mailboxes), so a waiting
//! address costs a few dozen bytes here. Whether an address is already waiting
//! is the caller's to know. No I/O, no routing.

use std::collections::VecDeque;

use statefun_proto::reqreply::Address;

use super::table::ByType;

#[derive(Debug, Default)]
pub struct Ready {
    by_type: ByType<VecDeque<Box<str>>>,
    /// The types with addresses waiting, in the order of their turns (by [`ByType::number_of`]).
    turns: VecDeque<usize>,
    len: usize,
    id_bytes: usize,
}

/// What one waiting address costs besides its id's bytes: the id's box and allocation header.
const ENTRY_OVERHEAD: usize = std::mem::size_of::<Box<str>>() + 16;

impl Ready {
    pub fn push(&mut self, address: &Address) {
        let number = self.by_type.number_of(address);
        let Some((_, queue)) = self.by_type.by_number_mut(number) else { return };
        if queue.is_empty() {
            self.turns.push_back(number);
        }
        queue.push_back(address.id.as_str().into());
        self.len += 1;
        self.id_bytes += address.id.len();
    }

    /// The next address: the oldest of the type whose turn it is.
    pub fn pop(&mut self) -> Option<Address> {
        let number = self.turns.pop_front()?;
        let (function_type, queue) = self.by_type.by_number_mut(number)?;
        let id = queue.pop_front()?;
        if queue.is_empty() {
            // A burst's queue gives its memory back once drained.
            *queue = VecDeque::new();
        } else {
            self.turns.push_back(number);
        }
        self.len -= 1;
        self.id_bytes -= id.len();
        Some(function_type.address(&*id))
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// About what the waiting addresses hold.
    pub fn bytes(&self) -> usize {
        self.len * ENTRY_OVERHEAD + self.id_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::FunctionType;

    fn address(name: &str, id: &str) -> Address {
        FunctionType::new("ns", name).address(id)
    }

    #[test]
    fn types_take_turns_and_each_keeps_its_order() {
        let mut ready = Ready::default();
        for id in ["a1", "a2", "a3"] {
            ready.push(&address("a", id));
        }
        ready.push(&address("b", "b1"));
        ready.push(&address("b", "b2"));
        let order: Vec<String> = std::iter::from_fn(|| ready.pop()).map(|a| format!("{}/{}", a.r#type, a.id)).collect();
        assert_eq!(order, ["a/a1", "b/b1", "a/a2", "b/b2", "a/a3"]);
        assert!(ready.is_empty());
        assert_eq!(ready.len(), 0);
    }

    #[test]
    fn a_type_whose_queue_drained_joins_the_turns_again_at_the_back() {
        let mut ready = Ready::default();
        ready.push(&address("a", "a1"));
        ready.push(&address("b", "b1"));
        assert_eq!(ready.pop().map(|a| a.id), Some("a1".to_owned()));
        ready.push(&address("a", "a2"));
        assert_eq!(ready.pop().map(|a| a.id), Some("b1".to_owned()));
        assert_eq!(ready.pop().map(|a| a.id), Some("a2".to_owned()));
        assert_eq!(ready.pop(), None);
    }
}
