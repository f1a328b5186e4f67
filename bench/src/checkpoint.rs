//! Scenario 6, checkpoint and recovery: a partition with 1,000,000 addresses
//! of about 100 bytes of state each, built and checkpointed through the
//! runtime's library (`statefun_runtime::partition::Partition`,
//! `statefun_runtime::checkpoint`) in child processes of this binary, so every
//! memory figure is of a process that does nothing else.
//!
//! - `checkpoint-build`: builds the partition the way it runs — a message per
//!   address, the function's reply writing a 100-byte state (the first reply
//!   negotiates the state's spec) — then times a full snapshot (seal, encode,
//!   write and sync the file) and, after 1% of the addresses changed, an epoch
//!   delta. With the local AWS stack, uploads both objects to S3 too.
//! - `checkpoint-recover`: in a fresh process, loads the history (snapshot +
//!   delta) from the files or from S3 and restores the partition, as a new
//!   owner does; reports the time and the resident memory it added per address.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use prost::Message as _;
use serde_json::{Value, json};
use statefun_proto::internal::{Envelope, PartitionManifest};
use statefun_proto::reqreply::from_function::{
    IncompleteInvocationContext, InvocationResponse, PersistedValueMutation, PersistedValueSpec, Response,
    persisted_value_mutation::MutationType,
};
use statefun_proto::reqreply::{FromFunction, TypedValue};
use statefun_proto::types::LongWrapper;
use statefun_runtime::address::FunctionType;
use statefun_runtime::checkpoint::fs::FsBlobStore;
use statefun_runtime::checkpoint::s3::S3BlobStore;
use statefun_runtime::checkpoint::{self, BlobStore};
use statefun_runtime::partition::{BatchLimits, Catalog, Effect, NoEndpoints, Partition};

use crate::report::Row;
use crate::{procfs, progress};

const TITLE: &str = "checkpoint & recovery, 1,000,000 addresses";
const STATE: &str = "value";
const STATE_TYPE: &str = "bench/blob";
const LEASE: u64 = 1;
const BUCKET: &str = "statefun-bench";

pub struct Settings {
    pub work_dir: PathBuf,
    pub addresses: usize,
    pub state_bytes: usize,
    /// Whether the local AWS stack is configured (S3 part).
    pub s3: bool,
}

/// Runs both children and turns their figures into a row.
pub async fn run(settings: &Settings) -> Row {
    let title = if settings.addresses == 1_000_000 {
        TITLE.to_owned()
    } else {
        format!("checkpoint & recovery, {} addresses", settings.addresses)
    };
    match try_run(settings, &title).await {
        Ok(row) => row,
        Err(e) => {
            progress!("{title}: FAILED: {e:#}");
            Row::skipped("checkpoint", &title, format!("failed: {e:#}"))
        }
    }
}

async fn try_run(settings: &Settings, title: &str) -> anyhow::Result<Row> {
    let dir = settings.work_dir.join("checkpoint");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let prefix = format!("bench-{:x}/", crate::now_ms());
    let n = settings.addresses.to_string();
    let bytes = settings.state_bytes.to_string();
    let mut build_args = vec!["checkpoint-build", "--dir", path_str(&dir)?, "--addresses", &n, "--state-bytes", &bytes];
    if settings.s3 {
        build_args.extend(["--s3-prefix", &prefix]);
    }
    progress!("{title}: building the partition and checkpointing it");
    let build = child(&build_args)?;
    progress!("{title}: recovering from local files");
    let local = child(&["checkpoint-recover", "--dir", path_str(&dir)?, "--addresses", &n])?;
    let s3 = if settings.s3 && build.get("s3").and_then(|s| s.get("error")).is_none() {
        progress!("{title}: recovering from S3 (local AWS stack)");
        Some(child(&["checkpoint-recover", "--dir", path_str(&dir)?, "--addresses", &n, "--s3-prefix", &prefix]))
    } else {
        None
    };

    let mut row = Row::new("checkpoint", title);
    row.messages = settings.addresses as u64;
    row.latency_at = "—".into();
    row.cpu_of = String::new();
    row.peak_mib = local["peak_rss_bytes"].as_f64().map(|b| b / 1_048_576.0);
    let per_address = local["rss_bytes_per_address"].as_f64();
    row.detail("recovery_local_s", local["total_s"].as_f64());
    row.detail("rss_bytes_per_address", per_address);
    row.detail("overhead_bytes_per_address", per_address.map(|b| b - settings.state_bytes as f64));
    row.detail("snapshot_s", build["snapshot"]["total_s"].as_f64());
    row.detail("snapshot_bytes", build["snapshot"]["bytes"].as_u64());
    row.detail("delta_s", build["delta"]["total_s"].as_f64());
    row.detail("delta_bytes", build["delta"]["bytes"].as_u64());
    row.detail("build", build.clone());
    row.detail("recover_local", local.clone());
    match s3 {
        Some(Ok(s3)) => {
            row.detail("recovery_s3_s", s3["total_s"].as_f64());
            row.detail("recover_s3", s3);
        }
        Some(Err(e)) => row.notes.push(format!("recovery from S3 failed: {e:#}")),
        None if !settings.s3 => row.notes.push("S3 part skipped: the local AWS stack is not running".into()),
        None => row.notes.push(format!("S3 upload failed: {}", build["s3"]["error"])),
    }
    row.notes.push(format!(
        "snapshot {:.2} s ({:.0} MB), delta after 1% changed {:.3} s ({:.1} MB), recovery from local files {:.2} s{}, \
         {:.0} bytes of memory per address ({} of them state)",
        build["snapshot"]["total_s"].as_f64().unwrap_or(f64::NAN),
        build["snapshot"]["bytes"].as_f64().unwrap_or(f64::NAN) / 1e6,
        build["delta"]["total_s"].as_f64().unwrap_or(f64::NAN),
        build["delta"]["bytes"].as_f64().unwrap_or(f64::NAN) / 1e6,
        local["total_s"].as_f64().unwrap_or(f64::NAN),
        row.details
            .get("recovery_s3_s")
            .and_then(Value::as_f64)
            .map(|s| format!(", from S3 on LocalStack {s:.2} s"))
            .unwrap_or_default(),
        per_address.unwrap_or(f64::NAN),
        settings.state_bytes,
    ));
    progress!("{title}: {}", row.notes.last().cloned().unwrap_or_default());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(row)
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("a work directory with a UTF-8 path")
}

