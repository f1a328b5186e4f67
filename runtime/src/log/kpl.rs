//! Records aggregated by the Kinesis Producer Library: the user records inside
//! one Kinesis record (the 4-byte magic, an `AggregatedRecord`, the MD5 of its
//! bytes), and such records made from user records (`statefun send
//! --kpl-aggregate`). As the KCL does, a record without the magic, too short,
//! or whose checksum fails is a plain record; one whose checksum holds but
//! whose contents do not decode, or name a key that is not in its table, is
//! malformed (an error naming why).

use md5::{Digest, Md5};
use prost::Message;
use statefun_proto::kpl::{AggregatedRecord, Record};

/// What every aggregated record starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_BYTES: usize = 16;

/// One user record of an aggregated record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Vec<u8>,
}

/// The user records of `data`: `Ok(None)` when it is a plain record.
pub fn deaggregate(data: &[u8]) -> Result<Option<Vec<UserRecord>>, String> {
    if data.len() < MAGIC.len() + DIGEST_BYTES || data[..MAGIC.len()] != MAGIC {
        return Ok(None);
    }
    let (body, digest) = data[MAGIC.len()..].split_at(data.len() - MAGIC.len() - DIGEST_BYTES);
    if Md5::digest(body).as_slice() != digest {
        return Ok(None);
    }
    let aggregated =
        AggregatedRecord::decode(body).map_err(|e| format!("its checksum holds but it does not decode: {e}"))?;
    let AggregatedRecord { partition_key_table, explicit_hash_key_table, records } = aggregated;
    records
        .into_iter()
        .enumerate()
        .map(|(index, record)| {
            let key_index = usize::try_from(record.partition_key_index).unwrap_or(usize::MAX);
            let partition_key = partition_key_table.get(key_index).cloned().ok_or_else(|| {
                format!(
                    "user record {index} names partition key {key_index} of a table of {}",
                    partition_key_table.len()
                )
            })?;
            let explicit_hash_key = match record.explicit_hash_key_index {
                None => None,
                Some(at) => {
                    Some(explicit_hash_key_table.get(usize::try_from(at).unwrap_or(usize::MAX)).cloned().ok_or_else(
                        || {
                            format!(
                                "user record {index} names explicit hash key {at} of a table of {}",
                                explicit_hash_key_table.len()
                            )
                        },
                    )?)
                }
            };
            Ok(UserRecord { partition_key, explicit_hash_key, data: record.data })
        })
        .collect::<Result<Vec<_>, String>>()
        .map(Some)
}

/// One aggregated record holding `records` (partition key, data), in order.
pub fn aggregate(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut aggregated = AggregatedRecord::default();
    for (key, data) in records {
        let index = match aggregated.partition_key_table.iter().position(|k| k == key) {
            Some(index) => index,
            None => {
                aggregated.partition_key_table.push(key.clone());
                aggregated.partition_key_table.len() - 1
            }
        };
        aggregated.records.push(Record {
            partition_key_index: index as u64,
            explicit_hash_key_index: None,
            data: data.clone(),
            tags: Vec::new(),
        });
    }
    frame(&aggregated.encode_to_vec())
}

/// An encoded `AggregatedRecord` framed as a Kinesis record: the magic, the bytes, their MD5.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + body.len() + DIGEST_BYTES);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(body);
    out.extend_from_slice(Md5::digest(body).as_slice());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<(String, Vec<u8>)> {
        vec![("a".into(), b"one".to_vec()), ("b".into(), b"two".to_vec()), ("a".into(), b"three".to_vec())]
    }

    #[test]
    fn aggregated_records_come_back_in_order_with_their_own_keys() {
        let users = deaggregate(&aggregate(&records())).expect("valid").expect("aggregated");
        let back: Vec<(String, Vec<u8>)> = users.into_iter().map(|u| (u.partition_key, u.data)).collect();
        assert_eq!(back, records());
    }

    #[test]
    fn a_record_without_the_magic_or_whose_checksum_fails_is_plain() {
        assert_eq!(deaggregate(b"plain"), Ok(None));
        assert_eq!(deaggregate(&MAGIC), Ok(None), "too short for a checksum");
        let mut damaged = aggregate(&records());
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert_eq!(deaggregate(&damaged), Ok(None), "the KCL takes a bad checksum for a plain record");
    }

    #[test]
    fn a_checksummed_record_naming_a_key_outside_its_table_is_malformed() {
        let body = AggregatedRecord {
            partition_key_table: vec!["a".into()],
            explicit_hash_key_table: Vec::new(),
            records: vec![Record {
                partition_key_index: 3,
                explicit_hash_key_index: None,
                data: vec![1],
                tags: vec![],
            }],
        }
        .encode_to_vec();
        let error = deaggregate(&frame(&body)).expect_err("malformed");
        assert_eq!(error, "user record 0 names partition key 3 of a table of 1");
    }

    #[test]
    fn the_first_key_index_is_written_although_it_is_zero() {
        // Proto2 readers (the KCL, aws-kinesis-agg) insist on the required field.
        let record = aggregate(&[("a".into(), vec![7])]);
        let body = &record[MAGIC.len()..record.len() - DIGEST_BYTES];
        let decoded = AggregatedRecord::decode(body).expect("decodes");
        assert_eq!(decoded.records[0].partition_key_index, 0);
        assert!(body.windows(2).any(|w| w == [0x08, 0x00]), "field 1 = 0 is on the wire: {body:?}");
    }
}
