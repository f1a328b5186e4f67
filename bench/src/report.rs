//! The results: one [`Row`] per scenario, the ratios between rows of the same
//! run against the targets, printed as a table and written as JSON.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

/// One scenario's figures. `None` where a figure does not apply or was not measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Row {
    /// Short name, as `--only` takes it (`raw`, `unique`, ...).
    pub scenario: String,
    pub title: String,
    /// Messages of the throughput measurement.
    pub messages: u64,
    pub msgs_per_sec: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Under which load the latency was taken.
    pub latency_at: String,
    /// CPU seconds per 1,000 messages of the process under test (named in `cpu_of`).
    pub cpu_s_per_1k: Option<f64>,
    pub cpu_of: String,
    /// Peak resident memory (VmHWM) of the process under test, MiB.
    pub peak_mib: Option<f64>,
    /// Why the scenario did not run, when it did not.
    pub skipped: Option<String>,
    pub notes: Vec<String>,
    /// Everything else measured (per-phase figures, the functions' CPU, sizes, ...).
    pub details: Value,
}

impl Row {
    pub fn new(scenario: &str, title: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            title: title.to_owned(),
            details: Value::Object(Default::default()),
            ..Default::default()
        }
    }

    pub fn skipped(scenario: &str, title: &str, reason: impl Into<String>) -> Self {
        Self { skipped: Some(reason.into()), ..Self::new(scenario, title) }
    }

    pub fn detail(&mut self, key: &str, value: impl Serialize) {
        if let Value::Object(map) = &mut self.details {
            map.insert(key.to_owned(), serde_json::to_value(value).unwrap_or(Value::Null));
        }
    }
}

/// A target checked on the figures of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub what: String,
    pub measured: Option<f64>,
    /// `>= x` or `<= x`.
    pub target: String,
    pub met: Option<bool>,
}

fn rate(rows: &[Row], scenario: &str) -> Option<f64> {
    rows.iter().find(|r| r.scenario == scenario && r.skipped.is_none())?.msgs_per_sec
}

fn cpu(rows: &[Row], scenario: &str) -> Option<f64> {
    rows.iter().find(|r| r.scenario == scenario && r.skipped.is_none())?.cpu_s_per_1k
}

fn p50(rows: &[Row], scenario: &str) -> Option<f64> {
    rows.iter().find(|r| r.scenario == scenario && r.skipped.is_none())?.p50_ms
}

fn p99(rows: &[Row], scenario: &str) -> Option<f64> {
    rows.iter().find(|r| r.scenario == scenario && r.skipped.is_none())?.p99_ms
}

