//! Durable, sharded, append-only logs: the ingress streams, the exchange
//! between partitions, the egress streams and the dead-letter stream.
//!
//! [`LogStore`] is the seam between the engine and Kinesis (AWS) or local
//! files (the embedded mode). A log knows records, shards and positions; it
//! knows nothing of messages, partitions or epochs.

pub mod kinesis;
pub mod local;

use std::future::Future;
use std::pin::Pin;

/// A boxed future, so the storage traits stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where an appended record goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardChoice {
    /// By the hash of the partition key, as Kinesis does.
    ByKey,
    /// The shard with this index in the stream's shard list (the exchange: shard = partition).
    Index(u32),
    /// A Kinesis explicit hash key (a decimal 128-bit number).
    ExplicitHashKey(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendRecord {
    pub partition_key: String,
    pub shard: ShardChoice,
    pub data: Vec<u8>,
    /// A deterministic id, so consumers can drop a record published twice. The
    /// local log also drops a repeated append of the same records itself.
    pub id: Option<String>,
}

/// Where reading a shard starts or goes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Position {
    /// The oldest record still held.
    Start,
    /// Only records appended from now on.
    Latest,
    /// Records appended at or after this wall-clock time (milliseconds).
    AtTimestamp(i64),
    /// The record after this sequence number.
    After(String),
    /// Past the last record of a closed shard (Kinesis closes a shard when it
    /// is split or merged): nothing more will ever be read from it.
    End,
}

/// One shard of a stream, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    pub id: String,
    /// The shards this one was split or merged from (none for an original shard):
    /// each must be read to its end before this one, so records of one key stay in order.
    pub parents: Vec<String>,
    /// The lowest hash key the shard takes (Kinesis hashes partition keys into 128 bits).
    pub starting_hash_key: u128,
    /// Whether records are still appended to it (a closed shard is read to its end, then never again).
    pub open: bool,
}

/// Shard ids, in listing order.
pub fn shard_ids(shards: &[ShardInfo]) -> Vec<String> {
    shards.iter().map(|s| s.id.clone()).collect()
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    pub shard: String,
    /// Opaque position, increasing within a shard; read again with `after`.
    pub sequence: String,
    pub partition_key: String,
    pub data: Vec<u8>,
    pub id: Option<String>,
    pub appended_at_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("stream `{stream}` does not exist{hint}")]
    NoSuchStream { stream: String, hint: String },
    #[error("stream `{stream}` has no shard `{shard}`")]
    NoSuchShard { stream: String, shard: String },
    #[error("invalid stream name `{0}`: use 1-128 characters of A-Z, a-z, 0-9, `_`, `-`, `.`")]
    InvalidName(String),
    #[error("stream `{stream}`: {detail}")]
    Backend { stream: String, detail: String },
    /// The backend refused the request for good (validation, access, limits):
    /// sending it again cannot succeed.
    #[error("stream `{stream}`: rejected: {detail}")]
    Rejected { stream: String, detail: String },
}

impl LogError {
    /// Whether trying again may succeed (a backend hiccup), as opposed to a
    /// request that is wrong and will stay wrong.
    pub fn is_retryable(&self) -> bool {
        matches!(self, LogError::Backend { .. })
    }
}

pub trait LogStore: Send + Sync {
    /// Creates the stream with `shards` shards when the backend may create
    /// streams and it does not exist; returns the stream's shards (see [`LogStore::shards`]).
    fn ensure_stream<'a>(&'a self, stream: &'a str, shards: u32) -> BoxFuture<'a, Result<Vec<ShardInfo>, LogError>>;

    /// The stream's shards, open and closed (while their records are kept),
    /// sorted by starting hash key, listed afresh.
    fn shards<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<Vec<ShardInfo>, LogError>>;

    /// Appends records; records for the same shard keep their order. Borrowed,
    /// so a caller that retries keeps them without a copy per attempt.
    fn append<'a>(&'a self, stream: &'a str, records: &'a [AppendRecord]) -> BoxFuture<'a, Result<(), LogError>>;

    /// Up to `max` records of a shard from `from`, and the position to read on
    /// from: [`Position::End`] once a closed shard has been read to its end.
    fn read<'a>(
        &'a self,
        stream: &'a str,
        shard: &'a str,
        from: &'a Position,
        max: usize,
    ) -> BoxFuture<'a, Result<(Vec<LogRecord>, Position), LogError>>;
}

/// Kinesis' largest record: data and partition key together.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Kinesis' GetRecords returns at most 10 MiB: the local log reads no more at once either.
pub const MAX_READ_BYTES: usize = 10 * 1024 * 1024;
/// Kinesis' partition keys have 1 to 256 (Unicode) characters.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// Kinesis' limits on one record, applied by every backend so that the local
/// mode meets the same edges as AWS: a partition key of 1 to 256 characters,
/// data and key of at most 1 MiB together, an explicit hash key that is a
/// decimal number below 2^128. Checked where a record is made, so that what
/// is committed for publication can always be published.
pub fn check_record(partition_key: &str, data_len: usize, explicit_hash_key: Option<&str>) -> Result<(), String> {
    let key_chars = partition_key.chars().count();
    if key_chars == 0 || key_chars > MAX_PARTITION_KEY_CHARS {
        return Err(format!("partition key must have 1 to {MAX_PARTITION_KEY_CHARS} characters, has {key_chars}"));
    }
    if data_len + partition_key.len() > MAX_RECORD_BYTES {
        return Err(format!(
            "record of {} bytes (data and partition key) exceeds the 1 MiB limit of a Kinesis record",
            data_len + partition_key.len()
        ));
    }
    if let Some(hash_key) = explicit_hash_key
        && hash_key.parse::<u128>().is_err()
    {
        return Err(format!("explicit hash key `{hash_key}` is not a decimal number from 0 to 2^128-1"));
    }
    Ok(())
}

impl AppendRecord {
    /// [`check_record`] for this record.
    pub fn check(&self) -> Result<(), String> {
        let hash_key = match &self.shard {
            ShardChoice::ExplicitHashKey(key) => Some(key.as_str()),
            ShardChoice::ByKey | ShardChoice::Index(_) => None,
        };
        check_record(&self.partition_key, self.data.len(), hash_key)
    }
}

/// A partition key for any text: the text itself when Kinesis takes it as a
/// key, else a hash of it (records that carry such keys keep the text inside).
pub fn bounded_key(text: &str) -> String {
    let chars = text.chars().count();
    if chars > 0 && chars <= MAX_PARTITION_KEY_CHARS {
        text.to_owned()
    } else {
        format!("xxh3-{:032x}", xxhash_rust::xxh3::xxh3_128(text.as_bytes()))
    }
}

/// Kinesis' stream-name rule, also applied to local streams (their names become file names).
pub fn check_stream_name(stream: &str) -> Result<(), LogError> {
    let ok = !stream.is_empty()
        && stream.len() <= 128
        && stream.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && stream != "."
        && stream != "..";
    if ok { Ok(()) } else { Err(LogError::InvalidName(stream.to_owned())) }
}
