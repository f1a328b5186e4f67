//! The embedded log: one SQLite database per stream under `<data dir>/streams/`.
//!
//! SQLite in WAL mode lets the worker, `send` and `tail` (separate processes)
//! use a stream at once, and survives a killed process.
//!
//! Records are kept in chunks, one row per shard and append (cut at
//! [`CHUNK_RECORDS`] records or [`CHUNK_BYTES`] bytes): a row per record made
//! the B-tree inserts the costliest part of publishing an epoch. A record's
//! sequence number is `<chunk>.<index>`, chunks numbered by SQLite row ids,
//! so sequence numbers increase within a shard.
//!
//! An append whose records all carry ids is remembered by its first id, last
//! id and length, and appending the same again is a no-op: re-publishing an
//! epoch's outbox after a crash appends the very same records, so it adds
//! nothing here (Kinesis cannot offer that; consumers de-duplicate by id there).
//!
//! Files of the earlier layout (a row per record) are converted when first
//! opened; their sequence numbers, plain row ids, still name the same records.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    AppendRecord, BoxFuture, LogError, LogRecord, LogStore, MAX_READ_BYTES, Position, ShardChoice, ShardInfo,
    check_stream_name,
};
use crate::address::shard_of_key;

/// The most records in one chunk: a read of a few hundred records skips through at most one chunk's head.
const CHUNK_RECORDS: usize = 1000;
/// A chunk is cut once it holds this many bytes (a record longer than that gets a chunk of its own).
const CHUNK_BYTES: usize = 1 << 20;

pub struct LocalLogStore {
    inner: Arc<Streams>,
}

/// The open streams of one data directory.
struct Streams {
    dir: PathBuf,
    open: Mutex<HashMap<String, Arc<Mutex<Stream>>>>,
    /// The shard counts of the open streams, readable while a stream is busy.
    shard_counts: Mutex<HashMap<String, u32>>,
    /// Appends to the streams read here, by this process or another (see
    /// [`LogStore::appends`] and [`super::wake`]).
    appended: Arc<super::wake::Signals>,
    /// Whether the streams' directory is watched for other processes' appends.
    watching: std::sync::atomic::AtomicBool,
}

struct Stream {
    connection: Connection,
    shards: u32,
    /// The file whose closing after a write announces an append (see [`super::wake`]).
    appended_path: PathBuf,
}