fn detail(rows: &[Row], scenario: &str, key: &str) -> Option<f64> {
    rows.iter().find(|r| r.scenario == scenario && r.skipped.is_none())?.details.get(key)?.as_f64()
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn at_least(what: &str, measured: Option<f64>, target: f64) -> Check {
    Check { what: what.to_owned(), measured, target: format!(">= {target}"), met: measured.map(|m| m >= target) }
}

fn at_most(what: &str, measured: Option<f64>, target: f64) -> Check {
    Check { what: what.to_owned(), measured, target: format!("<= {target}"), met: measured.map(|m| m <= target) }
}

fn recovery_label(rows: &[Row]) -> String {
    let addresses = rows.iter().find(|r| r.scenario == "checkpoint").map_or(1_000_000, |r| r.messages);
    let grouped = grouped(Some(addresses as f64));
    let grouped = if grouped == "0" { "1,000,000".to_owned() } else { grouped };
    format!("recovery of {grouped} addresses from local disk (s)")
}

/// A hostile load's drain (`key`, seconds) against `target`; a load that did
/// not drain within its limit misses it, though there is no figure to show.
fn drained_within(rows: &[Row], scenario: &str, key: &str, what: &str, target: f64) -> Check {
    let row = rows.iter().find(|r| r.scenario == scenario && r.skipped.is_none());
    let drained = row.and_then(|r| r.details.get("drained")?.as_bool());
    let measured = detail(rows, scenario, key);
    let met = match (drained, measured) {
        (Some(false), _) => Some(false),
        (_, Some(m)) => Some(m <= target),
        _ => None,
    };
    Check { what: what.to_owned(), measured, target: format!("<= {target}"), met }
}

/// The targets, as ratios of this run's rows.
pub fn checks(rows: &[Row]) -> Vec<Check> {
    vec![
        at_least("unique keys / raw ceiling (msg/s)", ratio(rate(rows, "unique"), rate(rows, "raw")), 0.6),
        at_least("hot key / raw ceiling (msg/s)", ratio(rate(rows, "hot"), rate(rows, "raw")), 5.0),
        at_least(
            "unique keys / Restate 1,000 keys (msg/s)",
            ratio(rate(rows, "unique"), rate(rows, "restate-keys")),
            5.0,
        ),
        at_least("hot key / Restate hot key (msg/s)", ratio(rate(rows, "hot"), rate(rows, "restate-hot")), 20.0),
        at_most(
            "unique keys / Restate 1,000 keys (CPU per 1k)",
            ratio(cpu(rows, "unique"), cpu(rows, "restate-keys")),
            0.2,
        ),
        at_most("hot key / Restate hot key (CPU per 1k)", ratio(cpu(rows, "hot"), cpu(rows, "restate-hot")), 0.2),
        // Latency, paced at --latency-rate, against Restate's round trip with one request in flight.
        at_most(
            "unique keys / Restate 1,000 keys, 1 in flight (p50)",
            ratio(p50(rows, "unique"), p50(rows, "restate-keys")),
            1.0,
        ),
        at_most(
            "unique keys / Restate 1,000 keys, 1 in flight (p99)",
            ratio(p99(rows, "unique"), p99(rows, "restate-keys")),
            2.0,
        ),
        at_most(
            "shopping cart / Restate 1,000 keys, 1 in flight (p50)",
            ratio(p50(rows, "cart"), p50(rows, "restate-keys")),
            3.0,
        ),
        // Processing rates (10% to 90% of the backlog), not egress spans: with 5 s
        // commits the results leave in two or three bursts, too few for a rate.
        at_least(
            "commit every 100 ms / every 5 s (msg/s processed)",
            ratio(
                detail(rows, "unique", "function_side_msgs_per_sec"),
                detail(rows, "commit-5s", "function_side_msgs_per_sec"),
            ),
            0.9,
        ),
        at_most(&recovery_label(rows), detail(rows, "checkpoint", "recovery_local_s"), 3.0),
        at_most(
            "memory per address beyond its state (bytes)",
            detail(rows, "checkpoint", "overhead_bytes_per_address"),
            200.0,
        ),
        drained_within(
            rows,
            "hostile-failing",
            "drain_s",
            "hostile: a failing hot key's 600 messages dead-lettered (s)",
            120.0,
        ),
        drained_within(rows, "hostile-timers", "spread_s", "hostile: last timer delivered after its due time (s)", 1.0),
    ]
}

fn cell(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "—".to_owned(),
    }
}

/// Thousands separators for rates.
fn grouped(value: Option<f64>) -> String {
    let Some(v) = value.filter(|v| v.is_finite()) else { return "—".to_owned() };
    let digits = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The table as Markdown (it goes into the README as it is).
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| # | scenario | msg/s | p50 ms | p99 ms | latency at | CPU s / 1k msg | peak MiB |");
    let _ = writeln!(out, "|---|---|---:|---:|---:|---|---:|---:|");
    for (index, row) in rows.iter().enumerate() {
        if let Some(reason) = &row.skipped {
            let _ = writeln!(out, "| {} | {} | skipped: {reason} | | | | | |", index + 1, row.title);
            continue;
        }
        let cpu = match (&row.cpu_s_per_1k, row.cpu_of.as_str()) {
            (Some(_), "") => cell(row.cpu_s_per_1k, 3),
            (Some(_), of) => format!("{} ({of})", cell(row.cpu_s_per_1k, 3)),
            (None, _) => "—".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            index + 1,
            row.title,
            grouped(row.msgs_per_sec),
            cell(row.p50_ms, 1),
            cell(row.p99_ms, 1),
            row.latency_at,
            cpu,
            cell(row.peak_mib, 0),
        );
    }
    out
}

/// The targets as Markdown.
pub fn checks_table(checks: &[Check]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| target | measured | wanted | |");
    let _ = writeln!(out, "|---|---:|---:|---|");
    for check in checks {
        let verdict = match check.met {
            Some(true) => "met",
            Some(false) => "missed",
            None => "not measured",
        };
        let _ = writeln!(out, "| {} | {} | {} | {verdict} |", check.what, cell(check.measured, 2), check.target);
    }
    out
}

