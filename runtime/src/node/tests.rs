//! The lease loop of one process, on the local backends.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use prost::Message as _;
use statefun_proto::internal::{EpochRecord, PartitionManifest};

use super::*;
use crate::checkpoint::{CheckpointError, ChunkSink, object_key};
use crate::coordination::Committed;
use crate::log::BoxFuture;
use crate::observe::DEFAULT_STUCK_AFTER;

/// The local checkpoint store, except that the first read of a partition's object panics.
struct PanicsOnce {
    inner: FsBlobStore,
    panicked: AtomicBool,
}

impl BlobStore for PanicsOnce {
    fn put<'a>(&'a self, key: &'a str, data: Bytes) -> BoxFuture<'a, Result<(), CheckpointError>> {
        self.inner.put(key, data)
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, CheckpointError>> {
        self.inner.get(key)
    }
    fn read<'a>(&'a self, key: &'a str, sink: &'a mut ChunkSink<'_>) -> BoxFuture<'a, Result<bool, CheckpointError>> {
        if key.starts_with("partition-") && !self.panicked.swap(true, Ordering::SeqCst) {
            panic!("injected: a bug met while reading {key}");
        }
        self.inner.read(key, sink)
    }
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), CheckpointError>> {
        self.inner.delete(key)
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, CheckpointError>> {
        self.inner.list(prefix)
    }
}

fn settings() -> NodeSettings {
    NodeSettings {
        partitions: 1,
        owner: "this-worker".into(),
        exchange_stream: "exchange".into(),
        dead_letter_stream: "dead-letters".into(),
        dead_letters_as_objects: false,
        stream_shards: 1,
        worker: WorkerSettings {
            commit_interval: Duration::from_millis(50),
            group_commit: true,
            hand_over: true,
            snapshot_every: 10,
            max_queued: 1000,
            max_epoch_entries: 1000,
            poll_interval: Duration::from_millis(10),
            read_batch: 100,
            expiry_sweep: Duration::from_secs(1),
            shard_discovery: Duration::from_secs(10),
            bounds: Default::default(),
        },
        memory_budget: 1 << 30,
        resident_memory: None,
        retry: RetryPolicy::default(),
        leases: LeaseSettings {
            renew_every: Duration::from_millis(100),
            failover: Duration::from_secs(2),
            take_over_at_once: true,
        },
        faults: None,
        observer: Arc::new(Observer::new("this-worker", DEFAULT_STUCK_AFTER)),
    }
}

/// A module with one endpoint for `ns/*` at `address`, and nothing to read.
fn endpoint_at(address: &str) -> String {
    format!(
        "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: ns/*\n  urlPathTemplate: http://{address}/{{function.name}}\n  transport:\n    call: 10m\n"
    )
}

/// Runs a node with `module` on the local log of `dir` and the given stores, until `stop` says so.
fn start_node(
    dir: &std::path::Path,
    module: &str,
    blobs: Arc<dyn BlobStore>,
    commits: Arc<dyn CommitStore>,
    settings: NodeSettings,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let backends = Backends {
        log: Arc::new(LocalLogStore::new(dir)),
        blobs,
        commits,
        lambda: None,
        identity: None,
        create_streams: true,
    };
    let module = ModuleConfig::parse(module, "module.yaml").expect("module");
    let (stop, shutdown) = watch::channel(false);
    (stop, tokio::spawn(run(module, settings, backends, shutdown)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_whose_task_panics_gives_its_lease_up_and_is_taken_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let commits = Arc::new(LocalCommitStore::open(dir.path()).expect("commit store"));
    // A committed history, so that taking the partition reads a checkpoint object.
    let earlier = commits.acquire(0, "an-earlier-worker").await.expect("acquire");
    let record = EpochRecord { partition: 0, epoch: 1, snapshot: true, ..Default::default() };
    let blobs = FsBlobStore::new(dir.path());
    blobs.put(&object_key(0, 1, earlier.counter, true), record.encode_to_vec().into()).await.expect("put");
    let manifest = PartitionManifest { epoch: 1, snapshot_epoch: 1, lease: earlier.counter };
    commits.commit(&earlier, 0, manifest).await.expect("commit");
    commits.release(&earlier).await.expect("release");

    let blobs = Arc::new(PanicsOnce { inner: blobs, panicked: AtomicBool::new(false) });
    let (stop, node) = start_node(dir.path(), &endpoint_at("127.0.0.1:9"), blobs, commits.clone(), settings());

    // Taken (counter + 1), panicked while recovering, released, taken again after a rest (counter + 2).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let record = commits.lease(0).await.expect("lease record").expect("taken");
        if record.counter >= earlier.counter + 2 && record.owner == "this-worker" {
            break;
        }
        assert!(Instant::now() < deadline, "the partition was not taken again after its task panicked: {record:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send_replace(true);
    node.await.expect("the node's task").expect("the node stops cleanly");
    assert!(commits.lease(0).await.expect("lease record").is_some_and(|r| r.is_free()), "released on shutdown");
}

/// The local commit store, except for partition 0: its renewals never answer
/// (with `hang_renewals`), and its commits wait while `commits_held` says so.
struct HoldsPartition0 {
    inner: LocalCommitStore,
    hang_renewals: bool,
    commits_held: watch::Receiver<bool>,
}

impl HoldsPartition0 {
    fn new(dir: &std::path::Path, hang_renewals: bool) -> (watch::Sender<bool>, Self) {
        let (hold, commits_held) = watch::channel(false);
        let inner = LocalCommitStore::open(dir).expect("commit store");
        (hold, Self { inner, hang_renewals, commits_held })
    }
}

impl CommitStore for HoldsPartition0 {
    fn lease<'a>(&'a self, partition: u32) -> BoxFuture<'a, Result<Option<Committed>, CommitError>> {
        self.inner.lease(partition)
    }
    fn take<'a>(
        &'a self,
        partition: u32,
        owner: &'a str,
        seen: Option<&'a Committed>,
    ) -> BoxFuture<'a, Result<Option<Lease>, CommitError>> {
        self.inner.take(partition, owner, seen)
    }
    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<crate::coordination::Renewal, CommitError>> {
        if lease.partition == 0 && self.hang_renewals {
            return Box::pin(std::future::pending());
        }
        self.inner.renew(lease)
    }
    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), CommitError>> {
        self.inner.release(lease)
    }
    fn request_handover<'a>(
        &'a self,
        partition: u32,
        requester: &'a str,
        seen: &'a Committed,
    ) -> BoxFuture<'a, Result<(), CommitError>> {
        self.inner.request_handover(partition, requester, seen)
    }
    fn commit<'a>(
        &'a self,
        lease: &'a Lease,
        previous_epoch: u64,
        manifest: PartitionManifest,
    ) -> BoxFuture<'a, Result<(), CommitError>> {
        let mut held = self.commits_held.clone();
        Box::pin(async move {
            if lease.partition == 0 {
                let _ = held.wait_for(|held| !*held).await;
            }
            self.inner.commit(lease, previous_epoch, manifest).await
        })
    }
    fn committed<'a>(&'a self, partition: u32) -> BoxFuture<'a, Result<Option<Committed>, CommitError>> {
        self.inner.committed(partition)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_that_never_answers_does_not_hold_up_the_other_partitions_renewals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_hold, commits) = HoldsPartition0::new(dir.path(), true);
    let commits = Arc::new(commits);
    let blobs = Arc::new(FsBlobStore::new(dir.path()));
    let (stop, node) = start_node(
        dir.path(),
        &endpoint_at("127.0.0.1:9"),
        blobs,
        commits.clone(),
        NodeSettings { partitions: 2, ..settings() },
    );

    let heartbeat = |record: Option<Committed>| record.filter(|r| r.owner == "this-worker").map(|r| r.heartbeat);
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        if let Some(beat) = heartbeat(commits.lease(1).await.expect("lease record")) {
            break beat;
        }
        assert!(Instant::now() < deadline, "partition 1 was never taken");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Renewed every 100 ms: ten renewals of partition 1 while partition 0's first renewal still hangs.
    loop {
        let record = commits.lease(1).await.expect("lease record");
        let Some(beat) = heartbeat(record.clone()) else { panic!("partition 1 is no longer held: {record:?}") };
        if beat >= first + 10 {
            break;
        }
        assert!(Instant::now() < deadline, "partition 1's heartbeat stood at {beat} (taken at {first})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send_replace(true);
    node.await.expect("the node's task").expect("the node stops cleanly");
}

#[tokio::test]
async fn a_history_whose_commit_record_was_lost_is_refused_and_an_uncommitted_first_epoch_is_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs = FsBlobStore::new(dir.path());
    history_without_commit_record(&blobs, 3).await.expect("no objects: a new partition");
    blobs.put(&object_key(3, 1, 1, true), Bytes::from_static(b"")).await.expect("put");
    history_without_commit_record(&blobs, 3).await.expect("a first epoch may never have been committed");
    blobs.put(&object_key(3, 2, 1, false), Bytes::from_static(b"")).await.expect("put");
    let refusal =
        history_without_commit_record(&blobs, 3).await.expect_err("epoch 2 was written after epoch 1 committed");
    assert!(refusal.contains("no commit record") && refusal.contains("epoch-00000000000000000002"), "{refusal}");
    history_without_commit_record(&blobs, 2).await.expect("another partition's objects do not count");
}

