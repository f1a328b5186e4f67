//! Value types: how a Rust value becomes a `TypedValue` and back.
//!
//! Every state value and message argument on the wire is a `TypedValue`: a
//! typename plus bytes. A [`Type`] names one typename and converts between
//! those bytes and a Rust value. The SDK ships:
//!
//! - StateFun's built-in types ([`BoolType`], [`IntType`], [`LongType`],
//!   [`FloatType`], [`DoubleType`], [`StringType`]), byte-compatible with the
//!   official SDKs (`io.statefun.types/*`, one protobuf wrapper field each);
//! - [`JsonType`]: any serde type, as JSON, under a typename of your choice;
//! - [`ProtobufType`]: any prost message, as `type.googleapis.com/<full name>`;
//! - [`RawType`]: bytes as they are, under a typename of your choice.
//!
//! Implement [`Type`] for your own encodings.

mod builtin;
mod json;
mod protobuf;
mod raw;

pub use builtin::{BoolType, DoubleType, FloatType, IntType, LongType, StringType};
pub use json::JsonType;
pub use protobuf::ProtobufType;
pub use raw::RawType;

use crate::error::BoxError;

/// A value type: a typename and a codec between its bytes and a Rust value.
///
/// ```
/// use statefun_sdk::{BoxError, Type};
///
/// /// A counter stored as decimal text.
/// struct DecimalType;
///
/// impl Type for DecimalType {
///     type Value = u64;
///     fn typename(&self) -> &str {
///         "com.example/decimal"
///     }
///     fn encode(&self, value: &u64) -> Result<Vec<u8>, BoxError> {
///         Ok(value.to_string().into_bytes())
///     }
///     fn decode(&self, bytes: &[u8]) -> Result<u64, BoxError> {
///         Ok(std::str::from_utf8(bytes)?.parse()?)
///     }
/// }
///
/// assert_eq!(DecimalType.decode(b"42").ok(), Some(42));
/// ```
pub trait Type: Send + Sync + 'static {
    /// The Rust value of this type.
    type Value;

    /// The typename, `namespace/name`.
    fn typename(&self) -> &str;

    /// The bytes of `value`.
    fn encode(&self, value: &Self::Value) -> Result<Vec<u8>, BoxError>;

    /// The value of `bytes`; an error if they are not a value of this type.
    fn decode(&self, bytes: &[u8]) -> Result<Self::Value, BoxError>;
}
