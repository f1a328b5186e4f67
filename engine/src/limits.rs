//! Kinesis' limits on one record and on stream names.
//!
//! Every backend applies them, so the local mode meets the same edges as AWS,
//! and the engine checks them where it makes a record, so that what is
//! committed for publication can always be published.

/// Kinesis' largest record: data and partition key together.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
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

/// A stream name outside Kinesis' rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stream name `{0}`: use 1-128 characters of A-Z, a-z, 0-9, `_`, `-`, `.`")]
pub struct InvalidStreamName(pub String);

/// Kinesis' stream-name rule, also applied to local streams (their names become file names).
pub fn check_stream_name(stream: &str) -> Result<(), InvalidStreamName> {
    let ok = !stream.is_empty()
        && stream.len() <= 128
        && stream.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && stream != "."
        && stream != "..";
    if ok { Ok(()) } else { Err(InvalidStreamName(stream.to_owned())) }
}
