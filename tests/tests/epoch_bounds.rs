//! Epoch bounds in local mode: an epoch whose outbox fills up is committed,
//! and its results published, before its commit interval is up, so a long
//! interval does not let a partition hold an unbounded epoch in memory.

use std::time::Duration;

use statefun_tests::cart;
use statefun_tests::{FunctionServer, Runtime, send_lines, shopping_cart_module, wait_until};

const TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn a_full_epoch_is_committed_before_its_interval_is_up() {
    let server = FunctionServer::start(shopping_cart::functions());
    let workload = cart::workload(20, 400, 11);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let module = shopping_cart_module(dir.path(), server.addr.port());

    // Restock with the default interval, so every order meets its stock.
    let mut runtime = Runtime::start(&data, &module, &[]);
    send_lines(&data, &module, "restock", &workload.restock_records());
    wait_until(TIMEOUT, "restocks to be applied", || workload.restocks_applied(&data) == workload.restocks.len());
    assert!(runtime.terminate().success(), "runtime log:\n{}", runtime.log_text());

    // An hour between commits: only the epoch bound can publish anything while it runs.
    let mut runtime = Runtime::start(
        &data,
        &module,
        &["--commit-interval", "1h", "--group-commit", "false", "--max-epoch-entries", "10"],
    );
    send_lines(&data, &module, "add-to-cart", &workload.order_records(&workload.orders));
    let half = workload.orders.len() / 2;
    wait_until(TIMEOUT, "half of the results within the commit interval", || cart::results(&data).len() >= half);
    assert!(runtime.terminate().success(), "runtime log:\n{}", runtime.log_text());

    // The orders still under way when it stopped finish after a restart with
    // the default interval, so the check below sees every order answered.
    let mut runtime = Runtime::start(&data, &module, &[]);
    wait_until(TIMEOUT, "every order to be answered", || cart::results(&data).len() >= workload.orders.len());
    assert!(runtime.terminate().success(), "runtime log:\n{}", runtime.log_text());

    let report = cart::check(&data, &workload);
    assert_eq!(report.redelivered, 0, "no result published twice");
}

#[test]
fn with_group_commit_results_are_published_while_the_interval_is_far_off() {
    let server = FunctionServer::start(shopping_cart::functions());
    let workload = cart::workload(10, 100, 12);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let module = shopping_cart_module(dir.path(), server.addr.port());

    // An hour between commits and no bound on the epoch's size that 100 orders reach: only an epoch
    // sealed because output waits in it publishes anything while the runtime runs.
    let args = ["--commit-interval", "1h", "--max-epoch-entries", "100000"];
    let mut runtime = Runtime::start(&data, &module, &args);
    send_lines(&data, &module, "restock", &workload.restock_records());
    wait_until(TIMEOUT, "restocks to be applied", || workload.restocks_applied(&data) == workload.restocks.len());
    send_lines(&data, &module, "add-to-cart", &workload.order_records(&workload.orders));
    wait_until(TIMEOUT, "every order to be answered", || cart::results(&data).len() >= workload.orders.len());
    assert!(runtime.terminate().success(), "runtime log:\n{}", runtime.log_text());
    let report = cart::check(&data, &workload);
    assert_eq!(report.redelivered, 0, "no result published twice");
}
