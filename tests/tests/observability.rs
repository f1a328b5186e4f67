//! What an operator sees of a running worker, end to end:
//!
//! - a real Prometheus server (Debian's `prometheus`; scripts/test.sh installs
//!   it) scrapes the admin server of a worker running the shopping cart, and
//!   its query API returns ingress, egress, commit and dead-letter counts equal
//!   to what the workload put in and what the streams and the commit store hold;
//! - the status page, loaded in headless Chromium (Debian's `chromium`), runs
//!   its JavaScript and shows the numbers `/status.json` gives;
//! - `/ready` answers 200 once every partition serves, and 503 naming the
//!   partition while one cannot recover; that partition is stuck in
//!   `/status.json` and in `statefun status --json`, and its failures are
//!   counted in `statefun_partition_failures_total`;
//! - with `--log-format json` every log line is a JSON object, and a failure
//!   carries the partition and the reason as fields.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use statefun_runtime::coordination::CommitStore as _;
use statefun_runtime::coordination::local::LocalCommitStore;
use statefun_tests::cart;
use statefun_tests::{
    FunctionServer, Runtime, append_raw, dead_letters_json, send_lines, shopping_cart_module, statefun, tail_json,
    wait_until,
};

const TIMEOUT: Duration = Duration::from_secs(120);
const PARTITIONS: u32 = 4;

/// The admin server's address, from the line the runtime logs when it listens.
fn admin_address(runtime: &Runtime) -> String {
    let mut address = None;
    wait_until(Duration::from_secs(30), "the admin server to listen", || {
        address = runtime.log_text().lines().find_map(|line| {
            let rest = line.split("status page at http://").nth(1)?;
            Some(rest.split('/').next()?.to_owned())
        });
        address.is_some()
    });
    address.unwrap_or_default()
}

