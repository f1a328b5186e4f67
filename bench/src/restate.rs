//! Scenario 5, the peer: Restate (the `restate-server` binary from npm
//! `@restatedev/restate-server`) with the counter as a Virtual Object of its
//! TypeScript SDK (`bench/restate/counter.mjs`, run with node), driven through
//! Restate's HTTP ingress over 1,000 keys and over one hot key.
//!
//! Compared at its best on this machine: a short sweep first tries each
//! partition count (`RESTATE_DEFAULT_NUM_PARTITIONS`, 1, 4 and 24 by default;
//! a fresh cluster each, as the count is fixed when a cluster is created) at
//! each number of requests in flight (64, 256 and 1,024 by default) over the
//! 1,000 keys, and the measured rows use the partition count that served the
//! most. Then, for the 1,000 keys and the hot key:
//!
//! - **throughput**: the closed loop at each number in flight, the best of
//!   them (the row says which);
//! - **latency**: the round trip with one request in flight (the row's p50 and
//!   p99), and paced at the latency phases' rate, as the runtime's latency rows
//!   are (a row of its own, `restate-keys-paced` / `restate-hot-paced`; an open
//!   loop: a request does not wait for the one before).
//!
//! `scripts/bench.sh` installs both packages into `.local/bench/restate`
//! (pinned versions); without them the scenario is skipped with a note. CPU
//! per 1,000 requests and peak memory are the `restate-server` process'; the
//! SDK's node process is reported in the details (the runtime's figures do not
//! count its functions either).

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
use serde_json::json;

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
    /// The numbers of requests in flight the closed loop tries.
    pub concurrency: Vec<usize>,
    /// The partition counts the sweep tries.
    pub partitions: Vec<u32>,
    pub duration: Duration,
    pub keys: usize,
    /// Requests per second and seconds of the paced latency phase.
    pub latency_rate: f64,
    pub latency_duration: Duration,
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

/// A restate-server with the counter service registered, ready for requests.
struct Cluster {
    server: ChildProcess,
    service: ChildProcess,
    client: HttpClient,
    ingress: String,
    dir: PathBuf,
}

