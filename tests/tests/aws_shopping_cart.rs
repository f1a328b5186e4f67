//! The shopping cart end to end on the local AWS stack: Kinesis ingress,
//! exchange and egress, S3 checkpoints, DynamoDB commits, and the functions
//! invoked through the Lambda Invoke API (`cargo lambda watch`) or over HTTP.
//! Every scenario restocks 10 items, sends 1,000 AddToCart events over 50
//! users and checks that every event has exactly one result, that reserved +
//! in stock equals what was restocked, and that every cart matches its results.

use std::time::{Duration, Instant};

use statefun_tests::aws::{AwsDeployment, kinesis_client};
use statefun_tests::cart::{self, Shape, Workload};
use statefun_tests::python::{PythonServer, python_env};
use statefun_tests::{Deployment, FunctionServer, Runtime, send_lines, sequence_log, statefun, wait_until};

const TIMEOUT: Duration = Duration::from_secs(300);
const PARTITIONS: u32 = 4;

const LAMBDA_ENDPOINT: &str = "kind: statefun-aws.endpoints.v1/lambda
spec:
  functions: shoppingcart/*
  functionName: shopping-cart
  transport:
    call: 30s";

fn http_endpoint(server: &FunctionServer) -> String {
    format!(
        "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: shoppingcart/*\n  urlPathTemplate: http://{}/statefun",
        server.addr
    )
}

fn shape(seed: u64) -> Shape {
    Shape { users: 50, events: 1000, plenty: 6, scarce: 2, missing: 2, seed }
}

fn restock(deployment: &AwsDeployment, module: &std::path::Path, workload: &Workload) {
    send_lines(deployment, module, &deployment.ingress("restock"), &workload.restock_records());
    wait_until(TIMEOUT, "restocks to be applied", || workload.restocks_applied(deployment) == workload.restocks.len());
}

fn all_results(deployment: &AwsDeployment, workload: &Workload) -> bool {
    workload.results(deployment).len() >= workload.orders.len()
}

/// Runs the workload start to end with one worker; returns the seconds it took.
fn run_workload(deployment: &AwsDeployment, module: &std::path::Path, workload: &Workload) -> f64 {
    let mut runtime = Runtime::start(deployment, module, &["--partitions", &PARTITIONS.to_string()]);
    restock(deployment, module, workload);
    let started = Instant::now();
    send_lines(deployment, module, &deployment.ingress("add-to-cart"), &workload.order_records(&workload.orders));
    wait_until(TIMEOUT, "a result for every order", || all_results(deployment, workload));
    let seconds = started.elapsed().as_secs_f64();
    assert!(runtime.terminate().success(), "runtime log:\n{}", runtime.log_text());
    seconds
}

#[test]
fn the_shopping_cart_runs_on_kinesis_s3_dynamodb_with_functions_invoked_through_lambda() {
    let deployment = AwsDeployment::new();
    let module = deployment.shopping_cart_module(LAMBDA_ENDPOINT);
    deployment.setup(&module, PARTITIONS);
    let workload = cart::generate(&format!("lambda-{}-", deployment.suffix), shape(11));
    let seconds = run_workload(&deployment, &module, &workload);
    let report = cart::check(&deployment, &workload);
    eprintln!(
        "lambda: {} events, {} results checked in {seconds:.1} s ({} redelivered)",
        workload.orders.len(),
        report.results.len(),
        report.redelivered
    );
    assert_eq!(report.redelivered, 0, "no crash, so no result is delivered twice");
}

#[test]
fn the_shopping_cart_runs_on_kinesis_s3_dynamodb_with_functions_over_http() {
    let server = FunctionServer::start(shopping_cart::functions());
    let deployment = AwsDeployment::new();
    let module = deployment.shopping_cart_module(&http_endpoint(&server));
    deployment.setup(&module, PARTITIONS);
    let workload = cart::generate(&format!("http-{}-", deployment.suffix), shape(12));
    let seconds = run_workload(&deployment, &module, &workload);
    let report = cart::check(&deployment, &workload);
    eprintln!("http: {} events, {} results checked in {seconds:.1} s", workload.orders.len(), report.results.len());
    assert_eq!(report.redelivered, 0, "no crash, so no result is delivered twice");
}

#[test]
fn the_shopping_cart_runs_with_an_inventory_written_with_the_statefun_python_sdk_in_the_chain() {
    let carts = FunctionServer::start(shopping_cart::functions());
    let deployment = AwsDeployment::new();
    let descriptors = deployment.scratch().join("descriptors.binpb");
    std::fs::write(&descriptors, statefun_proto::FILE_DESCRIPTOR_SET).expect("write descriptors");
    let python = python_env();
    let descriptors = descriptors.to_string_lossy();
    let inventory = PythonServer::start(&python, "inventory.py", &[&descriptors, "0"], &deployment.scratch());
    let endpoints = format!(
        "kind: io.statefun.endpoints.v2/http
spec:
  functions: shoppingcart/cart
  urlPathTemplate: http://{}/statefun
---
kind: io.statefun.endpoints.v2/http
spec:
  functions: shoppingcart/inventory
  urlPathTemplate: http://127.0.0.1:{}/",
        carts.addr, inventory.port
    );
    let module = deployment.shopping_cart_module(&endpoints);
    deployment.setup(&module, PARTITIONS);
    let workload = cart::generate(&format!("python-{}-", deployment.suffix), shape(14));
    let seconds = run_workload(&deployment, &module, &workload);
    let report = cart::check(&deployment, &workload);
    eprintln!(
        "python inventory: {} events, {} results checked in {seconds:.1} s",
        workload.orders.len(),
        report.results.len()
    );
    assert_eq!(
        report.redelivered,
        0,
        "no crash, so no result is delivered twice; python stderr:\n{}",
        inventory.stderr_text()
    );
}

#[test]
fn a_worker_killed_mid_run_is_replaced_and_the_checks_still_hold() {
    let server = FunctionServer::start(shopping_cart::functions());
    let deployment = AwsDeployment::new();
    let module = deployment.shopping_cart_module(&http_endpoint(&server));
    deployment.setup(&module, PARTITIONS);
    let workload = cart::generate(&format!("restart-{}-", deployment.suffix), shape(13));
    let partitions = PARTITIONS.to_string();
    let mut first = Runtime::start(&deployment, &module, &["--partitions", &partitions]);
    restock(&deployment, &module, &workload);
    // Half the events before the kill, half while no worker runs: the kill is mid-run.
    let (first_half, second_half) = workload.orders.split_at(workload.orders.len() / 2);
    let ingress = deployment.ingress("add-to-cart");
    send_lines(&deployment, &module, &ingress, &workload.order_records(first_half));
    wait_until(TIMEOUT, "the first results", || workload.results(&deployment).len() >= workload.orders.len() / 4);
    first.kill();
    let at_kill = workload.results(&deployment).len();
    assert!(at_kill < workload.orders.len());
    send_lines(&deployment, &module, &ingress, &workload.order_records(second_half));
    let restarted_at = Instant::now();
    let mut second = Runtime::start(&deployment, &module, &["--partitions", &partitions]);
    wait_until(TIMEOUT, "a result for every order", || all_results(&deployment, &workload));
    let seconds = restarted_at.elapsed().as_secs_f64();
    // `statefun status` on the AWS stores: the new worker holds and serves every partition; the
    // killed worker's report is left behind (nothing withdrew it) but speaks for no partition.
    let mut status = serde_json::Value::Null;
    wait_until(TIMEOUT, "statefun status to show the new worker serving everything", || {
        status = serde_json::from_str(&statefun(&deployment, &["status", "--json"])).expect("status --json");
        let rows = status["partitions"].as_array().cloned().unwrap_or_default();
        let owner = &rows.first().map(|r| r["owner"].clone()).unwrap_or_default();
        rows.len() == PARTITIONS as usize
            && rows.iter().all(|r| {
                r["owner"] == *owner && r["reported_by"] == *owner && r["phase"] == "serving" && r["stuck"].is_null()
            })
    });
    let workers = status["workers"].as_array().cloned().unwrap_or_default();
    assert_eq!(workers.len(), 2, "the new worker's report and the killed one's: {status:#}");
    assert!(second.terminate().success(), "runtime log:\n{}", second.log_text());
    let report = cart::check(&deployment, &workload);
    eprintln!(
        "restart: killed with {at_kill} of {} results; the new worker finished in {seconds:.1} s; {} results redelivered",
        workload.orders.len(),
        report.redelivered
    );
}

/// Rescales a stream to `shards` open shards (Kinesis splits or merges shards) and waits until it is active.
fn reshard(stream: &str, shards: i32) {
    let client = kinesis_client();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    runtime.block_on(async {
        client
            .update_shard_count()
            .stream_name(stream)
            .target_shard_count(shards)
            .scaling_type(aws_sdk_kinesis::types::ScalingType::UniformScaling)
            .send()
            .await
            .expect("UpdateShardCount");
        for _ in 0..600 {
            let summary =
                client.describe_stream_summary().stream_name(stream).send().await.expect("DescribeStreamSummary");
            let summary = summary.stream_description_summary().expect("a summary");
            if *summary.stream_status() == aws_sdk_kinesis::types::StreamStatus::Active
                && summary.open_shard_count() == shards
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{stream} did not reach {shards} open shards");
    });
}

#[test]
fn events_sent_across_a_split_and_a_merge_of_the_ingress_each_get_exactly_one_result() {
    let server = FunctionServer::start(shopping_cart::functions());
    let deployment = AwsDeployment::new();
    let module = deployment.shopping_cart_module(&http_endpoint(&server));
    deployment.setup(&module, PARTITIONS);
    let workload = cart::generate(&format!("reshard-{}-", deployment.suffix), shape(15));
    let partitions = PARTITIONS.to_string();
    let mut runtime = Runtime::start(&deployment, &module, &["--partitions", &partitions, "--shard-discovery", "1s"]);
    restock(&deployment, &module, &workload);
    let ingress = deployment.ingress("add-to-cart");
    let started = Instant::now();
    // 2 shards, then 4 (each split in two), then 2 again (merged in pairs), with events in every phase.
    let thirds: Vec<&[cart::Order]> = workload.orders.chunks(workload.orders.len().div_ceil(3)).collect();
    for (phase, (orders, shards_after)) in thirds.iter().zip([Some(4), Some(2), None]).enumerate() {
        send_lines(&deployment, &module, &ingress, &workload.order_records(orders));
        let sent: usize = thirds[..=phase].iter().map(|t| t.len()).sum();
        // Resharding while the phase's records are still being read.
        wait_until(TIMEOUT, "some results of the phase", || workload.results(&deployment).len() > sent - orders.len());
        if let Some(shards) = shards_after {
            reshard(&ingress, shards);
        }
    }
    wait_until(TIMEOUT, "a result for every order", || all_results(&deployment, &workload));
    let seconds = started.elapsed().as_secs_f64();
    assert!(runtime.terminate().success(), "runtime log:\n{}", runtime.log_text());
    // The 2 original shards and the 4 of the split were each read to their end (and marked so).
    let log = runtime.log_text();
    let ended = log.lines().filter(|l| l.contains("shard read to its end") && l.contains(&ingress)).count();
    assert_eq!(ended, 6, "runtime log:\n{log}");
    let report = cart::check(&deployment, &workload);
    eprintln!(
        "reshard: {} events across 2 -> 4 -> 2 ingress shards, {} results checked in {seconds:.1} s",
        workload.orders.len(),
        report.results.len()
    );
    assert_eq!(report.redelivered, 0, "no crash, so no result is delivered twice");
}

#[test]
fn records_of_one_key_are_applied_in_order_across_a_split_and_a_merge_of_the_ingress() {
    let server = FunctionServer::start(sequence_log());
    let deployment = AwsDeployment::new();
    let stream = deployment.ingress("sequence");
    let module = deployment.scratch().join("sequence.yaml");
    let text = format!(
        "kind: io.statefun.endpoints.v2/http
spec:
  functions: order/*
  urlPathTemplate: http://{}/statefun
---
kind: io.statefun.kinesis.v1/ingress
spec:
  id: order/ingress
  startupPosition:
    type: earliest
  streams:
    - stream: {stream}
      valueType: io.statefun.types/string
      targets: [order/log]
",
        server.addr
    );
    std::fs::write(&module, text).expect("module");
    deployment.setup(&module, PARTITIONS);
    let partitions = PARTITIONS.to_string();
    let mut runtime = Runtime::start(&deployment, &module, &["--partitions", &partitions, "--shard-discovery", "1s"]);

    let keys: Vec<String> = (0..12).map(|k| format!("key-{k}")).collect();
    let per_phase = 30;
    let expected = |phases: usize| -> serde_json::Value {
        let log = |key: &str| (0..phases * per_phase).map(|n| format!("{key}.{n} ")).collect::<String>();
        keys.iter().map(|key| (format!("order/log/{key}"), serde_json::json!({"seen": log(key)}))).collect()
    };
    // 2 shards, then 4 (each split in two), then 2 again (merged in pairs): each phase's
    // records are sent, then the stream is resharded while they are still being read.
    for (phase, shards_after) in [Some(4), Some(2), None].into_iter().enumerate() {
        let records: Vec<serde_json::Value> = (phase * per_phase..(phase + 1) * per_phase)
            .flat_map(|n| keys.iter().map(move |key| serde_json::json!({"key": key, "value": format!("{key}.{n}")})))
            .collect();
        send_lines(&deployment, &module, &stream, &records);
        if let Some(shards) = shards_after {
            reshard(&stream, shards);
        }
    }
    let mut state = serde_json::Value::Null;
    wait_until(TIMEOUT, "every record applied", || {
        state = statefun_tests::state_json(&deployment);
        let applied = |v: &serde_json::Value| v["seen"].as_str().map_or(0, |s| s.split_whitespace().count());
        state.as_object().is_some_and(|o| o.len() == keys.len() && o.values().all(|v| applied(v) >= 3 * per_phase))
    });
    assert!(runtime.terminate().success(), "runtime log:\n{}", runtime.log_text());
    assert_eq!(
        statefun_tests::state_json(&deployment),
        expected(3),
        "each key's records applied once each, in the order sent"
    );
}
