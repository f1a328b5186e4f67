//! An endpoint's requests in flight, bounded, with the function types it
//! serves taking turns for a free place.
//!
//! An endpoint serves every type its `functions` pattern matches, over a
//! bounded number of connections. A first-come queue for them would put a
//! type's request behind every request another type built before it: a
//! fan-out of one type, with a thousand batches in flight per partition,
//! would make each of another type's invocations wait for hundreds of the
//! fan-out's to end. Here the requests that wait are queued by type, and a
//! place that frees goes to the types in turn, oldest request first within a
//! type. Counting and queueing only: nothing here sends a request.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::address::FunctionType;

pub struct TypeTurns {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Places free. While any request waits, none is: a place that frees goes to a waiting one.
    free: usize,
    waiting: HashMap<FunctionType, VecDeque<oneshot::Sender<()>>>,
    /// The types with requests waiting, in the order of their turns.
    turns: VecDeque<FunctionType>,
}

/// A place in flight, given back when dropped.
pub struct Turn<'a>(&'a TypeTurns);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.give_back();
    }
}

/// A request waiting for its turn; if it stops waiting (its call was dropped)
/// after a place was handed to it, the place goes on to the next.
struct Waiting<'a> {
    turns: &'a TypeTurns,
    place: oneshot::Receiver<()>,
    served: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.served {
            self.place.close();
            if self.place.try_recv().is_ok() {
                self.turns.give_back();
            }
        }
    }
}

impl TypeTurns {
    pub fn new(places: usize) -> Self {
        Self { state: Mutex::new(State { free: places, ..State::default() }) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is consistent between statements; a panic elsewhere while it was held leaves it usable.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A place for a request of `function_type`, once one is free and the types before it had their turns.
    pub async fn turn(&self, function_type: &FunctionType) -> Turn<'_> {
        let place = {
            let mut state = self.state();
            if state.free > 0 {
                state.free -= 1;
                return Turn(self);
            }
            let (tx, rx) = oneshot::channel();
            let State { waiting, turns, .. } = &mut *state;
            let queue = waiting.entry(function_type.clone()).or_default();
            if queue.is_empty() {
                turns.push_back(function_type.clone());
            }
            queue.push_back(tx);
            rx
        };
        let mut waiting = Waiting { turns: self, place, served: false };
        // The sender is only ever dropped by sending: a place came.
        let _ = (&mut waiting.place).await;
        waiting.served = true;
        Turn(self)
    }

    /// Hands a place to the next type's oldest waiting request, or frees it.
    fn give_back(&self) {
        let mut state = self.state();
        let State { free, waiting, turns } = &mut *state;
        while let Some(function_type) = turns.pop_front() {
            let Some(queue) = waiting.get_mut(&function_type) else { continue };
            let next = queue.pop_front();
            if queue.is_empty() {
                waiting.remove(&function_type);
            } else {
                turns.push_back(function_type);
            }
            // A request that stopped waiting has closed its receiver: the place goes on.
            if next.is_some_and(|tx| tx.send(()).is_ok()) {
                return;
            }
        }
        *free += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use futures_util::FutureExt;

    use super::*;

    /// Lets spawned tasks run until they wait again.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_type_that_waits_behind_a_flood_of_another_gets_the_next_free_place() {
        let turns = Arc::new(TypeTurns::new(2));
        let (flood, other) = (FunctionType::new("ns", "flood"), FunctionType::new("ns", "other"));
        let held = (turns.turn(&flood).await, turns.turn(&flood).await);
        let (order_tx, mut order) = tokio::sync::mpsc::unbounded_channel();
        let (release_tx, _) = tokio::sync::broadcast::channel::<()>(1);
        let mut waiters = Vec::new();
        // A hundred of the flood's requests wait, then one of the other type.
        for (n, function_type) in (0..100).map(|n| (n, &flood)).chain([(100, &other)]) {
            let (turns, function_type, order_tx) = (turns.clone(), function_type.clone(), order_tx.clone());
            let mut release = release_tx.subscribe();
            waiters.push(tokio::spawn(async move {
                let _turn = turns.turn(&function_type).await;
                let _ = order_tx.send(n);
                let _ = release.recv().await;
            }));
            settle().await;
        }
        drop(held.0);
        settle().await;
        assert_eq!(order.try_recv().ok(), Some(0), "the flood's oldest first: its type's turn");
        drop(held.1);
        settle().await;
        assert_eq!(order.try_recv().ok(), Some(100), "then the other type's, ahead of 99 of the flood's");
        assert!(order.try_recv().is_err(), "both places taken");
        drop(release_tx);
        for waiter in waiters {
            waiter.await.expect("a waiter");
        }
        let served: Vec<u32> = std::iter::from_fn(|| order.try_recv().ok()).collect();
        assert_eq!(served, (1..100).collect::<Vec<_>>(), "the rest of the flood, in order");
    }

    #[tokio::test]
    async fn a_place_is_not_lost_to_a_request_that_stopped_waiting() {
        let turns = TypeTurns::new(1);
        let function_type = FunctionType::new("ns", "f");
        let held = turns.turn(&function_type).await;
        // One gives up (its call dropped) while it waits, before the place frees.
        let given_up = tokio::time::timeout(Duration::from_millis(10), turns.turn(&function_type)).await;
        assert!(given_up.is_err(), "no place free");
        // One is handed the place, but dropped before it runs again to take it.
        let mut handed = Box::pin(turns.turn(&function_type));
        assert!((&mut handed).now_or_never().is_none(), "waits");
        drop(held);
        drop(handed);
        let again = tokio::time::timeout(Duration::from_secs(10), turns.turn(&function_type)).await;
        assert!(again.is_ok(), "the place went on to the next, and is free again");
    }
}
