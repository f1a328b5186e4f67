//! KPL-aggregated ingress, against AWS's own implementation of the format
//! (`aws-kinesis-agg` from PyPI, in the Python test environment):
//!
//! - shopping-cart orders that the library aggregated, 50 user records to a
//!   Kinesis record, each get exactly one result, their carts match their
//!   results, although the worker is SIGKILLed while it takes them in and the
//!   rest arrive while it is down;
//! - records `statefun send --kpl-aggregate` writes are read back whole and in
//!   order by the library's de-aggregator;
//! - on the local AWS stack (Kinesis, S3, DynamoDB), 10,000 user records over
//!   100 keys, which the library aggregated per shard as the KPL does, are each
//!   applied exactly once and in their key's order, with a SIGKILL while the
//!   aggregated records are being taken in.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use statefun_runtime::log::kinesis::key_hash;
use statefun_runtime::log::local::LocalLogStore;
use statefun_runtime::log::{LogStore as _, Position, kpl};
use statefun_runtime::values::ValueCodec;
use statefun_tests::aws::{AwsDeployment, kinesis_client, repo_root};
use statefun_tests::cart;
use statefun_tests::python::python_env;
use statefun_tests::{
    Deployment as _, FunctionServer, Runtime, append_raw, dead_letters_json, sequence_log, shopping_cart_module,
    state_json, statefun, wait_until,
};

const TIMEOUT: Duration = Duration::from_secs(180);
const ADD_TO_CART: &str = "type.googleapis.com/shoppingcart.AddToCart";

fn write_lines(path: &Path, lines: &[Value]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).expect("write lines");
}

fn read_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read lines");
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).expect("JSON line")).collect()
}

