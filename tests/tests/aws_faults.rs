//! The shopping cart on the local AWS stack with faults injected into the
//! runtime through `STATEFUN_FAULTS` (see `runtime/src/faults`): S3, DynamoDB
//! and Kinesis errors, throttling, lost responses and `PutRecords` partial
//! failures at a few percent of all calls; and invocations that fail or time
//! out for some users' carts (over HTTP, and through Lambda with the Lambda
//! client itself throttled, failing and losing answers), whose events must end
//! as dead letters with their reasons while every other event completes. The CLI verbs that send and
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
use statefun_tests::{Deployment, FunctionServer, Runtime, dead_letters_json, send_lines, tail_json, wait_until};

const TIMEOUT: Duration = Duration::from_secs(180);
const PARTITIONS: &str = "4";

const LAMBDA_ENDPOINT: &str = "kind: statefun-aws.endpoints.v1/lambda
spec:
  functions: shoppingcart/*
  functionName: shopping-cart
  transport:
    call: 30s";

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

/// Restocks and waits until every item's restock is on `inventory-updates` (under
/// storage faults a record may be there twice, so items are counted, not records).
fn restock(deployment: &AwsDeployment, module: &std::path::Path, workload: &Workload) {
    send_lines(deployment, module, &deployment.ingress("restock"), &workload.restock_records());
    wait_until(TIMEOUT, "restocks to be applied", || {
        let updates = tail_json(deployment, "inventory-updates");
        let items: BTreeSet<&str> = updates.iter().filter_map(|r| r["value"]["item_id"].as_str()).collect();
        workload.restocks.keys().all(|item| items.contains(item.as_str()))
    });
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
    let shape = Shape { users: 40, events: 500, plenty: 6, scarce: 2, missing: 2, seed: 21 };
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
    let stopping = Instant::now();
    assert!(runtime.terminate().success(), "runtime log:\n{}", runtime.log_text());
    let stop_seconds = stopping.elapsed().as_secs_f64();
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
    let letters = dead_letters_json(&deployment);
    let reasons: Vec<&str> = letters.iter().filter_map(|l| l["reason"].as_str()).collect();
    assert!(letters.is_empty(), "storage faults dead-letter nothing, got {}: {reasons:#?}", letters.len());
    // A transient fault must never pass for a permanent one (which stops a partition).
    let stopped: Vec<&str> = log.lines().filter(|l| l.contains("stopped: ")).collect();
    assert!(stopped.is_empty(), "partitions stopped by transient faults: {stopped:#?}");
    let lease_losses = log.lines().filter(|l| l.contains("lost its lease")).count();
    eprintln!(
        "storage faults: {} events, {} results checked in {seconds:.1} s, stopped in {stop_seconds:.1} s; \
         injected {injected:?}; {} results published twice (identical copies); {lease_losses} leases lost",
        workload.orders.len(),
        report.results.len(),
        report.redelivered
    );
}

/// Runs `workload` with the worker under `plan` and waits until every order of
/// the users not in `failing` has its result and every order of theirs is a dead
/// letter; checks both (see [`cart::check_dead_lettered`]) and returns the
/// runtime's log, the dead letters and the seconds the events took.
fn run_with_dead_letters(
    deployment: &AwsDeployment,
    module: &std::path::Path,
    workload: &Workload,
    plan: String,
    failing: &BTreeMap<String, String>,
) -> (String, usize, f64) {
    let failing_users: Vec<String> = failing.keys().cloned().collect();
    let failing_orders: usize = failing_users.iter().map(|u| workload.orders_of(u).len()).sum();
    assert!(failing_orders > 0);
    let faulty = Faulty { deployment, plan };
    // Six attempts: a Lambda invocation gets no retries of the SDK's own, so this is all it gets.
    let args = ["--partitions", PARTITIONS, "--invoke-attempts", "6", "--invoke-backoff", "10ms"];
    let mut runtime = Runtime::start(&faulty, module, &args);
    restock(deployment, module, workload);
    let started = Instant::now();
    send_lines(deployment, module, &deployment.ingress("add-to-cart"), &workload.order_records(&workload.orders));
    let dead_messages = || {
        let letters = dead_letters_json(deployment);
        let messages = letters.iter().flat_map(|l| l["messages"].as_array().cloned().unwrap_or_default());
        messages.map(|m| m.to_string()).collect::<BTreeSet<_>>().len()
    };
    wait_until(TIMEOUT, "every other order's result and a dead letter for each failing one", || {
        workload.results(deployment).len() >= workload.orders.len() - failing_orders
            && dead_messages() >= failing_orders
    });
    let seconds = started.elapsed().as_secs_f64();
    assert!(runtime.terminate().success(), "runtime log:\n{}", runtime.log_text());

    let dead = cart::check_dead_lettered(deployment, workload, &deployment.ingress("add-to-cart"), failing);
    assert_eq!(dead, failing_orders, "exactly the failing users' events are dead letters");
    let report = cart::check(deployment, &workload.without_users(&failing_users));
    assert_eq!(report.results.len(), workload.orders.len() - failing_orders);
    assert_eq!(report.redelivered, 0, "no crash and no storage fault, so no result is published twice");
    (runtime.log_text(), dead, seconds)
}

/// The workload's users, those with the fewest orders first.
fn users_by_orders(workload: &Workload) -> Vec<String> {
    let mut users: Vec<String> =
        workload.orders.iter().map(|o| o.user.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    users.sort_by_key(|u| workload.orders_of(u).len());
    users
}

fn erring_rule(user: &str) -> (String, String) {
    let rule = format!("invoke:shoppingcart/cart/{user}.error=1");
    let reason = format!("injected by STATEFUN_FAULTS (`{rule}`)");
    (rule, reason)
}

#[test]
fn invocations_failing_or_timing_out_for_some_carts_are_dead_lettered_and_the_others_complete() {
    let server = FunctionServer::start(shopping_cart::functions());
    let deployment = AwsDeployment::new();
    // Long enough that a call only slowed by a loaded machine is never taken for the injected timeout.
    let module = deployment.shopping_cart_module(&http_endpoint(&server, "5s"));
    deployment.setup(&module, 4);
    let shape = Shape { users: 30, events: 400, plenty: 6, scarce: 2, missing: 2, seed: 22 };
    let workload = cart::generate(&format!("invoke-faults-{}-", deployment.suffix), shape);

    // Three users' carts fail as function errors; the one with the fewest orders times out.
    let users = users_by_orders(&workload);
    let mut failing: BTreeMap<String, String> = BTreeMap::new();
    let mut rules = Vec::new();
    for user in &users[users.len() - 3..] {
        let (rule, reason) = erring_rule(user);
        rules.push(rule);
        failing.insert(user.clone(), reason);
    }
    rules.push(format!("invoke:shoppingcart/cart/{}.timeout=1", users[0]));
    failing.insert(users[0].clone(), "no answer within 5s".to_owned());

    let (log, dead, seconds) = run_with_dead_letters(&deployment, &module, &workload, rules.join("; "), &failing);
    assert!(count(&log, "invocation timeout") > 0 && count(&log, "invocation error") > 0, "both faults were injected");
    eprintln!(
        "invoke faults over HTTP: {} events; {dead} dead-lettered (3 users erring, 1 timing out), the others served in {seconds:.1} s",
        workload.orders.len()
    );
}

#[test]
fn through_lambda_throttling_errors_and_lost_answers_are_retried_and_failing_carts_are_dead_lettered() {
    let deployment = AwsDeployment::new();
    let module = deployment.shopping_cart_module(LAMBDA_ENDPOINT);
    deployment.setup(&module, 4);
    let shape = Shape { users: 20, events: 300, plenty: 6, scarce: 2, missing: 2, seed: 23 };
    let workload = cart::generate(&format!("lambda-faults-{}-", deployment.suffix), shape);
    let users = users_by_orders(&workload);
    let mut failing: BTreeMap<String, String> = BTreeMap::new();
    let mut rules = vec!["seed=23; lambda.throttle=10%; lambda.error=5%; lambda.lost=5%".to_owned()];
    for user in &users[users.len() - 2..] {
        let (rule, reason) = erring_rule(user);
        rules.push(rule);
        failing.insert(user.clone(), reason);
    }
    let (log, dead, seconds) = run_with_dead_letters(&deployment, &module, &workload, rules.join("; "), &failing);
    let injected: Vec<(&str, usize)> = [
        "fault: throttling (lambda.Invoke",
        "fault: error (lambda.Invoke",
        "lost response (HTTP 200 dropped) (lambda.Invoke",
    ]
    .into_iter()
    .map(|what| (what, count(&log, what)))
    .collect();
    assert!(injected.iter().all(|(_, n)| *n > 0), "every Lambda fault was injected: {injected:?}");
    eprintln!(
        "invoke faults through Lambda: {} events; {dead} dead-lettered (2 users erring), the others served in {seconds:.1} s; {injected:?}",
        workload.orders.len()
    );
}
