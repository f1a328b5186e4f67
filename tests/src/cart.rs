//! The shopping cart workload and its checks, shared by the end-to-end tests.
//!
//! Names carry a per-scenario prefix, so scenarios sharing egress streams
//! (their names are fixed by the example functions) can tell their records
//! apart. An item gets either enough stock for every request, none at all, or
//! (in scarce workloads) about half its demand; only the last makes outcomes
//! depend on the interleaving, and the checks tie those to the state instead.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::{Deployment, state_json, tail_json};

const ITEMS: &[&str] = &[
    "apple",
    "banana",
    "cherry",
    "durian",
    "elderberry",
    "fig",
    "grape",
    "honeydew",
    "kiwi",
    "lemon",
    "mango",
    "nectarine",
];

#[derive(Clone, Debug)]
pub struct Order {
    pub request_id: String,
    pub user: String,
    pub item: String,
    pub quantity: i32,
}

#[derive(Clone, Debug)]
pub struct Workload {
    /// Prefix of every user, item and request id of this workload.
    pub prefix: String,
    pub restocks: BTreeMap<String, i32>,
    pub orders: Vec<Order>,
}

/// The shape of a workload.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub users: usize,
    pub events: usize,
    /// Items restocked with enough for every request.
    pub plenty: usize,
    /// Items restocked with about half their demand (outcomes depend on order).
    pub scarce: usize,
    /// Items never restocked (every request fails).
    pub missing: usize,
    pub seed: u64,
}

/// `events` orders over `users` users, every outcome known in advance.
pub fn workload(users: usize, events: usize, seed: u64) -> Workload {
    generate("", Shape { users, events, plenty: 4, scarce: 0, missing: 2, seed })
}

pub fn generate(prefix: &str, shape: Shape) -> Workload {
    let mut state = shape.seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move |n: usize| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) % n as u64) as usize
    };
    let count = shape.plenty + shape.scarce + shape.missing;
    assert!(count <= ITEMS.len() && count > 0, "between 1 and {} items", ITEMS.len());
    let items: Vec<String> = ITEMS[..count].iter().map(|i| format!("{prefix}{i}")).collect();
    let orders: Vec<Order> = (0..shape.events)
        .map(|i| Order {
            request_id: format!("{prefix}req-{i:05}"),
            user: format!("{prefix}user-{:03}", next(shape.users)),
            item: items[next(items.len())].clone(),
            quantity: 1 + next(3) as i32,
        })
        .collect();
    let mut restocks = BTreeMap::new();
    for (index, item) in items.iter().enumerate().take(shape.plenty + shape.scarce) {
        let demand: i32 = orders.iter().filter(|o| &o.item == item).map(|o| o.quantity).sum();
        let stock = if index < shape.plenty { demand + 5 } else { (demand / 2).max(1) };
        restocks.insert(item.clone(), stock);
    }
    Workload { prefix: prefix.to_owned(), restocks, orders }
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

    /// The status every interleaving gives, when there is one.
    fn expected_status(&self, order: &Order) -> Option<&'static str> {
        let Some(stock) = self.restocks.get(&order.item) else { return Some("unavailable") };
        let demand: i32 = self.orders.iter().filter(|o| o.item == order.item).map(|o| o.quantity).sum();
        (*stock >= demand).then_some("reserved")
    }

    /// How many restocks of this workload are on `inventory-updates`.
    pub fn restocks_applied<D: Deployment + ?Sized>(&self, deployment: &D) -> usize {
        tail_json(deployment, "inventory-updates")
            .iter()
            .filter(|r| r["value"]["item_id"].as_str().is_some_and(|i| self.restocks.contains_key(i)))
            .count()
    }

    /// This workload's cart results on the egress, grouped by request id.
    pub fn results<D: Deployment + ?Sized>(&self, deployment: &D) -> BTreeMap<String, Vec<Value>> {
        let mut by_request: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for record in tail_json(deployment, "cart-results") {
            let request = record["value"]["request_id"].as_str().unwrap_or_default().to_owned();
            if request.starts_with(&self.prefix) {
                by_request.entry(request).or_default().push(record);
            }
        }
        by_request
    }
}

/// One result per request: (user, item, quantity, status).
pub type Results = BTreeMap<String, (String, String, i64, String)>;

/// What a finished run produced.
#[derive(Debug)]
pub struct Report {
    pub results: Results,
    pub state: Value,
    /// Results delivered more than once (identical copies; possible only on
    /// logs that cannot drop a re-published record by its id).
    pub redelivered: usize,
}

/// Every cart result of the default (unprefixed) workload, grouped by request id.
pub fn results<D: Deployment + ?Sized>(deployment: &D) -> BTreeMap<String, Vec<Value>> {
    Workload { prefix: String::new(), restocks: BTreeMap::new(), orders: Vec::new() }.results(deployment)
}

