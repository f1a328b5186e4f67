//! CloudWatch embedded metric format (`statefun run --metrics-emf`): every
//! interval, one JSON line on stdout that CloudWatch Logs turns into metrics.
//! On ECS the awslogs driver already ships stdout to the worker's log group,
//! so the metrics reach CloudWatch with no agent or sidecar. Sums over this
//! worker's partitions, in one dimension (`Deployment`): what the alarms and
//! the dashboard of `infra/terraform` read.

use std::io::Write as _;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::Observer;
use super::metrics::Totals;
use super::status::Phase;
use crate::now_ms;

/// Where the lines go and what they are called.
#[derive(Clone, Debug)]
pub struct EmfSettings {
    pub namespace: String,
    /// The value of the `Deployment` dimension.
    pub deployment: String,
    pub interval: Duration,
}

/// The counters' values at the previous line, for deltas.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    invocations: u64,
    invocations_dead_lettered: u64,
    attempts: u64,
    attempt_seconds: f64,
    dead_letters: u64,
    commits: u64,
    ingress: u64,
    egress: u64,
    partition_failures: u64,
}

impl Seen {
    fn of(totals: &Totals) -> Self {
        Self {
            invocations: totals.invocations.get(),
            invocations_dead_lettered: totals.invocations_dead_lettered.get(),
            attempts: totals.attempts.get(),
            attempt_seconds: totals.attempt_seconds.get(),
            dead_letters: totals.dead_letters.get(),
            commits: totals.commits.get(),
            ingress: totals.ingress.get(),
            egress: totals.egress.get(),
            partition_failures: totals.partition_failures.get(),
        }
    }
}

/// Writes a line every interval until the task is dropped.
pub async fn write_every(observer: std::sync::Arc<Observer>, settings: EmfSettings) {
    observer.watch();
    let mut seen = Seen::of(observer.metrics.totals());
    let mut every = tokio::time::interval(settings.interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        let now = Seen::of(observer.metrics.totals());
        let line = line(&observer, &settings, &seen, &now, now_ms());
        seen = now;
        // A closed stdout loses the metrics, not the worker.
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
}

/// One EMF document: the metric declarations and their values.
fn line(observer: &Observer, settings: &EmfSettings, before: &Seen, now: &Seen, now_ms: i64) -> Value {
    let partitions = observer.refresh(now_ms);
    let held = partitions.iter().filter(|s| s.phase != Phase::Failed).count();
    let stuck = partitions.iter().filter(|s| s.stuck.is_some()).count();
    // As `statefun_backlog_messages`, summed over the function types.
    let backlog: usize = partitions.iter().flat_map(|s| &s.progress.loads).map(|load| load.backlog).sum();
    let lag = partitions.iter().flat_map(|s| &s.progress.inputs).filter_map(|i| i.lag_ms).max().unwrap_or(0);
    let mut values: Vec<(&str, &str, Value)> = vec![
        ("StuckPartitions", "Count", json!(stuck)),
        ("PartitionsHeld", "Count", json!(held)),
        ("BacklogMessages", "Count", json!(backlog)),
        ("IngressLagMaxMilliseconds", "Milliseconds", json!(lag)),
        ("Invocations", "Count", json!(now.invocations - before.invocations)),
        ("InvocationsDeadLettered", "Count", json!(now.invocations_dead_lettered - before.invocations_dead_lettered)),
        ("DeadLetters", "Count", json!(now.dead_letters - before.dead_letters)),
        ("Commits", "Count", json!(now.commits - before.commits)),
        ("IngressRecords", "Count", json!(now.ingress - before.ingress)),
        ("EgressRecords", "Count", json!(now.egress - before.egress)),
        ("PartitionFailures", "Count", json!(now.partition_failures - before.partition_failures)),
    ];
    let attempts = now.attempts - before.attempts;
    if attempts > 0 {
        let average_ms = (now.attempt_seconds - before.attempt_seconds) * 1000.0 / attempts as f64;
        values.push(("InvocationDurationAverage", "Milliseconds", json!(average_ms)));
    }
    let declared: Vec<Value> = values.iter().map(|(name, unit, _)| json!({"Name": name, "Unit": unit})).collect();
    let mut document = Map::new();
    document.insert(
        "_aws".into(),
        json!({
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": settings.namespace,
                "Dimensions": [["Deployment"]],
                "Metrics": declared,
            }],
        }),
    );
    document.insert("Deployment".into(), json!(settings.deployment));
    for (name, _, value) in values {
        document.insert(name.into(), value);
    }
    Value::Object(document)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::status::{Progress, TypeLoad};

    #[test]
    fn a_line_declares_every_value_it_carries_in_the_namespace_and_dimension_given() {
        let observer = Observer::new("w", Duration::from_secs(60));
        observer.board.recovering(0, 1, 0);
        observer.board.serving(0, 1, 0);
        let load = TypeLoad { function_type: "a/b".into(), backlog: 7, blocked: 1 };
        observer.board.progress(0, Progress { queued: 8, loads: vec![load], ..Progress::default() });
        observer.board.failed(1, "cannot recover: corrupt", 0);
        let totals = observer.metrics.totals();
        let before = Seen::of(totals);
        totals.commits.inc_by(3);
        totals.attempts.inc_by(2);
        totals.attempt_seconds.inc_by(0.5);
        let settings =
            EmfSettings { namespace: "Ns".into(), deployment: "shop".into(), interval: Duration::from_secs(60) };
        let line = line(&observer, &settings, &before, &Seen::of(totals), 1_000);

        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "Ns");
        assert_eq!(directive["Dimensions"], json!([["Deployment"]]));
        assert_eq!(line["Deployment"], "shop");
        assert_eq!(line["_aws"]["Timestamp"], 1_000);
        for metric in directive["Metrics"].as_array().expect("metrics") {
            let name = metric["Name"].as_str().expect("name");
            assert!(line[name].is_number(), "{name} is declared and carried as a number");
        }
        assert_eq!(line["StuckPartitions"], 1, "the failed partition");
        assert_eq!(line["PartitionsHeld"], 1);
        assert_eq!(line["BacklogMessages"], 7);
        assert_eq!(line["Commits"], 3, "a delta since the line before");
        assert_eq!(line["InvocationDurationAverage"], 250.0);
    }
}
