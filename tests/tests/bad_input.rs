//! Bad input never crashes the runtime nor blocks other addresses: a malformed
//! ingress record, an unknown function type, a function answering HTTP 500,
//! garbage or too late, and records at Kinesis' limits each end as a dead
//! letter with a clear reason, while the shopping cart keeps being served.

use std::convert::Infallible;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prost::Message;
use serde_json::{Value, json};
use statefun_proto::reqreply::ToFunction;
use statefun_proto::reqreply::to_function::Request;
use statefun_runtime::log::MAX_RECORD_BYTES;
use statefun_tests::append_raw as try_append_raw;
use statefun_tests::cart;
use statefun_tests::{FunctionServer, Runtime, dead_letters_json, send_lines, shopping_cart_module, wait_until};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A broken endpoint: `bad/fail` answers HTTP 500, `bad/garbage` answers 200
/// with bytes that are no reply, `bad/slow` answers only after 3 s.
fn start_broken_endpoint() -> u16 {
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            port_tx.send(listener.local_addr().expect("addr").port()).expect("port");
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                tokio::spawn(async move {
                    let service = service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
                        let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let kind = match ToFunction::decode(body) {
                            Ok(ToFunction { request: Some(Request::Invocation(batch)) }) => {
                                batch.target.map(|t| t.r#type).unwrap_or_default()
                            }
                            _ => String::new(),
                        };
                        if kind == "slow" {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                        }
                        let response = match kind.as_str() {
                            "garbage" => hyper::Response::new(Full::new(Bytes::from_static(b"\xff\xffnot a reply"))),
                            _ => {
                                let mut response =
                                    hyper::Response::new(Full::new(Bytes::from_static(b"boom: the function crashed")));
                                *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                                response
                            }
                        };
                        Ok::<_, Infallible>(response)
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
    });
    port_rx.recv().expect("broken endpoint port")
}

fn append_raw(data_dir: &Path, stream: &str, key: &str, data: &[u8]) {
    try_append_raw(data_dir, stream, key, data).expect("append");
}

fn letter_for<'a>(letters: &'a [Value], address: &str) -> &'a Value {
    letters
        .iter()
        .find(|l| l["address"] == json!(address))
        .unwrap_or_else(|| panic!("no dead letter for {address}; dead letters: {letters:#?}"))
}

