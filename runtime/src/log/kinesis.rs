//! Logs as Kinesis data streams (the AWS mode).
//!
//! Owns the mapping of [`LogStore`] calls onto the Kinesis API, and Kinesis'
//! limits: request sizes, the per-shard read rate, iterators and their expiry,
//! and partial failures of `PutRecords`. It must not know what records mean
//! (messages, epochs, partitions): the committer and the workers decide that.
//!
//! - `shards`: `ListShards` (paginated), sorted by starting hash key, with
//!   each shard's parents and whether it is still open (see "Resharding").
//! - `ensure_stream`: `DescribeStreamSummary`; when the stream is missing and
//!   the store may create streams, `CreateStream` (provisioned, the given shard
//!   count); then waits until the stream is `ACTIVE`. Otherwise
//!   [`LogError::NoSuchStream`], naming the stream, region and endpoint.
//! - `append`: `PutRecords` in requests of at most 500 records and 5 MiB; a
//!   record (data + partition key) may have at most 1 MiB. `ShardChoice::Index(i)`
//!   sends the starting hash key of the i-th shard (modulo the shard count, as
//!   the local log does) as explicit hash key, `ExplicitHashKey` is passed
//!   through (one that is not a decimal 128-bit number falls back to the
//!   partition key, as in the local log), `ByKey` lets Kinesis hash the key.
//! - `read`: `GetRecords` through a shard iterator, cached per (stream, shard)
//!   with the position it continues and reused when the next read asks for
//!   exactly that position; at most 5 `GetRecords` per second and shard (a
//!   faster caller waits); an expired iterator is re-created from the position.
//!   Reading `After(seq)` never returns the record at `seq` (LocalStack's
//!   engine sometimes does; see `is_after`).
//!
//! **Record ids do not travel.** A Kinesis record is the partition key and the
//! user's bytes; there is no attribute for [`AppendRecord::id`], so appending a
//! record again is not a no-op (the local log's de-duplication by id does not
//! exist here) and [`LogRecord::id`] is always `None` on read. Consumers
//! de-duplicate by ids carried inside the data (the exchange's batches do).
//!
//! **Partial failures and order.** `PutRecords` can store some records of a
//! request and refuse others (throttling). A refused record is sent again
//! after a backoff together with every later record of the request *for the
//! same shard*, even those that were stored, so each shard receives the rest
//! of its records in order. The price is duplicates, and the early copy comes
//! first: if `r2` fails and `r3` (same shard) is stored, the shard holds
//! `r1 r3 r2 r3`, so the appended order is a subsequence of the shard, not the
//! shard itself. A `ByKey` record's shard is computed as Kinesis does (the
//! MD5 of the key against the open shards' hash key ranges); where a refused
//! record's shard is still unknown (a stale shard list) every later record is
//! sent again. Only rounds that store nothing count towards giving up.
//! `Index` records (the exchange, dead letters) are never put two to a shard in
//! one request, so they are neither reordered nor duplicated by a partial
//! failure. After [`PARTIAL_FAILURE_ROUNDS`] rounds in a row that store nothing the append fails
//! (retryably); a caller that appends again re-sends what was stored.
//!
//! **Resharding.** A split or merge closes shards and opens children; the
//! closed parents are listed (with the children naming them) while their
//! records are kept. Reading a closed shard past its last record returns
//! [`Position::End`] (Kinesis hands out no next iterator); the caller reads the
//! children only after their parents' ends, which keeps each key's records in
//! order. Routing (`Index`, explicit hash keys) uses the open shards only. The
//! shard list used for routing is cached per stream and listed again when
//! `PutRecords` reports a record stored on a shard other than the one expected.
//!
//! Errors: throttling (`ProvisionedThroughputExceeded`), 5xx, timeouts and
//! connection failures are [`LogError::Backend`] (retryable: the caller backs
//! off); a missing stream is [`LogError::NoSuchStream`], a missing shard
//! [`LogError::NoSuchShard`]; validation errors, denied access and KMS
//! configuration errors are [`LogError::Rejected`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::operation::get_records::GetRecordsError;
use aws_sdk_kinesis::primitives::{Blob, DateTime};
use aws_sdk_kinesis::types::{
    PutRecordsRequestEntry, PutRecordsResultEntry, ShardIteratorType, StreamMode, StreamModeDetails, StreamStatus,
};

