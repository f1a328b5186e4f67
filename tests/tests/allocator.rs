//! The worker's allocator: it runs with a short purge delay, so memory it
//! frees goes back to the system before the memory budget counts it, and an
//! operator's own setting is kept.

use std::time::Duration;

use statefun_tests::{FunctionServer, Runtime, WithEnv, shopping_cart_module, wait_until};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Starts a worker with mimalloc's options printed as the process loads, and
/// returns its log once it has started, with its environment as it runs.
fn start_and_read(extra_env: &[(&str, &str)]) -> (String, String) {
    let server = FunctionServer::start(shopping_cart::functions());
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let module = shopping_cart_module(dir.path(), server.addr.port());
    let mut extra = vec![("MIMALLOC_VERBOSE".to_string(), "1".to_string())];
    extra.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let deployment = WithEnv { data: &data, extra };
    let mut runtime = Runtime::start(&deployment, &module, &[]);
    wait_until(TIMEOUT, "the runtime to start", || runtime.log_text().contains("runtime starting"));
    let environ = std::fs::read(format!("/proc/{}/environ", runtime.pid())).expect("the worker's environment");
    let environ = String::from_utf8_lossy(&environ).replace('\0', "\n");
    assert!(runtime.terminate().success(), "runtime log:\n{}", runtime.log_text());
    (runtime.log_text(), environ)
}

#[test]
fn the_worker_runs_with_a_short_purge_delay() {
    let (log, environ) = start_and_read(&[]);
    assert!(environ.lines().any(|l| l == "MIMALLOC_PURGE_DELAY=100"), "the worker's environment:\n{environ}");
    assert!(log.contains("option 'purge_delay': 100 "), "mimalloc runs with the worker's delay; log:\n{log}");
}

#[test]
fn an_operators_purge_delay_is_kept() {
    let (log, environ) = start_and_read(&[("MIMALLOC_PURGE_DELAY", "250")]);
    assert!(environ.lines().any(|l| l == "MIMALLOC_PURGE_DELAY=250"), "the worker's environment:\n{environ}");
    assert!(log.contains("option 'purge_delay': 250 "), "mimalloc runs with the operator's delay; log:\n{log}");
    assert!(!log.contains("option 'purge_delay': 100 "), "the worker did not start again with its own; log:\n{log}");
}
