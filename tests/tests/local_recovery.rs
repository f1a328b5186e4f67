//! Recovery in local mode: a runtime killed with SIGKILL in the middle of a
//! run and restarted ends in the same state, with the same results, as a run
//! that was never interrupted (nothing lost, nothing applied twice).

use std::path::Path;
use std::time::Duration;

use statefun_tests::cart::{self, Workload};
use statefun_tests::{FunctionServer, Runtime, send_lines, shopping_cart_module, wait_until};

const TIMEOUT: Duration = Duration::from_secs(120);

fn restock(data_dir: &Path, module: &Path, workload: &Workload) {
    send_lines(data_dir, module, "restock", &workload.restock_records());
    wait_until(TIMEOUT, "restocks to be applied", || workload.restocks_applied(data_dir) == workload.restocks.len());
}

fn wait_for_all_results(data_dir: &Path, workload: &Workload) {
    wait_until(TIMEOUT, "a result for every order", || cart::results(data_dir).len() >= workload.orders.len());
}

#[test]
fn sigkill_mid_run_then_restart_matches_an_uninterrupted_run() {
    let server = FunctionServer::start(shopping_cart::functions());
    let workload = cart::workload(50, 1000, 7);
    let (first_half, second_half) = workload.orders.split_at(workload.orders.len() / 2);

    // Reference: one uninterrupted run.
    let reference_dir = tempfile::tempdir().expect("tempdir");
    let data = reference_dir.path().join("data");
    let module = shopping_cart_module(reference_dir.path(), server.addr.port());
    let mut runtime = Runtime::start(&data, &module, &[]);
    restock(&data, &module, &workload);
    send_lines(&data, &module, "add-to-cart", &workload.order_records(&workload.orders));
    wait_for_all_results(&data, &workload);
    assert!(runtime.terminate().success(), "runtime log:\n{}", runtime.log_text());
    let reference = cart::check(&data, &workload);
    assert_eq!(reference.redelivered, 0, "the local log drops re-published records by id");

    // The same workload, with a SIGKILL while the first half is being processed.
    let crash_dir = tempfile::tempdir().expect("tempdir");
    let data = crash_dir.path().join("data");
    let module = shopping_cart_module(crash_dir.path(), server.addr.port());
    let mut runtime = Runtime::start(&data, &module, &[]);
    restock(&data, &module, &workload);
    send_lines(&data, &module, "add-to-cart", &workload.order_records(first_half));
    wait_until(TIMEOUT, "the first results", || cart::results(&data).len() >= first_half.len() / 4);
    runtime.kill();
    let at_kill = cart::results(&data).len();
    eprintln!("killed with {at_kill} of {} results on the egress", workload.orders.len());
    assert!(at_kill < workload.orders.len());

    send_lines(&data, &module, "add-to-cart", &workload.order_records(second_half));
    let mut restarted = Runtime::start(&data, &module, &[]);
    wait_for_all_results(&data, &workload);
    assert!(restarted.terminate().success(), "runtime log:\n{}", restarted.log_text());
    let report = cart::check(&data, &workload);
    assert_eq!(report.redelivered, 0, "no result delivered twice");

    assert_eq!(report.results, reference.results, "the same result for every request");
    assert_eq!(report.state, reference.state, "the same carts and inventory levels");
}

/// A worker stopped right after it took the partitions over (a rolling deploy,
/// a scale-in) commits, on its way out, an epoch the next owner recovers: a
/// new owner's first commit is a snapshot on the stop path too, so every
/// lease's chain in the checkpoint store starts with one.
#[test]
fn a_stop_right_after_a_take_over_leaves_a_history_the_next_owner_recovers() {
    let server = FunctionServer::start(shopping_cart::functions());
    let workload = cart::workload(4, 12, 11);
    let (first, rest) = workload.orders.split_at(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let module = shopping_cart_module(dir.path(), server.addr.port());

    let mut runtime = Runtime::start(&data, &module, &[]);
    restock(&data, &module, &workload);
    assert!(runtime.terminate().success(), "runtime log:\n{}", runtime.log_text());
    let before = lease_chains(&data.join("checkpoints"));

    // Takes every partition over, reads one order, and stops long before its commit interval is up.
    let mut taker = Runtime::start(&data, &module, &["--commit-interval", "60s", "--group-commit", "false"]);
    send_lines(&data, &module, "add-to-cart", &workload.order_records(first));
    std::thread::sleep(Duration::from_secs(3));
    assert!(taker.terminate().success(), "runtime log:\n{}", taker.log_text());
    let after = lease_chains(&data.join("checkpoints"));
    assert!(after.keys().any(|chain| !before.contains_key(chain)), "the stop committed under a new lease: {after:?}");
    for ((partition, lease), first_object) in &after {
        assert!(
            first_object.ends_with(".snapshot.pb"),
            "partition {partition}: the first object of lease {lease} is {first_object}"
        );
    }

    let mut next = Runtime::start(&data, &module, &[]);
    send_lines(&data, &module, "add-to-cart", &workload.order_records(rest));
    wait_for_all_results(&data, &workload);
    assert!(next.terminate().success(), "runtime log:\n{}", next.log_text());
    let report = cart::check(&data, &workload);
    assert_eq!(report.redelivered, 0, "no result delivered twice");
}

/// For each (partition directory, lease) in the checkpoint store, the name of the lease's earliest object.
fn lease_chains(checkpoints: &Path) -> std::collections::BTreeMap<(String, String), String> {
    let mut first_objects = std::collections::BTreeMap::new();
    for partition in std::fs::read_dir(checkpoints).expect("checkpoint directory").flatten() {
        let partition_name = partition.file_name().to_string_lossy().into_owned();
        if !partition_name.starts_with("partition-") {
            continue;
        }
        let mut names: Vec<String> = std::fs::read_dir(partition.path())
            .expect("partition directory")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        // epoch-<epoch>.lease-<lease>.<kind>.pb, sorted by epoch
        for name in names {
            let lease = name.split('.').nth(1).unwrap_or_default().to_owned();
            first_objects.entry((partition_name.clone(), lease)).or_insert(name);
        }
    }
    first_objects
}
