//! The shopping cart on the local AWS stack with faults injected into the
//! runtime through `STATEFUN_FAULTS` (see `runtime/src/faults`): S3, DynamoDB
//! and Kinesis errors, throttling, lost responses and `PutRecords` partial
//! failures at a few percent of all calls; and invocations that fail or time
//! out for some users' carts, whose events must end as dead letters with their
//! reasons while every other event completes. The CLI verbs that send and
//! read back run without faults: only the worker is under test.
//!
//! Under storage faults a result may reach the egress stream more than once
//! without any crash: Kinesis keeps no record ids, so a `PutRecords` whose
//! answer was lost, or records sent again after a partial failure, are stored
//! twice (see `runtime/src/log/kinesis.rs`). The checks allow identical copies
//! only, and state must still reflect every event exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use statefun_tests::aws::AwsDeployment;
use statefun_tests::cart::{self, Shape, Workload};
use statefun_tests::{Deployment, FunctionServer, Runtime, dead_letters_json, send_lines, wait_until};

const TIMEOUT: Duration = Duration::from_secs(180);
const PARTITIONS: &str = "4";

/// A deployment whose worker runs under a fault plan.
struct Faulty<'a> {
    deployment: &'a AwsDeployment,
    plan: String,
}

impl Deployment for Faulty<'_> {
    fn envs(&self) -> Vec<(String, String)> {
        let mut envs = self.deployment.envs();
        envs.push(("STATEFUN_FAULTS".into(), self.plan.clone()));
        envs
    }
    fn scratch(&self) -> PathBuf {
        self.deployment.scratch()
    }
}

fn http_endpoint(server: &FunctionServer, call: &str) -> String {
    format!(
        "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: shoppingcart/*\n  urlPathTemplate: http://{}/statefun\n  transport:\n    call: {call}",
        server.addr
    )
}

fn restock(deployment: &AwsDeployment, module: &std::path::Path, workload: &Workload) {
    send_lines(deployment, module, &deployment.ingress("restock"), &workload.restock_records());
    wait_until(TIMEOUT, "restocks to be applied", || workload.restocks_applied(deployment) == workload.restocks.len());
}

/// How many faults the runtime's log reports that mention `what`.
fn count(log: &str, what: &str) -> usize {
    log.lines().filter(|l| l.contains("injected fault: ") && l.contains(what)).count()
}

#[test]
fn the_checks_hold_under_s3_dynamodb_and_kinesis_errors_throttling_lost_responses_and_partial_failures() {
    let server = FunctionServer::start(shopping_cart::functions());
    let deployment = AwsDeployment::new();
    let module = deployment.shopping_cart_module(&http_endpoint(&server, "10s"));
    deployment.setup(&module, 4);
    let shape = Shape { users: 40, events: 600, plenty: 6, scarce: 2, missing: 2, seed: 21 };
    let workload = cart::generate(&format!("aws-faults-{}-", deployment.suffix), shape);
    let plan = "seed=21; s3.error=5%; s3.throttle=5%; dynamodb.error=5%; dynamodb.throttle=5%; \
                kinesis.error=5%; kinesis.throttle=5%; aws.lost=3%; kinesis.PutRecords.partial=5%";
    let faulty = Faulty { deployment: &deployment, plan: plan.to_owned() };
    let mut runtime = Runtime::start(&faulty, &module, &["--partitions", PARTITIONS]);
    restock(&deployment, &module, &workload);
    let started = Instant::now();
    send_lines(&deployment, &module, &deployment.ingress("add-to-cart"), &workload.order_records(&workload.orders));
    wait_until(TIMEOUT, "a result for every order", || workload.results(&deployment).len() >= workload.orders.len());
    let seconds = started.elapsed().as_secs_f64();
    assert!(runtime.terminate().success(), "runtime log:\n{}", runtime.log_text());
    let report = cart::check(&deployment, &workload);

    let log = runtime.log_text();
    let injected: Vec<(&str, usize)> = ["fault: error", "throttling", "lost response", "records of PutRecords refused"]
        .into_iter()
        .map(|what| (what, count(&log, what)))
        .collect();
    for service in ["s3", "dynamodb", "kinesis"] {
        let faults = count(&log, &format!("({service}."));
        assert!(faults > 0, "no fault was injected into {service}: {injected:?}");
    }
    assert!(injected.iter().all(|(_, n)| *n > 0), "every kind of fault was injected: {injected:?}");
    assert!(dead_letters_json(&deployment).is_empty(), "storage faults dead-letter nothing");
    // A transient fault must never pass for a permanent one (which stops a partition).
    let stopped: Vec<&str> = log.lines().filter(|l| l.contains("stopped: ")).collect();
    assert!(stopped.is_empty(), "partitions stopped by transient faults: {stopped:#?}");
    let lease_losses = log.lines().filter(|l| l.contains("lost its lease")).count();
    eprintln!(
        "storage faults: {} events, {} results checked in {seconds:.1} s; injected {injected:?}; \
         {} results published twice (identical copies); {lease_losses} leases lost",
        workload.orders.len(),
        report.results.len(),
        report.redelivered
    );
}