use super::{
    AppendRecord, BoxFuture, LogError, LogRecord, LogStore, Position, ShardChoice, ShardInfo, check_stream_name,
};
use crate::aws::{self, FailureKind};
use crate::backoff::Backoff;

/// Records per `PutRecords` request.
pub const MAX_RECORDS_PER_REQUEST: usize = 500;
/// Bytes (data + partition keys) per `PutRecords` request.
pub const MAX_REQUEST_BYTES: usize = 5 * 1024 * 1024;
/// Rounds of re-sending refused records before an append fails.
pub const PARTIAL_FAILURE_ROUNDS: u32 = 10;
/// Kinesis allows 5 `GetRecords` calls per second and shard.
const GET_RECORDS_INTERVAL: Duration = Duration::from_millis(200);
/// Records per `GetRecords` call, at most.
const MAX_GET_RECORDS: usize = 10_000;
/// How long `ensure_stream` waits for a stream to become active.
const STREAM_ACTIVE_TIMEOUT: Duration = Duration::from_secs(300);

pub struct KinesisLogStore {
    client: Client,
    /// Whether `ensure_stream` may create a missing stream.
    create_streams: bool,
    /// Region and endpoint, for error messages.
    target: String,
    /// Each stream's shards sorted by starting hash key (see "Resharding").
    shard_lists: Mutex<HashMap<String, Arc<[ShardRange]>>>,
    /// Read state per (stream, shard).
    cursors: Mutex<HashMap<(String, String), Cursor>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ShardRange {
    id: String,
    starting_hash_key: String,
    start: u128,
    end: u128,
    parents: Vec<String>,
    open: bool,
}

impl ShardRange {
    fn info(&self) -> ShardInfo {
        ShardInfo {
            id: self.id.clone(),
            parents: self.parents.clone(),
            starting_hash_key: self.start,
            ending_hash_key: self.end,
            open: self.open,
        }
    }
}

#[derive(Default)]
struct Cursor {
    /// The iterator the last read returned, and the position it continues.
    next: Option<(Position, String)>,
    /// When the next `GetRecords` call of the shard may go out.
    next_call: Option<Instant>,
    /// The last `GetRecords` answer's `MillisBehindLatest`.
    behind_ms: Option<i64>,
}

/// A record on its way into a `PutRecords` request.
#[derive(Clone, Debug)]
struct Pending {
    entry: PutRecordsRequestEntry,
    /// Data + partition key bytes, as Kinesis counts them.
    size: usize,
    /// The shard it goes to, where known before sending (explicit hash keys).
    shard: Option<String>,
    /// An `Index` record: at most one per shard in a request.
    exclusive: bool,
}

/// What `PutRecords` did with one record.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Stored { shard: Option<String> },
    Refused { shard: Option<String>, code: String, message: String },
}

impl KinesisLogStore {
    /// A store over the Kinesis endpoint of `config`. With `create_streams`,
    /// `ensure_stream` creates missing streams (local stacks, tests); without,
    /// streams must exist (deployments create them with Terraform).
    pub fn new(config: &SdkConfig, create_streams: bool) -> Self {
        let kinesis_config = aws_sdk_kinesis::config::Builder::from(config).timeout_config(aws::storage_timeouts());
        Self {
            client: Client::from_conf(kinesis_config.build()),
            create_streams,
            target: aws::describe_target(config, "KINESIS"),
            shard_lists: Mutex::new(HashMap::new()),
            cursors: Mutex::new(HashMap::new()),
        }
    }

    /// The store with the fault layer of `plan` on its client, if the plan names
    /// the service (tests: see [`crate::faults`]).
    pub fn with_faults(mut self, plan: &std::sync::Arc<crate::faults::FaultPlan>) -> Self {
        let config = crate::faults::kinesis(self.client.config().to_builder(), plan);
        self.client = Client::from_conf(config.build());
        self
    }

