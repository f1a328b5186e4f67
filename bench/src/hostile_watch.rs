//! What the hostile scenario reads off a run besides the runtime's own
//! figures: streams it tails (egress, dead letters), the dead letters counted
//! by target, the checkpoint objects written, a stream's bytes on disk, and the
//! runtime's log cut down to size. Reading only (but for the log it trims).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use prost::Message as _;
use serde_json::json;
use statefun_proto::internal::DeadLetter;
use statefun_runtime::checkpoint::BlobStore;
use statefun_runtime::checkpoint::fs::FsBlobStore;
use statefun_runtime::log::{LogError, LogRecord, LogStore, Position};

/// The runtime's default dead-letter stream (`statefun run --help`).
pub(crate) const DEAD_LETTER_STREAM: &str = "statefun-dead-letters";
/// The function of the failing key.
pub(crate) const FAILING_FUNCTION: &str = "bench/failing";
/// A big message's key prefix (the unrelated keys are `k<n>`).
pub(crate) const BIG_PREFIX: &str = "big";

/// Reads a stream from its start, what is new at each call; a stream not yet
/// created (the dead letters before the first) reads as empty.
pub(crate) struct Tail {
    stream: String,
    cursors: Vec<(String, Position)>,
}

impl Tail {
    pub(crate) fn new(stream: &str) -> Self {
        Self { stream: stream.to_owned(), cursors: Vec::new() }
    }

    pub(crate) async fn read(&mut self, log: &dyn LogStore) -> anyhow::Result<Vec<LogRecord>> {
        const READ: usize = 10_000;
        if self.cursors.is_empty() {
            match log.shards(&self.stream).await {
                Ok(shards) => self.cursors = shards.into_iter().map(|s| (s.id, Position::Start)).collect(),
                Err(LogError::NoSuchStream { .. }) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            }
        }
        let mut fresh = Vec::new();
        for (shard, position) in &mut self.cursors {
            loop {
                let (records, next) = match log.read(&self.stream, shard, position, READ).await {
                    Ok(read) => read,
                    Err(e) if e.is_retryable() => break,
                    Err(e) => return Err(e.into()),
                };
                let full = records.len() >= READ;
                fresh.extend(records);
                *position = next;
                if !full {
                    break;
                }
            }
        }
        Ok(fresh)
    }
}

/// The dead letters published so far, counted by their messages' targets.
pub(crate) struct DeadLetters {
    tail: Tail,
    /// Where a letter too large for a stream record is kept whole.
    blobs: FsBlobStore,
    letters: u64,
    /// Messages by target function type (`namespace/name`), repeats included.
    by_type: BTreeMap<String, u64>,
    /// The ids of the messages to `bench/failing`, and the big messages' keys
    /// (one message each): what drains those loads, counted once however often
    /// a message is dead-lettered.
    failing_ids: HashSet<String>,
    big_keys: HashSet<String>,
    /// Messages of those two seen dead-lettered again.
    repeats: u64,
    /// The first reason given per function type (or `input` for records that could not be routed).
    reasons: BTreeMap<String, String>,
}

impl DeadLetters {
    /// Big messages dead-lettered, each counted once.
    pub(crate) fn big_messages(&self) -> u64 {
        self.big_keys.len() as u64
    }

    /// Messages to the failing key dead-lettered, each counted once.
    pub(crate) fn failing_messages(&self) -> u64 {
        self.failing_ids.len() as u64
    }

    pub(crate) fn new(data_dir: &Path) -> Self {
        Self {
            tail: Tail::new(DEAD_LETTER_STREAM),
            blobs: FsBlobStore::new(data_dir),
            letters: 0,
            by_type: BTreeMap::new(),
            failing_ids: HashSet::new(),
            big_keys: HashSet::new(),
            repeats: 0,
            reasons: BTreeMap::new(),
        }
    }

