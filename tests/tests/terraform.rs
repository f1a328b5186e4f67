//! The Terraform under `infra/terraform`, tested three ways:
//!
//! - every configuration is formatted and validates, offline, against the
//!   provider mirror when there is one (`STATEFUN_TERRAFORM_PLUGIN_DIR`, default
//!   `/opt/tf-plugins`);
//! - the example's plan (made offline: a stand-in STS answers the one call a
//!   plan makes, every other endpoint refuses connections) grants the workers
//!   and the functions only this deployment's resources, by exact ARN, and
//!   wires the worker to exactly the streams, table and bucket it creates, with
//!   a module.yaml the runtime loads;
//! - `infra/terraform/local` applied to the local AWS stack creates the streams,
//!   table and bucket in the shapes the runtime expects; the shopping cart runs
//!   end to end on exactly those; `terraform destroy` removes them all.
//!
//! The example's plan also shows that the CloudWatch dashboard and the
//! stuck-partitions alarm read the metrics the workers publish; and the Grafana
//! dashboard of `infra/grafana` queries only the Prometheus metrics the runtime
//! exports, by their labels.
//!
//! Terraform runs in a copy of `infra/terraform` in a temporary directory, so
//! its working data (`.terraform`, lock files, state) never lands in the tree.
//! The terraform binary is `terraform` on PATH, or `$TERRAFORM`. The plan
//! checks are in `terraform/plan.rs`, the local stack's in
//! `terraform/local_stack.rs`.

#[path = "terraform/local_stack.rs"]
mod local_stack;
#[path = "terraform/plan.rs"]
mod plan;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::Value;
use statefun_tests::aws::repo_root;

const PARTITIONS: u32 = 4;

// --- terraform ------------------------------------------------------------------------------------

fn terraform_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = std::env::var("TERRAFORM").unwrap_or_else(|_| "terraform".to_owned());
        match Command::new(&bin).arg("version").env("CHECKPOINT_DISABLE", "1").output() {
            Ok(output) if output.status.success() => bin,
            Ok(output) => panic!(
                "`{bin} version` failed: {}; the Terraform tests need Terraform >= 1.5 (set TERRAFORM to its path)",
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(e) => panic!(
                "Terraform is not installed ({bin}: {e}); the Terraform tests need Terraform >= 1.5 on PATH or at $TERRAFORM"
            ),
        }
    })
}

/// A filesystem mirror of the AWS provider for offline `init`, if there is one.
fn plugin_dir() -> Option<PathBuf> {
    match std::env::var_os("STATEFUN_TERRAFORM_PLUGIN_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            assert!(dir.is_dir(), "STATEFUN_TERRAFORM_PLUGIN_DIR={} is not a directory", dir.display());
            Some(dir)
        }
        None => Some(PathBuf::from("/opt/tf-plugins")).filter(|d| d.is_dir()),
    }
}

/// A copy of `infra/terraform` to run Terraform in.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_tree(&repo_root().join("infra/terraform"), &dir.path().join("terraform"));
        // An empty CLI configuration: nothing from the user's ~/.terraformrc.
        std::fs::write(dir.path().join("terraformrc"), "").expect("write terraformrc");
        Self { dir }
    }

    fn config(&self, relative: &str) -> PathBuf {
        self.dir.path().join("terraform").join(relative)
    }

    fn command(&self, config: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(terraform_bin());
        command.arg(format!("-chdir={}", config.display())).args(args);
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("AWS_") || name.starts_with("TF_") {
                command.env_remove(&*name);
            }
        }
        command
            .env("TF_CLI_CONFIG_FILE", self.dir.path().join("terraformrc"))
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("CHECKPOINT_DISABLE", "1");
        command
    }

    fn run(&self, config: &Path, args: &[&str]) -> Result<String, String> {
        let output = self.command(config, args).output().unwrap_or_else(|e| panic!("run terraform {args:?}: {e}"));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr)))
        }
    }

    /// Runs `terraform <args>` in `config`; panics with its output on failure.
    fn terraform(&self, config: &Path, args: &[&str]) -> String {
        self.run(config, args).unwrap_or_else(|e| panic!("terraform {args:?} in {} failed:\n{e}", config.display()))
    }

    fn init(&self, config: &Path, backend: bool) {
        let mut args = vec!["init", "-no-color"];
        if !backend {
            args.push("-backend=false");
        }
        let plugins = plugin_dir().map(|d| format!("-plugin-dir={}", d.display()));
        if let Some(plugins) = &plugins {
            args.push(plugins);
        }
        self.terraform(config, &args);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create directory");
    for entry in std::fs::read_dir(from).expect("read infra/terraform") {
        let entry = entry.expect("directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        // A user's own working data stays where it is.
        if name == ".terraform"
            || name == ".terraform.lock.hcl"
            || name.contains(".tfstate")
            || name.ends_with(".tfvars")
        {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).expect("copy file");
        }
    }
}

/// Terraform's output with its box drawing and line wrapping undone, to look for a message in.
fn flat(text: &str) -> String {
    text.replace('│', " ").split_whitespace().collect::<Vec<_>>().join(" ")
}