    /// Maps an SDK error of `operation` on `stream` onto the module's error.
    fn error<E>(&self, stream: &str, operation: &str, error: &SdkError<E, HttpResponse>) -> LogError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let failure = aws::classify(operation, error);
        match failure.kind {
            FailureKind::Retryable => LogError::Backend { stream: stream.to_owned(), detail: failure.detail },
            FailureKind::NotFound => {
                LogError::NoSuchStream { stream: stream.to_owned(), hint: format!(" ({})", self.target) }
            }
            FailureKind::ConditionFailed | FailureKind::Permanent => LogError::Rejected {
                stream: stream.to_owned(),
                detail: format!("{} ({})", failure.detail, self.target),
            },
        }
    }

    /// Lists the stream's shards afresh and caches the list.
    async fn list_shards(&self, stream: &str) -> Result<Arc<[ShardRange]>, LogError> {
        check_stream_name(stream)?;
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // A follow-up page is asked for by its token alone (Kinesis refuses both).
            let request = match token.take() {
                Some(token) => self.client.list_shards().next_token(token),
                None => self.client.list_shards().stream_name(stream),
            };
            let page = request.send().await.map_err(|e| self.error(stream, "ListShards", &e))?;
            for shard in page.shards() {
                let range = shard.hash_key_range();
                let parsed =
                    range.and_then(|r| Some((r.starting_hash_key().parse().ok()?, r.ending_hash_key().parse().ok()?)));
                let (Some(range), Some((start, end))) = (range, parsed) else {
                    return Err(LogError::Rejected {
                        stream: stream.to_owned(),
                        detail: format!("ListShards: shard {} has no valid hash key range", shard.shard_id()),
                    });
                };
                shards.push(ShardRange {
                    id: shard.shard_id().to_owned(),
                    starting_hash_key: range.starting_hash_key().to_owned(),
                    start,
                    end,
                    parents: [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
                        .into_iter()
                        .flatten()
                        .map(str::to_owned)
                        .collect(),
                    // A closed shard's sequence range has an end.
                    open: shard.sequence_number_range().is_none_or(|r| r.ending_sequence_number().is_none()),
                });
            }
            match page.next_token() {
                Some(next) => token = Some(next.to_owned()),
                None => break,
            }
        }
        shards.sort_by_key(|s| s.start);
        let shards: Arc<[ShardRange]> = shards.into();
        self.shard_lists.lock().unwrap_or_else(|e| e.into_inner()).insert(stream.to_owned(), shards.clone());
        Ok(shards)
    }

    async fn shard_ranges(&self, stream: &str) -> Result<Arc<[ShardRange]>, LogError> {
        let cached = self.shard_lists.lock().unwrap_or_else(|e| e.into_inner()).get(stream).cloned();
        match cached {
            Some(shards) => Ok(shards),
            None => self.list_shards(stream).await,
        }
    }

    /// The stream's status, `None` if it does not exist.
    async fn stream_status(&self, stream: &str) -> Result<Option<StreamStatus>, LogError> {
        match self.client.describe_stream_summary().stream_name(stream).send().await {
            Ok(output) => Ok(output.stream_description_summary().map(|s| s.stream_status().clone())),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(None),
            Err(e) => Err(self.error(stream, "DescribeStreamSummary", &e)),
        }
    }

    async fn create_stream(&self, stream: &str, shards: u32) -> Result<(), LogError> {
        let mode = StreamModeDetails::builder()
            .stream_mode(StreamMode::Provisioned)
            .build()
            .map_err(|e| LogError::Rejected { stream: stream.to_owned(), detail: format!("CreateStream: {e}") })?;
        let created = self
            .client
            .create_stream()
            .stream_name(stream)
            .shard_count(shards.clamp(1, i32::MAX as u32) as i32)
            .stream_mode_details(mode)
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            // Someone else created it meanwhile: the first creator decides the shard count.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => Ok(()),
            Err(e) => Err(self.error(stream, "CreateStream", &e)),
        }
    }

    async fn wait_until_active(&self, stream: &str) -> Result<(), LogError> {
        let deadline = Instant::now() + STREAM_ACTIVE_TIMEOUT;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            let status = self.stream_status(stream).await?;
            match &status {
                // Reads and writes work while a stream is updating.
                Some(StreamStatus::Active | StreamStatus::Updating) => return Ok(()),
                Some(StreamStatus::Deleting) => {
                    return Err(LogError::Backend {
                        stream: stream.to_owned(),
                        detail: "the stream is being deleted".into(),
                    });
                }
                // Creating, or not visible yet right after CreateStream.
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(LogError::Backend {
                    stream: stream.to_owned(),
                    detail: format!("not active {STREAM_ACTIVE_TIMEOUT:?} after creation (status {status:?})"),
                });
            }
            backoff.wait().await;
        }
    }

    /// Checks a record against Kinesis' limits and resolves its hash key.
    fn prepare(&self, stream: &str, record: &AppendRecord, shards: Option<&[ShardRange]>) -> Result<Pending, LogError> {
        let rejected = |detail: String| LogError::Rejected { stream: stream.to_owned(), detail };
        record.check().map_err(rejected)?;
        let size = record.data.len() + record.partition_key.len();
        let shards = shards.unwrap_or_default();
        let (hash_key, shard, exclusive) = match &record.shard {
            // Kinesis places a keyed record by the MD5 of its key: knowing the shard keeps a
            // partial failure's re-send to that shard's later records.
            ShardChoice::ByKey => {
                (None, shard_of_hash_key(shards, key_hash(&record.partition_key)).map(str::to_owned), false)
            }
            ShardChoice::Index(_) | ShardChoice::ExplicitHashKey(_) if shards.is_empty() => {
                return Err(LogError::Backend {
                    stream: stream.to_owned(),
                    detail: "the stream lists no shards".into(),
                });
            }
            ShardChoice::Index(i) => {
                let target = &shards[*i as usize % shards.len()];
                (Some(target.starting_hash_key.clone()), Some(target.id.clone()), true)
            }
            ShardChoice::ExplicitHashKey(key) => match key.parse::<u128>() {
                Ok(value) => (Some(key.clone()), shard_of_hash_key(shards, value).map(str::to_owned), false),
                Err(_) => (None, None, false),
            },
        };
        let entry = PutRecordsRequestEntry::builder()
            .data(Blob::new(record.data.clone()))
            .partition_key(record.partition_key.clone())
            .set_explicit_hash_key(hash_key)
            .build()
            .map_err(|e| rejected(format!("PutRecords entry: {e}")))?;
        Ok(Pending { entry, size, shard, exclusive })
    }

    async fn put_records(&self, stream: &str, records: &[AppendRecord]) -> Result<(), LogError> {
        check_stream_name(stream)?;
        if records.is_empty() {
            return Ok(());
        }
        let open: Option<Vec<ShardRange>> =
            Some(self.shard_ranges(stream).await?.iter().filter(|s| s.open).cloned().collect());
        let mut pending =
            records.iter().map(|r| self.prepare(stream, r, open.as_deref())).collect::<Result<VecDeque<_>, _>>()?;
        let mut failed_rounds = 0;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        while !pending.is_empty() {
            let count =
                request_len(pending.iter().map(|p| (p.size, p.exclusive.then_some(p.shard.as_deref()).flatten())));
            let request: Vec<Pending> = pending.drain(..count).collect();
            let output = self
                .client
                .put_records()
                .stream_name(stream)
                .set_records(Some(request.iter().map(|p| p.entry.clone()).collect()))
                .send()
                .await
                .map_err(|e| self.error(stream, "PutRecords", &e))?;
            let outcomes = outcomes(&request, output.records());
            if stale_routing(&request, &outcomes) {
                // The stream was resharded since its shards were listed.
                self.shard_lists.lock().unwrap_or_else(|e| e.into_inner()).remove(stream);
            }
            if outcomes.iter().all(|o| matches!(o, Outcome::Stored { .. })) {
                continue;
            }
            if let Some(Outcome::Refused { code, message, .. }) = outcomes.iter().find(
                |o| matches!(o, Outcome::Refused { code, .. } if aws::kind_of(Some(code), 400) != FailureKind::Retryable),
            ) {
                return Err(LogError::Rejected {
                    stream: stream.to_owned(),
                    detail: format!("PutRecords refused a record: {code}: {message} ({})", self.target),
                });
            }
            // Only rounds that store nothing count towards giving up.
            if outcomes.iter().any(|o| matches!(o, Outcome::Stored { .. })) {
                failed_rounds = 0;
            } else {
                failed_rounds += 1;
            }
            let resend = records_to_resend(&outcomes);
            if failed_rounds >= PARTIAL_FAILURE_ROUNDS {
                let reason = outcomes.iter().find_map(|o| match o {
                    Outcome::Refused { code, message, .. } => Some(format!("{code}: {message}")),
                    Outcome::Stored { .. } => None,
                });
                return Err(LogError::Backend {
                    stream: stream.to_owned(),
                    detail: format!(
                        "PutRecords still refused {} of {} records after {failed_rounds} rounds ({})",
                        resend.len(),
                        request.len(),
                        reason.unwrap_or_default()
                    ),
                });
            }
            tracing::debug!(stream, resend = resend.len(), "PutRecords refused some records; sending them again");
            let mut request: Vec<Option<Pending>> = request.into_iter().map(Some).collect();
            for index in resend.into_iter().rev() {
                if let Some(record) = request[index].take() {
                    pending.push_front(record);
                }
            }
            // A little jitter, so workers refused together do not come back together.
            tokio::time::sleep(Duration::from_millis(rand::random_range(0..50))).await;
            backoff.wait().await;
        }
        Ok(())
    }

    /// Waits for the shard's next `GetRecords` slot, reserving it.
    async fn pace(&self, key: &(String, String)) {
        let wait = {
            let mut cursors = self.cursors.lock().unwrap_or_else(|e| e.into_inner());
            let cursor = cursors.entry(key.clone()).or_default();
            let now = Instant::now();
            let slot = cursor.next_call.map_or(now, |at| at.max(now));
            cursor.next_call = Some(slot + GET_RECORDS_INTERVAL);
            slot - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// The cached iterator, if it continues exactly `from`.
    fn cached_iterator(&self, key: &(String, String), from: &Position) -> Option<String> {
        let cursors = self.cursors.lock().unwrap_or_else(|e| e.into_inner());
        match cursors.get(key).and_then(|c| c.next.as_ref()) {
            Some((position, iterator)) if position == from => Some(iterator.clone()),
            _ => None,
        }
    }

    fn remember(&self, key: &(String, String), next: Option<(Position, String)>) {
        self.cursors.lock().unwrap_or_else(|e| e.into_inner()).entry(key.clone()).or_default().next = next;
    }

    async fn shard_iterator(&self, stream: &str, shard: &str, from: &Position) -> Result<String, LogError> {
        let request = self.client.get_shard_iterator().stream_name(stream).shard_id(shard);
        let request = match from {
            Position::Start => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            Position::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
            Position::AtTimestamp(ms) => {
                request.shard_iterator_type(ShardIteratorType::AtTimestamp).timestamp(DateTime::from_millis(*ms))
            }
            Position::After(sequence) => {
                request.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).starting_sequence_number(sequence)
            }
            Position::End => {
                let detail = format!("shard {shard} was read to its end; it has no iterator");
                return Err(LogError::Rejected { stream: stream.to_owned(), detail });
            }
        };
        match request.send().await {
            Ok(output) => output.shard_iterator().map(str::to_owned).ok_or_else(|| LogError::Backend {
                stream: stream.to_owned(),
                detail: format!("GetShardIterator returned no iterator for shard {shard}"),
            }),
            // The same error names a missing stream and a missing shard: ask which.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
                match self.list_shards(stream).await {
                    Ok(_) => Err(LogError::NoSuchShard { stream: stream.to_owned(), shard: shard.to_owned() }),
                    Err(missing) => Err(missing),
                }
            }
            Err(e) => Err(self.error(stream, "GetShardIterator", &e)),
        }
    }

    async fn read_shard(
        &self,
        stream: &str,
        shard: &str,
        from: &Position,
        max: usize,
    ) -> Result<(Vec<LogRecord>, Position), LogError> {
        check_stream_name(stream)?;
        if *from == Position::End {
            return Ok((Vec::new(), Position::End));
        }
        let key = (stream.to_owned(), shard.to_owned());
        let limit = max.clamp(1, MAX_GET_RECORDS) as i32;
        let cached = self.cached_iterator(&key, from);
        let from_cache = cached.is_some();
        let iterator = match cached {
            Some(iterator) => iterator,
            None => self.shard_iterator(stream, shard, from).await?,
        };
        self.pace(&key).await;
        let mut result = self.client.get_records().shard_iterator(iterator).limit(limit).send().await;
        let expired = |r: &Result<_, SdkError<GetRecordsError, HttpResponse>>| matches!(r, Err(e) if e.as_service_error().is_some_and(GetRecordsError::is_expired_iterator_exception));
        if from_cache && expired(&result) {
            // Iterators live 5 minutes: a reader that paused longer starts again from its position.
            self.remember(&key, None);
            let fresh = self.shard_iterator(stream, shard, from).await?;
            self.pace(&key).await;
            result = self.client.get_records().shard_iterator(fresh).limit(limit).send().await;
        }
        let output = match result {
            Ok(output) => output,
            Err(e) => {
                // A throttled iterator stays valid; any other failure starts afresh next time.
                if !e.as_service_error().is_some_and(GetRecordsError::is_provisioned_throughput_exceeded_exception) {
                    self.remember(&key, None);
                }
                if e.as_service_error().is_some_and(GetRecordsError::is_expired_iterator_exception) {
                    let detail = "GetRecords: the iterator expired; the next read starts afresh".into();
                    return Err(LogError::Backend { stream: stream.to_owned(), detail });
                }
                return Err(self.error(stream, "GetRecords", &e));
            }
        };
        let records: Vec<LogRecord> = output
            .records()
            .iter()
            .filter(|r| match from {
                Position::After(sequence) => is_after(r.sequence_number(), sequence),
                _ => true,
            })
            .map(|r| LogRecord {
                shard: shard.to_owned(),
                sequence: r.sequence_number().to_owned(),
                partition_key: r.partition_key().unwrap_or_default().to_owned(),
                data: r.data().as_ref().to_vec(),
                id: None,
                appended_at_ms: r.approximate_arrival_timestamp().and_then(|t| t.to_millis().ok()).unwrap_or(0),
            })
            .collect();
        // With no records the position stays as it was (Latest included), so the
        // next read asks for it again and the cached iterator goes on from there.
        // No next iterator: the shard is closed and these were its last records.
        let next = match (output.next_shard_iterator(), records.last()) {
            (None, _) => Position::End,
            (Some(_), Some(last)) => Position::After(last.sequence.clone()),
            (Some(_), None) => from.clone(),
        };
        self.remember(&key, output.next_shard_iterator().map(|i| (next.clone(), i.to_owned())));
        if let Some(behind) = output.millis_behind_latest() {
            self.cursors.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default().behind_ms = Some(behind);
        }
        Ok((records, next))
    }
}

