//! Scenario 1, the raw ceiling: the counter called directly with pre-built
//! `ToFunction` requests, one message per request, over the runtime's own HTTP
//! client (`statefun_runtime::invoke::http`: the hyper-util pooled keep-alive
//! client, configured from the same kind of module.yaml). What one message per
//! call can ever reach on this machine.
//!
//! The runtime has no fixed concurrency (one batch in flight per address, so up
//! to thousands of requests at once with 10,000 addresses; the pipeline
//! scenarios report how many connections it opened), so the ceiling is taken
//! over several levels of requests in flight, and the best is the row's figure.
//!
//! Each request carries the counter's state and one message, as the runtime
//! sends for an address with one queued message; the reply is decoded as the
//! runtime decodes it. CPU per 1,000 messages is this process' (the caller's).

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use statefun_proto::reqreply::FromFunction;
use statefun_runtime::address::FunctionType;
use statefun_runtime::config::ModuleConfig;
use statefun_runtime::invoke::FunctionClient;
use statefun_runtime::invoke::http::HttpClient;

use crate::processes::Functions;
use crate::report::Row;
use crate::stats::{Latencies, closed_loop};
use crate::{counter, procfs, progress};

pub struct Settings {
    /// Requests in flight to try; the best is the ceiling.
    pub concurrency: Vec<usize>,
    /// Of each level.
    pub duration: Duration,
    /// Distinct counters the requests go to.
    pub keys: usize,
}

/// Each call's timeout: the counter answers far sooner.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(settings: &Settings, functions: &Functions) -> Row {
    let title = "raw ceiling (direct calls, 1 message each)";
    match try_run(settings, functions, title).await {
        Ok(row) => row,
        Err(e) => Row::skipped("raw", title, format!("failed: {e:#}")),
    }
}

async fn try_run(settings: &Settings, functions: &Functions, title: &str) -> anyhow::Result<Row> {
    let module = ModuleConfig::parse(&counter::module_yaml(&functions.url, counter::INGRESS_STREAM), "bench")?;
    let endpoint = module.endpoints.first().ok_or_else(|| anyhow::anyhow!("no endpoint"))?;
    let client = Arc::new(HttpClient::new(endpoint, None).map_err(anyhow::Error::msg)?);
    let requests: Arc<Vec<Vec<u8>>> =
        Arc::new((0..settings.keys.max(1)).map(|k| counter::request(&format!("k{k}"), Some(1_000), 1)).collect());

    let mut best: Option<Row> = None;
    let mut levels = Vec::new();
    for &concurrency in &settings.concurrency {
        call_for(&client, &requests, concurrency, Duration::from_secs(1)).await?;
        let cpu = procfs::cpu_seconds(None);
        let functions_cpu = procfs::cpu_seconds(Some(functions.process.pid()));
        let started = Instant::now();
        let mut latencies = call_for(&client, &requests, concurrency, settings.duration).await?;
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = procfs::cpu_seconds(None).zip(cpu).map(|(a, b)| a - b);
        let functions_cpu = procfs::cpu_seconds(Some(functions.process.pid())).zip(functions_cpu).map(|(a, b)| a - b);

        let calls = latencies.len() as f64;
        let (p50, p99) = latencies.p50_p99();
        let mut row = Row::new("raw", title);
        row.messages = latencies.len() as u64;
        row.msgs_per_sec = Some(calls / elapsed);
        row.p50_ms = p50;
        row.p99_ms = p99;
        row.latency_at = format!("{concurrency} in flight");
        row.cpu_s_per_1k = cpu.map(|c| c / calls * 1000.0);
        row.cpu_of = "caller".into();
        row.detail("functions_cpu_s_per_1k", functions_cpu.map(|c| c / calls * 1000.0));
        row.detail("concurrency", concurrency);
        row.detail("latency", latencies.summary());
        let p50_ms = p50.unwrap_or(f64::NAN);
        progress!("{title}: {concurrency} in flight: {:.0} calls/s, p50 {p50_ms:.2} ms", calls / elapsed);
        levels.push(serde_json::json!({
            "concurrency": concurrency, "calls_per_sec": calls / elapsed, "p50_ms": p50, "p99_ms": p99,
            "caller_cpu_s_per_1k": row.cpu_s_per_1k,
        }));
        if best.as_ref().is_none_or(|b| b.msgs_per_sec < row.msgs_per_sec) {
            best = Some(row);
        }
    }
    let mut row = best.ok_or_else(|| anyhow::anyhow!("no concurrency level given"))?;
    row.notes.push(format!(
        "best of {} requests in flight: {}",
        settings.concurrency.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", "),
        levels
            .iter()
            .map(|l| format!("{:.0}/s at {}", l["calls_per_sec"].as_f64().unwrap_or(0.0), l["concurrency"]))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    row.detail("levels", levels);
    Ok(row)
}

/// `concurrency` tasks calling in a loop for `duration`; the latency of every call.
async fn call_for(
    client: &Arc<HttpClient>,
    requests: &Arc<Vec<Vec<u8>>>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Latencies> {
    let (client, requests) = (client.clone(), requests.clone());
    closed_loop(concurrency, duration, move |n| {
        let (client, body) = (client.clone(), requests[n % requests.len()].clone());
        async move {
            let function_type = FunctionType::new(counter::NAMESPACE, "counter");
            let reply = client.call(&function_type, body, CALL_TIMEOUT).await?;
            FromFunction::decode(reply.as_slice())?;
            Ok(())
        }
    })
    .await
}
