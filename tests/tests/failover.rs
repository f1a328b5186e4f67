//! Exactly-once under failure: workers killed at random moments over and
//! over, a worker frozen past its lease (a zombie), and two workers sharing
//! the partitions when one dies. Every scenario ends with the shopping cart
//! checks: every event has exactly one result (copies of a re-published
//! result are identical and counted), reserved + in stock = restocked for
//! every item, and every cart matches its results.

use std::time::{Duration, Instant};

use statefun_tests::aws::AwsDeployment;
use statefun_tests::cart::{self, Shape, Workload};
use statefun_tests::{Deployment, FunctionServer, Runtime, send_lines, shopping_cart_module, wait_until};

const TIMEOUT: Duration = Duration::from_secs(300);
const PARTITIONS: &str = "4";
/// Short leases, so take-overs in these tests take seconds.
const FAST_LEASES: [&str; 4] = ["--lease-renew", "300ms", "--lease-failover", "2s"];
const KILLS: usize = 20;

fn run_args(extra: &[&'static str]) -> Vec<&'static str> {
    let mut args = vec!["--partitions", PARTITIONS];
    args.extend(FAST_LEASES);
    args.extend(extra);
    args
}

fn http_endpoint(server: &FunctionServer) -> String {
    format!(
        "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: shoppingcart/*\n  urlPathTemplate: http://{}/statefun",
        server.addr
    )
}

/// A pseudo-random delay in `[low, high)` milliseconds (deterministic per seed, no extra dependency).
fn delay(seed: &mut u64, low: u64, high: u64) -> Duration {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    Duration::from_millis(low + (*seed >> 33) % (high - low))
}

/// Starts and SIGKILLs the worker `KILLS` times, each after a random
/// lifetime (so kills land during invocations, commits and publishing alike),
/// sending a share of the events before each start so there is always work in
/// flight, then lets a last worker finish. Returns the results seen at each kill.
fn crash_loop<D: Deployment + ?Sized>(
    deployment: &D,
    module: &std::path::Path,
    workload: &Workload,
    ingress: (&str, &str),
    lifetimes_ms: (u64, u64),
    seed: u64,
) -> Vec<usize> {
    let (restock, add_to_cart) = ingress;
    // Leases renewed every 200 ms and taken over after 1 s: each new worker on
    // the AWS stack waits that long for its killed predecessor's leases.
    let mut args = vec!["--partitions", PARTITIONS, "--lease-renew", "200ms", "--lease-failover", "1s"];
    args.extend(["--commit-interval", "100ms"]);
    let mut runtime = Runtime::start(deployment, module, &args);
    send_lines(deployment, module, restock, &workload.restock_records());
    wait_until(TIMEOUT, "restocks to be applied", || workload.restocks_applied(deployment) == workload.restocks.len());
    runtime.kill();
    let mut seed = seed;
    let mut at_kills = Vec::new();
    let mut chunks = workload.orders.chunks(workload.orders.len().div_ceil(KILLS));
    for _ in 0..KILLS {
        if let Some(chunk) = chunks.next() {
            send_lines(deployment, module, add_to_cart, &workload.order_records(chunk));
        }
        let mut runtime = Runtime::start(deployment, module, &args);
        std::thread::sleep(delay(&mut seed, lifetimes_ms.0, lifetimes_ms.1));
        runtime.kill();
        at_kills.push(workload.results(deployment).len());
    }
    let mut last = Runtime::start(deployment, module, &args);
    let last_started = Instant::now();
    wait_until(TIMEOUT, "a result for every order", || workload.results(deployment).len() >= workload.orders.len());
    eprintln!(
        "the last worker finished the remaining {} events in {:.1} s",
        workload.orders.len() - at_kills.last().copied().unwrap_or(0),
        last_started.elapsed().as_secs_f64()
    );
    if std::env::var_os("STATEFUN_TEST_SHOW_LOG").is_some() {
        eprintln!("{}", last.log_text());
    }
    assert!(last.terminate().success(), "runtime log:\n{}", last.log_text());
    at_kills
}

#[test]
fn twenty_sigkills_at_random_moments_in_local_mode_lose_and_duplicate_nothing() {
    let server = FunctionServer::start(shopping_cart::functions());
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let module = shopping_cart_module(dir.path(), server.addr.port());
    let workload = cart::workload(50, 1000, 21);
    let started = Instant::now();
    // Locally a new worker takes over at once (the data directory's lock proves the old one gone).
    let at_kills = crash_loop(&data, &module, &workload, ("restock", "add-to-cart"), (100, 700), 21);
    let report = cart::check(&data, &workload);
    eprintln!(
        "local crash loop: {} kills survived (results at each kill: {at_kills:?}); {} events checked in {:.1} s",
        at_kills.len(),
        report.results.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(at_kills.len(), KILLS);
    assert!(at_kills.iter().any(|n| *n > 0 && *n < workload.orders.len()), "some kills land mid-run: {at_kills:?}");
    assert_eq!(report.redelivered, 0, "the local log drops re-published records by id");
}

#[test]
fn twenty_sigkills_at_random_moments_on_the_local_aws_stack_lose_nothing() {
    let server = FunctionServer::start(shopping_cart::functions());
    let deployment = AwsDeployment::new();
    let module = deployment.shopping_cart_module(&http_endpoint(&server));
    deployment.setup(&module, 4);
    let workload = cart::generate(
        &format!("crash-{}-", deployment.suffix),
        Shape { users: 50, events: 1000, plenty: 6, scarce: 2, missing: 2, seed: 22 },
    );
    let started = Instant::now();
    let (restock, add_to_cart) = (deployment.ingress("restock"), deployment.ingress("add-to-cart"));
    let at_kills = crash_loop(&deployment, &module, &workload, (&restock, &add_to_cart), (1200, 4000), 22);
    let report = cart::check(&deployment, &workload);
    eprintln!(
        "aws crash loop: {} kills survived (results at each kill: {at_kills:?}); {} events checked in {:.1} s; \
         {} results re-published (identical copies)",
        at_kills.len(),
        report.results.len(),
        started.elapsed().as_secs_f64(),
        report.redelivered
    );
    assert_eq!(at_kills.len(), KILLS);
    assert!(at_kills.iter().any(|n| *n > 0 && *n < workload.orders.len()), "some kills land mid-run: {at_kills:?}");
}

/// Lines of a runtime log that say a lease was taken.
fn leases_taken(runtime: &Runtime) -> usize {
    runtime.log_text().lines().filter(|l| l.contains("took the lease")).count()
}

#[test]
fn a_frozen_worker_whose_leases_were_taken_over_publishes_nothing_when_it_wakes() {
    let server = FunctionServer::start(shopping_cart::functions());
    let deployment = AwsDeployment::new();
    let module = deployment.shopping_cart_module(&http_endpoint(&server));
    deployment.setup(&module, 4);
    let workload = cart::generate(
        &format!("zombie-{}-", deployment.suffix),
        Shape { users: 50, events: 1000, plenty: 6, scarce: 2, missing: 2, seed: 23 },
    );
    let args = run_args(&[]);
    let zombie = Runtime::start(&deployment, &module, &args);
    send_lines(&deployment, &module, &deployment.ingress("restock"), &workload.restock_records());
    wait_until(TIMEOUT, "restocks to be applied", || workload.restocks_applied(&deployment) == workload.restocks.len());
    send_lines(&deployment, &module, &deployment.ingress("add-to-cart"), &workload.order_records(&workload.orders));
    wait_until(TIMEOUT, "the first results", || workload.results(&deployment).len() >= 100);
    zombie.signal("STOP");
    let frozen_at = Instant::now();

    let mut successor = Runtime::start(&deployment, &module, &args);
    wait_until(TIMEOUT, "the successor to take every partition", || leases_taken(&successor) >= 4);
    let took_over = frozen_at.elapsed().as_secs_f64();
    wait_until(TIMEOUT, "a result for every order", || workload.results(&deployment).len() >= workload.orders.len());
    // Everything is done: whatever the egress and the exchange hold now, the zombie must not add to.
    let count = |deployment: &AwsDeployment| -> (usize, usize) {
        let results: usize = workload.results(deployment).values().map(Vec::len).sum();
        let exchange = statefun_tests::tail_json(deployment, &format!("exchange-{}", deployment.suffix)).len();
        (results, exchange)
    };
    let before_waking = count(&deployment);

    zombie.signal("CONT");
    wait_until(TIMEOUT, "the zombie to notice it lost its leases", || {
        let log = zombie.log_text();
        log.matches("lost its lease").count() >= 4
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        count(&deployment),
        before_waking,
        "the woken zombie published nothing; its log:\n{}",
        zombie.log_text()
    );
    let zombie_log = zombie.log_text();
    assert!(
        !zombie_log.contains("partition stopped after its last commit"),
        "no last commit from a zombie:\n{zombie_log}"
    );
    assert!(successor.terminate().success(), "successor log:\n{}", successor.log_text());
    let report = cart::check(&deployment, &workload);
    eprintln!(
        "zombie: frozen with its leases; the successor held every partition {took_over:.1} s later; \
         {} events checked, {} results re-published by the successor, none by the zombie",
        report.results.len(),
        report.redelivered
    );
}

#[test]
fn when_one_of_two_workers_dies_the_other_takes_its_partitions_and_finishes() {
    let server = FunctionServer::start(shopping_cart::functions());
    let deployment = AwsDeployment::new();
    let module = deployment.shopping_cart_module(&http_endpoint(&server));
    deployment.setup(&module, 4);
    let workload = cart::generate(
        &format!("pair-{}-", deployment.suffix),
        Shape { users: 50, events: 1000, plenty: 6, scarce: 2, missing: 2, seed: 24 },
    );
    let args = run_args(&[]);
    let mut first = Runtime::start(&deployment, &module, &args);
    wait_until(TIMEOUT, "the first worker to take every partition", || leases_taken(&first) >= 4);
    let mut second = Runtime::start(&deployment, &module, &args);
    // The newcomer asks for its share: two partitions each.
    wait_until(TIMEOUT, "the second worker to get its share", || leases_taken(&second) >= 2);
    send_lines(&deployment, &module, &deployment.ingress("restock"), &workload.restock_records());
    wait_until(TIMEOUT, "restocks to be applied", || workload.restocks_applied(&deployment) == workload.restocks.len());
    send_lines(&deployment, &module, &deployment.ingress("add-to-cart"), &workload.order_records(&workload.orders));
    wait_until(TIMEOUT, "the first results", || workload.results(&deployment).len() >= 200);
    first.kill();
    let killed_at = Instant::now();
    wait_until(TIMEOUT, "the survivor to take the dead worker's partitions", || leases_taken(&second) >= 4);
    let took_over = killed_at.elapsed().as_secs_f64();
    wait_until(TIMEOUT, "a result for every order", || workload.results(&deployment).len() >= workload.orders.len());
    let finished = killed_at.elapsed().as_secs_f64();
    assert!(second.terminate().success(), "survivor log:\n{}", second.log_text());
    let log = second.log_text();
    assert_eq!(log.matches("released the lease").count(), 4, "a stopping worker releases every lease:\n{log}");
    let report = cart::check(&deployment, &workload);
    eprintln!(
        "two workers: one killed; the survivor held its partitions {took_over:.1} s later (failover 2 s) and finished \
         {finished:.1} s after the kill; {} events checked",
        report.results.len()
    );
}
