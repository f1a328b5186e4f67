//! Durable, sharded, append-only logs: the ingress streams, the exchange
//! between partitions, the egress streams and the dead-letter stream.
//!
//! [`LogStore`] is the seam between the engine and Kinesis (AWS) or local
//! files (the embedded mode). A log knows records, shards and positions; it
//! knows nothing of messages, partitions or epochs.

pub mod kinesis;
pub mod kpl;
pub mod local;
mod wake;

use statefun_engine::limits::{self, InvalidStreamName};

pub use crate::BoxFuture;

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
    /// The highest hash key the shard takes.
    pub ending_hash_key: u128,
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
    #[error(transparent)]
    InvalidName(#[from] InvalidStreamName),
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

    /// How far behind the shard's newest record its last read left the
    /// reader, where the backend says (Kinesis' `MillisBehindLatest`); `None`
    /// where it does not (the reader estimates it from arrival times).
    fn millis_behind_latest(&self, _stream: &str, _shard: &str) -> Option<i64> {
        None
    }

    /// A signal that changes whenever this store appends to `stream`, so a
    /// reader in the same process that found nothing is woken at once instead
    /// of sleeping its poll interval; `None` where that cannot be known (the
    /// reader polls).
    fn appends(&self, _stream: &str) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

pub use statefun_engine::limits::{MAX_PARTITION_KEY_CHARS, MAX_RECORD_BYTES, bounded_key, check_record};

/// Kinesis' GetRecords returns at most 10 MiB: the local log reads no more at once either.
pub const MAX_READ_BYTES: usize = 10 * 1024 * 1024;

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

/// Kinesis' stream-name rule, also applied to local streams (their names become file names).
pub fn check_stream_name(stream: &str) -> Result<(), LogError> {
    Ok(limits::check_stream_name(stream)?)
}