impl Cluster {
    async fn start(settings: &Settings, server_binary: &Path, partitions: u32) -> anyhow::Result<Self> {
        let dir = settings.work_dir.join(format!("restate-{partitions}-partitions"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let (node_port, ingress_port, admin_port, service_port) =
            (free_port()?, free_port()?, free_port()?, free_port()?);
        let mut command = Command::new(server_binary);
        command
            .arg("--no-logo")
            .env("RESTATE_BASE_DIR", dir.join("data"))
            .env("RESTATE_LISTEN_MODE", "tcp")
            .env("RESTATE_BIND_ADDRESS", format!("127.0.0.1:{node_port}"))
            .env("RESTATE_ADVERTISED_ADDRESS", format!("http://127.0.0.1:{node_port}"))
            .env("RESTATE_INGRESS__BIND_ADDRESS", format!("127.0.0.1:{ingress_port}"))
            .env("RESTATE_ADMIN__BIND_ADDRESS", format!("127.0.0.1:{admin_port}"))
            .env("RESTATE_DEFAULT_NUM_PARTITIONS", partitions.to_string())
            .env("RESTATE_LOG_FILTER", "warn");
        let mut server = ChildProcess::spawn("restate-server", command, &dir.join("restate-server.log"))?;
        let script = settings.install_dir.join("counter.mjs");
        std::fs::write(&script, COUNTER_JS)?;
        let mut node = Command::new("node");
        node.arg(&script).env("PORT", service_port.to_string()).env("RESTATE_LOGGING", "WARN");
        let mut service = ChildProcess::spawn("node counter.mjs", node, &dir.join("counter.log"))?;

        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let most_in_flight = settings.concurrency.iter().copied().max().unwrap_or(64);
        let client: HttpClient =
            Client::builder(TokioExecutor::new()).pool_max_idle_per_host(most_in_flight.max(16)).build(connector);
        let admin = format!("http://127.0.0.1:{admin_port}");
        let ingress = format!("http://127.0.0.1:{ingress_port}");

        progress!(
            "Restate: starting restate-server (pid {}, {partitions} partitions) and the counter service",
            server.pid()
        );
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
        Ok(Self { server, service, client, ingress, dir })
    }

    fn urls(&self, name: &str, keys: usize) -> Arc<Vec<String>> {
        Arc::new((0..keys.max(1)).map(|k| format!("{}/counter/{name}-{k}/add", self.ingress)).collect())
    }

    /// The closed loop at each number in flight (after a second's warm-up): the best
    /// (rate, in flight, latencies), every level's rate, and the calls made in all.
    async fn best_closed_loop(
        &self,
        urls: &Arc<Vec<String>>,
        levels: &[usize],
        duration: Duration,
    ) -> anyhow::Result<((f64, usize, Latencies), Vec<(usize, f64)>, usize)> {
        let mut best: Option<(f64, usize, Latencies)> = None;
        let mut rates = Vec::new();
        let mut calls = 0;
        for &in_flight in levels {
            calls += closed_loop(&self.client, urls, in_flight, Duration::from_secs(1)).await?.len();
            let started = Instant::now();
            let latencies = closed_loop(&self.client, urls, in_flight, duration).await?;
            let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
            calls += latencies.len();
            rates.push((in_flight, rate));
            if best.as_ref().is_none_or(|(b, ..)| rate > *b) {
                best = Some((rate, in_flight, latencies));
            }
        }
        let Some(best) = best else { bail!("no level of requests in flight to try") };
        Ok((best, rates, calls))
    }

    fn stop(mut self) {
        let _ = self.service.terminate(Duration::from_secs(10));
        let _ = self.server.terminate(Duration::from_secs(30));
        crate::delete_at_end(self.dir.join("data"));
    }
}

async fn try_run(settings: &Settings, server_binary: &Path) -> anyhow::Result<Vec<Row>> {
    // The sweep: each partition count, a short closed loop at each level over the 1,000 keys.
    let probe = (settings.duration / 3).max(Duration::from_secs(2));
    let mut sweep = Vec::new();
    let mut best_partitions: Option<(f64, u32)> = None;
    for &partitions in &settings.partitions {
        let cluster = Cluster::start(settings, server_binary, partitions).await?;
        let urls = cluster.urls("sweep", settings.keys);
        let result = cluster.best_closed_loop(&urls, &settings.concurrency, probe).await;
        cluster.stop();
        let ((rate, in_flight, _), rates, _) = result?;
        progress!("Restate, {partitions} partitions: best {rate:.0} requests/s with {in_flight} in flight");
        for (in_flight, rate) in rates {
            sweep.push(json!({ "partitions": partitions, "in_flight": in_flight, "requests_per_sec": rate }));
        }
        if best_partitions.is_none_or(|(b, _)| rate > b) {
            best_partitions = Some((rate, partitions));
        }
    }
    let Some((_, partitions)) = best_partitions else { bail!("no partition count to try") };

    let cluster = Cluster::start(settings, server_binary, partitions).await?;
    let mut rows = Vec::new();
    for (name, title, keys) in [("restate-keys", KEYS_TITLE, settings.keys), ("restate-hot", HOT_TITLE, 1)] {
        let urls = cluster.urls(name, keys);
        let (server_pid, service_pid) = (cluster.server.pid(), cluster.service.pid());
        let cpu = procfs::cpu_seconds(Some(server_pid));
        let node_cpu = procfs::cpu_seconds(Some(service_pid));
        let levels = &settings.concurrency;
        progress!("{title}: {levels:?} in flight, {:?} each", settings.duration);
        let ((rate, in_flight, mut latencies), rates, calls) =
            cluster.best_closed_loop(&urls, levels, settings.duration).await?;
        let calls = calls as f64;
        let cpu = procfs::cpu_seconds(Some(server_pid)).zip(cpu).map(|(a, b)| a - b);
        let node_cpu = procfs::cpu_seconds(Some(service_pid)).zip(node_cpu).map(|(a, b)| a - b);
        // Latency as a caller who waits for each answer sees it: one request in flight, so the
        // figure is Restate's own path and not the queue the closed loop builds in front of it.
        progress!("{title}: 1 in flight for {:?}", settings.duration);
        let single_started = Instant::now();
        let mut single = closed_loop(&cluster.client, &urls, 1, settings.duration).await?;
        let single_rate = single.len() as f64 / single_started.elapsed().as_secs_f64();
        let (p50, p99) = single.p50_p99();
        let title = format!("{title} ({partitions} partitions)");
        let mut row = Row::new(name, &title);
        row.messages = latencies.len() as u64;
        row.msgs_per_sec = Some(rate);
        row.p50_ms = p50;
        row.p99_ms = p99;
        row.latency_at = format!("1 in flight ({single_rate:.0}/s); msg/s: best closed loop ({in_flight} in flight)");
        row.detail("saturated_latency", latencies.summary());
        row.detail("saturated_in_flight", in_flight);
        row.detail(
            "closed_loop_rates",
            rates.iter().map(|(n, r)| json!({ "in_flight": n, "requests_per_sec": r })).collect::<Vec<_>>(),
        );
        row.detail("partitions", partitions);
        row.detail("partition_sweep", &sweep);
        row.cpu_s_per_1k = cpu.map(|c| c / calls * 1000.0);
        row.cpu_of = "restate-server".into();
        row.peak_mib = procfs::peak_rss_bytes(Some(server_pid)).map(|b| b as f64 / 1_048_576.0);
        row.detail("sdk_node_cpu_s_per_1k", node_cpu.map(|c| c / calls * 1000.0));
        row.detail("latency", single.summary());
        row.detail("keys", keys);
        let versions = std::fs::read_to_string(settings.install_dir.join("versions.txt")).unwrap_or_default();
        row.detail("versions", versions.trim());
        progress!(
            "{title}: {rate:.0} requests/s with {in_flight} in flight; p50 {:.1} ms with 1 in flight",
            p50.unwrap_or(f64::NAN)
        );
        rows.push(row);

        let rate = settings.latency_rate;
        progress!("{title}: paced at {rate:.0}/s for {:?}", settings.latency_duration);
        let mut paced = paced_loop(&cluster.client, &urls, rate, settings.latency_duration).await?;
        let (p50, p99) = paced.p50_p99();
        let mut row = Row::new(&format!("{name}-paced"), &format!("{title}, paced"));
        row.messages = paced.len() as u64;
        row.p50_ms = p50;
        row.p99_ms = p99;
        row.latency_at = format!("{rate:.0}/s paced");
        row.detail("latency", paced.summary());
        row.detail("offered_rate", rate);
        row.detail("partitions", partitions);
        rows.push(row);
    }
    cluster.stop();
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
    stats::closed_loop(concurrency, duration, move |n| add(client.clone(), urls.clone(), n)).await
}

/// Calls `add` on the next key in turn at `rate` per second for `duration`, each call
/// in a task of its own (an open loop: a slow answer does not delay the next request).
async fn paced_loop(
    client: &HttpClient,
    urls: &Arc<Vec<String>>,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Latencies> {
    let (client, urls) = (client.clone(), urls.clone());
    stats::paced(rate, duration, move |n| add(client.clone(), urls.clone(), n)).await
}

/// The counter's `add` on the `n`th key (in turn), which must succeed.
async fn add(client: HttpClient, urls: Arc<Vec<String>>, n: usize) -> anyhow::Result<()> {
    let url = &urls[n % urls.len()];
    let (status, body) = post(&client, url, "application/json", "1".into()).await?;
    if !status.is_success() {
        bail!("{url}: HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(())
}