/// Runs `tests/python/kpl.py` with `args` in the test environment's Python.
fn kpl_py(python: &Path, args: &[&str]) {
    let output =
        Command::new(python).arg(repo_root().join("tests/python/kpl.py")).args(args).output().expect("run kpl.py");
    assert!(output.status.success(), "kpl.py {args:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn orders_aggregated_by_aws_kinesis_agg_each_get_one_result_across_a_sigkill_mid_run() {
    let python = python_env();
    let server = FunctionServer::start(shopping_cart::functions());
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let module = shopping_cart_module(dir.path(), server.addr.port());
    let workload = cart::workload(50, 2000, 31);

    // Restocks aggregated by the runtime's own `send --kpl-aggregate`.
    let mut runtime = Runtime::start(&data, &module, &[]);
    let restocks = dir.path().join("restocks.jsonl");
    write_lines(&restocks, &workload.restock_records());
    let module_arg = module.to_string_lossy();
    let restocks_arg = restocks.to_string_lossy();
    let args =
        ["send", "--module", &module_arg, "--stream", "restock", "--lines", &restocks_arg, "--kpl-aggregate", "3"];
    statefun(&data, &args);
    wait_until(TIMEOUT, "the restocks", || workload.restocks_applied(&data) == workload.restocks.len());

    // Orders aggregated by aws-kinesis-agg, 50 user records to a Kinesis record.
    let codec = ValueCodec::new(&[]).expect("codec");
    let users: Vec<Value> = workload
        .order_records(&workload.orders)
        .iter()
        .map(|r| {
            let bytes = codec.encode(ADD_TO_CART, &r["value"]).expect("encode an order");
            json!({"key": r["key"], "data": STANDARD.encode(bytes)})
        })
        .collect();
    let (users_file, aggregated_file) = (dir.path().join("users.jsonl"), dir.path().join("aggregated.jsonl"));
    write_lines(&users_file, &users);
    kpl_py(&python, &["aggregate", &users_file.to_string_lossy(), &aggregated_file.to_string_lossy(), "50"]);
    let aggregated: Vec<(String, Vec<u8>)> = read_lines(&aggregated_file)
        .iter()
        .map(|r| {
            let bytes = STANDARD.decode(r["data"].as_str().expect("data")).expect("base64");
            (r["key"].as_str().expect("key").to_owned(), bytes)
        })
        .collect();
    assert_eq!(aggregated.len(), workload.orders.len() / 50, "the library made records of 50 user records");
    assert!(aggregated.iter().all(|(_, bytes)| bytes.starts_with(&kpl::MAGIC)));

    // Half of them, a SIGKILL while they are taken in, the rest while the worker is down.
    let (first, second) = aggregated.split_at(aggregated.len() / 2);
    let (early, late) = first.split_at(first.len() / 2);
    for (key, bytes) in early {
        append_raw(&data, "add-to-cart", key, bytes).expect("append");
    }
    // Once results come, the rest of the first half is appended and the worker killed at once, while it
    // takes them in (killed at the first result alone, it had sometimes answered the whole half by then).
    wait_until(TIMEOUT, "the first result", || !cart::results(&data).is_empty());
    for (key, bytes) in late {
        append_raw(&data, "add-to-cart", key, bytes).expect("append");
    }
    runtime.kill();
    let at_kill = cart::results(&data).len();
    assert!(at_kill < workload.orders.len() / 2, "killed before the first half was done ({at_kill} results)");
    for (key, bytes) in second {
        append_raw(&data, "add-to-cart", key, bytes).expect("append");
    }
    let mut restarted = Runtime::start(&data, &module, &[]);
    wait_until(TIMEOUT, "a result for every order", || cart::results(&data).len() >= workload.orders.len());
    assert!(restarted.terminate().success(), "runtime log:\n{}", restarted.log_text());

    let report = cart::check(&data, &workload);
    eprintln!(
        "{} orders in {} aggregated records; killed with {at_kill} results; {} results, {} redelivered",
        workload.orders.len(),
        aggregated.len(),
        report.results.len(),
        report.redelivered
    );
    assert_eq!(report.redelivered, 0, "no user record applied twice");
    assert!(dead_letters_json(&data).is_empty(), "{:#?}", dead_letters_json(&data));
}

#[test]
fn records_aggregated_by_statefun_send_are_read_back_whole_by_aws_kinesis_agg() {
    let python = python_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let values: Vec<Value> =
        (0..10).map(|n| json!({"key": format!("key-{}", n % 4), "value": format!("v{n}")})).collect();
    let lines = dir.path().join("values.jsonl");
    write_lines(&lines, &values);
    let lines_arg = lines.to_string_lossy();
    let args =
        ["send", "--stream", "words", "--type", "io.statefun.types/string", "--lines", &lines_arg, "--shards", "1"];
    statefun(&data, &[&args[..], &["--kpl-aggregate", "4"]].concat());

    let log = LocalLogStore::new(&data);
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    let shards = runtime.block_on(log.shards("words")).expect("shards");
    let (records, _) = runtime.block_on(log.read("words", &shards[0].id, &Position::Start, 100)).expect("read");
    assert_eq!(records.len(), 3, "10 records, at most 4 to a Kinesis record");
    let raw: Vec<Value> =
        records.iter().map(|r| json!({"key": r.partition_key, "data": STANDARD.encode(&r.data)})).collect();
    let (raw_file, users_file) = (dir.path().join("raw.jsonl"), dir.path().join("users.jsonl"));
    write_lines(&raw_file, &raw);
    kpl_py(&python, &["deaggregate", &raw_file.to_string_lossy(), &users_file.to_string_lossy()]);

    let codec = ValueCodec::new(&[]).expect("codec");
    let read: Vec<(String, Vec<u8>)> = read_lines(&users_file)
        .iter()
        .map(|u| {
            (
                u["key"].as_str().unwrap_or_default().to_owned(),
                STANDARD.decode(u["data"].as_str().unwrap_or_default()).expect("base64"),
            )
        })
        .collect();
    let sent: Vec<(String, Vec<u8>)> = values
        .iter()
        .map(|v| {
            let bytes = codec.encode("io.statefun.types/string", &v["value"]).expect("encode");
            (v["key"].as_str().unwrap_or_default().to_owned(), bytes)
        })
        .collect();
    assert_eq!(read, sent, "every user record, in order, with its own key");
}

/// The open shards of `stream` with their hash key ranges.
fn shard_ranges(stream: &str) -> Vec<(String, u128, u128)> {
    let client = kinesis_client();
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    let listed = runtime.block_on(client.list_shards().stream_name(stream).send()).expect("ListShards");
    listed
        .shards()
        .iter()
        .map(|shard| {
            let range = shard.hash_key_range().expect("a hash key range");
            let parse = |key: &str| key.parse::<u128>().expect("a 128-bit hash key");
            (shard.shard_id().to_owned(), parse(range.starting_hash_key()), parse(range.ending_hash_key()))
        })
        .collect()
}

/// Puts each record on its own, in order (so each shard gets them in order).
fn put_in_order(stream: &str, records: &[(String, Vec<u8>)]) {
    let client = kinesis_client();
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    for (key, data) in records {
        let put = client
            .put_record()
            .stream_name(stream)
            .partition_key(key)
            .data(aws_sdk_kinesis::primitives::Blob::new(data.clone()));
        runtime.block_on(put.send()).expect("PutRecord");
    }
}

#[test]
fn ten_thousand_user_records_aggregated_per_shard_are_applied_once_in_key_order_on_the_aws_stack_across_a_sigkill() {
    let python = python_env();
    let server = FunctionServer::start(sequence_log());
    let deployment = AwsDeployment::new();
    let stream = deployment.ingress("kpl");
    let module = deployment.scratch().join("kpl.yaml");
    let text = format!(
        "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: order/*\n  urlPathTemplate: http://{}/statefun\n---\nkind: io.statefun.kinesis.v1/ingress\nspec:\n  id: order/ingress\n  startupPosition:\n    type: earliest\n  streams:\n    - stream: {stream}\n      valueType: io.statefun.types/string\n      targets: [order/log]\n",
        server.addr
    );
    std::fs::write(&module, text).expect("module");
    deployment.setup(&module, 4);

    // 100 rounds over 100 keys; each shard's user records aggregated in their order, 100 to a
    // record, as the KPL aggregates what goes to one shard (the outer key is the first user record's).
    let codec = ValueCodec::new(&[]).expect("codec");
    let shards = shard_ranges(&stream);
    let (keys, rounds) = (100, 100);
    let mut per_shard: Vec<Vec<Value>> = vec![Vec::new(); shards.len()];
    for round in 0..rounds {
        for k in 0..keys {
            let key = format!("key-{k}");
            let value = json!(format!("{key}.{round}"));
            let hash = key_hash(&key);
            let shard = shards.iter().position(|(_, start, end)| (*start..=*end).contains(&hash)).expect("a shard");
            let bytes = codec.encode("io.statefun.types/string", &value).expect("encode");
            per_shard[shard].push(json!({"key": key, "data": STANDARD.encode(bytes)}));
        }
    }
    let mut aggregated: Vec<Vec<(String, Vec<u8>)>> = Vec::new();
    for (index, users) in per_shard.iter().enumerate() {
        let (users_file, out_file) = (
            deployment.scratch().join(format!("users-{index}.jsonl")),
            deployment.scratch().join(format!("aggregated-{index}.jsonl")),
        );
        write_lines(&users_file, users);
        kpl_py(&python, &["aggregate", &users_file.to_string_lossy(), &out_file.to_string_lossy(), "100"]);
        aggregated.push(
            read_lines(&out_file)
                .iter()
                .map(|r| {
                    let bytes = STANDARD.decode(r["data"].as_str().expect("data")).expect("base64");
                    (r["key"].as_str().expect("key").to_owned(), bytes)
                })
                .collect(),
        );
    }
    let total: usize = aggregated.iter().map(Vec::len).sum();
    assert_eq!(total, keys * rounds / 100, "100 user records to an aggregated record");

    let applied = |state: &Value| -> usize {
        state
            .as_object()
            .map_or(0, |o| o.values().map(|v| v["seen"].as_str().map_or(0, |s| s.split_whitespace().count())).sum())
    };
    let partitions = "4";
    let mut runtime = Runtime::start(&deployment, &module, &["--partitions", partitions]);
    // The first half of every shard's records, a SIGKILL once some are applied, the rest while no worker runs.
    for records in &aggregated {
        put_in_order(&stream, &records[..records.len() / 2]);
    }
    wait_until(TIMEOUT, "the first records applied", || applied(&state_json(&deployment)) > 0);
    runtime.kill();
    let at_kill = applied(&state_json(&deployment));
    for records in &aggregated {
        put_in_order(&stream, &records[records.len() / 2..]);
    }
    let mut restarted = Runtime::start(&deployment, &module, &["--partitions", partitions]);
    wait_until(TIMEOUT, "every user record applied", || applied(&state_json(&deployment)) >= keys * rounds);
    assert!(restarted.terminate().success(), "runtime log:\n{}", restarted.log_text());

    let expected: Value = (0..keys)
        .map(|k| {
            let log: String = (0..rounds).map(|round| format!("key-{k}.{round} ")).collect();
            (format!("order/log/key-{k}"), json!({"seen": log}))
        })
        .collect::<serde_json::Map<String, Value>>()
        .into();
    eprintln!("{} user records in {total} aggregated records; {at_kill} applied at the SIGKILL", keys * rounds);
    assert!(at_kill < keys * rounds, "killed while records were still being taken in");
    assert_eq!(state_json(&deployment), expected, "each user record applied once, in its key's order");
}
