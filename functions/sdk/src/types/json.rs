//! JSON values under a typename of the user's choice.

use std::fmt;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Type;
use crate::error::BoxError;

/// A serde type encoded as compact JSON, under a custom typename.
///
/// ```
/// use std::collections::BTreeMap;
/// use statefun_sdk::{JsonType, Type};
///
/// let items = JsonType::<BTreeMap<String, i32>>::new("shoppingcart/ItemsInCart");
/// let bytes = items.encode(&BTreeMap::from([("apple".to_owned(), 2)])).ok();
/// assert_eq!(bytes.as_deref(), Some(&br#"{"apple":2}"#[..]));
/// ```
pub struct JsonType<T> {
    typename: String,
    value: PhantomData<fn() -> T>,
}

impl<T> JsonType<T> {
    /// A JSON type named `typename` (`namespace/name`).
    pub fn new(typename: impl Into<String>) -> Self {
        Self { typename: typename.into(), value: PhantomData }
    }
}

impl<T> Clone for JsonType<T> {
    fn clone(&self) -> Self {
        Self::new(self.typename.clone())
    }
}

impl<T> fmt::Debug for JsonType<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JsonType").field(&self.typename).finish()
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Type for JsonType<T> {
    type Value = T;

    fn typename(&self) -> &str {
        &self.typename
    }

    fn encode(&self, value: &T) -> Result<Vec<u8>, BoxError> {
        Ok(serde_json::to_vec(value)?)
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, BoxError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_json_is_a_decode_error_that_says_why() {
        let ty = JsonType::<Vec<i32>>::new("example/list");
        let err = ty.decode(b"[1,").err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("EOF")));
    }
}
