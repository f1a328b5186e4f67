//! StateFun's built-in types, `io.statefun.types/*`.
//!
//! Each is a protobuf message with one field `value = 1` (package
//! `io.statefun.sdk.types`), so the bytes match the Java, Python, Go and
//! JavaScript SDKs exactly: `io.statefun.types/int` 1 is `0d 01 00 00 00`.

use prost::Message;
use statefun_proto::{typenames, types as wire};

use super::Type;
use crate::error::BoxError;

macro_rules! builtin_type {
    ($(#[$doc:meta])* $name:ident, $value:ty, $wrapper:ty, $typename:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name;

        impl Type for $name {
            type Value = $value;

            fn typename(&self) -> &str {
                $typename
            }

            fn encode(&self, value: &$value) -> Result<Vec<u8>, BoxError> {
                type Wrapper = $wrapper;
                Ok(Wrapper { value: value.clone() }.encode_to_vec())
            }

            fn decode(&self, bytes: &[u8]) -> Result<$value, BoxError> {
                Ok(<$wrapper as Message>::decode(bytes)?.value)
            }
        }
    };
}

builtin_type!(
    /// `io.statefun.types/bool`: a [`bool`].
    BoolType, bool, wire::BooleanWrapper, typenames::BOOL
);
builtin_type!(
    /// `io.statefun.types/int`: an [`i32`] (protobuf `sfixed32`).
    IntType, i32, wire::IntWrapper, typenames::INT
);
builtin_type!(
    /// `io.statefun.types/long`: an [`i64`] (protobuf `sfixed64`).
    LongType, i64, wire::LongWrapper, typenames::LONG
);
builtin_type!(
    /// `io.statefun.types/float`: an [`f32`].
    FloatType, f32, wire::FloatWrapper, typenames::FLOAT
);
builtin_type!(
    /// `io.statefun.types/double`: an [`f64`].
    DoubleType, f64, wire::DoubleWrapper, typenames::DOUBLE
);
builtin_type!(
    /// `io.statefun.types/string`: a [`String`].
    StringType, String, wire::StringWrapper, typenames::STRING
);

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes<T: Type>(ty: T, value: &T::Value) -> Vec<u8> {
        ty.encode(value).unwrap_or_default()
    }

    #[test]
    fn int_one_encodes_as_fixed32_field_one() {
        assert_eq!(bytes(IntType, &1), [0x0d, 0x01, 0x00, 0x00, 0x00]);
        assert_eq!(IntType.typename(), "io.statefun.types/int");
    }

    #[test]
    fn negative_int_encodes_as_twos_complement_little_endian() {
        assert_eq!(bytes(IntType, &-1), [0x0d, 0xff, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn long_encodes_as_fixed64_field_one() {
        assert_eq!(bytes(LongType, &1), [0x09, 0x01, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(LongType.typename(), "io.statefun.types/long");
    }

    #[test]
    fn bool_true_encodes_as_varint_field_one() {
        assert_eq!(bytes(BoolType, &true), [0x08, 0x01]);
        assert_eq!(BoolType.typename(), "io.statefun.types/bool");
    }

    #[test]
    fn float_and_double_encode_as_ieee_little_endian() {
        assert_eq!(bytes(FloatType, &1.0), [0x0d, 0x00, 0x00, 0x80, 0x3f]);
        assert_eq!(bytes(DoubleType, &1.0), [0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]);
    }

    #[test]
    fn string_encodes_as_length_delimited_field_one() {
        assert_eq!(bytes(StringType, &"hi".to_owned()), [0x0a, 0x02, b'h', b'i']);
        assert_eq!(StringType.typename(), "io.statefun.types/string");
    }

    #[test]
    fn zero_encodes_as_empty_bytes_and_decodes_back() {
        assert!(bytes(IntType, &0).is_empty());
        assert_eq!(IntType.decode(&[]).ok(), Some(0));
    }

    #[test]
    fn built_ins_round_trip() {
        assert_eq!(IntType.decode(&bytes(IntType, &i32::MIN)).ok(), Some(i32::MIN));
        assert_eq!(LongType.decode(&bytes(LongType, &i64::MAX)).ok(), Some(i64::MAX));
        assert_eq!(StringType.decode(&bytes(StringType, &"é".to_owned())).ok(), Some("é".to_owned()));
    }

    #[test]
    fn truncated_bytes_are_a_decode_error() {
        assert!(IntType.decode(&[0x0d, 0x01]).is_err());
    }
}
