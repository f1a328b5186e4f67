//! A reply's egress messages: each is checked against the module and against
//! Kinesis' limits before it joins the outbox, so a record that could never be
//! published is a dead letter instead of an outbox that never drains.
//! No I/O: the committer publishes the outbox.

use prost::Message as _;
use statefun_proto::egress::KinesisEgressRecord;
use statefun_proto::internal::EgressRecord;
use statefun_proto::reqreply::Address;
use statefun_proto::reqreply::from_function::EgressMessage;
use statefun_proto::typenames;

use super::{DeadLetterCause, Partition};

impl Partition {
    pub(super) fn egress(&mut self, address: &Address, message: EgressMessage, now_ms: i64) {
        let record = match self.egress_record(&message) {
            Ok(record) => record,
            Err(reason) => {
                let raw = message.encode_to_vec();
                self.dead_letter(
                    DeadLetterCause::BadEgress,
                    Some(address.clone()),
                    reason,
                    Vec::new(),
                    "egress",
                    raw,
                    now_ms,
                );
                return;
            }
        };
        let seq = self.outbox_seq();
        self.outbox.push_egress(seq, record);
    }

    fn egress_record(&self, message: &EgressMessage) -> Result<EgressRecord, String> {
        if !self.catalog.has_egress(&message.egress_namespace, &message.egress_type) {
            return Err(format!("egress {} is not declared in module.yaml", EgressId(message)));
        }
        let id = EgressId(message);
        let argument = message.argument.as_ref().ok_or_else(|| format!("egress message for {id} has no argument"))?;
        if argument.typename != typenames::KINESIS_EGRESS_RECORD {
            return Err(format!(
                "egress {id} is a Kinesis egress and takes {}, got `{}`",
                typenames::KINESIS_EGRESS_RECORD,
                argument.typename
            ));
        }
        let record = KinesisEgressRecord::decode(argument.value.as_slice())
            .map_err(|e| format!("egress {id}: argument is not a valid KinesisEgressRecord: {e}"))?;
        // Kinesis' own limits, checked here so a record that can never be
        // published is dead-lettered instead of blocking the partition's outbox.
        if let Err(e) = crate::limits::check_stream_name(&record.stream) {
            return Err(format!("egress {id}: KinesisEgressRecord.stream: {e}"));
        }
        if self.catalog.is_internal_stream(&record.stream) {
            return Err(format!("egress {id}: stream `{}` belongs to the runtime itself", record.stream));
        }
        let hash_key = Some(record.explicit_hash_key.as_str()).filter(|k| !k.is_empty());
        if let Err(e) = crate::limits::check_record(&record.partition_key, record.value_bytes.len(), hash_key) {
            return Err(format!("egress {id}: KinesisEgressRecord: {e}"));
        }
        Ok(EgressRecord {
            // Never read back: not worth a copy per record.
            egress: String::new(),
            stream: record.stream,
            partition_key: record.partition_key,
            explicit_hash_key: record.explicit_hash_key,
            data: record.value_bytes,
        })
    }
}

/// An egress message's egress id, `namespace/type`, written only when an error names it.
struct EgressId<'a>(&'a EgressMessage);

impl std::fmt::Display for EgressId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.0.egress_namespace, self.0.egress_type)
    }
}