/// Runs a node whose ingress stream `in` holds `records` (key, data), read from
/// the start and sent to `ns/f` at the endpoint `function`.
async fn node_reading(
    dir: &std::path::Path,
    records: Vec<(String, Vec<u8>)>,
    function: std::net::SocketAddr,
    settings: NodeSettings,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    node_reading_to(dir, records, "ns/f", function, settings).await
}

/// [`node_reading`], where every record goes to each of `targets` (a YAML list's items).
async fn node_reading_to(
    dir: &std::path::Path,
    records: Vec<(String, Vec<u8>)>,
    targets: &str,
    function: std::net::SocketAddr,
    settings: NodeSettings,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let log = LocalLogStore::new(dir);
    log.ensure_stream("in", 1).await.expect("stream");
    let records: Vec<_> = records
        .into_iter()
        .map(|(key, data)| crate::log::AppendRecord {
            partition_key: key,
            shard: crate::log::ShardChoice::ByKey,
            data,
            id: None,
        })
        .collect();
    log.append("in", &records).await.expect("append");
    let ingress = "---\nkind: io.statefun.kinesis.v1/ingress\nspec:\n  id: ns/in\n  startupPosition:\n    type: earliest\n  \
                   streams:\n    - stream: in\n      valueType: io.statefun.types/string\n      targets: [";
    let module = endpoint_at(&function.to_string()) + ingress + targets + "]\n";
    let commits = Arc::new(LocalCommitStore::open(dir).expect("commit store"));
    start_node(dir, &module, Arc::new(FsBlobStore::new(dir)), commits, settings)
}

