//! `statefun status`: every partition, who holds it (lease owner, counter and
//! age), what it committed (epoch, and when), how far behind its inputs are,
//! and whether it is stuck, from the lease records and the workers' reports
//! (see `observe::reports`). Reaches no worker: it reads the same stores the
//! workers write, so it works on both backends and on a deployment whose
//! workers are down.

use anyhow::Context as _;
use clap::Args;
use serde_json::{Value, json};
use statefun_runtime::coordination::Committed;
use statefun_runtime::log::LogError;
use statefun_runtime::now_ms;
use statefun_runtime::observe::reports::{self, REPORT_STALE};

use super::{Storage, out, patiently};

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    storage: Storage,
    /// The exchange, whose shard count is the partition count.
    #[arg(long, env = "STATEFUN_EXCHANGE_STREAM", default_value = "statefun-exchange")]
    exchange_stream: String,
    /// One JSON object: {"now_ms", "partitions": [...], "workers": [...]}.
    #[arg(long)]
    json: bool,
}

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let backends = args.storage.backends(None).await?;
    let partitions = match patiently(|| backends.log.shards(&args.exchange_stream)).await {
        Ok(shards) => shards.len() as u32,
        Err(LogError::NoSuchStream { .. }) => {
            anyhow::bail!("the exchange stream `{}` does not exist: the runtime never ran here", args.exchange_stream)
        }
        Err(e) => return Err(e.into()),
    };
    let reports = reports::read_all(backends.blobs.as_ref()).await.context("reading the workers' reports")?;
    let now = now_ms();
    let mut rows = Vec::new();
    for partition in 0..partitions {
        let record = backends.commits.lease(partition).await.with_context(|| format!("partition {partition}"))?;
        rows.push(row(partition, record.as_ref(), &reports, now));
    }
    let workers: Vec<Value> = reports
        .iter()
        .map(|r| {
            json!({
                "owner": r["owner"],
                "reported_ms": r["now_ms"],
                "report_age_ms": r["now_ms"].as_i64().map(|at| now - at),
                "ready": r["ready"],
                "not_ready": r["not_ready"],
            })
        })
        .collect();
    if args.json {
        out!("{}", json!({"now_ms": now, "partitions": rows, "workers": workers}));
        return Ok(());
    }
    out!(
        "{:<9}  {:<28}  {:>6}  {:>8}  {:>8}  {:>11}  {:>9}  {:<10}  stuck",
        "partition",
        "owner",
        "lease",
        "held",
        "epoch",
        "last commit",
        "lag",
        "phase"
    );
    for row in &rows {
        let age = |field: &str| row[field].as_i64().map(|at| seconds(now - at)).unwrap_or_else(|| "-".into());
        out!(
            "{:<9}  {:<28}  {:>6}  {:>8}  {:>8}  {:>11}  {:>9}  {:<10}  {}",
            row["partition"],
            row["owner"].as_str().filter(|o| !o.is_empty()).unwrap_or("(free)"),
            format!("#{}", row["lease_counter"]),
            age("held_since_ms"),
            row["epoch"],
            age("last_commit_ms"),
            row["lag_ms"].as_i64().map(|lag| format!("{lag} ms")).unwrap_or_else(|| "-".into()),
            row["phase"].as_str().unwrap_or("-"),
            row["stuck"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

fn seconds(ms: i64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// The partition's entry in a worker's report.
fn entry(report: &Value, partition: u32) -> Option<&Value> {
    report["partitions"].as_array()?.iter().find(|p| p["partition"] == partition)
}

/// One partition: the lease record, with the holder's report on it (else the
/// freshest report of a failure of it elsewhere: a partition in a restart loop
/// may be free between two attempts).
fn row(partition: u32, record: Option<&Committed>, reports: &[Value], now: i64) -> Value {
    let owner = record.map_or("", |r| r.owner.as_str());
    let from_holder = reports
        .iter()
        .filter(|r| !owner.is_empty() && r["owner"] == owner)
        .find_map(|r| Some((r, entry(r, partition)?)));
    let failed_elsewhere = || {
        reports
            .iter()
            .filter_map(|r| Some((r, entry(r, partition).filter(|e| !e["failure"].is_null())?)))
            .max_by_key(|(r, _)| r["now_ms"].as_i64().unwrap_or(0))
    };
    let reported = from_holder.or_else(failed_elsewhere);
    let report_age = reported.and_then(|(r, _)| r["now_ms"].as_i64()).map(|at| now - at);
    let stale = report_age.is_some_and(|age| age > REPORT_STALE.as_millis() as i64);
    let stuck = match reported {
        Some((report, _)) if stale && report["owner"] == owner => {
            json!(format!("its holder has not reported for {}", seconds(report_age.unwrap_or(0))))
        }
        Some((_, entry)) if !stale => entry["stuck"].clone(),
        _ => Value::Null,
    };
    let entry = reported.map(|(_, e)| e);
    let field = |name: &str| entry.map_or(Value::Null, |e| e[name].clone());
    let lag = entry
        .and_then(|e| e["inputs"].as_array())
        .and_then(|inputs| inputs.iter().filter_map(|i| i["lag_ms"].as_i64()).max());
    let phase = match (entry, owner.is_empty()) {
        (Some(e), _) => e["phase"].clone(),
        (None, true) => json!("free"),
        (None, false) => json!("unreported"),
    };
    json!({
        "partition": partition,
        "owner": owner,
        "lease_counter": record.map_or(0, |r| r.counter),
        "wanted_by": record.map_or("", |r| r.wanted_by.as_str()),
        "epoch": record.map_or(0, |r| r.manifest.epoch),
        "phase": phase,
        "held_since_ms": field("taken_ms"),
        "last_commit_ms": field("last_commit_ms"),
        "queued": field("queued"),
        "inputs": field("inputs"),
        "lag_ms": lag,
        "failure": field("failure"),
        "failures": field("failures"),
        "stuck": stuck,
        "reported_by": reported.map_or(Value::Null, |(r, _)| r["owner"].clone()),
        "report_age_ms": report_age,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use statefun_proto::internal::PartitionManifest;

    fn record(owner: &str) -> Committed {
        Committed {
            owner: owner.into(),
            counter: 4,
            heartbeat: 9,
            wanted_by: String::new(),
            manifest: PartitionManifest { epoch: 12, snapshot_epoch: 10, lease: 4 },
        }
    }

    fn report(owner: &str, at: i64, partition: Value) -> Value {
        json!({"owner": owner, "now_ms": at, "partitions": [partition]})
    }

    #[test]
    fn a_partition_shows_its_holders_report_and_is_stuck_when_the_report_says_so_or_is_stale() {
        let serving = json!({"partition": 1, "phase": "serving", "taken_ms": 5, "last_commit_ms": 90, "stuck": null,
            "inputs": [{"lag_ms": 30}, {"lag_ms": null}], "failure": null});
        let row = row(1, Some(&record("a")), &[report("a", 100, serving.clone())], 1_000);
        assert_eq!(
            (row["owner"].clone(), row["epoch"].clone(), row["lease_counter"].clone()),
            (json!("a"), json!(12), json!(4))
        );
        assert_eq!(
            (row["phase"].clone(), row["lag_ms"].clone(), row["stuck"].clone()),
            (json!("serving"), json!(30), Value::Null)
        );

        let late = 100 + REPORT_STALE.as_millis() as i64 + 1_000;
        let row = super::row(1, Some(&record("a")), &[report("a", 100, serving)], late);
        assert!(row["stuck"].as_str().is_some_and(|s| s.starts_with("its holder has not reported")), "{row}");
    }

    #[test]
    fn a_partition_free_between_failures_shows_the_failure_reported_elsewhere() {
        let failed = json!({"partition": 2, "phase": "failed", "failure": "cannot recover: corrupt", "failures": 3,
            "stuck": "failed 3 time(s) in a row: cannot recover: corrupt"});
        let row = row(2, Some(&record("")), &[report("b", 900, failed)], 1_000);
        assert_eq!(row["phase"], "failed");
        assert_eq!(row["reported_by"], "b");
        assert!(row["stuck"].as_str().is_some_and(|s| s.contains("cannot recover")), "{row}");
        let free = super::row(3, None, &[], 1_000);
        assert_eq!((free["phase"].clone(), free["stuck"].clone()), (json!("free"), Value::Null));
    }
}