/// Checks the contract on a finished run:
///
/// - every order has one result (copies, if any, are identical), with the
///   status every interleaving gives where there is one;
/// - for every item, reserved + in stock equals what was restocked, and the
///   reserved quantity is exactly what the results say was reserved;
/// - every cart holds exactly the reserved quantities of its user's results.
pub fn check<D: Deployment + ?Sized>(deployment: &D, workload: &Workload) -> Report {
    let by_request = workload.results(deployment);
    let mut results = Results::new();
    let mut redelivered = 0;
    for order in &workload.orders {
        let records = by_request.get(&order.request_id).map(Vec::as_slice).unwrap_or_default();
        assert!(!records.is_empty(), "request {} has no result", order.request_id);
        let value = &records[0]["value"];
        for copy in &records[1..] {
            assert_eq!(&copy["value"], value, "copies of the result of {} differ", order.request_id);
        }
        redelivered += records.len() - 1;
        assert_eq!(value["user_id"], json!(order.user), "{value}");
        assert_eq!(value["item_id"], json!(order.item), "{value}");
        assert_eq!(value["quantity"], json!(order.quantity), "{value}");
        let status = value["status"].as_str().unwrap_or_default().to_owned();
        if let Some(expected) = workload.expected_status(order) {
            assert_eq!(status, expected, "{value}");
        }
        results.insert(
            order.request_id.clone(),
            (order.user.clone(), order.item.clone(), i64::from(order.quantity), status),
        );
    }
    assert_eq!(by_request.len(), workload.orders.len(), "results for requests nobody sent");

    let state = state_json(deployment);
    for (item, restocked) in &workload.restocks {
        let inventory = &state[format!("shoppingcart/inventory/{item}")];
        let in_stock = inventory["in_stock"].as_i64().unwrap_or(0);
        let reserved = inventory["reserved"].as_i64().unwrap_or(0);
        assert_eq!(in_stock + reserved, i64::from(*restocked), "inventory of {item}: {inventory}");
        let granted: i64 =
            results.values().filter(|(_, i, _, s)| i == item && s == "reserved").map(|(_, _, q, _)| q).sum();
        assert_eq!(reserved, granted, "reservations of {item} match the reserved results");
    }
    let mut carts: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (user, item, quantity, status) in results.values() {
        if status == "reserved" {
            *carts.entry(user.clone()).or_default().entry(item.clone()).or_default() += quantity;
        }
    }
    for (user, expected) in &carts {
        let items = &state[format!("shoppingcart/cart/{user}")]["items"];
        let actual: BTreeMap<String, i64> = serde_json::from_value(items.clone())
            .unwrap_or_else(|e| panic!("cart of {user} is not a map ({e}): {items}"));
        assert_eq!(&actual, expected, "cart of {user}");
    }
    let prefix = format!("shoppingcart/cart/{}", workload.prefix);
    let stored_carts = state.as_object().map_or(0, |o| o.keys().filter(|k| k.starts_with(&prefix)).count());
    assert_eq!(stored_carts, carts.len(), "carts exist only for users with a reservation");
    Report { results, state, redelivered }
}

impl Workload {
    /// This workload without the orders of `users` (restocks unchanged): what the
    /// other users' events must end with when those users' events were dead-lettered.
    pub fn without_users(&self, users: &[String]) -> Workload {
        let orders = self.orders.iter().filter(|o| !users.contains(&o.user)).cloned().collect();
        Workload { prefix: self.prefix.clone(), restocks: self.restocks.clone(), orders }
    }

    pub fn orders_of(&self, user: &str) -> Vec<&Order> {
        self.orders.iter().filter(|o| o.user == user).collect()
    }
}

/// Checks that the dead letters are exactly the events of `failing` (user ->
/// a text its letters' reasons must contain): each of those events (found by its
/// ingress message id, `<stream>/<shard>/<sequence>`) is dead-lettered at its
/// user's cart with such a reason, no other message is, and none of them has a
/// result. Letters published twice (same messages) count once. Returns the
/// number of distinct dead-lettered messages.
pub fn check_dead_lettered<D: Deployment + ?Sized>(
    deployment: &D,
    workload: &Workload,
    ingress: &str,
    failing: &BTreeMap<String, String>,
) -> usize {
    // Which request each ingress record carried.
    let records = crate::statefun(
        deployment,
        &["tail", "--stream", ingress, "--json", "--type", "type.googleapis.com/shoppingcart.AddToCart"],
    );
    let mut request_of: BTreeMap<String, String> = BTreeMap::new();
    for line in records.lines().filter(|l| !l.trim().is_empty()) {
        let record: Value = serde_json::from_str(line).expect("tail JSON line");
        let value = &record["value"];
        let request = value["request_id"].as_str().or_else(|| value["requestId"].as_str()).unwrap_or_default();
        let id = format!(
            "{ingress}/{}/{}",
            record["shard"].as_str().unwrap_or_default(),
            record["sequence"].as_str().unwrap_or_default()
        );
        request_of.insert(id, request.to_owned());
    }
    let mut dead: BTreeMap<String, String> = BTreeMap::new();
    for letter in crate::dead_letters_json(deployment) {
        let address = letter["address"].as_str().unwrap_or_default().to_owned();
        let reason = letter["reason"].as_str().unwrap_or_default();
        for message in letter["messages"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let id = message.as_str().unwrap_or_default();
            let Some(request) = request_of.get(id) else {
                panic!("dead letter of a message that is no order of this run: {letter}")
            };
            let order = workload
                .orders
                .iter()
                .find(|o| &o.request_id == request)
                .unwrap_or_else(|| panic!("no order {request}: {letter}"));
            assert_eq!(address, format!("shoppingcart/cart/{}", order.user), "{letter}");
            let expected = failing
                .get(&order.user)
                .unwrap_or_else(|| panic!("{} of {} was dead-lettered: {letter}", order.request_id, order.user));
            assert!(
                reason.contains(expected.as_str()),
                "reason of {}: `{reason}` lacks `{expected}`",
                order.request_id
            );
            dead.insert(request.clone(), order.user.clone());
        }
    }
    let results = workload.results(deployment);
    for user in failing.keys() {
        for order in workload.orders_of(user) {
            assert!(dead.contains_key(&order.request_id), "{} of {user} was not dead-lettered", order.request_id);
            assert!(!results.contains_key(&order.request_id), "{} of {user} has a result", order.request_id);
        }
    }
    dead.len()
}
