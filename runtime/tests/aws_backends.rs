//! The AWS backends (S3 checkpoints, DynamoDB commits, Kinesis logs) against
//! the local AWS stack: LocalStack for S3 and Kinesis, moto for DynamoDB.
//!
//! The endpoints come from `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_DYNAMODB`;
//! when `AWS_ENDPOINT_URL` is not set, the tests start the stack with
//! `scripts/local-aws.sh up` and take them from `scripts/local-aws.sh env`.
//! Every test names its resources with a random suffix and deletes them, also
//! when it fails.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use aws_config::SdkConfig;
use aws_sdk_s3::config::{Credentials, SharedCredentialsProvider};
use prost::Message;
use statefun_proto::internal::{EpochRecord, PartitionManifest};
use statefun_runtime::aws::aws_sdk_config_at;
use statefun_runtime::checkpoint::s3::S3BlobStore;
use statefun_runtime::checkpoint::{self, BlobStore, CheckpointError, object_key};
use statefun_runtime::coordination::dynamodb::DynamoCommitStore;
use statefun_runtime::coordination::{CommitError, CommitStore, Renewal};
use statefun_runtime::faults::FaultPlan;
use statefun_runtime::log::kinesis::KinesisLogStore;
use statefun_runtime::log::{AppendRecord, LogError, LogStore, Position, ShardChoice};

// --- the local stack ------------------------------------------------------------------------

struct LocalAws {
    endpoint: String,
    dynamodb_endpoint: String,
    region: String,
    access_key: String,
    secret_key: String,
}

fn local_aws() -> &'static LocalAws {
    static STACK: OnceLock<LocalAws> = OnceLock::new();
    STACK.get_or_init(|| {
        let vars: HashMap<String, String> = match std::env::var("AWS_ENDPOINT_URL") {
            Ok(url) if !url.is_empty() => std::env::vars().collect(),
            _ => start_local_stack(),
        };
        let var = |name: &str| vars.get(name).filter(|v| !v.is_empty()).cloned();
        let endpoint = var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL");
        LocalAws {
            dynamodb_endpoint: var("AWS_ENDPOINT_URL_DYNAMODB").unwrap_or_else(|| endpoint.clone()),
            endpoint,
            region: var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")).unwrap_or_else(|| "us-east-1".into()),
            access_key: var("AWS_ACCESS_KEY_ID").unwrap_or_else(|| "test".into()),
            secret_key: var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|| "test".into()),
        }
    })
}

/// Runs `scripts/local-aws.sh up`, then returns the variables `env` prints.
fn start_local_stack() -> HashMap<String, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/local-aws.sh");
    assert!(
        script.exists(),
        "the AWS backend tests need the local AWS stack: set AWS_ENDPOINT_URL (and AWS_ENDPOINT_URL_DYNAMODB) \
         to running LocalStack and moto endpoints, or provide {} to start them",
        script.display()
    );
    let up = Command::new("bash").arg(&script).arg("up").status().expect("running scripts/local-aws.sh up");
    assert!(up.success(), "scripts/local-aws.sh up failed ({up}); see its output above");
    let env = Command::new("bash").arg(&script).arg("env").output().expect("running scripts/local-aws.sh env");
    assert!(env.status.success(), "scripts/local-aws.sh env failed: {}", String::from_utf8_lossy(&env.stderr));
    String::from_utf8_lossy(&env.stdout)
        .lines()
        .filter_map(|line| {
            let (name, value) = line.trim().trim_start_matches("export ").split_once('=')?;
            Some((name.trim().to_owned(), value.trim().trim_matches(|c| c == '\'' || c == '"').to_owned()))
        })
        .collect()
}