/// How many records from the front of the queue go into the next request:
/// within the count and byte limits, and at most one exclusive record per shard.
/// Each item is (size, shard of an exclusive record). Always at least one.
fn request_len<'a>(records: impl Iterator<Item = (usize, Option<&'a str>)>) -> usize {
    let (mut count, mut bytes) = (0, 0);
    let mut exclusive_shards = HashSet::new();
    for (size, exclusive_shard) in records {
        let full = count == MAX_RECORDS_PER_REQUEST || (count > 0 && bytes + size > MAX_REQUEST_BYTES);
        if full || exclusive_shard.is_some_and(|s| !exclusive_shards.insert(s)) {
            break;
        }
        count += 1;
        bytes += size;
    }
    count.max(1)
}

/// Pairs the records of a request with Kinesis' answers; a missing answer counts as refused.
fn outcomes(request: &[Pending], answers: &[PutRecordsResultEntry]) -> Vec<Outcome> {
    request
        .iter()
        .enumerate()
        .map(|(index, pending)| match answers.get(index) {
            Some(answer) => match answer.error_code() {
                None => Outcome::Stored { shard: answer.shard_id().map(str::to_owned) },
                Some(code) => Outcome::Refused {
                    shard: pending.shard.clone(),
                    code: code.to_owned(),
                    message: answer.error_message().unwrap_or_default().to_owned(),
                },
            },
            None => Outcome::Refused {
                shard: pending.shard.clone(),
                code: "InternalFailure".into(),
                message: "no result entry for the record".into(),
            },
        })
        .collect()
}