#[test]
fn bad_input_is_dead_lettered_with_its_reason_and_other_addresses_keep_being_served() {
    let server = FunctionServer::start(shopping_cart::functions());
    let broken_port = start_broken_endpoint();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let module = shopping_cart_module(dir.path(), server.addr.port());
    let extra = format!(
        "---
kind: io.statefun.endpoints.v2/http
spec:
  functions: bad/*
  urlPathTemplate: http://127.0.0.1:{broken_port}/
  transport:
    call: 300ms
---
kind: io.statefun.kinesis.v1/ingress
spec:
  id: bad/ingress
  startupPosition:
    type: earliest
  streams:
    - stream: bad-input
      valueType: io.statefun.types/string
      targets: [bad/fail, bad/garbage, bad/slow, nowhere/unknown]
"
    );
    let text = std::fs::read_to_string(&module).expect("module") + &extra;
    std::fs::write(&module, text).expect("module");

    let mut runtime = Runtime::start(&data, &module, &["--invoke-attempts", "2", "--invoke-backoff", "10ms"]);
    let workload = cart::workload(5, 40, 3);
    send_lines(&data, &module, "restock", &workload.restock_records());
    wait_until(TIMEOUT, "restocks", || workload.restocks_applied(&data) == workload.restocks.len());

    append_raw(&data, "add-to-cart", "mallory", b"\xff\xff\xff not an AddToCart");
    send_lines(&data, &module, "bad-input", &[json!({"key": "x", "value": "hello"})]);
    send_lines(&data, &module, "add-to-cart", &workload.order_records(&workload.orders));

    wait_until(TIMEOUT, "every order's result", || cart::results(&data).len() >= workload.orders.len());
    wait_until(TIMEOUT, "five dead letters", || dead_letters_json(&data).len() >= 5);
    assert!(runtime.terminate().success(), "the runtime survived; log:\n{}", runtime.log_text());
    assert_eq!(cart::check(&data, &workload).redelivered, 0);

    let letters = dead_letters_json(&data);
    assert_eq!(letters.len(), 5, "{letters:#?}");
    let mallory = letter_for(&letters, "shoppingcart/cart/mallory");
    let reason = mallory["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("failed after 2 attempts") && reason.contains("HTTP 500"), "{reason}");
    assert_eq!(mallory["messages"].as_array().map(Vec::len), Some(1));

    let fail = letter_for(&letters, "bad/fail/x")["reason"].as_str().unwrap_or_default().to_owned();
    assert!(fail.contains("HTTP 500") && fail.contains("boom: the function crashed"), "{fail}");
    let garbage = letter_for(&letters, "bad/garbage/x")["reason"].as_str().unwrap_or_default().to_owned();
    assert!(garbage.contains("malformed reply") && garbage.contains("not a FromFunction"), "{garbage}");
    let slow = letter_for(&letters, "bad/slow/x")["reason"].as_str().unwrap_or_default().to_owned();
    assert!(slow.contains("no answer within 300ms"), "{slow}");
    let unknown = letter_for(&letters, "nowhere/unknown/x")["reason"].as_str().unwrap_or_default().to_owned();
    assert!(unknown.contains("no endpoint serves function type nowhere/unknown"), "{unknown}");
}

/// Records at Kinesis' limits, which the local log enforces as Kinesis does:
/// a 250-character key for a type no endpoint serves (its dead letter's key
/// would be longer than Kinesis takes), and a record of 1 MiB for an address
/// of another partition (its message is larger than an exchange record
/// carries, so it is dead-lettered whole, stored beside its stub). Both end as
/// dead letters, and the partitions that read them keep publishing.
#[test]
fn records_at_kinesis_limits_end_as_dead_letters_and_their_partitions_keep_publishing() {
    let server = FunctionServer::start(shopping_cart::functions());
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let module = shopping_cart_module(dir.path(), server.addr.port());
    let extra = "---
kind: io.statefun.kinesis.v1/ingress
spec:
  id: edge/ingress
  startupPosition:
    type: earliest
  streams:
    - stream: edge-input
      valueType: io.statefun.types/string
      targets: [nowhere/unknown]
";
    let text = std::fs::read_to_string(&module).expect("module") + extra;
    std::fs::write(&module, text).expect("module");

    let mut runtime = Runtime::start(&data, &module, &[]);
    let workload = cart::workload(5, 30, 5);
    send_lines(&data, &module, "restock", &workload.restock_records());
    wait_until(TIMEOUT, "restocks", || workload.restocks_applied(&data) == workload.restocks.len());

    let refused = try_append_raw(&data, "add-to-cart", "", b"no key").expect_err("Kinesis takes no empty key");
    assert!(refused.to_string().contains("partition key must have 1 to 256 characters, has 0"), "{refused}");
    let long_key = "k".repeat(250);
    send_lines(&data, &module, "edge-input", &[json!({"key": long_key, "value": "hello"})]);
    // 4 partitions, 4 local shards: shard i is read by partition i. A user whose cart lives elsewhere:
    let user = (0..)
        .map(|n| format!("big-{n}"))
        .find(|user| {
            let cart = statefun_proto::reqreply::Address {
                namespace: "shoppingcart".into(),
                r#type: "cart".into(),
                id: user.clone(),
            };
            statefun_runtime::address::shard_of_key(user, 4) != statefun_runtime::address::partition_of(&cart, 4)
        })
        .expect("some user");
    append_raw(&data, "add-to-cart", &user, &vec![b'x'; MAX_RECORD_BYTES - user.len()]);
    send_lines(&data, &module, "add-to-cart", &workload.order_records(&workload.orders));

    wait_until(TIMEOUT, "every order's result", || cart::results(&data).len() >= workload.orders.len());
    wait_until(TIMEOUT, "two dead letters", || dead_letters_json(&data).len() >= 2);
    assert!(runtime.terminate().success(), "the runtime survived; log:\n{}", runtime.log_text());
    assert_eq!(cart::check(&data, &workload).redelivered, 0);

    let letters = dead_letters_json(&data);
    assert_eq!(letters.len(), 2, "{letters:#?}");
    let unknown =
        letter_for(&letters, &format!("nowhere/unknown/{long_key}"))["reason"].as_str().unwrap_or_default().to_owned();
    assert!(unknown.contains("no endpoint serves function type nowhere/unknown"), "{unknown}");
    let big = letter_for(&letters, &format!("shoppingcart/cart/{user}"));
    let reason = big["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("larger than an exchange record carries"), "{reason}");
    assert_eq!(big["messages"].as_array().map(Vec::len), Some(1), "the message is kept whole: {big}");
}