impl LocalLogStore {
    pub fn new(data_dir: &Path) -> Self {
        let dir = data_dir.join("streams");
        Self {
            inner: Arc::new(Streams {
                dir,
                open: Mutex::new(HashMap::new()),
                shard_counts: Mutex::new(HashMap::new()),
                appended: Arc::default(),
                watching: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Runs `work` on the stream's connection on a blocking thread (opening,
    /// and with `create`, creating the stream first).
    fn run<T: Send + 'static>(
        &self,
        stream: &str,
        create: Option<u32>,
        work: impl FnOnce(&mut Stream) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, LogError>> {
        let checked = check_stream_name(stream);
        let inner = self.inner.clone();
        let name = stream.to_owned();
        Box::pin(async move {
            checked?;
            let task_name = name.clone();
            let joined = tokio::task::spawn_blocking(move || {
                let open = inner.open(&task_name, create)?;
                let mut guard = open.lock().unwrap_or_else(|e| e.into_inner());
                work(&mut guard).map_err(|e| LogError::Backend { stream: task_name, detail: e.to_string() })
            })
            .await;
            joined.unwrap_or_else(|e| {
                Err(LogError::Backend { stream: name, detail: format!("storage task failed: {e}") })
            })
        })
    }
}

impl Streams {
    fn shard_count(&self, stream: &str) -> Option<u32> {
        self.shard_counts.lock().unwrap_or_else(|e| e.into_inner()).get(stream).copied()
    }

    fn open(&self, stream: &str, create: Option<u32>) -> Result<Arc<Mutex<Stream>>, LogError> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = open.get(stream) {
            return Ok(existing.clone());
        }
        let path = self.dir.join(format!("{stream}.sqlite"));
        if create.is_none() && !path.exists() {
            return Err(LogError::NoSuchStream {
                stream: stream.to_owned(),
                hint: format!(" (no file {})", path.display()),
            });
        }
        let backend = |e: rusqlite::Error| LogError::Backend { stream: stream.to_owned(), detail: e.to_string() };
        std::fs::create_dir_all(&self.dir).map_err(|e| LogError::Backend {
            stream: stream.to_owned(),
            detail: format!("{}: {e}", self.dir.display()),
        })?;
        let mut connection = Connection::open(&path).map_err(backend)?;
        connection.busy_timeout(std::time::Duration::from_secs(10)).map_err(backend)?;
        keep_plans(&connection).map_err(backend)?;
        connection
            .execute_batch(
                "PRAGMA journal_mode=WAL;
                 PRAGMA synchronous=FULL;
                 CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 0), shards INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS chunks (
                     seq INTEGER PRIMARY KEY AUTOINCREMENT,
                     shard INTEGER NOT NULL,
                     count INTEGER NOT NULL,
                     body BLOB NOT NULL,
                     ts INTEGER NOT NULL);
                 CREATE INDEX IF NOT EXISTS chunks_by_shard ON chunks (shard, seq);
                 CREATE TABLE IF NOT EXISTS appends (key TEXT PRIMARY KEY) WITHOUT ROWID;",
            )
            .map_err(backend)?;
        convert_row_per_record(&mut connection).map_err(backend)?;
        if let Some(shards) = create {
            // The first creator's shard count wins, even against another process creating it at once.
            let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(backend)?;
            tx.execute("INSERT OR IGNORE INTO meta (id, shards) VALUES (0, ?1)", [shards.max(1)]).map_err(backend)?;
            tx.commit().map_err(backend)?;
        }
        let shards: Option<u32> = connection
            .query_row("SELECT shards FROM meta WHERE id = 0", [], |r| r.get(0))
            .optional()
            .map_err(backend)?;
        let Some(shards) = shards.filter(|s| *s >= 1) else {
            return Err(LogError::NoSuchStream {
                stream: stream.to_owned(),
                hint: " (file has no shard count)".into(),
            });
        };
        let appended_path = super::wake::announce_path(&self.dir, stream);
        let stream_handle = Arc::new(Mutex::new(Stream { connection, shards, appended_path }));
        open.insert(stream.to_owned(), stream_handle.clone());
        self.shard_counts.lock().unwrap_or_else(|e| e.into_inner()).insert(stream.to_owned(), shards);
        Ok(stream_handle)
    }
}

/// Moves the records of the earlier layout (table `records`, a row per record)
/// into chunks of one record, each chunk numbered by its record's row id, so
/// a committed position (a row id) reads on from the same record.
fn convert_row_per_record(connection: &mut Connection) -> Result<(), rusqlite::Error> {
    let has_rows_table = |c: &Connection| {
        c.query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'records'", [], |_| Ok(()))
            .optional()
            .map(|found| found.is_some())
    };
    if !has_rows_table(connection)? {
        return Ok(());
    }
    let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // Another process may have converted it meanwhile.
    if has_rows_table(&tx)? {
        {
            let mut rows = tx.prepare("SELECT seq, shard, id, key, data, ts FROM records ORDER BY seq")?;
            let mut insert =
                tx.prepare("INSERT INTO chunks (seq, shard, count, body, ts) VALUES (?1, ?2, 1, ?3, ?4)")?;
            let mut cursor = rows.query([])?;
            while let Some(row) = cursor.next()? {
                let (id, key, data): (Option<String>, String, Vec<u8>) = (row.get(2)?, row.get(3)?, row.get(4)?);
                let mut body = Vec::new();
                encode_record(&mut body, &key, &data, id.as_deref());
                insert.execute(params![row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, body, row.get::<_, i64>(5)?])?;
            }
        }
        tx.execute_batch("DROP TABLE records;")?;
    }
    tx.commit()
}

/// A record in a chunk's body: the key, the data and the id (absent: 0, else
/// its length plus one), each length a varint.
fn encode_record(body: &mut Vec<u8>, key: &str, data: &[u8], id: Option<&str>) {
    prost::encoding::encode_varint(key.len() as u64, body);
    body.extend_from_slice(key.as_bytes());
    prost::encoding::encode_varint(data.len() as u64, body);
    body.extend_from_slice(data);
    match id {
        Some(id) => {
            prost::encoding::encode_varint(id.len() as u64 + 1, body);
            body.extend_from_slice(id.as_bytes());
        }
        None => prost::encoding::encode_varint(0, body),
    }
}

/// One record of a chunk's body, and the rest of the body.
struct StoredRecord<'a> {
    key: &'a [u8],
    data: &'a [u8],
    id: Option<&'a [u8]>,
}

fn decode_record<'a>(body: &mut &'a [u8]) -> Result<StoredRecord<'a>, String> {
    fn take<'a>(body: &mut &'a [u8], len: u64) -> Result<&'a [u8], String> {
        let len = usize::try_from(len).map_err(|_| format!("length {len} is out of range"))?;
        if len > body.len() {
            return Err(format!("a field of {len} bytes runs past the end ({} left)", body.len()));
        }
        let (field, rest) = body.split_at(len);
        *body = rest;
        Ok(field)
    }
    let varint = |body: &mut &'a [u8]| prost::encoding::decode_varint(body).map_err(|e| e.to_string());
    let key_len = varint(body)?;
    let key = take(body, key_len)?;
    let data_len = varint(body)?;
    let data = take(body, data_len)?;
    let id = match varint(body)? {
        0 => None,
        n => Some(take(body, n - 1)?),
    };
    Ok(StoredRecord { key, data, id })
}