/// Whether Kinesis stored a record on another shard than routing expected.
fn stale_routing(request: &[Pending], outcomes: &[Outcome]) -> bool {
    request.iter().zip(outcomes).any(|(pending, outcome)| match (&pending.shard, outcome) {
        (Some(expected), Outcome::Stored { shard: Some(actual) }) => expected != actual,
        _ => false,
    })
}

/// Which records of a request to send again, in order: every refused record,
/// and every record after a refused one of the same shard. Where a refused
/// record's shard is unknown, every later record.
fn records_to_resend(outcomes: &[Outcome]) -> Vec<usize> {
    let mut failed_shards: HashSet<&str> = HashSet::new();
    let mut failed_unknown = false;
    let mut resend = Vec::new();
    for (index, outcome) in outcomes.iter().enumerate() {
        match outcome {
            Outcome::Refused { shard, .. } => {
                resend.push(index);
                match shard {
                    Some(shard) => {
                        failed_shards.insert(shard);
                    }
                    None => failed_unknown = true,
                }
            }
            Outcome::Stored { shard: Some(shard) } => {
                if failed_unknown || failed_shards.contains(shard.as_str()) {
                    resend.push(index);
                }
            }
            Outcome::Stored { shard: None } => {
                // Stored on an unknown shard: sent again after any failure, and then it
                // may sit on the shard of any later record.
                if failed_unknown || !failed_shards.is_empty() {
                    resend.push(index);
                    failed_unknown = true;
                }
            }
        }
    }
    resend
}

