//! Protocol buffers shared by the runtime and the SDK.
//!
//! - [`reqreply`]: StateFun's remote protocol v3, byte-compatible with the official SDKs.
//! - [`types`]: the built-in value types (`io.statefun.types/*`).
//! - [`egress`]: the Kinesis egress record.
//! - [`internal`]: the runtime's exchange, checkpoint and dead-letter formats.
//! - [`kpl`]: the Kinesis Producer Library's aggregated record.
//! - [`shoppingcart`]: the example's messages.
//!
//! This crate only holds generated code and typename constants; it must not grow logic.

#![allow(missing_docs, clippy::all)]

include!(concat!(env!("OUT_DIR"), "/packages.rs"));

pub use io::statefun::sdk::{egress, reqreply, types};
pub use statefun_aws::internal::v1 as internal;
pub use statefun_aws::kpl;

/// A `FileDescriptorSet` of every message above, for tools that encode or
/// decode values by typename (the CLI's `send` and `tail`).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

/// Typenames of StateFun's built-in types.
pub mod typenames {
    pub const BOOL: &str = "io.statefun.types/bool";
    pub const INT: &str = "io.statefun.types/int";
    pub const LONG: &str = "io.statefun.types/long";
    pub const FLOAT: &str = "io.statefun.types/float";
    pub const DOUBLE: &str = "io.statefun.types/double";
    pub const STRING: &str = "io.statefun.types/string";
    /// The argument type of messages for a Kinesis egress.
    pub const KINESIS_EGRESS_RECORD: &str = "type.googleapis.com/io.statefun.sdk.egress.KinesisEgressRecord";
}

/// The typename StateFun gives a protobuf message: `type.googleapis.com/<full name>`.
pub fn protobuf_typename<M: prost::Name>() -> String {
    M::type_url()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn int_wrapper_of_one_is_fixed32_field_one() {
        let bytes = types::IntWrapper { value: 1 }.encode_to_vec();
        assert_eq!(bytes, [0x0d, 0x01, 0x00, 0x00, 0x00]);
    }

    #[test]
    fn long_wrapper_is_fixed64_field_one() {
        let bytes = types::LongWrapper { value: -2 }.encode_to_vec();
        assert_eq!(bytes, [0x09, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn string_wrapper_is_length_delimited_field_one() {
        let bytes = types::StringWrapper { value: "hi".into() }.encode_to_vec();
        assert_eq!(bytes, [0x0a, 0x02, b'h', b'i']);
    }

    #[test]
    fn protobuf_typename_uses_googleapis_prefix() {
        assert_eq!(protobuf_typename::<egress::KinesisEgressRecord>(), typenames::KINESIS_EGRESS_RECORD);
    }

    #[test]
    fn invocation_request_uses_field_100() {
        let msg = reqreply::ToFunction {
            request: Some(reqreply::to_function::Request::Invocation(
                reqreply::to_function::InvocationBatchRequest::default(),
            )),
        };
        assert_eq!(msg.encode_to_vec(), [0xa2, 0x06, 0x00]);
    }

    #[test]
    fn incomplete_context_uses_field_101() {
        let msg = reqreply::FromFunction {
            response: Some(reqreply::from_function::Response::IncompleteInvocationContext(
                reqreply::from_function::IncompleteInvocationContext::default(),
            )),
        };
        assert_eq!(msg.encode_to_vec(), [0xaa, 0x06, 0x00]);
    }
}