/// A sequence number: `<chunk>.<index>`, or a plain row id of the earlier layout (index 0).
fn parse_sequence(sequence: &str) -> Option<(i64, u32)> {
    match sequence.split_once('.') {
        Some((chunk, index)) => Some((chunk.parse().ok()?, index.parse().ok()?)),
        None => Some((sequence.parse().ok()?, 0)),
    }
}

fn sequence_of(chunk: i64, index: u32) -> String {
    format!("{chunk}.{index}")
}

/// What an append is remembered by, when all its records carry ids.
fn append_key(records: &[AppendRecord]) -> Option<String> {
    let (first, last) = (records.first()?, records.last()?);
    if records.iter().any(|r| r.id.is_none()) {
        return None;
    }
    Some(format!("{}\n{}\n{}", first.id.as_deref()?, last.id.as_deref()?, records.len()))
}

/// A chunk ready to be written.
struct Chunk {
    shard: u32,
    count: u32,
    body: Vec<u8>,
}

/// Cuts an append into chunks: each shard's records in order, shards in index order.
fn chunks_of(records: &[AppendRecord], shards: u32) -> Vec<Chunk> {
    let mut open: BTreeMap<u32, Chunk> = BTreeMap::new();
    let mut chunks = Vec::new();
    for record in records {
        let shard = match &record.shard {
            ShardChoice::ByKey => shard_of_key(&record.partition_key, shards),
            ShardChoice::Index(i) => *i % shards,
            ShardChoice::ExplicitHashKey(k) => {
                shard_of_hash_key(k, shards).unwrap_or_else(|| shard_of_key(&record.partition_key, shards))
            }
        };
        let chunk = open.entry(shard).or_insert_with(|| Chunk { shard, count: 0, body: Vec::new() });
        encode_record(&mut chunk.body, &record.partition_key, &record.data, record.id.as_deref());
        chunk.count += 1;
        if chunk.count as usize == CHUNK_RECORDS || chunk.body.len() >= CHUNK_BYTES {
            chunks.push(std::mem::replace(chunk, Chunk { shard, count: 0, body: Vec::new() }));
        }
    }
    chunks.extend(open.into_values().filter(|c| c.count > 0));
    // Stable: a shard's full chunks come before its last one.
    chunks.sort_by_key(|c| c.shard);
    chunks
}

pub fn shard_id(index: u32) -> String {
    format!("shard-{index:04}")
}

fn shard_index(stream: &str, shard: &str, shards: u32) -> Result<u32, LogError> {
    shard
        .strip_prefix("shard-")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| *n < shards)
        .ok_or_else(|| LogError::NoSuchShard { stream: stream.to_owned(), shard: shard.to_owned() })
}

/// The width of each shard's hash key range: local streams split the 128-bit
/// key space into equal ranges, as Kinesis does for a new stream, and never reshard.
fn hash_range_width(shards: u32) -> u128 {
    if shards <= 1 { u128::MAX } else { u128::MAX / u128::from(shards) + 1 }
}

/// Maps a 128-bit explicit hash key onto the shards' equal ranges.
fn shard_of_hash_key(key: &str, shards: u32) -> Option<u32> {
    let value: u128 = key.parse().ok()?;
    if shards <= 1 {
        return Some(0);
    }
    Some(((value / hash_range_width(shards)) as u32).min(shards - 1))
}

fn shard_infos(shards: u32) -> Vec<ShardInfo> {
    (0..shards)
        .map(|index| ShardInfo {
            id: shard_id(index),
            parents: Vec::new(),
            starting_hash_key: if index == 0 { 0 } else { hash_range_width(shards) * u128::from(index) },
            ending_hash_key: match index + 1 == shards {
                true => u128::MAX,
                false => hash_range_width(shards) * u128::from(index + 1) - 1,
            },
            open: true,
        })
        .collect()
}