/// Whether sequence number `candidate` comes after `sequence`. Kinesis never
/// returns a record at or before an `AFTER_SEQUENCE_NUMBER` position, but
/// LocalStack's engine sometimes returns the record at it (localstack#10117,
/// kinesis-mock#1187), which would deliver a record twice on resumption.
/// Sequence numbers are decimal strings of up to 56 digits (beyond `u128`);
/// what does not look like one is kept.
fn is_after(candidate: &str, sequence: &str) -> bool {
    let decimal = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !decimal(candidate) || !decimal(sequence) {
        return true;
    }
    let (a, b) = (candidate.trim_start_matches('0'), sequence.trim_start_matches('0'));
    (a.len(), a) > (b.len(), b)
}

/// The 128-bit hash key Kinesis derives from a partition key: its MD5, big-endian.
pub fn key_hash(partition_key: &str) -> u128 {
    use md5::{Digest, Md5};
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// The shard whose hash key range holds `value`.
fn shard_of_hash_key(shards: &[ShardRange], value: u128) -> Option<&str> {
    shards.iter().find(|s| s.start <= value && value <= s.end).map(|s| s.id.as_str())
}

impl LogStore for KinesisLogStore {
    fn ensure_stream<'a>(&'a self, stream: &'a str, shards: u32) -> BoxFuture<'a, Result<Vec<ShardInfo>, LogError>> {
        Box::pin(async move {
            check_stream_name(stream)?;
            if self.stream_status(stream).await?.is_none() {
                if !self.create_streams {
                    return Err(LogError::NoSuchStream {
                        stream: stream.to_owned(),
                        hint: format!(" ({}), and this runtime does not create streams", self.target),
                    });
                }
                self.create_stream(stream, shards).await?;
            }
            self.wait_until_active(stream).await?;
            Ok(self.list_shards(stream).await?.iter().map(ShardRange::info).collect())
        })
    }

    fn shards<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<Vec<ShardInfo>, LogError>> {
        Box::pin(async move { Ok(self.list_shards(stream).await?.iter().map(ShardRange::info).collect()) })
    }

    fn append<'a>(&'a self, stream: &'a str, records: &'a [AppendRecord]) -> BoxFuture<'a, Result<(), LogError>> {
        Box::pin(self.put_records(stream, records))
    }

    fn read<'a>(
        &'a self,
        stream: &'a str,
        shard: &'a str,
        from: &'a Position,
        max: usize,
    ) -> BoxFuture<'a, Result<(Vec<LogRecord>, Position), LogError>> {
        Box::pin(self.read_shard(stream, shard, from, max))
    }

    fn millis_behind_latest(&self, stream: &str, shard: &str) -> Option<i64> {
        let cursors = self.cursors.lock().unwrap_or_else(|e| e.into_inner());
        cursors.get(&(stream.to_owned(), shard.to_owned())).and_then(|cursor| cursor.behind_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(shard: &str) -> Outcome {
        Outcome::Stored { shard: Some(shard.into()) }
    }

    fn refused(shard: Option<&str>) -> Outcome {
        Outcome::Refused {
            shard: shard.map(Into::into),
            code: "ProvisionedThroughputExceededException".into(),
            message: String::new(),
        }
    }

    #[test]
    fn a_refused_record_is_resent_with_every_later_record_of_its_shard() {
        let outcomes =
            [stored("a"), refused(Some("a")), stored("b"), stored("a"), refused(Some("b")), stored("b"), stored("c")];
        assert_eq!(records_to_resend(&outcomes), vec![1, 3, 4, 5]);
    }

    #[test]
    fn a_refused_record_of_unknown_shard_resends_everything_after_it() {
        let outcomes = [stored("a"), refused(None), stored("b"), stored("a")];
        assert_eq!(records_to_resend(&outcomes), vec![1, 2, 3]);
    }

    #[test]
    fn nothing_is_resent_when_everything_was_stored() {
        assert!(records_to_resend(&[stored("a"), stored("b")]).is_empty());
        assert!(records_to_resend(&[]).is_empty());
    }

    #[test]
    fn requests_stay_within_count_and_byte_limits() {
        let small = vec![(10, None); 1200];
        assert_eq!(request_len(small.iter().copied()), MAX_RECORDS_PER_REQUEST);
        let big = [(crate::log::MAX_RECORD_BYTES, None); 7];
        assert_eq!(request_len(big.iter().copied()), 5);
        let mut mixed = vec![(crate::log::MAX_RECORD_BYTES, None); 4];
        mixed.extend([(10, None), (crate::log::MAX_RECORD_BYTES, None)]);
        assert_eq!(request_len(mixed.iter().copied()), 5);
        assert_eq!(request_len(std::iter::empty()), 1);
    }

    #[test]
    fn exclusive_records_go_one_per_shard_per_request() {
        let records = [(1, Some("s0")), (1, Some("s1")), (1, None), (1, Some("s0")), (1, Some("s2"))];
        assert_eq!(request_len(records.iter().copied()), 3);
    }

    #[test]
    fn only_records_after_the_position_count_as_after_it() {
        let seq = "49680426525011126661667649147401341120005050449174462466";
        assert!(!is_after(seq, seq));
        assert!(is_after("49680426525011126661667649147402550045824665078349168642", seq));
        assert!(!is_after("4968042652501112666166764914740134112000505044917446246", seq));
        assert!(is_after("10", "9"));
        assert!(!is_after("009", "9"));
        assert!(is_after("not-a-number", seq));
    }

    #[test]
    fn partition_keys_hash_as_kinesis_does() {
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661.
        assert_eq!(key_hash("a"), 0x0cc175b9c0f1b6a831c399e269772661);
    }

    #[test]
    fn hash_keys_find_the_shard_whose_range_holds_them() {
        let shards = [
            ShardRange {
                id: "s0".into(),
                starting_hash_key: "0".into(),
                start: 0,
                end: 99,
                parents: vec![],
                open: true,
            },
            ShardRange {
                id: "s1".into(),
                starting_hash_key: "100".into(),
                start: 100,
                end: u128::MAX,
                parents: vec![],
                open: true,
            },
        ];
        assert_eq!(shard_of_hash_key(&shards, 0), Some("s0"));
        assert_eq!(shard_of_hash_key(&shards, 100), Some("s1"));
        assert_eq!(shard_of_hash_key(&shards, u128::MAX), Some("s1"));
        assert_eq!(shard_of_hash_key(&shards[..1], 100), None);
    }
}