/// Runs this binary with `args`; its stdout is one JSON document.
fn child(args: &[&str]) -> anyhow::Result<Value> {
    let output = Command::new(std::env::current_exe()?).args(args).output().context("starting a checkpoint child")?;
    if !output.status.success() {
        bail!("{} failed: {}", args[0], String::from_utf8_lossy(&output.stderr).trim());
    }
    serde_json::from_slice(&output.stdout).with_context(|| format!("{} printed no JSON", args[0]))
}

/// Every function type has an endpoint; there are no egresses.
struct BenchCatalog;

impl Catalog for BenchCatalog {
    fn batch_limits(&self, _: &FunctionType) -> Option<BatchLimits> {
        Some(BatchLimits { max_messages: 1000, max_bytes: 32 * 1024 * 1024 })
    }
    fn has_egress(&self, _: &str, _: &str) -> bool {
        false
    }
    fn is_internal_stream(&self, _: &str) -> bool {
        false
    }
}

fn function_type() -> FunctionType {
    FunctionType::new("bench", "blob")
}

fn address_id(i: usize) -> String {
    format!("a{i:07}")
}

/// A message to address `i`, answered with a state of `state_bytes` bytes filled with `fill`.
fn write_state(partition: &mut Partition, i: usize, state_bytes: usize, fill: u8, now: i64) {
    let address = function_type().address(address_id(i));
    let argument = TypedValue {
        typename: statefun_proto::typenames::LONG.into(),
        has_value: true,
        value: LongWrapper { value: 1 }.encode_to_vec(),
    };
    let envelope = Envelope {
        target: Some(address),
        caller: None,
        argument: Some(argument),
        id: format!("in/{i}"),
        hops: 0,
        ingress: None,
    };
    partition.deliver(envelope, now);
    loop {
        let effects = partition.take_effects();
        if effects.is_empty() {
            return;
        }
        for effect in effects {
            // Addresses here never hold enough to park anything.
            let Effect::Invoke { address, token, request } = effect else { continue };
            let registered = match &request.request {
                Some(statefun_proto::reqreply::to_function::Request::Invocation(batch)) => !batch.state.is_empty(),
                None => false,
            };
            let response = if registered {
                Response::InvocationResult(InvocationResponse {
                    state_mutations: vec![PersistedValueMutation {
                        mutation_type: MutationType::Modify as i32,
                        state_name: STATE.into(),
                        state_value: Some(TypedValue {
                            typename: STATE_TYPE.into(),
                            has_value: true,
                            value: vec![fill; state_bytes],
                        }),
                    }],
                    ..Default::default()
                })
            } else {
                Response::IncompleteInvocationContext(IncompleteInvocationContext {
                    missing_values: vec![PersistedValueSpec {
                        state_name: STATE.into(),
                        expiration_spec: None,
                        type_typename: STATE_TYPE.into(),
                    }],
                })
            };
            partition.on_invocation_result(&address, token, Ok(FromFunction { response: Some(response) }), now);
        }
    }
}

fn manifest() -> PartitionManifest {
    PartitionManifest { epoch: 2, snapshot_epoch: 1, lease: LEASE }
}

fn rss() -> f64 {
    procfs::rss_bytes(None).unwrap_or(0) as f64
}