fn elapsed(since: Instant) -> String {
    format!("{:.1} s", since.elapsed().as_secs_f64())
}

// --- formatting and validation --------------------------------------------------------------------

/// The root configurations, and the module validated on its own; `validate` checks the modules
/// each calls too (statefun-storage is called by the others).
const CONFIGURATIONS: &[&str] = &["modules/statefun", "examples/shopping-cart", "local"];

#[test]
fn every_terraform_configuration_is_formatted_and_validates_offline() {
    let started = Instant::now();
    let workspace = Workspace::new();
    let infra = repo_root().join("infra/terraform");
    if let Err(e) = workspace.run(&infra, &["fmt", "-check", "-recursive", "-diff", "-no-color"]) {
        panic!(
            "`terraform fmt -check -recursive infra/terraform` wants changes (run `terraform fmt -recursive infra/terraform`):\n{e}"
        );
    }
    for relative in CONFIGURATIONS {
        let config = workspace.config(relative);
        workspace.init(&config, false);
        // Exits non-zero when invalid, with the JSON report on stdout either way.
        let output =
            workspace.command(&config, &["validate", "-json", "-no-color"]).output().expect("run terraform validate");
        let text = String::from_utf8_lossy(&output.stdout);
        let report: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("terraform validate -json in {relative}: {e}:\n{text}\n{}", String::from_utf8_lossy(&output.stderr))
        });
        assert_eq!(report["valid"], true, "{relative} does not validate: {report:#}");
        assert_eq!(report["warning_count"], 0, "{relative} validates with warnings: {report:#}");
    }

    eprintln!("fmt and validate of {} configurations: {}", CONFIGURATIONS.len(), elapsed(started));
}

// --- the Grafana dashboard ------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Counter,
    Gauge,
    /// Queried as `<name>_bucket` (with the label `le`), `_sum` and `_count`.
    Histogram,
}

/// The metrics of the admin server (`GET /metrics`), by the names Prometheus gives them, with
/// their labels (Prometheus adds `job` and `instance`).
const PROMETHEUS_METRICS: &[(&str, Kind, &[&str])] = &[
    ("statefun_invocations_total", Kind::Counter, &["function_type", "outcome"]),
    ("statefun_invocation_duration_seconds", Kind::Histogram, &["function_type"]),
    ("statefun_invocation_batch_size", Kind::Histogram, &["function_type"]),
    ("statefun_backlog_messages", Kind::Gauge, &["function_type"]),
    ("statefun_blocked_addresses", Kind::Gauge, &["function_type"]),
    ("statefun_partitions_held", Kind::Gauge, &[]),
    ("statefun_stuck_partitions", Kind::Gauge, &[]),
    ("statefun_commits_total", Kind::Counter, &["partition"]),
    ("statefun_commit_duration_seconds", Kind::Histogram, &[]),
    ("statefun_last_commit_timestamp_seconds", Kind::Gauge, &["partition"]),
    ("statefun_epoch_bytes", Kind::Histogram, &[]),
    ("statefun_ingress_records_total", Kind::Counter, &["stream"]),
    ("statefun_ingress_lag_milliseconds", Kind::Gauge, &["stream", "shard"]),
    ("statefun_exchange_records_total", Kind::Counter, &["direction"]),
    ("statefun_egress_records_total", Kind::Counter, &["stream"]),
    ("statefun_dead_letters_total", Kind::Counter, &["reason"]),
    ("statefun_partition_failures_total", Kind::Counter, &["reason"]),
    ("statefun_lease_takeovers_total", Kind::Counter, &[]),
    ("statefun_hand_overs_total", Kind::Counter, &["outcome"]),
];

/// The metric a series name of a query belongs to, and the labels the series has.
fn exported(series: &str) -> Option<(&'static str, Vec<&'static str>)> {
    PROMETHEUS_METRICS.iter().find_map(|&(name, kind, labels)| {
        let mut all = vec!["job", "instance"];
        all.extend(labels);
        match kind {
            Kind::Histogram if series == format!("{name}_bucket") => {
                all.push("le");
                Some((name, all))
            }
            Kind::Histogram if series == format!("{name}_sum") || series == format!("{name}_count") => {
                Some((name, all))
            }
            Kind::Counter | Kind::Gauge if series == name => Some((name, all)),
            _ => None,
        }
    })
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The `statefun_*` series a PromQL expression (or a Grafana `label_values(...)`) names.
fn series_of(expr: &str) -> Vec<&str> {
    expr.split(|c| !is_name_char(c)).filter(|w| w.starts_with("statefun_")).collect()
}

/// The index just past the parenthesis that closes the one `text` starts with.
fn closing(text: &str) -> Option<usize> {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// Each aggregation's grouping labels (`by (...)`, `without (...)`) with the expression it
/// aggregates, whichever side of it that is written.
fn groupings(expr: &str) -> Vec<(Vec<&str>, &str)> {
    let mut found = Vec::new();
    for keyword in ["by", "without"] {
        let mut from = 0;
        while let Some(at) = expr[from..].find(keyword).map(|i| from + i) {
            from = at + keyword.len();
            if expr[..at].chars().next_back().is_some_and(is_name_char) {
                continue;
            }
            let after = expr[from..].trim_start();
            let (Some(list), Some(end)) = (after.strip_prefix('('), after.find(')')) else { continue };
            let labels = list[..end - 1].split(',').map(str::trim).filter(|l| !l.is_empty()).collect();
            // `sum by (a) (x)`, or `sum(x) by (a)`: the operand after, else the one before.
            let rest = after[end + 1..].trim_start();
            let operand = match closing(rest) {
                Some(close) if rest.starts_with('(') => &rest[..close],
                _ => &expr[..at],
            };
            found.push((labels, operand));
        }
    }
    found
}

/// The queries of every panel (rows hold theirs in `panels` when collapsed), with their legends.
fn panel_queries(panels: &Value, into: &mut Vec<(String, String)>) {
    for panel in panels.as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("a target without expr: {target}"));
            into.push((expr.to_owned(), target["legendFormat"].as_str().unwrap_or_default().to_owned()));
        }
        panel_queries(&panel["panels"], into);
    }
}