#[test]
fn invocations_failing_or_timing_out_for_some_carts_are_dead_lettered_and_the_others_complete() {
    let server = FunctionServer::start(shopping_cart::functions());
    let deployment = AwsDeployment::new();
    let module = deployment.shopping_cart_module(&http_endpoint(&server, "1s"));
    deployment.setup(&module, 4);
    let shape = Shape { users: 30, events: 600, plenty: 6, scarce: 2, missing: 2, seed: 22 };
    let workload = cart::generate(&format!("invoke-faults-{}-", deployment.suffix), shape);

    // Three users' carts fail as function errors; the one with the fewest orders times out.
    let mut users: Vec<&str> = workload.orders.iter().map(|o| o.user.as_str()).collect::<BTreeSet<_>>().into_iter().collect();
    users.sort_by_key(|u| workload.orders_of(u).len());
    let timing_out = users[0].to_owned();
    let erring: Vec<String> = users[users.len() - 3..].iter().map(|u| (*u).to_owned()).collect();
    let mut failing: BTreeMap<String, String> = BTreeMap::new();
    let mut rules = Vec::new();
    for user in &erring {
        rules.push(format!("invoke:shoppingcart/cart/{user}.error=1"));
        failing.insert(user.clone(), format!("injected by STATEFUN_FAULTS (`invoke:shoppingcart/cart/{user}.error=1`)"));
    }
    rules.push(format!("invoke:shoppingcart/cart/{timing_out}.timeout=1"));
    failing.insert(timing_out.clone(), "no answer within 1s".to_owned());
    let failing_users: Vec<String> = failing.keys().cloned().collect();
    let failing_orders: usize = failing_users.iter().map(|u| workload.orders_of(u).len()).sum();

    let faulty = Faulty { deployment: &deployment, plan: rules.join("; ") };
    let args = ["--partitions", PARTITIONS, "--invoke-attempts", "2", "--invoke-backoff", "10ms"];
    let mut runtime = Runtime::start(&faulty, &module, &args);
    restock(&deployment, &module, &workload);
    let started = Instant::now();
    send_lines(&deployment, &module, &deployment.ingress("add-to-cart"), &workload.order_records(&workload.orders));
    let dead_messages = || {
        let letters = dead_letters_json(&deployment);
        let messages = letters.iter().flat_map(|l| l["messages"].as_array().cloned().unwrap_or_default());
        messages.map(|m| m.to_string()).collect::<BTreeSet<_>>().len()
    };
    wait_until(TIMEOUT, "every other order's result and a dead letter for each failing one", || {
        workload.results(&deployment).len() >= workload.orders.len() - failing_orders && dead_messages() >= failing_orders
    });
    let seconds = started.elapsed().as_secs_f64();
    assert!(runtime.terminate().success(), "runtime log:\n{}", runtime.log_text());

    let dead = cart::check_dead_lettered(&deployment, &workload, &deployment.ingress("add-to-cart"), &failing);
    assert_eq!(dead, failing_orders, "exactly the failing users' events are dead letters");
    let served = workload.without_users(&failing_users);
    let report = cart::check(&deployment, &served);
    assert_eq!(report.redelivered, 0, "no crash and no storage fault, so no result is published twice");
    let log = runtime.log_text();
    assert!(count(&log, "invocation timeout") > 0 && count(&log, "invocation error") > 0, "both faults were injected");
    eprintln!(
        "invoke faults: {} events; {dead} dead-lettered ({} users erring, 1 timing out), {} served and checked in {seconds:.1} s",
        workload.orders.len(),
        erring.len(),
        report.results.len()
    );
}