/// A function endpoint that reads requests and never answers: says when a
/// connection has sent its request, and when the client closed it.
async fn silent_endpoint() -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<&'static str>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (events, heard) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut connection, _)) = listener.accept().await {
            let events = events.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0; 64 * 1024];
                let mut reported = false;
                while let Ok(read) = connection.read(&mut buffer).await {
                    if read == 0 {
                        break;
                    }
                    if !reported {
                        reported = true;
                        let _ = events.send("request");
                    }
                }
                let _ = events.send("closed");
            });
        }
    });
    (addr, heard)
}

/// A stop cancels the partition's in-flight invocations: the old owner's
/// request does not go on while the next owner re-sends the same batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_partition_cancels_its_in_flight_invocations() {
    let (addr, mut heard) = silent_endpoint().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (stop, node) = node_reading(dir.path(), vec![("k".into(), b"hello".to_vec())], addr, settings()).await;

    let first =
        tokio::time::timeout(Duration::from_secs(60), heard.recv()).await.expect("an invocation within a minute");
    assert_eq!(first, Some("request"));
    stop.send_replace(true);
    node.await.expect("the node's task").expect("the node stops cleanly");
    // The call may take 10 minutes: only a cancelled request closes its connection now.
    let next = tokio::time::timeout(Duration::from_secs(30), heard.recv()).await;
    assert_eq!(next.ok().flatten(), Some("closed"), "the in-flight request was cancelled with its partition");
}

