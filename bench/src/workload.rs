//! What a scenario appends to its ingress, and which event an egress record completes.
//!
//! Events are numbered from 0 across a scenario (warm-up, throughput phase,
//! latency phase); the driver keeps each event's append time under its number.

use prost::Message as _;
use statefun_proto::shoppingcart::{AddToCart, RestockItem};
use statefun_proto::types::LongWrapper;
use statefun_runtime::log::{AppendRecord, LogRecord, ShardChoice};

/// A workload: events in, results out.
pub trait Workload: Send {
    /// The stream events are appended to.
    fn ingress(&self) -> &str;
    /// The stream results are read from.
    fn egress(&self) -> &str;
    /// The record of event `n` (called once per event, in order).
    fn event(&mut self, n: usize) -> AppendRecord;
    /// The event an egress record is the result of.
    fn completes(&mut self, record: &LogRecord) -> Option<usize>;
}

/// Counters over `keys` keys, events spread evenly (round robin); each adds 1,
/// so the n-th result of a key is its n-th event.
pub struct Counters {
    ingress: String,
    egress: String,
    prefix: String,
    /// Event numbers of each key, in append order.
    events: Vec<Vec<u32>>,
}

impl Counters {
    pub fn new(keys: usize, ingress: &str, egress: &str, prefix: &str) -> Self {
        Self {
            ingress: ingress.to_owned(),
            egress: egress.to_owned(),
            prefix: prefix.to_owned(),
            events: vec![Vec::new(); keys.max(1)],
        }
    }
}

impl Workload for Counters {
    fn ingress(&self) -> &str {
        &self.ingress
    }

    fn egress(&self) -> &str {
        &self.egress
    }

    fn event(&mut self, n: usize) -> AppendRecord {
        let key = n % self.events.len();
        self.events[key].push(n as u32);
        AppendRecord {
            partition_key: format!("{}{key}", self.prefix),
            shard: ShardChoice::ByKey,
            data: LongWrapper { value: 1 }.encode_to_vec(),
            id: None,
        }
    }

    fn completes(&mut self, record: &LogRecord) -> Option<usize> {
        let key: usize = record.partition_key.strip_prefix(&self.prefix)?.parse().ok()?;
        let count: usize = std::str::from_utf8(&record.data).ok()?.parse().ok()?;
        let n = *self.events.get(key)?.get(count.checked_sub(1)?)?;
        Some(n as usize)
    }
}

/// The shopping cart: orders of `users` users for `items` items, each item
/// restocked with more than enough first, so every order is reserved.
pub struct Cart {
    users: usize,
    items: usize,
    prefix: String,
}

impl Cart {
    pub fn new(users: usize, items: usize, prefix: &str) -> Self {
        Self { users: users.max(1), items: items.max(1), prefix: prefix.to_owned() }
    }

    pub fn items(&self) -> usize {
        self.items
    }

    fn item(&self, i: usize) -> String {
        format!("{}i{i}", self.prefix)
    }

    /// Restocks for every item on stream `restock`.
    pub fn restocks(&self) -> Vec<AppendRecord> {
        (0..self.items)
            .map(|i| AppendRecord {
                partition_key: self.item(i),
                shard: ShardChoice::ByKey,
                data: RestockItem { item_id: self.item(i), quantity: 1_000_000_000 }.encode_to_vec(),
                id: None,
            })
            .collect()
    }
}

/// A fixed, well-mixed sequence (an LCG step), so runs are repeatable.
fn mix(n: usize, salt: u64) -> usize {
    let x = (n as u64 ^ salt).wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (x >> 33) as usize
}

impl Workload for Cart {
    fn ingress(&self) -> &str {
        "add-to-cart"
    }

    fn egress(&self) -> &str {
        shopping_cart::CART_RESULTS_STREAM
    }

    fn event(&mut self, n: usize) -> AppendRecord {
        let user = format!("{}u{}", self.prefix, mix(n, 1) % self.users);
        let order = AddToCart {
            user_id: user.clone(),
            item_id: self.item(mix(n, 2) % self.items),
            quantity: 1,
            request_id: format!("r{n}"),
        };
        AppendRecord { partition_key: user, shard: ShardChoice::ByKey, data: order.encode_to_vec(), id: None }
    }

    fn completes(&mut self, record: &LogRecord) -> Option<usize> {
        let result: shopping_cart::CartResult = serde_json::from_slice(&record.data).ok()?;
        result.request_id.strip_prefix('r')?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(key: &str, data: &[u8]) -> LogRecord {
        LogRecord {
            shard: "s".into(),
            sequence: "1".into(),
            partition_key: key.into(),
            data: data.to_vec(),
            id: None,
            appended_at_ms: 0,
        }
    }

    #[test]
    fn the_nth_result_of_a_counter_completes_its_nth_event() {
        let mut counters = Counters::new(3, "in", "out", "k");
        let keys: Vec<String> = (0..7).map(|n| counters.event(n).partition_key).collect();
        assert_eq!(keys, ["k0", "k1", "k2", "k0", "k1", "k2", "k0"]);
        assert_eq!(counters.completes(&result("k0", b"3")), Some(6));
        assert_eq!(counters.completes(&result("k1", b"1")), Some(1));
        assert_eq!(counters.completes(&result("k1", b"9")), None);
        assert_eq!(counters.completes(&result("x1", b"1")), None);
    }

    #[test]
    fn a_cart_result_completes_the_order_with_its_request_id() {
        let mut cart = Cart::new(10, 4, "");
        let order = AddToCart::decode(cart.event(5).data.as_slice()).expect("order");
        assert_eq!(order.request_id, "r5");
        let json = br#"{"request_id":"r5","user_id":"u1","item_id":"i1","quantity":1,"status":"reserved",
                        "in_cart":1,"remaining":3}"#;
        assert_eq!(cart.completes(&result("u1", json)), Some(5));
        assert_eq!(cart.restocks().len(), 4);
    }
}