/// `GET path` over plain HTTP/1.0: the status code and the body.
fn get(address: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap_or_else(|e| panic!("connecting to {address}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, body.to_owned())
}

fn status_json(address: &str) -> Value {
    let (status, body) = get(address, "/status.json");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("status.json is JSON")
}

/// A value of the exposition, by its exact series name (with labels).
fn exposed(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A Prometheus server scraping one target every second, in a directory of its own.
struct Prometheus {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        let scrape = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: statefun\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(&config, scrape).expect("prometheus.yml");
        // A free port, given back just before Prometheus takes it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let address = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus is installed (scripts/test.sh installs Debian's package)");
        Self { child, address, _dir: dir }
    }

    fn api(&self, path: &str) -> Option<Value> {
        let stream = TcpStream::connect(&self.address).ok()?;
        drop(stream);
        let (status, body) = get(&self.address, path);
        (status == 200).then(|| serde_json::from_str(&body).ok()).flatten()
    }

    fn target_is_up(&self) -> bool {
        self.api("/api/v1/targets")
            .and_then(|t| t["data"]["activeTargets"].as_array().cloned())
            .is_some_and(|targets| targets.iter().any(|t| t["health"] == "up"))
    }

    /// The value of an instant query that returns one series (a `sum`, usually).
    fn query(&self, promql: &str) -> Option<f64> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
                other => format!("%{other:02X}"),
            })
            .collect();
        let answer = self.api(&format!("/api/v1/query?query={encoded}"))?;
        answer["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every partition's committed epoch, from the commit store: a fresh
/// partition's first epoch is 1, so this is how many commits it made.
fn committed_epochs(data: &Path) -> u64 {
    let store = LocalCommitStore::open(data).expect("commit store");
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    (0..PARTITIONS).map(|p| runtime.block_on(store.committed(p)).expect("read").map_or(0, |c| c.manifest.epoch)).sum()
}

/// The page's DOM after its JavaScript ran, as headless Chromium saw it.
fn rendered_page(url: &str) -> String {
    let profile = tempfile::tempdir().expect("profile");
    // The flags keep Chromium off the network it cannot reach here, and its virtual time lets
    // the page's first fetch of /status.json land before the DOM is dumped.
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("chromium is installed (scripts/test.sh installs Debian's package)");
    assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The text of the element whose opening tag contains `marker` (the first one after `from`).
fn element_text<'a>(dom: &'a str, marker: &str) -> Option<&'a str> {
    let start = dom.find(marker)?;
    let text = &dom[start..];
    let text = &text[text.find('>')? + 1..];
    Some(&text[..text.find('<')?])
}

#[test]
fn prometheus_and_the_status_page_see_what_the_shopping_cart_did() {
    let server = FunctionServer::start(shopping_cart::functions());
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let module = shopping_cart_module(dir.path(), server.addr.port());
    let options = ["--admin-listen", "127.0.0.1:0", "--invoke-attempts", "2", "--invoke-backoff", "10ms"];
    let mut runtime = Runtime::start(&data, &module, &options);
    let admin = admin_address(&runtime);
    wait_until(TIMEOUT, "/ready to answer 200", || get(&admin, "/ready").0 == 200);
    assert_eq!(get(&admin, "/health"), (200, "ok\n".into()));

    let workload = cart::workload(10, 200, 11);
    send_lines(&data, &module, "restock", &workload.restock_records());
    wait_until(TIMEOUT, "the restocks", || workload.restocks_applied(&data) == workload.restocks.len());
    send_lines(&data, &module, "add-to-cart", &workload.order_records(&workload.orders));
    // A poison record: the cart function cannot decode it, so its call fails for good.
    append_raw(&data, "add-to-cart", "mallory", b"\xff\xff not an AddToCart").expect("append");
    wait_until(TIMEOUT, "a result for every order", || cart::results(&data).len() >= workload.orders.len());
    wait_until(TIMEOUT, "the poison record's dead letter", || !dead_letters_json(&data).is_empty());

    let ingress = (workload.restocks.len() + workload.orders.len() + 1) as f64;
    let results = tail_json(&data, "cart-results").len() as f64;
    let updates = tail_json(&data, "inventory-updates").len() as f64;
    let letters = dead_letters_json(&data);
    assert_eq!(letters.len(), 1, "{letters:#?}");

    let prometheus = Prometheus::start(&admin);
    wait_until(TIMEOUT, "Prometheus to scrape the worker", || prometheus.target_is_up());
    let mut seen = Vec::new();
    wait_until(TIMEOUT, "Prometheus' counts to match the workload's", || {
        let commits = committed_epochs(&data) as f64;
        let queries = [
            ("sum(statefun_ingress_records_total)", ingress),
            ("sum(statefun_egress_records_total{stream=\"cart-results\"})", results),
            ("sum(statefun_egress_records_total{stream=\"inventory-updates\"})", updates),
            ("sum(statefun_commits_total)", commits),
            ("sum(statefun_dead_letters_total{reason=\"invocation_failed\"})", 1.0),
            ("sum(statefun_dead_letters_total)", 1.0),
            ("sum(statefun_invocations_total{outcome=\"dead_lettered\"})", 1.0),
            ("sum(statefun_partitions_held)", f64::from(PARTITIONS)),
            ("sum(statefun_stuck_partitions)", 0.0),
        ];
        seen = queries.iter().map(|(q, expected)| (*q, prometheus.query(q), *expected)).collect();
        seen.iter().all(|(_, got, expected)| *got == Some(*expected))
            && prometheus.query("sum(statefun_invocations_total{outcome=\"ok\"})").is_some_and(|ok| ok > 0.0)
    });
    eprintln!("Prometheus saw (query, value, expected): {seen:#?}");
    assert!(results > 0.0 && updates > 0.0);

    // The status page, rendered with its JavaScript, shows what /status.json says (the worker is idle now).
    let dom = rendered_page(&format!("http://{admin}/"));
    let status = status_json(&admin);
    assert_eq!(element_text(&dom, "id=\"owner\""), status["owner"].as_str(), "{dom}");
    assert_eq!(element_text(&dom, "id=\"ready\""), Some("ready"));
    for total in ["records_in", "records_out", "invocations", "dead_letters"] {
        let shown = element_text(&dom, &format!("id=\"total-{total}\""));
        assert_eq!(shown, Some(status["totals"][total].to_string().as_str()), "total {total}");
    }
    let partitions = status["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), PARTITIONS as usize);
    for partition in partitions {
        let row = format!("data-partition=\"{}\"", partition["partition"]);
        let row_start = dom.find(&row).unwrap_or_else(|| panic!("no row {row} in {dom}"));
        let row_dom = &dom[row_start..dom[row_start..].find("</tr>").map_or(dom.len(), |end| row_start + end)];
        for field in ["phase", "lease_counter", "epoch", "queued", "addresses", "timers"] {
            let expected = match &partition[field] {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            let shown = element_text(row_dom, &format!("data-field=\"{field}\""));
            assert_eq!(shown, Some(expected.as_str()), "partition {} field {field}", partition["partition"]);
        }
    }

    assert!(runtime.terminate().success(), "runtime log:\n{}", runtime.log_text());
}

/// Overwrites every checkpoint object of `partition` with bytes that decode as nothing.
fn corrupt_checkpoints(data: &Path, partition: u32) -> Vec<PathBuf> {
    let dir = data.join("checkpoints").join(format!("partition-{partition:05}"));
    let objects: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("epoch-")))
        .collect();
    for object in &objects {
        std::fs::write(object, b"\xff\xff\xff\xff not a checkpoint").expect("overwrite");
    }
    objects
}

#[test]
fn a_partition_that_cannot_recover_keeps_the_worker_unready_and_shows_as_stuck_with_its_failures_counted() {
    let server = FunctionServer::start(shopping_cart::functions());
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let module = shopping_cart_module(dir.path(), server.addr.port());
    let workload = cart::workload(5, 40, 2);
    let mut runtime = Runtime::start(&data, &module, &[]);
    send_lines(&data, &module, "restock", &workload.restock_records());
    wait_until(TIMEOUT, "the restocks", || workload.restocks_applied(&data) == workload.restocks.len());
    assert!(runtime.terminate().success(), "runtime log:\n{}", runtime.log_text());

    let broken = (0..PARTITIONS)
        .find(|p| data.join("checkpoints").join(format!("partition-{p:05}")).is_dir())
        .expect("a partition with checkpoints");
    assert!(!corrupt_checkpoints(&data, broken).is_empty());

    let mut runtime = Runtime::start(&data, &module, &["--admin-listen", "127.0.0.1:0", "--log-format", "json"]);
    let admin = admin_address(&runtime);
    let mut answer = (0, String::new());
    wait_until(TIMEOUT, "/ready to say the partition cannot recover", || {
        answer = get(&admin, "/ready");
        answer.0 == 503
            && answer.1.contains(&format!("partition {broken} failed"))
            && answer.1.contains("cannot recover")
    });
    eprintln!("/ready: {answer:?}");
    assert_eq!(get(&admin, "/health").0, 200, "the process itself is healthy");

    let status = status_json(&admin);
    let partitions = status["partitions"].as_array().expect("partitions");
    let entry = partitions.iter().find(|p| p["partition"] == broken).expect("the broken partition is listed");
    // Failed and resting, or taken again and failing again: a restart loop either way.
    assert!(entry["phase"] == "failed" || entry["phase"] == "recovering", "{entry:#}");
    assert!(entry["stuck"].as_str().is_some_and(|s| s.contains("cannot recover")), "{entry:#}");
    for other in partitions.iter().filter(|p| p["partition"] != broken) {
        assert_eq!(other["phase"], "serving", "{other:#}");
        assert!(other["stuck"].is_null(), "{other:#}");
    }
    let (_, metrics) = get(&admin, "/metrics");
    let failures = exposed(&metrics, "statefun_partition_failures_total{reason=\"recovery\"}");
    assert!(failures.is_some_and(|n| n >= 1.0), "{metrics}");
    assert!(exposed(&metrics, "statefun_stuck_partitions").is_some_and(|n| n >= 1.0), "{metrics}");

    // The worker's report reaches the checkpoint store within a lease round of the failure.
    let mut row = Value::Null;
    wait_until(TIMEOUT, "statefun status to show the partition stuck", || {
        let listed: Value = serde_json::from_str(&statefun(&data, &["status", "--json"])).expect("status --json");
        row = listed["partitions"][broken as usize].clone();
        row["stuck"].as_str().is_some_and(|s| s.contains("cannot recover"))
    });
    assert_eq!(row["partition"], broken, "{row:#}");
    assert!(row["failures"].as_u64().is_some_and(|n| n >= 1), "{row:#}");
    let table = statefun(&data, &["status"]);
    assert!(table.lines().count() == 1 + PARTITIONS as usize, "a header and a line per partition:\n{table}");
    assert!(table.contains("cannot recover"), "{table}");

    runtime.terminate();
    // JSON lines, and the failure names its partition and reason as fields.
    let log = runtime.log_text();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
        .collect();
    let failure = lines
        .iter()
        .find(|line| line["message"].as_str().is_some_and(|m| m.starts_with("partition failed")))
        .unwrap_or_else(|| panic!("no failure logged:\n{log}"));
    assert_eq!(failure["partition"], broken, "{failure}");
    assert_eq!(failure["cause"], "recovery", "{failure}");
    assert!(failure["reason"].as_str().is_some_and(|r| r.contains("cannot recover")), "{failure}");
    assert!(!log.contains('\u{1b}'), "no colour codes when stderr is a file");
}
