//! The embedded log: one SQLite database per stream under `<data dir>/streams/`.
//!
//! SQLite in WAL mode lets the worker, `send` and `tail` (separate processes)
//! use a stream at once, and survives a killed process. Sequence numbers are
//! SQLite row ids, increasing across the stream and so within each shard. A
//! record's id is unique per shard, which makes re-publishing after a crash a
//! no-op here (Kinesis cannot offer that; consumers de-duplicate by id there).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

use super::{AppendRecord, BoxFuture, LogError, LogRecord, LogStore, Position, ShardChoice, ShardInfo, check_stream_name};
use crate::address::shard_of_key;

pub struct LocalLogStore {
    inner: Arc<Streams>,
}

/// The open streams of one data directory.
struct Streams {
    dir: PathBuf,
    open: Mutex<HashMap<String, Arc<Mutex<Stream>>>>,
}

struct Stream {
    connection: Connection,
    shards: u32,
}

impl LocalLogStore {
    pub fn new(data_dir: &Path) -> Self {
        Self { inner: Arc::new(Streams { dir: data_dir.join("streams"), open: Mutex::new(HashMap::new()) }) }
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
            joined.unwrap_or_else(|e| Err(LogError::Backend { stream: name, detail: format!("storage task failed: {e}") }))
        })
    }
}

