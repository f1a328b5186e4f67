//! Wire compatibility with StateFun (DESIGN.md section 3): functions written with
//! the OFFICIAL StateFun Python SDK (PyPI `apache-flink-statefun==3.3.0`),
//! served over HTTP by tests/python/greeter.py, run unchanged on our runtime:
//! state negotiation (an `incomplete_invocation_context` with an expiration
//! spec), state mutations, a function-to-function message (with its caller)
//! and Kinesis egress records built by the SDK's `kinesis_egress_message`.
//!
//! The Python environment comes from scripts/python-env.sh (a venv under the
//! ignored `.local/`, created on first use; needs python3 and PyPI).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use statefun_tests::python::{PythonServer, python_env};
use statefun_tests::{Runtime, dead_letters_json, state_json, statefun, tail_json};

const TIMEOUT: Duration = Duration::from_secs(60);

fn write_module(dir: &Path, port: u16) -> PathBuf {
    let path = dir.join("module.yaml");
    let yaml = format!(
        r#"# A StateFun module.yaml, as a StateFun user would write it for Python functions.
kind: io.statefun.endpoints.v2/http
spec:
  functions: compat/*
  urlPathTemplate: http://127.0.0.1:{port}/statefun/{{function.name}}
  transport:
    type: io.statefun.transports.v1/async
    call: 10s
    connect: 2s
---
kind: io.statefun.kinesis.v1/ingress
spec:
  id: compat/names
  awsRegion:
    type: default
  startupPosition:
    type: earliest
  streams:
    - stream: names
      valueType: io.statefun.types/string
      targets:
        - compat/greeter
---
kind: io.statefun.kinesis.v1/egress
spec:
  id: compat/kinesis
  awsRegion:
    type: default
"#
    );
    std::fs::write(&path, yaml).expect("write module.yaml");
    path
}

/// Values of a stream's records grouped by partition key, in stream order.
fn values_by_key(records: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut by_key: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for record in records {
        let key = record["key"].as_str().unwrap_or_default().to_owned();
        by_key.entry(key).or_default().push(record["value"].clone());
    }
    by_key
}

fn greetings(name: &str, count: usize) -> Vec<Value> {
    (1..=count).map(|n| json!(format!("Hello {name}! (greeting #{n})"))).collect()
}

#[test]
fn official_statefun_python_sdk_functions_negotiate_state_message_each_other_and_emit_to_kinesis() {
    let started = Instant::now();
    let python = python_env();
    eprintln!("python environment ready in {:?}: {}", started.elapsed(), python.display());

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = PythonServer::start(&python, "greeter.py", &["0"], dir.path());
    let module = write_module(dir.path(), server.port);
    let mut runtime = Runtime::start(&data, &module, &[]);
    let diagnostics = |runtime: &Runtime| {
        format!("\n--- runtime log ---\n{}\n--- greeter.py stderr ---\n{}", runtime.log_text(), server.stderr_text())
    };

    // Two waves: the first makes the SDK negotiate state for every greeter (the runtime
    // batches what queued meanwhile); the second finds stored values, which the runtime must
    // send back (greetings #2 and #3 depend on `seen` coming back from the runtime).
    let module_arg = module.to_string_lossy();
    let send = |name: &str| {
        let value = json!(name).to_string();
        statefun(&data, &["send", "--module", &module_arg, "--stream", "names", "--key", name, "--value", &value]);
    };
    let wait_start = Instant::now();
    let wait_for = |greetings: usize, totals: usize| loop {
        let (greeted, counted) = (tail_json(&data, "greetings").len(), tail_json(&data, "totals").len());
        if greeted >= greetings && counted >= totals {
            break;
        }
        assert!(
            wait_start.elapsed() < TIMEOUT,
            "timed out after {TIMEOUT:?} with {greeted}/{greetings} greetings and {counted}/{totals} totals; dead letters: {:?}{}",
            dead_letters_json(&data),
            diagnostics(&runtime)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for name in ["alice", "bob", "alice", "carol"] {
        send(name);
    }
    wait_for(4, 3);
    for name in ["bob", "alice"] {
        send(name);
    }
    wait_for(6, 3);
    eprintln!("all egress records after {:?} of processing", wait_start.elapsed());

    let greeted = values_by_key(&tail_json(&data, "greetings"));
    let expected: BTreeMap<String, Vec<Value>> = [("alice", 3), ("bob", 2), ("carol", 1)]
        .into_iter()
        .map(|(name, n)| (name.to_owned(), greetings(name, n)))
        .collect();
    assert_eq!(greeted, expected, "greetings per key, in order, each exactly once{}", diagnostics(&runtime));

    let totals = values_by_key(&tail_json(&data, "totals"));
    let expected_totals: BTreeMap<String, Vec<Value>> =
        [("all".to_owned(), vec![json!("total=1"), json!("total=2"), json!("total=3")])].into();
    assert_eq!(totals, expected_totals, "one total per distinct name, counting up{}", diagnostics(&runtime));

    let state = state_json(&data);
    let expected_state = json!({
        "compat/greeter/alice": {"seen": 3, "last_name": "alice"},
        "compat/greeter/bob": {"seen": 2, "last_name": "bob"},
        "compat/greeter/carol": {"seen": 1, "last_name": "carol"},
        "compat/counter/all": {"total": 3},
    });
    assert_eq!(state, expected_state, "committed state{}", diagnostics(&runtime));

    let dead = dead_letters_json(&data);
    assert!(dead.is_empty(), "no dead letters expected, got {dead:?}{}", diagnostics(&runtime));

    // The SDK really negotiated: its first answer for a greeter listed both states, with
    // `last_name`'s expiration spec, and later requests carried both states with values.
    let log = server.stderr_text();
    assert!(
        log.lines().any(|l| l.contains("compat/greeter/")
            && l.contains("incomplete(missing seen:io.statefun.types/int:mode=0/0ms,last_name:io.statefun.types/string:mode=1/3600000ms)")),
        "greeter.py never answered incomplete_invocation_context for compat/greeter{}",
        diagnostics(&runtime)
    );
    assert!(
        log.lines().any(|l| l.contains("compat/greeter/")
            && l.contains("seen=set")
            && l.contains("last_name=set")
            && l.contains("-> result(")),
        "no greeter request carried both registered states with values{}",
        diagnostics(&runtime)
    );
    assert!(!log.contains("failed:"), "greeter.py rejected a request{}", diagnostics(&runtime));

    let status = runtime.terminate();
    assert!(status.success(), "runtime exited with {status} after SIGTERM{}", diagnostics(&runtime));
    eprintln!("test body took {:?}\n--- greeter.py requests ---\n{log}", started.elapsed());
}