impl LogStore for LocalLogStore {
    fn ensure_stream<'a>(&'a self, stream: &'a str, shards: u32) -> BoxFuture<'a, Result<Vec<ShardInfo>, LogError>> {
        let work = self.run(stream, Some(shards), |s| Ok(s.shards));
        Box::pin(async move { Ok(shard_infos(work.await?)) })
    }

    fn shards<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<Vec<ShardInfo>, LogError>> {
        let work = self.run(stream, None, |s| Ok(s.shards));
        Box::pin(async move { Ok(shard_infos(work.await?)) })
    }

    fn append<'a>(&'a self, stream: &'a str, records: &'a [AppendRecord]) -> BoxFuture<'a, Result<(), LogError>> {
        // Kinesis refuses such a request whole (a validation error): so does the local log.
        if let Some((index, problem)) = records.iter().enumerate().find_map(|(i, r)| r.check().err().map(|e| (i, e))) {
            let rejected = LogError::Rejected {
                stream: stream.to_owned(),
                detail: format!("record {index} of the append: {problem}"),
            };
            return Box::pin(async move { Err(rejected) });
        }
        let name = stream.to_owned();
        let key = append_key(records);
        // Encoded here, from the borrowed records, so the blocking task needs no copy of them;
        // the first use of a stream learns its shard count there, on opening it.
        let prepared = match self.inner.shard_count(stream) {
            Some(shards) => Ok(chunks_of(records, shards)),
            None => Err(records.to_vec()),
        };
        let work = self.run(stream, None, move |s| {
            let now = crate::now_ms();
            let chunks = prepared.unwrap_or_else(|records| chunks_of(&records, s.shards));
            let tx = s.connection.transaction()?;
            if let Some(key) = key
                && tx.prepare_cached("INSERT OR IGNORE INTO appends (key) VALUES (?1)")?.execute([key])? == 0
            {
                return Ok(());
            }
            {
                let mut insert =
                    tx.prepare_cached("INSERT INTO chunks (shard, count, body, ts) VALUES (?1, ?2, ?3, ?4)")?;
                for chunk in chunks {
                    insert.execute(params![chunk.shard, chunk.count, chunk.body, now])?;
                }
            }
            tx.commit()?;
            // Readers in other processes are woken by this, now that the records are readable (SQLite's
            // own write to its log comes before its commit is visible). Without it they poll.
            if let Err(e) = super::wake::announce(&s.appended_path) {
                tracing::debug!(path = %s.appended_path.display(), "could not announce an append ({e}); readers elsewhere poll");
            }
            Ok(())
        });
        let inner = self.inner.clone();
        Box::pin(async move {
            work.await.map_err(|e| match e {
                LogError::Backend { detail, .. } => LogError::Backend { stream: name.clone(), detail },
                other => other,
            })?;
            if let Some(signal) = inner.appended.lock().unwrap_or_else(|e| e.into_inner()).get(&name) {
                signal.send_modify(|appends| *appends += 1);
            }
            Ok(())
        })
    }

    fn appends(&self, stream: &str) -> Option<tokio::sync::watch::Receiver<u64>> {
        let inner = &self.inner;
        // The watch is a task of the runtime the first reader runs on.
        if tokio::runtime::Handle::try_current().is_ok()
            && !inner.watching.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let watched = std::fs::create_dir_all(&inner.dir)
                .and_then(|()| super::wake::watch_dir(&inner.dir, Arc::downgrade(&inner.appended)));
            if let Err(e) = watched {
                tracing::debug!(dir = %inner.dir.display(), "not watching the local streams ({e}); readers poll");
            }
        }
        let mut appended = inner.appended.lock().unwrap_or_else(|e| e.into_inner());
        Some(appended.entry(stream.to_owned()).or_insert_with(|| tokio::sync::watch::Sender::new(0)).subscribe())
    }

    fn read<'a>(
        &'a self,
        stream: &'a str,
        shard: &'a str,
        from: &'a Position,
        max: usize,
    ) -> BoxFuture<'a, Result<(Vec<LogRecord>, Position), LogError>> {
        let from = from.clone();
        let (stream_name, shard_name) = (stream.to_owned(), shard.to_owned());
        let work = self.run(stream, None, move |s| {
            let index = match shard_index(&stream_name, &shard_name, s.shards) {
                Ok(i) => i,
                Err(e) => return Ok(Err(e)),
            };
            // The chunk to start at, how many of its records were read already, and the oldest time wanted.
            let (first_chunk, skip, min_ts) = match &from {
                // Local shards never close; an end position can only come from elsewhere.
                Position::End => return Ok(Ok((Vec::new(), Position::End))),
                Position::Start => (0, 0, i64::MIN),
                Position::AtTimestamp(ts) => (0, 0, *ts),
                Position::After(seq) => match parse_sequence(seq) {
                    Some((chunk, index)) => (chunk, index as usize + 1, i64::MIN),
                    None => {
                        let detail = format!("position `{seq}` is not a local sequence number");
                        return Ok(Err(LogError::Backend { stream: stream_name, detail }));
                    }
                },
                Position::Latest => {
                    let last: Option<(i64, u32)> = s
                        .connection
                        .query_row(
                            "SELECT seq, count FROM chunks WHERE shard = ?1 ORDER BY seq DESC LIMIT 1",
                            [index],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .optional()?;
                    let (chunk, count) = last.unwrap_or((0, 1));
                    return Ok(Ok((Vec::new(), Position::After(sequence_of(chunk, count.saturating_sub(1))))));
                }
            };
            let mut query = s.connection.prepare_cached(READ_CHUNKS)?;
            let mut rows = query.query(params![index, first_chunk, min_ts])?;
            let mut records = Vec::new();
            // A read ends before a record that would take it past MAX_READ_BYTES (the first is always taken).
            let mut bytes = 0;
            let mut full = false;
            while !full
                && records.len() < max
                && let Some(row) = rows.next()?
            {
                let (chunk, ts): (i64, i64) = (row.get(0)?, row.get(2)?);
                let mut body = row.get_ref(1)?.as_blob()?;
                let skip = if chunk == first_chunk { skip } else { 0 };
                let mut at = 0;
                while !body.is_empty() && records.len() < max {
                    let record = match decode_record(&mut body) {
                        Ok(record) => record,
                        Err(e) => {
                            let detail = format!("chunk {chunk} of {shard_name} is damaged at record {at}: {e}");
                            return Ok(Err(LogError::Backend { stream: stream_name, detail }));
                        }
                    };
                    let size = record.data.len() + record.key.len();
                    if at >= skip && !records.is_empty() && bytes + size > MAX_READ_BYTES {
                        full = true;
                        break;
                    }
                    if at >= skip {
                        bytes += size;
                        let text = |bytes: &[u8], what: &str| {
                            String::from_utf8(bytes.to_vec()).map_err(|_| {
                                format!("chunk {chunk} of {shard_name}: the {what} of record {at} is not UTF-8")
                            })
                        };
                        let (key, id) = match (text(record.key, "key"), record.id.map(|id| text(id, "id")).transpose())
                        {
                            (Ok(key), Ok(id)) => (key, id),
                            (Err(detail), _) | (_, Err(detail)) => {
                                return Ok(Err(LogError::Backend { stream: stream_name, detail }));
                            }
                        };
                        records.push(LogRecord {
                            shard: shard_name.clone(),
                            sequence: sequence_of(chunk, at as u32),
                            partition_key: key,
                            data: record.data.to_vec(),
                            id,
                            appended_at_ms: ts,
                        });
                    }
                    at += 1;
                }
            }
            let next = match records.last() {
                Some(last) => Position::After(last.sequence.clone()),
                None => from,
            };
            Ok(Ok((records, next)))
        });
        Box::pin(async move { work.await? })
    }
}

