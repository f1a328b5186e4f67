//! The shopping cart workload and its checks, shared by the end-to-end tests.
//!
//! Stock is either enough for every request of an item or none at all, so the
//! outcome of each request is known in advance whatever the interleaving; that
//! makes runs comparable with each other and with the expectation.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::{Deployment, state_json, tail_json};

pub const STOCKED: &[&str] = &["apple", "banana", "cherry", "durian"];
pub const UNSTOCKED: &[&str] = &["elderberry", "fig"];

#[derive(Clone, Debug)]
pub struct Order {
    pub request_id: String,
    pub user: String,
    pub item: String,
    pub quantity: i32,
}

#[derive(Clone, Debug)]
pub struct Workload {
    pub restocks: BTreeMap<String, i32>,
    pub orders: Vec<Order>,
}

/// `events` orders over `users` users, drawn from a seeded generator.
pub fn workload(users: usize, events: usize, seed: u64) -> Workload {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move |n: usize| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) % n as u64) as usize
    };
    let items: Vec<&str> = STOCKED.iter().chain(UNSTOCKED).copied().collect();
    let orders: Vec<Order> = (0..events)
        .map(|i| Order {
            request_id: format!("req-{i:05}"),
            user: format!("user-{:03}", next(users)),
            item: items[next(items.len())].to_owned(),
            quantity: 1 + next(3) as i32,
        })
        .collect();
    let mut restocks = BTreeMap::new();
    for item in STOCKED {
        let demand: i32 = orders.iter().filter(|o| o.item == *item).map(|o| o.quantity).sum();
        restocks.insert((*item).to_owned(), demand + 5);
    }
    Workload { restocks, orders }
}

impl Workload {
    pub fn restock_records(&self) -> Vec<Value> {
        self.restocks
            .iter()
            .map(|(item, quantity)| json!({"key": item, "value": {"itemId": item, "quantity": quantity}}))
            .collect()
    }

    pub fn order_records(&self, orders: &[Order]) -> Vec<Value> {
        orders
            .iter()
            .map(|o| {
                json!({"key": o.user, "value": {"userId": o.user, "itemId": o.item, "quantity": o.quantity, "requestId": o.request_id}})
            })
            .collect()
    }

    fn expected_status(&self, order: &Order) -> &'static str {
        if self.restocks.contains_key(&order.item) { "reserved" } else { "unavailable" }
    }
}

/// One result per request: (user, item, quantity, status) — the order-independent part.
pub type Results = BTreeMap<String, (String, String, i64, String)>;

/// Every cart result on the egress, grouped by request id.
pub fn results<D: Deployment + ?Sized>(deployment: &D) -> BTreeMap<String, Vec<Value>> {
    let mut by_request: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for record in tail_json(deployment, "cart-results") {
        let request = record["value"]["request_id"].as_str().unwrap_or_default().to_owned();
        by_request.entry(request).or_default().push(record);
    }
    by_request
}

/// Checks the contract on a finished run and returns its results and state.
///
/// - every order has exactly one result on the egress, with the expected status;
/// - for every item, reserved + in stock equals what was restocked;
/// - every cart holds exactly the reserved quantities of its user's results.
pub fn check<D: Deployment + ?Sized>(deployment: &D, workload: &Workload) -> (Results, Value) {
    let by_request = results(deployment);
    let mut summary = Results::new();
    for order in &workload.orders {
        let records = by_request.get(&order.request_id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(records.len(), 1, "request {} has {} results: {records:?}", order.request_id, records.len());
        let value = &records[0]["value"];
        assert_eq!(value["user_id"], json!(order.user), "{value}");
        assert_eq!(value["item_id"], json!(order.item), "{value}");
        assert_eq!(value["quantity"], json!(order.quantity), "{value}");
        assert_eq!(value["status"], json!(workload.expected_status(order)), "{value}");
        summary.insert(
            order.request_id.clone(),
            (order.user.clone(), order.item.clone(), i64::from(order.quantity), workload.expected_status(order).to_owned()),
        );
    }
    assert_eq!(by_request.len(), workload.orders.len(), "results for requests nobody sent");

    let state = state_json(deployment);
    for (item, restocked) in &workload.restocks {
        let inventory = &state[format!("shoppingcart/inventory/{item}")];
        let in_stock = inventory["in_stock"].as_i64().unwrap_or(0);
        let reserved = inventory["reserved"].as_i64().unwrap_or(0);
        assert_eq!(in_stock + reserved, i64::from(*restocked), "inventory of {item}: {inventory}");
    }
    let mut carts: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (user, item, quantity, status) in summary.values() {
        if status == "reserved" {
            *carts.entry(user.clone()).or_default().entry(item.clone()).or_default() += quantity;
        }
    }
    for (user, expected) in &carts {
        let items = &state[format!("shoppingcart/cart/{user}")]["items"];
        let actual: BTreeMap<String, i64> =
            serde_json::from_value(items.clone()).unwrap_or_else(|e| panic!("cart of {user} is not a map ({e}): {items}"));
        assert_eq!(&actual, expected, "cart of {user}");
    }
    let stored_carts = state.as_object().map_or(0, |o| o.keys().filter(|k| k.starts_with("shoppingcart/cart/")).count());
    assert_eq!(stored_carts, carts.len(), "carts exist only for users with a reservation");
    (summary, state)
}