/// The Grafana dashboard (`infra/grafana/statefun.json`) queries, in its panels and variables,
/// only `statefun_*` series the runtime exports (a histogram only by its `_bucket`, `_sum` and
/// `_count` series), whose names the runtime still registers; it groups them and names them in
/// legends only by labels they have; and it has a panel for every one of them.
#[test]
fn the_grafana_dashboard_queries_only_metrics_the_runtime_exports_by_their_labels() {
    let path = repo_root().join("infra/grafana/statefun.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let dashboard: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut queries = Vec::new();
    panel_queries(&dashboard["panels"], &mut queries);
    assert!(queries.len() >= 10, "the panels' queries were found: {queries:?}");
    let mut graphed = BTreeSet::new();
    for (expr, legend) in &queries {
        let mut labels = BTreeSet::new();
        for series in series_of(expr) {
            let (metric, its_labels) = exported(series)
                .unwrap_or_else(|| panic!("`{expr}` queries {series}, which the runtime does not export"));
            graphed.insert(metric);
            labels.extend(its_labels);
        }
        assert!(!labels.is_empty(), "`{expr}` queries no statefun metric");
        for (grouping, operand) in groupings(expr) {
            for series in series_of(operand) {
                let (_, its_labels) = exported(series).unwrap_or_default();
                for label in &grouping {
                    assert!(
                        its_labels.contains(label),
                        "`{expr}` groups {series} by {label}, a label it does not have"
                    );
                }
            }
        }
        for label in legend.split("{{").skip(1).filter_map(|l| l.split_once("}}")).map(|(l, _)| l.trim()) {
            assert!(
                labels.contains(label),
                "the legend `{legend}` of `{expr}` names {label}, a label it does not have"
            );
        }
    }
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        let Some(definition) = variable["definition"].as_str() else { continue };
        for series in series_of(definition) {
            assert!(
                exported(series).is_some(),
                "the variable {} queries {series}, which the runtime does not export",
                variable["name"]
            );
        }
    }
    let all: BTreeSet<&str> = PROMETHEUS_METRICS.iter().map(|(name, _, _)| *name).collect();
    assert_eq!(graphed, all, "a panel for every metric the runtime exports");

    // The runtime registers counters without the `_total` Prometheus gives them.
    let sources = plan::runtime_sources();
    for (name, kind, _) in PROMETHEUS_METRICS {
        let registered = name.strip_suffix("_total").filter(|_| *kind == Kind::Counter).unwrap_or(name);
        assert!(sources.contains(&format!("\"{registered}\"")), "the runtime no longer registers {registered}");
    }
}

/// The query checks above find what they look for.
#[test]
fn the_grafana_query_checks_find_series_and_groupings() {
    let expr = r#"histogram_quantile(0.99, sum by (function_type, le) (rate(statefun_invocation_duration_seconds_bucket{job=~"$job"}[5m])))"#;
    assert_eq!(series_of(expr), ["statefun_invocation_duration_seconds_bucket"]);
    let found = groupings(expr);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, ["function_type", "le"]);
    assert_eq!(series_of(found[0].1), ["statefun_invocation_duration_seconds_bucket"]);
    let found = groupings("sum(rate(statefun_commits_total[1m])) by (partition) + sum(statefun_stuck_partitions)");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, ["partition"]);
    assert_eq!(series_of(found[0].1), ["statefun_commits_total"]);
    assert!(exported("statefun_commits_total").is_some());
    assert!(exported("statefun_epoch_bytes_bucket").is_some_and(|(_, labels)| labels.contains(&"le")));
    assert!(exported("statefun_epoch_bytes").is_none(), "a histogram only by its series");
    assert!(exported("statefun_commits").is_none(), "a counter by its _total");
    assert!(exported("statefun_partitions_held_bucket").is_none());
}
