//! A function deploy while events flow: the function server stops and starts
//! again on its port twice (a few hundred milliseconds down, then a few
//! seconds) while 2,000 shopping-cart orders go through the runtime. Every
//! order gets exactly one result, nothing is dead-lettered, and the runtime
//! never holds more connections to the functions than its in-flight cap.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use statefun_runtime::invoke::http::MAX_IN_FLIGHT;
use statefun_tests::cart;
use statefun_tests::{FunctionServer, Runtime, dead_letters_json, send_lines, shopping_cart_module, wait_until};

const TIMEOUT: Duration = Duration::from_secs(300);

/// Established connections whose server end is on `port` (Linux' /proc/net/tcp).
/// Counted by their address pair: the kernel writes the table in pieces, one
/// read at a time, and a table that changes between two reads can list a
/// connection twice.
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local_port = format!(":{port:04X}");
    let established: std::collections::HashSet<(&str, &str)> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() > 3 && fields[1].ends_with(&local_port) && fields[3] == "01").then(|| (fields[1], fields[2]))
        })
        .collect();
    established.len()
}

/// Samples [`connections_to`] every 20 ms until `stop`; the most seen.
fn watch_connections(port: u16, stop: Arc<AtomicBool>) -> (Arc<AtomicUsize>, std::thread::JoinHandle<()>) {
    let peak = Arc::new(AtomicUsize::new(0));
    let seen = peak.clone();
    let watcher = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            seen.fetch_max(connections_to(port), Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (peak, watcher)
}

#[test]
fn a_function_server_restarted_twice_while_orders_flow_loses_nothing_and_dead_letters_nothing() {
    let mut server = FunctionServer::start(shopping_cart::functions());
    let port = server.addr.port();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let module = shopping_cart_module(dir.path(), port);
    let workload = cart::workload(200, 2000, 43);
    let mut runtime = Runtime::start(&data, &module, &["--partitions", "4"]);
    let stop = Arc::new(AtomicBool::new(false));
    let (peak, watcher) = watch_connections(port, stop.clone());
    send_lines(&data, &module, "restock", &workload.restock_records());
    wait_until(TIMEOUT, "restocks to be applied", || workload.restocks_applied(&data) == workload.restocks.len());

    let started = Instant::now();
    let (first, second) = workload.orders.split_at(workload.orders.len() / 2);
    let mut downtimes = Vec::new();
    for (orders, down) in [(first, Duration::from_millis(300)), (second, Duration::from_secs(3))] {
        send_lines(&data, &module, "add-to-cart", &workload.order_records(orders));
        let results_before = workload.results(&data).len();
        server.stop();
        std::thread::sleep(down);
        server = FunctionServer::start_on(shopping_cart::functions(), port);
        downtimes.push((down, results_before));
    }
    wait_until(TIMEOUT, "a result for every order, or a dead letter", || {
        workload.results(&data).len() >= workload.orders.len() || !dead_letters_json(&data).is_empty()
    });
    let elapsed = started.elapsed();
    let dead_letters = dead_letters_json(&data);
    let results = workload.results(&data).len();
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let peak = peak.load(Ordering::Relaxed);
    eprintln!(
        "{} orders, {results} results, function server down {downtimes:?} (down time, results before it), {} dead \
         letters, at most {peak} connections to the functions (in-flight cap {MAX_IN_FLIGHT}), {:.1} s",
        workload.orders.len(),
        dead_letters.len(),
        elapsed.as_secs_f64()
    );
    assert!(runtime.terminate().success(), "runtime log:\n{}", runtime.log_text());
    assert!(dead_letters.is_empty(), "nothing is dead-lettered: {dead_letters:?}");
    assert!(peak <= MAX_IN_FLIGHT, "{peak} connections open at once, more than the in-flight cap {MAX_IN_FLIGHT}");
    let report = cart::check(&data, &workload);
    assert_eq!(report.redelivered, 0, "exactly one result per order");
}