/// The checkpoint scenario's figures as Markdown (empty without that row).
pub fn checkpoint_table(rows: &[Row]) -> String {
    let Some(row) = rows.iter().find(|r| r.scenario == "checkpoint" && r.skipped.is_none()) else {
        return String::new();
    };
    let d = &row.details;
    let f = |key: &str| d.get(key).and_then(Value::as_f64);
    let build = d.get("build").cloned().unwrap_or(Value::Null);
    let mb = |v: Option<f64>| v.map_or("—".to_owned(), |b| format!("{:.1} MB", b / 1e6));
    let secs = |v: Option<f64>| v.map_or("—".to_owned(), |s| format!("{s:.2} s"));
    let mut out = String::new();
    let _ = writeln!(out, "| {} ({} bytes of state each) | |", row.title, build["state_bytes"]);
    let _ = writeln!(out, "|---|---:|");
    let (snapshot, snapshot_size) = (secs(f("snapshot_s")), mb(f("snapshot_bytes")));
    let _ = writeln!(out, "| full snapshot (seal, encode, write and sync the file) | {snapshot}, {snapshot_size} |");
    let (delta, delta_size) = (secs(f("delta_s")), mb(f("delta_bytes")));
    let _ = writeln!(out, "| epoch delta after 1% of the addresses changed | {delta}, {delta_size} |");
    let _ = writeln!(out, "| recovery from local files (load + restore) | {} |", secs(f("recovery_local_s")));
    let _ = writeln!(out, "| recovery from S3 on the local AWS stack (LocalStack) | {} |", secs(f("recovery_s3_s")));
    let _ = writeln!(
        out,
        "| resident memory per recovered address | {} bytes ({} of them state) |",
        f("rss_bytes_per_address").map_or("—".to_owned(), |b| format!("{b:.0}")),
        build["state_bytes"]
    );
    out
}

/// The hostile loads' figures as Markdown (empty without those rows).
pub fn hostile_table(rows: &[Row]) -> String {
    let hostile: Vec<&Row> = rows.iter().filter(|r| r.scenario.starts_with("hostile-")).collect();
    if hostile.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| hostile load (own runtime, --memory-budget 512MiB) | peak RSS | unrelated p99 ms: alone → under the load | \
         unrelated answered | drained | also |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---|---|");
    for row in hostile {
        if let Some(reason) = &row.skipped {
            let _ = writeln!(out, "| {} | skipped: {reason} | | | | |", row.title);
            continue;
        }
        let d = &row.details;
        let f = |key: &str| d.get(key).and_then(Value::as_f64);
        let peak = match (row.peak_mib, f("peak_rss_of_budget")) {
            (Some(mib), Some(share)) => format!("{mib:.0} MiB ({:.0}% of budget)", share * 100.0),
            (mib, _) => format!("{} MiB", cell(mib, 0)),
        };
        let bound = if d.get("p99_is_lower_bound").and_then(Value::as_bool) == Some(true) { "≥ " } else { "" };
        let latency = format!(
            "{} → {bound}{} (×{bound}{})",
            cell(f("baseline_p99_ms"), 1),
            cell(row.p99_ms, 1),
            cell(f("p99_ratio"), 1)
        );
        let answered =
            format!("{} of {}", grouped(f("unrelated_answered_under_load")), grouped(f("unrelated_sent_under_load")));
        let drained = match (d.get("drained").and_then(Value::as_bool), f("drain_s")) {
            (Some(true), Some(s)) => format!("in {s:.1} s"),
            _ => {
                let done = match f("total") {
                    Some(total) => format!("{} of {}", grouped(f("done")), grouped(Some(total))),
                    None => grouped(f("done")),
                };
                format!("not within {} s ({done})", cell(f("drain_limit_s"), 0))
            }
        };
        let also = d.get("summary").and_then(Value::as_str).unwrap_or("");
        let _ = writeln!(out, "| {} | {peak} | {latency} | {answered} | {drained} | {also} |", row.title);
    }
    out
}

/// Notes of every row, as a list.
pub fn notes(rows: &[Row]) -> String {
    let mut out = String::new();
    for row in rows {
        for note in &row.notes {
            let _ = writeln!(out, "- {}: {note}", row.title);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scenario: &str, rate: f64, cpu: f64) -> Row {
        Row { msgs_per_sec: Some(rate), cpu_s_per_1k: Some(cpu), ..Row::new(scenario, scenario) }
    }

    #[test]
    fn ratios_come_from_rows_of_the_same_run() {
        let rows = vec![row("raw", 1000.0, 0.1), row("unique", 700.0, 0.2), row("hot", 4000.0, 0.05)];
        let checks = checks(&rows);
        assert_eq!(checks[0].met, Some(true));
        assert_eq!(checks[1].measured, Some(4.0));
        assert_eq!(checks[1].met, Some(false));
        assert_eq!(checks[2].met, None, "no Restate row");
    }

    #[test]
    fn the_table_groups_thousands_and_shows_skips() {
        let rows = vec![row("raw", 12345.6, 0.1), Row::skipped("restate", "Restate", "npm unreachable")];
        let text = table(&rows);
        assert!(text.contains("| 12,346 |"), "{text}");
        assert!(text.contains("skipped: npm unreachable"), "{text}");
    }
}
