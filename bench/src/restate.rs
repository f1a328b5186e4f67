//! Scenario 5, the peer: Restate (the `restate-server` binary from npm
//! `@restatedev/restate-server`) with the counter as a Virtual Object of its
//! TypeScript SDK (`bench/restate/counter.mjs`, run with node), driven through
//! Restate's HTTP ingress with `concurrency` requests in flight, over 1,000
//! keys and over one hot key.
//!
//! `scripts/bench.sh` installs both packages into `.local/bench/restate`
//! (pinned versions); without them the scenario is skipped with a note. CPU
//! per 1,000 requests and peak memory are the `restate-server` process'; the
//! SDK's node process is reported in the details (the runtime's figures do not
//! count its functions either). Throughput is the closed loop's; latency is
//! the round trip with one request in flight, measured after it (the closed
//! loop's own latency is in the details as `saturated_latency`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::processes::{ChildProcess, tail};
use crate::report::Row;
use crate::stats::{self, Latencies};
use crate::{procfs, progress};

/// The counter service, written next to the installed SDK at run time.
const COUNTER_JS: &str = include_str!("../restate/counter.mjs");

pub struct Settings {
    /// Where `scripts/bench.sh` installed the npm packages.
    pub install_dir: PathBuf,
    pub work_dir: PathBuf,
    pub concurrency: usize,
    pub duration: Duration,
    pub keys: usize,
}

const KEYS_TITLE: &str = "Restate, 1,000 keys";
const HOT_TITLE: &str = "Restate, hot key";

type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub async fn run(settings: &Settings) -> Vec<Row> {
    let server = settings.install_dir.join("node_modules/@restatedev/restate-server-linux-x64/bin/restate-server");
    if !server.exists() {
        let reason = format!("restate-server not installed in {} (npm unreachable?)", settings.install_dir.display());
        return skipped(reason);
    }
    match try_run(settings, &server).await {
        Ok(rows) => rows,
        Err(e) => {
            progress!("Restate: FAILED: {e:#}");
            let reason = format!("failed: {e:#}");
            skipped(reason)
        }
    }
}

