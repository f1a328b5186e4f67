//! Messages for egresses, and the Kinesis egress helper.
//!
//! An egress is named `namespace/name` in the runtime's `module.yaml`. A Kinesis
//! egress takes a [`KinesisEgressRecord`] argument (typename
//! `type.googleapis.com/io.statefun.sdk.egress.KinesisEgressRecord`) that says
//! which stream, partition key and bytes to write; [`EgressMessage::kinesis`]
//! builds one.

use std::fmt;
use std::str::FromStr;

use statefun_proto::reqreply::{TypedValue, from_function};
use statefun_proto::typenames;

pub use statefun_proto::egress::KinesisEgressRecord;

use crate::error::Error;
use crate::message::encode;
use crate::types::Type;

/// The name of an egress, `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EgressIdentifier {
    namespace: String,
    name: String,
}

impl EgressIdentifier {
    /// The egress `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The name within the namespace.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for EgressIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for EgressIdentifier {
    type Err = Error;

    /// Parses `namespace/name`, splitting at the last `/`.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.rsplit_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() => Ok(Self::new(ns, name)),
            _ => Err(Error::InvalidTypename(s.to_owned())),
        }
    }
}

/// A record for an egress.
#[derive(Clone, Debug, PartialEq)]
pub struct EgressMessage {
    egress: EgressIdentifier,
    value: TypedValue,
}

impl EgressMessage {
    /// A record for `egress` carrying `value` of type `ty`.
    pub fn new<T: Type + ?Sized>(egress: EgressIdentifier, ty: &T, value: &T::Value) -> Result<Self, Error> {
        Ok(Self { egress, value: encode(ty, value)? })
    }

    /// A record for a Kinesis egress: write `value_bytes` to `stream` under
    /// `partition_key`.
    ///
    /// ```
    /// use statefun_sdk::{EgressIdentifier, EgressMessage};
    ///
    /// let egress = EgressIdentifier::new("shoppingcart", "kinesis");
    /// let record = EgressMessage::kinesis(egress, "cart-results", "user-1", b"{}".to_vec());
    /// assert_eq!(
    ///     record.typed_value().typename,
    ///     "type.googleapis.com/io.statefun.sdk.egress.KinesisEgressRecord"
    /// );
    /// ```
    pub fn kinesis(
        egress: EgressIdentifier,
        stream: impl Into<String>,
        partition_key: impl Into<String>,
        value_bytes: impl Into<Vec<u8>>,
    ) -> Self {
        Self::kinesis_record(
            egress,
            KinesisEgressRecord {
                partition_key: partition_key.into(),
                value_bytes: value_bytes.into(),
                stream: stream.into(),
                explicit_hash_key: String::new(),
            },
        )
    }

    /// A record for a Kinesis egress from a full [`KinesisEgressRecord`]
    /// (for an explicit hash key).
    pub fn kinesis_record(egress: EgressIdentifier, record: KinesisEgressRecord) -> Self {
        Self {
            egress,
            value: TypedValue {
                typename: typenames::KINESIS_EGRESS_RECORD.to_owned(),
                has_value: true,
                value: prost::Message::encode_to_vec(&record),
            },
        }
    }

    /// The egress the record is for.
    pub fn egress(&self) -> &EgressIdentifier {
        &self.egress
    }

    /// The record's value.
    pub fn typed_value(&self) -> &TypedValue {
        &self.value
    }

    /// The wire form.
    pub(crate) fn into_proto(self) -> from_function::EgressMessage {
        from_function::EgressMessage {
            egress_namespace: self.egress.namespace,
            egress_type: self.egress.name,
            argument: Some(self.value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn kinesis_helper_wraps_a_kinesis_egress_record() -> Result<(), Box<dyn std::error::Error>> {
        let msg = EgressMessage::kinesis_record(
            "shoppingcart/kinesis".parse()?,
            KinesisEgressRecord {
                partition_key: "u1".into(),
                value_bytes: b"hello".to_vec(),
                stream: "cart-results".into(),
                explicit_hash_key: "42".into(),
            },
        )
        .into_proto();
        assert_eq!(msg.egress_namespace, "shoppingcart");
        assert_eq!(msg.egress_type, "kinesis");
        let arg = msg.argument.unwrap_or_default();
        assert_eq!(arg.typename, typenames::KINESIS_EGRESS_RECORD);
        assert!(arg.has_value);
        let record = KinesisEgressRecord::decode(arg.value.as_slice())?;
        assert_eq!(record.stream, "cart-results");
        assert_eq!(record.partition_key, "u1");
        assert_eq!(record.value_bytes, b"hello");
        assert_eq!(record.explicit_hash_key, "42");
        Ok(())
    }

    #[test]
    fn kinesis_helper_leaves_the_explicit_hash_key_empty() {
        let msg = EgressMessage::kinesis(EgressIdentifier::new("a", "b"), "s", "k", b"v".to_vec());
        let record = KinesisEgressRecord::decode(msg.typed_value().value.as_slice());
        assert_eq!(
            record.ok(),
            Some(KinesisEgressRecord {
                partition_key: "k".into(),
                value_bytes: b"v".to_vec(),
                stream: "s".into(),
                explicit_hash_key: String::new(),
            })
        );
    }
}