impl Streams {
    fn open(&self, stream: &str, create: Option<u32>) -> Result<Arc<Mutex<Stream>>, LogError> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = open.get(stream) {
            return Ok(existing.clone());
        }
        let path = self.dir.join(format!("{stream}.sqlite"));
        if create.is_none() && !path.exists() {
            return Err(LogError::NoSuchStream { stream: stream.to_owned(), hint: format!(" (no file {})", path.display()) });
        }
        let backend = |e: rusqlite::Error| LogError::Backend { stream: stream.to_owned(), detail: e.to_string() };
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| LogError::Backend { stream: stream.to_owned(), detail: format!("{}: {e}", self.dir.display()) })?;
        let mut connection = Connection::open(&path).map_err(backend)?;
        connection.busy_timeout(std::time::Duration::from_secs(10)).map_err(backend)?;
        connection
            .execute_batch(
                "PRAGMA journal_mode=WAL;
                 PRAGMA synchronous=FULL;
                 CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 0), shards INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS records (
                     seq INTEGER PRIMARY KEY AUTOINCREMENT,
                     shard INTEGER NOT NULL,
                     id TEXT,
                     key TEXT NOT NULL,
                     data BLOB NOT NULL,
                     ts INTEGER NOT NULL);
                 CREATE INDEX IF NOT EXISTS records_by_shard ON records (shard, seq);
                 CREATE UNIQUE INDEX IF NOT EXISTS records_by_id ON records (shard, id) WHERE id IS NOT NULL;",
            )
            .map_err(backend)?;
        if let Some(shards) = create {
            // The first creator's shard count wins, even against another process creating it at once.
            let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(backend)?;
            tx.execute("INSERT OR IGNORE INTO meta (id, shards) VALUES (0, ?1)", [shards.max(1)]).map_err(backend)?;
            tx.commit().map_err(backend)?;
        }
        let shards: Option<u32> =
            connection.query_row("SELECT shards FROM meta WHERE id = 0", [], |r| r.get(0)).optional().map_err(backend)?;
        let Some(shards) = shards.filter(|s| *s >= 1) else {
            return Err(LogError::NoSuchStream { stream: stream.to_owned(), hint: " (file has no shard count)".into() });
        };
        let stream_handle = Arc::new(Mutex::new(Stream { connection, shards }));
        open.insert(stream.to_owned(), stream_handle.clone());
        Ok(stream_handle)
    }
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

    fn append<'a>(&'a self, stream: &'a str, records: Vec<AppendRecord>) -> BoxFuture<'a, Result<(), LogError>> {
        let name = stream.to_owned();
        let work = self.run(stream, None, move |s| {
            let now = crate::now_ms();
            let shards = s.shards;
            let tx = s.connection.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO records (shard, id, key, data, ts) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for record in &records {
                    let shard = match &record.shard {
                        ShardChoice::ByKey => shard_of_key(&record.partition_key, shards),
                        ShardChoice::Index(i) => *i % shards,
                        ShardChoice::ExplicitHashKey(k) => shard_of_hash_key(k, shards)
                            .unwrap_or_else(|| shard_of_key(&record.partition_key, shards)),
                    };
                    insert.execute(params![shard, record.id, record.partition_key, record.data, now])?;
                }
            }
            tx.commit()
        });
        Box::pin(async move {
            work.await.map_err(|e| match e {
                LogError::Backend { detail, .. } => LogError::Backend { stream: name, detail },
                other => other,
            })
        })
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
            let (after, min_ts) = match &from {
                // Local shards never close; an end position can only come from elsewhere.
                Position::End => return Ok(Ok((Vec::new(), Position::End))),
                Position::Start => (0, i64::MIN),
                Position::AtTimestamp(ts) => (0, *ts),
                Position::After(seq) => match seq.parse::<i64>() {
                    Ok(n) => (n, i64::MIN),
                    Err(_) => {
                        let detail = format!("position `{seq}` is not a local sequence number");
                        return Ok(Err(LogError::Backend { stream: stream_name, detail }));
                    }
                },
                Position::Latest => {
                    let last: Option<i64> = s
                        .connection
                        .query_row("SELECT MAX(seq) FROM records WHERE shard = ?1", [index], |r| r.get(0))?;
                    return Ok(Ok((Vec::new(), Position::After(last.unwrap_or(0).to_string()))));
                }
            };
            let mut query = s.connection.prepare_cached(
                "SELECT seq, key, data, id, ts FROM records WHERE shard = ?1 AND seq > ?2 AND ts >= ?3 ORDER BY seq LIMIT ?4",
            )?;
            let rows = query.query_map(params![index, after, min_ts, max as i64], |row| {
                Ok(LogRecord {
                    shard: shard_name.clone(),
                    sequence: row.get::<_, i64>(0)?.to_string(),
                    partition_key: row.get(1)?,
                    data: row.get(2)?,
                    id: row.get(3)?,
                    appended_at_ms: row.get(4)?,
                })
            })?;
            let records = rows.collect::<Result<Vec<_>, _>>()?;
            let next = match records.last() {
                Some(last) => Position::After(last.sequence.clone()),
                None => from,
            };
            Ok(Ok((records, next)))
        });
        Box::pin(async move { work.await? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, data: &[u8], id: Option<&str>) -> AppendRecord {
        AppendRecord { partition_key: key.into(), shard: ShardChoice::ByKey, data: data.to_vec(), id: id.map(Into::into) }
    }

    #[tokio::test]
    async fn records_are_read_back_in_order_after_a_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LocalLogStore::new(dir.path());
        let shards = log.ensure_stream("s", 1).await.expect("create");
        log.append("s", vec![record("k", b"a", None), record("k", b"b", None), record("k", b"c", None)])
            .await
            .expect("append");
        let (all, next) = log.read("s", &shards[0].id, &Position::Start, 10).await.expect("read");
        assert_eq!(all.iter().map(|r| r.data.clone()).collect::<Vec<_>>(), [b"a", b"b", b"c"]);
        assert_eq!(next, Position::After(all[2].sequence.clone()));
        let (rest, _) = log.read("s", &shards[0].id, &Position::After(all[0].sequence.clone()), 10).await.expect("read");
        assert_eq!(rest.len(), 2);
        assert_eq!(rest[0].data, b"b");
    }

    #[tokio::test]
    async fn appending_a_known_id_again_is_a_no_op() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LocalLogStore::new(dir.path());
        let shards = log.ensure_stream("s", 1).await.expect("create");
        log.append("s", vec![record("k", b"a", Some("x"))]).await.expect("append");
        log.append("s", vec![record("k", b"a", Some("x")), record("k", b"b", Some("y"))]).await.expect("append");
        let (all, _) = log.read("s", &shards[0].id, &Position::Start, 10).await.expect("read");
        assert_eq!(all.len(), 2);
    }

    #[tokio::test]
    async fn a_second_store_sees_the_records_of_the_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = LocalLogStore::new(dir.path());
        writer.ensure_stream("s", 4).await.expect("create");
        writer
            .append("s", vec![AppendRecord { partition_key: "k".into(), shard: ShardChoice::Index(2), data: b"z".to_vec(), id: None }])
            .await
            .expect("append");
        let reader = LocalLogStore::new(dir.path());
        let shards = reader.shards("s").await.expect("shards");
        assert_eq!(shards.len(), 4);
        assert_eq!(reader.read("s", &shards[2].id, &Position::Start, 10).await.expect("read").0.len(), 1);
        assert!(reader.read("s", &shards[1].id, &Position::Start, 10).await.expect("read").0.is_empty());
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
        log.append("s", vec![record("k", b"old", None)]).await.expect("append");
        let (none, next) = log.read("s", &shards[0].id, &Position::Latest, 10).await.expect("read");
        assert!(none.is_empty());
        log.append("s", vec![record("k", b"new", None)]).await.expect("append");
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