/// A shard's chunks from a position on (`ts`: not before a time, for `AtTimestamp`).
const READ_CHUNKS: &str = "SELECT seq, body, ts FROM chunks WHERE shard = ?1 AND seq >= ?2 AND ts >= ?3 ORDER BY seq";

/// Keeps a cached statement's plan when its parameters change. Without this,
/// SQLite as bundled (with STAT4) compiles a statement such as a read's again
/// at every run with new positions: most of a read's time at low latency.
pub(crate) fn keep_plans(connection: &Connection) -> rusqlite::Result<()> {
    connection.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_is_not_compiled_again_when_its_position_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let connection = Connection::open(dir.path().join("s.sqlite")).expect("open");
        keep_plans(&connection).expect("configured");
        connection
            .execute_batch("CREATE TABLE chunks (seq INTEGER PRIMARY KEY AUTOINCREMENT, shard INTEGER NOT NULL, count INTEGER NOT NULL, body BLOB NOT NULL, ts INTEGER NOT NULL); CREATE INDEX chunks_by_shard ON chunks (shard, seq);")
            .expect("schema");
        for n in 0..20 {
            connection
                .execute("INSERT INTO chunks (shard, count, body, ts) VALUES (?1, 1, x'00', ?2)", params![n % 2, n])
                .expect("insert");
        }
        for n in 0..10i64 {
            let mut query = connection.prepare_cached(READ_CHUNKS).expect("prepared");
            let rows = query.query_map(params![n % 2, n, i64::MIN], |row| row.get::<_, i64>(0)).expect("query");
            assert!(rows.count() > 0);
        }
        let query = connection.prepare_cached(READ_CHUNKS).expect("prepared");
        assert_eq!(query.get_status(rusqlite::StatementStatus::RePrepare), 0, "compiled once, run ten times");
    }

    fn record(key: &str, data: &[u8], id: Option<&str>) -> AppendRecord {
        AppendRecord {
            partition_key: key.into(),
            shard: ShardChoice::ByKey,
            data: data.to_vec(),
            id: id.map(Into::into),
        }
    }

    #[tokio::test]
    async fn records_are_read_back_in_order_after_a_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LocalLogStore::new(dir.path());
        let shards = log.ensure_stream("s", 1).await.expect("create");
        log.append("s", &[record("k", b"a", None), record("k", b"b", None), record("k", b"c", None)])
            .await
            .expect("append");
        let (all, next) = log.read("s", &shards[0].id, &Position::Start, 10).await.expect("read");
        assert_eq!(all.iter().map(|r| r.data.clone()).collect::<Vec<_>>(), [b"a", b"b", b"c"]);
        assert_eq!(next, Position::After(all[2].sequence.clone()));
        let (rest, _) =
            log.read("s", &shards[0].id, &Position::After(all[0].sequence.clone()), 10).await.expect("read");
        assert_eq!(rest.len(), 2);
        assert_eq!(rest[0].data, b"b");
    }

    #[tokio::test]
    async fn appending_the_same_records_again_is_a_no_op_and_a_different_append_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LocalLogStore::new(dir.path());
        let shards = log.ensure_stream("s", 1).await.expect("create");
        let batch = || vec![record("k", b"a", Some("x")), record("k", b"b", Some("y"))];
        log.append("s", &batch()).await.expect("append");
        log.append("s", &batch()).await.expect("append again");
        let (all, _) = log.read("s", &shards[0].id, &Position::Start, 10).await.expect("read");
        assert_eq!(all.iter().map(|r| r.data.clone()).collect::<Vec<_>>(), [b"a", b"b"]);
        // Never lost: an append that only overlaps an earlier one is kept whole.
        log.append("s", &[record("k", b"b", Some("y")), record("k", b"c", Some("z"))]).await.expect("append");
        // Records without ids are never taken for a repeat.
        log.append("s", &[record("k", b"d", None)]).await.expect("append");
        log.append("s", &[record("k", b"d", None)]).await.expect("append");
        let (all, _) = log.read("s", &shards[0].id, &Position::Start, 10).await.expect("read");
        assert_eq!(all.iter().map(|r| r.data.clone()).collect::<Vec<_>>(), [b"a", b"b", b"b", b"c", b"d", b"d"]);
        assert_eq!(all[3].id.as_deref(), Some("z"));
        assert_eq!(all[4].id, None);
    }

    #[tokio::test]
    async fn a_read_returns_at_most_what_kinesis_returns_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LocalLogStore::new(dir.path());
        let shards = log.ensure_stream("s", 1).await.expect("create");
        let big = vec![7u8; 1000 * 1000];
        for _ in 0..3 {
            let records: Vec<_> = (0..9).map(|_| record("k", &big, None)).collect();
            log.append("s", &records).await.expect("append");
        }
        let (mut from, mut sizes) = (Position::Start, Vec::new());
        loop {
            let (records, next) = log.read("s", &shards[0].id, &from, 500).await.expect("read");
            if records.is_empty() {
                break;
            }
            sizes.push(records.len());
            from = next;
        }
        assert_eq!(sizes, [10, 10, 7], "10 MiB, not 500 records, per read; nothing skipped at a chunk's edge");
    }

    #[tokio::test]
    async fn reads_go_on_across_chunks_from_any_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LocalLogStore::new(dir.path());
        let shards = log.ensure_stream("s", 1).await.expect("create");
        let total = CHUNK_RECORDS * 2 + 5;
        let data = |n: usize| n.to_string().into_bytes();
        let records: Vec<_> = (0..total).map(|n| record("k", &data(n), None)).collect();
        log.append("s", &records).await.expect("append");
        log.append("s", &[record("k", b"last", None)]).await.expect("append");
        let mut read = Vec::new();
        let mut from = Position::Start;
        // An odd batch size ends reads in the middle of chunks.
        loop {
            let (records, next) = log.read("s", &shards[0].id, &from, 333).await.expect("read");
            if records.is_empty() {
                break;
            }
            assert!(records.len() <= 333);
            read.extend(records);
            from = next;
        }
        let expected: Vec<Vec<u8>> = (0..total).map(data).chain([b"last".to_vec()]).collect();
        assert_eq!(read.iter().map(|r| r.data.clone()).collect::<Vec<_>>(), expected);
        let sequences: Vec<(i64, u32)> = read.iter().map(|r| parse_sequence(&r.sequence).expect("ours")).collect();
        assert!(sequences.windows(2).all(|w| w[0] < w[1]), "sequence numbers increase");
        let (latest, _) = log.read("s", &shards[0].id, &Position::Latest, 10).await.expect("latest");
        assert!(latest.is_empty());
    }

    #[tokio::test]
    async fn a_file_of_the_row_per_record_layout_is_converted_and_its_positions_still_hold() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("streams")).expect("dir");
        let old = Connection::open(dir.path().join("streams/s.sqlite")).expect("open");
        old.execute_batch(
            "CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 0), shards INTEGER NOT NULL);
             INSERT INTO meta VALUES (0, 2);
             CREATE TABLE records (seq INTEGER PRIMARY KEY AUTOINCREMENT, shard INTEGER NOT NULL, id TEXT,
                                   key TEXT NOT NULL, data BLOB NOT NULL, ts INTEGER NOT NULL);
             INSERT INTO records (shard, id, key, data, ts) VALUES (0, 'x', 'k', X'61', 1), (1, NULL, 'j', X'62', 2),
                                                                    (0, NULL, 'k', X'63', 3);",
        )
        .expect("the earlier layout");
        drop(old);
        let log = LocalLogStore::new(dir.path());
        let shards = log.shards("s").await.expect("shards");
        let (first, _) = log.read("s", &shards[0].id, &Position::Start, 10).await.expect("read");
        assert_eq!(first.iter().map(|r| r.data.clone()).collect::<Vec<_>>(), [b"a", b"c"]);
        assert_eq!((first[0].id.as_deref(), first[0].appended_at_ms), (Some("x"), 1));
        // A position committed before the conversion: row 1 was `a`.
        let (after_a, _) = log.read("s", &shards[0].id, &Position::After("1".into()), 10).await.expect("read");
        assert_eq!(after_a.iter().map(|r| r.data.clone()).collect::<Vec<_>>(), [b"c"]);
        log.append(
            "s",
            &[AppendRecord { partition_key: "k".into(), shard: ShardChoice::Index(0), data: b"d".to_vec(), id: None }],
        )
        .await
        .expect("append");
        let (rest, _) =
            log.read("s", &shards[0].id, &Position::After(first[1].sequence.clone()), 10).await.expect("read");
        assert_eq!(rest.iter().map(|r| r.data.clone()).collect::<Vec<_>>(), [b"d"]);
        assert_eq!(log.read("s", &shards[1].id, &Position::Start, 10).await.expect("read").0.len(), 1);
    }

    #[tokio::test]
    async fn a_second_store_sees_the_records_of_the_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = LocalLogStore::new(dir.path());
        writer.ensure_stream("s", 4).await.expect("create");
        writer
            .append(
                "s",
                &[AppendRecord {
                    partition_key: "k".into(),
                    shard: ShardChoice::Index(2),
                    data: b"z".to_vec(),
                    id: None,
                }],
            )
            .await
            .expect("append");
        let reader = LocalLogStore::new(dir.path());
        let shards = reader.shards("s").await.expect("shards");
        assert_eq!(shards.len(), 4);
        assert_eq!(reader.read("s", &shards[2].id, &Position::Start, 10).await.expect("read").0.len(), 1);
        assert!(reader.read("s", &shards[1].id, &Position::Start, 10).await.expect("read").0.is_empty());
    }

    #[tokio::test]
    async fn a_reader_is_signalled_by_appends_of_its_own_store_and_of_another() {
        let changed = |mut signal: tokio::sync::watch::Receiver<u64>| async move {
            tokio::time::timeout(std::time::Duration::from_secs(30), signal.changed()).await
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = LocalLogStore::new(dir.path());
        writer.ensure_stream("s", 1).await.expect("create");
        // The same store (another partition of this process).
        let own = writer.appends("s").expect("the local log signals appends");
        writer.append("s", &[record("k", b"a", None)]).await.expect("append");
        assert!(matches!(changed(own).await, Ok(Ok(()))), "woken by its own store's append");
        // Another store on the same files, as a worker is to `statefun send` in another process:
        // only the watch of the files can tell, and it starts after every write above.
        let reader = LocalLogStore::new(dir.path());
        let other = reader.appends("s").expect("the local log signals appends");
        writer.append("s", &[record("k", b"b", None)]).await.expect("append");
        assert!(matches!(changed(other).await, Ok(Ok(()))), "woken by another store's append");
    }

    #[tokio::test]
    async fn a_reader_woken_by_another_process_finds_the_append_that_woke_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = Arc::new(LocalLogStore::new(dir.path()));
        let shards = writer.ensure_stream("s", 1).await.expect("create");
        // Another store on the same files: only the watch of the files tells it of an append.
        let reader = LocalLogStore::new(dir.path());
        let mut signal = reader.appends("s").expect("the local log signals appends");
        let mut position = Position::Start;
        for n in 0..20 {
            signal.mark_unchanged();
            let value = format!("v{n}").into_bytes();
            let append = tokio::spawn({
                let (writer, value) = (writer.clone(), value.clone());
                async move { writer.append("s", &[record("k", &value, None)]).await }
            });
            let woken = tokio::time::timeout(std::time::Duration::from_secs(30), signal.changed()).await;
            assert!(matches!(woken, Ok(Ok(()))), "append {n} woke the reader");
            // Read at once, as a waiting reader does: a wake before the append is committed would find
            // nothing, and the reader would wait for the next append or its poll interval.
            let (records, next) = reader.read("s", &shards[0].id, &position, 10).await.expect("read");
            let values: Vec<_> = records.iter().map(|r| r.data.clone()).collect();
            assert_eq!(values, vec![value], "append {n} is there when its wake arrives");
            position = next;
            append.await.expect("the append task").expect("append");
        }
    }

    #[tokio::test]
    async fn the_first_creator_decides_the_shard_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(LocalLogStore::new(dir.path()).ensure_stream("s", 4).await.expect("create").len(), 4);
        assert_eq!(LocalLogStore::new(dir.path()).ensure_stream("s", 1).await.expect("open").len(), 4);
    }

    #[tokio::test]
    async fn a_missing_stream_and_a_bad_name_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LocalLogStore::new(dir.path());
        let missing = log.shards("nope").await.expect_err("missing");
        assert!(missing.to_string().contains("stream `nope` does not exist"), "{missing}");
        let bad = log.shards("../etc").await.expect_err("bad name");
        assert!(bad.to_string().contains("invalid stream name"), "{bad}");
    }

    #[tokio::test]
    async fn latest_skips_what_was_there_and_reads_what_comes_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LocalLogStore::new(dir.path());
        let shards = log.ensure_stream("s", 1).await.expect("create");
        log.append("s", &[record("k", b"old", None)]).await.expect("append");
        let (none, next) = log.read("s", &shards[0].id, &Position::Latest, 10).await.expect("read");
        assert!(none.is_empty());
        log.append("s", &[record("k", b"new", None)]).await.expect("append");
        let (records, _) = log.read("s", &shards[0].id, &next, 10).await.expect("read");
        assert_eq!(records.iter().map(|r| r.data.clone()).collect::<Vec<_>>(), [b"new"]);
    }

    #[test]
    fn explicit_hash_keys_split_the_key_space_evenly() {
        assert_eq!(shard_of_hash_key("0", 4), Some(0));
        assert_eq!(shard_of_hash_key(&u128::MAX.to_string(), 4), Some(3));
        assert_eq!(shard_of_hash_key(&(u128::MAX / 2 + 1).to_string(), 2), Some(1));
        assert_eq!(shard_of_hash_key("x", 2), None);
        assert_eq!(shard_of_hash_key(&u128::MAX.to_string(), 1), Some(0));
        assert_eq!(shard_of_hash_key(&u128::MAX.to_string(), 3), Some(2));
    }

    #[test]
    fn each_listed_shard_starts_where_its_explicit_hash_keys_start() {
        for count in [1, 2, 3, 4, 7] {
            for (index, shard) in shard_infos(count).iter().enumerate() {
                assert_eq!(shard_of_hash_key(&shard.starting_hash_key.to_string(), count), Some(index as u32));
                assert!(shard.open && shard.parents.is_empty());
            }
        }
    }
}