fn skipped(reason: String) -> Vec<Row> {
    vec![Row::skipped("restate-keys", KEYS_TITLE, reason.clone()), Row::skipped("restate-hot", HOT_TITLE, reason)]
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn try_run(settings: &Settings, server_binary: &Path) -> anyhow::Result<Vec<Row>> {
    let dir = settings.work_dir.join("restate");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let (node_port, ingress_port, admin_port, service_port) = (free_port()?, free_port()?, free_port()?, free_port()?);
    let mut command = Command::new(server_binary);
    command
        .arg("--no-logo")
        .env("RESTATE_BASE_DIR", dir.join("data"))
        .env("RESTATE_LISTEN_MODE", "tcp")
        .env("RESTATE_BIND_ADDRESS", format!("127.0.0.1:{node_port}"))
        .env("RESTATE_ADVERTISED_ADDRESS", format!("http://127.0.0.1:{node_port}"))
        .env("RESTATE_INGRESS__BIND_ADDRESS", format!("127.0.0.1:{ingress_port}"))
        .env("RESTATE_ADMIN__BIND_ADDRESS", format!("127.0.0.1:{admin_port}"))
        .env("RESTATE_LOG_FILTER", "warn");
    let mut server = ChildProcess::spawn("restate-server", command, &dir.join("restate-server.log"))?;
    let script = settings.install_dir.join("counter.mjs");
    std::fs::write(&script, COUNTER_JS)?;
    let mut node = Command::new("node");
    node.arg(&script).env("PORT", service_port.to_string()).env("RESTATE_LOGGING", "WARN");
    let mut service = ChildProcess::spawn("node counter.mjs", node, &dir.join("counter.log"))?;

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient =
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(settings.concurrency.max(16)).build(connector);
    let admin = format!("http://127.0.0.1:{admin_port}");
    let ingress = format!("http://127.0.0.1:{ingress_port}");

    progress!("Restate: starting restate-server (pid {}) and the counter service", server.pid());
    let start = Instant::now();
    loop {
        server.check_running()?;
        service.check_running()?;
        let body = format!(r#"{{"uri":"http://127.0.0.1:{service_port}"}}"#);
        if let Ok((status, _)) = post(&client, &format!("{admin}/deployments"), "application/json", body).await
            && status.is_success()
        {
            break;
        }
        if start.elapsed() > Duration::from_secs(90) {
            bail!("Restate did not accept the deployment within 90 s; {}", tail(&server.log, 10));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The first invocation after a registration may wait for the schema to propagate.
    let start = Instant::now();
    let warm = format!("{ingress}/counter/warm/add");
    while !post(&client, &warm, "application/json", "1".into()).await.is_ok_and(|r| r.0.is_success()) {
        if start.elapsed() > Duration::from_secs(60) {
            bail!("Restate's ingress did not answer within 60 s; {}", tail(&server.log, 10));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut rows = Vec::new();
    for (name, title, keys) in [("restate-keys", KEYS_TITLE, settings.keys), ("restate-hot", HOT_TITLE, 1)] {
        let urls: Arc<Vec<String>> =
            Arc::new((0..keys.max(1)).map(|k| format!("{ingress}/counter/{name}-{k}/add")).collect());
        progress!("{title}: warm-up");
        closed_loop(&client, &urls, settings.concurrency, Duration::from_secs(2)).await?;
        progress!("{title}: {} in flight for {:?}", settings.concurrency, settings.duration);
        let cpu = procfs::cpu_seconds(Some(server.pid()));
        let node_cpu = procfs::cpu_seconds(Some(service.pid()));
        let started = Instant::now();
        let mut latencies = closed_loop(&client, &urls, settings.concurrency, settings.duration).await?;
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = procfs::cpu_seconds(Some(server.pid())).zip(cpu).map(|(a, b)| a - b);
        let node_cpu = procfs::cpu_seconds(Some(service.pid())).zip(node_cpu).map(|(a, b)| a - b);
        let calls = latencies.len() as f64;
        // Latency as a caller who waits for each answer sees it: one request in flight, so the
        // figure is Restate's own path and not the queue the closed loop builds in front of it.
        progress!("{title}: 1 in flight for {:?}", settings.duration);
        let single_started = Instant::now();
        let mut single = closed_loop(&client, &urls, 1, settings.duration).await?;
        let single_rate = single.len() as f64 / single_started.elapsed().as_secs_f64();
        let (p50, p99) = single.p50_p99();
        let mut row = Row::new(name, title);
        row.messages = latencies.len() as u64;
        row.msgs_per_sec = Some(calls / elapsed);
        row.p50_ms = p50;
        row.p99_ms = p99;
        row.latency_at = format!("1 in flight ({single_rate:.0}/s)");
        row.detail("saturated_latency", latencies.summary());
        row.detail("saturated_in_flight", settings.concurrency);
        row.cpu_s_per_1k = cpu.map(|c| c / calls * 1000.0);
        row.cpu_of = "restate-server".into();
        row.peak_mib = procfs::peak_rss_bytes(Some(server.pid())).map(|b| b as f64 / 1_048_576.0);
        row.detail("sdk_node_cpu_s_per_1k", node_cpu.map(|c| c / calls * 1000.0));
        row.detail("latency", single.summary());
        row.detail("keys", keys);
        let versions = std::fs::read_to_string(settings.install_dir.join("versions.txt")).unwrap_or_default();
        row.detail("versions", versions.trim());
        progress!(
            "{title}: {:.0} requests/s with {} in flight; p50 {:.1} ms with 1 in flight",
            calls / elapsed,
            settings.concurrency,
            p50.unwrap_or(f64::NAN)
        );
        rows.push(row);
    }
    let _ = service.terminate(Duration::from_secs(10));
    let _ = server.terminate(Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(dir.join("data"));
    Ok(rows)
}

async fn post(
    client: &HttpClient,
    url: &str,
    content_type: &str,
    body: String,
) -> anyhow::Result<(http::StatusCode, Bytes)> {
    let request =
        http::Request::post(url).header(http::header::CONTENT_TYPE, content_type).body(Full::new(Bytes::from(body)))?;
    let response = client.request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// `concurrency` tasks each calling `add` on the next key in turn until `duration` is over.
async fn closed_loop(
    client: &HttpClient,
    urls: &Arc<Vec<String>>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Latencies> {
    let (client, urls) = (client.clone(), urls.clone());
    stats::closed_loop(concurrency, duration, move |n| {
        let (client, urls) = (client.clone(), urls.clone());
        async move {
            let url = &urls[n % urls.len()];
            let (status, body) = post(&client, url, "application/json", "1".into()).await?;
            if !status.is_success() {
                bail!("{url}: HTTP {status}: {}", String::from_utf8_lossy(&body));
            }
            Ok(())
        }
    })
    .await
}