/// An SDK configuration for `endpoint`, through the runtime's own loader.
async fn sdk_config(endpoint: &str) -> SdkConfig {
    let aws = local_aws();
    let credentials = Credentials::new(&aws.access_key, &aws.secret_key, None, None, "local-aws");
    aws_sdk_config_at(Some(&aws.region), Some(endpoint))
        .await
        .to_builder()
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .build()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// Runs `body`, then `cleanup` whether or not `body` panicked, then re-raises its panic.
async fn with_cleanup<F, C>(body: F, cleanup: C)
where
    F: Future<Output = ()> + Send + 'static,
    C: Future<Output = ()>,
{
    let outcome = tokio::spawn(body).await;
    cleanup.await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

// --- S3 -------------------------------------------------------------------------------------

async fn s3_client() -> aws_sdk_s3::Client {
    let config = sdk_config(&local_aws().endpoint).await;
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build())
}

async fn delete_bucket(bucket: &str) {
    let s3 = s3_client().await;
    let mut token = None;
    loop {
        let Ok(page) = s3.list_objects_v2().bucket(bucket).set_continuation_token(token.take()).send().await else {
            return;
        };
        for object in page.contents() {
            let _ = s3.delete_object().bucket(bucket).set_key(object.key().map(str::to_owned)).send().await;
        }
        match page.next_continuation_token() {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    let _ = s3.delete_bucket().bucket(bucket).send().await;
}

fn epoch_record(partition: u32, epoch: u64, snapshot: bool) -> bytes::Bytes {
    EpochRecord { partition, epoch, snapshot, ..Default::default() }.encode_to_vec().into()
}

#[tokio::test]
async fn checkpoint_objects_round_trip_through_s3_and_garbage_before_a_snapshot_is_deleted() {
    let bucket = unique("statefun-ckpt");
    let config = sdk_config(&local_aws().endpoint).await;
    let store = S3BlobStore::new(&config, &bucket, "tenant-a/checkpoints").with_list_page_size(2);
    store.create_bucket().await.expect("create bucket");
    let inner_bucket = bucket.clone();
    let body = async move {
        for epoch in 1..=5 {
            store.put(&object_key(0, epoch, 1, epoch == 3), epoch_record(0, epoch, epoch == 3)).await.expect("put");
        }
        store.put(&object_key(1, 1, 1, true), epoch_record(1, 1, true)).await.expect("put other partition");

        assert_eq!(
            store.get(&object_key(0, 2, 1, false)).await.expect("get"),
            Some(epoch_record(0, 2, false).to_vec())
        );
        assert_eq!(store.get(&object_key(0, 9, 1, false)).await.expect("get missing"), None);

        // Five keys in pages of two: three pages, returned without the store's prefix.
        let listed = store.list("partition-00000/").await.expect("list");
        let expected: Vec<String> = (1..=5).map(|e| object_key(0, e, 1, e == 3)).collect();
        assert_eq!(listed, expected);
        let raw = s3_client().await.list_objects_v2().bucket(&inner_bucket).send().await.expect("raw list");
        assert!(
            raw.contents()
                .iter()
                .all(|o| o.key().is_some_and(|k| k.starts_with("tenant-a/checkpoints/partition-0000"))),
            "objects live under the configured prefix"
        );

        let manifest = PartitionManifest { epoch: 5, snapshot_epoch: 3, lease: 1 };
        let history = checkpoint::load_history(&store, 0, &manifest).await.expect("load history");
        assert_eq!(history.iter().map(|r| r.epoch).collect::<Vec<_>>(), [3, 4, 5]);

        assert_eq!(checkpoint::collect_garbage(&store, 0, 3).await.expect("gc"), 2);
        assert_eq!(store.list("partition-00000/").await.expect("list"), expected[2..].to_vec());
        assert_eq!(store.list("partition-00001/").await.expect("list"), [object_key(1, 1, 1, true)]);

        store.delete(&object_key(0, 5, 1, false)).await.expect("delete");
        store.delete(&object_key(0, 5, 1, false)).await.expect("deleting again is not an error");
        assert_eq!(store.get(&object_key(0, 5, 1, false)).await.expect("get deleted"), None);
    };
    with_cleanup(body, delete_bucket(&bucket)).await;
}

#[tokio::test]
async fn objects_above_the_multipart_threshold_are_uploaded_in_parts_and_read_back_whole() {
    let bucket = unique("statefun-multipart");
    let config = sdk_config(&local_aws().endpoint).await;
    let part = checkpoint::s3::MIN_PART_SIZE;
    let store = S3BlobStore::new(&config, &bucket, "").with_multipart(1024, part);
    store.create_bucket().await.expect("create bucket");
    let (inner_bucket, key) = (bucket.clone(), object_key(7, 1, 1, true));
    let body = async move {
        let data: Vec<u8> = (0..part + 1000).map(|i| (i % 251) as u8).collect();
        store.put(&key, data.clone().into()).await.expect("multipart put");
        assert_eq!(store.get(&key).await.expect("get"), Some(data));
        let head = s3_client().await.head_object().bucket(&inner_bucket).key(&key).send().await.expect("head");
        assert!(head.e_tag().is_some_and(|t| t.trim_matches('"').ends_with("-2")), "two parts: {:?}", head.e_tag());
        // Small objects still go in one PutObject.
        store.put("small", bytes::Bytes::from_static(&[1, 2, 3])).await.expect("put");
        let head = s3_client().await.head_object().bucket(&inner_bucket).key("small").send().await.expect("head");
        assert!(head.e_tag().is_some_and(|t| !t.contains('-')), "one part: {:?}", head.e_tag());
    };
    with_cleanup(body, delete_bucket(&bucket)).await;
}

#[tokio::test]
async fn a_missing_bucket_is_a_permanent_error_naming_the_bucket() {
    let bucket = unique("statefun-missing");
    let store = S3BlobStore::new(&sdk_config(&local_aws().endpoint).await, &bucket, "p");
    for err in [
        store.get("k").await.expect_err("get"),
        store.put("k", bytes::Bytes::from_static(&[1])).await.expect_err("put"),
    ] {
        assert!(matches!(err, CheckpointError::Rejected { .. }), "{err}");
        assert!(!err.is_retryable());
        assert!(err.to_string().contains(&format!("bucket `{bucket}` does not exist")), "{err}");
        assert!(err.to_string().contains(&local_aws().endpoint), "{err}");
    }
}

// --- DynamoDB -------------------------------------------------------------------------------

async fn commit_store() -> Arc<DynamoCommitStore> {
    commit_store_under(None).await
}

/// A commit store on a new table, its client under the fault plan `plan` once the table exists.
async fn commit_store_under(plan: Option<&str>) -> Arc<DynamoCommitStore> {
    let store = DynamoCommitStore::new(&sdk_config(&local_aws().dynamodb_endpoint).await, unique("statefun-leases"));
    store.create_table().await.expect("create table");
    Arc::new(match plan {
        Some(plan) => store.with_faults(&fault_plan(plan)),
        None => store,
    })
}

async fn delete_table(table: &str) {
    let config = sdk_config(&local_aws().dynamodb_endpoint).await;
    let _ = aws_sdk_dynamodb::Client::new(&config).delete_table().table_name(table).send().await;
}

fn manifest(epoch: u64, snapshot_epoch: u64, lease: u64) -> PartitionManifest {
    PartitionManifest { epoch, snapshot_epoch, lease }
}

#[tokio::test]
async fn acquire_bumps_the_lease_counter_and_returns_what_was_committed() {
    let store = commit_store().await;
    let table = store.table().to_owned();
    let body = {
        let store = store.clone();
        async move {
            assert_eq!(store.committed(0).await.expect("read"), None);
            let first = store.acquire(0, "a").await.expect("acquire");
            assert_eq!((first.counter, first.manifest), (1, None));
            assert_eq!(store.committed(0).await.expect("read"), None, "acquired but never committed");
            store.commit(&first, 0, manifest(1, 1, 1)).await.expect("commit");
            let second = store.acquire(0, "b").await.expect("acquire");
            assert_eq!((second.counter, second.manifest), (2, Some(manifest(1, 1, 1))));
            let committed = store.committed(0).await.expect("read").expect("committed");
            assert_eq!((committed.owner.as_str(), committed.counter, committed.manifest), ("b", 2, manifest(1, 1, 1)));
            let other = store.acquire(1, "b").await.expect("another partition");
            assert_eq!(other.counter, 1);
        }
    };
    with_cleanup(body, delete_table(&table)).await;
}

#[tokio::test]
async fn a_commit_by_a_stale_owner_is_fenced() {
    let store = commit_store().await;
    let table = store.table().to_owned();
    let body = {
        let store = store.clone();
        async move {
            let old = store.acquire(3, "a").await.expect("acquire");
            store.commit(&old, 0, manifest(1, 1, 1)).await.expect("commit");
            let new = store.acquire(3, "b").await.expect("acquire");
            let err = store.commit(&old, 1, manifest(2, 1, 1)).await.expect_err("fenced");
            assert!(matches!(err, CommitError::Fenced { partition: 3, epoch: 2, .. }), "{err}");
            assert!(!err.is_retryable());
            store.commit(&new, 1, manifest(2, 2, 2)).await.expect("the new owner commits");
            assert_eq!(store.committed(3).await.expect("read").expect("committed").manifest, manifest(2, 2, 2));
        }
    };
    with_cleanup(body, delete_table(&table)).await;
}

#[tokio::test]
async fn a_commit_from_a_stale_epoch_is_fenced() {
    let store = commit_store().await;
    let table = store.table().to_owned();
    let body = {
        let store = store.clone();
        async move {
            let lease = store.acquire(1, "a").await.expect("acquire");
            store.commit(&lease, 0, manifest(1, 1, 1)).await.expect("commit");
            let err = store.commit(&lease, 0, manifest(1, 1, 1)).await.expect_err("stale epoch");
            assert!(matches!(err, CommitError::Fenced { .. }), "{err}");
            store.commit(&lease, 1, manifest(2, 1, 1)).await.expect("the next epoch commits");
            let committed = store.committed(1).await.expect("read").expect("committed");
            assert_eq!((committed.owner.as_str(), committed.counter, committed.manifest.epoch), ("a", 1, 2));
        }
    };
    with_cleanup(body, delete_table(&table)).await;
}

#[tokio::test]
async fn renewals_beat_the_heartbeat_a_take_over_of_a_stale_sighting_loses_and_the_old_holder_is_fenced() {
    let store = commit_store().await;
    let table = store.table().to_owned();
    let body = {
        let store = store.clone();
        async move {
            let lease = store.acquire(2, "a").await.expect("acquire");
            let before = store.lease(2).await.expect("read").expect("leased");
            assert_eq!((before.owner.as_str(), before.heartbeat), ("a", 0));
            assert_eq!(store.renew(&lease).await.expect("renew"), Renewal { handover_requested: false });
            let after = store.lease(2).await.expect("read").expect("leased");
            assert_eq!(after.heartbeat, 1);
            // A worker that saw the lease before the renewal must not take it: the holder is alive.
            assert_eq!(store.take(2, "b", Some(&before)).await.expect("take"), None);
            let taken = store.take(2, "b", Some(&after)).await.expect("take").expect("taken");
            assert_eq!((taken.owner.as_str(), taken.counter), ("b", lease.counter + 1));
            assert!(matches!(store.renew(&lease).await, Err(CommitError::LeaseLost { partition: 2, .. })));
            assert!(matches!(store.release(&lease).await, Err(CommitError::LeaseLost { .. })));
            let err = store.commit(&lease, 0, manifest(1, 1, 1)).await.expect_err("fenced");
            assert!(matches!(err, CommitError::Fenced { .. }), "{err}");
            assert_eq!(store.lease(2).await.expect("read").expect("leased").owner, "b");
        }
    };
    with_cleanup(body, delete_table(&table)).await;
}

#[tokio::test]
async fn a_requested_handover_shows_at_renewal_and_a_release_frees_the_lease_for_the_next_taker() {
    let store = commit_store().await;
    let table = store.table().to_owned();
    let body = {
        let store = store.clone();
        async move {
            let lease = store.acquire(0, "a").await.expect("acquire");
            store.commit(&lease, 0, manifest(1, 1, 1)).await.expect("commit");
            let seen = store.lease(0).await.expect("read").expect("leased");
            store.request_handover(0, "b", &seen).await.expect("ask");
            assert_eq!(store.lease(0).await.expect("read").expect("leased").wanted_by, "b");
            assert_eq!(store.renew(&lease).await.expect("renew"), Renewal { handover_requested: true });
            store.release(&lease).await.expect("release");
            let free = store.lease(0).await.expect("read").expect("record kept");
            assert!(free.is_free() && free.wanted_by.is_empty(), "{free:?}");
            let taken = store.take(0, "b", Some(&free)).await.expect("take").expect("taken");
            assert_eq!((taken.counter, taken.manifest), (lease.counter + 1, Some(manifest(1, 1, 1))));
            // Asking a holder that changed meanwhile is a no-op.
            store.request_handover(0, "c", &seen).await.expect("stale ask");
            assert!(store.lease(0).await.expect("read").expect("leased").wanted_by.is_empty());
        }
    };
    with_cleanup(body, delete_table(&table)).await;
}

#[tokio::test]
async fn concurrent_acquires_each_take_a_distinct_counter() {
    let store = commit_store().await;
    let table = store.table().to_owned();
    let body = {
        let store = store.clone();
        async move {
            let mut tasks = tokio::task::JoinSet::new();
            for owner in 0..6 {
                let store = store.clone();
                tasks.spawn(async move { store.acquire(5, &format!("w{owner}")).await.expect("acquire").counter });
            }
            let mut counters = tasks.join_all().await;
            counters.sort();
            assert_eq!(counters, [1, 2, 3, 4, 5, 6]);
        }
    };
    with_cleanup(body, delete_table(&table)).await;
}

#[tokio::test]
async fn a_missing_table_is_a_permanent_error_naming_table_region_and_endpoint() {
    let table = unique("statefun-missing");
    let store = DynamoCommitStore::new(&sdk_config(&local_aws().dynamodb_endpoint).await, &table);
    let err = store.acquire(0, "a").await.expect_err("no table");
    assert!(matches!(err, CommitError::Rejected(_)), "{err}");
    assert!(!err.is_retryable());
    let message = err.to_string();
    for part in
        [format!("table `{table}` does not exist"), local_aws().region.clone(), local_aws().dynamodb_endpoint.clone()]
    {
        assert!(message.contains(&part), "`{part}` missing from: {message}");
    }
}

// --- Kinesis --------------------------------------------------------------------------------

async fn kinesis(create_streams: bool) -> Arc<KinesisLogStore> {
    Arc::new(KinesisLogStore::new(&sdk_config(&local_aws().endpoint).await, create_streams))
}

/// A Kinesis store whose client is under the fault plan `plan`.
async fn kinesis_under(create_streams: bool, plan: &str) -> Arc<KinesisLogStore> {
    let store = KinesisLogStore::new(&sdk_config(&local_aws().endpoint).await, create_streams);
    Arc::new(store.with_faults(&fault_plan(plan)))
}

async fn delete_stream(stream: &str) {
    let config = sdk_config(&local_aws().endpoint).await;
    let _ = aws_sdk_kinesis::Client::new(&config)
        .delete_stream()
        .stream_name(stream)
        .enforce_consumer_deletion(true)
        .send()
        .await;
}

fn record(key: &str, data: &str, shard: ShardChoice) -> AppendRecord {
    AppendRecord { partition_key: key.into(), shard, data: data.as_bytes().to_vec(), id: Some(format!("id-{data}")) }
}

fn data(records: &[statefun_runtime::log::LogRecord]) -> Vec<String> {
    records.iter().map(|r| String::from_utf8_lossy(&r.data).into_owned()).collect()
}

#[tokio::test]
async fn records_read_back_in_order_from_start_after_a_sequence_and_latest() {
    let stream = unique("statefun-log");
    let log = kinesis(true).await;
    let shards = log.ensure_stream(&stream, 1).await.expect("create stream");
    assert_eq!(shards.len(), 1);
    let inner = stream.clone();
    let body = async move {
        let (stream, shard) = (inner.as_str(), shards[0].id.as_str());
        // A Latest read before anything is appended stays at Latest and goes on from there.
        let (none, early_latest) = log.read(stream, shard, &Position::Latest, 10).await.expect("read latest");
        assert!(none.is_empty());
        assert_eq!(early_latest, Position::Latest);

        let before = statefun_runtime::now_ms();
        let abc = ["a", "b", "c"].map(|d| record("k", d, ShardChoice::ByKey)).to_vec();
        log.append(stream, &abc).await.expect("append");
        // The early Latest iterator (cached) sees what was appended after it was taken.
        let (seen, _) = log.read(stream, shard, &early_latest, 10).await.expect("read early latest");
        assert_eq!(data(&seen), ["a", "b", "c"]);

        let (all, next) = log.read(stream, shard, &Position::Start, 10).await.expect("read from start");
        assert_eq!(data(&all), ["a", "b", "c"]);
        assert_eq!(next, Position::After(all[2].sequence.clone()));
        assert!(all.iter().all(|r| r.id.is_none() && r.partition_key == "k" && r.shard == shard));
        assert!(all[0].appended_at_ms >= before - 5_000, "arrival time {} vs {before}", all[0].appended_at_ms);

        let (rest, _) =
            log.read(stream, shard, &Position::After(all[0].sequence.clone()), 10).await.expect("read after");
        assert_eq!(data(&rest), ["b", "c"]);
        let (two, after_two) = log.read(stream, shard, &Position::Start, 2).await.expect("read two");
        assert_eq!(data(&two), ["a", "b"]);
        let (last, end) = log.read(stream, shard, &after_two, 2).await.expect("read on");
        assert_eq!(data(&last), ["c"]);
        let (nothing, still) = log.read(stream, shard, &end, 2).await.expect("read at the end");
        assert!(nothing.is_empty());
        assert_eq!(still, end);
        // Kinesis says how far behind the newest record the read left the reader: at the end, nothing.
        assert_eq!(log.millis_behind_latest(stream, shard), Some(0), "MillisBehindLatest of the last read");

        // A fresh Latest skips what is already there.
        let fresh = kinesis(false).await;
        let (skipped, latest) = fresh.read(stream, shard, &Position::Latest, 10).await.expect("fresh latest");
        assert!(skipped.is_empty());
        fresh.append(stream, &[record("k", "d", ShardChoice::ByKey)]).await.expect("append");
        let (new, _) = fresh.read(stream, shard, &latest, 10).await.expect("read on from latest");
        assert_eq!(data(&new), ["d"]);
    };
    with_cleanup(body, delete_stream(&stream)).await;
}

/// Waits until the stream is ACTIVE again after a reshard.
async fn wait_active(stream: &str) {
    let client = aws_sdk_kinesis::Client::new(&sdk_config(&local_aws().endpoint).await);
    for _ in 0..300 {
        let summary = client.describe_stream_summary().stream_name(stream).send().await.expect("describe stream");
        let status = summary.stream_description_summary().map(|s| s.stream_status().clone());
        if status == Some(aws_sdk_kinesis::types::StreamStatus::Active) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("stream {stream} did not become active after resharding");
}

/// Reads a shard from the start until it reports its end.
async fn read_to_end(log: &KinesisLogStore, stream: &str, shard: &str) -> Vec<String> {
    let mut position = Position::Start;
    let mut read = Vec::new();
    for _ in 0..100 {
        let (records, next) = log.read(stream, shard, &position, 10).await.expect("read");
        read.extend(data(&records));
        if next == Position::End {
            let (nothing, still) = log.read(stream, shard, &next, 10).await.expect("read at the end");
            assert!(nothing.is_empty() && still == Position::End);
            return read;
        }
        position = next;
    }
    panic!("shard {shard} of {stream} never reported its end (read {read:?})");
}

#[tokio::test]
async fn after_a_split_and_a_merge_parents_end_and_children_name_them_and_take_the_new_records() {
    let stream = unique("statefun-reshard");
    let log = kinesis(true).await;
    let original = log.ensure_stream(&stream, 1).await.expect("create stream");
    let inner = stream.clone();
    let body = async move {
        let stream = inner.as_str();
        let client = aws_sdk_kinesis::Client::new(&sdk_config(&local_aws().endpoint).await);
        let half = u128::MAX / 2 + 1;
        let low = ShardChoice::ExplicitHashKey("7".into());
        let high = ShardChoice::ExplicitHashKey((half + 7).to_string());
        log.append(stream, &[record("k", "a", low.clone()), record("k", "b", high.clone())]).await.expect("append");

        let parent = original[0].id.clone();
        client
            .split_shard()
            .stream_name(stream)
            .shard_to_split(&parent)
            .new_starting_hash_key(half.to_string())
            .send()
            .await
            .expect("split the shard");
        wait_active(stream).await;
        let shards = log.shards(stream).await.expect("list shards");
        // Routing follows the open shards as last listed: Index(1) is the upper child now.
        let after_split = vec![
            record("k", "c", low.clone()),
            record("k", "d", high.clone()),
            record("k", "e", ShardChoice::Index(1)),
        ];
        log.append(stream, &after_split).await.expect("append after the split");

        assert_eq!(shards.len(), 3, "{shards:?}");
        let listed_parent = shards.iter().find(|s| s.id == parent).expect("the parent is still listed");
        assert!(!listed_parent.open && listed_parent.parents.is_empty());
        let children: Vec<_> = shards.iter().filter(|s| s.id != parent).collect();
        assert!(children.iter().all(|c| c.open && c.parents == [parent.clone()]), "{children:?}");
        let (left, right) = (children[0].id.clone(), children[1].id.clone());
        assert_eq!((children[0].starting_hash_key, children[1].starting_hash_key), (0, half));
        assert_eq!(read_to_end(&log, stream, &parent).await, ["a", "b"]);

        client
            .merge_shards()
            .stream_name(stream)
            .shard_to_merge(&left)
            .adjacent_shard_to_merge(&right)
            .send()
            .await
            .expect("merge the children");
        wait_active(stream).await;
        let shards = log.shards(stream).await.expect("list shards");
        log.append(stream, &[record("k", "f", high.clone()), record("k", "g", ShardChoice::Index(0))])
            .await
            .expect("append");

        assert_eq!(shards.len(), 4, "{shards:?}");
        let merged = shards.iter().find(|s| s.open).expect("one open shard");
        let mut merged_parents = merged.parents.clone();
        merged_parents.sort();
        let mut expected = vec![left.clone(), right.clone()];
        expected.sort();
        assert_eq!(merged_parents, expected);
        assert_eq!(shards.iter().filter(|s| s.open).count(), 1);
        assert_eq!(read_to_end(&log, stream, &left).await, ["c"]);
        assert_eq!(read_to_end(&log, stream, &right).await, ["d", "e"]);
        let (tail, next) = log.read(stream, &merged.id, &Position::Start, 10).await.expect("read the merged shard");
        assert_eq!(data(&tail), ["f", "g"]);
        assert_ne!(next, Position::End, "an open shard has no end");
    };
    with_cleanup(body, delete_stream(&stream)).await;
}

#[tokio::test]
async fn index_routing_puts_each_record_on_the_chosen_shard_of_four() {
    let stream = unique("statefun-exchange");
    let log = kinesis(true).await;
    let shards = log.ensure_stream(&stream, 4).await.expect("create stream");
    assert_eq!(shards.len(), 4);
    let inner = stream.clone();
    let body = async move {
        let stream = inner.as_str();
        let mut records: Vec<AppendRecord> = (0..4)
            .rev()
            .map(|i| record(&format!("partition-{i}"), &format!("to-{i}"), ShardChoice::Index(i)))
            .collect();
        // Indexes wrap around the shard count, as in the local log.
        records.push(record("p", "wrapped-to-1", ShardChoice::Index(5)));
        // The starting hash key of the third quarter of the key space is the third shard's.
        let third = (u128::MAX / 4 + 1) * 2;
        records.push(record("p", "hash-to-2", ShardChoice::ExplicitHashKey(third.to_string())));
        // Two Index records for one shard in one append keep their order.
        records.push(record("p", "to-0-again", ShardChoice::Index(0)));
        log.append(stream, &records).await.expect("append");

        let mut found = Vec::new();
        for shard in &shards {
            let (records, _) = log.read(stream, &shard.id, &Position::Start, 10).await.expect("read");
            assert!(records.iter().all(|r| r.shard == shard.id));
            found.push(data(&records));
        }
        assert_eq!(
            found,
            [vec!["to-0", "to-0-again"], vec!["to-1", "wrapped-to-1"], vec!["to-2", "hash-to-2"], vec!["to-3"]]
        );
    };
    with_cleanup(body, delete_stream(&stream)).await;
}

#[tokio::test]
async fn appends_larger_than_one_request_arrive_whole_and_in_order() {
    let stream = unique("statefun-bulk");
    let log = kinesis(true).await;
    let shards = log.ensure_stream(&stream, 1).await.expect("create stream");
    let inner = stream.clone();
    let body = async move {
        let stream = inner.as_str();
        // 1200 records: three requests of at most 500.
        let many: Vec<AppendRecord> = (0..1200).map(|i| record("k", &format!("{i:04}"), ShardChoice::ByKey)).collect();
        log.append(stream, &many).await.expect("append");
        // Six records of 900 KiB: two requests of at most 5 MiB.
        let big: Vec<AppendRecord> = (0..6)
            .map(|i| AppendRecord {
                partition_key: "big".into(),
                shard: ShardChoice::ByKey,
                data: vec![i as u8; 900 * 1024],
                id: None,
            })
            .collect();
        log.append(stream, &big).await.expect("append big records");

        let mut read = Vec::new();
        let mut position = Position::Start;
        while read.len() < 1206 {
            let (records, next) = log.read(stream, &shards[0].id, &position, 500).await.expect("read");
            assert!(!records.is_empty() || next == position, "no records without standing still");
            read.extend(records);
            position = next;
        }
        let small: Vec<String> = (0..1200).map(|i| format!("{i:04}")).collect();
        assert_eq!(data(&read[..1200]), small);
        assert!(read[1200..].iter().enumerate().all(|(i, r)| r.data.len() == 900 * 1024 && r.data[0] == i as u8));
    };
    with_cleanup(body, delete_stream(&stream)).await;
}

#[tokio::test]
async fn records_beyond_kinesis_limits_are_refused_before_anything_is_sent() {
    let stream = unique("statefun-limits");
    let log = kinesis(true).await;
    let shards = log.ensure_stream(&stream, 1).await.expect("create stream");
    let inner = stream.clone();
    let body = async move {
        let stream = inner.as_str();
        let too_big =
            AppendRecord { partition_key: "k".into(), shard: ShardChoice::ByKey, data: vec![0; 1024 * 1024], id: None };
        for bad in [
            too_big,
            record("", "empty key", ShardChoice::ByKey),
            record(&"x".repeat(257), "long key", ShardChoice::ByKey),
        ] {
            let err = log.append(stream, &[record("k", "fine", ShardChoice::ByKey), bad]).await.expect_err("refused");
            assert!(matches!(err, LogError::Rejected { .. }) && !err.is_retryable(), "{err}");
        }
        let (records, _) = log.read(stream, &shards[0].id, &Position::Start, 10).await.expect("read");
        assert!(records.is_empty(), "nothing of a refused append was sent");
    };
    with_cleanup(body, delete_stream(&stream)).await;
}

#[tokio::test]
async fn a_missing_stream_is_reported_unless_the_store_may_create_it() {
    let stream = unique("statefun-missing");
    let log = kinesis(false).await;
    let err = log.ensure_stream(&stream, 1).await.expect_err("may not create");
    assert!(matches!(err, LogError::NoSuchStream { .. }) && !err.is_retryable(), "{err}");
    for part in [format!("stream `{stream}` does not exist"), local_aws().region.clone(), local_aws().endpoint.clone()]
    {
        assert!(err.to_string().contains(&part), "`{part}` missing from: {err}");
    }
    assert!(matches!(log.shards(&stream).await, Err(LogError::NoSuchStream { .. })));
    let append = log.append(&stream, &[record("k", "x", ShardChoice::ByKey)]).await;
    assert!(matches!(append, Err(LogError::NoSuchStream { .. })), "{append:?}");

    let creator = kinesis(true).await;
    let shards = creator.ensure_stream(&stream, 2).await.expect("create");
    let inner = stream.clone();
    let body = async move {
        assert_eq!(log.ensure_stream(&inner, 1).await.expect("exists now"), shards, "the creator's shard count stands");
        let err = log.read(&inner, "shardId-999999999999", &Position::Start, 1).await.expect_err("no such shard");
        assert!(matches!(err, LogError::NoSuchShard { .. }), "{err}");
    };
    with_cleanup(body, delete_stream(&stream)).await;
}

// --- under injected faults (a fault plan on the store's client) ------------------------------------------------

fn fault_plan(text: &str) -> Arc<FaultPlan> {
    Arc::new(FaultPlan::parse(text).expect("valid plan"))
}

/// The log of one test: the fault layer says `injected fault: ...` for every fault.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// Captures what this thread logs while the guard lives: a test on tokio's
    /// current-thread runtime, which runs its spawned tasks on the same thread.
    fn install() -> (Self, tracing::subscriber::DefaultGuard) {
        let captured = Self::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    fn count(&self, what: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).matches(what).count()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Retries a store call while it fails retryably, as the committer does.
macro_rules! retried {
    ($call:expr) => {{
        let mut failures = 0;
        loop {
            match $call.await {
                Ok(value) => break value,
                Err(e) if e.is_retryable() && failures < 20 => {
                    failures += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{}: {e}", stringify!($call)),
            }
        }
    }};
}

/// Reads a shard from its start until a read comes back empty.
async fn read_all(log: &KinesisLogStore, stream: &str, shard: &str) -> Vec<String> {
    let (mut position, mut read) = (Position::Start, Vec::new());
    loop {
        let (records, next) = retried!(log.read(stream, shard, &position, 1000));
        if records.is_empty() {
            return read;
        }
        read.extend(data(&records));
        position = next;
    }
}

/// Whether `part` appears in `whole` in order, not necessarily next to each other.
fn is_subsequence(part: &[String], whole: &[String]) -> bool {
    let mut rest = whole.iter();
    part.iter().all(|wanted| rest.any(|have| have == wanted))
}

#[tokio::test]
async fn appends_under_partial_failures_arrive_whole_and_each_shard_keeps_their_order() {
    let (captured, _log) = Captured::install();
    let stream = unique("statefun-partial");
    let log = kinesis_under(true, "seed=5; kinesis.PutRecords.partial=0.2").await;
    let shards = log.ensure_stream(&stream, 4).await.expect("create stream");
    let inner = stream.clone();
    let body = async move {
        let stream = inner.as_str();
        let mut appended: Vec<String> = Vec::new();
        let mut failed_appends = 0;
        for round in 0..6 {
            // Records by key, by explicit hash key and by shard index, several per shard.
            let batch: Vec<AppendRecord> = (0..16)
                .map(|i| {
                    let shard = match i % 4 {
                        0 | 1 => ShardChoice::ByKey,
                        2 => ShardChoice::ExplicitHashKey(shards[(i / 4) % 4].starting_hash_key.to_string()),
                        _ => ShardChoice::Index((i / 4) as u32),
                    };
                    record(&format!("k{}", i % 7), &format!("r{round}-{i:02}"), shard)
                })
                .collect();
            loop {
                match log.append(stream, &batch).await {
                    Ok(()) => break,
                    // Out of rounds: the caller appends the whole batch again.
                    Err(e) if e.is_retryable() && failed_appends < 5 => failed_appends += 1,
                    Err(e) => panic!("append: {e}"),
                }
            }
            appended.extend(batch.iter().map(|r| String::from_utf8_lossy(&r.data).into_owned()));
        }
        let mut held = 0;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (index, shard) in shards.iter().enumerate() {
            let records = read_all(&log, stream, &shard.id).await;
            held += records.len();
            for record in &records {
                let first = *seen.entry(record.clone()).or_insert(index);
                assert_eq!(first, index, "record {record} is on two shards");
            }
            let ours: Vec<String> = appended.iter().filter(|r| records.contains(r)).cloned().collect();
            assert!(is_subsequence(&ours, &records), "shard {}: appended {ours:?}, holds {records:?}", shard.id);
        }
        let missing: Vec<&String> = appended.iter().filter(|r| !seen.contains_key(*r)).collect();
        assert!(missing.is_empty(), "records that never arrived: {missing:?}");
        assert!(
            held > appended.len(),
            "refused records were sent again with later ones ({held} held, {} appended)",
            appended.len()
        );
        let refusals = captured.count("records of PutRecords refused");
        assert!(refusals >= 6, "partial failures were injected: {refusals}");
        eprintln!(
            "{} records appended, {held} held, {refusals} partial failures, {failed_appends} appends repeated",
            appended.len()
        );
    };
    with_cleanup(body, delete_stream(&stream)).await;
}

/// A plan whose `UpdateItem` attempts 0 and 2 lose their answers and 1 and 3 do not.
fn lost_commit_plan() -> String {
    use statefun_runtime::faults::{AwsFault, Service};
    let lost = |plan: &FaultPlan, n| plan.attempt(Service::DynamoDb, "UpdateItem", n).fault == Some(AwsFault::Lost);
    (0..1000)
        .map(|seed| format!("seed={seed}; dynamodb.UpdateItem.lost=0.5"))
        .find(|text| {
            let plan = FaultPlan::parse(text).expect("valid plan");
            lost(&plan, 0) && !lost(&plan, 1) && lost(&plan, 2) && !lost(&plan, 3)
        })
        .expect("a seed with that pattern")
}

#[tokio::test]
async fn a_commit_whose_answer_was_lost_counts_as_applied_and_the_committer_settles_it() {
    use statefun_runtime::coordination::guard::LeaseGuard;
    use statefun_runtime::partition::outbox::Outbox;
    use statefun_runtime::worker::committer::{Committer, CommitterEvent, OutputStreams, Sealed};

    let (captured, _log) = Captured::install();
    let store = commit_store_under(Some(&lost_commit_plan())).await;
    let table = store.table().to_owned();
    let body = {
        let store = store.clone();
        async move {
            let lease = store.acquire(0, "a").await.expect("acquire");
            // UpdateItem attempt 0: applied, answer lost. One attempt, so no SDK retry hides it.
            let err = store.commit(&lease, 0, manifest(1, 1, 1)).await.expect_err("the answer is lost");
            assert!(
                matches!(err, CommitError::Backend(_)) && err.is_retryable(),
                "an unknown outcome, not fenced: {err}"
            );
            let committed = store.committed(0).await.expect("read").expect("committed");
            assert_eq!(
                (committed.owner.as_str(), committed.counter, committed.manifest),
                ("a", lease.counter, manifest(1, 1, 1))
            );
            // Attempt 1: trying again finds the condition gone, because it was applied.
            let err = store.commit(&lease, 0, manifest(1, 1, 1)).await.expect_err("fenced by its own commit");
            assert!(matches!(err, CommitError::Fenced { .. }), "{err}");

            // The committer: attempt 2 is lost, attempt 3 fenced, and the epoch is settled as committed.
            let dir = tempfile::tempdir().expect("tempdir");
            let committer = Committer {
                lease: lease.clone(),
                guard: Arc::new(LeaseGuard::new(std::time::Instant::now(), std::time::Duration::from_secs(600))),
                log: Arc::new(statefun_runtime::log::local::LocalLogStore::new(dir.path())),
                blobs: Arc::new(statefun_runtime::checkpoint::fs::FsBlobStore::new(dir.path())),
                commits: store.clone(),
                streams: OutputStreams {
                    exchange: "exchange".into(),
                    dead_letters: statefun_runtime::dead_letters::Destination::Stream("dead-letters".into()),
                    create_egress_streams: Some(1),
                },
                committed_epoch: 1,
                snapshot_epoch: 1,
                incarnation: 1,
                metrics: statefun_runtime::observe::metrics::Metrics::new().committer(0),
                hand_overs: None,
                chain: Default::default(),
                collector: Default::default(),
            };
            let (sealed, receiver) = tokio::sync::mpsc::channel(1);
            let (events, mut reports) = tokio::sync::mpsc::unbounded_channel();
            let running = tokio::spawn(committer.run(receiver, events));
            let record = EpochRecord { partition: 0, epoch: 2, ..Default::default() };
            let record = statefun_runtime::partition::SealedEpoch {
                record,
                entries: Default::default(),
                timers: Vec::new(),
                outboxes: Vec::new(),
                parked: Vec::new(),
                released: Vec::new(),
                live_parked: None,
            };
            sealed.send(Sealed { record, outbox: Arc::new(Outbox::default()), hand_over: true }).await.expect("send");
            for expected in ["committed", "published"] {
                match (expected, reports.recv().await) {
                    ("committed", Some(CommitterEvent::Committed(2))) => {}
                    ("published", Some(CommitterEvent::Published(2))) => {}
                    (_, other) => panic!("epoch 2 should be {expected}, got {other:?}"),
                }
            }
            drop(sealed);
            running.await.expect("committer");
            let committed = store.committed(0).await.expect("read").expect("committed");
            assert_eq!(committed.manifest, manifest(2, 1, lease.counter));
            assert_eq!(captured.count("injected fault: lost response"), 2, "two answers were lost");
        }
    };
    with_cleanup(body, delete_table(&table)).await;
}

#[tokio::test]
async fn garbage_is_deleted_with_one_request_per_batch_of_keys() {
    let (captured, _log) = Captured::install();
    let bucket = unique("statefun-gc");
    let config = sdk_config(&local_aws().endpoint).await;
    // Each call of either delete operation waits a millisecond and logs it: the log counts the calls.
    let store = S3BlobStore::new(&config, &bucket, "gc")
        .with_delete_batch(2)
        .with_faults(&fault_plan("s3.DeleteObjects.latency=1ms; s3.DeleteObject.latency=1ms"));
    store.create_bucket().await.expect("create bucket");
    let body = async move {
        for epoch in 1..=6 {
            store.put(&object_key(0, epoch, 1, epoch == 6), epoch_record(0, epoch, epoch == 6)).await.expect("put");
        }
        assert_eq!(checkpoint::collect_garbage(&store, 0, 6).await.expect("gc"), 5);
        assert_eq!(store.list("partition-00000/").await.expect("list"), [object_key(0, 6, 1, true)]);
        assert_eq!(captured.count("s3.DeleteObjects attempt"), 3, "five keys, two a request");
        assert_eq!(captured.count("s3.DeleteObject attempt"), 0, "no request per key");
        store.delete_many(&[object_key(0, 1, 1, false)]).await.expect("a key already deleted is no error");
    };
    with_cleanup(body, delete_bucket(&bucket)).await;
}

#[tokio::test]
async fn checkpoint_objects_are_written_and_read_through_s3_throttling_and_errors() {
    let (captured, _log) = Captured::install();
    let bucket = unique("statefun-faults");
    let config = sdk_config(&local_aws().endpoint).await;
    let part = checkpoint::s3::MIN_PART_SIZE;
    let store = S3BlobStore::new(&config, &bucket, "faults")
        .with_multipart(part + 1, part)
        .with_list_page_size(7)
        .with_faults(&fault_plan("seed=9; s3.throttle=0.1; s3.error=0.05"));
    retried!(store.create_bucket());
    let body = async move {
        let keys: Vec<String> = (1..=20).map(|epoch| object_key(0, epoch, 1, epoch % 10 == 0)).collect();
        for (epoch, key) in (1..).zip(&keys) {
            retried!(store.put(key, epoch_record(0, epoch, epoch % 10 == 0)));
        }
        let large: Vec<u8> = (0..2 * part + 100).map(|i| (i % 253) as u8).collect();
        retried!(store.put("large", large.clone().into()));
        for (epoch, key) in (1..).zip(&keys) {
            assert_eq!(retried!(store.get(key)), Some(epoch_record(0, epoch, epoch % 10 == 0).to_vec()), "{key}");
        }
        assert_eq!(retried!(store.get("large")), Some(large), "the multipart object reads back whole");
        assert_eq!(retried!(store.list("partition-00000/")), keys);
        let (throttled, failed) =
            (captured.count("injected fault: throttling"), captured.count("injected fault: error"));
        assert!(throttled > 0 && failed > 0, "faults were injected: {throttled} throttled, {failed} failed");
        eprintln!("S3 under faults: {throttled} calls throttled and {failed} failed, all retried through");
    };
    with_cleanup(body, delete_bucket(&bucket)).await;
}