/// A function endpoint that holds every request until `release` turns true,
/// then answers it with an empty result; reports each request it holds, with
/// how many messages its batch carries.
async fn held_endpoint(
    release: watch::Receiver<bool>,
) -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<usize>) {
    let (addr, mut requests) = endpoint_holding(release, |_| true).await;
    let (events, heard) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((_, messages)) = requests.recv().await {
            let _ = events.send(messages);
        }
    });
    (addr, heard)
}

/// [`held_endpoint`] that holds only the requests whose path `holds` (answering
/// the others at once), and says each request's path and batch size.
async fn endpoint_holding(
    release: watch::Receiver<bool>,
    holds: fn(&str) -> bool,
) -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<(String, usize)>) {
    use statefun_proto::reqreply::{FromFunction, ToFunction, from_function, to_function};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (events, heard) = tokio::sync::mpsc::unbounded_channel();
    let reply = FromFunction {
        response: Some(from_function::Response::InvocationResult(from_function::InvocationResponse::default())),
    }
    .encode_to_vec();
    tokio::spawn(async move {
        while let Ok((connection, _)) = listener.accept().await {
            let (events, mut release, reply) = (events.clone(), release.clone(), reply.clone());
            tokio::spawn(async move {
                let mut connection = BufReader::new(connection);
                loop {
                    let mut length = None;
                    let mut path = None;
                    loop {
                        let mut line = String::new();
                        match connection.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) if path.is_none() => {
                                path = Some(line.split(' ').nth(1).unwrap_or_default().to_owned());
                            }
                            Ok(_) => {
                                let lower = line.to_ascii_lowercase();
                                if let Some(value) = lower.strip_prefix("content-length:") {
                                    length = value.trim().parse::<usize>().ok();
                                }
                            }
                        }
                    }
                    let mut body = vec![0; length.unwrap_or(0)];
                    if connection.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let messages = match ToFunction::decode(body.as_slice()).ok().and_then(|r| r.request) {
                        Some(to_function::Request::Invocation(batch)) => batch.invocations.len(),
                        None => 0,
                    };
                    let path = path.unwrap_or_default();
                    let held = holds(&path);
                    let _ = events.send((path, messages));
                    if held && release.wait_for(|released| *released).await.is_err() {
                        return;
                    }
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", reply.len());
                    let connection = connection.get_mut();
                    if connection.write_all(head.as_bytes()).await.is_err()
                        || connection.write_all(&reply).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, heard)
}

/// A flood of one function type does not hold up the input of another: beyond
/// its share of the budget, the partition spills the flood's further messages
/// and keeps reading; the spill comes back once the flood drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_one_function_type_spills_and_the_other_types_go_on() {
    let mut settings = settings();
    // What may be counted (half) holds about a dozen of the flood's messages in flight; without
    // spilling, input would pause there with most of ns/f's messages still unread behind them.
    settings.memory_budget = 1 << 20;
    a_flood_spills_and_the_other_types_go_on(settings).await;
}

/// The same while the process's resident memory is near the budget: every
/// partition then keeps to half its own share and takes no input beyond it.
/// The flood's invocations hang and hold that room, so no new message comes in
/// to spill; after a while input flows again (else it stays paused for as long
/// as they hang, with the other type's messages unread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_the_budget_a_flood_whose_invocations_hang_does_not_hold_the_input() {
    let mut settings = settings();
    settings.memory_budget = 2 << 20;
    settings.resident_memory = Some(|| Some(usize::MAX));
    a_flood_spills_and_the_other_types_go_on(settings).await;
}

/// Near the budget, one type's invocations in flight do not hold the input:
/// each holds its future and connection whatever its messages' size, and a
/// thousand of them may run, more than half a partition's share. Here that
/// type's invocations hang, each with a message of a few bytes for an address
/// of its own (no flood of bytes), and the other type's messages must still be
/// read and answered: the hanging type is seen to flood, and its further
/// messages spill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_the_budget_a_type_whose_many_invocations_hang_does_not_hold_the_input() {
    const RECORDS: usize = 64;
    let mut settings = settings();
    // Near the budget the partition keeps to 256 KiB: 16 invocations in flight.
    settings.memory_budget = 2 << 20;
    settings.resident_memory = Some(|| Some(usize::MAX));
    settings.worker.read_batch = 2;
    let (_release, released) = watch::channel(false);
    let (addr, mut heard) = endpoint_holding(released, |path| path == "/busy").await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Every record goes to both types, each to an address of its own: ns/busy's invocations hang, ns/f's are answered.
    let records = (0..RECORDS).map(|n| (format!("k{n}"), b"x".to_vec())).collect();
    let (stop, node) = node_reading_to(dir.path(), records, "ns/busy, ns/f", addr, settings).await;

    until_f_invoked(&mut heard, RECORDS).await;
    stop.send_replace(true);
    node.await.expect("the node's task").expect("the node stops cleanly");
}