/// `checkpoint-build`: prints the build, snapshot and delta figures as JSON.
pub async fn build(dir: &Path, addresses: usize, state_bytes: usize, s3_prefix: Option<&str>) -> anyhow::Result<Value> {
    let store = FsBlobStore::new(dir);
    let rss_before = rss();
    let started = Instant::now();
    let now = crate::now_ms();
    let mut partition = Partition::new(0, 1, Arc::new(BenchCatalog), 1);
    for i in 0..addresses {
        write_state(&mut partition, i, state_bytes, 1, now);
    }
    let build_s = started.elapsed().as_secs_f64();
    let rss_after = rss();
    if partition.address_count() != addresses {
        bail!("built {} addresses, wanted {addresses}", partition.address_count());
    }

    let (snapshot, snapshot_bytes) = checkpoint_epoch(&mut partition, &store, true).await?;
    let changed = addresses / 100;
    for i in (0..addresses).step_by(100).take(changed) {
        write_state(&mut partition, i, state_bytes, 2, now);
    }
    let (mut delta, delta_bytes) = checkpoint_epoch(&mut partition, &store, false).await?;
    delta["changed_addresses"] = json!(changed);

    let s3 = match s3_prefix {
        Some(prefix) => match upload(prefix, snapshot_bytes, delta_bytes).await {
            Ok(figures) => figures,
            Err(e) => json!({ "error": format!("{e:#}") }),
        },
        None => Value::Null,
    };
    Ok(json!({
        "addresses": addresses,
        "state_bytes": state_bytes,
        "build_s": build_s,
        "build_rss_bytes_per_address": (rss_after - rss_before) / addresses as f64,
        "snapshot": snapshot,
        "delta": delta,
        "s3": s3,
        "peak_rss_bytes": procfs::peak_rss_bytes(None),
    }))
}

/// Seals an epoch and writes its object: the figures and the object's bytes.
async fn checkpoint_epoch(
    partition: &mut Partition,
    store: &FsBlobStore,
    snapshot: bool,
) -> anyhow::Result<(Value, Bytes)> {
    let started = Instant::now();
    let (record, _outbox) = partition.seal(snapshot);
    let sealed = started.elapsed().as_secs_f64();
    let epoch = record.record.epoch;
    let bytes = Bytes::from(record.encode());
    let encoded = started.elapsed().as_secs_f64();
    store.put(&checkpoint::object_key(0, epoch, LEASE, snapshot), bytes.clone()).await?;
    let total = started.elapsed().as_secs_f64();
    let figures = json!({
        "epoch": epoch,
        "bytes": bytes.len(),
        "seal_s": sealed,
        "encode_s": encoded - sealed,
        "write_s": total - encoded,
        "total_s": total,
    });
    Ok((figures, bytes))
}

async fn upload(prefix: &str, snapshot: Bytes, delta: Bytes) -> anyhow::Result<Value> {
    let config = statefun_runtime::aws::aws_sdk_config(None).await;
    let store = S3BlobStore::new(&config, BUCKET, prefix);
    store.create_bucket().await?;
    let started = Instant::now();
    store.put(&checkpoint::object_key(0, 1, LEASE, true), snapshot).await?;
    let snapshot_s = started.elapsed().as_secs_f64();
    store.put(&checkpoint::object_key(0, 2, LEASE, false), delta).await?;
    let delta_s = started.elapsed().as_secs_f64() - snapshot_s;
    Ok(json!({ "bucket": BUCKET, "prefix": prefix, "upload_snapshot_s": snapshot_s, "upload_delta_s": delta_s }))
}

/// `checkpoint-recover`: loads the history written by `build` and restores the partition.
pub async fn recover(dir: &Path, addresses: usize, s3_prefix: Option<&str>) -> anyhow::Result<Value> {
    let store: Box<dyn BlobStore> = match s3_prefix {
        Some(prefix) => {
            let config = statefun_runtime::aws::aws_sdk_config(None).await;
            Box::new(S3BlobStore::new(&config, BUCKET, prefix))
        }
        None => Box::new(FsBlobStore::new(dir)),
    };
    let rss_before = rss();
    let started = Instant::now();
    let partition = checkpoint::recover(store.as_ref(), 0, 1, Arc::new(NoEndpoints), &manifest()).await?;
    let total = started.elapsed().as_secs_f64();
    let rss_after = rss();
    if partition.address_count() != addresses {
        bail!("recovered {} addresses, wanted {addresses}", partition.address_count());
    }
    Ok(json!({
        "source": if s3_prefix.is_some() { "s3" } else { "files" },
        "addresses": partition.address_count(),
        "total_s": total,
        "rss_bytes_per_address": (rss_after - rss_before) / addresses as f64,
        "peak_rss_bytes": procfs::peak_rss_bytes(None),
    }))
}
