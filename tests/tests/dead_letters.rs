//! Dead letters end to end, in local mode: invocations that keep failing for
//! two users' carts (injected function errors) are dead-lettered as objects
//! with their reason, address and messages while every other user is served;
//! after a restart without the fault, re-injecting them gives every event
//! exactly one result and the usual checks hold.

use std::path::Path;
use std::time::Duration;

use statefun_tests::cart::{self, Workload};
use statefun_tests::{FunctionServer, Runtime, WithEnv, send_lines, shopping_cart_module, statefun, wait_until};

const TIMEOUT: Duration = Duration::from_secs(120);
const OBJECTS: [&str; 2] = ["--dead-letter-destination", "objects"];

fn dead_letters(data: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["dead-letters", "--json"];
    args.extend(OBJECTS);
    args.extend(extra);
    statefun(data, &args).lines().map(|l| serde_json::from_str(l).expect("dead letter JSON")).collect()
}

/// How many messages the letters hold together.
fn messages_in<'a>(letters: impl IntoIterator<Item = &'a serde_json::Value>) -> usize {
    letters.into_iter().map(|l| l["messages"].as_array().map_or(0, Vec::len)).sum()
}

fn orders_of<'a>(workload: &'a Workload, user: &str) -> Vec<&'a cart::Order> {
    workload.orders.iter().filter(|o| o.user == user).collect()
}

#[test]
fn failing_addresses_are_dead_lettered_others_are_served_and_reinjection_completes_them() {
    let server = FunctionServer::start(shopping_cart::functions());
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let module = shopping_cart_module(dir.path(), server.addr.port());
    let workload = cart::workload(20, 300, 31);
    let mut users: Vec<&str> = workload.orders.iter().map(|o| o.user.as_str()).collect();
    users.dedup();
    let failing = [users[0].to_owned(), users[1].to_owned()];
    let failing_orders: usize = failing.iter().map(|u| orders_of(&workload, u).len()).sum();
    assert!(failing_orders > 0);

    let faults = failing.iter().map(|u| format!("invoke:shoppingcart/cart/{u}.error=1")).collect::<Vec<_>>().join(";");
    let faulty = WithEnv { data: &data, extra: vec![("STATEFUN_FAULTS".into(), faults)] };
    let mut args = vec!["--invoke-attempts", "2", "--invoke-backoff", "10ms"];
    args.extend(OBJECTS);
    let mut runtime = Runtime::start(&faulty, &module, &args);
    send_lines(&data, &module, "restock", &workload.restock_records());
    wait_until(TIMEOUT, "restocks to be applied", || workload.restocks_applied(&data) == workload.restocks.len());
    send_lines(&data, &module, "add-to-cart", &workload.order_records(&workload.orders));
    wait_until(TIMEOUT, "every other user's results and the dead letters", || {
        workload.results(&data).len() >= workload.orders.len() - failing_orders
            && messages_in(&dead_letters(&data, &[])) >= failing_orders
    });
    assert!(runtime.terminate().success(), "runtime log:\n{}", runtime.log_text());

    // Exactly the failing users' events (a failed batch is tried one by one until one fails alone; a batch
    // failing right after that is dead-lettered whole).
    let letters = dead_letters(&data, &[]);
    assert_eq!(messages_in(&letters), failing_orders, "{letters:?}");
    let results = workload.results(&data);
    for user in &failing {
        let address = format!("shoppingcart/cart/{user}");
        let theirs: Vec<_> = letters.iter().filter(|l| l["address"] == address.as_str()).collect();
        assert_eq!(messages_in(theirs.iter().copied()), orders_of(&workload, user).len(), "{letters:?}");
        assert!(theirs.iter().all(|l| l["reason"].as_str().is_some_and(|r| r.contains("injected"))), "{theirs:?}");
        assert!(orders_of(&workload, user).iter().all(|o| !results.contains_key(&o.request_id)));
    }
    let objects = std::fs::read_dir(data.join("checkpoints").join("dead-letters")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(objects, letters.len(), "one object per dead letter under the data directory");

    // The fault is gone: re-inject, and every event ends with exactly one result.
    let mut healthy = Runtime::start(&data, &module, &args);
    for user in &failing {
        let address = format!("shoppingcart/cart/{user}");
        let mut reinject = vec!["dead-letters", "--reinject", "--address", &address];
        reinject.extend(OBJECTS);
        statefun(&data, &reinject);
    }
    wait_until(TIMEOUT, "a result for every order", || workload.results(&data).len() >= workload.orders.len());
    assert!(healthy.terminate().success(), "runtime log:\n{}", healthy.log_text());
    let report = cart::check(&data, &workload);
    assert_eq!(report.redelivered, 0, "each re-injected message applied once");
}