/// Waits until `wanted` messages of ns/f were invoked, while the other type's
/// requests are held; says how many of ns/f's and of the other's came.
async fn until_f_invoked(
    heard: &mut tokio::sync::mpsc::UnboundedReceiver<(String, usize)>,
    wanted: usize,
) -> (usize, usize) {
    let (mut answered, mut held) = (0, 0);
    while answered < wanted {
        let next = tokio::time::timeout(Duration::from_secs(30), heard.recv()).await;
        let Ok(Some((path, messages))) = next else {
            panic!("{answered} of {wanted} ns/f messages invoked, {held} of the other type's held: input paused")
        };
        match path.as_str() {
            "/f" => answered += messages,
            _ => held += messages,
        }
    }
    (answered, held)
}

async fn a_flood_spills_and_the_other_types_go_on(mut settings: NodeSettings) {
    const RECORDS: usize = 40;
    let (release, released) = watch::channel(false);
    let (addr, mut heard) = endpoint_holding(released, |path| path == "/flood").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let records = (0..RECORDS).map(|n| (format!("k{n}"), vec![b'x'; 20_000])).collect();
    settings.worker.read_batch = 2;
    // Every record goes to both types, one behind the other: ns/flood's invocations are held, ns/f's answered.
    let (stop, node) = node_reading_to(dir.path(), records, "ns/flood, ns/f", addr, settings).await;

    let (answered, mut flood) = until_f_invoked(&mut heard, RECORDS).await;
    assert!(flood < RECORDS / 2, "the flood's messages in memory: {flood}");
    let parked_dir = dir.path().join("checkpoints").join("parked-00000");
    let segments = || std::fs::read_dir(&parked_dir).map(|d| d.count()).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while segments() == 0 {
        assert!(Instant::now() < deadline, "the flood's spill was not written out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    release.send_replace(true);
    while flood < RECORDS {
        let next = tokio::time::timeout(Duration::from_secs(60), heard.recv()).await;
        let Ok(Some((_, messages))) = next else { panic!("{flood} of {RECORDS} flood messages invoked") };
        flood += messages;
    }
    stop.send_replace(true);
    node.await.expect("the node's task").expect("the node stops cleanly");
    assert_eq!(segments(), 0, "a spill read back is deleted once that is committed");
    assert_eq!((answered, flood), (RECORDS, RECORDS), "each message once");
}

/// Input stops being taken in while the partition holds its memory budget,
/// and is taken again as what it holds drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_budget_pauses_input_and_resumes_as_it_drains() {
    const MESSAGES: usize = 40;
    const MESSAGE_BYTES: usize = 100_000;
    let (release, released) = watch::channel(false);
    let (addr, mut heard) = held_endpoint(released).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // One address per message: each is invoked as soon as it is taken in.
    let records = (0..MESSAGES).map(|n| (format!("k{n}"), vec![b'x'; MESSAGE_BYTES])).collect();
    let budget = 1 << 20;
    let mut settings = settings();
    settings.memory_budget = budget;
    settings.worker.read_batch = 2;
    let (stop, node) = node_reading(dir.path(), records, addr, settings).await;

    // Taken in until the partition holds what may be counted (alone, all of it: half the budget), plus what
    // the read that crossed it brought. A message in flight counts twice: queued, and copied into its request.
    let most = budget / 2 / (2 * MESSAGE_BYTES) + 2 + 1;
    let mut held = 0;
    while held < 3 {
        let next = tokio::time::timeout(Duration::from_secs(60), heard.recv()).await;
        assert!(next.is_ok(), "{held} invoked, expected 3 at least");
        held += 1;
    }
    // Nothing answers: however long it waits, no more is taken in.
    tokio::time::sleep(Duration::from_secs(2)).await;
    while heard.try_recv().is_ok() {
        held += 1;
    }
    assert!(held <= most, "{held} messages of {MESSAGE_BYTES} bytes taken in under a budget of {budget} bytes");

    release.send_replace(true);
    while held < MESSAGES {
        let next = tokio::time::timeout(Duration::from_secs(60), heard.recv()).await;
        assert!(next.is_ok(), "input resumed as the budget drained: {held} of {MESSAGES} invoked");
        held += 1;
    }
    stop.send_replace(true);
    node.await.expect("the node's task").expect("the node stops cleanly");
}

/// One address whose function does not answer holds its cap in memory and
/// parks the rest: the partition goes on taking input for every other address,
/// and the parked messages come back, all of them, once the function answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backed_up_address_parks_what_passes_its_cap_and_the_others_go_on() {
    const HOT: usize = 30;
    const OTHERS: usize = 5;
    let (release, released) = watch::channel(false);
    let (addr, mut heard) = held_endpoint(released).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let hot = (0..HOT).map(|_| ("hot".to_owned(), b"m".to_vec()));
    let others = (0..OTHERS).map(|n| (format!("other-{n}"), b"m".to_vec()));
    let mut settings = settings();
    // Without parking, the hot address's backlog alone would fill the partition and pause its input.
    settings.worker.max_queued = 8;
    settings.worker.bounds.address_max_messages = 2;
    let (stop, node) = node_reading(dir.path(), hot.chain(others).collect(), addr, settings).await;

    // The hot address's first batch and every other address's message, while nothing answers.
    let mut requests = 0;
    let mut messages = 0;
    while requests < 1 + OTHERS {
        let next = tokio::time::timeout(Duration::from_secs(60), heard.recv()).await;
        let Ok(Some(batch)) = next else { panic!("{requests} requests: the other addresses were not invoked") };
        requests += 1;
        messages += batch;
    }
    let parked_dir = dir.path().join("checkpoints").join("parked-00000");
    let segments = || std::fs::read_dir(&parked_dir).map(|d| d.count()).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while segments() == 0 {
        assert!(Instant::now() < deadline, "no parked segment was written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    release.send_replace(true);
    while messages < HOT + OTHERS {
        let next = tokio::time::timeout(Duration::from_secs(60), heard.recv()).await;
        let Ok(Some(batch)) = next else { panic!("{messages} of {} messages invoked", HOT + OTHERS) };
        messages += batch;
    }
    stop.send_replace(true);
    node.await.expect("the node's task").expect("the node stops cleanly");
    assert_eq!(segments(), 0, "segments read back are deleted once that is committed");
    assert_eq!(messages, HOT + OTHERS, "each message once");
}

#[test]
fn a_stream_with_two_roles_is_refused_at_start() {
    let module = |stream: &str| {
        let yaml = format!(
            "kind: io.statefun.kinesis.v1/ingress\nspec:\n  id: ns/in\n  streams:\n    - stream: {stream}\n      valueType: t/v\n      targets: [ns/f]\n"
        );
        ModuleConfig::parse(&yaml, "module.yaml").expect("valid module.yaml")
    };
    assert!(check_stream_roles(&settings(), &module("orders")).is_ok());
    let error =
        check_stream_roles(&settings(), &module("dead-letters")).expect_err("reads its dead letters").to_string();
    assert!(
        error.contains("document 1 (ingress `ns/in`) reads stream `dead-letters`, which is the dead-letter stream"),
        "{error}"
    );
    let error = check_stream_roles(&settings(), &module("exchange")).expect_err("reads the exchange").to_string();
    assert!(error.contains("which is the exchange of this runtime"), "{error}");
    let as_objects = NodeSettings { dead_letters_as_objects: true, ..settings() };
    assert!(
        check_stream_roles(&as_objects, &module("dead-letters")).is_ok(),
        "dead letters go to objects, not that stream"
    );
    let same = NodeSettings { dead_letter_stream: "exchange".into(), ..settings() };
    let error = check_stream_roles(&same, &module("orders")).expect_err("one stream, two roles").to_string();
    assert!(error.contains("the dead-letter stream and the exchange are both `exchange`"), "{error}");
}

/// An event read by one partition for an address of another partition of the
/// same process reaches its function while the reading partition's commit is
/// held: it is forwarded before that commit, not published after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingress_message_for_another_partition_of_this_process_is_taken_before_its_reader_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The stream's one shard is read by partition 0; the key's address is partition 1's.
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| {
            crate::address::partition_of(&crate::address::FunctionType::new("ns", "f").address(k.clone()), 2) == 1
        })
        .expect("a key of partition 1");
    let (_release, release) = watch::channel(true);
    let (function, mut requests) = endpoint_holding(release, |_| false).await;
    let (hold, commits) = HoldsPartition0::new(dir.path(), false);
    let log = LocalLogStore::new(dir.path());
    log.ensure_stream("in", 1).await.expect("stream");
    let ingress = "---\nkind: io.statefun.kinesis.v1/ingress\nspec:\n  id: ns/in\n  startupPosition:\n    type: earliest\n  \
                   streams:\n    - stream: in\n      valueType: io.statefun.types/string\n      targets: [ns/f]\n";
    let module = endpoint_at(&function.to_string()) + ingress;
    let settings = NodeSettings { partitions: 2, ..settings() };
    let (stop, node) =
        start_node(dir.path(), &module, Arc::new(FsBlobStore::new(dir.path())), Arc::new(commits), settings);
    let append = |data: &'static str| crate::log::AppendRecord {
        partition_key: key.clone(),
        shard: crate::log::ShardChoice::ByKey,
        data: data.as_bytes().to_vec(),
        id: None,
    };
    // The first event goes through the exchange once partition 0 commits.
    log.append("in", &[append("first")]).await.expect("append");
    next_request(&mut requests, "the first event never reached its function").await;
    hold.send_replace(true);
    log.append("in", &[append("second")]).await.expect("append");
    let (_, messages) = next_request(
        &mut requests,
        "the second event did not reach its function while partition 0's commits were held",
    )
    .await;
    assert_eq!(messages, 1);

    hold.send_replace(false);
    stop.send_replace(true);
    node.await.expect("the node's task").expect("the node stops cleanly");
}

/// The next request an endpoint heard; panics with `what` when none comes within a minute.
async fn next_request(
    requests: &mut tokio::sync::mpsc::UnboundedReceiver<(String, usize)>,
    what: &str,
) -> (String, usize) {
    let heard = tokio::time::timeout(Duration::from_secs(60), requests.recv()).await;
    heard.unwrap_or_else(|_| panic!("{what}")).expect("the endpoint runs")
}
