//! Bytes as they are, under a typename of the user's choice.

use super::Type;
use crate::error::BoxError;

/// Raw bytes under a custom typename: for values encoded elsewhere.
///
/// ```
/// use statefun_sdk::{RawType, Type};
///
/// let ty = RawType::new("com.example/blob");
/// assert_eq!(ty.decode(b"\x01\x02").ok(), Some(vec![1, 2]));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawType {
    typename: String,
}

impl RawType {
    /// A raw type named `typename` (`namespace/name`).
    pub fn new(typename: impl Into<String>) -> Self {
        Self { typename: typename.into() }
    }
}

impl Type for RawType {
    type Value = Vec<u8>;

    fn typename(&self) -> &str {
        &self.typename
    }

    fn encode(&self, value: &Vec<u8>) -> Result<Vec<u8>, BoxError> {
        Ok(value.clone())
    }

    fn decode(&self, bytes: &[u8]) -> Result<Vec<u8>, BoxError> {
        Ok(bytes.to_vec())
    }
}