    pub(crate) async fn read(&mut self, log: &dyn LogStore) -> anyhow::Result<()> {
        for record in self.tail.read(log).await? {
            let mut letter = DeadLetter::decode(record.data.as_slice()).context("a dead-letter record")?;
            if !letter.stored_as.is_empty() {
                // A stub: the whole letter is an object.
                let bytes = self.blobs.get(&letter.stored_as).await?.with_context(|| {
                    format!("dead letter object {} (named by a stub on the stream)", letter.stored_as)
                })?;
                letter = DeadLetter::decode(bytes.as_slice()).context("a dead-letter object")?;
            }
            self.letters += 1;
            let kind = letter.address.as_ref().map_or("input".to_owned(), |a| format!("{}/{}", a.namespace, a.r#type));
            self.reasons.entry(kind).or_insert_with(|| letter.reason.clone());
            for envelope in &letter.messages {
                let Some(target) = &envelope.target else { continue };
                let function = format!("{}/{}", target.namespace, target.r#type);
                let fresh = if function == FAILING_FUNCTION {
                    self.failing_ids.insert(envelope.id.clone())
                } else if target.id.starts_with(BIG_PREFIX) {
                    self.big_keys.insert(target.id.clone())
                } else {
                    true
                };
                self.repeats += u64::from(!fresh);
                *self.by_type.entry(function).or_default() += 1;
            }
        }
        Ok(())
    }

    /// Messages dead-lettered for function type `function` (`namespace/name`).
    pub(crate) fn messages_to(&self, function: &str) -> u64 {
        self.by_type.get(function).copied().unwrap_or(0)
    }

    pub(crate) fn summary(&self) -> serde_json::Value {
        json!({
            "letters": self.letters, "messages_by_function": self.by_type, "first_reasons": self.reasons,
            "failing_messages": self.failing_ids.len(), "big_messages": self.big_keys.len(),
            "repeated_messages": self.repeats,
        })
    }
}

/// The checkpoint objects (`*.pb` under `<data dir>/checkpoints`), looked at
/// now and then. An object is written once under a name of its own and
/// deleted by garbage collection later, so the sizes of every name seen add up
/// to what was written (less objects that came and went between two looks).
pub(crate) struct Watch {
    root: PathBuf,
    /// Size of every object seen, by path; whether it was there at the first look.
    seen: HashMap<PathBuf, (u64, bool)>,
    current: u64,
    looks: usize,
}

impl Watch {
    pub(crate) fn new(data_dir: &Path) -> Self {
        Self { root: data_dir.join("checkpoints"), seen: HashMap::new(), current: 0, looks: 0 }
    }

    pub(crate) fn look(&mut self) {
        let mut files = Vec::new();
        walk(&self.root, &mut files);
        let first = self.looks == 0;
        self.looks += 1;
        self.current = 0;
        for (path, size) in files.into_iter().filter(|(p, _)| p.extension().is_some_and(|e| e == "pb")) {
            self.current += size;
            let entry = self.seen.entry(path).or_insert((size, first));
            entry.0 = entry.0.max(size);
        }
    }

    /// Bytes of the objects there at the last look.
    pub(crate) fn checkpoint_bytes(&self) -> u64 {
        self.current
    }

    /// Bytes of the objects that appeared after the first look.
    pub(crate) fn written_since_start(&self) -> u64 {
        self.seen.values().filter(|(_, at_first)| !at_first).map(|(size, _)| size).sum()
    }
}

/// Every file under `dir` with its size; what vanishes meanwhile is left out, and so are
/// deleted files the store keeps for reuse (`.recycled/`).
fn walk(dir: &Path, files: &mut Vec<(PathBuf, u64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if entry.file_name().as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            walk(&entry.path(), files);
        } else {
            files.push((entry.path(), meta.len()));
        }
    }
}

/// A runtime log larger than this keeps only its head and tail.
pub(crate) const LOG_KEEP_BYTES: u64 = 4 << 20;

/// Cuts the middle out of a log past [`LOG_KEEP_BYTES`] (a loop's dead
/// letters log a line each: gigabytes a minute); whether it did.
pub(crate) fn trim_log(path: &Path) -> anyhow::Result<bool> {
    use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len <= LOG_KEEP_BYTES {
        return Ok(false);
    }
    let half = LOG_KEEP_BYTES / 2;
    let mut head = vec![0; half as usize];
    file.read_exact(&mut head)?;
    file.seek(SeekFrom::End(-(half as i64)))?;
    let mut tail = Vec::with_capacity(half as usize);
    file.read_to_end(&mut tail)?;
    let trimmed = path.with_extension("log.trimmed");
    let mut out = std::fs::File::create(&trimmed)?;
    out.write_all(&head)?;
    writeln!(out, "\n[statefun-bench: {} bytes cut here]", len - 2 * half)?;
    out.write_all(&tail)?;
    std::fs::rename(&trimmed, path)?;
    Ok(true)
}

/// Bytes on disk of a local stream: its SQLite database with its journal files.
pub(crate) fn stream_bytes(data_dir: &Path, stream: &str) -> u64 {
    let mut files = Vec::new();
    walk(&data_dir.join("streams"), &mut files);
    files
        .iter()
        .filter(|(path, _)| path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(stream)))
        .map(|(_, size)| size)
        .sum()
}
